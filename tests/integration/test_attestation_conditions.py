"""CEL conditions on what verified attestations say (issue #25 item 2), judged by ``sigaudit scan``
over attestations written by the real ``cosign3`` (v3.1.3) into the real docker-registry.

Keyless: the same provenance, signed by the private Sigstore instance (``tests/sigstore_mock``) with
the real ``sigstore attest`` CLI, judged by a keyless verifier.

One image, signed (``cosign3 sign``) and attested twice (``cosign3 attest``): an SLSA provenance v1
(``--type slsaprovenance1``) built by a trusted builder from ``https://github.com/acme/app``, and a
vulnerability scan (``--type vuln``) finished on 2026-12-01 with no critical finding. A second image
is signed and attested in the same way with a provenance from another repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import oci
from tests.harness.demo import _pod
from tests.harness.tools import require_tool

pytestmark = pytest.mark.integration
REPO = "conditions"
SLSA = "https://slsa.dev/provenance/v1"
VULN = "https://cosign.sigstore.dev/attestation/vuln/v1"
BUILDER = "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_generic_slsa3.yml"


def _provenance(repository: str) -> dict[str, Any]:
    return {
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": {"repository": repository, "ref": "refs/heads/main",
                                                "path": ".github/workflows/release.yml"}},
            "resolvedDependencies": [{"uri": f"git+{repository}@refs/heads/main", "digest": {"gitCommit": "a" * 40}}],
        },
        "runDetails": {"builder": {"id": f"{BUILDER}@refs/tags/v2.0.0"},
                       "metadata": {"invocationId": "https://github.com/acme/app/actions/runs/1"}},
    }


VULN_SCAN = {
    "invocation": {"uri": "https://github.com/acme/app/actions/runs/1"},
    "scanner": {"uri": "pkg:github/aquasecurity/trivy@v0.58.0", "version": "0.58.0",
                "result": {"vulnerabilities": [{"id": "CVE-2026-0001", "severity": "LOW"},
                                               {"id": "CVE-2026-0002", "severity": "MEDIUM"}]}},
    "metadata": {"scanStartedOn": "2026-12-01T00:00:00Z", "scanFinishedOn": "2026-12-01T00:01:00Z"},
}


def _cosign(cosign: Path, *args: str, cwd: Path | None = None) -> None:
    r = subprocess.run([str(cosign), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                       env={**os.environ, "COSIGN_PASSWORD": "", "TUF_ROOT": "/nonexistent-sigaudit"})
    assert r.returncode == 0, f"{cosign.name} {' '.join(args)}: {r.stderr[-3000:]}"


@pytest.fixture(scope="module")
def estate(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cosign3 = require_tool("cosign3")
    d = tmp_path_factory.mktemp("cosign3-conditions")
    _cosign(cosign3, "generate-key-pair", cwd=d)
    (d / "vuln.json").write_text(json.dumps(VULN_SCAN))
    common = ["--key", str(d / "cosign.key"), "--new-bundle-format", "--tlog-upload=false",
              "--use-signing-config=false", "--allow-http-registry", "-y"]
    refs: dict[str, str] = {}
    for name, source in (("acme", "https://github.com/acme/app"), ("other", "https://github.com/mallory/app")):
        pushed = oci.push_image(registry.url, f"{REPO}/{name}", "v1")
        ref = f"{registry.host}/{REPO}/{name}@{pushed.digest}"
        (d / f"slsa-{name}.json").write_text(json.dumps(_provenance(source)))
        _cosign(cosign3, "sign", *common, ref)
        _cosign(cosign3, "attest", *common, "--type", "slsaprovenance1", "--predicate", str(d / f"slsa-{name}.json"),
                ref)
        _cosign(cosign3, "attest", *common, "--type", "vuln", "--predicate", str(d / "vuln.json"), ref)
        refs[name] = ref
    return {"refs": refs, "pub": d / "cosign.pub", "host": registry.host}


def _run(tmp: Path, estate: dict[str, Any], attestations: list[dict[str, Any]],
         ) -> subprocess.CompletedProcess[str]:
    tmp.mkdir(parents=True, exist_ok=True)
    policy = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
              "spec": {"insecureRegistries": [estate["host"]],
                       "rules": [{"name": "provenance-rule", "images": [f"{estate['host']}/{REPO}/*"],
                                  "verifiers": [{"cosign": {"key": str(estate["pub"]), "ignoreTlog": True,
                                                            "attestations": attestations}}]}]}}
    (tmp / "policy.yaml").write_text(yaml.safe_dump(policy))
    pods = [_pod("ns", f"p{n}", [("c", ref, ref)]) for n, ref in enumerate(estate["refs"].values())]
    (tmp / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    return subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(tmp / "pods.json"),
                           "--policy", str(tmp / "policy.yaml"), "--no-store", "-o", "json", "--no-progress"],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "SIGAUDIT_SIGSTORE_OFFLINE": "1"})


def scan(tmp: Path, estate: dict[str, Any], attestations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    r = _run(tmp, estate, attestations)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    by_digest = {i["digest"]: i for i in json.loads(r.stdout)["images"]}
    return {name: by_digest[ref.split("@")[1]] for name, ref in estate["refs"].items()}


def statuses(got: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: d["status"] for name, d in got.items()}


TRUSTED_SOURCE = [
    f'predicate.runDetails.builder.id.startsWith("{BUILDER}@")',
    'predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/acme/app"',
]
FRESH_AND_CLEAN = [
    # the scan clock: a scan finished in the last 30 days (before it the scan is stale)
    'now - timestamp(predicate.metadata.scanFinishedOn) < duration("720h")',
    'now >= timestamp(predicate.metadata.scanFinishedOn)',
    '!predicate.scanner.result.vulnerabilities.exists(v, v.severity == "CRITICAL")',
]


def test_conditions_on_slsa_provenance_and_a_vulnerability_scan(estate: dict[str, Any], tmp_path: Path) -> None:
    got = scan(tmp_path, estate, [{"predicateType": SLSA, "conditions": TRUSTED_SOURCE},
                                  {"predicateType": VULN, "conditions": FRESH_AND_CLEAN}])
    assert statuses(got) == {"acme": "verified", "other": "invalid"}, got
    why = " ".join(got["other"]["reasons"])
    # the expression and the value that failed
    assert TRUSTED_SOURCE[1] in why and "https://github.com/mallory/app" in why, why


def test_a_false_condition_is_invalid_naming_the_value(estate: dict[str, Any], tmp_path: Path) -> None:
    cond = '!predicate.scanner.result.vulnerabilities.exists(v, v.severity == "MEDIUM")'
    got = scan(tmp_path, estate, [{"predicateType": VULN, "conditions": [cond]}])
    assert statuses(got) == {"acme": "invalid", "other": "invalid"}, got
    assert any(cond in r and "is false" in r for r in got["acme"]["reasons"]), got["acme"]["reasons"]


@pytest.mark.parametrize("cond", [
    "predicate.runDetails.builder.nosuchfield == 'x'",  # a missing field
    "predicate.runDetails.builder.id + 1 == 2",  # a type error
    "predicate.runDetails.builder.id",  # not a bool
])
def test_a_condition_that_cannot_be_evaluated_is_an_error(estate: dict[str, Any], tmp_path: Path, cond: str) -> None:
    got = scan(tmp_path, estate, [{"predicateType": SLSA, "conditions": [cond]}])
    assert statuses(got) == {"acme": "error", "other": "error"}, got
    assert any(cond in r and "could not be evaluated" in r for r in got["acme"]["reasons"]), got["acme"]["reasons"]


def test_conditions_on_a_predicate_type_nobody_attested_are_invalid(estate: dict[str, Any], tmp_path: Path) -> None:
    got = scan(tmp_path, estate, [{"predicateType": "https://spdx.dev/Document", "conditions": ["true"]}])
    assert statuses(got) == {"acme": "invalid", "other": "invalid"}, got


def test_a_condition_that_does_not_compile_stops_the_load_naming_the_rule(estate: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    r = _run(tmp_path, estate, [{"predicateType": SLSA, "conditions": ["predicate.runDetails.("]}])
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "rule 'provenance-rule'" in r.stderr, r.stderr[-2000:]
    assert "not valid CEL" in r.stderr, r.stderr[-2000:]


# -- keyless: the private Sigstore instance (tests/sigstore_mock) and the real `sigstore attest` CLI -----

SUBJECT = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"


@pytest.fixture(scope="module")
def keyless(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.sigstore_mock.harness import MockSigstore, attach_bundle, cosign_sign_statement

    with MockSigstore.start(tmp_path_factory.mktemp("sigstore-mock")) as mock:
        refs: dict[str, str] = {}
        for name, source in (("acme", "https://github.com/acme/app"), ("other", "https://github.com/mallory/app")):
            repo = f"{REPO}/keyless-{name}"
            pushed = oci.push_image(registry.url, repo, "v1")
            algo, _, hexd = pushed.digest.partition(":")
            sig = mock.attest(cosign_sign_statement(pushed.digest), subject=SUBJECT, issuer=ISSUER)
            attach_bundle(registry.url, repo, pushed, sig, referrers_api=False)
            stmt = {"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": repo, "digest": {algo: hexd}}],
                    "predicateType": SLSA, "predicate": _provenance(source)}
            att = mock.attest(json.dumps(stmt).encode(), subject=SUBJECT, issuer=ISSUER)
            attach_bundle(registry.url, repo, pushed, att, referrers_api=False, predicate_type=SLSA)
            refs[name] = f"{registry.host}/{repo}@{pushed.digest}"
        yield {"refs": refs, "root": mock.trusted_root, "host": registry.host}


def scan_keyless(tmp: Path, keyless: dict[str, Any], conditions: list[str]) -> dict[str, dict[str, Any]]:
    tmp.mkdir(parents=True, exist_ok=True)
    policy = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
              "spec": {"insecureRegistries": [keyless["host"]],
                       "rules": [{"name": "keyless", "images": [f"{keyless['host']}/{REPO}/keyless-*"],
                                  "verifiers": [{"cosign": {
                                      "keyless": {"identities": [{"subject": SUBJECT, "issuer": ISSUER}],
                                                  "trustedRoot": str(keyless["root"])},
                                      "attestations": [{"predicateType": SLSA, "conditions": conditions}]}}]}]}}
    (tmp / "policy.yaml").write_text(yaml.safe_dump(policy))
    pods = [_pod("ns", f"k{n}", [("c", ref, ref)]) for n, ref in enumerate(keyless["refs"].values())]
    (tmp / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(tmp / "pods.json"),
                        "--policy", str(tmp / "policy.yaml"), "--no-store", "-o", "json", "--no-progress"],
                       capture_output=True, text=True, timeout=180,
                       env={**os.environ, "SIGAUDIT_SIGSTORE_OFFLINE": "1"})
    assert r.returncode in (0, 1), r.stderr[-3000:]
    by_digest = {i["digest"]: i for i in json.loads(r.stdout)["images"]}
    return {name: by_digest[ref.split("@")[1]] for name, ref in keyless["refs"].items()}


@pytest.mark.parametrize(("conditions", "want"), [
    (TRUSTED_SOURCE, {"acme": "verified", "other": "invalid"}),
    (["predicate.runDetails.nosuch == 'x'"], {"acme": "error", "other": "error"}),
    ([f'subject.name == "{REPO}/keyless-acme"'], {"acme": "verified", "other": "invalid"}),
])
def test_conditions_on_keyless_attestations(keyless: dict[str, Any], tmp_path: Path, conditions: list[str],
                                            want: dict[str, str]) -> None:
    got = scan_keyless(tmp_path, keyless, conditions)
    assert statuses(got) == want, got
