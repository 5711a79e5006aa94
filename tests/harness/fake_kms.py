"""Hand-made KMS fakes on 127.0.0.1 for the evidence pack's KMS signers (issue #23).

There is no Google Cloud KMS, Azure Key Vault or Vault/OpenBao server to be had here (no emulator is
published for the first two; the Go module proxy refuses openbao's modules and Vault is not packaged), so
each fake speaks the documented REST API of its service — only the calls sigaudit makes — and signs with a
real key from ``cryptography``. The real SDKs are driven against them where they take an endpoint:

* :class:`FakeCloudKms`: Cloud KMS v1 REST (``cryptoKeys.get``, ``cryptoKeyVersions.list``,
  ``getPublicKey``, ``asymmetricSign`` with the CRC32C fields), for google-cloud-kms' REST transport with
  ``client_options={"api_endpoint": fake.url}``.
* :class:`FakeKeyVault`: Key Vault keys REST (``GET /keys/NAME[/VERSION]``, ``POST .../sign``) over TLS
  from a test CA (``.ca_path``, for ``REQUESTS_CA_BUNDLE``), for azure-keyvault-keys with
  ``vault_url=fake.url``. As Key Vault, it answers a request without a bearer token with a 401 challenge
  (the SDK sends the first request of a vault without its body to get it) and accepts only ``token``.
  The challenge's resource must be a parent domain of the vault's host (``vault.azure.net`` for
  ``NAME.vault.azure.net``); for ``127.0.0.1:PORT`` that is ``0.0.1:PORT``.
* :class:`FakeVault`: Vault transit (``GET /v1/transit/keys/NAME``, ``POST /v1/transit/sign/NAME``), plain
  HTTP; requests without the expected ``X-Vault-Token`` get 403.

``.misbehave`` makes the next signatures wrong in the ways an attacker or a broken KMS would:
``garbage`` (random bytes), ``other_key`` (a valid signature by another key), ``other_version`` (the
answer names another key version), ``bad_crc`` (Cloud KMS: a wrong ``signatureCrc32c``), ``no_verified``
(Cloud KMS: ``verifiedDigestCrc32c`` false), ``status`` (a 500), ``hang`` (no answer for a minute),
``giant`` (an 8 MiB body), ``echo`` (a 500 whose body repeats the request's credentials).

The SDKs keep no bound on an answer's size (a giant answer is bounded by the wall clock only, and its
extra members are dropped by their parsers); Vault's answers are read by sigaudit, bounded at 1 MiB.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from scanner.verify.kms import crc32c
from tests.harness.bomb_server import gzip_bomb

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def pem_of(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _hash(key: PrivateKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


def sign_digest(key: PrivateKey, digest: bytes) -> bytes:
    """What a KMS does with a prehashed request: DER for ECDSA, PKCS#1 v1.5 for RSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(digest, ec.ECDSA(Prehashed(_hash(key))))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(digest, padding.PKCS1v15(), Prehashed(_hash(key)))
    raise ValueError("Ed25519 signs messages, not digests")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Fake:
    """A threaded HTTP(S) server on 127.0.0.1 whose handler calls ``self.handle``."""

    scheme = "http"

    def __init__(self) -> None:
        self.misbehave: str | None = None
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.other = ec.generate_private_key(ec.SECP256R1())
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, dict(self.headers.items()), body))
                try:
                    status, answer = outer.handle(self.command, self.path, dict(self.headers.items()), body)
                except Exception as exc:  # a bug in the fake: say so
                    status, answer = 599, json.dumps({"error": repr(exc)}).encode()
                if status == -1:  # hang
                    time.sleep(60)
                    return
                self.send_response(status)
                if getattr(outer, "encoding", None):
                    self.send_header("Content-Encoding", outer.encoding)
                if 300 <= status < 400 and getattr(outer, "location", None):
                    self.send_header("Location", outer.location)
                if status == 401 and getattr(outer, "challenge", None):
                    self.send_header("WWW-Authenticate", outer.challenge)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                try:
                    self.wfile.write(answer)
                except OSError:
                    pass

            do_GET = do_POST = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._wrap(self._server)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _wrap(self, server: ThreadingHTTPServer) -> None:
        pass

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        raise NotImplementedError

    def _bad(self, key: PrivateKey, digest: bytes, good: bytes) -> bytes:
        """The signature the next answer carries, as ``misbehave`` says."""
        if self.misbehave == "garbage":
            return os.urandom(len(good))
        if self.misbehave == "other_key":
            return sign_digest(self.other, digest)
        return good

    def _early(self, headers: dict[str, str] | None = None) -> tuple[int, bytes] | None:
        if self.misbehave == "echo":  # an error body that repeats the request's credentials
            creds = {k: v for k, v in (headers or {}).items() if k.lower() in ("authorization", "x-vault-token")}
            return 500, json.dumps({"error": {"code": 500, "message": f"bad request with {creds}"}}).encode()
        if self.misbehave == "echo_bare":  # the credential alone, without a "Bearer"/"token:" before it
            creds = [v.split(" ", 1)[-1] for k, v in (headers or {}).items()
                     if k.lower() in ("authorization", "x-vault-token")]
            message = f"credential {' '.join(creds)} expired"
            return 500, json.dumps({"error": {"code": 500, "message": message}}).encode()
        if self.misbehave == "bomb":  # a few hundred bytes that inflate to 256 MiB ("gzip, gzip")
            self.encoding = "gzip, gzip"
            return 200, gzip_bomb(256)
        if self.misbehave == "redirect":  # to ``self.location``: another host
            return 307, b"{}"
        if self.misbehave == "status":
            return 500, b'{"error": {"code": 500, "message": "internal"}}'
        if self.misbehave == "slow":  # answers, each time just inside the SDKs' and sigaudit's per-call bounds
            time.sleep(getattr(self, "slow_seconds", 5.0))
            return None
        if self.misbehave == "hang":
            return -1, b""
        if self.misbehave == "giant":
            return 200, b'{"x": "' + b"A" * (8 * 1024 * 1024) + b'"}'
        return None


# ----------------------------------------------------------------------------------------------


def gcp_algorithm(key: PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "EC_SIGN_P384_SHA384" if isinstance(key.curve, ec.SECP384R1) else "EC_SIGN_P256_SHA256"
    assert isinstance(key, rsa.RSAPrivateKey)
    return f"RSA_SIGN_PKCS1_{key.key_size}_SHA256"


class FakeCloudKms(_Fake):
    """Cloud KMS v1 REST. ``keys``: crypto key name (projects/…/cryptoKeys/K) -> {version: private key}."""

    def __init__(self, keys: dict[str, dict[int, PrivateKey]], *, algorithm: dict[str, str] | None = None) -> None:
        self.keys = keys
        self.algorithm = algorithm or {}  # version name -> algorithm stated (default: the key's)
        super().__init__()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        p = unquote(urlsplit(path).path).removeprefix("/v1/")
        m = re.match(r"^(projects/.+/cryptoKeys/[^/:]+)(?:/cryptoKeyVersions(?:/(\d+))?)?"
                     r"(/publicKey|:asymmetricSign)?$", p)
        if not m or m.group(1) not in self.keys:
            return 404, b'{"error": {"code": 404, "message": "not found"}}'
        key_name, version, what = m.group(1), m.group(2), m.group(3)
        versions = self.keys[key_name]
        if what is None and version is None and "/cryptoKeyVersions" not in p:
            return 200, json.dumps({"name": key_name, "purpose": "ASYMMETRIC_SIGN"}).encode()
        if what is None and version is None:
            return 200, json.dumps({"cryptoKeyVersions": [
                {"name": f"{key_name}/cryptoKeyVersions/{v}", "state": "ENABLED", "algorithm": gcp_algorithm(k)}
                for v, k in versions.items()], "totalSize": len(versions)}).encode()
        if version is None or int(version) not in versions:
            return 404, b'{"error": {"code": 404, "message": "no such version"}}'
        key = versions[int(version)]
        name = f"{key_name}/cryptoKeyVersions/{version}"
        if what == "/publicKey":
            pem = pem_of(key).decode()
            return 200, json.dumps({"name": name, "pem": pem, "pemCrc32c": str(crc32c(pem.encode())),
                                    "algorithm": self.algorithm.get(name, gcp_algorithm(key)),
                                    "protectionLevel": "SOFTWARE"}).encode()
        if what == ":asymmetricSign" and method == "POST":
            early = self._early(headers)
            if early:
                return early
            req = json.loads(body)
            digest = base64.b64decode(next(iter(req["digest"].values())))
            verified = crc32c(digest) == int(req.get("digestCrc32c", -1))
            sig = self._bad(key, digest, sign_digest(key, digest))
            crc = crc32c(sig) ^ (1 if self.misbehave == "bad_crc" else 0)
            if self.misbehave == "echo_field":  # the credential where the version's name belongs
                name = {k.lower(): v for k, v in headers.items()}.get("authorization", "").split(" ", 1)[-1]
            answer_name = f"{key_name}/cryptoKeyVersions/{int(version) + 1}" if self.misbehave == "other_version" \
                else name
            return 200, json.dumps({"name": answer_name, "signature": base64.b64encode(sig).decode(),
                                    "signatureCrc32c": str(crc),
                                    "verifiedDigestCrc32c": verified and self.misbehave != "no_verified",
                                    "protectionLevel": "SOFTWARE"}).encode()
        return 400, b'{"error": {"code": 400}}'


# ----------------------------------------------------------------------------------------------


class FakeKeyVault(_Fake):
    """Azure Key Vault keys REST over TLS. ``keys``: name -> {version: private key} (the last is current)."""

    scheme = "https"

    def __init__(self, keys: dict[str, dict[str, PrivateKey]], workdir: Path, *, token: str = "entra-token") -> None:
        from tests.harness.fixtures_registry import write_tls_material

        self.keys, self.token = keys, token
        self.ca_path, self._cert, self._key = write_tls_material(workdir)
        super().__init__()

    def _wrap(self, server: ThreadingHTTPServer) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self._cert, self._key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)

    def _jwk(self, name: str, version: str, key: PrivateKey) -> dict[str, Any]:
        kid = f"{self.url}/keys/{name}/{version}"
        pub = key.public_key()
        if isinstance(pub, ec.EllipticCurvePublicKey):
            n = pub.public_numbers()
            size = (pub.curve.key_size + 7) // 8
            return {"kid": kid, "kty": "EC", "crv": {"secp256r1": "P-256", "secp384r1": "P-384"}[pub.curve.name],
                    "x": _b64url(n.x.to_bytes(size, "big")), "y": _b64url(n.y.to_bytes(size, "big")),
                    "key_ops": ["sign", "verify"]}
        assert isinstance(pub, rsa.RSAPublicKey)
        n2 = pub.public_numbers()
        return {"kid": kid, "kty": "RSA", "n": _b64url(n2.n.to_bytes((n2.n.bit_length() + 7) // 8, "big")),
                "e": _b64url(n2.e.to_bytes(3, "big")), "key_ops": ["sign", "verify"]}

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if auth != f"Bearer {self.token}":
            self.challenge = (f'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-'
                              f'000000000001", resource="https://0.0.1:{self.port}"')
            return 401, b'{"error": {"code": "Unauthorized", "message": "AKV10000"}}'
        m = re.match(r"^/keys/([^/?]+)/?([^/?]*)(/sign)?/?$", urlsplit(path).path)
        if not m or m.group(1) not in self.keys:
            return 404, b'{"error": {"code": "KeyNotFound", "message": "not found"}}'
        name, version, sign = m.group(1), m.group(2) or list(self.keys[m.group(1)])[-1], m.group(3)
        key = self.keys[name].get(version)
        if key is None:
            return 404, b'{"error": {"code": "KeyNotFound", "message": "no such version"}}'
        if not sign:
            jwk = self._jwk(name, version, key)
            if self.misbehave == "echo_field":  # the credential where the key id belongs
                jwk["kid"] = auth.split(" ", 1)[-1]
            return 200, json.dumps({"key": jwk, "attributes": {"enabled": True}}).encode()
        early = self._early(headers)
        if early:
            return early
        req = json.loads(body)
        digest = _unb64url(req["value"])
        # other_version: another version of the key signs (the SDK keeps the kid it asked for, not the answer's)
        signing = self.other if self.misbehave == "other_version" else key
        sig = self._bad(key, digest, sign_digest(signing, digest))
        if isinstance(key, ec.EllipticCurvePrivateKey) and self.misbehave != "garbage":
            r, s = decode_dss_signature(sig)
            size = (key.curve.key_size + 7) // 8
            sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
        kid = f"{self.url}/keys/{name}/{version}" + ("0" if self.misbehave == "other_version" else "")
        return 200, json.dumps({"kid": kid, "value": _b64url(sig)}).encode()


# ----------------------------------------------------------------------------------------------


def vault_type(key: PrivateKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp384r1": "ecdsa-p384", "secp521r1": "ecdsa-p521"}.get(key.curve.name, "ecdsa-p256")
    return f"rsa-{key.key_size}"


class FakeVault(_Fake):
    """Vault transit over plain HTTP. ``keys``: name -> {version: private key}; ``token``: the one accepted."""

    def __init__(self, keys: dict[str, dict[int, PrivateKey]], token: str) -> None:
        self.keys, self.token = keys, token
        super().__init__()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if {k.lower(): v for k, v in headers.items()}.get("x-vault-token") != self.token:
            return 403, b'{"errors": ["permission denied"]}'
        m = re.match(r"^/v1/transit/(keys|sign)/([^/?]+)$", urlsplit(path).path)
        if not m or m.group(2) not in self.keys:
            return 404, b'{"errors": []}'
        name, versions = m.group(2), self.keys[m.group(2)]
        latest = max(versions)
        if m.group(1) == "keys":
            return 200, json.dumps({"data": {
                "name": self.token if self.misbehave == "echo_field" else name,
                "type": vault_type(versions[latest]), "latest_version": latest,
                "supports_signing": True,
                "keys": {str(v): {"public_key": pem_of(k).decode(), "name": "P-256"} for v, k in versions.items()},
            }}).encode()
        early = self._early(headers)
        if early:
            return early
        req = json.loads(body)
        version = int(req.get("key_version") or latest)
        key = versions[version]
        data = base64.b64decode(req["input"])
        if isinstance(key, ed25519.Ed25519PrivateKey):
            sig = key.sign(data)
            if self.misbehave == "other_key":
                sig = ed25519.Ed25519PrivateKey.generate().sign(data)
            elif self.misbehave == "garbage":
                sig = os.urandom(64)
        else:
            assert req.get("prehashed") is True and req.get("marshaling_algorithm") == "asn1"
            sig = self._bad(key, data, sign_digest(key, data))
        shown = version + 1 if self.misbehave == "other_version" else version
        return 200, json.dumps({"data": {"signature": f"vault:v{shown}:{base64.b64encode(sig).decode()}",
                                         "key_version": shown}}).encode()
