"""HTTP for the trust layers: :class:`HttpxGet` (``scanner.verify.base.HttpGet`` over httpx), the key-URL
fetch of policy keys, and the CRL/OCSP fetcher. Every client is under the wall-clock deadline
(``scanner.registry.deadline``): httpx's timeouts are per read, which a peer trickling its headers
a byte at a time never trips."""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx

from scanner.errors import ConfigError
from scanner.redact import display_url, redact_text
from scanner.registry import deadline
from scanner.verify.base import Fetcher, HttpAnswer, HttpGetError


def _refuse_plain_http(request: httpx.Request) -> None:
    if request.url.scheme != "https":
        raise httpx.UnsupportedProtocol(
            f"{display_url(str(request.url))} is not https (trust material is fetched over https only)",
            request=request,
        )


class HttpxGet:
    """One httpx client (its connections reused across calls) bounded by size and wall clock."""

    def __init__(
        self, *, timeout: float, follow_redirects: bool = False, trust_env: bool = True, https_only: bool = False
    ) -> None:
        # https_only: every request, redirects included, goes over https (a key named by an https URL
        # must not arrive in clear text because its server redirected to http).
        hooks = {"request": [_refuse_plain_http]} if https_only else {}
        self._client = deadline.install(
            httpx.Client(timeout=timeout, follow_redirects=follow_redirects, trust_env=trust_env, event_hooks=hooks)
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpxGet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(
        self, url: str, *, headers: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
        max_bytes: int, until: float,
    ) -> HttpAnswer:
        body = bytearray()
        try:
            with deadline.within(until, "late"), \
                    self._client.stream("GET", url, params=params,
                                        headers={**(headers or {}), "Accept-Encoding": "identity"}) as resp:
                # The body as sent, never inflated: httpx inflates a whole network chunk at once ("gzip,
                # gzip" layer on layer), so a few hundred bytes took hundreds of MiB before the cap saw them.
                encoding = resp.headers.get("content-encoding", "").strip().lower()
                if encoding not in ("", "identity"):
                    raise HttpGetError(f"answered a {encoding[:40]!r}-encoded body, not asked for")
                for chunk in resp.iter_raw():
                    body += chunk
                    if len(body) > max_bytes:
                        raise HttpGetError(f"answer larger than {max_bytes} bytes", too_large=True)
                    if time.monotonic() > until:  # a server trickling its body resets httpx's read timeout
                        raise HttpGetError("no complete answer in time", late=True)
                return HttpAnswer(resp.status_code, bytes(body))
        except httpx.HTTPError as exc:
            if deadline.cause(exc) is not None:
                raise HttpGetError("no complete answer in time", late=True) from exc
            raise HttpGetError(f"{type(exc).__name__}: {exc}") from exc


def fetch_key_url(url: str, *, max_bytes: int, seconds: float) -> bytes:
    """A policy key named by URL (``key: https://...``), redirects followed, bounded in size and time.
    Raises ConfigError naming the URL as shown (never a credential it carries)."""
    shown = display_url(url)
    with HttpxGet(timeout=10.0, follow_redirects=True, https_only=True) as get:
        try:
            answer = get(url, max_bytes=max_bytes, until=time.monotonic() + seconds)
        except HttpGetError as exc:
            if exc.too_large:
                raise ConfigError(f"key URL returned more than {max_bytes} bytes", field=shown) from exc
            if exc.late:
                raise ConfigError(f"cannot fetch key: no answer within {seconds:g} s", field=shown) from exc
            raise ConfigError(f"cannot fetch key: {redact_text(str(exc))}", field=shown) from exc
    if answer.status != 200:
        raise ConfigError(f"key URL answered {answer.status}", field=shown)
    return answer.body


def crl_fetcher() -> Fetcher:
    """CRL/OCSP over HTTP, size- and time-bounded."""
    from scanner.registry.fetcher import HttpFetcher

    return HttpFetcher()
