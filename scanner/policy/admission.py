"""What an imported admission policy said about admission, as plain facts (issue #25 item 5).

An audit judges every running pod; an admission controller (Kyverno, sigstore policy-controller, kritis)
judged each pod once, when it was created, through its own webhook. When an audit finds a non-compliant
image running under a policy the cluster enforces, these facts say why admission let it in.

Importers attach one :class:`AdmissionPolicy` to each rule they compile (``CompiledRule.admission``),
read from the imported object itself: its creation time, whether it is enforced at admission (mode), the
admission scope the audit does not reproduce exactly, and the webhook hints it carries. The webhook
configurations of the controllers (:class:`WebhookConfig`) are read by the import edge from the
Kubernetes API (``--policy-from ...:cluster`` only). Nothing here performs I/O; nothing here changes a
verdict's status: :func:`explain` turns them, with the pods' creation times and the store's history
given as values, into a :class:`scanner.models.AdmissionFinding` per non-compliant verdict.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from fnmatch import fnmatchcase

from scanner.models import (
    AdmissionCause,
    AdmissionEvidence,
    AdmissionFinding,
    ContainerRef,
    RunningImage,
    SignatureFailure,
    Status,
    Verdict,
)
from scanner.policy.schema import Revocation


class AdmissionMode(enum.StrEnum):
    """How the controller acted on a violation at admission time."""

    ENFORCE = "enforce"  # the request was denied
    AUDIT = "audit"  # admitted, recorded in a report (Kyverno ``Audit``)
    WARN = "warn"  # admitted with a warning (policy-controller ``mode: warn``)
    OFF = "off"  # not evaluated at admission at all (Kyverno ``spec.admission: false``)


class Controller(enum.StrEnum):
    """The admission controller that enforces a kind of imported policy (its webhooks are looked up by this)."""

    KYVERNO = "kyverno"
    POLICY_CONTROLLER = "policy-controller"
    KRITIS = "kritis"


@dataclass(frozen=True, slots=True)
class AdmissionFilter:
    """One filter of a policy's admission scope that the audit does not evaluate (it judges more
    widely): ``namespaces``/``kinds`` it names (empty: any), and what else it needs (``subjects``,
    ``namespaceSelector``, ...), as a short ``description`` for the evidence."""

    description: str
    namespaces: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdmissionScope:
    """What the admission controller's ``match``/``exclude`` cover, as far as the audit differs from it.

    ``match_kinds``: the resource kinds whose creation the policy checks (empty: every kind, i.e. pods
    whatever created them). A pod created by a workload kind the policy does not match (a DaemonSet's
    pods under a rule matching only ``Deployment``) was never checked at admission.
    ``excludes``: exclude filters admission applied and the audit drops (by subject, role, name,
    selector, a non-pod kind). ``narrowing``: match filters admission applied and the audit does not
    (selectors, names): admission checked only the pods they select.
    """

    match_kinds: tuple[str, ...] = ()
    excludes: tuple[AdmissionFilter, ...] = ()
    narrowing: tuple[AdmissionFilter, ...] = ()


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """One imported policy object, as its admission controller applies it.

    ``source``: the importer (``kyverno``, ``clusterimagepolicy``, ``kritis``, ``imagevalidatingpolicy``);
    ``kind``/``name``/``namespace``: the object; ``created_at``: its ``metadata.creationTimestamp`` (None
    when the document has none, e.g. a file written by hand); ``failure_policy``: the policy's own
    webhook failure policy when it sets one (Kyverno ``spec.failurePolicy`` /
    ``webhookConfiguration.failurePolicy``: ``Fail`` or ``Ignore``), else None (the controller's webhook
    configuration decides).
    """

    source: str
    controller: Controller
    kind: str
    name: str
    namespace: str = ""
    created_at: datetime | None = None
    mode: AdmissionMode = AdmissionMode.ENFORCE
    scope: AdmissionScope = AdmissionScope()
    failure_policy: str | None = None
    # Namespaced exceptions to ``mode`` (Kyverno validationFailureActionOverrides): (mode, namespace globs).
    mode_overrides: tuple[tuple[AdmissionMode, tuple[str, ...]], ...] = ()

    def mode_in(self, namespace: str) -> AdmissionMode:
        """The mode admission applied to a pod of ``namespace``."""
        if self.mode is AdmissionMode.OFF:
            return self.mode
        for mode, globs in self.mode_overrides:
            if any(fnmatchcase(namespace, g) for g in globs):
                return mode
        return self.mode

    @property
    def display(self) -> str:
        """``Kind/namespace/name`` or ``Kind/name``: how the policy is named in outputs."""
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One webhook of a ValidatingWebhookConfiguration that belongs to an admission controller.

    ``configuration``/``webhook``: the object's and the webhook's names; ``failure_policy``: ``Fail`` or
    ``Ignore`` (the API's default is ``Fail``).
    """

    controller: Controller
    configuration: str
    webhook: str
    failure_policy: str = "Fail"

    @property
    def ignores_failures(self) -> bool:
        return self.failure_policy.strip().lower() == "ignore"


# ----------------------------------------------------------------------------------------------
# the analysis: pure, over values

# The statuses an admission controller would have denied (error: it could not be decided now).
_EXPLAINED = frozenset({Status.UNSIGNED, Status.INVALID, Status.EXPIRED, Status.REVOKED, Status.ERROR})
_MODE_CAUSE = {
    AdmissionMode.OFF: AdmissionCause.ADMISSION_DISABLED,
    AdmissionMode.AUDIT: AdmissionCause.AUDIT_MODE,
    AdmissionMode.WARN: AdmissionCause.WARN_MODE,
}
# The kinds whose creation admission checks on the way to a pod, by the pod's top-level owner.
_CREATES = {
    "Deployment": ("Deployment", "ReplicaSet", "Pod"),
    "CronJob": ("CronJob", "Job", "Pod"),
}
MAX_PODS_SHOWN = 5  # pods named in one cause's evidence (the count is always given)


def _time(t: datetime | None) -> str:
    return t.isoformat().replace("+00:00", "Z") if t is not None else ""


def _pods(containers: Sequence[ContainerRef]) -> dict[str, str]:
    names = sorted({f"{c.namespace}/{c.pod}" for c in containers})
    return {"pods": ", ".join(names[:MAX_PODS_SHOWN]) + (", ..." if len(names) > MAX_PODS_SHOWN else ""),
            "pod_count": str(len(names))}


def _kind(k: str) -> str:
    return k.rsplit("/", 1)[-1].strip()  # Kyverno also writes group/version/Kind


def _kind_matched(scope: AdmissionScope, c: ContainerRef) -> bool:
    kinds = {_kind(k) for k in scope.match_kinds}
    if not kinds or kinds & {"*", "Pod"}:
        return True
    return bool(kinds & set(_CREATES.get(c.workload.kind, (c.workload.kind,))))


def _filter_covers(f: AdmissionFilter, c: ContainerRef) -> bool:
    if f.namespaces and not any(fnmatchcase(c.namespace, g) for g in f.namespaces):
        return False
    kinds = {_kind(k) for k in f.kinds}
    return not kinds or bool(kinds & {"*", "Pod", *_CREATES.get(c.workload.kind, (c.workload.kind,))})


def _serves_only_ignore_policies(w: WebhookConfig) -> bool:
    """Kyverno registers one webhook for its ``failurePolicy: Fail`` policies (``...kyverno.svc-fail``) and
    one for its ``Ignore`` policies (``...kyverno.svc-ignore``): the latter admits on error by design and
    serves only the policies that ask for it."""
    return w.controller is Controller.KYVERNO and w.webhook.endswith("-ignore")


def _earliest(containers: Iterable[ContainerRef]) -> datetime | None:
    return min((c.pod_created_at for c in containers if c.pod_created_at is not None), default=None)


def _revocation_time(verdict: Verdict, revocations: Sequence[Revocation]) -> tuple[bool, datetime | None]:
    """(a policy revocation names a revoked signature of the verdict, its revokedAt or None)."""
    times: list[datetime | None] = []
    for sig in verdict.signatures:
        if sig.failure is not SignatureFailure.REVOKED:
            continue
        for r in revocations:
            if (r.key_sha256 and sig.key_sha256 and r.key_sha256.lower() == sig.key_sha256.lower()) or (
                r.identity and r.identity in (sig.identity, sig.signer)
            ):
                times.append(r.revoked_at)
    if not times:
        return False, None
    known = [t for t in times if t is not None]
    return True, (max(known) if len(known) == len(times) else None)


def _causes(
    verdict: Verdict,
    policy: AdmissionPolicy,
    webhooks: Sequence[WebhookConfig],
    revocations: Sequence[Revocation],
    verified_before: datetime | None,
) -> list[AdmissionEvidence]:
    containers = list(verdict.image.containers)
    found: list[AdmissionEvidence] = []

    def add(cause: AdmissionCause, which: Sequence[ContainerRef], **facts: str) -> None:
        if which:
            found.append(AdmissionEvidence(cause, {**facts, **_pods(which)}))

    by_mode: dict[AdmissionMode, list[ContainerRef]] = {}
    for c in containers:
        by_mode.setdefault(policy.mode_in(c.namespace), []).append(c)
    for mode, cause in _MODE_CAUSE.items():
        add(cause, by_mode.get(mode, []), mode=mode.value)
    if policy.created_at is not None:
        before = [c for c in containers if c.pod_created_at is not None and c.pod_created_at < policy.created_at]
        first = _earliest(before)
        add(AdmissionCause.CREATED_BEFORE_POLICY, before, policy_created_at=_time(policy.created_at),
            earliest_pod_created_at=_time(first))
    scope = policy.scope
    add(AdmissionCause.KIND_NOT_MATCHED, [c for c in containers if not _kind_matched(scope, c)],
        match_kinds=", ".join(scope.match_kinds), workload_kinds=", ".join(sorted({
            c.workload.kind for c in containers if not _kind_matched(scope, c)})))
    filters = [(f, "exclude") for f in scope.excludes] + [(f, "match") for f in scope.narrowing]
    excluded = [c for c in containers if any(_filter_covers(f, c) for f, _ in filters)]
    used = [f"{how}: {f.description}" for f, how in filters if any(_filter_covers(f, c) for c in excluded)]
    add(AdmissionCause.EXCLUDED_AT_ADMISSION, excluded, filters="; ".join(used[:10]))
    admitted = [c for c in containers if c.pod_created_at is not None]
    if verdict.status is Status.REVOKED:
        named, revoked_at = _revocation_time(verdict, revocations)
        since = [c for c in admitted if revoked_at is None or c.pod_created_at < revoked_at]  # type: ignore[operator]
        if named or revoked_at is None:
            add(AdmissionCause.REVOKED_SINCE, since, revoked_at=_time(revoked_at) or "unknown")
    if verdict.status is Status.EXPIRED:
        lapsed = [s.not_after for s in verdict.signatures if s.failure is SignatureFailure.EXPIRED and s.not_after]
        if lapsed:
            not_after = max(lapsed)
            add(AdmissionCause.EXPIRED_SINCE,
                [c for c in admitted if c.pod_created_at < not_after],  # type: ignore[operator]
                not_after=_time(not_after))
    if verdict.status is Status.UNSIGNED and verified_before is not None:
        add(AdmissionCause.SIGNATURE_REMOVED, containers, last_verified_scan_at=_time(verified_before))
    ignore = (policy.failure_policy or "").strip().lower() == "ignore"
    fail_open = [w for w in webhooks if w.controller is policy.controller and w.ignores_failures
                 and (ignore or not _serves_only_ignore_policies(w))]
    if fail_open or ignore:
        names = [f"{w.configuration}/{w.webhook}" for w in fail_open]
        if ignore:
            names.append(f"{policy.display} failurePolicy")
        add(AdmissionCause.WEBHOOK_FAILS_OPEN, containers, failure_policy="Ignore", webhooks=", ".join(names[:10]))
    found.sort(key=lambda e: e.cause.rank)
    return found


def causes_rank(causes: Sequence[AdmissionEvidence]) -> int:
    """How weakly ``causes`` explain an admission: the rank of the strongest one (higher: weaker)."""
    return min(e.cause.rank for e in causes)


def explain(
    verdicts: Sequence[Verdict],
    rules: Mapping[tuple[str, str], AdmissionPolicy],
    *,
    webhooks: Sequence[WebhookConfig] = (),
    revocations: Sequence[Revocation] = (),
    verified_before: Mapping[str, datetime] | None = None,
) -> tuple[Verdict, ...]:
    """``verdicts`` with an :class:`AdmissionFinding` on each non-compliant one judged by an imported
    admission policy. ``rules``: (policy source, rule name) -> the rule's admission object;
    ``verified_before``: digest -> when an earlier scan of the cluster last found it verified. Status,
    reasons and compliance are never changed."""
    verified_before = verified_before or {}
    out: list[Verdict] = []
    for v in verdicts:
        keys = dict.fromkeys(((v.policy_source or "", v.rule or ""), *v.rejected_by))
        policies = [(k, p) for k in keys if (p := rules.get(k)) is not None]
        if not policies or v.status not in _EXPLAINED or v.compliant or not v.image.containers:
            out.append(v)
            continue
        seen = verified_before.get(v.digest or "") if isinstance(v.image, RunningImage) else None
        # Admission denies when any enforcing policy denies: the image got in only if every policy that
        # rejects it was bypassed. The one whose bypass is least explained is the finding (a tenant's own
        # Audit-mode Policy never explains away the cluster's Enforce policy); ties: the deciding rule.
        explained = []
        for key, policy in policies:
            causes = _causes(v, policy, webhooks, revocations, seen) or [
                AdmissionEvidence(AdmissionCause.UNEXPLAINED, _pods(v.image.containers))]
            explained.append((key, policy, causes))
        key, policy, causes = max(explained, key=lambda e: causes_rank(e[2]))
        finding = AdmissionFinding(
            policy=policy.display,
            policy_source=key[0],
            would_admit_now=None if v.status is Status.ERROR else False,
            causes=tuple(causes),
        )
        out.append(replace(v, admission=finding))
    return tuple(out)
