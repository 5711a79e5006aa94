"""Keyless identities can require Fulcio certificate extensions (cosign's --certificate-github-workflow-*,
Kyverno's additionalExtensions), read from a real Fulcio certificate issued to a GitHub workflow."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509
from sigstore.errors import VerificationError

from scanner.policy.schema import Identity
from scanner.verify.identity import IdentityMatcher, IdentityPolicy, cert_extensions, match_identities
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
        ({"extensions": {"buildTrigger": "push"}}, "unknown certificate extension"),
        ({"extensions": {"githubWorkflowRef": "a"}, "extensionsRegExp": {"1.3.6.1.4.1.57264.1.6": "b"}},
         "named twice"),
        ({"extensionsRegExp": {"githubWorkflowRef": "("}}, "bad regular expression"),
    ],
)
def test_bad_extension_requirements_are_refused_at_load(ext: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Identity.model_validate({"issuer": ISSUER, "subject": SUBJECT, **ext})
