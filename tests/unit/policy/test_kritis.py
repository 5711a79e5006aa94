"""scanner.policy.kritis: kritis allowlists waive exactly the images kritis would admit, never more.

kritis matches a GenericAttestationPolicy's ``namePattern`` exactly, or with one trailing ``*`` that
stops at ``/``; an ImageSecurityPolicy's ``imageAllowlist`` entries are exact strings. sigaudit's own
exemption globs are wider (``*`` crosses ``/``, a plain name matches every tag), so the importer must
not hand kritis patterns to them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scanner.errors import ConfigError, ParseError
from scanner.inventory.references import parse_reference
from scanner.models import ImageReference
from scanner.policy.engine import match_exemption
from scanner.policy.imports import merge
from scanner.policy.kritis import name_pattern_matcher
from scanner.policy.loader import PolicyLoader

D0 = "sha256:" + "0" * 64
D1 = "sha256:" + "1" * 64

# kritis' Test_imageInGapAllowlist (pkg/kritis/util/allowlist_test.go @ 3348562cec04c175bd0fdf7cbd4e26ed73797e71,
# Apache-2.0, Copyright 2018 Google LLC): the patterns and (image, admitted) cases, transcribed as data.
KRITIS_PATTERNS = [
    "gcr.io/1-my-image*",
    "gcr.io/2-my-image-any-tag:*",
    "gcr.io/3-my-untagged-image",
    "gcr.io/4-my-image-tag-prefix:1.*",
    "gcr.io/5/long/path/my-image*",
    "gcr.io/6-my-image-w-tag:latest",
    f"gcr.io/7-my-image@{D0}",
    "gcr.io/8-my-image@sha256:*",
    "local-image-1:*",
    "local-image-2:tag",
    "local-image-3:tag*",
]
KRITIS_CASES = [
    ("gcr.io/6-my-image-w-tag:latest", True),
    ("gcr.io/6-my-image-w-tag:some", False),
    ("gcr.io/2-my-image-any-tag:any", True),
    ("gcr.io/1-my-image-abc", True),
    ("gcr.io/1-my-image-abc:tag", True),
    ("gcr.io/3-my-untagged-image", True),
    ("gcr.io/3-my-untagged-image:tag", False),
    ("gcr.io/4-my-image-tag-prefix:1.3", True),
    ("gcr.io/4-my-image-tag-prefix:2.3", False),
    ("gcr.io/5/long/path/my-image-1:tag", True),
    ("gcr.io/5/long/path/my-image/image", False),
    (f"gcr.io/7-my-image@{D0}", True),
    (f"gcr.io/7-my-image@{D1}", False),
    (f"gcr.io/8-my-image@{D1}", True),
    ("local-image-2:tag", True),
    ("local-image-2:tag2", False),
    ("local-image-1:any-tag", True),
    ("local-image-3:tag-any", True),
    ("local-image-3:1tag", False),
    # Test_SplitGapAllowedImages, allowlist ["gcr.io/1-my-image*"]:
    ("gcr.io/2-my-image:latest", False),
    ("gcr.io/1-my-image2:latest", True),
    ("gcr.io/1-my-image/a:latest", False),
]


@pytest.mark.parametrize(("image", "admitted"), KRITIS_CASES, ids=[c[0] for c in KRITIS_CASES])
def test_name_patterns_match_as_kritis_matches_them(image: str, admitted: bool) -> None:
    match = name_pattern_matcher(KRITIS_PATTERNS)
    assert match(parse_reference(image), image) is admitted
    assert match(None, image) is admitted  # an image whose reference could not be parsed: its text


@pytest.mark.parametrize(("pattern", "image"), [
    ("*", "gcr.io/team/app:1"),                       # sigaudit's glob: everything; kritis: no '/' after ''
    ("gcr.io/team/*", "gcr.io/team/sub/app:1"),       # * stops at /
    ("gcr.io/team/app", "gcr.io/team/app:2"),          # a plain name is that image, not its other tags
    ("gcr.io/*/app:1", "gcr.io/team/app:1"),           # a * before the end is a literal
    ("gcr.io/team/ap?:1", "gcr.io/team/app:1"),        # so is ?
])
def test_what_sigaudit_globs_would_widen_is_not_matched(pattern: str, image: str) -> None:
    assert name_pattern_matcher([pattern])(parse_reference(image), image) is False


def test_docker_hub_spellings_are_one_image() -> None:
    match = name_pattern_matcher(["nginx*", "index.docker.io/bitnami/*"])
    assert match(parse_reference("docker.io/library/nginx:1.25"), "docker.io/library/nginx:1.25")
    assert match(parse_reference("bitnami/redis:7"), "bitnami/redis:7")
    assert not match(parse_reference("nginx-ingress/controller:1"), "nginx-ingress/controller:1")


def test_a_running_digest_matches_the_digest_pattern_and_the_tag_the_pod_names() -> None:
    running = ImageReference("gcr.io", "team/app", "1.0", D1)  # the pod says :1.0, the runtime D1
    assert name_pattern_matcher(["gcr.io/team/app:1.0"])(running, str(running))
    assert name_pattern_matcher([f"gcr.io/team/app@{D1}"])(running, str(running))
    assert not name_pattern_matcher([f"gcr.io/team/app@{D0}"])(running, str(running))
    assert not name_pattern_matcher(["gcr.io/team/app:1.1"])(running, str(running))


PEM = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _policy(tmp_path: Path, monkeypatch, gap_patterns: list[str], isp_allowlist: list[str]):
    monkeypatch.setenv("SIGAUDIT_GRAFEAS_URL", "http://127.0.0.1:1")
    docs = []
    for ns in ("gap-ns", "isp-ns"):
        docs.append({"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "AttestationAuthority",
                     "metadata": {"name": "qa", "namespace": ns},
                     "spec": {"noteReference": "projects/p/notes/qa",
                              "publicKeys": [{"keyType": "PKIX", "pkixPublicKey": {"publicKeyPem": PEM}}]}})
    docs.append({"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "GenericAttestationPolicy",
                 "metadata": {"name": "gap", "namespace": "gap-ns"},
                 "spec": {"attestationAuthorityNames": ["qa"],
                          "admissionAllowlistPatterns": [{"namePattern": p} for p in gap_patterns]}})
    docs.append({"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "ImageSecurityPolicy",
                 "metadata": {"name": "isp", "namespace": "isp-ns"},
                 "spec": {"attestationAuthorityName": "qa", "imageAllowlist": isp_allowlist}})
    f = tmp_path / "kritis.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    return merge(None, [f"kritis:{f}"], loader=PolicyLoader(), kubeconfig=None, context=None)


def _exempt(policy, image: str, ns: str) -> bool:
    """Whether the imported allowlists waive the image: policy exemptions, or (once each policy's
    allowlist waives only its own rule) the rules' waivers, all matched by the engine."""
    allowlists = (*policy.exemptions, *(w for r in policy.rules for w in getattr(r, "waivers", ())))
    ref = parse_reference(image).with_digest(D1)
    return match_exemption(replace(policy, exemptions=allowlists), ref, str(ref), ns) is not None


def test_imported_allowlists_exempt_only_what_kritis_admits(tmp_path: Path, monkeypatch) -> None:
    policy = _policy(tmp_path, monkeypatch, ["gcr.io/team/*", "gcr.io/exact"],
                     ["*", "gcr.io/isp/*", "gcr.io/isp/app:1"])
    assert _exempt(policy, "gcr.io/team/app:1", "gap-ns")
    assert not _exempt(policy, "gcr.io/team/sub/app:1", "gap-ns")
    assert _exempt(policy, "gcr.io/exact", "gap-ns") and not _exempt(policy, "gcr.io/exact:2", "gap-ns")
    # An ImageSecurityPolicy's entries are exact strings: '*' and 'gcr.io/isp/*' name no image.
    assert _exempt(policy, "gcr.io/isp/app:1", "isp-ns")
    assert not _exempt(policy, "gcr.io/isp/app:2", "isp-ns") and not _exempt(policy, "gcr.io/other/app:1", "isp-ns")
    assert not _exempt(policy, "gcr.io/team/app:1", "isp-ns")  # each allowlist stays in its namespace
    assert any("'gcr.io/isp/*' exempts nothing" in w for w in policy.warnings)


def test_kritis_stops_at_an_empty_pattern(tmp_path: Path, monkeypatch) -> None:
    """imageInAllowlistByPattern returns on the error an empty pattern raises: later ones never count."""
    policy = _policy(tmp_path, monkeypatch, ["gcr.io/first/*", "", "gcr.io/later/*"], [])
    assert _exempt(policy, "gcr.io/first/app:1", "gap-ns")
    assert not _exempt(policy, "gcr.io/later/app:1", "gap-ns")


def test_a_pattern_that_is_no_image_name_matches_nothing() -> None:
    with pytest.raises(ParseError):
        parse_reference("gcr.io/*/app:1")
    assert not name_pattern_matcher(["gcr.io/*/app:1", " gcr.io/team/app:1"])(
        parse_reference("gcr.io/team/app:1"), "gcr.io/team/app:1")


@pytest.mark.parametrize(("key", "why"), [
    ({"keyType": "PKIX", "pkixPublicKey": {"publicKeyPem": PEM + PEM}}, "not exactly one PEM"),  # two keys
    ({"keyType": "PKIX", "pkixPublicKey": {"publicKeyPem": PEM + "trailing"}}, "not exactly one PEM"),
    ({"keyType": "X509", "pkixPublicKey": {"publicKeyPem": PEM}}, "not PKIX"),
])
def test_a_key_kritis_would_not_parse_is_no_key(key: dict, why: str, tmp_path: Path, monkeypatch) -> None:
    """kritis refuses a PEM that is not exactly one public key (it never takes "the first one"), and a
    keyType it does not know: with no other key the authority has none, and its policy's images are
    `error` (refused), never judged with a key kritis would not use."""
    monkeypatch.setenv("SIGAUDIT_GRAFEAS_URL", "http://127.0.0.1:1")
    docs = [{"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "AttestationAuthority",
             "metadata": {"name": "qa", "namespace": "ns"},
             "spec": {"noteReference": "projects/p/notes/qa", "publicKeys": [key]}},
            {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "GenericAttestationPolicy",
             "metadata": {"name": "gap", "namespace": "ns"}, "spec": {"attestationAuthorityNames": ["qa"]}}]
    f = tmp_path / "kritis.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    policy = merge(None, [f"kritis:{f}"], loader=PolicyLoader(), kubeconfig=None, context=None)
    (rule,) = policy.rules
    assert rule.refused == ("AttestationAuthority qa has no usable PKIX key",) and rule.verifiers == ()
    assert any(why in w for w in policy.warnings), policy.warnings


@pytest.mark.parametrize(("pattern", "image", "exempt"), [
    ("gcr.io/distroless/*", "gcr.io/distroless/static:nonroot", True),
    ("gcr.io/distroless/*", "gcr.io/distroless/attacker/backdoor:1", False),  # * does not cross /
    ("gcr.io/proj/tool", "gcr.io/proj/tool", True),
    ("gcr.io/proj/tool", "gcr.io/proj/tool:evil", False),  # a plain name is that image, not every tag
])
def test_issue_26_allowlist_cases(pattern: str, image: str, exempt: bool, tmp_path: Path, monkeypatch) -> None:
    """Issue #26 item 3, through the importer and the engine, for a GenericAttestationPolicy pattern and
    an ImageSecurityPolicy entry (exact: its `*` names no image)."""
    policy = _policy(tmp_path, monkeypatch, [pattern], [pattern])
    assert _exempt(policy, image, "gap-ns") is exempt
    assert _exempt(policy, image, "isp-ns") is (exempt and "*" not in pattern)


def _kritis(tmp_path: Path, monkeypatch, docs: list[dict]):
    monkeypatch.setenv("SIGAUDIT_GRAFEAS_URL", "http://127.0.0.1:1")
    f = tmp_path / "kritis.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    return merge(None, [f"kritis:{f}"], loader=PolicyLoader(), kubeconfig=None, context=None)


def _authority(ns: str, name: str = "qa") -> dict:
    return {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "AttestationAuthority",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"noteReference": "projects/p/notes/qa",
                     "publicKeys": [{"keyType": "PKIX", "pkixPublicKey": {"publicKeyPem": PEM}}]}}


def _gap(ns: str, name: str, patterns: list[dict], authorities: tuple[str, ...] = ("qa",)) -> dict:
    return {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "GenericAttestationPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"attestationAuthorityNames": list(authorities), "admissionAllowlistPatterns": patterns}}


def test_an_empty_pattern_stops_the_patterns_of_the_policies_listed_after_it(tmp_path: Path, monkeypatch) -> None:
    """kritis flattens the namespace's GenericAttestationPolicies' patterns (in the API's order, by name)
    and stops at an empty one: the patterns of every later policy are never consulted. Before, each
    policy's list was cut on its own, so `b`'s pattern still exempted."""
    policy = _kritis(tmp_path, monkeypatch, [
        _authority("ns"),
        _gap("ns", "b", [{"namePattern": "gcr.io/later/*"}]),  # listed first in the file, second by the API
        _gap("ns", "a", [{"namePattern": "gcr.io/first/*"}, {}]),  # a pattern without namePattern: ""
    ])
    assert _exempt(policy, "gcr.io/first/app:1", "ns")
    assert not _exempt(policy, "gcr.io/later/app:1", "ns")


def test_an_authority_defined_twice_is_refused_at_load(tmp_path: Path, monkeypatch) -> None:
    """The API holds one AttestationAuthority per namespace and name; a file holding two (the second one,
    perhaps, with another key) is refused, never resolved to whichever came last."""
    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    second = _authority("ns")
    second["spec"]["publicKeys"][0]["pkixPublicKey"]["publicKeyPem"] = other
    with pytest.raises(ConfigError, match="ns/qa is defined twice"):
        _kritis(tmp_path, monkeypatch, [_authority("ns"), second, _gap("ns", "gap", [])])


def test_a_missing_authority_makes_the_policys_images_error_with_the_reason(tmp_path: Path, monkeypatch) -> None:
    """Issue #26 item 2: `qa` exists in prod and in a tenant's namespace, not in staging. The staging
    policy is refused (never judged with another namespace's key): its images are `error`, naming it."""
    from scanner.models import RunningImage, Status
    from scanner.policy.engine import evaluate

    policy = _kritis(tmp_path, monkeypatch, [_authority("prod"), _authority("tenant"), _gap("staging", "gap", [])])
    (rule,) = policy.rules
    assert rule.verifiers == () and rule.refused == ("AttestationAuthority staging/qa not found",)
    image = RunningImage(parse_reference(f"gcr.io/team/app@{D1}"), ())
    verdict = evaluate(image, rule, [], [], policy, datetime.now(UTC), "staging", per_verifier=[])
    assert verdict.status is Status.ERROR
    assert any("AttestationAuthority staging/qa not found" in r for r in verdict.reasons)


@pytest.mark.parametrize("spec", [
    {"admissionAllowlistPatterns": [], "admissionWhitelistPatterns": [{"namePattern": "gcr.io/team/*"}]},
    {"admissionAllowlistPatterns": [{"namePattern": "gcr.io/team/*"}],
     "admissionWhitelistPatterns": [{"namePattern": "gcr.io/team/app:1"}]},
])
def test_an_allowlist_kritis_versions_would_read_differently_exempts_nothing(
        spec: dict, tmp_path: Path, monkeypatch) -> None:
    """kritis' Go type reads one spelling (``admissionWhitelistPatterns``, later ``…Allowlist…``), which
    one depends on its version. Before, the first non-empty spelling was taken: an empty
    ``admissionAllowlistPatterns`` beside a wide ``admissionWhitelistPatterns`` exempted what a kritis
    reading the empty one admits nothing of."""
    gap = _gap("ns", "gap", [])
    gap["spec"] = {"attestationAuthorityNames": ["qa"], **spec}
    policy = _kritis(tmp_path, monkeypatch, [_authority("ns"), gap])
    assert not _exempt(policy, "gcr.io/team/app:1", "ns")
    assert any("exempts nothing" in w or "neither exempts" in w for w in policy.warnings), policy.warnings


def test_an_image_allowlist_under_two_differing_spellings_exempts_nothing(tmp_path: Path, monkeypatch) -> None:
    isp = {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "ImageSecurityPolicy",
           "metadata": {"name": "isp", "namespace": "ns"},
           "spec": {"attestationAuthorityName": "qa", "imageAllowList": [], "imageWhitelist": ["gcr.io/team/app:1"]}}
    policy = _kritis(tmp_path, monkeypatch, [_authority("ns"), isp])
    assert not _exempt(policy, "gcr.io/team/app:1", "ns")
    isp["spec"]["imageAllowList"] = ["gcr.io/team/app:1"]  # the same list twice: it is the list
    assert _exempt(_kritis(tmp_path, monkeypatch, [_authority("ns"), isp]), "gcr.io/team/app:1", "ns")


@pytest.mark.parametrize(("where", "value"), [
    (("gap", "spec"), "str"),
    (("gap", "spec", "attestationAuthorityNames"), 5),
    (("gap", "spec", "admissionAllowlistPatterns"), True),
    (("gap", "spec", "admissionAllowlistPatterns", 0), "gcr.io/team/*"),
    (("qa", "spec"), ["a"]),
    (("qa", "spec", "publicKeys"), 1.5),
    (("qa", "spec", "publicKeys", 0, "pkixPublicKey"), "PEM"),
])
def test_a_resource_kritis_could_not_decode_is_refused_never_a_crash(
        where: tuple, value: object, tmp_path: Path, monkeypatch) -> None:
    """Before: an AttributeError/TypeError out of the importer (exit 3, the whole scan lost to one tenant's
    resource). Now the policy (or the policy naming the authority) is refused: its images are `error`,
    the reason names the field; other namespaces' policies are untouched."""
    docs = {"qa": _authority("ns"), "gap": _gap("ns", "gap", [{"namePattern": "gcr.io/team/*"}]),
            "other-qa": _authority("other"), "other": _gap("other", "gap", [])}
    target: Any = docs[where[0]]
    for k in where[1:-1]:
        target = target[k]
    target[where[-1]] = value
    policy = _kritis(tmp_path, monkeypatch, list(docs.values()))
    rules = {r.name: r for r in policy.rules}
    assert rules["kritis:ns/gap"].verifiers == () and any("malformed" in r for r in rules["kritis:ns/gap"].refused)
    # A malformed policy's allowlist exempts nothing; a well-formed policy's allowlist still waives (kritis
    # applies it before it looks the authorities up).
    assert _exempt(policy, "gcr.io/team/app:1", "ns") is (where[0] == "qa")
    assert rules["kritis:other/gap"].refused == () and len(rules["kritis:other/gap"].verifiers) == 1


@pytest.mark.parametrize("metadata", ["x", {"name": ["a"]}, {"name": "gap", "namespace": 5},
                                      {"name": "gap", "namespace": "*"},  # a glob: every namespace
                                      {"name": "gap", "namespace": "prod*"}, {"name": "gap", "namespace": "a[b"},
                                      {"name": "", "namespace": "ns"}, {"name": "a b", "namespace": "ns"}])
def test_metadata_the_api_server_would_not_hold_is_a_config_error(metadata: object, tmp_path: Path,
                                                                 monkeypatch) -> None:
    gap = _gap("ns", "gap", [])
    gap["metadata"] = metadata
    with pytest.raises(ConfigError, match="metadata"):  # before: a crash (exit 3), or a rule for every namespace
        _kritis(tmp_path, monkeypatch, [_authority("ns"), gap])


@pytest.mark.parametrize("uri", ["awskms://attacker.example/alias/x", "azurekms://attacker.example/key",
                                 "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k", "hashivault://k"])
def test_a_kms_reference_in_public_key_data_is_no_key(uri: str, tmp_path: Path, monkeypatch) -> None:
    """kritis reads a key in publicKeyData (base64 of a PEM), never a KMS reference. Before, sigaudit
    fetched it: looser than kritis, and whoever may write an AttestationAuthority in a namespace pointed
    sigaudit's cloud credentials at an endpoint of their choosing."""
    import base64

    from scanner.verify import kms

    def never(ref: str) -> bytes:
        raise AssertionError(f"fetched {ref}")

    monkeypatch.setattr(kms, "fetch_public_key_pem", never)
    auth = _authority("ns")
    auth["spec"] = {"noteReference": "projects/p/notes/qa", "publicKeyData": base64.b64encode(uri.encode()).decode()}
    policy = _kritis(tmp_path, monkeypatch, [auth, _gap("ns", "gap", [])])
    (rule,) = policy.rules
    assert rule.verifiers == () and rule.refused == ("AttestationAuthority qa has no usable PKIX key",)
    assert any("names a KMS key" in w for w in policy.warnings), policy.warnings
