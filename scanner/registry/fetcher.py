"""An httpx implementation of ``scanner.verify.base.Fetcher`` for CRL and OCSP traffic.

Bounds everything the remote side controls: the response size (streamed and counted, the
``Content-Length`` is not trusted), the total time of a request (a wall-clock deadline across
connect, headers and every body chunk, so a server that trickles bytes cannot hold a scan), the
URL scheme (``http`` only by default: the Notary Project revocation rules fetch CRLs and OCSP over
plain HTTP, the data being signed) and redirects (none followed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx

from scanner.errors import LimitExceeded, RegistryError
from scanner.registry import deadline

log = logging.getLogger(__name__)


class HttpFetcher:
    """``get``/``post`` with a size cap and a deadline; raises ``RegistryError``/``LimitExceeded``."""

    def __init__(self, *, allowed_schemes: frozenset[str] = frozenset({"http"}),
                 user_agent: str = "sigaudit", client: httpx.Client | None = None) -> None:
        self.allowed_schemes = allowed_schemes
        self._client = client or httpx.Client(follow_redirects=False, headers={"User-Agent": user_agent},
                                              trust_env=False)
        deadline.install(self._client)  # the wall-clock deadline covers connect and headers, not only the body

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in self.allowed_schemes:
            raise RegistryError(f"refusing to fetch {url!r}: scheme {parts.scheme or '(none)'!r} is not allowed "
                                f"(allowed: {', '.join(sorted(self.allowed_schemes))})")
        if not parts.hostname:
            raise RegistryError(f"refusing to fetch {url!r}: no host")

    @contextmanager
    def _stream(self, method: str, url: str, timeout: float, **kw: object) -> Iterator[httpx.Response]:
        t = httpx.Timeout(timeout)
        try:
            with self._client.stream(method, url, timeout=t, **kw) as resp:  # type: ignore[arg-type]
                yield resp
        except httpx.TimeoutException as exc:
            words = deadline.cause(exc)
            raise RegistryError(f"{method} {url} {words or f'timed out after {timeout:g}s'}") from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, ValueError) as exc:
            raise RegistryError(f"{method} {url} failed: {type(exc).__name__}: {str(exc)[:200]}") from None

    def _read(self, method: str, url: str, max_bytes: int, timeout: float, **kw: object) -> bytes:
        self._check_url(url)
        until = time.monotonic() + timeout
        with deadline.within(until, f"timed out after {timeout:g}s (connect, headers and body)"), \
                self._stream(method, url, timeout, **kw) as resp:
            if resp.status_code != 200:
                raise RegistryError(f"{method} {url} answered HTTP {resp.status_code}", status=resp.status_code)
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise LimitExceeded(f"{url} announces {declared} bytes, more than the limit of {max_bytes}")
            chunks: list[bytes] = []
            total = 0
            try:
                for chunk in resp.iter_raw():
                    total += len(chunk)
                    if total > max_bytes:
                        raise LimitExceeded(f"{url} sent more than the limit of {max_bytes} bytes")
                    chunks.append(chunk)
                    if time.monotonic() > until:
                        raise RegistryError(f"{method} {url} did not finish within {timeout:g}s")
            except httpx.TimeoutException as exc:
                words = deadline.cause(exc)
                raise RegistryError(f"{method} {url} {words or f'timed out after {timeout:g}s'}") from None
            except (httpx.HTTPError, httpx.StreamError, ValueError) as exc:
                raise RegistryError(f"{method} {url} failed: {type(exc).__name__}: {str(exc)[:200]}") from None
            return b"".join(chunks)

    def get(self, url: str, *, max_bytes: int, timeout: float) -> bytes:
        return self._read("GET", url, max_bytes, timeout)

    def post(self, url: str, body: bytes, *, content_type: str, max_bytes: int, timeout: float) -> bytes:
        return self._read("POST", url, max_bytes, timeout, content=body,
                          headers={"Content-Type": content_type})
