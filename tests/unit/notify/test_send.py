"""scanner.notify.config and the payloads of scanner.notify.send: bounded, signed, escaped, secret-free."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.models import Status
from scanner.notify import config as notify_config
from scanner.notify.changes import Change, ChangeKind, Plan, Sent
from scanner.notify.send import alertmanager_body, sign, slack_body, webhook_body

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def change(i: int, kind: ChangeKind = ChangeKind.NEW, ns: tuple[str, ...] = ("shop",), image: str = "") -> Change:
    digest = "sha256:" + f"{i:064x}"
    return Change(f"r|digest:{digest}", kind, Status.UNSIGNED, image or f"reg/app{i}@{digest}", digest, "r",
                  "no signature", ns, tuple(f"{n}/Deployment/app{i}" for n in ns), None)


def test_webhook_body_is_bounded_with_a_count_and_signed_over_its_bytes() -> None:
    p = Plan(tuple(change(i) for i in range(7)), (), ())
    body = webhook_body("c1", 3, p, 5, T0)
    assert len(body["changes"]) == 5 and body["more_changes"] == 2
    raw = json.dumps(body).encode()
    assert sign(b"k", raw) == "sha256=" + hmac.new(b"k", raw, hashlib.sha256).hexdigest()
    assert sign(b"k", raw + b" ") != sign(b"k", raw)


def test_slack_text_cannot_mention_everyone() -> None:
    p = Plan((change(1, image="<!channel> <https://evil|click>"),), (), ())
    text = slack_body("c<!here>", 1, p, 10)["text"]
    assert "<!channel>" not in text and "<!here>" not in text and "<https://evil" not in text


def test_alertmanager_resolution_names_the_alert_that_fired() -> None:
    r = notify_config.Receiver("am", "alertmanager", "http://127.0.0.1:9093", "http://127.0.0.1:9093",
                               labels=(("team", "x"),))
    c = change(1, ns=("shop", "prod"))
    fired = alertmanager_body("c1", r, Plan((c,), (), ()), 10, T0)
    sent = Sent(c.key, c.fingerprint, c.kind, c.namespaces, False, T0)
    resolved = alertmanager_body("c1", r, Plan((), (sent,), ()), 10, T0 + timedelta(hours=1))
    assert sorted(json.dumps(a["labels"], sort_keys=True) for a in fired) == \
        sorted(json.dumps(a["labels"], sort_keys=True) for a in resolved)
    assert {a["labels"]["namespace"] for a in fired} == {"shop", "prod"}
    assert all(a["endsAt"] == "2026-12-01T11:00:00Z" for a in resolved)
    assert all(a["endsAt"] > a["startsAt"] for a in fired)
    # a replaced change (now expiring → critical) resolves the old labels but never the ones firing now
    worse = Change(c.key, ChangeKind.REVOKED, Status.REVOKED, c.image, c.digest, c.rule, "revoked", ("shop",),
                   c.workloads, None)
    old = Sent(c.key, "f", ChangeKind.EXPIRING, ("shop",), False, T0)
    both = alertmanager_body("c1", r, Plan((worse,), (), (old,)), 10, T0)
    assert [a["labels"]["severity"] for a in both] == ["critical", "warning"]


def _parse(tmp: Path, receivers: list[dict[str, object]]) -> notify_config.NotifyConfig:
    return notify_config.parse({"receivers": receivers}, str(tmp / "notify.yaml"))


@pytest.mark.parametrize(("receiver", "needle"), [
    ({"name": "h", "type": "webhook", "url": "http://hooks.example/x", "secret_env": "S"}, "plain http"),
    ({"name": "h", "type": "webhook", "url": "http://127.0.0.1.evil.example/x", "secret_env": "S"}, "plain http"),
    ({"name": "h", "type": "webhook", "url": "http://[::ffff:127.0.0.1]/x", "secret_env": "S"}, "plain http"),
    ({"name": "h", "type": "webhook", "url": "https://hooks.example/x"}, "signed"),
    ({"name": "h", "type": "webhook", "url": "https://hooks.example/x", "secret_env": "UNSET_S"}, "not set"),
    ({"name": "h", "type": "alertmanager", "url": "https://u:topsecret@am.example"}, "no credentials"),
    ({"name": "h", "type": "alertmanager", "url": "ftp://am.example"}, "https"),
    ({"name": "h", "type": "alertmanager", "url": "https://am.example", "labels": {"severity": "low"}}, "label"),
    ({"name": "h", "type": "slack", "url": "https://x.example", "retry_for": "1 week"}, "duration"),
    ({"name": "H/x", "type": "slack", "url": "https://hooks.slack.example/x"}, "name"),
    ({"name": "h", "type": "slack", "url": "https://hooks.slack.example/x", "url_env": "S"}, "exactly one"),
])
def test_unsafe_or_incomplete_receivers_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    receiver: dict[str, object], needle: str) -> None:
    monkeypatch.setenv("S", "s3cr3t")
    monkeypatch.delenv("UNSET_S", raising=False)
    with pytest.raises(ConfigError) as err:
        _parse(tmp_path, [receiver])
    assert needle in str(err.value)
    assert "topsecret" not in str(err.value) and "s3cr3t" not in str(err.value)


def test_secrets_are_read_once_and_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s3cr3t-hmac")
    (tmp_path / "slack").write_text("https://hooks.slack.example/services/T/B/s3cr3t-path\n")
    cfg = _parse(tmp_path, [
        {"name": "hook", "type": "webhook", "url": "https://hooks.example/x", "secret_env": "HOOK_SECRET"},
        {"name": "chat", "type": "slack", "url_file": str(tmp_path / "slack")},
        {"name": "am", "type": "alertmanager", "url": "http://127.0.0.1:9093", "bearer_token_env": "HOOK_SECRET",
         "alert_ttl": "1h30m", "retry_for": "2m", "timeout": 5},
    ])
    hook, chat, am = cfg.receivers
    assert hook.secret == b"s3cr3t-hmac" and am.bearer_token == "s3cr3t-hmac"
    assert (am.alert_ttl, am.retry_for, am.timeout) == (5400.0, 120.0, 5.0)
    assert chat.url.endswith("s3cr3t-path") and chat.where == "https://hooks.slack.example"
    assert "s3cr3t" not in repr(cfg)
    with pytest.raises(ConfigError, match="unique"):
        _parse(tmp_path, [{"name": "a", "type": "slack", "url": "https://x.example"}] * 2)


def test_notify_file_errors_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    for text in ("[", "- a\n", "receivers: []\n", "receivers: [{name: a, type: pager, url: 'https://x'}]\n"):
        path.write_text(text)
        with pytest.raises(ConfigError):
            notify_config.load(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        notify_config.load(str(tmp_path / "missing.yaml"))


def test_a_store_failure_is_a_failed_delivery_never_the_scans(caplog: pytest.LogCaptureFixture) -> None:
    from scanner.errors import StoreError
    from scanner.models import ScanResult, ScanState
    from scanner.notify.send import after_scan

    class BrokenStore:
        def previous_scan_id(self, scan_id: int) -> int:
            raise StoreError("database is locked")

    cfg = notify_config.NotifyConfig((notify_config.Receiver("hook", "webhook", "http://127.0.0.1:9/x",
                                                             "http://127.0.0.1:9", b"k"),))
    result = ScanResult("c1", T0, T0, ScanState.COMPLETE, (), "sha256:p")
    posted: list[bytes] = []
    failed = after_scan(BrokenStore(), cfg, result, 2, clock=lambda: T0,  # type: ignore[arg-type]
                        post_fn=lambda *a, **k: posted.append(a[1]) or True)
    assert failed == {"hook": 1} and posted == []
    assert "database is locked" in caplog.text


def test_a_receiver_trickling_its_headers_cannot_hold_a_delivery_past_its_bound() -> None:
    # httpx's timeout is per read: a receiver sending a header byte every half second restarts it for ever.
    # The attempt's timeout is a wall-clock bound on the whole exchange.
    import socket
    import threading
    import time

    from scanner.notify.send import post

    stop = threading.Event()
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def trickle() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(0.3):
                    return
                try:
                    conn.send(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=trickle, daemon=True).start()
    r = notify_config.Receiver("slow", "webhook", f"http://127.0.0.1:{port}/hook", f"http://127.0.0.1:{port}",
                               b"s", timeout=1.0, retry_for=0.0)
    outcome: list[bool] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: outcome.append(post(r, b"{}", {}, sleep=lambda _s: None)), daemon=True)
    worker.start()
    worker.join(8)
    stop.set()
    srv.close()
    assert outcome == [False], "the delivery was still waiting for the trickled headers"
    assert time.monotonic() - started < 5
