"""A small HTTPS file server on 127.0.0.1 that demands HTTP Basic authentication: where a policy's
``key: https://user:password@host/key.pub`` is fetched from in the secrets tests.

Its certificate comes from a fresh CA (``.ca_path``); a process trusts it with ``SSL_CERT_FILE``.
Every request's path and ``Authorization`` header is recorded in ``.requests``.
"""

from __future__ import annotations

import base64
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.harness.fixtures_registry import write_tls_material


class StaticHTTPS:
    def __init__(self, files: dict[str, bytes], workdir: Path, *, basic_auth: tuple[str, str]) -> None:
        self.files = dict(files)
        self.requests: list[tuple[str, str]] = []
        expected = "Basic " + base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                auth = self.headers.get("authorization", "")
                outer.requests.append((self.path, auth))
                if auth != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="keys"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = outer.files.get(self.path.split("?", 1)[0])
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        workdir.mkdir(parents=True, exist_ok=True)
        self.ca_path, cert, key = write_tls_material(workdir)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
