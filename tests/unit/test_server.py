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
    return TestClient(create_app(ctx), raise_server_exceptions=False, base_url="http://127.0.0.1:8080")


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
    "/reports/1_0.json",  # int() reads "1_0" as 10
    "/reports/+1.json",
    "/reports/%201.json",  # int() strips spaces
    "/reports/1%0A.json",  # a regex's $ matches before a final newline
    "/api/scans/%EF%BC%91",  # full-width one
    "/api/scans/0000000000000000001",  # 19 digits
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


# --- Issue #27: authentication, browser-borne requests, the scan interval, report headers -----------------

TOKEN = "s3cret-token-0123456789abcdef"


def _client(store: Store, tmp_path: Path, *, cluster: str = "c", interval: float = 0.0, token: bool = True,
            base_url: str = "http://127.0.0.1:8080") -> TestClient:
    from scanner.server import ScanRateLimit
    from scanner.server_auth import Authenticator, TokenFile

    auth = Authenticator()
    if token:
        (tmp_path / "token").write_text(TOKEN + "\n")
        auth = Authenticator(TokenFile(str(tmp_path / "token")))
    runner = ScanRunner(ScanOptions(cluster=cluster), store)
    ctx = ServerContext(store, runner, parse_schedule("@hourly"), cluster, CollectorRegistry(), T0, auth=auth,
                        scan_rate=ScanRateLimit(interval))
    return TestClient(create_app(ctx), raise_server_exceptions=False, base_url=base_url)


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("path", ["/api/scans", "/api/scans/1", "/reports/latest.json", "/reports/1.html",
                                  "/reports/1.csv", "/reports/99999999999999999999999.json"])
def test_api_and_reports_need_the_token_and_probes_stay_open(store: Store, tmp_path: Path, path: str) -> None:
    c = _client(store, tmp_path)
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"},
                    {"Authorization": f"Bearer {TOKEN[:-1]}"}):
        r = c.get(path, headers=headers)
        assert r.status_code == 401, (path, headers, r.status_code)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "scans" not in r.json() and "images" not in r.text
    assert c.get(path, headers=BEARER).status_code in (200, 404)
    assert c.get(path, headers={"Authorization": f"bearer  {TOKEN} "}).status_code in (200, 404)
    assert c.post("/api/scans", json={}).status_code == 401
    for open_path in ("/metrics", "/healthz", "/readyz"):
        assert c.get(open_path).status_code in (200, 503)  # never 401


def test_the_token_file_is_re_read_when_the_secret_rotates(store: Store, tmp_path: Path) -> None:
    c = _client(store, tmp_path)
    assert c.get("/api/scans", headers=BEARER).status_code == 200
    (tmp_path / "token.new").write_text("rotated-token-0123456789abcdef")
    (tmp_path / "token.new").replace(tmp_path / "token")
    assert c.get("/api/scans", headers=BEARER).status_code == 401
    assert c.get("/api/scans", headers={"Authorization": "Bearer rotated-token-0123456789abcdef"}).status_code == 200
    # Emptied or deleted (a revoked Secret): nothing is accepted, not the last token it held.
    (tmp_path / "token").write_text("")
    assert c.get("/api/scans", headers={"Authorization": "Bearer rotated-token-0123456789abcdef"}).status_code == 401
    (tmp_path / "token").unlink()
    assert c.get("/api/scans", headers={"Authorization": "Bearer rotated-token-0123456789abcdef"}).status_code == 401
    assert c.get("/api/scans", headers={"Authorization": "Bearer "}).status_code == 401
    (tmp_path / "token").write_text(TOKEN)
    assert c.get("/api/scans", headers=BEARER).status_code == 200


def test_a_short_or_missing_token_file_is_refused_at_start(tmp_path: Path) -> None:
    from scanner.server_auth import TokenFile

    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ConfigError, match="shorter"):
        TokenFile(str(tmp_path / "short"))
    with pytest.raises(ConfigError, match="cannot read"):
        TokenFile(str(tmp_path / "missing"))


@pytest.mark.parametrize("headers", [
    {"Content-Type": "application/x-www-form-urlencoded"},  # a form post: no CORS preflight
    {"Content-Type": "text/plain"},
    {"Content-Type": "multipart/form-data; boundary=x"},
    {},
    {"Content-Type": "application/json", "Origin": "https://evil.example"},
    {"Content-Type": "application/json", "Origin": "null"},
    {"Content-Type": "application/json", "Origin": "http://127.0.0.1:8081"},
    {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
    {"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"},
])
def test_a_post_a_web_page_could_send_starts_no_scan(store: Store, tmp_path: Path, headers: dict[str, str]) -> None:
    for c in (_client(store, tmp_path), _client(store, tmp_path, token=False)):
        r = c.post("/api/scans", content=b"{}", headers={**BEARER, **headers})
        assert r.status_code == 403, (headers, r.status_code, r.text)
    assert store.latest_scan_id("c") == 1 and len(store.list_scans("c")) == 1


def test_a_json_post_from_the_same_origin_starts_a_scan_then_429_with_retry_after(
        store: Store, tmp_path: Path) -> None:
    c = _client(store, tmp_path, interval=300)
    r = c.post("/api/scans", json={}, headers={**BEARER, "Origin": "http://127.0.0.1:8080",
                                               "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 400 and "no policy" in r.text, r.text  # reached the runner (no policy here)
    again = c.post("/api/scans", json={}, headers=BEARER)
    assert again.status_code == 429, again.text
    assert 290 <= int(again.headers["retry-after"]) <= 300
    assert c.post("/api/scans", content=b"not json", headers={**BEARER, "Content-Type": "application/json"}
                  ).status_code == 400


def test_a_busy_refusal_does_not_use_up_the_scan_interval() -> None:
    from scanner.server import ScanRateLimit

    now = [100.0]
    limit = ScanRateLimit(60, monotonic=lambda: now[0])
    wait, prev = limit.acquire()
    assert wait == 0 and prev is not None
    limit.give_back(prev)  # busy: 409
    wait, prev = limit.acquire()
    assert wait == 0 and prev is not None
    now[0] += 10
    wait, prev = limit.acquire()
    assert prev is None and wait == pytest.approx(50)
    now[0] += 50
    assert limit.acquire()[1] is not None
    assert ScanRateLimit(0).acquire()[1] is not None and ScanRateLimit(0).acquire()[1] is not None


def test_without_auth_only_a_loopback_host_is_served(store: Store, tmp_path: Path) -> None:
    """DNS rebinding: a page on evil.example that resolves to 127.0.0.1 is same-origin in the browser."""
    ok = _client(store, tmp_path, token=False, base_url="http://localhost:8080")
    assert ok.get("/reports/latest.json").status_code == 200
    assert _client(store, tmp_path, token=False, base_url="http://[::1]:8080").get("/api/scans").status_code == 200
    evil = _client(store, tmp_path, token=False, base_url="http://evil.example:8080")
    assert evil.get("/reports/latest.json").status_code == 403
    assert evil.get("/api/scans").status_code == 403
    assert evil.get("/metrics").status_code == 200


def test_report_downloads_carry_rfc6266_nosniff_and_csp(tmp_path: Path) -> None:
    from urllib.parse import unquote

    url = f"sqlite:///{tmp_path / 'sigaudit.db'}"
    upgrade(url)
    with open_store(url) as s:
        cluster = 'prod-東京"; x=\\1'
        scan_id = s.begin_scan(cluster, T0, "sha256:00", "test")
        s.finish_scan(scan_id, ScanResult(cluster, T0, T0, ScanState.COMPLETE, (), "sha256:00"))
        c = _client(s, tmp_path, cluster=cluster)
        for fmt in ("html", "json", "csv"):
            r = c.get(f"/reports/latest.{fmt}", headers=BEARER)
            assert r.status_code == 200, r.text
            cd = r.headers["content-disposition"]
            assert cd.isascii()
            fallback = cd.split('filename="', 1)[1].split('"', 1)[0]
            assert fallback == f"sigaudit-prod-___ x=_1-scan-1.{fmt}".replace(" ", "_") or fallback.isascii()
            assert '"' not in fallback and "\\" not in fallback
            star = cd.split("filename*=UTF-8''", 1)[1]
            assert unquote(star) == f"sigaudit-{cluster}-scan-1.{fmt}"
            assert r.headers["x-content-type-options"] == "nosniff"
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert c.get("/reports/9.html", headers=BEARER).headers["x-content-type-options"] == "nosniff"


def test_content_disposition_of_a_plain_name_is_plain() -> None:
    from scanner.server import content_disposition

    assert content_disposition("sigaudit-prod-scan-3.csv") == 'inline; filename="sigaudit-prod-scan-3.csv"'
    assert content_disposition("a%41.csv") == "inline; filename=\"a_41.csv\"; filename*=UTF-8''a%2541.csv"


def test_a_large_post_body_is_refused_without_being_held(store: Store, tmp_path: Path) -> None:
    c = _client(store, tmp_path, token=False)
    r = c.post("/api/scans", content=b'{"x": "' + b"a" * 100_000 + b'"}', headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert c.post("/api/scans", content=b"[1]", headers={"Content-Type": "application/json"}).status_code == 400
    assert len(store.list_scans("c")) == 1


def test_kube_reviews_are_cached_fail_closed_and_bounded_in_flight() -> None:
    """TokenReview then SubjectAccessReview; a failure to ask is 503 (never allowed, never cached); at
    most MAX_REVIEWS_IN_FLIGHT reviews wait on a stalled API server, the rest are refused at once."""
    from concurrent.futures import ThreadPoolExecutor

    from scanner.server_auth import MAX_REVIEWS_IN_FLIGHT, Access, KubeReviewer

    calls: list[str] = []
    mode = {"value": "ok"}
    gate = threading.Event()

    def post(kind: str, body: dict[str, object]) -> dict[str, object]:
        calls.append(kind)
        if mode["value"] == "down":
            raise OSError("connection refused")
        if mode["value"] == "stall":
            gate.wait(10)
        if kind == "tokenreviews":
            ok = body["spec"]["token"].startswith("good")  # type: ignore[index]
            return {"status": {"authenticated": ok, "user": {"username": "alice", "groups": ["g"]}}}
        return {"status": {"allowed": body["spec"]["resourceAttributes"]["verb"] == "get"}}  # type: ignore[index]

    r = KubeReviewer(post)
    read, scan = Access.parse("get:sigaudit.io/reports"), Access.parse("create:sigaudit.io/scans")
    assert r.review("good-1", read).allowed
    assert r.review("good-1", read).allowed and calls == ["tokenreviews", "subjectaccessreviews"]  # cached
    denied = r.review("good-1", scan)
    assert not denied.allowed and denied.status == 403 and "create scans.sigaudit.io" in denied.reason
    assert r.review("bad", read).status == 401
    mode["value"] = "down"
    assert r.review("good-2", read).status == 503
    mode["value"] = "ok"
    assert r.review("good-2", read).allowed  # the outage was not remembered
    mode["value"] = "stall"
    with ThreadPoolExecutor(max_workers=30) as pool:
        started = time.monotonic()
        futures = [pool.submit(r.review, f"good-stall-{i}", read) for i in range(30)]
        time.sleep(2)
        refused = [f.result() for f in futures if f.done()]
        gate.set()
        rest = [f.result() for f in futures]
    assert len(refused) == 30 - MAX_REVIEWS_IN_FLIGHT, len(refused)
    assert all(d.status == 503 for d in refused) and time.monotonic() - started < 10
    assert sum(d.allowed for d in rest) == MAX_REVIEWS_IN_FLIGHT


def test_serve_opens_its_store_with_the_declared_capacity(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``--db-capacity`` reaches serve's store (its scans' room check and its /metrics), as scan's."""
    from click.testing import CliRunner
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from scanner import server
    from scanner.cli import main
    from scanner.errors import StoreError

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "k.pub").write_bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n    - name: r\n"
                      "      images: ['*']\n      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
    seen: list[object] = []

    def opened(url, capacity_bytes=None):  # type: ignore[no-untyped-def]
        seen.append(capacity_bytes)
        raise StoreError("stop here")

    monkeypatch.setattr(server, "_open_store", opened)
    (tmp_path / "pods.json").write_text('{"kind": "List", "items": []}')
    result = CliRunner().invoke(main, ["serve", "--policy", str(policy), "--pods-file",
                                       str(tmp_path / "pods.json"), "--db-capacity", "2Gi"])
    assert seen == [2 * 2**30], result.output
