"""The HTML report of real scans, opened in a real headless Chromium over the DevTools protocol.

A demo estate is published to a real registry (distribution 2.8) and scanned twice by the real CLI,
with real changes in between (a signature deleted from the registry, an exemption revoked, another
granted, a workload rolled to an unsigned digest, one removed, a hostile pod added). ``sigaudit report``
writes the HTML, and Chromium must show it without a single network request other than the file itself,
without a console error, with the database's figures in the DOM. Screenshots are kept under pytest's
tmp dir and their paths printed.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scanner.store import open_store
from tests.harness.demo import publish_estate, write_pods, write_policy
from tests.harness.tools import free_port, require_binary, stop_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_NS = '"><img src=x onerror=alert(1)>'
HOSTILE_POD = "<script>alert('pod')</script>"


# ---------------------------------------------------------------------------------------------------
# A minimal Chrome DevTools Protocol client (websocket-client): enough to load a page, collect its
# network/console events, evaluate expressions, take screenshots and print to PDF.


class Browser:
    def __init__(self, chromium: Path, workdir: Path) -> None:
        import websocket  # websocket-client

        self.port = free_port()
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=workdir))
        self.log = (workdir / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
             f"--user-data-dir={self.profile}", f"--remote-debugging-port={self.port}", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        ws_url = None
        while time.monotonic() < deadline and ws_url is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}; see {workdir / 'chromium.log'}")
            try:
                pages = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=2).json()
                ws_url = next((p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page"), None)
            except (httpx.HTTPError, ValueError):
                pass
            if ws_url is None:
                time.sleep(0.2)
        if ws_url is None:
            self.close()
            raise TimeoutError("chromium's DevTools endpoint did not come up")
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True, enable_multithread=False)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            if "method" in msg:
                self.events.append(msg)

    def pump(self, seconds: float) -> None:
        """Collect events for a while (late console messages, late requests)."""
        self.ws.settimeout(0.1)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                try:
                    msg = json.loads(self.ws.recv())
                except Exception:  # websocket timeout
                    continue
                if "method" in msg:
                    self.events.append(msg)
        finally:
            self.ws.settimeout(30)

    def open(self, url: str, width: int = 1280, height: int = 2000) -> None:
        self.events.clear()
        for domain in ("Network", "Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading")
            self.pump(0.2)
        self.pump(1.0)

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))
        return path

    def pdf(self) -> bytes:
        data = self.call("Page.printToPDF", preferCSSPageSize=True, printBackground=True)["data"]
        return base64.b64decode(data)

    # what the page did
    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def console_errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e["params"]
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                out.append(f"console.{p['type']}: {p.get('args')}")
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails')}")
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
                out.append(f"log {p['entry'].get('source')}/{p['entry']['level']}: {p['entry'].get('text')}")
            elif e["method"] == "Network.loadingFailed":
                out.append(f"loading failed: {p.get('errorText')}")
        return out

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chromium = require_binary("chromium")
    pytest.importorskip("websocket", reason="websocket-client is needed to drive Chromium over CDP")
    b = Browser(chromium, tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


# ---------------------------------------------------------------------------------------------------
# Two real scans of a real registry


def _sigaudit(*args: str, check_rc: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "scanner.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode in check_rc, f"sigaudit {' '.join(args)} -> {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def _delete_signature(url: str, repo: str, digest: str) -> None:
    """Delete the cosign ``.sig`` manifest of ``digest``: its signature disappears from the registry."""
    tag = digest.replace(":", "-") + ".sig"
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    with httpx.Client(timeout=10) as c:
        head = c.head(f"{url}/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
        head.raise_for_status()
        sig_digest = head.headers["Docker-Content-Digest"]
        c.delete(f"{url}/v2/{repo}/manifests/{sig_digest}").raise_for_status()
        assert c.head(f"{url}/v2/{repo}/manifests/{tag}", headers={"Accept": accept}).status_code == 404


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.harness.fixtures_registry import start_distribution

    work = tmp_path_factory.mktemp("report-estate")
    # A private registry (the same distribution 2.8 as the ``registry`` fixture): this test deletes
    # a signature from it, which must not leak into other tests' estates.
    reg = start_distribution(work / "registry")
    try:
        est = publish_estate(reg.url, reg.host)
        db_url = f"sqlite:///{work / 'sigaudit.db'}"
        policy = write_policy(est, work)
        pods_path = work / "pods.json"
        hostile = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": HOSTILE_POD, "namespace": HOSTILE_NS, "uid": "uid-hostile",
                         "annotations": {"note": "<script>alert('annotation')</script>"}},
            "spec": {"containers": [{"name": "x<b>bold</b>", "image": f"{reg.host}/demo/unsigned:1.0"}]},
            "status": {"containerStatuses": [{"name": "x<b>bold</b>", "image": f"{reg.host}/demo/unsigned:1.0",
                                              "imageID": f"{reg.host}/demo/unsigned@{est.digests['unsigned']}"}]},
        }
        est.pods.append(hostile)
        write_pods(est, pods_path)
        common = ["--pods-file", str(pods_path), "--policy", str(policy), "--db", db_url, "--no-progress",
                  "-o", "none"]
        _sigaudit("scan", *common, "--cluster", "demo", check_rc=(1,))

        # Between the scans: the signature of demo/signed is deleted from the registry; the pause
        # exemption lapses and the legacy one is renewed; payments/drift-1 rolls to the tag's new,
        # unsigned digest; payments/pending-1 is gone.
        _delete_signature(reg.url, "demo/signed", est.digests["signed"])
        doc = yaml.safe_load(policy.read_text())
        now = datetime.now(UTC)
        doc["spec"]["exemptions"] = [
            {"images": [f"{est.host}/demo/legacy*"], "reason": "legacy app, renewed until the rewrite (SEC-77)",
             "until": (now + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ"), "approvedBy": "ciso"},
            {"images": [f"{est.host}/demo/pause*"], "namespaces": ["kube-system"],
             "reason": "pause image waiver (SEC-42), not renewed", "approvedBy": "secops",
             "until": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")},
        ]
        policy.write_text(yaml.safe_dump(doc, sort_keys=False))
        for pod in est.pods:
            if pod["metadata"]["name"] == "drift-1":
                moved = f"{reg.host}/demo/drifted@{est.digests['drifted-now']}"
                pod["status"]["containerStatuses"][0]["imageID"] = moved
        est.pods = [p for p in est.pods if p["metadata"]["name"] != "pending-1"]
        write_pods(est, pods_path)
        report_at_scan = work / "scan-report.html"
        _sigaudit("scan", *common, "--cluster", "demo", "--report", str(report_at_scan), check_rc=(1,))
        _sigaudit("scan", *common, "--cluster", "staging", check_rc=(1,))
    finally:
        reg.stop()

    out = {"work": work, "db": db_url, "estate": est, "scan_report": report_at_scan}
    for fmt in ("html", "json", "csv"):
        path = work / f"report.{fmt}"
        _sigaudit("report", "--db", db_url, "--cluster", "demo", "--format", fmt, "--out", str(path))
        out[fmt] = path
    out["fleet"] = work / "fleet.html"
    _sigaudit("report", "--db", db_url, "--fleet", "--out", str(out["fleet"]))
    with open_store(db_url) as store:
        out["scan_id"] = store.latest_scan_id("demo")
        out["summary"] = store.scan_summary(out["scan_id"])
        out["result"] = store.load_scan(out["scan_id"])
        out["previous_id"] = store.previous_scan_id(out["scan_id"])
        out["staging"] = store.scan_summary(store.latest_scan_id("staging"))
    return out


def _metric(b: Browser, name: str) -> str:
    return str(b.evaluate(f"document.querySelector('[data-metric={name}]').textContent.trim()"))


def test_report_in_chromium_matches_the_database(browser: Browser, scanned: dict[str, Any], tmp_path: Path) -> None:
    html_path: Path = scanned["html"]
    url = html_path.as_uri()
    browser.open(url)
    shot = browser.screenshot(tmp_path / "report-1280x2000.png")
    full = browser.screenshot(tmp_path / "report-full.png", full_page=True)
    print(f"\nREPORT SCREENSHOT: {shot}\nFULL PAGE: {full}\nREPORT: {html_path}")

    assert browser.requests() == [url], "the report must fetch nothing but itself"
    assert browser.console_errors() == []

    s = scanned["summary"]
    result = scanned["result"]
    assert s.total > 10 and s.noncompliant > 0
    assert _metric(browser, "compliant") == str(s.compliant)
    assert _metric(browser, "non-compliant") == str(s.noncompliant)
    assert _metric(browser, "images") == str(s.total)
    assert _metric(browser, "ratio") == f"{s.compliant / s.total * 100:.1f}%"
    assert _metric(browser, "containers") == str(sum(len(v.image.containers) for v in result.verdicts))
    for status, n in s.counts.items():
        got = browser.evaluate(f"document.querySelector('[data-status-count=\"{status}\"]').textContent")
        assert got == str(n), status
    assert browser.evaluate("document.querySelector('[data-field=scan-id]').textContent") == f"#{scanned['scan_id']}"
    assert browser.evaluate("document.querySelector('[data-field=policy-digest]').textContent") == s.policy_digest

    # Changes since the previous scan, as staged between the two scans.
    assert scanned["previous_id"] is not None
    changes = {name: _metric(browser, name) for name in
               ("newly-non-compliant", "fixed", "signature-disappeared", "new-images", "removed-images")}
    assert changes == {"newly-non-compliant": "3",  # pause (exemption lapsed), signed (sig deleted), drifted-now
                       "fixed": "1",  # legacy (exemption renewed)
                       "signature-disappeared": "1",  # signed
                       "new-images": "1",  # drifted-now
                       "removed-images": "2"}  # pending, and drifted (drift-1 rolled off it)
    gone = browser.evaluate("document.querySelector('#ch-gone + p + table tbody').textContent")
    assert "demo/signed:1.0" in gone and "verified" in gone.lower() and "unsigned" in gone.lower()

    # The hostile pod is shown as text: no element was built from it, and its namespace group exists.
    assert browser.evaluate("document.querySelectorAll('script, img, iframe, object, embed').length") == 0
    assert browser.evaluate("document.querySelector('b > b, td b b') === null")
    ns_names = browser.evaluate("[...document.querySelectorAll('.nsname')].map(e => e.textContent)")
    assert HOSTILE_NS in ns_names
    assert HOSTILE_POD in browser.evaluate("document.body.textContent")

    # Exemptions register: the lapsed one is highlighted, the renewed one active and covering legacy.
    rows = browser.evaluate(
        "[...document.querySelectorAll('table.exemptions tbody tr')].map(r => [r.className, r.textContent])")
    assert [c for c, _ in rows] == ["lapsed", "soon"]
    assert "SEC-42" in rows[0][1] and "SEC-77" in rows[1][1] and "ciso" in rows[1][1]


def test_report_prints_on_a4(browser: Browser, scanned: dict[str, Any], tmp_path: Path) -> None:
    browser.open(scanned["html"].as_uri())
    pdf = browser.pdf()
    (tmp_path / "report.pdf").write_bytes(pdf)
    print(f"\nREPORT PDF: {tmp_path / 'report.pdf'}")
    boxes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)
    assert boxes, "no page in the PDF"
    w, h = (float(x) for x in boxes[0])
    assert abs(w - 595.3) < 2 and abs(h - 841.9) < 2, (w, h)  # A4 portrait in points
    assert len(boxes) >= 3  # sections on their own pages


def test_fleet_report_in_chromium(browser: Browser, scanned: dict[str, Any], tmp_path: Path) -> None:
    url = scanned["fleet"].as_uri()
    browser.open(url, height=900)
    shot = browser.screenshot(tmp_path / "fleet.png")
    print(f"\nFLEET SCREENSHOT: {shot}")
    assert browser.requests() == [url]
    assert browser.console_errors() == []
    clusters = browser.evaluate("[...document.querySelectorAll('tr[data-cluster]')].map(r => r.dataset.cluster)")
    assert sorted(clusters) == ["demo", "staging"]
    got = browser.evaluate(
        "document.querySelector('tr[data-cluster=staging] [data-metric=compliant]').textContent")
    assert got == str(scanned["staging"].compliant)
    total = scanned["summary"].compliant + scanned["staging"].compliant
    assert _metric(browser, "compliant") == str(total)


def test_the_harness_sees_requests_and_console_errors(browser: Browser, tmp_path: Path) -> None:
    """The two checks above can fail: a page that fetches something is caught."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><img src="missing.png"><p>x</p></body></html>')
    browser.open(page.as_uri(), height=300)
    assert any(u.endswith("/missing.png") for u in browser.requests())
    assert browser.console_errors()


def test_scan_report_cli_json_and_csv_agree_with_the_store(scanned: dict[str, Any]) -> None:
    # scan --report wrote the same kind of report at the end of the scan
    at_scan = scanned["scan_report"].read_text()
    assert f'data-metric="compliant">{scanned["summary"].compliant}<' in at_scan
    assert "Changes since the previous scan" in at_scan and "Compared with scan #" in at_scan
    doc = json.loads(scanned["json"].read_text())
    assert doc["schema_version"] == 1 and doc["scan"]["id"] == scanned["scan_id"]
    assert doc["summary"]["compliant"] == scanned["summary"].compliant
    rows = list(csv.DictReader(io.StringIO(scanned["csv"].read_text())))
    containers = sum(len(v.image.containers) for v in scanned["result"].verdicts)
    assert len(rows) == containers == doc["summary"]["containers"]
    assert {r["scan_id"] for r in rows} == {str(scanned["scan_id"])}
    hostile = [r for r in rows if r["pod"] == HOSTILE_POD]
    assert len(hostile) == 1 and hostile[0]["namespace"] == HOSTILE_NS and hostile[0]["status"] == "unsigned"
