"""Turn verification results into verdicts. Pure: results, policy and a clock in; a verdict out.

- Every rule that matches an image (images glob on the normalised reference; namespaces glob) applies,
  and all of them must hold, as Kyverno and policy-controller require of every matching policy; rules
  that declare themselves alternatives (``CompiledRule.first_match``: the native file's default
  ``match: first``) yield to the first of their group that matches (:func:`match_rules`). The verdict
  is the worst of the rules' verdicts, every rule's reasons kept (:func:`evaluate_rules`).
- A rule is satisfied when every one of its requirement sets has ``count`` verifiers, each with an
  unrevoked passing signature (:func:`rule_satisfied`, the one place that decides it).
- Revocations (key sha256, or identity with an optional effective time) turn passes into failures.
- Exemptions waive non-compliance until their end date, and say so; lapsed ones are reported.
- Anything that could not be decided is ``error`` — never compliant.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from scanner.errors import ParseError
from scanner.inventory.references import parse_reference
from scanner.models import (
    ContainerRef,
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
)
from scanner.policy.loader import CompiledRule, Policy
from scanner.policy.schema import Exemption, Revocation
from scanner.verify.cosign_rules import predicates_still_attested

_WILDCARDS = ("*", "?")


def _candidates(ref: ImageReference) -> list[str]:
    out = [ref.repo]
    if ref.tag:
        out.append(f"{ref.repo}:{ref.tag}")
    if ref.digest:
        out.append(f"{ref.repo}@{ref.digest}")
        if ref.tag:
            out.append(f"{ref.repo}:{ref.tag}@{ref.digest}")
    return out


@functools.lru_cache(maxsize=4096)  # a pure function of the policy's glob text: the same for every image
def _normalise_glob(glob: str) -> str:
    if any(w in glob for w in _WILDCARDS):
        return glob
    try:
        ref = parse_reference(glob)
    except ParseError:
        return glob
    # A plain reference without tag/digest matches the repository whatever the tag.
    if ":" not in glob.rsplit("/", 1)[-1] and "@" not in glob:
        return ref.repo
    return str(ref)


def image_matches(globs: Iterable[str], ref: ImageReference) -> bool:
    cands = _candidates(ref)
    return any(fnmatchcase(c, _normalise_glob(g)) for g in globs for c in cands)


def namespace_matches(globs: Iterable[str], namespace: str) -> bool:
    if len(namespace) > _MEMO_NAMESPACE_LENGTH:  # never a Kubernetes namespace: asked, not remembered
        return any(fnmatchcase(namespace, g) for g in globs)
    return _namespace_in(tuple(globs), namespace)


# A namespace is a DNS label (63 characters); a pod-list file may say anything. The memo below lives as
# long as the process (serve, the scheduler): only names a cluster can have are kept, at most 8192 of them.
_MEMO_NAMESPACE_LENGTH = 253


# A pure function of the globs and the namespace (equal strings, equal answer): a cluster has a few
# hundred namespaces, and every image of a scan asks it again for each of its namespaces and rules.
@functools.lru_cache(maxsize=8192)
def _namespace_in(globs: tuple[str, ...], namespace: str) -> bool:
    return any(fnmatchcase(namespace, g) for g in globs)


def _image_applies(rule: CompiledRule, ref: ImageReference) -> bool:
    """The image half of :func:`rule_applies` (its ``images``/``matcher`` and ``skip_images``)."""
    hit = rule.matcher(ref) if rule.matcher is not None else image_matches(rule.images, ref)
    return hit and not (rule.skip_images and image_matches(rule.skip_images, ref))


def _namespace_applies(rule: CompiledRule, namespace: str) -> bool:
    """The namespace half of :func:`rule_applies` (``namespaces`` and ``exclude_namespaces``)."""
    return namespace_matches(rule.namespaces, namespace) and not (
        rule.exclude_namespaces and namespace_matches(rule.exclude_namespaces, namespace))


def rule_applies(rule: CompiledRule, ref: ImageReference, namespace: str) -> bool:
    return _image_applies(rule, ref) and _namespace_applies(rule, namespace)


def match_rules(policy: Policy, ref: ImageReference, namespace: str) -> tuple[CompiledRule, ...]:
    """Every rule that applies to the image in this namespace, in policy order; each must hold.

    A rule with a ``first_match`` group is skipped when an earlier rule of the same group matched: of a
    group only the first matching rule applies. Rules without a group, and the first of every other
    group, apply whenever they match."""
    return _in_namespace([r for r in policy.rules if _image_applies(r, ref)], namespace)


def _in_namespace(image_rules: Sequence[CompiledRule], namespace: str) -> tuple[CompiledRule, ...]:
    """:func:`match_rules` given the rules whose image half applies (in policy order): the image is
    matched once per image, not once per namespace it runs in."""
    out: list[CompiledRule] = []
    taken: set[str] = set()
    for rule in image_rules:
        if not _namespace_applies(rule, namespace):
            continue
        if rule.first_match:
            if rule.first_match in taken:
                continue
            taken.add(rule.first_match)
        out.append(rule)
    return tuple(out)


def match_rule(policy: Policy, ref: ImageReference, namespace: str) -> CompiledRule | None:
    """The first of :func:`match_rules` (the others apply too)."""
    rules = match_rules(policy, ref, namespace)
    return rules[0] if rules else None


def match_exemption(policy: Policy, ref: ImageReference | None, image_text: str, namespace: str) -> Exemption | None:
    """The matching exemption with the latest end date (lapsed ones included; the caller decides)."""
    return _latest(policy.exemptions, ref, image_text, namespace)


def match_waiver(rule: CompiledRule, ref: ImageReference | None, image_text: str, namespace: str) -> Exemption | None:
    """The rule's own waiver for the image (``CompiledRule.waivers``: it waives this rule's verdict only)."""
    return _latest(rule.waivers, ref, image_text, namespace)


def _latest(
    exemptions: Iterable[Exemption], ref: ImageReference | None, image_text: str, namespace: str
) -> Exemption | None:
    found: Exemption | None = None
    for ex in exemptions:
        if not namespace_matches(ex.namespaces, namespace):
            continue
        if ex.matcher is not None:  # an importer's own semantics (kritis allowlists), never widened by globs
            hit = ex.matcher(ref, image_text)
        elif ref is not None:
            hit = image_matches(ex.images, ref)
        else:
            hit = any(fnmatchcase(image_text, g) for g in ex.images)
        if hit and (found is None or ex.until > found.until):
            found = ex
    return found


def _signed_before(result: SignatureResult, revoked_at: datetime) -> bool:
    """Whether the signature is proven to exist before ``revoked_at``: only an authentic time (a
    verified TSA countersignature, a Rekor SET, a signing authority's authenticSigningTime) can
    prove it. A time the signer merely claims, or none, proves nothing."""
    t = result.signed_at
    return t is not None and t.authentic and t.value < revoked_at


@dataclass(frozen=True, slots=True)
class Scope:
    """Containers of one image that share the rules that apply and an exemption (the unit a verdict is
    made for). ``rules`` is empty when no rule matches; every one of them must hold."""

    rules: tuple[CompiledRule, ...]
    exemption: Exemption | None
    namespace: str  # one namespace of the group, as seen by the rule and the exemption
    containers: tuple[ContainerRef, ...]


def scopes(
    policy: Policy, ref: ImageReference | None, image_text: str, containers: Iterable[ContainerRef]
) -> list[Scope]:
    """Split an image's containers by the rules and the exemption their namespace selects.

    Rules and exemptions are told apart by the objects themselves (a rule's identity is its source,
    namespace and name), never by a name: two policies' rules that share a name are never merged.
    Resolved and unresolved images are split alike."""
    by_ns: dict[str, list[ContainerRef]] = {}
    for c in containers:
        by_ns.setdefault(c.namespace, []).append(c)
    groups: dict[tuple[tuple[tuple[int, int], ...], int], Scope] = {}
    image_rules = [r for r in policy.rules if _image_applies(r, ref)] if ref is not None else []
    for ns, cs in sorted(by_ns.items()):
        rules = _in_namespace(image_rules, ns)
        exemption = match_exemption(policy, ref, image_text, ns)
        key = (tuple((id(r), id(match_waiver(r, ref, image_text, ns))) for r in rules), id(exemption))
        prev = groups.get(key)
        groups[key] = (
            Scope(rules, exemption, ns, tuple(cs))
            if prev is None
            else replace(prev, containers=(*prev.containers, *cs))
        )
    return list(groups.values())


def _revoked(result: SignatureResult, revocations: Sequence[Revocation]) -> Revocation | None:
    for rev in revocations:
        if rev.key_sha256 is not None:
            hit = bool(result.key_sha256) and str(result.key_sha256).lower() == rev.key_sha256.lower()
        else:
            hit = rev.identity in {result.identity, result.signer, *(result.details.get("identities") or [])}
        # With an effective time (AWS Signer's model) only signatures made at or after it are revoked;
        # a signature escapes only when an authentic time proves it was made before.
        if hit and (rev.revoked_at is None or not _signed_before(result, rev.revoked_at)):
            return rev
    return None


def _revocation_reason(r: SignatureResult, rev: Revocation) -> str:
    who = f"key sha256:{rev.key_sha256}" if rev.key_sha256 else f"identity {rev.identity!r}"
    if rev.revoked_at is None:
        return f"{r.reason}; but {who} is revoked: {rev.reason}"
    when = f"{who} is revoked for signatures made after {rev.revoked_at.isoformat()}"
    t = r.signed_at
    if t is None:
        why = "no authentic signing time proves this signature is older"
    elif not t.authentic:
        why = (f"its signing time {t.value.isoformat()} is {t.source.value}, not authenticated "
               "(no verified timestamp), so it cannot prove the signature is older")
    else:
        why = f"signed at {t.value.isoformat()} ({t.source.value})"
    return f"{r.reason}; but {when} and {why}: {rev.reason}"


def apply_revocations(
    results: Sequence[SignatureResult], revocations: Sequence[Revocation]
) -> tuple[SignatureResult, ...]:
    out = []
    for r in results:
        rev = _revoked(r, revocations) if r.outcome is Outcome.PASSED else None
        if rev is None:
            out.append(r)
            continue
        out.append(replace(r, outcome=Outcome.FAILED, failure=SignatureFailure.REVOKED,
                           reason=_revocation_reason(r, rev)))
    # A required predicate type attested only by a revoked key or identity is not attested.
    def revoked(attestation: SignatureResult) -> str | None:
        rev = _revoked(attestation, revocations)
        return None if rev is None else _revocation_reason(attestation, rev).removeprefix(f"{attestation.reason}; but ")

    return predicates_still_attested(out, revoked)


@dataclass(frozen=True, slots=True)
class Satisfaction:
    """Whether a rule's requirement sets are met by the results of its verifiers."""

    ok: bool
    passing: tuple[int, ...]  # indices of rule.verifiers with an unrevoked passing signature
    unmet: tuple[str, ...]  # one line per requirement set that is not met


def rule_satisfied(
    rule: CompiledRule, per_verifier: Sequence[Sequence[SignatureResult]], revocations: Sequence[Revocation]
) -> Satisfaction:
    """The one n-of-m decision (the pipeline's early stop and the verdict both use it).

    ``per_verifier[i]`` are the results of ``rule.verifiers[i]``: a result counts for the verifier that
    produced it, never for another one that happens to bear the same name. Every requirement set must
    have ``count`` distinct passing verifiers; a refused rule or an empty set is never satisfied."""
    if len(per_verifier) != len(rule.verifiers):
        raise ValueError("one result list per verifier of the rule is needed")
    passing = tuple(
        i
        for i, rs in enumerate(per_verifier)
        if any(r.outcome is Outcome.PASSED for r in apply_revocations(rs, revocations))
    )
    unmet: list[str] = []
    sets = rule.requirement_sets
    for count, members in sets:
        got = [i for i in members if i in passing]
        if not members or len(got) < count:
            names = ", ".join(rule.verifiers[i].name for i in members) or "(none)"
            which = "" if len(sets) == 1 else f" of [{names}]"
            unmet.append(f"{len(got)} of the {count} required verifiers{which} found a valid signature")
    ok = not rule.refused and bool(rule.verifiers) and not unmet
    return Satisfaction(ok, passing, tuple(unmet))


def _per_verifier(rule: CompiledRule, results: Sequence[SignatureResult]) -> list[list[SignatureResult]]:
    """Flat results attributed by verifier name (for callers that ran one verifier per name)."""
    out: list[list[SignatureResult]] = [[] for _ in rule.verifiers]
    index: dict[str, int] = {}
    for i, v in enumerate(rule.verifiers):
        index.setdefault(v.name, i)
    for r in results:
        if r.verifier in index:
            out[index[r.verifier]].append(r)
    return out


_FAILURE_ORDER = (SignatureFailure.ERROR, SignatureFailure.REVOKED, SignatureFailure.EXPIRED, SignatureFailure.INVALID)
_FAILURE_STATUS = {
    SignatureFailure.ERROR: Status.ERROR,
    SignatureFailure.REVOKED: Status.REVOKED,
    SignatureFailure.EXPIRED: Status.EXPIRED,
    SignatureFailure.INVALID: Status.INVALID,
}


def evaluate(
    image: RunningImage,
    rule: CompiledRule | None,
    results: Sequence[SignatureResult],
    material_errors: Sequence[str],
    policy: Policy,
    now: datetime,
    namespace: str,
    *,
    per_verifier: Sequence[Sequence[SignatureResult]] | None = None,
) -> Verdict:
    """The verdict for one running digest under one rule (as seen from one namespace's exemptions).

    ``per_verifier`` gives the results of each of ``rule.verifiers`` (the pipeline always does);
    without it, ``results`` are attributed to the verifiers by name."""
    verdict = _judge(image, rule, results, material_errors, policy, now, per_verifier)
    if rule is not None:
        verdict = _exempt(verdict, match_waiver(rule, image.reference, str(image.reference), namespace), now,
                          policy.expiry_warning, rule)
    exemption = match_exemption(policy, image.reference, str(image.reference), namespace)
    return _exempt(verdict, exemption, now, policy.expiry_warning)


def _judge(
    image: RunningImage,
    rule: CompiledRule | None,
    results: Sequence[SignatureResult],
    material_errors: Sequence[str],
    policy: Policy,
    now: datetime,
    per_verifier: Sequence[Sequence[SignatureResult]] | None,
) -> Verdict:
    """The verdict of one rule, before exemptions."""
    notes = list(image.notes)
    source = rule.source if rule else None
    if rule is None:
        return Verdict(
            image, Status.NO_POLICY, (*notes, "no policy rule matches this image"), None, None,
            deciding_reason=len(notes),
        )
    if rule.refused:
        why = tuple(f"rule {rule.name!r} ({rule.source}) cannot be enforced as written: {r}" for r in rule.refused)
        return Verdict(
            image, Status.ERROR, (*why, *notes, *rule.notes), rule.name, source, (), False, None, rule.mode == "warn"
        )

    if per_verifier is None:
        per_verifier = _per_verifier(rule, results)
    sat = rule_satisfied(rule, per_verifier, policy.revocations)
    results = apply_revocations(results, policy.revocations)
    passed = [r for r in results if r.outcome is Outcome.PASSED]
    reasons: list[str] = []
    if passed and not sat.ok:
        # n-of-m: some verifiers passed, not enough of them. What failed decides the status below.
        names = ", ".join(sorted({rule.verifiers[i].name for i in sat.passing})) or "none of the rule's"
        reasons += [f"not enough: {u}" for u in sat.unmet]
        reasons.append(f"valid signatures for: {names}")
        missing = [v.name for i, v in enumerate(rule.verifiers) if i not in sat.passing]
        reasons.append(f"no valid signature for: {', '.join(missing)}")
        failed = [r for r in results if r.outcome is not Outcome.PASSED]
        results_for_status = failed or [replace(passed[0], outcome=Outcome.FAILED, failure=SignatureFailure.INVALID)]
        seen = {r.failure for r in results_for_status}
        worst = next((f for f in _FAILURE_ORDER if f in seen), SignatureFailure.INVALID)
        status = _FAILURE_STATUS[worst]
        # The headline is the signature whose failure gave the status; without one, the count itself.
        decider = next((r for r in failed if r.failure is worst), None)
        deciding = 0
        if decider is not None:
            deciding = len(reasons)
            reasons.append(decider.reason)
        if material_errors:
            deciding = len(reasons)
            reasons += [f"could not read all signatures: {e}" for e in material_errors]
            status = Status.ERROR
        reasons += notes
        return Verdict(
            image, status, tuple(reasons), rule.name, source, tuple(results), False, None, rule.mode == "warn",
            deciding,
        )
    if sat.ok and passed:
        best = max(passed, key=lambda r: (r.not_after is None, r.not_after or now))
        not_after = (
            None if any(r.not_after is None for r in passed) else max(r.not_after for r in passed if r.not_after)
        )
        expiring = not_after is not None and not_after - now <= policy.expiry_warning
        reasons.append(best.reason)
        reasons += [f"also: {r.reason}" for r in results if r is not best and r.outcome is not Outcome.PASSED][:5]
        for r in passed:
            reasons += [
                f"logged (not enforced): {c.name}: {c.reason}"
                for c in r.checks
                if not c.enforced and c.outcome in (Outcome.FAILED, Outcome.ERROR)
            ]
        if expiring and not_after is not None:
            reasons.append(
                f"signature or certificate lapses at {not_after.isoformat()}, inside the expiry warning window"
            )
        reasons += notes
        reasons += list(rule.notes)
        return Verdict(
            image,
            Status.VERIFIED,
            tuple(reasons),
            rule.name,
            source,
            tuple(results),
            expiring,
            not_after,
            rule.mode == "warn",
        )

    warn_only = rule.mode == "warn"
    # "skipped": examined but not a signature of the rule's kinds (e.g. a verified attestation).
    judged = [r for r in results if r.outcome is not Outcome.SKIPPED]
    deciding = 0
    if not judged:
        if material_errors:
            status = Status.ERROR
            reasons += [f"could not read signatures: {e}" for e in material_errors]
        else:
            status = Status.UNSIGNED
            # Verifiers may word "nothing found" themselves (attestations: "image is not attested by X").
            own = [nf for v in rule.verifiers if (nf := v.not_found_reason)]
            if own and len(own) == len(rule.verifiers):
                reasons += own
            else:
                kinds = ", ".join(v.name for v in rule.verifiers)
                reasons.append(f"no signature found for the verifiers of rule {rule.name!r} ({kinds})")
                reasons += own
            reasons += [r.reason for r in results if r.outcome is Outcome.SKIPPED][:5]
            if not rule.required:
                warn_only = True
                reasons.append("the policy does not require a signature (required: false): reported, not counted")
    else:
        failures = {r.failure for r in judged}
        worst = next((f for f in _FAILURE_ORDER if f in failures), SignatureFailure.INVALID)
        status = _FAILURE_STATUS[worst]
        # The first signature whose failure gave the status decides, wherever it is listed: another
        # key's "does not verify" listed first must not stand for a revocation.
        first = next((i for i, r in enumerate(results) if r.failure is worst), 0)
        shown = list(range(min(10, len(results))))
        if first not in shown:
            shown.append(first)
        if material_errors and status is not Status.ERROR:
            # A signature we could not read might have been the valid one: that decides.
            deciding = len(reasons)
            reasons += [f"could not read all signatures: {e}" for e in material_errors]
            status = Status.ERROR
        else:
            deciding = len(reasons) + shown.index(first)
        reasons += [results[i].reason for i in shown]
    reasons += notes
    reasons += list(rule.notes)
    return Verdict(
        image, status, tuple(reasons), rule.name, source, tuple(results), False, None, warn_only, deciding
    )


# How bad a rule's verdict is, when several rules judge one image: what is counted non-compliant comes
# first (a warn-only violation never hides an enforced one), then the status; a waived verdict shows
# before a verified one (the image's compliance rests on the waiver).
_SEVERITY = {
    Status.ERROR: 7,
    Status.REVOKED: 6,
    Status.EXPIRED: 5,
    Status.INVALID: 4,
    Status.UNSIGNED: 3,
    Status.NO_POLICY: 2,
    Status.EXEMPT: 1,
    Status.VERIFIED: 0,
}


def _badness(v: Verdict) -> tuple[bool, int]:
    return (not v.compliant, _SEVERITY[v.status])


def _label(rule: CompiledRule) -> str:
    return f"rule {rule.name!r} ({rule.source})"


def evaluate_rules(
    image: RunningImage,
    rules: Sequence[CompiledRule],
    per_rule: Sequence[Sequence[Sequence[SignatureResult]]],
    material_errors: Sequence[str],
    policy: Policy,
    now: datetime,
    namespace: str,
) -> Verdict:
    """The verdict for one running digest under every rule that applies to it (:func:`match_rules`):
    each must hold. ``per_rule[k][i]`` are the results of ``rules[k].verifiers[i]``. One rule (or none)
    gives exactly :func:`evaluate`'s verdict; several are combined by :func:`_combine`. The policy's
    exemptions waive the combined verdict, so every rule's verdict at once; a rule's own waivers only
    its own."""
    if len(per_rule) != len(rules):
        raise ValueError("one list of per-verifier results per rule is needed")
    if len(rules) <= 1:
        rule = rules[0] if rules else None
        per = per_rule[0] if rules else []
        flat = [r for rs in per for r in rs]
        return evaluate(image, rule, flat, material_errors, policy, now, namespace, per_verifier=per)
    bare = replace(image, notes=())  # the image's notes are said once, not once per rule
    judged = [
        _exempt(
            _judge(bare, rule, [r for rs in per for r in rs], material_errors, policy, now, per),
            match_waiver(rule, image.reference, str(image.reference), namespace),
            now,
            policy.expiry_warning,
            rule,
        )
        for rule, per in zip(rules, per_rule, strict=True)
    ]
    exemption = match_exemption(policy, image.reference, str(image.reference), namespace)
    return _exempt(_combine(image, rules, judged), exemption, now, policy.expiry_warning)


def _combine(
    image: RunningImage | UnresolvedImage, rules: Sequence[CompiledRule], judged: Sequence[Verdict]
) -> Verdict:
    """One verdict from the verdicts of several rules that must all hold (each judged without the image's
    notes). The status is the worst (non-compliant before compliant, then error, revoked, expired,
    invalid, unsigned, exempt); ``rule``/``policy_source``/``warn_only`` are the deciding rule's and
    ``deciding_reason`` points at its deciding reason. Every rule's reasons are kept, each prefixed by
    its rule, after a first line with each rule's outcome; the image's notes follow once."""
    decider = max(range(len(judged)), key=lambda k: _badness(judged[k]))  # the first of the worst
    worst = judged[decider]

    def outcome(v: Verdict) -> str:
        return v.status.value + (
            " (warn only: reported, not counted)" if v.warn_only and not v.status.compliant else ""
        )

    reasons = [
        f"{len(rules)} rules apply to this image and each must hold: "
        + "; ".join(f"{_label(r)}: {outcome(v)}" for r, v in zip(rules, judged, strict=True))
    ]
    deciding = 0
    for k, (rule, v) in enumerate(zip(rules, judged, strict=True)):
        if k == decider and worst.status is not Status.VERIFIED:
            deciding = len(reasons) + v.deciding_reason
        reasons += [f"{_label(rule)}: {r}" for r in v.reasons]
    reasons += image.notes
    signatures: list[SignatureResult] = []
    for v in judged:
        signatures += [s for s in v.signatures if not any(s is t for t in signatures)]
    lapses = [v.not_after for v in judged if v.not_after is not None]
    return Verdict(
        image,
        worst.status,
        tuple(reasons),
        worst.rule,
        worst.policy_source,
        tuple(signatures),
        any(v.expiring for v in judged),
        min(lapses) if lapses else None,  # every rule must hold: the first to lapse ends compliance
        worst.warn_only,
        deciding,
        tuple(x for v in judged for x in v.exemptions),  # each rule's own waivers, applied or lapsed
        rejected_by=tuple((r.source, r.name) for r, v in zip(rules, judged, strict=True) if not v.status.compliant),
    )


def _exempt(verdict: Verdict, exemption: Exemption | None, now: datetime, warn: timedelta,
            waiver_of: CompiledRule | None = None) -> Verdict:
    """``verdict`` under ``exemption`` (a policy exemption, or ``waiver_of``'s own waiver). What it did is
    said in the reasons and recorded as an :class:`ExemptionRef` in ``Verdict.exemptions``."""
    if exemption is None:
        return verdict
    lapsed = exemption.until <= now
    ref = ExemptionRef(
        kind=ExemptionKind.WAIVER if waiver_of is not None else ExemptionKind.POLICY,
        reason=exemption.reason, until=exemption.until, approved_by=exemption.approved_by, lapsed=lapsed,
        rule=waiver_of.name if waiver_of is not None else None,
    )
    # A verified verdict needs no waiver; an exempt one (waived by its rule's own waiver) keeps it.
    if verdict.status in (Status.VERIFIED, Status.EXEMPT):
        if not lapsed:
            return verdict
        return replace(
            verdict,
            reasons=(*verdict.reasons, f"exemption lapsed at {exemption.until.isoformat()} ({exemption.reason})"),
            exemptions=(*verdict.exemptions, ref),
        )
    if lapsed:
        return replace(
            verdict,
            reasons=(
                *verdict.reasons,
                f"exemption lapsed at {exemption.until.isoformat()}: {exemption.reason}; not applied",
            ),
            exemptions=(*verdict.exemptions, ref),
        )
    by = f", approved by {exemption.approved_by}" if exemption.approved_by else ""
    return replace(
        verdict,
        status=Status.EXEMPT,
        reasons=(
            f"exempt until {exemption.until.isoformat()}: {exemption.reason}{by}",
            f"without the exemption: {verdict.status.value}",
            *verdict.reasons,
        ),
        not_after=exemption.until,
        expiring=exemption.until - now <= warn,
        deciding_reason=0,
        exemptions=(ref, *verdict.exemptions),
    )


def unresolved_verdicts(image: UnresolvedImage, policy: Policy, now: datetime) -> list[Verdict]:
    """``error`` verdicts for an image whose running digest is unknown (never compliant, whatever its tag
    names now; the image's notes follow as information), one per rules and exemption scope, exactly as a
    resolved image's containers are split: an exemption applies to the containers of the namespaces it
    names, whatever the order of the pods. Under several rules, each rule's error (or its own waiver)
    is combined as for a resolved image."""
    out = []
    for scope in scopes(policy, image.reference, image.image, image.containers) or [
        Scope((), None, "", image.containers)
    ]:
        sub = replace(image, containers=scope.containers)
        if len(scope.rules) <= 1:
            v = _unknown(sub, scope.rules[0] if scope.rules else None, image.notes, scope.namespace, policy, now)
        else:
            v = _combine(sub, scope.rules, [_unknown(sub, r, (), scope.namespace, policy, now) for r in scope.rules])
        out.append(_exempt(v, scope.exemption, now, policy.expiry_warning))
    return out


def _unknown(
    image: UnresolvedImage, rule: CompiledRule | None, notes: tuple[str, ...], namespace: str, policy: Policy,
    now: datetime,
) -> Verdict:
    """One rule's ``error`` for an image whose running digest is unknown (or the rule's own waiver of it)."""
    v = Verdict(image, Status.ERROR, (f"running digest unknown: {image.reason}", *notes),
                rule.name if rule else None, rule.source if rule else None, warn_only=False)
    if rule is None:
        return v
    return _exempt(v, match_waiver(rule, image.reference, image.image, namespace), now, policy.expiry_warning, rule)
