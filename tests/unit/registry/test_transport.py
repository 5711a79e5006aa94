"""The registry client's urllib3 transport against raw sockets: the wall-clock deadline holds where
urllib3's per-read timeouts do not (a header block, a body or a TLS handshake trickled a byte at a
time), a connection goes back to its pool only after a complete reply, malformed replies are errors
with words (never a traceback), and proxies are read from the environment as httpx read them."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scanner.errors import LimitExceeded, RegistryError, SigauditError
from scanner.models import ImageReference
from scanner.registry import deadline, transport
from scanner.registry.client import OCI_MANIFEST, Limits, RegistryClient

Script = Callable[[socket.socket, int], None]


class RawServer:
    """A TCP server on 127.0.0.1 running ``script(conn, n)`` for the n-th accepted connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.accepted = 0
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn, self.accepted), daemon=True).start()

    def _run(self, conn: socket.socket, n: int) -> None:
        with conn:
            try:
                self.script(conn, n)
            except OSError:
                pass

    def trickle(self, conn: socket.socket, data: bytes, interval: float) -> None:
        for b in data:
            if self.stop.wait(interval):
                return
            conn.sendall(bytes([b]))

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[[Script], RawServer]]:
    servers: list[RawServer] = []

    def make(script: Script) -> RawServer:
        servers.append(RawServer(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


MANIFEST = b'{"schemaVersion": 2, "mediaType": "%s", "layers": []}' % OCI_MANIFEST.encode()


def ok_reply(body: bytes = MANIFEST) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + OCI_MANIFEST.encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def registry_client(server: RawServer, **limits: float) -> RegistryClient:
    return RegistryClient(insecure_registries={server.host}, limits=Limits(retries=0, **limits))  # type: ignore[arg-type]


def ref(server: RawServer) -> ImageReference:
    return ImageReference(server.host, "app", "1", None)


def test_one_header_byte_a_second_is_cut_at_the_total_timeout(raw: Callable[[Script], RawServer]) -> None:
    # http.client reads the header block line by line and urllib3's read timeout restarts with every
    # byte: without a deadline at the socket this request would last the ~100 s of the trickle.
    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        server.trickle(conn, b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100 + b"\r\n\r\n", 1.0)

    server = raw(script)
    with registry_client(server, read_timeout=5, total_timeout=2.5) as client:
        t0 = time.monotonic()
        with pytest.raises(RegistryError, match=r"reply too slow \(total timeout exceeded\)"):
            client.get_manifest(ref(server), "1")
        assert time.monotonic() - t0 < 4.5


def test_a_body_trickled_a_byte_a_second_is_cut_at_the_total_timeout(raw: Callable[[Script], RawServer]) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        server.trickle(conn, b"{" * 1000, 0.5)

    server = raw(script)
    with registry_client(server, read_timeout=5, total_timeout=2.5) as client:
        t0 = time.monotonic()
        with pytest.raises(RegistryError, match="too slow"):
            client.get_manifest(ref(server), "1")
        assert time.monotonic() - t0 < 4.5


def test_a_tls_handshake_trickled_a_byte_at_a_time_is_cut_at_the_deadline(
    raw: Callable[[Script], RawServer],
) -> None:
    # A TLS record header announcing 16 KiB, then its bytes one by one: each recv of the handshake
    # succeeds well inside the connect timeout.
    def script(conn: socket.socket, n: int) -> None:
        conn.recv(65536)  # the ClientHello
        server.trickle(conn, b"\x16\x03\x03\x40\x00" + b"\x02" * 16384, 0.2)

    server = raw(script)
    with RegistryClient(limits=Limits(retries=0, connect_timeout=5, total_timeout=2)) as client:
        t0 = time.monotonic()
        with pytest.raises(RegistryError, match="too slow"):
            client.get_manifest(ref(server), "1")
        assert time.monotonic() - t0 < 4.5


def test_the_deadline_cuts_a_bare_transport_request_and_says_which(raw: Callable[[Script], RawServer]) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        server.trickle(conn, b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 100, 0.3)

    server = raw(script)
    t = transport.Transport(connect_timeout=5, read_timeout=5, maxsize=4, headers={})
    t0 = time.monotonic()
    with pytest.raises(Exception) as info, deadline.within(t0 + 1, "scan deadline reached"):
        t.open("GET", f"http://{server.host}/", {})
    assert time.monotonic() - t0 < 3
    assert deadline.cause(info.value) == "scan deadline reached", repr(info.value)
    t.close()


def test_a_connection_is_reused_after_a_complete_reply_and_never_after_a_cut_one(
    raw: Callable[[Script], RawServer],
) -> None:
    big = b"x" * (200 * 1024)

    def script(conn: socket.socket, n: int) -> None:
        while True:
            request = read_request(conn)
            if not request:
                return
            if b" /v2/app/manifests/404 " in request:
                # A 404 whose body is longer than an error reply is read for: the rest stays on the wire
                # and would be read as the next request's reply if the connection were reused.
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
            else:
                conn.sendall(ok_reply())

    server = raw(script)
    with registry_client(server) as client:
        for _ in range(3):
            client.get_manifest(ref(server), "1")
        assert server.accepted == 1, "complete replies: one kept-alive connection"
        with pytest.raises(RegistryError, match="not found"):
            client.get_manifest(ref(server), "404")
        client.get_manifest(ref(server), "1")
        assert server.accepted == 2, "the 404 read only in part closed its connection"


def test_a_reply_over_the_cap_is_refused_and_its_connection_closed(raw: Callable[[Script], RawServer]) -> None:
    def script(conn: socket.socket, n: int) -> None:
        while read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(64):
                conn.sendall(b"4000\r\n" + b"{" * 0x4000 + b"\r\n")
            conn.sendall(b"0\r\n\r\n")

    server = raw(script)
    with registry_client(server, manifest_bytes=100_000) as client:
        for _ in range(2):
            with pytest.raises(LimitExceeded, match="exceeds the limit of 100000"):
                client.get_manifest(ref(server), "1")
        assert server.accepted == 2


@pytest.mark.parametrize("reply,words", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n{}", "schemaVersion None"),  # read to the close
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 11\r\n\r\n{}", "invalid URL or header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}", "connection broken"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "connection broken"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "connection broken"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 120 + b"\r\n", "connection broken"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "connection broken"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "connection broken"),
    (b"", "connection broken"),
    (b"HTTP/1.1 302 Found\r\nLocation: http://[::1\r\nContent-Length: 0\r\n\r\n", "invalid URL"),
    (b"HTTP/1.1 302 Found\r\nLocation: http://h:99999999/\r\nContent-Length: 0\r\n\r\n", "invalid URL"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope", "could not be decoded"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\nnope", "Content-Encoding"),
    # endless interim replies, or a protocol switch nobody asked for (fix/atk-cold3)
    (b"HTTP/1.1 103 Early Hints\r\n\r\n" * 40 + ok_reply(), "interim"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n" + ok_reply(), "101"),
])
def test_a_malformed_reply_is_an_error_with_words(raw: Callable[[Script], RawServer], reply: bytes,
                                                  words: str) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(reply)

    server = raw(script)
    with registry_client(server, total_timeout=5) as client, pytest.raises(SigauditError, match=words):
        client.get_manifest(ref(server), "1")


@pytest.mark.parametrize("no_proxy,host,proxied", [
    ("", "registry.example.com", True),
    ("*", "registry.example.com", False),
    ("example.com", "registry.example.com", False),
    ("example.com", "example.com", False),
    ("example.com", "badexample.com", True),
    (".example.com", "example.com", True),
    (".example.com", "registry.example.com", False),
    ("127.0.0.1", "127.0.0.1", False),
    ("localhost", "localhost", False),
    ("::1", "::1", False),
    ("http://registry.example.com", "registry.example.com", False),
])
def test_proxies_come_from_the_environment_as_httpx_read_them(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, host: str, proxied: bool
) -> None:
    import httpx

    for k in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(k, raising=False)
        monkeypatch.delenv(k.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    rules = transport.environment_proxies()
    ours = next((r.proxy for r in rules if r.matches("http", host, None)), None)
    assert (ours is not None) == proxied
    # ... and httpx, which the client used before, agrees.
    with httpx.Client() as c:
        url = httpx.URL(f"http://{'[' + host + ']' if ':' in host else host}/v2/")
        theirs = c._transport_for_url(url) is not c._transport
    assert theirs == proxied


def test_tls_is_verified_against_certifi_unless_the_environment_names_a_bundle(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    import certifi

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ctx = transport.ssl_context(True)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == len(ssl.create_default_context(cafile=certifi.where()).get_ca_certs())
    off = transport.ssl_context(False)
    assert off.verify_mode == ssl.CERT_NONE


def test_proxy_credentials_go_to_the_proxy_only_and_are_never_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx sent a proxy URL's user:password as Proxy-Authorization; urllib3 does not by itself.
    import base64

    import httpx

    from tests.harness.handler_registry import HandlerProxy, proxy_environment

    seen: list[tuple[str | None, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("proxy-authorization"), request.headers.get("authorization")))
        return httpx.Response(404)

    proxy = HandlerProxy(handler)
    try:
        with proxy_environment(proxy.url.replace("http://", "http://alice:s%40cret@")):
            client = RegistryClient(insecure_registries={"r.test"}, limits=Limits(retries=0))
        with client, pytest.raises(RegistryError, match="not found"):
            client.get_manifest(ImageReference("r.test", "app", "1", None), "1")
        assert seen == [("Basic " + base64.b64encode(b"alice:s@cret").decode(), None)]
    finally:
        proxy.close()
    with proxy_environment(proxy.url.replace("http://", "http://alice:s%40cret@")):  # now nobody listens
        client = RegistryClient(insecure_registries={"r.test"}, limits=Limits(retries=0))
    with client, pytest.raises(RegistryError) as info:
        client.get_manifest(ImageReference("r.test", "app", "1", None), "1")
    assert "cret" not in str(info.value) and "alice" not in str(info.value), str(info.value)


def test_tls_checks_the_chain_and_the_name_with_the_ca_given_or_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from scanner.errors import NotFound
    from tests.harness.fixtures_registry import write_tls_material

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    ca, cert, key = write_tls_material(tmp_path, hosts=("localhost",))  # a name only: 127.0.0.1 is not in it
    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    named, by_ip = ImageReference(f"localhost:{port}", "app", "1", None), ImageReference(f"127.0.0.1:{port}", "app")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    try:
        with RegistryClient(limits=Limits(retries=0)) as c, pytest.raises(RegistryError, match="TLS error"):
            c.get_manifest(named, "1")  # certifi does not know this CA
        with RegistryClient(limits=Limits(retries=0), verify_tls=str(ca)) as c:
            with pytest.raises(NotFound):
                c.get_manifest(named, "1")
            with pytest.raises(RegistryError, match="TLS error"):
                c.get_manifest(by_ip, "1")  # the chain is trusted, the name is not the certificate's
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        with RegistryClient(limits=Limits(retries=0)) as c, pytest.raises(NotFound):
            c.get_manifest(named, "1")
    finally:
        server.shutdown()
        server.server_close()


def test_a_socks_proxy_in_the_environment_is_an_error_that_says_so() -> None:
    from tests.harness.handler_registry import proxy_environment

    with proxy_environment("socks5://alice:secret@127.0.0.1:1080"):
        client = RegistryClient(insecure_registries={"r.test"}, limits=Limits(retries=0))
    with client, pytest.raises(RegistryError, match="'socks5' proxy named by the environment is not supported") \
            as info:
        client.get_manifest(ImageReference("r.test", "app", "1", None), "1")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("interim", [
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 199 Misc\r\nX: y\r\n\r\n",
])
def test_an_interim_1xx_reply_is_skipped_never_taken_for_the_answer(
    raw: Callable[[Script], RawServer], interim: bytes
) -> None:
    """http.client skips only ``100 Continue``: a 103 (Early Hints, what a CDN in front of a registry
    sends) was taken as the final reply, a success with an empty body, and the registry's real answer
    was thrown away with the connection's buffer — a 404 read as "not JSON", a manifest as empty."""
    def script(conn: socket.socket, n: int) -> None:
        while request := read_request(conn):
            if b" /v2/app/manifests/gone " in request:
                conn.sendall(interim + b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
            else:
                conn.sendall(interim + ok_reply())

    server = raw(script)
    with registry_client(server, total_timeout=5) as client:
        with pytest.raises(RegistryError, match="not found"):
            client.get_manifest(ref(server), "gone")
        assert client.get_manifest(ref(server), "1").raw == MANIFEST
        assert client.head_manifest(ref(server), "1").size == len(MANIFEST)
        assert server.accepted == 1, "the interim replies were read off the connection, which stays usable"


