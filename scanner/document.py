"""The scan's JSON document (``schema_version: 1``): the contract for pipelines and the report.

Built from a ``ScanResult`` — the CLI's fresh result and the store's reloaded one give the same
document.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, Any

from scanner.inventory.references import pins_digest, tag_reference_containers
from scanner.models import (
    SCHEMA_VERSION,
    AdmissionFinding,
    ContainerRef,
    RunningImage,
    ScanResult,
    SignatureResult,
    Status,
    Verdict,
    image_counts,
)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _tag_references(result: ScanResult) -> tuple[ContainerRef, ...]:
    return tag_reference_containers(c for v in result.verdicts for c in v.image.containers)


def summary(result: ScanResult, tag_references: tuple[ContainerRef, ...] | None = None) -> dict[str, Any]:
    """The document's ``summary``; ``tag_references`` when the caller has them (a pass over every
    container of the scan: the document computes them once for its summary and its findings)."""
    by_status = Counter(v.status.value for v in result.verdicts)
    containers = sum(len(v.image.containers) for v in result.verdicts)
    counts = image_counts(result.verdicts)  # distinct images: a credential split is one image
    return {
        "images": counts.images,
        "containers": containers,
        "compliant": counts.compliant,
        "non_compliant": counts.non_compliant,
        "expiring": sum(1 for v in result.verdicts if v.expiring),
        "by_status": {s.value: by_status.get(s.value, 0) for s in Status},
        "compliance_ratio": counts.ratio,
        "tag_references": len(_tag_references(result) if tag_references is None else tag_references),
    }


def findings(result: ScanResult, tag_references: tuple[ContainerRef, ...] | None = None) -> list[dict[str, Any]]:
    """Findings that change no verdict: containers whose spec names a tag rather than a digest."""
    return [
        {"kind": "tag-reference", "namespace": c.namespace, "pod": c.pod, "container": c.container,
         "container_type": c.container_type.value, "image": c.image,
         "workload_kind": c.workload.kind, "workload_name": c.workload.name}
        for c in (_tag_references(result) if tag_references is None else tag_references)
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
    tags = _tag_references(result)
    return {**_head(result, tags), "images": [image_doc(v) for v in result.verdicts],
            "findings": findings(result, tags)}


def _head(result: ScanResult, tag_references: tuple[ContainerRef, ...]) -> dict[str, Any]:
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
        "summary": summary(result, tag_references),
    }


_ESCAPE = json.encoder.encode_basestring_ascii  # json's own (its C speedup when built), as json.dumps uses


def _float(o: float) -> str:
    # As json.dumps (allow_nan=True) writes a float.
    if o != o:
        return "NaN"
    if o == float("inf"):
        return "Infinity"
    if o == -float("inf"):
        return "-Infinity"
    return float.__repr__(o)


_KEYS: dict[str, str] = {}


def _key(k: Any) -> str:
    """A key as json.dumps writes it, with its ": " (the keys it accepts; skipkeys=False: any other is
    a TypeError). The document's own keys are written once and remembered: at most 256 of at most
    64 characters, so keys a signature's details carry (untrusted) never grow what the process holds."""
    if isinstance(k, str):
        text = _ESCAPE(k) + ": "
        if type(k) is str and len(k) <= 64 and len(_KEYS) < 256:
            _KEYS[k] = text
        return text
    if isinstance(k, float):
        return '"' + _float(k) + '": '
    if k is True or k is False or k is None:
        return '"' + json.dumps(k) + '": '
    if isinstance(k, int):
        return '"' + int.__repr__(k) + '": '
    raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _flat(values: Any) -> bool:
    """Only plain scalars (exactly these types: a subclass takes the general path)."""
    return {type(v) for v in values} <= _SCALARS


@functools.lru_cache(maxsize=32)  # one per nesting level; bounded, whatever depth a value reaches
def _flat_encoder(inner: str) -> Any:
    """json's C encoder (the one json.dumps runs without ``indent``) with the item separator of an
    indented container at ``inner``: a container of plain scalars comes out exactly as the indented
    encoder writes it, less the line breaks after its opening and before its closing bracket."""
    return json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, None, _ESCAPE, None, ": ", "," + inner, False, False, True)


def _indented(o: Any, pad: str) -> str:
    """``json.dumps(o, indent=2)`` with every line after the first prefixed by ``pad`` minus its
    newline, the same bytes, in about a third of the CPU: with ``indent`` set, json.dumps runs its
    pure-Python generator encoder (one generator frame per container and per item), this one a
    ``str.join`` per container. The same type tests in the same order (a bool is not an int, a tuple
    is a list, an unknown type is a TypeError); ``test_document`` compares the two."""
    if isinstance(o, str):
        return _ESCAPE(o)
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, int):
        return int.__repr__(o)
    if isinstance(o, float):
        return _float(o)
    inner = pad + "  "
    if isinstance(o, list | tuple):
        if not o:
            return "[]"
        if _flat(o):
            return "[" + inner + "".join(_flat_encoder(inner)(o, 0))[1:-1] + pad + "]"
        return "[" + inner + ("," + inner).join(
            [_ESCAPE(x) if type(x) is str else _indented(x, inner) for x in o]) + pad + "]"
    if isinstance(o, dict):
        if not o:
            return "{}"
        if _flat(o.values()) and all(type(k) is str for k in o):
            return "{" + inner + "".join(_flat_encoder(inner)(o, 0))[1:-1] + pad + "}"
        return "{" + inner + ("," + inner).join(
            [(_KEYS.get(k) or _key(k)) + (_ESCAPE(v) if type(v) is str else _indented(v, inner))
             for k, v in o.items()]) + pad + "}"
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


_PAD2 = "\n  "
# One image (and one finding) per line: json's C encoder, as json.dumps writes without ``indent``
# (", " and ": " separators, ASCII only, so no string of the cluster's can break a line). The indented
# layout ran per image through a Python encoder (~0.12 CPU-s of 2,000 images x 5 containers).
def _not_serializable(o: Any) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _line_encoder() -> Any:
    """``json.JSONEncoder().encode`` less its per-call set-up (a new C encoder per call: a sixth of the
    cost of 10,000 small findings): one C encoder with json.dumps' defaults, made once."""
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # an interpreter without json's C speedups
        return json.JSONEncoder().encode
    encode = make(None, _not_serializable, _ESCAPE, None, ": ", ", ", False, False, True)
    return lambda o: "".join(encode(o, 0))


_LINE = _line_encoder()


def _one_per_line(items: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A list as ``[``, then each item compact on a line of its own indented by four, then ``  ]``
    (``[]`` when empty), yielded item by item."""
    first = True
    for x in items:
        yield ("[\n    " if first else ",\n    ") + _LINE(x)
        first = False
    yield "[]" if first else "\n  ]"


def iter_scan_json(result: ScanResult) -> Iterator[str]:
    """The text of the scan's document, one image at a time: a 10,000-pod scan's document is never
    held whole as a dict nor as one string (its transient was a quarter of the scan's peak RSS).

    Layout (``json.loads`` gives exactly :func:`scan_document`, keys in its order): the head
    (``schema_version``, ``scan``, ``summary``) as ``json.dumps(indent=2)`` writes it, then ``images`` and
    ``findings`` with each image and each finding compact on a line of its own."""
    tags = _tag_references(result)
    yield "{"
    for key, value in _head(result, tags).items():
        yield f"\n  {_ESCAPE(key)}: {_indented(value, _PAD2)},"
    yield '\n  "images": '
    yield from _one_per_line(image_doc(v) for v in result.verdicts)
    yield ',\n  "findings": '
    yield from _one_per_line(findings(result, tags))
    yield "\n}"


def write_scan_json(result: ScanResult, out: IO[str]) -> None:
    for chunk in iter_scan_json(result):
        out.write(chunk)
    out.write("\n")
