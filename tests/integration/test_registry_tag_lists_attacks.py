"""Attacks on the tag-list answer for absent signature tags (issue 19's cold-scan shortcut), on the real
docker-registry behind the hostile proxy: a tag list is not as authoritative as the tag itself. A
registry that filters its listing by per-tag permission, or serves it from a lagging cache, omits a
``.sig`` tag that is there; where "unsigned" is allowed (``required: false``) that omission must never
turn a bad or unreadable signature into a pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sig_tag, sign_image
from tests.harness.demo import _pod
from tests.harness.hostile_registry import Body, HostileRegistry, Rule, Status

pytestmark = pytest.mark.integration


def sigaudit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=180, env=os.environ.copy())


@pytest.mark.parametrize("omitted", ["refused (per-tag permission)", "served (a stale listing)"])
def test_required_false_a_tag_list_omitting_a_sig_tag_never_makes_its_image_pass(
        registry_factory, tmp_path: Path, omitted: str) -> None:
    """Four digests of one repository (past the tag-list threshold); one carries a `.sig` signed by a
    key the policy does not trust. The listing omits that tag. Asked per tag, the registry answers
    403 (filtered: `error`) or serves it (stale: `invalid`); either way the image is not compliant,
    as on main — never `unsigned`, which `required: false` lets pass."""
    reg = registry_factory()
    trusted, other = KeyPair.ecdsa(), KeyPair.ecdsa()
    names = ["bad", "bare1", "bare2", "bare3"]
    digests = {n: oci.make_image(reg.url, "team/app", n) for n in names}
    with HostileRegistry(upstream=reg.url) as front:
        sign_image(reg.url, front.host, "team/app", digests["bad"], other)
        hidden = sig_tag(digests["bad"])
        listed = [t for t in names]  # every tag but the .sig one
        front.add(Rule("GET", r"^/v2/team/app/tags/list", Body(json.dumps({"name": "team/app", "tags": listed})
                                                                  .encode(), content_type="application/json")))
        if omitted.startswith("refused"):
            front.add(Rule("*", rf"^/v2/team/app/manifests/{hidden}", Status(403)))
        kyverno = {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "opt"},
                   "spec": {"validationFailureAction": "Enforce", "rules": [{
                       "name": "opt", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                       "verifyImages": [{"imageReferences": [f"{front.host}/*"], "required": False,
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
        r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(tmp_path / "rest.yaml"),
                     "--policy-from", f"kyverno:{tmp_path / 'kyverno.yaml'}",
                     "--db", f"sqlite:///{tmp_path / 's.db'}", "-o", "json", "--no-progress", "--cluster", "c")
    assert r.returncode in (0, 1), r.stderr
    images = {i["digest"]: i for i in json.loads(r.stdout)["images"]}
    bad = images[digests["bad"]]
    want = "error" if omitted.startswith("refused") else "invalid"
    assert bad["status"] == want, (bad["status"], bad["reasons"])
    assert r.returncode == 1, "an image whose signature is bad or unreadable passed"
    for n in ("bare1", "bare2", "bare3"):
        assert images[digests[n]]["status"] == "unsigned", images[digests[n]]


def test_required_false_a_warm_scan_never_takes_a_stale_listing_for_still_unsigned(registry_factory,
                                                                                  tmp_path: Path) -> None:
    """The warm path's re-list too: scan 1 finds no `.sig` (unsigned, cached); a signature of an untrusted
    key is then pushed, and the listing (a lagging cache) still omits it. Under `required: false` the
    second scan must look at the tag itself: `invalid`, never the cached `unsigned`."""
    reg = registry_factory()
    trusted, other = KeyPair.ecdsa(), KeyPair.ecdsa()
    names = ["bad", "bare1", "bare2", "bare3"]
    digests = {n: oci.make_image(reg.url, "team/app", n) for n in names}
    with HostileRegistry(upstream=reg.url) as front:
        kyverno = {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "opt"},
                   "spec": {"validationFailureAction": "Enforce", "rules": [{
                       "name": "opt", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                       "verifyImages": [{"imageReferences": [f"{front.host}/*"], "required": False,
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
        first = sigaudit(*args)
        assert first.returncode == 0, first.stderr
        sign_image(reg.url, front.host, "team/app", digests["bad"], other)
        front.add(Rule("GET", r"^/v2/team/app/tags/list", Body(json.dumps({"name": "team/app", "tags": names})
                                                                  .encode(), content_type="application/json")))
        r = sigaudit(*args)
    images = {i["digest"]: i for i in json.loads(r.stdout)["images"]}
    assert images[digests["bad"]]["status"] == "invalid", images[digests["bad"]]["reasons"]
    assert r.returncode == 1, r.stderr
