"""The KMS edge (issue #18): the provider SDKs and Vault's HTTP API, for public keys and signatures.

``scanner.verify.kms`` is pure: it parses references and decides whether a provider's answer is a
signing key of the shape it declares, or a signature by the key version asked for. This module makes the
calls and hands it the answers:

* :func:`public_key_pem` (``verify.kms.KmsPublicKeys``): the policy loader's KMS keys.
* :func:`open_signer` -> :class:`KmsKey`: the evidence pack's signer for ``awskms://``, ``gcpkms://``,
  ``azurekms://`` and ``hashivault://`` keys; its public key is read first, its version pinned
  (Cloud KMS, Azure, Vault), and each signature made by that version in the one scheme the pack's
  verifiers accept (``verify.kms.signing_hash``). ``scanner.evidence.dsse`` verifies every signature
  against the public key before it is used.

Each SDK is an optional extra (``sigaudit[aws]``, ``[gcp]``, ``[azure]``), imported when first needed;
Vault's transit API is plain HTTP (httpx). Credentials come from the SDK's usual chain (IRSA, workload
identity, ``DefaultAzureCredential``) or ``VAULT_TOKEN`` / ``VAULT_TOKEN_FILE`` / ``~/.vault-token``;
they never appear in a message. Every call is bounded by the wall clock: ``KMS_TOTAL_TIMEOUT_SECONDS``,
or the deadline in force on the calling thread when that is earlier (``scanner.registry.deadline``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from scanner.redact import redact_text
from scanner.registry import deadline
from scanner.verify import kms as vkms
from scanner.verify.kms import AwsKeyRef, AzureKeyRef, GcpKeyRef, KmsKeyUnavailable, VaultKeyRef

T = TypeVar("T")

AWS_RAW_MESSAGE_LIMIT = 4096  # bytes KMS Sign accepts as a RAW message
_AWS_ALGORITHMS = {"sha256:EC": "ECDSA_SHA_256", "sha384:EC": "ECDSA_SHA_384",
                   "sha256:RSA": "RSASSA_PKCS1_V1_5_SHA_256"}
_VAULT_HASHES = {"sha256": "sha2-256", "sha384": "sha2-384"}


def _sdk(load: Callable[[], Any], extra: str, ref: str) -> Any:
    """An optional SDK, loaded by a literal name (so the import graph of tests/unit/test_layering.py sees
    which SDKs this edge uses); a missing one is a KmsKeyUnavailable naming the extra to install."""
    try:
        return load()
    except ImportError as exc:
        raise KmsKeyUnavailable(ref, f"needs the {exc.name or 'SDK'} package: pip install 'sigaudit[{extra}]'") \
            from exc


_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',}]+")
_SECRET_FIELD = re.compile(r"(?i)\b(token|authorization|access_token|x-vault-token|secret)([\"']?\s*[:=]\s*[\"']?)"
                           r"(?!bearer\b|basic\b)[^\s\"',}]+")


# Credentials this process handed to a KMS (the Vault token, the Entra/Google access tokens and AWS keys
# the SDKs used): each is masked wherever it appears, however the KMS quoted it (alone, without a
# "Bearer" or a "token:" before it). Opaque tokens have no shape a pattern could tell.
_HANDED: set[str] = set()
_HANDED_LOCK = threading.Lock()


def _handed(*secrets: object) -> None:
    with _HANDED_LOCK:
        _HANDED.update(s for s in secrets if isinstance(s, str) and len(s) >= 4)


def scrub(text: str) -> str:
    """An SDK's error text as it may appear in a message: a KMS (or a proxy before it) may echo the
    request's credentials in its error body, so URL credentials, JWTs, bearer/token values and every
    credential handed to a KMS (the Vault token; the tokens and keys the SDKs sent) are masked — also as
    Python or JSON quote them (a token with a control character, quoted ``\\n``) — and the text is cut
    at 500 characters."""
    text = _JWT.sub("[jwt]", redact_text(text))
    text = _SECRET_FIELD.sub(r"\1\2[redacted]", _BEARER.sub(r"\1\2[redacted]", text))
    token = _vault_token()
    with _HANDED_LOCK:
        secrets = set(_HANDED) | ({token} if token and len(token) >= 4 else set())
    for secret in sorted(secrets, key=len, reverse=True):
        for form in {secret, repr(secret)[1:-1], repr(secret.encode("utf-8", "replace"))[2:-1],
                     json.dumps(secret)[1:-1]}:
            text = text.replace(form, "[redacted]")
    return text[:500]


def _scrubbed(exc: KmsKeyUnavailable) -> KmsKeyUnavailable:
    """``exc`` with its message scrubbed: the checks quote what the KMS answered (a key name, a kid, a
    type), and a hostile KMS can answer the credential it was sent there."""
    message = scrub(exc.message)
    return exc if message == exc.message else KmsKeyUnavailable(exc.ref, message)


def _bounded(ref: str, what: str, call: Callable[[], T]) -> T:
    """``call()`` under the wall clock: the SDKs' own timeouts are per socket operation (a KMS that
    trickles its answer, or retries, holds them for as long as it likes). The call runs on a daemon
    thread (``deadline.run``, which also bounds how many such threads a long-running ``serve`` keeps
    hanging); past the time left, the command goes on with an error and the thread is abandoned."""
    seconds = vkms.KMS_TOTAL_TIMEOUT_SECONDS
    try:
        with deadline.within(time.monotonic() + seconds, f"no answer from the KMS within {seconds:g}s"):
            return deadline.run(call)
    except deadline.Abandoned as exc:
        raise KmsKeyUnavailable(ref, f"{what}: {exc}") from None
    except KmsKeyUnavailable as exc:
        raise _scrubbed(exc) from None
    except Exception as exc:
        # The SDKs' errors: the message names no credential (redacted), only what failed.
        raise KmsKeyUnavailable(ref, f"{what}: {type(exc).__name__}: {scrub(str(exc))}") from exc


@dataclass(frozen=True)
class KmsKey:
    """A KMS key's public half (checked by ``verify.kms``) and a way to have it sign."""

    ref: str
    pem: bytes
    _sign: Callable[[bytes], bytes] = field(repr=False)
    _check: Callable[[], object] = field(repr=False)

    def check(self) -> None:
        """KmsKeyUnavailable unless the key can sign in the pack's scheme (pure: no call is made)."""
        self._check()

    def sign(self, data: bytes) -> bytes:
        """The provider's signature over ``data`` (ASN.1 DER for ECDSA); not yet verified."""
        return _bounded(self.ref, "cannot sign", lambda: self._sign(data))


def _digest(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


# ----------------------------------------------------------------------------------------------
# AWS KMS


def _aws_client(ref: str, parsed: AwsKeyRef) -> Any:
    boto3 = _sdk(lambda: importlib.import_module("boto3"), "aws", ref)
    botocore_config = _sdk(lambda: importlib.import_module("botocore.config"), "aws", ref)
    kwargs: dict[str, Any] = {
        "config": botocore_config.Config(
            connect_timeout=vkms.KMS_TIMEOUT_SECONDS, read_timeout=vkms.KMS_TIMEOUT_SECONDS,
            retries={"max_attempts": 2})
    }
    if parsed.region:
        kwargs["region_name"] = parsed.region
    if parsed.endpoint:
        # As cosign: the URI's host is an https endpoint. Plain-http test endpoints come from
        # AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL, which the SDK reads itself.
        kwargs["endpoint_url"] = f"https://{parsed.endpoint}"
    return boto3.client("kms", **kwargs)


def _aws_keys(client: Any) -> None:
    """Remember the keys an AWS KMS client signed its request with (on the calling worker thread:
    reading refreshable credentials may refresh them)."""
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    frozen = getattr(credentials, "get_frozen_credentials", None)
    if frozen is not None:
        keys = frozen()
        _handed(keys.access_key, keys.secret_key, keys.token)


def _gcp_token(client: Any) -> None:
    """Remember the access token a Cloud KMS client sent (its credentials refresh it on first use)."""
    _handed(getattr(getattr(getattr(client, "_transport", None), "_credentials", None), "token", None))


class _RecordingCredential:
    """An Azure credential whose every token is remembered (:func:`scrub` masks it), the rest passed
    through; ``get_token_info`` exists exactly when the wrapped credential has it (azure-core asks)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        token = self._inner.get_token(*scopes, **kwargs)
        _handed(getattr(token, "token", None))
        return token

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != "get_token_info":
            return attr

        def get_token_info(*scopes: str, **kwargs: Any) -> Any:
            info = attr(*scopes, **kwargs)
            _handed(getattr(info, "token", None))
            return info

        return get_token_info


def _aws_key(ref: str, parsed: AwsKeyRef) -> KmsKey:
    client = _aws_client(ref, parsed)
    def read() -> bytes:
        try:
            return vkms.aws_public_key(ref, parsed, client.get_public_key(KeyId=parsed.key_id))
        finally:
            _aws_keys(client)

    pem = _bounded(ref, "cannot fetch the public key", read)

    def scheme() -> tuple[str, str]:
        h = vkms.signing_hash(ref, pem)
        algorithm = _AWS_ALGORITHMS.get(f"{h}:{vkms.key_shape(pem)[0]}")
        if algorithm is None:
            raise KmsKeyUnavailable(ref, "not an AWS KMS signing key for evidence (ECDSA P-256/P-384, RSA)")
        return h, algorithm

    def sign(data: bytes) -> bytes:
        h, algorithm = scheme()
        if len(data) <= AWS_RAW_MESSAGE_LIMIT:
            message, message_type = data, "RAW"
        else:
            message, message_type = _digest(h, data), "DIGEST"
        try:
            resp = client.sign(KeyId=parsed.key_id, Message=message, MessageType=message_type,
                               SigningAlgorithm=algorithm)
        finally:
            _aws_keys(client)
        return bytes(resp["Signature"])

    return KmsKey(ref, pem, sign, scheme)


# ----------------------------------------------------------------------------------------------
# Google Cloud KMS


def _gcp_key(ref: str, parsed: GcpKeyRef, client: Any | None) -> KmsKey:
    kms = _sdk(lambda: importlib.import_module("google.cloud.kms"), "gcp", ref)
    timeout = vkms.KMS_TIMEOUT_SECONDS
    made: list[Any] = [client]

    def read() -> tuple[str, bytes, str]:
        if made[0] is None:  # the default credentials may be looked up on the network (metadata server)
            made[0] = kms.KeyManagementServiceClient()
        client = made[0]
        # As cosign (sigstore's GCP client): the key's purpose first, then the version.
        key = client.get_crypto_key(request={"name": parsed.key_name}, timeout=timeout)
        name = parsed.version_name
        if name is None:
            # No version: the newest enabled one of this key, as cosign does for signing keys.
            prefix = f"{parsed.key_name}/cryptoKeyVersions/"
            versions = [
                v for v in client.list_crypto_key_versions(request={"parent": parsed.key_name}, timeout=timeout)
                if vkms._enum_name(v.state) == "ENABLED" and str(v.name).startswith(prefix)
                and str(v.name)[len(prefix):].isdigit()
            ]
            if not versions:
                raise KmsKeyUnavailable(ref, "no enabled key version")
            name = str(max(versions, key=lambda v: int(str(v.name)[len(prefix):])).name)
        resp = client.get_public_key(request={"name": name}, timeout=timeout)
        return name, vkms.gcp_public_key(ref, name, key.purpose, resp), vkms._enum_name(resp.algorithm)

    def read_once() -> tuple[str, bytes, str]:
        try:
            return read()
        finally:
            _gcp_token(made[0])

    name, pem, algorithm = _bounded(ref, "cannot fetch the public key", read_once)

    def scheme() -> str:
        if algorithm not in vkms.GCP_DSSE_ALGORITHMS:
            raise KmsKeyUnavailable(ref, f"cannot sign evidence with a {algorithm} key (EC_SIGN_P256_SHA256, "
                                         "EC_SIGN_P384_SHA384, RSA_SIGN_PKCS1_*_SHA256)")
        return vkms.signing_hash(ref, pem)

    def sign(data: bytes) -> bytes:
        h = scheme()
        digest = _digest(h, data)
        try:
            resp = made[0].asymmetric_sign(
                request={"name": name, "digest": {h: digest}, "digest_crc32c": vkms.crc32c(digest)},
                timeout=timeout)
        finally:
            _gcp_token(made[0])
        return vkms.gcp_signature(ref, name, resp)

    return KmsKey(ref, pem, sign, scheme)


# ----------------------------------------------------------------------------------------------
# Azure Key Vault


def _azure_transport() -> Any:
    """azure-core's requests transport whose every answer is read within MAX_KMS_RESPONSE_BYTES,
    inflated a block at a time: the SDK read whole bodies, so a few hundred bytes of "gzip, gzip" from a
    key vault took a GiB of memory before anything looked at them."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from urllib3.util.retry import Retry

    limit = vkms.MAX_KMS_RESPONSE_BYTES

    class TooLarge(requests.RequestException):
        pass

    class Adapter(requests.adapters.HTTPAdapter):
        def send(self, request: Any, stream: bool = False, **kwargs: Any) -> Any:  # type: ignore[override]
            resp = super().send(request, stream=True, **kwargs)
            body, size = [], 0
            try:
                for block in resp.raw.stream(64 * 1024, decode_content=True):
                    size += len(block)
                    if size > limit:
                        raise TooLarge(f"the KMS answered more than {limit} bytes")
                    body.append(block)
            finally:
                resp.close()
            resp._content, resp._content_consumed = b"".join(body), True
            return resp

    class Transport(RequestsTransport):  # type: ignore[misc]
        def _init_session(self, session: Any) -> None:
            super()._init_session(session)
            adapter = Adapter(max_retries=Retry(total=False, redirect=False, raise_on_status=False))
            for prefix in self._protocols:
                session.mount(prefix, adapter)

    return Transport()


def _azure_key(ref: str, parsed: AzureKeyRef, credential: Any | None) -> KmsKey:
    keys = _sdk(lambda: importlib.import_module("azure.keyvault.keys"), "azure", ref)
    if credential is None:
        credential = _sdk(lambda: importlib.import_module("azure.identity"), "azure", ref).DefaultAzureCredential()
    credential = _RecordingCredential(credential)
    transport = _sdk(_azure_transport, "azure", ref)
    client = keys.KeyClient(vault_url=parsed.vault_url, credential=credential, transport=transport)

    def read() -> tuple[str, bytes]:
        key = client.get_key(parsed.name, version=parsed.version)
        jwk = key.key
        members: dict[str, Any] = {m: getattr(jwk, m, None) for m in ("kty", "crv", "n", "e", "x", "y")}
        kid = str(getattr(jwk, "kid", None) or getattr(key, "id", "") or "")
        return kid, vkms.azure_public_key(ref, parsed, kid, getattr(jwk, "key_ops", None), members)

    kid, pem = _bounded(ref, "cannot fetch the public key", read)

    def scheme() -> tuple[str, str]:
        h = vkms.signing_hash(ref, pem)
        algorithm = vkms.AZURE_ALGORITHMS.get(f"{h}:{vkms.key_shape(pem)[0]}")
        if algorithm is None:
            raise KmsKeyUnavailable(ref, "not an Azure Key Vault signing key for evidence (EC P-256/P-384, RSA)")
        if len([s for s in urlsplit(kid).path.split("/") if s]) != 3:
            raise KmsKeyUnavailable(ref, f"the key vault named no key version ({kid[:300]!r})")
        return h, algorithm

    def sign(data: bytes) -> bytes:
        h, algorithm = scheme()
        crypto = _sdk(lambda: importlib.import_module("azure.keyvault.keys.crypto"), "azure", ref)
        result = crypto.CryptographyClient(kid, credential, transport=_azure_transport()).sign(
            crypto.SignatureAlgorithm(algorithm), _digest(h, data))
        return vkms.azure_signature(ref, kid, algorithm, result.key_id, result.algorithm, result.signature, pem)

    return KmsKey(ref, pem, sign, scheme)


# ----------------------------------------------------------------------------------------------
# Vault / OpenBao transit (plain HTTP)


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


_HEADER_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")  # visible ASCII: what an X-Vault-Token header carries


@dataclass(frozen=True)
class _Vault:
    ref: str
    addr: str
    mount: str
    headers: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_env(cls, ref: str) -> _Vault:
        addr = os.environ.get("VAULT_ADDR")
        if not addr:
            raise KmsKeyUnavailable(ref, "VAULT_ADDR is not set")
        if "@" in urlsplit(addr).netloc:
            # The message is an error verdict's reason (JSON, reports, the database): never a password in it.
            raise KmsKeyUnavailable(ref, "VAULT_ADDR carries credentials: give a token (VAULT_TOKEN, VAULT_TOKEN_FILE)")
        parts = urlsplit(addr)
        if parts.scheme != "https" and not (parts.scheme == "http"
                                            and parts.hostname in ("127.0.0.1", "localhost", "::1")):
            # As the Grafeas token: a credential goes over https only, or to this machine.
            raise KmsKeyUnavailable(ref, f"VAULT_ADDR is {parts.scheme or 'no'} URL to {parts.hostname or '?'}: the "
                                         "Vault token is sent over https only (or to 127.0.0.1)")
        token = _vault_token()
        if not token:
            raise KmsKeyUnavailable(ref, "no Vault token (VAULT_TOKEN, VAULT_TOKEN_FILE or ~/.vault-token)")
        if not _HEADER_TOKEN.fullmatch(token):
            # A line break or control character: HTTP refuses it, quoting it whole in its error. Never sent,
            # never shown (not even in part).
            raise KmsKeyUnavailable(ref, "the Vault token (VAULT_TOKEN, VAULT_TOKEN_FILE or ~/.vault-token) is not "
                                         "one line of printable ASCII: not sent")
        _handed(token)
        headers = {"X-Vault-Token": token}
        if os.environ.get("VAULT_NAMESPACE"):
            headers["X-Vault-Namespace"] = os.environ["VAULT_NAMESPACE"]
        mount = os.environ.get("TRANSIT_SECRET_ENGINE_PATH", "transit").strip("/")
        return cls(ref, addr.rstrip("/"), mount, headers)

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> bytes:
        """One request under the wall clock (at the socket, ``deadline.install``), its answer bounded;
        a non-2xx is refused naming the status and the path only."""
        seconds = vkms.KMS_TOTAL_TIMEOUT_SECONDS
        until = time.monotonic() + seconds
        url = f"{self.addr}/v1/{self.mount}/{path}"
        limit = vkms.MAX_KMS_RESPONSE_BYTES
        answer = bytearray()
        # A plain-http Vault is this machine (from_env): never through a proxy from the environment, which
        # would carry the token in clear text to another host (Vault's own client does not proxy loopback).
        client = deadline.install(httpx.Client(timeout=vkms.KMS_TIMEOUT_SECONDS, follow_redirects=False,
                                               trust_env=urlsplit(self.addr).scheme == "https"))
        try:
            with client, deadline.within(until, "late"), \
                    client.stream(method, url, headers={**self.headers, "Accept-Encoding": "identity"},
                                  json=body) as resp:
                # The body as sent, never inflated: httpx inflates a whole network chunk at once (and
                # "gzip, gzip" layer on layer), so a 600-byte answer once took 500 MB before the cap saw it.
                encoding = resp.headers.get("content-encoding", "").strip().lower()
                if encoding not in ("", "identity"):
                    raise KmsKeyUnavailable(self.ref, f"Vault answered a {encoding[:40]!r}-encoded body, not asked for")
                for chunk in resp.iter_raw():
                    answer += chunk
                    if len(answer) > limit:
                        raise KmsKeyUnavailable(self.ref, f"Vault answered more than {limit} bytes")
                    if time.monotonic() > until:
                        raise KmsKeyUnavailable(self.ref, f"no complete answer from Vault within {seconds:g}s")
                status = resp.status_code
        except httpx.HTTPError as exc:
            if deadline.cause(exc) == "late":
                raise KmsKeyUnavailable(self.ref, f"no complete answer from Vault within {seconds:g}s") from exc
            if deadline.cause(exc) is not None:
                raise KmsKeyUnavailable(self.ref, str(deadline.cause(exc))) from exc
            raise KmsKeyUnavailable(self.ref, f"cannot reach Vault: {type(exc).__name__}: {scrub(str(exc))}") from exc
        if not 200 <= status < 300:
            raise KmsKeyUnavailable(self.ref, f"Vault answered {status} for /v1/{self.mount}/{path}")
        return bytes(answer)


def _vault_key(ref: str, parsed: VaultKeyRef) -> KmsKey:
    vault = _Vault.from_env(ref)
    name = quote(parsed.name, safe="")
    version, pem = vkms.vault_transit_key(vault.call("GET", f"keys/{name}"), ref=ref, name=parsed.name)

    def scheme() -> str:
        return vkms.signing_hash(ref, pem)

    def sign(data: bytes) -> bytes:
        h = scheme()
        body: dict[str, Any] = {"key_version": version, "marshaling_algorithm": "asn1"}
        if h:
            body |= {"input": base64.b64encode(_digest(h, data)).decode(), "prehashed": True,
                     "hash_algorithm": _VAULT_HASHES[h]}
            if vkms.key_shape(pem)[0] == "RSA":
                body["signature_algorithm"] = "pkcs1v15"
        else:  # Ed25519 signs the message itself
            body["input"] = base64.b64encode(data).decode()
        return vkms.vault_signature(vault.call("POST", f"sign/{name}", body), ref=ref, version=version)

    return KmsKey(ref, pem, sign, scheme)


# ----------------------------------------------------------------------------------------------
# The edge's entry points


@dataclass(frozen=True)
class KmsEdge:
    """How the SDK clients are made. The defaults are the SDKs' own (their credential chains, their
    endpoints); tests hand real SDK clients aimed at a fake KMS on 127.0.0.1."""

    gcp_client: Any | None = None
    azure_credential: Any | None = None

    def open(self, ref: str) -> KmsKey:
        parsed = vkms.parse_kms_ref(ref)
        try:
            if isinstance(parsed, AwsKeyRef):
                return _aws_key(ref, parsed)
            if isinstance(parsed, GcpKeyRef):
                return _gcp_key(ref, parsed, self.gcp_client)
            if isinstance(parsed, AzureKeyRef):
                return _azure_key(ref, parsed, self.azure_credential)
            return _vault_key(ref, parsed)
        except KmsKeyUnavailable as exc:
            raise _scrubbed(exc) from None

    def public_key_pem(self, ref: str) -> bytes:
        try:
            return self.open(ref).pem
        except KmsKeyUnavailable:
            raise
        except Exception as exc:  # SDK errors of every provider: the key could not be fetched
            raise KmsKeyUnavailable(ref, f"cannot fetch the public key: {type(exc).__name__}: {scrub(str(exc))}") \
                from exc


def public_key_pem(ref: str) -> bytes:
    """``verify.kms.KmsPublicKeys`` with the SDKs' defaults."""
    return KmsEdge().public_key_pem(ref)


def open_signer(ref: str, edge: KmsEdge | None = None) -> KmsKey:
    """The signing key behind a KMS reference: its public key read and checked, and the key one that
    signs in the pack's scheme (else KmsKeyUnavailable, before anything is signed)."""
    edge = edge or KmsEdge()
    try:
        key = edge.open(ref)
        key.check()
        return key
    except KmsKeyUnavailable:
        raise
    except Exception as exc:
        raise KmsKeyUnavailable(ref, f"cannot fetch the public key: {type(exc).__name__}: {scrub(str(exc))}") from exc
