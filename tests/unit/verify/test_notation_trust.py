"""kyverno-notation-aws TrustPolicy/TrustStore resources: a spec field sigaudit does not know is refused,
never dropped (the statements themselves are validated as notation validates trustpolicy.json)."""

from __future__ import annotations

import pytest

from scanner.verify.notation_trust import (
    TrustPolicyError,
    TrustStoreError,
    load_trust_policy_cr,
    load_trust_store_crs,
)

POLICY = ("apiVersion: notation.nirmata.io/v1alpha1\nkind: TrustPolicy\nmetadata: {name: tp}\nspec:\n"
          "  version: '1.0'\n  trustPolicies:\n  - name: acme\n    registryScopes: ['*']\n"
          "    signatureVerification: {level: strict}\n    trustStores: ['ca:acme']\n    trustedIdentities: ['*']\n")
STORE = ("apiVersion: notation.nirmata.io/v1alpha1\nkind: TrustStore\nmetadata: {name: acme}\nspec:\n"
         "  trustStoreName: acme\n  type: ca\n  caBundle: '-----BEGIN CERTIFICATE-----'\n")


def test_the_known_fields_load() -> None:
    assert load_trust_policy_cr(POLICY.encode()).statements[0].name == "acme"


def test_an_unknown_trust_policy_spec_field_is_refused() -> None:
    with pytest.raises(TrustPolicyError, match="unknown fields \\['requireTimestamp'\\]"):
        load_trust_policy_cr((POLICY + "  requireTimestamp: true\n").encode())


def test_an_unknown_trust_store_spec_field_is_refused() -> None:
    with pytest.raises(TrustStoreError, match="unknown fields \\['crlURL'\\]"):
        load_trust_store_crs((STORE + "  crlURL: http://example.invalid/crl\n").encode())
