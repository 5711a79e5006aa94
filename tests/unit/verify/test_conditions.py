"""scanner.verify.conditions: CEL conditions over a verified in-toto statement, their bounds and load
errors, and how scanner.verify.cosign_rules counts an attestation whose conditions failed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.models import Outcome, SignatureFailure, SignatureResult
from scanner.policy.engine import apply_revocations
from scanner.policy.loader import load_policy
from scanner.policy.schema import Revocation
from scanner.verify import conditions as c
from scanner.verify.cosign_rules import CONDITIONS, ROLE_ATTESTATION, apply_cosign_rules

SLSA = "https://slsa.dev/provenance/v1"
NOW = datetime(2026, 12, 7, tzinfo=UTC)
STATEMENT = {
    "_type": "https://in-toto.io/Statement/v1", "predicateType": SLSA,
    "subject": [{"name": "app", "digest": {"sha256": "a" * 64}}],
    "predicate": {"runDetails": {"builder": {"id": "https://builder.example/v1"}},
                  "metadata": {"finishedOn": "2026-12-01T00:00:00Z"}, "findings": [{"severity": "LOW"}]},
}


def run(*sources: str, statement: dict | None = None, now: datetime = NOW) -> tuple[str, tuple[c.ConditionResult, ...]]:
    (req,) = c.compile_requirements([(SLSA, list(sources))])
    stmt = STATEMENT if statement is None else statement
    return c.evaluate(req, stmt, stmt["subject"][0], now)


def test_conditions_that_hold_pass_over_all_four_variables() -> None:
    outcome, results = run('predicate.runDetails.builder.id == "https://builder.example/v1"',
                           f'statement.predicateType == "{SLSA}"', 'subject.digest.sha256.startsWith("aaaa")',
                           'now - timestamp(predicate.metadata.finishedOn) < duration("168h")')
    assert outcome == c.PASSED and [r.outcome for r in results] == [c.PASSED] * 4


def test_a_false_condition_fails_naming_the_value_it_read() -> None:
    outcome, results = run('predicate.runDetails.builder.id.startsWith("https://trusted/")')
    assert outcome == c.FAILED
    assert results[-1].value == "false (predicate.runDetails.builder.id = 'https://builder.example/v1')"


def test_now_is_the_scan_clock() -> None:
    cond = 'now - timestamp(predicate.metadata.finishedOn) < duration("168h")'
    assert run(cond, now=datetime(2026, 12, 7, tzinfo=UTC))[0] == c.PASSED
    assert run(cond, now=datetime(2026, 12, 9, tzinfo=UTC))[0] == c.FAILED


@pytest.mark.parametrize("cond", [
    "predicate.nosuch == 1",  # missing field
    "predicate.runDetails.builder.id + 1 == 2",  # type error
    "predicate.runDetails",  # not a bool
    "int(predicate.runDetails.builder.id) > 0",  # a function error
    "1 / 0 == 1",
    "nosuchfunction(1)",
    "nosuchvariable == 1",
])
def test_a_condition_that_cannot_be_evaluated_is_an_error(cond: str) -> None:
    outcome, results = run(cond)
    assert outcome == c.ERROR and results[-1].outcome == c.ERROR and results[-1].expression == cond


def test_evaluation_stops_at_the_first_condition_that_does_not_pass() -> None:
    outcome, results = run("false", "predicate.nosuch == 1")
    assert outcome == c.FAILED and len(results) == 1


def test_a_statement_over_the_size_bound_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(c, "MAX_STATEMENT_VALUES", 5)
    assert run("true")[0] == c.ERROR


@pytest.mark.parametrize(("sources", "why"), [
    (["predicate.("], "not valid CEL"),
    (["  "], "empty expression"),
    (["x" * (c.MAX_EXPRESSION_CHARS + 1)], "characters"),
    (["predicate.l.all(a, predicate.l.all(b, true))"], "comprehension macros"),
    (["predicate.l.exists(a, a == 1) && predicate.l.map(b, b).size() > 0"], "comprehension macros"),
    (["size(predicate.l.map(x, x + x)) > 0"], "quadratic"),  # the cel crate builds lists in O(n²)
    (["size(predicate.l.filter(x, true)) > 0"], "quadratic"),
    (['predicate.l.exists(x, x.matches("a+"))'], "matches"),
    (["predicate.l.all(x, x in predicate.l)"], "iteration variable"),  # quadratic
    # a comment cannot hide a macro (CEL has // comments)
    (["predicate.l.all // c\n (a, predicate.l.all(b, true))"], "comprehension macros"),
    (["predicate.l.//c\nall(a, a.all(b, true))"], "comprehension macros"),
    (["predicate.l.exists(x, // note\n x == 1) && predicate.m == 1"], "iteration variable"),
    (["predicate.l.exists(x, x == statement.predicateType)"], "iteration variable"),
    (["predicate.l.exists(x, x == 1) && subject.name == 'a'"], "iteration variable"),
])
def test_bad_conditions_are_refused_at_compile(sources: list[str], why: str) -> None:
    with pytest.raises(c.ConditionError, match=why):
        c.compile_requirements([(SLSA, sources)])


def test_a_comprehension_over_the_statement_with_literals_and_now_compiles() -> None:
    outcome, _ = run('!predicate.findings.exists(f, f.severity == "CRITICAL")',
                     'predicate.findings.all(f, now > timestamp("2026-01-01T00:00:00Z") && f.severity != "")')
    assert outcome == c.PASSED


def test_macro_names_and_variables_inside_string_literals_and_comments_do_not_count() -> None:
    outcome, _ = run('predicate.runDetails.builder.id != "all(map(x)) filter( predicate"',
                     "predicate.findings.all(f, f.severity != 'predicate.exists(') // all( predicate",
                     'predicate.findings.exists(f, f.severity == r"""LOW""")')
    assert outcome == c.PASSED


def test_conditions_on_the_image_signature_predicate_are_refused() -> None:
    with pytest.raises(c.ConditionError, match="not an attestation"):
        c.compile_requirements([("https://sigstore.dev/cosign/sign/v1", ["true"])])


def test_a_predicate_type_listed_twice_is_refused() -> None:
    with pytest.raises(c.ConditionError, match="twice"):
        c.compile_requirements([(SLSA, ["true"]), (SLSA, ["false"])])


def _policy(tmp_path: Path, verifier: dict) -> Path:
    import json

    doc = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
           "spec": {"rules": [{"name": "needs-provenance", "images": ["*"], "verifiers": [verifier]}]}}
    p = tmp_path / "policy.json"
    p.write_text(json.dumps(doc))
    return p


KEY = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEUGsG8Zzx1jcX9bRMPJ1Z6U5cWOaZ
5mvqJVX8W/tOvWvV2x7UgDGWiS6zGhOb2HXhUeDmmF6Jm8OVtNhmX3e0eQ==
-----END PUBLIC KEY-----
"""


@pytest.mark.parametrize("verifier", [
    {"cosign": {"key": KEY, "ignoreTlog": True, "attestations": [{"predicateType": SLSA, "conditions": ["a.("]}]}},
    {"cosign": {"key": KEY, "ignoreTlog": True,
                "attestations": [{"predicateType": SLSA}, {"predicateType": SLSA}]}},
    # formats that carry no in-toto statement refuse the field at load
    {"notation": {"trustPolicy": "tp.json", "trustStore": "ts", "attestations": [{"predicateType": SLSA}]}},
    {"attestation": {"attestor": "a", "publicKeys": [KEY], "attestations": [{"predicateType": SLSA}]}},
])
def test_policy_load_refuses_bad_attestations(tmp_path: Path, verifier: dict) -> None:
    with pytest.raises(ConfigError) as err:
        load_policy(_policy(tmp_path, verifier))
    assert "attestations" in str(err.value) or "not valid CEL" in str(err.value)


# -- cosign_rules: how a judged attestation counts -----------------------------------------------


def signature() -> SignatureResult:
    return SignatureResult("sigstore-bundle", "v", Outcome.PASSED, "image signature verified", key_sha256="a" * 64,
                           details={"role": "image-signature", "predicate_types": ["https://sigstore.dev/cosign/sign/v1"]})


def attestation(outcome: str | None, key: str = "a" * 64) -> SignatureResult:
    details: dict = {"role": ROLE_ATTESTATION, "predicate_types": [SLSA]}
    if outcome is not None:
        details[CONDITIONS] = {"predicate_type": SLSA, "outcome": outcome,
                               "results": [{"expression": "e", "outcome": outcome, "value": "v"}]}
    return SignatureResult("sigstore-bundle", "v", Outcome.PASSED, "attestation verified", key_sha256=key,
                           details=details)


REQ = c.compile_requirements([(SLSA, ["predicate.x == 1"])])


@pytest.mark.parametrize(("judged", "outcome", "failure"), [
    ([c.PASSED], Outcome.PASSED, SignatureFailure.NONE),
    ([c.FAILED], Outcome.FAILED, SignatureFailure.INVALID),
    ([c.ERROR], Outcome.ERROR, SignatureFailure.ERROR),
    ([c.FAILED, c.PASSED], Outcome.PASSED, SignatureFailure.NONE),  # any one attestation that satisfies them
    ([None], Outcome.FAILED, SignatureFailure.INVALID),  # verified without its conditions: never counts
    ([], Outcome.FAILED, SignatureFailure.INVALID),  # none at all
])
def test_an_image_signature_counts_only_with_an_attestation_whose_conditions_passed(
        judged: list[str | None], outcome: Outcome, failure: SignatureFailure) -> None:
    out = apply_cosign_rules([signature(), *(attestation(j) for j in judged)], [], REQ)
    assert (out[0].outcome, out[0].failure) == (outcome, failure), out[0].reason


def test_a_passing_attestation_by_a_revoked_key_does_not_rescue_a_failed_one() -> None:
    leaked = "b" * 64
    ruled = apply_cosign_rules([signature(), attestation(c.FAILED), attestation(c.PASSED, key=leaked)], [], REQ)
    assert ruled[0].outcome is Outcome.PASSED
    out = apply_revocations(ruled, [Revocation(keySha256=leaked, reason="key leaked")])
    assert out[0].outcome is Outcome.FAILED and out[0].failure is SignatureFailure.REVOKED
