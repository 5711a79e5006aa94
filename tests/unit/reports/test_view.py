"""The report's view model: changes since the previous scan, trend, exemptions register, grouping,
deterministic order and the caps that keep a 10,000-container report readable (never hiding a
non-compliant image). Pure: scans are built in memory."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from scanner.models import (
    ExemptionKind,
    ExemptionRef,
    ScanResult,
    Status,
    UnresolvedImage,
    Verdict,
)
from scanner.reports import view
from tests.harness.verdicts import GEN, T0, container, result, signature, verdict


def build(current: ScanResult, **kw: object) -> view.Report:
    return view.build_report(current, generated_at=GEN, generator_version="test", **kw)  # type: ignore[arg-type]


# -- changes since the previous scan ---------------------------------------------------------------


def test_changes_classify_each_digest_against_the_previous_scan() -> None:
    c = [container("shop", "web-1")]
    previous = result([
        verdict("a", Status.VERIFIED, c),  # will lose its signature
        verdict("b", Status.UNSIGNED, c),  # will be fixed
        verdict("same", Status.VERIFIED, c),  # unchanged
        verdict("gone", Status.INVALID, c),  # removed
        verdict("exempted", Status.EXEMPT, c),  # exemption lapses -> unsigned (not a signature loss)
    ], scan_id=1, at=T0 - timedelta(days=1))
    current = result([
        verdict("a", Status.UNSIGNED, c),
        verdict("b", Status.VERIFIED, c),
        verdict("same", Status.VERIFIED, c),
        verdict("new-bad", Status.UNSIGNED, c),
        verdict("new-good", Status.VERIFIED, c),
        verdict("exempted", Status.UNSIGNED, c),
    ])
    ch = build(current, previous=previous).changes
    refs = lambda rows: [r.reference.split("/")[-1] for r in rows]  # noqa: E731
    assert ch.available and ch.previous_scan_id == 1
    assert refs(ch.newly_non_compliant) == ["a:1.0", "exempted:1.0", "new-bad:1.0"]
    assert refs(ch.signature_disappeared) == ["a:1.0"]
    assert refs(ch.fixed) == ["b:1.0"]
    assert refs(ch.new_images) == ["new-bad:1.0", "new-good:1.0"]
    assert refs(ch.removed_images) == ["gone:1.0"]
    gone = ch.removed_images[0]
    assert (gone.before, gone.after, gone.evidence_id) == ("invalid", "", "")
    a = ch.signature_disappeared[0]
    assert (a.before, a.after) == ("verified", "unsigned") and a.evidence_id.startswith("img-")
    new_bad = next(r for r in ch.newly_non_compliant if "new-bad" in r.reference)
    assert new_bad.before == ""  # was not running
    assert ch.total == 8


def test_same_repository_new_digest_is_a_new_image_not_a_fix() -> None:
    c = [container("shop", "web-1")]
    previous = result([verdict("v1", Status.UNSIGNED, c, repo="team/web")], scan_id=1, at=T0 - timedelta(hours=1))
    current = result([verdict("v2", Status.VERIFIED, c, repo="team/web")])
    ch = build(current, previous=previous).changes
    assert ch.fixed == () and len(ch.new_images) == 1 and len(ch.removed_images) == 1


def test_no_previous_scan_means_no_changes_section() -> None:
    ch = build(result([verdict("a", Status.VERIFIED, [container("x", "p-1")])])).changes
    assert not ch.available and ch.total == 0


def test_unresolved_images_are_compared_by_their_text() -> None:
    unresolved = Verdict(UnresolvedImage(None, "busybox", (container("x", "p-1"),), "no imageID"), Status.ERROR,
                         ("running digest unknown",))
    previous = result([unresolved], scan_id=1, at=T0 - timedelta(hours=1))
    ch = build(result([unresolved]), previous=previous).changes
    assert ch.total == 0


# -- trend ----------------------------------------------------------------------------------------


def test_trend_places_ratios_oldest_first_and_marks_the_current_scan() -> None:
    history = [view.HistoryPoint(3, T0, 5, 10), view.HistoryPoint(1, T0 - timedelta(days=2), 10, 10),
               view.HistoryPoint(2, T0 - timedelta(days=1), 0, 10)]
    history.sort(key=lambda h: h.started_at)
    t = view.build_trend(history, current_id=3)
    assert [p.scan_id for p in t.points] == [1, 2, 3]
    top, bottom = t.top, t.top + t.plot_height
    assert t.points[0].y == top and t.points[1].y == bottom and t.points[2].y == (top + bottom) / 2
    assert [p.current for p in t.points] == [False, False, True]
    assert t.points[0].x < t.points[1].x < t.points[2].x
    assert t.polyline.count(",") == 3 and t.area
    assert t.first_label == (T0 - timedelta(days=2)).strftime("%Y-%m-%d %H:%M")


def test_report_trend_adds_an_unstored_scan_and_keeps_the_last_n() -> None:
    history = [view.HistoryPoint(i, T0 - timedelta(days=40 - i), i, 40) for i in range(1, 40)]
    r = build(result([verdict("a", Status.VERIFIED, [container("x", "p-1")])], scan_id=None), history=history)
    assert len(r.trend.points) == view.TREND_SCANS
    assert r.trend.points[-1].scan_id is None and r.trend.points[-1].percent == "100.0%"
    # a stored scan already in the history is not duplicated
    r2 = build(result([verdict("a", Status.VERIFIED, [container("x", "p-1")])], scan_id=39), history=history)
    assert [p.scan_id for p in r2.trend.points].count(39) == 1 and r2.trend.points[-1].current


def test_trend_numbers_are_plain_numbers() -> None:
    t = view.build_trend([view.HistoryPoint(1, T0, 0, 0)], 1)  # an empty scan is 100% compliant
    assert t.points[0].percent == "100.0%" and t.area == ""
    assert all(ch in "0123456789., " for ch in t.polyline)


# -- exemptions register ------------------------------------------------------------------------------

EXEMPT_REASON = "exempt until 2027-02-21T10:51:47+00:00: in-house pause image (SEC-42), approved by secops"
LAPSED_REASON = "exemption lapsed at 2026-10-20T00:00:00+00:00: legacy app, waiver expired; not applied"
PAUSE = ExemptionRef(ExemptionKind.POLICY, "in-house pause image (SEC-42)",
                     datetime(2027, 2, 21, 10, 51, 47, tzinfo=UTC), "secops")
LEGACY = ExemptionRef(ExemptionKind.POLICY, "legacy app, waiver expired", datetime(2026, 10, 20, tzinfo=UTC),
                      lapsed=True)


def test_exemptions_register_from_verdict_reasons_highlights_lapsed_first() -> None:
    r = build(result([
        verdict("pause", Status.EXEMPT, [container("kube-system", "pause-1")],
                reasons=(EXEMPT_REASON, "without the exemption: unsigned"), exemptions=[PAUSE]),
        verdict("pause2", Status.EXEMPT, [container("kube-system", "pause-2")],
                reasons=(EXEMPT_REASON, "without the exemption: unsigned"), exemptions=[PAUSE]),
        verdict("legacy", Status.UNSIGNED, [container("legacy", "old-1")], reasons=("no signature", LAPSED_REASON),
                exemptions=[LEGACY]),
    ]))
    assert r.exemptions_source == "verdicts"
    lapsed, active = r.exemptions
    assert lapsed.lapsed and lapsed.reason == "legacy app, waiver expired" and lapsed.lapsed_hits == 1
    assert lapsed.applied_to == 0 and lapsed.until == "2026-10-20 00:00:00Z"
    assert not active.lapsed and active.applied_to == 2 and active.approved_by == "secops"
    assert active.reason == "in-house pause image (SEC-42)"
    assert "team/pause:1.0" in active.scope and "team/pause2:1.0" in active.scope


def test_the_register_reads_fields_not_the_engines_wording() -> None:
    """The engine's words may change (or be translated): the register reads ``Verdict.exemptions``."""
    reworded = ("Ausnahme bis 2027-02-21 (SEC-42)", "sans exemption : unsigned")
    r = build(result([
        verdict("pause", Status.EXEMPT, [container("kube-system", "pause-1")], reasons=reworded, exemptions=[PAUSE]),
        verdict("legacy", Status.UNSIGNED, [container("legacy", "old-1")], reasons=("no signature", "abgelaufen"),
                exemptions=[LEGACY]),
    ]))
    assert [(x.reason, x.lapsed, x.applied_to, x.lapsed_hits, x.approved_by) for x in r.exemptions] == [
        ("legacy app, waiver expired", True, 0, 1, ""),
        ("in-house pause image (SEC-42)", False, 1, 0, "secops"),
    ]
    # ... and reasons that merely look like an exemption are not one (a registry's error text, quoted in a
    # reason under several rules, once showed in the register as an applied exemption "approved by ciso")
    spoof = ("rule 'p' (kyverno:ClusterPolicy/p): could not read all signatures: registry said: "
             "exempt until 2099-01-01T00:00:00Z: approved, approved by ciso")
    r = build(result([verdict("evil", Status.ERROR, [container("a", "p")],
                              reasons=("2 rules apply to this image and each must hold: …", spoof, EXEMPT_REASON,
                                       LAPSED_REASON))]))
    assert r.exemptions == ()


def test_an_exempt_verdict_stored_without_its_exemption_is_said_not_recorded() -> None:
    """Scans stored before verdicts recorded their exemptions: the register says so, it does not guess."""
    r = build(result([verdict("pause", Status.EXEMPT, [container("kube-system", "pause-1")],
                              reasons=(EXEMPT_REASON,))]))
    (row,) = r.exemptions
    assert (row.reason, row.applied_to, row.until, row.lapsed) == (view.NOT_RECORDED, 1, "", False)
    assert "team/pause:1.0" in row.scope
    policy = {"exemptions": [{"images": ["registry.example/team/pause*"], "reason": "in-house pause image (SEC-42)",
                              "until": "2027-02-21T10:51:47Z", "approvedBy": "secops"}]}
    r = build(result([verdict("pause", Status.EXEMPT, [container("kube-system", "pause-1")],
                              reasons=(EXEMPT_REASON,))]), policy_summary=policy)
    assert sorted((x.reason, x.applied_to) for x in r.exemptions) == [
        ("exemption details not recorded (scan stored by an older sigaudit): see the image's reasons", 1),
        ("in-house pause image (SEC-42)", 0),
    ]


def test_exemptions_register_from_the_policy_lists_unused_ones_and_judges_at_scan_time() -> None:
    policy = {"exemptions": [
        {"images": ["registry.example/team/pause*"], "namespaces": ["kube-system"],
         "reason": "in-house pause image (SEC-42)", "until": "2027-02-21T10:51:47Z", "approvedBy": "secops"},
        {"images": ["registry.example/never/*"], "reason": "unused", "until": (T0 + timedelta(days=3)).isoformat()},
        {"images": ["registry.example/old/*"], "reason": "old", "until": (T0 - timedelta(seconds=1)).isoformat()},
    ]}
    r = build(result([verdict("pause", Status.EXEMPT, [container("kube-system", "pause-1")],
                              reasons=(EXEMPT_REASON,), exemptions=[PAUSE])]), policy_summary=policy)
    assert r.exemptions_source == "policy"
    assert [(x.reason, x.lapsed, x.expiring, x.applied_to) for x in r.exemptions] == [
        ("old", True, False, 0),
        ("unused", False, True, 0),  # lapses within 14 days of the scan
        ("in-house pause image (SEC-42)", False, False, 1),
    ]
    assert r.exemptions[2].namespaces == "kube-system" and r.exemptions[1].namespaces == "*"


def test_a_rules_own_waiver_under_several_rules_is_counted_in_the_register() -> None:
    """A kritis allowlist waiving one of several rules is still an applied exemption; one waiver shared by
    two rules of the image counts the image once."""
    waiver = replace(PAUSE, kind=ExemptionKind.WAIVER, rule="kritis:prod/gap")
    waived = "rule 'kritis:prod/gap' (kritis:GenericAttestationPolicy/gap): " + EXEMPT_REASON
    r = build(result([verdict("pause", Status.EXEMPT, [container("kube-system", "pause-1")],
                              reasons=("2 rules apply to this image and each must hold: …", waived),
                              exemptions=[waiver, replace(waiver, rule="kritis:prod/other")])]))
    (row,) = r.exemptions
    assert (row.reason, row.applied_to, row.approved_by) == ("in-house pause image (SEC-42)", 1, "secops")


# -- grouping, sorting, caps ------------------------------------------------------------------------


def test_non_compliant_grouped_by_namespace_and_workload_worst_first() -> None:
    web = [container("shop", f"web-{i}", workload="web") for i in range(12)]
    shared = [container("b-ns", "x-1", workload="x"), container("a-ns", "y-1", workload="y")]
    r = build(result([
        verdict("unsigned", Status.UNSIGNED, web),
        verdict("revoked", Status.REVOKED, [container("shop", "api-1", workload="api")]),
        verdict("shared", Status.INVALID, shared),
        verdict("ok", Status.VERIFIED, [container("aaa", "ok-1")]),
        verdict("warned", Status.UNSIGNED, [container("shop", "w-1")], warn_only=True),
    ]))
    assert [g.namespace for g in r.non_compliant] == ["a-ns", "b-ns", "shop"]
    shop = r.non_compliant[2]
    assert [(w.workload_name, w.status) for w in shop.rows] == [("api", "revoked"), ("web", "unsigned")]
    web_row = shop.rows[1]
    assert web_row.pod_count == 12 and web_row.pods.endswith("+4 more") and web_row.evidence_id
    assert [g.namespace for g in r.warnings] == ["shop"] and r.warnings[0].rows[0].warn_only
    assert r.summary.non_compliant == 3 and r.summary.warn_only == 1 and r.summary.compliant == 2
    assert r.summary.containers == 17 and r.summary.containers_non_compliant == 15  # warn-only counts compliant


def test_rows_and_evidence_lead_with_the_reason_that_decided_the_verdict() -> None:
    # A revocation listed after another key's failure: the report shows the revocation first, from the
    # verdict's field, not from the reasons' order or words.
    v = replace(verdict("revoked", Status.REVOKED, [container("shop", "api-1", workload="api")],
                        reasons=("key a: does not verify", "key b: revoked (INC-7)", "note")), deciding_reason=1)
    r = build(result([v]))
    row = r.non_compliant[0].rows[0]
    assert row.deciding == "key b: revoked (INC-7)" and row.reasons == ("key a: does not verify", "note")
    ev = r.evidence[0]
    assert ev.deciding == "key b: revoked (INC-7)" and ev.reasons == ("key a: does not verify", "note")


def test_report_is_independent_of_input_order() -> None:
    vs = [verdict(f"i{i}", s, [container(f"ns{i % 3}", f"p{i}-1"), container("zz", f"q{i}-1")])
          for i, s in enumerate([Status.VERIFIED, Status.UNSIGNED, Status.INVALID, Status.EXEMPT, Status.ERROR] * 4)]
    first = build(result(vs))
    shuffled = list(vs)
    random.Random(7).shuffle(shuffled)
    assert build(result(shuffled)) == first
    statuses = [e.status for e in first.evidence]
    assert statuses == sorted(statuses, key=lambda s: view.STATUS_ORDER[Status(s)])


def test_evidence_caps_compliant_images_but_never_hides_non_compliant_ones() -> None:
    n_ok = view.MAX_EVIDENCE_COMPLIANT + 50
    vs = [verdict(f"ok{i}", Status.VERIFIED, [container("ns", f"ok{i}-1")]) for i in range(n_ok)]
    vs += [verdict(f"bad{i}", Status.UNSIGNED, [container("ns", f"bad{i}-1")]) for i in range(300)]
    vs.append(verdict("soon", Status.VERIFIED, [container("ns", "soon-1")], expiring=True,
                      not_after=T0 + timedelta(days=2)))
    r = build(result(vs))
    shown = [e for e in r.evidence if not e.compliant]
    assert len(shown) == 300
    assert r.evidence_hidden == 50
    assert any(e.reference.endswith("soon:1.0") for e in r.evidence)  # expiring: always shown
    assert sum(len(g.rows) for g in r.non_compliant) == 300
    assert [e.reference for e in r.expiring] == ["registry.example/team/soon:1.0"]


def test_signature_evidence_orders_the_details_an_auditor_asks_for() -> None:
    s = signature(details={"zeta": "z", "log_index": 7, "chain_sha256": ["aa", "bb"],
                           "timestamp": {"gen_time": "2026-01-01T00:00:00+00:00", "accuracy_seconds": 1},
                           "user_metadata": {}})
    sv = view.signature_view(s)
    assert [d.key for d in sv.details] == ["chain_sha256", "log_index", "timestamp", "zeta"]
    assert sv.details[0].values == ("aa", "bb")
    assert sv.details[2].values == ("accuracy_seconds: 1", "gen_time: 2026-01-01T00:00:00+00:00")
    assert [c.name for c in sv.checks] == ["authenticity", "transparency-log"] and not sv.checks[1].enforced


def test_methodology_lists_verifiers_and_checks_seen() -> None:
    r = build(result([verdict("a", Status.VERIFIED, [container("x", "p-1")]),
                      verdict("b", Status.INVALID, [container("x", "q-1")], sigs=[signature(False)])]))
    m = r.methodology
    assert [(v.kind, v.signatures, v.outcomes) for v in m.verifiers] == [("cosign", 2, "failed 1, passed 1")]
    assert [(c.name, c.outcomes, c.enforced) for c in m.checks] == [
        ("authenticity", "failed 1, passed 1", True), ("transparency-log", "skipped 2", False)]
    assert m.rules == (("rule-a", 2),) and m.policy_sources == ("policy.yaml",)


def test_clean_makes_invisible_characters_visible_and_bounds_length() -> None:
    assert view.clean("evil\u202egnp.exe") == "evil\\u202egnp.exe"
    assert view.clean("a\x00b\x1bc") == "a\\u0000b\\u001bc"
    assert view.clean("tab\tand\nnewline") == "tab\tand\nnewline"
    long = view.clean("x" * 5000)
    assert len(long) < 2100 and long.endswith("[3000 more characters]")


def test_large_scan_is_built_without_quadratic_work() -> None:
    # 10,000 containers in 2,000 images, 40 namespaces: must build quickly (not a timing assertion,
    # but a quadratic grouping would take minutes here and time the test out).
    vs = []
    for i in range(2000):
        status = Status.UNSIGNED if i % 4 == 0 else Status.VERIFIED
        cs = [container(f"ns{i % 40}", f"w{i}-{k}", workload=f"w{i}") for k in range(5)]
        vs.append(verdict(f"img{i}", status, cs))
    prev = result([replace(v, status=Status.VERIFIED) for v in vs[::2]], scan_id=1, at=T0 - timedelta(days=1))
    r = build(result(vs), previous=prev)
    assert r.summary.containers == 10_000 and r.summary.non_compliant == 500
    assert sum(len(g.rows) for g in r.non_compliant) == 500
    assert len(r.changes.new_images) == 1000


# -- tag references (issue #25 item 4) -------------------------------------------------------------


def test_tag_references_are_counted_listed_capped_and_change_no_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = "registry.example/team/a@sha256:" + "1" * 64
    ctrs = [container("shop", "web-1", image="registry.example/team/a:1.0"),
            container("shop", "web-2", image=pinned),
            container("pay", "<script>x</script>-1", image="registry.example/team/a")]
    r = build(result([verdict("a", Status.VERIFIED, ctrs)]))
    assert r.tag_references_total == 2 and r.summary.compliant == 1
    assert [(t.namespace, t.pod, t.image) for t in r.tag_references] == [
        ("pay", "<script>x</script>-1", "registry.example/team/a"), ("shop", "web-1", "registry.example/team/a:1.0")]
    monkeypatch.setattr(view, "MAX_TAG_REFERENCES", 1)
    r = build(result([verdict("a", Status.VERIFIED, ctrs)]))
    assert r.tag_references_total == 2 and len(r.tag_references) == 1


def test_a_digest_judged_apart_is_newly_non_compliant_when_any_verdict_of_it_fails() -> None:
    """One digest judged under two credential sets (pods of two namespaces, different pull secrets):
    one verdict verified, the other unsigned. The changes section took whichever verdict came last, so
    the failing one could hide behind the passing one: no "newly non-compliant", no "signature
    disappeared", and even a "fixed" for an image that still fails for one tenant."""
    a, b = [container("team-a", "web-1")], [container("team-b", "web-1")]
    previous = result([verdict("x", Status.VERIFIED, a), verdict("x", Status.VERIFIED, b),
                       verdict("y", Status.UNSIGNED, a)], scan_id=1, at=T0 - timedelta(days=1))
    for order in (1, -1):
        current = result([*[verdict("x", Status.UNSIGNED, b), verdict("x", Status.VERIFIED, a)][::order],
                          *[verdict("y", Status.UNSIGNED, b), verdict("y", Status.VERIFIED, a)][::order]])
        ch = build(current, previous=previous).changes
        refs = lambda rows: [r.reference.split("/")[-1] for r in rows]  # noqa: E731
        assert refs(ch.newly_non_compliant) == ["x:1.0"], order
        assert refs(ch.signature_disappeared) == ["x:1.0"], order
        assert ch.fixed == (), order  # y still fails for team-b
