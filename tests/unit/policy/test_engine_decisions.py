"""scanner.policy.engine, decision by decision (issue #28: each one's deletion or inversion is noticed by a
fast test): matching, exemptions that cover only their images, revocations and their effective time,
n-of-m with unreadable signatures, ``required: false``, expiry and the combination of several rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scanner.models import (
    Check,
    CheckName,
    ContainerRef,
    ContainerType,
    ExemptionKind,
    ImageReference,
    Outcome,
    RunningImage,
    SignatureFailure,
    SignatureResult,
    SignedTime,
    Status,
    TimeSource,
    UnresolvedImage,
    Workload,
)
from scanner.policy.engine import (
    _candidates,
    _normalise_glob,
    apply_revocations,
    evaluate,
    evaluate_rules,
    image_matches,
    match_exemption,
    match_rule,
    match_rules,
    namespace_matches,
    rule_applies,
    rule_satisfied,
    scopes,
    unresolved_verdicts,
)
from scanner.policy.loader import CompiledRule, Policy
from scanner.policy.schema import Exemption, Revocation

NOW = datetime(2026, 11, 23, tzinfo=UTC)
D = "sha256:" + "e" * 64
KEY = "ab" * 32


class V:
    """A stand-in verifier: the engine reads only its name and ``not_found_reason``."""

    def __init__(self, name: str, not_found: str | None = None) -> None:
        self.name = name
        self.not_found_reason = not_found


def res(verifier: str = "A", outcome: Outcome = Outcome.PASSED, failure: SignatureFailure = SignatureFailure.NONE,
        *, not_after: datetime | None = None, key: str | None = KEY, reason: str | None = None,
        **kw: object) -> SignatureResult:
    return SignatureResult("cosign", verifier, outcome, reason or f"{verifier} {outcome.value} {failure.value}",
                           failure, key_sha256=key, not_after=not_after, **kw)  # type: ignore[arg-type]


def bad(verifier: str = "A", failure: SignatureFailure = SignatureFailure.INVALID, **kw: object) -> SignatureResult:
    outcome = Outcome.ERROR if failure is SignatureFailure.ERROR else Outcome.FAILED
    return res(verifier, outcome, failure, **kw)  # type: ignore[arg-type]


def rule(*names: str, count: int = 1, **kw: object) -> CompiledRule:
    return CompiledRule(str(kw.pop("name", "r")), tuple(kw.pop("images", ("r.io/*",))),  # type: ignore[arg-type]
                        tuple(kw.pop("namespaces", ("*",))),  # type: ignore[arg-type]
                        tuple(V(n) for n in names or ("A",)), count=count, source="test", **kw)  # type: ignore[arg-type]


def pol(*rules: CompiledRule, exemptions: tuple[Exemption, ...] = (), revocations: tuple[Revocation, ...] = (),
        warn: timedelta = timedelta(days=30)) -> Policy:
    return Policy(tuple(rules), exemptions, revocations, warn, frozenset(), 50, "x")


def container(ns: str = "ns") -> ContainerRef:
    return ContainerRef(ns, "p", "c", ContainerType.CONTAINER, "r.io/a:1", None, Workload("Pod", "p"))


REF = ImageReference("r.io", "a", "1", D)
IMAGE = RunningImage(REF, (container(),))


def judge(r: CompiledRule | None, *results: SignatureResult, errors: tuple[str, ...] = (), policy: Policy | None = None,
          ns: str = "ns", image: RunningImage = IMAGE):  # type: ignore[no-untyped-def]
    p = policy or pol(*(r,) if r else ())
    per = None
    if r is not None:
        per = [[x for x in results if x.verifier == v.name] for v in r.verifiers]
    return evaluate(image, r, results, errors, p, NOW, ns, per_verifier=per)


def exemption(images: list[str], *, namespaces: list[str] | None = None, until: datetime = NOW + timedelta(days=90),
              reason: str = "vendor", approved_by: str | None = None) -> Exemption:
    return Exemption.model_validate({"images": images, "namespaces": namespaces or ["*"], "reason": reason,
                                     "until": until, "approvedBy": approved_by})


# -- matching ------------------------------------------------------------------------------------------

def test_candidates_and_glob_normalisation() -> None:
    assert _candidates(REF) == ["r.io/a", "r.io/a:1", f"r.io/a@{D}", f"r.io/a:1@{D}"]
    assert _candidates(ImageReference("r.io", "a")) == ["r.io/a"]
    assert _candidates(ImageReference("r.io", "a", None, D)) == ["r.io/a", f"r.io/a@{D}"]
    assert _normalise_glob("nginx") == "docker.io/library/nginx"
    assert _normalise_glob("nginx:1") == "docker.io/library/nginx:1"
    assert _normalise_glob("r.io/*") == "r.io/*"
    assert _normalise_glob("r.io/a?") == "r.io/a?"
    assert _normalise_glob("UPPER/Case!") == "UPPER/Case!"  # not a reference: kept as written
    assert _normalise_glob(f"r.io/a@{D}") == f"r.io/a@{D}"


def test_image_and_namespace_globs() -> None:
    assert image_matches(["r.io/a"], REF) and image_matches(["r.io/a:1"], REF) and image_matches(["r.io/*"], REF)
    assert not image_matches(["r.io/a:2"], REF) and not image_matches(["r.io/b"], REF) and not image_matches([], REF)
    assert namespace_matches(["prod-*"], "prod-1") and not namespace_matches(["prod-*"], "dev")


def test_rule_applies_needs_image_namespace_and_no_exclusion() -> None:
    assert rule_applies(rule(), REF, "ns")
    assert not rule_applies(rule(images=("r.io/b",)), REF, "ns")
    assert not rule_applies(rule(namespaces=("other",)), REF, "ns")
    assert not rule_applies(rule(exclude_namespaces=("ns",)), REF, "ns")
    assert rule_applies(rule(exclude_namespaces=("x",)), REF, "ns")
    assert not rule_applies(rule(skip_images=("r.io/a",)), REF, "ns")
    assert rule_applies(rule(skip_images=("r.io/b",)), REF, "ns")
    assert rule_applies(rule(images=("none",), matcher=lambda ref: True), REF, "ns")
    assert not rule_applies(rule(matcher=lambda ref: False), REF, "ns")


def test_first_match_groups() -> None:
    a, b, c = rule(name="a", first_match="g"), rule(name="b", first_match="g"), rule(name="c")
    assert [r.name for r in match_rules(pol(a, b, c), REF, "ns")] == ["a", "c"]
    assert match_rule(pol(a, b, c), REF, "ns") is a
    assert match_rule(pol(rule(images=("x/*",))), REF, "ns") is None
    other = rule(name="d", first_match="h")
    assert [r.name for r in match_rules(pol(a, other, b), REF, "ns")] == ["a", "d"]


# -- exemptions ----------------------------------------------------------------------------------------

def test_an_exemption_for_another_image_waives_nothing() -> None:
    """Issue #28: `hit and (...)` -> `hit or (...)` let an exemption for one image waive every image."""
    r = rule()
    other = exemption(["r.io/other"])
    assert judge(r, bad(), policy=pol(r, exemptions=(other,))).status is Status.INVALID
    assert match_exemption(pol(r, exemptions=(other,)), REF, str(REF), "ns") is None
    mine = exemption(["r.io/a"])
    assert judge(r, bad(), policy=pol(r, exemptions=(other, mine))).status is Status.EXEMPT


def test_the_latest_matching_exemption_is_chosen() -> None:
    early = exemption(["r.io/a"], until=NOW + timedelta(days=1))
    late = exemption(["r.io/a"], until=NOW + timedelta(days=9))
    for order in ((early, late), (late, early)):
        assert match_exemption(pol(exemptions=order), REF, str(REF), "ns") is late
    assert match_exemption(pol(exemptions=(exemption(["r.io/a"], namespaces=["x"]),)), REF, str(REF), "ns") is None


def test_exemptions_of_unresolved_images_match_the_text_and_importer_matchers() -> None:
    ex = exemption(["r.io/a:*"])
    assert match_exemption(pol(exemptions=(ex,)), None, "r.io/a:1", "ns") is ex
    assert match_exemption(pol(exemptions=(ex,)), None, "r.io/b:1", "ns") is None
    only = exemption(["ignored"]).matching_with(lambda ref, text: text == "special")
    assert match_exemption(pol(exemptions=(only,)), REF, "special", "ns") is only
    assert match_exemption(pol(exemptions=(only,)), REF, str(REF), "ns") is None


def test_an_exemption_waives_with_its_reason_until_it_lapses() -> None:
    r = rule()
    ex = exemption(["r.io/a"], approved_by="sec", until=NOW + timedelta(days=10))
    v = judge(r, bad(), policy=pol(r, exemptions=(ex,)))
    assert v.status is Status.EXEMPT and v.not_after == ex.until and v.expiring  # inside the 30-day window
    assert v.reasons[:2] == (f"exempt until {ex.until.isoformat()}: vendor, approved by sec",
                             "without the exemption: invalid")
    assert v.deciding_reason == 0 and v.exemptions[0].kind is ExemptionKind.POLICY and not v.exemptions[0].lapsed
    far = exemption(["r.io/a"], until=NOW + timedelta(days=31))
    assert not judge(r, bad(), policy=pol(r, exemptions=(far,))).expiring
    lapsed = exemption(["r.io/a"], until=NOW)
    v = judge(r, bad(), policy=pol(r, exemptions=(lapsed,)))
    assert v.status is Status.INVALID and v.exemptions[0].lapsed and "not applied" in v.reasons[-1]
    v = judge(r, res(), policy=pol(r, exemptions=(lapsed,)))
    assert v.status is Status.VERIFIED and v.exemptions[0].lapsed and "exemption lapsed" in v.reasons[-1]
    v = judge(r, res(), policy=pol(r, exemptions=(ex,)))
    assert v.status is Status.VERIFIED and v.exemptions == ()  # a verified image needs no waiver


def test_a_rules_waiver_is_recorded_as_that_rules() -> None:
    r = rule(waivers=(exemption(["r.io/a"]),))
    v = judge(r, bad())
    assert v.status is Status.EXEMPT and v.exemptions[0].kind is ExemptionKind.WAIVER and v.exemptions[0].rule == "r"


# -- revocations ---------------------------------------------------------------------------------------

def rev(**kw: object) -> Revocation:
    return Revocation.model_validate({"reason": "leaked", **kw})


def test_key_revocation_matches_case_insensitively_and_only_that_key() -> None:
    (out,) = apply_revocations([res(key=KEY)], [rev(keySha256=KEY.upper())])
    assert out.outcome is Outcome.FAILED and out.failure is SignatureFailure.REVOKED
    assert out.reason.endswith(f"but key sha256:{KEY.upper()} is revoked: leaked")
    assert apply_revocations([res(key="cd" * 32)], [rev(keySha256=KEY)])[0].outcome is Outcome.PASSED
    assert apply_revocations([res(key=None)], [rev(keySha256=KEY)])[0].outcome is Outcome.PASSED
    assert apply_revocations([res(key="")], [rev(keySha256=KEY)])[0].outcome is Outcome.PASSED
    failed = bad(key=KEY)
    assert apply_revocations([failed], [rev(keySha256=KEY)])[0] == failed  # only passes are revoked


@pytest.mark.parametrize("where", [{"identity": "who"}, {"signer": "who"}, {"details": {"identities": ["x", "who"]}}])
def test_identity_revocation_matches_identity_signer_or_listed_identities(where: dict[str, object]) -> None:
    r = res(**where)
    (out,) = apply_revocations([r], [rev(identity="who")])
    assert out.failure is SignatureFailure.REVOKED and "identity 'who' is revoked: leaked" in out.reason
    assert apply_revocations([res(identity="other")], [rev(identity="who")])[0].outcome is Outcome.PASSED


def test_a_revocation_with_an_effective_time_spares_only_authentically_older_signatures() -> None:
    at = NOW - timedelta(days=10)
    older = SignedTime(at - timedelta(days=1), TimeSource.REKOR_SET)
    newer = SignedTime(at + timedelta(days=1), TimeSource.REKOR_SET)
    claimed = SignedTime(at - timedelta(days=1), TimeSource.CLAIMED)
    same = SignedTime(at, TimeSource.REKOR_SET)
    r = rev(keySha256=KEY, revokedAt=at)
    assert apply_revocations([res(signed_at=older)], [r])[0].outcome is Outcome.PASSED
    for t, why in ((newer, "signed at"), (claimed, "not authenticated"), (same, "signed at"),
                   (None, "no authentic signing time")):
        (out,) = apply_revocations([res(signed_at=t)], [r])
        assert out.failure is SignatureFailure.REVOKED and why in out.reason, t
        assert f"revoked for signatures made after {at.isoformat()}" in out.reason


def test_a_revoked_key_makes_the_image_revoked_not_verified() -> None:
    r = rule()
    v = judge(r, res(), policy=pol(r, revocations=(rev(keySha256=KEY),)))
    assert v.status is Status.REVOKED and not v.compliant


# -- n of m ----------------------------------------------------------------------------------------------

def test_rule_satisfied() -> None:
    r = rule("A", "B", count=2)
    assert rule_satisfied(r, [[res("A")], [res("B")]], ()).ok
    s = rule_satisfied(r, [[res("A")], [bad("B")]], ())
    assert not s.ok and s.passing == (0,) and s.unmet == ("1 of the 2 required verifiers found a valid signature",)
    with pytest.raises(ValueError):
        rule_satisfied(r, [[res("A")]], ())
    assert not rule_satisfied(rule("A", refused=("no",)), [[res("A")]], ()).ok
    sets = rule("A", "B", sets=((1, (0,)), (1, (1,))))
    s = rule_satisfied(sets, [[res("A")], []], ())
    assert not s.ok and s.unmet == ("0 of the 1 required verifiers of [B] found a valid signature",)
    assert not rule_satisfied(rule("A", sets=((1, ()),)), [[res("A")]], ()).ok  # an empty set is never met
    revoked = rule_satisfied(rule("A"), [[res("A")]], (rev(keySha256=KEY),))
    assert not revoked.ok and revoked.passing == ()


def test_n_of_m_partly_met_with_unreadable_signatures_is_an_error() -> None:
    """Issue #28: a signature we could not read might be the missing one: error, never invalid (which
    under mode: warn would be compliant)."""
    r = rule("A", "B", count=2, mode="warn")
    v = judge(r, res("A"), errors=("registry answered 503",))
    assert v.status is Status.ERROR and not v.compliant and v.warn_only
    assert judge(rule("A", "B", count=2), res("A")).warn_only is False
    assert v.reasons[v.deciding_reason] == "could not read all signatures: registry answered 503"


def test_n_of_m_partly_met_says_who_passed_and_who_did_not() -> None:
    r = rule("A", "B", "C", count=2)
    v = judge(r, res("A"), bad("B", SignatureFailure.EXPIRED), bad("C"))
    assert v.status is Status.EXPIRED  # the worst failure decides
    assert "not enough: 1 of the 2 required verifiers found a valid signature" in v.reasons
    assert "valid signatures for: A" in v.reasons and "no valid signature for: B, C" in v.reasons
    assert v.reasons[v.deciding_reason] == "B failed expired"
    v = judge(r, res("A"))  # nothing failed, not enough passed
    assert v.status is Status.INVALID and v.deciding_reason == 0
    assert judge(rule("A", "B", count=2), res("A"), bad("B", SignatureFailure.REVOKED)).status is Status.REVOKED


# -- verified, unsigned, failed ----------------------------------------------------------------------

def test_a_verified_image_lapses_with_its_longest_lived_signature() -> None:
    r = rule()
    soon, later = NOW + timedelta(days=5), NOW + timedelta(days=60)
    v = judge(r, res(not_after=soon, reason="soon"), res(not_after=later, reason="later"), bad(reason="bad"))
    assert v.status is Status.VERIFIED and v.not_after == later and not v.expiring
    assert "also: bad" in v.reasons and "also: soon" not in v.reasons
    assert not any("expiry warning window" in x for x in v.reasons)
    assert v.reasons[0] == "later"  # the best signature speaks first
    v = judge(r, res(not_after=soon))
    assert v.expiring and v.not_after == soon and "inside the expiry warning window" in v.reasons[-1]
    v = judge(r, res(not_after=soon), res(not_after=None, reason="forever"))
    assert v.not_after is None and not v.expiring and v.reasons[0] == "forever"
    edge = judge(r, res(not_after=NOW + timedelta(days=30)))
    assert edge.expiring  # exactly at the window's end is inside it


def test_a_verified_verdict_reports_what_was_only_logged_and_other_failures() -> None:
    logged = res(checks=(Check(CheckName.REVOCATION, Outcome.ERROR, "ocsp down", enforced=False),
                         Check(CheckName.EXPIRY, Outcome.PASSED, "fine", enforced=False),
                         Check(CheckName.TLOG, Outcome.FAILED, "enforced but passed?", enforced=True)))
    v = judge(rule(), logged, bad(reason="other key"))
    assert v.status is Status.VERIFIED
    assert "logged (not enforced): revocation: ocsp down" in v.reasons
    assert not any("fine" in x or "enforced but" in x for x in v.reasons)
    assert "also: other key" in v.reasons


def test_unsigned_and_required_false() -> None:
    v = judge(rule())
    assert v.status is Status.UNSIGNED and not v.compliant and not v.warn_only
    assert v.reasons[0] == "no signature found for the verifiers of rule 'r' (A)"
    optional = rule(required=False)
    v = judge(optional)
    assert v.status is Status.UNSIGNED and v.warn_only and v.compliant
    assert "required: false" in v.reasons[-1]
    # required: false allows no signature, never a bad one
    v = judge(optional, bad())
    assert v.status is Status.INVALID and not v.warn_only and not v.compliant


def test_unsigned_uses_the_verifiers_own_wording_only_when_all_have_one() -> None:
    r = CompiledRule("r", ("r.io/*",), ("*",), (V("A", "not attested by A"), V("B", "not attested by B")))  # type: ignore[arg-type]
    assert judge(r).reasons[:2] == ("not attested by A", "not attested by B")
    r = CompiledRule("r", ("r.io/*",), ("*",), (V("A", "not attested by A"), V("B")))  # type: ignore[arg-type]
    assert judge(r).reasons[:2] == ("no signature found for the verifiers of rule 'r' (A, B)", "not attested by A")


def test_only_skipped_results_are_unsigned_and_unreadable_material_is_an_error() -> None:
    skipped = res(outcome=Outcome.SKIPPED, reason="an attestation")
    v = judge(rule(), skipped)
    assert v.status is Status.UNSIGNED and "an attestation" in v.reasons
    v = judge(rule(), errors=("503",))
    assert v.status is Status.ERROR and v.reasons[0] == "could not read signatures: 503"


@pytest.mark.parametrize(("failures", "status"), [
    ((SignatureFailure.INVALID, SignatureFailure.EXPIRED), Status.EXPIRED),
    ((SignatureFailure.EXPIRED, SignatureFailure.REVOKED), Status.REVOKED),
    ((SignatureFailure.REVOKED, SignatureFailure.ERROR), Status.ERROR),
    ((SignatureFailure.INVALID,), Status.INVALID),
])
def test_the_worst_failure_decides_and_is_the_headline(failures: tuple[SignatureFailure, ...], status: Status) -> None:
    results = [bad(failure=f, reason=f"sig {i}") for i, f in enumerate(failures)]
    v = judge(rule(), *results)
    assert v.status is status
    assert v.reasons[v.deciding_reason] == f"sig {len(failures) - 1}"


def test_a_failure_listed_past_the_tenth_still_decides_and_is_shown() -> None:
    results = [bad(reason=f"invalid {i}") for i in range(12)] + [bad(failure=SignatureFailure.REVOKED, reason="rev")]
    v = judge(rule(), *results)
    assert v.status is Status.REVOKED and v.reasons[v.deciding_reason] == "rev"
    assert "invalid 9" in v.reasons and "invalid 10" not in v.reasons


def test_failures_with_unreadable_material_are_an_error() -> None:
    v = judge(rule(), bad(), errors=("503",))
    assert v.status is Status.ERROR and v.reasons[v.deciding_reason] == "could not read all signatures: 503"


def test_no_rule_and_refused_rule() -> None:
    v = judge(None, image=RunningImage(REF, (container(),), notes=("pulled from elsewhere",)))
    assert v.status is Status.NO_POLICY and v.reasons == ("pulled from elsewhere", "no policy rule matches this image")
    assert v.deciding_reason == 1
    v = judge(rule(refused=("field x",), mode="warn"), res())
    assert v.status is Status.ERROR and v.warn_only and "cannot be enforced as written: field x" in v.reasons[0]


def test_mode_warn_is_carried() -> None:
    assert judge(rule(mode="warn"), bad()).warn_only
    assert judge(rule(mode="warn"), res()).warn_only
    assert not judge(rule(), bad()).warn_only


def test_rule_notes_follow_every_verdict() -> None:
    r = rule(notes=("approximated",))
    assert judge(r, res()).reasons[-1] == "approximated"
    assert judge(r, bad()).reasons[-1] == "approximated"


# -- several rules -----------------------------------------------------------------------------------

def test_several_rules_combine_to_the_worst_and_the_first_to_lapse() -> None:
    a, b = rule("A", name="a"), rule("B", name="b")
    p = pol(a, b)
    soon, later = NOW + timedelta(days=40), NOW + timedelta(days=90)
    v = evaluate_rules(IMAGE, (a, b), [[[res("A", not_after=later)]], [[res("B", not_after=soon)]]], (), p, NOW, "ns")
    assert v.status is Status.VERIFIED and v.not_after == soon and not v.expiring
    assert v.reasons[0].startswith("2 rules apply to this image and each must hold")
    v = evaluate_rules(IMAGE, (a, b), [[[res("A")]], [[bad("B")]]], (), p, NOW, "ns")
    assert v.status is Status.INVALID and v.rule == "b"
    assert v.reasons[0] == ("2 rules apply to this image and each must hold: "
                            "rule 'a' (test): verified; rule 'b' (test): invalid")
    assert v.reasons[v.deciding_reason] == "rule 'b' (test): B failed invalid"
    with pytest.raises(ValueError):
        evaluate_rules(IMAGE, (a, b), [[[res("A")]]], (), p, NOW, "ns")
    v = evaluate_rules(IMAGE, (a, b), [[[res("A", not_after=NOW + timedelta(days=1))]], [[res("B")]]], (), p, NOW, "ns")
    assert v.expiring


def test_a_warn_only_failure_never_hides_an_enforced_one() -> None:
    a, b = rule("A", name="a", mode="warn"), rule("B", name="b")
    v = evaluate_rules(IMAGE, (a, b), [[[bad("A", SignatureFailure.REVOKED)]], [[bad("B")]]], (), pol(a, b), NOW, "ns")
    assert v.status is Status.INVALID and v.rule == "b" and not v.warn_only
    assert "rule 'a' (test): revoked (warn only: reported, not counted)" in v.reasons[0]


def test_several_rules_keep_one_copy_of_each_signature_and_the_notes_once() -> None:
    a, b = rule("A", name="a"), rule("A", name="b")
    shared = res("A")
    img = RunningImage(REF, (container(),), notes=("note",))
    v = evaluate_rules(img, (a, b), [[[shared]], [[shared]]], (), pol(a, b), NOW, "ns")
    assert v.signatures == (shared,) and v.reasons.count("note") == 1


# -- unresolved images and scopes --------------------------------------------------------------------

def test_unresolved_images_are_errors_split_by_scope() -> None:
    r = rule(namespaces=("a", "b"))
    ex = exemption(["r.io/a:*"], namespaces=["b"])
    img = UnresolvedImage(REF, "r.io/a:1", (container("a"), container("b"), container("c")), "not started")
    out = unresolved_verdicts(img, pol(r, exemptions=(ex,)), NOW)
    by_ns = {v.image.containers[0].namespace: v for v in out}
    assert by_ns["a"].status is Status.ERROR and by_ns["a"].reasons[0] == "running digest unknown: not started"
    assert (by_ns["a"].rule, by_ns["a"].policy_source) == ("r", "test")
    assert by_ns["b"].status is Status.EXEMPT
    assert by_ns["c"].status is Status.ERROR and by_ns["c"].rule is None
    nothing = unresolved_verdicts(UnresolvedImage(None, "???", (), "unparseable"), pol(r), NOW)
    assert [v.status for v in nothing] == [Status.ERROR]


def test_scopes_group_namespaces_that_share_rules_and_exemption() -> None:
    r = rule(namespaces=("a", "b", "c"))
    ex = exemption(["r.io/a"], namespaces=["c"])
    got = scopes(pol(r, exemptions=(ex,)), REF, str(REF), [container("a"), container("b"), container("c"),
                                                              container("a")])
    assert [(s.namespace, len(s.containers), s.exemption is ex) for s in got] == [("a", 3, False), ("c", 1, True)]


@pytest.mark.parametrize("glob", ["*", "r.io/*", "r.io/a:*", "r.io/a?", "*/a", "nginx*", "r.io:5000/a:v?"])
def test_a_wildcard_glob_is_never_normalised(glob: str) -> None:
    """What makes the wildcard shortcut of _normalise_glob safe to drop (listed as an equivalent mutant)."""
    assert _normalise_glob(glob) == glob


def test_an_unresolved_image_matches_any_of_an_exemptions_globs() -> None:
    ex = exemption(["other/*", "r.io/a:*"])
    assert match_exemption(pol(exemptions=(ex,)), None, "r.io/a:1", "ns") is ex


def test_one_rule_or_none_is_exactly_evaluate() -> None:
    r = rule()
    p = pol(r)
    one_rule = evaluate_rules(IMAGE, (r,), [[[res()]]], (), p, NOW, "ns")
    assert one_rule == evaluate(IMAGE, r, [res()], (), p, NOW, "ns", per_verifier=[[res()]])
    assert evaluate_rules(IMAGE, (), [], (), pol(), NOW, "ns").status is Status.NO_POLICY
    with pytest.raises(ValueError, match="one list of per-verifier results per rule"):
        evaluate_rules(IMAGE, (r,), [], (), p, NOW, "ns")
