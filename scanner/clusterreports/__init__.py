"""Policy reports in the cluster's own terms: OpenReports ``openreports.io/v1alpha1`` ``Report`` /
``ClusterReport`` and the older ``wgpolicyk8s.io/v1alpha2`` ``PolicyReport`` / ``ClusterPolicyReport``.

:mod:`.build` turns a :class:`~scanner.models.ScanResult` into report objects (pure, from fields);
:mod:`.apply` writes them to the API server with server-side apply and prunes sigaudit's own stale ones;
:mod:`.openreports` and :mod:`.policyreport` hold each API's names and its Kubernetes calls (one module
each, so that ``helm/rbac_from_code.py`` derives the chart's write rules from string constants).
"""

from scanner.clusterreports.build import FLAVORS, Flavor, build_reports, to_yaml

__all__ = ["FLAVORS", "Flavor", "build_reports", "to_yaml"]
