"""Attacks on the tag-list answer for absent signature tags (issue 19's cold-scan shortcut), on the real
docker-registry behind the hostile proxy: a tag list is not as authoritative as the tag itself. A
registry that filters its listing by per-tag permission, or serves it from a lagging cache, omits a
``.sig`` tag that is there; where "unsigned" is allowed (``required: false``) that omission must never
turn a bad or unreadable signature into a pass, and where the pods have more than one credential source
for the repository no listing answers at all (a per-tag 404 stands only once none of them was refused)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sig_tag, sign_image
from tests.harness.demo import _pod
from tests.harness.hostile_registry import Body, HostileRegistry, Rule, Status

pytestmark = pytest.mark.integration

NAMES = ["bad", "bare1", "bare2", "bare3"]  # four digests of one repository: past the tag-list threshold


def sigaudit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=180, env=os.environ.copy())


@dataclass(frozen=True)
class Estate:
    trusted: KeyPair
    other: KeyPair
    digests: dict[str, str]  # name -> digest in team/app
    scan_args: tuple[str, ...]


def _estate(front: HostileRegistry, upstream: str, tmp_path: Path, *, required: bool, names: list[str] = NAMES,
            auth: tuple[str, str] | None = None, docker_config: Path | None = None) -> Estate:
    """``names`` pushed to ``team/app`` of the registry behind ``front``, one pod each; a Kyverno rule
    (``required`` as given) trusting one key; the scan's arguments (SQLite store, JSON out)."""
    trusted, other = KeyPair.ecdsa(), KeyPair.ecdsa()
    digests = {n: oci.make_image(upstream, "team/app", n, auth=auth) for n in names}
    kyverno = {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "opt"},
               "spec": {"validationFailureAction": "Enforce", "rules": [{
                   "name": "opt", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                   "verifyImages": [{"imageReferences": [f"{front.host}/*"], "required": required,
                                     "attestors": [{"entries": [{"keys": {
                                         "publicKeys": trusted.public_pem,
                                         "rekor": {"ignoreTlog": True}, "ctlog": {"ignoreSCT": True}}}]}]}]}]}}
    (tmp_path / "kyverno.yaml").write_text(yaml.safe_dump(kyverno))
    (tmp_path / "rest.yaml").write_text(yaml.safe_dump({
        "apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "rest"},
        "spec": {"insecureRegistries": [front.host], "rules": []}}))
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod("ns", f"p-{n}", [("c", f"{front.host}/team/app:{n}", f"{front.host}/team/app@{d}")])
        for n, d in digests.items()]}))
    args = ("scan", "--pods-file", str(pods), "--policy", str(tmp_path / "rest.yaml"),
            "--policy-from", f"kyverno:{tmp_path / 'kyverno.yaml'}",
            "--db", f"sqlite:///{tmp_path / 's.db'}", "-o", "json", "--no-progress", "--cluster", "c")
    if docker_config is not None:
        args += ("--docker-config", str(docker_config))
    return Estate(trusted, other, digests, args)


def _stale_listing(front: HostileRegistry, tags: list[str]) -> None:
    """The proxy serves ``team/app``'s tag list as ``tags`` (a lagging cache or a filtered listing)."""
    front.add(Rule("GET", r"^/v2/team/app/tags/list", Body(json.dumps({"name": "team/app", "tags": tags})
                                                              .encode(), content_type="application/json")))


def _statuses(r: subprocess.CompletedProcess) -> dict[str, dict]:
    assert r.returncode in (0, 1), r.stderr
    return {i["digest"]: i for i in json.loads(r.stdout)["images"]}


def _assert_good_verified_bad_invalid_bare_unsigned(r: subprocess.CompletedProcess, est: Estate) -> None:
    """What asking every tag for itself shows: the trusted `.sig` verified, the other key's invalid, the
    bare digests unsigned (exit 1)."""
    images = _statuses(r)
    assert images[est.digests["good"]]["status"] == "verified", images[est.digests["good"]]["reasons"]
    assert images[est.digests["bad"]]["status"] == "invalid", images[est.digests["bad"]]["reasons"]
    for n in ("bare1", "bare2", "bare3"):
        assert images[est.digests[n]]["status"] == "unsigned", images[est.digests[n]]
    assert r.returncode == 1, r.stderr


@pytest.mark.parametrize("omitted", ["refused (per-tag permission)", "served (a stale listing)"])
def test_required_false_a_tag_list_omitting_a_sig_tag_never_makes_its_image_pass(
        registry_factory, tmp_path: Path, omitted: str) -> None:
    """Four digests of one repository (past the tag-list threshold); one carries a `.sig` signed by a
    key the policy does not trust. The listing omits that tag. Asked per tag, the registry answers
    403 (filtered: `error`) or serves it (stale: `invalid`); either way the image is not compliant,
    as on main — never `unsigned`, which `required: false` lets pass."""
    reg = registry_factory()
    with HostileRegistry(upstream=reg.url) as front:
        est = _estate(front, reg.url, tmp_path, required=False)
        sign_image(reg.url, front.host, "team/app", est.digests["bad"], est.other)
        _stale_listing(front, NAMES)  # every tag but the .sig one
        if omitted.startswith("refused"):
            front.add(Rule("*", rf"^/v2/team/app/manifests/{sig_tag(est.digests['bad'])}", Status(403)))
        r = sigaudit(*est.scan_args)
    images = _statuses(r)
    bad = images[est.digests["bad"]]
    want = "error" if omitted.startswith("refused") else "invalid"
    assert bad["status"] == want, (bad["status"], bad["reasons"])
    assert r.returncode == 1, "an image whose signature is bad or unreadable passed"
    for n in ("bare1", "bare2", "bare3"):
        assert images[est.digests[n]]["status"] == "unsigned", images[est.digests[n]]


def test_required_false_a_warm_scan_never_takes_a_stale_listing_for_still_unsigned(registry_factory,
                                                                                  tmp_path: Path) -> None:
    """The warm path's re-list too: scan 1 finds no `.sig` (unsigned, cached); a signature of an untrusted
    key is then pushed, and the listing (a lagging cache) still omits it. Under `required: false` the
    second scan must look at the tag itself: `invalid`, never the cached `unsigned`."""
    reg = registry_factory()
    with HostileRegistry(upstream=reg.url) as front:
        est = _estate(front, reg.url, tmp_path, required=False)
        first = sigaudit(*est.scan_args)
        assert first.returncode == 0, first.stderr
        sign_image(reg.url, front.host, "team/app", est.digests["bad"], est.other)
        _stale_listing(front, NAMES)
        r = sigaudit(*est.scan_args)
    images = _statuses(r)
    assert images[est.digests["bad"]]["status"] == "invalid", images[est.digests["bad"]]["reasons"]
    assert r.returncode == 1, r.stderr


def test_two_credential_sources_a_warm_scan_never_answers_a_sig_tag_from_the_listing(registry_factory,
                                                                                     tmp_path: Path) -> None:
    """The warm re-list obeys the same rule as every other tag lookup: with more than one credential
    source for the repository (here the scanner's docker config holds an entry for the host and a more
    specific one for `host/team`), the tag list never answers "still no `.sig`" (a listing hides which
    source answered it, and a per-tag 404 stands only once none of them was refused). Scan 1 caches
    `unsigned` for four digests; two then gain a `.sig` (one by the trusted key, one by another) that the
    listing, served stale, omits. Scan 2 must ask each tag: `verified` and `invalid`, not the cached
    `unsigned` (the re-list once read the list itself and skipped this rule)."""
    users = {"alice": "wonderland", "bob": "builder"}
    reg = registry_factory(auth="htpasswd", users=users)
    names = ["good", *NAMES]
    with HostileRegistry(upstream=reg.url, forward_auth=True) as front:
        config = tmp_path / "docker" / "config.json"
        config.parent.mkdir()
        config.write_text(json.dumps({"auths": {
            front.host: {"auth": base64.b64encode(b"alice:wonderland").decode()},
            f"{front.host}/team": {"auth": base64.b64encode(b"bob:builder").decode()}}}))
        est = _estate(front, reg.url, tmp_path, required=True, names=names, auth=reg.auth, docker_config=config)
        first = _statuses(sigaudit(*est.scan_args))
        assert {d: i["status"] for d, i in first.items()} == {d: "unsigned" for d in est.digests.values()}, \
            [i["reasons"] for i in first.values()]
        sign_image(reg.url, front.host, "team/app", est.digests["good"], est.trusted, auth=reg.auth)
        sign_image(reg.url, front.host, "team/app", est.digests["bad"], est.other, auth=reg.auth)
        _stale_listing(front, names)
        before = len(front.requests)
        r = sigaudit(*est.scan_args)
        looked = [q.path for q in front.requests[before:]]
    _assert_good_verified_bad_invalid_bare_unsigned(r, est)
    for d in est.digests.values():  # every .sig tag asked for itself
        assert any(p == f"/v2/team/app/manifests/{sig_tag(d)}" for p in looked), sig_tag(d)


@pytest.mark.parametrize("document", [b"[]", b'{"errors":[{"code":"DENIED","message":"denied"}]}',
                                      b'{"name":"team/other","tags":["bare1"]}'],
                         ids=["not-an-object", "an-error-document", "another-repository"])
def test_a_200_that_is_no_tag_list_of_the_repository_answers_no_tag_absent(registry_factory, tmp_path: Path,
                                                                          document: bytes) -> None:
    """A listing answered 200 with a document that is not this repository's tag list (another JSON value, an
    error document, another repository's list) was read as "no tags": a warm scan's re-list then took the
    cached `verified` image's `.sig` for gone and judged it `unsigned`, and a newly pushed bad signature
    `unsigned` instead of `invalid`. Such a listing is unusable: every tag is asked for itself."""
    reg = registry_factory()
    names = ["good", *NAMES]
    with HostileRegistry(upstream=reg.url) as front:
        est = _estate(front, reg.url, tmp_path, required=True, names=names)
        sign_image(reg.url, front.host, "team/app", est.digests["good"], est.trusted)
        first = _statuses(sigaudit(*est.scan_args))
        assert first[est.digests["good"]]["status"] == "verified", first[est.digests["good"]]["reasons"]
        sign_image(reg.url, front.host, "team/app", est.digests["bad"], est.other)
        front.add(Rule("GET", r"^/v2/team/app/tags/list", Body(document, content_type="application/json")))
        r = sigaudit(*est.scan_args)
    _assert_good_verified_bad_invalid_bare_unsigned(r, est)


def test_required_false_reaches_the_information_only_verification_of_a_pod_whose_digest_is_unknown(
        registry_factory, tmp_path: Path) -> None:
    """Three pods of namespace `a` (a rule that requires a signature) put `team/app` past the tag-list
    threshold; a pod of namespace `b` (`required: false`) runs a digest the runtime does not report, so
    what its spec names (`team/app:b`, signed by an untrusted key) is verified for information only —
    after the listing was allowed. A listing omitting that `.sig` tag must not answer for it: the
    note says `invalid` (the tag asked for itself), never `unsigned`, which `required: false` lets pass."""
    reg = registry_factory()
    trusted, other = KeyPair.ecdsa(), KeyPair.ecdsa()
    with HostileRegistry(upstream=reg.url) as front:
        digests = {n: oci.make_image(reg.url, "team/app", n) for n in ("a1", "a2", "a3", "b")}
        sign_image(reg.url, front.host, "team/app", digests["b"], other)

        def rule(name: str, ns: str, required: bool) -> dict:
            return {"name": name, "match": {"any": [{"resources": {"kinds": ["Pod"], "namespaces": [ns]}}]},
                    "verifyImages": [{"imageReferences": [f"{front.host}/*"], "required": required,
                                      "attestors": [{"entries": [{"keys": {
                                          "publicKeys": trusted.public_pem,
                                          "rekor": {"ignoreTlog": True}, "ctlog": {"ignoreSCT": True}}}]}]}]}

        (tmp_path / "kyverno.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "p"},
            "spec": {"validationFailureAction": "Enforce",
                     "rules": [rule("strict", "a", True), rule("opt", "b", False)]}}))
        (tmp_path / "rest.yaml").write_text(yaml.safe_dump({
            "apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "rest"},
            "spec": {"insecureRegistries": [front.host], "rules": []}}))
        pods = [_pod("a", f"p-{n}", [("c", f"{front.host}/team/app:{n}", f"{front.host}/team/app@{digests[n]}")])
                for n in ("a1", "a2", "a3")]
        pods.append(_pod("b", "p-b", [("c", f"{front.host}/team/app:b", None)]))
        (tmp_path / "pods.json").write_text(json.dumps({"kind": "List", "items": pods}))
        _stale_listing(front, ["a1", "a2", "a3", "b"])  # every tag but b's .sig
        r = sigaudit("scan", "--pods-file", str(tmp_path / "pods.json"), "--policy", str(tmp_path / "rest.yaml"),
                     "--policy-from", f"kyverno:{tmp_path / 'kyverno.yaml'}", "-o", "json", "--no-progress")
        asked = {q.path for q in front.requests}
    assert r.returncode in (0, 1, 3), r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    b = [i for i in doc["images"] if not i.get("digest")]  # the pod whose running digest is unknown
    notes = [reason for i in b for reason in i["reasons"] if "information only, not what runs" in reason]
    assert notes and all("on its own is invalid" in n for n in notes), [i["reasons"] for i in b]
    assert f"/v2/team/app/manifests/{sig_tag(digests['b'])}" in asked
