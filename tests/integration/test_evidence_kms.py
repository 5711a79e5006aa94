"""`sigaudit evidence --sign-key gcpkms://|azurekms://|hashivault://…` (issue #23): a scan of the demo estate
on the real registry, its pack signed through each KMS and re-verified offline by `verify-evidence --key`
with the KMS key's public half; another key fails it. The KMSes are the hand-made fakes of
tests/harness/fake_kms.py (no real Cloud KMS, Key Vault or Vault server runs here), driven by the real
SDKs: azure-keyvault-keys with DefaultAzureCredential's managed-identity leg against a hand-made token
endpoint, google-cloud-kms' REST transport aimed at the fake (in process: the SDK takes no endpoint from
the environment). A KMS that answers with another key's signature or an error is exit 3, no pack
written, and the Vault token appears in no output; one that does not answer is cut at `--deadline`."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.harness.cloud_creds import AZURE_ENV_CLEARED, azure_msi_endpoint
from tests.harness.demo import publish_estate, write_pods, write_policy
from tests.harness.fake_kms import FakeCloudKms, FakeKeyVault, FakeVault, pem_of
from tests.harness.tools import _missing

pytestmark = pytest.mark.integration

TOKEN = "s.vault-token-in-no-output"
ENTRA = "entra-token-in-no-output"
GCP_KEY = "projects/p/locations/global/keyRings/r/cryptoKeys/evidence"
OTHER = ec.generate_private_key(ec.SECP256R1())


def sigaudit(*args: str, env: dict[str, str] | None = None, netns: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "scanner.cli", *args]
    if netns:
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def _sdk(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        _missing(f"{module} is not installed: pip install -e '.[test]'")
        raise AssertionError("unreachable") from None


@pytest.fixture(scope="module")
def scanned(registry, tmp_path_factory):
    d = tmp_path_factory.mktemp("evidence-kms")
    est = publish_estate(registry.url, registry.host)
    policy, pods = write_policy(est, d), write_pods(est, d / "pods.json")
    db = f"sqlite:///{d / 'ev.db'}"
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--db", db, "-o", "json",
                 "--cluster", "ev", "--no-progress")
    assert r.returncode == 1, r.stderr  # the demo has non-compliant images; the scan is fine
    return d, db


def _verifies(pack: Path, pem: bytes, d: Path) -> subprocess.CompletedProcess:
    pub = d / f"{pack.stem}.pub"
    pub.write_bytes(pem)
    return sigaudit("verify-evidence", str(pack), "--key", str(pub), "-o", "json", netns=True)


def _check_pack(pack: Path, pem: bytes, d: Path) -> None:
    r = _verifies(pack, pem, d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["ok"]
    r = _verifies(pack, pem_of(OTHER), d)
    assert r.returncode != 0 and "MANIFEST" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_vault_transit_key_signs_the_pack(scanned) -> None:
    d, db = scanned
    key = rsa.generate_private_key(65537, 3072)
    with FakeVault({"evidence": {1: ec.generate_private_key(ec.SECP256R1()), 2: key}}, TOKEN) as vault:
        env = {"VAULT_ADDR": vault.url, "VAULT_TOKEN": TOKEN}
        pack = d / "vault.tar.gz"
        r = sigaudit("evidence", "--db", db, "--sign-key", "hashivault://evidence", "--out", str(pack), env=env)
        assert r.returncode == 0, r.stderr
        assert TOKEN not in r.stdout + r.stderr
        _check_pack(pack, pem_of(key), d)
        # a Vault that signs with another key, or fails: exit 3, the key named, no pack, no token shown
        for mode in ("other_key", "other_version", "status"):
            vault.misbehave = mode
            bad = d / f"vault-{mode}.tar.gz"
            r = sigaudit("evidence", "--db", db, "--sign-key", "hashivault://evidence", "--out", str(bad), env=env)
            assert r.returncode == 3, (mode, r.stderr)
            assert "hashivault://evidence" in r.stderr and TOKEN not in r.stdout + r.stderr
            assert not bad.exists() and not list(d.glob(f".vault-{mode}*"))

        # a Vault that does not answer is cut at the command's deadline
        vault.misbehave = "hang"
        hung = d / "vault-hang.tar.gz"
        began = time.monotonic()
        r = sigaudit("evidence", "--db", db, "--sign-key", "hashivault://evidence", "--out", str(hung),
                     "--deadline", "3s", env=env)
        assert r.returncode == 3 and "evidence deadline of 3s reached" in r.stderr, r.stderr
        assert time.monotonic() - began < 25 and not hung.exists()


def test_scan_evidence_with_a_slow_kms_ends_at_the_scan_deadline(scanned) -> None:
    # A Vault that answers each sign just inside the 30 s per-call bound: without the scan's --deadline
    # over the pack, `scan --evidence` ran one slow call per image past it (and wrote the pack).
    d, _ = scanned
    db = f"sqlite:///{d / 'slow.db'}"
    with FakeVault({"evidence": {1: ec.generate_private_key(ec.SECP256R1())}}, TOKEN) as vault:
        vault.misbehave, vault.slow_seconds = "slow", 4.0
        pack = d / "vault-slow.tar.gz"
        began = time.monotonic()
        r = sigaudit("scan", "--pods-file", str(d / "pods.json"), "--policy", str(d / "policy.yaml"), "--db", db,
                     "--cluster", "slow", "--no-progress", "--deadline", "10s", "--evidence", str(pack),
                     "--evidence-key", "hashivault://evidence", env={"VAULT_ADDR": vault.url, "VAULT_TOKEN": TOKEN})
        took = time.monotonic() - began
        signs = [p for m, p, _, _ in vault.requests if m == "POST"]
    assert len(signs) < 5, signs  # the demo's images would take one slow sign each
    assert r.returncode == 3, r.stderr
    assert "scan deadline reached (building the evidence pack)" in r.stderr and TOKEN not in r.stdout + r.stderr
    assert took < 10 + 8, took  # the deadline, plus start-up
    assert not pack.exists()


def test_an_azure_key_vault_key_signs_the_pack(scanned, tmp_path: Path) -> None:
    _sdk("azure.keyvault.keys")
    _sdk("azure.identity")
    d, db = scanned
    key = ec.generate_private_key(ec.SECP384R1())
    msi = azure_msi_endpoint(ENTRA, "identity-header")
    try:
        with FakeKeyVault({"evidence": {"0ld": OTHER, "c0ffee": key}}, tmp_path, token=ENTRA) as vault:
            env = {**{k: "" for k in AZURE_ENV_CLEARED}, "REQUESTS_CA_BUNDLE": str(vault.ca_path),
                   "IDENTITY_ENDPOINT": f"http://{msi.host}/msi/token", "IDENTITY_HEADER": "identity-header"}
            env = {k: v for k, v in env.items() if v}
            clean = {k: v for k, v in os.environ.items() if k not in AZURE_ENV_CLEARED}
            pack = d / "azure.tar.gz"
            ref = f"azurekms://127.0.0.1:{vault.port}/evidence"
            r = subprocess.run([sys.executable, "-m", "scanner.cli", "evidence", "--db", db, "--sign-key", ref,
                                "--out", str(pack)], capture_output=True, text=True, timeout=300,
                               env={**clean, **env})
            assert r.returncode == 0, r.stderr
            assert ENTRA not in r.stdout + r.stderr
            assert any(h.get("Authorization") == f"Bearer {ENTRA}" for _, _, h, _ in vault.requests)
            _check_pack(pack, pem_of(key), d)
    finally:
        msi.close()


def test_a_cloud_kms_key_signs_the_pack(scanned, monkeypatch: pytest.MonkeyPatch) -> None:
    gkms = _sdk("google.cloud.kms")
    anonymous = _sdk("google.auth.credentials").AnonymousCredentials
    from scanner.evidence.pack import write_pack
    from scanner.sources import kms as edge
    from scanner.store import open_store

    d, db = scanned
    key = ec.generate_private_key(ec.SECP256R1())
    with FakeCloudKms({GCP_KEY: {1: OTHER, 2: key}}) as fake:
        client = gkms.KeyManagementServiceClient(transport="rest", client_options={"api_endpoint": fake.url},
                                                 credentials=anonymous())
        real = edge.KmsEdge  # the default edge, with the real SDK client aimed at the fake
        monkeypatch.setattr(edge, "KmsEdge", lambda: real(gcp_client=client))
        pack = d / "gcp.tar.gz"
        with open_store(db) as store:
            scan_id = store.latest_scan_id(None)
            write_pack(store, scan_id, f"gcpkms://{GCP_KEY}", str(pack))
            fake.misbehave = "bad_crc"
            from scanner.evidence.dsse import KmsSigningError

            with pytest.raises(KmsSigningError, match="signature_crc32c"):
                write_pack(store, scan_id, f"gcpkms://{GCP_KEY}", str(d / "gcp-bad.tar.gz"))
            assert not (d / "gcp-bad.tar.gz").exists()
        signs = [p for m, p, _, _ in fake.requests if m == "POST"]
        assert signs and all(p.split("?")[0].endswith("/cryptoKeyVersions/2:asymmetricSign") for p in signs)
    _check_pack(pack, pem_of(key), d)

