"""The content hashes that key the store's shared rows (issue 20): a verdict row, a container group
or a verdict set is reused by a later scan only when its hash is equal, so every field of every model
a verdict holds must be part of the hash — including a field someone adds next year."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import typing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scanner.models import (
    AdmissionCause,
    AdmissionEvidence,
    AdmissionFinding,
    Check,
    CheckName,
    ContainerRef,
    ContainerType,
    ExemptionKind,
    ExemptionRef,
    ImageReference,
    Outcome,
    RunningImage,
    SignatureFailure,
    SignatureResult,
    SignedTime,
    Status,
    TimeSource,
    UnresolvedImage,
    Verdict,
    VerdictSource,
    Workload,
)
from scanner.store import codec

T = datetime(2026, 12, 1, tzinfo=UTC)


def _container(i: int) -> ContainerRef:
    return ContainerRef("ns", f"pod-{i}", "c", ContainerType.CONTAINER, "img:1", f"img@sha256:{i:064x}",
                        Workload("ReplicaSet", "app-1"), ("regcred",), f"uid-{i}")


def _full_verdict() -> Verdict:
    """A verdict with every optional field set, so that a change of any of them shows."""
    sig = SignatureResult(
        kind="cosign", verifier="rule r / cosign key 1", outcome=Outcome.FAILED, reason="expired",
        failure=SignatureFailure.EXPIRED, signer="CN=s", key_sha256="ab" * 32, identity="id", issuer="iss",
        signed_at=SignedTime(T - timedelta(days=1), TimeSource.TSA), not_after=T,
        checks=(Check(CheckName.INTEGRITY, Outcome.PASSED, "ok"), Check(CheckName.TLOG, Outcome.SKIPPED, "n", False)),
        details={"k": ("a", b"\x00", T)})
    image = RunningImage(ImageReference("r.io", "a/b", "1", "sha256:" + "1" * 64), (_container(1), _container(2)),
                         ("a note",), (("ns", "regcred"),))
    return Verdict(image, Status.EXPIRED, ("first", "second"), rule="r", policy_source="policy.yaml",
                   signatures=(sig,), expiring=True, not_after=T, warn_only=True, deciding_reason=1,
                   exemptions=(ExemptionRef(ExemptionKind.WAIVER, "w", T, "secops", True, "r"),),
                   admission=AdmissionFinding("ClusterPolicy/p", "kyverno.yaml", False, (
                       AdmissionEvidence(AdmissionCause.AUDIT_MODE, {"validationFailureAction": "Audit"}),
                       AdmissionEvidence(AdmissionCause.CREATED_BEFORE_POLICY, {"pod": "2026-11-01T00:00:00Z"}))),
                   rejected_by=(("kyverno.yaml", "p"), ("policy.yaml", "r")),
                   source=VerdictSource.WATCH, checked_at=T - timedelta(minutes=5))


class _Marker:
    """A value no field ever holds: a field replaced by it must change the hash."""

    def __repr__(self) -> str:
        return "<changed>"


def _with(obj: Any, name: str, value: Any) -> Any:
    new = copy.copy(obj)
    object.__setattr__(new, name, value)  # no __post_init__: any value, any field
    return new


def _variants(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(field path, a copy of ``obj`` with that one field, at any depth, changed)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        yield f"{path}.{f.name}", _with(obj, f.name, _Marker())
        if dataclasses.is_dataclass(value):
            for sub, changed in _variants(value, f"{path}.{f.name}"):
                yield sub, _with(obj, f.name, changed)
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    for sub, changed in _variants(item, f"{path}.{f.name}[{i}]"):
                        yield sub, _with(obj, f.name, (*value[:i], changed, *value[i + 1:]))


def test_every_field_of_a_verdict_at_any_depth_is_part_of_its_hash() -> None:
    verdict = _full_verdict()
    base = codec.verdict_hash(verdict)
    missed, seen = [], 0
    for path, changed in _variants(verdict, "Verdict"):
        if path == "Verdict.image":
            continue  # not a model any more; its fields are changed one by one below
        if path.removeprefix("Verdict.").split(".")[0].split("[")[0] in codec.NOT_STORED:
            # ...and so does what no row keeps (a verdict read back would not find its own row).
            assert codec.verdict_hash(changed) == base, path
            continue
        if path.startswith("Verdict.image.containers"):
            # Stored as the verdict's container group: the verdict's own hash leaves them out on purpose...
            assert codec.verdict_hash(changed) == base, path
            continue
        seen += 1
        if codec.verdict_hash(changed) == base:
            missed.append(path)
    assert not missed, f"fields not covered by the verdict hash: {missed}"
    assert seen > 50  # the walk went deep (signatures, checks, times, exemptions, admission, the reference)
    for name in ("admission", "source", "checked_at"):  # stored since the content store was written
        assert codec.verdict_hash(_with(verdict, name, _Marker())) != base, name


def test_only_rejected_by_is_left_out_of_the_verdict_hash_and_no_row_keeps_it() -> None:
    """A field left out of the hash must be one the store does not keep; anything else would let two
    different verdicts share a row. rejected_by is read by the admission analysis before the store."""
    assert codec.NOT_STORED == {"rejected_by"}
    from scanner.store.results import _image_row
    from scanner.store.schema import images

    columns = {c.name for c in images.columns}
    for name in codec.NOT_STORED:
        assert name not in columns and name not in _image_row(_full_verdict())
    verdict = _full_verdict()
    assert codec.verdict_hash(verdict) == codec.verdict_hash(dataclasses.replace(verdict, rejected_by=()))


def test_every_field_of_a_container_is_part_of_its_group_hash() -> None:
    group = (_container(1), _container(2))
    base = codec.containers_hash(group)
    for i, c in enumerate(group):
        for path, changed in _variants(c, f"containers[{i}]"):
            assert codec.containers_hash((*group[:i], changed, *group[i + 1:])) != base, path
    assert codec.containers_hash(group[::-1]) != base  # order is content too
    assert codec.containers_hash(group[:1]) != base


def _reachable(cls: type, seen: set[type]) -> None:
    if cls in seen or not dataclasses.is_dataclass(cls):
        return
    seen.add(cls)
    for hint in typing.get_type_hints(cls).values():
        for arg in [hint, *_flat_args(hint)]:
            if isinstance(arg, type):
                _reachable(arg, seen)


def _flat_args(hint: Any) -> Iterator[Any]:
    for arg in typing.get_args(hint):
        yield arg
        yield from _flat_args(arg)


def test_every_model_a_verdict_holds_keeps_the_generated_repr_that_the_hash_is_made_of() -> None:
    """The hash is the SHA-256 of the dataclass-generated repr: a hand-written __repr__ or a field
    declared repr=False would silently leave something out of it."""
    seen: set[type] = set()
    for root in (Verdict, RunningImage, UnresolvedImage, ContainerRef):
        _reachable(root, seen)
    assert {Verdict, RunningImage, UnresolvedImage, ContainerRef, SignatureResult, Check, SignedTime, ExemptionRef,
            ImageReference, Workload} <= seen
    for cls in seen:
        hidden = [f.name for f in dataclasses.fields(cls) if not f.repr]
        assert not hidden, f"{cls.__name__}: fields {hidden} are repr=False, so no content hash covers them"
        generated = inspect.unwrap(cls.__repr__)
        assert generated.__code__.co_filename == "<string>", (
            f"{cls.__name__} has a hand-written __repr__: the content hash may not cover all its fields")


def test_a_running_and_an_unresolved_image_with_the_same_words_never_share_a_row() -> None:
    ref = ImageReference("r.io", "a/b", "1")
    unresolved = Verdict(UnresolvedImage(ref, "r.io/a/b:1", (), "unreachable"), Status.ERROR, ("x",))
    running = Verdict(RunningImage(ImageReference("r.io", "a/b", "1", "sha256:" + "0" * 64), ()), Status.ERROR, ("x",))
    assert codec.verdict_hash(unresolved) != codec.verdict_hash(running)
    # a quote inside a string cannot forge another structure
    a = Verdict(running.image, Status.ERROR, ("x', 'y",))
    b = Verdict(running.image, Status.ERROR, ("x", "y"))
    assert codec.verdict_hash(a) != codec.verdict_hash(b)


def test_a_new_rows_version_makes_every_hash_new(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the rows keep something new of a verdict, rows written before are never reused."""
    verdict = _full_verdict()
    before = (codec.verdict_hash(verdict), codec.containers_hash(verdict.image.containers))
    monkeypatch.setattr(codec, "ROWS_VERSION", codec.ROWS_VERSION + "+1")
    assert codec.verdict_hash(verdict) != before[0]
    assert codec.containers_hash(verdict.image.containers) != before[1]
