"""Rules apply exactly where they are written: rules are told apart by identity (never merged by name),
every requirement set of a rule must be met (n-of-m decided in one place), and unresolved images are
split by namespace and exemption like resolved ones."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.models import (
    ContainerRef,
    ContainerType,
    ExemptionKind,
    ExemptionRef,
    ImageReference,
    Outcome,
    RunningImage,
    SignatureFailure,
    SignatureResult,
    Status,
    UnresolvedImage,
    Verdict,
    Workload,
)
from scanner.pipeline import _groups, _satisfied
from scanner.policy.engine import (
    evaluate,
    evaluate_rules,
    image_matches,
    match_rules,
    rule_satisfied,
    unresolved_verdicts,
)
from scanner.policy.loader import CompiledRule, Policy, load_policy
from scanner.policy.schema import Exemption
from tests.harness.cosign_sign import KeyPair

NOW = datetime(2026, 11, 23, tzinfo=UTC)
D = "sha256:" + "e" * 64


class FakeVerifier:
    """A stand-in verifier: the engine reads its name and its optional ``not_found_reason`` (None: the
    default of ``scanner.verify.base.Verifier``)."""

    not_found_reason: str | None = None

    def __init__(self, name: str) -> None:
        self.name = name


def passed(verifier: str) -> SignatureResult:
    return SignatureResult("cosign", verifier, Outcome.PASSED, f"{verifier} ok", SignatureFailure.NONE,
                           key_sha256="ab" * 32)


def failed(verifier: str) -> SignatureResult:
    return SignatureResult("cosign", verifier, Outcome.FAILED, f"{verifier} bad", SignatureFailure.INVALID)


def container(ns: str, pod: str = "p") -> ContainerRef:
    return ContainerRef(ns, pod, "c", ContainerType.CONTAINER, "r.io/a:1", None, Workload("Pod", pod))


def policy(*rules: CompiledRule, exemptions: tuple[Exemption, ...] = ()) -> Policy:
    return Policy(tuple(rules), exemptions, (), timedelta(days=30), frozenset(), 50, "x")


# -- item 6: rules that share a name ------------------------------------------------------------


def team_rules() -> tuple[CompiledRule, CompiledRule]:
    """Two namespaced policies with the same policy and rule names, trusting different keys."""
    a = CompiledRule("team/r", ("r.io/*",), ("team-a",), (FakeVerifier("key A"),),  # type: ignore[arg-type]
                     source="kyverno:Policy/team", namespace="team-a")
    b = CompiledRule("team/r", ("r.io/*",), ("team-b",), (FakeVerifier("key B"),),  # type: ignore[arg-type]
                     source="kyverno:Policy/team", namespace="team-b")
    return a, b


def test_rules_that_share_a_name_are_never_merged() -> None:
    a, b = team_rules()
    img = RunningImage(ImageReference("r.io", "a", "1", D), (container("team-a"), container("team-b")))
    groups = _groups(policy(a, b), img)
    assert [(g.rules, [c.namespace for c in g.containers]) for g in groups] == [((a,), ["team-a"]),
                                                                                  ((b,), ["team-b"])]
    # Signed by B only: team-b's pod is verified, team-a's is not (before: one group judged by B's rule).
    verdicts = {}
    for g in groups:
        (rule,) = g.rules
        # What each key's verifier finds on the one signature (by B).
        per = [[passed("key B")] if v.name == "key B" else [failed(v.name)] for v in rule.verifiers]
        sub = RunningImage(img.reference, g.containers)
        flat = [r for rs in per for r in rs]
        verdicts[g.namespace] = evaluate(sub, rule, flat, [], policy(a, b), NOW, g.namespace,
                                         per_verifier=per).status
    assert verdicts == {"team-a": Status.INVALID, "team-b": Status.VERIFIED}


def test_same_exemption_text_in_two_exemptions_is_two_scopes() -> None:
    rule = CompiledRule("r", ("r.io/*",), ("*",), (FakeVerifier("v"),))  # type: ignore[arg-type]
    until = NOW + timedelta(days=3)
    ex1 = Exemption.model_validate({"images": ["r.io/*"], "namespaces": ["a"], "reason": "x", "until": until,
                                    "approvedBy": "alice"})
    ex2 = Exemption.model_validate({"images": ["r.io/*"], "namespaces": ["b"], "reason": "x", "until": until,
                                    "approvedBy": "mallory"})
    img = RunningImage(ImageReference("r.io", "a", "1", D), (container("a"), container("b")))
    groups = _groups(policy(rule, exemptions=(ex1, ex2)), img)
    assert sorted(g.namespace for g in groups) == ["a", "b"]


# -- item 7: every requirement set ----------------------------------------------------------------


def sets_rule() -> CompiledRule:
    """(A or B) and C."""
    vs = (FakeVerifier("A"), FakeVerifier("B"), FakeVerifier("C"))
    return CompiledRule("r", ("r.io/*",), ("*",), vs, sets=((1, (0, 1)), (1, (2,))))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("signed_by", "ok"),
    [({"A", "B"}, False), ({"A", "C"}, True), ({"B", "C"}, True), ({"C"}, False), ({"A", "B", "C"}, True)],
)
def test_every_requirement_set_must_be_met(signed_by: set[str], ok: bool) -> None:
    rule = sets_rule()
    per = [[passed(v.name)] if v.name in signed_by else [failed(v.name)] for v in rule.verifiers]
    assert rule_satisfied(rule, per, ()).ok is ok
    flat = [r for rs in per for r in rs]
    img = RunningImage(ImageReference("r.io", "a", "1", D), (container("ns"),))
    v = evaluate(img, rule, flat, [], policy(rule), NOW, "ns", per_verifier=per)
    assert (v.status is Status.VERIFIED) is ok
    if not ok:
        assert any("not enough" in r for r in v.reasons)
    # The pipeline's early stop makes the same decision.
    from scanner.pipeline import _Group

    assert _satisfied([_Group((rule,), "ns", img.containers)], {id(x): tuple(rs) for x, rs in zip(rule.verifiers, per,
                                                                                                strict=True)},
                      policy(rule)) is ok


def test_a_result_counts_only_for_the_verifier_that_produced_it() -> None:
    # Two verifiers that bear the same name (say, one identity under two trust roots), in two sets:
    # the first passing must not satisfy the second.
    same1, same2 = FakeVerifier("cosign keyless X"), FakeVerifier("cosign keyless X")
    rule = CompiledRule("r", ("*",), ("*",), (same1, same2), sets=((1, (0,)), (1, (1,))))  # type: ignore[arg-type]
    per = [[passed("cosign keyless X")], [failed("cosign keyless X")]]
    assert rule_satisfied(rule, per, ()).ok is False
    img = RunningImage(ImageReference("r.io", "a", "1", D), (container("ns"),))
    flat = [r for rs in per for r in rs]
    assert evaluate(img, rule, flat, [], policy(rule), NOW, "ns", per_verifier=per).status is Status.INVALID


def test_a_refused_rule_is_an_error_never_compliant() -> None:
    rule = CompiledRule("r", ("r.io/*",), ("*",), (), refused=("field x is not supported",))
    img = RunningImage(ImageReference("r.io", "a", "1", D), (container("ns"),))
    v = evaluate(img, rule, [], [], policy(rule), NOW, "ns", per_verifier=[])
    assert v.status is Status.ERROR and not v.compliant and "field x is not supported" in v.reasons[0]


HEAD = "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n    - name: a\n      images: ['*']\n"


def test_native_verifier_sets_load(tmp_path: Path) -> None:
    keys = [KeyPair.ecdsa() for _ in range(3)]
    for i, k in enumerate(keys):
        (tmp_path / f"k{i}.pub").write_text(k.public_pem)
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + "      verifierSets:\n"
                 "        - {count: 1, verifiers: [{cosign: {key: k0.pub, ignoreTlog: true}},"
                 " {cosign: {key: k1.pub, ignoreTlog: true}}]}\n"
                 "        - {verifiers: [{cosign: {key: k2.pub, ignoreTlog: true}}]}\n")
    (rule,) = load_policy(p).rules
    assert rule.requirement_sets == ((1, (0, 1)), (1, (2,))) and len(rule.verifiers) == 3


def test_one_verifier_listed_twice_cannot_make_two_of_two(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text(KeyPair.ecdsa().public_pem)
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + "      count: 2\n      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}},"
                 " {cosign: {key: k.pub, ignoreTlog: true}}]\n")
    with pytest.raises(ConfigError, match="listed twice"):
        load_policy(p)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("      verifiers: [{cosign: {key: k.pub}}]\n      verifierSets: [{verifiers: [{cosign: {key: k.pub}}]}]\n",
         "exactly one of verifiers"),
        ("      count: 1\n      verifierSets: [{verifiers: [{cosign: {key: k.pub}}]}]\n", "count belongs inside"),
        ("      verifierSets: [{count: 2, verifiers: [{cosign: {key: k.pub}}]}]\n", "count 2 exceeds"),
        ("      verifierSets: []\n", "exactly one of verifiers"),
        ("      verifierSets: [{verifiers: []}]\n", "at least 1"),
    ],
)
def test_native_verifier_sets_are_validated_at_load(tmp_path: Path, body: str, message: str) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + body)
    with pytest.raises(ConfigError, match=message) as e:
        load_policy(p)
    assert "spec.rules.0" in (e.value.field or "")


# -- item 9: unresolved images split by namespace and exemption -------------------------------------


@pytest.mark.parametrize("order", [("kube-system", "default"), ("default", "kube-system")])
def test_unresolved_image_exemption_does_not_depend_on_pod_order(order: tuple[str, str]) -> None:
    rule = CompiledRule("r", ("r.io/*",), ("*",), (FakeVerifier("v"),))  # type: ignore[arg-type]
    ex = Exemption.model_validate({"images": ["r.io/*"], "namespaces": ["kube-system"], "reason": "SEC-1",
                                   "until": NOW + timedelta(days=60)})
    img = UnresolvedImage(ImageReference("r.io", "a", "1", None), "r.io/a:1",
                          tuple(container(ns, f"pod-{ns}") for ns in order), "tag could not be resolved")
    verdicts = unresolved_verdicts(img, policy(rule, exemptions=(ex,)), NOW)
    by_ns = {v.image.containers[0].namespace: v for v in verdicts}
    assert {ns: (v.status, len(v.image.containers)) for ns, v in by_ns.items()} == {
        "kube-system": (Status.EXEMPT, 1), "default": (Status.ERROR, 1)}
    assert not by_ns["default"].compliant


def test_unparseable_image_is_split_by_exemption_too() -> None:
    ex = Exemption.model_validate({"images": ["bad image*"], "namespaces": ["kube-system"], "reason": "r",
                                   "until": NOW + timedelta(days=60)})
    img = UnresolvedImage(None, "bad image", (container("default"), container("kube-system")), "unparseable")
    statuses = sorted(v.status.value for v in unresolved_verdicts(img, policy(exemptions=(ex,)), NOW))
    assert statuses == ["error", "exempt"]


# -- every rule that matches must hold --------------------------------------------------------------


def key_rule(name: str, key: str, source: str, **kw: object) -> CompiledRule:
    return CompiledRule(name, ("r.io/*",), ("*",), (FakeVerifier(key),), source=source, **kw)  # type: ignore[arg-type]


def judge(pol: Policy, img: RunningImage, signed_by: set[str], ns: str = "ns") -> Status:
    return verdict_for(pol, img, signed_by, ns).status


def verdict_for(pol: Policy, img: RunningImage, signed_by: set[str], ns: str = "ns") -> Verdict:
    rules = match_rules(pol, img.reference, ns)
    per_rule = [[[passed(v.name)] if v.name in signed_by else [failed(v.name)] for v in r.verifiers] for r in rules]
    return evaluate_rules(img, rules, per_rule, [], pol, NOW, ns)


IMG = RunningImage(ImageReference("r.io", "a", "1", D), (container("ns"),), ("pulled from a mirror",))


def test_every_matching_policy_must_hold_and_the_failing_one_decides() -> None:
    p1, p2 = key_rule("p1", "key A", "kyverno:ClusterPolicy/p1"), key_rule("p2", "key B", "kyverno:ClusterPolicy/p2")
    pol = policy(p1, p2)
    assert match_rules(pol, IMG.reference, "ns") == (p1, p2)
    v = verdict_for(pol, IMG, {"key A"})
    # Before: p1 (first match) verified the image and p2 was never checked.
    assert (v.status, v.compliant, v.rule, v.policy_source) == (Status.INVALID, False, "p2", "kyverno:ClusterPolicy/p2")
    assert v.headline == "rule 'p2' (kyverno:ClusterPolicy/p2): key B bad"
    assert "rule 'p1' (kyverno:ClusterPolicy/p1): key A ok" in v.reasons  # every policy's reasons are kept
    assert v.reasons[0].startswith("2 rules apply") and "p1' (kyverno:ClusterPolicy/p1): verified" in v.reasons[0]
    assert v.reasons.count("pulled from a mirror") == 1  # the image's notes once, not once per rule
    assert {s.verifier for s in v.signatures} == {"key A", "key B"}
    # The order of the policies does not change the outcome, only who is listed first.
    assert verdict_for(policy(p2, p1), IMG, {"key A"}).rule == "p2"
    assert judge(pol, IMG, {"key B"}) is Status.INVALID
    both = verdict_for(pol, IMG, {"key A", "key B"})
    assert both.status is Status.VERIFIED and both.deciding_reason == 0 and both.rule == "p1"


def test_the_worst_status_wins_whatever_the_order() -> None:
    revoked = SignatureResult("cosign", "key B", Outcome.FAILED, "key B revoked", SignatureFailure.REVOKED)
    p1, p2 = key_rule("p1", "key A", "s1"), key_rule("p2", "key B", "s2")
    for rules in ((p1, p2), (p2, p1)):
        per = [[[failed("key A")]] if r is p1 else [[revoked]] for r in rules]
        v = evaluate_rules(IMG, rules, per, [], policy(*rules), NOW, "ns")
        assert (v.status, v.rule, v.headline) == (Status.REVOKED, "p2", "rule 'p2' (s2): key B revoked")


def test_a_native_file_is_first_match_unless_it_says_match_all(tmp_path: Path) -> None:
    keys = [KeyPair.ecdsa() for _ in range(2)]
    for i, k in enumerate(keys):
        (tmp_path / f"k{i}.pub").write_text(k.public_pem)
    body = ("  rules:\n"
            "    - {name: a, images: ['r.io/*'], verifiers: [{cosign: {key: k0.pub, ignoreTlog: true}}]}\n"
            "    - {name: b, images: ['r.io/a'], verifiers: [{cosign: {key: k1.pub, ignoreTlog: true}}]}\n")
    head = "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
    (tmp_path / "first.yaml").write_text(head + body)
    (tmp_path / "all.yaml").write_text(head + "  match: all\n" + body)
    first, every = load_policy(tmp_path / "first.yaml"), load_policy(tmp_path / "all.yaml")
    assert [r.name for r in match_rules(first, IMG.reference, "ns")] == ["a"]
    assert [r.name for r in match_rules(every, IMG.reference, "ns")] == ["a", "b"]
    (tmp_path / "bad.yaml").write_text(head + "  match: any\n" + body)
    with pytest.raises(ConfigError, match="match"):
        load_policy(tmp_path / "bad.yaml")


def test_a_first_match_native_rule_never_shadows_an_imported_policy() -> None:
    native_a = key_rule("a", "key A", "policy.yaml", first_match="policy.yaml")
    native_b = key_rule("b", "key C", "policy.yaml", first_match="policy.yaml")
    imported = key_rule("p", "key B", "kyverno:ClusterPolicy/p")
    pol = policy(native_a, native_b, imported)
    assert match_rules(pol, IMG.reference, "ns") == (native_a, imported)
    assert judge(pol, IMG, {"key A"}) is Status.INVALID
    assert judge(pol, IMG, {"key A", "key B"}) is Status.VERIFIED


def test_a_warn_only_policy_stays_non_blocking_and_never_hides_an_enforced_failure() -> None:
    enforce, warn = key_rule("e", "key A", "s1"), key_rule("w", "key B", "s2", mode="warn")
    pol = policy(warn, enforce)
    v = verdict_for(pol, IMG, {"key A"})
    assert (v.status, v.warn_only, v.compliant, v.rule) == (Status.INVALID, True, True, "w")
    assert "warn only" in v.reasons[0]
    v = verdict_for(pol, IMG, {"key B"})  # the enforced failure decides, not the warn rule listed first
    assert (v.status, v.warn_only, v.compliant, v.rule) == (Status.INVALID, False, False, "e")
    v = verdict_for(pol, IMG, set())
    assert (v.warn_only, v.compliant, v.rule) == (False, False, "e")


def test_an_exemption_waives_every_matching_policy_and_keeps_their_reasons() -> None:
    p1, p2 = key_rule("p1", "key A", "s1"), key_rule("p2", "key B", "s2")
    ex = Exemption.model_validate({"images": ["r.io/a"], "reason": "SEC-9", "until": NOW + timedelta(days=60)})
    v = verdict_for(policy(p1, p2, exemptions=(ex,)), IMG, {"key A"})
    assert (v.status, v.compliant, v.deciding_reason) == (Status.EXEMPT, True, 0)
    assert v.reasons[1] == "without the exemption: invalid" and "rule 'p2' (s2): key B bad" in v.reasons
    lapsed = Exemption.model_validate({"images": ["r.io/a"], "reason": "old", "until": NOW - timedelta(days=1)})
    v = verdict_for(policy(p1, p2, exemptions=(lapsed,)), IMG, {"key A"})
    assert (v.status, v.compliant) == (Status.INVALID, False)


def test_a_rules_own_waiver_waives_that_rule_only() -> None:
    """kritis allowlists belong to their policy: they never waive another policy's verdict."""
    waiver = Exemption.model_validate({"images": ["r.io/*"], "namespaces": ["ns"],
                                       "reason": "kritis admission allowlist", "until": NOW + timedelta(days=999)})
    kritis = key_rule("kritis:ns/gap", "attestor", "kritis:GenericAttestationPolicy/gap", waivers=(waiver,))
    other = key_rule("p", "key B", "kyverno:ClusterPolicy/p")
    pol = policy(kritis, other)
    v = verdict_for(pol, IMG, set())
    assert (v.status, v.rule) == (Status.INVALID, "p")
    v = verdict_for(pol, IMG, {"key B"})
    assert (v.status, v.compliant, v.rule) == (Status.EXEMPT, True, "kritis:ns/gap")
    assert v.headline.startswith("rule 'kritis:ns/gap' (kritis:GenericAttestationPolicy/gap): exempt until")
    assert judge(policy(kritis), IMG, set()) is Status.EXEMPT  # alone, it waives its own verdict
    assert judge(pol, IMG, {"key B"}, ns="elsewhere") is Status.INVALID  # the waiver names its namespace


def test_the_exemption_that_applied_or_lapsed_is_a_field_of_the_verdict() -> None:
    """Reports read which exemption or waiver applied from ``Verdict.exemptions``, not from the reasons."""
    until = NOW + timedelta(days=60)
    ex = Exemption.model_validate({"images": ["r.io/a"], "reason": "SEC-9", "until": until, "approvedBy": "secops"})
    p1 = key_rule("p1", "key A", "s1")
    v = verdict_for(policy(p1, exemptions=(ex,)), IMG, set())
    assert v.exemptions == (ExemptionRef(ExemptionKind.POLICY, "SEC-9", until, "secops", lapsed=False),)
    assert v.exemptions[0].applied
    # a verified image needs no exemption: none is recorded
    assert verdict_for(policy(p1, exemptions=(ex,)), IMG, {"key A"}).exemptions == ()
    # a lapsed one is recorded as lapsed, applied or verified
    old = NOW - timedelta(days=1)
    lapsed = Exemption.model_validate({"images": ["r.io/a"], "reason": "old", "until": old})
    for keys, status in ((set(), Status.INVALID), ({"key A"}, Status.VERIFIED)):
        v = verdict_for(policy(p1, exemptions=(lapsed,)), IMG, keys)
        assert v.status is status
        assert v.exemptions == (ExemptionRef(ExemptionKind.POLICY, "old", old, None, lapsed=True),)


def test_a_rules_own_waiver_is_recorded_as_that_rules_waiver_under_several_rules() -> None:
    until = NOW + timedelta(days=999)
    waiver = Exemption.model_validate({"images": ["r.io/*"], "reason": "kritis admission allowlist", "until": until})
    kritis = key_rule("kritis:ns/gap", "attestor", "kritis:GenericAttestationPolicy/gap", waivers=(waiver,))
    other = key_rule("p", "key B", "kyverno:ClusterPolicy/p")
    v = verdict_for(policy(kritis, other), IMG, {"key B"})
    assert v.status is Status.EXEMPT
    assert v.exemptions == (ExemptionRef(ExemptionKind.WAIVER, "kritis admission allowlist", until, None,
                                         lapsed=False, rule="kritis:ns/gap"),)
    img = UnresolvedImage(ImageReference("r.io", "a", "1", None), "r.io/a:1", (container("ns"),), "not started")
    (u,) = unresolved_verdicts(img, policy(kritis), NOW)
    assert (u.status, [x.kind for x in u.exemptions]) == (Status.EXEMPT, [ExemptionKind.WAIVER])


def test_the_first_policy_to_lapse_ends_compliance() -> None:
    p1, p2 = key_rule("p1", "key A", "s1"), key_rule("p2", "key B", "s2")
    soon, late = NOW + timedelta(days=3), NOW + timedelta(days=300)
    per = [[[replace(passed("key A"), not_after=late)]], [[replace(passed("key B"), not_after=soon)]]]
    v = evaluate_rules(IMG, (p1, p2), per, [], policy(p1, p2), NOW, "ns")
    assert (v.status, v.not_after, v.expiring) == (Status.VERIFIED, soon, True)


def test_the_pipeline_early_stop_needs_every_rule() -> None:
    from scanner.pipeline import _Group

    p1, p2 = key_rule("p1", "key A", "s1"), key_rule("p2", "key B", "s2")
    (v1,), (v2,) = p1.verifiers, p2.verifiers
    g = _Group((p1, p2), "ns", IMG.containers)
    assert g.verifiers == (v1, v2)
    assert not _satisfied([g], {id(v1): (passed("key A"),), id(v2): (failed("key B"),)}, policy(p1, p2))
    assert _satisfied([g], {id(v1): (passed("key A"),), id(v2): (passed("key B"),)}, policy(p1, p2))


def test_an_unresolved_image_under_several_policies_is_an_error_waived_only_by_all() -> None:
    waiver = Exemption.model_validate({"images": ["r.io/*"], "reason": "allowlist", "until": NOW + timedelta(days=9)})
    p1, p2 = key_rule("p1", "key A", "s1", waivers=(waiver,)), key_rule("p2", "key B", "s2")
    img = UnresolvedImage(ImageReference("r.io", "a", "1", None), "r.io/a:1", (container("ns"),), "not started")
    (v,) = unresolved_verdicts(img, policy(p1, p2), NOW)
    assert (v.status, v.rule, v.compliant) == (Status.ERROR, "p2", False)
    assert v.headline == "rule 'p2' (s2): running digest unknown: not started"
    (v,) = unresolved_verdicts(img, policy(p1, replace(p2, waivers=(waiver,))), NOW)
    assert v.status is Status.EXEMPT


def test_an_images_rules_are_matched_once_per_image_not_once_per_namespace() -> None:
    """Issue 19: splitting an image's containers by namespace matched every rule's image globs (or its
    importer's matcher) again for each namespace the image runs in; the image half is asked once."""
    calls: list[ImageReference] = []

    def matcher(ref: ImageReference) -> bool:
        calls.append(ref)
        return True

    rule = CompiledRule("r", ("*",), ("*",), (FakeVerifier("v"),), matcher=matcher)
    image = RunningImage(ImageReference("r.io", "a", "1", D), tuple(container(f"ns-{i}") for i in range(5)))
    groups = _groups(policy(rule), image)
    assert [g.rules for g in groups] == [(rule,)] and len(groups[0].containers) == 5
    assert len(calls) == 1


@pytest.mark.parametrize("seed", range(6))
def test_scopes_select_exactly_the_rules_match_rules_selects_in_each_namespace(seed: int) -> None:
    """The per-image matching (and the memoised namespace globs) select, namespace by namespace, what
    :func:`match_rules` selects: lookalike namespaces (case, a trailing space, a prefix) and images
    (another repository, tag or digest) never share an answer; ``first_match`` groups, excluded
    namespaces and skipped images are honoured."""
    rng = random.Random(seed)
    namespaces = ["team-a", "team-A", "team-a ", "team-ab", "prod", "prod-x", "kube-system", "default"]
    ns_globs = [("*",), ("team-a",), ("team-*",), ("prod",), ("prod*",), ("kube-*",), ("team-A", "default")]
    img_globs = [("*",), ("r.io/a",), ("r.io/a:1",), (f"r.io/a@{D}",), ("r.io/b",), ("r.io/a*",), ("q.io/*",)]
    rules = tuple(
        CompiledRule(f"r{i}", rng.choice(img_globs), rng.choice(ns_globs), (FakeVerifier("v"),),
                     exclude_namespaces=rng.choice([(), ("prod-x",), ("team-a",)]),
                     skip_images=rng.choice([(), ("r.io/a:2",), ("r.io/a",)]),
                     first_match=rng.choice(["", "", "g1", "g2"]))
        for i in range(8)
    )
    p = policy(*rules)
    for ref in (ImageReference("r.io", "a", "1", D), ImageReference("r.io", "a", "2", D),
                ImageReference("r.io", "ab", "1", D), ImageReference("q.io", "a", None, D)):
        image = RunningImage(ref, tuple(container(ns, f"p{k}") for k, ns in enumerate(namespaces)))
        got = {c.namespace: g.rules for g in _groups(p, image) for c in g.containers}
        for ns in namespaces:
            want = []
            taken: set[str] = set()
            for r in rules:  # match_rules as it was written, rule by rule
                hit = (image_matches(r.images, ref) and any(fnmatchcase(ns, g) for g in r.namespaces)
                       and not any(fnmatchcase(ns, g) for g in r.exclude_namespaces)
                       and not (r.skip_images and image_matches(r.skip_images, ref)))
                if not hit or (r.first_match and r.first_match in taken):
                    continue
                if r.first_match:
                    taken.add(r.first_match)
                want.append(r)
            assert got[ns] == tuple(want) == match_rules(p, ref, ns), (ref, ns)


def test_a_namespace_no_cluster_can_have_is_matched_but_not_kept_by_the_process() -> None:
    """The namespace memo lives as long as the process (serve re-reads a pod-list file at every scan):
    a pod-list file's 50 MB "namespace" is matched as any other, and is not held once the scan is done."""
    import sys

    from scanner.policy.engine import namespace_matches

    huge = "prod-" + "x" * 50_000_000
    before = sys.getrefcount(huge)
    assert namespace_matches(("prod-*",), huge) and not namespace_matches(("team-*",), huge)
    assert sys.getrefcount(huge) == before  # nothing else holds it: freed with the scan's pods
    assert namespace_matches(("prod-*",), "prod-a") and not namespace_matches(("prod-*",), "prod")
