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
    """Runs the image the way the chart's CronJob and Deployment do; keeps each container until its diff is
    checked."""

    image: str
    data: Path  # the volume at /var/lib/sigaudit
    inputs: Path  # mounted read-only at the same path (policy, keys, pods file), like the chart's ConfigMaps

    def argv(self, name: str, *args: str, detach: bool = False, entrypoint: str | None = None) -> list[str]:
        argv = ["run", f"--name={name}", "--read-only", "--read-only-tmpfs=false", "--user=65532:65532",
                "--tmpfs=/tmp:rw,size=512m,mode=1777", "--cap-drop=ALL", "--security-opt=no-new-privileges",
                "--network=host", f"--volume={self.data}:/var/lib/sigaudit",
                f"--volume={self.inputs}:{self.inputs}:ro"]
        argv += [f"--env={k}={v}" for k, v in CHART_ENV.items()]
        if detach:
            argv.append("--detach")
        if entrypoint:
            argv.append(f"--entrypoint={entrypoint}")
        return [*argv, self.image, *args]

    def run(self, *args: str, timeout: float = 600, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
        name = f"sigaudit-test-{uuid.uuid4().hex[:10]}"
        try:
            r = podman(*self.argv(name, *args, entrypoint=entrypoint), timeout=timeout, check=False)
            assert_no_writes(name)
        finally:
            podman("rm", "--force", name, check=False)
        return r


def assert_no_writes(name: str) -> None:
    diff = podman("diff", name).stdout.strip()
    assert diff == "", f"the container wrote outside its volumes:\n{diff}"


@pytest.fixture
def chart(image: str, tmp_path: Path) -> ChartRun:
    data = tmp_path / "data"
    inputs = tmp_path / "inputs"
    data.mkdir()
    inputs.mkdir()
    # The chart's fsGroup makes the volume writable by 65532; here the directory belongs to it.
    os.chown(data, 65532, 65532)
    return ChartRun(image, data, inputs)


def inspect(image: str) -> dict[str, Any]:
    doc: list[dict[str, Any]] = json.loads(podman("image", "inspect", image).stdout)
    return doc[0]


def test_version_size_and_startup_time(chart: ChartRun) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    t0 = time.monotonic()
    r = chart.run("--version")
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"sigaudit, version {version}", r.stdout
    # The process itself, without podman's container set-up (which vfs makes slow on this machine).
    probe = ("import subprocess,time\nts=[]\nfor _ in range(3):\n t=time.perf_counter()\n"
             " subprocess.run(['sigaudit','--version'],check=True,capture_output=True)\n"
             " ts.append(time.perf_counter()-t)\nprint(min(ts))")
    r = chart.run("-c", probe, entrypoint="python3")
    assert r.returncode == 0, r.stderr
    startup = float(r.stdout.strip())
    size = int(inspect(chart.image)["Size"])
    print(f"\nimage: size {size / 1e6:.0f} MB; `sigaudit --version` {startup:.2f}s in the container "
          f"({wall:.1f}s with podman run)")
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


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s\\]+)", (REPO / "requirements.lock").read_text(), re.M)
    return {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in pins}


def read_sbom(chart: ChartRun) -> dict[str, Any]:
    r = chart.run("/usr/share/sigaudit/sigaudit.cdx.json", entrypoint="cat")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def test_sbom_lists_exactly_what_was_installed(chart: ChartRun) -> None:
    sbom = read_sbom(chart)
    assert sbom["bomFormat"] == "CycloneDX"
    got = {re.sub(r"[-_.]+", "-", c["name"]).lower(): c["version"] for c in sbom["components"]}
    want = locked()
    # Every locked package at its locked version, plus sigaudit itself; no pip, no build tools.
    assert got.pop("sigaudit") == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert got == want, {"extra": got.keys() - want.keys(), "missing": want.keys() - got.keys()}
    # And it is what is really in the venv: pip's own view agrees.
    r = chart.run("-c", "import importlib.metadata as m; print('\\n'.join(sorted(f\"{d.metadata['Name']}=="
                  "{d.version}\" for d in m.distributions())))", entrypoint="python3")
    assert r.returncode == 0, r.stderr
    installed = dict(line.split("==") for line in r.stdout.split())
    installed = {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in installed.items()}
    installed.pop("sigaudit")
    assert installed == want


def test_db_upgrade_scan_report_and_metrics(chart: ChartRun, registry: Any) -> None:
    r = chart.run("db", "upgrade")
    assert r.returncode == 0, r.stderr
    assert (chart.data / "sigaudit.db").is_file()
    est = publish_estate(registry.url, registry.host)
    policy = write_policy(est, chart.inputs)
    pods = write_pods(est, chart.inputs / "pods.json")
    r = chart.run("scan", "--pods-file", str(pods), "--policy", str(policy), "--cluster", "image-test",
                  "--json-out", "/var/lib/sigaudit/scan.json", "--report", "/var/lib/sigaudit/report.html",
                  "--metrics-file", "/var/lib/sigaudit/metrics.prom", "--no-progress", "--exit-zero-on-violations")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((chart.data / "scan.json").read_text())
    assert doc["scan"]["status"] == "complete"
    got = {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in doc["images"]}
    assert got == est.expected
    assert "<html" in (chart.data / "report.html").read_text().lower()
    assert "sigaudit_" in (chart.data / "metrics.prom").read_text()


def test_serve_answers_healthz_and_metrics(chart: ChartRun, registry: Any) -> None:
    est = publish_estate(registry.url, registry.host)
    policy = write_policy(est, chart.inputs)
    pods = write_pods(est, chart.inputs / "pods.json")
    assert chart.run("db", "upgrade").returncode == 0
    port = free_port()
    name = f"sigaudit-serve-{uuid.uuid4().hex[:10]}"
    podman(*chart.argv(name, "serve", "--pods-file", str(pods), "--policy", str(policy),
                       "--listen", f"127.0.0.1:{port}", detach=True))
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=120)
        deadline = time.monotonic() + 300
        metrics = ""
        while time.monotonic() < deadline:  # the scan run at start lands in /metrics
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            if re.search(r"^sigaudit_last_scan_success_timestamp_seconds\S* [1-9]", metrics, re.M):
                break
            time.sleep(2)
        else:
            pytest.fail(f"no successful scan in /metrics:\n{metrics[-2000:]}\n{podman('logs', name).stderr[-2000:]}")
        podman("stop", "--time=30", name)
        assert_no_writes(name)
    finally:
        podman("rm", "--force", name, check=False)


# --- dogfood: sigaudit audits its own image ---------------------------------------------------------------


def _cosign(tool: Path, *args: str, cwd: Path) -> str:
    r = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                       env={**os.environ, "COSIGN_PASSWORD": "", "HOME": str(cwd), "TUF_ROOT": "/nonexistent-sigaudit"})
    assert r.returncode == 0, f"{tool.name} {' '.join(args)}: {r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def pushed(image: str, registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
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
    r = podman("run", "--rm", "--read-only", "--user=65532:65532", "--network=none", "--entrypoint=cat", image,
               "/usr/share/sigaudit/sigaudit.cdx.json")
    sbom.write_text(r.stdout)
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
    r = chart.run("scan", "--pods-file", str(chart.inputs / "pods.json"), "--policy",
                  str(chart.inputs / "policy.yaml"), "--no-store", "-o", "json", "--no-progress",
                  "--exit-zero-on-violations")
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
