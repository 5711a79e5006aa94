"""verify-evidence reads the pack as hostile input: links, escaping paths, duplicates, bombs and
oversized members are refused with the member named, never extracted and never a crash."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from scanner.evidence.verify import PackError, read_pack, verify_pack


def _pack(tmp_path: Path, members: list[tuple[str, bytes | None, bytes]]) -> Path:
    """(name, data or None for a non-file, tar type)"""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data, typ in members:
            info = tarfile.TarInfo(name)
            info.type = typ
            if typ in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = "/etc/passwd"
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    p = tmp_path / "p.tar.gz"
    p.write_bytes(gzip.compress(raw.getvalue()))
    return p


@pytest.mark.parametrize(("name", "typ", "why"), [
    ("evidence/../../etc/x", tarfile.REGTYPE, "plain relative path"),
    ("/evidence/x", tarfile.REGTYPE, "plain relative path"),
    ("other/x", tarfile.REGTYPE, "plain relative path"),
    ("evidence/a/./b", tarfile.REGTYPE, "plain relative path"),
    ("evidence/link", tarfile.SYMTYPE, "link or special"),
    ("evidence/hard", tarfile.LNKTYPE, "link or special"),
    ("evidence/fifo", tarfile.FIFOTYPE, "link or special"),
])
def test_hostile_members_are_refused_by_name(tmp_path: Path, name: str, typ: bytes, why: str) -> None:
    p = _pack(tmp_path, [(name, b"x" if typ == tarfile.REGTYPE else None, typ)])
    with pytest.raises(PackError, match=why):
        read_pack(p)
    out = verify_pack(p, b"")
    assert not out.ok and why in out.problems[0]


def test_a_member_twice_is_refused(tmp_path: Path) -> None:
    p = _pack(tmp_path, [("evidence/a", b"1", tarfile.REGTYPE), ("evidence/a", b"2", tarfile.REGTYPE)])
    with pytest.raises(PackError, match="twice"):
        read_pack(p)


def test_bombs_and_oversized_members(tmp_path: Path) -> None:
    p = _pack(tmp_path, [("evidence/zeros", b"\0" * (8 * 1024 * 1024), tarfile.REGTYPE)])
    with pytest.raises(PackError, match="inflates past"):
        read_pack(p, max_bytes=4 * 1024 * 1024)
    big = _pack(tmp_path, [("evidence/random", os.urandom(4096), tarfile.REGTYPE)])
    with pytest.raises(PackError, match="larger than"):
        read_pack(big, max_member=1024)
    many = _pack(tmp_path, [(f"evidence/f{i}", b"", tarfile.REGTYPE) for i in range(20)])
    with pytest.raises(PackError, match="more than 10 members"):
        read_pack(many, max_members=10)


def test_not_a_pack_at_all(tmp_path: Path) -> None:
    p = tmp_path / "x.tar.gz"
    p.write_bytes(b"not gzip")
    assert not verify_pack(p, b"").ok
    p.write_bytes(gzip.compress(b"not a tar" * 100))
    assert not verify_pack(p, b"").ok


def test_a_plain_pack_reads(tmp_path: Path) -> None:
    p = _pack(tmp_path, [("evidence", None, tarfile.DIRTYPE), ("evidence/a/b.json", b"{}", tarfile.REGTYPE)])
    assert read_pack(p) == {"a/b.json": b"{}"}
    out = verify_pack(p, b"")
    assert out.problems == ["MANIFEST.json: missing"]


def _sparse_pack(tmp_path: Path, members: int, claimed: int) -> Path:
    """PAX GNU sparse 0.1 members: 10 bytes stored, ``claimed`` bytes when read (tarfile calls them regular)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(members):
            info = tarfile.TarInfo(f"evidence/hole{i}")
            info.size = 10
            info.pax_headers = {"GNU.sparse.map": "0,10", "GNU.sparse.size": str(claimed)}
            tar.addfile(info, io.BytesIO(b"x" * 10))
    p = tmp_path / "sparse.tar.gz"
    p.write_bytes(gzip.compress(raw.getvalue()))
    return p


def test_a_sparse_member_cannot_inflate_past_the_bounds(tmp_path: Path) -> None:
    # A few hundred bytes on disk that would read as 4 x 2 MB (as 200,000 x 256 MB with the real bounds).
    p = _sparse_pack(tmp_path, 4, 2 * 1024 * 1024)
    assert p.stat().st_size < 1024
    with pytest.raises(PackError, match="sparse"):
        read_pack(p, max_bytes=1024 * 1024)
    out = verify_pack(p, b"")
    assert not out.ok and "sparse" in out.problems[0]



@pytest.mark.parametrize("victim", ["policy/replay.json", "reports/scan.json", "trust/sources.json"])
def test_a_signed_pack_nested_past_the_parsers_depth_is_a_finding_not_a_crash(tmp_path: Path, victim: str) -> None:
    import hashlib
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from scanner.evidence import dsse
    from scanner.evidence.pack import MANIFEST, MANIFEST_PAYLOAD_TYPE, MANIFEST_SIG, write_tar

    key = tmp_path / "k.pem"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    signer = dsse.signer_from(str(key))
    files = {"policy/replay.json": b'{"verified_at": "2026-01-01T00:00:00+00:00"}',
             "trust/sources.json": b'{"entries": []}', "reports/scan.json": b"{}"}
    files[victim] = b"[" * 200_000 + b"]" * 200_000  # RecursionError in json.loads, not a ValueError
    manifest = {"schema_version": 1, "files": {p: hashlib.sha256(b).hexdigest() for p, b in files.items()}}
    files[MANIFEST] = json.dumps(manifest).encode()
    files[MANIFEST_SIG] = json.dumps(dsse.sign_envelope(MANIFEST_PAYLOAD_TYPE, files[MANIFEST], signer)).encode()
    p = tmp_path / "deep.tar.gz"
    with p.open("wb") as fh:
        write_tar(files, fh)
    out = verify_pack(p, signer.public_key_pem())
    assert not out.ok and any("not JSON" in x for x in out.problems), out.problems


def test_the_auditors_expectations_are_checked_against_the_signed_manifest() -> None:
    """--not-before / --expect-scan (issue 23): a stale pack, or one of another scan, fails; an exact match
    and a time at the bound pass; a malformed or zoneless verified_at cannot pass --not-before."""
    from datetime import UTC, datetime

    from scanner.evidence.verify import Expected, Outcome, check_expected

    manifest = {"scan_id": 7, "verified_at": "2026-12-07T10:00:00+00:00"}
    at = datetime(2026, 12, 7, 10, tzinfo=UTC)

    def problems(m: dict, e: Expected) -> list[str]:
        out = Outcome()
        check_expected(m, e, out)
        return out.problems

    assert problems(manifest, Expected(not_before=at, scan_id=7)) == []
    assert problems(manifest, Expected()) == []
    (p,) = problems(manifest, Expected(not_before=at.replace(second=1)))
    assert "before" in p and "stale" in p
    (p,) = problems(manifest, Expected(scan_id=8))
    assert "not the expected scan 8" in p
    for bad in ("7", True, None):  # a string, a bool (== 1 in Python) or no id is never scan 7 / 1
        assert problems({**manifest, "scan_id": bad}, Expected(scan_id=1 if bad is True else 7))
    for bad_time in ("2026-12-07T10:00:00", "yesterday", None):
        assert problems({**manifest, "verified_at": bad_time}, Expected(not_before=at))


def test_a_pack_whose_scan_claims_a_time_after_the_check_fails() -> None:
    """A re-signed pack dated in the future (manifest, replay and report agreeing) would pass --not-before
    for as long as its author likes: no honest pack was verified after the auditor checks it."""
    import json
    from datetime import UTC, datetime, timedelta

    from scanner.evidence.verify import Outcome, _check_identity

    def problems(at: datetime) -> list[str]:
        t = at.isoformat()
        manifest = {"scan_id": 7, "cluster": "c", "policy_digest": "sha256:p", "verified_at": t}
        files = {"policy/replay.json": json.dumps({"scan_id": 7, "cluster": "c", "digest": "sha256:p",
                                                   "verified_at": t}).encode(),
                 "reports/scan.json": json.dumps({"scan": {"id": 7, "cluster": "c", "policy_digest": "sha256:p",
                                                           "started_at": (at - timedelta(seconds=5)).isoformat(),
                                                           "finished_at": t}}).encode()}
        out = Outcome()
        _check_identity(files, manifest, out)
        return out.problems

    assert problems(datetime.now(UTC) - timedelta(hours=1)) == []
    (p,) = problems(datetime.now(UTC) + timedelta(days=30))
    assert "after the time of this check" in p
