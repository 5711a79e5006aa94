"""Public keys that live in a KMS, named the way cosign and Kyverno name them.

    awskms://[ENDPOINT]/KEY            KEY: key id, key ARN, alias/NAME or alias ARN
    gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/V]
    azurekms://VAULT-HOST/KEY[/VERSION]
    hashivault://KEY                   transit engine; VAULT_ADDR, VAULT_TOKEN (or a token file)

This module is pure (issue #18): reference parsing, the checks every provider's answer must pass, and
the key's shape; the I/O (the provider SDKs, Vault's HTTP API, the signing calls of the evidence
pack's KMS signers) is the edge's, ``scanner/sources/kms.py``, behind :class:`KmsPublicKeys` (taken as
a lazy default by :func:`fetch_public_key_pem`). The policy loader calls :func:`fetch_public_key_pem`
once per reference per scan (``PolicyLoader.load_key`` caches by reference) and verifiers only ever see
the parsed key. Credentials are whatever the pod already has (IRSA, workload identity,
``DefaultAzureCredential``, a Vault token) — sigaudit never asks for secrets of its own.

Every provider is held to the same checks before its key is used (:func:`signing_key`): the KMS must say
the key is for signing (AWS ``KeyUsage``, Cloud KMS ``purpose`` and ``algorithm``, Azure ``key_ops``,
Vault's key ``type``), name a signing algorithm sigaudit verifies whose key is the one returned (curve or
RSA size), and answer for the key that was asked for (AWS ``KeyId``, Cloud KMS ``name``, Azure ``kid``,
Vault ``name``); Cloud KMS' ``pem_crc32c`` must match the PEM. A fact the KMS does not state is a
refusal, never a pass.

Any failure raises :class:`KmsKeyUnavailable` naming the key reference. Verifiers that can be built
without the key (see :class:`UnavailableKeyVerifier`) turn it into an ``error`` verdict for the images
the key would have judged, so one KMS outage does not abort the whole scan.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import SplitResult, urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from scanner.errors import ConfigError, ParseError
from scanner.models import (
    Outcome,
    RunningImage,
    SignatureFailure,
    SignatureMaterial,
    SignatureResult,
)
from scanner.redact import redact_text
from scanner.verify.base import Verifier, Wants

KMS_SCHEMES = ("awskms://", "gcpkms://", "azurekms://", "hashivault://")
MAX_KMS_RESPONSE_BYTES = 1024 * 1024
KMS_TIMEOUT_SECONDS = 10.0  # per socket operation
KMS_TOTAL_TIMEOUT_SECONDS = 30.0  # wall clock for one KMS call (read by the edge, scanner/sources/kms.py)


class KmsKeyUnavailable(ConfigError):
    """The public key of a KMS reference could not be fetched (or is not a signing key)."""

    def __init__(self, ref: str, message: str) -> None:
        self.ref = ref
        self.message = message
        super().__init__(f"KMS key {ref}: {message}")


# ----------------------------------------------------------------------------------------------
# Reference parsing (pure)

_AWS_UUID = r"m?r?k?-?[A-Fa-f0-9]{8}-?[A-Fa-f0-9]{4}-?[A-Fa-f0-9]{4}-?[A-Fa-f0-9]{4}-?[A-Fa-f0-9]{12}"
_AWS_ARN = r"arn:(?:aws|aws-us-gov|aws-cn):kms:([a-z0-9-]+):\d{12}:"
# The four forms sigstore's AWS KMS client accepts (sigstore/sigstore pkg/signature/kms/aws).
_AWS_FORMS = (
    re.compile(r"^awskms://([^/]*)/(" + _AWS_UUID + r")$"),
    re.compile(r"^awskms://([^/]*)/(" + _AWS_ARN + r"key/" + _AWS_UUID + r")$"),
    re.compile(r"^awskms://([^/]*)/(alias/.+)$"),
    re.compile(r"^awskms://([^/]*)/(" + _AWS_ARN + r"alias/.+)$"),
)
_GCP = re.compile(
    r"^gcpkms://(projects/[^/]+/locations/[a-zA-Z0-9_.-]+/keyRings/[a-zA-Z0-9_-]+/cryptoKeys/[a-zA-Z0-9_-]+)"
    r"(?:/(?:cryptoKeyVersions|versions)/([a-zA-Z0-9_-]+))?$"
)
_AZURE = re.compile(r"^azurekms://([^/]+)/([^/]+)(?:/([^/]+))?$")
_VAULT = re.compile(r"^hashivault://([^/]+)$")


@dataclass(frozen=True, slots=True)
class AwsKeyRef:
    endpoint: str | None  # host[:port] given in the URI, or None (SDK default / AWS_ENDPOINT_URL_KMS)
    key_id: str
    region: str | None  # from an ARN


@dataclass(frozen=True, slots=True)
class GcpKeyRef:
    key_name: str
    version: str | None

    @property
    def version_name(self) -> str | None:
        return f"{self.key_name}/cryptoKeyVersions/{self.version}" if self.version else None


@dataclass(frozen=True, slots=True)
class AzureKeyRef:
    vault_url: str
    name: str
    version: str | None


@dataclass(frozen=True, slots=True)
class VaultKeyRef:
    name: str


KeyRef = AwsKeyRef | GcpKeyRef | AzureKeyRef | VaultKeyRef


def parse_kms_ref(ref: str) -> KeyRef:
    """A KMS URI -> a typed reference. Raises ConfigError for a malformed one."""
    ref = ref.strip()
    if ref.startswith("awskms://"):
        for form in _AWS_FORMS:
            m = form.match(ref)
            if m:
                region = m.group(3) if form.groups >= 3 else None
                return AwsKeyRef(m.group(1) or None, m.group(2), region)
        raise ConfigError(f"malformed AWS KMS reference {ref!r} (awskms://[ENDPOINT]/KEYID|ARN|alias/NAME)", field=ref)
    if ref.startswith("gcpkms://"):
        g = _GCP.match(ref)
        if g:
            return GcpKeyRef(g.group(1), g.group(2))
        raise ConfigError(
            f"malformed GCP KMS reference {ref!r} "
            "(gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/V])",
            field=ref,
        )
    if ref.startswith("azurekms://"):
        a = _AZURE.match(ref)
        if a:
            host = a.group(1)
            return AzureKeyRef(host if "://" in host else f"https://{host}", a.group(2), a.group(3))
        raise ConfigError(
            f"malformed Azure Key Vault reference {ref!r} (azurekms://VAULT-HOST/KEY[/VERSION])", field=ref
        )
    if ref.startswith("hashivault://"):
        v = _VAULT.match(ref)
        if v:
            return VaultKeyRef(v.group(1))
        raise ConfigError(f"malformed Vault reference {ref!r} (hashivault://KEYNAME)", field=ref)
    raise ConfigError(f"not a KMS reference: {ref!r}", field=ref)


# The DNS suffixes of Azure Key Vault and Managed HSM (public, China, US Government clouds).
_AZURE_VAULT_HOST = re.compile(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\."
    r"(?:vault\.azure\.net|vault\.azure\.cn|vault\.usgovcloudapi\.net|vault\.microsoftazure\.de"
    r"|managedhsm\.azure\.net|managedhsm\.azure\.cn|managedhsm\.usgovcloudapi\.net)$"
)


def custom_endpoint(ref: str) -> str | None:
    """The host a KMS reference itself names for the provider's API, when that is not the provider's
    own service; None when the endpoint is left to the operator's environment (SDK defaults,
    ``AWS_ENDPOINT_URL_KMS``, ``VAULT_ADDR``, ...). Whoever writes the reference chooses where the
    scanner's cloud credentials go: a reference from someone who does not own those credentials
    must not name one. Raises ConfigError for a malformed reference (parse_kms_ref).

    awskms://HOST/… names one (any explicit host); azurekms:// always names its vault, which counts as
    custom unless it is an Azure Key Vault / Managed HSM host on the standard port; gcpkms:// and
    hashivault:// have no endpoint in the reference (the parser accepts none)."""
    parsed = parse_kms_ref(ref)
    if isinstance(parsed, AwsKeyRef):
        return parsed.endpoint
    if isinstance(parsed, AzureKeyRef):
        host = parsed.vault_url.removeprefix("https://")  # the whole of it: no port, path, query or userinfo
        return None if _AZURE_VAULT_HOST.match(host.lower()) else host
    return None


def key_ids_for(ref: str) -> tuple[str, ...]:
    """Names a signer may have put in an attestation's ``publicKeyId`` for this KMS key (hints only):
    the URI itself and, for Cloud KMS, the resource name Binary Authorization uses."""
    ids = [ref]
    try:
        parsed = parse_kms_ref(ref)
    except ConfigError:
        return tuple(ids)
    if isinstance(parsed, GcpKeyRef) and parsed.version_name:
        ids += [f"//cloudkms.googleapis.com/v1/{parsed.version_name}", parsed.version_name]
    if isinstance(parsed, AwsKeyRef):
        ids.append(parsed.key_id)
    return tuple(ids)


# ----------------------------------------------------------------------------------------------
# Response parsing (pure)


def der_to_pem(der: bytes) -> bytes:
    key = serialization.load_der_public_key(der)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64url_int(value: Any) -> int:
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, str):
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    else:
        raise ParseError(f"JWK member of type {type(value).__name__}")
    return int.from_bytes(raw, "big")


_JWK_CURVES: Mapping[str, Callable[[], ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}


def jwk_to_pem(jwk: Mapping[str, Any]) -> bytes:
    """An Azure Key Vault JSON Web Key (RFC 7517/7518 members; the SDK hands n/e/x/y as bytes,
    the REST API as base64url) -> a PEM SubjectPublicKeyInfo."""
    kty = str(jwk.get("kty") or "")
    if kty in ("RSA", "RSA-HSM"):
        pub: Any = rsa.RSAPublicNumbers(_b64url_int(jwk.get("e")), _b64url_int(jwk.get("n"))).public_key()
    elif kty in ("EC", "EC-HSM"):
        crv = str(jwk.get("crv") or "")
        if crv not in _JWK_CURVES:
            raise ParseError(f"unsupported JWK curve {crv!r}")
        pub = ec.EllipticCurvePublicNumbers(
            _b64url_int(jwk.get("x")), _b64url_int(jwk.get("y")), _JWK_CURVES[crv]()
        ).public_key()
    else:
        raise ParseError(f"unsupported JWK key type {kty!r}")
    pem: bytes = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem


def vault_transit_public_key(body: bytes, *, ref: str = "hashivault://", name: str | None = None) -> bytes:
    """The latest version's public key from Vault/OpenBao ``GET /v1/<transit>/keys/<name>``: the key
    ``name`` asked for (when given), of a transit type that signs, whose PEM is a key of that type."""
    if len(body) > MAX_KMS_RESPONSE_BYTES:
        raise ParseError("Vault response too large")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ParseError(f"Vault response is not JSON: {exc}") from exc
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise ParseError("Vault response has no data object")
    keys = data.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise ParseError("Vault transit key has no versions")
    latest = data.get("latest_version")
    version = str(latest) if latest is not None else max(keys, key=lambda k: int(k) if k.isdigit() else -1)
    entry = keys.get(version)
    pem = entry.get("public_key") if isinstance(entry, dict) else None
    if not isinstance(pem, str) or not pem.startswith("-----BEGIN"):
        kind = data.get("type", "?")
        raise ParseError(f"Vault transit key version {version} has no PEM public key (type {kind}; not asymmetric?)")
    if name is not None and data.get("name") != name:
        got = str(data.get("name") or "no key name")[:300]
        raise KmsKeyUnavailable(ref, f"Vault answered for {got!r}, not {name!r}")
    if data.get("supports_signing") is False:
        raise KmsKeyUnavailable(ref, "Vault says the key does not support signing")
    kind = str(data.get("type") or "")
    return signing_key(ref, pem.encode(), VAULT_SIGNING_TYPES.get(kind), usage=f"type {kind or 'not stated'}")


# ----------------------------------------------------------------------------------------------
# What every provider's answer must show before its key is used (pure)

# A key's shape: ("EC", curve name), ("RSA", modulus bits) or ("Ed25519", "").
KeyShape = tuple[str, str | int]

# Cloud KMS CryptoKeyVersionAlgorithm values cosign signs with (sigstore/sigstore
# pkg/signature/kms/gcp/client.go, its algorithm switch): anything else (RSA_DECRYPT_*, raw PKCS#1,
# secp256k1, Ed25519, post-quantum) is refused, as cosign refuses it ("unknown algorithm specified by KMS").
GCP_SIGNING_ALGORITHMS: Mapping[str, KeyShape] = {
    "EC_SIGN_P256_SHA256": ("EC", "secp256r1"),
    "EC_SIGN_P384_SHA384": ("EC", "secp384r1"),
    **{f"RSA_SIGN_{pad}_{bits}_{h}": ("RSA", bits)
       for pad in ("PKCS1", "PSS") for bits, h in ((2048, "SHA256"), (3072, "SHA256"), (4096, "SHA256"),
                                                   (4096, "SHA512"))},
}
# AWS KMS KeySpec values of SIGN_VERIFY keys sigstore's AWS client verifies (ECC_SECG_P256K1, SM2, HMAC: no).
AWS_SIGNING_SPECS: Mapping[str, KeyShape] = {
    "ECC_NIST_P256": ("EC", "secp256r1"),
    "ECC_NIST_P384": ("EC", "secp384r1"),
    "ECC_NIST_P521": ("EC", "secp521r1"),
    "RSA_2048": ("RSA", 2048),
    "RSA_3072": ("RSA", 3072),
    "RSA_4096": ("RSA", 4096),
}
# Vault/OpenBao transit key types that sign (sigstore's hashivault client); aes*, chacha20, hmac do not.
VAULT_SIGNING_TYPES: Mapping[str, KeyShape] = {
    "ecdsa-p256": ("EC", "secp256r1"),
    "ecdsa-p384": ("EC", "secp384r1"),
    "ecdsa-p521": ("EC", "secp521r1"),
    "rsa-2048": ("RSA", 2048),
    "rsa-3072": ("RSA", 3072),
    "rsa-4096": ("RSA", 4096),
    "ed25519": ("Ed25519", ""),
}
_JWK_SHAPES: Mapping[str, KeyShape] = {"P-256": ("EC", "secp256r1"), "P-384": ("EC", "secp384r1"),
                                       "P-521": ("EC", "secp521r1")}


def _shape(key: object) -> KeyShape:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ("EC", key.curve.name)
    if isinstance(key, rsa.RSAPublicKey):
        return ("RSA", key.key_size)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ("Ed25519", "")
    return (type(key).__name__, "")


def signing_key(ref: str, pem: bytes, shape: KeyShape | None, *, usage: str) -> bytes:
    """The one gate every provider's key passes: the PEM is exactly one public key, of the ``shape`` the
    KMS declared for a signing algorithm (None: the KMS named no signing algorithm -> refused, ``usage``
    says what it named). Returns the key re-encoded (SubjectPublicKeyInfo PEM)."""
    if shape is None:
        raise KmsKeyUnavailable(ref, f"not a signing key sigaudit verifies: {usage}")
    text = pem.strip()
    if text.count(b"-----BEGIN") != 1:
        raise KmsKeyUnavailable(ref, "the KMS answered no single PEM public key")
    try:
        key = serialization.load_pem_public_key(text)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KmsKeyUnavailable(ref, f"the KMS answered no PEM public key: {exc}") from exc
    got = _shape(key)
    if got != shape:
        raise KmsKeyUnavailable(ref, f"the key is {got[0]} {got[1]}, but the KMS declares {shape[0]} {shape[1]} "
                                     f"({usage})")
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78; RFC 3720 §12.1 and appendix B.4), the
    checksum Cloud KMS puts in ``pem_crc32c`` (cloud.google.com/kms/docs/data-integrity-guidelines).
    Hand-written: no library here provides it, and the SDK's optional ``google-crc32c`` may be absent."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _enum_name(value: Any) -> str:
    """An SDK enum (proto-plus / Azure) or a plain string -> its name."""
    if value is None:
        return ""
    name = getattr(value, "name", None)
    if isinstance(name, str) and not isinstance(value, str):
        return name
    return str(getattr(value, "value", value))


def gcp_public_key(ref: str, name: str, purpose: Any, resp: Any) -> bytes:
    """Cloud KMS ``GetCryptoKey``'s purpose and ``GetPublicKey``'s answer for version ``name`` -> PEM.
    As cosign: the key's purpose is ASYMMETRIC_SIGN and the algorithm one it signs with; and as Cloud
    KMS' data-integrity guidelines say: the answer names the version asked for, ``pem_crc32c`` matches."""
    if _enum_name(purpose) != "ASYMMETRIC_SIGN":
        raise KmsKeyUnavailable(ref, f"key purpose is {_enum_name(purpose) or 'not stated'}, not ASYMMETRIC_SIGN")
    got = str(getattr(resp, "name", "") or "")
    if got != name:
        raise KmsKeyUnavailable(ref, f"the KMS answered for {got[:300] or 'no key name'!r}, not {name!r}")
    pem = str(getattr(resp, "pem", "") or "").encode()
    checksum = getattr(resp, "pem_crc32c", None)
    checksum = getattr(checksum, "value", checksum)  # a protobuf Int64Value, or the int proto-plus makes of it
    if not isinstance(checksum, int) or isinstance(checksum, bool):
        raise KmsKeyUnavailable(ref, "the KMS answer has no pem_crc32c: its integrity cannot be checked")
    if crc32c(pem) != checksum:
        raise KmsKeyUnavailable(ref, "pem_crc32c does not match the PEM: the answer was corrupted in transit")
    algorithm = _enum_name(getattr(resp, "algorithm", None))
    return signing_key(ref, pem, GCP_SIGNING_ALGORITHMS.get(algorithm), usage=f"algorithm {algorithm or 'not stated'}")


def aws_public_key(ref: str, parsed: AwsKeyRef, resp: Mapping[str, Any]) -> bytes:
    """AWS KMS ``GetPublicKey`` -> PEM: a SIGN_VERIFY key of a spec sigstore verifies, the key asked for
    (a key id or key ARN must be the returned ``KeyId``, the key's ARN; an alias names whatever key it
    points to, so it is not compared)."""
    usage = resp.get("KeyUsage")
    if usage != "SIGN_VERIFY":
        raise KmsKeyUnavailable(ref, f"key usage is {usage or 'not stated'}, not SIGN_VERIFY")
    got = str(resp.get("KeyId") or "")
    asked = parsed.key_id
    if "alias/" not in asked:
        # AWS answers the key ARN; moto (and so perhaps other look-alikes) the bare key id.
        def bare(key_id: str) -> str:
            return key_id.rsplit(":key/", 1)[-1] if key_id.startswith("arn:") else key_id

        same = got == asked or (not (got.startswith("arn:") and asked.startswith("arn:")) and bare(got) == bare(asked))
        if not got or not same:
            raise KmsKeyUnavailable(ref, f"the KMS answered for {got[:300] or 'no key id'!r}, not {asked!r}")
    spec = str(resp.get("KeySpec") or resp.get("CustomerMasterKeySpec") or "")
    raw = resp.get("PublicKey")
    if not isinstance(raw, bytes | bytearray):
        raise KmsKeyUnavailable(ref, "the KMS answered no public key")
    try:
        pem = der_to_pem(bytes(raw))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KmsKeyUnavailable(ref, f"the KMS answered no DER public key: {exc}") from exc
    return signing_key(ref, pem, AWS_SIGNING_SPECS.get(spec), usage=f"key spec {spec or 'not stated'}")


def _port(url: SplitResult) -> int | None:
    try:
        return url.port or {"https": 443, "http": 80}.get(url.scheme)
    except ValueError:  # not a port number
        return -1


def azure_public_key(ref: str, parsed: AzureKeyRef, kid: str, key_ops: Any, jwk: Mapping[str, Any]) -> bytes:
    """An Azure Key Vault key -> PEM: its ``kid`` is ``VAULT/keys/NAME[/VERSION]`` of the key asked for,
    ``key_ops`` allow ``verify``, and the JWK is an EC (P-256/384/521) or RSA key."""
    parts = urlsplit(kid)
    want = urlsplit(parsed.vault_url)
    segs = [s for s in parts.path.split("/") if s]
    # The port too: the signing client sends the bearer token to the kid's origin, the vault's only.
    ok = (parts.scheme == want.scheme and (parts.hostname or "") == (want.hostname or "").lower()
          and _port(parts) == _port(want)
          and len(segs) in (2, 3) and segs[0] == "keys" and segs[1].casefold() == parsed.name.casefold()
          and (parsed.version is None or (len(segs) == 3 and segs[2].casefold() == parsed.version.casefold())))
    if not ok:
        raise KmsKeyUnavailable(ref, f"the key vault answered for {kid[:300] or 'no key id'!r}, "
                                     f"not {parsed.vault_url}/keys/{parsed.name}")
    ops = {_enum_name(o) for o in key_ops or ()}
    if "verify" not in ops:
        raise KmsKeyUnavailable(ref, f"key_ops {sorted(ops) or 'not stated'} do not allow verify")
    kty = _enum_name(jwk.get("kty"))
    try:
        pem = jwk_to_pem({**jwk, "kty": kty, "crv": _enum_name(jwk.get("crv")) or None})
    except (ParseError, ValueError) as exc:
        raise KmsKeyUnavailable(ref, f"not a signing key sigaudit verifies: {exc}") from exc
    if kty in ("RSA", "RSA-HSM"):
        size = serialization.load_pem_public_key(pem).key_size  # type: ignore[union-attr]
        shape: KeyShape | None = ("RSA", size) if size >= 2048 else None
    else:
        shape = _JWK_SHAPES.get(_enum_name(jwk.get("crv")))
    return signing_key(ref, pem, shape, usage=f"key type {kty}")


# ----------------------------------------------------------------------------------------------
# Signing with a KMS key (the evidence pack's signers; the calls are the edge's, the checks are here)
#
# The pack's DSSE signatures are verified the one way a plain public key is verified by sigaudit,
# cosign and slsa-verifier: ECDSA P-256/SHA-256 and P-384/SHA-384 (ASN.1 DER), RSA PKCS#1 v1.5 with
# SHA-256, Ed25519. A KMS key is asked to sign only in that scheme; a key of another shape or
# algorithm (RSA-PSS, SHA-512, P-521, secp256k1) is refused before anything is signed.

DSSE_SIGNING_HASHES: Mapping[KeyShape, str] = {
    ("EC", "secp256r1"): "sha256",
    ("EC", "secp384r1"): "sha384",
    ("Ed25519", ""): "",  # signs the message itself
}
# Cloud KMS algorithms whose signature is that scheme (PSS and SHA-512 ones verify as something else).
GCP_DSSE_ALGORITHMS = frozenset({"EC_SIGN_P256_SHA256", "EC_SIGN_P384_SHA384", "RSA_SIGN_PKCS1_2048_SHA256",
                                 "RSA_SIGN_PKCS1_3072_SHA256", "RSA_SIGN_PKCS1_4096_SHA256"})


def key_shape(pem: bytes) -> KeyShape:
    """The shape of a PEM public key (one :func:`signing_key` returned)."""
    return _shape(serialization.load_pem_public_key(pem))


def signing_hash(ref: str, pem: bytes) -> str:
    """The hash the evidence signature of this key is made over ("" for Ed25519: the message itself);
    KmsKeyUnavailable for a key whose signatures the pack's verifiers would not accept."""
    shape = key_shape(pem)
    if shape[0] == "RSA" and isinstance(shape[1], int) and shape[1] >= 2048:
        return "sha256"
    if shape in DSSE_SIGNING_HASHES:
        return DSSE_SIGNING_HASHES[shape]
    raise KmsKeyUnavailable(ref, f"cannot sign evidence with a {shape[0]} {shape[1]} key (ECDSA P-256/P-384, "
                                 "RSA PKCS#1 v1.5 with SHA-256, Ed25519)")


def raw_ecdsa_to_der(ref: str, pem: bytes, raw: bytes) -> bytes:
    """An ECDSA signature as IEEE P1363 ``r || s`` (Azure Key Vault's, JWS' form) -> ASN.1 DER, the form
    cosign and slsa-verifier read. Its length must be exactly twice the curve's size."""
    shape = key_shape(pem)
    size = {"secp256r1": 32, "secp384r1": 48}.get(str(shape[1])) if shape[0] == "EC" else None
    if size is None or len(raw) != 2 * size:
        raise KmsKeyUnavailable(ref, f"the KMS answered a {len(raw)}-byte signature, not an r||s pair of the key's "
                                     "curve")
    return encode_dss_signature(int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big"))


def gcp_signature(ref: str, name: str, resp: Any) -> bytes:
    """Cloud KMS ``AsymmetricSign``'s answer -> the signature, as the data-integrity guidelines say: it
    names the version asked for, says it verified the request's ``digest_crc32c``, and its
    ``signature_crc32c`` matches the signature."""
    got = str(getattr(resp, "name", "") or "")
    if got != name:
        raise KmsKeyUnavailable(ref, f"the KMS signed with {got[:300] or 'no key name'!r}, not {name!r}")
    if getattr(resp, "verified_digest_crc32c", None) is not True:
        raise KmsKeyUnavailable(ref, "the KMS did not verify the request's digest_crc32c: the request may have been "
                                     "corrupted in transit")
    signature = getattr(resp, "signature", None)
    if not isinstance(signature, bytes | bytearray) or not signature:
        raise KmsKeyUnavailable(ref, "the KMS answered no signature")
    checksum = getattr(resp, "signature_crc32c", None)
    checksum = getattr(checksum, "value", checksum)
    if not isinstance(checksum, int) or isinstance(checksum, bool) or crc32c(bytes(signature)) != checksum:
        raise KmsKeyUnavailable(ref, "signature_crc32c does not match the signature: the answer was corrupted in "
                                     "transit")
    return bytes(signature)


AZURE_ALGORITHMS: Mapping[str, str] = {"sha256:EC": "ES256", "sha384:EC": "ES384", "sha256:RSA": "RS256"}


def azure_signature(ref: str, kid: str, algorithm: str, answer_kid: Any, answer_algorithm: Any, raw: Any,
                    pem: bytes) -> bytes:
    """Azure Key Vault ``sign``'s answer -> the signature (DER for ECDSA): made by exactly the key
    version whose public key was read (``kid``) with the algorithm asked for."""
    got = str(answer_kid or "")
    if got != kid:
        raise KmsKeyUnavailable(ref, f"the key vault signed with {got[:300] or 'no key id'!r}, not {kid!r}")
    if _enum_name(answer_algorithm) != algorithm:
        raise KmsKeyUnavailable(ref, f"the key vault signed with {_enum_name(answer_algorithm)[:40]!r}, not "
                                     f"{algorithm}")
    if not isinstance(raw, bytes | bytearray) or not raw:
        raise KmsKeyUnavailable(ref, "the key vault answered no signature")
    return raw_ecdsa_to_der(ref, pem, bytes(raw)) if algorithm.startswith("ES") else bytes(raw)


def vault_transit_key(body: bytes, *, ref: str, name: str) -> tuple[int, bytes]:
    """(latest version, its public key) of a Vault transit key (:func:`vault_transit_public_key`)."""
    pem = vault_transit_public_key(body, ref=ref, name=name)
    latest = json.loads(body)["data"].get("latest_version")
    if not isinstance(latest, int) or isinstance(latest, bool) or latest < 1:
        raise KmsKeyUnavailable(ref, "Vault states no latest_version of the key: cannot tell which version signs")
    return latest, pem


_VAULT_SIGNATURE = re.compile(r"^vault:v([1-9][0-9]{0,9}):([A-Za-z0-9+/]+={0,2})$")


def vault_signature(body: bytes, *, ref: str, version: int) -> bytes:
    """Vault/OpenBao ``POST /v1/<transit>/sign/<name>``'s answer -> the signature: ``vault:vN:<base64>``
    made by key version N, the one whose public key was read."""
    if len(body) > MAX_KMS_RESPONSE_BYTES:
        raise KmsKeyUnavailable(ref, "Vault response too large")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise KmsKeyUnavailable(ref, "Vault's sign answer is not JSON") from exc
    data = doc.get("data") if isinstance(doc, dict) else None
    text = data.get("signature") if isinstance(data, dict) else None
    m = _VAULT_SIGNATURE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise KmsKeyUnavailable(ref, "Vault's sign answer has no vault:vN:<base64> signature")
    if int(m.group(1)) != version:
        raise KmsKeyUnavailable(ref, f"Vault signed with key version {m.group(1)}, not {version}")
    try:
        return base64.b64decode(m.group(2), validate=True)
    except ValueError as exc:
        raise KmsKeyUnavailable(ref, "Vault's signature is not base64") from exc


# ----------------------------------------------------------------------------------------------
# The edge's protocol (issue #18): the SDK clients and HTTP calls live in scanner/sources/kms.py


class KmsPublicKeys(Protocol):
    """How the trust layer reads a KMS key's public half: the provider's raw answer, passed through the
    checks above (``aws_public_key``, ``gcp_public_key``, ``azure_public_key``,
    ``vault_transit_public_key``), as PEM. The edge (``scanner/sources/kms.py``) implements it over the
    provider SDKs and Vault's HTTP API, every call under the wall-clock deadline; it raises
    :class:`KmsKeyUnavailable` for every failure."""

    def __call__(self, ref: str) -> bytes: ...


def fetch_public_key_pem(ref: str, *, keys: KmsPublicKeys | None = None) -> bytes:
    """The PEM public key behind a KMS reference. Raises KmsKeyUnavailable (a ConfigError) naming it.
    ``keys`` reads it (default: the edge's, ``scanner/sources/kms.py``, taken here lazily)."""
    parse_kms_ref(ref)
    if keys is None:
        from scanner.sources.kms import public_key_pem

        keys = public_key_pem
    try:
        return keys(ref)
    except (KmsKeyUnavailable, ConfigError):
        raise
    except Exception as exc:  # whatever else the reader raised: the key could not be fetched
        raise KmsKeyUnavailable(ref, f"cannot fetch the public key: {type(exc).__name__}: {redact_text(str(exc))}") \
            from exc


# ----------------------------------------------------------------------------------------------
# A verifier standing in for one whose key could not be fetched.


@dataclass(frozen=True, slots=True)
class UnavailableKeyVerifier(Verifier):
    """Yields one ERROR result per image: the key reference and why it could not be fetched.

    The policy loader builds it in place of a key verifier when :class:`KmsKeyUnavailable` is raised,
    so a KMS outage makes the affected images ``error`` (never a skipped check) without aborting the
    scan. ``wants`` is empty: nothing needs fetching to report an unavailable key.
    """

    ref: str
    message: str
    kind: str = "cosign"
    rule: str = ""

    @property
    def name(self) -> str:
        return f"{self.kind} key {self.ref}"

    @property
    def wants(self) -> Wants:
        return Wants()

    @property
    def trust_fingerprint(self) -> str:
        return "unavailable:" + hashlib.sha256(self.ref.encode()).hexdigest()

    def decision_identity(self, image: RunningImage) -> str | None:
        return None  # an error verdict is never reused: the key is fetched again next scan

    def verify(self, image: RunningImage, material: SignatureMaterial, now: datetime) -> tuple[SignatureResult, ...]:
        return (
            SignatureResult(
                kind=self.kind,
                verifier=self.name,
                outcome=Outcome.ERROR,
                reason=f"key {self.ref} unavailable: {self.message}",
                failure=SignatureFailure.ERROR,
                signer=self.ref,
            ),
        )
