"""helm/rbac_from_code.py derives (group, resource, verb) from kubernetes-client calls in source code,
asking the installed client for each method's request path. The chart comparison itself is in
tests/integration/test_helm_rbac.py (it needs the helm binary)."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("rbac_from_code", REPO / "helm" / "rbac_from_code.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rbac_from_code"] = module
    spec.loader.exec_module(module)
    return module


rbac = _load()
P = rbac.Permission


def derive(src: str) -> Any:
    result = rbac.Derivation()
    rbac.derive_file(Path("sample.py"), textwrap.dedent(src), result, "sample.py")
    return result


def test_typed_api_methods_map_through_their_request_paths() -> None:
    result = derive(
        """
        from kubernetes import client
        def f(api_client):
            core = client.CoreV1Api(api_client)
            core.list_pod_for_all_namespaces(limit=500)
            core.list_namespaced_pod("ns")
            client.AppsV1Api(api_client).read_namespaced_replica_set("rs", "ns")
            batch = client.BatchV1Api(api_client)
            batch.read_namespaced_job(name="j", namespace="ns")
            core.read_namespaced_secret("s", "ns", _preload_content=False)
            core.read_namespaced_pod_log("p", "ns")
            core.list_namespace()
        """
    )
    assert not result.problems
    assert set(result.permissions) == {
        P("", "pods", "list"),
        P("apps", "replicasets", "get"),
        P("batch", "jobs", "get"),
        P("", "secrets", "get"),
        P("", "pods/log", "get"),
        P("", "namespaces", "list"),
    }
    sites = result.permissions[P("", "pods", "list")]
    assert sorted(s.method for s in sites) == ["list_namespaced_pod", "list_pod_for_all_namespaces"]


def test_custom_objects_read_group_and_plural_from_literals_and_constants() -> None:
    result = derive(
        """
        from kubernetes import client
        GROUP = "kyverno.io"
        class Importer:
            PLURAL = "clusterimagepolicies"
            def run(self, api):
                co = client.CustomObjectsApi(api)
                co.list_cluster_custom_object(GROUP, "v1", "clusterpolicies")
                co.list_namespaced_custom_object(group=GROUP, version="v1", namespace="ns", plural="policies")
                co.list_cluster_custom_object("policy.sigstore.dev", "v1beta1", self.PLURAL)
                co.get_cluster_custom_object("policy.sigstore.dev", "v1alpha1", "trustroots", "name")
                co.list_custom_object_for_all_namespaces("kyverno.io", "v1", resource_plural="policies")
        """
    )
    assert not result.problems
    assert set(result.permissions) == {
        P("kyverno.io", "clusterpolicies", "list"),
        P("kyverno.io", "policies", "list"),
        P("policy.sigstore.dev", "clusterimagepolicies", "list"),
        P("policy.sigstore.dev", "trustroots", "get"),
    }


def test_scope_of_each_call_is_derived() -> None:
    result = derive(
        """
        def f(core, co):
            core.list_namespaced_pod("ns")
            core.list_pod_for_all_namespaces()
            core.read_namespaced_secret("s", "ns")
            co.list_custom_object_for_all_namespaces("kyverno.io", "v1", "policies")
            co.list_namespaced_custom_object("kyverno.io", "v1", "ns", "policies")
            co.list_cluster_custom_object("kyverno.io", "v1", "clusterpolicies")
            core.list_namespace()
        """
    )
    wide = {p for p in result.permissions if rbac.needs_cluster_wide(result, p)}
    # pods and kyverno policies are also read one namespace at a time; the rest only cluster-wide.
    assert wide == {P("kyverno.io", "clusterpolicies", "list"), P("", "namespaces", "list")}
    only_wide = derive("def f(co):\n    co.list_custom_object_for_all_namespaces('kyverno.io', 'v1', 'policies')\n")
    assert rbac.needs_cluster_wide(only_wide, P("kyverno.io", "policies", "list"))


def test_loop_variables_over_constant_collections_are_resolved() -> None:
    result = derive(
        """
        KINDS = {"imagesecuritypolicies": "ImageSecurityPolicy", "attestationauthorities": "AttestationAuthority"}
        GROUPS = ("a.example", "b.example")
        def f(co):
            for plural, kind in KINDS.items():
                co.list_custom_object_for_all_namespaces("kritis.grafeas.io", "v1beta1", plural)
            for g in GROUPS:
                co.list_cluster_custom_object(g, "v1", "things")
        """
    )
    assert not result.problems
    assert set(result.permissions) == {
        P("kritis.grafeas.io", "imagesecuritypolicies", "list"),
        P("kritis.grafeas.io", "attestationauthorities", "list"),
        P("a.example", "things", "list"),
        P("b.example", "things", "list"),
    }


def test_watches_need_the_watch_verb() -> None:
    result = derive(
        """
        from kubernetes import client, watch
        def f(core):
            w = watch.Watch()
            for ev in w.stream(core.list_namespaced_pod, "ns"):
                pass
            core.list_namespaced_pod("ns", watch=True)
            core.list_pod_for_all_namespaces(limit=10)
        """
    )
    assert set(result.permissions) == {P("", "pods", "list"), P("", "pods", "watch")}
    watch_sites = result.permissions[P("", "pods", "watch")]
    assert [s.line for s in watch_sites] == [5, 7]


def test_writes_are_derived_as_writes() -> None:
    result = derive(
        """
        def f(core, apps):
            core.create_namespaced_config_map("ns", body={})
            apps.patch_namespaced_deployment("d", "ns", body={})
            core.delete_collection_namespaced_pod("ns")
        """
    )
    assert set(result.permissions) == {
        P("", "configmaps", "create"),
        P("apps", "deployments", "patch"),
        P("", "pods", "deletecollection"),
    }


def test_a_server_side_apply_also_needs_create() -> None:
    # The real API server answers an apply of a missing object with 403 "cannot create resource" when
    # only patch is granted (tests/integration/test_kube_cluster_reports.py found it).
    result = derive(
        """
        APPLY = "application/apply-patch+yaml"
        def f(custom, apps):
            custom.patch_namespaced_custom_object("g.io", "v1", "ns", "things", "n", {}, field_manager="m",
                                                  _content_type=APPLY)
            apps.patch_namespaced_deployment("d", "ns", body={}, _content_type="application/apply-patch+json")
            apps.patch_namespaced_stateful_set("d", "ns", body={}, _content_type="application/merge-patch+json")
        """
    )
    assert set(result.permissions) == {
        P("g.io", "things", "patch"), P("g.io", "things", "create"),
        P("apps", "deployments", "patch"), P("apps", "deployments", "create"),
        P("apps", "statefulsets", "patch"),
    }
    assert derive(
        """
        def f(custom, ct):
            custom.patch_namespaced_custom_object("g.io", "v1", "ns", "things", "n", {}, _content_type=ct)
        """
    ).problems


def test_underivable_access_is_a_problem_not_a_silent_pass() -> None:
    result = derive(
        """
        from kubernetes.dynamic import DynamicClient
        def f(co, api_client, group):
            co.list_cluster_custom_object(group, "v1", "clusterpolicies")
            api_client.call_api("/api/v1/pods", "GET")
            DynamicClient(api_client)
        """
    )
    assert not result.permissions
    text = "\n".join(result.problems)
    assert "group/plural are not string literals" in text
    assert "call_api" in text and "DynamicClient" in text


def test_non_api_methods_are_ignored() -> None:
    result = derive(
        """
        def f(api, conn, engine):
            api.close()
            conn.close()
            engine.connect()
            api.get_api_resources()
        """
    )
    assert not result.permissions and not result.problems


def test_scanner_source_derives_without_problems() -> None:
    result = rbac.derive()
    assert not result.problems, result.problems
    assert P("", "pods", "list") in result.permissions
    table = rbac.markdown(result)
    assert '| `""` | `pods` | list |' in table
