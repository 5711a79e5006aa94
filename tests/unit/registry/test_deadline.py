"""The wall-clock deadline under httpx: nesting, installation on every pool of a client, and that it ends
an exchange whose server trickles its headers a byte at a time (which per-read timeouts never do)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from scanner.registry import deadline, httpx_deadline


def test_the_earliest_deadline_wins_and_says_what_it_is() -> None:
    now = time.monotonic()
    assert deadline.current() is None and deadline.remaining() is None
    with deadline.within(now + 100, "scan deadline reached"):
        with deadline.within(now + 5, "total timeout exceeded"):
            assert deadline.current() == (now + 5, "total timeout exceeded")
        with deadline.within(None, "ignored"), deadline.within(now + 500, "later"):
            assert deadline.current() == (now + 100, "scan deadline reached")
    with deadline.within(now - 1, "scan deadline reached"):
        assert deadline.expired() == "scan deadline reached"
    assert deadline.current() is None


def test_of_deadlines_at_the_same_instant_the_innermost_says_what_passed() -> None:
    # A request cut at the scan's own deadline names itself ("... while the Kubernetes API was read"),
    # whatever the words of the outer scope that set the same instant (they once sorted alphabetically).
    at = time.monotonic() + 100
    with deadline.within(at, "a outer"), deadline.within(at, "z inner"):
        assert deadline.current() == (at, "z inner")


def test_run_ends_any_call_at_the_deadline_and_hands_it_the_callers_deadlines_and_context() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller's")
    at = time.monotonic() + 0.5
    with deadline.within(at, "scan deadline reached"):
        assert deadline.run(lambda: (deadline.current(), var.get())) == ((at, "scan deadline reached"), "caller's")
        with pytest.raises(ValueError, match="its own"):
            deadline.run(lambda: (_ for _ in ()).throw(ValueError("its own")))
        began = time.monotonic()
        with pytest.raises(deadline.Abandoned, match="scan deadline reached"):
            deadline.run(lambda: threading.Event().wait(30))  # blocks where no socket deadline reaches
        assert time.monotonic() - began < 1.5
        asked: list[int] = []
        with pytest.raises(deadline.Abandoned):  # already passed: not even started
            deadline.run(lambda: asked.append(1))
        assert asked == []
    assert deadline.run(lambda: 7) == 7  # no deadline: called here


def test_the_deadline_is_per_thread() -> None:
    seen: list[object] = []
    with deadline.within(time.monotonic() + 5, "mine"):
        t = threading.Thread(target=lambda: seen.append(deadline.current()))
        t.start()
        t.join()
    assert seen == [None]


def test_install_wraps_every_pool_of_the_client_once() -> None:
    client = httpx.Client(mounts={"http://example.invalid": httpx.HTTPTransport()})
    deadline.install(deadline.install(client))
    pools = [client._transport._pool, *(t._pool for t in client._mounts.values())]  # type: ignore[union-attr]
    assert len(pools) == 2
    for pool in pools:
        assert isinstance(pool._network_backend, httpx_deadline.DeadlineBackend)
        assert not isinstance(pool._network_backend._inner, httpx_deadline.DeadlineBackend)
    client.close()


@pytest.fixture
def trickler() -> Iterator[str]:
    """A server that sends a status line and headers one byte every 50 ms (about 10 s in all)."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            for b in b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 200 + b"\r\nContent-Length: 0\r\n\r\n":
                if stop.wait(0.05):
                    return
                try:
                    conn.sendall(bytes([b]))
                except OSError:
                    return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/"
    stop.set()
    srv.close()


def test_a_trickled_header_block_is_cut_at_the_deadline(trickler: str) -> None:
    with deadline.install(httpx.Client(timeout=5)) as client:
        t0 = time.monotonic()
        with pytest.raises(httpx.ReadTimeout) as info, deadline.within(t0 + 0.5, "total timeout exceeded"):
            client.get(trickler)
        assert time.monotonic() - t0 < 3  # each byte came well inside the 5 s read timeout
        assert deadline.cause(info.value) == "total timeout exceeded"


# Modules that make an httpx client without the wall-clock deadline, and why (empty is the goal).
UNBOUNDED_CLIENTS: dict[str, str] = {}


def test_a_key_url_trickling_its_headers_is_a_config_error_at_the_deadline(
    trickler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scanner.errors import ConfigError
    from scanner.policy import loader

    monkeypatch.setattr(loader, "KEY_URL_DEADLINE", 0.5, raising=False)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="cannot fetch key"):
        loader._default_key_fetcher(trickler)  # through scanner/sources/http.py
    assert time.monotonic() - t0 < 3  # the trickle lasts ~10 s, each byte well inside the per-read timeout


def test_every_http_client_of_the_product_is_under_the_wall_clock_deadline() -> None:
    # httpx's and urllib3's timeouts are per read: a client without the deadline can be held for ever by
    # a peer trickling its headers (found in the notification receivers and ACR's token exchange). An
    # httpx client is bounded by deadline.install(); a urllib3 pool only by being made in
    # scanner/registry/transport.py, whose pools are checked below.
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    unbounded = {}
    for path in sorted((root / "scanner").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        made = len(re.findall(r"\bhttpx\.(?:Client|stream|get|post|put|request)\(", text))
        installed = len(re.findall(r"\bdeadline\.install\(|\bwall\.install\(", text))
        pools = re.findall(
            r"\b(?:PoolManager|ProxyManager|HTTPS?ConnectionPool|connection_from_url|proxy_from_url)\(|"
            r"\burllib3\.request\(|\bhttp\.client\.HTTPS?Connection\(|\bHTTPS?Connection\(", text)
        if path.relative_to(root).as_posix() == "scanner/registry/transport.py":
            pools = []
        if made > installed or pools:
            unbounded[str(path.relative_to(root))] = made - installed + len(pools)
    assert set(unbounded) == set(UNBOUNDED_CLIENTS), unbounded


def test_every_urllib3_pool_of_the_transport_connects_and_reads_under_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scanner.registry import transport

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    t = transport.Transport(connect_timeout=1, read_timeout=1, maxsize=2, headers={})
    managers = [t._direct, t._proxy_manager("http://proxy.test:3128")]
    pools = [m.connection_from_url(u) for m in managers for u in ("http://r.test/", "https://r.test/")]
    assert pools
    for pool in pools:
        assert issubclass(pool.ConnectionCls, transport._DeadlineMixin), type(pool)
        assert pool.ConnectionCls.response_class is transport._DeadlineResponse
    t.close()


def test_run_bounds_how_many_workers_it_leaves_hanging_in_a_long_running_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # serve runs scans for months: a read that hangs past every deadline (a KMS trickling forever) left one
    # more thread (and its socket) behind at each scan, without end.
    monkeypatch.setattr(deadline, "MAX_ABANDONED", 3, raising=False)
    monkeypatch.setattr(deadline, "_abandoned", [], raising=False)
    released = threading.Event()
    started: list[int] = []
    before = {t.ident for t in threading.enumerate()}

    def hangs() -> None:
        started.append(1)
        released.wait(30)

    try:
        for _ in range(6):
            with deadline.within(time.monotonic() + 0.05, "scan deadline reached"), \
                    pytest.raises(deadline.Abandoned, match="scan deadline reached"):
                deadline.run(hangs)
        assert len(started) == 3  # the fourth is not started while three still hang: cut at once
        hanging = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        assert len(hanging) <= 3
    finally:
        released.set()
    for t in threading.enumerate():
        if t.ident not in before and t.name == "sigaudit-deadline":
            t.join(5)
    with deadline.within(time.monotonic() + 5, "scan deadline reached"):
        assert deadline.run(lambda: 7) == 7  # the ones that ended no longer count


@pytest.mark.parametrize("exc", [SystemExit(0), KeyboardInterrupt(), GeneratorExit()])
def test_a_read_ending_with_a_base_exception_is_a_failure_never_an_exit(exc: BaseException) -> None:
    # Re-raised on the caller's thread, a SystemExit(0) from a read ended the command with exit 0.
    def ends() -> None:
        raise exc

    with deadline.within(time.monotonic() + 5, "scan deadline reached"), \
            pytest.raises(Exception, match=type(exc).__name__) as err:
        deadline.run(ends)
    assert isinstance(err.value, Exception)


def test_run_says_what_passed_in_the_innermost_words_of_equal_deadlines() -> None:
    # run took min() of (instant, words) tuples: of equal instants, the alphabetically first words.
    at = time.monotonic() + 0.2
    with deadline.within(at, "a scan's deadline"), deadline.within(at, "the policy load's deadline"), \
            pytest.raises(deadline.Abandoned, match="the policy load's deadline"):
        deadline.run(lambda: threading.Event().wait(5))
