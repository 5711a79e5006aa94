"""A registry played by a Python function, on a real socket.

Unit tests describe a hostile or odd registry as a function ``httpx.Request -> httpx.Response`` (the
shape httpx's MockTransport took). :func:`handler_client` serves that function over real HTTP on
127.0.0.1, as the HTTP proxy of a :class:`~scanner.registry.client.RegistryClient` made with the
proxy settings in its environment (which the client reads when it is made, as httpx did): every
request to an insecure (plain HTTP) registry named like ``evil.test`` reaches the function with its
full URL, and the client's real transport — pools, deadline, size caps — does the work.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from scanner.registry.client import RegistryClient

Handler = Callable[[httpx.Request], httpx.Response]
_ENV_LOCK = threading.Lock()
_PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
               "no_proxy", "NO_PROXY")


class HandlerProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 that answers every request with ``handler``'s response."""

    def __init__(self, handler: Handler) -> None:
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = self.path if "://" in self.path else f"http://{self.headers.get('Host', 'unknown')}{self.path}"
                request = httpx.Request(self.command, url, headers=list(self.headers.items()), content=body)
                response = outer.handler(request)
                content = response.read()
                self.send_response(response.status_code)
                names = {k.lower() for k in response.headers}
                for k, v in response.headers.multi_items():
                    self.send_header(k, v)
                if "content-length" not in names and "transfer-encoding" not in names:
                    self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

        self.handler = handler
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def proxy_environment(proxy: str) -> Iterator[None]:
    """Every plain-HTTP request through ``proxy``, for what is made inside the block (env restored)."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in _PROXY_VARS}
        for k in _PROXY_VARS:
            os.environ.pop(k, None)
        os.environ["http_proxy"] = os.environ["HTTP_PROXY"] = proxy
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def handler_client(handler: Handler, **kwargs: Any) -> RegistryClient:
    """A RegistryClient whose plain-HTTP registries are all played by ``handler`` (list them in
    ``insecure_registries``); the server stops when the client is collected."""
    proxy = HandlerProxy(handler)
    with proxy_environment(proxy.url):
        client = RegistryClient(**kwargs)
    weakref.finalize(client, proxy.close)
    return client
