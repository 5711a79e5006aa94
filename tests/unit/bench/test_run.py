"""Smoke test of the benchmark harness (bench/run.py) on a tiny estate: it publishes to a real
docker-registry, scans cold and warm, renders the report, runs the baselines, and writes a result
JSON with every field the README table is built from. Not a timed test: no figure is compared with
a target here, only that the figures exist, are sane and that every verdict was the expected one.

Also the per-registry budget end to end: a real scan with ``--registry-budget`` against the real
registry gives the images beyond it an ``error`` verdict naming the budget, and the registry's own
access log shows no more manifest GETs than the budget allows."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest

from bench import run as bench
from tests.harness.tools import require_binary, tool_path


def test_harness_writes_complete_results(tmp_path: Path) -> None:
    require_binary("docker-registry")
    out = tmp_path / "results"
    sample = 2 if tool_path("cosign") else 0
    rc = bench.main(["--digests", "20", "--repos", "4", "--pods", "50", "--baseline-sample", str(sample),
                     "--out", str(out), "--skip-clients", "--no-notation", "--repeat", "2",
                     "--latency-ms", "40", "--latency-concurrency", "4,8", "--latency-sample", str(sample)])
    assert rc == 0
    res = json.loads((out / "latest.json").read_text())
    stamped = [p for p in out.glob("*.json") if p.name != "latest.json"]
    assert len(stamped) == 1 and json.loads(stamped[0].read_text()) == res
    assert res["schema_version"] == bench.SCHEMA_VERSION
    assert res["estate"]["digests"] == 20 and res["estate"]["repos"] == 4
    assert sum(res["estate"]["kinds"].values()) == 20 and res["estate"]["kinds"]["unsigned"] == 2
    for label in ("cold", "warm"):
        scan = res["scans"][label]
        for key in ("wall_s", "cpu_s", "user_s", "sys_s", "peak_rss_mb", "registry_requests",
                    "requests_per_digest", "manifest_gets", "verdicts"):
            assert key in scan, (label, key)
        assert scan["wall_s"] > 0 and scan["cpu_s"] > 0 and 20 < scan["peak_rss_mb"] < 2000
        assert scan["unexpected_verdicts"] == 0
        assert scan["images"] == 20 and scan["containers"] == 50
        assert scan["verdicts"] == {"invalid": 2, "unsigned": 2, "verified": 16}
        # Repeated: median and min of two runs, the registry's CPU beside the client's, the load average.
        assert scan["repeats"] == 2 and len(scan["runs"]) == 2
        assert scan["wall_s_min"] <= scan["wall_s"] and scan["cpu_s_min"] <= scan["cpu_s"]
        assert scan["registry_cpu_s"] is not None and scan["registry_cpu_s"] >= 0
        assert all(len(r["load_average_at_start"]) == 3 for r in scan["runs"])
    cold, warm = res["scans"]["cold"], res["scans"]["warm"]
    # Inside the re-check window only the images that did not pass are re-listed (2 unsigned, 2 invalid).
    marking, window = res["scans"]["warm_marking"], res["scans"]["warm_window"]
    assert marking["unexpected_verdicts"] == window["unexpected_verdicts"] == 0
    assert marking["registry_requests"] >= 20 and 4 <= window["registry_requests"] <= 4 * 3, window
    assert res["targets"]["warm_window_wall_s"]["value"] == window["wall_s"]
    # Latency mode: every request through the proxy waits 40 ms, so a cold scan at 4 connections takes at
    # least its requests / 4 x 40 ms; the ideal client at the same concurrency likewise.
    lat = res["latency"]
    assert set(lat["by_concurrency"]) == {"4", "8"}
    for n, row in lat["by_concurrency"].items():
        c = row["scan_cold"]
        assert c["unexpected_verdicts"] == 0
        assert c["wall_s_min"] >= c["registry_requests"] / int(n) * 0.040
        assert row["ideal_floor"]["wall_s_min"] >= 20 * 1.88 / int(n) * 0.040 * 0.9
        # The proxy is a process of its own: its CPU is measured beside the scan's and the registry's.
        assert c["proxy_cpu_s"] is not None and c["proxy_cpu_s"] >= 0 and len(c["runs"]) == 2
        assert all("proxy_cpu_s" in r for r in c["runs"]) and "proxy_cpu_s" in row["ideal_floor"]
        assert row["round_trip_bound_s"] == pytest.approx(c["registry_requests"] * 0.040 / int(n), abs=0.006)
        assert row["cpu_bound_s"] > 0 and len(row["load_average"]) == 2
        # The replay floor through the same proxy: that N's cold scans' own requests, at the same N.
        rf = row["replay_floor"]
        assert rf["same_requests_as_scan"] is True and rf["concurrency"] == int(n) and rf["repeats"] == 2
        assert rf["requests"] == c["registry_requests"] and "proxy_cpu_s" in rf and rf["same_signatures_as_scan"]
        assert rf["wall_s_min"] >= rf["requests"] / int(n) * 0.040 * 0.9
        assert row["cold_wall_over_replay_floor"] == round(c["wall_s"] / rf["wall_s"], 2)
    assert lat["proxy_connections"] > 0
    if sample:
        assert lat["cosign"]["per_digest_s"] > 0.040 and lat["by_concurrency"]["4"]["cosign_loop_over_cold_wall"] > 0
    assert "Latency mode" in (out / "latest.md").read_text()
    assert cold["registry_requests"] >= 20  # at least one lookup per digest, counted by the registry
    assert warm["registry_requests"] < cold["registry_requests"]
    assert res["report"]["bytes"] > 1000 and res["report"]["wall_s"] > 0
    floor = res["baselines"]["ideal_floor"]
    assert floor["digests"] == 20 and floor["verified"] == 16 and floor["wall_s"] > 0
    assert floor["concurrency"] == res["params"]["registry_concurrency"] and floor["repeats"] == 2
    assert res["baselines"]["warm_floor"]["digests"] == 20
    assert res["baselines"]["warm_floor"]["client_cpu_per_request_ms"] > 0
    # The replay floors: each scan's own requests, as the registry logged them, at the scan's concurrency.
    for key, scan in (("replay_floor", cold), ("warm_replay_floor", warm)):
        rf = res["baselines"][key]
        assert rf["same_requests_as_scan"] is True and rf["status_mismatches"] == 0, rf
        assert rf["requests"] == scan["registry_requests"] and rf["repeats"] == 2
        assert rf["concurrency"] == res["params"]["registry_concurrency"] and rf["client_cpu_per_request_ms"] > 0
    assert res["baselines"]["replay_floor"]["signatures_checked"] == 18  # all but the 2 unsigned
    assert res["baselines"]["replay_floor"]["signatures_valid"] == 16
    assert res["baselines"]["replay_floor"]["same_signatures_as_scan"] is True
    assert cold["signatures_authenticated"] == 18
    assert res["ratios"]["cold_wall_over_replay_floor"] == round(cold["wall_s"] / res["baselines"]["replay_floor"]
                                                                 ["wall_s"], 2)
    assert res["targets"]["cold_over_replay_floor"]["value"] == res["ratios"]["cold_wall_over_replay_floor"]
    assert res["targets"]["warm_over_warm_replay_floor"]["value"] == res["ratios"]["warm_wall_over_warm_replay_floor"]
    cosign = res["baselines"]["cosign"]
    if sample:
        assert cosign["sample"] == 2 and cosign["per_digest_s"] > 0 and cosign["agrees_with_expected"] == 2
        assert res["ratios"]["cosign_loop_over_cold_wall"] > 0
    else:
        assert "skipped" in cosign
    assert set(res["targets"]) == set(bench.TARGETS)
    for t in res["targets"].values():
        assert t["met"] in (True, False, None)
    md = (out / "latest.md").read_text()
    assert "sigaudit scan, cold" in md and "sigaudit scan, warm" in md and "| target |" in md
    assert "replay floor, cold" in md and "replay floor, warm" in md and "requests differ" not in md


def test_latency_proxy_delays_each_request_once() -> None:
    """bench/latency_proxy.py: each request waits the delay once (plus one for a new connection), and
    requests on separate connections are delayed in parallel, not one after another."""
    import http.client
    import http.server
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from bench.latency_proxy import LatencyProxy

    class Ok(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = LatencyProxy(("127.0.0.1", server.server_address[1]), 0.1).start()
    try:
        # What the proxy scheduled is checked exactly; elapsed time only from below (a loaded machine is
        # slower, never faster), so the test cannot fail on load.
        delay = proxy.delay
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        t0 = time.monotonic()
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"ok"
        assert time.monotonic() - t0 >= 2 * delay - 0.01  # the handshake's round trip, then the request's
        for _ in range(3):
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"ok"
        conn.close()
        first, *rest = proxy.scheduled
        assert delay <= first <= 2 * delay + 1e-6, first  # held for the handshake still due, plus one delay
        assert len(rest) == 3 and all(abs(r - delay) < 1e-6 for r in rest), rest  # each later request: once

        def one(_: int) -> None:
            c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
            c.request("GET", "/")
            c.getresponse().read()
            c.close()

        proxy.scheduled.clear()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(8)))
        # Each connection is scheduled from its own arrival: 8 at once are not queued behind each other.
        assert len(proxy.scheduled) == 8 and max(proxy.scheduled) <= 2 * delay + 1e-6, proxy.scheduled
    finally:
        proxy.stop()
        server.shutdown()


def test_latency_proxy_keeps_the_byte_order_of_chunks_due_at_once() -> None:
    """Chunks a client sends before the handshake's delay is over are all due at the same instant; they
    must reach the upstream in the order sent (asyncio's timer heap does not order equal times), and
    the client's EOF after them — else a pipelined request or a TLS record would arrive scrambled."""
    import socket
    import threading

    from bench.latency_proxy import LatencyProxy

    upstream = socket.create_server(("127.0.0.1", 0))
    got = bytearray()

    def sink() -> None:
        conn, _ = upstream.accept()
        while data := conn.recv(65536):
            got.extend(data)
        conn.sendall(b"done")
        conn.close()

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    proxy = LatencyProxy(("127.0.0.1", upstream.getsockname()[1]), 0.05).start()
    try:
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = b"".join(b"%05d;" % i for i in range(3000))
        for i in range(0, len(sent), 6):
            c.sendall(sent[i:i + 6])
        c.shutdown(socket.SHUT_WR)
        assert c.recv(16) == b"done"  # the EOF reached the upstream after the data
        c.close()
        t.join(10)
    finally:
        proxy.stop()
        upstream.close()
    assert bytes(got) == sent
    assert len(proxy.scheduled) > 1  # several chunks really were scheduled


def test_latency_proxy_process_delays_and_reports_its_cpu() -> None:
    """The bench runs the proxy as a process of its own (its CPU read from /proc, not counted as the
    in-process ideal client's): through it a request still waits the handshake's and its own delay."""
    import http.client
    import http.server
    import threading
    import time

    from bench.latency_proxy import ProxyProcess

    class Ok(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = b"x" * 300_000  # several chunks back through the proxy
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = ProxyProcess(("127.0.0.1", server.server_address[1]), 0.1).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        t0 = time.monotonic()
        conn.request("GET", "/")
        assert len(conn.getresponse().read()) == 300_000
        assert time.monotonic() - t0 >= 2 * 0.1 - 0.01
        t1 = time.monotonic()
        conn.request("GET", "/")
        assert len(conn.getresponse().read()) == 300_000
        assert time.monotonic() - t1 >= 0.1 - 0.01
        conn.close()
        assert proxy.cpu_s() >= 0 and proxy.proc is not None and proxy.proc.poll() is None
    finally:
        proxy.stop()
        server.shutdown()
    assert proxy.connections == 1 and proxy.proc is not None and proxy.proc.returncode == 0


def test_latency_proxy_process_does_not_outlive_the_bench() -> None:
    """A bench killed without stopping its proxy leaves no proxy process behind on the shared box."""
    import os
    import subprocess
    import time

    code = ("import os, sys; from bench.latency_proxy import ProxyProcess; "
            "p = ProxyProcess(('127.0.0.1', 9), 0.01).start(); print(p.proc.pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return  # exited, not yet reaped by init
        time.sleep(0.2)
    os.kill(pid, 9)
    raise AssertionError("the proxy outlived the process that started it")


def test_registry_budget_end_to_end(tmp_path: Path) -> None:
    require_binary("docker-registry")
    from tests.harness.cosign_sign import KeyPair
    from tests.harness.fixtures_registry import start_distribution

    reg = start_distribution(tmp_path / "registry")
    try:
        keys = {"trusted": KeyPair.ecdsa(), "wrong": KeyPair.ecdsa()}
        est = bench.publish(reg.url, reg.host, 12, 3, keys, False, tmp_path)
        pods = tmp_path / "pods.json"
        bench.write_pods(est, 12, pods)
        policy = bench.write_policy(est, keys, tmp_path)
        before = bench.settle_count(reg)
        budget = 5
        run = bench.run_measured([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy",
                                  str(policy), "--no-store", "--json-out", str(tmp_path / "scan.json"), "-o", "none",
                                  "--no-progress", "--registry-budget", str(budget), "--concurrency", "1"],
                                 cwd=tmp_path)
        assert run.exit_code == 1, run.stderr_tail
        logged = reg.requests()[before:]
        manifest_gets = [r for r in logged if r.method == "GET" and "/manifests/" in r.path]
        assert len(manifest_gets) == budget
    finally:
        reg.stop()
    doc = json.loads((tmp_path / "scan.json").read_text())
    errors = [i for i in doc["images"] if i["status"] == "error"]
    # Each signed image spends at least one manifest GET; an unsigned one may be answered by its repository's
    # tag list (no manifest GET, so no budget).
    unsigned = sum(1 for i in est.images if i.kind == bench.UNSIGNED)
    assert errors and len(errors) >= 12 - budget - unsigned
    assert all(any("registry request budget exhausted" in r for r in i["reasons"]) for i in errors)
    assert {i["status"] for i in doc["images"]} - {"error"}  # the first images were judged normally


def test_peak_rss_is_the_childs_own(tmp_path: Path) -> None:
    """wait4's ru_maxrss survives exec, so a child forked from a large parent reported the parent's
    RSS (a /bin/true child at 330 MB): the harness must report the child's own high-water mark."""
    if not Path(bench.TIME_BIN).exists():
        pytest.skip("GNU time is not installed")
    ballast = b"x" * (300 << 20)  # the parent holds 300 MB, touched
    run = bench.run_measured(["/bin/true"])
    assert len(ballast) and run.exit_code == 0
    assert run.peak_rss_mb is not None and run.peak_rss_mb < 50, run.peak_rss_mb
    failing = bench.run_measured(["/bin/false"])  # GNU time's extra "exited with status" line
    assert failing.exit_code == 1 and failing.peak_rss_mb is not None and failing.peak_rss_mb < 50


def test_access_log_is_read_incrementally(tmp_path: Path) -> None:
    """Each poll parses only what was appended, a line cut mid-write is taken when it completes, and
    the figures match a full re-read."""
    path = tmp_path / "access.log"
    line = '127.0.0.1 - - [07/Dec/2026:06:00:00 +0000] "{} {} HTTP/1.1" 200 2 "" "x"\n'
    log = bench.AccessLog(path)
    assert log.poll() == 0  # not written yet
    path.write_text("registry starting\n" + line.format("GET", "/v2/"))
    assert log.poll() == 1
    half = line.format("HEAD", "/v2/a/manifests/t")
    with path.open("a") as f:
        f.write(half[:30])
    assert log.poll() == 1 and log.offset == path.stat().st_size
    with path.open("a") as f:
        f.write(half[30:] + line.format("GET", "/v2/b/blobs/sha256:00"))
    assert log.poll() == 3 and log.settle() == 3
    assert [(r.method, r.path) for r in log.entries] == [("GET", "/v2/"), ("HEAD", "/v2/a/manifests/t"),
                                                       ("GET", "/v2/b/blobs/sha256:00")]


def test_repeats_give_min_and_median() -> None:
    runs = [{"wall_s": w, "cpu_s": 1.0, "user_s": 1.0, "sys_s": 0.0, "registry_cpu_s": None, "peak_rss_mb": 90.0,
             "client_cpu_per_request_ms": 1.0, "registry_requests": 5, "load_average_at_start": [1.0, 1.0, 1.0],
             "unexpected_verdicts": u} for w, u in ((3.0, 0), (1.0, 2), (2.0, 0))]
    out = bench.combine(runs)
    assert out["wall_s"] == 2.0 and out["wall_s_min"] == 1.0 and out["repeats"] == 3
    assert out["registry_cpu_s"] is None and out["unexpected_verdicts"] == 2


def test_mix_is_deterministic() -> None:
    kinds = [bench.kind_for(i, False) for i in range(20)]
    assert kinds.count(bench.UNSIGNED) == 2 and kinds.count(bench.WRONG_KEY) == 1
    assert kinds.count(bench.TAMPERED) == 1 and kinds.count(bench.COSIGN) == 16
    assert [bench.kind_for(i, True) for i in range(20)].count(bench.NOTATION) == 4
    assert random.Random(1).sample(range(100), 3) == random.Random(1).sample(range(100), 3)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_rejects_empty_estates(value: str) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--digests", value])


def test_warm_rescan_lists_tags_once_per_repository_and_still_sees_changes(tmp_path: Path) -> None:
    """Twelve digests in one repository: the warm scan lists the repository's tags once instead of a
    request per unsigned digest, and still notices a deleted and a replaced signature."""
    require_binary("docker-registry")
    import httpx

    from tests.harness import oci
    from tests.harness.cosign_sign import KeyPair, sig_tag, sign_image
    from tests.harness.fixtures_registry import start_distribution

    reg = start_distribution(tmp_path / "registry")
    try:
        keys = {"trusted": KeyPair.ecdsa(), "wrong": KeyPair.ecdsa()}
        est = bench.publish(reg.url, reg.host, 12, 1, keys, False, tmp_path)
        pods = tmp_path / "pods.json"
        bench.write_pods(est, 12, pods)
        policy = bench.write_policy(est, keys, tmp_path)
        db = tmp_path / "s.db"

        def scan() -> tuple[dict[str, str], list[object]]:
            before = bench.settle_count(reg)
            run = bench.run_measured([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods),
                                      "--policy", str(policy), "--db", f"sqlite:///{db}", "--json-out",
                                      str(tmp_path / "scan.json"), "-o", "none", "--no-progress"], cwd=tmp_path)
            assert run.exit_code == 1, run.stderr_tail
            logged = reg.requests()[before:]
            doc = json.loads((tmp_path / "scan.json").read_text())
            return {str(i["digest"]): str(i["status"]) for i in doc["images"]}, list(logged)

        cold, _ = scan()
        want = {i.digest: bench.EXPECTED[i.kind] for i in est.images}
        assert cold == want
        warm, logged = scan()
        assert warm == want
        tag_lists = [r for r in logged if "/tags/list" in r.path]  # type: ignore[attr-defined]
        assert len(tag_lists) == 1
        heads = [r for r in logged if r.method == "HEAD"]  # type: ignore[attr-defined]
        assert len(heads) == sum(1 for i in est.images if i.kind != bench.UNSIGNED)  # one per .sig tag only
        # Besides: the tag list and one referrers probe for the registry (the API's 404 and its tag
        # fallback), never a referrers lookup per digest.
        assert len(logged) - len(heads) <= 3, " ".join(f"{r.method}:{r.path[-24:]}" for r in logged)  # type: ignore[attr-defined]

        signed = [i for i in est.images if i.kind == bench.COSIGN]
        gone, replaced = signed[0], signed[1]
        with httpx.Client() as c:
            r = c.head(f"{reg.url}/v2/{gone.repo}/manifests/{sig_tag(gone.digest)}",
                       headers={"Accept": oci.OCI_MANIFEST})
            c.delete(f"{reg.url}/v2/{gone.repo}/manifests/{r.headers['docker-content-digest']}").raise_for_status()
        sign_image(reg.url, reg.host, replaced.repo, replaced.digest, KeyPair.ecdsa())
        unsigned = next(i for i in est.images if i.kind == bench.UNSIGNED)
        sign_image(reg.url, reg.host, unsigned.repo, unsigned.digest, keys["trusted"])  # newly signed
        after, _ = scan()
        assert after == {**want, gone.digest: "unsigned", replaced.digest: "invalid", unsigned.digest: "verified"}
    finally:
        reg.stop()


def test_the_checkout_is_timed_with_bytecode_as_installed() -> None:
    """The scans are timed with every module byte-compiled, as pip installs the wheel: under
    PYTHONDONTWRITEBYTECODE a checkout compiled each module it imported on every start (~0.15 CPU-s of
    a warm scan that no installed sigaudit pays)."""
    bench.compile_checkout()
    for module in ("scanner/cli.py", "scanner/pipeline.py", "scanner/store/results.py", "reports/cli.py"):
        source = bench.REPO_ROOT / module
        cached = Path(importlib.util.cache_from_source(str(source)))
        assert cached.is_file() and cached.stat().st_mtime >= source.stat().st_mtime, module
