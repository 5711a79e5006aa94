"""The scan's JSON document carries facts as fields: which exemption applied or lapsed is not left to
be parsed out of the reasons."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from scanner.document import _indented, image_doc, scan_document, write_scan_json
from scanner.models import (
    ContainerRef,
    ContainerType,
    ExemptionKind,
    ExemptionRef,
    ImageReference,
    RunningImage,
    ScanResult,
    ScanState,
    Status,
    Verdict,
    Workload,
)


def test_an_images_exemptions_are_fields_of_the_document() -> None:
    until = datetime(2027, 1, 1, tzinfo=UTC)
    v = Verdict(RunningImage(ImageReference("r.io", "a", "1", "sha256:" + "1" * 64), ()), Status.EXEMPT,
                ("worded any way at all",),
                exemptions=(ExemptionRef(ExemptionKind.WAIVER, "allowlist", until, "secops", rule="kritis:ns/p"),
                            ExemptionRef(ExemptionKind.POLICY, "old", datetime(2026, 1, 1, tzinfo=UTC), lapsed=True)))
    assert image_doc(v)["exemptions"] == [
        {"kind": "waiver", "reason": "allowlist", "until": "2027-01-01T00:00:00Z", "approved_by": "secops",
         "applied": True, "rule": "kritis:ns/p"},
        {"kind": "policy", "reason": "old", "until": "2026-01-01T00:00:00Z", "approved_by": None,
         "applied": False, "rule": None},
    ]
    assert image_doc(Verdict(v.image, Status.VERIFIED, ("ok",)))["exemptions"] == []


def _result(verdicts: tuple[Verdict, ...]) -> ScanResult:
    t = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    return ScanResult("c\u00e9\n\"x\"", t, t, ScanState.PARTIAL, verdicts, "sha256:" + "0" * 64,
                      errors=("ns forbidden\nsecond line",), scan_id=7, sigaudit_version="1.2")


def _doc_result(n: int) -> ScanResult:
    ref = ImageReference("r.io", "a", "1", "sha256:" + "1" * 64)
    containers = (ContainerRef("ns", "p\n\"q\"\u2028", "c", ContainerType.CONTAINER, "r.io/a:1", None,
                               Workload("Deployment", "d\u00fc\r")),)
    verdicts = tuple(Verdict(RunningImage(ref, containers if i % 2 else ()), Status.INVALID if i else Status.VERIFIED,
                             (f"reason {i}\nwith a newline", "\u2603", "\u2029}\n  ]"), expiring=i == 2)
                     for i in range(n))
    return _result(verdicts)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_streamed_json_is_the_document(n: int) -> None:
    """The scan's JSON is written one image at a time (never the whole document as one string) and
    reads back as exactly ``scan_document(result)``, keys in the same order: empty lists, escaped
    newlines, quotes, line separators and non-ASCII in any field included."""
    result = _doc_result(n)
    out = io.StringIO()
    write_scan_json(result, out)
    text = out.getvalue()
    assert json.loads(text) == scan_document(result)
    assert json.dumps(json.loads(text)) == json.dumps(scan_document(result))  # the same key order
    assert text.endswith("}\n") and text.isascii()


def test_each_image_and_each_finding_is_one_line_of_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: the document's images went through an indented (Python) encoder, 0.12 CPU-s of a
    2,000-image scan. Each image and each finding is now one compact line written by json's C encoder
    (json's Python encoder is never run), between the indented head and the closing brackets; no
    string from the cluster can break a line (newlines and U+2028/2029 are escaped)."""
    monkeypatch.setattr(json.encoder, "_make_iterencode",
                        lambda *a, **k: pytest.fail("the document ran json's pure-Python encoder"))
    result = _doc_result(3)
    out = io.StringIO()
    write_scan_json(result, out)
    lines = out.getvalue().split("\n")
    doc = scan_document(result)
    start = lines.index('  "images": [')
    images = lines[start + 1:start + 1 + len(doc["images"])]
    assert [json.loads(line.strip().rstrip(",")) for line in images] == doc["images"]
    assert all(line.startswith("    {") for line in images)
    assert lines[start + 1 + len(doc["images"])] == "  ],"
    f_start = lines.index('  "findings": [')
    found = lines[f_start + 1:f_start + 1 + len(doc["findings"])]
    assert doc["findings"] and [json.loads(line.strip().rstrip(",")) for line in found] == doc["findings"]
    assert lines[f_start + 1 + len(doc["findings"]):] == ["  ]", "}", ""]


class _Str(str):
    pass


@pytest.mark.parametrize("value", [
    {}, [], (), {"a": {}}, [[], {}, ()], "x\n\"\u00e9", 0, -1, 2**70, 1.5, float("nan"), float("inf"), -float("inf"),
    True, False, None, {"k": [1, "a", None, True, 2.5]}, [{"a": 1}, {"b": [1, [2, [3, {}]]]}],
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key", "s": ("a", "b")},
    {_Str("sub"): _Str("class"), "n": [_Str("x")]}, {"deep": {"a": {"b": {"c": [1, 2, {"d": "e"}]}}}},
])
def test_the_indented_encoder_writes_what_json_dumps_writes(value: object) -> None:
    """The document's encoder (json's C encoder for containers of plain scalars, a join for the rest)
    writes exactly ``json.dumps(value, indent=2)`` at every nesting level, for every type json accepts."""
    for pad in ("\n", "\n  ", "\n    "):
        want = json.dumps(value, indent=2).replace("\n", pad)
        assert _indented(value, pad) == want


@pytest.mark.parametrize("value", [
    {}, [], {"a": {}}, [[], {}, ()], {"s": "x\n\"\u00e9\u2028\ud800"}, {"n": [0, -1, 2**70, 1.5, float("nan"),
    float("inf"), -float("inf"), True, False, None]},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key", "s": ("a", "b")},
    {_Str("sub"): _Str("class"), "n": [_Str("x")]}, {"deep": {"a": {"b": {"c": [1, 2, {"d": "e"}]}}}},
])
def test_a_line_of_the_document_is_what_json_dumps_writes(value: object) -> None:
    from scanner.document import _LINE

    assert _LINE(value) == json.dumps(value)
    assert "\n" not in _LINE(value)


@pytest.mark.parametrize("value", [{"a": object()}, [1, {2}], {(1, 2): "tuple key"}, {"a": [b"bytes"]}])
def test_a_line_of_the_document_refuses_what_json_dumps_refuses(value: object) -> None:
    from scanner.document import _LINE

    with pytest.raises(TypeError):
        json.dumps(value)
    with pytest.raises(TypeError):
        _LINE(value)


@pytest.mark.parametrize("value", [{"a": object()}, [1, {2}], {(1, 2): "tuple key"}, {"a": [b"bytes"]}])
def test_the_indented_encoder_refuses_what_json_dumps_refuses(value: object) -> None:
    with pytest.raises(TypeError):
        json.dumps(value, indent=2)
    with pytest.raises(TypeError):
        _indented(value, "\n")


def test_keys_from_untrusted_details_are_not_remembered_beyond_a_bound() -> None:
    """The encoder remembers the text of the document's own keys; a signature's details (whose keys
    an attacker may choose) never make it hold more than 256 short keys."""
    from scanner import document

    many = {f"k{i}-" + "x" * 1000 if i % 2 else f"k{i}": i for i in range(2000)}
    assert _indented(many, "\n") == json.dumps(many, indent=2)
    assert len(document._KEYS) <= 256 and max(map(len, document._KEYS)) <= 64


def test_a_deep_value_is_written_as_json_writes_it_and_holds_a_bounded_number_of_encoders() -> None:
    from scanner import document

    deep: object = {"leaf": [1, "a"]}
    for i in range(150):
        deep = {f"k{i}": deep, "n": i} if i % 2 else [deep, i]
    assert _indented(deep, "\n") == json.dumps(deep, indent=2)
    assert document._flat_encoder.cache_info().currsize <= 32


def _split_by_credentials(second: Status) -> tuple[Verdict, ...]:
    """One digest run by two tenants whose pods read the registry with different pull secrets: the
    pipeline judges it twice (a verdict is never lent across credential sets)."""
    ref = ImageReference("r.io", "team/app", "1", "sha256:" + "1" * 64)

    def image(ns: str) -> RunningImage:
        c = ContainerRef(ns, "p", "c", ContainerType.CONTAINER, "r.io/team/app:1", None, Workload("Pod", "p"))
        return RunningImage(ref, (c,), pull_secrets=((ns, "regcred"),))

    other = RunningImage(ImageReference("r.io", "team/other", "1", "sha256:" + "2" * 64), ())
    return (Verdict(image("team-a"), Status.VERIFIED, ("ok",), rule="r", policy_source="p.yaml"),
            Verdict(image("team-b"), second, ("judged with pull secret team-b/regcred",), rule="r",
                    policy_source="p.yaml"),
            Verdict(other, Status.VERIFIED, ("ok",), rule="r", policy_source="p.yaml"))


def test_summary_counts_a_digest_judged_under_two_credential_sets_as_one_image() -> None:
    doc = scan_document(_result(_split_by_credentials(Status.VERIFIED)))
    assert len(doc["images"]) == 3  # the verdicts are all listed
    s = doc["summary"]
    assert (s["images"], s["compliant"], s["non_compliant"], s["compliance_ratio"]) == (2, 2, 0, 1.0)
    assert s["containers"] == 2


def test_a_split_image_is_compliant_only_when_every_credential_sets_verdict_is() -> None:
    s = scan_document(_result(_split_by_credentials(Status.ERROR)))["summary"]
    assert (s["images"], s["compliant"], s["non_compliant"], s["compliance_ratio"]) == (2, 1, 1, 0.5)
    assert s["by_status"]["verified"] == 2 and s["by_status"]["error"] == 1  # by_status counts verdicts


def test_other_splits_stay_distinct_images() -> None:
    """Two rules, or another repository, or one namespace exempted: the README's "one verdict per
    digest and per set of rules and exemption" — those are distinct images, only credentials are not."""
    a, b, _ = _split_by_credentials(Status.VERIFIED)
    until = datetime(2099, 1, 1, tzinfo=UTC)
    other_rule = Verdict(b.image, Status.VERIFIED, ("ok",), rule="r2", policy_source="p.yaml")
    exempt = Verdict(b.image, Status.EXEMPT, ("w",), rule="r", policy_source="p.yaml",
                     exemptions=(ExemptionRef(ExemptionKind.POLICY, "waived", until),))
    assert scan_document(_result((a, other_rule)))["summary"]["images"] == 2
    assert scan_document(_result((a, exempt)))["summary"]["images"] == 2
