"""scanner.verify.kms against an attacker: what a key that could not be fetched says about itself, and
what every provider's answer must show before its key is used (purpose, algorithm, the key asked for,
Cloud KMS' ``pem_crc32c``) — the same gate for AWS, Cloud KMS, Azure and Vault.

The provider SDKs are replaced by hand-made fakes (tiny modules put in ``sys.modules``) that answer the
way the SDKs' objects do (proto-plus enums for Cloud KMS, ``str`` enums for Azure, dicts for boto3):
no GCP or Azure service can be reached here, and the SDKs are optional extras. AWS also runs against
moto in tests/integration/test_attestation_kms_e2e.py."""

from __future__ import annotations

import enum
import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scanner.errors import ParseError
from scanner.verify.kms import KmsKeyUnavailable, crc32c, fetch_public_key_pem, vault_transit_public_key


def test_vault_credentials_in_vault_addr_are_never_repeated(monkeypatch) -> None:
    """The message becomes the reason of every image the key judges (JSON, reports, the database)."""
    monkeypatch.setenv("VAULT_ADDR", "https://admin:hunter2@127.0.0.1:9")
    monkeypatch.setenv("VAULT_TOKEN", "s.token")
    with pytest.raises(KmsKeyUnavailable, match="VAULT_ADDR carries credentials") as refused:
        fetch_public_key_pem("hashivault://attestor")
    assert "hunter2" not in str(refused.value) and "admin" not in str(refused.value)


def _pem(key: Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _der(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


P256 = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())
RSA2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_crc32c_is_castagnoli() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 B.4's check value
    assert crc32c(b"") == 0


# ----------------------------------------------------------------------------------------------
# Cloud KMS: a fake google.cloud.kms


class Purpose(enum.IntEnum):
    CRYPTO_KEY_PURPOSE_UNSPECIFIED = 0
    ENCRYPT_DECRYPT = 1
    ASYMMETRIC_SIGN = 5
    ASYMMETRIC_DECRYPT = 6


class Algorithm(enum.IntEnum):
    EC_SIGN_P256_SHA256 = 12
    EC_SIGN_P384_SHA384 = 13
    RSA_SIGN_PKCS1_2048_SHA256 = 5
    RSA_DECRYPT_OAEP_2048_SHA256 = 8
    EC_SIGN_SECP256K1_SHA256 = 31


class State(enum.IntEnum):
    ENABLED = 1
    DISABLED = 2


KEY = "projects/p/locations/global/keyRings/r/cryptoKeys/k"


@dataclass
class GcpFake:
    purpose: Any = Purpose.ASYMMETRIC_SIGN
    versions: list[tuple[str, Any]] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)  # version name -> PublicKey-like answer
    asked: list[str] = field(default_factory=list)

    def answer(self, version: str, pem: str, algorithm: Any, *, name: str | None = None,
               crc: Any = "right") -> None:
        self.answers[version] = types.SimpleNamespace(
            name=version if name is None else name, pem=pem, algorithm=algorithm,
            pem_crc32c=crc32c(pem.encode()) if crc == "right" else crc)

    def install(self, monkeypatch) -> None:
        fake = self

        class Client:
            def get_crypto_key(self, request: dict, timeout: float) -> Any:
                return types.SimpleNamespace(name=request["name"], purpose=fake.purpose)

            def list_crypto_key_versions(self, request: dict, timeout: float) -> list[Any]:
                return [types.SimpleNamespace(name=n, state=s) for n, s in fake.versions]

            def get_public_key(self, request: dict, timeout: float) -> Any:
                fake.asked.append(request["name"])
                return fake.answers[request["name"]]

        mod = types.ModuleType("google.cloud.kms")
        mod.KeyManagementServiceClient = Client  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "google.cloud.kms", mod)


def test_cloud_kms_signing_key_is_used(monkeypatch) -> None:
    gcp = GcpFake()
    gcp.answer(f"{KEY}/cryptoKeyVersions/3", _pem(P256), Algorithm.EC_SIGN_P256_SHA256)
    gcp.install(monkeypatch)
    assert fetch_public_key_pem(f"gcpkms://{KEY}/cryptoKeyVersions/3").decode() == _pem(P256)


@pytest.mark.parametrize(("purpose", "algorithm", "pem", "why"), [
    (Purpose.ASYMMETRIC_DECRYPT, Algorithm.RSA_DECRYPT_OAEP_2048_SHA256, _pem(RSA2048), "not ASYMMETRIC_SIGN"),
    (Purpose.ENCRYPT_DECRYPT, Algorithm.EC_SIGN_P256_SHA256, _pem(P256), "not ASYMMETRIC_SIGN"),
    (Purpose.ASYMMETRIC_SIGN, Algorithm.RSA_DECRYPT_OAEP_2048_SHA256, _pem(RSA2048), "not a signing key"),
    (Purpose.ASYMMETRIC_SIGN, Algorithm.EC_SIGN_SECP256K1_SHA256, _pem(P256), "not a signing key"),
    (Purpose.ASYMMETRIC_SIGN, Algorithm.EC_SIGN_P384_SHA384, _pem(P256), "declares EC secp384r1"),
    (Purpose.ASYMMETRIC_SIGN, Algorithm.RSA_SIGN_PKCS1_2048_SHA256, _pem(P256), "declares RSA 2048"),
    (Purpose.ASYMMETRIC_SIGN, None, _pem(P256), "algorithm not stated"),
    (None, Algorithm.EC_SIGN_P256_SHA256, _pem(P256), "purpose is not stated"),
])
def test_cloud_kms_key_that_is_not_the_declared_signing_key_is_refused(
        purpose: Any, algorithm: Any, pem: str, why: str, monkeypatch) -> None:
    """Before: the PEM was used whatever the key's purpose or algorithm."""
    gcp = GcpFake(purpose=purpose)
    gcp.answer(f"{KEY}/cryptoKeyVersions/1", pem, algorithm)
    gcp.install(monkeypatch)
    with pytest.raises(KmsKeyUnavailable, match=why):
        fetch_public_key_pem(f"gcpkms://{KEY}/cryptoKeyVersions/1")


@pytest.mark.parametrize(("crc", "why"), [(12345, "pem_crc32c does not match"), (None, "no pem_crc32c")])
def test_cloud_kms_answer_whose_checksum_does_not_hold_is_refused(crc: Any, why: str, monkeypatch) -> None:
    gcp = GcpFake()
    gcp.answer(f"{KEY}/cryptoKeyVersions/1", _pem(P256), Algorithm.EC_SIGN_P256_SHA256, crc=crc)
    gcp.install(monkeypatch)
    with pytest.raises(KmsKeyUnavailable, match=why):
        fetch_public_key_pem(f"gcpkms://{KEY}/cryptoKeyVersions/1")


def test_cloud_kms_answer_for_another_key_is_refused(monkeypatch) -> None:
    gcp = GcpFake()
    other = "projects/p/locations/global/keyRings/r/cryptoKeys/other/cryptoKeyVersions/1"
    gcp.answer(f"{KEY}/cryptoKeyVersions/1", _pem(P256), Algorithm.EC_SIGN_P256_SHA256, name=other)
    gcp.install(monkeypatch)
    with pytest.raises(KmsKeyUnavailable, match="answered for"):
        fetch_public_key_pem(f"gcpkms://{KEY}/cryptoKeyVersions/1")


def test_cloud_kms_without_version_takes_the_newest_enabled_version_of_this_key(monkeypatch) -> None:
    gcp = GcpFake(versions=[(f"{KEY}/cryptoKeyVersions/2", State.ENABLED),
                            (f"{KEY}/cryptoKeyVersions/10", State.ENABLED),
                            (f"{KEY}/cryptoKeyVersions/11", State.DISABLED),
                            (f"{KEY}x/cryptoKeyVersions/99", State.ENABLED)])  # another key's version
    gcp.answer(f"{KEY}/cryptoKeyVersions/10", _pem(P384), Algorithm.EC_SIGN_P384_SHA384)
    gcp.install(monkeypatch)
    assert fetch_public_key_pem(f"gcpkms://{KEY}").decode() == _pem(P384)
    assert gcp.asked == [f"{KEY}/cryptoKeyVersions/10"]


# ----------------------------------------------------------------------------------------------
# AWS: a fake boto3 (the live path runs against moto in the integration tests)


def _install_boto3(monkeypatch, answer: dict[str, Any]) -> None:
    class Client:
        def get_public_key(self, KeyId: str) -> dict[str, Any]:
            return answer

    boto3 = types.ModuleType("boto3")
    boto3.client = lambda service, **kwargs: Client()  # type: ignore[attr-defined]
    config = types.ModuleType("botocore.config")
    config.Config = lambda **kwargs: kwargs  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "boto3", boto3)
    monkeypatch.setitem(sys.modules, "botocore.config", config)


UUID = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:eu-west-1:111122223333:key/{UUID}"


@pytest.mark.parametrize("ref", [f"awskms:///{ARN}", f"awskms:///{UUID}", "awskms:///alias/signer"])
def test_aws_signing_key_is_used(ref: str, monkeypatch) -> None:
    _install_boto3(monkeypatch, {"KeyId": ARN, "KeyUsage": "SIGN_VERIFY", "KeySpec": "ECC_NIST_P256",
                                 "PublicKey": _der(P256)})
    assert fetch_public_key_pem(ref).decode() == _pem(P256)


@pytest.mark.parametrize(("answer", "why"), [
    ({"KeyId": ARN, "KeySpec": "ECC_NIST_P256", "PublicKey": _der(P256)}, "key usage is not stated"),
    ({"KeyId": ARN, "KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "RSA_2048", "PublicKey": _der(RSA2048)},
     "not SIGN_VERIFY"),
    ({"KeyId": ARN.replace("1234abcd", "9999abcd"), "KeyUsage": "SIGN_VERIFY", "KeySpec": "ECC_NIST_P256",
      "PublicKey": _der(P256)}, "answered for"),
    ({"KeyId": ARN, "KeyUsage": "SIGN_VERIFY", "KeySpec": "RSA_2048", "PublicKey": _der(P256)},
     "declares RSA 2048"),
    ({"KeyId": ARN, "KeyUsage": "SIGN_VERIFY", "KeySpec": "ECC_SECG_P256K1", "PublicKey": _der(P256)},
     "not a signing key"),
    ({"KeyId": ARN, "KeyUsage": "SIGN_VERIFY", "PublicKey": _der(P256)}, "key spec not stated"),
])
def test_aws_key_that_is_not_the_declared_signing_key_is_refused(answer: dict, why: str, monkeypatch) -> None:
    """Before: a missing KeyUsage passed, and neither the key id nor the spec was compared."""
    _install_boto3(monkeypatch, answer)
    with pytest.raises(KmsKeyUnavailable, match=why):
        fetch_public_key_pem(f"awskms:///{ARN}")


# ----------------------------------------------------------------------------------------------
# Azure Key Vault: a fake azure.keyvault.keys / azure.identity


class KeyType(str, enum.Enum):  # noqa: UP042 - as the SDK declares them (str, Enum)
    ec = "EC"
    ec_hsm = "EC-HSM"
    rsa = "RSA"


class KeyOperation(str, enum.Enum):  # noqa: UP042
    encrypt = "encrypt"
    decrypt = "decrypt"
    sign = "sign"
    verify = "verify"


def _install_azure(monkeypatch, key: Any, kid: str, ops: list[KeyOperation]) -> None:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        n = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        jwk = types.SimpleNamespace(kty=KeyType.ec_hsm, crv={256: "P-256", 384: "P-384"}[key.curve.key_size],
                                    x=n.x.to_bytes(size, "big"), y=n.y.to_bytes(size, "big"), n=None, e=None)
    else:
        n = key.public_key().public_numbers()
        jwk = types.SimpleNamespace(kty=KeyType.rsa, crv=None, n=n.n.to_bytes(256, "big"), e=n.e.to_bytes(3, "big"),
                                    x=None, y=None)
    jwk.kid, jwk.key_ops = kid, ops

    class KeyClient:
        def __init__(self, vault_url: str, credential: Any, **kwargs: Any) -> None:  # transport=…
            pass

        def get_key(self, name: str, version: str | None = None) -> Any:
            return types.SimpleNamespace(key=jwk, id=kid)

    keys = types.ModuleType("azure.keyvault.keys")
    keys.KeyClient = KeyClient  # type: ignore[attr-defined]
    identity = types.ModuleType("azure.identity")
    identity.DefaultAzureCredential = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.keyvault.keys", keys)
    monkeypatch.setitem(sys.modules, "azure.identity", identity)


VAULT = "https://myvault.vault.azure.net"


@pytest.mark.parametrize(("ref", "key"), [("azurekms://myvault.vault.azure.net/signer", P256),
                                          ("azurekms://myvault.vault.azure.net/signer/0123abcd", RSA2048)])
def test_azure_signing_key_is_used(ref: str, key: Any, monkeypatch) -> None:
    _install_azure(monkeypatch, key, f"{VAULT}/keys/signer/0123abcd", [KeyOperation.sign, KeyOperation.verify])
    assert fetch_public_key_pem(ref).decode() == _pem(key)


@pytest.mark.parametrize(("ref", "kid", "ops", "why"), [
    ("azurekms://myvault.vault.azure.net/signer", f"{VAULT}/keys/signer/1",
     [KeyOperation.encrypt, KeyOperation.decrypt], "do not allow verify"),
    ("azurekms://myvault.vault.azure.net/signer", f"{VAULT}/keys/signer/1", [], "do not allow verify"),
    ("azurekms://myvault.vault.azure.net/signer", f"{VAULT}/keys/other/1", [KeyOperation.verify], "answered for"),
    ("azurekms://myvault.vault.azure.net/signer", "https://evil.vault.azure.net/keys/signer/1",
     [KeyOperation.verify], "answered for"),
    ("azurekms://myvault.vault.azure.net/signer", f"{VAULT}:8443/keys/signer/1", [KeyOperation.verify],
     "answered for"),  # another port of the vault's host: the signing client would send the token there
    ("azurekms://myvault.vault.azure.net/signer/2", f"{VAULT}/keys/signer/1", [KeyOperation.verify],
     "answered for"),
])
def test_azure_key_that_is_not_the_signing_key_asked_for_is_refused(
        ref: str, kid: str, ops: list, why: str, monkeypatch) -> None:
    """Before: only the JWK was read; its operations and identity were never looked at."""
    _install_azure(monkeypatch, P256, kid, ops)
    with pytest.raises(KmsKeyUnavailable, match=why):
        fetch_public_key_pem(ref)


# ----------------------------------------------------------------------------------------------
# Vault/OpenBao transit (response parsing; no Vault server can be run here)


def _vault(kind: str, pem: str, *, name: str = "cosign", **extra: Any) -> bytes:
    data = {"type": kind, "name": name, "latest_version": 1, **extra,
            "keys": {"1": {"creation_time": "2026-01-01T00:00:00Z", "public_key": pem}}}
    return json.dumps({"data": data}).encode()


def test_vault_signing_key_is_used() -> None:
    assert vault_transit_public_key(_vault("ecdsa-p256", _pem(P256)), name="cosign").decode() == _pem(P256)
    assert vault_transit_public_key(_vault("rsa-2048", _pem(RSA2048), supports_signing=True),
                                    name="cosign").decode() == _pem(RSA2048)


@pytest.mark.parametrize(("body", "why"), [
    (_vault("ecdsa-p384", _pem(P256)), "declares EC secp384r1"),
    (_vault("rsa-2048", _pem(RSA2048), name="other"), "answered for 'other'"),
    (_vault("rsa-2048", _pem(RSA2048), supports_signing=False), "does not support signing"),
    (_vault("rsa-4096-decrypt", _pem(RSA2048)), "not a signing key"),
    (_vault("ecdsa-p256", _pem(P256) + _pem(P384)), "no single PEM"),
])
def test_vault_key_that_is_not_the_signing_key_asked_for_is_refused(body: bytes, why: str) -> None:
    with pytest.raises((KmsKeyUnavailable, ParseError), match=why):
        vault_transit_public_key(body, ref="hashivault://cosign", name="cosign")


@pytest.mark.parametrize("addr", ["http://vault.example:8200", "http://10.0.0.5:8200", "ftp://vault.example"])
def test_the_vault_token_is_never_sent_in_clear_text_to_another_machine(addr: str, monkeypatch) -> None:
    """The Grafeas token already went over https only (or to 127.0.0.1); the Vault token went anywhere."""
    import httpx

    def no_request(*args: object, **kwargs: object) -> None:
        raise AssertionError("a request was made")

    monkeypatch.setattr(httpx.Client, "stream", no_request)
    monkeypatch.setenv("VAULT_ADDR", addr)
    monkeypatch.setenv("VAULT_TOKEN", "s.secret")
    with pytest.raises(KmsKeyUnavailable, match="https only") as refused:
        fetch_public_key_pem("hashivault://cosign")
    assert "s.secret" not in str(refused.value)


# ----------------------------------------------------------------------------------------------
# The checks on a KMS's signing answer (the evidence pack's signers; scanner/sources/kms.py makes the calls)


def _vault_sign(signature: object) -> bytes:
    return json.dumps({"data": {"signature": signature}}).encode()


@pytest.mark.parametrize(("body", "why"), [
    (_vault_sign("vault:v3:AAAA"), "key version 3, not 2"),
    (_vault_sign("vault:v02:AAAA"), "no vault:vN:"),
    (_vault_sign("vault:v2:AAAA\n"), "no vault:vN:"),
    (_vault_sign("AAAA"), "no vault:vN:"),
    (_vault_sign(None), "no vault:vN:"),
    (b"[]", "no vault:vN:"),
    (b"not json", "not JSON"),
    (b"{" + b" " * (2 * 1024 * 1024) + b"}", "too large"),
])
def test_a_vault_signature_must_be_of_the_version_whose_key_was_read(body: bytes, why: str) -> None:
    from scanner.verify.kms import vault_signature

    with pytest.raises(KmsKeyUnavailable, match=why):
        vault_signature(body, ref="hashivault://k", version=2)
    assert vault_signature(_vault_sign("vault:v2:AAAA"), ref="hashivault://k", version=2) == b"\0\0\0"


def test_an_azure_signature_must_come_from_the_key_version_read_and_be_an_r_s_pair_of_its_curve() -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from scanner.verify.kms import azure_signature

    pem, kid = _pem(P256).encode(), f"{VAULT}/keys/signer/0123abcd"
    raw = (5).to_bytes(32, "big") + (7).to_bytes(32, "big")
    assert decode_dss_signature(azure_signature("azurekms://v/signer", kid, "ES256", kid, "ES256", raw, pem)) == (5, 7)
    for answer_kid, alg, sig, why in [(kid + "0", "ES256", raw, "signed with"), (kid, "ES384", raw, "signed with"),
                                      (kid, "ES256", raw[:-1], "63-byte"), (kid, "ES256", b"", "no signature"),
                                      ("", "ES256", raw, "no key id")]:
        with pytest.raises(KmsKeyUnavailable, match=why):
            azure_signature("azurekms://v/signer", kid, "ES256", answer_kid, alg, sig, pem)


def test_a_cloud_kms_signature_must_name_the_version_and_hold_both_checksums() -> None:
    from scanner.verify.kms import gcp_signature

    name = f"{KEY}/cryptoKeyVersions/2"
    good = types.SimpleNamespace(name=name, signature=b"sig", signature_crc32c=crc32c(b"sig"),
                                 verified_digest_crc32c=True)
    assert gcp_signature("gcpkms://k", name, good) == b"sig"
    for change, why in [({"name": f"{KEY}/cryptoKeyVersions/1"}, "signed with"),
                        ({"verified_digest_crc32c": False}, "digest_crc32c"),
                        ({"verified_digest_crc32c": None}, "digest_crc32c"),
                        ({"signature_crc32c": crc32c(b"sig") ^ 1}, "signature_crc32c"),
                        ({"signature_crc32c": None}, "signature_crc32c"),
                        ({"signature": b""}, "no signature")]:
        with pytest.raises(KmsKeyUnavailable, match=why):
            gcp_signature("gcpkms://k", name, types.SimpleNamespace(**{**vars(good), **change}))
