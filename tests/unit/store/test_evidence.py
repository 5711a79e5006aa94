"""Evidence material in the store (issue #23): what `db prune` keeps of a kept scan's evidence."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scanner.models import ScanResult, ScanState
from scanner.store import open_store, upgrade
from scanner.store.evidence import evidence_prune

T0 = datetime(2026, 12, 7, 10, tzinfo=UTC)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_prune_keeps_the_trust_answers_a_kept_scans_image_material_names(tmp_path: Path) -> None:
    """An image's material names the CRLs / listings its verification read ("trust"): they live as long
    as the material does (a later scan's pack reuses them), not only while the scan that fetched them does."""
    url = f"sqlite:///{tmp_path / 'e.db'}"
    upgrade(url)
    with open_store(url) as store:
        scan_id = store.begin_scan("c", T0, "sha256:p", "1")
        store.finish_scan(scan_id, ScanResult(cluster="c", started_at=T0, finished_at=T0 + timedelta(seconds=5),
                                              state=ScanState.COMPLETE, verdicts=(), policy_digest="sha256:p"))
        answer, crl, orphan = b"signature manifest", b"the CRL", b"nobody's"
        doc = json.dumps({"schema_version": 1, "answers": [{"key": ["get_blob"], "sha256": _sha(answer)}],
                          "trust": [{"op": "get", "path": "http://ca/x.crl", "sha256": _sha(crl)}]}).encode()
        index = gzip.compress(json.dumps({"trust": [], "images": [{"material": _sha(doc)}]}).encode(), mtime=0)
        store.evidence_put({_sha(b): b for b in (answer, crl, orphan, doc, index)}, {f"scan/{scan_id}": _sha(index)})
        assert evidence_prune(store._db, 100) == 1
        kept = store.evidence_blobs({_sha(b) for b in (answer, crl, orphan, doc, index)})
        assert set(kept) == {_sha(answer), _sha(crl), _sha(doc), _sha(index)}


def test_prune_keeps_a_kept_scans_watch_batches_and_drops_those_of_a_deleted_scan(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    upgrade(url)
    with open_store(url) as store:
        scan_id = store.begin_scan("c", T0, "sha256:p", "1")
        store.finish_scan(scan_id, ScanResult(cluster="c", started_at=T0, finished_at=T0 + timedelta(seconds=5),
                                              state=ScanState.COMPLETE, verdicts=(), policy_digest="sha256:p"))
        kept, gone = (gzip.compress(json.dumps({"images": [], "n": n}).encode(), mtime=0) for n in (1, 2))
        store.evidence_put({_sha(kept): kept, _sha(gone): gone},
                           {f"scan/{scan_id}/watch/3": _sha(kept), f"scan/{scan_id + 99}/watch/1": _sha(gone)})
        evidence_prune(store._db, 100)
        assert set(store.evidence_refs_under(f"scan/{scan_id}/")) == {f"scan/{scan_id}/watch/3"}
        assert store.evidence_refs_under(f"scan/{scan_id + 99}/") == {}
        assert set(store.evidence_blobs({_sha(kept), _sha(gone)})) == {_sha(kept)}


def test_prune_never_deletes_what_a_watch_batch_written_while_it_runs_names(tmp_path: Path, monkeypatch) -> None:
    """`serve --watch` writes a batch (scan/<id>/watch/<n>) whenever it judges, with no running scan to hold
    prune off: a batch written while prune marks must keep the blobs it names — the new ones and one that
    existed unnamed (re-put, so only named) — or the kept scan's pack no longer builds."""
    prune_during_a_watch_batch(f"sqlite:///{tmp_path / 'e.db'}", monkeypatch)


def prune_during_a_watch_batch(url: str, monkeypatch: Any) -> None:
    """(Also run on PostgreSQL by tests/integration/test_store_content.py.)"""
    from scanner.store.evidence import Evidence

    upgrade(url)
    with open_store(url) as store, open_store(url) as watch:
        scan_id = store.begin_scan("c", T0, "sha256:p", "1")
        store.finish_scan(scan_id, ScanResult(cluster="c", started_at=T0, finished_at=T0 + timedelta(seconds=5),
                                              state=ScanState.COMPLETE, verdicts=(), policy_digest="sha256:p"))
        index = gzip.compress(json.dumps({"images": []}).encode(), mtime=0)
        old_answer, orphan = b"a signature manifest no name reaches yet", b"what nothing will ever name"
        store.evidence_put({_sha(index): index, _sha(old_answer): old_answer, _sha(orphan): orphan},
                           {f"scan/{scan_id}": _sha(index)})
        new_answer = b"the CRL the watch read"
        doc = json.dumps({"schema_version": 1, "answers": [{"key": ["get_blob"], "sha256": _sha(old_answer)}],
                          "trust": [{"op": "get", "path": "http://ca/x.crl", "sha256": _sha(new_answer)}]}).encode()
        batch = gzip.compress(json.dumps({"images": [{"material": _sha(doc)}]}).encode(), mtime=0)
        blobs = {_sha(b): b for b in (old_answer, new_answer, doc, batch)}
        real, fired = Evidence.evidence_blobs, []

        def marking(self, shas):  # the watch's batch commits while prune is marking
            if not fired:
                fired.append(1)
                watch.evidence_put(blobs, {f"scan/{scan_id}/watch/1": _sha(batch)})
            return real(self, shas)

        monkeypatch.setattr(Evidence, "evidence_blobs", marking)
        assert evidence_prune(store._db, 100) == 1  # the orphan only: a busy watch never stalls the prune
        monkeypatch.setattr(Evidence, "evidence_blobs", real)
        assert fired
        assert set(store.evidence_blobs(set(blobs))) == set(blobs)
        assert store.evidence_blobs({_sha(orphan)}) == {}
        # the next prune, with no writer, keeps them too (the batch names them) and collects nothing else
        assert evidence_prune(store._db, 100) == 0
        assert set(store.evidence_blobs(set(blobs) | {_sha(index)})) == set(blobs) | {_sha(index)}


def test_gunzip_reads_what_gzip_decompress_reads_nul_padding_included() -> None:
    """One gunzip for the store's readers and the 0013 downgrade (which recognises the indexes an earlier
    sigaudit reads with ``gzip.decompress``): members one after another, NUL padding after each skipped;
    anything else refused."""
    import pytest

    from scanner.store.evidence import gunzip

    one = gzip.compress(b'{"a":1}', mtime=0)
    for data in (one, one + b"\0" * 4, one + b"\0" + one, one + one + b"\0"):
        assert gunzip(data) == gzip.decompress(data)
    for bad in (b"", b"\0" * 4, b"\0" + one, one + b"x", one[:-1], one + b"\0" + b"garbage"):
        with pytest.raises(ValueError):
            gunzip(bad)


def test_a_blob_row_not_holding_its_names_bytes_is_rewritten_by_the_next_put(tmp_path: Path) -> None:
    """``evidence_put`` gives a row under a blob's name the bytes that name them when it holds anything else
    (planted ahead, torn): it was kept by an insert-or-ignore and read as missing for good. A SQLite TEXT
    value of the very bytes (SQLite keeps what it is given) is no blob either: read as missing, never a crash,
    and rewritten. A row that holds the bytes is left alone."""
    import sqlalchemy as sa

    from scanner.store.schema import evidence_blobs

    url = f"sqlite:///{tmp_path / 'e.db'}"
    upgrade(url)
    good = {hashlib.sha256(d).hexdigest(): d for d in (b"alpha evidence", b"beta evidence", b"gamma", b"delta")}
    shas = sorted(good)
    planted = {shas[0]: b"alpha evidencf", shas[1]: b"", shas[2]: b"gamma" * 1000}
    with open_store(url) as store:
        with store._db.write() as conn:
            for sha, bad in planted.items():
                conn.execute(sa.insert(evidence_blobs).values(sha256=sha, data=bad))
            conn.exec_driver_sql("INSERT INTO evidence_blobs (sha256, data) VALUES (?, ?)",
                                 (shas[3], good[shas[3]].decode()))
        assert store.evidence_blobs(shas) == {}
        store.evidence_put(good, {})
        assert store.evidence_blobs(shas) == good
        with store._db.read() as conn:
            assert {t for (t,) in conn.exec_driver_sql("SELECT typeof(data) FROM evidence_blobs")} == {"blob"}
        store.evidence_put(good, {})  # all held: nothing to change
        assert store.evidence_blobs(shas) == good
