"""A real kube-apiserver + etcd on 127.0.0.1 for the integration tests, and helpers that create
objects the way the controllers and a kubelet would.

There is no controller-manager and no kubelet: the helpers create ReplicaSets, Jobs and Pods with the
ownerReferences the controllers would set (``controller: true``, the owner's real uid), and patch each
pod's ``status`` subresource with ``containerStatuses[].imageID`` as a kubelet would.

The binaries come from ``tests/tools/build-kube.sh`` (kube-apiserver built from the Go module proxy,
cached in ``~/.cache/sigaudit-tools/kube-apiserver-<version>/bin``; Debian's etcd-server). When they
are missing the fixture fails under ``CI=true`` and skips otherwise.

``tests/conftest.py`` registers this module as a plugin, so a test just asks for the fixture::

    def test_x(kube_apiserver: KubeAPIServer) -> None:
        api = kube_apiserver.admin_client()            # kubernetes.client.ApiClient (system:masters)
        kubeconfig = kube_apiserver.kubeconfig           # admin kubeconfig file
        sa_kubeconfig = kube_apiserver.service_account_kubeconfig("ns", "sa")  # TokenRequest token
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.harness.tools import cache_root

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tests" / "tools" / "build-kube.sh"
READY_TIMEOUT_S = 120.0

# ------------------------------------------------------------------------------------------------
# Locating the binaries


def pinned_kube_version() -> str:
    """The kube-apiserver version pinned in tests/tools/build-kube.sh (the one place it is written)."""
    m = re.search(r'^KUBE_VERSION="\$\{SIGAUDIT_KUBE_VERSION:-(v[0-9.]+)\}"', BUILD_SCRIPT.read_text(), re.M)
    if not m:
        raise RuntimeError(f"no pinned KUBE_VERSION in {BUILD_SCRIPT}")
    return os.environ.get("SIGAUDIT_KUBE_VERSION", m.group(1))


def tools_cache() -> Path:
    return cache_root()


def _missing(what: str) -> None:
    msg = f"{what} not available: run `make tools` (or tests/tools/ensure-tools.sh kube-apiserver,"
    msg += " tests/tools/build-kube.sh)"
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def find_kube_apiserver() -> Path | None:
    env = os.environ.get("SIGAUDIT_KUBE_APISERVER")
    path = Path(env) if env else tools_cache() / f"kube-apiserver-{pinned_kube_version()}" / "bin" / "kube-apiserver"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def find_etcd() -> Path | None:
    env = os.environ.get("SIGAUDIT_ETCD")
    if env:
        return Path(env) if os.access(env, os.X_OK) else None
    cached = sorted(tools_cache().glob("etcd-*/bin/etcd"))
    if cached:
        return cached[-1]
    found = shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)
    return Path(found) if found else None


# ------------------------------------------------------------------------------------------------
# PKI: a CA, a serving certificate, an admin client certificate, the service-account key pair


def _pem_key(key: Any) -> bytes:
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _cert(
    subject: x509.Name,
    key: Any,
    issuer: x509.Name,
    issuer_key: Any,
    *,
    ca: bool = False,
    server: bool = False,
    sans: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        b = b.add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


@dataclass(frozen=True)
class Pki:
    ca_crt: Path
    server_crt: Path
    server_key: Path
    admin_crt: Path
    admin_key: Path
    sa_key: Path  # private: signs service-account tokens
    sa_pub: Path  # public: verifies them


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("sigaudit-test-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert(
        _name("kube-apiserver"),
        srv_key,
        ca_name,
        ca_key,
        server=True,
        sans=[
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(IPv4Address("127.0.0.1")),
        ],
    )
    adm_key = ec.generate_private_key(ec.SECP256R1())
    adm = _cert(_name("sigaudit-test-admin", "system:masters"), adm_key, ca_name, ca_key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "server.crt": srv.public_bytes(serialization.Encoding.PEM),
        "server.key": _pem_key(srv_key),
        "admin.crt": adm.public_bytes(serialization.Encoding.PEM),
        "admin.key": _pem_key(adm_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
        (d / name).chmod(0o600)
    return Pki(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "admin.crt",
        d / "admin.key",
        d / "sa.key",
        d / "sa.pub",
    )


# ------------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@dataclass
class Etcd:
    binary: Path
    data_dir: Path
    log: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            str(self.binary),
            "--name=sigaudit-test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=sigaudit-test={peer}",
            "--initial-cluster-state=new",
            "--log-level=warn",
        ]
        env = {**os.environ, "ETCD_UNSUPPORTED_ARCH": os.environ.get("ETCD_UNSUPPORTED_ARCH", "")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}:\n{_tail(self.log)}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).json().get("health") == "true":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"etcd not healthy after 30s:\n{_tail(self.log)}")

    def _v3(self, method: str, body: Mapping[str, Any]) -> dict[str, Any]:
        # etcd's gRPC gateway (JSON, keys base64): no etcdctl needed.
        r = httpx.post(f"{self.url}/v3/{method}", json=body, timeout=30)
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def revision(self) -> int:
        res = self._v3("kv/range", {"key": base64.b64encode(b"/").decode(), "limit": 1})
        return int(res["header"]["revision"])

    def compact(self, revision: int | None = None) -> int:
        """Compact etcd's history up to ``revision`` (default: now), as a peer API server's compactor does:
        record it under ``compact_rev_key`` (which every kube-apiserver watches, so its watch cache drops
        the older snapshots) and compact. Older resourceVersions, and so the continue tokens that carry
        them, become too old: 410 Gone."""
        rev = revision if revision is not None else self.revision()
        key = base64.b64encode(b"compact_rev_key").decode()
        self._v3("kv/put", {"key": key, "value": base64.b64encode(str(rev).encode()).decode()})
        self._v3("kv/compaction", {"revision": rev, "physical": True})
        return rev

    def stop(self) -> None:
        _stop(self.proc)


def _kubeconfig(url: str, ca: Path, user: Mapping[str, str], name: str = "sigaudit-test") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": url,
                    "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": f"{name}-user", "user": dict(user)}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-user"}}],
        "current-context": name,
    }


@dataclass
class KubeAPIServer:
    """A running kube-apiserver (and its etcd). ``kubeconfig`` is an admin (system:masters) config."""

    binary: Path
    etcd: Etcd
    workdir: Path
    pki: Pki
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    startup_seconds: float = 0.0
    version: str = ""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def log(self) -> Path:
        return self.workdir / "kube-apiserver.log"

    def start(self, extra_args: Sequence[str] = ()) -> None:
        args = [
            str(self.binary),
            f"--etcd-servers={self.etcd.url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--tls-cert-file={self.pki.server_crt}",
            f"--tls-private-key-file={self.pki.server_key}",
            f"--client-ca-file={self.pki.ca_crt}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki.sa_pub}",
            f"--service-account-signing-key-file={self.pki.sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            # The ServiceAccount admission plugin wants each namespace's "default" ServiceAccount,
            # which the (absent) controller-manager creates.
            "--disable-admission-plugins=ServiceAccount",
            # The endpoint reconciler would publish 127.0.0.1 as the kubernetes Service endpoint,
            # which validation refuses (loopback).
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1",
            *extra_args,
        ]
        t0 = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.kubeconfig.write_text(
            yaml.safe_dump(
                _kubeconfig(
                    self.url,
                    self.pki.ca_crt,
                    {
                        "client-certificate-data": base64.b64encode(self.pki.admin_crt.read_bytes()).decode(),
                        "client-key-data": base64.b64encode(self.pki.admin_key.read_bytes()).decode(),
                    },
                )
            )
        )
        self.kubeconfig.chmod(0o600)
        self._wait_ready(t0)
        self.startup_seconds = time.monotonic() - t0
        self.version = str(self.http().get("/version").json().get("gitVersion", ""))

    def _wait_ready(self, t0: float) -> None:
        last = ""
        with self.http(timeout=2) as c:
            while time.monotonic() - t0 < READY_TIMEOUT_S:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"kube-apiserver exited with {self.proc.returncode}:\n{_tail(self.log)}")
                try:
                    r = c.get("/readyz")
                    if r.status_code == 200:
                        return
                    last = r.text[-500:]
                except httpx.HTTPError as exc:
                    last = repr(exc)
                time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready after {READY_TIMEOUT_S}s ({last}):\n{_tail(self.log)}")

    def stop(self) -> None:
        _stop(self.proc)

    def expire_continue_tokens(self, probe_path: str = "/api/v1/pods", timeout: float = 45.0) -> None:
        """Compact etcd (see ``Etcd.compact``) and wait until the API server answers 410 Gone to a
        continue token taken before, on ``probe_path`` (a list with at least two items). Each resource's
        watch cache notices compactions on its own poll (15 s in 1.34), hence the wait."""
        with self.http() as c:
            token = _check(c.get(probe_path, params={"limit": 1})).json()["metadata"].get("continue")
            assert token, f"{probe_path} has fewer than two items"
            create(
                c,
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"generateName": "compact-", "namespace": "default"},
                },
            )
            self.etcd.compact()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                r = c.get(probe_path, params={"limit": 1, "continue": token})
                if r.status_code == 410:
                    return
                _check(r)
                time.sleep(0.5)
        raise AssertionError(f"continue tokens on {probe_path} still valid {timeout}s after an etcd compaction")

    # -- clients ---------------------------------------------------------------------------------

    def http(self, *, timeout: float = 30, token: str | None = None) -> httpx.Client:
        """A raw REST client (admin client certificate, or ``token``); fast for bulk object creation."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        if token:
            return httpx.Client(
                base_url=self.url, verify=ctx, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
            )
        ctx.load_cert_chain(str(self.pki.admin_crt), str(self.pki.admin_key))
        return httpx.Client(base_url=self.url, verify=ctx, timeout=timeout)

    def admin_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for the admin kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]

    def token_for(self, namespace: str, service_account: str, *, seconds: int = 3600) -> str:
        """A bound token for a ServiceAccount, minted through the TokenRequest API."""
        with self.http() as c:
            r = c.post(
                f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
                json={
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {"expirationSeconds": seconds},
                },
            )
            _check(r)
            return str(r.json()["status"]["token"])

    def service_account_kubeconfig(
        self, namespace: str, service_account: str, path: Path | None = None, *, create: bool = True
    ) -> Path:
        """Write a kubeconfig that authenticates as ``system:serviceaccount:<ns>:<name>`` with a
        TokenRequest token (creating the namespace and ServiceAccount when ``create``)."""
        if create:
            ensure_namespace(self, namespace)
            apply(
                self,
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": service_account, "namespace": namespace},
                },
            )
        token = self.token_for(namespace, service_account)
        path = path or self.workdir / f"sa-{namespace}-{service_account}.kubeconfig"
        path.write_text(yaml.safe_dump(_kubeconfig(self.url, self.pki.ca_crt, {"token": token})))
        path.chmod(0o600)
        return path


# One server per session, however many test modules import the fixture (each import makes its own
# FixtureDef): the first setup starts it, the last teardown stops it.
_shared: dict[str, Any] = {"server": None, "users": 0, "cleanup": None}


def start_kube_apiserver(workdir: Path, extra_args: Sequence[str] = ()) -> tuple[KubeAPIServer, Callable[[], None]]:
    """Start etcd + kube-apiserver (with ``extra_args``) under ``workdir``; returns the server and its stop
    function."""
    apiserver_bin = find_kube_apiserver()
    if apiserver_bin is None:
        _missing(f"kube-apiserver {pinned_kube_version()}")
    etcd_bin = find_etcd()
    if etcd_bin is None:
        _missing("etcd (Debian etcd-server)")
    assert apiserver_bin is not None and etcd_bin is not None
    # etcd fsyncs every write: keep its data on tmpfs when there is one, for bulk-creation speed.
    shm = Path("/dev/shm")
    data_root = Path(tempfile.mkdtemp(prefix="sigaudit-etcd-", dir=shm if shm.is_dir() else None))
    etcd = Etcd(etcd_bin, data_root / "data", workdir / "etcd.log")
    server = KubeAPIServer(apiserver_bin, etcd, workdir, make_pki(workdir / "pki"))

    def cleanup() -> None:
        server.stop()
        etcd.stop()
        shutil.rmtree(data_root, ignore_errors=True)

    try:
        etcd.start()
        server.start(extra_args)
    except BaseException:
        cleanup()
        raise
    return server, cleanup


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """A real kube-apiserver + etcd for the whole session (tests isolate themselves by namespace)."""
    if _shared["server"] is None:
        server, cleanup = start_kube_apiserver(tmp_path_factory.mktemp("kube"))
        print(f"\nkube-apiserver {server.version} ready in {server.startup_seconds:.1f}s at {server.url}")
        _shared.update(server=server, cleanup=cleanup)
    _shared["users"] += 1
    try:
        yield _shared["server"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["cleanup"]()
            _shared.update(server=None, cleanup=None)


# ------------------------------------------------------------------------------------------------
# Objects, created as the controllers and the kubelet would


class KubeAPIError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {body[:500]}")


def _check(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        raise KubeAPIError(r.status_code, r.text)
    return r


_CORE = {"Pod", "Namespace", "ServiceAccount", "ConfigMap", "Secret", "Service"}
_GROUPS = {
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "StatefulSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def _collection_path(obj: Mapping[str, Any]) -> str:
    api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    plural = kind.lower() + ("es" if kind.endswith("s") else "s")
    if kind.endswith("y"):
        plural = kind.lower()[:-1] + "ies"
    if kind in _CLUSTER_SCOPED or not obj["metadata"].get("namespace"):
        return f"{base}/{plural}"
    return f"{base}/namespaces/{obj['metadata']['namespace']}/{plural}"


def create(server: KubeAPIServer | httpx.Client, obj: Mapping[str, Any]) -> dict[str, Any]:
    """POST an object; returns the stored object (with uid and resourceVersion)."""
    if isinstance(server, KubeAPIServer):
        with server.http() as c:
            return create(c, obj)
    out: dict[str, Any] = _check(server.post(_collection_path(obj), json=obj)).json()
    return out


def apply(server: KubeAPIServer, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Create, or return the existing object when it is already there."""
    try:
        return create(server, obj)
    except KubeAPIError as exc:
        if exc.status != 409:
            raise
        with server.http() as c:
            out: dict[str, Any] = _check(c.get(f"{_collection_path(obj)}/{obj['metadata']['name']}")).json()
            return out


def delete(server: KubeAPIServer, obj: Mapping[str, Any]) -> None:
    with server.http() as c:
        r = c.delete(f"{_collection_path(obj)}/{obj['metadata']['name']}")
        if r.status_code != 404:
            _check(r)


def ensure_namespace(server: KubeAPIServer, name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return apply(
        server,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}},
    )


def owner_ref(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The ownerReference a controller sets on what it creates."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def container(name: str, image: str) -> dict[str, Any]:
    return {"name": name, "image": image}


def pod_template(
    labels: Mapping[str, str],
    containers: Sequence[Mapping[str, Any]],
    init_containers: Sequence[Mapping[str, Any]] = (),
    *,
    restart_policy: str | None = None,
    pull_secrets: Sequence[str] = (),
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [dict(c) for c in containers]}
    if init_containers:
        spec["initContainers"] = [dict(c) for c in init_containers]
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    return {"metadata": {"labels": dict(labels)}, "spec": spec}


def _rand(n: int = 5) -> str:
    return uuid.uuid4().hex[:n]


def pod_manifest(
    namespace: str,
    name: str,
    template: Mapping[str, Any],
    owner: Mapping[str, Any] | None = None,
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {**template["metadata"].get("labels", {}), **(extra_labels or {})},
    }
    if owner is not None:
        meta["ownerReferences"] = [owner_ref(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": json.loads(json.dumps(template["spec"])),
    }


@dataclass(frozen=True)
class WorkloadObjects:
    """What a helper made: the top object, the intermediate controller objects and the pods."""

    top: dict[str, Any]
    intermediates: tuple[dict[str, Any], ...]
    pods: tuple[dict[str, Any], ...]


def _selector(name: str) -> dict[str, str]:
    return {"app": name}


def make_bare_pod(server: KubeAPIServer, namespace: str, name: str, template: Mapping[str, Any]) -> dict[str, Any]:
    return create(server, pod_manifest(namespace, name, template))


def make_deployment(
    server: KubeAPIServer, namespace: str, name: str, template: Mapping[str, Any], replicas: int = 2
) -> WorkloadObjects:
    """Deployment -> ReplicaSet ``<name>-<hash>`` -> Pods ``<name>-<hash>-<5>``, as the controllers do."""
    tpl = json.loads(json.dumps(template))
    tpl["metadata"]["labels"] = {**tpl["metadata"].get("labels", {}), **_selector(name)}
    dep = create(
        server,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": _selector(name)}, "template": tpl},
        },
    )
    dep.setdefault("apiVersion", "apps/v1")
    dep.setdefault("kind", "Deployment")
    pth = uuid.uuid4().hex[:10]
    rs_tpl = json.loads(json.dumps(tpl))
    rs_tpl["metadata"]["labels"]["pod-template-hash"] = pth
    rs = create(
        server,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{pth}",
                "namespace": namespace,
                "labels": rs_tpl["metadata"]["labels"],
                "ownerReferences": [owner_ref(dep)],
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {**_selector(name), "pod-template-hash": pth}},
                "template": rs_tpl,
            },
        },
    )
    rs.setdefault("apiVersion", "apps/v1")
    rs.setdefault("kind", "ReplicaSet")
    pods = tuple(
        create(server, pod_manifest(namespace, f"{rs['metadata']['name']}-{_rand()}", rs_tpl, rs))
        for _ in range(replicas)
    )
    return WorkloadObjects(dep, (rs,), pods)


def make_cronjob(
    server: KubeAPIServer, namespace: str, name: str, template: Mapping[str, Any], jobs: int = 1
) -> WorkloadObjects:
    """CronJob -> Job ``<name>-<minutes>`` -> Pod ``<job>-<5>``, as the CronJob and Job controllers do."""
    tpl = json.loads(json.dumps(template))
    tpl["spec"].setdefault("restartPolicy", "OnFailure")
    cj = create(
        server,
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": tpl}}},
        },
    )
    cj.setdefault("apiVersion", "batch/v1")
    cj.setdefault("kind", "CronJob")
    made_jobs, pods = [], []
    base = int(time.time() // 60)
    for i in range(jobs):
        job_name = f"{name}-{base - 5 * i}"
        job_tpl = json.loads(json.dumps(tpl))
        job_tpl["metadata"]["labels"] = {**job_tpl["metadata"].get("labels", {}), "job-name": job_name}
        job = create(
            server,
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": job_name, "namespace": namespace, "ownerReferences": [owner_ref(cj)]},
                "spec": {"template": job_tpl, "manualSelector": False},
            },
        )
        job.setdefault("apiVersion", "batch/v1")
        job.setdefault("kind", "Job")
        made_jobs.append(job)
        # The Job controller labels pods with controller-uid/batch.kubernetes.io/job-name; the API
        # server's defaulting put the selector on the Job already.
        job_labels = job["spec"]["template"]["metadata"]["labels"]
        pods.append(
            create(
                server,
                pod_manifest(
                    namespace,
                    f"{job_name}-{_rand()}",
                    {"metadata": {"labels": job_labels}, "spec": job_tpl["spec"]},
                    job,
                ),
            )
        )
    return WorkloadObjects(cj, tuple(made_jobs), tuple(pods))


def make_job(server: KubeAPIServer, namespace: str, name: str, template: Mapping[str, Any]) -> WorkloadObjects:
    """A Job with no CronJob above it."""
    tpl = json.loads(json.dumps(template))
    tpl["spec"].setdefault("restartPolicy", "Never")
    job = create(
        server,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"template": tpl},
        },
    )
    job.setdefault("apiVersion", "batch/v1")
    job.setdefault("kind", "Job")
    labels = job["spec"]["template"]["metadata"]["labels"]
    pod = create(
        server,
        pod_manifest(namespace, f"{name}-{_rand()}", {"metadata": {"labels": labels}, "spec": tpl["spec"]}, job),
    )
    return WorkloadObjects(job, (), (pod,))


def make_daemonset(
    server: KubeAPIServer, namespace: str, name: str, template: Mapping[str, Any], nodes: int = 2
) -> WorkloadObjects:
    tpl = json.loads(json.dumps(template))
    tpl["metadata"]["labels"] = {**tpl["metadata"].get("labels", {}), **_selector(name)}
    ds = create(
        server,
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": _selector(name)}, "template": tpl},
        },
    )
    ds.setdefault("apiVersion", "apps/v1")
    ds.setdefault("kind", "DaemonSet")
    pods = tuple(
        create(
            server,
            pod_manifest(
                namespace,
                f"{name}-{_rand()}",
                tpl,
                ds,
                {"controller-revision-hash": "6d4b75cb6d", "pod-template-generation": "1"},
            ),
        )
        for _ in range(nodes)
    )
    return WorkloadObjects(ds, (), pods)


def make_statefulset(
    server: KubeAPIServer, namespace: str, name: str, template: Mapping[str, Any], replicas: int = 2
) -> WorkloadObjects:
    tpl = json.loads(json.dumps(template))
    tpl["metadata"]["labels"] = {**tpl["metadata"].get("labels", {}), **_selector(name)}
    sts = create(
        server,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": {"matchLabels": _selector(name)},
                "template": tpl,
            },
        },
    )
    sts.setdefault("apiVersion", "apps/v1")
    sts.setdefault("kind", "StatefulSet")
    pods = tuple(
        create(
            server,
            pod_manifest(namespace, f"{name}-{i}", tpl, sts, {"statefulset.kubernetes.io/pod-name": f"{name}-{i}"}),
        )
        for i in range(replicas)
    )
    return WorkloadObjects(sts, (), pods)


# -- status, as the kubelet reports it --------------------------------------------------------------


def container_status(c: Mapping[str, Any], image_id: str | None, *, running: bool = True) -> dict[str, Any]:
    """A ``containerStatuses[]`` entry. ``image_id`` None is a container still waiting for its image."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    st: dict[str, Any] = {
        "name": c["name"],
        "image": c["image"],
        "imageID": image_id or "",
        "ready": bool(image_id) and running,
        "restartCount": 0,
        "started": bool(image_id) and running,
    }
    if image_id and running:
        st["state"] = {"running": {"startedAt": now}}
        st["containerID"] = "containerd://" + uuid.uuid4().hex * 2
    elif image_id:
        st["state"] = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}
        st["containerID"] = "containerd://" + uuid.uuid4().hex * 2
    else:
        st["state"] = {"waiting": {"reason": "ContainerCreating"}}
    return st


def report_status(
    server: KubeAPIServer | httpx.Client,
    pod: Mapping[str, Any],
    image_ids: Mapping[str, str | None] | Callable[[str], str | None],
) -> dict[str, Any]:
    """PATCH the pod's ``status`` subresource as a kubelet would: every container and initContainer
    gets a status whose ``imageID`` is ``image_ids[name]``; a None imageID leaves the pod Pending."""
    if isinstance(server, KubeAPIServer):
        with server.http() as c:
            return report_status(c, pod, image_ids)
    lookup = image_ids if callable(image_ids) else image_ids.get
    spec = pod["spec"]
    inits = [container_status(c, lookup(c["name"]), running=False) for c in spec.get("initContainers") or []]
    mains = [container_status(c, lookup(c["name"])) for c in spec.get("containers") or []]
    ephemeral = [container_status(c, lookup(c["name"])) for c in spec.get("ephemeralContainers") or []]
    pending = any(not s["imageID"] for s in inits + mains)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status: dict[str, Any] = {
        "phase": "Pending" if pending else "Running",
        "hostIP": "10.1.0.1",
        "podIP": f"10.244.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 2}",
        "startTime": now,
        "qosClass": "BestEffort",
        "containerStatuses": mains,
        "conditions": [{"type": "Ready", "status": "False" if pending else "True", "lastTransitionTime": now}],
    }
    if inits:
        status["initContainerStatuses"] = inits
    if ephemeral:
        status["ephemeralContainerStatuses"] = ephemeral
    meta = pod["metadata"]
    r = _check(
        server.patch(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
            content=json.dumps({"status": status}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
    )
    out: dict[str, Any] = r.json()
    return out


def add_ephemeral_container(server: KubeAPIServer, pod: Mapping[str, Any], name: str, image: str) -> dict[str, Any]:
    """What ``kubectl debug`` does: add an ephemeral container through the ``ephemeralcontainers``
    subresource."""
    meta = pod["metadata"]
    current = list(pod["spec"].get("ephemeralContainers") or [])
    current.append({"name": name, "image": image, "targetContainerName": pod["spec"]["containers"][0]["name"]})
    with server.http() as c:
        r = _check(
            c.patch(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/ephemeralcontainers",
                content=json.dumps({"spec": {"ephemeralContainers": current}}),
                headers={"Content-Type": "application/strategic-merge-patch+json"},
            )
        )
        out: dict[str, Any] = r.json()
        return out


def bulk_pods(
    server: KubeAPIServer,
    namespace: str,
    count: int,
    template: Mapping[str, Any],
    *,
    prefix: str = "bulk",
    image_id: str | None = None,
    threads: int = 8,
) -> list[str]:
    """Create ``count`` bare pods in parallel (and report their status when ``image_id``); returns names."""
    names = [f"{prefix}-{i:05d}" for i in range(count)]

    def work(chunk: Iterable[str]) -> None:
        with server.http(timeout=60) as c:
            for n in chunk:
                p = create(c, pod_manifest(namespace, n, template))
                if image_id:
                    report_status(c, p, lambda _n: image_id)

    chunks = [names[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as ex:
        for f in [ex.submit(work, ch) for ch in chunks]:
            f.result()
    return names
