"""Live inventory against a real kube-apiserver: every container type with the digest the kubelet
reported, owners walked through the API (ReplicaSet -> Deployment, Job -> CronJob), namespace filters,
and a 403 on one namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.harness.fixtures_kube import (
    KubeAPIServer,
    add_ephemeral_container,
    apply,
    container,
    create,
    ensure_namespace,
    make_bare_pod,
    make_cronjob,
    make_daemonset,
    make_deployment,
    make_job,
    make_statefulset,
    owner_ref,
    pod_manifest,
    pod_template,
    report_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.tools]

NS_A, NS_B, NS_OTHER = "sigaudit-inv-a", "sigaudit-inv-b", "other-inv-c"


def d(n: int) -> str:
    return "sha256:" + f"{n:02x}" * 32


# Both forms container runtimes put in imageID, and nothing for a container still pulling.
CONTAINERD = "docker.io/library/nginx@" + d(1)
DOCKER = "docker-pullable://busybox@" + d(2)


@dataclass
class Cluster:
    server: KubeAPIServer
    expected: dict[tuple[str, str], tuple[str, str, str | None]]  # (pod, container) -> (type, image, imageID)
    workloads: dict[str, tuple[str, str]]  # pod -> (kind, name)


class CountingClient:
    """Wraps a real ApiClient's REST layer and records each request (method, path, query) it sends."""

    def __init__(self, api_client: Any) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        rest = api_client.rest_client
        real = rest.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            parts = urlsplit(url)
            query = dict(parse_qsl(parts.query))
            query.update({str(k): v for k, v in (kwargs.get("query_params") or [])})
            self.calls.append((method, parts.path, query))
            return real(method, url, *args, **kwargs)

        rest.request = request
        self.api_client = api_client

    def lists(self) -> list[dict[str, Any]]:
        return [q for m, p, q in self.calls if m == "GET" and p.endswith("/pods")]

    def gets(self, plural: str) -> list[str]:
        return [p for m, p, _ in self.calls if m == "GET" and f"/{plural}/" in p]


@pytest.fixture(scope="module")
def cluster(kube_apiserver: KubeAPIServer) -> Iterator[Cluster]:
    s = kube_apiserver
    for ns in (NS_A, NS_B, NS_OTHER):
        ensure_namespace(s, ns)
    expected: dict[tuple[str, str], tuple[str, str, str | None]] = {}
    workloads: dict[str, tuple[str, str]] = {}

    def record(pod: dict[str, Any], ids: dict[str, str | None], kind: str, name: str) -> None:
        out = report_status(s, pod, ids)
        spec = out["spec"]
        for key, ctype in (
            ("initContainers", "initContainer"),
            ("containers", "container"),
            ("ephemeralContainers", "ephemeralContainer"),
        ):
            for c in spec.get(key) or []:
                expected[(out["metadata"]["name"], c["name"])] = (ctype, c["image"], ids.get(c["name"]))
        workloads[out["metadata"]["name"]] = (kind, name)

    web = make_deployment(
        s,
        NS_A,
        "web",
        pod_template({}, [container("app", "nginx:1.25")], [container("init", "busybox:1.36")]),
    )
    for p in web.pods:
        record(p, {"app": CONTAINERD, "init": DOCKER}, "Deployment", "web")

    nightly = make_cronjob(
        s,
        NS_A,
        "nightly",
        pod_template({}, [container("backup", "127.0.0.1:1/tools/backup:v1")]),
        jobs=2,
    )
    record(nightly.pods[0], {"backup": "127.0.0.1:1/tools/backup@" + d(3)}, "CronJob", "nightly")
    record(nightly.pods[1], {"backup": None}, "CronJob", "nightly")  # still pulling: no imageID yet

    once = make_job(s, NS_A, "once", pod_template({}, [container("migrate", "ghcr.io/acme/migrate:2")]))
    record(once.pods[0], {"migrate": "ghcr.io/acme/migrate@" + d(4)}, "Job", "once")

    agent = make_daemonset(s, NS_A, "agent", pod_template({}, [container("agent", "quay.io/acme/agent:1")]))
    for p in agent.pods:
        record(p, {"agent": "docker-pullable://quay.io/acme/agent@" + d(5)}, "DaemonSet", "agent")

    db = make_statefulset(s, NS_A, "db", pod_template({}, [container("pg", "postgres:16")]))
    for p in db.pods:
        record(p, {"pg": "docker.io/library/postgres@" + d(6)}, "StatefulSet", "db")

    # A ReplicaSet nobody owns, named and labelled like a Deployment's: only the API can tell.
    rs_tpl = pod_template({"pod-template-hash": "abcde12345", "app": "lonely"}, [container("c", "redis:7")])
    rs = create(
        s,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "lonely-abcde12345", "namespace": NS_A},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": rs_tpl["metadata"]["labels"]},
                "template": rs_tpl,
            },
        },
    )
    rs.update(apiVersion="apps/v1", kind="ReplicaSet")
    lonely = create(s, pod_manifest(NS_A, "lonely-abcde12345-x1y2z", rs_tpl, rs))
    record(lonely, {"c": "docker.io/library/redis@" + d(7)}, "ReplicaSet", "lonely-abcde12345")

    bare = make_bare_pod(s, NS_A, "debug-me", pod_template({}, [container("main", "alpine:3.20")]))
    bare = add_ephemeral_container(s, bare, "debugger", "busybox:1.36")
    record(bare, {"main": "docker.io/library/alpine@" + d(8), "debugger": DOCKER}, "Pod", "debug-me")

    for ns, name in ((NS_B, "b-pod"), (NS_OTHER, "c-pod")):
        p = make_bare_pod(s, ns, name, pod_template({}, [container("x", "nginx:1.25")]))
        report_status(s, p, {"x": CONTAINERD})
    yield Cluster(s, expected, workloads)


def _inventory(cluster: Cluster, **kwargs: Any) -> tuple[list[Any], CountingClient]:
    from scanner.inventory.kube import KubeOwnerResolver, iter_pods, load_api_client
    from scanner.inventory.pods import containers_from_pod

    counting = CountingClient(load_api_client(str(cluster.server.kubeconfig)))
    owners = KubeOwnerResolver(counting.api_client)
    out = []
    for pod in iter_pods(api_client=counting.api_client, **kwargs):
        out.extend(containers_from_pod(pod, owners))
    return out, counting


def test_every_container_type_with_the_digest_the_kubelet_reported(cluster: Cluster) -> None:
    from scanner.inventory.kube import iter_pods
    from scanner.inventory.pods import containers_from_pod
    from scanner.models import ContainerType

    owners = _owners(cluster)
    got = {}
    for pod in iter_pods(kubeconfig=str(cluster.server.kubeconfig), namespaces=[NS_A]):
        assert "containerStatuses" in pod["status"]  # camelCase JSON, as kubectl prints it
        for c in containers_from_pod(pod, owners):
            assert c.namespace == NS_A
            assert c.pod_uid == pod["metadata"]["uid"]
            got[(c.pod, c.container)] = (str(c.container_type), c.image, c.image_id)
    assert got == cluster.expected
    types = {t for t, _, _ in got.values()}
    assert types == {ContainerType.CONTAINER, ContainerType.INIT, ContainerType.EPHEMERAL}
    ids = {i for _, _, i in got.values()}
    assert CONTAINERD in ids and DOCKER in ids and None in ids


def _owners(cluster: Cluster) -> Any:
    from scanner.inventory.kube import KubeOwnerResolver, load_api_client

    return KubeOwnerResolver(load_api_client(str(cluster.server.kubeconfig)))


def test_owners_are_walked_through_the_api_and_cached(cluster: Cluster) -> None:
    containers, counting = _inventory(cluster, namespaces=[NS_A])
    got = {c.pod: (c.workload.kind, c.workload.name) for c in containers}
    assert got == cluster.workloads
    # One GET per owner object, however many pods and containers share it.
    rs_gets = counting.gets("replicasets")
    job_gets = counting.gets("jobs")
    assert sorted(set(rs_gets)) == sorted(rs_gets) and len(rs_gets) == 2  # web-<hash> and lonely
    assert sorted(set(job_gets)) == sorted(job_gets) and len(job_gets) == 3  # two nightly jobs, once


def test_owner_gone_falls_back_to_the_pod_reference(cluster: Cluster) -> None:
    s = cluster.server
    ns = "sigaudit-inv-orphan"
    ensure_namespace(s, ns)
    ghost = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ghost", "uid": str(uuid.uuid4())}}
    tpl = pod_template({}, [container("c", "busybox")])
    pod = pod_manifest(ns, "ghost-abcde", tpl)
    pod["metadata"]["ownerReferences"] = [owner_ref(ghost)]
    create(s, pod)
    containers, _ = _inventory(cluster, namespaces=[ns])
    assert [(c.workload.kind, c.workload.name) for c in containers] == [("Job", "ghost")]


@pytest.mark.parametrize(
    ("include", "exclude", "want"),
    [
        ([NS_B], [], {NS_B}),
        ([NS_A, NS_B], [], {NS_A, NS_B}),
        (["sigaudit-inv-[ab]"], [], {NS_A, NS_B}),
        (["sigaudit-inv-*"], [NS_B], {NS_A}),
        ([], ["sigaudit-inv-*"], {NS_OTHER}),
    ],
)
def test_namespace_filters(cluster: Cluster, include: list[str], exclude: list[str], want: set[str]) -> None:
    containers, _ = _inventory(cluster, namespaces=include, exclude_namespaces=exclude)
    seen = {c.namespace for c in containers}
    assert seen & {NS_A, NS_B, NS_OTHER} == want
    for ns in seen:  # other tests' namespaces may be there too, but only when the filters allow them
        assert not include or any(fnmatchcase(ns, i) for i in include)
        assert not any(fnmatchcase(ns, e) for e in exclude)


def test_forbidden_namespace_is_reported_and_the_rest_is_listed(cluster: Cluster) -> None:
    from scanner.errors import InventoryError
    from scanner.inventory.kube import iter_pods

    s = cluster.server
    ensure_namespace(s, "sigaudit-inv-sa")
    kubeconfig = s.service_account_kubeconfig("sigaudit-inv-sa", "scoped")
    apply(
        s,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "list-pods", "namespace": NS_A},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        },
    )
    apply(
        s,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "scoped-list-pods", "namespace": NS_A},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "list-pods"},
            "subjects": [{"kind": "ServiceAccount", "name": "scoped", "namespace": "sigaudit-inv-sa"}],
        },
    )
    problems: list[str] = []
    pods = list(iter_pods(kubeconfig=str(kubeconfig), namespaces=[NS_A, NS_B], problems=problems))
    assert {p["metadata"]["namespace"] for p in pods} == {NS_A}
    assert len(pods) == len(cluster.workloads)
    assert len(problems) == 1 and "forbidden" in problems[0] and NS_B in problems[0]
    assert "list pods" in problems[0]

    with pytest.raises(InventoryError) as err:
        list(iter_pods(kubeconfig=str(kubeconfig)))
    assert "forbidden" in str(err.value) and "list pods" in str(err.value)


def test_sigaudit_scan_reads_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    """The CLI end to end: containers and owners in the JSON document, pods from the API server."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
        "  exemptions:\n    - {images: ['*'], reason: inventory test, until: '2099-01-01T00:00:00Z'}\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "scanner.cli",
        "scan",
        "--kubeconfig",
        str(cluster.server.kubeconfig),
        "-n",
        NS_A,
        "--policy",
        str(policy),
        "--no-store",
        "--output",
        "json",
        "--no-progress",
        "--page-size",
        "3",
    ]
    env = {**os.environ, "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "docker")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["scan"]["status"] == "complete", r.stderr[-3000:]
    got = {
        (c["pod"], c["container"]): (c["container_type"], c["image"], c["image_id"])
        for i in doc["images"]
        for c in i["containers"]
    }
    assert got == cluster.expected
    kinds = {c["pod"]: (c["workload_kind"], c["workload_name"]) for i in doc["images"] for c in i["containers"]}
    assert kinds == cluster.workloads


def test_a_tenants_hostile_pod_never_keeps_the_clusters_scan_from_being_recorded(
        kube_apiserver: KubeAPIServer, postgres_url: str, tmp_path: Path) -> None:
    """Anyone who may create a pod in one namespace writes its image and ownerReferences: the API server
    takes a NUL in the image and a 200-character ownerReference kind. PostgreSQL refused both, and with
    them the whole scan (exit 3, nothing recorded, at every run): one tenant blinded the audit of the
    cluster. Now the scan is recorded (the pod is an error verdict, non-compliant) and reports read it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    s = kube_apiserver
    ns = f"hostile-{uuid.uuid4().hex[:6]}"
    ensure_namespace(s, ns)
    nul_image, long_kind = "reg.example/app\x00:1", "K" * 200
    manifest = pod_manifest(ns, "tenant", pod_template({}, [container("c", nul_image)]))
    manifest["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": long_kind, "name": "w\x00", "uid": str(uuid.uuid4()), "controller": True}]
    created = create(s, manifest)
    assert created["spec"]["containers"][0]["image"] == nul_image  # the API server stored it as written
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {
        "rules": [{"name": "r", "images": ["*"], "verifiers": [{"cosign": {"key": pem}}]}]}}))
    env = {**os.environ, "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "docker")}
    cli = [sys.executable, "-m", "scanner.cli"]
    assert subprocess.run([*cli, "db", "upgrade", "--db", postgres_url], capture_output=True, timeout=120,
                          env=env).returncode == 0
    r = subprocess.run([*cli, "scan", "--kubeconfig", str(s.kubeconfig), "-n", ns, "--policy", str(policy),
                        "--db", postgres_url, "-o", "json", "--no-progress"],
                       capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 1, r.stderr[-3000:]  # complete, and the tenant's pod is non-compliant
    doc = json.loads(r.stdout)
    assert doc["scan"]["status"] == "complete" and [i["status"] for i in doc["images"]] == ["error"]
    for fmt in ("json", "html", "csv"):
        rep = subprocess.run([*cli, "report", "--db", postgres_url, "--format", fmt], capture_output=True,
                             timeout=120, env=env)
        assert rep.returncode == 0, rep.stderr.decode(errors="replace")[-2000:]
        text = rep.stdout.decode("utf-8")
        if fmt == "json":
            text = json.dumps(json.loads(text), ensure_ascii=False)
        assert "reg.example/app\ufffd:1" in text
