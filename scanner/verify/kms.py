"""Public keys that live in a KMS, named the way cosign and Kyverno name them.

    awskms://[ENDPOINT]/KEY            KEY: key id, key ARN, alias/NAME or alias ARN
    gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/V]
    azurekms://VAULT-HOST/KEY[/VERSION]
    hashivault://KEY                   transit engine; VAULT_ADDR, VAULT_TOKEN (or a token file)

This is the edge: the policy loader calls :func:`fetch_public_key_pem` once per reference per scan
(``PolicyLoader.load_key`` caches by reference) and verifiers only ever see the parsed key. Each
provider's SDK is an optional extra (``sigaudit[aws]``, ``[gcp]``, ``[azure]``); Vault's transit API is
plain HTTP, read with httpx. Credentials are whatever the pod already has (IRSA, workload identity,
``DefaultAzureCredential``, a Vault token file) — sigaudit never asks for secrets of its own.

Any failure raises :class:`KmsKeyUnavailable` naming the key reference. Verifiers that can be built
without the key (see :class:`UnavailableKeyVerifier`) turn it into an ``error`` verdict for the images
the key would have judged, so one KMS outage does not abort the whole scan.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scanner.errors import ConfigError, ParseError
from scanner.models import (
    Outcome,
    RunningImage,
    SignatureFailure,
    SignatureMaterial,
    SignatureResult,
)
from scanner.verify.base import Verifier, Wants

KMS_SCHEMES = ("awskms://", "gcpkms://", "azurekms://", "hashivault://")
MAX_KMS_RESPONSE_BYTES = 1024 * 1024
KMS_TIMEOUT_SECONDS = 10.0  # per socket operation
KMS_TOTAL_TIMEOUT_SECONDS = 30.0  # wall clock for one key (Vault; the cloud SDKs bound their own calls)


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


def vault_transit_public_key(body: bytes) -> bytes:
    """The latest version's public key from Vault/OpenBao ``GET /v1/<transit>/keys/<name>``."""
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
    return pem.encode()


# ----------------------------------------------------------------------------------------------
# Providers (I/O)


def _sdk(module: str, extra: str, ref: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise KmsKeyUnavailable(ref, f"needs the {module} package: pip install 'sigaudit[{extra}]'") from exc


def _aws(ref: str, parsed: AwsKeyRef) -> bytes:
    boto3 = _sdk("boto3", "aws", ref)
    botocore_config = _sdk("botocore.config", "aws", ref)
    kwargs: dict[str, Any] = {
        "config": botocore_config.Config(
            connect_timeout=KMS_TIMEOUT_SECONDS, read_timeout=KMS_TIMEOUT_SECONDS, retries={"max_attempts": 2}
        )
    }
    if parsed.region:
        kwargs["region_name"] = parsed.region
    if parsed.endpoint:
        # As cosign: the URI's host is an https endpoint. Plain-http test endpoints come from
        # AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL, which the SDK reads itself.
        kwargs["endpoint_url"] = f"https://{parsed.endpoint}"
    resp = boto3.client("kms", **kwargs).get_public_key(KeyId=parsed.key_id)
    if resp.get("KeyUsage") not in (None, "SIGN_VERIFY"):
        raise KmsKeyUnavailable(ref, f"key usage is {resp.get('KeyUsage')}, not SIGN_VERIFY")
    return der_to_pem(bytes(resp["PublicKey"]))


def _gcp(ref: str, parsed: GcpKeyRef) -> bytes:
    kms = _sdk("google.cloud.kms", "gcp", ref)
    client = kms.KeyManagementServiceClient()
    name = parsed.version_name
    if name is None:
        # No version: the newest enabled one, as cosign does for signing keys.
        versions = [
            v
            for v in client.list_crypto_key_versions(request={"parent": parsed.key_name}, timeout=KMS_TIMEOUT_SECONDS)
            if v.state == kms.CryptoKeyVersion.CryptoKeyVersionState.ENABLED
        ]
        if not versions:
            raise KmsKeyUnavailable(ref, "no enabled key version")
        name = max(versions, key=lambda v: int(v.name.rsplit("/", 1)[-1])).name
    resp = client.get_public_key(request={"name": name}, timeout=KMS_TIMEOUT_SECONDS)
    return str(resp.pem).encode()


def _azure(ref: str, parsed: AzureKeyRef) -> bytes:
    keys = _sdk("azure.keyvault.keys", "azure", ref)
    identity = _sdk("azure.identity", "azure", ref)
    client = keys.KeyClient(vault_url=parsed.vault_url, credential=identity.DefaultAzureCredential())
    key = client.get_key(parsed.name, version=parsed.version)
    jwk = key.key
    members: dict[str, Any] = {m: getattr(jwk, m, None) for m in ("kty", "crv", "n", "e", "x", "y")}
    for enum_member in ("kty", "crv"):  # the SDK hands enums (KeyType.rsa_hsm ...)
        value = members[enum_member]
        members[enum_member] = None if value is None else str(getattr(value, "value", value))
    return jwk_to_pem(members)


def _vault_token() -> str | None:
    token = os.environ.get("VAULT_TOKEN")
    if token:
        return token.strip()
    for candidate in (os.environ.get("VAULT_TOKEN_FILE"), str(Path("~/.vault-token").expanduser())):
        if candidate:
            try:
                return Path(candidate).read_text(encoding="utf-8")[:8192].strip() or None
            except OSError:
                continue
    return None


def _vault(ref: str, parsed: VaultKeyRef) -> bytes:
    import httpx

    from scanner.registry import deadline

    addr = os.environ.get("VAULT_ADDR")
    if not addr:
        raise KmsKeyUnavailable(ref, "VAULT_ADDR is not set")
    if "@" in urlsplit(addr).netloc:
        # The message is an error verdict's reason (JSON, reports, the database): never a password in it.
        raise KmsKeyUnavailable(ref, "VAULT_ADDR carries credentials: give a token (VAULT_TOKEN, VAULT_TOKEN_FILE)")
    token = _vault_token()
    if not token:
        raise KmsKeyUnavailable(ref, "no Vault token (VAULT_TOKEN, VAULT_TOKEN_FILE or ~/.vault-token)")
    mount = os.environ.get("TRANSIT_SECRET_ENGINE_PATH", "transit").strip("/")
    headers = {"X-Vault-Token": token}
    if os.environ.get("VAULT_NAMESPACE"):
        headers["X-Vault-Namespace"] = os.environ["VAULT_NAMESPACE"]
    url = f"{addr.rstrip('/')}/v1/{mount}/keys/{quote(parsed.name, safe='')}"
    until = time.monotonic() + KMS_TOTAL_TIMEOUT_SECONDS
    body = bytearray()
    late = f"no complete answer from Vault within {KMS_TOTAL_TIMEOUT_SECONDS:g}s"
    # The deadline also holds while Vault trickles its status line and headers (httpx's timeouts are
    # per read: each byte restarts them).
    with deadline.install(httpx.Client(timeout=KMS_TIMEOUT_SECONDS, follow_redirects=False)) as client:
        try:
            with deadline.within(until, late), client.stream("GET", url, headers=headers) as resp:
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_KMS_RESPONSE_BYTES:
                        raise KmsKeyUnavailable(ref, f"Vault answered more than {MAX_KMS_RESPONSE_BYTES} bytes")
                    if time.monotonic() > until:  # a trickled body resets httpx's per-read timeout
                        raise KmsKeyUnavailable(ref, late)
                if resp.status_code != 200:
                    raise KmsKeyUnavailable(ref, f"Vault answered {resp.status_code} for {url}")
        except httpx.HTTPError as exc:
            if deadline.cause(exc) is not None:
                raise KmsKeyUnavailable(ref, late) from exc
            raise
    return vault_transit_public_key(bytes(body))


def fetch_public_key_pem(ref: str) -> bytes:
    """The PEM public key behind a KMS reference. Raises KmsKeyUnavailable (a ConfigError) naming it."""
    parsed = parse_kms_ref(ref)
    try:
        if isinstance(parsed, AwsKeyRef):
            return _aws(ref, parsed)
        if isinstance(parsed, GcpKeyRef):
            return _gcp(ref, parsed)
        if isinstance(parsed, AzureKeyRef):
            return _azure(ref, parsed)
        return _vault(ref, parsed)
    except KmsKeyUnavailable:
        raise
    except Exception as exc:  # SDK errors of every provider: the key could not be fetched
        raise KmsKeyUnavailable(ref, f"cannot fetch the public key: {type(exc).__name__}: {exc}") from exc


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
