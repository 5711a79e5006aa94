"""A hostile HTTP(S) server on 127.0.0.1 whose every answer is a gzip bomb, and a meter of the peak
memory a client allocates while it talks to it.

A few hundred bytes on the wire with ``Content-Encoding: gzip, gzip`` inflate to hundreds of MiB: a client
that inflates before it counts sees its size cap only after the allocation. The tests of every HTTP edge
(key/CRL fetches, the TSA, the cloud credential exchanges, KMS) point their client here and assert the
answer was refused with little memory allocated.
"""

from __future__ import annotations

import gzip
import ssl
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def gzip_bomb(mib: int) -> bytes:
    """``mib`` MiB of zeros, gzipped twice (Content-Encoding: gzip, gzip): a few hundred bytes."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    once = b"".join([*(inner.compress(block) for _ in range(mib)), inner.flush()])
    return gzip.compress(once, 9)


@dataclass
class BombServer:
    port: int
    size: int  # bytes on the wire

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def serving_gzip_bomb(mib: int = 256, *, tls: ssl.SSLContext | None = None,
                      content_type: str | None = None) -> Iterator[BombServer]:
    """A server answering every GET and POST (request body read first) with ``mib`` MiB gzipped twice,
    its ``Content-Length`` the compressed size; ``tls``: a server-side context to wrap it in."""
    bomb = gzip_bomb(mib)

    class Bomb(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            self.send_response(200)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Encoding", "gzip, gzip")
            self.send_header("Content-Length", str(len(bomb)))
            self.end_headers()
            self.wfile.write(bomb)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Bomb)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield BombServer(server.server_address[1], len(bomb))
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Peak:
    bytes: int = 0


@contextmanager
def peak_allocation() -> Iterator[Peak]:
    """The peak of Python allocations (tracemalloc) inside the block, in ``.bytes`` after it."""
    peak = Peak()
    tracemalloc.start()
    try:
        yield peak
        peak.bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
