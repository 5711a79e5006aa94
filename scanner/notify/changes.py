"""What became non-compliant between two scans of a cluster, and what a receiver still has to be told.

Both functions are pure (scan results, stored state and a clock in; plain models out), so every
transition is unit-tested without a database or a socket:

* :func:`diff` compares the previous complete scan with the current one: the violations that
  appeared (newly non-compliant, signature disappeared, newly expired, newly revoked, exemption
  lapsed, expiring soon), every violation the current scan holds (to keep or resend), and which
  subjects the current scan judged compliant (to resolve).
* :func:`plan` turns that diff and one receiver's dedup state into what to send: a change once, a
  changed change again, a pending (undelivered) one again while it lasts, a resolution once.

A subject is one verdict: the rule and the running digest (or, for a container whose digest is not
known, the image as written). Warn-mode verdicts are not violations (they are not counted
non-compliant) and are not notified; an ``error`` verdict is a violation (never compliant).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from scanner.models import RunningImage, ScanResult, ScanState, Status, Verdict

MAX_NAMESPACES = 20  # namespaces named per change (an image shared by every namespace is one change)
MAX_WORKLOADS = 10  # workloads named per change


class ChangeKind(enum.StrEnum):
    NEW = "newly-non-compliant"
    SIGNATURE_GONE = "signature-disappeared"
    EXPIRED = "newly-expired"
    REVOKED = "newly-revoked"
    EXEMPTION_LAPSED = "exemption-lapsed"
    EXPIRING = "expiring-soon"
    ONGOING = "non-compliant"  # a violation that did not appear in this scan (a pending resend)

    @property
    def severity(self) -> str:
        return "warning" if self is ChangeKind.EXPIRING else "critical"


@dataclass(frozen=True, slots=True)
class Change:
    """One violation as receivers see it. ``fingerprint`` covers what a receiver is told that matters
    (kind, status, rule, expiry, namespaces), not the reasons' wording or pod names."""

    key: str
    kind: ChangeKind
    status: Status
    image: str
    digest: str | None
    rule: str | None
    reason: str
    namespaces: tuple[str, ...]
    workloads: tuple[str, ...]  # "namespace/Kind/name"
    not_after: datetime | None
    more_namespaces: int = 0  # beyond MAX_NAMESPACES

    @property
    def fingerprint(self) -> str:
        facts = [self.kind.value, self.status.value, self.rule or "", self.digest or "", self.image,
                 self.not_after.isoformat() if self.not_after else "", list(self.namespaces), self.more_namespaces]
        return hashlib.sha256(json.dumps(facts, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Diff:
    cluster: str
    new: tuple[Change, ...]  # appeared since the previous complete scan, most severe first
    active: Mapping[str, Change]  # every violation of the current scan (new ones with their kind)
    judged_ok: frozenset[str]  # subjects the current scan judged compliant and not expiring
    complete: bool  # the current scan saw the whole cluster: a subject it did not see is gone
    baseline: bool  # there was no previous complete scan: nothing is "new" yet


MAX_KEY = 512  # the dedup state's column


def subject_key(v: Verdict) -> str:
    """The subject's name in the dedup state. A longer one (an image text or rule a tenant made long)
    ends in a hash of the whole, so that two subjects never share a key (and one cannot hide behind
    the other's notification)."""
    what = f"digest:{v.digest}" if isinstance(v.image, RunningImage) else f"image:{v.image.display}"
    key = f"{v.rule or ''}|{what}"
    if len(key) <= MAX_KEY:
        return key
    return key[: MAX_KEY - 72] + "…#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _alerting(v: Verdict) -> bool:
    return not v.compliant or (v.expiring and v.status.compliant)


def _kind(v: Verdict, p: Verdict | None) -> ChangeKind | None:
    """How ``v`` (current) differs from ``p`` (the same subject in the previous complete scan), or
    None if nothing worth a notification appeared."""
    if v.compliant:
        if v.expiring and v.status.compliant and not (p is not None and p.expiring and p.compliant):
            return ChangeKind.EXPIRING
        return None
    if p is not None and not p.compliant and p.status is v.status:
        return None  # the same violation as before
    if v.status is Status.REVOKED:
        return ChangeKind.REVOKED
    if v.status is Status.EXPIRED:
        return ChangeKind.EXPIRED
    if any(e.lapsed for e in v.exemptions) and (p is None or p.status is Status.EXEMPT):
        return ChangeKind.EXEMPTION_LAPSED
    if v.status is Status.UNSIGNED and p is not None and (p.signatures or p.status is Status.VERIFIED):
        return ChangeKind.SIGNATURE_GONE
    if p is None or p.compliant:
        return ChangeKind.NEW
    return None  # from one violation to another of no greater weight (e.g. error <-> invalid): no news


def _ongoing(v: Verdict) -> ChangeKind:
    if v.compliant:
        return ChangeKind.EXPIRING
    return {Status.REVOKED: ChangeKind.REVOKED, Status.EXPIRED: ChangeKind.EXPIRED}.get(v.status, ChangeKind.ONGOING)


def change_of(v: Verdict, kind: ChangeKind) -> Change:
    namespaces = sorted({c.namespace for c in v.image.containers})
    workloads = sorted({f"{c.namespace}/{c.workload.kind}/{c.workload.name}" for c in v.image.containers})
    return Change(
        key=subject_key(v), kind=kind, status=v.status, image=v.image.display, digest=v.digest, rule=v.rule,
        reason=v.headline, namespaces=tuple(namespaces[:MAX_NAMESPACES]), workloads=tuple(workloads[:MAX_WORKLOADS]),
        not_after=v.not_after, more_namespaces=max(0, len(namespaces) - MAX_NAMESPACES),
    )


_ORDER = {k: i for i, k in enumerate((ChangeKind.REVOKED, ChangeKind.SIGNATURE_GONE, ChangeKind.EXEMPTION_LAPSED,
                                      ChangeKind.NEW, ChangeKind.EXPIRED, ChangeKind.ONGOING, ChangeKind.EXPIRING))}


def ordered(changes: list[Change]) -> tuple[Change, ...]:
    """Most severe first, then by image: the top N of a bounded payload are the ones that matter."""
    return tuple(sorted(changes, key=lambda c: (_ORDER[c.kind], c.image, c.key)))


def diff(previous: ScanResult | None, current: ScanResult, *, include_expiring: bool = True) -> Diff:
    """What appeared in ``current`` since ``previous`` (the cluster's previous complete scan; None:
    there is none, and the current scan is the baseline: nothing is new)."""
    prev = {subject_key(v): v for v in previous.verdicts} if previous is not None else {}
    new: list[Change] = []
    active: dict[str, Change] = {}
    judged_ok: set[str] = set()
    for v in current.verdicts:
        key = subject_key(v)
        if not _alerting(v) or (v.compliant and not include_expiring):
            if v.compliant:
                judged_ok.add(key)
            continue
        kind = _kind(v, prev.get(key)) if previous is not None else None
        if kind is ChangeKind.EXPIRING and not include_expiring:
            kind = None
        change = change_of(v, kind if kind is not None else _ongoing(v))
        active[key] = change
        if kind is not None:
            new.append(change)
    return Diff(current.cluster, ordered(new), active, frozenset(judged_ok - active.keys()),
                current.state is ScanState.COMPLETE, previous is None)


@dataclass(frozen=True, slots=True)
class Sent:
    """What a receiver was told about one subject (a row of the dedup state)."""

    key: str
    fingerprint: str
    kind: ChangeKind
    namespaces: tuple[str, ...]
    pending: bool  # not (yet) delivered
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class Plan:
    send: tuple[Change, ...]  # new or changed, or pending, or refreshed: to send (firing)
    resolve: tuple[Sent, ...]  # told before, over now: to send as resolved, then forget
    replaced: tuple[Sent, ...]  # told before under other labels (severity, namespaces): resolve those labels
    forget: tuple[str, ...] = ()  # pending (never delivered) and over: drop from the state, send nothing

    @property
    def empty(self) -> bool:
        return not (self.send or self.resolve)


def plan(d: Diff, state: Mapping[str, Sent], now: datetime, *, refresh_after: timedelta | None = None) -> Plan:
    """What one receiver must be sent after the scan of ``d``, given what it was told (``state``).

    * a new change whose fingerprint the receiver has not had: sent (once: the next scan finds it in
      the state with the same fingerprint);
    * a violation still present whose delivery is pending (failed or interrupted): sent again, as is
      one last sent more than ``refresh_after`` ago (Alertmanager forgets an alert at its endsAt);
    * a subject told before that the current scan judged compliant, or that a complete scan no longer
      saw: resolved, once. A partial scan resolves nothing it did not see.
    """
    send: dict[str, Change] = {}
    replaced: list[Sent] = []
    for change in d.new:
        old = state.get(change.key)
        if old is None or old.fingerprint != change.fingerprint or old.pending:
            send[change.key] = change
            if old is not None and not old.pending and (old.kind.severity != change.kind.severity
                                                        or old.namespaces != change.namespaces):
                replaced.append(old)
    for key, old in state.items():
        if key in send or key not in d.active:
            continue
        stale = refresh_after is not None and now - old.sent_at >= refresh_after
        if old.pending or stale:
            current = d.active[key]
            send[key] = Change(current.key, old.kind, current.status, current.image, current.digest, current.rule,
                               current.reason, current.namespaces, current.workloads, current.not_after,
                               current.more_namespaces) if current.kind is ChangeKind.ONGOING else current
    over = [old for key, old in state.items() if key not in d.active and (key in d.judged_ok or d.complete)]
    return Plan(ordered(list(send.values())),
                tuple(sorted((o for o in over if not o.pending), key=lambda s: s.key)),
                tuple(sorted(replaced, key=lambda s: s.key)),
                tuple(sorted(o.key for o in over if o.pending)))
