"""``make demo``: a real local registry with signed/unsigned/wrong-key/tampered/revoked/expired images,
a pod list that runs them, one ``sigaudit scan`` into SQLite, the table, JSON, HTML report and metrics.

Usage: python -m tests.harness.demo [--out DIR] [--keep-running]
Everything it starts it stops; everything it writes is under --out (default ./demo-out).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.harness import notation_sign, oci
from tests.harness.cosign_sign import KeyPair, sign_image


@dataclass
class Estate:
    """What the demo (and tests) publish: images by name, their digests, keys, and the pods."""

    host: str
    keys: dict[str, KeyPair] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)  # image name -> expected status
    expiring: set[str] = field(default_factory=set)  # image names expected to be flagged expiring
    notation: notation_sign.PKI | None = None  # the notation signer's root + leaf


def _pod(
    ns: str,
    name: str,
    containers: list[tuple[str, str, str | None]],
    *,
    owner: tuple[str, str] | None = None,
    labels: dict[str, str] | None = None,
    init: list[tuple[str, str, str | None]] | None = None,
    ephemeral: list[tuple[str, str, str | None]] | None = None,
    pull_secrets: list[str] | None = None,
) -> dict[str, Any]:
    """A pod as ``kubectl get pods -o json`` shows it; (container name, spec image, imageID or None)."""
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1" if owner[0] == "ReplicaSet" else "batch/v1", "kind": owner[0],
             "name": owner[1], "uid": f"uid-{owner[1]}", "controller": True}
        ]
    spec: dict[str, Any] = {"containers": [{"name": c, "image": i} for c, i, _ in containers]}
    status: dict[str, Any] = {
        "phase": "Running",
        "containerStatuses": [
            {"name": c, "image": i, "imageID": iid or "", "ready": iid is not None} for c, i, iid in containers
        ],
    }
    if init:
        spec["initContainers"] = [{"name": c, "image": i} for c, i, _ in init]
        status["initContainerStatuses"] = [{"name": c, "image": i, "imageID": iid or ""} for c, i, iid in init]
    if ephemeral:
        spec["ephemeralContainers"] = [{"name": c, "image": i} for c, i, _ in ephemeral]
        status["ephemeralContainerStatuses"] = [
            {"name": c, "image": i, "imageID": iid or ""} for c, i, iid in ephemeral
        ]
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def publish_estate(url: str, host: str) -> Estate:
    est = Estate(host=host)
    trusted, wrong, revoked = KeyPair.ecdsa(), KeyPair.ecdsa(), KeyPair.ecdsa()
    est.keys = {"trusted": trusted, "wrong": wrong, "revoked": revoked}

    def image(name: str, tag: str = "1.0") -> str:
        d = oci.make_image(url, f"demo/{name}", tag)
        est.digests[name] = d
        return d

    signed = image("signed")
    sign_image(url, host, "demo/signed", signed, trusted)
    image("unsigned")
    sign_image(url, host, "demo/wrong-key", image("wrong-key"), wrong)
    sign_image(url, host, "demo/tampered", image("tampered"), trusted, tamper=True)
    other = oci.make_image(url, "demo/other-digest", "other")
    sign_image(url, host, "demo/other-digest", image("other-digest"), trusted, payload_digest=other)
    sign_image(url, host, "demo/revoked", image("revoked"), revoked)
    multi = oci.make_index(url, "demo/multiarch", "1.0")
    est.digests["multiarch"] = multi
    sign_image(url, host, "demo/multiarch", multi, trusted)
    # Tag drift: the pod started on a signed digest; the tag has since moved to an unsigned one.
    drift_running = image("drifted")
    sign_image(url, host, "demo/drifted", drift_running, trusted)
    est.digests["drifted-now"] = oci.make_image(url, "demo/drifted", "1.0")
    # The running digest is unknown: never compliant, whatever the tag names now (signed, in all three).
    pending = image("pending")  # the pod has not started: no imageID yet, nothing runs
    sign_image(url, host, "demo/pending", pending, trusted)
    sign_image(url, host, "demo/uppercase-id", image("uppercase-id"), trusted)
    est.digests["uppercase-id-runs"] = oci.make_image(url, "demo/uppercase-id", "0.9")  # unsigned
    sign_image(url, host, "demo/local-build", image("local-build"), trusted)
    image("pause", "3.9")
    image("legacy")
    # Notary Project (notation) signatures: valid, expired, and expiring inside the 720h warning window.
    est.notation = pki = notation_sign.make_pki("Demo Signer")
    now = datetime.now(UTC)
    notation_sign.sign_image(url, "demo/notation-signed", image("notation-signed"), pki.chain)
    notation_sign.sign_image(url, "demo/notation-expired", image("notation-expired"), pki.chain,
                             signing_time=now - timedelta(days=2), expiry=now - timedelta(days=1))
    notation_sign.sign_image(url, "demo/notation-expiring", image("notation-expiring"), pki.chain, envelope="cose",
                             expiry=timedelta(days=7))

    d = est.digests

    def ref(name: str, tag: str = "1.0") -> str:
        return f"{host}/demo/{name}:{tag}"

    def iid(name: str) -> str:
        return f"{host}/demo/{name}@{d[name]}"

    upper_runs = "sha256:" + d["uppercase-id-runs"].removeprefix("sha256:").upper()

    est.pods = [
        _pod("shop", "web-7d9f8b6c5-abcde", [("web", ref("signed"), iid("signed"))],
             owner=("ReplicaSet", "web-7d9f8b6c5"), labels={"pod-template-hash": "7d9f8b6c5"},
             init=[("migrate", ref("multiarch"), f"docker-pullable://{host}/demo/multiarch@{multi}")]),
        _pod("shop", "web-7d9f8b6c5-fghij", [("web", ref("signed"), iid("signed"))],
             owner=("ReplicaSet", "web-7d9f8b6c5"), labels={"pod-template-hash": "7d9f8b6c5"},
             ephemeral=[("debugger", ref("unsigned"), iid("unsigned"))]),
        _pod("shop", "cart-0", [("cart", ref("wrong-key"), iid("wrong-key"))], owner=("StatefulSet", "cart")),
        _pod("shop", "report-28890000-x1", [("report", ref("tampered"), iid("tampered"))],
             owner=("Job", "report-28890000")),
        _pod("payments", "api-5f6d7c8b9-aaaaa", [("api", ref("other-digest"), iid("other-digest"))],
             owner=("ReplicaSet", "api-5f6d7c8b9"), labels={"pod-template-hash": "5f6d7c8b9"}),
        _pod("payments", "worker-x", [("worker", ref("revoked"), iid("revoked"))], owner=("DaemonSet", "worker")),
        _pod("payments", "drift-1", [("app", ref("drifted"), iid("drifted"))]),
        _pod("payments", "pending-1", [("app", ref("pending"), None)]),
        # An imageID no runtime writes (upper-case hex) naming the unsigned digest, and a local image id
        # (built or loaded on the node, never pulled): the signed tag must not stand in for either.
        _pod("payments", "uppercase-1", [("app", ref("uppercase-id"), f"{host}/demo/uppercase-id@{upper_runs}")]),
        _pod("payments", "local-1", [("app", ref("local-build"), "docker://sha256:" + "5e" * 32)]),
        _pod("shop", "search-0", [("search", ref("notation-signed"), iid("notation-signed"))],
             owner=("StatefulSet", "search")),
        _pod("shop", "recs-0", [("recs", ref("notation-expired"), iid("notation-expired"))],
             owner=("StatefulSet", "recs")),
        _pod("shop", "mail-0", [("mail", ref("notation-expiring"), iid("notation-expiring"))],
             owner=("StatefulSet", "mail")),
        _pod("kube-system", "pause-1", [("pause", ref("pause", "3.9"), iid("pause"))]),
        _pod("legacy", "old-1", [("old", ref("legacy"), iid("legacy"))]),
        _pod("tools", "unmatched-1",
             [("x", "docker.io/library/busybox:1.36",
               "docker.io/library/busybox@sha256:" + "ab" * 32)]),
        _pod("tools", "unreachable-1",
             [("x", "127.0.0.1:9/demo/gone:1.0", "127.0.0.1:9/demo/gone@sha256:" + "cd" * 32)]),
    ]
    est.expected = {
        "signed": "verified", "multiarch": "verified", "unsigned": "unsigned", "wrong-key": "invalid",
        "tampered": "invalid", "other-digest": "invalid", "revoked": "revoked", "drifted": "verified",
        "pending": "error", "uppercase-id": "error", "local-build": "error",
        "pause": "exempt", "legacy": "unsigned", "busybox": "no-policy", "gone": "error",
        "notation-signed": "verified", "notation-expired": "expired", "notation-expiring": "verified",
    }
    est.expiring = {"notation-expiring"}
    return est


def write_policy(est: Estate, directory: Path, *, now: datetime | None = None) -> Path:
    now = now or datetime.now(UTC)
    (directory / "trusted.pub").write_text(est.keys["trusted"].public_pem)
    (directory / "revoked.pub").write_text(est.keys["revoked"].public_pem)
    notation_rules: list[dict[str, Any]] = []
    if est.notation is not None:
        notation_sign.write_trust_material(directory / "notation", {"demo": [est.notation.root]},
                                           scopes=[f"{est.host}/demo/notation-{n}"
                                                   for n in ("signed", "expired", "expiring")])
        notation_rules.append({"name": "notation-images", "images": [f"{est.host}/demo/notation-*"],
                               "verifiers": [{"notation": {"trustPolicy": "notation/trustpolicy.json",
                                                           "trustStore": "notation/truststore"}}]})
    policy = {
        "apiVersion": "sigaudit.io/v1alpha1",
        "kind": "AuditPolicy",
        "metadata": {"name": "demo"},
        "spec": {
            "expiryWarning": "720h",
            "insecureRegistries": [est.host, "127.0.0.1:9"],
            "rules": [
                *notation_rules,
                {"name": "demo-images", "images": [f"{est.host}/demo/*", "127.0.0.1:9/*"],
                 "verifiers": [{"cosign": {"key": "trusted.pub", "ignoreTlog": True}},
                               {"cosign": {"key": "revoked.pub", "ignoreTlog": True}}]},
            ],
            "exemptions": [
                {"images": [f"{est.host}/demo/pause*"], "namespaces": ["kube-system"],
                 "reason": "pause image is built in-house without signing (ticket SEC-42)",
                 "until": (now + timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ"), "approvedBy": "secops"},
                {"images": [f"{est.host}/demo/legacy*"], "reason": "legacy app, waiver expired",
                 "until": (now - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")},
            ],
            "revocations": [{"keySha256": est.keys["revoked"].spki_sha256, "reason": "key leaked (INC-7)"}],
        },
    }
    import yaml

    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def write_pods(est: Estate, path: Path) -> Path:
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": est.pods, "metadata": {}}, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--keep-running", action="store_true", help="leave the registry running (Ctrl-C to stop)")
    args = ap.parse_args(argv)
    from tests.harness.fixtures_registry import start_distribution

    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="sigaudit-demo-"))
    print(f"demo: starting a local docker-registry (distribution) in {work}", file=sys.stderr)
    reg = start_distribution(work / "registry")
    try:
        est = publish_estate(reg.url, reg.host)
        policy = write_policy(est, out)
        pods = write_pods(est, out / "pods.json")
        db = out / "sigaudit.db"
        cmd = [sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy", str(policy),
               "--db", f"sqlite:///{db}", "--cluster", "demo", "--json-out", str(out / "scan.json"),
               "--report", str(out / "report.html"), "--metrics-file", str(out / "metrics.prom"),
               "--no-progress"]
        print("demo: $ sigaudit " + " ".join(cmd[3:]), file=sys.stderr)
        t0 = time.monotonic()
        rc = subprocess.call(cmd)
        print(f"demo: scan exit code {rc} (0 compliant, 1 non-compliant found, 2 config error, 3 scan failed) "
              f"in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        print(f"demo: JSON document  {out / 'scan.json'}", file=sys.stderr)
        print(f"demo: HTML report    {out / 'report.html'}", file=sys.stderr)
        print(f"demo: metrics        {out / 'metrics.prom'}", file=sys.stderr)
        print(f"demo: database       {db}", file=sys.stderr)
        doc = json.loads((out / "scan.json").read_text())
        got = {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in doc["images"]}
        wrong = {k: (v, got.get(k)) for k, v in est.expected.items() if got.get(k) != v}
        flagged = {i["repository"].rsplit("/", 1)[-1] for i in doc["images"] if i["expiring"]}
        wrong.update({k: ("expiring", "not expiring") for k in est.expiring - flagged})
        if wrong:
            print(f"demo: UNEXPECTED verdicts (expected, got): {wrong}", file=sys.stderr)
            return 4
        print(f"demo: all {len(est.expected)} verdicts as expected", file=sys.stderr)
        if args.keep_running:
            print(f"demo: registry at {reg.url}; Ctrl-C to stop", file=sys.stderr)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0 if rc in (0, 1) else rc
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
