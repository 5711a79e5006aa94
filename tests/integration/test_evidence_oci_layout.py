"""The evidence pack's per-image OCI layouts (issue #23) are what the upstream tools read offline.

Images in the real docker-registry are signed by the real tools — cosign v2 (``.sig`` tag, a key, no
log) and notation-go (``notation.Sign``; the referrers tag schema, since docker-registry has no
referrers API) — scanned by the real CLI with ``--evidence``; then, in a network namespace without
interfaces (``unshare -n``), the real ``cosign verify --local-image <layout> --key <pack's key copy>
--insecure-ignore-tlog`` and ``notation verify --oci-layout <layout>@sha256:… --scope <repo>`` (with a
notation configuration made from the pack's trust snapshot only) succeed, exactly as VERIFY.md says;
a tampered layout blob, or the other key's signature, fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import notation_sign as ns
from tests.harness import oci
from tests.harness.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.tools]
REPO = "evoci"


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
         offline: bool = False) -> subprocess.CompletedProcess:
    if offline:
        if shutil.which("unshare") is None or os.geteuid() != 0:
            pytest.fail("the upstream tools are run in a network namespace: needs unshare and root")
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=cwd,
                          env={**os.environ, "COSIGN_PASSWORD": "", "TUF_ROOT": "/nonexistent-sigaudit",
                               **(env or {})})


def _pod(i: int, ref: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "ev", "uid": f"u{i}"},
            "spec": {"containers": [{"name": "c", "image": ref}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": ref, "imageID": ref,
                                                                  "ready": True}]}}


@pytest.fixture(scope="module")
def pack(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cosign, notation_go = require_tool("cosign"), require_tool("notation-go")
    d = tmp_path_factory.mktemp("evoci")
    for sub in ("k1", "k2"):
        (d / sub).mkdir()
        r = _run([str(cosign), "generate-key-pair"], cwd=d / sub)
        assert r.returncode == 0, r.stderr
    refs: dict[str, str] = {}
    for name in ("cosign-signed", "cosign-other-key", "notation-signed"):
        digest = oci.make_image(registry.url, f"{REPO}/{name}", "v1")
        refs[name] = f"{registry.host}/{REPO}/{name}@{digest}"
    for name, key in (("cosign-signed", "k1"), ("cosign-other-key", "k2")):
        r = _run([str(cosign), "sign", "--key", str(d / key / "cosign.key"), "--tlog-upload=false", "--yes",
                  "--allow-http-registry", refs[name]])
        assert r.returncode == 0, r.stderr[-2000:]
    pki = ns.make_pki("Evidence Signer")
    (d / "leaf.key").write_bytes(pki.leaf.key_pem)
    (d / "chain.crt").write_bytes(pki.chain_pem())
    r = _run([str(notation_go), "sign", "--insecure-registry", "--key", str(d / "leaf.key"), "--cert",
              str(d / "chain.crt"), refs["notation-signed"]])
    assert r.returncode == 0, r.stdout + r.stderr
    ns.write_trust_material(d / "notation", {"ev": [pki.root]}, scopes=[f"{registry.host}/{REPO}/notation-signed"])
    policy = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "evoci"},
              "spec": {"insecureRegistries": [registry.host], "rules": [
                  {"name": "notation", "images": [f"{registry.host}/{REPO}/notation-*"],
                   "verifiers": [{"notation": {"trustPolicy": str(d / "notation/trustpolicy.json"),
                                               "trustStore": str(d / "notation/truststore")}}]},
                  {"name": "cosign", "images": [f"{registry.host}/{REPO}/cosign-*"],
                   "verifiers": [{"cosign": {"key": str(d / "k1/cosign.pub"), "ignoreTlog": True}}]}]}}
    (d / "policy.yaml").write_text(yaml.safe_dump(policy))
    (d / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                             "items": [_pod(i, r) for i, r in enumerate(refs.values())]}))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    (d / "sign.key").write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    r = _run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(d / "pods.json"), "--policy",
              str(d / "policy.yaml"), "--db", f"sqlite:///{d / 'ev.db'}", "-o", "json", "--no-progress",
              "--evidence", str(d / "pack.tar.gz"), "--evidence-key", str(d / "sign.key")])
    assert r.returncode == 1, r.stderr[-3000:]  # cosign-other-key is invalid
    out = d / "x"
    out.mkdir()
    with tarfile.open(d / "pack.tar.gz", "r:gz") as tar:
        tar.extractall(out, filter="data")
    return {"root": out / "evidence", "refs": refs, "d": d, "host": registry.host}


def _layout(root: Path, ref: str) -> Path:
    return root / "images" / ref.split("@")[1].replace(":", "-") / "oci"


def _trust_file(root: Path, suffix: str) -> Path:
    entries = json.loads((root / "trust/sources.json").read_bytes())["entries"]
    return root / next(e["file"] for e in entries if e["path"].endswith(suffix) and e.get("file"))


def _notation_config(root: Path, into: Path) -> Path:
    """$XDG_CONFIG_HOME for notation, made by VERIFY.md's recipe as written (from the trust snapshot alone)."""
    verify_md = (root / "VERIFY.md").read_text()
    start = verify_md.index("python3 - <<'EOF'\n")
    recipe = verify_md[start:verify_md.index("\nEOF\n", start) + 5]
    work = into / "work"
    shutil.copytree(root, work / "evidence")
    r = _run(["bash", "-c", recipe], cwd=work, offline=True)
    assert r.returncode == 0, r.stderr
    return work / "notation-config"


def test_cosign_verifies_the_layout_offline_with_the_packs_key_copy(pack: dict[str, Any], tmp_path: Path) -> None:
    cosign = require_tool("cosign")
    root, refs = pack["root"], pack["refs"]
    key = _trust_file(root, "k1/cosign.pub")

    def verify(layout: Path) -> subprocess.CompletedProcess:
        return _run([str(cosign), "verify", "--local-image", str(layout), "--key", str(key),
                     "--insecure-ignore-tlog"], env={"HOME": str(tmp_path)}, offline=True)

    good = _layout(root, refs["cosign-signed"])
    verify_md = (root / "VERIFY.md").read_text()  # names the layout and the key copy it is checked with
    assert f"evidence/{good.relative_to(root)}" in verify_md and f"evidence/{key.relative_to(root)}" in verify_md
    r = verify(good)
    assert r.returncode == 0, r.stderr[-2000:]
    assert refs["cosign-signed"].split("@")[1] in r.stdout
    assert verify(_layout(root, refs["cosign-other-key"])).returncode != 0
    # a tampered signature payload in the layout
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    index = json.loads((bad / "index.json").read_bytes())
    sig = next(m for m in index["manifests"] if m.get("annotations", {}).get("kind") == "dev.cosignproject.cosign/sigs")
    layer = json.loads((bad / "blobs" / sig["digest"].replace(":", "/")).read_bytes())["layers"][0]
    blob = bad / "blobs" / layer["digest"].replace(":", "/")
    blob.write_bytes(blob.read_bytes().replace(b'"critical"', b'"Critical"', 1))
    assert verify(bad).returncode != 0


def test_notation_verifies_the_layout_offline_with_the_packs_trust_snapshot(pack: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    notation = require_tool("notation")
    root, refs = pack["root"], pack["refs"]
    ref = refs["notation-signed"]
    digest = ref.split("@")[1]
    conf = _notation_config(root, tmp_path / "conf")

    def verify(layout: Path) -> subprocess.CompletedProcess:
        return _run([str(notation), "verify", "--oci-layout", f"{layout}@{digest}", "--scope", ref.split("@")[0]],
                    env={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(conf), "NOTATION_EXPERIMENTAL": "1"},
                    offline=True)

    good = _layout(root, ref)
    r = verify(good)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "Successfully verified" in r.stdout + r.stderr
    # a flipped byte in the signature envelope: notation rejects it
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    for m in json.loads((bad / "index.json").read_bytes())["manifests"]:
        doc = json.loads((bad / "blobs" / m["digest"].replace(":", "/")).read_bytes())
        if doc.get("subject"):
            env = bad / "blobs" / doc["layers"][0]["digest"].replace(":", "/")
            data = bytearray(env.read_bytes())
            data[len(data) // 2] ^= 1
            env.write_bytes(bytes(data))
    r = verify(bad)
    assert r.returncode != 0, r.stdout + r.stderr


def test_verify_evidence_holds_and_names_a_tampered_layout_blob(pack: dict[str, Any], tmp_path: Path) -> None:
    from scanner.evidence.pack import write_tar
    from tests.integration.test_evidence_pack import resign

    root, refs = pack["root"], pack["refs"]
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert any(n.startswith(f"{_layout(root, refs['notation-signed']).relative_to(root)}/blobs/") for n in files)
    pub = tmp_path / "sign.pub"
    pub.write_text(files["verdict-signing.pub"].decode())
    ok = tmp_path / "ok.tar.gz"
    with ok.open("wb") as fh:
        write_tar(files, fh)
    cli = [sys.executable, "-m", "scanner.cli", "verify-evidence"]
    r = _run([*cli, str(ok), "--key", str(pub)], offline=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # a layout blob swapped for other bytes, the manifest re-signed: caught by the layout check
    layout = str(_layout(root, refs["cosign-signed"]).relative_to(root))
    victim = next(n for n in sorted(files) if n.startswith(layout + "/blobs/"))
    forged = dict(files)
    forged[victim] = files[victim] + b" "
    bad = tmp_path / "bad.tar.gz"
    with bad.open("wb") as fh:
        write_tar(resign(forged, pack["d"] / "sign.key"), fh)
    r = _run([*cli, str(bad), "--key", str(pub)], offline=True)
    assert r.returncode == 1 and victim in r.stdout, r.stdout + r.stderr


def test_the_image_manifest_for_the_layout_never_spends_the_registry_budget(pack: dict[str, Any]) -> None:
    """Recording the image manifest is one more manifest GET per cold image: under --registry-budget
    (pull-rate etiquette) it is not made, so keeping evidence (any scan with a store) never turns a
    verdict into a budget error. The budget is the exact number of GETs the verdicts need, one image at a time."""
    d = pack["d"]

    def statuses(*extra: str) -> dict[str, str]:
        r = _run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(d / "pods.json"), "--policy",
                  str(d / "policy.yaml"), "-o", "json", "--no-progress", "--no-cache",
                  "--registry-concurrency", "1", *extra])
        assert r.returncode in (0, 1), r.stderr[-2000:]
        return {i["digest"]: i["status"] for i in json.loads(r.stdout)["images"]}

    unbounded = statuses("--no-store")
    assert sorted(unbounded.values()) == ["invalid", "verified", "verified"]
    budget = next(b for b in range(1, 20) if statuses("--no-store", "--registry-budget", str(b)) == unbounded)
    db = f"sqlite:///{d / f'budget-{budget}.db'}"
    assert statuses("--db", db, "--registry-budget", str(budget)) == unbounded
