"""Keyless identities can require Fulcio certificate extensions (cosign's --certificate-github-workflow-*,
Kyverno's additionalExtensions), read from a real Fulcio certificate issued to a GitHub workflow."""

from __future__ import annotations

import base64
import json
import re

import pytest
from cryptography import x509
from sigstore.errors import VerificationError

from scanner.policy.schema import FULCIO_EXTENSIONS, Identity
from scanner.verify.identity import (
    EXTENSION_POLICIES,
    IdentityMatcher,
    IdentityPolicy,
    cert_extensions,
    match_identities,
)
from tests.vectors import VECTORS

BEACON = "sigstore-conformance/extremely-dangerous-public-oidc-beacon"
SUBJECT = f"https://github.com/{BEACON}/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"


@pytest.fixture(scope="module")
def cert() -> x509.Certificate:
    bundle = json.loads((VECTORS / "sigstore-conformance/cases/happy-path-v0.3/bundle.sigstore.json").read_text())
    raw = bundle["verificationMaterial"]["certificate"]["rawBytes"]
    return x509.load_der_x509_certificate(base64.b64decode(raw))


def matcher(**ext: dict[str, str]) -> IdentityMatcher:
    return IdentityMatcher.from_spec(Identity.model_validate({"issuer": ISSUER, "subject": SUBJECT, **ext}))


def test_extensions_are_read_as_cosign_reads_them(cert: x509.Certificate) -> None:
    ext = cert_extensions(cert)
    assert ext["githubWorkflowRepository"] == BEACON and ext["githubWorkflowTrigger"] == "workflow_dispatch"
    assert ext["githubWorkflowRef"] == "refs/heads/main" and ext["oidcIssuer"] == ISSUER


@pytest.mark.parametrize(
    ("ext", "ok"),
    [
        ({}, True),
        ({"extensions": {"githubWorkflowRepository": BEACON}}, True),
        ({"extensions": {"githubWorkflowRepository": "sigstore-conformance/other"}}, False),
        ({"extensions": {"1.3.6.1.4.1.57264.1.5": BEACON, "githubWorkflowTrigger": "push"}}, False),
        ({"extensionsRegExp": {"githubWorkflowRef": "refs/heads/.*"}}, True),
        ({"extensionsRegExp": {"githubWorkflowRef": "refs/heads"}}, False),  # whole value only
        ({"extensionsRegExp": {"githubWorkflowSha": "c7b3dfb3"}}, False),
        ({"extensionsRegExp": {"githubWorkflowSha": "c7b3dfb3.*"}}, True),
    ],
)
def test_required_extensions_must_all_match(cert: x509.Certificate, ext: dict, ok: bool) -> None:
    m = matcher(**ext)
    assert match_identities(cert, [m])[0] is ok
    # The same decision inside sigstore-python's verification (bundles): IdentityPolicy.
    if ok:
        IdentityPolicy([m]).verify(cert)
    else:
        with pytest.raises(VerificationError, match="githubWorkflow"):
            IdentityPolicy([m]).verify(cert)


def test_an_absent_extension_never_matches_a_required_value(cert: x509.Certificate) -> None:
    # A certificate without GitHub extensions (an e-mail identity) fails a repository requirement.
    m = matcher(extensions={"githubWorkflowRepository": BEACON})
    assert m.matches([SUBJECT], ISSUER, {}) is False
    assert m.matches([SUBJECT], ISSUER, None) is False


@pytest.mark.parametrize(
    ("ext", "message"),
    [
        ({"extensions": {"1.3.6.1.4.1.57264.1.23": "push"}}, "unknown certificate extension"),
        ({"extensions": {"sourceRepo": "x"}}, "unknown certificate extension"),
        ({"extensions": {"githubWorkflowRef": "a"}, "extensionsRegExp": {"1.3.6.1.4.1.57264.1.6": "b"}},
         "named twice"),
        ({"extensionsRegExp": {"githubWorkflowRef": "("}}, "bad regular expression"),
    ],
)
def test_bad_extension_requirements_are_refused_at_load(ext: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Identity.model_validate({"issuer": ISSUER, "subject": SUBJECT, **ext})


# -- every Fulcio extension (1.1-1.6, 1.8-1.22): a real public-good certificate carrying all of them --

GH_CASE = next(c for c in json.loads((VECTORS / "sigstore-python/cases.json").read_text())["cases"]
               if c["id"] == "github-actions-cert-extensions")
# "1.3.6.1.4.1.57264.1.12 SourceRepositoryURI" -> (OID, value), from the upstream test's expectations.
GH_EXPECTED = {label.split()[0]: value for label, value in GH_CASE["policy"]["expected"].items()}
GH_SUBJECT = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"


@pytest.fixture(scope="module")
def gh_cert() -> x509.Certificate:
    from sigstore.models import Bundle

    bundle = Bundle.from_json((VECTORS / "sigstore-python" / GH_CASE["bundle"]).read_bytes())
    return bundle.signing_certificate


def gh_matcher(**ext: dict[str, str]) -> IdentityMatcher:
    return IdentityMatcher.from_spec(Identity.model_validate({"issuer": ISSUER, "subject": GH_SUBJECT, **ext}))


def test_every_extension_name_has_the_reference_librarys_policy_class() -> None:
    assert set(EXTENSION_POLICIES) == set(FULCIO_EXTENSIONS)
    for name, oid in FULCIO_EXTENSIONS.items():
        assert EXTENSION_POLICIES[name].oid.dotted_string == oid, name
    assert sorted(FULCIO_EXTENSIONS.values()) == sorted(GH_EXPECTED)  # 1.1-1.6 and 1.8-1.22, all of them


@pytest.mark.parametrize("name", list(FULCIO_EXTENSIONS))
def test_each_extension_matches_exact_and_regexp_and_a_wrong_value_does_not(
        gh_cert: x509.Certificate, name: str) -> None:
    want = GH_EXPECTED[FULCIO_EXTENSIONS[name]]
    assert cert_extensions(gh_cert)[name] == want
    for key in (name, FULCIO_EXTENSIONS[name]):  # by name or by OID
        assert match_identities(gh_cert, [gh_matcher(extensions={key: want})])[0]
        IdentityPolicy([gh_matcher(extensions={key: want})]).verify(gh_cert)
        assert match_identities(gh_cert, [gh_matcher(extensionsRegExp={key: re.escape(want[:3]) + ".*"})])[0]
        for bad in ({"extensions": {key: want + "x"}}, {"extensions": {key: want.upper() + "Z"}},
                    {"extensionsRegExp": {key: re.escape(want[:-1])}}):  # a prefix is not the whole value
            ok, why = match_identities(gh_cert, [gh_matcher(**bad)])
            assert not ok and name in why, why
            with pytest.raises(VerificationError):
                IdentityPolicy([gh_matcher(**bad)]).verify(gh_cert)


def _cert(extensions: dict[str, bytes]) -> x509.Certificate:
    """A certificate with a URI SAN and the given raw extension values (OID -> bytes)."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.now(UTC)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(hours=1))
         .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SUBJECT)]), critical=False))
    for oid, raw in extensions.items():
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), raw), critical=False)
    return b.sign(key, hashes.SHA256())


def _utf8(value: str) -> bytes:
    return bytes([0x0C, len(value)]) + value.encode()


ISSUER_ONLY = {"1.3.6.1.4.1.57264.1.1": ISSUER.encode(), "1.3.6.1.4.1.57264.1.8": _utf8(ISSUER)}


@pytest.mark.parametrize("name", [n for n in FULCIO_EXTENSIONS if n not in ("oidcIssuer", "oidcIssuerV2")])
def test_a_certificate_lacking_a_required_extension_never_matches(name: str) -> None:
    """No pattern accepts an absent extension: not ``.*``, not an empty exact value."""
    cert = _cert(ISSUER_ONLY)
    assert match_identities(cert, [matcher()])[0]
    for ext in ({"extensionsRegExp": {name: ".*"}}, {"extensions": {name: ""}}):
        ok, why = match_identities(cert, [matcher(**ext)])
        assert not ok and "(absent)" in why, why


@pytest.mark.parametrize(
    ("oid", "raw"),
    [
        ("1.3.6.1.4.1.57264.1.12", b"https://github.com/acme/app"),  # raw where a DER UTF8String belongs
        ("1.3.6.1.4.1.57264.1.12", _utf8("https://github.com/acme/app") + b"trailing"),
        ("1.3.6.1.4.1.57264.1.12", bytes([0x13, 3]) + b"abc"),  # PrintableString, not UTF8String
        ("1.3.6.1.4.1.57264.1.5", b"\xff\xfeacme"),  # not UTF-8
    ],
)
def test_a_malformed_extension_is_absent(oid: str, raw: bytes) -> None:
    cert = _cert({**ISSUER_ONLY, oid: raw})
    name = next(n for n, o in FULCIO_EXTENSIONS.items() if o == oid)
    assert name not in cert_extensions(cert)
    assert not match_identities(cert, [matcher(extensionsRegExp={name: ".*"})])[0]


def test_a_synthetic_certificate_with_the_extension_matches() -> None:
    """The same builder, well-formed values: the tests above fail for the right reason."""
    cert = _cert({**ISSUER_ONLY, "1.3.6.1.4.1.57264.1.12": _utf8("https://github.com/acme/app"),
                  "1.3.6.1.4.1.57264.1.5": b"acme/app"})
    assert match_identities(cert, [matcher(extensions={"sourceRepositoryURI": "https://github.com/acme/app",
                                                       "githubWorkflowRepository": "acme/app"})])[0]


# -- the bundle path (v0.1 and v0.3 certificate bundles, sigstore-python's own vectors) ---------------

_SPY = VECTORS / "sigstore-python"
_SPY_CASES = {c["id"]: c for c in json.loads((_SPY / "cases.json").read_text())["cases"]}


@pytest.mark.parametrize("case_id", ["bundle-v0.1-identity-match", "bundle-v0.3-identity",
                                     "github-actions-cert-extensions"])
def test_bundles_of_every_version_enforce_required_extensions(case_id: str) -> None:
    from scanner.models import Outcome
    from scanner.verify.sigstore_bundle import verify_bundle
    from scanner.verify.trustroot import load_trusted_root_file

    case = _SPY_CASES[case_id]
    trust = load_trusted_root_file(_SPY / case["trusted_root"])
    bundle = (_SPY / case["bundle"]).read_bytes()
    artifact = (_SPY / case["artifact"]).read_bytes() if "artifact" in case else None

    def verify(**ext: dict[str, str]) -> Outcome:
        m = IdentityMatcher.from_spec(Identity.model_validate({"issuerRegExp": ".*", "subjectRegExp": ".*", **ext}))
        res = verify_bundle(bundle, case["artifact_sha256"], trust=trust, identities=[m], artifact=artifact)
        assert res.outcome is Outcome.PASSED or "identity" in res.reason or "matches none" in res.reason, res.reason
        return res.outcome

    has_repo = case_id == "github-actions-cert-extensions"
    assert verify(extensionsRegExp={"oidcIssuerV2": "https://.*"}) is Outcome.PASSED
    assert verify(extensionsRegExp={"sourceRepositoryURI": ".*"}) is (Outcome.PASSED if has_repo else Outcome.FAILED)
    assert verify(extensions={"sourceRepositoryURI": "https://github.com/trailofbits/rfc8785.py"}) is (
        Outcome.PASSED if has_repo else Outcome.FAILED)
    assert verify(extensions={"sourceRepositoryURI": "https://github.com/trailofbits/rfc8785.py.evil"}) is (
        Outcome.FAILED)
