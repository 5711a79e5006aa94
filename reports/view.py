"""The report's view model: plain, frozen, sorted data built from a ``ScanResult`` (and its history).

Templates only lay out what this module computes: every list is sorted here, every count is
computed here, every string from the cluster or a registry is cleaned here (control and bidi
characters made visible, length bounded) and escaped by Jinja2's autoescaping at render time.

Nothing here is quadratic in the number of containers: a 10,000-container scan is grouped with
dictionaries, and only the evidence of *compliant* images is capped (non-compliant items are never
hidden; the JSON and CSV downloads always carry everything).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scanner.inventory.references import tag_reference_containers
from scanner.models import (
    ContainerRef,
    RunningImage,
    ScanResult,
    SignatureResult,
    Status,
    Verdict,
    image_counts,
)

MAX_TEXT = 2000  # characters of one hostile string shown in the HTML
MAX_DETAIL = 400  # characters of one evidence detail value
MAX_EVIDENCE_COMPLIANT = 200  # compliant images whose evidence is shown (non-compliant: all of them)
MAX_SIGNATURES = 10  # signatures shown per image
MAX_CONTAINERS = 12  # containers listed per image in the evidence
MAX_PODS = 8  # pod names listed per workload row
TREND_SCANS = 30
MAX_TAG_REFERENCES = 500  # containers naming a tag listed in the HTML (all of them in the JSON)

# Order of statuses, worst first: how every list of verdicts is sorted.
STATUS_ORDER: dict[Status, int] = {
    Status.REVOKED: 0,
    Status.INVALID: 1,
    Status.EXPIRED: 2,
    Status.UNSIGNED: 3,
    Status.ERROR: 4,
    Status.NO_POLICY: 5,
    Status.EXEMPT: 6,
    Status.VERIFIED: 7,
}

STATUS_HELP: dict[Status, str] = {
    Status.VERIFIED: "a signature by trusted material verified against the running digest",
    Status.UNSIGNED: "no signature found for the verifiers of the matching rule",
    Status.INVALID: "signatures found, none valid (wrong key or identity, altered, or for another digest)",
    Status.EXPIRED: "the only valid signatures have expired",
    Status.REVOKED: "signed, but the key, certificate or identity is revoked",
    Status.EXEMPT: "non-compliant, but covered by an exemption that had not lapsed at scan time",
    Status.NO_POLICY: "no policy rule matches the image",
    Status.ERROR: "the verdict could not be decided (registry unreachable, digest unknown, ...)",
}

# C0/C1 controls (except tab/newline) and the Unicode bidi/invisible formatting characters that could
# make a hostile name display as something else (CVE-2021-42574, "Trojan Source").
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)


def clean(value: object, limit: int = MAX_TEXT) -> str:
    """Display form of an untrusted string: invisible characters made visible, length bounded.

    Escaping for HTML is Jinja2's job (autoescape); this only stops a string from *looking* like
    something it is not, or from bloating the report.
    """
    text = "" if value is None else str(value)
    if len(text) > limit:
        text = text[:limit] + f"… [{len(text) - limit} more characters]"
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def ts(value: datetime | None) -> str:
    """A UTC timestamp as the report shows it (``2026-11-23 10:00:00Z``); empty for None."""
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


def short_digest(digest: str | None) -> str:
    if not digest:
        return ""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def image_key(v: Verdict) -> str:
    """Identity of a verdict across scans: the running digest, or the image text when unresolved."""
    img = v.image
    if isinstance(img, RunningImage):
        return f"{img.reference.repo}@{img.digest}"
    return f"unresolved:{img.image}"


def reference_text(v: Verdict) -> str:
    """The image as the report names it: registry/repository:tag (the digest is shown on its own)."""
    img = v.image
    ref = img.reference
    if ref is None:
        return img.image  # type: ignore[union-attr]
    return ref.repo + (f":{ref.tag}" if ref.tag else "")


def _sort_key(v: Verdict) -> tuple[int, str, str]:
    return (STATUS_ORDER.get(v.status, 99), reference_text(v), v.digest or "")


# ----------------------------------------------------------------------------------------------
# View classes


@dataclass(frozen=True, slots=True)
class StatusCount:
    status: str
    count: int
    compliant: bool
    help: str


@dataclass(frozen=True, slots=True)
class Summary:
    images: int
    containers: int
    namespaces: int
    compliant: int
    non_compliant: int
    warn_only: int
    expiring: int
    ratio: float  # 0..1
    percent: str  # "38.5%"
    by_status: tuple[StatusCount, ...]
    # Container-level figures (a replica set of 50 pods is 50 containers, 1 image).
    containers_compliant: int
    containers_non_compliant: int


@dataclass(frozen=True, slots=True)
class TrendPoint:
    scan_id: int | None
    started_at: str
    compliant: int
    total: int
    percent: str
    x: float
    y: float
    current: bool


@dataclass(frozen=True, slots=True)
class Trend:
    points: tuple[TrendPoint, ...]
    polyline: str  # SVG points attribute, numbers only
    area: str  # SVG polygon points, numbers only
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    gridlines: tuple[tuple[float, str], ...]  # (y, label)
    first_label: str
    last_label: str


@dataclass(frozen=True, slots=True)
class ChangeRow:
    reference: str
    digest: str
    before: str  # previous status ("" for a new image)
    after: str  # current status ("" for a removed image)
    namespaces: str
    workloads: str
    evidence_id: str  # anchor of the image's evidence ("" when not in this scan)


@dataclass(frozen=True, slots=True)
class Changes:
    previous_scan_id: int | None
    previous_started_at: str
    newly_non_compliant: tuple[ChangeRow, ...] = ()
    fixed: tuple[ChangeRow, ...] = ()
    signature_disappeared: tuple[ChangeRow, ...] = ()
    new_images: tuple[ChangeRow, ...] = ()
    removed_images: tuple[ChangeRow, ...] = ()

    @property
    def available(self) -> bool:
        return self.previous_scan_id is not None

    @property
    def total(self) -> int:
        return (len(self.newly_non_compliant) + len(self.fixed) + len(self.signature_disappeared)
                + len(self.new_images) + len(self.removed_images))


@dataclass(frozen=True, slots=True)
class WorkloadRow:
    workload_kind: str
    workload_name: str
    containers: str  # container names (type) joined
    pods: str  # first pod names
    pod_count: int
    reference: str
    digest: str
    status: str
    warn_only: bool
    deciding: str  # the reason that decided the status (Verdict.headline)
    reasons: tuple[str, ...]  # the other reasons, in the engine's order
    rule: str
    evidence_id: str


@dataclass(frozen=True, slots=True)
class NamespaceGroup:
    namespace: str
    rows: tuple[WorkloadRow, ...]
    images: int


@dataclass(frozen=True, slots=True)
class ExpiringRow:
    reference: str
    digest: str
    status: str
    not_after: str
    what: str  # "exemption" or "signature"
    namespaces: str
    evidence_id: str


@dataclass(frozen=True, slots=True)
class AdmissionRow:
    """A non-compliant image that an imported admission policy rejects today, running anyway, and why
    (``Verdict.admission``; information only, never a change of the verdict)."""

    reference: str
    status: str
    policy: str
    would_admit_now: str
    likely_cause: str
    causes: tuple[tuple[str, str], ...]  # (cause, "key=value; ...") strongest first
    namespaces: str
    evidence_id: str


@dataclass(frozen=True, slots=True)
class TagReferenceRow:
    """A container whose pod spec names a tag rather than a digest (a finding, not a verdict)."""

    namespace: str
    workload: str
    pod: str
    container: str
    image: str


@dataclass(frozen=True, slots=True)
class ExemptionRow:
    scope: str  # image globs (policy) or the images it was applied to (from verdicts)
    namespaces: str
    reason: str
    approved_by: str
    until: str
    lapsed: bool
    expiring: bool
    applied_to: int  # images it covered in this scan
    lapsed_hits: int  # images that would have been covered had it not lapsed
    source: str  # "policy" or "verdicts"


@dataclass(frozen=True, slots=True)
class CheckView:
    name: str
    outcome: str
    reason: str
    enforced: bool


@dataclass(frozen=True, slots=True)
class DetailView:
    key: str
    values: tuple[str, ...]  # one line each (chain fingerprints, ...)


@dataclass(frozen=True, slots=True)
class SignatureView:
    kind: str
    verifier: str
    outcome: str
    failure: str
    reason: str
    signer: str
    key_sha256: str
    identity: str
    issuer: str
    signed_at: str
    not_after: str
    checks: tuple[CheckView, ...]
    details: tuple[DetailView, ...]


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    anchor: str
    reference: str
    digest: str
    status: str
    compliant: bool
    warn_only: bool
    rule: str
    policy_source: str
    not_after: str
    checked_at: str  # judged from the re-check window: signatures last seen attached then ("" otherwise)
    deciding: str  # the reason that decided the status (Verdict.headline)
    reasons: tuple[str, ...]  # the other reasons, in the engine's order
    notes: tuple[str, ...]
    signatures: tuple[SignatureView, ...]
    signatures_hidden: int
    containers: tuple[str, ...]
    containers_hidden: int
    source: str = "scan"  # "watch": found by `serve --watch` after the scan (Verdict.source)


@dataclass(frozen=True, slots=True)
class VerifierUse:
    kind: str
    verifier: str
    signatures: int
    outcomes: str  # "passed 4, failed 9"


@dataclass(frozen=True, slots=True)
class CheckUse:
    name: str
    outcomes: str
    enforced: bool


@dataclass(frozen=True, slots=True)
class Methodology:
    verifiers: tuple[VerifierUse, ...]
    checks: tuple[CheckUse, ...]
    rules: tuple[tuple[str, int], ...]  # rule name, images judged under it
    policy_sources: tuple[str, ...]
    statuses: tuple[StatusCount, ...]
    stats: tuple[tuple[str, str], ...]  # scan counters, flattened


@dataclass(frozen=True, slots=True)
class Report:
    title: str
    cluster: str
    scan_id: str
    state: str
    started_at: str
    finished_at: str
    policy_digest: str
    sigaudit_version: str
    generated_at: str
    generator_version: str
    errors: tuple[str, ...]
    summary: Summary
    trend: Trend
    changes: Changes
    non_compliant: tuple[NamespaceGroup, ...]
    warnings: tuple[NamespaceGroup, ...]  # warn-only rules: reported, not counted non-compliant
    expiring: tuple[ExpiringRow, ...]
    tag_references: tuple[TagReferenceRow, ...]  # the first MAX_TAG_REFERENCES
    tag_references_total: int  # every container naming a tag (the JSON download lists them all)
    admission: tuple[AdmissionRow, ...]  # running despite an imported admission policy
    exemptions: tuple[ExemptionRow, ...]
    exemptions_source: str
    evidence: tuple[EvidenceItem, ...]
    evidence_hidden: int  # compliant images whose evidence is left to the JSON download
    methodology: Methodology


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """A scan of the trend (``scanner.store.ScanSummary`` reduced to what the trend needs)."""

    scan_id: int | None
    started_at: datetime
    compliant: int
    total: int


@dataclass(frozen=True, slots=True)
class FleetRow:
    cluster: str
    scan_id: str
    state: str
    started_at: str
    images: int
    compliant: int
    non_compliant: int
    percent: str
    ratio: float
    worst: tuple[tuple[str, int], ...]  # non-compliant statuses with counts
    policy_digest: str
    version: str
    age_note: str
    trend: Trend


@dataclass(frozen=True, slots=True)
class FleetReport:
    title: str
    generated_at: str
    generator_version: str
    clusters: tuple[FleetRow, ...]
    images: int
    compliant: int
    non_compliant: int
    percent: str
    without_scan: tuple[str, ...] = field(default=())


# ----------------------------------------------------------------------------------------------
# Builders


def _percent(compliant: int, total: int) -> tuple[float, str]:
    ratio = compliant / total if total else 1.0
    return ratio, f"{ratio * 100:.1f}%"


def build_summary(result: ScanResult) -> Summary:
    counts = Counter(v.status for v in result.verdicts)
    images = image_counts(result.verdicts)  # distinct images, as the JSON document's summary counts them
    compliant = images.compliant
    containers = 0
    containers_ok = 0
    namespaces: set[str] = set()
    for v in result.verdicts:
        n = len(v.image.containers)
        containers += n
        if v.compliant:
            containers_ok += n
        namespaces.update(c.namespace for c in v.image.containers)
    ratio, percent = _percent(compliant, images.images)
    by_status = tuple(
        StatusCount(s.value, counts.get(s, 0), s.compliant, STATUS_HELP[s])
        for s in sorted(Status, key=lambda s: STATUS_ORDER[s])
    )
    return Summary(
        images=images.images,
        containers=containers,
        namespaces=len(namespaces),
        compliant=compliant,
        non_compliant=images.non_compliant,
        warn_only=sum(1 for v in result.verdicts if v.compliant and not v.status.compliant),
        expiring=sum(1 for v in result.verdicts if v.expiring),
        ratio=ratio,
        percent=percent,
        by_status=by_status,
        containers_compliant=containers_ok,
        containers_non_compliant=containers - containers_ok,
    )


def build_trend(history: Sequence[HistoryPoint], current_id: int | None, *, width: int = 1000,
                height: int = 200, margins: tuple[int, int, int, int] = (44, 14, 16, 34)) -> Trend:
    """An SVG line of the compliance ratio over ``history`` (oldest first); coordinates only."""
    left, top, right, bottom = margins
    pw, ph = width - left - right, height - top - bottom
    pts: list[TrendPoint] = []
    n = len(history)
    for i, h in enumerate(history):
        ratio, percent = _percent(h.compliant, h.total)
        x = left + (pw / 2 if n == 1 else pw * i / (n - 1))
        y = top + ph * (1 - ratio)
        pts.append(TrendPoint(h.scan_id, ts(h.started_at), h.compliant, h.total, percent,
                              round(x, 1), round(y, 1), h.scan_id is not None and h.scan_id == current_id))
    polyline = " ".join(f"{p.x},{p.y}" for p in pts)
    area = ""
    if len(pts) > 1:
        base = top + ph
        area = f"{pts[0].x},{base} {polyline} {pts[-1].x},{base}"
    grid = tuple((round(top + ph * (1 - f), 1), f"{int(f * 100)}%") for f in (0.0, 0.25, 0.5, 0.75, 1.0))
    return Trend(
        points=tuple(pts), polyline=polyline, area=area, width=width, height=height, left=left, top=top,
        plot_width=pw, plot_height=ph, gridlines=grid,
        first_label=pts[0].started_at[:16] if pts else "",
        last_label=pts[-1].started_at[:16] if pts else "",
    )


def _namespaces_of(v: Verdict) -> str:
    return ", ".join(sorted({clean(c.namespace, 253) for c in v.image.containers}))


def _workloads_of(v: Verdict, limit: int = 4) -> str:
    names = sorted({f"{c.namespace}/{c.workload.kind}/{c.workload.name}" for c in v.image.containers})
    shown = [clean(n, 300) for n in names[:limit]]
    if len(names) > limit:
        shown.append(f"+{len(names) - limit} more")
    return ", ".join(shown)


def _by_image(verdicts: Iterable[Verdict]) -> dict[str, Verdict]:
    """One verdict per :func:`image_key`, failing closed: a digest judged apart (per credential set, per
    rule) is represented by its first non-compliant verdict, never by whichever came last — a passing
    verdict of one tenant must not hide another's failure (nor make it "fixed")."""
    out: dict[str, Verdict] = {}
    for v in verdicts:
        key = image_key(v)
        if key not in out or (out[key].compliant and not v.compliant):
            out[key] = v
    return out


def build_changes(current: ScanResult, previous: ScanResult | None, anchors: Mapping[str, str]) -> Changes:
    """What changed since ``previous`` (the same cluster's previous complete scan), by image digest.

    * newly non-compliant: non-compliant now, and compliant (or not running) in the previous scan;
    * fixed: the same digest was non-compliant and is compliant now;
    * signature disappeared: the same digest was verified and is now unsigned;
    * new / removed images: digests running now and not then, or the reverse.
    """
    if previous is None:
        return Changes(None, "")
    before = _by_image(previous.verdicts)
    now = _by_image(current.verdicts)

    def row(v: Verdict, b: Verdict | None, a: Verdict | None, key: str) -> ChangeRow:
        return ChangeRow(
            reference=clean(reference_text(v)), digest=v.digest or "",
            before=b.status.value if b else "", after=a.status.value if a else "",
            namespaces=_namespaces_of(v), workloads=_workloads_of(v), evidence_id=anchors.get(key, ""),
        )

    newly, fixed, gone, new, removed = [], [], [], [], []
    for key, v in now.items():
        b = before.get(key)
        if b is None:
            new.append((v, row(v, None, v, key)))
            if not v.compliant:
                newly.append((v, row(v, None, v, key)))
            continue
        if not v.compliant and b.compliant:
            newly.append((v, row(v, b, v, key)))
        elif v.compliant and not b.compliant:
            fixed.append((v, row(v, b, v, key)))
        if b.status is Status.VERIFIED and v.status is Status.UNSIGNED:
            gone.append((v, row(v, b, v, key)))
    for key, b in before.items():
        if key not in now:
            removed.append((b, row(b, b, None, key)))

    def done(items: list[tuple[Verdict, ChangeRow]]) -> tuple[ChangeRow, ...]:
        return tuple(r for _, r in sorted(items, key=lambda t: (_sort_key(t[0]), t[1].reference)))

    return Changes(previous.scan_id, ts(previous.started_at), done(newly), done(fixed), done(gone), done(new),
                   done(removed))


def _container_label(c: ContainerRef) -> str:
    suffix = "" if c.container_type.value == "container" else f" ({c.container_type.value})"
    return clean(c.container, 253) + suffix


def _other_reasons(v: Verdict) -> tuple[str, ...]:
    """A verdict's reasons without the deciding one (shown first, on its own)."""
    return tuple(clean(r) for i, r in enumerate(v.reasons) if i != v.deciding_reason)


def build_groups(verdicts: Iterable[Verdict], anchors: Mapping[str, str]) -> tuple[NamespaceGroup, ...]:
    """Verdicts grouped by namespace, then one row per (workload, image) with its pods and containers."""
    rows: dict[str, dict[tuple[str, str, str], list[ContainerRef]]] = defaultdict(dict)
    verdict_of: dict[tuple[str, str, str, str], Verdict] = {}
    for v in verdicts:
        key = image_key(v)
        for c in v.image.containers:
            wk = (c.workload.kind, c.workload.name, key)
            rows[c.namespace].setdefault(wk, []).append(c)
            verdict_of[(c.namespace, *wk)] = v
    groups = []
    for ns in sorted(rows):
        out = []
        for (kind, name, key), cs in rows[ns].items():
            v = verdict_of[(ns, kind, name, key)]
            pods = sorted({c.pod for c in cs})
            shown = ", ".join(clean(p, 253) for p in pods[:MAX_PODS])
            if len(pods) > MAX_PODS:
                shown += f", +{len(pods) - MAX_PODS} more"
            out.append((v, WorkloadRow(
                workload_kind=clean(kind, 128), workload_name=clean(name, 253),
                containers=", ".join(sorted({_container_label(c) for c in cs})),
                pods=shown, pod_count=len(pods), reference=clean(reference_text(v)), digest=v.digest or "",
                status=v.status.value, warn_only=v.warn_only, deciding=clean(v.headline), reasons=_other_reasons(v),
                rule=clean(v.rule or ""), evidence_id=anchors.get(key, ""),
            )))
        out.sort(key=lambda t: (_sort_key(t[0]), t[1].workload_kind, t[1].workload_name, t[1].containers))
        groups.append(NamespaceGroup(clean(ns, 253), tuple(r for _, r in out), len({r.evidence_id for _, r in out})))
    return tuple(groups)


def build_expiring(verdicts: Iterable[Verdict], anchors: Mapping[str, str]) -> tuple[ExpiringRow, ...]:
    items = [v for v in verdicts if v.expiring]
    items.sort(key=lambda v: (v.not_after or datetime.max.replace(tzinfo=UTC), reference_text(v)))
    return tuple(
        ExpiringRow(
            reference=clean(reference_text(v)), digest=v.digest or "", status=v.status.value,
            not_after=ts(v.not_after), what="exemption" if v.status is Status.EXEMPT else "signature",
            namespaces=_namespaces_of(v), evidence_id=anchors.get(image_key(v), ""),
        )
        for v in items
    )


def build_tag_references(verdicts: Iterable[Verdict]) -> tuple[tuple[TagReferenceRow, ...], int]:
    """(the first MAX_TAG_REFERENCES rows, the total): containers naming a tag rather than a digest."""
    found = tag_reference_containers(c for v in verdicts for c in v.image.containers)
    rows = tuple(
        TagReferenceRow(namespace=clean(c.namespace, 253), workload=clean(f"{c.workload.kind}/{c.workload.name}", 300),
                        pod=clean(c.pod, 253), container=_container_label(c), image=clean(c.image))
        for c in found[:MAX_TAG_REFERENCES]
    )
    return rows, len(found)


def build_admission(verdicts: Iterable[Verdict], anchors: Mapping[str, str]) -> tuple[AdmissionRow, ...]:
    """Images running despite an imported admission policy, from ``Verdict.admission`` (fields)."""
    rows = []
    for v in verdicts:
        a = v.admission
        if a is None:
            continue
        rows.append(AdmissionRow(
            reference=clean(reference_text(v)), status=v.status.value, policy=clean(a.policy, 300),
            would_admit_now={True: "yes", False: "no", None: "undecided"}[a.would_admit_now],
            likely_cause=a.likely_cause.value,
            causes=tuple((e.cause.value, clean("; ".join(f"{k}={val}" for k, val in sorted(e.facts.items())), 1000))
                         for e in a.causes),
            namespaces=_namespaces_of(v), evidence_id=anchors.get(image_key(v), ""),
        ))
    return tuple(rows)


def _parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Shown for images stored as exempt before verdicts recorded which exemption applied (images.exemptions
# NULL): the reasons say it in words, which the report does not parse.
NOT_RECORDED = "exemption details not recorded (scan stored by an older sigaudit): see the image's reasons"


@dataclass(slots=True)
class _Hits:
    until: datetime | None
    applied: int = 0
    lapsed: int = 0
    approved_by: str = ""
    refs: set[str] = field(default_factory=set)


def _scope_of(refs: set[str]) -> str:
    names = sorted(refs)
    scope = ", ".join(clean(n, 300) for n in names[:5])
    if len(names) > 5:
        scope += f", +{len(names) - 5} more"
    return scope


def build_exemptions(result: ScanResult, policy_summary: Mapping[str, Any] | None,
                     warn_within_days: int = 14) -> tuple[tuple[ExemptionRow, ...], str]:
    """The exemptions register: from the policy summary when known, else from the verdicts.

    What each image's exemptions did comes from ``Verdict.exemptions`` (fields the engine set), never
    from the reasons' words. "Lapsed" is judged at the scan's time (the report documents that scan).
    """
    at = result.started_at
    seen: dict[tuple[str, datetime, str], _Hits] = {}
    unrecorded = _Hits(until=None)
    for v in result.verdicts:
        counted: set[tuple[tuple[str, datetime, str], bool]] = set()
        for x in v.exemptions:
            key = (x.reason, x.until, x.approved_by or "")
            if (key, x.lapsed) in counted:  # one waiver of several rules: one image
                continue
            counted.add((key, x.lapsed))
            hits = seen.setdefault(key, _Hits(until=x.until, approved_by=x.approved_by or ""))
            if x.lapsed:
                hits.lapsed += 1
            else:
                hits.applied += 1
            hits.refs.add(reference_text(v))
        if v.status is Status.EXEMPT and not any(x.applied for x in v.exemptions):
            unrecorded.applied += 1
            unrecorded.refs.add(reference_text(v))
    rows: list[ExemptionRow] = []
    if policy_summary is not None and "exemptions" in policy_summary:
        for ex in policy_summary.get("exemptions") or []:
            until = ex.get("until")
            until_dt = until if isinstance(until, datetime) else _parse_time(str(until or ""))
            reason = str(ex.get("reason") or "")
            approved_by = str(ex.get("approvedBy") or ex.get("approved_by") or "")
            hit = seen.get((reason, until_dt, approved_by), _Hits(until_dt)) if until_dt else _Hits(None)
            rows.append(_exemption_row(
                scope=", ".join(clean(i, 300) for i in ex.get("images") or []),
                namespaces=", ".join(clean(n, 253) for n in ex.get("namespaces") or ["*"]),
                reason=reason, approved_by=approved_by,
                until=until_dt, at=at, applied=hit.applied, lapsed_hits=hit.lapsed, source="policy",
                warn_within_days=warn_within_days,
            ))
        source = "policy"
    else:
        for (reason, _until, _by), hits in seen.items():
            rows.append(_exemption_row(scope=_scope_of(hits.refs), namespaces="", reason=reason,
                                       approved_by=hits.approved_by, until=hits.until, at=at, applied=hits.applied,
                                       lapsed_hits=hits.lapsed, source="verdicts", warn_within_days=warn_within_days))
        source = "verdicts"
    if unrecorded.applied:
        rows.append(_exemption_row(scope=_scope_of(unrecorded.refs), namespaces="", reason=NOT_RECORDED,
                                   approved_by="", until=None, at=at, applied=unrecorded.applied, lapsed_hits=0,
                                   source="verdicts", warn_within_days=warn_within_days))
    rows.sort(key=lambda r: (not r.lapsed, not r.expiring, r.until, r.scope, r.reason))
    return tuple(rows), source


def _exemption_row(*, scope: str, namespaces: str, reason: str, approved_by: str, until: datetime | None,
                   at: datetime, applied: int, lapsed_hits: int, source: str, warn_within_days: int) -> ExemptionRow:
    lapsed = until is not None and until <= at
    expiring = until is not None and not lapsed and (until - at).days < warn_within_days
    return ExemptionRow(scope=scope, namespaces=namespaces, reason=clean(reason), approved_by=clean(approved_by, 253),
                        until=ts(until), lapsed=lapsed, expiring=expiring, applied_to=applied,
                        lapsed_hits=lapsed_hits, source=source)


def _detail_values(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        out = [clean(_scalar(x), MAX_DETAIL) for x in value[:20]]
        if len(value) > 20:
            out.append(f"+{len(value) - 20} more")
        return tuple(out)
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return tuple(clean(f"{k}: {_scalar(x)}", MAX_DETAIL) for k, x in items[:20])
    return (clean(_scalar(value), MAX_DETAIL),)


def _scalar(value: Any) -> str:
    if isinstance(value, datetime):
        return ts(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    if isinstance(value, list | tuple):
        return ", ".join(_scalar(v) for v in value)
    return "" if value is None else str(value)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | tuple | Mapping) and len(value) == 0)


# Details shown first, in this order (the evidence an auditor asks for); the rest follow by name.
_DETAIL_ORDER = ("chain_sha256", "chain_subjects", "log_index", "log_id", "timestamp", "signing_time",
                 "authentic_signing_time", "expiry", "revocation", "docker_reference", "layer")


_TIME_SOURCES = {"tsa": "RFC 3161 timestamp", "rekor-set": "Rekor log entry", "signing-authority":
                 "signing authority", "claimed": "claimed by the signer, not authenticated",
                 "unknown": "source not recorded"}


def _signed_at(s: SignatureResult) -> str:
    if s.signed_at is None:
        return ""
    src = s.signed_at.source.value
    return f"{ts(s.signed_at.value)} ({_TIME_SOURCES.get(src, src)})"


def signature_view(s: SignatureResult) -> SignatureView:
    rank = {k: i for i, k in enumerate(_DETAIL_ORDER)}
    details = sorted(s.details.items(), key=lambda kv: (rank.get(str(kv[0]), len(rank)), str(kv[0])))
    return SignatureView(
        kind=clean(s.kind, 64), verifier=clean(s.verifier, 300), outcome=s.outcome.value,
        failure=s.failure.value, reason=clean(s.reason), signer=clean(s.signer, 500),
        key_sha256=clean(s.key_sha256 or "", 64), identity=clean(s.identity or "", 500),
        issuer=clean(s.issuer or "", 500), signed_at=_signed_at(s), not_after=ts(s.not_after),
        checks=tuple(CheckView(c.name.value, c.outcome.value, clean(c.reason), c.enforced) for c in s.checks),
        details=tuple(DetailView(clean(k, 64), _detail_values(v)) for k, v in details[:30] if not _empty(v)),
    )


def build_evidence(ordered: Sequence[Verdict], anchors: Mapping[str, str]) -> tuple[tuple[EvidenceItem, ...], int]:
    items: list[EvidenceItem] = []
    hidden = 0
    shown_compliant = 0
    for v in ordered:
        if v.compliant and not v.expiring:
            if shown_compliant >= MAX_EVIDENCE_COMPLIANT:
                hidden += 1
                continue
            shown_compliant += 1
        cs = sorted(v.image.containers, key=lambda c: (c.namespace, c.pod, c.container))
        notes = v.image.notes if isinstance(v.image, RunningImage) else (v.image.reason,)
        items.append(EvidenceItem(
            anchor=anchors[image_key(v)], reference=clean(reference_text(v)), digest=v.digest or "",
            status=v.status.value, compliant=v.compliant, warn_only=v.warn_only, rule=clean(v.rule or ""),
            policy_source=clean(v.policy_source or ""), not_after=ts(v.not_after),
            checked_at=ts(v.checked_at),
            deciding=clean(v.headline), reasons=_other_reasons(v), notes=tuple(clean(n) for n in notes),
            signatures=tuple(signature_view(s) for s in v.signatures[:MAX_SIGNATURES]),
            signatures_hidden=max(0, len(v.signatures) - MAX_SIGNATURES),
            containers=tuple(
                clean(f"{c.namespace}/{c.pod}/{c.container}", 800)
                + ("" if c.container_type.value == "container" else f" ({c.container_type.value})")
                + f" — {clean(c.workload.kind, 128)}/{clean(c.workload.name, 253)}"
                for c in cs[:MAX_CONTAINERS]
            ),
            containers_hidden=max(0, len(cs) - MAX_CONTAINERS),
            source=v.source.value,
        ))
    return tuple(items), hidden


def _counts_text(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counter.items()))


def build_methodology(result: ScanResult, summary: Summary) -> Methodology:
    verifiers: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    checks: dict[str, Counter[str]] = defaultdict(Counter)
    enforced: dict[str, bool] = {}
    rules: Counter[str] = Counter()
    sources: set[str] = set()
    for v in result.verdicts:
        rules[v.rule or "(no rule)"] += 1
        if v.policy_source:
            sources.add(v.policy_source)
        for s in v.signatures:
            verifiers[(s.kind, s.verifier)][s.outcome.value] += 1
            for c in s.checks:
                checks[c.name.value][c.outcome.value] += 1
                enforced[c.name.value] = enforced.get(c.name.value, False) or c.enforced
    stats: list[tuple[str, str]] = []
    for name, value in sorted(result.stats.items()):
        if isinstance(value, Mapping):
            for k, n in sorted(value.items(), key=lambda kv: str(kv[0])):
                stats.append((clean(f"{name} {k}", 300), clean(n, 40)))
        else:
            stats.append((clean(name, 100), clean(value, 200)))
    return Methodology(
        verifiers=tuple(VerifierUse(clean(k, 64), clean(n, 300), sum(c.values()), _counts_text(c))
                        for (k, n), c in sorted(verifiers.items())),
        checks=tuple(CheckUse(n, _counts_text(c), enforced[n]) for n, c in sorted(checks.items())),
        rules=tuple((clean(r, 253), n) for r, n in sorted(rules.items())),
        policy_sources=tuple(clean(s, 500) for s in sorted(sources)),
        statuses=summary.by_status,
        stats=tuple(stats[:60]),
    )


def build_report(
    result: ScanResult,
    *,
    previous: ScanResult | None = None,
    history: Sequence[HistoryPoint] = (),
    policy_summary: Mapping[str, Any] | None = None,
    generated_at: datetime,
    generator_version: str,
) -> Report:
    """The whole view model of one scan's report. Pure: every input is passed in."""
    ordered = sorted(result.verdicts, key=_sort_key)
    anchors: dict[str, str] = {}
    for i, v in enumerate(ordered):
        anchors.setdefault(image_key(v), f"img-{i + 1}")
    summary = build_summary(result)
    points = list(history)
    if not any(h.scan_id is not None and h.scan_id == result.scan_id for h in points):
        points.append(HistoryPoint(result.scan_id, result.started_at, summary.compliant, summary.images))
        points.sort(key=lambda h: (h.started_at, h.scan_id or 0))
    points = points[-TREND_SCANS:]
    evidence, hidden = build_evidence(ordered, anchors)
    exemptions, ex_source = build_exemptions(result, policy_summary)
    tag_refs, tag_refs_total = build_tag_references(ordered)
    non_compliant = [v for v in ordered if not v.compliant]
    warn = [v for v in ordered if v.warn_only and not v.status.compliant]
    return Report(
        title=f"Image signature compliance — {clean(result.cluster, 253)}",
        cluster=clean(result.cluster, 253),
        scan_id=str(result.scan_id) if result.scan_id is not None else "not stored",
        state=result.state.value,
        started_at=ts(result.started_at),
        finished_at=ts(result.finished_at),
        policy_digest=clean(result.policy_digest, 200),
        sigaudit_version=clean(result.sigaudit_version, 64),
        generated_at=ts(generated_at),
        generator_version=generator_version,
        errors=tuple(clean(e) for e in result.errors[:200]),
        summary=summary,
        trend=build_trend(points, result.scan_id),
        changes=build_changes(result, previous, anchors),
        non_compliant=build_groups(non_compliant, anchors),
        warnings=build_groups(warn, anchors),
        expiring=build_expiring(ordered, anchors),
        tag_references=tag_refs,
        tag_references_total=tag_refs_total,
        admission=build_admission(ordered, anchors),
        exemptions=exemptions,
        exemptions_source=ex_source,
        evidence=evidence,
        evidence_hidden=hidden,
        methodology=build_methodology(result, summary),
    )


def build_fleet(latest: Sequence[tuple[str, Any, Sequence[HistoryPoint]]], *, generated_at: datetime,
                generator_version: str, now: datetime | None = None) -> FleetReport:
    """One row per cluster from its latest scan summary (``scanner.store.ScanSummary``-like objects)."""
    rows: list[FleetRow] = []
    without: list[str] = []
    images = compliant = 0
    for cluster, s, history in sorted(latest, key=lambda t: t[0]):
        if s is None:
            without.append(clean(cluster, 253))
            continue
        ratio, percent = _percent(s.compliant, s.total)
        worst = tuple(
            (st.value, int(s.counts.get(st.value, 0)))
            for st in sorted(Status, key=lambda st: STATUS_ORDER[st])
            if not st.compliant and s.counts.get(st.value, 0)
        )
        age = ""
        if now is not None:
            days = (now - s.started_at).days
            age = f"{days} days old" if days >= 2 else ""
        rows.append(FleetRow(
            cluster=clean(cluster, 253), scan_id=str(s.id), state=s.state.value, started_at=ts(s.started_at),
            images=s.total, compliant=s.compliant, non_compliant=s.total - s.compliant, percent=percent,
            ratio=ratio, worst=worst, policy_digest=clean(s.policy_digest, 200), version=clean(s.version, 64),
            age_note=age, trend=build_trend(history, s.id, width=200, height=44, margins=(4, 5, 4, 5)),
        ))
        images += s.total
        compliant += s.compliant
    rows.sort(key=lambda r: (r.ratio, r.cluster))
    _, percent = _percent(compliant, images)
    return FleetReport(
        title="Image signature compliance — fleet", generated_at=ts(generated_at),
        generator_version=generator_version, clusters=tuple(rows), images=images, compliant=compliant,
        non_compliant=images - compliant, percent=percent, without_scan=tuple(without),
    )
