"""The scan's JSON document (``schema_version: 1``): the contract for pipelines and the report.

Built from a ``ScanResult`` — the CLI's fresh result and the store's reloaded one give the same
document.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from scanner.inventory.references import pins_digest, tag_reference_containers
from scanner.models import SCHEMA_VERSION, AdmissionFinding, RunningImage, ScanResult, SignatureResult, Status, Verdict


def _ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def summary(result: ScanResult) -> dict[str, Any]:
    by_status = Counter(v.status.value for v in result.verdicts)
    containers = sum(len(v.image.containers) for v in result.verdicts)
    compliant = sum(1 for v in result.verdicts if v.compliant)
    return {
        "images": len(result.verdicts),
        "containers": containers,
        "compliant": compliant,
        "non_compliant": len(result.verdicts) - compliant,
        "expiring": sum(1 for v in result.verdicts if v.expiring),
        "by_status": {s.value: by_status.get(s.value, 0) for s in Status},
        "compliance_ratio": round(compliant / len(result.verdicts), 6) if result.verdicts else 1.0,
        "tag_references": len(tag_reference_containers(c for v in result.verdicts for c in v.image.containers)),
    }


def findings(result: ScanResult) -> list[dict[str, Any]]:
    """Findings that change no verdict: containers whose spec names a tag rather than a digest."""
    return [
        {"kind": "tag-reference", "namespace": c.namespace, "pod": c.pod, "container": c.container,
         "container_type": c.container_type.value, "image": c.image,
         "workload_kind": c.workload.kind, "workload_name": c.workload.name}
        for c in tag_reference_containers(c for v in result.verdicts for c in v.image.containers)
    ]


def signature_doc(s: SignatureResult) -> dict[str, Any]:
    return {
        "kind": s.kind,
        "verifier": s.verifier,
        "signer": s.signer,
        "issuer": s.issuer,
        "outcome": s.outcome.value,
        "failure": s.failure.value or None,
        "reason": s.reason,
        "signed_at": _ts(s.signed_at.value if s.signed_at else None),
        "signed_at_source": s.signed_at.source.value if s.signed_at else None,
        "not_after": _ts(s.not_after),
        "checks": [
            {"name": c.name.value, "outcome": c.outcome.value, "reason": c.reason, "enforced": c.enforced}
            for c in s.checks
        ],
        "details": dict(s.details),
    }


def admission_doc(a: AdmissionFinding | None) -> dict[str, Any] | None:
    """Why a non-compliant image judged by an imported admission policy runs anyway (information only)."""
    if a is None:
        return None
    return {
        "policy": a.policy,
        "policy_source": a.policy_source,
        "would_admit_now": a.would_admit_now,
        "likely_cause": a.likely_cause.value,
        "evidence": [{"cause": e.cause.value, "facts": dict(e.facts)} for e in a.causes],
    }


def image_doc(v: Verdict) -> dict[str, Any]:
    img = v.image
    ref = img.reference
    return {
        "reference": img.display,
        "repository": ref.repo if ref else None,
        "digest": img.digest if isinstance(img, RunningImage) else None,
        "status": v.status.value,
        "compliant": v.compliant,
        "warn_only": v.warn_only,
        "reasons": list(v.reasons),
        "deciding_reason": v.deciding_reason,
        "expiring": v.expiring,
        "not_after": _ts(v.not_after),
        # Set when judged from the cache inside the re-check window: its signatures were last seen
        # attached then (no registry request in this scan). null: listed in this scan.
        "checked_at": _ts(v.checked_at),
        "rule": v.rule,
        "policy_source": v.policy_source,
        "source": v.source.value,  # "watch": found by `serve --watch` after the scan (the scan is the truth)
        "exemptions": [
            {"kind": x.kind.value, "reason": x.reason, "until": _ts(x.until), "approved_by": x.approved_by,
             "applied": x.applied, "rule": x.rule}
            for x in v.exemptions
        ],
        "admission": admission_doc(v.admission),
        "signatures": [signature_doc(s) for s in v.signatures],
        "containers": [
            {
                "namespace": c.namespace,
                "pod": c.pod,
                "container": c.container,
                "container_type": c.container_type.value,
                "image": c.image,
                "tag_reference": not pins_digest(c.image),
                "image_id": c.image_id,
                "workload_kind": c.workload.kind,
                "workload_name": c.workload.name,
            }
            for c in sorted(img.containers, key=lambda c: (c.namespace, c.pod, c.container))
        ],
    }


def scan_document(result: ScanResult) -> dict[str, Any]:
    return {**_head(result), "images": [image_doc(v) for v in result.verdicts], "findings": findings(result)}


def _head(result: ScanResult) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "scan": {
            "id": result.scan_id,
            "cluster": result.cluster,
            "started_at": _ts(result.started_at),
            "finished_at": _ts(result.finished_at),
            "status": result.state.value,
            "policy_digest": result.policy_digest,
            "sigaudit_version": result.sigaudit_version,
            "errors": list(result.errors),
        },
        "summary": summary(result),
    }


def _indented(value: Any, level: int) -> str:
    # JSON strings never hold a raw newline (json.dumps escapes it), so every newline is layout.
    return json.dumps(value, indent=2).replace("\n", "\n" + " " * level)


def iter_scan_json(result: ScanResult) -> Iterator[str]:
    """The text of ``json.dumps(scan_document(result), indent=2)``, the same bytes, one image at a
    time: a 10,000-pod scan's document is never held whole as a dict nor as one string (its
    transient was a quarter of the scan's peak RSS)."""
    yield "{"
    for key, value in _head(result).items():
        yield f"\n  {json.dumps(key)}: {_indented(value, 2)},"
    yield '\n  "images": ['
    for i, v in enumerate(result.verdicts):
        yield ("," if i else "") + "\n    " + _indented(image_doc(v), 4)
    yield ("\n  ]" if result.verdicts else "]") + ","
    yield f'\n  "findings": {_indented(findings(result), 2)}\n}}'


def write_scan_json(result: ScanResult, out: IO[str]) -> None:
    for chunk in iter_scan_json(result):
        out.write(chunk)
    out.write("\n")
