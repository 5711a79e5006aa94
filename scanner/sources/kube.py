"""The Kubernetes API reads of ``--policy-from KIND:cluster`` (issue #18: moved here from the importers):
:class:`KubeClusterReader` implements ``scanner.policy.cluster.ClusterReader`` over the kubernetes client.
The calls keep constant arguments: ``helm/rbac_from_code.py`` derives the chart's RBAC from them."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scanner.errors import ConfigError, InventoryError
from scanner.inventory.kube import api_errors
from scanner.policy.cluster import ClusterReadError, ImportKind
from scanner.registry import deadline as deadlines

MAX_WEBHOOK_CONFIG_BYTES = 16 * 1024 * 1024
_KRITIS_RESOURCES = {
    "attestationauthorities": "AttestationAuthority",
    "genericattestationpolicies": "GenericAttestationPolicy",
    "imagesecuritypolicies": "ImageSecurityPolicy",
}


class KubeClusterReader:
    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, *, deadline: float | None = None
                ) -> KubeClusterReader:
        """``deadline``: the scan's (a ``time.monotonic()`` value), which cuts every request there."""
        from scanner.inventory.kube import load_api_client

        return cls(load_api_client(kubeconfig, context, deadline=deadline))

    def policy_documents(self, kind: ImportKind) -> list[dict[str, Any]]:
        if kind == "kritis":
            return _kritis_documents(self.api_client)
        return _crd_documents(self.api_client, kind)

    def secret_data(self, namespace: str, name: str) -> Mapping[str, Any]:
        try:
            with api_errors(f"get secret {namespace}/{name} (a policy key)"):
                resp = client.CoreV1Api(self.api_client).read_namespaced_secret(name, namespace, _preload_content=False)
                raw: Any = resp.data
            obj = json.loads(raw)
        except ApiException as exc:
            raise ClusterReadError(f"{exc.status} {exc.reason}") from exc
        data = obj.get("data") if isinstance(obj, Mapping) else None
        return data if isinstance(data, Mapping) else {}

    def validating_webhook_configurations(self) -> list[Any]:
        try:
            with api_errors("list validatingwebhookconfigurations"):
                resp = client.AdmissionregistrationV1Api(self.api_client).list_validating_webhook_configuration(
                    _preload_content=False
                )
                data = resp.data  # type: ignore[attr-defined]
            if len(data) > MAX_WEBHOOK_CONFIG_BYTES:
                raise ValueError(f"larger than {MAX_WEBHOOK_CONFIG_BYTES} bytes")
            items = json.loads(data).get("items") or []
        except ApiException as exc:
            raise ClusterReadError(f"cannot list validatingwebhookconfigurations ({exc.status} {exc.reason})") from exc
        except InventoryError as exc:
            if exc.__cause__ is not None and deadlines.cause(exc.__cause__) is not None:
                raise  # the scan's deadline ends the scan: not a warning about webhooks

            raise ClusterReadError(str(exc)) from exc
        except (ValueError, AttributeError, TypeError) as exc:
            raise ClusterReadError(f"cannot read validatingwebhookconfigurations ({type(exc).__name__})") from exc
        return items if isinstance(items, list) else []


def _crd_documents(api_client: Any, kind: str) -> list[dict[str, Any]]:
    api = client.CustomObjectsApi(api_client)
    calls: list[tuple[str, Callable[[], Any]]]
    if kind == "notation":
        calls = [
            (
                "notation.nirmata.io/v1alpha1 trustpolicies",
                lambda: api.list_cluster_custom_object(
                    "notation.nirmata.io", "v1alpha1", "trustpolicies", _preload_content=False
                ),
            ),
            (
                "notation.nirmata.io/v1alpha1 truststores",
                lambda: api.list_cluster_custom_object(
                    "notation.nirmata.io", "v1alpha1", "truststores", _preload_content=False
                ),
            ),
        ]
    elif kind == "kyverno":
        calls = [
            (
                "kyverno.io/v1 clusterpolicies",
                lambda: api.list_cluster_custom_object("kyverno.io", "v1", "clusterpolicies", _preload_content=False),
            ),
            (
                "kyverno.io/v1 policies",
                lambda: api.list_custom_object_for_all_namespaces(
                    "kyverno.io", "v1", "policies", _preload_content=False
                ),
            ),
            (
                "policies.kyverno.io/v1 imagevalidatingpolicies",
                lambda: api.list_cluster_custom_object(
                    "policies.kyverno.io", "v1", "imagevalidatingpolicies", _preload_content=False
                ),
            ),
            (
                "kyverno.io/v2 policyexceptions",
                lambda: api.list_custom_object_for_all_namespaces(
                    "kyverno.io", "v2", "policyexceptions", _preload_content=False
                ),
            ),
            (
                "policies.kyverno.io/v1 policyexceptions",
                lambda: api.list_custom_object_for_all_namespaces(
                    "policies.kyverno.io", "v1", "policyexceptions", _preload_content=False
                ),
            ),
        ]
    else:
        calls = [
            (
                "policy.sigstore.dev/v1beta1 clusterimagepolicies",
                lambda: api.list_cluster_custom_object(
                    "policy.sigstore.dev", "v1beta1", "clusterimagepolicies", _preload_content=False
                ),
            ),
            (
                "policy.sigstore.dev/v1alpha1 trustroots",
                lambda: api.list_cluster_custom_object(
                    "policy.sigstore.dev", "v1alpha1", "trustroots", _preload_content=False
                ),
            ),
        ]
    out: list[dict[str, Any]] = []
    for what, call in calls:
        try:
            with api_errors(f"list {what} (--policy-from)"):
                data = call().data
            items = json.loads(data).get("items") or []
        except ApiException as exc:
            if exc.status == 404:  # CRD not installed
                continue
            if exc.status == 403:
                raise ConfigError(f"forbidden: list {what} (the service account lacks this RBAC permission)") from exc
            raise ConfigError(f"cannot list {what}: {exc.status} {exc.reason}") from exc
        for it in items:
            it.setdefault("apiVersion", what.split()[0])
            it.setdefault(
                "kind",
                {
                    "clusterpolicies": "ClusterPolicy",
                    "policies": "Policy",
                    "clusterimagepolicies": "ClusterImagePolicy",
                    "trustroots": "TrustRoot",
                    "trustpolicies": "TrustPolicy",
                    "truststores": "TrustStore",
                    "imagevalidatingpolicies": "ImageValidatingPolicy",
                    "policyexceptions": "PolicyException",
                }[what.split()[1]],
            )
        out += items
    return out


def _kritis_documents(api_client: Any) -> list[dict[str, Any]]:
    api = client.CustomObjectsApi(api_client)
    out: list[dict[str, Any]] = []
    for plural, kind in _KRITIS_RESOURCES.items():
        try:
            with api_errors(f"list kritis.grafeas.io/v1beta1 {plural} (--policy-from)"):
                resp: Any = api.list_custom_object_for_all_namespaces(
                    "kritis.grafeas.io", "v1beta1", plural, _preload_content=False
                )
                data = resp.data
            items = json.loads(data).get("items") or []
        except ApiException as exc:
            if exc.status == 404:  # CRD not installed
                continue
            if exc.status == 403:
                raise ConfigError(f"forbidden: list kritis.grafeas.io/v1beta1 {plural}") from exc
            raise ConfigError(f"cannot list kritis.grafeas.io/v1beta1 {plural}: {exc.status} {exc.reason}") from exc
        for it in items:
            it.setdefault("apiVersion", "kritis.grafeas.io/v1beta1")
            it.setdefault("kind", kind)
        out += items
    return out
