"""The container image, built with podman (``make image``) and run exactly as the chart runs it (issue #22):
read-only root filesystem, uid/gid 65532, an ``emptyDir``-like tmpfs at ``/tmp``, the data volume at
``/var/lib/sigaudit``, no capabilities, no privilege escalation, the chart's environment, host network to
reach the test docker-registry on 127.0.0.1. Every container's ``podman diff`` must be empty: nothing is
written outside the volumes.

Then sigaudit audits its own image (dogfood): the image is pushed to the real docker-registry, signed with
the real cosign (a key-based ``.sig``) and cosign v3 (a bundle), its SBOM attached as a signed CycloneDX
attestation (a referrer of the image), and the image itself scans a pod running it: ``verified``, with
``requirePredicateTypes`` naming CycloneDX.

Also: the image's labels record the base (pinned by digest) and the lock file it was installed from, the SBOM
inside it lists exactly the locked packages, and its size and ``--version`` start-up time are measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness import oci
from tests.harness.demo import _pod, publish_estate, write_pods, write_policy
from tests.harness.tools import free_port, require_binary, require_tool, wait_for_http

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PODMAN_DIR = REPO / "tests" / "tools" / "podman"
TAG = os.environ.get("SIGAUDIT_IMAGE", "localhost/sigaudit:dev")
CYCLONEDX = "https://cyclonedx.org/bom"
# What the chart sets (helm/sigaudit/templates/_helpers.tpl, sigaudit.env) for SQLite.
CHART_ENV = {
    "HOME": "/tmp",
    "XDG_CACHE_HOME": "/tmp/.cache",
    "SIGAUDIT_DATA_DIR": "/var/lib/sigaudit",
    "SIGAUDIT_DB": "sqlite:////var/lib/sigaudit/sigaudit.db",
}


def podman_env() -> dict[str, str]:
    """The settings kept in tests/tools/podman (runc, cgroupfs, vfs, no default ulimits)."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(PODMAN_DIR / "containers.conf"))
    env.setdefault("CONTAINERS_STORAGE_CONF", str(PODMAN_DIR / "storage.conf"))
    return env


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env())
    if check:
        assert r.returncode == 0, f"podman {' '.join(args[:3])}…: exit {r.returncode}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def image() -> str:
    """``make image`` (a no-op when the image's inputs have not changed since the last build)."""
    require_binary("podman")  # under CI a missing podman fails the test, never skips it
    require_binary("mmdebstrap")
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(PODMAN_DIR / "build-image.sh"), TAG], capture_output=True, text=True,
                       timeout=1800, env=podman_env())
    assert r.returncode == 0, f"make image failed:\n{r.stderr[-5000:]}"
    print(f"\nimage: {TAG} ready in {time.monotonic() - t0:.0f}s")
    return TAG


@dataclass
class ChartRun:
    """One container started the way the chart's CronJob and Deployment start theirs; the tests run their
    commands in it with ``podman exec`` (same user, read-only root, capabilities and mounts). One container,
    not one per command: with the vfs storage driver every ``podman run`` copies the whole image."""

    image: str
    name: str
    data: Path  # the volume at /var/lib/sigaudit
    inputs: Path  # mounted read-only at the same path (policy, keys, pods file), like the chart's ConfigMaps
    started_in: float  # seconds `podman run` took

    def exec(self, *args: str, timeout: float = 600, env: dict[str, str] | None = None,
             detach: bool = False) -> subprocess.CompletedProcess[str]:
        argv = ["exec", *(f"--env={k}={v}" for k, v in (env or {}).items())]
        if detach:
            argv.append("--detach")
        return podman(*argv, self.name, *args, timeout=timeout, check=False)

    def sigaudit(self, *args: str, timeout: float = 600,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.exec("sigaudit", *args, timeout=timeout, env=env)


def chart_flags(data: Path, inputs: Path) -> list[str]:
    """The chart's securityContext and mounts as podman flags (helm/sigaudit/values.yaml, templates)."""
    flags = ["--read-only", "--read-only-tmpfs=false", "--user=65532:65532", "--tmpfs=/tmp:rw,size=512m,mode=1777",
             "--cap-drop=ALL", "--security-opt=no-new-privileges", "--network=host",
             f"--volume={data}:/var/lib/sigaudit", f"--volume={inputs}:{inputs}:ro"]
    return flags + [f"--env={k}={v}" for k, v in CHART_ENV.items()]


def assert_no_writes(name: str) -> None:
    diff = podman("diff", name).stdout.strip()
    assert diff == "", f"the container wrote outside its volumes:\n{diff}"


@pytest.fixture(scope="module")
def chart(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartRun]:
    root = tmp_path_factory.mktemp("chart")
    os.chmod(root, 0o755)
    data, inputs = root / "data", root / "inputs"
    data.mkdir()
    inputs.mkdir()
    # The chart's fsGroup makes the volume writable by 65532; here the directory belongs to it.
    os.chown(data, 65532, 65532)
    name = f"sigaudit-test-{uuid.uuid4().hex[:10]}"
    t0 = time.monotonic()
    podman("run", "--detach", f"--name={name}", *chart_flags(data, inputs), "--entrypoint=sleep", image,
           "infinity")
    run = ChartRun(image, name, data, inputs, time.monotonic() - t0)
    try:
        yield run
        # Everything the tests ran in it wrote only to the volumes.
        assert_no_writes(name)
    finally:
        podman("rm", "--force", "--time=0", name, check=False)


def inspect(image: str) -> dict[str, Any]:
    doc: list[dict[str, Any]] = json.loads(podman("image", "inspect", image).stdout)
    return doc[0]


def test_version_size_and_startup_time(chart: ChartRun) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    r = chart.sigaudit("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"sigaudit, version {version}", r.stdout
    # The process itself, without podman's set-up (which vfs makes slow on this machine): best of three.
    probe = ("import subprocess,time\nts=[]\nfor _ in range(3):\n t=time.perf_counter()\n"
             " subprocess.run(['sigaudit','--version'],check=True,capture_output=True)\n"
             " ts.append(time.perf_counter()-t)\nprint(min(ts))")
    r = chart.exec("python3", "-c", probe)
    assert r.returncode == 0, r.stderr
    startup = float(r.stdout.strip())
    size = int(inspect(chart.image)["Size"])
    print(f"\nimage: size {size / 1e6:.0f} MB; `sigaudit --version` {startup:.2f}s in the container "
          f"(`podman run` of the container: {chart.started_in:.1f}s)")
    assert startup < 5.0, f"--version took {startup:.2f}s"
    assert size < 800e6, f"the image is {size / 1e6:.0f} MB"


def test_labels_record_the_base_digest_and_the_lock(image: str) -> None:
    labels = inspect(image)["Labels"]
    lock = REPO / "requirements.lock"
    assert labels["io.sigaudit.requirements.lock.sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    base = labels["org.opencontainers.image.base.name"]
    assert re.search(r"@sha256:[0-9a-f]{64}$", base), f"the base is not pinned by digest: {base}"
    for key in ("title", "version", "revision", "created", "licenses", "source"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    # The base named by the label is the one the image was built on: its layers are the image's first ones.
    base_layers = inspect(base.split("@")[0])["RootFS"]["Layers"]
    assert inspect(image)["RootFS"]["Layers"][: len(base_layers)] == base_layers


def test_a_base_without_a_digest_or_a_stale_lock_is_refused(image: str, tmp_path: Path) -> None:
    """The Dockerfile fails closed: a base named by tag alone, or a lock that is not the one the label will
    name, stops the build before anything is installed."""
    base = inspect(image)["Labels"]["org.opencontainers.image.base.name"]
    lock_sha = hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()
    cases = {
        "tag only": [f"PYTHON_IMAGE={base.split('@')[0]}", f"REQUIREMENTS_SHA256={lock_sha}"],
        "other lock": [f"PYTHON_IMAGE={base}", "REQUIREMENTS_SHA256=" + "0" * 64],
    }
    for case, build_args in cases.items():
        argv = ["build", "--network=none", "--pull=never", "--layers=false", "--file", str(REPO / "Dockerfile"),
                "--tag", f"localhost/sigaudit-refused:{uuid.uuid4().hex[:8]}"]
        argv += [a for arg in build_args for a in ("--build-arg", arg)]
        r = podman(*argv, str(REPO), check=False, timeout=300)
        out = r.stdout + r.stderr
        assert r.returncode != 0, case
        want = "not pinned by digest" if case == "tag only" else "requirements.lock: FAILED"
        assert want in out, (case, out[-2000:])


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s\\]+)", (REPO / "requirements.lock").read_text(), re.M)
    return {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in pins}


def read_sbom(chart: ChartRun) -> dict[str, Any]:
    r = chart.exec("cat", "/usr/share/sigaudit/sigaudit.cdx.json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def test_sbom_lists_exactly_what_was_installed(chart: ChartRun) -> None:
    sbom = read_sbom(chart)
    assert sbom["bomFormat"] == "CycloneDX"
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    root = sbom["metadata"]["component"]
    assert (root["name"], root["version"]) == ("sigaudit", version), root
    got = {re.sub(r"[-_.]+", "-", c["name"]).lower(): c["version"] for c in sbom["components"]}
    got.pop("sigaudit", None)
    want = locked()
    # Every locked package at its locked version; no pip, no build tools.
    assert got == want, {"extra": got.keys() - want.keys(), "missing": want.keys() - got.keys()}
    # And it is what is really in the venv.
    r = chart.exec("python3", "-c", "import importlib.metadata as m; print('\\n'.join(sorted(f\"{d.metadata['Name']}=="
                   "{d.version}\" for d in m.distributions())))")
    assert r.returncode == 0, r.stderr
    installed = dict(line.split("==") for line in r.stdout.split())
    installed = {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in installed.items()}
    assert installed.pop("sigaudit") == version
    assert installed == want


def test_db_upgrade_scan_report_and_metrics_then_serve(chart: ChartRun, registry: Any) -> None:
    r = chart.sigaudit("db", "upgrade")
    assert r.returncode == 0, r.stderr
    assert (chart.data / "sigaudit.db").is_file()
    est = publish_estate(registry.url, registry.host)
    policy = write_policy(est, chart.inputs)
    pods = write_pods(est, chart.inputs / "pods.json")
    r = chart.sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--cluster", "image-test",
                       "--json-out", "/var/lib/sigaudit/scan.json", "--report", "/var/lib/sigaudit/report.html",
                       "--metrics-file", "/var/lib/sigaudit/metrics.prom", "--no-progress",
                       "--exit-zero-on-violations")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((chart.data / "scan.json").read_text())
    assert doc["scan"]["status"] == "complete"
    got = {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in doc["images"]}
    assert got == est.expected
    assert "<html" in (chart.data / "report.html").read_text().lower()
    assert "sigaudit_" in (chart.data / "metrics.prom").read_text()

    # The Deployment's command on the same database: /healthz, then /metrics with the scan run at start.
    port = free_port()
    log = "/tmp/serve.log"
    r = chart.exec("sh", "-c", f"sigaudit serve --pods-file {pods} --policy {policy} --cluster serve-test "
                   f"--listen 127.0.0.1:{port} >{log} 2>&1 & echo $! >/tmp/serve.pid; wait", detach=True)
    assert r.returncode == 0, r.stderr
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=120)
        deadline = time.monotonic() + 300
        metrics = ""
        while time.monotonic() < deadline:
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            if re.search(r'^sigaudit_last_success_timestamp_seconds\{cluster="serve-test"\} [1-9]', metrics, re.M):
                break
            time.sleep(2)
        else:
            pytest.fail(f"no successful scan in /metrics:\n{metrics[-2000:]}\n{chart.exec('cat', log).stdout[-2000:]}")
    finally:
        chart.exec("sh", "-c", "kill -TERM $(cat /tmp/serve.pid)")
    # SIGTERM (what the kubelet sends) stops it.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and chart.exec("sh", "-c", "kill -0 $(cat /tmp/serve.pid)").returncode == 0:
        time.sleep(1)
    assert chart.exec("sh", "-c", "kill -0 $(cat /tmp/serve.pid)").returncode != 0, "serve ignored SIGTERM"


# --- dogfood: sigaudit audits its own image ---------------------------------------------------------------


def _cosign(tool: Path, *args: str, cwd: Path) -> str:
    r = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                       env={**os.environ, "COSIGN_PASSWORD": "", "HOME": str(cwd), "TUF_ROOT": "/nonexistent-sigaudit"})
    assert r.returncode == 0, f"{tool.name} {' '.join(args)}: {r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def pushed(image: str, chart: ChartRun, registry: Any,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The image in the test registry, signed by cosign (key) and cosign v3 (bundle), its SBOM attested."""
    cosign, cosign3 = require_tool("cosign"), require_tool("cosign3")
    d = tmp_path_factory.mktemp("dogfood")
    os.chmod(d, 0o755)
    digestfile = d / "digest"
    podman("push", "--tls-verify=false", "--format=oci", f"--digestfile={digestfile}", image,
           f"{registry.host}/sigaudit/sigaudit:dev", timeout=900)
    digest = digestfile.read_text().strip()
    ref = f"{registry.host}/sigaudit/sigaudit@{digest}"
    _cosign(cosign, "generate-key-pair", cwd=d)
    _cosign(cosign, "sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", "--allow-http-registry", ref,
            cwd=d)
    sbom = d / "sigaudit.cdx.json"
    sbom.write_text(json.dumps(read_sbom(chart)))
    v3 = ["--key", "cosign.key", "--new-bundle-format", "--tlog-upload=false", "--use-signing-config=false",
          "--allow-http-registry", "--yes"]
    _cosign(cosign3, "sign", *v3, ref, cwd=d)
    _cosign(cosign3, "attest", *v3, "--type", "cyclonedx", "--predicate", str(sbom), ref, cwd=d)
    yield {"ref": ref, "digest": digest, "pub": d / "cosign.pub", "sbom": json.loads(sbom.read_text())}


def referrers(registry: Any, digest: str) -> list[dict[str, Any]]:
    """The image's referrers by the OCI 1.1 tag fallback (docker-registry has no referrers API)."""
    tag = digest.replace(":", "-")
    r = httpx.get(f"{registry.url}/v2/sigaudit/sigaudit/manifests/{tag}",
                  headers={"Accept": "application/vnd.oci.image.index.v1+json"}, timeout=30)
    assert r.status_code == 200, r.text
    manifests: list[dict[str, Any]] = r.json()["manifests"]
    return manifests


def test_the_sbom_is_attached_as_a_signed_referrer(pushed: dict[str, Any], registry: Any) -> None:
    bundles = [m for m in referrers(registry, pushed["digest"])
               if m.get("artifactType", "").startswith("application/vnd.dev.sigstore.bundle")]
    predicates = []
    for m in bundles:
        manifest = httpx.get(f"{registry.url}/v2/sigaudit/sigaudit/manifests/{m['digest']}",
                             headers={"Accept": oci.OCI_MANIFEST}, timeout=30).json()
        assert manifest["subject"]["digest"] == pushed["digest"]
        layer = manifest["layers"][0]
        bundle = httpx.get(f"{registry.url}/v2/sigaudit/sigaudit/blobs/{layer['digest']}", timeout=30).json()
        if "dsseEnvelope" in bundle:
            import base64

            statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
            predicates.append((statement["predicateType"], statement["predicate"]))
    sboms = [p for t, p in predicates if t == CYCLONEDX]
    assert sboms == [pushed["sbom"]], [t for t, _ in predicates]


def dogfood_scan(chart: ChartRun, registry: Any, pushed: dict[str, Any], **verifier: Any) -> dict[str, Any]:
    (chart.inputs / "cosign.pub").write_bytes(pushed["pub"].read_bytes())
    policy = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
              "spec": {"insecureRegistries": [registry.host],
                       "rules": [{"name": "sigaudit", "images": [f"{registry.host}/sigaudit/*"],
                                  "verifiers": [{"cosign": {"key": "cosign.pub", "ignoreTlog": True, **verifier}}]}]}}
    (chart.inputs / "policy.yaml").write_text(yaml.safe_dump(policy))
    pod = _pod("sigaudit", "sigaudit-scan-1", [("scan", f"{registry.host}/sigaudit/sigaudit:dev", pushed["ref"])],
               owner=("Job", "sigaudit-scan"))
    (chart.inputs / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [pod]}))
    # No Sigstore public-good instance here: its trust root is not fetched (the bundles carry no log entry).
    r = chart.sigaudit("scan", "--pods-file", str(chart.inputs / "pods.json"), "--policy",
                       str(chart.inputs / "policy.yaml"), "--no-store", "-o", "json", "--no-progress",
                       "--exit-zero-on-violations", env={"SIGAUDIT_SIGSTORE_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    images: list[dict[str, Any]] = json.loads(r.stdout)["images"]
    assert len(images) == 1 and images[0]["digest"] == pushed["digest"], images
    return images[0]


def test_sigaudit_verifies_its_own_image(chart: ChartRun, registry: Any, pushed: dict[str, Any]) -> None:
    got = dogfood_scan(chart, registry, pushed, requirePredicateTypes=[CYCLONEDX])
    assert got["status"] == "verified", got["reasons"]


def test_its_own_image_without_the_required_attestation_is_not_verified(
    chart: ChartRun, registry: Any, pushed: dict[str, Any]
) -> None:
    """The same scan asking for an SPDX SBOM, which was never attested: the check is live, not decorative."""
    got = dogfood_scan(chart, registry, pushed, requirePredicateTypes=["https://spdx.dev/Document"])
    assert got["status"] == "invalid", got
    assert any("spdx" in r.lower() for r in got["reasons"]), got["reasons"]
