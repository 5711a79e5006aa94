"""A TCP proxy on 127.0.0.1 that adds a fixed round-trip delay, for the bench's latency mode (issue 19).

Every byte a client sends reaches the upstream ``delay`` seconds after it was received (the whole
round trip put on the request path, so each request/response exchange costs one ``delay`` more than
on loopback, like a registry in another region), and a new connection costs one ``delay`` before its
first byte is forwarded (the TCP handshake's round trip). Bytes are scheduled by their arrival time,
not slept one after another, so requests pipelined on one connection or spread over many connections
are each delayed once — it models a link, not a queue. Responses flow back at once. TLS passes
through untouched (a TLS handshake pays its own round trips, as it would over a real link).

One asyncio event loop and ``asyncio.Protocol`` callbacks, no thread per connection: the first
version (three Python threads per connection, sleeping and copying) cost ~1 CPU-s per cold bench scan
and ran inside the bench process, so its CPU was counted as the in-process ideal client's and the two
shared one GIL. The bench runs this one as a process of its own (:class:`ProxyProcess`, ``python -m
bench.latency_proxy``) and reads its CPU from ``/proc`` like the registry's.

    proxy = LatencyProxy(("127.0.0.1", 5000), delay=0.040).start()   # a loop in a thread (tests)
    proxy.port ...; proxy.stop()
    proc = ProxyProcess(("127.0.0.1", 5000), delay=0.040).start()    # its own process (the bench)
    proc.address, proc.cpu_s() ...; proc.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

_HIGH_WATER = 1 << 20  # bytes queued for one peer before the other side stops being read


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: LatencyProxy, loop: asyncio.AbstractEventLoop) -> None:
        self.proxy = proxy
        self.loop = loop
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.handshake_done = 0.0
        # (due, bytes) in arrival order; b"" is the client's EOF. One timer drains it in order (asyncio's
        # timer heap does not keep equal due times in order, so chunks are never scheduled one by one).
        self.pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    # -- client side -------------------------------------------------------------------------------
    def client_made(self, transport: asyncio.Transport) -> None:
        self.client = transport
        self.handshake_done = self.loop.time() + self.proxy.delay
        _nodelay(transport)
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            transport, _ = await self.loop.create_connection(lambda: _Upstream(self), *self.proxy.upstream)
        except OSError:
            self.close()
            return
        if self.closed:
            transport.close()
            return
        self.upstream = transport
        _nodelay(transport)
        self._drain()

    def client_data(self, data: bytes) -> None:
        now = self.loop.time()
        due = max(now, self.handshake_done) + self.proxy.delay
        if self.proxy.record:
            self.proxy.scheduled.append(due - now)
        self._queue(due, data)
        if self.upstream is not None and self.upstream.get_write_buffer_size() > _HIGH_WATER and self.client:
            self.client.pause_reading()

    def client_eof(self) -> None:
        now = self.loop.time()
        self._queue(max(now, self.handshake_done) + self.proxy.delay, b"")

    def _queue(self, due: float, data: bytes) -> None:
        self.pending.append((due, data))
        if self.timer is None and len(self.pending) == 1:
            self.timer = self.loop.call_at(due, self._drain)

    def _drain(self) -> None:
        self.timer = None
        if self.upstream is None or self.closed:
            return  # _connect drains once the upstream is there
        now = self.loop.time()
        while self.pending and self.pending[0][0] <= now:
            _, data = self.pending.popleft()
            if data:
                self.upstream.write(data)
            elif self.upstream.can_write_eof():
                self.upstream.write_eof()
        if self.pending:
            self.timer = self.loop.call_at(self.pending[0][0], self._drain)

    # -- upstream side -----------------------------------------------------------------------------
    def upstream_data(self, data: bytes) -> None:
        if self.client is None:
            return
        self.client.write(data)
        if self.client.get_write_buffer_size() > _HIGH_WATER and self.upstream is not None:
            self.upstream.pause_reading()

    def resume(self) -> None:
        for t in (self.client, self.upstream):
            if t is not None and not t.is_closing():
                t.resume_reading()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        for t in (self.client, self.upstream):
            if t is not None:
                t.close()
        self.proxy.links.discard(self)


class _Client(asyncio.Protocol):
    def __init__(self, link: _Link) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.link.client_made(transport)

    def data_received(self, data: bytes) -> None:
        self.link.client_data(data)

    def eof_received(self) -> bool:
        self.link.client_eof()
        return True  # half-closed: the reply still flows back

    def resume_writing(self) -> None:
        self.link.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()


class _Upstream(asyncio.Protocol):
    def __init__(self, link: _Link) -> None:
        self.link = link

    def data_received(self, data: bytes) -> None:
        self.link.upstream_data(data)

    def eof_received(self) -> bool:
        return False  # the upstream is done: close both sides (as the threaded proxy did)

    def resume_writing(self) -> None:
        self.link.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LatencyProxy:
    def __init__(self, upstream: tuple[str, int], delay: float, host: str = "127.0.0.1",
                 record: bool = True) -> None:
        self.upstream = upstream
        self.delay = delay
        self.host = host
        self.record = record
        self._sock = socket.create_server((host, 0), backlog=1024)
        self.port: int = self._sock.getsockname()[1]
        self.connections = 0
        # How long each chunk a client sent was held before it went upstream, as scheduled on arrival.
        self.scheduled: list[float] = []
        self.links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _factory(self) -> _Client:
        assert self._loop is not None
        self.connections += 1
        link = _Link(self, self._loop)
        self.links.add(link)
        return _Client(link)

    async def serve(self) -> None:
        """Serve on the current event loop until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(self._factory, sock=self._sock)
        try:
            await self._server.serve_forever()
        finally:
            for link in list(self.links):
                link.close()

    def start(self) -> LatencyProxy:
        """Run the proxy on its own event loop in a daemon thread (tests; the bench uses ProxyProcess)."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            task = loop.create_task(self.serve())
            loop.call_soon(ready.set)
            try:
                loop.run_until_complete(task)
            except asyncio.CancelledError:
                pass
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="latency-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            def cancel() -> None:
                if self._server is not None:
                    self._server.close()
                for task in asyncio.all_tasks(loop):
                    task.cancel()
            try:
                loop.call_soon_threadsafe(cancel)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(10)
        self._sock.close()


class ProxyProcess:
    """The proxy as a process of its own (``python -m bench.latency_proxy``): its CPU is its own, read
    from ``/proc`` like the registry's, and it takes no GIL from the bench's in-process clients."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self.stats: dict[str, int] = {}

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> ProxyProcess:
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.latency_proxy", "--upstream", f"{self.upstream[0]}:{self.upstream[1]}",
             "--delay", repr(self.delay)], cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"latency proxy did not start: {line!r}")
        self.port = int(line)
        return self

    def cpu_s(self) -> float:
        """User+system CPU the proxy process has used so far."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def connections(self) -> int:
        return self.stats.get("connections", 0)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=10)
            self.stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        except (subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.latency_proxy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    ap.add_argument("--delay", type=float, required=True, help="round trip to add, seconds (e.g. 0.04)")
    args = ap.parse_args(argv)
    host, port = args.upstream.rsplit(":", 1)
    parent = os.getppid()  # before the port is printed: the parent waits for that line, so it is alive here
    proxy = LatencyProxy((host, int(port)), args.delay, record=False)
    print(proxy.port, flush=True)

    async def run() -> None:
        task = asyncio.ensure_future(proxy.serve())
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)

        def orphaned() -> None:  # the bench died without stopping it: do not outlive it on a shared box
            if os.getppid() != parent:
                task.cancel()
            else:
                loop.call_later(1.0, orphaned)

        loop.call_later(1.0, orphaned)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(run())
    try:
        print(json.dumps({"connections": proxy.connections}), flush=True)
    except OSError:  # orphaned: nobody reads the figures
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
