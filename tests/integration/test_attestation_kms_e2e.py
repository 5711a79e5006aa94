"""Issue 13's seed scenario end to end, with real peers: AWS KMS keys in moto (server mode, its own
process), attestations in the open-source Grafeas server, images and signatures in a real OCI registry
(ocireg, for the referrers API), and the real ``sigaudit scan`` CLI as a process.

- an RSA_2048 attestor key in KMS, an attested image       -> verified, naming the attestor
- an image without attestation                            -> unsigned, "image is not attested by ..."
- an attestation whose payload names another digest       -> invalid
- KMS endpoint down / Grafeas down                        -> error, naming the key / the source
- a cosign signature made with KMS Sign (ECC_NIST_P256), key: awskms:///ARN -> verified
- an attestation attached in the registry (referrer)      -> verified
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import oci
from tests.harness.cosign_sign import SIG_ANNOTATION, push_signatures, simplesigning_payload
from tests.harness.demo import _pod
from tests.harness.tools import free_port

pytestmark = pytest.mark.integration

ATTESTOR = "prod-attestor"
PROJECT = "kritis"


def sigaudit(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean, **env})


def kritis_payload(repo: str, digest: str) -> bytes:
    """kritis' compact atomic container signature payload."""
    doc = {"critical": {"identity": {"docker-reference": repo}, "image": {"docker-manifest-digest": digest},
                        "type": "atomic container signature"}}
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Estate:
    host: str
    digests: dict[str, str]
    attestor_arn: str
    cosign_arn: str
    note: str
    dir: Path

    def pods(self) -> Path:
        pods = [
            _pod("prod", name, [("app", f"{self.host}/{repo}:1", f"{self.host}/{repo}@{self.digests[name]}")])
            for name, repo in (
                ("attested", "att/attested"),
                ("unattested", "att/unattested"),
                ("other-digest", "att/other-digest"),
                ("in-registry", "reg/in-registry"),
                ("cosign-kms", "signed/cosign-kms"),
            )
        ]
        path = self.dir / "pods.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
        return path

    def policy(self, grafeas_url: str, *, only_attestations: bool = False) -> Path:
        key = f"awskms:///{self.attestor_arn}"
        rules: list[dict[str, Any]] = [
            {"name": "grafeas-attested", "images": [f"{self.host}/att/*"], "verifiers": [
                {"attestation": {"attestor": ATTESTOR, "publicKeys": [key], "noteName": self.note,
                                 "source": f"{grafeas_url}/v1beta1/projects/{PROJECT}"}}]},
            {"name": "registry-attested", "images": [f"{self.host}/reg/*"], "verifiers": [
                {"attestation": {"attestor": ATTESTOR, "publicKeys": [key], "source": "registry"}}]},
        ]
        if not only_attestations:
            rules.append({"name": "kms-cosign", "images": [f"{self.host}/signed/*"], "verifiers": [
                {"cosign": {"key": f"awskms:///{self.cosign_arn}", "ignoreTlog": True}}]})
        doc = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
               "spec": {"insecureRegistries": [self.host], "rules": rules}}
        path = self.dir / ("attest-only.yaml" if only_attestations else "policy.yaml")
        path.write_text(yaml.safe_dump(doc))
        return path


@pytest.fixture(scope="module")
def estate(referrers_registry, moto_kms, grafeas_server, tmp_path_factory) -> Estate:
    reg, host = referrers_registry.url, referrers_registry.host
    attestor = moto_kms.create_key("RSA_2048")
    cosign_key = moto_kms.create_key("ECC_NIST_P256")
    grafeas_server.create_project(PROJECT)
    note = grafeas_server.create_note(PROJECT, ATTESTOR)
    digests: dict[str, str] = {}
    pushed: dict[str, oci.Pushed] = {}
    for name, repo in (("attested", "att/attested"), ("unattested", "att/unattested"),
                       ("other-digest", "att/other-digest"), ("in-registry", "reg/in-registry"),
                       ("cosign-kms", "signed/cosign-kms")):
        pushed[name] = oci.push_image(reg, repo, "1")
        digests[name] = pushed[name].digest

    # Attested: PSS as Cloud KMS / AWS KMS sign it (salt = digest length), resource URL with https:// (kritis).
    p = kritis_payload(f"{host}/att/attested", digests["attested"])
    sig = moto_kms.sign(attestor, p, "RSASSA_PSS_SHA_256")
    grafeas_server.create_attestation(PROJECT, note, f"https://{host}/att/attested@{digests['attested']}", p, sig,
                                      attestor)
    # The same attestor attests a different digest, filed under other-digest's resource URL (gcloud's bare form).
    p = kritis_payload(f"{host}/att/attested", digests["attested"])
    sig = moto_kms.sign(attestor, p, "RSASSA_PKCS1_V1_5_SHA_256")
    grafeas_server.create_attestation(PROJECT, note, f"{host}/att/other-digest@{digests['other-digest']}", p, sig,
                                      attestor)
    # In the registry: an OCI referrer carrying the attestation JSON.
    p = kritis_payload(f"{host}/reg/in-registry", digests["in-registry"])
    sig = moto_kms.sign(attestor, p, "RSASSA_PKCS1_V1_5_SHA_512")
    blob = json.dumps({"serializedPayload": base64.b64encode(p).decode(),
                       "signatures": [{"publicKeyId": attestor, "signature": base64.b64encode(sig).decode()}]}).encode()
    oci.make_artifact(reg, "reg/in-registry", pushed["in-registry"], "application/vnd.sigaudit.attestation.v1+json",
                      blob, payload_media_type="application/vnd.sigaudit.attestation.v1+json")
    # cosign, key in KMS: KMS signs the simplesigning payload (ECDSA_SHA_256, DER signature as cosign stores it).
    payload = simplesigning_payload(f"{host}/signed/cosign-kms", digests["cosign-kms"])
    sig = moto_kms.sign(cosign_key, payload, "ECDSA_SHA_256")
    push_signatures(reg, "signed/cosign-kms", digests["cosign-kms"],
                    [(payload, {SIG_ANNOTATION: base64.b64encode(sig).decode()})])
    return Estate(host, digests, attestor, cosign_key, note, tmp_path_factory.mktemp("kms-estate"))


def scan(estate: Estate, policy: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    r = sigaudit("scan", "--pods-file", str(estate.pods()), "--policy", str(policy), "--no-store", "-o", "json",
                 "--no-progress", env=env)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    by = {i["repository"].rsplit("/", 1)[-1]: i for i in doc["images"]}
    for name, image in sorted(by.items()):  # shown with pytest -s: the verdicts of a real run
        print(f"{name:13} {image['status']:9} {image['reasons'][0] if image['reasons'] else ''}")
    return by


def test_the_four_verdicts_and_kms_signed_cosign(estate: Estate, moto_kms, grafeas_server) -> None:
    by = scan(estate, estate.policy(grafeas_server.url), moto_kms.env)
    got = {k: v["status"] for k, v in by.items()}
    assert got == {"attested": "verified", "unattested": "unsigned", "other-digest": "invalid",
                   "in-registry": "verified", "cosign-kms": "verified"}, by
    assert any(f"attested by {ATTESTOR}" in r and "RSA_SIGN_PSS_2048_SHA256" in r for r in by["attested"]["reasons"])
    assert f"image is not attested by {ATTESTOR}" in by["unattested"]["reasons"]
    assert any("for another image" in r and estate.digests["attested"] in r for r in by["other-digest"]["reasons"])
    assert any("RSA_SIGN_PKCS1_2048_SHA512" in r for r in by["in-registry"]["reasons"])


def test_kms_down_is_an_error_naming_the_key(estate: Estate, moto_kms, grafeas_server) -> None:
    down = {**moto_kms.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    by = scan(estate, estate.policy(grafeas_server.url, only_attestations=True), down)
    for name in ("attested", "unattested", "other-digest", "in-registry"):
        assert by[name]["status"] == "error", by[name]
        first = by[name]["reasons"][0]
        assert f"awskms:///{estate.attestor_arn}" in first and "unavailable" in first, by[name]["reasons"]


def test_kms_down_for_a_cosign_key_never_passes_silently(estate: Estate, moto_kms, grafeas_server) -> None:
    down = {**moto_kms.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    r = sigaudit("scan", "--pods-file", str(estate.pods()), "--policy", str(estate.policy(grafeas_server.url)),
                 "--no-store", "-o", "json", "--no-progress", env=down)
    ref = f"awskms:///{estate.cosign_arn}"
    print("cosign key down:", r.returncode, r.stderr.strip().splitlines()[-1:] if r.returncode == 2 else "")
    if r.returncode == 2:  # the key is loaded with the policy: a config error naming the key
        assert ref in r.stderr, r.stderr
    else:  # the loader turns it into an error verdict for the images it judges
        image = {i["repository"].rsplit("/", 1)[-1]: i for i in json.loads(r.stdout)["images"]}["cosign-kms"]
        assert image["status"] == "error" and any(ref in x for x in image["reasons"])


def test_grafeas_down_is_an_error_naming_the_source(estate: Estate, moto_kms) -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    by = scan(estate, estate.policy(gone, only_attestations=True), moto_kms.env)
    for name in ("attested", "unattested", "other-digest"):
        assert by[name]["status"] == "error", by[name]
        assert any("cannot reach" in r and gone in r for r in by[name]["reasons"])
    assert by["in-registry"]["status"] == "verified"  # registry attestations do not need Grafeas


def test_kritis_import_against_grafeas(estate: Estate, moto_kms, grafeas_server) -> None:
    """kritis' own resources, imported: the AttestationAuthority carries the KMS key's PEM (as users
    paste it), the GenericAttestationPolicy allowlists the registry-attested repository."""
    from scanner.verify.kms import der_to_pem

    pem = der_to_pem(bytes(moto_kms.client().get_public_key(KeyId=estate.attestor_arn)["PublicKey"])).decode()
    docs = [
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "AttestationAuthority",
         "metadata": {"name": ATTESTOR, "namespace": "prod"},
         "spec": {"noteReference": f"v1beta1/{estate.note}",
                  "publicKeys": [{"keyType": "PKIX", "keyId": estate.attestor_arn,
                                  "pkixPublicKey": {"publicKeyPem": pem}}]}},
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "GenericAttestationPolicy",
         "metadata": {"name": "require-attestation", "namespace": "prod"},
         "spec": {"attestationAuthorityNames": [ATTESTOR],
                  "admissionAllowlistPatterns": [{"namePattern": f"{estate.host}/reg/*"}]}},
    ]
    path = estate.dir / "kritis.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    # The test registry is plain http: a native policy without rules lists it as insecure.
    native = estate.dir / "insecure-only.yaml"
    native.write_text(yaml.safe_dump({"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
                                      "spec": {"insecureRegistries": [estate.host]}}))
    r = sigaudit("scan", "--pods-file", str(estate.pods()), "--policy", str(native), "--policy-from",
                 f"kritis:{path}", "--no-store", "-o", "json", "--no-progress",
                 env={**moto_kms.env, "SIGAUDIT_GRAFEAS_URL": grafeas_server.url})
    assert r.returncode in (0, 1), r.stderr
    by = {i["repository"].rsplit("/", 1)[-1]: i for i in json.loads(r.stdout)["images"]}
    got = {k: v["status"] for k, v in by.items()}
    assert got["attested"] == "verified" and got["unattested"] == "unsigned" and got["other-digest"] == "invalid"
    assert got["in-registry"] == "exempt"
    assert any("kritis admission allowlist" in x for x in by["in-registry"]["reasons"])
