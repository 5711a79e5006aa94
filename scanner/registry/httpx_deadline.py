"""The httpcore network backend that applies :mod:`scanner.registry.deadline`'s per-thread deadlines to
every connect, TLS handshake, read and write of an ``httpx.Client`` (see that module for why the
deadline lives below httpx). Imported only when an httpx client is made."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from scanner.registry.deadline import DeadlineExceeded, capped, expired


class _ConnectDeadline(DeadlineExceeded, httpcore.ConnectTimeout):
    pass


class _ReadDeadline(DeadlineExceeded, httpcore.ReadTimeout):
    pass


class _WriteDeadline(DeadlineExceeded, httpcore.WriteTimeout):
    pass


def _timed_out(exc_type: type[Exception], exc: Exception) -> Exception:
    words = expired()
    return exc_type(words) if words else exc


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return self._inner.read(max_bytes, capped(timeout, _ReadDeadline))
        except httpcore.ReadTimeout as exc:
            raise _timed_out(_ReadDeadline, exc) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._inner.write(buffer, capped(timeout, _WriteDeadline))
        except httpcore.WriteTimeout as exc:
            raise _timed_out(_WriteDeadline, exc) from exc

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        try:
            return _Stream(self._inner.start_tls(ssl_context, server_hostname, capped(timeout, _ConnectDeadline)))
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
                host, port, capped(timeout, _ConnectDeadline), local_address, socket_options
            )
        except httpcore.ConnectTimeout as exc:
            raise _timed_out(_ConnectDeadline, exc) from exc
        return _Stream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        try:
            stream = self._inner.connect_unix_socket(path, capped(timeout, _ConnectDeadline), socket_options)
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
