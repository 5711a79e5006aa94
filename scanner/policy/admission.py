"""What an imported admission policy said about admission, as plain facts (issue #25 item 5).

An audit judges every running pod; an admission controller (Kyverno, sigstore policy-controller, kritis)
judged each pod once, when it was created, through its own webhook. When an audit finds a non-compliant
image running under a policy the cluster enforces, these facts say why admission let it in.

Importers attach one :class:`AdmissionPolicy` to each rule they compile (``CompiledRule.admission``),
read from the imported object itself: its creation time, whether it is enforced at admission (mode), the
admission scope the audit does not reproduce exactly, and the webhook hints it carries. The webhook
configurations of the controllers (:class:`WebhookConfig`) are read by the import edge from the
Kubernetes API (``--policy-from ...:cluster`` only). Nothing here performs I/O; nothing here changes a
verdict's status (see :mod:`scanner.policy.admission_analysis`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


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
class AdmissionScope:
    """What the admission controller's ``match``/``exclude`` cover, as far as the audit differs from it.

    ``match_kinds``: the resource kinds whose creation the policy checks (empty: every kind, i.e. pods
    whatever created them). A pod created by a workload kind the policy does not match (a DaemonSet's
    pods under a rule matching only ``Deployment``) was never checked at admission.
    ``exclude_kinds`` / ``exclude_namespaces``: kinds and namespaces excluded at admission.
    ``unevaluated_excludes``: exclude filters the audit cannot evaluate (by subject, role, name,
    selector), which the audit drops (it judges more widely) but admission applied, each as a short
    description (``namespaces=[legacy] subjects=[ci-bot]``); ``unevaluated_namespaces`` the namespaces
    those filters name (``*`` when a filter names none).
    """

    match_kinds: tuple[str, ...] = ()
    exclude_kinds: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    unevaluated_excludes: tuple[str, ...] = ()
    unevaluated_namespaces: tuple[str, ...] = ()


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
