"""The one-shot scan's cyclic-collector thresholds (issue 19) against a registry whose replies make
cyclic garbage: the real CLI as a process, a real docker-registry behind the hostile proxy."""

from __future__ import annotations

import gc
import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair
from tests.harness.demo import _pod
from tests.harness.hostile_registry import HostileRegistry, Rule, Stall

pytestmark = pytest.mark.integration

# Runs ``python -m scanner.cli`` and writes the process's peak RSS (KiB) to the file named by argv[1].
_PEAK_RSS = (
    "import atexit, resource, runpy, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))\n"
    "sys.argv[0] = 'sigaudit'\n"
    "runpy.run_module('scanner.cli', run_name='__main__', alter_sys=True)\n"
)


def test_replies_broken_mid_body_do_not_pile_up_while_a_scan_runs(registry, tmp_path: Path) -> None:
    """A reply cut short leaves urllib3's IncompleteRead/ProtocolError in a reference cycle (its
    context-manager frames) whose frames hold the partial body, up to the 4 MiB reply limit: freed
    only by the cyclic collector. The one-shot scan's young threshold of 50,000 objects let the
    partial bodies of 150 such images (~400 replies) pile up to a peak of ~1.1 GB (700: ~0.2 GB); a
    hostile registry scales that with the images it serves."""
    images = 150
    digests = ["sha256:" + hashlib.sha256(f"gc-{i}".encode()).hexdigest() for i in range(images)]
    sig = oci.push_image(registry.url, "gc/app", None)
    for d in digests:  # each running digest has a cosign signature tag and a referrers tag: both are fetched
        for tag in (d.replace(":", "-") + ".sig", d.replace(":", "-")):
            oci.push_manifest(registry.url, "gc/app", tag, sig.manifest)
    big = b'{"schemaVersion":2,"layers":[' + b'{"a":1},' * 480_000 + b'{}]}'  # 3.8 MB, under the limit
    with HostileRegistry(upstream=registry.url) as hostile:
        hostile.add(Rule("GET", r"/manifests/sha256-[0-9a-f]{64}(\.sig)?$", Stall(fraction=0.95, hold=0.02, body=big)))
        pods = [_pod("ns", f"p{i}", [("c", f"{hostile.host}/gc/app@{d}", f"{hostile.host}/gc/app@{d}")])
                for i, d in enumerate(digests)]
        (tmp_path / "pods.json").write_text(json.dumps({"kind": "List", "items": pods}))
        (tmp_path / "k.pub").write_text(KeyPair.ecdsa().public_pem)
        (tmp_path / "policy.yaml").write_text(
            "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
            f"  insecureRegistries: ['{hostile.host}']\n  rules:\n"
            f"    - name: r\n      images: ['{hostile.host}/*']\n"
            "      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
        r = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, str(tmp_path / "rss"), "scan", "--no-store", "--no-progress",
             "--pods-file", str(tmp_path / "pods.json"), "--policy", str(tmp_path / "policy.yaml"), "-o", "json"],
            capture_output=True, text=True, timeout=300)
        broken = sum(1 for s in hostile.requests if s.fault == "Stall")
    assert r.returncode == 1, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["summary"]["by_status"]["error"] == images  # never compliant, and each says why
    assert all("connection broken mid-reply" in " ".join(i["reasons"]) for i in doc["images"])
    assert broken >= images
    peak_mb = int((tmp_path / "rss").read_text()) // 1024
    assert peak_mb < 600, f"peak RSS {peak_mb} MB for {broken} replies broken mid-body"


def _bytes_held_by_frames() -> int:
    """Bytes that frame objects alive in this process hold in their locals (bytes, or lists of them)."""
    total = 0
    for o in gc.get_objects():
        if not isinstance(o, types.FrameType) or o is sys._getframe():
            continue
        for v in o.f_locals.values():
            for b in v if isinstance(v, list) else (v,):
                if isinstance(b, bytes | bytearray):
                    total += len(b)
    return total


def test_a_reply_broken_mid_body_leaves_no_frame_holding_its_bytes(registry) -> None:
    """The registry client itself: the partial body of a reply cut short is not kept by the cycle the
    failure makes (the frames it passed through are cleared), whatever the collector's thresholds."""
    from scanner.errors import RegistryError
    from scanner.models import ImageReference
    from scanner.registry.client import Limits, RegistryClient

    sig = oci.push_image(registry.url, "gc/one", "sha256-" + "ab" * 32 + ".sig")
    big = b'{"schemaVersion":2,"layers":[' + b'{"a":1},' * 480_000 + b'{}]}'
    with HostileRegistry(upstream=registry.url) as hostile:
        hostile.add(Rule("GET", r"/manifests/sha256-", Stall(fraction=0.95, hold=0.02, body=big)))
        ref = ImageReference(hostile.host, "gc/one", None, None)
        with RegistryClient(insecure_registries={hostile.host}, limits=Limits(retries=0)) as client:
            gc.collect()
            gc.disable()
            try:
                baseline = _bytes_held_by_frames()
                for _ in range(3):
                    with pytest.raises(RegistryError, match="broken mid-reply"):
                        client.get_manifest(ref, "sha256-" + "ab" * 32 + ".sig")
                held = _bytes_held_by_frames() - baseline
            finally:
                gc.enable()
    assert sig.digest and hostile.seen("/manifests/sha256-")
    assert held < 1_000_000, f"{held} bytes of broken replies still held by frames"
