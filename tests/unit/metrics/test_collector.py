"""The collector's families, the textfile writer, the schedule translation, the dashboard/rules files.

Pure and fast: scans are built from the models; the store-backed path is in tests/integration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from scanner.errors import ConfigError, StoreError
from scanner.metrics import names
from scanner.metrics.collector import ResultSource, SigauditCollector, StoreSource
from scanner.metrics.export import registry_for, render, write_textfile
from scanner.models import (
    ContainerRef,
    ContainerType,
    ImageReference,
    Outcome,
    RunningImage,
    ScanResult,
    ScanState,
    SignatureFailure,
    SignatureResult,
    Status,
    UnresolvedImage,
    Verdict,
    Workload,
)
from scanner.scheduler import crontab_day_of_week, parse_schedule
from scanner.store import ClusterHead

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _ctr(ns: str, pod: str, kind: str = "Deployment", wl: str = "web") -> ContainerRef:
    return ContainerRef(ns, pod, "c", ContainerType.CONTAINER, "img", None, Workload(kind, wl))


def _img(repo: str, digest: str, *containers: ContainerRef) -> RunningImage:
    return RunningImage(ImageReference("reg.example", repo, "1.0", digest), tuple(containers))


def _sig(outcome: Outcome, failure: SignatureFailure = SignatureFailure.NONE) -> SignatureResult:
    return SignatureResult("cosign", "rule/0", outcome, "r", failure)


def sample(state: ScanState = ScanState.COMPLETE) -> ScanResult:
    na = T0 + timedelta(days=10)
    verdicts = (
        Verdict(_img("shop/web", "sha256:" + "a" * 64, _ctr("shop", "w1"), _ctr("shop", "w2"), _ctr("pay", "p1")),
                Status.VERIFIED, ("ok",), rule="r", signatures=(_sig(Outcome.PASSED),), expiring=True, not_after=na),
        Verdict(_img("shop/cart", "sha256:" + "b" * 64, _ctr("shop", "c1", "StatefulSet", "cart")),
                Status.INVALID, ("bad",), rule="r", signatures=(_sig(Outcome.FAILED, SignatureFailure.INVALID),)),
        Verdict(_img("pay/api", "sha256:" + "c" * 64, _ctr("pay", "a1", "Deployment", "api")),
                Status.INVALID, ("warn",), rule="r", warn_only=True, not_after=na + timedelta(days=5),
                signatures=(_sig(Outcome.FAILED, SignatureFailure.EXPIRED),)),
        Verdict(UnresolvedImage(None, "bad::ref", (_ctr("tools", "x1", "Pod", "x1"),), "unparseable"),
                Status.ERROR, ("unresolved",)),
    )
    return ScanResult(
        cluster="c1", started_at=T0, finished_at=T0 + timedelta(seconds=42), state=state, verdicts=verdicts,
        policy_digest="sha256:p", scan_id=7, sigaudit_version="9.9",
        stats={"registry_requests": {"reg.example|200": 10, "reg.example|404": 2, "127.0.0.1:9|error": 1},
               "registry_errors": {"127.0.0.1:9|error": 1}},
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: dict, name: str, **labels: str) -> float:
    return got[(name, tuple(sorted(labels.items())))]


def test_families_of_a_complete_scan_have_the_documented_names_labels_and_values() -> None:
    text = render(sample(), None).decode()
    got = samples(text)
    c = {"cluster": "c1"}
    assert value(got, "sigaudit_scan_info", **c, scan_id="7", policy_digest="sha256:p", sigaudit_version="9.9") == 1
    assert value(got, "sigaudit_last_success_timestamp_seconds", **c) == (T0 + timedelta(seconds=42)).timestamp()
    assert value(got, "sigaudit_last_completion_timestamp_seconds", **c) == (T0 + timedelta(seconds=42)).timestamp()
    assert value(got, "sigaudit_scan_duration_seconds", **c) == 42.0
    assert value(got, "sigaudit_last_scan_state", **c, state="complete") == 1
    assert value(got, "sigaudit_last_scan_state", **c, state="failed") == 0
    # the web image runs in shop (2 containers) and pay (1): one image in each namespace
    assert value(got, "sigaudit_images", **c, namespace="shop", status="verified", compliant="true") == 1
    assert value(got, "sigaudit_containers", **c, namespace="shop", status="verified", compliant="true") == 2
    assert value(got, "sigaudit_images", **c, namespace="pay", status="verified", compliant="true") == 1
    # warn-only counts compliant though its status is invalid
    assert value(got, "sigaudit_images", **c, namespace="pay", status="invalid", compliant="true") == 1
    assert value(got, "sigaudit_images", **c, namespace="shop", status="invalid", compliant="false") == 1
    assert value(got, "sigaudit_namespace_compliance_ratio", **c, namespace="shop") == 0.5
    assert value(got, "sigaudit_namespace_compliance_ratio", **c, namespace="pay") == 1.0
    assert value(got, "sigaudit_namespace_compliance_ratio", **c, namespace="tools") == 0.0
    assert value(got, "sigaudit_compliance_ratio", **c) == 0.5
    assert value(got, "sigaudit_noncompliant_workload_containers", **c, namespace="shop", workload_kind="StatefulSet",
                 workload="cart", status="invalid") == 1
    assert value(got, "sigaudit_noncompliant_workload_containers", **c, namespace="tools", workload_kind="Pod",
                 workload="(bare pod)", status="error") == 1
    assert not any(k[0] == "sigaudit_noncompliant_workload_containers" and ("workload", "web") in k[1] for k in got)
    assert value(got, "sigaudit_expiring_images", **c, namespace="shop") == 1
    assert value(got, "sigaudit_expiring_images", **c, namespace="tools") == 0
    assert value(got, "sigaudit_namespace_earliest_not_after_timestamp_seconds", **c, namespace="pay") == (
        T0 + timedelta(days=10)).timestamp()
    assert ("sigaudit_namespace_earliest_not_after_timestamp_seconds",
            (("cluster", "c1"), ("namespace", "tools"))) not in got
    assert value(got, "sigaudit_verifications", **c, verifier="cosign", outcome="failed", reason="expired") == 1
    assert value(got, "sigaudit_verifications", **c, verifier="cosign", outcome="passed", reason="none") == 1
    assert value(got, "sigaudit_registry_requests", **c, registry="reg.example", code="404") == 2
    assert value(got, "sigaudit_registry_errors", **c, registry="127.0.0.1:9", code="error") == 1
    # without a store there is no store_up; per-image series are off by default
    names_seen = {k[0] for k in got}
    assert "sigaudit_store_up" not in names_seen
    assert not names_seen & {"sigaudit_image_info", "sigaudit_image_not_after_timestamp_seconds"}
    # every label set carries cluster, and every documented non-optional series appears
    assert all(dict(k[1]).get("cluster") == "c1" for k in got)
    documented = {s.name for s in names.ALL
                  if not s.per_image and not s.optional and not s.name.startswith("sigaudit_store_")}
    assert documented <= names_seen


def test_per_image_series_are_opt_in() -> None:
    reg = registry_for(ResultSource(sample()), per_image=True)
    from prometheus_client import generate_latest

    got = samples(generate_latest(reg).decode())
    assert value(got, "sigaudit_image_info", cluster="c1", namespace="shop", image="reg.example/shop/cart:1.0",
                 digest="sha256:" + "b" * 64, status="invalid", compliant="false", rule="r") == 1
    assert value(got, "sigaudit_image_info", cluster="c1", namespace="tools", image="bad::ref", digest="",
                 status="error", compliant="false", rule="") == 1
    assert value(got, "sigaudit_image_not_after_timestamp_seconds", cluster="c1", namespace="pay",
                 image="reg.example/shop/web:1.0", digest="sha256:" + "a" * 64) == (T0 + timedelta(days=10)).timestamp()


@pytest.mark.parametrize("state", [ScanState.PARTIAL, ScanState.FAILED])
def test_an_unfinished_or_partial_scan_never_reads_as_the_clusters_state(state: ScanState) -> None:
    got = samples(render(sample(state), None).decode())
    assert {k[0] for k in got} == {"sigaudit_last_completion_timestamp_seconds", "sigaudit_last_scan_state"}
    assert value(got, "sigaudit_last_scan_state", cluster="c1", state=state.value) == 1


class _BrokenStore:
    """Every query fails the way Store's do when the database is down."""

    def __getattr__(self, name: str) -> object:
        def fail(*_a: object, **_k: object) -> None:
            raise StoreError("database is down")

        return fail


def test_an_unreachable_store_yields_store_up_zero_and_nothing_else() -> None:
    collector = SigauditCollector(StoreSource(_BrokenStore(), "c1"))  # type: ignore[arg-type]
    fams = list(collector.collect())
    assert [(f.name, [(s.labels, s.value) for s in f.samples]) for f in fams] == [
        ("sigaudit_store_up", [({"cluster": "c1"}, 0.0)])]


def test_collect_builds_fresh_families_every_time() -> None:
    collector = SigauditCollector(ResultSource(sample()))
    a, b = list(collector.collect()), list(collector.collect())
    assert [f.name for f in a] == [f.name for f in b]
    assert all(x is not y for x, y in zip(a, b, strict=True))


def test_textfile_is_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "sigaudit.prom"
    target.write_text("old\n")
    write_textfile(target, render(sample(), None))
    assert "sigaudit_compliance_ratio" in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["sigaudit.prom"]  # no temp file left behind
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_textfile_write_failure_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sigaudit.prom"
    target.write_text("previous\n")

    def boom(*_a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_textfile(target, b"new")
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sigaudit.prom"]


def _scan(verdicts: tuple[Verdict, ...], stats: dict[str, object] | None = None) -> ScanResult:
    return ScanResult(cluster="c1", started_at=T0, finished_at=T0, state=ScanState.COMPLETE, verdicts=verdicts,
                      policy_digest="sha256:p", scan_id=1, sigaudit_version="9.9", stats=stats or {})


def _series(result: ScanResult, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {k[1]: v for k, v in samples(render(result, None).decode()).items() if k[0] == name}


def test_bare_pods_never_name_a_series() -> None:
    """Issue #27: 1,000 bare pods made 1,000 workload series, named after pods (new names every
    rollout). A pod without a controller is workload_kind Pod, workload "(bare pod)"."""
    verdicts = tuple(Verdict(_img(f"r{i}", "sha256:" + f"{i:064x}",
                                  _ctr("t", f"pod-{i}-x7k2q", "Pod", f"pod-{i}-x7k2q")),
                             Status.UNSIGNED, ("u",)) for i in range(1000))
    got = _series(_scan(verdicts), "sigaudit_noncompliant_workload_containers")
    assert got == {(("cluster", "c1"), ("namespace", "t"), ("status", "unsigned"), ("workload", "(bare pod)"),
                    ("workload_kind", "Pod")): 1000.0}


def test_workload_series_are_capped_with_the_rest_summed_as_other() -> None:
    statuses = (Status.UNSIGNED, Status.INVALID)
    verdicts = tuple(Verdict(_img(f"r{i}", "sha256:" + f"{i:064x}",
                                  *[_ctr(f"ns{i % 7}", f"p{i}-{j}", "Deployment", f"app-{i}")
                                    for j in range(1 + i % 3)]),
                             statuses[i % 2], ("x",)) for i in range(1000))
    got = _series(_scan(verdicts), "sigaudit_noncompliant_workload_containers")
    assert len(got) <= names.MAX_WORKLOAD_SERIES + len(Status)
    assert sum(got.values()) == sum(len(v.image.containers) for v in verdicts)  # nothing lost, only grouped
    others = {dict(k)["status"]: val for k, val in got.items() if dict(k)["workload"] == names.OTHER}
    assert set(others) == {"unsigned", "invalid"}
    assert all(dict(k)["namespace"] == names.OTHER for k in got if dict(k)["workload"] == names.OTHER)
    kept = [val for k, val in got.items() if dict(k)["workload"] != names.OTHER]
    assert len(kept) == names.MAX_WORKLOAD_SERIES and min(kept) == 3.0  # the largest are the ones kept


def test_registry_series_are_capped_whatever_hosts_and_codes_pods_name() -> None:
    requests = {f"evil-{i}.example|{200 + i % 300}": 1 + i % 5 for i in range(2000)}
    requests["reg.example|200"] = 10_000
    stats = {"registry_requests": requests, "registry_errors": {f"evil-{i}.example|error": 1 for i in range(500)}}
    for name in ("sigaudit_registry_requests", "sigaudit_registry_errors"):
        got = _series(_scan((), stats), name)
        assert len(got) <= names.MAX_REGISTRY_SERIES + 1, (name, len(got))
        assert sum(got.values()) == sum(stats["registry_requests" if "requests" in name else "registry_errors"]
                                        .values())
        assert (("cluster", "c1"), ("code", names.OTHER), ("registry", names.OTHER)) in got
    assert _series(_scan((), stats), "sigaudit_registry_requests")[
        (("cluster", "c1"), ("code", "200"), ("registry", "reg.example"))] == 10_000


def test_readme_table_lists_every_series() -> None:
    table = names.markdown_table()
    for s in names.ALL:
        assert f"`{s.name}`" in table
        assert s.name.startswith("sigaudit_")


# --- schedule -----------------------------------------------------------------------------------

MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("cron", "aps"), [
    ("0", "sun"), ("7", "sun"), ("1", "mon"), ("6", "sat"), ("1-5", "mon,tue,wed,thu,fri"),
    ("5-7", "sun,fri,sat"), ("*/2", "sun,tue,thu,sat"), ("1/2", "mon,wed,fri"), ("sat,sun", "sun,sat"),
    ("mon-wed", "mon,tue,wed"), ("*", "*"),
])
def test_crontab_weekdays_are_translated_to_apscheduler(cron: str, aps: str) -> None:
    assert crontab_day_of_week(cron) == aps


@pytest.mark.parametrize("bad", ["8", "5-1", "funday", "1-", "*/0"])
def test_bad_weekdays_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        crontab_day_of_week(bad)


def _fires(expr: str, n: int = 4) -> list[str]:
    return [t.strftime("%a %Y-%m-%d %H:%M:%S") for t in parse_schedule(expr, now=MONDAY).next_fire_times(MONDAY, n)]


def test_sunday_zero_fires_on_sunday_not_monday() -> None:
    # APScheduler 3.x's own from_crontab would run "0 0 * * 0" on Mondays.
    assert _fires("0 0 * * 0", 2) == ["Sun 2026-11-29 00:00:00", "Sun 2026-12-06 00:00:00"]
    assert _fires("30 9 * * 1-5", 5)[-1] == "Mon 2026-11-30 09:30:00"
    assert all(not d.startswith(("Sat", "Sun")) for d in _fires("30 9 * * 1-5", 10))


def test_day_of_month_and_weekday_are_ored_like_cron() -> None:
    assert _fires("0 0 1,15 * 1", 4) == ["Mon 2026-11-30 00:00:00", "Tue 2026-12-01 00:00:00",
                                         "Mon 2026-12-07 00:00:00", "Mon 2026-12-14 00:00:00"]


def test_schedule_is_utc_and_its_interval_is_the_longest_gap() -> None:
    s = parse_schedule("0 */6 * * *", now=MONDAY)
    assert s.interval == timedelta(hours=6)
    assert _fires("0 */6 * * *", 2) == ["Mon 2026-11-23 12:00:00", "Mon 2026-11-23 18:00:00"]
    assert parse_schedule("30 9 * * 1-5", now=MONDAY).interval == timedelta(days=3)  # Friday -> Monday
    assert parse_schedule("*/10 * * * * *", now=MONDAY).interval == timedelta(seconds=10)
    assert parse_schedule("@daily", now=MONDAY).interval == timedelta(days=1)


@pytest.mark.parametrize("bad", ["", "* * *", "61 * * * *", "0 0 31 2 *"])
def test_bad_schedules_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_schedule(bad, now=MONDAY)


def test_scheduler_job_has_utc_single_instance_coalesce_and_grace() -> None:
    from scanner.scheduler import build_scheduler

    sched = build_scheduler(parse_schedule("0 */6 * * *"), lambda: None, misfire_grace_time=123)
    sched.start(paused=True)
    try:
        job = sched.get_job("scan")
        assert (job.max_instances, job.coalesce, job.misfire_grace_time) == (1, True, 123)
        assert str(sched.timezone) == "UTC"
    finally:
        sched.shutdown(wait=False)


# --- dashboard and rules files -------------------------------------------------------------------

DASHBOARD = ROOT / "helm/sigaudit/dashboards/sigaudit.json"
RULES = ROOT / "helm/sigaudit/rules/sigaudit.yaml"


def dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def rule_exprs() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def test_dashboard_has_what_grafana_import_requires() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    assert d["__inputs"][0]["type"] == "datasource" and d["__inputs"][0]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "cluster" in variables and variables["cluster"]["includeAll"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["gridPos"]["w"] > 0
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert p["datasource"]["uid"] == "${datasource}"  # works imported and sidecar-provisioned
            for t in p["targets"]:
                assert 'cluster=~"$cluster"' in t["expr"], t["expr"]
    titles = " ".join(p["title"].lower() for p in d["panels"])
    for needed in ("compliance over time", "non-compliant workloads", "expiring", "scan", "registry errors"):
        assert needed in titles


def test_every_metric_used_by_dashboard_and_rules_is_documented() -> None:
    import re

    documented = {s.name for s in names.ALL}
    for expr in [*dashboard_exprs(), *rule_exprs().values()]:
        for used in re.findall(r"\bsigaudit_[a-z_]+", expr):
            assert used in documented, (used, expr)


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("promtool not installed (Debian: prometheus)")
    return str(path)


def test_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = _promtool()
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "3 rules found" in check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", "sigaudit_test.yaml"], cwd=RULES.parent, capture_output=True,
                          text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    tests_doc = yaml.safe_load((RULES.parent / "sigaudit_test.yaml").read_text())
    tested = {a["alertname"] for t in tests_doc["tests"] for a in t.get("alert_rule_test", [])}
    assert tested == set(rule_exprs())  # a unit test per alert


def test_tag_references_per_namespace_without_an_image_label() -> None:
    d = "sha256:" + "9" * 64
    by_tag = ContainerRef("a", "p1", "c", ContainerType.CONTAINER, "registry.example/x:1", None, Workload("Pod", "p1"))
    pinned = ContainerRef("b", "p2", "c", ContainerType.CONTAINER, f"registry.example/x@{d}", None,
                          Workload("Pod", "p2"))
    img = RunningImage(ImageReference("registry.example", "x", "1", d), (by_tag, by_tag, pinned))
    r = ScanResult("c1", T0, T0 + timedelta(seconds=1), ScanState.COMPLETE,
                   (Verdict(img, Status.VERIFIED, ("ok",)),), "sha256:" + "0" * 64)
    got = samples(render(r, None).decode())
    assert value(got, "sigaudit_tag_reference_containers", cluster="c1", namespace="a") == 1
    assert value(got, "sigaudit_tag_reference_containers", cluster="c1", namespace="b") == 0
    assert names.TAG_REFERENCES.labels == ("cluster", "namespace")


class _TwoClusterStore:
    """The store calls StoreSource makes, over scans held in memory."""

    def __init__(self) -> None:
        self.scans = {1: dataclasses.replace(sample(), cluster="c1", scan_id=1),
                      2: dataclasses.replace(sample(), cluster="c2", scan_id=2)}

    def clusters(self) -> list[str]:
        return sorted({r.cluster for r in self.scans.values()})

    def latest_scan_id(self, cluster: str) -> int | None:
        return max((i for i, r in self.scans.items() if r.cluster == cluster), default=None)

    def load_scan(self, scan_id: int) -> ScanResult:
        return self.scans[scan_id]

    def heads(self, cluster: str | None = None) -> list[ClusterHead]:
        """As Store.heads: the revision changes when the stored scan does (here: its verdicts, as the
        watch verdicts' count in the real store's stats)."""
        out = []
        for c in [cluster] if cluster else self.clusters():
            latest = self.latest_scan_id(c)
            revision = f"{latest}:{len(self.scans[latest].verdicts)}" if latest is not None else None
            out.append(ClusterHead(c, latest, revision, None, None))
        return out

    def disk_usage(self) -> None:
        return None


def test_a_scrape_recomputes_a_clusters_series_only_after_a_new_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Computing the series of a 10,000-pod scan takes longer than a scrape may (issue 20: a scrape of 50
    clusters took 4 s); a stored complete scan never changes, so they are computed once per scan."""
    from scanner.metrics import collector as module

    computed: list[str] = []
    real = module.families_for

    def counting(view: module.ClusterView, *, per_image: bool = False) -> list[Metric]:
        computed.append(view.cluster)
        return real(view, per_image=per_image)

    monkeypatch.setattr(module, "families_for", counting)
    store = _TwoClusterStore()
    registry = registry_for(StoreSource(store))  # type: ignore[arg-type]
    first = generate_latest(registry)
    assert b'cluster="c1"' in first and b'cluster="c2"' in first
    assert generate_latest(registry) == first == generate_latest(registry)  # nothing doubled by merging
    assert sorted(computed) == ["c1", "c2"]
    store.scans[3] = dataclasses.replace(sample(), cluster="c1", scan_id=3,
                                         verdicts=sample().verdicts[:1])  # a new scan of c1
    changed = generate_latest(registry)
    assert changed != first and sorted(computed) == ["c1", "c1", "c2"]
    # `serve --watch` adds verdicts to the latest complete scan: its series are computed again.
    store.scans[3] = dataclasses.replace(store.scans[3], verdicts=sample().verdicts)
    assert generate_latest(registry) != changed and sorted(computed) == ["c1", "c1", "c1", "c2"]


def test_priming_after_a_scan_leaves_the_next_scrape_nothing_to_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` primes the collector in the scan's thread when a scan finished (issue 20: the first scrape
    after a scan took 0.6-0.7 s at 10,000 pods on PostgreSQL, loading and computing the scan)."""
    from scanner.metrics import collector as module

    computed: list[str] = []
    real = module.families_for

    def counting(view: module.ClusterView, *, per_image: bool = False) -> list[Metric]:
        computed.append(view.cluster)
        return real(view, per_image=per_image)

    monkeypatch.setattr(module, "families_for", counting)
    store = _TwoClusterStore()
    collector = module.SigauditCollector(StoreSource(store))  # type: ignore[arg-type]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    collector.prime()
    assert sorted(computed) == ["c1", "c2"]
    assert b'cluster="c1"' in generate_latest(registry)
    assert sorted(computed) == ["c1", "c2"]  # the scrape computed nothing


def test_a_digest_judged_under_two_credential_sets_is_one_image_of_its_namespace() -> None:
    """Two pods of one namespace with different pull secrets: the digest is judged twice (never lent
    across credential sets) but runs as one image; fail closed, it is compliant only if both are."""
    digest = "sha256:" + "d" * 64

    def img(pod: str) -> RunningImage:
        return RunningImage(ImageReference("reg.example", "shop/web", "1.0", digest), (_ctr("shop", pod),),
                            pull_secrets=(("shop", f"secret-{pod}"),))

    both = (Verdict(img("w1"), Status.VERIFIED, ("ok",), rule="r"),
            Verdict(img("w2"), Status.VERIFIED, ("ok",), rule="r"))
    got = samples(render(_scan(both), None).decode())
    c = {"cluster": "c1", "namespace": "shop"}
    assert value(got, "sigaudit_images", **c, status="verified", compliant="true") == 1
    assert value(got, "sigaudit_containers", **c, status="verified", compliant="true") == 2
    one_error = (both[0], Verdict(img("w2"), Status.ERROR, ("refused",), rule="r"))
    got = samples(render(_scan(one_error), None).decode())
    assert value(got, "sigaudit_namespace_compliance_ratio", **c) == 0.0
    assert value(got, "sigaudit_compliance_ratio", cluster="c1") == 0.0


def test_a_split_image_with_one_failing_verdict_is_never_counted_compliant_in_sigaudit_images() -> None:
    """A digest judged under two credential sets, verified for one and unsigned for the other, is one
    image of its namespace — non-compliant (fail closed), as the namespace ratio says: the
    sigaudit_images series must not also count it once under compliant="true" (a dashboard summing
    compliant images then counted it compliant, and the namespace had two images)."""
    digest = "sha256:" + "e" * 64

    def img(pod: str) -> RunningImage:
        return RunningImage(ImageReference("reg.example", "shop/web", "1.0", digest), (_ctr("shop", pod),),
                            pull_secrets=(("shop", f"secret-{pod}"),))

    for first, second in ((Status.VERIFIED, Status.UNSIGNED), (Status.UNSIGNED, Status.VERIFIED)):
        verdicts = (Verdict(img("w1"), first, ("x",), rule="r"), Verdict(img("w2"), second, ("y",), rule="r"))
        images = _series(_scan(verdicts), "sigaudit_images")
        shop = {dict(k)["compliant"]: val for k, val in images.items() if dict(k)["namespace"] == "shop" and val}
        assert shop == {"false": 1.0}, images
        got = samples(render(_scan(verdicts), None).decode())
        assert value(got, "sigaudit_images", cluster="c1", namespace="shop", status="unsigned",
                     compliant="false") == 1
        assert value(got, "sigaudit_namespace_compliance_ratio", cluster="c1", namespace="shop") == 0.0
