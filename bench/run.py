"""``make bench``: sigaudit against a synthetic estate in a real local registry, beside baselines.

Usage::

    python -m bench.run [--digests 2000] [--repos 200] [--pods 10000] [--baseline-sample 100]
                        [--out bench/results/] [--seed 1]

What it does (issue 9):

1. starts Debian's docker-registry (distribution 2.8, access log on) and publishes the estate
   concurrently (one shared httpx client, a thread pool): ``--digests`` unique images across
   ``--repos`` repositories, signed with cosign-format key signatures (tests/harness/cosign_sign.py)
   and — when the fixture builder and the ``notation-go`` tool exist — notation signatures; some
   images are unsigned, some signed with the wrong key, some tampered;
2. writes ``--pods`` pods (``kubectl get pods -A -o json`` shape) running those digests;
3. times ``sigaudit scan`` cold (empty SQLite database, so an empty cache), warm (the same
   database again, nothing changed) and, with ``--window``, warm inside the re-check window (after a
   scan that re-lists and marks every digest) as whole processes: wall time, the scan's own CPU time
   and peak RSS (GNU time), the registry's CPU; registry requests from the registry's own access log;
4. in the same run, baselines: the real ``cosign verify --key`` CLI looped over a random sample of
   digests (per digest, extrapolated to the estate), ``notation-go verify`` over a sample of the
   notation digests when available, the "replay floors" (bench/replay.py: the cold and the warm
   scan's own requests from the registry's access log, replayed per digest in order by urllib3
   threads at the scan's concurrency with one in-process signature verify per signature — the
   issue-19 ratios use them) and, for continuity, the previous "ideal floor" (the signature manifest
   GET, the payload GET and one ECDSA verify per cosign digest) and warm floor (one HEAD per digest);
5. times ``sigaudit report --format html`` for the scan (wall time, file size);
6. with ``--latency-ms 40``: cold scans, their replay floor, the ideal client and the cosign loop again through a proxy
   on 127.0.0.1 that delays every request (bench/latency_proxy.py), at each ``--latency-concurrency``;
7. writes ``<out>/<timestamp>.json``, ``<out>/latest.json`` and ``<out>/latest.md``.

The targets (cold <= 20 s, warm <= 3 s, RSS <= 300 MB, <= 3 / <= 1 requests per digest, >= 50x the
cosign loop) are benchmark figures reported with a met/missed flag, never assertions.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "bench" / "results"
SCHEMA_VERSION = 2
PUSH_WORKERS = 16

# Kinds of image in the estate and the verdict sigaudit must give each (the bench checks them, so a
# fast wrong answer cannot pass for a result).
COSIGN, NOTATION, UNSIGNED, WRONG_KEY, TAMPERED = "cosign", "notation", "unsigned", "wrong-key", "tampered"
EXPECTED = {COSIGN: "verified", NOTATION: "verified", UNSIGNED: "unsigned", WRONG_KEY: "invalid",
            TAMPERED: "invalid"}

TARGETS = {
    "cold_wall_s": 20.0,
    "warm_wall_s": 3.0,
    "warm_window_wall_s": 1.5,
    "peak_rss_mb": 300.0,
    "cold_requests_per_digest": 3.0,
    "warm_requests_per_digest": 1.0,
    "speedup_vs_cosign": 50.0,
    # Issue 19: the scan against its own requests made by an ideal client (the replay floors), at the
    # same concurrency; through the latency proxy at the scan's default --registry-concurrency.
    "cold_over_replay_floor": 1.3,
    "warm_over_warm_replay_floor": 1.2,
    "latency_cold_over_replay_floor": 1.5,
}


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# -- the estate --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Image:
    repo: str
    tag: str
    digest: str
    kind: str
    # Digests of what the bench published for this image's signatures (the cosign payload blob, the
    # notation signature manifest and envelope): the replay floor attributes a request for one of
    # them to this image's chain.
    artifacts: tuple[str, ...] = ()


@dataclass
class Estate:
    host: str
    images: list[Image] = field(default_factory=list)
    publish_s: float = 0.0
    publish_requests: int = 0
    notation: Any = None  # what the notation fixture builder returned (trust policy/store), if used

    def counts(self) -> dict[str, int]:
        return dict(Counter(i.kind for i in self.images))


def kind_for(i: int, notation: bool) -> str:
    """Deterministic mix per 20 images: 2 unsigned, 1 wrong key, 1 tampered, 4 notation (cosign when
    notation is unavailable), 12 cosign."""
    slot = i % 20
    if slot in (0, 1):
        return UNSIGNED
    if slot == 2:
        return WRONG_KEY
    if slot == 3:
        return TAMPERED
    if slot in (4, 5, 6, 7) and notation:
        return NOTATION
    return COSIGN


def _http_client() -> httpx.Client:
    return httpx.Client(
        timeout=60.0,
        limits=httpx.Limits(max_connections=PUSH_WORKERS * 2, max_keepalive_connections=PUSH_WORKERS * 2),
    )


def _parallel(fn: Callable[[Any], Any], items: Sequence[Any], workers: int = PUSH_WORKERS) -> list[Any]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def notation_available() -> tuple[bool, str]:
    """The notation fixture builder and the notation-go tool both exist (else cosign only)."""
    from tests.harness.tools import tool_path

    try:
        import tests.harness.notation_sign  # noqa: F401
    except ImportError:
        return False, "tests/harness/notation_sign.py is not there yet"
    if tool_path("notation-go") is None:
        return False, "notation-go is not built (tests/tools/ensure-tools.sh notation-go)"
    return True, ""


def publish(url: str, host: str, n_digests: int, n_repos: int, keys: dict[str, Any], use_notation: bool,
            workdir: Path) -> Estate:
    """Push the estate concurrently: per repository one config blob, one layer blob and the cosign
    signature config; per image one manifest (unique through an annotation) and its signature."""
    from tests.harness import oci
    from tests.harness.cosign_sign import SIG_ANNOTATION, SIMPLESIGNING, sig_tag, simplesigning_payload

    est = Estate(host=host)
    t0 = time.monotonic()
    n_repos = min(n_repos, n_digests)
    # Notation images live in their own repositories (a fifth of them), judged by their own rule:
    # a rule naming both verifiers would make every image look for both kinds of signature.
    n_notary = max(1, n_repos // 5) if use_notation and n_repos > 1 else 0
    repos = [f"bench/app{r:03d}" for r in range(n_repos - n_notary)]
    notary_repos = [f"bench/notary{r:03d}" for r in range(n_notary)]
    if use_notation and not notary_repos:
        use_notation = False
    notation = NotationSigner.create(workdir / "notation") if use_notation else None
    est.notation = notation
    image_config = oci.canonical_json({"architecture": "amd64", "os": "linux",
                                       "rootfs": {"type": "layers", "diff_ids": []}})
    sig_config = oci.canonical_json({"architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": []}})
    layers = {r: f"layer of {r}".encode() * 8 for r in repos + notary_repos}
    client = _http_client()
    try:
        def setup(repo: str) -> None:
            for blob in (image_config, sig_config, layers[repo], oci.EMPTY_JSON):
                oci.push_blob(url, repo, blob, client=client)

        _parallel(setup, repos + notary_repos)

        kinds = [kind_for(i, use_notation) for i in range(n_digests)]
        placed: list[str] = []
        seen = Counter[bool]()
        for kind in kinds:  # round-robin within each group of repositories: every repository is used
            pool = notary_repos if kind == NOTATION else repos
            placed.append(pool[seen[kind == NOTATION] % len(pool)])
            seen[kind == NOTATION] += 1

        def push_one(i: int) -> Image:
            kind, repo = kinds[i], placed[i]
            manifest = {
                "schemaVersion": 2,
                "mediaType": oci.OCI_MANIFEST,
                "config": oci.descriptor(oci.OCI_CONFIG, image_config),
                "layers": [oci.descriptor(oci.OCI_LAYER, layers[repo])],
                "annotations": {"org.sigaudit.bench.image": str(i)},
            }
            raw = oci.canonical_json(manifest)
            tag = f"v{i}"
            digest = oci.push_manifest(url, repo, tag, raw, oci.OCI_MANIFEST, client=client)
            artifacts: tuple[str, ...] = ()
            if kind in (COSIGN, WRONG_KEY, TAMPERED):
                payload = simplesigning_payload(f"{host}/{repo}", digest)
                signature = (keys["wrong"] if kind == WRONG_KEY else keys["trusted"]).sign(payload)
                if kind == TAMPERED:
                    payload = payload.replace(b"cosign container image signature",
                                              b"cosign container image signaturE")
                oci.push_blob(url, repo, payload, client=client)
                artifacts = (oci.sha256_digest(payload),)
                sig_manifest = {
                    "schemaVersion": 2,
                    "mediaType": oci.OCI_MANIFEST,
                    "config": oci.descriptor("application/vnd.oci.image.config.v1+json", sig_config),
                    "layers": [oci.descriptor(SIMPLESIGNING, payload, annotations={
                        SIG_ANNOTATION: base64.b64encode(signature).decode()})],
                }
                oci.push_manifest(url, repo, sig_tag(digest), oci.canonical_json(sig_manifest), oci.OCI_MANIFEST,
                                  client=client)
            elif kind == NOTATION and notation is not None:
                artifacts = notation.sign(url, repo, oci.descriptor(oci.OCI_MANIFEST, raw), client)
            return Image(repo, tag, digest, kind, artifacts)

        est.images = _parallel(push_one, list(range(n_digests)))
    finally:
        client.close()
    est.publish_s = time.monotonic() - t0
    return est


@dataclass
class NotationSigner:
    """Notation JWS signatures from tests/harness/notation_sign.py (one test PKI), pushed with the
    shared client: the envelope blob, the referrer manifest (subject = the image) and, since
    docker-registry has no referrers API, the ``sha256-<hex>`` referrers tag-schema index."""

    directory: Path
    pki: Any
    trust_policy: Path
    trust_store: Path

    @classmethod
    def create(cls, directory: Path) -> NotationSigner:
        from tests.harness import notation_sign as ns

        directory.mkdir(parents=True, exist_ok=True)
        pki = ns.make_pki("sigaudit bench signer")
        policy, store = ns.write_trust_material(directory, {"bench": [pki.root]})
        return cls(directory, pki, Path(policy), Path(store))

    def sign(self, url: str, repo: str, subject: dict[str, Any], client: httpx.Client) -> tuple[str, str]:
        """Push one signature of ``subject``; returns the signature manifest's and envelope's digests."""
        from tests.harness import notation_sign as ns
        from tests.harness import oci

        envelope = ns.jws_envelope(self.pki.chain, subject)
        oci.push_blob(url, repo, envelope, client=client)
        annotations = {ns.THUMBPRINT_ANNOTATION: ns.thumbprints(self.pki.chain),
                       "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        manifest = {
            "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "artifactType": ns.ARTIFACT_TYPE,
            "config": oci.descriptor(oci.OCI_EMPTY, oci.EMPTY_JSON),
            "layers": [oci.descriptor(ns.JWS_MEDIA_TYPE, envelope)],
            "subject": subject,
            "annotations": annotations,
        }
        body = oci.canonical_json(manifest)
        digest = oci.push_manifest(url, repo, oci.sha256_digest(body), body, oci.OCI_MANIFEST, client=client)
        index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
            {"mediaType": oci.OCI_MANIFEST, "digest": digest, "size": len(body), "artifactType": ns.ARTIFACT_TYPE,
             "annotations": annotations}]}
        oci.push_manifest(url, repo, subject["digest"].replace(":", "-"), oci.canonical_json(index), oci.OCI_INDEX,
                          client=client)
        return digest, oci.sha256_digest(envelope)

    def verifier_spec(self) -> dict[str, str]:
        return {"trustPolicy": str(self.trust_policy), "trustStore": str(self.trust_store)}

    def cli_args(self) -> list[str]:
        return ["--trust-policy", str(self.trust_policy), "--trust-store", str(self.trust_store)]


def write_pods(est: Estate, n_pods: int, path: Path) -> int:
    """``n_pods`` pods (Deployment-owned, 50 namespaces) spread over every image; returns bytes."""
    from tests.harness.demo import _pod

    images = est.images
    with path.open("w", encoding="utf-8") as f:
        f.write('{"apiVersion":"v1","kind":"List","metadata":{},"items":[\n')
        for p in range(n_pods):
            img = images[p % len(images)]
            ns = f"team-{p % 50:02d}"
            rs = f"{img.repo.rsplit('/', 1)[-1]}-{img.tag}-7d9f8b6c5"
            pod = _pod(ns, f"{rs}-{p:05d}",
                       [("app", f"{est.host}/{img.repo}:{img.tag}", f"{est.host}/{img.repo}@{img.digest}")],
                       owner=("ReplicaSet", rs), labels={"pod-template-hash": "7d9f8b6c5"})
            f.write(("," if p else "") + json.dumps(pod, separators=(",", ":")) + "\n")
        f.write("]}\n")
    return path.stat().st_size


def write_policy(est: Estate, keys: dict[str, Any], directory: Path, name: str = "policy.yaml") -> Path:
    import yaml

    (directory / "trusted.pub").write_text(keys["trusted"].public_pem)
    rules: list[dict[str, Any]] = []
    if est.notation is not None:
        rules.append({"name": "bench-notation", "images": [f"{est.host}/bench/notary*"],
                      "verifiers": [{"notation": est.notation.verifier_spec()}]})
    rules.append({"name": "bench-cosign", "images": [f"{est.host}/bench/*"],
                  "verifiers": [{"cosign": {"key": "trusted.pub", "ignoreTlog": True}}]})
    policy = {
        "apiVersion": "sigaudit.io/v1alpha1",
        "kind": "AuditPolicy",
        "metadata": {"name": "bench"},
        "spec": {"insecureRegistries": [est.host], "rules": rules},
    }
    path = directory / name
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


# -- measuring whole processes -----------------------------------------------------------------------


@dataclass
class ProcRun:
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float | None  # the child's own high-water mark; None when /usr/bin/time is missing
    exit_code: int
    stderr_tail: str
    registry_cpu_s: float | None = None

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


TIME_BIN = "/usr/bin/time"


def run_measured(cmd: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
                 quiet_stdout: bool = True, reg: Any = None) -> ProcRun:
    """Run one process; wall time around it; user/sys CPU and peak RSS of that process alone.

    ``os.wait4``'s ``ru_maxrss`` is not the child's own: the high-water mark survives ``exec``, so a
    child forked from this (large) bench process starts at the parent's RSS (a ``/bin/true`` child
    reported 330 MB). GNU time forks the command from its own small process and reports that
    grandchild's ``%M`` alone, with its user/system CPU. With ``reg``, the registry's CPU over the
    same interval too (on a 2-core box the registry's work is part of the wall time)."""
    err_path = Path(tempfile.mkstemp(prefix="bench-stderr-")[1])
    stat_path = Path(tempfile.mkstemp(prefix="bench-time-")[1])
    timed = os.access(TIME_BIN, os.X_OK)
    argv = [TIME_BIN, "-o", str(stat_path), "-f", "%U %S %M", *cmd] if timed else list(cmd)
    reg_cpu0 = registry_cpu_s(reg) if reg is not None else None
    with err_path.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL if quiet_stdout else None, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    reg_cpu = None if reg_cpu0 is None else registry_cpu_s(reg) - reg_cpu0
    tail = err_path.read_text(errors="replace")[-2000:]
    err_path.unlink()
    stat = stat_path.read_text().split()
    stat_path.unlink()
    if timed and len(stat) >= 3:
        # GNU time appends its line after "Command exited with non-zero status N" when N != 0.
        user, sys_, rss_kb = float(stat[-3]), float(stat[-2]), float(stat[-1])
        return ProcRun(wall, user, sys_, rss_kb / 1024.0, proc.returncode, tail, reg_cpu)
    return ProcRun(wall, usage.ru_utime, usage.ru_stime, None, proc.returncode, tail, reg_cpu)


def registry_cpu_s(reg: Any) -> float:
    """User+system CPU the registry process has used so far (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{reg.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, AttributeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class AccessLog:
    """The registry's access log read incrementally: each poll parses only the bytes appended since
    the last one (re-reading the whole log per figure cost the bench itself seconds on a big estate)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.entries: list[Any] = []

    def poll(self) -> int:
        from tests.harness.fixtures_registry import _ACCESS_LINE, LoggedRequest

        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return 0
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            m = _ACCESS_LINE.search(line.decode("utf-8", "replace"))
            if m:
                self.entries.append(LoggedRequest(m.group(1), m.group(2), int(m.group(3))))
        return len(self.entries)

    def settle(self) -> int:
        """Request count once the registry has written its last lines."""
        last = -1
        for _ in range(20):
            n = self.poll()
            if n == last:
                return n
            last = n
            time.sleep(0.1)
        return last


_LOGS: dict[Path, AccessLog] = {}


def access_log(reg: Any) -> AccessLog:
    return _LOGS.setdefault(Path(reg.log_path), AccessLog(Path(reg.log_path)))


def settle_count(reg: Any) -> int:
    """Access-log request count once the registry has written its last lines."""
    return access_log(reg).settle()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """min / median of repeated figures (None when not measured)."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return {"min": None, "median": None}
    return {"min": round(vals[0], 3), "median": round(statistics.median(vals), 3)}


def sigaudit(*args: str) -> list[str]:
    return [sys.executable, "-m", "scanner.cli", *args]


def compile_checkout() -> None:
    """Byte-compile the checkout's packages before timing them, as ``pip install`` does for the wheel
    (and the container image has): a checkout run with ``PYTHONDONTWRITEBYTECODE`` (the container's
    and this machine's environment) would otherwise compile every module it imports on every start,
    ~0.15 CPU-s of a scan no installed sigaudit pays. ``compileall`` writes ``__pycache__`` whatever
    that variable says; the interpreter then only reads it."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "scanner", "reports", "migrations"],
                   cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)


def _this_checkout() -> dict[str, str]:
    """The environment of a sigaudit run from another directory: this checkout's ``scanner`` first on
    the path, not the one installed in the venv (a worktree's scan would otherwise run main's code)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT)}


def measure_scan(label: str, reg: Any, est: Estate, pods: Path, policy: Path, db: Path, out: Path,
                 extra: Sequence[str] = (), requests_out: list[Any] | None = None) -> dict[str, Any]:
    """One scan as a whole process; ``requests_out`` receives its access-log lines (for the replay floor)."""
    log_ = access_log(reg)
    before = log_.settle()
    json_out = out / f"scan-{label}.json"
    load = load_average()
    run = run_measured(sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--db",
                                f"sqlite:///{db}", "--cluster", "bench", "-o", "none", "--json-out", str(json_out),
                                "--no-progress", *extra), cwd=policy.parent, env=_this_checkout(), reg=reg)
    requests = log_.settle() - before
    logged = log_.entries[before:]
    if requests_out is not None:
        requests_out.extend(logged)
    manifest_gets = sum(1 for r in logged if r.method == "GET" and "/manifests/" in r.path)
    by_kind = Counter(i.kind for i in est.images)
    notary = sum(1 for r in logged if r.path.startswith("/v2/bench/notary"))
    gets = sum(1 for r in logged if r.method == "GET" and r.path.startswith("/v2/bench/"))
    if run.exit_code not in (0, 1):
        raise RuntimeError(f"sigaudit scan ({label}) exited {run.exit_code}:\n{run.stderr_tail}")
    doc = json.loads(json_out.read_text())
    verdicts = Counter(str(i["status"]) for i in doc["images"])
    wrong = check_verdicts(est, doc)
    n = len(est.images)
    log(f"{label}: {run.wall_s:.2f}s wall, {run.cpu_s:.2f}s client CPU, {run.registry_cpu_s or 0:.2f}s registry "
        f"CPU, {run.peak_rss_mb or 0:.0f} MB, {requests} requests ({requests / n:.2f}/digest), load {load[0]}, "
        f"verdicts {dict(verdicts)}")
    return {
        "wall_s": round(run.wall_s, 3),
        "cpu_s": round(run.cpu_s, 3),
        "user_s": round(run.user_s, 3),
        "sys_s": round(run.sys_s, 3),
        "registry_cpu_s": None if run.registry_cpu_s is None else round(run.registry_cpu_s, 3),
        "peak_rss_mb": None if run.peak_rss_mb is None else round(run.peak_rss_mb, 1),
        "load_average_at_start": load,
        "exit_code": run.exit_code,
        "registry_requests": requests,
        "requests_per_digest": round(requests / n, 3),
        "client_cpu_per_request_ms": round(run.cpu_s / max(requests, 1) * 1000, 3),
        "manifest_gets": manifest_gets,
        # Split by repository: notation images live in bench/notary*, everything else is cosign-keyed.
        "requests_per_digest_cosign_repos": round((requests - notary) / max(1, n - by_kind[NOTATION]), 3),
        "requests_per_digest_notation_repos": round(notary / by_kind[NOTATION], 3) if by_kind[NOTATION] else None,
        "gets": gets,
        "verdicts": dict(sorted(verdicts.items())),
        # Signatures whose authenticity check ran (passed or failed) — on a cold scan, the verifies it
        # made; a warm scan's document repeats the cached ones.
        "signatures_authenticated": sum(1 for i in doc["images"] for sig in i.get("signatures") or ()
                                        for c in sig.get("checks") or ()
                                        if c.get("name") == "authenticity"
                                        and c.get("outcome") in ("passed", "failed")),
        "images": len(doc["images"]),
        "containers": sum(len(i.get("containers") or ()) for i in doc["images"]),
        "unexpected_verdicts": wrong,
    }


REPEATED = ("wall_s", "cpu_s", "user_s", "sys_s", "registry_cpu_s", "peak_rss_mb", "client_cpu_per_request_ms")


def combine(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One figure from repeated runs: the median under the usual key, ``<key>_min`` beside it, every
    run under ``runs``; counts come from the first run and wrong verdicts from the worst."""
    out = dict(runs[0])
    for key in REPEATED:
        s = spread([r[key] for r in runs])
        out[key], out[f"{key}_min"] = s["median"], s["min"]
    out["repeats"] = len(runs)
    out["unexpected_verdicts"] = max(r["unexpected_verdicts"] for r in runs)
    out["runs"] = [{k: r[k] for k in (*REPEATED, "registry_requests", "load_average_at_start")} for r in runs]
    return out


def check_verdicts(est: Estate, doc: dict[str, Any]) -> int:
    """How many images got a verdict other than the one their kind calls for."""
    want = {i.digest: EXPECTED[i.kind] for i in est.images}
    wrong = 0
    for img in doc["images"]:
        if want.get(str(img.get("digest"))) != img["status"]:
            wrong += 1
    return wrong + max(0, len(want) - len(doc["images"]))


def measure_report(db: Path, out: Path) -> dict[str, Any]:
    html = out / "report.html"
    run = run_measured(sigaudit("report", "--db", f"sqlite:///{db}", "--format", "html", "--out", str(html)),
                       env=_this_checkout())
    if run.exit_code != 0:
        return {"error": f"exit {run.exit_code}: {run.stderr_tail[-500:]}"}
    size = html.stat().st_size
    log(f"report: {run.wall_s:.2f}s wall, {size / 1e6:.1f} MB HTML, {run.peak_rss_mb or 0:.0f} MB RSS")
    return {"wall_s": round(run.wall_s, 3), "cpu_s": round(run.cpu_s, 3),
            "peak_rss_mb": None if run.peak_rss_mb is None else round(run.peak_rss_mb, 1),
            "bytes": size}


# -- baselines ---------------------------------------------------------------------------------------


def cosign_baseline(reg: Any, est: Estate, keydir: Path, sample: int, rng: random.Random) -> dict[str, Any]:
    """The real cosign CLI, one process per digest, sequentially (as a shell loop runs it)."""
    from tests.harness.tools import pinned_versions, tool_path

    cosign = tool_path("cosign")
    if cosign is None:
        return {"skipped": "cosign is not built (bash tests/tools/ensure-tools.sh cosign)"}
    pool = [i for i in est.images if i.kind != NOTATION]
    picked = rng.sample(pool, min(sample, len(pool)))
    home = keydir / "cosign-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "COSIGN_EXPERIMENTAL": "0", "TUF_ROOT": str(home / "tuf")}
    before = settle_count(reg)
    total_wall = total_cpu = 0.0
    peak = 0.0
    agree = 0
    outcomes: Counter[str] = Counter()
    for img in picked:
        run = run_measured([str(cosign), "verify", "--key", str(keydir / "trusted.pub"),
                            "--insecure-ignore-tlog=true", "--allow-insecure-registry", "--allow-http-registry",
                            f"{est.host}/{img.repo}@{img.digest}"], env=env)
        total_wall += run.wall_s
        total_cpu += run.cpu_s
        peak = max(peak, run.peak_rss_mb or 0.0)
        ok = run.exit_code == 0
        outcomes["verified" if ok else "failed"] += 1
        if ok == (EXPECTED[img.kind] == "verified"):
            agree += 1
    requests = settle_count(reg) - before
    n = len(picked)
    per = total_wall / n if n else 0.0
    estate_n = len(pool)
    log(f"cosign verify loop: {n} digests, {per * 1000:.0f} ms/digest, extrapolated {per * estate_n:.0f}s "
        f"for {estate_n} digests, {requests / max(n, 1):.1f} requests/digest")
    return {
        "tool": f"cosign {pinned_versions().get('cosign', '?')}",
        "command": "cosign verify --key trusted.pub --insecure-ignore-tlog=true --allow-insecure-registry "
                   "--allow-http-registry HOST/REPO@DIGEST (one process per digest, sequential)",
        "sample": n,
        "wall_s": round(total_wall, 3),
        "cpu_s": round(total_cpu, 3),
        "per_digest_s": round(per, 4),
        "cpu_per_digest_s": round(total_cpu / n, 4) if n else 0.0,
        "peak_rss_mb": round(peak, 1),
        "requests_per_digest": round(requests / n, 3) if n else 0.0,
        "extrapolated_digests": estate_n,
        "extrapolated_wall_s": round(per * estate_n, 1),
        "extrapolated_cpu_s": round(total_cpu / n * estate_n, 1) if n else 0.0,
        "outcomes": dict(outcomes),
        "agrees_with_expected": agree,
    }


def notation_baseline(reg: Any, est: Estate, sample: int, rng: random.Random) -> dict[str, Any]:
    """``notation-go verify`` (notation-go's verifier, as the notation CLI wires it) per notation digest."""
    from tests.harness.tools import pinned_versions, tool_path

    tool = tool_path("notation-go")
    pool = [i for i in est.images if i.kind == NOTATION]
    if tool is None or est.notation is None or not pool:
        return {"skipped": "no notation images in this run (fixture builder or notation-go missing)"}
    picked = rng.sample(pool, min(sample, len(pool)))
    before = settle_count(reg)
    total_wall = total_cpu = 0.0
    ok_count = 0
    for img in picked:
        run = run_measured([str(tool), "verify", *est.notation.cli_args(), "--insecure-registry",
                            f"{est.host}/{img.repo}@{img.digest}"])
        total_wall += run.wall_s
        total_cpu += run.cpu_s
        ok_count += run.exit_code == 0
    requests = settle_count(reg) - before
    n = len(picked)
    per = total_wall / n
    log(f"notation-go verify loop: {n} digests, {per * 1000:.0f} ms/digest")
    return {
        "tool": f"notation-go {pinned_versions().get('notation-go', '?')}",
        "sample": n,
        "wall_s": round(total_wall, 3),
        "cpu_s": round(total_cpu, 3),
        "per_digest_s": round(per, 4),
        "requests_per_digest": round(requests / n, 3),
        "extrapolated_digests": len(pool),
        "extrapolated_wall_s": round(per * len(pool), 1),
        "verified": ok_count,
    }


def ideal_floor(reg: Any, est: Estate, keys: dict[str, Any], workers: int = 8,
                address: str | None = None) -> dict[str, Any]:
    """The floor the issue describes, in-process: per digest the ``.sig`` manifest GET, the payload
    GET and one ECDSA P-256 verify, ``workers`` threads on one urllib3 ``HTTPConnectionPool`` of
    that many connections — the scan's own per-registry concurrency, so the two compare at equal
    concurrency (no auth, no policy, no store, no digest checks beyond what is needed)."""
    import urllib3
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.harness.cosign_sign import SIG_ANNOTATION, sig_tag

    pub = keys["trusted"].private.public_key()
    images = [i for i in est.images if i.kind != NOTATION]
    host, port = (address or reg.host).rsplit(":", 1)  # address: the latency proxy in front of reg
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=workers, block=True, retries=False, timeout=30.0)

    def one(img: Image) -> bool:
        r = pool.request("GET", f"/v2/{img.repo}/manifests/{sig_tag(img.digest)}", headers=accept)
        if r.status == 404:
            return False
        layer = json.loads(r.data)["layers"][0]
        payload = pool.request("GET", f"/v2/{img.repo}/blobs/{layer['digest']}").data
        try:
            pub.verify(base64.b64decode(layer["annotations"][SIG_ANNOTATION]), payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return b'"docker-manifest-digest":"' + img.digest.encode() in payload

    before = settle_count(reg)
    r0 = registry_cpu_s(reg)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        results = _parallel(one, images, workers)
    finally:
        pool.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    reg_cpu = registry_cpu_s(reg) - r0
    requests = settle_count(reg) - before
    # The crypto alone: one ECDSA verify per digest, single thread.
    sig = keys["trusted"].sign(b"x" * 300)
    t1 = time.perf_counter()
    for _ in range(len(images)):
        pub.verify(sig, b"x" * 300, ec.ECDSA(hashes.SHA256()))
    ecdsa = time.perf_counter() - t1
    log(f"ideal floor: {wall:.2f}s wall, {cpu:.2f}s client CPU, {reg_cpu:.2f}s registry CPU for {len(images)} "
        f"digests ({requests / len(images):.2f} requests/digest), ECDSA alone {ecdsa * 1000:.0f} ms")
    return {
        "description": "per digest: GET .sig manifest, GET payload blob, one ECDSA P-256 verify; "
                       f"{workers} threads on one urllib3 HTTPConnectionPool(maxsize={workers}, block=True) "
                       "(in-process, no auth/policy/store)",
        "concurrency": workers,
        "digests": len(images),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "registry_cpu_s": round(reg_cpu, 3),
        "requests_per_digest": round(requests / len(images), 3),
        "client_cpu_per_request_ms": round(cpu / max(requests, 1) * 1000, 3),
        "ecdsa_verify_total_s": round(ecdsa, 4),
        "ecdsa_verify_per_digest_ms": round(ecdsa / len(images) * 1000, 4),
        "verified": sum(results),
    }


def warm_floor(reg: Any, est: Estate, workers: int = 8) -> dict[str, Any]:
    """The warm floor: one request per digest (a HEAD of its ``.sig`` tag), same pool and concurrency."""
    import urllib3

    from tests.harness.cosign_sign import sig_tag

    host, port = reg.host.rsplit(":", 1)
    pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=workers, block=True, retries=False, timeout=30.0)
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    before = settle_count(reg)
    r0 = registry_cpu_s(reg)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        _parallel(lambda i: pool.request("HEAD", f"/v2/{i.repo}/manifests/{sig_tag(i.digest)}", headers=accept),
                  est.images, workers)
    finally:
        pool.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    reg_cpu = registry_cpu_s(reg) - r0
    requests = settle_count(reg) - before
    return {"digests": len(est.images), "concurrency": workers, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "registry_cpu_s": round(reg_cpu, 3), "requests": requests,
            "client_cpu_per_request_ms": round(cpu / max(requests, 1) * 1000, 3)}


def replay_floor(reg: Any, est: Estate, keys: dict[str, Any], scan_requests: Sequence[Any], workers: int,
                 address: str | None = None, label: str = "replay floor",
                 scan_signatures: int | None = None) -> dict[str, Any]:
    """The scan's own requests (its access-log lines) made by an ideal client (bench/replay.py): each
    digest's chain in order, N of them at once on one urllib3 ``HTTPConnectionPool(maxsize=N,
    block=True)``, every body read, one signature verify in process per signature found — at the
    scan's concurrency, through the proxy when ``address`` is the latency proxy's. Afterwards the
    registry's own log of the replay is compared with the scan's: (method, path, status) multisets,
    and with ``scan_signatures`` (a cold scan's authenticity checks) the number of signatures verified."""
    import urllib3

    from bench import replay as rp

    owners = {i.digest: i.digest for i in est.images} | {a: i.digest for i in est.images for a in i.artifacts}
    units = rp.plan(scan_requests, owners)
    check = rp.SignatureCheck(keys["trusted"].private.public_key())
    host, port = (address or reg.host).rsplit(":", 1)
    pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=workers, block=True, retries=False, timeout=30.0)
    log_ = access_log(reg)
    before = log_.settle()
    r0 = registry_cpu_s(reg)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        done = rp.replay(pool, units, check, workers)
    finally:
        pool.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    reg_cpu = registry_cpu_s(reg) - r0
    requests = log_.settle() - before
    want, got = rp.signature(scan_requests), rp.signature(log_.entries[before:])
    missing, extra = want - got, got - want
    n = len(est.images)
    log(f"{label}: {wall:.2f}s wall, {cpu:.2f}s client CPU, {reg_cpu:.2f}s registry CPU, {requests} requests "
        f"({requests / n:.2f}/digest) in {done.units} units, {done.signatures_checked} signatures "
        f"({done.signatures_valid} valid); same requests as the scan: {not missing and not extra}")
    return {
        "description": "the scan's own requests from the registry's access log, replayed: each digest's chain in "
                       f"order, {workers} threads on one urllib3 HTTPConnectionPool(maxsize={workers}, block=True), "
                       "every body read, one signature verify in process per signature (ECDSA P-256 for cosign, "
                       "the JWS leaf key for notation; no chain building, auth, policy, store or output)",
        "concurrency": workers,
        "digests": n,
        "units": done.units,
        "chains": sum(1 for u in units if u.owner is not None),
        "unattributed_requests": sum(len(u.requests) for u in units if u.owner is None),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "registry_cpu_s": round(reg_cpu, 3),
        "requests": requests,
        "scan_requests": len(scan_requests),
        "requests_per_digest": round(requests / n, 3),
        "client_cpu_per_request_ms": round(cpu / max(requests, 1) * 1000, 3),
        "signatures_checked": done.signatures_checked,
        "signatures_valid": done.signatures_valid,
        "scan_signatures": scan_signatures,
        "same_signatures_as_scan": None if scan_signatures is None else done.signatures_checked == scan_signatures,
        "status_mismatches": done.status_mismatches,
        # The check that this floor did the scan's work: the registry logged the same multiset.
        "same_requests_as_scan": not missing and not extra,
        "missing_examples": [" ".join(map(str, k)) for k in list(missing)[:5]],
        "extra_examples": [" ".join(map(str, k)) for k in list(extra)[:5]],
    }


def latency_mode(reg: Any, est: Estate, keys: dict[str, Any], work: Path, args: argparse.Namespace,
                 rng: random.Random) -> dict[str, Any]:
    """Cold scans, the ideal client and the ``cosign verify`` loop through one proxy on 127.0.0.1 that
    delays every request by ``--latency-ms`` (bench/latency_proxy.py: one round trip to a registry in
    another region), each at the concurrencies of ``--latency-concurrency``. The scan gets
    ``--registry-concurrency N --concurrency max(16, N)`` so that the per-registry limit binds.

    The proxy is a process of its own: its CPU is recorded beside the client's and the registry's (on
    two shared cores all three are the wall time), and the in-process ideal client's CPU is its own."""
    from dataclasses import replace as _replace

    from bench.latency_proxy import ProxyProcess

    host, port = reg.host.rsplit(":", 1)
    proxy = ProxyProcess((host, int(port)), args.latency_ms / 1000.0).start()

    def with_proxy_cpu(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        p0 = proxy.cpu_s()
        row = fn()
        row["proxy_cpu_s"] = round(proxy.cpu_s() - p0, 3)
        return row

    try:
        pest = _replace(est, host=proxy.address)
        pods = work / "pods-latency.json"
        write_pods(pest, args.pods, pods)
        policy = write_policy(pest, keys, work, "policy-latency.yaml")
        out: dict[str, Any] = {"delay_ms": args.latency_ms, "proxy": "bench/latency_proxy.py (asyncio TCP, its own "
                               "process, each request delayed once, new connections one more round trip)",
                               "by_concurrency": {}}
        for conc in args.latency_concurrency:
            extra = ["--registry-concurrency", str(conc), "--concurrency", str(max(16, conc)),
                     *shlex.split(args.scan_args)]
            scan_requests: list[list[Any]] = [[] for _ in range(max(1, args.repeat))]

            def cold_scan(k: int, c: int = conc, e: list[str] = extra,
                          logged: list[list[Any]] = scan_requests) -> dict[str, Any]:
                return measure_scan(f"latency-{args.latency_ms}ms-cold-c{c}", reg, pest, pods, policy,
                                    work / f"latency-{c}-{k}.db", work, e, logged[k])

            def floor_run(c: int = conc) -> dict[str, Any]:
                return with_proxy_cpu(lambda: ideal_floor(reg, pest, keys, c, proxy.address))

            colds = [with_proxy_cpu(lambda k=k: cold_scan(k)) for k in range(max(1, args.repeat))]  # type: ignore[misc]

            def replay_run(r: list[Any], c: int = conc, sigs: int = colds[0]["signatures_authenticated"]
                           ) -> dict[str, Any]:
                return with_proxy_cpu(lambda: replay_floor(reg, pest, keys, r, c, proxy.address,
                                                           f"replay floor (latency, N={c})", sigs))

            floor = repeat_floor(floor_run, args.repeat)
            replay = repeat_floor(each(replay_run, scan_requests), args.repeat)
            cold = combine(colds)
            s = spread([r["proxy_cpu_s"] for r in colds])
            cold["proxy_cpu_s"], cold["proxy_cpu_s_min"] = s["median"], s["min"]
            for r, run_ in zip(colds, cold["runs"], strict=True):
                run_["proxy_cpu_s"] = r["proxy_cpu_s"]
            floor_requests = floor["requests_per_digest"] * floor["digests"]
            out["by_concurrency"][str(conc)] = {
                "scan_cold": cold, "ideal_floor": floor, "replay_floor": replay,
                "load_average": [r["load_average_at_start"][0] for r in colds],
                # The wall time round trips alone allow: requests x delay / N (what a free CPU would give).
                "round_trip_bound_s": round(cold["registry_requests"] * args.latency_ms / 1000.0 / conc, 2),
                # ... and the CPU alone: client + registry + proxy CPU over the machine's cores.
                "cpu_bound_s": round(sum(cold[k] or 0.0 for k in ("cpu_s", "registry_cpu_s", "proxy_cpu_s"))
                                     / (os.cpu_count() or 1), 2),
                "cold_wall_over_ideal_floor": round(cold["wall_s"] / floor["wall_s"], 2),
                "cold_wall_min_over_ideal_floor_min": round(cold["wall_s_min"] / floor["wall_s_min"], 2),
                # The target's ratio: the scan against its own requests replayed through the same proxy.
                "cold_wall_over_replay_floor": round(cold["wall_s"] / replay["wall_s"], 2),
                "cold_wall_min_over_replay_floor_min": round(cold["wall_s_min"] / replay["wall_s_min"], 2),
                # Through the proxy time goes with requests / N: the floor makes fewer requests (cosign
                # digests only, no referrers listing), so per request is the like-for-like ratio.
                "cold_wall_per_request_over_ideal": round(
                    (cold["wall_s"] / max(1, cold["registry_requests"])) / (floor["wall_s"] / max(1.0, floor_requests)),
                    2),
            }
        if args.baseline_sample > 0:
            out["cosign"] = with_proxy_cpu(lambda: cosign_baseline(reg, pest, work, max(1, args.latency_sample), rng))
            per = out["cosign"].get("extrapolated_wall_s")
            if per:
                for row in out["by_concurrency"].values():
                    row["cosign_loop_over_cold_wall"] = round(per / row["scan_cold"]["wall_s"], 1)
                    row["cosign_loop_over_cold_wall_min"] = round(per / row["scan_cold"]["wall_s_min"], 1)
    finally:
        proxy.stop()
    out["proxy_connections"] = proxy.connections
    return out


def each(fn: Callable[[Any], dict[str, Any]], items: Sequence[Any]) -> Callable[[], dict[str, Any]]:
    """A floor run that takes the next of ``items`` on each call (cycling): run k replays scan k."""
    it = itertools.cycle(items)
    return lambda: fn(next(it))


def repeat_floor(fn: Callable[[], dict[str, Any]], repeats: int) -> dict[str, Any]:
    runs = [fn() for _ in range(max(1, repeats))]
    out = dict(runs[0])
    for key in ("wall_s", "cpu_s", "registry_cpu_s", "proxy_cpu_s", "client_cpu_per_request_ms"):
        if key in out:
            s = spread([r[key] for r in runs])
            out[key], out[f"{key}_min"] = s["median"], s["min"]
    out["repeats"] = len(runs)
    for key in ("same_requests_as_scan", "same_signatures_as_scan"):
        if out.get(key) is not None:
            out[key] = all(r[key] for r in runs)
    out["runs"] = [{k: r[k] for k in ("wall_s", "cpu_s", "registry_cpu_s", "proxy_cpu_s", "same_requests_as_scan")
                    if k in r} for r in runs]
    return out


def client_comparison(reg: Any, est: Estate, n: int = 2000, workers: int = 8, repeats: int = 3) -> dict[str, Any]:
    """``n`` manifest GETs with each candidate HTTP client, all at the same concurrency ``workers``
    (threads for the blocking clients, an ``asyncio.Semaphore`` and as many connections for the async
    ones), each repeated: wall, client CPU per request and the registry's CPU, min and median."""
    import asyncio
    import http.client

    import urllib3

    paths = [f"/v2/{i.repo}/manifests/{i.digest}" for i in est.images]
    paths = (paths * (n // max(len(paths), 1) + 1))[:n]
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    host, port = reg.host.rsplit(":", 1)

    def httpx_threads() -> None:
        with httpx.Client(base_url=reg.url, timeout=30.0,
                          limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers)) as c:
            _parallel(lambda p: c.get(p, headers=accept).raise_for_status(), paths, workers)

    def urllib3_threads() -> None:
        pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=workers, block=True, retries=False, timeout=30.0)

        def get(p: str) -> None:
            r = pool.request("GET", p, headers=accept)
            if r.status != 200:
                raise RuntimeError(f"{p}: {r.status}")

        try:
            _parallel(get, paths, workers)
        finally:
            pool.close()

    def stdlib_threads() -> None:
        import threading

        local = threading.local()

        def get(p: str) -> None:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=30.0)
            conn.request("GET", p, headers=accept)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{p}: {r.status}")

        _parallel(get, paths, workers)

    def httpx_async() -> None:
        async def main() -> None:
            async with httpx.AsyncClient(base_url=reg.url, timeout=30.0, limits=httpx.Limits(
                    max_connections=workers, max_keepalive_connections=workers)) as c:
                sem = asyncio.Semaphore(workers)

                async def get(p: str) -> None:
                    async with sem:
                        (await c.get(p, headers=accept)).raise_for_status()

                await asyncio.gather(*(get(p) for p in paths))

        asyncio.run(main())

    def registry_client() -> None:
        # sigaudit's own client doing the same GETs (auth, slot, deadline, size cap, digest check, JSON
        # parse): what its transport costs per request beside the bare clients above.
        from scanner.models import ImageReference
        from scanner.registry.client import RegistryClient

        refs = [(ImageReference(reg.host, i.repo, None, i.digest), i.digest) for i in est.images]
        refs = (refs * (n // max(len(refs), 1) + 1))[:n]
        with RegistryClient(insecure_registries={reg.host}, per_registry_concurrency=workers) as c:
            _parallel(lambda r: c.get_manifest(r[0], r[1]), refs, workers)

    candidates: dict[str, Callable[[], None]] = {
        "httpx_client": httpx_threads, "urllib3_pool": urllib3_threads, "stdlib_http_client": stdlib_threads,
        "httpx_asyncclient": httpx_async, "sigaudit_registry_client": registry_client,
    }
    try:
        import aiohttp

        def aio() -> None:
            async def main() -> None:
                conn = aiohttp.TCPConnector(limit=workers)
                async with aiohttp.ClientSession(reg.url, connector=conn) as s:
                    async def get(p: str) -> None:
                        async with s.get(p, headers=accept) as r:
                            r.raise_for_status()
                            await r.read()

                    await asyncio.gather(*(get(p) for p in paths))

            asyncio.run(main())

        candidates["aiohttp"] = aio
    except ImportError:
        pass
    out: dict[str, Any] = {"requests": len(paths), "concurrency": workers, "repeats": repeats, "clients": {}}
    measured: dict[str, list[tuple[float, float, float]]] = {name: [] for name in candidates}
    for _ in range(max(1, repeats)):  # interleaved, so a load spike hits every client alike
        for name, fn in candidates.items():
            r0 = registry_cpu_s(reg)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            measured[name].append((time.perf_counter() - t0, time.process_time() - c0, registry_cpu_s(reg) - r0))
    for name, runs in measured.items():
        wall, cpu, rcpu = spread([r[0] for r in runs]), spread([r[1] for r in runs]), spread([r[2] for r in runs])
        out["clients"][name] = {
            "wall_s": wall["median"], "wall_s_min": wall["min"],
            "client_cpu_s": cpu["median"], "client_cpu_s_min": cpu["min"],
            "client_cpu_per_request_us": round((cpu["median"] or 0) / len(paths) * 1e6, 1),
            "registry_cpu_s": rcpu["median"],
        }
    log(f"HTTP clients, {len(paths)} manifest GETs at concurrency {workers}: "
        + ", ".join(f"{k} {v['wall_s']:.2f}s / {v['client_cpu_per_request_us']:.0f} us CPU per request"
                    for k, v in out["clients"].items()))
    return out


# -- summary -----------------------------------------------------------------------------------------


def targets(res: dict[str, Any]) -> dict[str, Any]:
    cold, warm = res["scans"]["cold"], res["scans"]["warm"]
    speedup = res["ratios"].get("cosign_loop_over_cold_wall")
    values = {
        "cold_wall_s": cold["wall_s"],
        "warm_wall_s": warm["wall_s"],
        "warm_window_wall_s": (res["scans"].get("warm_window") or {}).get("wall_s"),
        "peak_rss_mb": max((v for v in (cold["peak_rss_mb"], warm["peak_rss_mb"]) if v is not None), default=None),
        "cold_requests_per_digest": cold["requests_per_digest"],
        "warm_requests_per_digest": warm["requests_per_digest"],
        "speedup_vs_cosign": speedup,
        "cold_over_replay_floor": res["ratios"].get("cold_wall_over_replay_floor"),
        "warm_over_warm_replay_floor": res["ratios"].get("warm_wall_over_warm_replay_floor"),
        "latency_cold_over_replay_floor": ((res.get("latency") or {}).get("by_concurrency", {})
                                           .get(str(res["params"]["registry_concurrency"])) or {})
        .get("cold_wall_over_replay_floor"),
    }
    out = {}
    for name, target in TARGETS.items():
        v = values[name]
        met = None if v is None else (v >= target if name == "speedup_vs_cosign" else v <= target)
        out[name] = {"target": target, "value": v, "met": met}
    return out


def _over(out: dict[str, Any], scan_name: str, scan: Mapping[str, Any], floor_name: str,
          floor: Mapping[str, Any]) -> None:
    """A scan against a floor measured in the same run: median wall, min wall and client CPU ratios."""
    out[f"{scan_name}_wall_over_{floor_name}"] = round(scan["wall_s"] / floor["wall_s"], 2)
    out[f"{scan_name}_wall_min_over_{floor_name}_min"] = round(scan["wall_s_min"] / floor["wall_s_min"], 2)
    out[f"{scan_name}_client_cpu_over_{floor_name}"] = round(scan["cpu_s"] / max(floor["cpu_s"], 1e-9), 2)


def ratios(res: dict[str, Any]) -> dict[str, Any]:
    cold, warm = res["scans"]["cold"], res["scans"]["warm"]
    out: dict[str, Any] = {}
    cos = res["baselines"].get("cosign") or {}
    if "extrapolated_wall_s" in cos:
        # Same digests: the loop extrapolated to every digest a cosign verify applies to.
        out["cosign_loop_over_cold_wall"] = round(cos["extrapolated_wall_s"] / cold["wall_s"], 1)
        out["cosign_loop_over_warm_wall"] = round(cos["extrapolated_wall_s"] / warm["wall_s"], 1)
        out["cosign_loop_over_cold_cpu"] = round(cos["extrapolated_cpu_s"] / max(cold["cpu_s"], 1e-9), 1)
    floor = res["baselines"].get("ideal_floor") or {}
    if "wall_s" in floor:
        _over(out, "cold", cold, "ideal_floor", floor)
        if "per_digest_s" in cos:
            # What even the in-process floor achieves against the cosign loop over the same digests.
            out["cosign_loop_over_ideal_floor"] = round(cos["per_digest_s"] * floor["digests"] / floor["wall_s"], 1)
    wfloor = res["baselines"].get("warm_floor") or {}
    if "wall_s" in wfloor:
        out["warm_wall_over_warm_floor"] = round(warm["wall_s"] / wfloor["wall_s"], 2)
    # The targets' ratios: each scan against its own requests replayed by the ideal client.
    replay = res["baselines"].get("replay_floor") or {}
    if "wall_s" in replay:
        _over(out, "cold", cold, "replay_floor", replay)
    wreplay = res["baselines"].get("warm_replay_floor") or {}
    if "wall_s" in wreplay:
        _over(out, "warm", warm, "warm_replay_floor", wreplay)
    return out


def markdown(res: dict[str, Any]) -> str:
    p, est = res["params"], res["estate"]
    cold, warm = res["scans"]["cold"], res["scans"]["warm"]
    b = res["baselines"]
    cos, floor, nota = b.get("cosign") or {}, b.get("ideal_floor") or {}, b.get("notation") or {}
    rep = res.get("report") or {}

    def f(v: Any, fmt: str = "{:.2f}") -> str:
        return "—" if v is None else fmt.format(v)

    def mm(d: dict[str, Any], key: str) -> str:
        low = d.get(f"{key}_min")
        return f(d.get(key)) if low is None or d.get("repeats", 1) < 2 else f"{f(d.get(key))} ({f(low)})"

    lines = [
        f"## sigaudit benchmark — {res['timestamp']}",
        "",
        f"Estate: {est['digests']} unique digests in {est['repos']} repositories, {p['pods']} pods "
        f"({cold['containers']} containers); mix {est['kinds']}. Published in {est['publish_s']:.1f}s. "
        f"Machine: {res['machine']['cpus']} CPUs, Python {res['machine']['python']}, 1-minute load average "
        f"{res['machine'].get('load_average_at_start', ['?'])[0]} at start and "
        f"{res['machine'].get('load_average_at_end', ['?'])[0]} at the end (a shared machine: wall times move "
        "with it, CPU times much less).",
        "",
        f"Figures with a repeat are median (min) of {cold.get('repeats', 1)} runs; client CPU is the scan "
        "process alone, registry CPU the docker-registry process over the same interval, peak RSS the "
        "scan process alone (GNU time %M, not wait4's inherited high-water mark).",
        "",
        "| | wall s | client CPU s | registry CPU s | peak RSS MB | registry requests / unique digest | "
        "client CPU / request ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def scan_row(label: str, d: dict[str, Any]) -> str:
        return (f"| sigaudit scan, {label} | {mm(d, 'wall_s')} | {mm(d, 'cpu_s')} | {mm(d, 'registry_cpu_s')} | "
                f"{f(d['peak_rss_mb'], '{:.0f}')} | {f(d['requests_per_digest'])} | "
                f"{f(d.get('client_cpu_per_request_ms'))} |")

    def floor_row(label: str, d: dict[str, Any], per_digest: float | None) -> str:
        return (f"| {label} | {mm(d, 'wall_s')} | {mm(d, 'cpu_s')} | {mm(d, 'registry_cpu_s')} | — | "
                f"{f(per_digest)} | {mm(d, 'client_cpu_per_request_ms')} |")

    lines += [scan_row("cold (empty DB/cache)", cold), scan_row("warm (nothing changed)", warm)]
    for key, label in (("warm_marking", f"warm, `--recheck-after {p.get('window')}`, every digest due (re-list "
                                        "and mark)"),
                       ("warm_window", f"warm, `--recheck-after {p.get('window')}`, inside the window")):
        w = res["scans"].get(key)
        if w:
            lines.append(scan_row(label, w))
    for key, which in (("replay_floor", "cold"), ("warm_replay_floor", "warm")):
        rf = b.get(key) or {}
        if "wall_s" in rf:
            same = "same requests as the scan" if rf.get("same_requests_as_scan") else \
                "**requests differ from the scan's**"
            if rf.get("same_signatures_as_scan") is False:
                same += f", **the scan verified {rf['scan_signatures']} signatures**"
            if rf.get("unattributed_requests"):
                same += f", {rf['unattributed_requests']} requests of no digest made once each"
            lines.append(floor_row(
                f"replay floor, {which}: the {which} scan's {rf['requests']} requests replayed (urllib3, "
                f"{rf['concurrency']} connections, each digest's chain in order, {rf['signatures_checked']} "
                f"signature verifies in process; {same})", rf, rf["requests_per_digest"]))
    if "wall_s" in floor:
        lines.append(floor_row(f"ideal floor, previous (urllib3, {floor.get('concurrency', '?')} connections: 2 GETs "
                               f"+ 1 ECDSA per cosign digest, {floor['digests']} digests)", floor,
                               floor["requests_per_digest"]))
    wfloor = b.get("warm_floor") or {}
    if "wall_s" in wfloor:
        lines.append(floor_row(f"warm floor, previous (one HEAD per digest, {wfloor['concurrency']} connections)",
                               wfloor, 1.0))
    if "per_digest_s" in cos:
        cos_requests = cos["requests_per_digest"] * cos["sample"]
        lines.append(
            f"| `cosign verify --key` loop, {cos['sample']} sampled digests → extrapolated to "
            f"{cos['extrapolated_digests']} | {f(cos['extrapolated_wall_s'], '{:.0f}')} "
            f"({f(cos['per_digest_s'] * 1000, '{:.0f}')} ms/digest) | {f(cos['extrapolated_cpu_s'], '{:.0f}')} | "
            f"{f(cos['peak_rss_mb'], '{:.0f}')} (one process) | {f(cos['requests_per_digest'])} | "
            f"{f(cos['cpu_s'] / cos_requests * 1000 if cos_requests else None)} |")
    else:
        lines.append(f"| cosign loop | {cos.get('skipped', 'not run')} | | | | | |")
    if "per_digest_s" in nota:
        nota_requests = nota["requests_per_digest"] * nota["sample"]
        nota_cpu = nota["cpu_s"] / nota_requests * 1000 if nota_requests else None
        lines.append(
            f"| `notation verify` loop (notation-go), {nota['sample']} sampled → extrapolated to "
            f"{nota['extrapolated_digests']} | {f(nota['extrapolated_wall_s'], '{:.0f}')} "
            f"({f(nota['per_digest_s'] * 1000, '{:.0f}')} ms/digest) | {f(nota['cpu_s'])} (sample) | — | "
            f"{f(nota['requests_per_digest'])} | {f(nota_cpu)} |")
    else:
        lines.append(f"| notation loop | {nota.get('skipped', 'not run')} | | | | | |")
    if "wall_s" in rep:
        lines.append(f"| `sigaudit report --format html` ({cold['images']} images, {cold['containers']} "
                     f"containers) | {f(rep['wall_s'])} | {f(rep['cpu_s'])} | — | {f(rep['peak_rss_mb'], '{:.0f}')} | "
                     f"— ({rep['bytes'] / 1e6:.1f} MB file) | — |")
    if cold.get("requests_per_digest_notation_repos") is not None:
        lines += ["", "Registry requests per digest by signature kind (cold / warm): cosign-keyed "
                  f"{f(cold['requests_per_digest_cosign_repos'])} / {f(warm['requests_per_digest_cosign_repos'])}, "
                  f"notation {f(cold['requests_per_digest_notation_repos'])} / "
                  f"{f(warm['requests_per_digest_notation_repos'])} (notation verdicts are reused only when no "
                  "CRL/OCSP/TSA answer went into them; revocable chains are re-checked every scan)."]
    r = res["ratios"]
    lines += ["", "Ratios (same run): "
              f"cosign loop / cold scan = **{f(r.get('cosign_loop_over_cold_wall'), '{:.0f}')}x** wall "
              f"({f(r.get('cosign_loop_over_cold_cpu'), '{:.0f}')}x CPU); "
              f"cosign loop / warm scan = {f(r.get('cosign_loop_over_warm_wall'), '{:.0f}')}x; "
              f"**cold scan / cold replay floor = {f(r.get('cold_wall_over_replay_floor'))}x** wall (min/min "
              f"{f(r.get('cold_wall_min_over_replay_floor_min'))}x), "
              f"{f(r.get('cold_client_cpu_over_replay_floor'))}x client CPU; "
              f"**warm scan / warm replay floor = {f(r.get('warm_wall_over_warm_replay_floor'))}x** wall (min/min "
              f"{f(r.get('warm_wall_min_over_warm_replay_floor_min'))}x), "
              f"{f(r.get('warm_client_cpu_over_warm_replay_floor'))}x client CPU; "
              f"against the previous floors: cold / ideal floor = {f(r.get('cold_wall_over_ideal_floor'))}x, "
              f"warm / warm floor = {f(r.get('warm_wall_over_warm_floor'))}x; "
              f"cosign loop / ideal floor = {f(r.get('cosign_loop_over_ideal_floor'), '{:.0f}')}x "
              "(the most any client could gain on this machine).", ""]
    lines += ["Client CPU per registry request: the scans' figures are the whole process (start-up, inventory, "
              "verification, store and output included); the floors' the in-process client alone.", ""]
    lines += ["| target | value | met |", "|---|---:|:---:|"]
    for name, t in res["targets"].items():
        op = "≥" if name == "speedup_vs_cosign" else "≤"
        met = {True: "yes", False: "**no**", None: "—"}[t["met"]]
        lines.append(f"| {name} {op} {t['target']:g} | {f(t['value'])} | {met} |")
    lat = res.get("latency")
    if lat:
        lines += ["", f"Latency mode: through a proxy on 127.0.0.1 that delays every request by {lat['delay_ms']} ms "
                  f"({lat['proxy']}); cold scans (`--registry-concurrency N --concurrency max(16, N)`, each on an "
                  "empty database) beside the replay floor (that scan's own requests replayed through the same "
                  "proxy at the same N) and the previous ideal client (2 GETs + ECDSA per cosign digest); median "
                  "(min). CPU seconds of the scan, the registry and the proxy (each its own process); bounds: "
                  "requests x delay / N (round trips alone) and (scan + registry + proxy CPU) / cores (CPU alone).",
                  "",
                  "| N | scan cold wall s | scan CPU s | scan CPU / request ms | registry CPU s | proxy CPU s | load | "
                  "round-trip bound s | CPU bound s | replay floor wall s | replay CPU / request ms | scan / replay | "
                  "previous ideal client wall s | scan / previous ideal per request | cosign loop / scan |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n, row in lat["by_concurrency"].items():
            c, fl, rf = row["scan_cold"], row["ideal_floor"], row.get("replay_floor") or {}
            loads = row.get("load_average") or []
            load = f"{min(loads):.0f}-{max(loads):.0f}" if loads else "—"
            lines.append(f"| {n} | {mm(c, 'wall_s')} | {mm(c, 'cpu_s')} | {f(c.get('client_cpu_per_request_ms'))} | "
                         f"{mm(c, 'registry_cpu_s')} | {mm(c, 'proxy_cpu_s')} | {load} | "
                         f"{f(row.get('round_trip_bound_s'))} | {f(row.get('cpu_bound_s'))} | "
                         f"{mm(rf, 'wall_s') if rf else '—'} | {f(rf.get('client_cpu_per_request_ms'))} | "
                         f"**{f(row.get('cold_wall_over_replay_floor'))}**"
                         f"{'' if rf.get('same_requests_as_scan', True) else ' (requests differ)'} | "
                         f"{mm(fl, 'wall_s')} | "
                         f"{f(row.get('cold_wall_per_request_over_ideal'))} | "
                         f"{f(row.get('cosign_loop_over_cold_wall'), '{:.0f}')}x |")
        lc = lat.get("cosign") or {}
        if "per_digest_s" in lc:
            per_ms, total = f(lc["per_digest_s"] * 1000, "{:.0f}"), f(lc["extrapolated_wall_s"], "{:.0f}")
            lines += ["", f"`cosign verify --key` loop through the same proxy: {per_ms} ms/digest over "
                      f"{lc['sample']} sampled digests, extrapolated {total} s for {lc['extrapolated_digests']} "
                      f"digests ({f(lc['requests_per_digest'])} requests/digest)."]
    cc = res.get("http_clients")
    if cc:
        lines += ["", f"HTTP clients, {cc['requests']} manifest GETs against the same registry, all at "
                  f"concurrency {cc['concurrency']}, median (min) of {cc['repeats']}:", "",
                  "| client | wall s | client CPU s | client CPU / request µs | registry CPU s |",
                  "|---|---:|---:|---:|---:|"]
        for name, c in cc["clients"].items():
            lines.append(f"| {name} | {f(c['wall_s'])} ({f(c['wall_s_min'])}) | {f(c['client_cpu_s'])} "
                         f"({f(c['client_cpu_s_min'])}) | {f(c['client_cpu_per_request_us'], '{:.0f}')} | "
                         f"{f(c['registry_cpu_s'])} |")
    if cold["unexpected_verdicts"] or warm["unexpected_verdicts"]:
        lines += ["", f"**Unexpected verdicts**: cold {cold['unexpected_verdicts']}, "
                  f"warm {warm['unexpected_verdicts']}."]
    if res.get("notes"):
        lines += [""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


# -- main --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.harness.cosign_sign import KeyPair
    from tests.harness.fixtures_registry import start_distribution

    rng = random.Random(args.seed)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sigaudit-bench-"))
    notes: list[str] = []
    use_notation, why = (False, "disabled (--no-notation)") if args.no_notation else notation_available()
    if not use_notation:
        notes.append(f"notation: not in this run — {why}; the estate is cosign-only.")
    compile_checkout()
    log(f"work directory {work}; starting docker-registry")
    reg = start_distribution(work / "registry")
    try:
        keys = {"trusted": KeyPair.ecdsa(), "wrong": KeyPair.ecdsa()}
        before = settle_count(reg)
        est = publish(reg.url, reg.host, args.digests, args.repos, keys, use_notation, work)
        est.publish_requests = settle_count(reg) - before
        log(f"published {len(est.images)} digests in {est.publish_s:.1f}s ({est.publish_requests} requests): "
            f"{est.counts()}")
        pods = work / "pods.json"
        pods_bytes = write_pods(est, args.pods, pods)
        policy = write_policy(est, keys, work)
        res: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_average_at_start": load_average(),
                        "platform": platform.platform(), "registry": "docker-registry (distribution 2.8), "
                        "plain HTTP on 127.0.0.1, access log"},
            "params": {"digests": args.digests, "repos": args.repos, "pods": args.pods,
                       "baseline_sample": args.baseline_sample, "seed": args.seed,
                       "repeat": args.repeat, "registry_concurrency": args.registry_concurrency,
                       "scan_flags": " ".join(["--registry-concurrency", str(args.registry_concurrency),
                                               args.scan_args]).strip()},
            "estate": {"digests": len(est.images), "repos": len({i.repo for i in est.images}),
                       "kinds": est.counts(), "publish_s": round(est.publish_s, 2),
                       "publish_requests": est.publish_requests, "pods_file_bytes": pods_bytes},
            "scans": {},
            "baselines": {},
        }
        extra = ["--registry-concurrency", str(args.registry_concurrency), *shlex.split(args.scan_args)]
        colds, warms, primes, windows = [], [], [], []
        cold_requests: list[list[Any]] = []  # each scan's access-log lines, for the replay floors
        warm_requests: list[list[Any]] = []
        window = ["--recheck-after", args.window] if args.window else []
        for k in range(max(1, args.repeat)):  # each cold scan on its own empty database, then warm on it
            db = work / f"sigaudit-{k}.db"
            cold_requests.append([])
            warm_requests.append([])
            colds.append(measure_scan("cold", reg, est, pods, policy, db, work, extra, cold_requests[-1]))
            warms.append(measure_scan("warm", reg, est, pods, policy, db, work, extra, warm_requests[-1]))
            if window:
                # A warm scan that re-lists everything and marks it, then one inside the window.
                primes.append(measure_scan("warm-marking", reg, est, pods, policy, db, work, [*extra, *window]))
                windows.append(measure_scan("warm-window", reg, est, pods, policy, db, work, [*extra, *window]))
        res["scans"]["cold"], res["scans"]["warm"] = combine(colds), combine(warms)
        if windows:
            res["scans"]["warm_marking"], res["scans"]["warm_window"] = combine(primes), combine(windows)
            res["params"]["window"] = args.window
        res["report"] = measure_report(db, work)
        conc = args.registry_concurrency
        res["baselines"]["ideal_floor"] = repeat_floor(lambda: ideal_floor(reg, est, keys, conc), args.repeat)
        res["baselines"]["warm_floor"] = repeat_floor(lambda: warm_floor(reg, est, conc), args.repeat)
        # The scans' own requests replayed (run k replays scan k's): the floors the issue-19 targets use.
        res["baselines"]["replay_floor"] = repeat_floor(
            each(lambda r: replay_floor(reg, est, keys, r, conc, label="replay floor (cold)",
                                        scan_signatures=colds[0]["signatures_authenticated"]), cold_requests),
            args.repeat)
        res["baselines"]["warm_replay_floor"] = repeat_floor(
            each(lambda r: replay_floor(reg, est, keys, r, conc, label="replay floor (warm)"), warm_requests),
            args.repeat)
        if args.baseline_sample > 0:
            res["baselines"]["cosign"] = cosign_baseline(reg, est, work, args.baseline_sample, rng)
            res["baselines"]["notation"] = notation_baseline(reg, est, args.baseline_sample, rng)
        else:
            res["baselines"]["cosign"] = {"skipped": "--baseline-sample 0"}
            res["baselines"]["notation"] = {"skipped": "--baseline-sample 0"}
        if not args.skip_clients:
            res["http_clients"] = client_comparison(reg, est, workers=conc, repeats=args.repeat)
        if args.latency_ms > 0:
            res["latency"] = latency_mode(reg, est, keys, work, args, rng)
        if "sample" in res["baselines"]["cosign"]:
            notes.append(f"cosign baseline: a random sample of {res['baselines']['cosign']['sample']} digests "
                         "(seeded), timed per process and extrapolated linearly to the estate.")
        res["machine"]["load_average_at_end"] = load_average()
        res["ratios"] = ratios(res)
        res["targets"] = targets(res)
        res["notes"] = notes
    finally:
        reg.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    return res


def write_results(res: dict[str, Any], out: Path) -> tuple[Path, str]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = res["timestamp"].replace(":", "").replace("-", "")
    text = json.dumps(res, indent=2, sort_keys=False) + "\n"
    path = out / f"{stamp}.json"
    path.write_text(text)
    (out / "latest.json").write_text(text)
    md = markdown(res)
    (out / "latest.md").write_text(md)
    return path, md


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--digests", type=int, default=2000, help="unique image digests (default 2000)")
    ap.add_argument("--repos", type=int, default=200, help="repositories they are spread over (default 200)")
    ap.add_argument("--pods", type=int, default=10000, help="pods in the pod list (default 10000)")
    ap.add_argument("--baseline-sample", type=int, default=100,
                    help="digests the cosign/notation CLI loops verify (default 100; 0 skips them)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="results directory (default bench/results/)")
    ap.add_argument("--seed", type=int, default=1, help="seed for the baseline sample")
    ap.add_argument("--no-notation", action="store_true", help="cosign-only estate")
    ap.add_argument("--skip-clients", action="store_true", help="skip the HTTP client comparison")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (registry storage, DB, pods)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each scan and floor; figures are min and median (default 3)")
    from scanner.scan import ScanOptions

    scan_default = ScanOptions().registry_concurrency
    ap.add_argument("--registry-concurrency", type=int, default=scan_default,
                    help=f"per-registry concurrency of the scan, the floors and every compared client (default "
                         f"{scan_default}, the scan's default): compared at equal concurrency")
    ap.add_argument("--latency-ms", type=int, default=0,
                    help="latency mode: also measure cold scans, the ideal client and the cosign loop through a "
                         "proxy on 127.0.0.1 that delays every request by this many ms (e.g. 40; default 0: off)")
    ap.add_argument("--latency-concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[8, 16, 32, 64],
                    help="registry concurrencies measured in latency mode (default 8,16,32,64)")
    ap.add_argument("--latency-sample", type=int, default=30,
                    help="digests the cosign loop verifies through the proxy (default 30)")
    ap.add_argument("--window", default="1h",
                    help="--recheck-after of the windowed warm scan (default 1h; empty: not measured)")
    ap.add_argument("--scan-args", default="", help="extra flags for both sigaudit scans, e.g. '--concurrency 8'")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.digests < 1 or args.repos < 1 or args.pods < 1:
        raise SystemExit("--digests, --repos and --pods must be positive")
    res = run(args)
    path, md = write_results(res, Path(args.out))
    print(md)
    log(f"results: {path}, {Path(args.out) / 'latest.json'}, {Path(args.out) / 'latest.md'}")
    wrong = int(res["scans"]["cold"]["unexpected_verdicts"]) + int(res["scans"]["warm"]["unexpected_verdicts"])
    return 0 if wrong == 0 else 1




if __name__ == "__main__":
    sys.exit(main())
