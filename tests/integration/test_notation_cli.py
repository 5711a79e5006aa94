"""sigaudit's notation verdicts agree with notation-go's, case for case, on both kinds of registry.

notation-go (tests/tools/notation-go: a thin CLI over notation-go's ``notation.Sign`` and
``notation.Verify``, standing in for the notation CLI that the module proxy refuses) signs images in
a docker-registry (no referrers API: signatures go to the ``sha256-<hex>`` tag schema) and in ocireg
(OCI 1.1 referrers API), with certificates made here. A few cases notation-go cannot produce (an
expired certificate, a signature moved to another digest, corrupted envelope bytes) are built with
the fixture builder tests/harness/notation_sign.py, which notation-go then judges like any other.

For each verification level (strict, permissive, audit, skip) the same trustpolicy.json and trust
store are given to ``notation-go verify`` per image and to one real ``sigaudit scan`` (the CLI, a
pod list, ``-o json``); the verdicts must agree: notation-go verified <=> sigaudit "verified". The
table is printed (run with ``-s`` to see it). Revocation comes from a CRL served on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness import notation_sign as ns
from tests.harness import oci
from tests.harness.revocation_server import RevocationServer
from tests.harness.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.tools]

LEVELS = ("strict", "permissive", "audit", "skip")
OTHER_IDENTITY = "x509.subject: C=US, ST=WA, O=Someone Else, CN=Nobody"

# case -> sigaudit status expected under strict (the table also checks agreement at every level).
STRICT = {
    "good-jws": "verified", "good-cose": "verified", "expiring": "verified", "builder-jws": "verified",
    "builder-cose": "verified", "expired-signature": "expired", "expired-certificate": "expired",
    "revoked": "revoked", "crl-unavailable": "error", "untrusted-root": "invalid", "wrong-identity": "invalid",
    "moved-signature": "invalid", "corrupt-envelope": "invalid", "unsigned": "unsigned",
    # Revocation endpoints notation cannot ask (https OCSP, ldap CRL) leave the status unknown, never
    # "non-revokable"; every CRL distribution point counts (the second partition lists the leaf).
    "ocsp-https-only": "error", "crl-ldap-only": "error", "crl-second-point": "revoked",
}


CRLServer = RevocationServer


class NotationGo:
    def __init__(self, binary: Path, work: Path) -> None:
        self.binary, self.work = binary, work

    def sign(self, ref: str, pki: ns.PKI, *extra: str) -> None:
        key, cert = self.work / f"{id(pki)}.key", self.work / f"{id(pki)}.crt"
        key.write_bytes(pki.leaf.key_pem)
        cert.write_bytes(pki.chain_pem())
        proc = subprocess.run([str(self.binary), "sign", "--insecure-registry", "--key", str(key), "--cert", str(cert),
                               *extra, ref], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"notation-go sign {ref}: {proc.stdout}{proc.stderr}"

    def verify(self, ref: str, policy: Path, store: Path, codes: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
        proc = subprocess.run([str(self.binary), "verify", "--insecure-registry", "--trust-policy", str(policy),
                               "--trust-store", str(store), ref], capture_output=True, text=True, timeout=60)
        assert proc.returncode in codes, f"notation-go verify {ref}: {proc.stdout}{proc.stderr}"
        if proc.returncode == 2:
            return {"verified": False, "exit": 2, **json.loads(proc.stdout.splitlines()[-1])}
        out: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
        assert out["verified"] is (proc.returncode == 0)
        return out


def _failed_checks(out: dict[str, Any]) -> str:
    if out["verified"]:
        logged = [r["type"] for s in out["signatures"] for r in s["results"] if r["error"]]
        return "pass" + (f" (logged {','.join(logged)})" if logged else "")
    checks = [r["type"] for s in out["signatures"] for r in s["results"] if r["error"] and r["action"] == "enforce"]
    if checks:
        return "fail " + ",".join(checks)
    errors = [str(s["error"]).rsplit(", ", 1)[-1] for s in out["signatures"] if s.get("error")]
    return "fail (" + (errors[0] if errors else str(out.get("error", "")).splitlines()[0])[:38] + ")"


def _pod(i: int, image: str, iid: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": "it", "uid": f"uid-{i}"},
            "spec": {"containers": [{"name": "c", "image": image}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "c", "image": image, "imageID": iid, "ready": True}]}}


def _sigaudit(work: Path, host: str, images: dict[str, str], policy: Path, store: Path,
              codes: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    pods = work / "pods.json"
    pods.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        _pod(i, f"{host}/nv/{case}:v1", f"{host}/nv/{case}@{digest}") for i, (case, digest) in enumerate(images.items())
    ]}))
    doc = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "it"},
           "spec": {"expiryWarning": "720h", "insecureRegistries": [host],
                    "rules": [{"name": "notation", "images": [f"{host}/nv/*"],
                               "verifiers": [{"notation": {"trustPolicy": str(policy), "trustStore": str(store)}}]}]}}
    policy_yaml = work / "policy.yaml"
    policy_yaml.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy",
                           str(policy_yaml), "--no-store", "--no-cache", "--no-progress", "-o", "json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in codes, f"sigaudit scan exited {proc.returncode}: {proc.stderr[-3000:]}"
    if proc.returncode == 2:
        return {"exit": 2, "stderr": proc.stderr}
    (work / "scan.json").write_text(proc.stdout)
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def _move_signature(reg: Any, repo: str, from_digest: str, to_digest: str) -> None:
    """Attach notation-go's signature of ``from_digest`` to ``to_digest`` (its payload still names the former)."""
    with httpx.Client(timeout=30) as c:
        if reg.kind == "ocireg":
            idx = c.get(f"{reg.url}/v2/{repo}/referrers/{from_digest}").json()
        else:
            idx = c.get(f"{reg.url}/v2/{repo}/manifests/{from_digest.replace(':', '-')}",
                        headers={"Accept": oci.OCI_INDEX}).json()
        (entry,) = idx["manifests"]
        manifest = c.get(f"{reg.url}/v2/{repo}/manifests/{entry['digest']}",
                         headers={"Accept": oci.OCI_MANIFEST}).json()
        layer = manifest["layers"][0]
        envelope = c.get(f"{reg.url}/v2/{repo}/blobs/{layer['digest']}").content
    subject = ns.image_descriptor(reg.url, repo, to_digest)
    ns.push_signature(reg.url, repo, subject, envelope, layer["mediaType"], [], tag_schema=reg.kind != "ocireg")


def _corrupt_signature(reg: Any, repo: str, digest: str, pki: ns.PKI) -> None:
    """A notation JWS whose signature bytes were altered after signing."""
    subject = ns.image_descriptor(reg.url, repo, digest)
    env = json.loads(ns.jws_envelope(pki.chain, subject))
    sig = env["signature"]
    env["signature"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    ns.push_signature(reg.url, repo, subject, json.dumps(env).encode(), ns.JWS_MEDIA_TYPE, pki.chain,
                      tag_schema=reg.kind != "ocireg")


def _trust_policy(d: Path, host: str, level: str, stores: list[str], *, skip_with_stores: bool = False) -> Path:
    def statement(identities: list[str]) -> dict[str, Any]:
        if level == "skip" and not skip_with_stores:  # notation refuses stores/identities on skip
            return {"signatureVerification": {"level": level}}
        return {"signatureVerification": {"level": level}, "trustStores": stores, "trustedIdentities": identities}

    policy = d / "trustpolicy.json"
    policy.write_text(json.dumps({"version": "1.0", "trustPolicies": [
        {"name": "pinned", "registryScopes": [f"{host}/nv/wrong-identity"], **statement([OTHER_IDENTITY])},
        {"name": "everything", "registryScopes": ["*"], **statement(["*"])},
    ]}))
    return policy


@pytest.mark.parametrize("registry_fixture", ["registry", "referrers_registry"])
def test_verdicts_agree_with_notation_go(registry_fixture: str, request: pytest.FixtureRequest,
                                        tmp_path: Path) -> None:
    tool = NotationGo(require_tool("notation-go"), tmp_path)
    reg = request.getfixturevalue(registry_fixture)
    host = f"{reg.host}"
    now = datetime.now(UTC)
    crl = CRLServer()
    try:
        pki = ns.make_pki("IT Signer")
        stranger = ns.make_pki("Stranger")  # its root is in no trust store
        crl_root = ns.issue("IT CRL Root", ca=True)
        crl_leaf = ns.issue("IT Revoked Signer", issuer=crl_root, crl_url=f"{crl.base}/leaf.crl", serial=0x5151)
        crl_pki = ns.PKI(crl_root, crl_leaf)
        crl.files["/leaf.crl"] = ns.crl(crl_root, [0x5151])
        lost_leaf = ns.issue("IT Unknown Signer", issuer=crl_root, crl_url=f"{crl.base}/missing.crl")  # 404
        https_leaf = ns.issue("IT HTTPS OCSP Signer", issuer=crl_root, ocsp_url=f"https://{crl.base[7:]}/ocsp")
        ldap_leaf = ns.issue("IT LDAP CRL Signer", issuer=crl_root,
                             crl_url="ldap://127.0.0.1:1/cn=IT%20CRL%20Root?certificateRevocationList")
        split_leaf = ns.issue("IT Partitioned Signer", issuer=crl_root, serial=0x5252,
                              crl_url=[f"{crl.base}/part1.crl", f"{crl.base}/part2.crl"])
        crl.files["/part1.crl"] = ns.crl(crl_root, [])
        crl.files["/part2.crl"] = ns.crl(crl_root, [0x5252])
        old = ns.make_pki("IT Old Signer", leaf_not_before=now - timedelta(days=10),
                          leaf_not_after=now - timedelta(days=1))

        images: dict[str, str] = {}

        def image(case: str) -> str:
            images[case] = oci.make_image(reg.url, f"nv/{case}", "v1")  # random content: a fresh digest
            return f"{host}/nv/{case}@{images[case]}"

        tool.sign(image("expired-signature"), pki, "--expiry", "1s")
        t_expired = time.monotonic()
        tool.sign(image("good-jws"), pki)
        tool.sign(image("good-cose"), pki, "--signature-format", "cose", "--expiry", "8760h")
        tool.sign(image("expiring"), pki, "--expiry", "48h")
        tool.sign(image("revoked"), crl_pki)
        tool.sign(image("crl-unavailable"), ns.PKI(crl_root, lost_leaf))
        tool.sign(image("ocsp-https-only"), ns.PKI(crl_root, https_leaf))
        tool.sign(image("crl-ldap-only"), ns.PKI(crl_root, ldap_leaf))
        tool.sign(image("crl-second-point"), ns.PKI(crl_root, split_leaf))
        tool.sign(image("untrusted-root"), stranger)
        tool.sign(image("wrong-identity"), pki)
        image("unsigned")
        image("builder-jws")
        ns.sign_image(reg.url, "nv/builder-jws", images["builder-jws"], pki.chain, expiry=timedelta(days=365))
        image("builder-cose")
        ns.sign_image(reg.url, "nv/builder-cose", images["builder-cose"], pki.chain, envelope="cose")
        image("expired-certificate")  # valid when it signed, expired since
        ns.sign_image(reg.url, "nv/expired-certificate", images["expired-certificate"], old.chain,
                      signing_time=now - timedelta(days=5))
        image("moved-signature")
        other = oci.make_image(reg.url, "nv/moved-signature", "other")
        tool.sign(f"{host}/nv/moved-signature@{other}", pki)
        _move_signature(reg, "nv/moved-signature", other, images["moved-signature"])
        image("corrupt-envelope")
        _corrupt_signature(reg, "nv/corrupt-envelope", images["corrupt-envelope"], pki)
        time.sleep(max(0.0, 1.5 - (time.monotonic() - t_expired)))
        # Where the signatures went: the tag schema without a referrers API, the API alone with one.
        with httpx.Client(timeout=30) as c:
            tags = c.get(f"{reg.url}/v2/nv/good-jws/tags/list").json()["tags"]
        assert (images["good-jws"].replace(":", "-") in tags) is (reg.kind != "ocireg"), tags

        rows: list[tuple[str, str, str, str, bool]] = []  # case, level, notation-go, sigaudit, agree
        sigaudit_docs: dict[str, dict[str, Any]] = {}
        for level in LEVELS:
            d = tmp_path / level
            d.mkdir()
            store = tmp_path / "truststore"
            for name, root in (("it", pki.root), ("itcrl", crl_root), ("itold", old.root)):
                sd = store / "x509" / "ca" / name
                sd.mkdir(parents=True, exist_ok=True)
                (sd / "root.pem").write_bytes(root.pem)
            stores = ["ca:it", "ca:itcrl", "ca:itold"]
            policy = _trust_policy(d, host, level, stores)
            doc = _sigaudit(d, host, images, policy, store)
            sigaudit_docs[level] = doc
            by_repo = {i["repository"]: i for i in doc["images"]}
            for case, digest in images.items():
                theirs = tool.verify(f"{host}/nv/{case}@{digest}", policy, store)
                ours = by_repo[f"{host}/nv/{case}"]
                status = ours["status"] + ("*" if ours["expiring"] else "")
                agree = theirs["verified"] is (ours["status"] == "verified")
                rows.append((case, level, _failed_checks(theirs), status, agree))
        # A "skip" statement that still names trust stores: notation-go refuses the policy, so must sigaudit.
        d = tmp_path / "skip-with-stores"
        d.mkdir()
        bad = _trust_policy(d, host, "skip", stores, skip_with_stores=True)
        theirs = tool.verify(f"{host}/nv/good-jws@{images['good-jws']}", bad, store, codes=(2,))
        ours = _sigaudit(d, host, images, bad, store, codes=(2,))
        assert "skip signature verification but configured with trust stores" in theirs["error"]
        assert "skip signature verification but configured with trust stores" in ours["stderr"], ours["stderr"]
        rows.append(("skip-with-trust-stores", "-", "config error (exit 2)", "exit 2", True))
    finally:
        crl.close()

    table = "\n".join([f"{'case':22} {'level':10} {'notation-go':44} {'sigaudit':12} agree",
                       *(f"{c:22} {lv:10} {t:44} {s:12} {'yes' if a else 'NO'}" for c, lv, t, s, a in rows)])
    print(f"\nnotation-go vs sigaudit on {registry_fixture} ({host}); * = expiring inside expiryWarning\n{table}")
    disagreements = [r for r in rows if not r[4]]
    details = {f"{r[0]} {r[1]}": [i["reasons"] for i in sigaudit_docs[r[1]]["images"]
                                  if i["repository"].endswith(f"/nv/{r[0]}")] for r in disagreements}
    assert not disagreements, f"{table}\nsigaudit reasons: {json.dumps(details, indent=1)}"

    strict = {r[0]: r[3] for r in rows if r[1] == "strict"}
    assert strict == {c: s + ("*" if c == "expiring" else "") for c, s in STRICT.items()}, strict
    skip = {r[0]: r[3] for r in rows if r[1] == "skip"}
    assert set(skip.values()) == {"verified"}, skip  # skip passes everything, unsigned included
