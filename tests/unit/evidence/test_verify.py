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
