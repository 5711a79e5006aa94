"""KMS key references as cosign spells them, and the provider responses turned into PEM keys
(pure parts; the AWS path runs against moto in tests/integration/test_kms_aws.py)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scanner.errors import ConfigError, ParseError
from scanner.verify.kms import (
    AwsKeyRef,
    AzureKeyRef,
    GcpKeyRef,
    KmsKeyUnavailable,
    VaultKeyRef,
    fetch_public_key_pem,
    jwk_to_pem,
    key_ids_for,
    parse_kms_ref,
    vault_transit_public_key,
)

UUID = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:eu-west-1:111122223333:key/{UUID}"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (f"awskms:///{UUID}", AwsKeyRef(None, UUID, None)),
        (f"awskms:///{ARN}", AwsKeyRef(None, ARN, "eu-west-1")),
        ("awskms://localhost:4566/alias/signer", AwsKeyRef("localhost:4566", "alias/signer", None)),
        ("awskms:///arn:aws:kms:us-east-1:111122223333:alias/signer",
         AwsKeyRef(None, "arn:aws:kms:us-east-1:111122223333:alias/signer", "us-east-1")),
        ("gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/3",
         GcpKeyRef("projects/p/locations/global/keyRings/r/cryptoKeys/k", "3")),
        ("gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k",
         GcpKeyRef("projects/p/locations/global/keyRings/r/cryptoKeys/k", None)),
        ("azurekms://myvault.vault.azure.net/signer", AzureKeyRef("https://myvault.vault.azure.net", "signer", None)),
        ("azurekms://myvault.vault.azure.net/signer/0123abcd",
         AzureKeyRef("https://myvault.vault.azure.net", "signer", "0123abcd")),
        ("hashivault://cosign", VaultKeyRef("cosign")),
    ],
)
def test_references(ref: str, expected: object) -> None:
    assert parse_kms_ref(ref) == expected


@pytest.mark.parametrize("ref", ["awskms:///not-a-key", "gcpkms://projects/p/keyRings/r", "azurekms://vault",
                                 "hashivault://a/b", "vault://x"])
def test_malformed_references_are_config_errors(ref: str) -> None:
    with pytest.raises(ConfigError):
        parse_kms_ref(ref)


def test_cloud_kms_key_ids_include_binauthz_resource_name() -> None:
    ref = "gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
    assert "//cloudkms.googleapis.com/v1/projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1" \
        in key_ids_for(ref)


def _b64u(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).decode().rstrip("=")


def test_azure_jwk_rsa_and_ec_to_pem() -> None:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    nums = r.public_numbers()
    got = serialization.load_pem_public_key(jwk_to_pem({"kty": "RSA-HSM", "n": _b64u(nums.n), "e": _b64u(nums.e)}))
    assert got.public_numbers() == nums  # type: ignore[union-attr]
    e = ec.generate_private_key(ec.SECP256R1()).public_key()
    en = e.public_numbers()
    # The SDK hands the members as bytes.
    jwk = {"kty": "EC", "crv": "P-256", "x": en.x.to_bytes(32, "big"), "y": en.y.to_bytes(32, "big")}
    assert serialization.load_pem_public_key(jwk_to_pem(jwk)).public_numbers() == en  # type: ignore[union-attr]
    with pytest.raises(ParseError):
        jwk_to_pem({"kty": "EC", "crv": "P-256K", "x": "AA", "y": "AA"})
    with pytest.raises(ParseError):
        jwk_to_pem({"kty": "oct", "k": "AA"})


# The shape of Vault/OpenBao `GET /v1/transit/keys/<name>` for an ecdsa-p256 key with two versions
# (field names from Vault's transit API documentation; the key material is generated here).
def _vault_body(versions: dict[str, str], latest: int | None) -> bytes:
    data = {"type": "ecdsa-p256", "name": "cosign", "deletion_allowed": False, "exportable": False,
            "keys": {v: {"creation_time": "2026-01-01T00:00:00Z", "name": "P-256", "public_key": p}
                     for v, p in versions.items()}}
    if latest is not None:
        data["latest_version"] = latest
    return json.dumps({"request_id": "x", "data": data}).encode()


def _pem() -> str:
    k = ec.generate_private_key(ec.SECP256R1()).public_key()
    return k.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_vault_transit_takes_the_latest_version() -> None:
    one, two = _pem(), _pem()
    assert vault_transit_public_key(_vault_body({"1": one, "2": two}, 2)) == two.encode()
    assert vault_transit_public_key(_vault_body({"1": one, "2": two}, None)) == two.encode()
    # A symmetric key has no public_key: refused with the key type named.
    sym = json.dumps({"data": {"type": "aes256-gcm96", "keys": {"1": 1700000000}, "latest_version": 1}}).encode()
    with pytest.raises(ParseError, match="aes256-gcm96"):
        vault_transit_public_key(sym)


def test_vault_without_address_names_the_reference(monkeypatch) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    with pytest.raises(KmsKeyUnavailable, match=r"hashivault://cosign.*VAULT_ADDR"):
        fetch_public_key_pem("hashivault://cosign")


def test_vault_down_names_the_reference(monkeypatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:9")
    monkeypatch.setenv("VAULT_TOKEN", "t")
    with pytest.raises(KmsKeyUnavailable, match="hashivault://cosign"):
        fetch_public_key_pem("hashivault://cosign")


@pytest.mark.parametrize(("ref", "host"), [
    ("awskms:///alias/a", None),
    ("awskms://kms.local:4566/alias/a", "kms.local:4566"),
    ("azurekms://team.vault.azure.net/k", None),
    ("azurekms://Team.Vault.Azure.Net/k/v1", None),
    ("azurekms://hsm.managedhsm.azure.net/k", None),
    ("azurekms://evil.example/k", "evil.example"),
    ("azurekms://team.vault.azure.net.evil.example/k", "team.vault.azure.net.evil.example"),
    ("azurekms://team.vault.azure.net@evil.example/k", "team.vault.azure.net@evil.example"),
    ("azurekms://team.vault.azure.net?x=evil.example/k", "team.vault.azure.net?x=evil.example"),
    ("gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k", None),
    ("hashivault://evil.example:8200", None),
])
def test_custom_endpoint_names_the_host_a_reference_chooses(ref: str, host: str | None) -> None:
    from scanner.verify.kms import custom_endpoint

    assert custom_endpoint(ref) == host
