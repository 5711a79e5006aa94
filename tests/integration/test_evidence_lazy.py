"""Trust material read *during* verification (issue #23): a CRL for a notation chain, a Grafeas listing.

A warm scan serves verdicts from the store and reads none of that material again; its evidence pack must
still reproduce those verdicts offline. The material follows the cached verdict: each image's record in
the store names the trust answers its verification used (content-addressed, like its signature
material), and the pack carries them per image. Replay happens at the scan's time (never more lenient
than the scan): a CRL past its nextUpdate at that time fails closed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scanner.evidence import dsse
from scanner.evidence.capture import sha256_hex
from scanner.evidence.pack import MANIFEST, MANIFEST_PAYLOAD_TYPE, MANIFEST_SIG, write_tar
from tests.harness import notation_sign as ns
from tests.harness.oci import make_image
from tests.harness.revocation_server import RevocationServer

pytestmark = pytest.mark.integration


def sigaudit(*args: str, netns: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "scanner.cli", *args]
    if netns:
        if shutil.which("unshare") is None or os.geteuid() != 0:
            pytest.fail("verify-evidence is tested in a network namespace: needs unshare and root")
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def signing_key(tmp: Path) -> tuple[Path, Path]:
    priv = ec.generate_private_key(ec.SECP256R1())
    k, p = tmp / "sign.key", tmp / "sign.pub"
    k.write_bytes(priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    p.write_bytes(priv.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    return k, p


def read_files(pack: Path) -> dict[str, bytes]:
    with tarfile.open(pack, "r:gz") as tar:
        return {m.name.removeprefix("evidence/"): tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


def resign(files: dict[str, bytes], key: Path, out: Path) -> Path:
    """What a sigaudit that lied would sign: a manifest of the files as they are now."""
    signer = dsse.signer_from(str(key))
    manifest = json.loads(files[MANIFEST])
    manifest["files"] = {p: sha256_hex(b) for p, b in sorted(files.items()) if p not in (MANIFEST, MANIFEST_SIG)}
    files = dict(files)
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    files[MANIFEST_SIG] = json.dumps(dsse.sign_envelope(MANIFEST_PAYLOAD_TYPE, files[MANIFEST], signer)).encode()
    with out.open("wb") as fh:
        write_tar(files, fh)
    return out


def pods_file(path: Path, images: dict[str, tuple[str, str]]) -> Path:
    """``images``: pod name -> (repository, digest)."""
    items = []
    for i, (name, (repo, digest)) in enumerate(sorted(images.items())):
        items.append({"metadata": {"name": name, "namespace": "prod", "uid": f"uid-{i}", "labels": {}},
                      "spec": {"containers": [{"name": "c", "image": f"{repo}:1.0"}]},
                      "status": {"phase": "Running", "containerStatuses": [
                          {"name": "c", "image": f"{repo}:1.0", "imageID": f"{repo}@{digest}", "ready": True}]}})
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}))
    return path


def scan(d: Path, pods: Path, policy: Path, name: str, key: Path, *extra: str) -> dict[str, Any]:
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--db", f"sqlite:///{d / 'lazy.db'}",
                 "-o", "json", "--cluster", "lazy", "--no-progress", "--evidence", str(d / f"{name}.tar.gz"),
                 "--evidence-key", str(key), *extra)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def cache_reused(d: Path, scan_id: int) -> int:
    from scanner.store import open_store

    with open_store(f"sqlite:///{d / 'lazy.db'}") as store:
        return int(store.load_scan(scan_id).stats["cache_reused"])


def image_files(files: dict[str, bytes], digest: str) -> list[str]:
    return sorted(p for p in files if p.startswith(f"images/{digest.replace(':', '-')}/"))


@pytest.fixture(scope="module")
def crl_estate(registry, tmp_path_factory):
    """Two notation-signed images whose leaf names a CRL on 127.0.0.1 (each its own issuer, CRL and URL),
    scanned cold and warm into one database, with a pack of each scan."""
    d = tmp_path_factory.mktemp("lazy-crl")
    server = RevocationServer()
    pkis, images = {}, {}
    for name in ("alpha", "beta"):
        pki = ns.make_pki(f"{name} signer", crl_url=f"{server.base}/{name}.crl", serial=0x2000)
        server.files[f"/{name}.crl"] = ns.crl(pki.root, [])
        digest = make_image(registry.url, f"lazy/{name}", "1.0")
        ns.sign_image(registry.url, f"lazy/{name}", digest, pki.chain)
        pkis[name], images[name] = pki, (f"{registry.host}/lazy/{name}", digest)
    tp, store = ns.write_trust_material(d, {"lazy": [p.root for p in pkis.values()]})
    policy = d / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "lazy"},
        "spec": {"insecureRegistries": [registry.host], "rules": [{
            "name": "notation", "images": [f"{registry.host}/lazy/*"],
            "verifiers": [{"notation": {"trustPolicy": str(tp), "trustStore": str(store)}}]}]}}))
    pods = pods_file(d / "pods.json", images)
    key, pub = signing_key(d)
    docs = {}
    for run in ("cold", "warm"):
        before = len(server.hits)
        docs[run] = scan(d, pods, policy, run, key)
        docs[run]["crl_hits"] = len(server.hits) - before
    yield {"d": d, "server": server, "pkis": pkis, "images": images, "docs": docs, "key": key, "pub": pub,
           "policy": policy, "pods": pods}
    server.close()


def test_a_warm_scans_pack_reproduces_the_crl_checked_notation_verdicts_offline(crl_estate) -> None:
    e = crl_estate
    d, docs = e["d"], e["docs"]
    assert [i["status"] for i in docs["cold"]["images"]] == ["verified", "verified"]
    assert [i["status"] for i in docs["warm"]["images"]] == ["verified", "verified"]
    assert docs["cold"]["crl_hits"] == 2
    for run in ("cold", "warm"):
        r = sigaudit("verify-evidence", str(d / f"{run}.tar.gz"), "--key", str(e["pub"]), "-o", "json", netns=True)
        assert r.returncode == 0, f"{run}: {r.stdout}{r.stderr}"
        assert json.loads(r.stdout)["images"] == 2
    # each image's record names the CRL its verdict was checked against (its own, not the other image's),
    # kept once in trust/files/ by content
    files = read_files(d / "warm.tar.gz")
    for name, (_repo, digest) in e["images"].items():
        other = "beta" if name == "alpha" else "alpha"
        used = crl_entries(files, digest)
        assert [u["sha256"] for u in used] == [sha256_hex(e["server"].files[f"/{name}.crl"])], used
        assert files[f"trust/files/{used[0]['sha256']}"] == e["server"].files[f"/{name}.crl"]
        assert other not in used[0]["path"]


def crl_entries(files: dict[str, bytes], digest: str) -> list[dict[str, Any]]:
    answers = [p for p in image_files(files, digest) if "/answers-" in p]
    return [t for a in answers for t in json.loads(files[a]).get("trust", []) if t["op"] == "get"]


def _tampered(e: dict[str, Any], tmp: Path, name: str, change: Any) -> subprocess.CompletedProcess:
    """The warm pack with ``change(files, answers_name, entry)`` applied to image ``name``'s CRL record,
    re-signed with the pack's key (what a sigaudit that lied would sign), then verified offline."""
    files = read_files(e["d"] / "warm.tar.gz")
    digest = e["images"][name][1]
    (answers_name,) = [p for p in image_files(files, digest) if "/answers-" in p]
    doc = json.loads(files[answers_name])
    (entry,) = [t for t in doc["trust"] if t["op"] == "get"]
    change(files, doc, entry)
    files[answers_name] = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    pack = resign(files, e["key"], tmp / f"{name}-tampered.tar.gz")
    return sigaudit("verify-evidence", str(pack), "--key", str(e["pub"]), netns=True)


def _put_crl(files: dict[str, bytes], entry: dict[str, Any], crl: bytes) -> None:
    files[f"trust/files/{sha256_hex(crl)}"] = crl
    entry["sha256"] = sha256_hex(crl)


def test_a_tampered_stale_swapped_or_missing_crl_in_the_warm_pack_fails(crl_estate, tmp_path: Path) -> None:
    e = crl_estate
    alpha, beta = e["pkis"]["alpha"], e["pkis"]["beta"]
    digest = e["images"]["alpha"][1].replace(":", "-")
    now = datetime.now(UTC)
    cases = {
        # a CRL of the right issuer that revokes the leaf
        "revoking": lambda f, doc, entry: _put_crl(f, entry, ns.crl(alpha.root, [0x2000])),
        # the right issuer, but past its nextUpdate at the scan's time: the replay is at the scan's time
        "stale": lambda f, doc, entry: _put_crl(f, entry, ns.crl(alpha.root, [], this_update=now - timedelta(days=3),
                                                                 next_update=now - timedelta(days=1))),
        # the other image's CRL (another issuer) under this image's URL
        "swapped": lambda f, doc, entry: _put_crl(f, entry, e["server"].files["/beta.crl"]),
        # the image's record no longer names its CRL: never answered from the scan's snapshot instead
        "dropped": lambda f, doc, entry: doc["trust"].remove(entry),
        # the record names a CRL the pack does not hold
        "absent": lambda f, doc, entry: f.pop(f"trust/files/{entry['sha256']}"),
    }
    assert beta.root.cert.subject != alpha.root.cert.subject
    for what, change in cases.items():
        r = _tampered(e, tmp_path, "alpha", change)
        assert r.returncode == 1, f"{what}: {r.stdout}{r.stderr}"
        assert f"images/{digest}/record.json: recorded verdict not reproduced" in r.stdout, f"{what}: {r.stdout}"
    # unsigned tampering: a flipped byte in the CRL file, or a CRL file the manifest does not list
    files = read_files(e["d"] / "warm.tar.gz")
    crl_name = f"trust/files/{crl_entries(files, e['images']['alpha'][1])[0]['sha256']}"
    flipped = dict(files)
    flipped[crl_name] = bytes([files[crl_name][0] ^ 1]) + files[crl_name][1:]
    with (tmp_path / "flipped.tar.gz").open("wb") as fh:
        write_tar(flipped, fh)
    r = sigaudit("verify-evidence", str(tmp_path / "flipped.tar.gz"), "--key", str(e["pub"]), netns=True)
    assert r.returncode == 1 and f"{crl_name}: sha256 differs" in r.stdout, r.stdout + r.stderr
    unlisted = json.loads(files[MANIFEST])
    del unlisted["files"][crl_name]
    signer = dsse.signer_from(str(e["key"]))
    files[MANIFEST] = (json.dumps(unlisted, indent=2, sort_keys=True) + "\n").encode()
    files[MANIFEST_SIG] = json.dumps(dsse.sign_envelope(MANIFEST_PAYLOAD_TYPE, files[MANIFEST], signer)).encode()
    with (tmp_path / "unlisted.tar.gz").open("wb") as fh:
        write_tar(files, fh)
    r = sigaudit("verify-evidence", str(tmp_path / "unlisted.tar.gz"), "--key", str(e["pub"]), netns=True)
    assert r.returncode == 1 and f"{crl_name}: not listed" in r.stdout, r.stdout + r.stderr


def test_a_grafeas_listing_follows_each_image_into_the_warm_pack(registry, grafeas_server, tmp_path: Path) -> None:
    g = grafeas_server
    g.create_project("lazy")
    note = g.create_note("lazy", "qa")
    priv = ec.generate_private_key(ec.SECP256R1())
    pem = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    images = {}
    for name in ("one", "two"):
        digest = make_image(registry.url, f"lazyatt/{name}", "1.0")
        repo = f"{registry.host}/lazyatt/{name}"
        payload = json.dumps({"critical": {"identity": {"docker-reference": repo},
                                           "image": {"docker-manifest-digest": digest},
                                           "type": "atomic container signature"}}, separators=(",", ":")).encode()
        g.create_attestation("lazy", note, f"https://{repo}@{digest}", payload,
                             priv.sign(payload, ec.ECDSA(hashes.SHA256())), "qa-key")
        images[name] = (repo, digest)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
                                  "metadata": {"name": "att"}, "spec": {
                                      "insecureRegistries": [registry.host],
                                      "rules": [{"name": "attested", "images": [f"{registry.host}/lazyatt/*"],
                                                 "verifiers": [{"attestation": {
                                                     "attestor": "qa", "publicKeys": [pem], "noteName": note,
                                                     "source": g.project_url("lazy")}}]}]}}))
    pods = pods_file(tmp_path / "pods.json", images)
    key, pub = signing_key(tmp_path)
    for run in ("cold", "warm"):
        doc = scan(tmp_path, pods, policy, run, key)
        assert [i["status"] for i in doc["images"]] == ["verified", "verified"], doc
        r = sigaudit("verify-evidence", str(tmp_path / f"{run}.tar.gz"), "--key", str(pub), netns=True)
        assert r.returncode == 0, f"{run}: {r.stdout}{r.stderr}"
    files = read_files(tmp_path / "warm.tar.gz")
    for _name, (_repo, digest) in images.items():
        answers = [p for p in image_files(files, digest) if "/answers-" in p]
        listings = [t for a in answers for t in json.loads(files[a]).get("trust", []) if t["op"] == "grafeas"]
        assert len(listings) == 1 and digest.split(":")[1] in listings[0]["path"], listings
        assert f"trust/files/{listings[0]['sha256']}" in files


def test_an_auditor_refuses_a_stale_or_substituted_pack(crl_estate) -> None:
    """verify-evidence --not-before / --expect-scan check the signed manifest's time and scan id."""
    e = crl_estate
    cold, warm = e["docs"]["cold"]["scan"]["id"], e["docs"]["warm"]["scan"]["id"]
    pack, pub = str(e["d"] / "cold.tar.gz"), str(e["pub"])
    ok = sigaudit("verify-evidence", pack, "--key", pub, "--expect-scan", str(cold), "--not-before", "1h")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    r = sigaudit("verify-evidence", pack, "--key", pub, "--expect-scan", str(warm))  # the old pack for the new
    assert r.returncode == 1 and f"not the expected scan {warm} (--expect-scan)" in r.stdout, r.stdout
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    r = sigaudit("verify-evidence", pack, "--key", pub, "--not-before", future)
    assert r.returncode == 1 and "(--not-before): a stale pack" in r.stdout, r.stdout
    r = sigaudit("verify-evidence", pack, "--key", pub, env={"SIGAUDIT_NOT_BEFORE": future})  # from the env too
    assert r.returncode == 1 and "--not-before" in r.stdout, r.stdout
    for bad in ("2026-12-07T00:00:00", "last tuesday"):
        r = sigaudit("verify-evidence", pack, "--key", pub, "--not-before", bad)
        assert r.returncode == 2, r.stdout + r.stderr


# -- The TSA chain's revocation, checked offline from CRLs in the pack -------------------------------


def _evidence_with_tsa(e: dict[str, Any], tsa: Any, out: Path) -> subprocess.CompletedProcess:
    root = e["d"] / "tsa-root.pem"
    root.write_bytes(tsa.root_pem)
    return sigaudit("evidence", "--db", f"sqlite:///{e['d'] / 'lazy.db'}", "--scan",
                    str(e["docs"]["cold"]["scan"]["id"]), "--sign-key", str(e["key"]), "--out", str(out),
                    "--tsa-url", tsa.url, "--tsa-ca-cert", str(root))


def _verify_tsa(e: dict[str, Any], pack: Path, *extra: str) -> subprocess.CompletedProcess:
    return sigaudit("verify-evidence", str(pack), "--key", str(e["pub"]), "--tsa-ca-cert",
                    str(e["d"] / "tsa-root.pem"), "-o", "json", *extra, netns=True)


def _resign_and_timestamp(files: dict[str, bytes], key: Path, tsa_url: str, out: Path) -> Path:
    """What a sigaudit that lied would make: the manifest as the files are now, signed and timestamped."""
    import base64

    from scanner.evidence.pack import MANIFEST_TSR
    from scanner.sources.tsa import request_timestamp

    signer = dsse.signer_from(str(key))
    files = dict(files)
    manifest = json.loads(files[MANIFEST])
    manifest["files"] = {p: sha256_hex(b) for p, b in sorted(files.items())
                         if p not in (MANIFEST, MANIFEST_SIG, MANIFEST_TSR)}
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    envelope = dsse.sign_envelope(MANIFEST_PAYLOAD_TYPE, files[MANIFEST], signer)
    files[MANIFEST_SIG] = json.dumps(envelope).encode()
    files[MANIFEST_TSR] = request_timestamp(tsa_url, base64.b64decode(envelope["signatures"][0]["sig"]))
    with out.open("wb") as fh:
        write_tar(files, fh)
    return out


def test_the_tsa_chains_revocation_is_checked_offline_from_the_packs_crls(crl_estate, tmp_path: Path) -> None:
    from tests.harness.tsa_server import TsaServer, tsa_crl

    e = crl_estate
    server = e["server"]
    with TsaServer.start(tmp_path / "tsa", crl_url=f"{server.base}/tsa.crl") as tsa:
        server.files["/tsa.crl"] = tsa_crl(tsa.directory)
        r = _evidence_with_tsa(e, tsa, tmp_path / "good.tar.gz")
        assert r.returncode == 0, r.stderr
        files = read_files(tmp_path / "good.tar.gz")
        manifest = json.loads(files[MANIFEST])
        (crl,) = manifest["tsa_revocation"]["crls"]
        assert crl["url"] == f"{server.base}/tsa.crl" and files[crl["file"]] == server.files["/tsa.crl"]
        assert crl["file"] in manifest["files"]  # under the signed manifest
        r = _verify_tsa(e, tmp_path / "good.tar.gz")
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["timestamp"]["revocation"] == "checked against the pack's CRLs"

        # the TSA's certificate revoked (before the token's time): the pack fails
        server.files["/tsa.crl"] = tsa_crl(tsa.directory, revoked=True)
        assert _evidence_with_tsa(e, tsa, tmp_path / "revoked.tar.gz").returncode == 0
        r = _verify_tsa(e, tmp_path / "revoked.tar.gz")
        assert r.returncode == 1 and "the TSA's certificate chain is revoked" in r.stdout, r.stdout

        # a CRL past its nextUpdate at the TSA's time settles nothing: fails
        now = datetime.now(UTC)
        server.files["/tsa.crl"] = tsa_crl(tsa.directory, next_update=now - timedelta(minutes=1))
        assert _evidence_with_tsa(e, tsa, tmp_path / "x.tar.gz").returncode == 0
        r = _verify_tsa(e, tmp_path / "x.tar.gz")
        assert r.returncode == 1 and "cannot be settled from the pack" in r.stdout, r.stdout
        # a CRL of another issuer: never stored at build; put in a re-signed, re-timestamped pack, it
        # settles nothing either
        server.files["/tsa.crl"] = e["server"].files["/alpha.crl"]
        r = _evidence_with_tsa(e, tsa, tmp_path / "other.tar.gz")
        assert r.returncode != 0 and "not a CRL of the certificate's issuer" in r.stderr, r.stderr
        files = read_files(tmp_path / "good.tar.gz")
        files[json.loads(files[MANIFEST])["tsa_revocation"]["crls"][0]["file"]] = e["server"].files["/alpha.crl"]
        r = _verify_tsa(e, _resign_and_timestamp(files, e["key"], tsa.url, tmp_path / "other-issuer.tar.gz"))
        assert r.returncode == 1 and "cannot be settled from the pack" in r.stdout, r.stdout

        # no CRL in the pack for a certificate that names one (a pack that left it out, re-signed and
        # re-timestamped): fails closed unless the auditor says --insecure-skip-tsa-revocation
        files = read_files(tmp_path / "good.tar.gz")
        manifest = json.loads(files[MANIFEST])
        del files[manifest["tsa_revocation"]["crls"][0]["file"]]
        manifest["tsa_revocation"]["crls"] = []
        files[MANIFEST] = json.dumps(manifest).encode()
        pack = _resign_and_timestamp(files, e["key"], tsa.url, tmp_path / "dropped.tar.gz")
        r = _verify_tsa(e, pack)
        assert r.returncode == 1 and "cannot be settled from the pack" in r.stdout, r.stdout
        assert "not in the evidence pack" in r.stdout, r.stdout
        r = _verify_tsa(e, pack, "--insecure-skip-tsa-revocation")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "not checked (--insecure-skip-tsa-revocation)" in r.stdout and "insecure" in r.stderr

        # the CRL cannot be fetched when the pack is built: no pack (it could never be checked)
        del server.files["/tsa.crl"]
        r = _evidence_with_tsa(e, tsa, tmp_path / "nocrl.tar.gz")
        assert r.returncode != 0 and "names a CRL that cannot be fetched" in r.stderr, r.stderr
        assert not (tmp_path / "nocrl.tar.gz").exists()


def test_serve_watch_verdicts_are_in_the_scans_pack_and_replayed_at_their_own_time(
        crl_estate, registry, tmp_path: Path) -> None:
    """A verdict `serve --watch` adds to the baseline scan keeps its material like a scan's; the scan's
    pack replays it at the batch's time (before, it had none: "not reproduced")."""
    from scanner.scan import ScanOptions
    from scanner.store import open_store
    from scanner.watch import Watcher

    e = crl_estate
    db = tmp_path / "watch.db"
    shutil.copyfile(e["d"] / "lazy.db", db)  # the estate's database, not changed for the other tests
    pki = e["pkis"]["alpha"]
    digest = make_image(registry.url, "lazy/gamma", "1.0")
    ns.sign_image(registry.url, "lazy/gamma", digest, pki.chain)
    repo = f"{registry.host}/lazy/gamma"
    pod = json.loads(pods_file(tmp_path / "p.json", {"gamma": (repo, digest)}).read_text())["items"][0]
    with open_store(f"sqlite:///{db}") as store:
        w = Watcher(ScanOptions(cluster="lazy", policy_path=str(e["policy"])), store, api_client=object())
        w._seed_from_store()
        scan_id = w.status.scan_id
        assert scan_id == e["docs"]["warm"]["scan"]["id"]
        (v,) = w.judge([pod])
        assert v.status.value == "verified" and v.image.digest == digest
    out = tmp_path / "watched.tar.gz"
    r = sigaudit("evidence", "--db", f"sqlite:///{db}", "--scan", str(scan_id), "--sign-key", str(e["key"]),
                 "--out", str(out))
    assert r.returncode == 0, r.stderr
    r = sigaudit("verify-evidence", str(out), "--key", str(e["pub"]), "-o", "json", netns=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["images"] == 3
    files = read_files(out)
    record = json.loads(files[f"images/{digest.replace(':', '-')}/record.json"])
    (judgement,) = record["judgements"]
    scan_time = json.loads(files[MANIFEST])["verified_at"]
    assert judgement["verified_at"] > scan_time and judgement["answers"]
    assert crl_entries(files, digest)  # its CRL, read by the watch's verification


def test_a_watch_judgement_dated_after_now_or_before_the_scan_fails(crl_estate, registry, tmp_path: Path) -> None:
    """A re-signed pack whose watch judgement claims a time of verification in the future (after the
    auditor's check) or before the scan's: no honest pack says that, so verify-evidence fails it — its
    record, replay and VSA otherwise agree (the VSA re-signed with that time, as a lying sigaudit would)."""
    from scanner.evidence import vsa as vsa_mod
    from scanner.scan import ScanOptions
    from scanner.store import open_store
    from scanner.watch import Watcher

    e = crl_estate
    db = tmp_path / "watch.db"
    shutil.copyfile(e["d"] / "lazy.db", db)
    digest = make_image(registry.url, "lazy/delta", "1.0")
    ns.sign_image(registry.url, "lazy/delta", digest, e["pkis"]["alpha"].chain)
    pod = json.loads(pods_file(tmp_path / "p.json", {"delta": (f"{registry.host}/lazy/delta", digest)})
                     .read_text())["items"][0]
    with open_store(f"sqlite:///{db}") as store:
        w = Watcher(ScanOptions(cluster="lazy", policy_path=str(e["policy"])), store, api_client=object())
        w._seed_from_store()
        scan_id = w.status.scan_id
        (v,) = w.judge([pod])
        assert v.status.value == "verified"
    out = tmp_path / "watched.tar.gz"
    r = sigaudit("evidence", "--db", f"sqlite:///{db}", "--scan", str(scan_id), "--sign-key", str(e["key"]),
                 "--out", str(out))
    assert r.returncode == 0, r.stderr
    files = read_files(out)
    d = f"images/{digest.replace(':', '-')}"
    scan_time = datetime.fromisoformat(json.loads(files[MANIFEST])["verified_at"])
    signer = dsse.signer_from(str(e["key"]))
    for what, at in {"after now": datetime.now(UTC) + timedelta(hours=2),
                     "before the scan": scan_time - timedelta(minutes=1)}.items():
        f = dict(files)
        record = json.loads(f[f"{d}/record.json"])
        (judgement,) = record["judgements"]
        judgement["verified_at"] = at.isoformat()
        f[f"{d}/record.json"] = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        _, payload = dsse.verify_envelope(f[f"{d}/vsa.intoto.json"], e["pub"].read_bytes(),
                                          payload_type=vsa_mod.PAYLOAD_TYPE)
        statement = json.loads(payload)
        statement["predicate"]["timeVerified"] = vsa_mod._rfc3339(max(at, scan_time))
        f[f"{d}/vsa.intoto.json"] = json.dumps(dsse.sign_envelope(
            vsa_mod.PAYLOAD_TYPE, json.dumps(statement).encode(), signer)).encode()
        pack = resign(f, e["key"], tmp_path / "dated.tar.gz")
        r = sigaudit("verify-evidence", str(pack), "--key", str(e["pub"]), netns=True)
        assert r.returncode == 1, f"{what}: {r.stdout}{r.stderr}"
        assert f"{d}/record.json: a judgement verified at" in r.stdout, f"{what}: {r.stdout}"


def test_a_tsa_with_delta_crls_gives_a_pack_whose_revocation_check_uses_them(crl_estate, tmp_path: Path) -> None:
    """The TSA certificate names a delta CRL (Freshest CRL): the pack carries it too, so the offline check
    — which applies it as the live one does — can settle the chain (before, every such pack failed: "not
    in the evidence pack"), and a revocation the delta lists fails the pack."""
    from tests.harness.tsa_server import TsaServer, tsa_crl

    e = crl_estate
    server = e["server"]
    with TsaServer.start(tmp_path / "tsa", crl_url=f"{server.base}/tsa-base.crl",
                         delta_url=f"{server.base}/tsa-delta.crl") as tsa:
        server.files["/tsa-base.crl"] = tsa_crl(tsa.directory)
        server.files["/tsa-delta.crl"] = tsa_crl(tsa.directory, delta=True)
        r = _evidence_with_tsa(e, tsa, tmp_path / "good.tar.gz")
        assert r.returncode == 0, r.stderr
        urls = {c["url"] for c in json.loads(read_files(tmp_path / "good.tar.gz")[MANIFEST])["tsa_revocation"]["crls"]}
        assert urls == {f"{server.base}/tsa-base.crl", f"{server.base}/tsa-delta.crl"}
        r = _verify_tsa(e, tmp_path / "good.tar.gz")
        assert r.returncode == 0, r.stdout + r.stderr
        # revoked in the delta only: the pack fails
        server.files["/tsa-delta.crl"] = tsa_crl(tsa.directory, delta=True, revoked=True)
        assert _evidence_with_tsa(e, tsa, tmp_path / "revoked.tar.gz").returncode == 0
        r = _verify_tsa(e, tmp_path / "revoked.tar.gz")
        assert r.returncode == 1 and "the TSA's certificate chain is revoked" in r.stdout, r.stdout
        # the delta cannot be fetched when the pack is built: no pack (it could never be checked)
        del server.files["/tsa-delta.crl"]
        r = _evidence_with_tsa(e, tsa, tmp_path / "nodelta.tar.gz")
        assert r.returncode != 0 and "delta CRL that cannot be fetched" in r.stderr, r.stderr


def test_what_a_tsa_certificate_names_as_its_crl_is_stored_only_if_it_is_that_crl(crl_estate, tmp_path: Path) -> None:
    """The TSA's token (or whoever answers for the TSA over http://) names the CRL locations sigaudit
    fetches at build, and the answers go into the pack that auditors get: one that is not a CRL of the
    certificate's issuer — an internal endpoint's credentials, here — is never stored (no pack is
    written), and with --tsa-ca-cert an untrusted TSA's certificates are not followed at all."""
    from tests.harness.tsa_server import TsaServer

    e = crl_estate
    server = e["server"]
    secret = b'{"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "s3cr3t-metadata-credential"}'
    with TsaServer.start(tmp_path / "tsa", crl_url=f"{server.base}/latest/meta-data/creds") as tsa:
        server.files["/latest/meta-data/creds"] = secret
        out = tmp_path / "leak.tar.gz"
        r = sigaudit("evidence", "--db", f"sqlite:///{e['d'] / 'lazy.db'}", "--scan",
                     str(e["docs"]["cold"]["scan"]["id"]), "--sign-key", str(e["key"]), "--out", str(out),
                     "--tsa-url", tsa.url)
        leaked = out.exists() and any(b"s3cr3t-metadata-credential" in b for b in read_files(out).values())
        assert not leaked, "the endpoint's answer was stored in the pack"
        assert r.returncode != 0 and "names a CRL that cannot be fetched" in r.stderr, r.stderr
        assert "not a CRL" in r.stderr, r.stderr
    # a TSA the builder does not trust (another root given): its chain's endpoints are never contacted
    with TsaServer.start(tmp_path / "tsa2", crl_url=f"{server.base}/untrusted-tsa.crl") as tsa:
        other = tmp_path / "other-root.pem"
        other.write_bytes((e["d"] / "tsa-root.pem").read_bytes() if (e["d"] / "tsa-root.pem").exists()
                          else e["pkis"]["alpha"].root.cert.public_bytes(serialization.Encoding.PEM))
        before = [h for h in server.hits if "untrusted-tsa" in str(h)]
        r = sigaudit("evidence", "--db", f"sqlite:///{e['d'] / 'lazy.db'}", "--scan",
                     str(e["docs"]["cold"]["scan"]["id"]), "--sign-key", str(e["key"]), "--out",
                     str(tmp_path / "untrusted.tar.gz"), "--tsa-url", tsa.url, "--tsa-ca-cert", str(other))
        assert r.returncode != 0 and not (tmp_path / "untrusted.tar.gz").exists(), r.stderr
        assert [h for h in server.hits if "untrusted-tsa" in str(h)] == before, server.hits
