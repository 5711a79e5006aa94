"""Real OCI registries on 127.0.0.1 for integration tests.

Fixtures:

* ``registry`` (session): Debian's ``docker-registry`` (distribution 2.8), no auth.
* ``registry_factory`` (function): ``registry_factory(auth=None|"htpasswd"|"token", **options)``
  starts another one, stopped at the test's end. Options: ``users`` ({name: password}, default
  ``{"alice": "wonderland"}``), ``token_grants`` / ``anonymous_actions`` (token auth), ``storage``
  (a directory to reuse), ``tls=True`` (HTTPS with a fresh CA: ``.ca_path``, ``.url`` is https),
  ``extra_config`` (a dict deep-merged into the generated config).
* ``referrers_registry`` (session) and ``referrers_registry_factory``: a registry that serves the
  OCI 1.1 referrers API — ``ocireg`` (go-containerregistry's reference registry, built by
  ``tests/tools/ensure-tools.sh ocireg``). ``zot_registry`` is the same object under the name the
  test plan used: zot itself cannot be built here (its modules are not on the Go module proxy).

Every registry object has ``.host`` ("127.0.0.1:PORT"), ``.url`` ("http://127.0.0.1:PORT"),
``.log_path``, ``.requests()``, ``.request_count(method=None, path_prefix=None)`` (from the access
log), ``.auth`` (what to pass as ``auth=`` to :mod:`tests.harness.oci`, None without auth) and ``.stop()``.
"""

from __future__ import annotations

import copy
import re
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness.oci import RegistryAuth
from tests.harness.tokenserver import TokenServer
from tests.harness.tools import free_port, require_binary, require_tool, stop_process, wait_for_http

DEFAULT_USERS = {"alice": "wonderland"}

# distribution 2.8 access log (gorilla combined format):
#   127.0.0.1 - - [23/Nov/2026:10:00:00 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "python-httpx/0.28"
_ACCESS_LINE = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3}) ')
# ocireg (tests/tools/ocireg) writes the same shape.


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    method: str
    path: str
    status: int


@dataclass
class RunningRegistry:
    host: str
    log_path: Path
    proc: subprocess.Popen[bytes]
    kind: str = "distribution"
    root: Path | None = None
    config_path: Path | None = None
    auth: Any = None
    users: Mapping[str, str] = field(default_factory=dict)
    token_server: TokenServer | None = None
    ca_path: Path | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_path else 'http'}://{self.host}"

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    def requests(self) -> list[LoggedRequest]:
        """Requests seen so far, from the access log (in order)."""
        if not self.log_path.exists():
            return []
        out: list[LoggedRequest] = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _ACCESS_LINE.search(line)
            if m:
                out.append(LoggedRequest(m.group(1), m.group(2), int(m.group(3))))
        return out

    def request_count(self, method: str | None = None, path_prefix: str | None = None) -> int:
        """Number of requests in the access log, optionally of one method / under a path prefix."""
        return sum(
            1
            for r in self.requests()
            if (method is None or r.method == method.upper())
            and (path_prefix is None or r.path.startswith(path_prefix))
        )

    def client(self) -> httpx.Client:
        """An httpx client with this registry's credentials (close it, or use ``with``)."""
        return httpx.Client(base_url=self.url, auth=self.auth, timeout=30.0, verify=self.ssl_context())

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What to pass as httpx ``verify=``: a context trusting this registry's CA, or True."""
        return ssl.create_default_context(cafile=str(self.ca_path)) if self.ca_path else True

    def stop(self) -> None:
        stop_process(self.proc)
        if self.token_server is not None:
            self.token_server.stop()


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def _htpasswd_lines(users: Mapping[str, str]) -> str:
    """bcrypt htpasswd entries (the only hash distribution accepts)."""
    try:
        import bcrypt
    except ImportError:  # fall back to apache2-utils
        htpasswd = require_binary("htpasswd")
        return "".join(
            subprocess.run([str(htpasswd), "-nbB", user, pw], check=True, capture_output=True, text=True).stdout.strip()
            + "\n"
            for user, pw in users.items()
        )
    return "".join(
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=5)).decode()}\n" for user, pw in users.items()
    )


def write_tls_material(workdir: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> tuple[Path, Path, Path]:
    """A fresh CA and a server certificate for ``hosts``; returns (ca.pem, server.pem, server-key.pem)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sigaudit test registry CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = workdir / "ca.pem", workdir / "server.pem", workdir / "server-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


def start_distribution(
    workdir: Path,
    *,
    auth: str | None = None,
    users: Mapping[str, str] | None = None,
    token_grants: Mapping[str, set[str]] | None = None,
    anonymous_actions: frozenset[str] = frozenset(),
    storage: Path | None = None,
    tls: bool = False,
    extra_config: Mapping[str, Any] | None = None,
) -> RunningRegistry:
    """Start Debian's docker-registry with a generated config; returns once /v2/ answers."""
    binary = require_binary("docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    users = dict(DEFAULT_USERS if users is None else users)
    port = free_port()
    root = storage or workdir / "storage"
    root.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "sigaudit-test-secret"},
    }
    client_auth: Any = None
    token_server: TokenServer | None = None
    ca_path: Path | None = None
    if tls:
        ca_path, cert_path, key_path = write_tls_material(workdir)
        config["http"]["tls"] = {"certificate": str(cert_path), "key": str(key_path)}
    if auth == "htpasswd":
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(_htpasswd_lines(users), encoding="utf-8")
        config["auth"] = {"htpasswd": {"realm": "sigaudit-test", "path": str(htpasswd)}}
        first = next(iter(users.items()), None)
        client_auth = first
    elif auth == "token":
        token_server = TokenServer(users=users, grants=token_grants, anonymous_actions=anonymous_actions)
        token_server.start()
        bundle = token_server.write_rootcertbundle(workdir / "token-signer.pem")
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer,
                "rootcertbundle": str(bundle),
            }
        }
        first = next(iter(users.items()), None)
        client_auth = RegistryAuth(*first) if first else RegistryAuth()
    elif auth is not None:
        raise ValueError(f"unknown auth {auth!r} (None, 'htpasswd' or 'token')")
    if extra_config:
        _deep_merge(config, extra_config)
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = workdir / "registry.log"
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [str(binary), "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    log.close()
    reg = RunningRegistry(
        host=f"127.0.0.1:{port}",
        log_path=log_path,
        proc=proc,
        root=root,
        config_path=config_path,
        auth=client_auth,
        users=users if auth else {},
        token_server=token_server,
        ca_path=ca_path,
    )
    try:
        wait_for_http(
            f"{reg.url}/v2/",
            ok_statuses=(200, 401),
            proc=proc,
            log_path=log_path,
            verify=reg.ssl_context(),
        )
    except BaseException:
        reg.stop()
        raise
    return reg


def start_ocireg(workdir: Path) -> RunningRegistry:
    """Start ocireg (OCI 1.1 referrers API); returns once /v2/ answers."""
    binary = require_tool("ocireg")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "ocireg.log"
    blobs = workdir / "blobs"
    blobs.mkdir(exist_ok=True)
    out = (workdir / "ocireg.out").open("ab")
    proc = subprocess.Popen(
        [str(binary), "--address", f"127.0.0.1:{port}", "--disk", str(blobs), "--log", str(log_path)],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    out.close()
    reg = RunningRegistry(host=f"127.0.0.1:{port}", log_path=log_path, proc=proc, kind="ocireg", root=blobs)
    try:
        wait_for_http(f"{reg.url}/v2/", proc=proc, log_path=workdir / "ocireg.out")
    except BaseException:
        reg.stop()
        raise
    return reg


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A session-wide docker-registry (distribution 2.8) without auth."""
    reg = start_distribution(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., RunningRegistry]]:
    """``registry_factory(auth=None|"htpasswd"|"token", **options)``: a fresh docker-registry per call."""
    started: list[RunningRegistry] = []

    def make(**options: Any) -> RunningRegistry:
        reg = start_distribution(Path(tempfile.mkdtemp(prefix="registry-", dir=tmp_path)), **options)
        started.append(reg)
        return reg

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture(scope="session")
def referrers_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A session-wide registry serving the OCI 1.1 referrers API (ocireg)."""
    reg = start_ocireg(tmp_path_factory.mktemp("ocireg"))
    yield reg
    reg.stop()


@pytest.fixture
def referrers_registry_factory(tmp_path: Path) -> Iterator[Callable[[], RunningRegistry]]:
    """A fresh referrers-capable registry per call, stopped at the test's end."""
    started: list[RunningRegistry] = []

    def make() -> RunningRegistry:
        reg = start_ocireg(Path(tempfile.mkdtemp(prefix="ocireg-", dir=tmp_path)))
        started.append(reg)
        return reg

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture(scope="session")
def zot_registry(referrers_registry: RunningRegistry) -> RunningRegistry:
    """The referrers-capable registry under the test plan's name (ocireg stands in for zot)."""
    return referrers_registry


@pytest.fixture
def stalling_registry() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (a registry that hangs)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    done.set()
    t.join(timeout=2)
    for c in held:
        c.close()
    srv.close()
