"""A hand-made hostile registry on 127.0.0.1: a reverse proxy in front of a real registry that injects
the faults no real registry produces on demand.

Why hand-made: docker-registry (distribution) and ocireg are well behaved. They never stall half way
through a body, never close a connection before Content-Length is reached, never serve bytes that do
not match a digest, never answer 429/503 for a while and then recover, never hand out a 50 MB
manifest or a 10,000-entry index (distribution refuses to store a manifest whose layers are not
uploaded), and never redirect a blob to another host. Everything not faulted is forwarded to the
real registry, so signing and pushing still go through ``tests.harness.oci`` against a real server,
and the scanner under test talks to a proxy that behaves exactly like the registry until a rule fires.

Usage::

    with HostileRegistry(upstream=registry.url) as hostile:
        hostile.add(Rule("GET", r"/v2/stall/.*/blobs/", Stall()))
        hostile.add(Rule("GET", r"/v2/busy/manifests/", Status(429, headers={"Retry-After": "1"}), times=2))
        ... pods name f"{hostile.host}/busy/app@{digest}" ...
        hostile.requests  # every request seen: method, path, headers, time, the rule that fired

Actions: :class:`Status` (a status code with headers), :class:`Stall` (send part of the body, then
hold the connection open), :class:`Truncate` (Content-Length promised, half sent, connection
closed), :class:`Corrupt` (same length, different bytes), :class:`Body` (a synthetic body, streamed,
chunked or with Content-Length), :class:`Redirect` (307 to another server, same path),
:class:`Trickle` (a reply sent a byte at a time, status line and headers included). With
``basic_auth=(user, password)`` the proxy itself demands HTTP Basic credentials for every request
under ``/v2/`` (the real registry behind it needs none).
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-encoding", "accept-encoding"}


@dataclass(frozen=True)
class Status:
    code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b'{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}'


@dataclass(frozen=True)
class Stall:
    """Send ``fraction`` of the (upstream or given) body, then hold the connection for ``hold`` seconds."""

    fraction: float = 0.5
    hold: float = 120.0
    body: bytes | None = None


@dataclass(frozen=True)
class Truncate:
    """Promise the full Content-Length, send ``fraction`` of the body, close the connection."""

    fraction: float = 0.5


@dataclass(frozen=True)
class Corrupt:
    """Forward the upstream reply with its bytes flipped (same length): a digest mismatch."""


@dataclass(frozen=True)
class Body:
    """A synthetic body. ``size`` repeats ``data`` up to that many bytes, streamed in 1 MiB chunks."""

    data: bytes | Callable[[], bytes]
    content_type: str = "application/vnd.oci.image.manifest.v1+json"
    size: int | None = None
    chunked: bool = False  # no Content-Length: the client must cap while streaming
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Redirect:
    """307 to ``target`` (scheme://host:port) with the same path and query."""

    target: str


@dataclass(frozen=True)
class Trickle:
    """A 200 reply sent one byte every ``interval`` seconds, from its status line on: each byte arrives
    well inside any read timeout, so only a deadline over the whole exchange ends it. ``pad`` header
    bytes make the status line and headers alone last ``pad * interval`` seconds."""

    interval: float = 0.2
    pad: int = 600
    body: bytes = b"{}"


Action = Status | Stall | Truncate | Corrupt | Body | Redirect | Trickle


@dataclass
class Rule:
    method: str  # "GET", "HEAD", or "*"
    path: str  # a regular expression searched in the request path (with query)
    action: Action
    times: int | None = None  # fire this many times, then forward normally; None = always
    fired: int = 0
    # Only for requests carrying exactly this Authorization header (None: any): a registry that
    # answers one account otherwise than another (GHCR, ECR, Harbor hide a repository an account may
    # not see behind 404 NAME_UNKNOWN).
    authorization: str | None = None

    def matches(self, method: str, path: str, authorization: str | None = None) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.authorization is not None and authorization != self.authorization:
            return False
        return self.method in ("*", method) and re.search(self.path, path) is not None


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names
    at: float  # time.monotonic()
    fault: str  # the action's class name, or "" when forwarded


class HostileRegistry:
    def __init__(self, upstream: str | None = None, *, basic_auth: tuple[str, str] | None = None,
                 forward_auth: bool = False, bind: str = "127.0.0.1") -> None:
        """``forward_auth``: pass the client's Authorization header upstream (a registry with its own
        auth behind the proxy); by default it is dropped. ``bind``: the loopback address to listen on
        (``127.0.0.2`` gives a server that is another host, not only another port)."""
        self.upstream = upstream.rstrip("/") if upstream else None
        self.forward_auth = forward_auth
        self.basic_auth = basic_auth
        self.rules: list[Rule] = []
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=30.0, follow_redirects=False)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                owner._handle(self)

            def do_HEAD(self) -> None:
                owner._handle(self)

            def do_POST(self) -> None:
                owner._handle(self)

            def do_PUT(self) -> None:
                owner._handle(self)

            def do_PATCH(self) -> None:
                owner._handle(self)

        self._bind = bind
        self._server = ThreadingHTTPServer((bind, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    # -- public ---------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"{self._bind}:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def seen(self, path_regex: str = "", method: str | None = None) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if re.search(path_regex, r.path) and method in (None, r.method)]

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def __enter__(self) -> HostileRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving --------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body_in = h.rfile.read(length) if length else b""
        rule = None
        with self._lock:
            for r in self.rules:
                if r.matches(h.command, h.path, h.headers.get("Authorization")):
                    r.fired += 1
                    rule = r
                    break
            self.requests.append(
                Seen(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}, time.monotonic(),
                     type(rule.action).__name__ if rule else "")
            )
        try:
            if self.basic_auth and h.path.startswith("/v2/") and not self._authorised(h):
                self._reply(h, 401, {"WWW-Authenticate": 'Basic realm="hostile"'}, b'{"errors":[]}')
                return
            action = rule.action if rule else None
            if isinstance(action, Status):
                self._reply(h, action.code, dict(action.headers), action.body)
            elif isinstance(action, Redirect):
                self._reply(h, 307, {"Location": action.target.rstrip("/") + h.path}, b"")
            elif isinstance(action, Body):
                self._body(h, action)
            elif isinstance(action, Trickle):
                self._trickle(h, action)
            else:
                code, headers, data = self._forward(h, body_in)
                if isinstance(action, Corrupt) and data:
                    data = bytes(b ^ 0x55 for b in data)
                if isinstance(action, Stall) and h.command == "GET":
                    self._stall(h, code, headers, action.body if action.body is not None else data, action)
                elif isinstance(action, Truncate) and h.command == "GET":
                    self._truncate(h, code, headers, data, action.fraction)
                else:
                    self._reply(h, code, headers, data)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def _authorised(self, h: BaseHTTPRequestHandler) -> bool:
        assert self.basic_auth is not None
        want = "Basic " + base64.b64encode(f"{self.basic_auth[0]}:{self.basic_auth[1]}".encode()).decode()
        return h.headers.get("Authorization") == want

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.upstream is None:
            return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"NAME_UNKNOWN"}]}'
        drop = HOP_BY_HOP | {"host"} | (set() if self.forward_auth else {"authorization"})
        headers = {k: v for k, v in h.headers.items() if k.lower() not in drop}
        headers["Accept-Encoding"] = "identity"
        resp = self._http.request(h.command, self.upstream + h.path, headers=headers, content=body or None)
        out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
        if h.command == "HEAD" and "content-length" in resp.headers:
            out["Content-Length"] = resp.headers["content-length"]
        location = out.get("location") or out.get("Location")
        if location and self.upstream and location.startswith(self.upstream):
            out["Location"] = self.url + location[len(self.upstream):]
            out.pop("location", None)
        return resp.status_code, out, resp.content

    def _reply(self, h: BaseHTTPRequestHandler, code: int, headers: Mapping[str, str], data: bytes) -> None:
        h.send_response(code)
        for k, v in headers.items():
            if k.lower() != "content-length":
                h.send_header(k, v)
        if h.command == "HEAD" and any(k.lower() == "content-length" for k in headers):
            h.send_header("Content-Length", next(v for k, v in headers.items() if k.lower() == "content-length"))
        else:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD" and data:
            h.wfile.write(data)
        h.wfile.flush()

    def _stall(self, h: BaseHTTPRequestHandler, code: int, headers: Mapping[str, str], data: bytes,
               action: Stall) -> None:
        h.send_response(code)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(max(len(data), 2)))
        h.end_headers()
        h.wfile.write(data[: int(len(data) * action.fraction)])
        h.wfile.flush()
        self._stop.wait(action.hold)
        h.close_connection = True

    def _truncate(self, h: BaseHTTPRequestHandler, code: int, headers: Mapping[str, str], data: bytes,
                  fraction: float) -> None:
        h.send_response(code)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(data[: int(len(data) * fraction)])
        h.wfile.flush()
        h.close_connection = True

    def _trickle(self, h: BaseHTTPRequestHandler, action: Trickle) -> None:
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: {'a' * action.pad}\r\n"
                f"Content-Length: {len(action.body)}\r\nConnection: close\r\n\r\n").encode()
        data = head + (action.body if h.command != "HEAD" else b"")
        h.close_connection = True
        for i in range(len(data)):
            if self._stop.wait(action.interval):
                return
            h.wfile.write(data[i : i + 1])  # BrokenPipe/ConnectionReset once the client gave up
            h.wfile.flush()

    def _body(self, h: BaseHTTPRequestHandler, action: Body) -> None:
        data = action.data() if callable(action.data) else action.data
        total = action.size if action.size is not None else len(data)
        h.send_response(200)
        h.send_header("Content-Type", action.content_type)
        for k, v in action.headers.items():
            h.send_header(k, v)
        if action.chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(total))
        h.end_headers()
        if h.command == "HEAD":
            return
        for chunk in _chunks(data, total):
            if action.chunked:
                h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            else:
                h.wfile.write(chunk)
        if action.chunked:
            h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()


def _chunks(data: bytes, total: int, size: int = 1 << 20) -> Iterator[bytes]:
    if total <= len(data):
        for i in range(0, total, size):
            yield data[i : min(i + size, total)]
        return
    block = (data * (size // max(1, len(data)) + 1))[:size] if data else b" " * size
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block[:n]
        sent += n
