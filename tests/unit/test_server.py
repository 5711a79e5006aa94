"""``sigaudit serve``'s HTTP API in process (Starlette's TestClient over a real SQLite store): whatever
an unauthenticated caller puts in a URL is answered with a status, never a traceback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from scanner.errors import ConfigError
from scanner.models import ScanResult, ScanState
from scanner.scheduler import ScanBusy, ScanOptions, ScanRunner, parse_schedule
from scanner.server import ServerContext, create_app
from scanner.store import Store, open_store, upgrade

T0 = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'sigaudit.db'}"
    upgrade(url)
    with open_store(url) as s:
        scan_id = s.begin_scan("c", T0, "sha256:00", "test")
        s.finish_scan(scan_id, ScanResult("c", T0, T0, ScanState.COMPLETE, (), "sha256:00"))
        yield s


@pytest.fixture
def client(store: Store) -> TestClient:
    runner = ScanRunner(ScanOptions(cluster="c"), store)
    ctx = ServerContext(store, runner, parse_schedule("@hourly"), "c", CollectorRegistry(), T0)
    return TestClient(create_app(ctx), raise_server_exceptions=False)


@pytest.mark.parametrize("path", [
    "/api/scans/99999999999999999999999",  # past SQLite's INTEGER: OverflowError in the driver
    "/api/scans/4294967296",
    "/api/scans/0",
    "/api/scans/-1",
    "/api/scans/%C2%B2",  # superscript two: str.isdigit() is True, int() refuses it
    "/reports/99999999999999999999999.json",
    "/reports/%C2%B2.json",
    "/reports/%D9%A1.html",  # Arabic-Indic one: int() would read it as scan 1
    "/reports/1.2.csv",
])
def test_a_scan_id_that_names_no_scan_is_404_never_500(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code, r.text[:300])


def test_an_existing_scan_is_still_served(client: TestClient) -> None:
    assert client.get("/api/scans/1").json()["scan"]["id"] == 1
    assert client.get("/reports/1.json").status_code == 200
    assert client.get("/reports/latest.csv").status_code == 200


def test_store_refuses_ids_it_cannot_hold_as_no_such_scan(store: Store) -> None:
    from scanner.errors import StoreError

    for bad in (10**30, 2**31, 0, -5):
        with pytest.raises(StoreError, match="there is no scan"):
            store.scan_summary(bad)
        with pytest.raises(StoreError, match="there is no scan"):
            store.load_scan(bad)
        assert store.previous_scan_id(bad) is None


def test_a_second_start_is_refused_at_once_while_the_first_loads_its_policy(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow policy source (a key URL that hangs, a cluster import) must not hold the runner's lock:
    every other POST /api/scans is refused at once instead of queueing a worker thread behind it."""
    import scanner.policy.sources as sources

    release = threading.Event()
    calls: list[float] = []

    def slow_policy(*_args: object, **_kwargs: object) -> object:
        calls.append(time.monotonic())
        release.wait(30)
        raise ConfigError("key URL unreachable")

    monkeypatch.setattr(sources, "load_policies", slow_policy)
    runner = ScanRunner(ScanOptions(cluster="c", policy_path="p.yaml"), store)
    first_error: list[BaseException] = []

    def first() -> None:
        try:
            runner.start("api")
        except BaseException as exc:
            first_error.append(exc)

    t = threading.Thread(target=first)
    t.start()
    try:
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls, "the first start never loaded its policy"
        outcome: list[BaseException] = []

        def second() -> None:
            try:
                runner.start("api")
            except BaseException as exc:
                outcome.append(exc)

        t2 = threading.Thread(target=second)
        began = time.monotonic()
        t2.start()
        t2.join(timeout=2)
        assert not t2.is_alive(), "the second start waited for the first one's policy load"
        assert time.monotonic() - began < 2
        assert len(outcome) == 1 and isinstance(outcome[0], ScanBusy), outcome
        assert runner.current_scan_id is None  # readable while the first start is still loading
        assert len(calls) == 1  # the refused start loaded nothing
    finally:
        release.set()
        t.join(timeout=10)
    assert len(first_error) == 1 and isinstance(first_error[0], ConfigError)
    # The slot is free again after a failed start.
    release.clear()
    release.set()
    with pytest.raises(ConfigError):
        runner.start("api")
    assert len(calls) == 2
