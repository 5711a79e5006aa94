"""The registry rows of the fault matrix: every fault a registry (or the network in front of it) can
produce becomes an ``error`` verdict with a reason that names it — never verified, never unsigned,
never a traceback — and transient faults recover without changing the verdict.

One ``sigaudit scan`` process (the real CLI) runs over pods whose images sit behind real servers on
127.0.0.1: a real docker-registry, the hand-made :mod:`tests.harness.hostile_registry` proxy in front
of it (faults no real registry produces), a TLS registry with an untrusted CA, a closed port and a
name that cannot resolve. Every image is signed with the trusted key, so any verdict other than
``verified`` is caused by the fault alone. The scan runs once (module fixture); each test is one row.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import oci
from tests.harness.cosign_sign import SIMPLESIGNING, KeyPair, sign_image
from tests.harness.demo import _pod
from tests.harness.hostile_registry import Body, Corrupt, HostileRegistry, Redirect, Rule, Stall, Status, Truncate
from tests.harness.tools import free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "fault-user", "s3cret-fault-password"
SIG = r"/manifests/sha256-[0-9a-f]{64}\.sig"
BLOB = r"/blobs/sha256:"


def sigaudit(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def sig_index(n: int) -> bytes:
    """A ``.sig`` manifest with ``n`` simplesigning layers whose blobs do not exist."""
    layers = [{"mediaType": SIMPLESIGNING, "digest": "sha256:" + f"{i:064x}", "size": 200,
               "annotations": {"dev.cosignproject.cosign/signature": "AAAA"}} for i in range(n)]
    return oci.canonical_json({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                               "config": {"mediaType": oci.OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2},
                               "layers": layers})


@dataclass
class Matrix:
    result: subprocess.CompletedProcess
    images: dict[str, dict[str, Any]]
    hostile: HostileRegistry
    authed: HostileRegistry
    cdn: HostileRegistry
    digests: dict[str, str]


@pytest.fixture(scope="module")
def matrix(registry, tmp_path_factory) -> Iterator[Matrix]:
    tmp = tmp_path_factory.mktemp("faults")
    key = KeyPair.ecdsa()
    tls_reg = _tls_registry(tmp)
    hostile = HostileRegistry(upstream=registry.url)
    authed = HostileRegistry(upstream=registry.url, basic_auth=(USER, PASSWORD))  # the proxy wants credentials
    wrong = HostileRegistry(upstream=registry.url, basic_auth=(USER, PASSWORD))
    cdn = HostileRegistry(upstream=registry.url)  # "blob storage" on another host:port
    try:
        digests: dict[str, str] = {}
        rows = ["forbidden", "stall", "truncated", "corrupt", "huge", "huge-declared", "sig10k", "error500",
                "throttled", "retry-after", "recovers", "redirect", "noauth", "wrongauth", "tagmissing",
                "deleted", "blobgone", "control"]
        for row in rows:
            if row == "deleted":
                digests[row] = "sha256:" + "de" * 32  # never pushed
                continue
            d = oci.make_image(registry.url, f"faults/{row}", "1.0")
            sign_image(registry.url, hostile.host, f"faults/{row}", d, key)
            digests[row] = d
        # The signature names the host the scanner sees; the proxies forward to the real registry, so
        # the payload's docker-reference differs by host for authed/cdn rows, which cosign key
        # verification does not check (the digest binding is what matters).
        hostile.add(Rule("GET", f"/v2/faults/forbidden{SIG}", Status(403)))
        hostile.add(Rule("GET", f"/v2/faults/stall{BLOB}", Stall()))
        hostile.add(Rule("GET", f"/v2/faults/truncated{BLOB}", Truncate()))
        hostile.add(Rule("GET", f"/v2/faults/corrupt{BLOB}", Corrupt()))
        hostile.add(Rule("GET", f"/v2/faults/huge{SIG}", Body(b'{"schemaVersion":2,"layers":[', size=50 << 20,
                                                               chunked=True)))
        hostile.add(Rule("GET", f"/v2/faults/huge-declared{SIG}", Body(b" ", size=50 << 20)))
        hostile.add(Rule("GET", f"/v2/faults/sig10k{SIG}", Body(sig_index(10_000))))
        hostile.add(Rule("GET", f"/v2/faults/blobgone{SIG}", Body(sig_index(1))))
        hostile.add(Rule("GET", f"/v2/faults/error500{SIG}", Status(500)))
        hostile.add(Rule("GET", f"/v2/faults/throttled{SIG}", Status(429)))
        hostile.add(Rule("GET", f"/v2/faults/retry-after{SIG}", Status(429, headers={"Retry-After": "2"}), times=2))
        hostile.add(Rule("GET", f"/v2/faults/recovers{SIG}", Status(503), times=1))
        hostile.add(Rule("GET", f"/v2/faults/recovers{BLOB}", Status(500), times=1))
        authed.add(Rule("GET", f"/v2/faults/redirect{BLOB}", Redirect(cdn.url)))

        (tmp / "trusted.pub").write_text(key.public_pem)
        refused = f"127.0.0.1:{free_port()}"
        hosts = [hostile.host, authed.host, authed.host.replace("127.0.0.1", "localhost"), wrong.host, refused,
                 "nonexistent.invalid:5000"]
        policy = tmp / "policy.yaml"
        policy.write_text(
            "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
            f"  insecureRegistries: {json.dumps(hosts)}\n"
            "  rules:\n    - name: all\n"
            f"      images: {json.dumps([h + '/*' for h in [*hosts, tls_reg.host]])}\n"
            "      verifiers: [{cosign: {key: trusted.pub, ignoreTlog: true}}]\n"
        )
        docker = tmp / "docker"
        docker.mkdir()
        (docker / "config.json").write_text(json.dumps({"auths": {
            authed.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()},
            wrong.host: {"auth": base64.b64encode(f"{USER}:not-the-password".encode()).decode()},
        }}))

        def pod(row: str, host: str | None = None, *, tag_only: bool = False) -> dict[str, Any]:
            h = host or hostile.host
            image_id = None if tag_only else f"{h}/faults/{row}@{digests.get(row, 'sha256:' + 'ab' * 32)}"
            return _pod("faults", f"p-{row}", [("c", f"{h}/faults/{row}:1.0", image_id)])

        pods = [pod(r) for r in rows if r not in ("redirect", "noauth", "wrongauth", "tagmissing")]
        pods += [pod("redirect", authed.host), pod("noauth", hostile.host), pod("wrongauth", wrong.host),
                 pod("tagmissing-x", tag_only=True), pod("refused", refused),
                 pod("dns", "nonexistent.invalid:5000"), pod("tls", tls_reg.host)]
        # noauth: the credentialed proxy reached under a name the docker config has no entry for
        pods = [p for p in pods if p["metadata"]["name"] != "p-noauth"]
        pods.append(_noauth_pod(authed.host, digests["noauth"]))
        pods_file = tmp / "pods.json"
        pods_file.write_text(json.dumps({"kind": "List", "items": pods}))
        t0 = time.monotonic()
        r = sigaudit("scan", "--pods-file", str(pods_file), "--policy", str(policy), "--no-store", "-o", "json",
                     "--no-progress", "--cache", "--concurrency", "32", env={"DOCKER_CONFIG": str(docker)})
        elapsed = time.monotonic() - t0
        assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        doc = json.loads(r.stdout)
        images = {i["repository"].rsplit("/", 1)[-1]: i for i in doc["images"]}
        print(f"fault matrix scan took {elapsed:.1f}s")
        yield Matrix(r, images, hostile, authed, cdn, digests)
    finally:
        for s in (hostile, authed, wrong, cdn):
            s.close()
        tls_reg.stop()


def _noauth_pod(authed_host: str, digest: str) -> dict[str, Any]:
    # Same proxy as the credentialed rows, but a repository reached through the name "localhost":
    # the docker config has credentials for 127.0.0.1:PORT only, so none apply here.
    host = authed_host.replace("127.0.0.1", "localhost")
    return _pod("faults", "p-noauth", [("c", f"{host}/faults/noauth:1.0", f"{host}/faults/noauth@{digest}")])


def _tls_registry(tmp: Path) -> Any:
    from tests.harness.fixtures_registry import start_distribution

    return start_distribution(tmp / "tls-registry", tls=True)


def row(m: Matrix, name: str) -> tuple[str, str]:
    img = m.images[name]
    return img["status"], " | ".join(img["reasons"])


def assert_error(m: Matrix, name: str, *needles: str) -> None:
    status, reasons = row(m, name)
    assert status == "error", (name, status, reasons)
    assert any(n.lower() in reasons.lower() for n in needles), (name, reasons)


def test_control_image_verifies_through_the_proxy(matrix: Matrix) -> None:
    assert row(matrix, "control")[0] == "verified", row(matrix, "control")


def test_connection_refused_is_an_error(matrix: Matrix) -> None:
    assert_error(matrix, "refused", "connection refused")


def test_dns_failure_is_an_error(matrix: Matrix) -> None:
    assert_error(matrix, "dns", "DNS lookup failed")


def test_untrusted_tls_certificate_is_an_error(matrix: Matrix) -> None:
    assert_error(matrix, "tls", "TLS error", "certificate")


def test_401_without_credentials_is_an_error(matrix: Matrix) -> None:
    assert_error(matrix, "noauth", "authentication required and no credentials configured")


def test_401_with_rejected_credentials_is_an_error(matrix: Matrix) -> None:
    assert_error(matrix, "wrongauth", "authentication refused (401)")


def test_403_is_an_error(matrix: Matrix) -> None:
    assert_error(matrix, "forbidden", "access denied (403)")


def test_404_on_the_tag_is_an_unresolved_error(matrix: Matrix) -> None:
    assert_error(matrix, "tagmissing-x", "could not be resolved", "not found")


def test_404_on_the_running_digest_is_never_compliant(matrix: Matrix) -> None:
    # The digest was deleted from the registry together with its (non-existent) .sig: nothing vouches for it.
    status, reasons = row(matrix, "deleted")
    assert status == "unsigned", reasons


def test_429_without_retry_after_gives_up_with_an_error(matrix: Matrix) -> None:
    assert_error(matrix, "throttled", "rate limited (429) after retries")
    assert len(matrix.hostile.seen(f"/v2/faults/throttled{SIG}", "GET")) == 4  # 1 + 3 retries, then stop


def test_429_with_retry_after_is_honoured_then_recovers(matrix: Matrix) -> None:
    assert row(matrix, "retry-after")[0] == "verified", row(matrix, "retry-after")
    hits = matrix.hostile.seen(f"/v2/faults/retry-after{SIG}", "GET")
    assert [h.fault for h in hits] == ["Status", "Status", ""]
    assert all(b.at - a.at >= 1.9 for a, b in itertools.pairwise(hits)), [h.at for h in hits]


def test_500_forever_is_an_error(matrix: Matrix) -> None:
    assert_error(matrix, "error500", "registry answered 500")


def test_503_and_500_then_recovery_verifies(matrix: Matrix) -> None:
    assert row(matrix, "recovers")[0] == "verified", row(matrix, "recovers")
    assert [h.fault for h in matrix.hostile.seen(f"/v2/faults/recovers{SIG}", "GET")] == ["Status", ""]


def test_stall_mid_body_is_an_error(matrix: Matrix) -> None:
    assert_error(matrix, "stall", "stalled", "too slow")


def test_truncated_body_is_an_error(matrix: Matrix) -> None:
    assert_error(matrix, "truncated", "truncated", "connection broken")


def test_blob_digest_mismatch_is_an_error(matrix: Matrix) -> None:
    assert_error(matrix, "corrupt", "does not match its digest")


def test_50_mb_manifest_streamed_is_capped(matrix: Matrix) -> None:
    assert_error(matrix, "huge", "exceeds the limit")


def test_50_mb_manifest_declared_is_refused_before_reading(matrix: Matrix) -> None:
    assert_error(matrix, "huge-declared", "exceeds the limit")


def test_sig_manifest_with_10000_entries_is_bounded(matrix: Matrix) -> None:
    assert_error(matrix, "sig10k", "only the first 50", "10000 layers")
    blob_gets = matrix.hostile.seen(f"/v2/faults/sig10k{BLOB}", "GET")
    assert 1 <= len(blob_gets) <= 50


def test_sig_layer_listed_but_missing_is_an_error_not_unsigned(matrix: Matrix) -> None:
    assert_error(matrix, "blobgone", "listed but not found")


def test_cross_host_redirect_does_not_carry_credentials(matrix: Matrix) -> None:
    assert row(matrix, "redirect")[0] == "verified", row(matrix, "redirect")
    redirected = matrix.authed.seen(f"/v2/faults/redirect{BLOB}", "GET")
    assert redirected and all(h.fault == "Redirect" for h in redirected)
    assert any("authorization" in h.headers for h in redirected)  # the registry itself got them
    at_cdn = matrix.cdn.seen(f"/v2/faults/redirect{BLOB}", "GET")
    assert at_cdn, "the blob was never fetched from the redirect target"
    assert all("authorization" not in h.headers for h in at_cdn), [h.headers for h in at_cdn]


def test_no_row_is_compliant_by_accident(matrix: Matrix) -> None:
    recovered = {"control", "retry-after", "recovers", "redirect"}
    for name, img in matrix.images.items():
        if name not in recovered:
            assert img["status"] not in ("verified", "exempt"), (name, img["reasons"])
    assert matrix.result.returncode == 1


def test_referrers_list_with_10000_entries_is_refused_as_an_error() -> None:
    """The referrers API answering 10,000 descriptors: discovery records an error (bounded), no fetches."""
    from scanner.models import ImageReference, RunningImage
    from scanner.registry.client import RegistryClient
    from scanner.signatures.discovery import discover
    from scanner.verify.base import Wants

    notary = "application/vnd.cncf.notary.signature"
    entries = [{"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + f"{i:064x}", "size": 500,
                "artifactType": notary} for i in range(10_000)]
    index = oci.canonical_json({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": entries})
    digest = "sha256:" + "ab" * 32
    with HostileRegistry() as hostile:
        hostile.add(Rule("GET", "/v2/many/referrers/", Body(index, content_type=oci.OCI_INDEX)))
        image = RunningImage(ImageReference(hostile.host, "many", "1", digest), ())
        with RegistryClient(insecure_registries={hostile.host}) as client:
            material = discover(client, image, Wants(False, frozenset({notary})), need_descriptor=False)
        assert material.referrers == ()
        assert any("10000 entries exceed the limit" in e for e in material.errors), material.errors
        assert not hostile.seen("/manifests/sha256:")  # nothing listed was fetched


def test_redirect_target_challenge_never_directs_the_registry_credentials(registry_factory, tmp_path: Path) -> None:
    """The registry is the real docker-registry with htpasswd auth, redirecting blob reads to "storage"
    on another host (distribution's own ``redirect`` storage middleware). That host (hand-made, on
    127.0.0.2) answers ``401 Bearer realm=<collector>``; the collector (hand-made, 127.0.0.1) would
    hand out a token to whoever asks. Only the registry's own challenge may say where its credentials
    go: the scan must never send them to the collector (it never contacts it at all), and the image
    whose signature could not be read is an ``error``, never ``verified``."""
    user, password = "alice", "redirect-Pa55word-91c2"
    collector = HostileRegistry()  # S: a token "service" that collects what it is sent
    collector.add(Rule("*", "/", Body(b'{"token": "collected", "expires_in": 300}', content_type="application/json")))
    storage = HostileRegistry(bind="127.0.0.2")  # C: the redirect target, another host
    storage.add(Rule("*", "/", Status(401, headers={
        "WWW-Authenticate": f'Bearer realm="{collector.url}/token",service="registry",scope="repository:cred/app:pull"'
    })))
    try:
        reg = registry_factory(auth="htpasswd", users={user: password}, extra_config={
            "middleware": {"storage": [{"name": "redirect", "options": {"baseurl": storage.url + "/"}}]}})
        key = KeyPair.ecdsa()
        digest = oci.make_image(reg.url, "cred/app", "1", auth=reg.auth)
        sign_image(reg.url, reg.host, "cred/app", digest, key, auth=reg.auth)
        (tmp_path / "k.pub").write_text(key.public_pem)
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
            f"  insecureRegistries: ['{reg.host}']\n"
            f"  rules:\n    - {{name: r, images: ['{reg.host}/*'], "
            "verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n"
        )
        docker = tmp_path / "docker"
        docker.mkdir()
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        (docker / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": basic}}}))
        pods = tmp_path / "pods.json"
        pods.write_text(json.dumps({"kind": "List", "items": [
            _pod("a", "p", [("c", f"{reg.host}/cred/app:1", f"{reg.host}/cred/app@{digest}")])]}))
        r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--no-store", "-o", "json",
                     "--no-progress", env={"DOCKER_CONFIG": str(docker)})
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        img = json.loads(r.stdout)["images"][0]
        assert storage.seen("/docker/registry/v2/blobs/"), "the registry never redirected a blob read"
        leaked = [(s.path, s.headers) for s in collector.requests]
        assert leaked == [], f"the redirect target's challenge sent the scanner to the collector: {leaked}"
        assert all("authorization" not in s.headers for s in storage.requests)
        assert img["status"] == "error", img
        assert any("127.0.0.2" in x and "redirect" in x for x in img["reasons"]), img["reasons"]
        assert password not in r.stdout + r.stderr and basic not in r.stdout + r.stderr
    finally:
        collector.close()
        storage.close()
