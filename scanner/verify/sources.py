"""The one edge through which trust material is read: files, directories, key URLs, KMS public keys
and CRL/OCSP answers (issue #18's "trust material arrives as bytes", issue #23's trust snapshot).

Every read of trust material in ``scanner.verify`` and ``scanner.policy`` goes through the functions
here, which ask the :class:`Sources` in force for the calling context (:func:`reading_from`):

* :class:`FileSystem` (the default) reads the real files and calls the real fetchers;
* :class:`Recording` does the same and keeps every question and its answer (bytes by sha256), so that
  a scan's evidence pack holds exactly the trust material the policy was built from;
* :class:`Replay` answers only from such a record, and a question the record does not hold is
  answered "absent" (``OSError``/``ConfigError``): ``sigaudit verify-evidence`` rebuilds the policy
  from the pack with no file of the machine and no network.

The queries are keyed by the path *as the code asked for it* (relative paths stay relative), so a
replay of the same policy load asks the same questions. A CRL or OCSP answer fetched during
verification (in a worker thread) goes through the fetcher wrapped at load time
(:func:`wrap_fetcher`), which records into the same record.
"""

from __future__ import annotations

import errno
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scanner.errors import ConfigError
from scanner.redact import display_url
from scanner.verify.base import Fetcher

MISSING = "not in the evidence pack's trust snapshot"


class Sources(Protocol):
    def query(self, op: str, path: Path, real: Callable[[], Any]) -> Any:
        """The answer to a file-system question (``read``, ``is_file``, ``is_dir``, ``is_symlink``,
        ``iterdir``, ``size``, ``resolve``) about ``path``; ``real`` asks the real file system."""
        ...

    def fetched(self, kind: str, ref: str, fetch: Callable[[], bytes]) -> bytes:
        """Bytes named by ``ref`` (a key URL, a KMS key URI, a CRL/OCSP URL) that ``fetch`` reads."""
        ...


class FileSystem:
    def query(self, op: str, path: Path, real: Callable[[], Any]) -> Any:
        return real()

    def fetched(self, kind: str, ref: str, fetch: Callable[[], bytes]) -> bytes:
        return fetch()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ref_key(ref: str) -> str:
    """How a fetched reference is named in a snapshot: shown without credentials (a key URL may carry
    ``user:password@`` or ``?token=``; a snapshot goes into the store and into evidence packs), and
    told apart from another by the sha256 of the whole reference."""
    shown = display_url(ref)
    return shown if shown == ref else f"{shown} (sha256:{_sha(ref.encode())})"


@dataclass
class Snapshot:
    """What a :class:`Recording` kept: JSON-able ``entries`` plus the bytes they name by sha256."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": 1, "entries": self.entries}


class Recording:
    """Reads for real and keeps every question and answer (thread-safe: CRL fetches come from workers)."""

    def __init__(self, inner: Sources | None = None) -> None:
        self._inner = inner or FileSystem()
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        self.snapshot = Snapshot()

    def _keep(self, key: tuple[str, str], entry: dict[str, Any], data: bytes | None = None) -> None:
        with self._lock:
            if data is not None:
                self.snapshot.blobs[entry["sha256"]] = data
            if key in self._seen:
                return
            self._seen.add(key)
            self.snapshot.entries.append(entry)

    def query(self, op: str, path: Path, real: Callable[[], Any]) -> Any:
        key = (op, str(path))
        try:
            value = self._inner.query(op, path, real)
        except OSError as exc:
            self._keep(key, {"op": op, "path": str(path), "error": [exc.errno or errno.EIO, exc.strerror or str(exc)]})
            raise
        if op == "read":
            self._keep(key, {"op": op, "path": str(path), "sha256": _sha(value)}, value)
        elif op == "iterdir":
            self._keep(key, {"op": op, "path": str(path), "value": sorted(p.name for p in value)})
        elif op == "resolve":
            self._keep(key, {"op": op, "path": str(path), "value": str(value)})
        else:
            self._keep(key, {"op": op, "path": str(path), "value": value})
        return value

    def fetched(self, kind: str, ref: str, fetch: Callable[[], bytes]) -> bytes:
        data = self._inner.fetched(kind, ref, fetch)
        name = _ref_key(ref)
        self._keep((kind, name), {"op": kind, "path": name, "sha256": _sha(data)}, data)
        return data


class Replay:
    """Answers only from a snapshot; what it does not hold is absent."""

    def __init__(self, entries: list[Mapping[str, Any]], blobs: Mapping[str, bytes]) -> None:
        self._answers = {(str(e["op"]), str(e["path"])): e for e in entries}
        self._blobs = blobs

    def query(self, op: str, path: Path, real: Callable[[], Any]) -> Any:
        e = self._answers.get((op, str(path)))
        if e is None:
            if op in ("is_file", "is_dir", "is_symlink"):
                return False
            if op == "resolve":
                return path
            raise FileNotFoundError(errno.ENOENT, MISSING, str(path))
        if "error" in e:
            code, msg = e["error"]
            raise OSError(int(code), str(msg), str(path))
        if op == "read":
            return self._blob(e)
        if op == "iterdir":
            return [path / str(n) for n in e["value"]]
        if op == "resolve":
            return Path(str(e["value"]))
        if op == "size":
            return int(e["value"])
        return bool(e["value"])

    def _blob(self, e: Mapping[str, Any]) -> bytes:
        data = self._blobs.get(str(e.get("sha256")))
        if data is None or _sha(data) != e.get("sha256"):
            raise FileNotFoundError(errno.ENOENT, MISSING, str(e["path"]))
        return data

    def fetched(self, kind: str, ref: str, fetch: Callable[[], bytes]) -> bytes:
        name = _ref_key(ref)
        e = self._answers.get((kind, name))
        if e is None or "sha256" not in e:
            raise ConfigError(f"{kind} {display_url(ref)}: {MISSING}")
        try:
            return self._blob(e)
        except FileNotFoundError:
            raise ConfigError(f"{kind} {display_url(ref)}: {MISSING}") from None


_REAL = FileSystem()
_current: ContextVar[Sources | None] = ContextVar("sigaudit_trust_sources", default=None)


def current() -> Sources:
    return _current.get() or _REAL


@contextmanager
def reading_from(sources: Sources) -> Iterator[Sources]:
    """Trust material read in this context (and by fetchers wrapped in it) comes from ``sources``."""
    token = _current.set(sources)
    try:
        yield sources
    finally:
        _current.reset(token)


def read_bytes(path: Path) -> bytes:
    return bytes(current().query("read", path, path.read_bytes))


def is_file(path: Path) -> bool:
    return bool(current().query("is_file", path, path.is_file))


def is_dir(path: Path) -> bool:
    return bool(current().query("is_dir", path, path.is_dir))


def is_symlink(path: Path) -> bool:
    return bool(current().query("is_symlink", path, path.is_symlink))


def iterdir(path: Path) -> list[Path]:
    return list(current().query("iterdir", path, lambda: sorted(path.iterdir())))


def size(path: Path) -> int:
    return int(current().query("size", path, lambda: path.stat().st_size))


def resolve(path: Path) -> Path:
    return Path(current().query("resolve", path, path.resolve))


def fetched(kind: str, ref: str, fetch: Callable[[], bytes]) -> bytes:
    return current().fetched(kind, ref, fetch)


@dataclass(frozen=True)
class _SourcedFetcher:
    """A CRL/OCSP fetcher bound to the sources in force when the policy was loaded."""

    inner: Fetcher
    sources: Sources

    def get(self, url: str, *, max_bytes: int, timeout: float) -> bytes:
        return self.sources.fetched("get", url, lambda: self.inner.get(url, max_bytes=max_bytes, timeout=timeout))

    def post(self, url: str, body: bytes, *, content_type: str, max_bytes: int, timeout: float) -> bytes:
        return self.sources.fetched(
            "post", f"{url}#{_sha(body)}",
            lambda: self.inner.post(url, body, content_type=content_type, max_bytes=max_bytes, timeout=timeout),
        )


def wrap_fetcher(fetcher: Fetcher) -> Fetcher:
    """``fetcher`` as seen through the sources in force now (unchanged when they are the real ones)."""
    sources = current()
    return fetcher if isinstance(sources, FileSystem) else _SourcedFetcher(fetcher, sources)
