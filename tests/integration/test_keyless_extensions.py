"""Keyless identities beyond subject and issuer (issue #25 item 1): Fulcio certificate extensions
(source repository, ref, digest, owner, build signer, trigger, run invocation, ... and cosign's legacy
GitHub workflow ones) required by ``keyless.identities[]``, on every keyless path.

The private Sigstore instance (``tests/sigstore_mock``: @sigstore/mock's Fulcio and Rekor) issues the
certificates: its Fulcio turns GitHub Actions token claims into the extensions 1.2-1.6 (raw) and
1.9-1.22 (DER UTF8String). Signatures are a legacy cosign ``.sig`` (certificate + chain + Rekor SET)
and a Sigstore bundle v0.3 made by the real ``sigstore attest`` CLI, attached to images in the real
docker-registry, and judged by the real ``sigaudit scan`` CLI. Kyverno ``additionalExtensions``
documents give the same verdicts as the native rules.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scanner.policy.schema import FULCIO_EXTENSIONS
from tests.harness import oci
from tests.harness.cosign_sign import simplesigning_payload
from tests.harness.demo import _pod
from tests.sigstore_mock.harness import MockSigstore, attach_bundle, cosign_sign_statement, push_keyless_sig

pytestmark = pytest.mark.integration

SUBJECT = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"
SHA = "0123456789abcdef0123456789abcdef01234567"
CLAIMS = {
    "repository": "acme/app", "ref": "refs/heads/main", "sha": SHA, "workflow": "release",
    "event_name": "push", "job_workflow_ref": "acme/app/.github/workflows/release.yml@refs/heads/main",
    "job_workflow_sha": SHA, "runner_environment": "github-hosted", "repository_id": "4242",
    "repository_owner": "acme", "repository_owner_id": "77",
    "workflow_ref": "acme/app/.github/workflows/release.yml@refs/heads/main", "workflow_sha": SHA,
    "repository_visibility": "private", "run_id": "9001", "run_attempt": "1",
}
# What the mock's Fulcio writes for CLAIMS (@sigstore/mock fulcio/handler.js extensionFromClaims).
EXPECTED = {
    "oidcIssuer": ISSUER, "githubWorkflowTrigger": "push", "githubWorkflowSha": SHA,
    "githubWorkflowName": "release", "githubWorkflowRepository": "acme/app", "githubWorkflowRef": "refs/heads/main",
    "oidcIssuerV2": ISSUER, "buildSignerURI": f"https://github.com/{CLAIMS['job_workflow_ref']}",
    "buildSignerDigest": SHA, "runnerEnvironment": "github-hosted",
    "sourceRepositoryURI": "https://github.com/acme/app", "sourceRepositoryDigest": SHA,
    "sourceRepositoryRef": "refs/heads/main", "sourceRepositoryIdentifier": "4242",
    "sourceRepositoryOwnerURI": "https://github.com/acme", "sourceRepositoryOwnerIdentifier": "77",
    "buildConfigURI": f"https://github.com/{CLAIMS['workflow_ref']}", "buildConfigDigest": SHA,
    "buildTrigger": "push", "runInvocationURI": "https://github.com/acme/app/actions/runs/9001/attempts/1",
    "sourceRepositoryVisibilityAtSigning": "private",
}
REPO = "ext"


def sigaudit(*args: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", *args, "--no-store", "-o", "json",
                        "--no-progress"], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "SIGAUDIT_SIGSTORE_OFFLINE": "1"})
    assert r.returncode in (0, 1), f"scan failed ({r.returncode}): {r.stderr[-3000:]}"
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockSigstore]:
    with MockSigstore.start(tmp_path_factory.mktemp("sigstore-mock")) as m:
        yield m


@pytest.fixture(scope="module")
def images(mock: MockSigstore, registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """label -> image reference: {sig, bundle} x {with the GitHub claims, without any}."""
    out: dict[str, str] = {}
    for claims, tag in ((CLAIMS, "gh"), (None, "bare")):
        repo = f"{REPO}/sig-{tag}"
        pushed = oci.push_image(registry.url, repo, "v1")
        payload = simplesigning_payload(f"{registry.host}/{repo}", pushed.digest)
        ann = mock.legacy_signature(payload, subject=SUBJECT, issuer=ISSUER, claims=claims)
        push_keyless_sig(registry.url, repo, pushed.digest, [(payload, ann)])
        out[f"sig-{tag}"] = f"{registry.host}/{repo}@{pushed.digest}"
        repo = f"{REPO}/bundle-{tag}"
        pushed = oci.push_image(registry.url, repo, "v1")
        bundle = mock.attest(cosign_sign_statement(pushed.digest), subject=SUBJECT, issuer=ISSUER, claims=claims)
        attach_bundle(registry.url, repo, pushed, bundle, referrers_api=False)
        out[f"bundle-{tag}"] = f"{registry.host}/{repo}@{pushed.digest}"
    d = tmp_path_factory.mktemp("ext-pods")
    pods = [_pod("ext", f"p{n}", [("c", ref, ref)]) for n, ref in enumerate(out.values())]
    (d / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods, "metadata": {}}))
    out["_pods"] = str(d / "pods.json")
    return out


def verdicts(doc: dict[str, Any], images: dict[str, str]) -> dict[str, str]:
    by_ref = {i["containers"][0]["image"]: i for i in doc["images"]}
    return {label: by_ref[ref]["status"] for label, ref in images.items() if not label.startswith("_")}


def native(tmp: Path, mock: MockSigstore, registry, identity: dict[str, Any]) -> dict[str, Any]:
    policy = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "ext"},
              "spec": {"insecureRegistries": [registry.host], "rules": [{
                  "name": "ext", "images": [f"{registry.host}/{REPO}/*"],
                  "verifiers": [{"cosign": {"keyless": {"identities": [identity],
                                                        "trustedRoot": str(mock.trusted_root)}}}]}]}}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "policy.yaml").write_text(yaml.safe_dump(policy))
    return {"policy": tmp / "policy.yaml"}


def scan_native(tmp: Path, mock: MockSigstore, registry, images: dict[str, str],
                identity: dict[str, Any]) -> dict[str, Any]:
    p = native(tmp, mock, registry, identity)
    return sigaudit("--pods-file", images["_pods"], "--policy", str(p["policy"]))


ALL_EXACT = {"subject": SUBJECT, "issuer": ISSUER, "extensions": dict(EXPECTED)}
ALL_BY_OID_REGEXP = {"subject": SUBJECT, "issuer": ISSUER, "extensionsRegExp": {
    oid: re.escape(EXPECTED[name][:4]) + ".*" for name, oid in FULCIO_EXTENSIONS.items()}}

CASES: dict[str, tuple[dict[str, Any], str]] = {
    "every extension, exact": (ALL_EXACT, "verified"),
    "every extension by OID, regexp": (ALL_BY_OID_REGEXP, "verified"),
    "source repository of another owner": (
        {**ALL_EXACT, "extensions": {"sourceRepositoryURI": "https://github.com/acme-evil/app"}}, "invalid"),
    "build signer: a regexp matching only a prefix": (
        {"subject": SUBJECT, "issuer": ISSUER,
         "extensionsRegExp": {"buildSignerURI": r"https://github\.com/acme/app"}}, "invalid"),
    "legacy workflow repository (cosign --certificate-github-workflow-repository), other value": (
        {"subject": SUBJECT, "issuer": ISSUER, "extensions": {"githubWorkflowRepository": "acme/other"}},
        "invalid"),
    "source ref: a tag required, a branch signed": (
        {"subject": SUBJECT, "issuer": ISSUER, "extensionsRegExp": {"sourceRepositoryRef": "refs/tags/.*"}},
        "invalid"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_required_extensions_on_sig_and_bundle(case: str, mock: MockSigstore, registry,
                                               images: dict[str, str], tmp_path: Path) -> None:
    identity, want = CASES[case]
    doc = scan_native(tmp_path, mock, registry, images, identity)
    got = verdicts(doc, images)
    # A certificate without the extensions never satisfies a requirement, whatever its pattern.
    assert got == {"sig-gh": want, "bundle-gh": want, "sig-bare": "invalid", "bundle-bare": "invalid"}, (
        json.dumps([(i["containers"][0]["image"], i["status"], i["reasons"]) for i in doc["images"]], indent=1))


def test_a_wildcard_does_not_accept_a_certificate_without_the_extension(
        mock: MockSigstore, registry, images: dict[str, str], tmp_path: Path) -> None:
    doc = scan_native(tmp_path, mock, registry, images, {
        "subject": SUBJECT, "issuer": ISSUER, "extensionsRegExp": {"sourceRepositoryURI": ".*"},
        "extensions": {"githubWorkflowRepository": "acme/app"}})
    assert verdicts(doc, images) == {"sig-gh": "verified", "bundle-gh": "verified",
                                     "sig-bare": "invalid", "bundle-bare": "invalid"}
    bare = next(i for i in doc["images"] if i["containers"][0]["image"] == images["sig-bare"])
    assert any("(absent)" in s["reason"] for s in bare["signatures"]), bare


# -- Kyverno additionalExtensions: the same verdicts as the native rule --------------------------------


def kyverno_doc(mock: MockSigstore, registry, extensions: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "ext"},
            "spec": {"validationFailureAction": "Enforce", "rules": [{
                "name": "ext", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                "verifyImages": [{"imageReferences": [f"{registry.host}/{REPO}/sig-*"],
                                  "attestors": [{"entries": [{"keyless": {
                                      "subject": SUBJECT, "issuer": ISSUER, "additionalExtensions": extensions,
                                      "roots": mock.fulcio_root.read_text(),
                                      "rekor": {"pubkey": mock.rekor_pub.read_text()},
                                      "ctlog": {"pubkey": mock.ctlog_pub.read_text()}}}]}]}]}]}}


KYVERNO_CASES = {
    "repository and ref": ({"githubWorkflowRepository": "acme/app", "githubWorkflowRef": "refs/heads/*"},
                           "verified"),
    "trigger by OID": ({"1.3.6.1.4.1.57264.1.2": "push"}, "verified"),
    "another repository": ({"githubWorkflowRepository": "acme/ap?-evil"}, "invalid"),
    "a bare wildcard (present: matches; absent: never)": ({"githubWorkflowName": "*"}, "verified"),
}


@pytest.mark.parametrize("case", list(KYVERNO_CASES))
def test_kyverno_additional_extensions_match_the_native_rule(case: str, mock: MockSigstore, registry,
                                                             images: dict[str, str], tmp_path: Path) -> None:
    extensions, want = KYVERNO_CASES[case]
    native_identity = {"subject": SUBJECT, "issuer": ISSUER, "extensionsRegExp": {
        k: ".*".join(re.escape(p) for p in v.split("*")).replace(re.escape("?"), ".") for k, v in extensions.items()}}
    want_native = scan_native(tmp_path / "native", mock, registry, images, native_identity)
    docs = [kyverno_doc(mock, registry, extensions)]
    (tmp_path / "kyverno.yaml").write_text(yaml.safe_dump_all(docs))
    (tmp_path / "rest.yaml").write_text(yaml.safe_dump({
        "apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "rest"},
        "spec": {"insecureRegistries": [registry.host], "rules": []}}))
    got = sigaudit("--pods-file", images["_pods"], "--policy", str(tmp_path / "rest.yaml"),
                   "--policy-from", f"kyverno:{tmp_path / 'kyverno.yaml'}")
    sigs = {k: v for k, v in images.items() if k.startswith("sig-")}
    assert verdicts(got, sigs) == verdicts(want_native, sigs) == {"sig-gh": want, "sig-bare": "invalid"}, (
        json.dumps([(i["containers"][0]["image"], i["status"], i["reasons"]) for i in got["images"]], indent=1))
    by_ref = {i["containers"][0]["image"]: i for i in got["images"]}
    assert by_ref[images["sig-gh"]]["policy_source"] == "kyverno:ClusterPolicy/ext"
