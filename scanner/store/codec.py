"""JSON encoding of the values the models keep in free-form mappings (``SignatureResult.details``),
and the content hashes that key the store's shared rows (verdicts, container groups, verdict sets).

JSON has no tuples, datetimes or bytes; verifiers put all three in ``details``. They are tagged on the
way in and rebuilt on the way out, so that what is loaded equals what was saved.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from scanner.models import (
    AdmissionCause,
    AdmissionEvidence,
    AdmissionFinding,
    Check,
    CheckName,
    ContainerRef,
    ExemptionKind,
    ExemptionRef,
    Outcome,
    SignatureFailure,
    SignatureResult,
    SignedTime,
    TimeSource,
    Verdict,
)

_TAG = "$sigaudit"


def encode(value: Any) -> Any:
    """Turn ``value`` into plain JSON, tagging what JSON cannot hold."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in signature details: use an aware UTC datetime")
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"signature details keys must be strings, not {type(k).__name__}")
            out[k] = encode(v)
        if _TAG in out:  # a mapping that happens to use our tag: wrap it
            return {_TAG: "dict", "v": out}
        return out
    if isinstance(value, frozenset | set):
        return {_TAG: "tuple", "v": sorted((encode(v) for v in value), key=repr)}
    # StrEnum / IntEnum are str / int and handled above; anything else is a bug in the caller.
    raise TypeError(f"cannot store a {type(value).__name__} in signature details")


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag is not None and set(value) == {_TAG, "v"}:
            raw = value["v"]
            if tag == "datetime":
                return datetime.fromisoformat(raw)
            if tag == "bytes":
                return base64.b64decode(raw)
            if tag == "tuple":
                return tuple(decode(v) for v in raw)
            if tag == "dict":
                return {k: decode(v) for k, v in raw.items()}
        return {k: decode(v) for k, v in value.items()}
    return value


# -- content hashes (issue 20) --------------------------------------------------------------------
#
# A scan's verdicts and containers are stored once per distinct content and shared by every scan
# that has it, so the key must change whenever anything a report, the JSON document or a diff could
# show changes. It is therefore computed from the WHOLE model, never from a hand-kept list of
# columns: the ``repr`` that ``@dataclass`` generates names the class (RunningImage vs
# UnresolvedImage) and every field, recursively, with strings quoted and escaped, enums with their
# class, datetimes with their zone — so a field added to Verdict, SignatureResult, ContainerRef, ...
# next year is covered without anyone remembering to. (A model class must therefore keep the
# generated repr and never declare a field ``repr=False``: tests/unit/store/test_codec_hashes.py checks
# every class reachable from Verdict.) It is also about four times faster than walking the fields
# in Python, which a 10,000-container scan notices. Two equal values that print differently (the
# same instant in two zones) only cost a second row, never a shared one.


# Part of every content hash. Bump it whenever the rows a verdict or a container is written to change
# what they keep of it (a column added, an encoding changed): rows written before then are not reused
# for content they would not reproduce (the model's repr alone would not tell, if the model did not change).
ROWS_VERSION = "1"


def content_hash(value: Any) -> str:
    """The SHA-256 (hex) of ``value``'s repr, after :data:`ROWS_VERSION`: see above."""
    return hashlib.sha256(f"sigaudit rows v{ROWS_VERSION}\n{value!r}".encode("utf-8", "surrogatepass")).hexdigest()


# Fields of Verdict that no row keeps: in-memory facts for a stage that runs before the store (a
# verdict read back has the default). The hash keys what a row reproduces, so they are left out of it:
# otherwise a verdict read back would not find its own row, and two verdicts that differ only there
# would be two identical rows. A field belongs here only if no column and no report has it
# (tests/unit/store/test_codec_hashes.py holds the list, so adding one is a reviewed change).
NOT_STORED: frozenset[str] = frozenset({"rejected_by"})


def verdict_hash(verdict: Verdict) -> str:
    """The key of a verdict's stored row: every field of the verdict and of its image except the
    image's containers (stored as their own group, :func:`containers_hash`) and :data:`NOT_STORED`."""
    image = verdict.image
    bare = (type(image).__qualname__,
            tuple((n, getattr(image, n)) for n in _field_names(type(image)) if n != "containers"))
    fields = tuple((n, bare if n == "image" else getattr(verdict, n))
                   for n in _field_names(type(verdict)) if n not in NOT_STORED)
    return content_hash((type(verdict).__qualname__, fields))


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def containers_hash(containers: Sequence[ContainerRef]) -> str:
    """The key of a container group: the containers, in order."""
    return content_hash(tuple(containers))


def verdict_set_hash(members: Iterable[tuple[str, str]]) -> str:
    """The key of a verdict set: its (verdict hash, containers hash) pairs, in order."""
    return content_hash(tuple(tuple(m) for m in members))


def _dt(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _undt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def signed_time(value: datetime | None, source: str | None) -> SignedTime | None:
    """A stored signing time; rows written before the source was recorded load as ``unknown``
    (never authentic: an old row cannot keep a signature out of a revocation)."""
    if value is None:
        return None
    try:
        src = TimeSource(source) if source else TimeSource.UNKNOWN
    except ValueError:
        src = TimeSource.UNKNOWN
    return SignedTime(value, src)


def signature_to_json(sig: SignatureResult) -> dict[str, Any]:
    """A SignatureResult as plain JSON (for the verification cache)."""
    return {
        "kind": sig.kind,
        "verifier": sig.verifier,
        "outcome": str(sig.outcome),
        "reason": sig.reason,
        "failure": str(sig.failure),
        "signer": sig.signer,
        "key_sha256": sig.key_sha256,
        "identity": sig.identity,
        "issuer": sig.issuer,
        "signed_at": _dt(sig.signed_at.value if sig.signed_at else None),
        "signed_at_source": sig.signed_at.source.value if sig.signed_at else None,
        "not_after": _dt(sig.not_after),
        "checks": [
            {"name": str(c.name), "outcome": str(c.outcome), "reason": c.reason, "enforced": c.enforced}
            for c in sig.checks
        ],
        "details": encode(dict(sig.details)),
    }


def signature_from_json(raw: Mapping[str, Any]) -> SignatureResult:
    return SignatureResult(
        kind=raw["kind"],
        verifier=raw["verifier"],
        outcome=Outcome(raw["outcome"]),
        reason=raw["reason"],
        failure=SignatureFailure(raw["failure"]),
        signer=raw["signer"],
        key_sha256=raw["key_sha256"],
        identity=raw["identity"],
        issuer=raw["issuer"],
        signed_at=signed_time(_undt(raw["signed_at"]), raw.get("signed_at_source")),
        not_after=_undt(raw["not_after"]),
        checks=tuple(_check_of(c["name"], c["outcome"], c["reason"], bool(c["enforced"]))
                     for c in raw["checks"]),
        details=decode(raw["details"]),
    )


# Reasons longer than this are built each time, never memoised: a reason can quote what a signature or its
# certificate carries (an identity, a parse error), and a long-running ``serve`` keeps the memo between scans,
# so the memo's bound is 4,096 entries of at most this much text (~1 MB), not 4,096 reasons of any size.
MEMO_REASON_CHARS = 256


def _check_of(name: str, outcome: str, reason: str, enforced: bool) -> Check:
    """A cached check: a reason that is not text is refused (the cache read turns that into a miss); a short
    one is shared through :func:`_check`, a long one built on its own."""
    if not isinstance(reason, str):
        raise TypeError(f"a check reason is a {type(reason).__name__}, not text")
    if len(reason) > MEMO_REASON_CHARS:
        return Check(CheckName(name), Outcome(outcome), reason, enforced)
    return _check(name, outcome, reason, enforced)


@functools.lru_cache(maxsize=4096)
def _check(name: str, outcome: str, reason: str, enforced: bool) -> Check:
    """One Check, built once per distinct value: a warm scan reads ~8,000 checks from the verification
    cache with a few dozen distinct (name, outcome, reason) among them, and each build validates two
    enums and masks its reason (issue 19). A Check is frozen, so one instance serves every signature."""
    return Check(CheckName(name), Outcome(outcome), reason, enforced)


def exemption_to_json(ref: ExemptionRef) -> dict[str, Any]:
    """An ExemptionRef as plain JSON (``images.exemptions``, one per exemption or waiver)."""
    return {"kind": ref.kind.value, "reason": ref.reason, "until": ref.until.isoformat(),
            "approved_by": ref.approved_by, "lapsed": ref.lapsed, "rule": ref.rule}


def exemption_from_json(raw: Mapping[str, Any]) -> ExemptionRef:
    """Raises ValueError, KeyError or TypeError on a value that was not written by :func:`exemption_to_json`."""
    until = datetime.fromisoformat(raw["until"])
    if until.tzinfo is None:
        raise ValueError("exemption until without a timezone")
    return ExemptionRef(
        kind=ExemptionKind(raw["kind"]), reason=str(raw["reason"]), until=until,
        approved_by=None if raw.get("approved_by") is None else str(raw["approved_by"]),
        lapsed=bool(raw["lapsed"]), rule=None if raw.get("rule") is None else str(raw["rule"]),
    )


def admission_to_json(a: AdmissionFinding | None) -> dict[str, Any] | None:
    """An AdmissionFinding as plain JSON (``images.admission``)."""
    if a is None:
        return None
    return {"policy": a.policy, "policy_source": a.policy_source, "would_admit_now": a.would_admit_now,
            "causes": [{"cause": e.cause.value, "facts": dict(e.facts)} for e in a.causes]}


def admission_from_json(raw: Mapping[str, Any] | None) -> AdmissionFinding | None:
    """Raises ValueError, KeyError or TypeError on a value that was not written by :func:`admission_to_json`."""
    if raw is None:
        return None
    admit = raw["would_admit_now"]
    if admit is not None and not isinstance(admit, bool):
        raise TypeError("would_admit_now is not a boolean")
    return AdmissionFinding(
        policy=str(raw["policy"]), policy_source=str(raw["policy_source"]), would_admit_now=admit,
        causes=tuple(AdmissionEvidence(AdmissionCause(c["cause"]), {str(k): str(v) for k, v in c["facts"].items()})
                     for c in raw["causes"]),
    )
