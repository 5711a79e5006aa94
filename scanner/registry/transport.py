"""The registry client's HTTP transport: urllib3 connection pools, one per host, under the wall-clock deadline.

Chosen by measurement (README "Performance"): at equal concurrency urllib3 spends about half of
httpx's client CPU per request. What httpx gave the registry client and is kept here:

- **A wall-clock deadline over the whole exchange.** urllib3's timeouts, like httpx's, are per socket
  operation, and http.client reads the status line and headers line by line, so a server trickling a
  byte a second would hold a request for ever. The deadline therefore lives at the socket: every
  connect, TLS handshake, write and *every* recv (the header block's too) is given at most the time
  left before the earliest :func:`scanner.registry.deadline.within` scope of the calling thread, and
  fails with :class:`DeadlineTimeout` (a :class:`~scanner.registry.deadline.DeadlineExceeded`) once
  none is left.
- **Proxies from the environment** as httpx's ``trust_env`` read them (``HTTP_PROXY``, ``HTTPS_PROXY``,
  ``ALL_PROXY``, ``NO_PROXY`` with httpx's host matching), read once when the transport is made.
- **TLS verification** as httpx's default: certifi's bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
  when set; a path given as ``verify_tls`` is the CA bundle (file) or directory; ``False`` verifies
  nothing.

Nothing here follows redirects, retries, or decodes a body: the client does all three itself (the
credential rule on redirects, ``Retry-After``, the size caps and the bounded inflation).
"""

from __future__ import annotations

import email.parser
import http.client
import io
import ipaddress
import os
import re
import socket
import ssl
import threading
import types
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import make_headers

from scanner.registry import deadline


class DeadlineTimeout(deadline.DeadlineExceeded, TimeoutError):
    """A socket operation refused or cut because a deadline passed; ``str()`` says which deadline.
    urllib3 wraps it (``ConnectTimeoutError``, ``ReadTimeoutError``, ``ProtocolError``) with this as
    the cause or context, which :func:`scanner.registry.deadline.cause` finds."""


def _left(base: float | None) -> float | None:
    """The socket timeout for the next operation: ``base`` (the per-operation timeout) capped by the
    time left before the thread's earliest deadline; raises once none is left."""
    return deadline.capped(base, DeadlineTimeout)


def _settimeout(sock: Any, timeout: float | None) -> None:
    """``sock.settimeout(timeout)`` unless it is already that: each call is two ``fcntl`` system calls
    (CPython re-sets blocking mode), and with the deadline further away than the per-operation timeout
    the value is the one urllib3 has just set (issue 19: our two a request, beside urllib3's own two)."""
    if sock.gettimeout() != timeout:
        sock.settimeout(timeout)


def _deadline_words(exc: BaseException) -> BaseException:
    words = deadline.expired()
    return DeadlineTimeout(words) if words and isinstance(exc, TimeoutError | OSError) else exc


class _DeadlineSocketIO(socket.SocketIO):
    """``sock.makefile("rb")``'s raw reader with the socket timeout re-set before every recv."""

    def __init__(self, sock: Any, base: float | None) -> None:
        super().__init__(sock, "rb")
        self._socket = sock
        self._base = base

    def readinto(self, b: Any) -> int | None:
        _settimeout(self._socket, _left(self._base))
        try:
            return super().readinto(b)
        except TimeoutError as exc:
            raise _deadline_words(exc) from exc


class _SocketView:
    """What http.client's response is given instead of the socket: it only calls ``makefile("rb")``."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        if mode != "rb":  # http.client asks for nothing else; anything new must be looked at first
            raise RuntimeError(f"http.client asked for a {mode!r} file: the deadline reader cannot serve it")
        raw = _DeadlineSocketIO(self._sock, self._sock.gettimeout())
        self._sock._io_refs += 1  # as socket.makefile: the socket really closes when the reader does
        return io.BufferedReader(raw, io.DEFAULT_BUFFER_SIZE)


# A header line in its plainest form: an RFC 9110 token, a colon, a value without any character that
# ``str.splitlines`` (which the email parser splits on, after http.client decodes the block as Latin-1)
# would break at. Every such line is parsed by the email parser to exactly (name, value.lstrip(" \t")).
_PLAIN_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r\n\x0b\x0c\x1c-\x1e\x85]*)\r?\n")
_MAXLINE, _MAXHEADERS = 65536, 100  # http.client's limits
_MAX_INTERIM = 16  # interim (1xx) replies before a reply's answer: a registry sends one or two at most


def _parse_headers(fp: Any, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage) -> Any:
    """http.client's ``parse_headers`` without the email parser for a block of plain lines (issue 19: a
    quarter of a request's client CPU in urllib3's own path, ~40 µs of ~55). The same limits (line
    length, header count) and the same message; any other line — a continuation, an empty or odd name, a
    line break the email parser would split at — sends the whole block to the email parser, as before."""
    lines: list[bytes] = []
    while True:  # http.client's _read_headers, step for step (the blank line is kept, and counted)
        line = fp.readline(_MAXLINE + 1)
        if len(line) > _MAXLINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > _MAXHEADERS:
            raise http.client.HTTPException(f"got more than {_MAXHEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    msg = _class()
    for line in lines[:-1]:
        m = _PLAIN_HEADER.fullmatch(line)
        if m is None:
            return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))
        msg.set_raw(m.group(1).decode("iso-8859-1"), m.group(2).decode("iso-8859-1"))
    return msg


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None) -> None:
        super().__init__(_SocketView(sock), debuglevel, method, url)  # type: ignore[arg-type]
        self._interim = 0

    def _read_status(self) -> tuple[str, int, str]:
        """The status line, an interim 1xx reply passed off as ``100 Continue``: CPython's ``begin``
        skips only that one, and took any other 1xx (a CDN's ``103 Early Hints``) for the answer — a
        success with an empty body, the registry's real reply thrown away with the read buffer. At
        most :data:`_MAX_INTERIM` of them; a ``101`` (no request of ours asks to switch) is refused."""
        version, status, reason = super()._read_status()  # type: ignore[misc]
        if 100 <= status < 200:
            if status == 101:
                raise http.client.HTTPException("a 101 Switching Protocols reply, to a request that asked for none")
            self._interim += 1
            if self._interim > _MAX_INTERIM:
                raise http.client.HTTPException(f"more than {_MAX_INTERIM} interim (1xx) replies before the answer")
            return version, http.client.CONTINUE, reason
        return version, status, reason

    # CPython's own ``begin`` (status line, 1xx skipping, version, framing) run with the parser above in
    # place of the module's ``parse_headers``: nothing of it is copied, so it follows the interpreter.
    begin = types.FunctionType(
        http.client.HTTPResponse.begin.__code__, {**vars(http.client), "parse_headers": _parse_headers}, "begin"
    )


class _DeadlineMixin:
    """Connect (TCP and TLS handshake: CPython bounds a handshake by the socket timeout as a whole)
    and every write under the thread's deadline; reads through :class:`_DeadlineResponse`."""

    response_class = _DeadlineResponse
    timeout: Any
    sock: Any

    def connect(self) -> None:
        base = self.timeout if isinstance(self.timeout, int | float) else None
        self.timeout = _left(base)
        try:
            super().connect()  # type: ignore[misc]
        except (TimeoutError, OSError) as exc:
            words = deadline.expired()
            if words:
                raise DeadlineTimeout(words) from exc
            raise
        finally:
            self.timeout = base

    def send(self, data: Any) -> None:
        if self.sock is not None:  # (None: http.client connects first, under connect() below)
            _settimeout(self.sock, _left(self.timeout if isinstance(self.timeout, int | float) else None))
        try:
            super().send(data)  # type: ignore[misc]
        except TimeoutError as exc:
            raise _deadline_words(exc) from exc


class _Conn(_DeadlineMixin, HTTPConnection):  # type: ignore[misc]
    pass


class _TLSConn(_DeadlineMixin, HTTPSConnection):  # type: ignore[misc]
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Conn


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConn


_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _Pool, "https": _TLSPool}
DEADLINE_POOLS = _POOLS  # for another urllib3 PoolManager under the same deadlines (the Kubernetes client's)


def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context httpx made for the same ``verify`` (and environment)."""
    if verify is False:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if isinstance(verify, str):
        return ssl.create_default_context(capath=verify) if os.path.isdir(verify) else \
            ssl.create_default_context(cafile=verify)
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class _Pattern:
    """One proxy rule as httpx's ``URLPattern``: ``scheme://host:port`` with ``all`` for any scheme,
    ``*example.com`` for the domain and its subdomains, ``*.example.com`` for subdomains only."""

    def __init__(self, pattern: str, proxy: str | None) -> None:
        parts = urlsplit(pattern)
        self.proxy = proxy
        self.scheme = "" if parts.scheme == "all" else parts.scheme
        netloc = parts.netloc
        host, port = netloc, None
        m = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(\d+))?", netloc)
        if m:
            host, port = m.group(1), int(m.group(2)) if m.group(2) else None
        host = host.strip("[]").lower()
        self.port = port
        self.host = "" if host == "*" else host
        if not self.host:
            self.regex: re.Pattern[str] | None = None
        elif self.host.startswith("*."):
            self.regex = re.compile(rf"^.+\.{re.escape(self.host[2:])}$")
        elif self.host.startswith("*"):
            self.regex = re.compile(rf"^(.+\.)?{re.escape(self.host[1:])}$")
        else:
            self.regex = re.compile(rf"^{re.escape(self.host)}$")

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        if self.scheme and self.scheme != scheme:
            return False
        if self.regex is not None and not self.regex.match(host):
            return False
        return self.port is None or self.port == port

    @property
    def priority(self) -> tuple[int, int, int]:
        return (0 if self.port is not None else 1, -len(self.host), -len(self.scheme))


def environment_proxies() -> list[_Pattern]:
    """httpx's ``get_environment_proxies`` (``trust_env=True``), as patterns most specific first."""
    info = getproxies()
    rules: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        if info.get(scheme):
            value = info[scheme]
            rules[f"{scheme}://"] = value if "://" in value else f"http://{value}"
    for name in (h.strip() for h in info.get("no", "").split(",")):
        if name == "*":
            return []
        if not name:
            continue
        if "://" in name:
            rules[name] = None
        elif _is_ip(name.split("/")[0], 4):
            rules[f"all://{name.split('/')[0]}"] = None
        elif _is_ip(name.split("/")[0], 6):
            rules[f"all://[{name.split('/')[0]}]"] = None
        elif name.lower() == "localhost":
            rules[f"all://{name}"] = None
        else:
            rules[f"all://*{name}"] = None
    return sorted((_Pattern(k, v) for k, v in rules.items()), key=lambda p: p.priority)


def _proxy_credentials(proxy: str) -> tuple[str, dict[str, str]]:
    """The proxy URL without its ``user:password@`` and the ``Proxy-Authorization`` header they make,
    as httpx sent it; the credentials never stay in a URL that an error or a log line could quote."""
    parts = urlsplit(proxy)
    if parts.username is None and parts.password is None:
        return proxy, {}
    netloc = parts.netloc.rpartition("@")[2]
    userpass = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return parts._replace(netloc=netloc).geturl(), make_headers(proxy_basic_auth=userpass)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


class Transport:
    """Thread-safe. ``open`` sends one request (no redirect followed, no retry) and returns the reply
    with its body unread: the caller reads it (bounded) and then calls ``release_conn()``, or
    ``close()`` on any failure, so a connection returns to its pool only after a complete reply."""

    def __init__(
        self,
        *,
        verify_tls: bool | str = True,
        connect_timeout: float,
        read_timeout: float,
        maxsize: int,
        headers: dict[str, str],
    ) -> None:
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._headers = headers
        kw: dict[str, Any] = {
            "maxsize": maxsize,
            "block": False,
            "timeout": self._timeout,
            "retries": False,
            "ssl_context": ssl_context(verify_tls),
        }
        if verify_tls is False:
            kw.update(cert_reqs="CERT_NONE", assert_hostname=False)
        self._kw = kw
        self._direct = urllib3.PoolManager(num_pools=1024, **kw)
        self._direct.pool_classes_by_scheme = _POOLS
        self._rules = environment_proxies()
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        self._lock = threading.Lock()
        # (scheme, netloc) -> its proxy (None: direct) and, direct, its pool: the rule matching and
        # urllib3's pool-key normalisation were a tenth of a request's client CPU (issue 19). A pool the
        # manager evicted (over 1024 hosts) is closed (``pool is None``) and asked for again.
        self._routes: dict[tuple[str, str], tuple[str | None, HTTPConnectionPool | None]] = {}

    def _proxy_manager(self, proxy: str) -> urllib3.ProxyManager:
        with self._lock:
            pm = self._proxied.get(proxy)
            if pm is None:
                url, headers = _proxy_credentials(proxy)
                scheme = urlsplit(url).scheme
                if scheme not in ("http", "https"):
                    # httpx needed an extra package for SOCKS; urllib3's SOCKS support is a separate manager
                    words = f"the {scheme[:20]!r} proxy named by the environment is not supported (http and https are)"
                    raise urllib3.exceptions.ProxyError(words, ValueError(words))
                pm = self._proxied[proxy] = urllib3.ProxyManager(url, proxy_headers=headers, num_pools=256, **self._kw)
                pm.pool_classes_by_scheme = _POOLS
            return pm

    def open(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> urllib3.BaseHTTPResponse:
        parts = urlsplit(url)
        # Keyed by the URL's own scheme and netloc (only one that passed the checks below is ever kept):
        # on a hit, nothing about the host is parsed again (issue 19: ``hostname`` and ``port`` are
        # parsed afresh at each access, a few µs a request).
        route = (parts.scheme, parts.netloc)
        proxy, pool = self._routes.get(route, (None, None))
        if pool is None or pool.pool is None:
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url[:200]!r}")
            port = parts.port  # ValueError for a port that is not a number
            if port == (443 if parts.scheme == "https" else 80):
                port = None
            proxy = next((r.proxy for r in self._rules if r.matches(parts.scheme, parts.hostname, port)), None)
            pool = None if proxy is not None else self._direct.connection_from_host(parts.hostname, port,
                                                                                    parts.scheme)
            if len(self._routes) < 4096:
                self._routes[route] = (proxy, pool)
        hdrs = {**self._headers, **headers}
        opts: dict[str, Any] = {"body": body, "headers": hdrs, "redirect": False, "retries": False,
                                "preload_content": False, "decode_content": False, "timeout": self._timeout}
        if pool is not None:
            path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
            return pool.urlopen(method, path, **opts)
        assert proxy is not None
        return self._proxy_manager(proxy).urlopen(method, url, **opts)

    def close(self) -> None:
        self._routes.clear()
        self._direct.clear()
        with self._lock:
            for pm in self._proxied.values():
                pm.clear()
