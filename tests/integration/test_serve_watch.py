"""``sigaudit serve --watch`` against the real kube-apiserver and the real docker-registry (issue 24 item 2).

* a new pod (its imageID patched in through the status subresource, as a kubelet does) is verified within
  seconds and recorded against the latest complete scan, marked ``source: watch`` (API, metrics);
* a digest the scan already decided costs no registry request; one the verification cache decided costs
  the cache's cheap re-list only (counted in the registry's own access log), never a signature fetch;
* a watch started from a compacted resourceVersion gets 410 Gone and recovers by listing;
* a burst of 1,000 new pods (through a queue smaller than the burst) is all recorded, with bounded RSS;
* a watch-found violation is notified once (webhook, deduplicated with the scans' notifications).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from scanner.inventory.watch import PodInformer
from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sign_image
from tests.harness.fixtures_kube import (
    KubeAPIServer,
    container,
    create,
    ensure_namespace,
    make_bare_pod,
    pod_manifest,
    pod_template,
    report_status,
    start_kube_apiserver,
)
from tests.harness.tools import free_port, stop_process, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.tools]

REPO = Path(__file__).resolve().parents[2]


def _wait(predicate: Any, timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(what)


def _policy(tmp: Path, host: str, key: KeyPair) -> Path:
    (tmp / "k.pub").write_text(key.public_pem)
    policy = tmp / "policy.yaml"
    policy.write_text(f"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  insecureRegistries: ['{host}']\n"
                      f"  rules:\n    - name: signed\n      images: ['{host}/*']\n"
                      "      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
    return policy


def _run_pod(server: KubeAPIServer, ns: str, name: str, image: str, image_id: str) -> dict[str, Any]:
    pod = make_bare_pod(server, ns, name, pod_template({}, [container("app", image)]))
    report_status(server, pod, {"app": image_id})
    return pod


class Serve:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, log: Path, db: str) -> None:
        self.proc, self.base, self.log, self.db = proc, base, log, db

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, timeout=20)

    def latest(self) -> dict[str, Any] | None:
        scans = [s for s in self.get("/api/scans").json()["scans"] if s["status"] == "complete"]
        return scans[0] if scans else None

    def images(self, scan_id: int) -> list[dict[str, Any]]:
        return list(self.get(f"/api/scans/{scan_id}").json()["images"])

    def rss_kib(self, field: str = "VmHWM") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(field)


def _serve(server: KubeAPIServer, tmp: Path, policy: Path, ns: str, *extra: str,
           env_extra: dict[str, str] | None = None) -> Iterator[Serve]:
    port = free_port()
    db = f"sqlite:///{tmp / 'watch.db'}"
    log_path = tmp / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOME": str(tmp), "DOCKER_CONFIG": str(tmp / "docker"),
           **(env_extra or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scanner.cli", "serve", "--watch", "--kubeconfig", str(server.kubeconfig),
             "--policy", str(policy), "--db", db, "--cluster", "watch", "--listen", f"127.0.0.1:{port}",
             "--schedule", "0 0 1 1 *", "-n", ns, "--shutdown-timeout", "3", *extra],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    s = Serve(proc, f"http://127.0.0.1:{port}", log_path, db)
    try:
        wait_for_http(f"{s.base}/healthz", proc=proc, log_path=log_path, timeout=60)
        _wait(s.latest, 60, "the start-up scan did not complete", every=0.25)
        yield s
    finally:
        stop_process(proc)


def test_new_pod_verified_within_seconds_and_decided_digests_not_refetched(
        kube_apiserver: KubeAPIServer, registry_factory: Any, tmp_path: Path) -> None:
    reg = registry_factory()
    key = KeyPair.ecdsa()
    known = oci.make_image(reg.url, "w/known", "1")
    fresh = oci.make_image(reg.url, "w/fresh", "1")
    unsigned = oci.make_image(reg.url, "w/unsigned", "1")
    for repo, digest in (("w/known", known), ("w/fresh", fresh)):
        sign_image(reg.url, reg.host, repo, digest, key)
    ns = f"sigaudit-watch-{uuid.uuid4().hex[:6]}"
    ensure_namespace(kube_apiserver, ns)
    _run_pod(kube_apiserver, ns, "known", f"{reg.host}/w/known:1", f"{reg.host}/w/known@{known}")
    gen = _serve(kube_apiserver, tmp_path, _policy(tmp_path, reg.host, key), ns)
    s = next(gen)
    try:
        scan = s.latest()
        assert scan is not None
        assert [i["status"] for i in s.images(scan["id"])] == ["verified"]

        # 1. A new pod running a new signed digest: verified within seconds, recorded against the scan.
        t0 = time.monotonic()
        _run_pod(kube_apiserver, ns, "fresh", f"{reg.host}/w/fresh:1", f"{reg.host}/w/fresh@{fresh}")

        def found(digest: str) -> dict[str, Any] | None:
            return next((i for i in s.images(scan["id"]) if i["digest"] == digest), None)

        verdict = _wait(lambda: found(fresh), 15, "the new pod's digest was not judged")
        took = time.monotonic() - t0
        assert took < 10, took
        assert verdict["status"] == "verified" and verdict["source"] == "watch", verdict
        assert [c["pod"] for c in verdict["containers"]] == ["fresh"]
        # An unsigned one is said so, and it reaches the metrics (the verdict series read the store).
        _run_pod(kube_apiserver, ns, "bad", f"{reg.host}/w/unsigned:1", f"{reg.host}/w/unsigned@{unsigned}")
        assert _wait(lambda: found(unsigned), 15, "unsigned not judged")["status"] == "unsigned"
        metrics = s.get("/metrics").text
        assert f'sigaudit_images{{cluster="watch",compliant="false",namespace="{ns}",status="unsigned"}} 1.0' \
            in metrics, metrics
        assert 'sigaudit_watch_verdicts{cluster="watch"} 2.0' in metrics
        ready = s.get("/readyz").json()
        assert ready["watch"]["fresh"] is True and ready["ready"] is True, ready
        # The scan's own summary is unchanged: scans stay the source of truth.
        assert s.get("/api/scans").json()["scans"][0]["images"] == 1

        # 2. A second pod of a digest the scan decided (same namespace, tag and credentials): nothing at all.
        before = reg.request_count()
        _run_pod(kube_apiserver, ns, "known-2", f"{reg.host}/w/known:1", f"{reg.host}/w/known@{known}")
        time.sleep(3)
        assert reg.request_count() == before, reg.requests()[before:]
        assert len(s.images(scan["id"])) == 3

        # 3. The same digest under another tag is a new key, but the cache decided it: the cheap re-list
        # (a HEAD of the .sig tag), never the signature's manifest or blobs again.
        before = reg.request_count()
        _run_pod(kube_apiserver, ns, "known-tag", f"{reg.host}/w/known:other", f"{reg.host}/w/known@{known}")
        again = _wait(lambda: [i for i in s.images(scan["id"]) if i["digest"] == known and i["source"] == "watch"],
                      15, "the re-tagged pod was not judged")
        assert again[0]["status"] == "verified"
        made = reg.requests()[before:]
        assert made and all(r.method == "HEAD" for r in made), made
    finally:
        gen.close()
    assert "Traceback" not in s.log.read_text(), s.log.read_text()[-3000:]


class _Sink:
    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}
        self.gone: list[str] = []
        self.lists = 0

    def pod_seen(self, pod: dict[str, Any]) -> None:
        self.seen[pod["metadata"]["uid"]] = pod

    def pod_gone(self, uid: str) -> None:
        self.gone.append(uid)

    def listed(self, namespace: str | None, uids: set[str]) -> None:
        self.lists += 1


@pytest.fixture(scope="module")
def etcd_watching_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """An API server whose watches go to etcd (``--watch-cache=false``): a compacted resourceVersion is
    then really gone (the watch cache of the shared server keeps serving old events it still holds)."""
    server, cleanup = start_kube_apiserver(tmp_path_factory.mktemp("kube-nocache"), ["--watch-cache=false"])
    try:
        yield server
    finally:
        cleanup()


def test_watch_from_a_compacted_resource_version_recovers_by_listing(etcd_watching_apiserver: KubeAPIServer) -> None:
    kube_apiserver = etcd_watching_apiserver
    ns = f"sigaudit-watch410-{uuid.uuid4().hex[:6]}"
    ensure_namespace(kube_apiserver, ns)
    first = make_bare_pod(kube_apiserver, ns, "first", pod_template({}, [container("app", "nginx:1")]))
    old_rv = first["metadata"]["resourceVersion"]
    for i in range(3):  # history after old_rv, then compacted away
        make_bare_pod(kube_apiserver, ns, f"p{i}", pod_template({}, [container("app", "nginx:1")]))
    kube_apiserver.expire_continue_tokens(probe_path=f"/api/v1/namespaces/{ns}/pods")
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kube_apiserver.kubeconfig))
    sink = _Sink()
    informer = PodInformer(api, sink, namespace=ns, timeout_seconds=5, resource_version=old_rv)
    stop = threading.Event()
    t = threading.Thread(target=informer.run, args=(stop,), daemon=True)
    t.start()
    try:
        _wait(lambda: informer.status.gone >= 1 and sink.lists >= 1, 60, f"no 410 recovery: {informer.status}")
        assert len(sink.seen) == 4, sorted(p["metadata"]["name"] for p in sink.seen.values())
        # Watching again from the list: a new pod, then its deletion, arrive as events.
        late = make_bare_pod(kube_apiserver, ns, "late", pod_template({}, [container("app", "nginx:1")]))
        _wait(lambda: late["metadata"]["uid"] in sink.seen, 20, "the new pod was not seen")
        with kube_apiserver.http() as c:
            c.delete(f"/api/v1/namespaces/{ns}/pods/late").raise_for_status()
        _wait(lambda: late["metadata"]["uid"] in sink.gone, 20, "the deletion was not seen")
        assert informer.status.failures == 0, informer.status
    finally:
        stop.set()
        informer.stop()
        t.join(10)
        api.close()


BURST = 1000


def test_a_burst_of_1000_new_pods_is_all_recorded_with_bounded_memory(
        kube_apiserver: KubeAPIServer, registry_factory: Any, tmp_path: Path) -> None:
    reg = registry_factory()
    key = KeyPair.ecdsa()
    base = oci.make_image(reg.url, "b/base", "1")
    sign_image(reg.url, reg.host, "b/base", base, key)
    ns = f"sigaudit-burst-{uuid.uuid4().hex[:6]}"
    ensure_namespace(kube_apiserver, ns)
    _run_pod(kube_apiserver, ns, "base", f"{reg.host}/b/base:1", f"{reg.host}/b/base@{base}")
    # A queue smaller than the burst: pods beyond it are dropped and listed again once it drains.
    gen = _serve(kube_apiserver, tmp_path, _policy(tmp_path, reg.host, key), ns, "--watch-queue-max", "50",
                 "--registry-concurrency", "8")
    s = next(gen)
    try:
        scan = s.latest()
        assert scan is not None
        rss_before = s.rss_kib("VmRSS")
        # 1,000 pods, each running a digest nobody has judged (not in the registry: unsigned).
        digests = {f"burst-{i:04d}": "sha256:" + uuid.uuid4().hex * 2 for i in range(BURST)}

        def one(name: str) -> None:
            with kube_apiserver.http() as c:
                pod = create(c, pod_manifest(ns, name, pod_template({}, [container("app", f"{reg.host}/b/app:1")])))
                report_status(c, pod, {"app": f"{reg.host}/b/app@{digests[name]}"})

        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, digests))
        created = time.monotonic() - t0

        def recorded() -> set[str]:
            return {c["pod"] for i in s.images(scan["id"]) if i["source"] == "watch" for c in i["containers"]}

        _wait(lambda: recorded() >= set(digests), 300, "the burst was not all recorded", every=2)
        drained = time.monotonic() - t0
        images = [i for i in s.images(scan["id"]) if i["source"] == "watch"]
        assert len(images) == BURST and {i["status"] for i in images} == {"unsigned"}, len(images)
        assert recorded() == {*digests}
        peak = s.rss_kib("VmHWM")
        health = s.get("/readyz").json()["watch"]
        print(f"\nburst: {BURST} pods created in {created:.1f} s, all recorded after {drained:.1f} s; serve RSS "
              f"before {rss_before // 1024} MiB, peak {peak // 1024} MiB; {health['dropped']} dropped by the full "
              "queue and recovered by re-listing")
        assert peak - rss_before < 200 * 1024, (rss_before, peak)
        assert health["queue"] == 0 and health["verdicts"] == BURST, health
    finally:
        gen.close()
    assert "Traceback" not in s.log.read_text(), s.log.read_text()[-3000:]


def test_a_watch_found_violation_is_notified_once(kube_apiserver: KubeAPIServer, registry_factory: Any,
                                                  http_receiver: Any, tmp_path: Path) -> None:
    reg = registry_factory()
    key = KeyPair.ecdsa()
    good = oci.make_image(reg.url, "n/good", "1")
    sign_image(reg.url, reg.host, "n/good", good, key)
    rogue = oci.make_image(reg.url, "n/rogue", "1")
    other = oci.make_image(reg.url, "n/other", "1")
    ns = f"sigaudit-watchn-{uuid.uuid4().hex[:6]}"
    ensure_namespace(kube_apiserver, ns)
    _run_pod(kube_apiserver, ns, "good", f"{reg.host}/n/good:1", f"{reg.host}/n/good@{good}")
    notify = tmp_path / "notify.yaml"
    notify.write_text(json.dumps({"receivers": [{"name": "hook", "type": "webhook", "url": f"{http_receiver.url}/hook",
                                                 "secret_env": "SIGAUDIT_WEBHOOK_SECRET"}]}))
    gen = _serve(kube_apiserver, tmp_path, _policy(tmp_path, reg.host, key), ns, "--notify", str(notify),
                 "--api-scan-interval", "0", env_extra={"SIGAUDIT_WEBHOOK_SECRET": "s3cret-s3cret-s3cret"})
    s = next(gen)
    try:
        # The start-up scan is the baseline; a second complete scan gives the watch a previous scan to diff.
        first = s.latest()
        assert first is not None
        assert httpx.post(s.base + "/api/scans", json={}, timeout=20).status_code == 202
        _wait(lambda: (s.latest() or {}).get("id", 0) > first["id"], 60, "the second scan did not complete")
        assert http_receiver.requests == []
        _run_pod(kube_apiserver, ns, "rogue", f"{reg.host}/n/rogue:1", f"{reg.host}/n/rogue@{rogue}")
        got = http_receiver.wait_for(1, timeout=30)
        changes = got[0].json()["changes"]
        assert [(c["kind"], c["status"], c["namespaces"]) for c in changes] == [
            ("newly-non-compliant", "unsigned", [ns])], changes
        assert "/n/rogue" in changes[0]["image"]
        # A second pod of it is known (nothing judged, nothing sent); another new violation is sent alone.
        _run_pod(kube_apiserver, ns, "rogue-2", f"{reg.host}/n/rogue:1", f"{reg.host}/n/rogue@{rogue}")
        _run_pod(kube_apiserver, ns, "other", f"{reg.host}/n/other:1", f"{reg.host}/n/other@{other}")
        got = http_receiver.wait_for(2, timeout=30)
        assert ["/n/other" in c["image"] for c in got[1].json()["changes"]] == [True], got[1].json()
        time.sleep(2)
        assert len(http_receiver.requests) == 2
    finally:
        gen.close()
    log = s.log.read_text()
    assert "Traceback" not in log and "s3cret" not in log, log[-3000:]


def test_a_refused_watch_backs_off_and_is_reported_stale_though_lists_succeed(
        etcd_watching_apiserver: KubeAPIServer) -> None:
    """RBAC with list but without watch on pods (an old chart, a hand-written Role): the informer lists,
    retries the watch with backoff, never crashes, and its watch freshness does not advance."""
    server = etcd_watching_apiserver
    ns = f"sigaudit-nowatch-{uuid.uuid4().hex[:6]}"
    kubeconfig = server.service_account_kubeconfig(ns, "lister")
    from tests.harness.fixtures_kube import apply

    apply(server, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "list-pods", "namespace": ns},
                   "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    apply(server, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "list-pods", "namespace": ns},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "list-pods"},
                   "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": ns}]})
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    sink = _Sink()
    informer = PodInformer(api, sink, namespace=ns, timeout_seconds=5, backoff_max=1)
    stop = threading.Event()
    t = threading.Thread(target=informer.run, args=(stop,), daemon=True)
    t.start()
    try:
        _wait(lambda: informer.status.lists >= 1 and informer.status.failures >= 3, 60, f"{informer.status}")
        assert informer.status.last_watch is None and "403" in (informer.status.last_error or ""), informer.status
        assert t.is_alive()
    finally:
        stop.set()
        informer.stop()
        t.join(10)
        api.close()


def test_watch_verdicts_on_postgresql(postgres_url: str) -> None:
    """The watch's rows go in by COPY on PostgreSQL (the same writer as a scan's), positions after the scan's."""
    from scanner.models import ImageReference, RunningImage, Status, Verdict, VerdictSource
    from scanner.store import open_store, upgrade
    from tests.unit.test_watch import D2, REG, ctr, scan_of

    upgrade(postgres_url)
    store = open_store(postgres_url)
    try:
        cluster = f"watch-{uuid.uuid4().hex[:6]}"
        result = replace(scan_of(ctr("a", "sha256:" + "1" * 64)), cluster=cluster)
        scan_id = store.begin_scan(cluster, result.started_at, result.policy_digest, "1")
        store.finish_scan(scan_id, result)
        v = Verdict(RunningImage(ImageReference(REG, "app", "1", D2), (ctr("b", D2),)), Status.UNSIGNED, ("none",),
                    source=VerdictSource.WATCH)
        assert store.add_watch_verdicts(scan_id, cluster, [v, v]) == 2
        loaded = store.load_scan(scan_id)
        assert [x.source for x in loaded.verdicts] == [VerdictSource.SCAN, VerdictSource.WATCH, VerdictSource.WATCH]
        assert [len(x.image.containers) for x in loaded.verdicts] == [1, 1, 1]
    finally:
        store.close()


def test_a_watch_verdict_joins_the_namespaces_report_without_pruning_the_scans_results(
        kube_apiserver: KubeAPIServer, registry_factory: Any, tmp_path: Path) -> None:
    from tests.integration.test_kube_cluster_reports import OPENREPORTS, _install_crds, _list

    _install_crds(kube_apiserver)
    reg = registry_factory()
    key = KeyPair.ecdsa()
    good = oci.make_image(reg.url, "r/good", "1")
    sign_image(reg.url, reg.host, "r/good", good, key)
    rogue = oci.make_image(reg.url, "r/rogue", "1")
    ns = f"sigaudit-watchr-{uuid.uuid4().hex[:6]}"
    ensure_namespace(kube_apiserver, ns)
    _run_pod(kube_apiserver, ns, "good", f"{reg.host}/r/good:1", f"{reg.host}/r/good@{good}")
    gen = _serve(kube_apiserver, tmp_path, _policy(tmp_path, reg.host, key), ns, "--reports", "openreports")

    def results() -> dict[str, str]:
        report = _list(kube_apiserver, OPENREPORTS, "reports", ns).get("sigaudit") or {}
        return {r["resources"][0]["name"]: r["result"] for r in report.get("results") or []}

    s = next(gen)
    try:
        assert _wait(results, 30, "the scan's report was not applied") == {"good": "pass"}
        _run_pod(kube_apiserver, ns, "rogue", f"{reg.host}/r/rogue:1", f"{reg.host}/r/rogue@{rogue}")
        assert _wait(lambda: results() if "rogue" in results() else None, 30, "the watch verdict is not reported") \
            == {"good": "pass", "rogue": "fail"}
    finally:
        gen.close()
    assert "Traceback" not in s.log.read_text(), s.log.read_text()[-3000:]
