"""scanner.notify.changes: what became non-compliant between two scans, and what one receiver is sent.

Pure: scans are built from the models, the dedup state is a dict, the clock a datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scanner.models import (
    ContainerRef,
    ContainerType,
    ExemptionKind,
    ExemptionRef,
    ImageReference,
    Outcome,
    RunningImage,
    ScanResult,
    ScanState,
    SignatureFailure,
    SignatureResult,
    Status,
    UnresolvedImage,
    Verdict,
    Workload,
)
from scanner.notify.changes import ChangeKind, Sent, diff, plan, subject_key

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _img(name: str, *namespaces: str) -> RunningImage:
    ctrs = tuple(ContainerRef(ns, f"{name}-pod", "c", ContainerType.CONTAINER, name, None, Workload("Deployment", name))
                 for ns in (namespaces or ("shop",)))
    return RunningImage(ImageReference("reg.example", name, "1", "sha256:" + name[0] * 64), ctrs)


def _sig(ok: bool = True) -> tuple[SignatureResult, ...]:
    return (SignatureResult("cosign", "r/0", Outcome.PASSED if ok else Outcome.FAILED, "x",
                            SignatureFailure.NONE if ok else SignatureFailure.INVALID),)


def v(name: str, status: Status, **kw: object) -> Verdict:
    kw.setdefault("rule", "r")
    kw.setdefault("signatures", _sig(status is Status.VERIFIED))
    return Verdict(_img(name, *kw.pop("ns", ())), status, (f"{name} is {status.value}",), **kw)  # type: ignore[arg-type]


def scan(*verdicts: Verdict, state: ScanState = ScanState.COMPLETE, at: datetime = T0) -> ScanResult:
    return ScanResult("c1", at, at + timedelta(seconds=5), state, verdicts, "sha256:p")


def kinds(d: object) -> dict[str, ChangeKind]:
    return {c.image.split("/")[1].split(":")[0]: c.kind for c in d.new}  # type: ignore[attr-defined]


def test_each_kind_of_change_is_named() -> None:
    lapsed = ExemptionRef(ExemptionKind.POLICY, "waived", T0 - timedelta(days=1), lapsed=True)
    prev = scan(v("aaa", Status.VERIFIED), v("bbb", Status.VERIFIED), v("ccc", Status.VERIFIED),
                v("ddd", Status.INVALID), v("eee", Status.EXEMPT), v("fff", Status.VERIFIED),
                v("ggg", Status.UNSIGNED, signatures=()), v("hhh", Status.VERIFIED))
    cur = scan(v("aaa", Status.UNSIGNED, signatures=()),  # signatures gone
               v("bbb", Status.EXPIRED), v("ccc", Status.REVOKED),
               v("ddd", Status.INVALID),  # the same violation: no news
               v("eee", Status.INVALID, exemptions=(lapsed,)),
               v("fff", Status.VERIFIED, expiring=True, not_after=T0 + timedelta(days=3)),
               v("ggg", Status.UNSIGNED, signatures=()),  # still unsigned: no news
               v("hhh", Status.VERIFIED),  # still fine
               v("iii", Status.UNSIGNED, signatures=()),  # a new workload, unsigned
               v("jjj", Status.INVALID, warn_only=True))  # warn mode: not a violation
    d = diff(prev, cur)
    assert kinds(d) == {"aaa": ChangeKind.SIGNATURE_GONE, "bbb": ChangeKind.EXPIRED, "ccc": ChangeKind.REVOKED,
                        "eee": ChangeKind.EXEMPTION_LAPSED, "fff": ChangeKind.EXPIRING, "iii": ChangeKind.NEW}
    assert set(d.active) >= {subject_key(x) for x in cur.verdicts if x.image.display.split("/")[1][0] in "dg"}
    assert next(c.kind for c in d.new) is ChangeKind.REVOKED  # most severe first


def test_no_previous_scan_is_a_baseline_and_expiring_can_be_off() -> None:
    cur = scan(v("aaa", Status.UNSIGNED, signatures=()),
               v("bbb", Status.VERIFIED, expiring=True, not_after=T0 + timedelta(days=1)))
    assert diff(None, cur).new == ()
    assert diff(None, cur).baseline
    d = diff(scan(), cur, include_expiring=False)
    assert kinds(d) == {"aaa": ChangeKind.NEW}


def test_error_is_a_violation_and_flapping_between_violations_is_not_news() -> None:
    d = diff(scan(v("aaa", Status.VERIFIED)), scan(v("aaa", Status.ERROR)))
    assert kinds(d) == {"aaa": ChangeKind.NEW}
    d = diff(scan(v("aaa", Status.ERROR)), scan(v("aaa", Status.INVALID)))
    assert d.new == ()


def test_unresolved_images_are_subjects_too() -> None:
    ctr = ContainerRef("shop", "p", "c", ContainerType.CONTAINER, "x:1", None, Workload("Pod", "p"))
    u = Verdict(UnresolvedImage(None, "x:1", (ctr,), "not started"), Status.ERROR, ("unknown digest",))
    d = diff(scan(), scan(u))
    assert [c.key for c in d.new] == ["|image:x:1"]


def _sent(d: object, now: datetime, pending: bool = False) -> dict[str, Sent]:
    return {c.key: Sent(c.key, c.fingerprint, c.kind, c.namespaces, pending, now) for c in d.new}  # type: ignore[attr-defined]


def test_sent_once_across_scans_resent_on_change_and_resolved_once() -> None:
    s1 = scan(v("aaa", Status.VERIFIED), v("bbb", Status.VERIFIED))
    s2 = scan(v("aaa", Status.UNSIGNED, signatures=()), v("bbb", Status.VERIFIED))
    d2 = diff(s1, s2)
    p2 = plan(d2, {}, T0)
    assert [c.kind for c in p2.send] == [ChangeKind.SIGNATURE_GONE]
    state = _sent(d2, T0)
    # the next scan compares with s2: nothing new, nothing resent
    s3 = scan(v("aaa", Status.UNSIGNED, signatures=()), v("bbb", Status.VERIFIED))
    assert plan(diff(s2, s3), state, T0).empty
    # a partial scan after s2 is compared with s1 again (the previous *complete* scan): the dedup state holds
    s3p = scan(v("aaa", Status.UNSIGNED, signatures=()), state=ScanState.PARTIAL)
    assert plan(diff(s1, s3p), state, T0).empty
    # it changes (now in a second namespace): sent again
    s4 = scan(v("aaa", Status.REVOKED, ns=("shop", "pay")), v("bbb", Status.VERIFIED))
    p4 = plan(diff(s3, s4), state, T0)
    assert [c.kind for c in p4.send] == [ChangeKind.REVOKED]
    assert [s.key for s in p4.replaced] == [subject_key(s2.verdicts[0])]  # the old labels are resolved
    state = _sent(diff(s3, s4), T0)
    # fixed: resolved once, then nothing
    s5 = scan(v("aaa", Status.VERIFIED), v("bbb", Status.VERIFIED))
    p5 = plan(diff(s4, s5), state, T0)
    assert [s.key for s in p5.resolve] == list(state) and p5.send == ()
    assert plan(diff(s4, s5), {}, T0).empty


def test_gone_resolves_only_after_a_complete_scan() -> None:
    s1 = scan(v("aaa", Status.VERIFIED))
    s2 = scan(v("aaa", Status.INVALID))
    state = _sent(diff(s1, s2), T0)
    partial = scan(state=ScanState.PARTIAL)  # aaa not seen: maybe its namespace could not be read
    assert plan(diff(s2, partial), state, T0).resolve == ()
    assert len(plan(diff(s2, scan()), state, T0).resolve) == 1


def test_pending_is_resent_while_it_lasts_and_forgotten_when_over() -> None:
    s1 = scan(v("aaa", Status.VERIFIED))
    s2 = scan(v("aaa", Status.INVALID))
    pending = _sent(diff(s1, s2), T0, pending=True)
    s3 = scan(v("aaa", Status.INVALID))
    p3 = plan(diff(s2, s3), pending, T0)  # no longer "new" against s2, but never delivered
    assert [c.kind for c in p3.send] == [ChangeKind.NEW]
    p4 = plan(diff(s2, scan(v("aaa", Status.VERIFIED))), pending, T0)
    assert p4.send == () and p4.resolve == () and p4.forget == tuple(pending)


def test_refresh_after_resends_a_lasting_violation() -> None:
    s1, s2 = scan(v("aaa", Status.VERIFIED)), scan(v("aaa", Status.INVALID))
    state = _sent(diff(s1, s2), T0)
    assert plan(diff(s2, s2), state, T0 + timedelta(hours=11), refresh_after=timedelta(hours=12)).empty
    again = plan(diff(s2, s2), state, T0 + timedelta(hours=13), refresh_after=timedelta(hours=12))
    assert [c.kind for c in again.send] == [ChangeKind.NEW]


def test_long_subjects_never_share_a_key() -> None:
    """Two unresolved images a tenant wrote with the same 600-character prefix are two subjects: the
    second is notified even though the first was already."""
    def unresolved(image: str) -> Verdict:
        ctr = ContainerRef("shop", "p", "c", ContainerType.CONTAINER, image, None, Workload("Pod", "p"))
        return Verdict(UnresolvedImage(None, image, (ctr,), "unparseable"), Status.ERROR, ("unknown digest",))

    first, second = unresolved("x" * 600 + "a"), unresolved("x" * 600 + "b")
    assert subject_key(first) != subject_key(second) and len(subject_key(first)) <= 512
    d1 = diff(scan(), scan(first))
    state = _sent(d1, T0)
    d2 = diff(scan(first), scan(first, second))
    assert [c.key for c in plan(d2, state, T0).send] == [subject_key(second)]
