"""The Helm chart with the real tools: ``helm lint`` and ``helm template`` for every ``ci/*-values.yaml``,
the rendered manifests validated by ``kubeconform`` against the Kubernetes JSON schemas of two
Kubernetes versions (shipped by the PyPI package ``kubernetes-validate``), every pod spec checked against
Pod Security "restricted", and each scenario's distinctive resources asserted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.tools import require_tool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sigaudit"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SCENARIOS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
# Supported Kubernetes versions checked by kubeconform: the chart's floor-ish and a current one.
KUBE_VERSIONS = ["1.29.0", "1.34.0"]
# Custom resources whose schemas are not shipped by kubernetes-validate (they come with
# prometheus-operator's CRDs, which cannot be fetched here): kubeconform skips them, and the tests below
# check their shape instead.
CRD_KINDS = ["ServiceMonitor", "PrometheusRule"]


def helm() -> Path:
    return require_tool("helm")


def run(args: Sequence[str | Path], *, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd)
    if check:
        assert out.returncode == 0, f"{' '.join(map(str, args))} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def template(
    values_files: Sequence[Path] = (),
    *,
    chart: Path = CHART,
    set_json: Mapping[str, Any] | None = None,
    kube_version: str = "1.34.0",
    release: str = "sigaudit",
    namespace: str = "sigaudit",
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    args: list[str | Path] = [helm(), "template", release, chart, "--namespace", namespace]
    args += ["--kube-version", kube_version]
    for f in values_files:
        args += ["--values", f]
    for k, v in (set_json or {}).items():
        args += ["--set-json", f"{k}={json.dumps(v)}"]
    return run(args, check=check)


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def render(name: str) -> list[dict[str, Any]]:
    return docs(template([CHART / "ci" / f"{name}-values.yaml"]).stdout)


def by_kind(objs: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [o for o in objs if o.get("kind") == kind]


def one(objs: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any]:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_specs(objs: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for o in objs:
        kind, name = o.get("kind"), o.get("metadata", {}).get("name")
        if kind == "CronJob":
            yield f"CronJob/{name}", o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif kind in ("Deployment", "Job", "StatefulSet", "DaemonSet", "ReplicaSet"):
            yield f"{kind}/{name}", o["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield f"Pod/{name}", o["spec"]


def main_container(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return spec["containers"][0]


# --- Pod Security Standards, "restricted" profile -----------------------------------------------------
# Written from the Pod Security Standards page (kubernetes.io/docs/concepts/security/pod-security-standards),
# baseline controls plus the restricted ones, as of Kubernetes v1.34.

BASELINE_CAPS = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
    "image",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def pss_restricted_violations(spec: Mapping[str, Any]) -> list[str]:
    """Every way a pod spec breaks Pod Security "restricted" (empty when it meets it)."""
    bad: list[str] = []
    psc = spec.get("securityContext") or {}
    containers = [
        (kind, c) for kind in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(kind) or []
    ]
    # Baseline: host namespaces, host ports, hostPath, sysctls, AppArmor, SELinux, procMount.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            bad.append(f"{field}: true")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        bad.append("pod windowsOptions.hostProcess")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad.append(f"unsafe sysctl {sysctl.get('name')}")

    def selinux_ok(opts: Mapping[str, Any] | None, where: str) -> None:
        if not opts:
            return
        if opts.get("type", "") not in SELINUX_TYPES:
            bad.append(f"{where}: seLinuxOptions.type {opts.get('type')}")
        for k in ("user", "role"):
            if opts.get(k):
                bad.append(f"{where}: seLinuxOptions.{k} set")

    def apparmor_ok(profile: Mapping[str, Any] | None, where: str) -> None:
        if profile and profile.get("type") not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{where}: appArmorProfile {profile.get('type')}")

    selinux_ok(psc.get("seLinuxOptions"), "pod")
    apparmor_ok(psc.get("appArmorProfile"), "pod")
    # Restricted: volume types.
    for vol in spec.get("volumes") or []:
        types = set(vol) - {"name"}
        if not types <= RESTRICTED_VOLUMES:
            bad.append(f"volume {vol.get('name')}: type {sorted(types - RESTRICTED_VOLUMES)} not allowed")
    pod_nonroot = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        bad.append(f"pod seccompProfile {pod_seccomp}")
    if psc.get("runAsUser") == 0:
        bad.append("pod runAsUser: 0")
    if psc.get("runAsNonRoot") is False:
        bad.append("pod runAsNonRoot: false")
    for kind, c in containers:
        where = f"{kind}/{c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            bad.append(f"{where}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad.append(f"{where}: windowsOptions.hostProcess")
        if sc.get("procMount") not in (None, "Default"):
            bad.append(f"{where}: procMount {sc.get('procMount')}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                bad.append(f"{where}: hostPort {port['hostPort']}")
        selinux_ok(sc.get("seLinuxOptions"), where)
        apparmor_ok(sc.get("appArmorProfile"), where)
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}: allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot") is False or (sc.get("runAsNonRoot") is not True and not pod_nonroot):
            bad.append(f"{where}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            bad.append(f"{where}: runAsUser: 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp not in (None, "RuntimeDefault", "Localhost") or (seccomp is None and pod_seccomp is None):
            bad.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost (pod or container)")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{where}: capabilities must drop ALL")
        added = set(caps.get("add") or [])
        if added - {"NET_BIND_SERVICE"}:
            bad.append(f"{where}: capabilities add {sorted(added - {'NET_BIND_SERVICE'})}")
        if added - BASELINE_CAPS:
            bad.append(f"{where}: capabilities beyond baseline {sorted(added - BASELINE_CAPS)}")
    return bad


GOOD_POD: dict[str, Any] = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "c",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda p: p["securityContext"].update(runAsUser=0), "runAsUser: 0"),
        (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (lambda p: p["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccompProfile"),
        (lambda p: p["containers"][0]["securityContext"].update(capabilities={"drop": ["NET_RAW"]}), "drop ALL"),
        (
            lambda p: p["containers"][0]["securityContext"].update(
                capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}
            ),
            "capabilities add",
        ),
        (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda p: p.update(hostNetwork=True), "hostNetwork"),
        (lambda p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort"),
        (
            lambda p: p.update(initContainers=[{"name": "i", "securityContext": {"capabilities": {"drop": ["ALL"]}}}]),
            "initContainers/i: allowPrivilegeEscalation",
        ),
    ],
)
def test_the_restricted_checker_catches_each_violation(mutate: Any, expected: str) -> None:
    assert pss_restricted_violations(GOOD_POD) == []
    pod = json.loads(json.dumps(GOOD_POD))
    mutate(pod)
    found = pss_restricted_violations(pod)
    assert any(expected in v for v in found), found


# --- lint, template, kubeconform -------------------------------------------------------------------------


def test_every_scenario_named_in_the_brief_has_a_ci_values_file() -> None:
    assert set(SCENARIOS) >= {
        "cronjob-sqlite", "server-postgres", "both", "namespaced", "policy-import", "monitoring-on",
    }  # fmt: skip


@pytest.mark.parametrize("values", CI_VALUES, ids=SCENARIOS)
def test_helm_lint_strict(values: Path) -> None:
    out = run([helm(), "lint", "--strict", CHART, "--values", values])
    assert "0 chart(s) failed" in out.stdout, out.stdout


def test_helm_lint_defaults() -> None:
    out = run([helm(), "lint", "--strict", CHART])
    assert "0 chart(s) failed" in out.stdout, out.stdout


def schema_dir() -> Path:
    try:
        import kubernetes_validate
    except ImportError:
        msg = "kubernetes-validate is not installed: pip install kubernetes-validate"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"


@pytest.fixture(scope="session")
def kubeconform_schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kubernetes-validate's schemas, made self-contained for kubeconform.

    Each shipped schema has ``$id: https://kubernetes.io/api/<kind>/<version>`` and refers to
    ``/api/_definitions.json#/$defs/...``, which resolves against that ``$id`` to a URL kubeconform would try
    to download. Here the ``$id`` is dropped and the reference made relative to the file, so everything
    resolves to the ``_definitions.json`` next to it. Nothing else changes.
    """
    src = schema_dir()
    out = tmp_path_factory.mktemp("kube-schemas")
    for version in KUBE_VERSIONS:
        name = f"v{version}-local-strict"
        if not (src / name).is_dir():
            pytest.fail(f"kubernetes-validate ships no {name}: {sorted(p.name for p in src.iterdir())}")
        (out / name).mkdir()
        for f in (src / name).glob("*.json"):
            doc = json.loads(f.read_text(encoding="utf-8"))
            doc.pop("$id", None)
            text = json.dumps(doc).replace('"/api/_definitions.json#', '"_definitions.json#')
            (out / name / f.name).write_text(text, encoding="utf-8")
    return out


def schema_location(schemas: Path) -> str:
    """kubeconform's template syntax over the tree above (``v1.34.0-local-strict/service-v1.json``)."""
    layout = "{{ .NormalizedKubernetesVersion }}-local-strict/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    return f"{schemas}/{layout}"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=SCENARIOS)
def test_rendered_manifests_pass_kubeconform(
    values: Path, kube_version: str, tmp_path: Path, kubeconform_schemas: Path
) -> None:
    kubeconform = require_tool("kubeconform")
    schemas = kubeconform_schemas
    rendered = template([values], kube_version=kube_version).stdout
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered, encoding="utf-8")
    location = schema_location(schemas)
    out = run(
        [
            kubeconform,
            "-strict",
            "-summary",
            "-output",
            "json",
            "-kubernetes-version",
            kube_version,
            "-schema-location",
            location,
            "-skip",
            ",".join(CRD_KINDS),
            manifest,
        ],
        check=False,
    )
    report = json.loads(out.stdout)
    summary = report["summary"]
    problems = [r for r in report.get("resources", []) if r.get("status") in ("statusInvalid", "statusError")]
    assert out.returncode == 0 and not problems, json.dumps(problems or report, indent=2)
    kinds = {d["kind"] for d in docs(rendered)}
    assert summary["valid"] == len([d for d in docs(rendered) if d["kind"] not in CRD_KINDS]), summary
    assert summary["skipped"] == len([d for d in docs(rendered) if d["kind"] in CRD_KINDS]), (summary, kinds)


def test_kubeconform_rejects_an_invalid_manifest(tmp_path: Path, kubeconform_schemas: Path) -> None:
    """The schema location above really points at schemas: a wrong field type fails validation."""
    kubeconform = require_tool("kubeconform")
    schemas = kubeconform_schemas
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: not-a-number}]}\n",
        encoding="utf-8",
    )
    location = schema_location(schemas)
    out = run([kubeconform, "-strict", "-kubernetes-version", "1.34.0", "-schema-location", location, bad], check=False)
    assert out.returncode != 0 and "invalid" in (out.stdout + out.stderr).lower(), out.stdout + out.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=SCENARIOS)
def test_every_pod_meets_pod_security_restricted(values: Path) -> None:
    objs = docs(template([values]).stdout)
    specs = list(pod_specs(objs))
    assert specs, "no pod spec rendered"
    for where, spec in specs:
        assert pss_restricted_violations(spec) == [], where
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, f"{where}/{c['name']}"
            assert c["resources"]["requests"] and c["resources"]["limits"], f"{where}/{c['name']}: resources"
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}/{c['name']}: no writable /tmp"
        vols = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in vols["tmp"], where


# --- what each scenario renders ---------------------------------------------------------------------


def args_of(container: Mapping[str, Any]) -> list[str]:
    return [str(a) for a in container["args"]]


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_cronjob_sqlite() -> None:
    objs = render("cronjob-sqlite")
    assert not by_kind(objs, "Deployment") and not by_kind(objs, "Service")
    cron = one(objs, "CronJob")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 3600
    # Violations found (1) and configuration errors (2) are never retried.
    fail_rule = job["podFailurePolicy"]["rules"][0]
    assert fail_rule["action"] == "FailJob" and set(fail_rule["onExitCodes"]["values"]) == {1, 2}
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    scan = main_container(pod)
    args = args_of(scan)
    assert args[0] == "scan"
    assert "--exit-zero-on-violations" in args
    assert "--pushgateway=http://pushgateway.monitoring.svc:9091" in args
    assert "--cluster=prod-eu-1" in args and "--policy=/etc/sigaudit/policy/policy.yaml" in args
    assert "--no-pull-secrets" in args
    env = env_of(scan)
    assert env["SIGAUDIT_DB"] == "sqlite:////var/lib/sigaudit/sigaudit.db"
    assert env["SIGAUDIT_DATA_DIR"] == "/var/lib/sigaudit" and env["HOME"].startswith("/tmp")
    assert env["XDG_CACHE_HOME"].startswith("/tmp")
    # SQLite migrates in an init container on the same claim; no hook Job.
    assert not by_kind(objs, "Job")
    init = pod["initContainers"][0]
    assert args_of(init) == ["db", "upgrade"]
    claim = one(objs, "PersistentVolumeClaim")
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert {"name": "data", "mountPath": "/var/lib/sigaudit"} in init["volumeMounts"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The policy and the inline trust files are mounted where the policy refers to them.
    policy_cm = next(c for c in by_kind(objs, "ConfigMap") if c["metadata"]["name"].endswith("-policy"))
    policy = yaml.safe_load(policy_cm["data"]["policy.yaml"])
    assert policy["kind"] == "AuditPolicy"
    assert policy["spec"]["rules"][0]["verifiers"][0]["cosign"]["key"] == "/etc/sigaudit/trust/inline/cosign.pub"
    mounts = {m["mountPath"] for m in scan["volumeMounts"]}
    assert {"/etc/sigaudit/policy", "/etc/sigaudit/trust/inline", "/var/lib/sigaudit", "/tmp"} <= mounts
    assert not by_kind(objs, "Secret"), "SQLite needs no Secret"


def test_server_postgres() -> None:
    objs = render("server-postgres")
    assert not by_kind(objs, "CronJob") and not by_kind(objs, "PersistentVolumeClaim")
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    server = main_container(pod)
    args = args_of(server)
    assert args[0] == "serve"
    assert "--schedule=15 */4 * * *" in args and "--listen=0.0.0.0:8080" in args
    assert "--shutdown-timeout=105" in args and "--per-image-metrics" not in args
    assert "--concurrency=8" in args and "--policy-from=notation:/etc/sigaudit/trust/notation" in args
    assert "--exit-zero-on-violations" not in args and not any(a.startswith("--pushgateway") for a in args)
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    db = env_of(server)["SIGAUDIT_DB"]["secretKeyRef"]
    assert db == {"name": "sigaudit-db", "key": "url"}
    assert "initContainers" not in pod
    svc = one(objs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    # Migrations: a pre-install/pre-upgrade hook Job reading the existing Secret, no token.
    job = one(objs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    jpod = job["spec"]["template"]["spec"]
    assert jpod["automountServiceAccountToken"] is False and "serviceAccountName" not in jpod
    assert args_of(main_container(jpod)) == ["db", "upgrade"]
    assert env_of(main_container(jpod))["SIGAUDIT_DB"]["secretKeyRef"] == {"name": "sigaudit-db", "key": "url"}
    assert not by_kind(objs, "Secret"), "existingSecret given: the chart must not create one"
    # Policy from the existing ConfigMap, under its own key; trust from ConfigMaps and Secrets.
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["policy"]["configMap"] == {
        "name": "sigaudit-policy",
        "items": [{"key": "audit-policy.yaml", "path": "policy.yaml"}],
    }
    assert not [c for c in by_kind(objs, "ConfigMap") if c["metadata"]["name"].endswith("-policy")]
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    assert vols[mounts["/etc/sigaudit/trust/keys"]]["configMap"]["name"] == "cosign-keys"
    assert vols[mounts["/etc/sigaudit/trust/notation"]]["secret"]["secretName"] == "notation-truststore"


def test_both_share_one_sqlite_claim_on_one_node() -> None:
    objs = render("both")
    cron, dep = one(objs, "CronJob"), one(objs, "Deployment")
    claim = one(objs, "PersistentVolumeClaim")
    assert (
        claim["spec"]["storageClassName"] == "fast-ssd" and claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    )
    cpod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    dpod = dep["spec"]["template"]["spec"]
    for pod in (cpod, dpod):
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    term = cpod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    server_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert term["labelSelector"]["matchLabels"].items() <= server_labels.items()
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"


def test_both_never_start_the_cronjob_and_the_server_scan_at_the_same_minute() -> None:
    """Issue 20: both schedules were `0 */6 * * *`; whichever started second exited 3 or skipped its slot."""
    from datetime import UTC, datetime

    from scanner.scheduler import parse_schedule

    objs = render("both")
    cron, dep = one(objs, "CronJob"), one(objs, "Deployment")
    assert cron["spec"].get("timeZone", "Etc/UTC") in ("Etc/UTC", "UTC")  # the server's schedule is UTC too
    server_args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    server_expr = next(a.split("=", 1)[1] for a in server_args if a.startswith("--schedule="))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cron_times = set(parse_schedule(cron["spec"]["schedule"]).next_fire_times(start, 400))
    server_times = set(parse_schedule(server_expr).next_fire_times(start, 400))
    assert cron_times and server_times and not cron_times & server_times
    gap = min(abs((a - b).total_seconds()) for a in cron_times for b in server_times)
    assert gap >= 3600, gap  # an hour-long scan of one does not run into the other


def test_retention_reaches_both_scanners_with_a_default() -> None:
    from scanner.options import age

    objs = render("both")
    cron, dep = one(objs, "CronJob"), one(objs, "Deployment")
    for pod in (cron["spec"]["jobTemplate"]["spec"]["template"]["spec"], dep["spec"]["template"]["spec"]):
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        keep = age(None, None, env["SIGAUDIT_RETENTION"])
        assert keep is not None and keep.days >= 7
    off = docs(template(set_json={"retention": ""}).stdout)
    cron = one(off, "CronJob")
    assert "SIGAUDIT_RETENTION" not in {e["name"] for e in cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                                         ["containers"][0]["env"]}


def test_the_declared_database_capacity_reaches_both_scanners() -> None:
    from scanner.options import size

    for values, want in (({"database": {"capacity": "50Gi"}}, 50 * 2**30), ({}, None)):
        objs = docs(template(set_json={"mode": "both", **values}).stdout)
        cron, dep = one(objs, "CronJob"), one(objs, "Deployment")
        for pod in (cron["spec"]["jobTemplate"]["spec"]["template"]["spec"], dep["spec"]["template"]["spec"]):
            env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
            assert size(None, None, env.get("SIGAUDIT_DB_CAPACITY")) == want


def test_namespaced_scope_uses_roles_only() -> None:
    objs = render("namespaced")
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objs, "Role")}
    assert set(roles) == {"team-a", "team-b"}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(objs, "RoleBinding")}
    assert set(bindings) == {"team-a", "team-b"}
    sa = one(objs, "ServiceAccount")
    for b in bindings.values():
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "sigaudit"}]
    args = args_of(main_container(next(s for _, s in pod_specs(objs) if _.startswith("CronJob"))))
    assert args[args.index("-n") + 1] == "team-a" and "team-b" in args
    assert "--exclude-namespace=team-b-sandbox*" in args and "--pull-secrets" in args
    # Inline database URL: stored in a Secret, and copied into a hook Secret for the migration Job.
    secrets = {s["metadata"]["name"]: s for s in by_kind(objs, "Secret")}
    assert secrets["sigaudit-db"]["stringData"]["url"].startswith("postgresql+psycopg://")
    hook_secret = secrets["sigaudit-migrate-db"]
    assert "pre-install" in hook_secret["metadata"]["annotations"]["helm.sh/hook"]
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        one(objs, "Job")["metadata"]["annotations"]["helm.sh/hook-weight"]
    )


def test_policy_import_flags() -> None:
    objs = render("policy-import")
    args = args_of(main_container(next(s for w, s in pod_specs(objs) if w.startswith("CronJob"))))
    for source in ("kyverno:cluster", "clusterimagepolicy:cluster", "notation:cluster", "kritis:cluster"):
        assert f"--policy-from={source}" in args
    assert "--pull-secrets" in args and "--docker-config=/etc/sigaudit/docker/config.json" in args
    key_roles = [r for r in by_kind(objs, "Role") if r["metadata"]["name"].endswith("-key-secrets")]
    assert {r["metadata"]["namespace"] for r in key_roles} == {"kyverno", "cosign-system"}
    for r in key_roles:
        assert r["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]


@pytest.mark.parametrize(("preset", "provider", "annotation"), [
    ("eks", "ecr", "eks.amazonaws.com/role-arn"),
    ("gke", "gcr", "iam.gke.io/gcp-service-account"),
    ("aks", "acr", "azure.workload.identity/client-id"),
])
def test_cloud_presets_turn_on_their_registry_provider_and_workload_identity(
    preset: str, provider: str, annotation: str
) -> None:
    """#21: each cloud preset passes its provider to every scan and annotates the ServiceAccount as its
    workload identity wants (AKS also labels the pods for the identity webhook)."""
    objs = render(preset)
    values = yaml.safe_load((CHART / "ci" / f"{preset}-values.yaml").read_text())
    sa = one(objs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {annotation: values["registryAuth"]["cloudIdentity"]}
    specs = pod_specs(objs)
    scanners = [s for w, s in specs if w.startswith(("CronJob", "Deployment"))]
    assert scanners
    for spec in scanners:
        auth = [a for a in args_of(main_container(spec)) if a.startswith("--registry-auth=")]
        assert len(auth) == 1 and provider in auth[0].removeprefix("--registry-auth=").split(","), auth
    workloads = [o for o in objs if o.get("kind") in ("CronJob", "Deployment")]
    for w in workloads:
        template_ = w["spec"]["jobTemplate"]["spec"]["template"] if w["kind"] == "CronJob" else w["spec"]["template"]
        labels = template_["metadata"]["labels"]
        assert (labels.get("azure.workload.identity/use") == "true") == (preset == "aks")


def test_no_registry_provider_without_a_preset_or_source() -> None:
    objs = render("cronjob-sqlite")
    assert not any(a.startswith("--registry-auth") for _, s in pod_specs(objs) for a in args_of(main_container(s)))
    assert not one(objs, "ServiceAccount")["metadata"].get("annotations")


def _chart_with_monitoring_files(tmp_path: Path) -> Path:
    chart = tmp_path / "sigaudit"
    shutil.copytree(CHART, chart)
    (chart / "rules" / "sigaudit.yaml").write_text(
        "groups:\n"
        "  - name: sigaudit\n"
        "    rules:\n"
        "      - alert: SigauditScanStale\n"
        "        expr: time() - sigaudit_last_success_timestamp_seconds > 2 * 6 * 3600\n"
        "        for: 15m\n"
        "        annotations:\n"
        "          summary: 'no successful scan of {{ $labels.cluster }}'\n",
        encoding="utf-8",
    )
    (chart / "rules" / "sigaudit_test.yaml").write_text("rule_files: [sigaudit.yaml]\ntests: []\n", encoding="utf-8")
    (chart / "dashboards" / "sigaudit.json").write_text(
        json.dumps({"title": "sigaudit", "uid": "sigaudit", "panels": [], "schemaVersion": 39}), encoding="utf-8"
    )
    return chart


def test_monitoring_on_without_shipped_files_renders_no_empty_objects() -> None:
    objs = render("monitoring-on")
    sm = one(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    svc = one(objs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    shipped_rules = [p for p in (CHART / "rules").glob("*.yaml") if not p.name.endswith("_test.yaml")]
    shipped_dash = list((CHART / "dashboards").glob("*.json"))
    assert len(by_kind(objs, "PrometheusRule")) == (1 if shipped_rules else 0)
    dash = [c for c in by_kind(objs, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(dash) == (1 if shipped_dash else 0)


def test_monitoring_on_mounts_shipped_rules_and_dashboards(tmp_path: Path) -> None:
    chart = _chart_with_monitoring_files(tmp_path)
    objs = docs(template([chart / "ci" / "monitoring-on-values.yaml"], chart=chart).stdout)
    rule = one(objs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    group = rule["spec"]["groups"][0]
    assert group["name"] == "sigaudit"
    # Alert templates pass through untouched (not interpreted by Helm).
    assert group["rules"][0]["annotations"]["summary"] == "no successful scan of {{ $labels.cluster }}"
    dash = [c for c in by_kind(objs, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(dash) == 1
    assert dash[0]["metadata"]["annotations"]["grafana_folder"] == "Supply chain"
    assert json.loads(dash[0]["data"]["sigaudit.json"])["uid"] == "sigaudit"
    # The promtool unit test file is not part of the rule set.
    assert len(rule["spec"]["groups"]) == 1


def test_monitoring_is_off_by_default() -> None:
    objs = docs(template([]).stdout)
    kinds = {o["kind"] for o in objs}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert not [c for c in by_kind(objs, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard")]
    assert kinds == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "PersistentVolumeClaim",
        "CronJob",
    }


# --- values rejected with a clear message ----------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"mode": "daemon"}, "mode"),
        ({"cronjob": {"concurrencyPolicy": "Allow"}}, "concurrencyPolicy"),
        ({"cronjob": {"schedule": "every hour"}}, "schedule"),
        ({"scope": {"namespaces": ["team-*"]}}, "namespaces"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"database": {"type": "mysql"}}, "database"),
        ({"pushgateway": {"url": "pushgateway:9091"}}, "url"),
        ({"server": {"port": 80}}, "port"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"trust": {"configMaps": [{"name": "keys"}]}}, "dir"),
        ({"unknownKey": True}, "unknownKey"),
        ({"database": {"type": "external"}}, "database.existingSecret"),
        ({"database": {"url": "postgresql://x/y"}}, "database.type=external"),
        ({"migrations": {"strategy": "hook"}}, "migrations.strategy=hook"),
        ({"mode": "both", "persistence": {"enabled": False}}, "persistence.enabled"),
        ({"metrics": {"serviceMonitor": {"enabled": True}}}, "mode=server"),
        ({"mode": "server", "server": {"auth": {"kubernetes": {"enabled": False}}}}, "server.auth"),
        ({"mode": "server", "server": {"metricsPort": 8080}}, "server.metricsPort"),
        ({"server": {"auth": {"kubernetes": {"readAccess": "get reports"}}}}, "readAccess"),
        ({"networkPolicy": {"apiFrom": {"ipBlock": {}}}}, "apiFrom"),
        ({"mode": "both", "server": {"schedule": "0 */6 * * *"}}, "cronjob.schedule equal to server.schedule"),
        ({"retention": "90"}, "retention"),
        ({"database": {"capacity": "50 GB"}}, "capacity"),
    ],
)
def test_bad_values_are_rejected_with_a_message_naming_them(values: dict[str, Any], message: str) -> None:
    out = template(set_json=values, check=False)
    assert out.returncode != 0, f"accepted {values}"
    assert message in out.stderr, out.stderr


# --- issue #27: who reaches the server ----------------------------------------------------------------


def test_server_authenticates_through_kubernetes_by_default_and_the_networkpolicy_opens_only_metrics() -> None:
    objs = docs(template(set_json={"mode": "server"}).stdout)
    server = main_container(one(objs, "Deployment")["spec"]["template"]["spec"])
    args = args_of(server)
    assert "--auth-kubernetes" in args and "--auth-kube-read=get:sigaudit.io/reports" in args
    assert "--auth-kube-scan=create:sigaudit.io/scans" in args and "--metrics-listen=0.0.0.0:9090" in args
    assert "--insecure-no-auth" not in args and not any(a.startswith("--auth-token-file") for a in args)
    assert "--api-scan-interval=60" in args and "--max-connections=100" in args
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"http": 8080, "metrics": 9090}
    assert server["livenessProbe"]["httpGet"]["port"] == "metrics"
    assert server["readinessProbe"]["httpGet"]["port"] == "metrics"
    assert {p["name"] for p in one(objs, "Service")["spec"]["ports"]} == {"http", "metrics"}
    np = one(objs, "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert np["spec"]["podSelector"] == one(objs, "Deployment")["spec"]["selector"]
    [rule] = np["spec"]["ingress"]  # nothing may reach the API port
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    delegator = [o for o in by_kind(objs, "ClusterRole") if o["metadata"]["name"].endswith("-auth-delegator")]
    assert [r["resources"] for r in delegator[0]["rules"]] == [["tokenreviews"], ["subjectaccessreviews"]]


def test_token_secret_scenario_mounts_the_token_and_opens_the_api_to_the_named_peers() -> None:
    objs = render("server-token-auth")
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    server = main_container(pod)
    args = args_of(server)
    assert "--auth-token-file=/etc/sigaudit/auth/token" in args and "--auth-kubernetes" not in args
    mount = next(m for m in server["volumeMounts"] if m["mountPath"] == "/etc/sigaudit/auth")
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] is True
    assert vol["secret"] == {"secretName": "sigaudit-api-token", "items": [{"key": "token", "path": "token"}]}
    assert not [o for o in by_kind(objs, "ClusterRole") if o["metadata"]["name"].endswith("-auth-delegator")]
    ingress = one(objs, "NetworkPolicy")["spec"]["ingress"]
    assert ingress[1] == {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}],
                          "ports": [{"port": "http", "protocol": "TCP"}]}


def test_no_networkpolicy_without_a_server_or_when_disabled() -> None:
    assert not by_kind(docs(template().stdout), "NetworkPolicy")
    assert not by_kind(docs(template(set_json={"mode": "server", "networkPolicy": {"enabled": False}}).stdout),
                       "NetworkPolicy")


def test_notifications_config_and_secret_refs() -> None:
    """The --notify file is a ConfigMap the scan reads through SIGAUDIT_NOTIFY; its secrets are Secrets
    mounted as files, never values in the ConfigMap or the environment."""
    from scanner.notify.config import NotifySpec

    objs = render("notify")
    dep = one(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    server = main_container(pod)
    assert env_of(server)["SIGAUDIT_NOTIFY"] == "/etc/sigaudit/notify/notify.yaml"
    cm = next(c for c in by_kind(objs, "ConfigMap") if c["metadata"]["name"].endswith("-notify"))
    config = yaml.safe_load(cm["data"]["notify.yaml"])
    NotifySpec.model_validate(config)  # what the chart renders is what sigaudit accepts
    assert [r["name"] for r in config["receivers"]] == ["security", "chat", "alertmanager"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["notify"]["configMap"]["name"] == cm["metadata"]["name"]
    secrets = [vols[f"notify-secret-{i}"]["secret"]["secretName"] for i in (0, 1)]
    assert secrets == ["sigaudit-webhook", "sigaudit-slack"]
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/etc/sigaudit/notify/notify.yaml"]["subPath"] == "notify.yaml"
    assert mounts["/etc/sigaudit/notify/sigaudit-webhook"]["readOnly"] is True
    # without notifications: nothing of it
    plain = render("server-token-auth")
    assert "SIGAUDIT_NOTIFY" not in env_of(main_container(one(plain, "Deployment")["spec"]["template"]["spec"]))
    assert not [c for c in by_kind(plain, "ConfigMap") if c["metadata"]["name"].endswith("-notify")]
