"""Wall-clock deadlines over whole HTTP exchanges, and over a whole scan.

httpx's timeouts are per socket operation: every byte that arrives restarts the read timeout, so a
server that trickles its status line and headers a byte at a time holds a request for as long as it
likes (a 3 s "total" timeout once took 28 s). Checking the clock between body chunks does not help
before the headers are complete. The deadline therefore lives below httpx, in httpcore's network
backend: :func:`install` wraps the backend of an ``httpx.Client`` so that every connect, TLS
handshake, read and write is given at most the time left before the earliest deadline in force on
the calling thread, and fails with a timeout once none is left.

Deadlines are set per thread with :func:`within` and nest (the earliest wins): the registry client
sets one per request (its total timeout), the pipeline one per scan (``--deadline``); the CRL/OCSP
fetcher one per fetch. Each carries the words that explain it ("scan deadline reached").

The registry client itself is on urllib3, not httpx: :mod:`scanner.registry.transport` applies the
same per-thread deadlines at its sockets (before every connect, write and recv). The httpcore backend
lives in :mod:`scanner.registry.httpx_deadline`, imported by :func:`install` only: a scan that never
makes an httpx client (no CRL, OCSP, key URL or notification) never imports httpx (issue 19: it was a
tenth of start-up).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    import httpx

    T = TypeVar("T")

_local = threading.local()
# How many workers :func:`run` gave up on may still be running (hanging) at once, process-wide.
MAX_ABANDONED = 32
_abandoned: list[threading.Thread] = []
_abandoned_lock = threading.Lock()


class DeadlineExceeded(Exception):  # mixed into httpcore's timeout classes below
    """Marks a timeout raised because a deadline passed (``exc.__cause__`` of the httpx error)."""


def _scopes() -> list[tuple[float, str]]:
    scopes: list[tuple[float, str]] | None = getattr(_local, "scopes", None)
    if scopes is None:
        scopes = _local.scopes = []
    return scopes


class within:  # lower case: it replaced a function of that name, used as ``with within(at, what):``
    """Run the block under a deadline at ``time.monotonic()`` value ``at`` (None: no deadline).
    ``what`` says what passed, for messages ("scan deadline reached"). A class rather than a
    ``@contextmanager`` generator: it is entered on every registry request (issue 19: a generator's
    context manager costs a few µs more per use, and the request path had five of them)."""

    __slots__ = ("_at", "_scopes", "_what")

    def __init__(self, at: float | None, what: str) -> None:
        self._at = at
        self._what = what
        self._scopes: list[tuple[float, str]] | None = None

    def __enter__(self) -> None:
        if self._at is not None:
            scopes = self._scopes = _scopes()
            scopes.append((self._at, self._what))

    def __exit__(self, *exc: object) -> None:
        if self._scopes is not None:
            self._scopes.pop()
            self._scopes = None


def current() -> tuple[float, str] | None:
    """The earliest deadline in force on this thread, with its words; of deadlines at the same instant
    (a request cut at the scan's own deadline), the innermost, whose words say more."""
    scopes = _scopes()
    return min(reversed(scopes), key=lambda scope: scope[0]) if scopes else None


def remaining() -> float | None:
    """Seconds left before the earliest deadline (may be negative), or None without one."""
    cur = current()
    return None if cur is None else cur[0] - time.monotonic()


def capped(base: float | None, exc_type: type[Exception]) -> float | None:
    """The timeout for the next socket operation: ``base`` (the per-operation timeout) capped by the time
    left before this thread's earliest deadline; raises ``exc_type(words)`` once none is left. One rule
    for both transports (urllib3's sockets and httpx's httpcore streams)."""
    cur = current()
    if cur is None:
        return base
    left = cur[0] - time.monotonic()
    if left <= 0:
        raise exc_type(cur[1])
    return left if base is None else min(base, left)


def expired() -> str | None:
    """The words of a deadline that has passed, or None."""
    cur = current()
    return cur[1] if cur is not None and cur[0] <= time.monotonic() else None


def cause(exc: BaseException) -> str | None:
    """What deadline an httpx timeout stands for, when it was raised by one (else None)."""
    seen = exc
    for _ in range(4):
        if isinstance(seen, DeadlineExceeded):
            return str(seen)
        nxt = seen.__cause__ or seen.__context__
        if nxt is None:
            return None
        seen = nxt
    return None


def run(call: Callable[[], T], *, grace: float = 0.0) -> T:
    """``call()`` never past this thread's earliest deadline (plus ``grace``), whatever it blocks in: a
    name lookup (``getaddrinfo`` has no timeout), an SDK's retries, a socket no deadline of ours reaches.
    With a deadline in force it runs on a daemon worker thread that inherits this thread's deadlines and
    context (its own httpx/urllib3 calls still end at them, with their words); past the deadline and
    the grace, the worker is abandoned and :class:`Abandoned` raised with the deadline's words. A
    deadline already passed raises at once, before anything is asked, and so does any call while
    :data:`MAX_ABANDONED` workers given up on earlier still run: what hangs past deadlines is bounded in a
    process that runs for months. Without one: ``call()`` here."""
    import contextvars
    import queue

    scopes = list(_scopes())
    if not scopes:
        return call()
    at, words = current() or scopes[0]  # the innermost of equal deadlines, as everywhere else
    if at <= time.monotonic():
        raise NotStarted(words)
    with _abandoned_lock:
        _abandoned[:] = [worker for worker in _abandoned if worker.is_alive()]
        if len(_abandoned) >= MAX_ABANDONED:
            # A long-running process (serve) whose reads keep hanging past their deadlines (a peer that
            # trickles forever, a lookup that never returns) would grow a thread and a socket per read
            # without end: past MAX_ABANDONED still hanging, the read is not started and ends as cut.
            raise NotStarted(f"{words} ({len(_abandoned)} earlier reads still hang past their deadlines)")
    context = contextvars.copy_context()
    answers: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()

    def work() -> None:
        _local.scopes = list(scopes)
        try:
            answers.put((True, context.run(call)))
        except Exception as exc:  # handed to the caller's thread
            answers.put((False, exc))
        except BaseException as exc:  # a SystemExit(0) re-raised there would end a command "all compliant"
            answers.put((False, WorkerExit(f"the read ended with {type(exc).__name__}")))

    worker = threading.Thread(target=work, name="sigaudit-deadline", daemon=True)
    worker.start()
    try:
        ok, value = answers.get(timeout=max(at - time.monotonic(), 0.0) + grace)
    except queue.Empty:
        with _abandoned_lock:
            _abandoned.append(worker)
        raise Abandoned(words) from None
    if not ok:
        raise value
    result: T = value
    return result


class Abandoned(Exception):
    """:func:`run` gave up waiting at a deadline (``str()``: the deadline's words)."""


class NotStarted(Abandoned):
    """:func:`run` did not start the call (its deadline had passed, or :data:`MAX_ABANDONED` workers still
    hang): nothing was asked, which a caller may say in its own words."""


class WorkerExit(Exception):
    """The call :func:`run` ran on its worker raised what is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``, ``GeneratorExit``): it reaches the caller as a failure, never as an exit."""


def install(client: httpx.Client) -> httpx.Client:
    """Bound every connect, read and write of ``client`` by the thread's deadlines
    (:func:`scanner.registry.httpx_deadline.install`)."""
    from scanner.registry.httpx_deadline import install as install_backend

    return install_backend(client)
