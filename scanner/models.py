"""Plain, frozen, typed models that flow between the pipeline stages.

inventory -> resolve -> fetch signatures -> verify -> evaluate policy -> store -> export

No stage imports a later one; every stage takes and returns these models.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scanner.redact import redact_text, representable

SCHEMA_VERSION = 1


def _prose(text: str) -> str:
    return representable(redact_text(text))


def _mask_prose(obj: Any, *names: str) -> None:
    """Mask URL credentials in the free-text fields ``names`` of a frozen model (reasons, notes,
    errors: what people read), and make them representable (no NUL, no lone surrogate). Facts that
    decisions use (identities, signers, digests) are never touched. Every output — cache, database,
    JSON, HTML, CSV, table — is built from these models, so a reason a verifier wrote with a raw
    ``https://user:password@…`` never leaves the process."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, str):
            masked: Any = _prose(value)
        else:
            items = [_prose(v) if isinstance(v, str) else v for v in value]
            masked = value if items == list(value) else type(value)(items)
        if masked is not value and masked != value:
            object.__setattr__(obj, name, masked)


class ContainerType(enum.StrEnum):
    CONTAINER = "container"
    INIT = "initContainer"
    EPHEMERAL = "ephemeralContainer"


@dataclass(frozen=True, slots=True)
class Workload:
    """The top-level owner of a pod (Deployment, CronJob, ...) or the pod itself."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """One container of one pod, as the inventory saw it."""

    namespace: str
    pod: str
    container: str
    container_type: ContainerType
    image: str  # the image as written in the pod spec
    image_id: str | None  # status.*ContainerStatuses[].imageID, raw
    workload: Workload
    pull_secrets: tuple[str, ...] = ()
    pod_uid: str = ""
    pod_created_at: datetime | None = None  # metadata.creationTimestamp (None when the pod list has none)


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A normalised image reference: docker.io/library/nginx:1.25@sha256:..."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repo(self) -> str:
        """registry/repository, the name policies and trust scopes match on."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        out = self.repo
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_digest(self, digest: str) -> ImageReference:
        return ImageReference(self.registry, self.repository, self.tag, digest)


@dataclass(frozen=True, slots=True)
class RunningImage:
    """One unique running digest, with every container that runs it.

    ``reference`` is the repository (and tag, for display) the digest was pulled from. The digest
    is always the runtime's (``imageID``), never a tag resolved at scan time. ``notes`` (e.g. pulled
    from another repository than the spec names) end up among the verdict's reasons.
    """

    reference: ImageReference  # always has .digest set after resolution
    containers: tuple[ContainerRef, ...]
    notes: tuple[str, ...] = ()
    pull_secrets: tuple[tuple[str, str], ...] = ()  # (namespace, secret name)

    def __post_init__(self) -> None:
        _mask_prose(self, "notes")

    @property
    def digest(self) -> str:
        assert self.reference.digest is not None
        return self.reference.digest

    @property
    def display(self) -> str:
        return str(self.reference)


@dataclass(frozen=True, slots=True)
class UnresolvedImage:
    """Containers whose running digest is not known (not started yet, a local image id, an imageID
    that cannot be parsed, an image reference that cannot be parsed). Never compliant.

    ``reason`` says why the running digest is unknown. ``notes`` are information only: what the
    pod spec's tag or digest names at scan time and how that digest would be judged; never what runs.
    """

    reference: ImageReference | None
    image: str
    containers: tuple[ContainerRef, ...]
    reason: str
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _mask_prose(self, "reason", "notes")

    @property
    def display(self) -> str:
        return str(self.reference) if self.reference else self.image


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None


# ----------------------------------------------------------------------------------------------
# Signature material, fetched by scanner.signatures and handed, as bytes, to the verifiers.


@dataclass(frozen=True, slots=True)
class CosignLayer:
    """One layer of a cosign legacy ``.sig`` manifest: payload bytes plus its annotations."""

    payload: bytes  # the simplesigning JSON, digest-checked against the layer descriptor
    media_type: str
    annotations: Mapping[str, str]
    digest: str


@dataclass(frozen=True, slots=True)
class ReferrerArtifact:
    """A referrer manifest (notation signature, sigstore bundle, ...) and its single blob."""

    manifest_digest: str
    artifact_type: str  # artifactType, or config.mediaType for old notation signatures
    blob_media_type: str
    blob: bytes  # digest-checked
    annotations: Mapping[str, str]
    subject: Descriptor | None


@dataclass(frozen=True, slots=True)
class SignatureMaterial:
    """Everything found attached to one digest. ``errors`` are discovery failures."""

    image: Descriptor  # the running image's own descriptor (media type, digest, size)
    cosign_layers: tuple[CosignLayer, ...] = ()
    cosign_sig_digest: str | None = None  # digest of the .sig manifest, for change detection
    referrers: tuple[ReferrerArtifact, ...] = ()
    errors: tuple[str, ...] = ()
    truncated: bool = False  # more signatures than the configured bound
    referrers_listed: bool = False  # whether referrers were looked up at all (for cache fingerprints)


# ----------------------------------------------------------------------------------------------
# Verification results.


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"  # the check could not run: never a pass, never the same as failed
    SKIPPED = "skipped"


class CheckName(enum.StrEnum):
    INTEGRITY = "integrity"
    AUTHENTICITY = "authenticity"
    IDENTITY = "trusted-identity"
    EXPIRY = "expiry"
    TIMESTAMP = "authentic-timestamp"
    REVOCATION = "revocation"
    TLOG = "transparency-log"
    DIGEST = "digest-binding"


@dataclass(frozen=True, slots=True)
class Check:
    name: CheckName
    outcome: Outcome
    reason: str = ""
    enforced: bool = True  # a logged-only (not enforced) failure is reported, not fatal

    def __post_init__(self) -> None:
        _mask_prose(self, "reason")


class SignatureFailure(enum.StrEnum):
    """Why a single signature did not count, as the policy needs to know it."""

    NONE = ""
    INVALID = "invalid"  # bad signature, wrong key, payload for another digest, identity mismatch
    EXPIRED = "expired"
    REVOKED = "revoked"
    ERROR = "error"  # could not be decided


class TimeSource(enum.StrEnum):
    """Where a signing time comes from. Only an authentic source may change a verdict (e.g. keep a
    signature made before a ``revokedAt`` revocation valid); a time the signer merely claims never does."""

    TSA = "tsa"  # an RFC 3161 countersignature verified against a trusted timestamping authority
    REKOR_SET = "rekor-set"  # a Rekor integrated time signed by the log (SET / inclusion promise), verified
    SIGNING_AUTHORITY = "signing-authority"  # notation ``authenticSigningTime``, vouched for by the signing service
    CLAIMED = "claimed"  # the signer's own claim (notation ``signingTime``): never authentic
    UNKNOWN = "unknown"  # stored by a version that did not record the source: never authentic

    @property
    def authentic(self) -> bool:
        return self in (TimeSource.TSA, TimeSource.REKOR_SET, TimeSource.SIGNING_AUTHORITY)


@dataclass(frozen=True, slots=True)
class SignedTime:
    """A signing time and where it came from. Compare ``value`` only after checking ``authentic``."""

    value: datetime
    source: TimeSource

    @property
    def authentic(self) -> bool:
        return self.source.authentic

    @staticmethod
    def earliest(times: Sequence[SignedTime]) -> SignedTime | None:
        """The earliest of several verified times (each proves the signature existed by then)."""
        return min(times, key=lambda t: t.value, default=None)


@dataclass(frozen=True, slots=True)
class SignatureResult:
    """The result of checking one signature against one verifier's trust material."""

    kind: str  # "cosign", "cosign-keyless", "sigstore-bundle", "notation", ...
    verifier: str  # human name of the verifier that judged it (rule/verifier index)
    outcome: Outcome  # PASSED only when every enforced check passed
    reason: str
    failure: SignatureFailure = SignatureFailure.NONE
    signer: str = ""  # key id (sha256 of SPKI), certificate subject or SAN
    key_sha256: str | None = None  # hex sha256 of the signer's SubjectPublicKeyInfo DER
    identity: str | None = None  # certificate SAN / subject, for identity revocation
    issuer: str | None = None  # OIDC issuer or certificate issuer
    signed_at: SignedTime | None = None  # the signing time and its source (authentic or only claimed)
    not_after: datetime | None = None  # earliest of signature expiry and chain notAfter
    checks: tuple[Check, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)  # chain fingerprints, log index, ...

    def __post_init__(self) -> None:
        _mask_prose(self, "verifier", "reason")


class VerdictSource(enum.StrEnum):
    """What produced a verdict: a full scan (the source of truth), or ``sigaudit serve --watch`` on a
    new running digest between two scans (recorded against the latest complete scan, marked so)."""

    SCAN = "scan"
    WATCH = "watch"


class Status(enum.StrEnum):
    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    INVALID = "invalid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    EXEMPT = "exempt"
    NO_POLICY = "no-policy"
    ERROR = "error"

    @property
    def compliant(self) -> bool:
        return self in (Status.VERIFIED, Status.EXEMPT)


class ExemptionKind(enum.StrEnum):
    """Which kind of waiver matched a verdict."""

    POLICY = "policy"  # an exemption of the policy file: waives the image's verdict under every rule
    WAIVER = "waiver"  # a rule's own waiver (a kritis allowlist): waives that rule's verdict only


@dataclass(frozen=True, slots=True)
class ExemptionRef:
    """An exemption or waiver that matched an image, as the engine judged it at scan time.

    ``lapsed``: its ``until`` had passed at scan time, so it was not applied (the verdict says so).
    """

    kind: ExemptionKind
    reason: str
    until: datetime
    approved_by: str | None = None
    lapsed: bool = False
    rule: str | None = None  # for a waiver: the rule whose verdict it waives

    @property
    def applied(self) -> bool:
        return not self.lapsed


class AdmissionCause(enum.StrEnum):
    """Why an image an admission policy rejects today is running anyway, strongest first (the order of
    this enumeration is the order of strength: a fact that proves admission never judged the pod before
    one that only makes it possible)."""

    ADMISSION_DISABLED = "admission-disabled"  # the policy is not evaluated at admission (Kyverno admission: false)
    AUDIT_MODE = "audit-mode"  # the policy only reports at admission (Kyverno Audit)
    WARN_MODE = "warn-mode"  # the policy only warns at admission (policy-controller mode: warn)
    CREATED_BEFORE_POLICY = "created-before-policy"  # the pod existed before the policy object
    KIND_NOT_MATCHED = "kind-not-matched"  # the policy's match kinds do not cover what created the pod
    EXCLUDED_AT_ADMISSION = "excluded-at-admission"  # an exclude/selector the audit cannot evaluate names it
    REVOKED_SINCE = "revoked-since-admission"  # the signature was revoked after the pod was admitted
    EXPIRED_SINCE = "expired-since-admission"  # the signature or certificate lapsed after the pod was admitted
    SIGNATURE_REMOVED = "signature-removed-after-admission"  # verified in an earlier scan, unsigned now
    WEBHOOK_FAILS_OPEN = "webhook-fails-open"  # failurePolicy: Ignore: a webhook error or timeout admits
    UNEXPLAINED = "unexplained"  # none of the above: admission was bypassed or the controller is absent

    @property
    def rank(self) -> int:
        return list(AdmissionCause).index(self)


@dataclass(frozen=True, slots=True)
class AdmissionEvidence:
    """One cause that holds, with the values that show it (timestamps as RFC 3339, names)."""

    cause: AdmissionCause
    facts: Mapping[str, str]

    def __post_init__(self) -> None:
        # Names and times from the cluster; a URL with credentials (an annotation, a filter) is masked.
        masked = {k: _prose(v) for k, v in self.facts.items()}
        if masked != dict(self.facts):
            object.__setattr__(self, "facts", masked)


@dataclass(frozen=True, slots=True)
class AdmissionFinding:
    """Why a non-compliant image judged by an imported admission policy is running (issue #25 item 5).

    Information only: it never changes the verdict's status or compliance. ``policy``: the admission
    object (``ClusterPolicy/require-signed``); ``would_admit_now``: whether the policy would admit the
    image now, i.e. the verdict itself (False; None when the verdict could not be decided); ``causes``:
    every cause that holds, strongest first (never empty: ``unexplained`` when none does)."""

    policy: str
    policy_source: str
    would_admit_now: bool | None
    causes: tuple[AdmissionEvidence, ...]

    def __post_init__(self) -> None:
        if not self.causes:
            raise ValueError("an admission finding names at least one cause (unexplained when none holds)")

    @property
    def likely_cause(self) -> AdmissionCause:
        return self.causes[0].cause


@dataclass(frozen=True, slots=True)
class Verdict:
    image: RunningImage | UnresolvedImage
    status: Status
    reasons: tuple[str, ...]
    rule: str | None = None
    policy_source: str | None = None
    signatures: tuple[SignatureResult, ...] = ()
    expiring: bool = False
    not_after: datetime | None = None
    warn_only: bool = False  # reported, not counted non-compliant (e.g. policy mode: warn)
    # Index into ``reasons`` of the reason that decided ``status`` (the others add context). Tables
    # and reports show this one as the verdict's headline; nothing parses the reasons' words.
    deciding_reason: int = 0
    # The exemptions and waivers that matched the image and mattered: the one that made the status
    # ``exempt`` (applied) and any that had lapsed (not applied). Reports and the JSON document read
    # these fields, never the reasons' words. Empty in scans stored before they were recorded.
    exemptions: tuple[ExemptionRef, ...] = ()
    # Why a non-compliant image judged by an imported admission policy runs anyway; set after the
    # policy stage (scanner/policy/admission.py), never read to decide status or compliance.
    admission: AdmissionFinding | None = None
    # (policy source, rule name) of every rule whose own verdict was not compliant when several rules
    # judged the image (set by the engine; empty: only ``rule`` decided). Not stored: the admission
    # analysis reads it before the scan is written.
    rejected_by: tuple[tuple[str, str], ...] = ()
    source: VerdictSource = VerdictSource.SCAN
    # Set when the verdict was judged from the verification cache inside the re-check window
    # (``--recheck-after``) without a registry request: when the signatures were last seen attached.
    # None: they were listed (or fetched) in this scan.
    checked_at: datetime | None = None

    def __post_init__(self) -> None:
        _mask_prose(self, "reasons")
        if not (0 <= self.deciding_reason < max(1, len(self.reasons))):
            raise ValueError(f"deciding_reason {self.deciding_reason} is not an index into {len(self.reasons)} reasons")

    @property
    def headline(self) -> str:
        """The reason that decided the status ("" only for a verdict without reasons)."""
        return self.reasons[self.deciding_reason] if self.reasons else ""

    @property
    def digest(self) -> str | None:
        if isinstance(self.image, RunningImage):
            return self.image.digest
        return None

    @property
    def compliant(self) -> bool:
        # warn-only rules (policy-controller mode: warn, Kyverno required: false) report violations
        # without counting them; a verdict that could not be decided is never compliant, warn or not.
        return self.status.compliant or (self.warn_only and self.status is not Status.ERROR)


class ScanState(enum.StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PARTIAL = "partial"  # finished, but some inputs could not be read (e.g. a namespace forbidden)
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ScanResult:
    cluster: str
    started_at: datetime
    finished_at: datetime
    state: ScanState
    verdicts: tuple[Verdict, ...]
    policy_digest: str
    errors: tuple[str, ...] = ()
    scan_id: int | None = None
    sigaudit_version: str = ""
    # Counters of the scan's own work, e.g. {"registry_requests": {"<registry>|<code>": n},
    # "registry_errors": {...}, "verifications": {"<verifier kind>|<outcome>": n}}. Persisted as JSON.
    stats: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _mask_prose(self, "errors")


@dataclass(frozen=True, slots=True)
class ImageCounts:
    """How many distinct images a scan judged, and how many of them are compliant."""

    images: int
    compliant: int

    @property
    def non_compliant(self) -> int:
        return self.images - self.compliant

    @property
    def ratio(self) -> float:
        return round(self.compliant / self.images, 6) if self.images else 1.0


def image_identity(v: Verdict) -> tuple[object, ...]:
    """What makes a verdict's image one image of the scan: its registry, repository and digest (for
    an unknown running digest: what the spec names and why it is unknown), and the rule and exemption
    it was judged by — the README's "one verdict per running digest and per set of rules and
    exemption". The credential set is not part of it: pods of one digest that read the registry with
    different credentials are judged apart (a verdict is never lent across tenants) but run one image."""
    img = v.image
    where: tuple[object, ...]
    if isinstance(img, RunningImage):
        where = ("digest", img.reference.registry, img.reference.repository, img.digest)
    else:
        where = ("unknown", img.image, img.reason)
    return (*where, v.policy_source, v.rule, v.exemptions)


def image_counts(verdicts: Iterable[Verdict]) -> ImageCounts:
    """Distinct images (:func:`image_identity`) and the compliant ones among them. Fail closed: an
    image judged apart under several credential sets is compliant only when every verdict of it is."""
    compliant: dict[tuple[object, ...], bool] = {}
    for v in verdicts:
        key = image_identity(v)
        compliant[key] = compliant.get(key, True) and v.compliant
    return ImageCounts(len(compliant), sum(compliant.values()))
