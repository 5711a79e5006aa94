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

Material read *during* one image's verification (a CRL, an OCSP answer, a Grafeas listing, the lazily
loaded public-good root) is also noted to the taps in force in that thread (:func:`noting`): the
evidence capture keeps it with the image's own material, so that it follows the image's verdict into
the store and, for a cache hit, into a later (warm) scan's pack. A cache that serves such material
again without a fetch (the CRL cache, a lazily loaded root) asks :meth:`Sources.reusable` first: a
:class:`Recording` notes the use (as if fetched), a :class:`Replay` allows it only when the image
being replayed recorded the same bytes (:func:`answering_first`), so no image is ever replayed with
another image's CRL.

Trust material an importer derives from a document (a ClusterImagePolicy CA, a notation trust store
built from certificates, a Kyverno keyless root) is handed to the verifiers as bytes: :func:`virtual`
and :func:`virtual_tree` register it in memory under a ``sigaudit-mem:/<sha256>`` name that is never a
file-system path, and every question about such a name is answered from memory (never from the disk)
in every :class:`Sources` -- a :class:`Recording` keeps the answers like a file's, so a pack shows the
material; a :class:`Replay` answers them from the memory the replayed import filled again. A name
with that prefix written by a user is refused where documents are read (:func:`refuse_virtual`).
"""

from __future__ import annotations

import errno
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scanner.errors import ConfigError
from scanner.redact import display_url, redact_bytes
from scanner.verify.base import Fetcher

MISSING = "not in the evidence pack's trust snapshot"
MEM_PREFIX = "sigaudit-mem:/"


class Sources(Protocol):
    def query(self, op: str, path: Path, real: Callable[[], Any]) -> Any:
        """The answer to a file-system question (``read``, ``is_file``, ``is_dir``, ``is_symlink``,
        ``iterdir``, ``size``, ``resolve``) about ``path``; ``real`` asks the real file system."""
        ...

    def fetched(self, kind: str, ref: str, fetch: Callable[[], bytes]) -> bytes:
        """Bytes named by ``ref`` (a key URL, a KMS key URI, a CRL/OCSP URL) that ``fetch`` reads."""
        ...

    def reusable(self, kind: str, ref: str, data: bytes) -> bool:
        """Whether ``data``, fetched earlier as ``ref``, may answer again without a fetch (a cache)."""
        ...


class FileSystem:
    def query(self, op: str, path: Path, real: Callable[[], Any]) -> Any:
        return real()

    def fetched(self, kind: str, ref: str, fetch: Callable[[], bytes]) -> bytes:
        return fetch()

    def reusable(self, kind: str, ref: str, data: bytes) -> bool:
        return True


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


@dataclass(frozen=True)
class Use:
    """One trust answer used: the question (``kind``: a file-system op or a fetched kind; ``ref``: the
    path or reference as asked), its snapshot ``entry`` and bytes (None for an answer without)."""

    kind: str
    ref: str
    entry: Mapping[str, Any]
    data: bytes | None
    fetched: bool  # a fetched reference (CRL, OCSP, listing, root), not a file-system question


Tap = Callable[[Use], None]
_taps: ContextVar[tuple[Tap, ...]] = ContextVar("sigaudit_trust_taps", default=())


@contextmanager
def noting(tap: Tap) -> Iterator[None]:
    """Trust answers used in this context (this thread's image verification) are also given to ``tap``."""
    token = _taps.set((*_taps.get(), tap))
    try:
        yield
    finally:
        _taps.reset(token)


def _note(use: Use) -> None:
    for tap in _taps.get():
        tap(use)


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
            failed = {"op": op, "path": str(path), "error": [exc.errno or errno.EIO, exc.strerror or str(exc)]}
            self._keep(key, failed)
            _note(Use(op, str(path), failed, None, False))
            raise
        kept: bytes | None = None
        if op == "read":
            # A policy may spell a key URL with its credentials: the snapshot (database, evidence pack)
            # keeps the text with them masked, which is also what the policy digest is taken over.
            kept = redact_bytes(value)
            entry: dict[str, Any] = {"op": op, "path": str(path), "sha256": _sha(kept)}
            if kept is not value:
                entry["redacted"] = True
        elif op == "iterdir":
            entry = {"op": op, "path": str(path), "value": sorted(p.name for p in value)}
        elif op == "resolve":
            entry = {"op": op, "path": str(path), "value": str(value)}
        else:
            entry = {"op": op, "path": str(path), "value": value}
        self._keep(key, entry, kept)
        _note(Use(op, str(path), entry, kept, False))
        return value

    def fetched(self, kind: str, ref: str, fetch: Callable[[], bytes]) -> bytes:
        data = self._inner.fetched(kind, ref, fetch)
        self._fetched(kind, ref, data)
        return data

    def _fetched(self, kind: str, ref: str, data: bytes) -> None:
        name = _ref_key(ref)
        entry = {"op": kind, "path": name, "sha256": _sha(data)}
        self._keep((kind, name), entry, data)
        _note(Use(kind, ref, entry, data, True))

    def reusable(self, kind: str, ref: str, data: bytes) -> bool:
        """A cache serves ``data`` again: the image judged now used it, as if fetched."""
        if not self._inner.reusable(kind, ref, data):
            return False
        self._fetched(kind, ref, data)
        return True


_mem_lock = threading.Lock()
_mem_files: dict[str, bytes] = {}
_mem_dirs: dict[str, set[str]] = {}


def _as_bytes(content: str | bytes) -> bytes:
    return content.encode() if isinstance(content, str) else bytes(content)


def _mem_put(name: str, data: bytes) -> None:
    with _mem_lock:
        _mem_files[name] = data
        parent, _, child = name.rpartition("/")
        while parent + "/" != MEM_PREFIX and parent.startswith(MEM_PREFIX):
            _mem_dirs.setdefault(parent, set()).add(child)
            parent, _, child = parent.rpartition("/")


def virtual(content: str | bytes, suffix: str = "") -> str:
    """A name under which the verifiers read ``content`` (content-addressed: the same bytes give the
    same name, in this process and in a replay)."""
    data = _as_bytes(content)
    name = f"{MEM_PREFIX}{_sha(data)}{suffix}"
    _mem_put(name, data)
    return name


def virtual_tree(files: Mapping[str, str | bytes], suffix: str = ".d") -> str:
    """A directory (``relative/path -> content``) the verifiers read like a directory on disk."""
    tree = {rel.strip("/"): _as_bytes(c) for rel, c in files.items()}
    if not tree or any(not r or ".." in r.split("/") or "" in r.split("/") for r in tree):
        raise ValueError(f"virtual_tree: bad relative paths {sorted(tree)}")
    digest = _sha(b"".join(f"{r}\0{_sha(d)}\n".encode() for r, d in sorted(tree.items())))
    root = f"{MEM_PREFIX}{digest}{suffix}"
    for rel, data in tree.items():
        _mem_put(f"{root}/{rel}", data)
    with _mem_lock:
        _mem_dirs.setdefault(root, set())
    return root


def _mem_name(path: Path | str) -> str | None:
    """The in-memory name ``path`` asks for, or None (a path on disk). Only a name that starts with the
    prefix is one: the verifiers join a policy's base directory in front through :func:`under`, which
    leaves such a name alone, and any other path is the disk's."""
    text = str(path)
    return text.rstrip("/") if text.startswith(MEM_PREFIX) else None


def under(base_dir: Path | None, path: str | Path) -> Path:
    """``path`` as a policy next to ``base_dir`` names it; an in-memory name stays itself (so it reads
    the same in messages, labels and snapshots whatever directory the scan ran from)."""
    name = _mem_name(path)
    if name is not None:
        return Path(name)
    p = Path(path)
    return base_dir / p if base_dir is not None and not p.is_absolute() else p


def is_virtual(text: str) -> bool:
    return MEM_PREFIX in text


def refuse_virtual(doc: Any, source: str) -> None:
    """A document a user wrote (a policy file, an imported resource) never names in-memory material:
    a tenant must not pick up what another import registered."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if is_virtual(item):
                raise ConfigError(f"{MEM_PREFIX!r} names sigaudit's in-memory trust material, not a file",
                                  source=source)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def _mem_answer(op: str, name: str) -> Any:
    with _mem_lock:
        data = _mem_files.get(name)
        children = _mem_dirs.get(name)
    if op == "is_file":
        return data is not None
    if op == "is_dir":
        return children is not None
    if op == "is_symlink":
        return False
    if op == "resolve":
        return Path(name)
    if data is None and children is None:
        raise FileNotFoundError(errno.ENOENT, "no such in-memory trust material", name)
    if op == "read":
        if data is None:
            raise IsADirectoryError(errno.EISDIR, "a directory", name)
        return data
    if op == "size":
        return len(data) if data is not None else 0
    if op == "iterdir":
        if children is None:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", name)
        return [Path(name) / c for c in sorted(children)]
    raise ValueError(f"unknown question {op!r}")


@dataclass(frozen=True)
class _Overlay:
    answers: Mapping[tuple[str, str], Mapping[str, Any]]
    blobs: Mapping[str, bytes]


_overlay: ContextVar[_Overlay | None] = ContextVar("sigaudit_trust_overlay", default=None)


@contextmanager
def answering_first(entries: Sequence[Mapping[str, Any]], blobs: Mapping[str, bytes]) -> Iterator[None]:
    """In a :class:`Replay`, within this context: the trust answers one image's verification recorded
    (its CRLs, OCSP answers, listings, lazily loaded roots). A fetched reference is answered from them
    only, never from the scan's snapshot (what another image read); a file question the image did not
    record falls back to the snapshot (what the policy was loaded from)."""
    token = _overlay.set(_Overlay({(str(e["op"]), str(e["path"])): e for e in entries}, blobs))
    try:
        yield
    finally:
        _overlay.reset(token)


class Replay:
    """Answers only from a snapshot; what it does not hold is absent."""

    def __init__(self, entries: list[Mapping[str, Any]], blobs: Mapping[str, bytes]) -> None:
        self._answers = {(str(e["op"]), str(e["path"])): e for e in entries}
        self._blobs = blobs

    def _fetched_answers(self) -> tuple[Mapping[tuple[str, str], Mapping[str, Any]], Mapping[str, bytes]]:
        over = _overlay.get()
        return (over.answers, over.blobs) if over is not None else (self._answers, self._blobs)

    def query(self, op: str, path: Path, real: Callable[[], Any]) -> Any:
        if _mem_name(path) is not None:  # in-memory material: the replayed import registered it again
            return real()
        over = _overlay.get()
        e, blobs = (over.answers.get((op, str(path))), over.blobs) if over is not None else (None, self._blobs)
        if e is None:
            e, blobs = self._answers.get((op, str(path))), self._blobs
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
            return self._blob(e, blobs)
        if op == "iterdir":
            return [path / str(n) for n in e["value"]]
        if op == "resolve":
            return Path(str(e["value"]))
        if op == "size":
            return int(e["value"])
        return bool(e["value"])

    def _blob(self, e: Mapping[str, Any], blobs: Mapping[str, bytes] | None = None) -> bytes:
        data = (self._blobs if blobs is None else blobs).get(str(e.get("sha256")))
        if data is None or _sha(data) != e.get("sha256"):
            raise FileNotFoundError(errno.ENOENT, MISSING, str(e["path"]))
        return data

    def _fetched_entry(self, kind: str, ref: str) -> tuple[Mapping[str, Any] | None, Mapping[str, bytes]]:
        answers, blobs = self._fetched_answers()
        name = _ref_key(ref)
        e = answers.get((kind, name))
        if e is None and display_url(ref) == ref and "***" in ref:
            # The reference as the snapshot's masked policy spells it: the one recorded reference that
            # shows the same (several: ambiguous, absent).
            found = [a for (k, n), a in answers.items() if k == kind and n.startswith(ref + " (sha256:")]
            e = found[0] if len(found) == 1 else None
        return e, blobs

    def fetched(self, kind: str, ref: str, fetch: Callable[[], bytes]) -> bytes:
        e, blobs = self._fetched_entry(kind, ref)
        if e is None or "sha256" not in e:
            raise ConfigError(f"{kind} {display_url(ref)}: {MISSING}")
        try:
            data = self._blob(e, blobs)
        except FileNotFoundError:
            raise ConfigError(f"{kind} {display_url(ref)}: {MISSING}") from None
        _note(Use(kind, ref, e, data, True))  # a lazy loader remembers what it was answered (LazyTrust)
        return data

    def reusable(self, kind: str, ref: str, data: bytes) -> bool:
        """Only the very bytes the image being replayed recorded for ``ref`` (a CRL another image's
        replay put in the cache is fetched again, from this image's record)."""
        e, blobs = self._fetched_entry(kind, ref)
        return e is not None and e.get("sha256") == _sha(data) and blobs.get(_sha(data)) == data


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


def _ask(op: str, path: Path, real: Callable[[], Any]) -> Any:
    name = _mem_name(path)
    if name is not None:  # never the disk: the name exists only in memory
        return current().query(op, Path(name), lambda: _mem_answer(op, name))
    return current().query(op, path, real)


def read_bytes(path: Path) -> bytes:
    return bytes(_ask("read", path, path.read_bytes))


def is_file(path: Path) -> bool:
    return bool(_ask("is_file", path, path.is_file))


def is_dir(path: Path) -> bool:
    return bool(_ask("is_dir", path, path.is_dir))


def is_symlink(path: Path) -> bool:
    return bool(_ask("is_symlink", path, path.is_symlink))


def iterdir(path: Path) -> list[Path]:
    return list(_ask("iterdir", path, lambda: sorted(path.iterdir())))


def size(path: Path) -> int:
    return int(_ask("size", path, lambda: path.stat().st_size))


def resolve(path: Path) -> Path:
    return Path(_ask("resolve", path, path.resolve))


def fetched(kind: str, ref: str, fetch: Callable[[], bytes]) -> bytes:
    """Remote trust material (a key URL, a KMS key, a trusted root, a cluster read): ``fetch`` reads it,
    ended by the caller's deadline (a policy load's ``--deadline``) as well as by its own limits
    (``scanner.sources.deadline``, the edge, taken lazily: importing the trust layers loads no client)."""

    def bounded() -> bytes:
        from scanner.sources.deadline import read

        return read(kind, ref, fetch)

    return current().fetched(kind, ref, bounded)


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


def reuse_check() -> Callable[[str, bytes], bool]:
    """For a cache of fetched GETs (the CRL cache), bound to the sources in force now: whether bytes
    fetched earlier from a URL may answer again (see :meth:`Sources.reusable`)."""
    sources = current()
    return lambda url, data: sources.reusable("get", url, data)


def wrap_fetcher(fetcher: Fetcher) -> Fetcher:
    """``fetcher`` as seen through the sources in force now (unchanged when they are the real ones)."""
    sources = current()
    return fetcher if isinstance(sources, FileSystem) else _SourcedFetcher(fetcher, sources)
