"""One HTTP server on 127.0.0.1 for CRLs and OCSP in tests (notation revocation, the notation-go peer, the
notation vectors): ``files[path] = bytes`` serves a CRL (200, ``application/pkix-crl``); ``routes[path]`` is
``(status, body)`` or a callable of the request body returning one (OCSP POSTs, slow or broken answers);
anything else is a 404. ``hits`` lists every path asked, in order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = tuple[int, bytes] | Callable[[bytes], tuple[int, bytes] | None]


class RevocationServer:
    def __init__(self, port: int = 0) -> None:
        """``port``: a port to try first (the notation vectors name ``localhost:10086``); taken, any free one."""
        self.files: dict[str, bytes] = {}
        self.routes: dict[str, Any] = {}
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, body_in: bytes) -> None:
                outer.hits.append(self.path)
                route: Any = outer.routes.get(self.path)
                content_type = "application/octet-stream"
                if route is None and self.path in outer.files:
                    route, content_type = (200, outer.files[self.path]), "application/pkix-crl"
                if callable(route):
                    route = route(body_in)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, body = route
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                self._serve(b"")

            def do_POST(self) -> None:
                self._serve(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

            def log_message(self, *args: Any) -> None:
                pass

        try:
            self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError:
            self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, name="revocation-server", daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
