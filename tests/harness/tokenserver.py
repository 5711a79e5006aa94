"""A hand-made Docker/OCI registry token issuer for tests.

This is NOT a real token server product: no such package can run on these machines, so this small
issuer implements just enough of the "Docker Registry v2 token authentication" protocol for the
real registry (distribution 2.8, Debian's ``docker-registry``) to accept its tokens:

* ``GET /token?service=...&scope=repository:<name>:<actions>[&scope=...]`` with optional HTTP basic
  credentials answers ``{"token", "access_token", "expires_in", "issued_at"}``;
* the token is an ES256 JWT whose header carries ``x5c`` (the self-signed signing certificate, which
  is also the registry's ``rootcertbundle``), with ``iss``, ``sub``, ``aud`` (= service), ``exp``,
  ``nbf``, ``iat``, ``jti`` and ``access`` claims.

Granting: a user in ``users`` with the right password gets every action it asks for (restricted to
``grants[user]`` when given); anonymous callers get ``anonymous_actions`` (default none); a wrong
password gets 401. Every token request is recorded in ``requests``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ISSUER = "sigaudit-test-issuer"
SERVICE = "sigaudit-test-registry"


@dataclass
class TokenRequest:
    account: str | None
    service: str | None
    scopes: list[str]
    status: int


def _signing_material(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@dataclass
class TokenServer:
    """Issues registry bearer tokens over HTTP on 127.0.0.1 (see module docstring)."""

    users: Mapping[str, str] = field(default_factory=dict)
    grants: Mapping[str, set[str]] | None = None
    anonymous_actions: frozenset[str] = frozenset()
    issuer: str = ISSUER
    service: str = SERVICE
    lifetime: int = 300
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._key, self._cert = _signing_material(self.issuer)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._host = "127.0.0.1"

    # --- material the registry needs -------------------------------------------------------
    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def write_rootcertbundle(self, path: Path) -> Path:
        path.write_bytes(self.cert_pem)
        return path

    @property
    def realm(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://{self._host}:{self._server.server_port}/token"

    # --- token minting ----------------------------------------------------------------------
    def issue(self, subject: str, access: list[dict[str, object]], audience: str | None = None) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience or self.service,
            "exp": now + self.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        der = self._cert.public_bytes(serialization.Encoding.DER)
        headers = {"typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        return jwt.encode(claims, self._key, algorithm="ES256", headers=headers)

    def _grant(self, account: str | None, scope: str) -> dict[str, object] | None:
        # scope = "<type>:<name>:<actions>"; names may contain ':' only in the registry host part,
        # which never appears here, so split from both ends.
        try:
            rtype, rest = scope.split(":", 1)
            name, actions_s = rest.rsplit(":", 1)
        except ValueError:
            return None
        wanted = {a for a in actions_s.split(",") if a}
        if account is None:
            allowed = set(self.anonymous_actions)
        elif self.grants is not None:
            allowed = set(self.grants.get(account, set()))
        else:
            allowed = wanted
        return {"type": rtype, "name": name, "actions": sorted(wanted & allowed)}

    def handle_token(self, query: str, authorization: str | None) -> tuple[int, dict[str, object]]:
        params = parse_qs(query)
        scopes = [s for value in params.get("scope", []) for s in value.split(" ") if s]
        service = params.get("service", [None])[0]
        account: str | None = None
        status = 200
        if authorization and authorization.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            except ValueError:
                user, password = "", ""
            if self.users.get(user) is None or not secrets.compare_digest(self.users[user], password):
                status = 401
            else:
                account = user
        with self._lock:
            self.requests.append(TokenRequest(account, service, scopes, status))
        if status != 200:
            return status, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        if service is not None and service != self.service:
            return 400, {"errors": [{"code": "DENIED", "message": f"unknown service {service}"}]}
        access = [g for g in (self._grant(account, s) for s in scopes) if g is not None]
        token = self.issue(account or "", access)
        issued = dt.datetime.now(dt.UTC).isoformat()
        return 200, {"token": token, "access_token": token, "expires_in": self.lifetime, "issued_at": issued}

    # --- HTTP server --------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> TokenServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/token":
                    self.send_error(404)
                    return
                status, body = owner.handle_token(url.query, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="sigaudit-test-tokens"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._host = host
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="tokenserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
