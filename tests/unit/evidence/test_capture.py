"""Recording and replay of the registry answers one image's verification used, and of the trust
material a policy load read: the replay answers what was recorded, digest-checked, and nothing else
(an unrecorded question is an error, never a 'not found' that would read as 'unsigned')."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scanner.errors import ConfigError, NotFound, ParseError, RegistryError
from scanner.evidence.capture import Material, RecordingReader, ReplayReader, canonical_json
from scanner.models import ImageReference
from scanner.verify import sources
from tests.harness.registry_sim import InMemoryRegistry


def _roundtrip(m: Material) -> Material:
    doc = json.loads(canonical_json(m.to_json()))
    return Material.from_json(doc, m.blobs)


def test_replay_answers_exactly_what_was_recorded() -> None:
    sim = InMemoryRegistry()
    ref = ImageReference("r.example", "app")
    digest = sim.push_image(ref)
    rec = RecordingReader(sim)
    m = rec.get_manifest(ref, digest)
    with pytest.raises(NotFound):
        rec.get_manifest(ref, "sha256-" + digest[7:] + ".sig")
    replay = ReplayReader(_roundtrip(rec.material))
    assert replay.get_manifest(ref, digest).raw == m.raw
    with pytest.raises(NotFound):  # a recorded 404 is replayed as a 404
        replay.get_manifest(ref, "sha256-" + digest[7:] + ".sig")
    with pytest.raises(RegistryError, match="not in the evidence pack") as info:  # never NotFound
        replay.get_manifest(ref, "other")
    assert not isinstance(info.value, NotFound)
    with pytest.raises(RegistryError, match="not in the evidence pack"):
        replay.referrers(ref, digest)


def test_replayed_bytes_are_digest_checked() -> None:
    sim = InMemoryRegistry()
    ref = ImageReference("r.example", "app")
    digest = sim.push_image(ref)
    rec = RecordingReader(sim)
    rec.get_manifest(ref, digest)
    m = _roundtrip(rec.material)
    sha = next(iter(m.blobs))
    m.blobs[sha] = m.blobs[sha] + b" "
    with pytest.raises(RegistryError, match="not in the evidence pack"):
        ReplayReader(m).get_manifest(ref, digest)
    # a record whose digest lies about its bytes
    m = _roundtrip(rec.material)
    key = next(iter(m.answers))
    m.answers[key]["digest"] = "sha256:" + "0" * 64
    with pytest.raises(ParseError, match="digest mismatch"):
        ReplayReader(m).get_manifest(ref, digest)


def test_trust_sources_record_then_replay_without_the_files(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "a.pem").write_bytes(b"A")
    rec = sources.Recording()
    with sources.reading_from(rec):
        assert sources.is_dir(tmp_path / "store")
        assert [p.name for p in sources.iterdir(tmp_path / "store")] == ["a.pem"]
        assert sources.read_bytes(tmp_path / "store" / "a.pem") == b"A"
        assert sources.fetched("kms", "awskms:///k", lambda: b"PEM") == b"PEM"
        with pytest.raises(OSError):
            sources.read_bytes(tmp_path / "absent")
    snap = rec.snapshot
    (tmp_path / "store" / "a.pem").write_bytes(b"changed on disk")
    replay = sources.Replay(json.loads(json.dumps(snap.entries)), snap.blobs)
    with sources.reading_from(replay):
        assert sources.is_dir(tmp_path / "store")
        assert sources.read_bytes(tmp_path / "store" / "a.pem") == b"A"  # the snapshot, not the disk
        assert sources.fetched("kms", "awskms:///k", lambda: b"never called") == b"PEM"
        with pytest.raises(FileNotFoundError):
            sources.read_bytes(tmp_path / "absent")
        with pytest.raises(FileNotFoundError, match="not in the evidence pack"):
            sources.read_bytes(tmp_path / "never-asked")
        assert not sources.is_file(tmp_path / "never-asked")
        with pytest.raises(ConfigError, match="not in the evidence pack"):
            sources.fetched("url", "https://example.com/k", lambda: b"never called")
    assert sources.read_bytes(tmp_path / "store" / "a.pem") == b"changed on disk"  # outside: the real file


def test_a_key_url_credential_never_enters_the_snapshot() -> None:
    url = "https://user:hunter2@keys.example/k.pub?token=s3cr3t"
    rec = sources.Recording()
    with sources.reading_from(rec):
        assert sources.fetched("url", url, lambda: b"PEM") == b"PEM"
    text = json.dumps(rec.snapshot.entries)
    assert "hunter2" not in text and "s3cr3t" not in text and "keys.example" in text
    with sources.reading_from(sources.Replay(rec.snapshot.entries, rec.snapshot.blobs)):
        assert sources.fetched("url", url, lambda: b"never") == b"PEM"  # the same URL replays
        with pytest.raises(ConfigError) as info:  # another credential is another reference
            sources.fetched("url", url.replace("hunter2", "other"), lambda: b"never")
        assert "other" not in str(info.value)


def test_the_public_good_root_is_recorded_and_replayed_without_tuf(monkeypatch: pytest.MonkeyPatch) -> None:
    from scanner.verify import trustroot

    rec = sources.Recording()
    with sources.reading_from(rec):
        lazy = trustroot.LazyTrust(lambda: trustroot.public_good_trust(offline=True), name="public good")
    got = lazy.get()  # loaded later (a worker thread in a scan), outside the context: still recorded
    assert any(e["op"] == "sigstore" for e in rec.snapshot.entries)

    def no_tuf(**_: object) -> bytes:
        raise AssertionError("TUF, its cache or the network was consulted during a replay")

    monkeypatch.setattr(trustroot, "_public_good_root", no_tuf)
    with sources.reading_from(sources.Replay(rec.snapshot.entries, rec.snapshot.blobs)):
        assert trustroot.public_good_trust(offline=False).fingerprint == got.fingerprint
    with sources.reading_from(sources.Replay([], {})), pytest.raises(ConfigError, match="not in the evidence pack"):
        trustroot.public_good_trust(offline=False)


def test_a_policy_file_with_a_credential_in_a_key_url_is_kept_masked_and_replays(tmp_path: Path) -> None:
    """The policy text itself may spell ``https://user:password@host/key``: the snapshot (stored in the
    database and packed for auditors) keeps it masked, and the masked policy rebuilds the same digest."""
    from scanner.policy.loader import PolicyLoader, load_policy

    url = "https://key-user:Key-Pa55word@keys.example/k.pub"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n"
        f"    - name: r\n      images: ['registry.example/*']\n      verifiers:\n"
        f"        - cosign: {{key: '{url}', ignoreTlog: true}}\n"
    )
    rec = sources.Recording()

    def fetch(text: str) -> bytes:
        assert text == url
        return pem

    with sources.reading_from(rec):
        live = load_policy(str(policy), loader=PolicyLoader(key_fetcher=fetch))
    stored = json.dumps(rec.snapshot.entries).encode() + b"".join(rec.snapshot.blobs.values())
    assert b"Key-Pa55word" not in stored and b"keys.example" in stored
    with sources.reading_from(sources.Replay(rec.snapshot.entries, rec.snapshot.blobs)):
        replayed = load_policy(str(policy), loader=PolicyLoader())
    assert replayed.digest == live.digest


def _ca_pem() -> str:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    k = ec.generate_private_key(ec.SECP256R1())
    n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imported ca")])
    t = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    c = (x509.CertificateBuilder().subject_name(n).issuer_name(n).public_key(k.public_key()).serial_number(1)
         .not_valid_before(t).not_valid_after(t + datetime.timedelta(days=3650))
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(k, hashes.SHA256()))
    return c.public_bytes(serialization.Encoding.PEM).decode()


def _pub_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_an_imported_policys_ca_material_replays_on_another_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trust material an importer derives (a Notary attestor's CA turned into a notation trust store, a
    keyless root with its log keys) is recorded and replays in a process with another temp directory and
    nothing in memory, giving the same policy digest; nothing is written to disk on either side."""
    import tempfile

    from scanner.policy.sources import load_policies

    entries = {"any": [{"resources": {"kinds": ["Pod"]}}]}
    doc = {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "p"},
           "spec": {"validationFailureAction": "Enforce", "rules": [
               {"name": "notary", "match": entries,
                "verifyImages": [{"type": "Notary", "imageReferences": ["registry.example/n/*"],
                                  "attestors": [{"entries": [{"certificates": {"cert": _ca_pem()}}]}]}]},
               {"name": "keyless", "match": entries,
                "verifyImages": [{"imageReferences": ["registry.example/k/*"],
                                  "attestors": [{"entries": [{"keyless": {
                                      "subject": "s@example.com", "issuer": "https://issuer.example",
                                      "roots": _ca_pem(), "rekor": {"pubkey": _pub_pem()},
                                      "ctlog": {"pubkey": _pub_pem()}}}]}]}]}]}}
    imported = tmp_path / "kyverno.json"
    imported.write_text(json.dumps(doc))
    scan_tmp, verify_tmp = tmp_path / "scan-tmp", tmp_path / "verify-tmp"
    scan_tmp.mkdir()
    verify_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scan_tmp))
    rec = sources.Recording()
    with sources.reading_from(rec):
        live = load_policies(None, (f"kyverno:{imported}",))
    assert [r.name for r in live.rules] == ["p/notary", "p/keyless"]
    assert any(e["path"].startswith(sources.MEM_PREFIX) for e in rec.snapshot.entries)

    # verify-evidence elsewhere: another temp directory, an empty overlay, only the snapshot
    monkeypatch.setattr(tempfile, "tempdir", str(verify_tmp))
    monkeypatch.setattr(sources, "_mem_files", {})
    monkeypatch.setattr(sources, "_mem_dirs", {})
    replay = sources.Replay(json.loads(json.dumps(rec.snapshot.entries)), rec.snapshot.blobs)
    imported.unlink()
    with sources.reading_from(replay):
        again = load_policies(None, (f"kyverno:{imported}",))
    assert again.digest == live.digest
    assert [r.name for r in again.rules] == ["p/notary", "p/keyless"]
    assert list(scan_tmp.iterdir()) == [] and list(verify_tmp.iterdir()) == []


def test_the_trust_an_images_verification_reads_is_kept_with_its_material() -> None:
    """Issue #23: a CRL (or listing, or lazily loaded root) read while one image is judged is part of
    that image's material: stored with it, so a later scan that reuses its verdict carries it too. A
    record from before (no "trust" key) is told apart: it replays from the scan's snapshot."""
    from scanner.evidence.capture import Capture, trust_blob_names

    rec = sources.Recording()
    with sources.reading_from(rec):
        fetch = sources.wrap_fetcher(_Fetcher({"http://ca/x.crl": b"CRL"}))
    capture = Capture()
    reg = InMemoryRegistry()
    a, b = RecordingReader(reg), RecordingReader(reg)
    with capture.trust_reads(a):
        assert fetch.get("http://ca/x.crl", max_bytes=9, timeout=1) == b"CRL"
    with capture.trust_reads(b):
        pass  # judged without reading it
    doc = json.loads(json.dumps(a.material.to_json()))
    assert doc["trust"] == [{"op": "get", "path": "http://ca/x.crl", "sha256": hashlib.sha256(b"CRL").hexdigest()}]
    assert a.material.blobs[hashlib.sha256(b"CRL").hexdigest()] == b"CRL"
    assert trust_blob_names(doc) == {hashlib.sha256(b"CRL").hexdigest()}
    assert b.material.to_json()["trust"] == []  # recorded: it read none (a replay gives it none)
    again = Material.from_json(doc, a.material.blobs)
    assert again.trust_entries() == doc["trust"]
    assert Material.from_json({"answers": []}, {}).trust is None  # an older record


class _Fetcher:
    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers

    def get(self, url: str, *, max_bytes: int, timeout: float) -> bytes:
        return self.answers[url]

    def post(self, url: str, body: bytes, *, content_type: str, max_bytes: int, timeout: float) -> bytes:
        raise AssertionError("no POST")


def _index_image(name: str, namespace: str) -> dict[str, object]:
    from scanner.evidence.capture import image_to_json
    from scanner.models import ContainerRef, ContainerType, RunningImage, Workload

    ref = ImageReference("127.0.0.1:5000", name, "v1", "sha256:" + hashlib.sha256(name.encode()).hexdigest())
    c = ContainerRef(namespace, f"pod-{name}", "app", ContainerType.CONTAINER, f"127.0.0.1:5000/{name}:v1", None,
                     Workload("Deployment", name), ("pull",), "uid")
    return image_to_json(RunningImage(ref, (c,), (), ()))


def test_an_index_is_the_canonical_json_of_its_sorted_document_byte_for_byte() -> None:
    """index_bytes serialises each image once and splices the entries into the head; what it writes must be
    exactly canonical_json of the whole document, whatever the strings hold (non-ASCII, quotes, backslashes,
    separators that a splice could confuse), with the images in a total, deterministic order."""
    import gzip

    from scanner.evidence.capture import _canonical_text, index_bytes

    hostile = ['ns-ü', 'ns"q', 'ns\\b', 'ns],"images":[', 'ns-\u2028', 'a', 'a']
    images = [{"image": _index_image(f"r{i % 3}", ns), "fingerprint": None if i % 2 else f"fp{i}",
               "material": None if i % 3 else f"{i:064x}"} for i, ns in enumerate(hostile)]
    images.append(dict(images[-1]))  # the same entry twice (one image judged twice)
    head = {"schema_version": 1, "scan_id": 7, "verified_at": "2026-12-07T00:00:00+00:00",
            "policy": {"path": "p.yaml", "from": ["x"], "digest": "sha256:0"}, "trust": [{"op": "o", "path": "é"}]}
    want = canonical_json({**head, "images": sorted(
        images, key=lambda i: (_canonical_text(i["image"]), canonical_json(i)))})
    for order in (images, list(reversed(images))):  # the order images were judged in (threads) never shows
        assert gzip.decompress(index_bytes(head, order)) == want
        assert index_bytes(head, order) == index_bytes(head, images)  # the compressed bytes too: one name
    assert gzip.decompress(index_bytes({**head, "source": "watch"}, images)) == canonical_json(
        {**head, "source": "watch", "images": json.loads(want)["images"]})
    assert gzip.decompress(index_bytes(head, [])) == canonical_json({**head, "images": []})
    with pytest.raises(ValueError):
        index_bytes({**head, "images": []}, images)  # the head never carries entries of its own
    with pytest.raises(ValueError):
        index_bytes({**head, "a_key": 1}, images)  # a key sorting before "images" would break the splice
    with pytest.raises(ValueError):
        index_bytes(head, [{**images[0], "extra": 1}])  # an entry with another shape is not spliced blindly
