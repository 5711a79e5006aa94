"""The trust layers' HTTP edge (scanner/sources/http.py) against real sockets on 127.0.0.1."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scanner.errors import ConfigError
from tests.harness.fixtures_registry import write_tls_material
from tests.vectors import VECTORS

ATTACKER_KEY = (VECTORS / "cosign/legacy-oci-connaisseur/keys/alice.pub.pem").read_bytes()


def _serve(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def https_redirecting_to_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """An https key server that redirects to a plain-http one (where anyone on the path can answer)."""
    served: list[str] = []

    class Plain(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(ATTACKER_KEY)))
            self.end_headers()
            self.wfile.write(ATTACKER_KEY)

    plain = _serve(Plain)

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{plain.server_address[1]}/cosign.pub")
            self.send_header("Content-Length", "0")
            self.end_headers()

    ca, cert, key = write_tls_material(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(cert), str(key))
    secure = _serve(Redirect, tls)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    yield f"https://127.0.0.1:{secure.server_address[1]}/cosign.pub", served
    secure.shutdown()
    plain.shutdown()


def test_a_key_url_is_not_followed_from_https_to_plain_http(https_redirecting_to_http: tuple[str, list[str]]) -> None:
    # `key: http://...` is refused at load ("keys are fetched over https only"); a redirect must not
    # get around it: the key would come in clear text, replaceable by anyone on the path.
    from scanner.policy.loader import PolicyLoader

    url, served = https_redirecting_to_http
    with pytest.raises(ConfigError, match="https"):
        PolicyLoader().load_key(url, Path("."), "key")
    assert served == []  # not even asked for


def test_an_answer_that_inflates_to_hundreds_of_mib_is_refused_uninflated() -> None:
    # A few hundred bytes, Content-Encoding "gzip, gzip": httpx inflated each network chunk whole, layer
    # on layer, so the size cap saw the answer only after 256 MiB had been allocated.
    import time

    from scanner.sources.http import HttpxGet
    from scanner.verify.base import HttpGetError
    from tests.harness.bomb_server import peak_allocation, serving_gzip_bomb

    with serving_gzip_bomb(256) as server, peak_allocation() as peak:
        with HttpxGet(timeout=5.0) as get, pytest.raises(HttpGetError, match=r"encoded body|larger than"):
            get(f"{server.url}/key.pub", max_bytes=64 * 1024, until=time.monotonic() + 10)
    assert peak.bytes < 32 * 1024 * 1024, peak
