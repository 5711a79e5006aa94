"""Credential sources for tests: docker credential helpers as small Python scripts on PATH (the
docker-credential-helpers protocol), and moto in server mode standing in for AWS STS and ECR."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.harness.tools import free_port, stop_process, wait_for_http

NOT_FOUND = "credentials not found in native keychain"


def write_helper(bindir: Path, name: str, body: str) -> Path:
    """``bindir/docker-credential-<name>``: a Python script (``json``, ``sys``, ``time`` imported)."""
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / f"docker-credential-{name}"
    path.write_text(f"#!{sys.executable}\nimport json, sys, time\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def write_answering_helper(bindir: Path, name: str, creds: Mapping[str, tuple[str, str]]) -> Path:
    """A helper that answers ``creds[server]`` = (username, secret) and "not found" for any other server."""
    return write_helper(bindir, name, f"""
        creds = {dict(creds)!r}
        server = sys.stdin.read()
        if server not in creds:
            print({NOT_FOUND!r}); sys.exit(1)
        user, secret = creds[server]
        print(json.dumps({{"ServerURL": server, "Username": user, "Secret": secret}}))
    """)


@contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    """moto in server mode on 127.0.0.1 (AWS_ENDPOINT_URL for every service); yields its URL."""
    port = free_port()
    log_path = workdir / "moto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", proc=proc, log_path=log_path, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def irsa_env(endpoint: str, account: str, token_file: Path) -> dict[str, str]:
    """The environment EKS gives a pod with IRSA (role ARN + projected token), pointed at ``endpoint``;
    no other AWS credential source is left for boto3's default chain to find."""
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2lnYXVkaXQifQ.c2ln")
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
            "AWS_ROLE_ARN": f"arn:aws:iam::{account}:role/sigaudit-reader",
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file), "AWS_ROLE_SESSION_NAME": "sigaudit",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true"}


STATIC_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


class TokenEndpoint:
    """A hand-made HTTP token endpoint on 127.0.0.1 standing in for a cloud's (the GCE metadata server,
    Azure's managed identity endpoint): ``routes`` maps a path regex to a JSON reply; every request is
    recorded (method, path with query, headers). The real ones cannot run here."""

    def __init__(self, routes: Mapping[str, object], headers: Mapping[str, str] | None = None) -> None:
        import json
        import re
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.requests.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
                path = self.path.split("?", 1)[0]
                reply = next((r for pattern, r in routes.items() if re.fullmatch(pattern, path)), None)
                body = json.dumps(reply).encode() if reply is not None else b"not found"
                self.send_response(200 if reply is not None else 404)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json" if reply is not None else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def gce_metadata_server(email: str, access_token: str) -> TokenEndpoint:
    """The GCE/GKE metadata server's part that google-auth's compute-engine credentials use."""
    sa = r"/computeMetadata/v1/instance/service-accounts/"
    return TokenEndpoint({
        "/": {},
        r"/computeMetadata/v1/project/project-id": "sigaudit-test",
        sa + r"default/": {"email": email, "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                           "aliases": ["default"]},
        sa + r"[^/]+/token": {"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"},
    }, headers={"Metadata-Flavor": "Google"})


def gce_env(server: TokenEndpoint, config_dir: Path) -> dict[str, str]:
    """Application Default Credentials that can only come from ``server`` (no key file, no gcloud config)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    return {"GCE_METADATA_HOST": server.host, "GCE_METADATA_IP": server.host, "CLOUDSDK_CONFIG": str(config_dir),
            "GOOGLE_APPLICATION_CREDENTIALS": "", "NO_GCE_CHECK": "False"}


def azure_msi_endpoint(access_token: str, identity_header: str) -> TokenEndpoint:
    """A managed identity endpoint (the App Service protocol azure-identity speaks when IDENTITY_ENDPOINT and
    IDENTITY_HEADER are set): an Entra ID access token for the resource asked."""
    import time as _time

    return TokenEndpoint({r"/msi/token": {
        "access_token": access_token, "expires_on": str(int(_time.time()) + 3600),
        "resource": "https://containerregistry.azure.net", "token_type": "Bearer"}})


AZURE_ENV_CLEARED = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                     "AZURE_FEDERATED_TOKEN_FILE", "AZURE_USERNAME", "AZURE_PASSWORD", "MSI_ENDPOINT", "MSI_SECRET",
                     "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT")


def acr_front(upstream: str, workdir: Path, *, entra_token: str, refresh_token: str):  # type: ignore[no-untyped-def]
    """An HTTPS front for a real docker-registry that also answers ACR's ``POST /oauth2/exchange``
    (grant ``access_token``): the ``refresh_token`` for exactly ``entra_token`` and this host as service,
    401 otherwise. Returns (front, ca_path); the front's ``exchanges`` lists the forms it received."""
    import json
    import ssl
    from urllib.parse import parse_qs

    from tests.harness.fixtures_registry import write_tls_material
    from tests.harness.hostile_registry import HostileRegistry

    class AcrFront(HostileRegistry):
        exchanges: list[dict[str, str]]

        def _handle(self, h):  # type: ignore[no-untyped-def]
            if h.command == "POST" and h.path.split("?", 1)[0] == "/oauth2/exchange":
                length = int(h.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(h.rfile.read(length).decode()).items()}
                self.exchanges.append(form)
                ok = form == {"grant_type": "access_token", "service": self.host, "access_token": entra_token}
                body = json.dumps({"refresh_token": refresh_token} if ok else {"errors": []}).encode()
                self._reply(h, 200 if ok else 401, {"Content-Type": "application/json"}, body)
                return
            super()._handle(h)

    workdir.mkdir(parents=True, exist_ok=True)
    front = AcrFront(upstream=upstream, forward_auth=True)
    front.exchanges = []
    ca_path, cert, key = write_tls_material(workdir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    front._server.socket = ctx.wrap_socket(front._server.socket, server_side=True)
    return front, ca_path
