"""The kube-apiserver fixture is the real thing: pinned version, RBAC enforced, TokenRequest tokens,
status subresource, ownerReferences validated, and etcd compaction expiring continue tokens."""

from __future__ import annotations

import ssl

import httpx
import pytest

from tests.harness.fixtures_kube import (
    KubeAPIError,
    KubeAPIServer,
    bulk_pods,
    container,
    create,
    ensure_namespace,
    make_deployment,
    pinned_kube_version,
    pod_template,
    report_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.tools]

DIGEST = "sha256:" + "ab" * 32


def test_server_is_the_pinned_release_and_ready(kube_apiserver: KubeAPIServer) -> None:
    assert kube_apiserver.version == pinned_kube_version()
    with kube_apiserver.http() as c:
        assert c.get("/readyz").text == "ok"
        assert "default" in {n["metadata"]["name"] for n in c.get("/api/v1/namespaces").json()["items"]}
    print(f"kube-apiserver {kube_apiserver.version} started in {kube_apiserver.startup_seconds:.1f}s")


def test_admin_client_is_a_kubernetes_api_client(kube_apiserver: KubeAPIServer) -> None:
    from kubernetes import client

    api = client.VersionApi(kube_apiserver.admin_client())
    assert api.get_code().git_version == pinned_kube_version()


def test_anonymous_and_unbound_service_accounts_are_refused(kube_apiserver: KubeAPIServer) -> None:
    ctx = ssl.create_default_context(cafile=str(kube_apiserver.pki.ca_crt))
    with httpx.Client(base_url=kube_apiserver.url, verify=ctx) as anon:
        assert anon.get("/api/v1/pods").status_code in (401, 403)
    kubeconfig = kube_apiserver.service_account_kubeconfig("fixture-rbac", "nobody")
    assert kubeconfig.is_file()
    token = kube_apiserver.token_for("fixture-rbac", "nobody")
    with kube_apiserver.http(token=token) as c:
        who = c.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert who.status_code == 201, who.text
        assert who.json()["status"]["userInfo"]["username"] == "system:serviceaccount:fixture-rbac:nobody"
        r = c.get("/api/v1/pods", params={"limit": 1})
        assert r.status_code == 403
        assert 'cannot list resource "pods"' in r.json()["message"]


def test_helpers_make_what_controllers_and_kubelet_would(kube_apiserver: KubeAPIServer) -> None:
    ns = "fixture-objects"
    ensure_namespace(kube_apiserver, ns)
    tpl = pod_template({"tier": "web"}, [container("app", "nginx:1.25")], [container("init", "busybox")])
    made = make_deployment(kube_apiserver, ns, "web", tpl, replicas=2)
    (rs,) = made.intermediates
    assert rs["metadata"]["ownerReferences"][0]["uid"] == made.top["metadata"]["uid"]
    for pod in made.pods:
        ref = pod["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("ReplicaSet", rs["metadata"]["uid"], True)
        assert pod["metadata"]["labels"]["pod-template-hash"] == rs["metadata"]["name"].rsplit("-", 1)[1]
    out = report_status(kube_apiserver, made.pods[0], {"app": f"docker.io/library/nginx@{DIGEST}", "init": None})
    assert out["status"]["containerStatuses"][0]["imageID"] == f"docker.io/library/nginx@{DIGEST}"
    assert out["status"]["initContainerStatuses"][0]["imageID"] == ""
    assert out["status"]["phase"] == "Pending"
    # The spec is immutable through the status subresource, as for a real kubelet.
    assert out["spec"]["containers"][0]["image"] == "nginx:1.25"


def test_api_server_validates_what_the_helpers_send(kube_apiserver: KubeAPIServer) -> None:
    ns = "fixture-objects"
    ensure_namespace(kube_apiserver, ns)
    with pytest.raises(KubeAPIError) as err:
        create(
            kube_apiserver,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "x", "namespace": ns},
                "spec": {"containers": [{"name": "NOT valid", "image": "x"}]},
            },
        )
    assert err.value.status == 422


def test_compacted_continue_token_is_gone(kube_apiserver: KubeAPIServer) -> None:
    ns = "fixture-compact"
    ensure_namespace(kube_apiserver, ns)
    bulk_pods(kube_apiserver, ns, 6, pod_template({}, [container("c", "busybox")]), prefix="p", threads=2)
    path = f"/api/v1/namespaces/{ns}/pods"
    with kube_apiserver.http() as c:
        token = c.get(path, params={"limit": 2}).json()["metadata"]["continue"]
        assert token
        assert c.get(path, params={"limit": 2, "continue": token}).status_code == 200
        kube_apiserver.expire_continue_tokens(path)
        r = c.get(path, params={"limit": 2, "continue": token})
        assert r.status_code == 410, r.text
        assert r.json()["reason"] == "Expired"
        # A fresh list works again.
        assert len(c.get(path).json()["items"]) == 6
