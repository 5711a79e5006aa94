"""A scan's evidence index names its image entries as a blob of their own (index schema 2, issue 19): a scan
that judged the same images on the same material as an earlier one stores and compresses no entries, and
what every reader gets is exactly the entries the scan judged (or a StoreError, never a wrong list)."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scanner.errors import StoreError
from scanner.evidence import capture as cap
from scanner.evidence.capture import Capture, Judged, canonical_json, image_to_json, index_bytes, keep, scan_ref
from scanner.evidence.pack import load_index
from scanner.models import (
    ContainerRef,
    ContainerType,
    ImageReference,
    RunningImage,
    ScanResult,
    ScanState,
    Workload,
)
from scanner.store import open_store, upgrade
from scanner.store.evidence import IMAGES_PREFIX, evidence_prune, images_name

T0 = datetime(2026, 12, 7, 10, tzinfo=UTC)
TRUST = SimpleNamespace(blobs={}, entries=[])


def _image(n: int, pod: str = "p") -> RunningImage:
    ref = ImageReference("127.0.0.1:5000", f"r{n}", "v1", f"sha256:{n:064x}")
    return RunningImage(ref, (ContainerRef("ns", f"{pod}-{n}", "app", ContainerType.CONTAINER,
                                           f"127.0.0.1:5000/r{n}:v1", None, Workload("Deployment", f"d{n}"), (),
                                           f"uid-{n}"),))


def _capture(images: list[RunningImage]) -> Capture:
    c = Capture()
    c.started(T0)
    for img in images:
        c.judged.append(Judged(img, "fp", None, f"material/{img.digest}/x"))
    return c


def _scan(store: Any) -> int:
    scan_id = store.begin_scan("c", T0, "sha256:p", "1")
    store.finish_scan(scan_id, ScanResult(cluster="c", started_at=T0, finished_at=T0 + timedelta(seconds=5),
                                          state=ScanState.COMPLETE, verdicts=(), policy_digest="sha256:p"))
    return scan_id


def _keep(store: Any, scan_id: int, capture: Capture) -> None:
    keep(store, scan_id, capture, policy_path="p.yaml", policy_from=[], policy_digest="sha256:p", trust=TRUST)


def _blob_count(store: Any) -> int:
    import sqlalchemy as sa

    from scanner.store.schema import evidence_blobs

    with store._db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(evidence_blobs)).scalar_one())


def _want(images: list[RunningImage]) -> list[Any]:
    """The entries a schema-1 index of these images holds (what every reader got before)."""
    head = {"schema_version": 1, "scan_id": 1, "verified_at": None, "policy": {}, "trust": []}
    entries = [{"image": image_to_json(i), "fingerprint": "fp", "material": None} for i in images]
    return json.loads(gzip.decompress(index_bytes(head, entries)))["images"]


@pytest.fixture
def store(tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    upgrade(url)
    with open_store(url) as s:
        yield s


def _stored_bytes(store: Any) -> int:
    import sqlalchemy as sa

    from scanner.store.schema import evidence_blobs

    with store._db.read() as conn:
        return sum(len(d) for (d,) in conn.execute(sa.select(evidence_blobs.c.data)))


def test_a_scan_that_judged_the_same_images_stores_no_entries_and_reads_the_same(store: Any) -> None:
    images = [_image(n) for n in range(3)]
    first, second = _scan(store), _scan(store)
    _keep(store, first, _capture(images))
    blobs = _blob_count(store)
    _keep(store, second, _capture(list(reversed(images))))  # judged in another order: the same entries
    assert _blob_count(store) == blobs + 1  # its index alone
    many = [_image(n) for n in range(200)]
    before = _stored_bytes(store)
    _keep(store, _scan(store), _capture(many))
    new = _stored_bytes(store) - before
    _keep(store, _scan(store), _capture(many))
    assert _stored_bytes(store) - before - new < new / 10  # the second index is its head alone
    blobs = _blob_count(store)
    assert load_index(store, first)["images"] == load_index(store, second)["images"] == _want(images)
    # a changed container (another pod) is other entries: stored, and read as they are
    third = _scan(store)
    changed = [_image(0, pod="q"), *images[1:]]
    _keep(store, third, _capture(changed))
    assert _blob_count(store) == blobs + 2  # its index and its entries
    assert load_index(store, third)["images"] == _want(changed)
    assert load_index(store, first)["images"] == _want(images)


def test_a_name_pointing_at_other_entries_is_never_trusted(store: Any) -> None:
    """images/<text sha> is a look-up hint: a damaged or planted name (another scan's entries, not gzip,
    missing) makes the writer compress its own entries, which the index names; the reader checks the text."""
    images, other = [_image(1)], [_image(2)]
    planted = _scan(store)
    _keep(store, planted, _capture(other))
    other_blob = load_raw_index(store, planted)["images_blob"]["sha256"]
    entries = [{"image": image_to_json(i), "fingerprint": "fp", "material": None} for i in images]
    text = b"".join(cap._list_pieces(cap._sorted_entries(entries)))
    planted_name = images_name(hashlib.sha256(text).hexdigest())
    store.evidence_put({}, {planted_name: other_blob})
    victim = _scan(store)
    _keep(store, victim, _capture(images))
    assert store.evidence_refs([planted_name]) == {planted_name: other_blob}  # the look-up found the plant
    assert load_index(store, victim)["images"] == _want(images)
    assert load_raw_index(store, victim)["images_blob"]["sha256"] != other_blob


def test_a_gzip_bomb_under_the_name_is_refused_after_the_text_s_length(store: Any, monkeypatch: Any) -> None:
    """The reuse check knows the text the named blob must hold: a blob planted under images/<text sha> that
    inflates to far more (a bomb: 64 MiB from ~64 kB) is refused once its output passes that length, never
    inflated whole on every scan; the scan stores its own entries, which the index names."""
    import zlib

    images = [_image(1)]
    entries = [{"image": image_to_json(i), "fingerprint": "fp", "material": None} for i in images]
    text = b"".join(cap._list_pieces(cap._sorted_entries(entries)))
    bomb = gzip.compress(text + b" " * (64 << 20), compresslevel=1, mtime=0)
    bomb_sha = hashlib.sha256(bomb).hexdigest()
    store.evidence_put({bomb_sha: bomb}, {images_name(hashlib.sha256(text).hexdigest()): bomb_sha})
    inflated = [0]
    real = zlib.decompressobj

    class Counting:
        def __init__(self, *args: Any) -> None:
            self._z = real(*args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._z, name)

        def decompress(self, data: bytes, *args: Any) -> bytes:
            out = self._z.decompress(data, *args)
            inflated[0] += len(out)
            return out

        def flush(self, *args: Any) -> bytes:
            out = self._z.flush(*args)
            inflated[0] += len(out)
            return out

    monkeypatch.setattr(cap.zlib, "decompressobj", Counting)
    result = cap.index_images(store, entries)
    monkeypatch.undo()
    assert inflated[0] <= len(text) + 1, f"inflated {inflated[0]} bytes to check a {len(text)}-byte text"
    assert result.sha256 != bomb_sha and result.data is not None  # not reused: its own entries
    victim = _scan(store)
    _keep(store, victim, _capture(images))
    assert load_index(store, victim)["images"] == _want(images)
    assert load_raw_index(store, victim)["images_blob"]["sha256"] != bomb_sha


def load_raw_index(store: Any, scan_id: int) -> dict[str, Any]:
    sha = store.evidence_refs([scan_ref(scan_id)])[scan_ref(scan_id)]
    return json.loads(gzip.decompress(store.evidence_blobs([sha])[sha]))


@pytest.mark.parametrize("damage", ["wrong text", "not gzip", "missing", "not a list", "deep"])
def test_damaged_entries_are_a_store_error_never_a_wrong_list(store: Any, damage: str) -> None:
    scan_id = _scan(store)
    payload = {"wrong text": b'[{"fingerprint":null,"image":{},"material":null}]', "not gzip": None,
               "missing": None, "not a list": b'{"a":1}', "deep": b"[" * 100_000}[damage]
    data = b"\x1f\x8b garbage" if damage == "not gzip" else gzip.compress(payload or b"[]", mtime=0)
    text_sha = hashlib.sha256(b"[]" if damage == "wrong text" else gzip.decompress(data) if damage != "not gzip"
                              else b"").hexdigest()
    blobs = {} if damage == "missing" else {hashlib.sha256(data).hexdigest(): data}
    head = {"schema_version": 2, "scan_id": scan_id, "verified_at": T0.isoformat(), "policy": {"digest": "sha256:p"},
            "trust": [], "images_blob": {"sha256": hashlib.sha256(data).hexdigest(), "text_sha256": text_sha}}
    index = gzip.compress(canonical_json(head), mtime=0)
    store.evidence_put({**blobs, hashlib.sha256(index).hexdigest(): index},
                       {scan_ref(scan_id): hashlib.sha256(index).hexdigest()})
    with pytest.raises(StoreError, match="malformed"):
        load_index(store, scan_id)
    evidence_prune(store._db, 100)  # prune reads it too: no crash, and the named blob is not its to judge
    if blobs:
        assert set(store.evidence_blobs(blobs)) == set(blobs)


def test_an_index_of_schema_1_still_loads(store: Any) -> None:
    """Databases written before: the index holds its entries itself."""
    scan_id = _scan(store)
    head = {"schema_version": 1, "scan_id": scan_id, "verified_at": T0.isoformat(), "policy": {"digest": "sha256:p"},
            "trust": []}
    entries = [{"image": image_to_json(_image(1)), "fingerprint": "fp", "material": None}]
    index = index_bytes(head, entries)
    sha = hashlib.sha256(index).hexdigest()
    store.evidence_put({sha: index}, {scan_ref(scan_id): sha})
    assert load_index(store, scan_id)["images"] == _want([_image(1)])


def test_prune_keeps_the_entries_a_kept_scan_names_and_drops_the_rest(store: Any) -> None:
    from scanner.store.core import scans as _scans

    kept_images, gone_images = [_image(1)], [_image(2)]
    kept, gone = _scan(store), _scan(store)
    _keep(store, kept, _capture(kept_images))
    _keep(store, gone, _capture(gone_images))
    gone_blob = load_raw_index(store, gone)["images_blob"]["sha256"]
    with store._db.write() as conn:
        conn.execute(_scans.delete().where(_scans.c.id == gone))
    evidence_prune(store._db, 100)
    assert load_index(store, kept)["images"] == _want(kept_images)
    assert store.evidence_blobs([gone_blob]) == {}
    names = {n for n in store.evidence_refs_under(IMAGES_PREFIX)}
    assert len(names) == 1  # the kept scan's look-up name survives (the next scan reuses its entries)
    blobs = _blob_count(store)
    again = _scan(store)
    _keep(store, again, _capture(kept_images))
    assert _blob_count(store) == blobs + 1


def test_entries_pruned_between_the_look_up_and_the_write_are_stored_afresh(store: Any, monkeypatch) -> None:
    images = [_image(1)]
    first, second = _scan(store), _scan(store)
    _keep(store, first, _capture(images))
    real = cap.index_images

    def pruned_after_look(st: Any, entries: Any) -> Any:
        found = real(st, entries)
        assert found.data is None  # found the first scan's entries
        with st._db.write() as conn:  # as `db prune` would, after the look-up and before the write
            from scanner.store.schema import evidence_blobs
            conn.execute(evidence_blobs.delete().where(evidence_blobs.c.sha256 == found.sha256))
        return found

    monkeypatch.setattr(cap, "index_images", pruned_after_look)
    _keep(store, second, _capture(images))
    assert load_index(store, second)["images"] == _want(images)


def test_the_index_names_the_material_the_scan_found_when_it_began_without_asking_again(store: Any) -> None:
    """A warm image's entry points at the material its cache hit was allowed on: the look-up the scan made
    when it began (a name never points elsewhere once written) is not repeated for the index (issue 19);
    a name it did not look up is asked then, as before."""
    from scanner.evidence.capture import material_ref

    img, other = _image(1), _image(2)
    material = b'{"schema_version":1,"answers":[]}'
    sha = hashlib.sha256(material).hexdigest()
    names = {material_ref(str(i.digest), "fp"): sha for i in (img, other)}
    store.evidence_put({sha: material}, names)
    asked: list[str] = []
    real = store.evidence_refs

    def spy(ns: Any) -> dict[str, str]:
        ns = list(ns)
        asked.extend(ns)
        return real(ns)

    c = Capture(known=spy)
    c.started(T0)
    c.prepare([(str(img.digest), "fp")])
    c.judge(img, None, "fp", True)  # type: ignore[arg-type]
    c.judge(other, None, "fp", True)  # type: ignore[arg-type]
    asked.clear()
    store.evidence_refs = spy
    scan_id = _scan(store)
    _keep(store, scan_id, c)
    assert material_ref(str(img.digest), "fp") not in asked
    assert material_ref(str(other.digest), "fp") in asked
    assert [e["material"] for e in load_index(store, scan_id)["images"]] == [sha, sha]


def _plant(store: Any, scan_id: int, index: bytes, *blobs: bytes) -> None:
    """A scan's index (and the blobs it names) written straight into the store, as a hostile or damaged
    database holds them: each blob under its own sha256, so the store's name check passes."""
    every = {hashlib.sha256(b).hexdigest(): b for b in (index, *blobs)}
    store.evidence_put(every, {scan_ref(scan_id): hashlib.sha256(index).hexdigest()})


def _corrupt_body(text: bytes) -> bytes:
    """A gzip header and trailer around a deflate body that is not one (zlib.error, which is no OSError)."""
    good = gzip.compress(text, mtime=0)
    return good[:10] + b"\xff" * 20 + good[-8:]


@pytest.mark.parametrize("damage", ["same length, one byte changed", "truncated", "empty", "another blob"])
def test_rows_planted_ahead_under_the_names_a_scan_writes_are_repaired_by_its_write(store: Any, damage: str) -> None:
    """Blob names are predictable (the sha256 of content yet to be written: a scan's index and its entries).
    A row planted under one before the write (database write access), or left damaged, was kept by the
    write's insert-or-ignore, and the scan's evidence failed for good (the readers check the hash and find
    nothing). The write gives such a row its bytes: the evidence reads whole."""
    import sqlalchemy as sa

    from scanner.store.schema import evidence_blobs

    images = [_image(n) for n in range(3)]
    scan_id = _scan(store)
    written: dict[str, bytes] = {}
    dry = SimpleNamespace(evidence_refs=store.evidence_refs, evidence_blobs=store.evidence_blobs,
                          evidence_put=lambda blobs, refs, **_: written.update(blobs))
    _keep(dry, scan_id, _capture(images))  # what the real write will write, nothing written
    assert len(written) >= 2  # the index and its entries
    other = next(iter(written.values()))
    for sha, data in written.items():
        bad = {"same length, one byte changed": data[:-1] + bytes([data[-1] ^ 1]), "truncated": data[: len(data) // 2],
               "empty": b"", "another blob": other if data != other else b"x"}[damage]
        with store._db.write() as conn:
            conn.execute(sa.insert(evidence_blobs).values(sha256=sha, data=bad))
    assert store.evidence_blobs(written) == {}  # every reader finds nothing under those names
    _keep(store, scan_id, _capture(images))
    assert store.evidence_blobs(written) == written  # repaired
    assert load_index(store, scan_id)["images"] == _want(images)
    # a row that holds the bytes is left as it is (the next scan of the same images writes the same entries)
    before = _blob_count(store)
    again = _scan(store)
    _keep(store, again, _capture(images))
    assert _blob_count(store) == before + 1 and load_index(store, again)["images"] == _want(images)


@pytest.mark.parametrize("damage", ["corrupt deflate", "inflates past the limit", "trailing garbage"])
def test_hostile_entries_are_a_store_error_for_the_pack_and_the_prune(store: Any, damage: str,
                                                                      monkeypatch: Any) -> None:
    """Entries whose deflate body is damaged, or which inflate past what any index holds (a gzip bomb), are
    the evidence's clear StoreError and a blob prune leaves alone: never an unexpected exception (exit 3 with
    a traceback) nor the whole bomb held in memory."""
    from scanner.store import evidence as store_evidence

    monkeypatch.setattr(store_evidence, "MAX_INDEX_TEXT", 1 << 20, raising=False)
    text = b"[" + b" " * (2 << 20) + b"]" if damage == "inflates past the limit" else b"[]"
    data = {"corrupt deflate": _corrupt_body(text), "inflates past the limit": gzip.compress(text, mtime=0),
            "trailing garbage": gzip.compress(text, mtime=0) + b"garbage"}[damage]
    scan_id = _scan(store)
    head = {"schema_version": 2, "scan_id": scan_id, "verified_at": T0.isoformat(), "policy": {"digest": "sha256:p"},
            "trust": [], "images_blob": {"sha256": hashlib.sha256(data).hexdigest(),
                                         "text_sha256": hashlib.sha256(text).hexdigest()}}
    _plant(store, scan_id, gzip.compress(canonical_json(head), mtime=0), data)
    with pytest.raises(StoreError, match="malformed"):
        load_index(store, scan_id)
    evidence_prune(store._db, 100)
    assert hashlib.sha256(data).hexdigest() in store.evidence_blobs([hashlib.sha256(data).hexdigest()])


@pytest.mark.parametrize("damage", ["corrupt deflate", "deep"])
def test_a_hostile_index_is_a_store_error_for_the_pack_and_the_prune(store: Any, damage: str) -> None:
    """The index itself (either schema) damaged the same ways: the same clear error, and prune goes on."""
    scan_id = _scan(store)
    index = _corrupt_body(b"{}") if damage == "corrupt deflate" else gzip.compress(b"[" * 100_000, mtime=0)
    _plant(store, scan_id, index)
    with pytest.raises(StoreError, match="malformed"):
        load_index(store, scan_id)
    evidence_prune(store._db, 100)


def test_the_cli_pack_of_hostile_entries_is_a_clear_error(tmp_path: Path) -> None:
    """The real CLI on such a database: the store's error, not 'unexpected failure'."""
    import subprocess
    import sys

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    url = f"sqlite:///{tmp_path / 'h.db'}"
    upgrade(url)
    with open_store(url) as st:
        scan_id = _scan(st)
        data = _corrupt_body(b"[]")
        head = {"schema_version": 2, "scan_id": scan_id, "verified_at": T0.isoformat(),
                "policy": {"digest": "sha256:p"}, "trust": [],
                "images_blob": {"sha256": hashlib.sha256(data).hexdigest(),
                                "text_sha256": hashlib.sha256(b"[]").hexdigest()}}
        _plant(st, scan_id, gzip.compress(canonical_json(head), mtime=0), data)
    key = tmp_path / "k.pem"
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for args in (["evidence", "--scan", str(scan_id), "--sign-key", str(key), "--out", str(tmp_path / "p.tgz")],
                 ["db", "prune", "--keep", "1d"]):
        run = subprocess.run([sys.executable, "-m", "scanner.cli", *args, "--db", url], capture_output=True,
                             text=True, timeout=120)
        assert "unexpected failure" not in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
    assert "is malformed" in subprocess.run(
        [sys.executable, "-m", "scanner.cli", "evidence", "--scan", str(scan_id), "--sign-key", str(key), "--out",
         str(tmp_path / "p.tgz"), "--db", url], capture_output=True, text=True, timeout=120).stderr


def test_entries_of_other_gzip_bytes_pruned_before_the_write_are_named_as_stored_afresh(store: Any,
                                                                                        monkeypatch: Any) -> None:
    """The earlier scan's entries are the same text in other gzip bytes (another zlib, another sigaudit on the
    same database); `db prune` deletes them between the look-up and the write: the index must name the blob
    written afresh, never the deleted one (the pack of that scan then failed: its entries 'missing')."""
    images = [_image(1)]
    entries = [{"image": image_to_json(i), "fingerprint": "fp", "material": None} for i in images]
    text = b"".join(cap._list_pieces(cap._sorted_entries(entries)))
    other = gzip.compress(text, compresslevel=1, mtime=0)
    assert other != cap._gzip([text])
    earlier = _scan(store)
    head = {"schema_version": 2, "scan_id": earlier, "verified_at": T0.isoformat(), "policy": {"digest": "sha256:p"},
            "trust": [], "images_blob": {"sha256": hashlib.sha256(other).hexdigest(),
                                         "text_sha256": hashlib.sha256(text).hexdigest()}}
    _plant(store, earlier, gzip.compress(canonical_json(head), mtime=0), other)
    store.evidence_put({}, {images_name(hashlib.sha256(text).hexdigest()): hashlib.sha256(other).hexdigest()})
    real = cap.index_images

    def pruned_after_look(st: Any, found_entries: Any) -> Any:
        found = real(st, found_entries)
        assert found.data is None and found.sha256 == hashlib.sha256(other).hexdigest()
        with st._db.write() as conn:  # as `db prune` would, after the look-up and before the write
            from scanner.store.schema import evidence_blobs
            conn.execute(evidence_blobs.delete().where(evidence_blobs.c.sha256 == found.sha256))
        return found

    monkeypatch.setattr(cap, "index_images", pruned_after_look)
    scan_id = _scan(store)
    _keep(store, scan_id, _capture(images))
    assert load_index(store, scan_id)["images"] == _want(images)


@pytest.mark.parametrize("text", [
    b"[1]",
    b'[{"fingerprint":null,"image":{},"material":null}]',
    b'[{"fingerprint":null,"image":{"reference":{"digest":"sha256:aa"}},"material":null}]',
    b'[{"fingerprint":null,"image":{"containers":[],"reference":{"registry":"r","repository":"x"}},"material":null}]',
    b'[{"fingerprint":null,"image":{"containers":[],"reference":{"digest":"sha256:aa","registry":"r",'
    b'"repository":"x"}},"material":7}]',
    b'[{"fingerprint":null,"image":{"containers":[],"reference":{"digest":"sha256:aa","registry":"r",'
    b'"repository":"x"}},"material":null}]',
], ids=["not an object", "no reference", "no registry", "no digest", "material no string", "no sha256 digest"])
def test_planted_entries_of_the_named_text_are_a_store_error_not_a_crash(store: Any, text: bytes) -> None:
    """Entries that are the text their index names but no image entries as the pack reads them (a planted
    pair of rows): the pack's StoreError ('malformed'), never a KeyError/TypeError out of its build (exit 3,
    'unexpected failure')."""
    from scanner.evidence.pack import build_files

    scan_id = _scan(store)
    data = gzip.compress(text, mtime=0)
    head = {"schema_version": 2, "scan_id": scan_id, "verified_at": T0.isoformat(), "policy": {"digest": "sha256:p"},
            "trust": [], "images_blob": {"sha256": hashlib.sha256(data).hexdigest(),
                                         "text_sha256": hashlib.sha256(text).hexdigest()}}
    _plant(store, scan_id, gzip.compress(canonical_json(head), mtime=0), data)
    with pytest.raises(StoreError, match="malformed"):
        build_files(store, scan_id, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", ["schema 2 naming none", "schema 2 with a null blob", "both",
                                   "schema 1 naming a blob", "schema 1 without images"])
def test_an_index_naming_its_entries_in_no_or_two_ways_is_malformed(store: Any, shape: str) -> None:
    """Which entries the scan judged is said exactly once, in its schema's spelling: an index of schema 2
    naming no blob (or null) read as no images at all, a pack presenting none of what the scan judged."""
    scan_id = _scan(store)
    text = b"".join(cap._list_pieces(cap._sorted_entries(
        [{"image": image_to_json(_image(1)), "fingerprint": "fp", "material": None}])))
    data = gzip.compress(text, mtime=0)
    blob = {"sha256": hashlib.sha256(data).hexdigest(), "text_sha256": hashlib.sha256(text).hexdigest()}
    head: dict[str, Any] = {"scan_id": scan_id, "verified_at": T0.isoformat(), "policy": {"digest": "sha256:p"},
                            "trust": []}
    head |= {"schema 2 naming none": {"schema_version": 2}, "schema 2 with a null blob": {"schema_version": 2,
             "images_blob": None}, "both": {"schema_version": 2, "images_blob": blob, "images": []},
             "schema 1 naming a blob": {"schema_version": 1, "images_blob": blob},
             "schema 1 without images": {"schema_version": 1}}[shape]
    _plant(store, scan_id, gzip.compress(canonical_json(head), mtime=0), data)
    with pytest.raises(StoreError, match="malformed"):
        load_index(store, scan_id)


@pytest.mark.parametrize("named", ["the other scan", "true", "a string"])
def test_a_scan_name_planted_ahead_at_another_scans_index_is_a_store_error(store: Any, named: str) -> None:
    """``scan/<id>`` names are predictable and written only if absent: one planted ahead at another scan's
    (genuine) index, or at an index claiming the id in another spelling, is refused, never that scan's pack."""
    images = [_image(n) for n in range(2)]
    first = _scan(store)
    _keep(store, first, _capture(images))
    second = _scan(store)
    claimed: Any = {"the other scan": first, "true": True, "a string": str(second)}[named]
    if named == "the other scan":
        index = store.evidence_refs([scan_ref(first)])[scan_ref(first)]
        store.evidence_put({}, {scan_ref(second): index})
    else:
        text = b"[]"
        head = {"schema_version": 2, "scan_id": claimed, "verified_at": T0.isoformat(), "policy": {}, "trust": [],
                "images_blob": {"sha256": hashlib.sha256(gzip.compress(text, mtime=0)).hexdigest(),
                                "text_sha256": hashlib.sha256(text).hexdigest()}}
        _plant(store, second, gzip.compress(canonical_json(head), mtime=0), gzip.compress(text, mtime=0))
    # the scan's own write claims its name (below); one whose write failed (logged, the scan stands) keeps it
    with pytest.raises(StoreError, match="it is that of scan"):
        load_index(store, second)
    assert load_index(store, first)["images"] == _want(images)


@pytest.mark.parametrize("planted", ["a forged index claiming the scan's id", "another scan's index"])
def test_a_scan_name_planted_ahead_is_claimed_by_the_scans_own_write(store: Any, planted: str) -> None:
    """``scan/<id>`` is predictable and was written only if absent: an index planted ahead under it with the
    scan's own id (no images, another time and trust) was kept, and read as the scan's evidence without an
    error. The scan's write points its own name at its own index."""
    images = [_image(n) for n in range(2)]
    first = _scan(store)
    _keep(store, first, _capture(images))
    second = _scan(store)
    if planted == "another scan's index":
        store.evidence_put({}, {scan_ref(second): store.evidence_refs([scan_ref(first)])[scan_ref(first)]})
    else:
        text = b"[]"
        head = {"schema_version": 2, "scan_id": second, "verified_at": (T0 + timedelta(days=9)).isoformat(),
                "policy": {"path": "p.yaml", "from": [], "digest": "sha256:p"},
                "trust": [{"kind": "key", "sha256": "0" * 64}],
                "images_blob": {"sha256": hashlib.sha256(gzip.compress(text, mtime=0)).hexdigest(),
                                "text_sha256": hashlib.sha256(text).hexdigest()}}
        _plant(store, second, gzip.compress(canonical_json(head), mtime=0), gzip.compress(text, mtime=0))
    _keep(store, second, _capture(images))
    index = load_index(store, second)
    assert index["scan_id"] == second and index["images"] == _want(images)
    assert index["verified_at"] == T0.isoformat() and index["trust"] == []
    assert load_index(store, first)["images"] == _want(images)
    # every other name is still written only if absent: what a material name pointed at first, it keeps
    before = store.evidence_refs([scan_ref(first)])
    store.evidence_put({}, {scan_ref(first): "f" * 64})
    assert store.evidence_refs([scan_ref(first)]) == before


@pytest.mark.parametrize("planted", ["another scan's watch batch", "another scan's index", "the scan's own index",
                                     "no object"])
def test_a_watch_name_planted_at_another_scans_index_is_a_store_error(store: Any, planted: str) -> None:
    """``scan/<id>/watch/<n>`` names are as predictable as ``scan/<id>`` and every one under the scan is read
    into its pack: one planted (ahead, or after) at another scan's genuine watch batch or index under the same
    policy added that scan's judgements, at that scan's time of verification, to this scan's pack (its VSAs
    said the later time) without an error. It is refused as the scan's own name is."""
    from scanner.evidence.capture import keep_watch, watch_ref
    from scanner.evidence.pack import load_watch_indexes

    images = [_image(n) for n in range(2)]
    first, second = _scan(store), _scan(store)
    _keep(store, first, _capture(images))
    _keep(store, second, _capture(images))
    late = _capture(images)
    late.started(T0 + timedelta(days=30))
    keep_watch(store, first, 1, late, [i.digest for i in images], policy_digest="sha256:p")
    assert [b["scan_id"] for b in load_watch_indexes(store, first)] == [first]  # a genuine batch reads
    if planted == "no object":  # was skipped: the batch's verdicts then read as never judged, without a word
        listed = gzip.compress(b"[]", mtime=0)
        store.evidence_put({hashlib.sha256(listed).hexdigest(): listed},
                           {watch_ref(second, 7): hashlib.sha256(listed).hexdigest()})
    else:
        source = {"another scan's watch batch": watch_ref(first, 1), "another scan's index": scan_ref(first),
                  "the scan's own index": scan_ref(second)}[planted]
        store.evidence_put({}, {watch_ref(second, 7): store.evidence_refs([source])[source]})
    with pytest.raises(StoreError, match="malformed"):
        load_watch_indexes(store, second)
