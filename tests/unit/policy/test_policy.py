"""Policy file errors (file, line, field), glob matching, exemptions, revocations and verdict rules."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.models import (
    ContainerRef,
    ContainerType,
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
    Workload,
)
from scanner.policy.engine import evaluate, image_matches, match_rule, unresolved_verdicts
from scanner.policy.loader import CompiledRule, Policy, load_policy
from scanner.policy.schema import Exemption, Revocation
from tests.harness.cosign_sign import KeyPair

NOW = datetime(2026, 11, 23, tzinfo=UTC)
D = "sha256:" + "e" * 64


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(body)
    return p


HEAD = "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"


def test_unknown_field_names_file_line_and_field(tmp_path: Path) -> None:
    p = write(tmp_path, HEAD + "  rules:\n    - name: a\n      images: ['*']\n      colour: red\n"
              "      verifiers: [{cosign: {key: k.pub}}]\n")
    with pytest.raises(ConfigError) as e:
        load_policy(p)
    msg = e.value.diagnostics()
    assert str(p) in msg and ":7" in msg and "spec.rules.0.colour" in msg and "unknown field" in msg


def test_bad_glob_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, HEAD + "  rules:\n    - name: a\n      images: ['docker.io/[ab]*']\n"
              "      verifiers: [{cosign: {key: k.pub}}]\n")
    with pytest.raises(ConfigError, match="only \\* and \\? are supported"):
        load_policy(p)


def test_unreadable_key_is_a_config_error(tmp_path: Path) -> None:
    p = write(tmp_path, HEAD + "  rules:\n    - name: a\n      images: ['*']\n"
              "      verifiers: [{cosign: {key: missing.pub, ignoreTlog: true}}]\n")
    with pytest.raises(ConfigError, match="cannot read key file"):
        load_policy(p)


def test_garbage_key_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    p = write(tmp_path, HEAD + "  rules:\n    - name: a\n      images: ['*']\n"
              "      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
    with pytest.raises(ConfigError, match="unusable key"):
        load_policy(p)


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    p = write(tmp_path, HEAD + "  rules: [\n")
    with pytest.raises(ConfigError) as e:
        load_policy(p)
    assert e.value.line is not None


def test_exemption_needs_timezone(tmp_path: Path) -> None:
    p = write(tmp_path, HEAD + "  exemptions:\n    - {images: ['*'], reason: r, until: '2027-01-01T00:00:00'}\n")
    with pytest.raises(ConfigError, match="timezone"):
        load_policy(p)


def test_inline_pem_key_loads_and_policy_digest_changes_with_key(tmp_path: Path) -> None:
    k1, k2 = KeyPair.ecdsa(), KeyPair.ecdsa()
    digests = []
    for k in (k1, k2):
        (tmp_path / "k.pub").write_text(k.public_pem)
        p = write(tmp_path, HEAD + "  rules:\n    - name: a\n      images: ['*']\n"
                  "      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
        digests.append(load_policy(p).digest)
    assert digests[0] != digests[1]


@pytest.mark.parametrize(
    ("glob", "ref", "hit"),
    [
        ("docker.io/wallarm/*", "docker.io/wallarm/ingress:4.8", True),
        ("docker.io/wallarm/*", "docker.io/wallarmx/ingress:4.8", False),
        ("registry.k8s.io/pause*", "registry.k8s.io/pause:3.9", True),
        ("*", "ghcr.io/a/b:1", True),
        ("nginx", "docker.io/library/nginx:1.25", True),
        ("nginx:1.25", "docker.io/library/nginx:1.26", False),
        ("ghcr.io/org/*:v1*", "ghcr.io/org/team/app:v1.2", True),
    ],
)
def test_image_globs_on_normalised_reference(glob: str, ref: str, hit: bool) -> None:
    from scanner.inventory.references import parse_reference

    assert image_matches([glob], parse_reference(ref)) is hit


class FakeVerifier:
    """A stand-in verifier: the engine reads its name and its optional ``not_found_reason`` (None: the
    default of ``scanner.verify.base.Verifier``)."""

    not_found_reason: str | None = None

    def __init__(self, name: str) -> None:
        self.name = name


def result(outcome: Outcome, failure: SignatureFailure = SignatureFailure.NONE, *, verifier: str = "v1",
           key: str | None = "ab" * 32, identity: str | None = None, signed_at: SignedTime | None = None,
           not_after: datetime | None = None) -> SignatureResult:
    return SignatureResult("cosign", verifier, outcome, f"reason {outcome}", failure, key_sha256=key,
                           identity=identity, signed_at=signed_at, not_after=not_after)


def image(ns: str = "ns") -> RunningImage:
    c = ContainerRef(ns, "p", "c", ContainerType.CONTAINER, "r.io/a:1", None, Workload("Pod", "p"))
    return RunningImage(ImageReference("r.io", "a", "1", D), (c,))


def policy(*rules: CompiledRule, exemptions=(), revocations=()) -> Policy:
    return Policy(tuple(rules), tuple(exemptions), tuple(revocations), timedelta(days=30), frozenset(), 50, "x")


RULE = CompiledRule("r", ("r.io/*",), ("*",), (FakeVerifier("v1"),))  # type: ignore[arg-type]


def test_first_matching_rule_applies_and_namespace_filters() -> None:
    a = CompiledRule("a", ("r.io/*",), ("prod-*",), ())
    b = CompiledRule("b", ("r.io/*",), ("*",), ())
    pol = policy(a, b)
    assert match_rule(pol, image().reference, "prod-eu").name == "a"
    assert match_rule(pol, image().reference, "dev").name == "b"


@pytest.mark.parametrize(
    ("results", "errors", "status"),
    [
        ([result(Outcome.PASSED)], [], Status.VERIFIED),
        ([], [], Status.UNSIGNED),
        ([], ["registry down"], Status.ERROR),
        ([result(Outcome.FAILED, SignatureFailure.INVALID)], [], Status.INVALID),
        ([result(Outcome.FAILED, SignatureFailure.INVALID)], ["one referrer unreadable"], Status.ERROR),
        ([result(Outcome.FAILED, SignatureFailure.EXPIRED)], [], Status.EXPIRED),
        ([result(Outcome.FAILED, SignatureFailure.INVALID), result(Outcome.ERROR, SignatureFailure.ERROR)], [],
         Status.ERROR),
        ([result(Outcome.FAILED, SignatureFailure.REVOKED), result(Outcome.FAILED, SignatureFailure.INVALID)], [],
         Status.REVOKED),
    ],
)
def test_verdict_from_results(results, errors, status) -> None:
    v = evaluate(image(), RULE, results, errors, policy(RULE), NOW, "ns")
    assert v.status is status and v.reasons
    assert v.compliant is (status is Status.VERIFIED)


def test_no_rule_is_no_policy_and_not_compliant() -> None:
    v = evaluate(image(), None, [], [], policy(), NOW, "ns")
    assert v.status is Status.NO_POLICY and not v.compliant


def test_revoked_key_turns_a_pass_into_revoked() -> None:
    rev = Revocation.model_validate({"keySha256": "ab" * 32, "reason": "leaked"})
    v = evaluate(image(), RULE, [result(Outcome.PASSED)], [], policy(RULE, revocations=[rev]), NOW, "ns")
    assert v.status is Status.REVOKED and any("leaked" in r for r in v.reasons)


def test_identity_revocation_with_effective_time_spares_older_signatures() -> None:
    rev = Revocation.model_validate({"identity": "arn:aws:signer:profile/p1", "reason": "profile revoked",
                                     "revokedAt": "2026-06-01T00:00:00Z"})
    pol = policy(RULE, revocations=[rev])
    before = result(Outcome.PASSED, identity="arn:aws:signer:profile/p1",
                    signed_at=SignedTime(datetime(2026, 5, 1, tzinfo=UTC), TimeSource.SIGNING_AUTHORITY))
    after = result(Outcome.PASSED, identity="arn:aws:signer:profile/p1",
                   signed_at=SignedTime(datetime(2026, 7, 1, tzinfo=UTC), TimeSource.SIGNING_AUTHORITY))
    assert evaluate(image(), RULE, [before], [], pol, NOW, "ns").status is Status.VERIFIED
    assert evaluate(image(), RULE, [after], [], pol, NOW, "ns").status is Status.REVOKED


def test_active_exemption_waives_and_says_why_and_lapsed_one_does_not() -> None:
    active = Exemption.model_validate({"images": ["r.io/*"], "reason": "SEC-1", "until": "2027-01-01T00:00:00Z"})
    lapsed = Exemption.model_validate({"images": ["r.io/*"], "reason": "SEC-2", "until": "2026-01-01T00:00:00Z"})
    v = evaluate(image(), RULE, [], [], policy(RULE, exemptions=[active]), NOW, "ns")
    assert v.status is Status.EXEMPT and "SEC-1" in v.reasons[0] and "unsigned" in v.reasons[1]
    v = evaluate(image(), RULE, [], [], policy(RULE, exemptions=[lapsed]), NOW, "ns")
    assert v.status is Status.UNSIGNED and any("lapsed" in r for r in v.reasons)


def test_exemption_scoped_to_namespace() -> None:
    ex = Exemption.model_validate({"images": ["r.io/*"], "namespaces": ["kube-system"], "reason": "r",
                                   "until": "2027-01-01T00:00:00Z"})
    assert evaluate(image("default"), RULE, [], [], policy(RULE, exemptions=[ex]), NOW, "default").status \
        is Status.UNSIGNED


def test_expiring_flag_inside_warning_window() -> None:
    soon = result(Outcome.PASSED, not_after=NOW + timedelta(days=5))
    late = result(Outcome.PASSED, not_after=NOW + timedelta(days=90))
    assert evaluate(image(), RULE, [soon], [], policy(RULE), NOW, "ns").expiring is True
    v = evaluate(image(), RULE, [late], [], policy(RULE), NOW, "ns")
    assert v.expiring is False and v.not_after == NOW + timedelta(days=90)


def test_count_two_needs_two_distinct_verifiers() -> None:
    rule = CompiledRule("r", ("*",), ("*",), (FakeVerifier("v1"), FakeVerifier("v2")), count=2)  # type: ignore[arg-type]
    one = [result(Outcome.PASSED, verifier="v1")]
    both = [result(Outcome.PASSED, verifier="v1"), result(Outcome.PASSED, verifier="v2")]
    assert evaluate(image(), rule, one, [], policy(rule), NOW, "ns").status is Status.INVALID
    assert evaluate(image(), rule, both, [], policy(rule), NOW, "ns").status is Status.VERIFIED


def test_warn_mode_is_reported_but_not_counted_non_compliant() -> None:
    rule = CompiledRule("r", ("*",), ("*",), (FakeVerifier("v1"),), mode="warn")  # type: ignore[arg-type]
    v = evaluate(image(), rule, [], [], policy(rule), NOW, "ns")
    assert v.status is Status.UNSIGNED and v.warn_only and v.compliant


def test_warn_mode_never_makes_an_undecided_image_compliant() -> None:
    rule = CompiledRule("r", ("*",), ("*",), (FakeVerifier("v1"),), mode="warn")  # type: ignore[arg-type]
    v = evaluate(image(), rule, [], ["registry unreachable"], policy(rule), NOW, "ns")
    assert v.status is Status.ERROR and v.warn_only and not v.compliant


# -- the reason that decided a verdict (Verdict.deciding_reason) -----------------------------------


def named(reason: str, outcome: Outcome, failure: SignatureFailure = SignatureFailure.NONE, *,
          verifier: str = "v1", key: str | None = "ab" * 32) -> SignatureResult:
    return SignatureResult("cosign", verifier, outcome, reason, failure, key_sha256=key)


RULE2 = CompiledRule("r", ("r.io/*",), ("*",), (FakeVerifier("v1"), FakeVerifier("v2")))  # type: ignore[arg-type]


def test_a_revocation_decides_even_when_another_keys_failure_is_listed_first() -> None:
    rev = Revocation.model_validate({"keySha256": "cd" * 32, "reason": "key leaked (INC-7)"})
    results = [named("v1: signature does not verify with this key", Outcome.FAILED, SignatureFailure.INVALID),
               named("v2: signature verified", Outcome.PASSED, verifier="v2", key="cd" * 32)]
    v = evaluate(image(), RULE2, results, [], policy(RULE2, revocations=[rev]), NOW, "ns")
    assert v.status is Status.REVOKED
    assert v.reasons[0].startswith("v1: signature does not verify")  # what the table used to show
    assert "INC-7" in v.headline and v.reasons[v.deciding_reason] == v.headline


def test_the_deciding_signature_is_kept_beyond_the_first_ten_reasons() -> None:
    results = [named(f"invalid {i}", Outcome.FAILED, SignatureFailure.INVALID) for i in range(12)]
    results.append(named("expired one", Outcome.FAILED, SignatureFailure.EXPIRED))
    v = evaluate(image(), RULE, results, [], policy(RULE), NOW, "ns")
    assert v.status is Status.EXPIRED and v.headline == "expired one"


@pytest.mark.parametrize(
    ("results", "errors", "status", "headline"),
    [
        ([named("ok", Outcome.PASSED)], [], Status.VERIFIED, "ok"),
        ([], ["registry down"], Status.ERROR, "could not read signatures: registry down"),
        ([named("bad", Outcome.FAILED, SignatureFailure.INVALID)], ["one referrer unreadable"], Status.ERROR,
         "could not read all signatures: one referrer unreadable"),
        ([named("bad", Outcome.FAILED, SignatureFailure.INVALID),
          named("no network", Outcome.ERROR, SignatureFailure.ERROR)], [], Status.ERROR, "no network"),
        ([named("bad", Outcome.FAILED, SignatureFailure.INVALID),
          named("old", Outcome.FAILED, SignatureFailure.EXPIRED)], [], Status.EXPIRED, "old"),
    ],
)
def test_each_status_is_headed_by_the_reason_that_gave_it(results, errors, status, headline) -> None:
    v = evaluate(image(), RULE, results, errors, policy(RULE), NOW, "ns")
    assert (v.status, v.headline) == (status, headline)


def test_n_of_m_is_headed_by_the_signature_that_gave_its_status() -> None:
    rule = CompiledRule("r", ("*",), ("*",), (FakeVerifier("v1"), FakeVerifier("v2")), count=2)  # type: ignore[arg-type]
    rev = Revocation.model_validate({"keySha256": "cd" * 32, "reason": "key leaked"})
    results = [named("v1 ok", Outcome.PASSED), named("v2 ok", Outcome.PASSED, verifier="v2", key="cd" * 32)]
    v = evaluate(image(), rule, results, [], policy(rule, revocations=[rev]), NOW, "ns")
    assert v.status is Status.REVOKED and "key leaked" in v.headline
    assert "1 of the 2 required" in v.reasons[0]  # the count stays among the reasons


def test_no_policy_is_headed_by_no_rule_not_by_a_note() -> None:
    img = RunningImage(image().reference, image().containers, ("pulled from r.io/b (spec names r.io/a)",))
    v = evaluate(img, None, [], [], policy(), NOW, "ns")
    assert v.headline == "no policy rule matches this image" and v.reasons[0].startswith("pulled from")


def test_an_exemption_heads_the_verdict_it_waives() -> None:
    ex = Exemption.model_validate({"images": ["r.io/*"], "reason": "SEC-1", "until": "2027-01-01T00:00:00Z"})
    results = [named("bad", Outcome.FAILED, SignatureFailure.INVALID),
               named("old", Outcome.FAILED, SignatureFailure.EXPIRED)]
    v = evaluate(image(), RULE, results, [], policy(RULE, exemptions=[ex]), NOW, "ns")
    assert v.status is Status.EXEMPT and "SEC-1" in v.headline


def test_a_verdict_refuses_a_deciding_reason_outside_its_reasons() -> None:
    with pytest.raises(ValueError, match="deciding_reason"):
        Verdict(image(), Status.INVALID, ("a",), deciding_reason=1)
    assert Verdict(image(), Status.ERROR, ()).headline == ""


# -- containers whose running digest is unknown -----------------------------------------------------


def test_an_unknown_running_digest_is_an_error_whatever_its_tag_would_get() -> None:
    c = ContainerRef("ns", "p", "c", ContainerType.CONTAINER, "r.io/a:1", "docker://" + D, Workload("Pod", "p"))
    info = "information only, not what runs: tag 1 resolves to sha256:…; that digest on its own is verified: ok"
    u = UnresolvedImage(ImageReference("r.io", "a", "1"), "r.io/a:1", (c,), "a local image id", (info,))
    (v,) = unresolved_verdicts(u, policy(RULE), NOW)
    assert v.status is Status.ERROR and not v.compliant and v.rule == "r"
    assert v.headline == "running digest unknown: a local image id" and v.reasons[1:] == (info,)
    warn = CompiledRule("r", ("*",), ("*",), (FakeVerifier("v1"),), mode="warn")  # type: ignore[arg-type]
    assert not any(x.compliant for x in unresolved_verdicts(u, policy(warn), NOW))
