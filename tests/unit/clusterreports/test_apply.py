"""What a scan may replace and delete, on an in-memory report API (the real API server is in
tests/integration/test_kube_cluster_reports.py): only sigaudit's own reports, only after a complete scan,
only in the namespaces it audited; another tool's report is never forced or deleted."""

from __future__ import annotations

from typing import Any

from scanner.clusterreports import FLAVORS
from scanner.clusterreports.apply import FIELD_MANAGER, apply_reports
from scanner.models import ScanState, Status
from tests.unit.clusterreports.test_build import _c, _image, _scan, _verdict


class ApiError(Exception):
    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"HTTP {status}")


class MemoryReports:
    """Reports keyed by (namespace or None, name), with server-side apply's ownership and conflicts."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str | None, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.fail_list = False
        self.fail_apply: set[tuple[str | None, str]] = set()

    def put(self, ns: str | None, name: str, labels: dict[str, str], manager: str, op: str = "Apply") -> None:
        meta: dict[str, Any] = {"name": name, "labels": labels, "uid": f"uid-{ns}-{name}",
                                "managedFields": [{"manager": manager, "operation": op}]}
        if ns:
            meta["namespace"] = ns
        self.objects[ns, name] = {"kind": "Report", "metadata": meta}

    def _list(self, namespaced: bool, selector: str) -> dict[str, Any]:
        if self.fail_list:
            raise ApiError(403)
        wanted = dict(term.split("=", 1) for term in selector.split(","))  # label selector: every term
        items = [o for (ns, _), o in self.objects.items() if (ns is not None) == namespaced
                 and all(o["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
        return {"items": items, "metadata": {}}

    def list_namespaced(self, selector: str, cont: str | None) -> dict[str, Any]:
        return self._list(True, selector)

    def list_cluster(self, selector: str, cont: str | None) -> dict[str, Any]:
        return self._list(False, selector)

    def _apply(self, key: tuple[str | None, str], body: dict[str, Any], manager: str, force: bool) -> None:
        self.calls.append(("apply", key, force))
        if key in self.fail_apply:
            raise ApiError(500)
        cur = self.objects.get(key)
        if cur is not None and not force and any(m["manager"] != manager for m in cur["metadata"]["managedFields"]):
            raise ApiError(409)
        body = {**body, "metadata": {**body["metadata"], "uid": f"uid-{key[0]}-{key[1]}",
                                     "managedFields": [{"manager": manager, "operation": "Apply"}]}}
        self.objects[key] = body

    def apply_namespaced(self, namespace: str, name: str, body: dict[str, Any], manager: str, force: bool) -> None:
        self._apply((namespace, name), body, manager, force)

    def apply_cluster(self, name: str, body: dict[str, Any], manager: str, force: bool) -> None:
        self._apply((None, name), body, manager, force)

    def delete_namespaced(self, namespace: str, name: str, uid: str) -> None:
        self.calls.append(("delete", (namespace, name), uid))
        del self.objects[namespace, name]

    def delete_cluster(self, name: str, uid: str) -> None:
        self.calls.append(("delete", (None, name), uid))
        del self.objects[None, name]


OURS = {"app.kubernetes.io/managed-by": "sigaudit", "sigaudit.io/cluster": "prod"}  # _scan's cluster
FLAVOR = FLAVORS["openreports"]


def _shop_scan(state: ScanState = ScanState.COMPLETE) -> Any:
    return _scan(_verdict(Status.UNSIGNED, image=_image(_c(ns="shop"))), state=state,
                 errors=("namespace x: forbidden",) if state is ScanState.PARTIAL else ())


def test_a_complete_scan_replaces_its_own_and_prunes_only_its_own() -> None:
    api = MemoryReports()
    api.put("shop", "sigaudit", OURS, FIELD_MANAGER)  # last scan's
    api.put("gone", "sigaudit", OURS, FIELD_MANAGER)  # a namespace whose workloads are gone
    api.put(None, "sigaudit", OURS, FIELD_MANAGER)  # a partial scan's cluster report
    api.put("gone", "lookalike", OURS, "kyverno")  # a copied label, another manager
    api.put("gone", "sigaudit-2", OURS, FIELD_MANAGER, op="Update")  # a copied name, not an apply
    api.put("shop", "kyverno-polr", {"app.kubernetes.io/managed-by": "kyverno"}, "kyverno")
    out = apply_reports(_shop_scan(), FLAVOR, api)
    assert out.problems == []
    assert out.applied == ["shop/sigaudit"]
    assert sorted(out.deleted) == ["gone/sigaudit", "sigaudit"]
    assert ("apply", ("shop", "sigaudit"), True) in api.calls  # forced only over its own object
    assert set(api.objects) == {("shop", "sigaudit"), ("gone", "lookalike"), ("gone", "sigaudit-2"),
                                ("shop", "kyverno-polr")}
    assert ("delete", ("gone", "sigaudit"), "uid-gone-sigaudit") in api.calls  # the uid it listed, no other


def test_another_tools_object_with_sigaudits_name_is_not_forced() -> None:
    api = MemoryReports()
    api.put("shop", "sigaudit", OURS, "kyverno")
    out = apply_reports(_shop_scan(), FLAVOR, api)
    assert api.calls == [("apply", ("shop", "sigaudit"), False)]
    assert out.problems == ["cannot apply Report shop/sigaudit: HTTP 409"]
    assert api.objects["shop", "sigaudit"]["metadata"]["managedFields"][0]["manager"] == "kyverno"


def test_a_partial_scan_writes_but_deletes_nothing() -> None:
    api = MemoryReports()
    api.put("unlisted", "sigaudit", OURS, FIELD_MANAGER)
    out = apply_reports(_shop_scan(ScanState.PARTIAL), FLAVOR, api)
    assert sorted(out.applied) == ["shop/sigaudit", "sigaudit"]  # with the cluster report of its errors
    assert out.deleted == [] and ("unlisted", "sigaudit") in api.objects


def test_a_namespace_the_scan_did_not_audit_keeps_its_report() -> None:
    api = MemoryReports()
    api.put("team-b", "sigaudit", OURS, FIELD_MANAGER)
    api.put("team-a-old", "sigaudit", OURS, FIELD_MANAGER)
    out = apply_reports(_shop_scan(), FLAVOR, api, in_scope=lambda ns: ns != "team-b")
    assert out.deleted == ["team-a-old/sigaudit"] and ("team-b", "sigaudit") in api.objects


def test_a_failed_scan_writes_nothing() -> None:
    for state in (ScanState.FAILED, ScanState.RUNNING):
        api = MemoryReports()
        api.put("gone", "sigaudit", OURS, FIELD_MANAGER)
        out = apply_reports(_shop_scan(state), FLAVOR, api)
        assert api.calls == [] and out.problems and out.applied == []


def test_no_deletion_without_full_knowledge() -> None:
    api = MemoryReports()
    api.put("gone", "sigaudit", OURS, FIELD_MANAGER)
    api.fail_list = True
    out = apply_reports(_shop_scan(), FLAVOR, api)
    assert api.calls == [] and out.problems == ["cannot list the existing Report objects: HTTP 403"]

    api = MemoryReports()
    api.put("gone", "sigaudit", OURS, FIELD_MANAGER)
    api.fail_apply = {("shop", "sigaudit")}
    out = apply_reports(_shop_scan(), FLAVOR, api)
    assert out.deleted == [] and ("gone", "sigaudit") in api.objects


def test_another_installs_reports_are_never_pruned() -> None:
    """Two installs on one API server with different --cluster: a complete scan of one never deletes the
    other's reports (its namespaces, its cluster report), only its own stale ones."""
    import dataclasses

    api = MemoryReports()
    staging = {**OURS, "sigaudit.io/cluster": "staging"}
    api.put("team-b", "sigaudit", staging, FIELD_MANAGER)  # the other install's namespace
    api.put(None, "sigaudit", staging, FIELD_MANAGER)  # the other install's partial scan's errors
    api.put("gone", "sigaudit", OURS, FIELD_MANAGER)  # this install's, stale
    api.put("old", "sigaudit", {"app.kubernetes.io/managed-by": "sigaudit"}, FIELD_MANAGER)  # no cluster label
    out = apply_reports(_shop_scan(), FLAVOR, api)
    assert out.problems == [] and out.deleted == ["gone/sigaudit"]
    assert {("team-b", "sigaudit"), (None, "sigaudit"), ("old", "sigaudit")} <= set(api.objects)
    # and the other install's complete scan, in turn, prunes only its own
    other = dataclasses.replace(_shop_scan(), cluster="staging")
    out = apply_reports(other, FLAVOR, api)
    assert sorted(out.deleted) == ["sigaudit", "team-b/sigaudit"]


def test_cluster_names_sharing_a_label_value_never_prune_each_other() -> None:
    """The sigaudit.io/cluster label value is the --cluster name made a label (≤ 63 of [A-Za-z0-9._-]):
    "prod/eu" and "prod_eu", or two names alike in their first 63 characters, share it. A complete
    scan of one install must not take the other's reports for its own stale ones and delete them."""
    import dataclasses

    long = "x" * 63
    for mine, theirs in (("prod/eu", "prod_eu"), ("prod_eu", "prod/eu"), (long + "-a", long + "-b"),
                         ("prod", "prod-"), ("ü", "default")):
        api = MemoryReports()
        other = apply_reports(dataclasses.replace(_shop_scan(), cluster=theirs), FLAVOR, api)
        assert other.problems == [] and ("shop", "sigaudit") in api.objects
        # the other install's report, moved aside to a namespace this install has no workloads in
        api.objects["team-b", "sigaudit"] = api.objects.pop(("shop", "sigaudit"))
        api.objects["team-b", "sigaudit"]["metadata"]["namespace"] = "team-b"
        out = apply_reports(dataclasses.replace(_shop_scan(), cluster=mine), FLAVOR, api)
        assert out.problems == [] and out.deleted == [], (mine, theirs)
        assert ("team-b", "sigaudit") in api.objects
        # while its own stale report is still pruned
        api.objects["gone", "sigaudit"] = api.objects.pop(("shop", "sigaudit"))
        api.objects["gone", "sigaudit"]["metadata"]["namespace"] = "gone"
        out = apply_reports(dataclasses.replace(_shop_scan(), cluster=mine), FLAVOR, api)
        assert out.deleted == ["gone/sigaudit"], (mine, theirs)


def test_a_list_whose_continue_token_comes_back_ends_as_a_problem_never_a_loop() -> None:
    """``--reports`` lists the existing reports page by page with no deadline (after the scan): a server
    handing back the same continue token paged for ever. Here the fake stops after 50 pages (the old
    code's endless loop) and the problem must name the repeated token."""
    api = MemoryReports()
    api.put("gone", "sigaudit", OURS, FIELD_MANAGER)
    calls = []

    def list_namespaced(selector: str, cont: str | None) -> dict[str, Any]:
        calls.append(cont)
        if len(calls) > 50:
            raise RuntimeError("still paging")
        return {"items": [], "metadata": {"continue": "again"}}

    api.list_namespaced = list_namespaced  # type: ignore[method-assign]
    out = apply_reports(_shop_scan(), FLAVOR, api)
    assert len(calls) == 2
    assert out.deleted == [] and ("gone", "sigaudit") in api.objects
    assert len(out.problems) == 1 and "continue token" in out.problems[0], out.problems
