"""SLSA VSA statements: the in-toto Statement v1 shape slsa-verifier reads, and every input that would
make a VSA claim more than the verdict did is refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scanner.evidence import vsa
from scanner.models import Status

HEX = "a" * 64
BASE = vsa.VsaInput(
    repository="registry.local:5000/team/web",
    digest="sha256:" + HEX,
    verifier_version="0.1.0",
    time_verified=datetime(2026, 12, 7, 8, 0, 1, 500, tzinfo=timezone(timedelta(hours=2))),
    policy_uri="policy/policy.yaml",
    policy_digest={"sha256": "b" * 64},
    input_attestations=[("images/x/z.sig", {"sha256": "c" * 64}), ("images/x/a.sig", {"sha256": "d" * 64})],
    passed=True,
    verified_levels=vsa.levels_for("verified"),
    workloads=[{"namespace": "prod", "kind": "Deployment", "name": "web"}],
    status="verified",
    reasons=("signed by key k",),
)


def test_statement_shape() -> None:
    st = vsa.vsa_statement(BASE)
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://slsa.dev/verification_summary/v1"
    assert st["subject"] == [{"name": "registry.local:5000/team/web", "digest": {"sha256": HEX}}]
    p = st["predicate"]
    assert p["verifier"] == {"id": vsa.VERIFIER_ID, "version": {"sigaudit": "0.1.0"}}
    assert p["timeVerified"] == "2026-12-07T06:00:01Z"
    assert p["resourceUri"] == f"registry.local:5000/team/web@sha256:{HEX}"
    assert p["policy"] == {"uri": "policy/policy.yaml", "digest": {"sha256": "b" * 64}}
    assert [a["uri"] for a in p["inputAttestations"]] == ["images/x/a.sig", "images/x/z.sig"]
    assert p["verificationResult"] == "PASSED"
    assert p["verifiedLevels"] == list(vsa.levels_for("verified"))
    assert p[vsa.WORKLOADS_FIELD] == [{"namespace": "prod", "kind": "Deployment", "name": "web"}]
    assert all(not k.startswith("SLSA_") for k in p["verifiedLevels"])


def test_levels() -> None:
    assert vsa.SIGNATURE_VERIFIED in vsa.levels_for("verified")
    assert vsa.SIGNATURE_VERIFIED in vsa.levels_for(Status.VERIFIED)
    for s in Status:
        if s is not Status.VERIFIED:
            assert vsa.SIGNATURE_VERIFIED not in vsa.levels_for(s), s
        custom = [lv for lv in vsa.levels_for(s) if not lv.startswith("SLSA_")]
        assert all(not lv.startswith("SLSA_") for lv in custom)
        vsa.vsa_statement(replace(BASE, status=str(s), verified_levels=vsa.levels_for(s),
                                  passed=s in (Status.VERIFIED, Status.EXEMPT)))


def test_a_failed_verdict_gives_a_failed_vsa() -> None:
    st = vsa.vsa_statement(replace(BASE, status="invalid", passed=False, verified_levels=vsa.levels_for("invalid")))
    assert st["predicate"]["verificationResult"] == "FAILED"
    assert vsa.SIGNATURE_VERIFIED not in st["predicate"]["verifiedLevels"]


@pytest.mark.parametrize("change", [
    {"status": "invalid"},  # SIGNATURE_VERIFIED claimed for an invalid verdict
    {"status": "exempt"},  # ... for an exemption
    {"status": "error", "verified_levels": vsa.levels_for("error")},  # an error never passes
    {"status": "", "verified_levels": vsa.levels_for("")},
    {"verified_levels": ("SLSA_BUILD_LEVEL_3",)},  # sigaudit never evaluates the build track
    {"verified_levels": (vsa.UNEVALUATED, vsa.SIGNATURE_VERIFIED)},  # slsa-verifier 2.7.1 refuses it
    {"verified_levels": (*vsa.levels_for("verified"), "SLSA_SIGNATURE_VERIFIED")},
    {"verified_levels": (*vsa.levels_for("verified"), "slsa_build_level_3")},
    {"verified_levels": (*vsa.levels_for("verified"), vsa.SIGNATURE_VERIFIED)},
    {"verified_levels": ("FAILED",)},
    {"digest": "sha256:" + "A" * 64},
    {"digest": "sha512:" + "a" * 128},
    {"digest": HEX},
    {"digest": "sha256:" + HEX + "\n"},
    {"repository": ""},
    {"repository": "registry.local:5000/team/web@sha256:" + "b" * 64},
    {"repository": "reg/x y"},
    {"policy_digest": {"sha256": "b" * 63}},
    {"policy_digest": {"sha256": "b" * 64, "sha512": "c" * 128}},
    {"input_attestations": [("x", {"sha1": "c" * 40})]},
    {"time_verified": datetime(2026, 12, 7)},  # naive: whose time?
    {"policy_uri": ""},
])
def test_overstating_inputs_are_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        vsa.vsa_statement(replace(BASE, **change))


def test_the_time_is_utc() -> None:
    st = vsa.vsa_statement(replace(BASE, time_verified=datetime(2026, 1, 1, tzinfo=UTC)))
    assert st["predicate"]["timeVerified"] == "2026-01-01T00:00:00Z"


def test_a_warn_only_violation_never_gives_a_passed_vsa() -> None:
    """sigaudit counts a warn-only violation as compliant; a VSA is read by machines that do not know
    the rule only warned (slsa-verifier without --verified-level accepts any PASSED VSA)."""
    for status in ("invalid", "unsigned", "expired", "revoked", "no-policy", "error"):
        with pytest.raises(ValueError, match="never gives a PASSED"):
            vsa.vsa_statement(replace(BASE, status=status, passed=True, verified_levels=()))
        st = vsa.vsa_statement(replace(BASE, status=status, passed=False, verified_levels=()))
        assert st["predicate"]["verificationResult"] == "FAILED"


@pytest.mark.parametrize("repo", ["reg/x\x00y", "reg/x\ny", "reg/\u00e9", "noslash", "reg/x@y"])
def test_a_repository_that_is_not_a_reference_is_refused(repo: str) -> None:
    with pytest.raises(ValueError):
        vsa.vsa_statement(replace(BASE, repository=repo))


def test_credentials_never_reach_a_vsa() -> None:
    st = vsa.vsa_statement(replace(
        BASE, policy_uri="https://alice:s3cret@policies.example/p.yaml?token=t0ken",
        input_attestations=[("https://bob:hunter2@reg.example/sig", {"sha256": "c" * 64})],
        reasons=("key from https://carol:pa55@keys.example/k.pub",)))
    text = repr(st)
    for secret in ("s3cret", "t0ken", "hunter2", "pa55"):
        assert secret not in text
