"""A TCP proxy on 127.0.0.1 that adds a fixed round-trip delay, for the bench's latency mode (issue 19).

Every byte a client sends reaches the upstream ``delay`` seconds after it was received (the whole
round trip put on the request path, so each request/response exchange costs one ``delay`` more than
on loopback, like a registry in another region), and a new connection costs one ``delay`` before its
first byte is forwarded (the TCP handshake's round trip). Bytes are scheduled by their arrival time,
not slept one after another, so requests pipelined on one connection or spread over many connections
are each delayed once — it models a link, not a queue. Responses flow back at once.

    proxy = LatencyProxy(("127.0.0.1", 5000), delay=0.040)
    proxy.start()           # proxy.port: where clients connect
    ...
    proxy.stop()
"""

from __future__ import annotations

import queue
import socket
import threading
import time

_CHUNK = 65536


class LatencyProxy:
    def __init__(self, upstream: tuple[str, int], delay: float, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.delay = delay
        self._listener = socket.create_server((host, 0), backlog=256)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> LatencyProxy:
        threading.Thread(target=self._accept, name="latency-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._socks.update(socks)

    def _serve(self, client: socket.socket) -> None:
        accepted = time.monotonic()
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._track(client, upstream)
        pending: queue.Queue[tuple[float, bytes]] = queue.Queue()
        handshake_done = accepted + self.delay

        def read_client() -> None:
            try:
                while data := client.recv(_CHUNK):
                    pending.put((max(time.monotonic(), handshake_done) + self.delay, data))
            except OSError:
                pass
            pending.put((0.0, b""))

        def write_upstream() -> None:
            try:
                while True:
                    due, data = pending.get()
                    if not data:
                        break
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    upstream.sendall(data)
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        def copy_back() -> None:
            try:
                while data := upstream.recv(_CHUNK):
                    client.sendall(data)
            except OSError:
                pass
            finally:
                for s in (client, upstream):
                    try:
                        s.close()
                    except OSError:
                        pass
                with self._lock:
                    self._socks.difference_update((client, upstream))

        threading.Thread(target=read_client, daemon=True).start()
        threading.Thread(target=write_upstream, daemon=True).start()
        copy_back()
