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
same per-thread deadlines at its sockets (before every connect, write and recv).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

_local = threading.local()


class DeadlineExceeded(Exception):  # mixed into httpcore's timeout classes below
    """Marks a timeout raised because a deadline passed (``exc.__cause__`` of the httpx error)."""


class _ConnectDeadline(DeadlineExceeded, httpcore.ConnectTimeout):
    pass


class _ReadDeadline(DeadlineExceeded, httpcore.ReadTimeout):
    pass


class _WriteDeadline(DeadlineExceeded, httpcore.WriteTimeout):
    pass


def _scopes() -> list[tuple[float, str]]:
    scopes: list[tuple[float, str]] | None = getattr(_local, "scopes", None)
    if scopes is None:
        scopes = _local.scopes = []
    return scopes


@contextmanager
def within(at: float | None, what: str) -> Iterator[None]:
    """Run the block under a deadline at ``time.monotonic()`` value ``at`` (None: no deadline).
    ``what`` says what passed, for messages ("scan deadline reached")."""
    if at is None:
        yield
        return
    scopes = _scopes()
    scopes.append((at, what))
    try:
        yield
    finally:
        scopes.pop()


def current() -> tuple[float, str] | None:
    """The earliest deadline in force on this thread, with its words."""
    scopes = _scopes()
    return min(scopes) if scopes else None


def remaining() -> float | None:
    """Seconds left before the earliest deadline (may be negative), or None without one."""
    cur = current()
    return None if cur is None else cur[0] - time.monotonic()


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


def _budget(timeout: float | None, exc_type: type[Exception]) -> float | None:
    cur = current()
    if cur is None:
        return timeout
    left = cur[0] - time.monotonic()
    if left <= 0:
        raise exc_type(cur[1])
    return left if timeout is None else min(timeout, left)


def _timed_out(exc_type: type[Exception], exc: Exception) -> Exception:
    words = expired()
    return exc_type(words) if words else exc


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return self._inner.read(max_bytes, _budget(timeout, _ReadDeadline))
        except httpcore.ReadTimeout as exc:
            raise _timed_out(_ReadDeadline, exc) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._inner.write(buffer, _budget(timeout, _WriteDeadline))
        except httpcore.WriteTimeout as exc:
            raise _timed_out(_WriteDeadline, exc) from exc

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        try:
            return _Stream(self._inner.start_tls(ssl_context, server_hostname, _budget(timeout, _ConnectDeadline)))
        except httpcore.ConnectTimeout as exc:
            raise _timed_out(_ConnectDeadline, exc) from exc

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every operation bounded by the thread's deadlines."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            stream = self._inner.connect_tcp(
                host, port, _budget(timeout, _ConnectDeadline), local_address, socket_options
            )
        except httpcore.ConnectTimeout as exc:
            raise _timed_out(_ConnectDeadline, exc) from exc
        return _Stream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        try:
            stream = self._inner.connect_unix_socket(path, _budget(timeout, _ConnectDeadline), socket_options)
        except httpcore.ConnectTimeout as exc:
            raise _timed_out(_ConnectDeadline, exc) from exc
        return _Stream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install(client: httpx.Client) -> httpx.Client:
    """Put :class:`DeadlineBackend` under every httpcore pool of ``client`` (its default transport and
    the proxy mounts httpx made from the environment). Transports that are not httpx's own (a test's
    MockTransport) are left alone. Fails loudly if httpx's layout changed, rather than leaving the
    client without its deadline."""
    transports = [client._transport, *client._mounts.values()]  # private: see the docstring
    for transport in transports:
        if not isinstance(transport, httpx.HTTPTransport):
            continue
        pool = getattr(transport, "_pool", None)
        if pool is None or not hasattr(pool, "_network_backend"):
            raise RuntimeError("httpx/httpcore layout changed: cannot install the request deadline")
        if not isinstance(pool._network_backend, DeadlineBackend):
            pool._network_backend = DeadlineBackend(pool._network_backend)
    return client
