"""OSCAL assessment-results: valid against the official OSCAL 1.1.3 JSON schema (tests/data/oscal), every
verdict kind present, evidence hashes in back-matter, deterministic uuids, and findings that never
report a failed, warn-only or undecided rule as satisfied."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.evidence import oscal
from scanner.models import (
    ContainerRef,
    ContainerType,
    ExemptionKind,
    ExemptionRef,
    ImageReference,
    RunningImage,
    ScanState,
    Status,
    UnresolvedImage,
    Verdict,
    Workload,
)
from scanner.store.queries import ScanSummary

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "data" / "oscal"
                     / "oscal_assessment-results_schema.json").read_text())
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
_P = re.compile(r"\\p\{([LN])\}")


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    """The schema's ``pattern``, with ``\\p{L}``/``\\p{N}`` (not known to Python's re) translated."""
    if not isinstance(instance, str):
        return
    translated = _P.sub(lambda m: r"[^\W\d_]" if m.group(1) == "L" else r"\d", pattern)
    if not re.search(translated, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"pattern": _pattern})

# jsonschema checks "uri"/"uri-reference" only with rfc3987 installed (it is not): RFC 3986's characters,
# and for a relative reference no ':' in the first segment (RFC 3986 section 4.2).
_URI_CHARS = re.compile(r"^(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*:")
FORMATS = jsonschema.FormatChecker()
for _name, _check in jsonschema.Draft7Validator.FORMAT_CHECKER.checkers.items():
    FORMATS.checkers[_name] = _check


@FORMATS.checks("uri-reference")
def _uri_reference(value: object) -> bool:
    if not isinstance(value, str) or not _URI_CHARS.match(value):
        return False
    first = value.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return bool(_SCHEME.match(value)) or ":" not in first


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    return isinstance(value, str) and bool(_SCHEME.match(value)) and _uri_reference(value)


def errors(doc: dict[str, Any]) -> list[str]:
    v = Validator(SCHEMA, format_checker=FORMATS)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


def _container(ns: str, pod: str, kind: str, name: str, image: str) -> ContainerRef:
    return ContainerRef(ns, pod, "app", ContainerType.CONTAINER, image, None, Workload(kind, name))


def _running(repo: str, digest: str, *containers: ContainerRef) -> RunningImage:
    return RunningImage(ImageReference("registry.local:5000", repo, "1", digest), containers)


D = {k: "sha256:" + k * 64 for k in "abcde"}
UNTIL = datetime(2027, 1, 1, tzinfo=UTC)


def verdicts() -> list[Verdict]:
    c1 = _container("prod", "web-1", "Deployment", "web", "registry.local:5000/web:1")
    c2 = _container("prod", "web-2", "Deployment", "web", "registry.local:5000/web:1")
    c3 = _container("jobs", "cron-1", "CronJob", "<script>alert(1)</script>", "registry.local:5000/job:1")
    c4 = _container("dev", "x", "Pod", "x", "registry.local:5000/dev:1")
    c5 = _container("dev", "y", "Pod", "y", "busybox")
    return [
        Verdict(_running("web", D["a"], c1, c2), Status.VERIFIED, ("signed by key abc",), rule="signed-prod"),
        Verdict(_running("job", D["b"], c3), Status.INVALID, ("signature does not verify", "  "), rule="signed-prod"),
        Verdict(_running("dev", D["c"], c4), Status.EXEMPT, ("exempt: legacy",), rule="1 dev images/*",
                exemptions=(ExemptionRef(ExemptionKind.POLICY, "legacy", UNTIL, "alice"),)),
        Verdict(_running("dev", D["d"], c4), Status.ERROR, ("registry unreachable",), rule="1 dev images/*"),
        Verdict(_running("dev", D["e"], c4), Status.UNSIGNED, ("no signature",), rule="warned", warn_only=True),
        Verdict(UnresolvedImage(None, "busybox", (c5,), "no running digest"), Status.ERROR, ("no running digest",)),
    ]


SCAN = ScanSummary(id=42, cluster="prod-eu", state=ScanState.COMPLETE,
                   started_at=datetime(2026, 12, 7, 8, 0, tzinfo=UTC),
                   finished_at=datetime(2026, 12, 7, 8, 5, tzinfo=UTC),
                   counts={}, compliant=2, total=6, policy_digest="f" * 64, version="0.1.0")
EVIDENCE = {
    f"images/{D['a']}/vsa.intoto.json": "1" * 64,
    f"images/sha256-{'b' * 64}/sig/layer.json": "2" * 64,
    "MANIFEST.json": "3" * 64,
    "policy/policy.yaml": "4" * 64,
}


def test_the_document_is_valid_oscal_1_1_3() -> None:
    doc = oscal.assessment_results(SCAN, verdicts(), EVIDENCE, now=NOW)
    assert errors(doc) == []
    assert doc["assessment-results"]["metadata"]["oscal-version"] == "1.1.3"


def test_the_validator_is_not_a_rubber_stamp() -> None:
    doc = oscal.assessment_results(SCAN, verdicts(), EVIDENCE, now=NOW)
    broken = json.loads(json.dumps(doc))
    broken["assessment-results"]["results"][0]["findings"][0]["target"]["target-id"] = "1 bad token"
    broken["assessment-results"]["results"][0]["observations"][0]["uuid"] = "not-a-uuid"
    del broken["assessment-results"]["metadata"]["title"]
    assert len(errors(broken)) >= 3


def test_every_verdict_is_an_observation_with_its_workloads_and_evidence() -> None:
    doc = oscal.assessment_results(SCAN, verdicts(), EVIDENCE, now=NOW)["assessment-results"]
    result = doc["results"][0]
    obs = result["observations"]
    statuses = [p["value"] for o in obs for p in o["props"] if p["name"] == "status"]
    assert statuses == ["verified", "invalid", "exempt", "error", "unsigned", "error"]
    items = {i["uuid"]: i for i in result["local-definitions"]["inventory-items"]}
    assert len(items) == 4  # web (2 pods, one workload), job, x, and y (the unresolved image's pod)
    assert [items[s["subject-uuid"]]["description"] for s in obs[0]["subjects"]] == ["Deployment prod/web"]
    resources = {r["uuid"]: r for r in doc["back-matter"]["resources"]}
    ev = obs[0]["relevant-evidence"]
    assert [e["href"] for e in ev] == [f"images/sha256%3A{'a' * 64}/vsa.intoto.json"]
    target = resources[ev[0]["links"][0]["href"].removeprefix("#")]
    assert target["rlinks"][0] == {"href": ev[0]["href"],
                                   "hashes": [{"algorithm": "SHA-256", "value": "1" * 64}]}
    assert [e["href"] for e in obs[1]["relevant-evidence"]] == [f"images/sha256-{'b' * 64}/sig/layer.json"]
    assert "relevant-evidence" not in obs[2]  # no file of that image in the pack: none claimed
    assert {unquote(r["rlinks"][0]["href"]) for r in resources.values()} == set(EVIDENCE)


def test_findings_per_rule_never_satisfied_by_a_failure_an_error_or_a_warning() -> None:
    doc = oscal.assessment_results(SCAN, verdicts(), EVIDENCE, now=NOW)["assessment-results"]
    states = {f["props"][0]["value"]: f["target"]["status"]["state"] for f in doc["results"][0]["findings"]}
    assert states == {"signed-prod": "not-satisfied", "1 dev images/*": "not-satisfied",
                      "warned": "not-satisfied", "(no rule)": "not-satisfied"}
    ok = [v for v in verdicts() if v.status in (Status.VERIFIED, Status.EXEMPT)]
    doc = oscal.assessment_results(SCAN, ok, {}, now=NOW)["assessment-results"]
    assert {f["target"]["status"]["state"] for f in doc["results"][0]["findings"]} == {"satisfied"}
    assert errors({"assessment-results": doc}) == []


def test_uuids_are_deterministic_per_scan_and_differ_between_scans() -> None:
    a = oscal.assessment_results(SCAN, verdicts(), EVIDENCE, now=NOW)
    b = oscal.assessment_results(SCAN, verdicts(), EVIDENCE, now=NOW)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c = oscal.assessment_results(replace(SCAN, id=43), verdicts(), EVIDENCE, now=NOW)
    assert a["assessment-results"]["uuid"] != c["assessment-results"]["uuid"]
    uuids = re.findall(r'"uuid": "([0-9a-f-]{36})"', json.dumps(a))
    assert len(uuids) == len(set(uuids))


def test_an_empty_scan_and_a_running_scan_are_still_valid() -> None:
    running = replace(SCAN, finished_at=None, state=ScanState.RUNNING)
    assert errors(oscal.assessment_results(running, [], {}, now=NOW)) == []


def test_a_bad_evidence_hash_is_refused() -> None:
    with pytest.raises(ValueError):
        oscal.assessment_results(SCAN, verdicts(), {"MANIFEST.json": "sha256:" + "1" * 64}, now=NOW)


def test_the_format_checks_are_live() -> None:
    assert not _uri_reference("images/a b") and not _uri_reference("a%zz") and _uri_reference("#x")
    assert not _uri("images/x") and _uri("https://x.example/")
    doc = oscal.assessment_results(SCAN, verdicts(), EVIDENCE, now=NOW)
    hrefs = re.findall(r'"href": "([^"]*)"', json.dumps(doc))
    assert hrefs and not any(_SCHEME.match(h) for h in hrefs)  # all relative: into the pack
    doc["assessment-results"]["back-matter"]["resources"][0]["rlinks"][0]["href"] = "images/x y"
    assert errors(doc)


@pytest.mark.parametrize("path", ["", "/etc/passwd", "images/../MANIFEST.json", "a//b", "./x", "a\\b", "a\nb"])
def test_evidence_paths_outside_the_pack_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        oscal.assessment_results(SCAN, verdicts(), {path: "1" * 64}, now=NOW)


def test_credentials_in_exemptions_rules_and_names_never_reach_the_document() -> None:
    c = _container("prod", "p", "Deployment", "https://u:w0rkload@x.example/", "img")
    v = Verdict(_running("web", D["a"], c), Status.EXEMPT, ("exempt",), rule="https://u:ru1e@x.example/?token=t",
                exemptions=(ExemptionRef(ExemptionKind.POLICY, "see https://u:exempti0n@wiki.example/x", UNTIL,
                                         "https://u:appr0ver@x.example/"),))
    text = json.dumps(oscal.assessment_results(SCAN, [v], {}, now=NOW))
    for secret in ("w0rkload", "ru1e", "exempti0n"):
        assert secret not in text


HOSTILE = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["", " ", "\n", "\x00", "<script>alert(1)</script>", "1 dev images/*", "a" * 300, "\u202e", "\ufeff"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ns=HOSTILE, kind=HOSTILE, name=HOSTILE, rule=st.none() | HOSTILE, reason=HOSTILE,
       path=st.text(st.sampled_from("ab:%# ?é_-."), min_size=1, max_size=12).filter(lambda p: p not in (".", "..")))
def test_any_cluster_strings_still_give_a_valid_document(ns: str, kind: str, name: str, rule: str | None,
                                                         reason: str, path: str) -> None:
    c = _container(ns, "p", kind, name, "img")
    vs = [Verdict(_running("web", D["a"], c), Status.INVALID, (reason,), rule=rule),
          Verdict(UnresolvedImage(None, reason, (c,), reason or "?"), Status.ERROR, (reason or "?",), rule=rule)]
    ev = {f"images/{D['a']}/{path}": "1" * 64}
    assert errors(oscal.assessment_results(SCAN, vs, ev, now=NOW)) == []
