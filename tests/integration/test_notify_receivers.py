"""Notifications of new violations (issue 24 item 3) through the real CLI, the real registry and real
receivers on 127.0.0.1: a local HTTP server (generic webhook, HMAC checked; Slack-compatible) and the
Debian package's Alertmanager. Each new violation is received once across scans; a receiver that
fails or hangs does not fail the scan and is retried within its bound."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sig_tag, sign_image
from tests.harness.demo import _pod

pytestmark = pytest.mark.integration

SECRET = "whsec-7f1c0ffee-do-not-leak"
SLACK_PATH = "/services/T000/B000/XXXXslack-secret-path"


class Cluster:
    """A registry with signed images, a policy requiring cosign signatures, and a pods file to edit."""

    def __init__(self, reg: object, tmp: Path) -> None:
        self.reg, self.tmp = reg, tmp
        self.key = KeyPair.ecdsa()
        (tmp / "k.pub").write_text(self.key.public_pem)
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(
            f"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  insecureRegistries: ['{reg.host}']\n"  # type: ignore[attr-defined]
            f"  rules:\n    - name: signed\n      images: ['{reg.host}/*']\n"  # type: ignore[attr-defined]
            "      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
        self.digests: dict[str, str] = {}
        self.pods = tmp / "pods.json"
        self.db = f"sqlite:///{tmp / 's.db'}"

    def image(self, name: str, signed: bool) -> str:
        d = oci.make_image(self.reg.url, f"c/{name}", "1")  # type: ignore[attr-defined]
        if signed:
            sign_image(self.reg.url, self.reg.host, f"c/{name}", d, self.key)  # type: ignore[attr-defined]
        self.digests[name] = d
        return d

    def unsign(self, name: str) -> None:
        with httpx.Client() as c:
            url = f"{self.reg.url}/v2/c/{name}/manifests/{sig_tag(self.digests[name])}"  # type: ignore[attr-defined]
            r = c.head(url, headers={"Accept": oci.OCI_MANIFEST})
            c.delete(f"{url.rsplit('/', 1)[0]}/{r.headers['docker-content-digest']}").raise_for_status()

    def run(self, *running: tuple[str, str], notify: Path, extra: tuple[str, ...] = (),
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        host = self.reg.host  # type: ignore[attr-defined]
        self.pods.write_text(json.dumps({"kind": "List", "items": [
            _pod(ns, f"p-{n}", [("c", f"{host}/c/{n}:1", f"{host}/c/{n}@{self.digests[n]}")],
                 owner=("ReplicaSet", f"{n}-5d8f7"))
            for ns, n in running]}))
        r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(self.pods), "--policy",
                            str(self.policy), "--db", self.db, "-o", "json", "--no-progress", "--notify", str(notify),
                            *extra], capture_output=True, text=True, timeout=180,
                           env={**os.environ, "SIGAUDIT_WEBHOOK_SECRET": SECRET, **(env or {})})
        assert r.returncode in (0, 1), r.stderr
        return r


def _notify_file(tmp: Path, receivers: list[dict[str, object]]) -> Path:
    path = tmp / "notify.yaml"
    path.write_text(json.dumps({"receivers": receivers}))  # JSON is YAML
    return path


def test_webhook_and_slack_receive_each_new_violation_once(registry_factory, http_receiver, tmp_path: Path) -> None:
    cl = Cluster(registry_factory(), tmp_path)
    for n in ("app0", "app1"):
        cl.image(n, signed=True)
    cl.image("rogue", signed=False)
    (tmp_path / "slack-url").write_text(f"{http_receiver.url}{SLACK_PATH}\n")
    notify = _notify_file(tmp_path, [
        {"name": "hook", "type": "webhook", "url": f"{http_receiver.url}/hook",
         "secret_env": "SIGAUDIT_WEBHOOK_SECRET"},
        {"name": "chat", "type": "slack", "url_file": str(tmp_path / "slack-url")},
    ])
    # scan 1: the baseline (no previous complete scan): nothing is new
    outputs = [cl.run(("shop", "app0"), ("shop", "app1"), notify=notify)]
    assert http_receiver.requests == []
    # scan 2: app0's signature disappears, an unsigned workload appears in prod
    cl.unsign("app0")
    outputs.append(cl.run(("shop", "app0"), ("shop", "app1"), ("prod", "rogue"), notify=notify))
    got = {r.path: r for r in http_receiver.requests}
    assert set(got) == {"/hook", SLACK_PATH}, [r.path for r in http_receiver.requests]
    hook = got["/hook"]
    expected = "sha256=" + hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["x-sigaudit-signature-256"], expected)
    body = hook.json()
    assert body["schema_version"] == 1 and body["cluster"] == "default" and body["more_changes"] == 0
    assert {(c["kind"], c["status"], c["namespaces"][0], c["image"].split("/c/")[1].split(":")[0])
            for c in body["changes"]} == {("signature-disappeared", "unsigned", "shop", "app0"),
                                          ("newly-non-compliant", "unsigned", "prod", "rogue")}
    assert body["changes"][0]["workloads"][0].startswith(("shop/ReplicaSet/app0-", "prod/ReplicaSet/rogue-"))
    text = got[SLACK_PATH].json()["text"]
    assert "signature-disappeared" in text and "rogue" in text
    # scan 3: the same violations: nothing is sent again
    http_receiver.clear()
    outputs.append(cl.run(("shop", "app0"), ("shop", "app1"), ("prod", "rogue"), notify=notify))
    assert http_receiver.requests == []
    # scan 4: rogue is gone and app0 re-signed: resolved, once
    sign_image(cl.reg.url, cl.reg.host, "c/app0", cl.digests["app0"], cl.key)  # type: ignore[attr-defined]
    outputs.append(cl.run(("shop", "app0"), ("shop", "app1"), notify=notify))
    body = next(r for r in http_receiver.requests if r.path == "/hook").json()
    assert body["changes"] == [] and len(body["resolved"]) == 2
    http_receiver.clear()
    outputs.append(cl.run(("shop", "app0"), ("shop", "app1"), notify=notify))
    assert http_receiver.requests == []
    # no secret in any output or in the database
    db = (tmp_path / "s.db").read_bytes()
    for out in outputs:
        for secret in (SECRET, SLACK_PATH, "XXXXslack"):
            assert secret not in out.stdout + out.stderr
    assert SECRET.encode() not in db and b"XXXXslack" not in db


def test_alertmanager_gets_exactly_the_new_violations_once_and_routes_them(registry_factory, alertmanager,
                                                                          tmp_path: Path) -> None:
    cl = Cluster(registry_factory(), tmp_path)
    cl.image("app0", signed=True)
    cl.image("rogue", signed=False)
    notify = _notify_file(tmp_path, [{"name": "am", "type": "alertmanager", "url": alertmanager.url,
                                      "labels": {"team": "platform"}}])
    cl.run(("shop", "app0"), notify=notify)
    assert alertmanager.alerts() == []
    cl.run(("shop", "app0"), ("prod", "rogue"), ("shop", "rogue"), notify=notify)
    alerts = alertmanager.alerts()
    assert sorted((a["labels"]["namespace"], a["labels"]["severity"], a["labels"]["team"],
                   a["labels"]["digest"]) for a in alerts) == [
        ("prod", "critical", "platform", cl.digests["rogue"]), ("shop", "critical", "platform", cl.digests["rogue"])]
    assert all(a["labels"]["alertname"] == "SigauditImageNotCompliant" for a in alerts)
    assert all(a["annotations"]["kind"] == "newly-non-compliant" for a in alerts)
    # Alertmanager's own route (namespace="prod" → webhook) applied to sigaudit's labels
    routed = alertmanager.routed.wait_for(1)
    firing = [a for r in routed for a in r.json()["alerts"]]
    assert {a["labels"]["namespace"] for a in firing} == {"prod"}
    updated = {a["fingerprint"]: a["updatedAt"] for a in alerts}
    # the next scan finds the same violations: Alertmanager is not posted to again
    cl.run(("shop", "app0"), ("prod", "rogue"), ("shop", "rogue"), notify=notify)
    assert {a["fingerprint"]: a["updatedAt"] for a in alertmanager.alerts()} == updated
    # rogue is gone: resolved (endsAt now), and the route is told
    cl.run(("shop", "app0"), notify=notify)
    deadline = time.monotonic() + 15
    while alertmanager.alerts(active="true") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alertmanager.alerts(active="true") == []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if any(r.json()["status"] == "resolved" for r in alertmanager.routed.requests):
            break
        time.sleep(0.2)
    assert any(r.json()["status"] == "resolved" for r in alertmanager.routed.requests)


def test_failing_or_hanging_receiver_never_fails_the_scan_and_is_retried(registry_factory, http_receiver,
                                                                         tmp_path: Path) -> None:
    cl = Cluster(registry_factory(), tmp_path)
    cl.image("app0", signed=True)
    cl.image("rogue", signed=False)
    notify = _notify_file(tmp_path, [{"name": "hook", "type": "webhook", "url": f"{http_receiver.url}/hook",
                                      "secret_env": "SIGAUDIT_WEBHOOK_SECRET", "timeout": 1, "retry_for": 4}])
    metrics = tmp_path / "metrics.prom"
    cl.run(("shop", "app0"), notify=notify)
    # two 500s, then OK: delivered within the retry bound
    http_receiver.fail_next(2, 500)
    r = cl.run(("shop", "app0"), ("shop", "rogue"), notify=notify, extra=("--metrics-file", str(metrics)))
    assert r.returncode == 1  # violations, not a failed scan
    assert [q.path for q in http_receiver.requests] == ["/hook"] * 3
    assert 'sigaudit_notifications_failed{cluster="default",receiver="hook"} 0.0' in metrics.read_text()
    # a new violation while the receiver hangs past every attempt: the scan ends within the bound, not failed
    cl.image("rogue2", signed=False)
    http_receiver.clear()
    http_receiver.hang_next(20, 3.0)
    started = time.monotonic()
    r = cl.run(("shop", "app0"), ("shop", "rogue"), ("shop", "rogue2"), notify=notify,
               extra=("--metrics-file", str(metrics)))
    elapsed = time.monotonic() - started
    assert r.returncode == 1 and json.loads(r.stdout)["scan"]["status"] == "complete"
    assert elapsed < 4 + 1 + 5 + 30, elapsed  # retry_for + one timeout + grace (+ the scan itself)
    assert 'sigaudit_notifications_failed{cluster="default",receiver="hook"} 1.0' in metrics.read_text()
    assert "notification to hook (http://127.0.0.1" in r.stderr and "/hook" not in r.stderr
    # the receiver is back: the undelivered violation is sent after the next scan, once
    time.sleep(3.5)  # let the hung handlers finish
    http_receiver.clear()
    cl.run(("shop", "app0"), ("shop", "rogue"), ("shop", "rogue2"), notify=notify)
    sent = [c["image"] for q in http_receiver.requests for c in q.json()["changes"]]
    assert len(sent) == 1 and "/c/rogue2" in sent[0], sent
    http_receiver.clear()
    cl.run(("shop", "app0"), ("shop", "rogue"), ("shop", "rogue2"), notify=notify)
    assert http_receiver.requests == []


def test_plain_http_to_another_host_and_a_missing_secret_are_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules: []\n")
    (tmp_path / "pods.json").write_text('{"kind": "List", "items": []}')
    for receivers, needle in (
        ([{"name": "h", "type": "webhook", "url": "http://hooks.example/x", "secret_env": "S"}], "plain http"),
        ([{"name": "h", "type": "webhook", "url": "https://hooks.example/x"}], "signed"),
        ([{"name": "h", "type": "alertmanager", "url": "https://user:pw@am.example"}], "no credentials"),
        ([{"name": "h", "type": "alertmanager", "url": "https://am.example"}], "needs the database"),
    ):
        notify = _notify_file(tmp_path, receivers)
        r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(tmp_path / "pods.json"),
                            "--policy", str(policy), "--no-store", "--notify", str(notify), "--no-progress"],
                           capture_output=True, text=True, timeout=60, env={**os.environ, "S": "x"})
        assert r.returncode == 2 and needle in r.stderr, r.stderr
        assert "pw" not in r.stderr.replace("password", "")


def test_serve_scans_notify_through_the_same_use_case(registry_factory, http_receiver, tmp_path: Path) -> None:
    """``sigaudit serve`` (SIGAUDIT_NOTIFY, as the chart sets it): its API-started scans notify like
    ``sigaudit scan``; the pods file is re-read at every scan."""
    from tests.integration.test_scan_faces import _serve_scan, _server

    cl = Cluster(registry_factory(), tmp_path)
    cl.image("app0", signed=True)
    cl.image("rogue", signed=False)
    notify = _notify_file(tmp_path, [{"name": "hook", "type": "webhook", "url": f"{http_receiver.url}/hook",
                                      "secret_env": "SIGAUDIT_WEBHOOK_SECRET"}])

    def pods(*running: tuple[str, str]) -> None:
        host = cl.reg.host  # type: ignore[attr-defined]
        cl.pods.write_text(json.dumps({"kind": "List", "items": [
            _pod(ns, f"p-{n}", [("c", f"{host}/c/{n}:1", f"{host}/c/{n}@{cl.digests[n]}")]) for ns, n in running]}))

    pods(("shop", "app0"))
    env = {"SIGAUDIT_NOTIFY": str(notify), "SIGAUDIT_WEBHOOK_SECRET": SECRET}
    log_path = tmp_path / "serve.log"
    with _server(cl.pods, cl.policy, cl.db, env, log_path) as base:
        _serve_scan(base, log_path)
        pods(("shop", "app0"), ("prod", "rogue"))
        _serve_scan(base, log_path)
        _serve_scan(base, log_path)
    assert len(http_receiver.requests) == 1, log_path.read_text()[-2000:]
    hook = http_receiver.requests[0]
    assert hook.headers["x-sigaudit-signature-256"] == "sha256=" + hmac.new(
        SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert [(c["kind"], c["namespaces"]) for c in hook.json()["changes"]] == [("newly-non-compliant", ["prod"])]
    assert hook.json()["cluster"] == "demo"
    assert SECRET not in log_path.read_text()


def test_a_redirect_is_not_followed_and_a_4xx_is_not_retried(http_receiver) -> None:
    """A receiver (or whoever answers for it) cannot send the signed body or the token elsewhere."""
    from scanner.notify.config import Receiver
    from scanner.notify.send import post

    r = Receiver("hook", "webhook", f"{http_receiver.url}/hook", http_receiver.url, b"k", timeout=2, retry_for=5)
    http_receiver.fail_next(1, 307)
    assert post(r, b"{}", {}) is False
    http_receiver.fail_next(1, 403)
    assert post(r, b"{}", {}) is False
    assert [q.path for q in http_receiver.requests] == ["/hook", "/hook"]  # one attempt each, no retry
    http_receiver.fail_next(1, 429)
    assert post(r, b"{}", {}, sleep=lambda _s: None) is True  # 429 is transient: retried
