"""The scan's JSON document (``schema_version: 1``): the contract for pipelines and the report.

Built from a ``ScanResult`` — the CLI's fresh result and the store's reloaded one give the same
document.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from scanner.inventory.references import pins_digest, tag_reference_containers
from scanner.models import SCHEMA_VERSION, RunningImage, ScanResult, SignatureResult, Status, Verdict


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
        "rule": v.rule,
        "policy_source": v.policy_source,
        "exemptions": [
            {"kind": x.kind.value, "reason": x.reason, "until": _ts(x.until), "approved_by": x.approved_by,
             "applied": x.applied, "rule": x.rule}
            for x in v.exemptions
        ],
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
        "images": [image_doc(v) for v in result.verdicts],
        "findings": findings(result),
    }
