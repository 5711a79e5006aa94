"""Deliver notifications of new violations after a scan (issue 24): payloads, retries, dedup state.

:func:`after_scan` is called by the scan use case once a scan's verdicts are stored. For each
receiver it plans (:func:`scanner.notify.changes.plan`) against that receiver's dedup state in the
store, marks what it is about to send ``pending``, sends with retries (exponential backoff, all
attempts within the receiver's ``retry_for``; a connection error, a timeout, 429 or 5xx is retried,
another status is not), and marks it ``sent`` (resolved ones are forgotten) once the receiver
answered 2xx. Nothing here raises: a failed delivery is logged (by receiver name and host, never the
URL or a secret) and counted in the scan's stats as ``notifications_failed`` (the metric
``sigaudit_notifications_failed``); the pending rows are sent again after the next scan.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from scanner import __version__
from scanner.clock import Clock, system_clock
from scanner.errors import StoreError
from scanner.models import ScanResult
from scanner.notify.changes import Change, ChangeKind, Diff, Plan, Sent, diff, plan
from scanner.notify.config import NotifyConfig, Receiver

if TYPE_CHECKING:
    from scanner.store import Store

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SIGNATURE_HEADER = "X-Sigaudit-Signature-256"
ALERTNAME = "SigauditImageNotCompliant"
MAX_TEXT = 1024  # characters of one reason / image in a payload
GRACE = 5.0  # seconds past a receiver's retry_for before its delivery thread is abandoned


@dataclass(frozen=True, slots=True)
class Delivery:
    receiver: str
    sent: int  # changes sent (firing)
    resolved: int
    ok: bool


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _cut(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _change_json(c: Change) -> dict[str, Any]:
    return {"kind": c.kind.value, "status": c.status.value, "image": _cut(c.image), "digest": c.digest,
            "rule": c.rule, "reason": _cut(c.reason), "namespaces": list(c.namespaces),
            "more_namespaces": c.more_namespaces, "workloads": list(c.workloads),
            "not_after": _iso(c.not_after) if c.not_after else None, "key": c.key}


def webhook_body(cluster: str, scan_id: int | None, p: Plan, max_items: int, now: datetime) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION, "source": "sigaudit", "sigaudit_version": __version__,
        "cluster": cluster, "scan_id": scan_id, "sent_at": _iso(now),
        "changes": [_change_json(c) for c in p.send[:max_items]], "more_changes": max(0, len(p.send) - max_items),
        "resolved": [s.key for s in p.resolve[:max_items]], "more_resolved": max(0, len(p.resolve) - max_items),
    }


def sign(secret: bytes, body: bytes) -> str:
    """The webhook signature header's value: ``sha256=`` and the HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(cluster: str, scan_id: int | None, p: Plan, max_items: int) -> dict[str, Any]:
    lines = [f"*sigaudit* — cluster `{_slack_escape(cluster)}`, scan {scan_id}: "
             f"{len(p.send)} violation(s) to see, {len(p.resolve)} resolved"]
    for c in p.send[:max_items]:
        ns = ", ".join(c.namespaces) + (f" (+{c.more_namespaces})" if c.more_namespaces else "")
        lines.append(f"• *{c.kind.value}* ({c.status.value}) `{_slack_escape(_cut(c.image))}` in "
                     f"{_slack_escape(ns)}: {_slack_escape(_cut(c.reason))}")
    if len(p.send) > max_items:
        lines.append(f"… and {len(p.send) - max_items} more")
    return {"text": "\n".join(lines)}


def _alert_labels(cluster: str, key: str, kind: ChangeKind, namespace: str,
                  extra: Sequence[tuple[str, str]]) -> dict[str, str]:
    """An alert's identity: only what the dedup state can rebuild (the subject key, the kind's
    severity, the namespace), so that the resolution of an alert names the very alert that fired."""
    rule, digest = _subject(key)
    labels = dict(extra)
    labels.update({"alertname": ALERTNAME, "severity": kind.severity, "cluster": cluster, "namespace": namespace,
                   "rule": rule, "digest": digest, "sigaudit_key": hashlib.sha256(key.encode()).hexdigest()[:16]})
    return labels


def alertmanager_body(cluster: str, r: Receiver, p: Plan, max_items: int, now: datetime) -> list[dict[str, Any]]:
    """One alert per (violation, namespace), so namespace routes apply; firing ones end at now +
    alert_ttl (re-sent before then while the violation lasts), resolved ones at now."""
    alerts: list[dict[str, Any]] = []
    ends = _iso(now + timedelta(seconds=r.alert_ttl))
    for c in p.send[:max_items]:
        for ns in c.namespaces or ("",):
            alerts.append({
                "labels": _alert_labels(cluster, c.key, c.kind, ns, r.labels),
                "annotations": {"summary": f"{c.kind.value}: {_cut(c.image)} ({c.status.value})",
                                "description": _cut(c.reason), "kind": c.kind.value, "status": c.status.value,
                                "image": _cut(c.image),
                                "workloads": _cut(", ".join(w for w in c.workloads if w.startswith(ns + "/")))},
                "startsAt": _iso(now), "endsAt": ends,
            })
    firing = {tuple(sorted(a["labels"].items())) for a in alerts}
    for s in (*p.resolve[:max_items], *p.replaced):
        for ns in s.namespaces or ("",):
            labels = _alert_labels(cluster, s.key, s.kind, ns, r.labels)
            if tuple(sorted(labels.items())) in firing:
                continue  # the same alert fires on (a replaced change in a namespace it still covers)
            alerts.append({"labels": labels,
                           "annotations": {"summary": f"resolved: {s.kind.value}"},
                           "startsAt": _iso(s.sent_at), "endsAt": _iso(now)})
    return alerts


def _subject(key: str) -> tuple[str, str]:
    """(rule, digest) of a subject key (``rule|digest:…`` or ``rule|image:…``: no digest)."""
    rule, _, what = key.partition("|")
    kind, _, value = what.partition(":")
    return rule, value if kind == "digest" else ""


def _transient(status: int) -> bool:
    return status == 429 or status >= 500


def post(r: Receiver, body: bytes, headers: dict[str, str], *, url: str | None = None,
         sleep: Callable[[float], None] = time.sleep) -> bool:
    """POST with retries, all within ``r.retry_for`` (+ one attempt's timeout). No redirect is
    followed (it could carry the signed body or token elsewhere, or to plain http). True on 2xx.
    Each attempt's timeout is a wall-clock bound on the whole exchange (connect, TLS, status line and
    headers: :mod:`scanner.registry.deadline`), not httpx's per-read one, which a receiver that
    trickles its headers a byte at a time restarts for ever."""
    from scanner.registry import deadline as wall

    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=r.ca_file) if r.ca_file else True
    deadline = time.monotonic() + r.retry_for
    delay, attempt = 1.0, 0
    with wall.install(httpx.Client(verify=verify, follow_redirects=False, trust_env=False)) as client:
        while True:
            attempt += 1
            left = max(1.0, min(r.timeout, deadline - time.monotonic() + r.timeout))
            try:
                with wall.within(time.monotonic() + left, f"no answer within {left:g} s"), \
                        client.stream("POST", url or r.url, content=body, headers=headers,
                                      timeout=httpx.Timeout(left)) as resp:
                    status = resp.status_code
                if 200 <= status < 300:
                    return True
                log.warning("notification to %s (%s): HTTP %d (attempt %d)", r.name, r.where, status, attempt)
                if not _transient(status):
                    return False
            except httpx.HTTPError as exc:  # the message may hold the URL: the class name only
                log.warning("notification to %s (%s): %s (attempt %d)", r.name, r.where, type(exc).__name__, attempt)
            if time.monotonic() + delay > deadline:
                return False
            sleep(delay)
            delay = min(delay * 2, 30.0)


def _payload(cluster: str, scan_id: int | None, r: Receiver, p: Plan, max_items: int,
             now: datetime) -> tuple[str, bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json", "User-Agent": f"sigaudit/{__version__}"}
    if r.type == "alertmanager":
        if r.bearer_token:
            headers["Authorization"] = f"Bearer {r.bearer_token}"
        body = json.dumps(alertmanager_body(cluster, r, p, max_items, now)).encode()
        return r.url.rstrip("/") + "/api/v2/alerts", body, headers
    if r.type == "slack":
        return r.url, json.dumps(slack_body(cluster, scan_id, p, max_items)).encode(), headers
    body = json.dumps(webhook_body(cluster, scan_id, p, max_items, now)).encode()
    assert r.secret is not None
    headers[SIGNATURE_HEADER] = sign(r.secret, body)
    return r.url, body, headers


def _state_of(store: Store, cluster: str, r: Receiver) -> dict[str, Sent]:
    return {k: Sent(n.key, n.fingerprint, ChangeKind(n.kind), n.namespaces, n.state == "pending", n.sent_at)
            for k, n in store.notified(cluster, r.name).items() if n.kind in ChangeKind._value2member_map_}


def _deliver(store: Store, d: Diff, scan_id: int | None, r: Receiver, config: NotifyConfig, now: datetime,
             post_fn: Callable[..., bool]) -> Delivery:
    from scanner.store import Notified

    state = _state_of(store, d.cluster, r)
    refresh = timedelta(seconds=r.alert_ttl / 2) if r.type == "alertmanager" else None
    p = plan(d, state, now, refresh_after=refresh)
    if p.forget:
        store.record_notified(d.cluster, r.name, delete=p.forget)
    if p.empty:
        return Delivery(r.name, 0, 0, True)
    # A webhook or Slack message carries the top max_items and counts the rest (they are told, as a
    # count); Alertmanager gets every alert, max_items violations per request, so each one can resolve.
    send, resolve = p.send, p.resolve
    rows = [Notified(c.key, c.fingerprint, c.kind.value, "pending", c.namespaces, scan_id or 0, now) for c in send]
    store.record_notified(d.cluster, r.name, upsert=rows)
    n = config.max_items
    if r.type == "alertmanager":
        batches = [Plan(send[i:i + n], (), ()) for i in range(0, len(send), n)]
        batches += [Plan((), resolve[i:i + n], ()) for i in range(0, len(resolve), n)]
        batches += [Plan((), (), p.replaced)] if p.replaced else []
    else:
        batches = [p]
    ok = True
    for batch in batches:
        url, body, headers = _payload(d.cluster, scan_id, r, batch, n, now)
        ok = post_fn(r, body, headers, url=url) and ok
        if not ok:
            break
    if ok:
        store.record_notified(d.cluster, r.name, upsert=[Notified(x.key, x.fingerprint, x.kind, "sent", x.namespaces,
                                                                  x.scan_id, x.sent_at) for x in rows],
                              delete=[s.key for s in resolve])
        log.info("notified %s (%s): %d violation(s), %d resolved", r.name, r.where, len(send), len(resolve))
    else:
        log.error("notification to %s (%s) failed: %d violation(s) will be sent again after the next scan",
                  r.name, r.where, len(send))
    return Delivery(r.name, len(send), len(resolve), ok)


def after_scan(store: Store, config: NotifyConfig, result: ScanResult, scan_id: int, *,
               clock: Clock = system_clock, post_fn: Callable[..., bool] = post) -> dict[str, int]:
    """Notify every receiver of ``config`` about scan ``scan_id`` (stored, finished). Never raises;
    returns ``{receiver: 1 if its delivery failed else 0}`` (the scan's ``notifications_failed``)."""
    failed = {r.name: 1 for r in config.receivers}
    try:
        prev_id = store.previous_scan_id(scan_id)
        previous = store.load_scan(prev_id) if prev_id is not None else None
        d = diff(previous, result, include_expiring=config.expiring)
    except StoreError as exc:
        log.error("notifications: cannot read the previous scan: %s", exc.diagnostics())
        return failed
    except Exception:
        log.exception("notifications: cannot compute the changes of scan %d", scan_id)
        return failed
    now = clock()
    outcomes: dict[str, Delivery] = {}

    def run(r: Receiver) -> None:
        try:
            outcomes[r.name] = _deliver(store, d, scan_id, r, config, now, post_fn)
        except StoreError as exc:
            log.error("notification to %s: %s", r.name, exc.diagnostics())
        except Exception:  # a bug must not fail the scan, whose verdicts are stored already
            log.exception("notification to %s failed", r.name)

    threads = [threading.Thread(target=run, args=(r,), name=f"notify-{r.name}", daemon=True)
               for r in config.receivers]
    for t in threads:
        t.start()
    started = time.monotonic()
    for r, t in zip(config.receivers, threads, strict=True):
        t.join(max(0.0, started + r.retry_for + r.timeout + GRACE - time.monotonic()))
        if t.is_alive():
            log.error("notification to %s (%s) did not finish within its bound; left pending", r.name, r.where)
    for name, outcome in list(outcomes.items()):
        if outcome.ok:
            failed[name] = 0
    return failed
