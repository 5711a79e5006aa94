"""OSCAL 1.1.x assessment-results (https://pages.nist.gov/OSCAL/reference/1.1.2/assessment-results/json-outline/)
for one scan: the same facts as the verdicts, for GRC tools.

Signature (pure)::

    def assessment_results(scan: ScanSummary, verdicts: Sequence[Verdict], evidence: Mapping[str, str],
                           *, now: datetime) -> dict[str, Any]

- one ``result`` per scan (start/end = the scan's);
- one inventory item per workload (namespace/kind/name) in the result's ``local-definitions``;
- one ``observation`` per image verdict (running digest or unresolved image), its ``subjects`` the
  inventory items of the workloads that run it, its ``relevant-evidence`` the pack files of that image
  (``evidence`` keys under ``images/<digest>/``, ``<digest>`` as ``sha256:hex``, ``sha256-hex`` or ``hex``),
  each linked to a back-matter resource that carries the file's SHA-256;
- one ``finding`` per policy rule (``satisfied`` only when every image under it is verified or exempt; a
  warn-only violation and an error are ``not-satisfied``);
- uuids are uuid5 of the scan's identity (cluster, id, start) and a key, so two runs over one scan agree;
  ``now`` is only ``metadata.last-modified``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from scanner.models import RunningImage, Status, Verdict
from scanner.redact import redact_text, representable

if TYPE_CHECKING:  # the type only: this module does no store I/O
    from scanner.store.queries import ScanSummary

OSCAL_VERSION = "1.1.3"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/sigaudit/sigaudit/oscal")
PROP_NS = "https://github.com/sigaudit/sigaudit/ns/oscal"
_HEX = re.compile(r"^[0-9a-f]{64}$")
_TOKEN_BAD = re.compile(r"[^A-Za-z0-9._-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _time(t: datetime) -> str:
    if t.tzinfo is None or t.utcoffset() is None:
        t = t.replace(tzinfo=UTC)  # the store keeps UTC
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token(text: str) -> str:
    """An OSCAL token (``^(\\p{L}|_)(\\p{L}|\\p{N}|[.\\-_])*$``) naming ``text`` without collisions."""
    cleaned = _TOKEN_BAD.sub("_", text)
    if cleaned != text or not cleaned or not (cleaned[0].isalpha() or cleaned[0] == "_"):
        cleaned = f"r_{cleaned}_{uuid.uuid5(NAMESPACE, text).hex[:8]}"
    return cleaned


def _clean(value: str) -> str:
    """Every string this module writes passes here: credentials masked (``scanner.redact``: exemption
    reasons, rule names and workload names are not masked by the models), representable text only."""
    return representable(redact_text(str(value)))


def _prop(name: str, value: str) -> dict[str, str]:
    # OSCAL prop values match ^\S(.*\S)?$ on one line: whitespace runs collapse to one space.
    text = " ".join(_clean(value).split()) or "-"
    return {"name": name, "ns": PROP_NS, "value": text}


def _text(value: str) -> str:
    return _clean(value).strip() or "-"


def _href(path: str) -> str:
    """A pack path as a relative URI reference (RFC 3986): percent-encoded, ':' included (a first
    segment with ':' would read as a scheme)."""
    return quote(path, safe="/")


def _check_path(path: str) -> None:
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts)
            or _CONTROL.search(path)):
        raise ValueError(f"evidence path {path!r} is not a relative path inside the pack")


def _image_dir(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) >= 3 and parts[0] == "images":
        d = parts[1]
        for prefix in ("sha256:", "sha256-", "sha256_"):
            d = d.removeprefix(prefix)
        return d if _HEX.fullmatch(d) else None
    return None


def assessment_results(scan: ScanSummary, verdicts: Sequence[Verdict], evidence: Mapping[str, str],
                       *, now: datetime) -> dict[str, Any]:
    """The OSCAL assessment-results document of one scan (see the module docstring)."""
    scope = f"{scan.cluster}\x00{scan.id}\x00{_time(scan.started_at)}"

    def uid(*key: str) -> str:
        return str(uuid.uuid5(NAMESPACE, "\x00".join((scope, *key))))

    for path, sha in evidence.items():
        _check_path(path)
        if not _HEX.fullmatch(sha):
            raise ValueError(f"evidence {path!r}: sha256 must be 64 lowercase hex")

    # Back-matter: one resource per pack file.
    resource_uuid = {path: uid("resource", path) for path in evidence}
    resources = [
        {"uuid": resource_uuid[path], "title": _text(path),
         "rlinks": [{"href": _href(path), "hashes": [{"algorithm": "SHA-256", "value": sha}]}]}
        for path, sha in sorted(evidence.items())
    ]
    by_image: dict[str, list[str]] = {}
    for path in sorted(evidence):
        d = _image_dir(path)
        if d is not None:
            by_image.setdefault(d, []).append(path)

    # Inventory items: one per workload.
    items: dict[tuple[str, str, str], dict[str, Any]] = {}
    for v in verdicts:
        for c in v.image.containers:
            key = (c.namespace, c.workload.kind, c.workload.name)
            if key not in items:
                items[key] = {
                    "uuid": uid("workload", *key),
                    "description": _text(f"{c.workload.kind} {c.namespace}/{c.workload.name}"),
                    "props": [_prop("namespace", c.namespace), _prop("workload-kind", c.workload.kind),
                              _prop("workload-name", c.workload.name)],
                }

    observations: list[dict[str, Any]] = []
    rules: dict[str, list[tuple[Verdict, str]]] = {}
    collected = _time(scan.finished_at or scan.started_at)
    for index, v in enumerate(verdicts):
        digest = v.digest
        display = v.image.display
        obs_uuid = uid("observation", digest or f"unresolved:{display}", str(index))
        props = [_prop("image", display), _prop("status", str(v.status)),
                 _prop("compliant", "true" if v.status.compliant else "false")]
        if digest:
            props.append(_prop("digest", digest))
        if v.warn_only:
            props.append(_prop("warn-only", "true"))
        if v.rule:
            props.append(_prop("rule", v.rule))
        for e in v.exemptions:
            props.append(_prop("exemption", f"{e.kind}{' (lapsed)' if e.lapsed else ''}: {e.reason}"))
        obs: dict[str, Any] = {
            "uuid": obs_uuid,
            "title": _text(f"{display}: {v.status}"),
            "description": _text(v.headline or str(v.status)),
            "props": props,
            "methods": ["TEST"],
            "types": ["finding"] if not v.status.compliant else ["control-objective"],
            "collected": collected,
        }
        if v.reasons:
            obs["remarks"] = _text("\n".join(f"- {_clean(r)}" for r in v.reasons))
        subjects = sorted({items[(c.namespace, c.workload.kind, c.workload.name)]["uuid"]
                           for c in v.image.containers})
        if subjects:
            obs["subjects"] = [{"subject-uuid": s, "type": "inventory-item"} for s in subjects]
        hexd = digest.split(":", 1)[1] if digest and isinstance(v.image, RunningImage) else None
        files = by_image.get(hexd, []) if hexd else []
        if files:
            obs["relevant-evidence"] = [
                {"href": _href(path), "description": _text(f"pack file {path}"),
                 "links": [{"href": f"#{resource_uuid[path]}", "rel": "reference"}]}
                for path in files
            ]
        observations.append(obs)
        rules.setdefault(v.rule or "", []).append((v, obs_uuid))

    findings: list[dict[str, Any]] = []
    for rule, members in sorted(rules.items()):
        satisfied = all(v.status in (Status.VERIFIED, Status.EXEMPT) for v, _ in members)
        counts: dict[str, int] = {}
        for v, _ in members:
            counts[str(v.status)] = counts.get(str(v.status), 0) + 1
        name = rule or "(no rule)"
        findings.append({
            "uuid": uid("finding", rule),
            "title": _text(f"policy rule {name}"),
            "description": _text(f"{len(members)} image(s) under rule {name}: "
                                 + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))),
            "props": [_prop("rule", name)],
            "target": {
                "type": "objective-id",
                "target-id": _token(_clean(rule) or "no-rule"),
                "status": {"state": "satisfied" if satisfied else "not-satisfied"},
            },
            "related-observations": [{"observation-uuid": u} for _, u in members],
        })

    result: dict[str, Any] = {
        "uuid": uid("result"),
        "title": _text(f"sigaudit scan {scan.id} of cluster {scan.cluster}"),
        "description": _text(f"Image signature verification of the images running in cluster {scan.cluster} "
                             f"(scan {scan.id}, state {scan.state}, policy sha256 {scan.policy_digest})."),
        "start": _time(scan.started_at),
        "props": [_prop("scan-id", str(scan.id)), _prop("scan-state", str(scan.state)),
                  _prop("policy-digest", scan.policy_digest or "-")],
        "reviewed-controls": {"control-selections": [{"include-all": {}}]},
        "observations": observations,
    }
    if scan.finished_at is not None:
        result["end"] = _time(scan.finished_at)
    if items:
        result["local-definitions"] = {"inventory-items": [items[k] for k in sorted(items)]}
    if findings:
        result["findings"] = findings
    if not observations:
        del result["observations"]
    doc: dict[str, Any] = {
        "uuid": uid("document"),
        "metadata": {
            "title": _text(f"sigaudit assessment results: cluster {scan.cluster}, scan {scan.id}"),
            "last-modified": _time(now),
            "version": scan.version or "unknown",
            "oscal-version": OSCAL_VERSION,
        },
        "import-ap": {"href": "policy/"},
        "results": [result],
    }
    if resources:
        doc["back-matter"] = {"resources": resources}
    return {"assessment-results": doc}
