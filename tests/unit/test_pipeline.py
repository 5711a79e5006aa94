"""The pipeline's safety net: whatever one image's verification raises — even an exception no layer below
expected — is that image's ``error`` verdict, never the scan's end and never a pass; and a scan deadline
turns what is unfinished into errors in a partial scan."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from scanner.models import ScanState, Status
from scanner.pipeline import run_scan
from scanner.policy.loader import load_policy
from tests.harness.cosign_sign import KeyPair
from tests.harness.demo import _pod
from tests.harness.handler_registry import handler_client

D = "sha256:" + "ab" * 32


def policy(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "k.pub").write_text(KeyPair.ecdsa().public_pem)
    (tmp_path / "p.yaml").write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
        "  insecureRegistries: [boom.test, fine.test, slow.test]\n"
        "  rules:\n    - {name: all, images: ['*'], verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n")
    return load_policy(tmp_path / "p.yaml")


def pods(*hosts: str) -> list[dict[str, object]]:
    return [_pod(h.split(".")[0], "p", [("c", f"{h}/app:1", f"{h}/app@{D}")]) for h in hosts]


def test_an_exception_nobody_expected_is_that_images_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    with handler_client(handler, insecure_registries={"boom.test", "fine.test"}) as client:
        opened = client._http.open

        def open_(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if "//boom.test/" in url:
                raise RuntimeError("a bug below the client")  # not a transport error: nothing was written to catch it
            return opened(method, url, *args, **kwargs)

        monkeypatch.setattr(client._http, "open", open_)
        result = run_scan(policy(tmp_path), pods("boom.test", "fine.test"), client=client, cluster="c")
    by_ns = {v.image.containers[0].namespace: v for v in result.verdicts}
    assert by_ns["boom"].status is Status.ERROR
    assert any("RuntimeError: a bug below the client" in r for r in by_ns["boom"].reasons), by_ns["boom"].reasons
    assert by_ns["fine"].status is Status.UNSIGNED  # judged on its own
    assert result.state is ScanState.COMPLETE


def test_the_scan_deadline_leaves_no_image_undecided_and_no_scan_complete(tmp_path: Path) -> None:
    release = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "slow.test":
            release.wait(30)  # a registry that answers in 30 s (read timeout 20 s): only the scan deadline helps
        return httpx.Response(404)

    with handler_client(handler, insecure_registries={"slow.test", "fine.test"}) as client:
        t0 = time.monotonic()
        result = run_scan(policy(tmp_path), pods("slow.test", "fine.test"), client=client, cluster="c",
                          deadline=time.monotonic() + 1.5)
        elapsed = time.monotonic() - t0
        release.set()
    by_ns = {v.image.containers[0].namespace: v for v in result.verdicts}
    assert by_ns["slow"].status is Status.ERROR and any("scan deadline reached" in r for r in by_ns["slow"].reasons)
    assert by_ns["fine"].status is Status.UNSIGNED
    assert result.state is ScanState.PARTIAL and any("scan deadline reached" in e for e in result.errors)
    assert elapsed < 10


def test_each_verdict_names_the_credential_source_of_its_own_namespace(tmp_path: Path) -> None:
    """#21: the source that read an image is recorded with its verdicts by name — and a tenant's verdict
    names its own pull secret, never another namespace's, even when both secrets hold equal credentials
    (one credential set, one verification)."""
    import base64
    import json

    from scanner.registry.auth import CredentialStore

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != "Basic " + base64.b64encode(b"alice:a").decode():
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(404)

    store = CredentialStore()
    secret = json.dumps({"auths": {"fine.test": {"auth": base64.b64encode(b"alice:a").decode()}}}).encode()
    store.add_pull_secret("team-a", "regcred", secret)
    store.add_pull_secret("team-c", "copy", secret)
    estate = [_pod(ns, "p", [("c", "fine.test/app:1", f"fine.test/app@{D}")], pull_secrets=[name])
              for ns, name in (("team-a", "regcred"), ("team-c", "copy"))]
    with handler_client(handler, credentials=store, insecure_registries={"fine.test"}) as client:
        result = run_scan(policy(tmp_path), estate, client=client, cluster="c")
    notes = {tuple(sorted({c.namespace for c in v.image.containers})):
             [r for r in v.reasons if r.startswith("registry credentials")] for v in result.verdicts}
    assert notes == {("team-a", "team-c"): ["registry credentials: pull secrets team-a/regcred, team-c/copy"]}, notes


def test_a_verdict_for_one_namespace_never_names_another_namespaces_secret(tmp_path: Path) -> None:
    import base64
    import json

    from scanner.registry.auth import CredentialStore

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != "Basic " + base64.b64encode(b"alice:a").decode():
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(404)

    (tmp_path / "k.pub").write_text(KeyPair.ecdsa().public_pem)
    (tmp_path / "p.yaml").write_text(  # a rule per namespace: one verdict per namespace
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  insecureRegistries: [fine.test]\n  rules:\n"
        "    - {name: a, namespaces: [team-a], images: ['*'], verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n"
        "    - {name: c, namespaces: [team-c], images: ['*'], verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n")
    store = CredentialStore()
    secret = json.dumps({"auths": {"fine.test": {"auth": base64.b64encode(b"alice:a").decode()}}}).encode()
    store.add_pull_secret("team-a", "regcred", secret)
    store.add_pull_secret("team-c", "copy", secret)
    estate = [_pod(ns, "p", [("c", "fine.test/app:1", f"fine.test/app@{D}")], pull_secrets=[name])
              for ns, name in (("team-a", "regcred"), ("team-c", "copy"))]
    with handler_client(handler, credentials=store, insecure_registries={"fine.test"}) as client:
        result = run_scan(load_policy(tmp_path / "p.yaml"), estate, client=client, cluster="c")
    notes = {v.image.containers[0].namespace: [r for r in v.reasons if r.startswith("registry credentials")]
             for v in result.verdicts}
    assert notes == {"team-a": ["registry credentials: pull secret team-a/regcred"],
                     "team-c": ["registry credentials: pull secret team-c/copy"]}, notes


class _DictCache:
    """A verification cache in memory (the store's four methods), empty at the start."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Any] = {}

    def cache_get_many(self, keys: Any) -> dict[tuple[str, str], Any]:
        return {k: self.rows[k] for k in keys if k in self.rows}

    def cache_put_many(self, entries: Any) -> None:
        self.rows.update({(e.digest, e.decision_identity): e for e in entries})

    def relists_get_many(self, keys: Any) -> dict[tuple[str, str], Any]:
        return {}

    def relists_put_many(self, marks: Any) -> None:
        pass


def test_each_images_decision_identities_are_made_once_per_scan(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: the scan made every image's cache keys (a decision identity each: canonical JSON and a
    hash) to load the cache, then again in the image's verification. Once per image and verifier."""
    p = policy(tmp_path)
    verifier = p.rules[0].verifiers[0]
    made: list[str] = []
    original = type(verifier).decision_identity

    def counted(self: Any, image: Any) -> str | None:
        made.append(str(image.reference))
        return original(self, image)

    monkeypatch.setattr(type(verifier), "decision_identity", counted)
    with handler_client(lambda request: httpx.Response(404), insecure_registries={"a.test", "b.test"}) as client:
        result = run_scan(p, pods("a.test", "b.test"), client=client, cluster="c", cache=_DictCache())
    assert sorted(v.status for v in result.verdicts) == [Status.UNSIGNED, Status.UNSIGNED]
    assert sorted(made) == [f"a.test/app:1@{D}", f"b.test/app:1@{D}"]
