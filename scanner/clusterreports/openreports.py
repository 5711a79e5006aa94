"""OpenReports (``openreports.io/v1alpha1``): the names of its API and sigaudit's calls to it.

Every call names the group and plural through this module's constants, so that
``helm/rbac_from_code.py`` derives exactly the rules the chart's ``clusterReports`` switch grants.
"""

from __future__ import annotations

from typing import Any

GROUP = "openreports.io"
VERSION = "v1alpha1"
KIND = "Report"
PLURAL = "reports"
CLUSTER_KIND = "ClusterReport"
CLUSTER_PLURAL = "clusterreports"
APPLY = "application/apply-patch+yaml"


class Api:
    """The calls :mod:`scanner.clusterreports.apply` makes, on OpenReports' resources."""

    api_version = f"{GROUP}/{VERSION}"

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)

    def list_namespaced(self, selector: str, cont: str | None) -> dict[str, Any]:
        out: Any = self._api.list_custom_object_for_all_namespaces(
            GROUP, VERSION, PLURAL, label_selector=selector, limit=500, _continue=cont)
        return dict(out)

    def list_cluster(self, selector: str, cont: str | None) -> dict[str, Any]:
        out: Any = self._api.list_cluster_custom_object(
            GROUP, VERSION, CLUSTER_PLURAL, label_selector=selector, limit=500, _continue=cont)
        return dict(out)

    def apply_namespaced(self, namespace: str, name: str, body: dict[str, Any], manager: str, force: bool) -> None:
        self._api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body,
                                                 field_manager=manager, force=force, _content_type=APPLY)

    def apply_cluster(self, name: str, body: dict[str, Any], manager: str, force: bool) -> None:
        self._api.patch_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, name, body,
                                              field_manager=manager, force=force, _content_type=APPLY)

    def delete_namespaced(self, namespace: str, name: str, uid: str) -> None:
        from kubernetes import client

        self._api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                  body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)))

    def delete_cluster(self, name: str, uid: str) -> None:
        from kubernetes import client

        self._api.delete_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, name,
                                               body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)))
