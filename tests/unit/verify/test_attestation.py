"""scanner.verify.attestation against an attacker: what the signed payload binds (the digest AND the
repository, as kritis' attestlib checks them), payloads that read two ways, and untrusted Grafeas /
registry bytes that must become a typed error, never a crash, a hang or a partial "not attested"."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scanner.models import (
    ContainerRef,
    ContainerType,
    Descriptor,
    ImageReference,
    RunningImage,
    SignatureMaterial,
    Status,
    Workload,
)
from scanner.policy.engine import evaluate
from scanner.policy.loader import CompiledRule, Policy, PolicyLoader
from scanner.policy.schema import AttestationVerifierSpec, parse_duration
from scanner.verify.attestation import Attestation, AttestationListTruncated, AttestationVerifier

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                    serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def image(registry: str = "registry.example", repository: str = "team/app") -> RunningImage:
    return RunningImage(
        ImageReference(registry, repository, "1.0", DIGEST),
        (ContainerRef("prod", "p", "c", ContainerType.CONTAINER, f"{registry}/{repository}:1.0", None,
                      Workload("Pod", "p")),),
    )


def payload_text(reference: str | None, digest: str = DIGEST) -> bytes:
    crit: dict[str, object] = {"image": {"docker-manifest-digest": digest}, "type": "atomic container signature"}
    if reference is not None:
        crit["identity"] = {"docker-reference": reference}
    return json.dumps({"critical": crit}, separators=(",", ":")).encode()


def signed(data: bytes) -> Attestation:
    sig = KEY.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return Attestation.from_generic(
        {"serializedPayload": base64.b64encode(data).decode(),
         "signatures": [{"signature": base64.b64encode(sig).decode()}]},
        origin="projects/p/occurrences/1",
    )


@dataclass
class Listed:
    """The injected source: what a Grafeas lists for the image's resource URLs (unsigned: anyone who
    may write occurrences chooses the resourceUri an attestation is filed under)."""

    items: list[Attestation] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "memory"

    def attestations(self, urls: Sequence[str], note_name: str | None) -> list[Attestation]:
        return list(self.items)


def judged(img: RunningImage, *found: Attestation, tmp_path: Path):
    spec = AttestationVerifierSpec(attestor="qa", publicKeys=[PEM], source="http://127.0.0.1:1/v1beta1/projects/p")
    v = AttestationVerifier.from_spec(spec, base_dir=tmp_path, loader=PolicyLoader(), source=Listed(list(found)))
    rule = CompiledRule("attested", ("*",), ("*",), (v,))
    policy = Policy((rule,), (), (), parse_duration("720h"), frozenset(), 50, "sha256:x")
    material = SignatureMaterial(Descriptor("application/vnd.oci.image.manifest.v1+json", DIGEST, 1))
    return evaluate(img, rule, v.verify(img, material, NOW), [], policy, NOW, "prod")


# -- what the signature binds ----------------------------------------------------------------------


def test_an_attestation_of_the_same_digest_in_another_repository_does_not_count(tmp_path: Path) -> None:
    """qa attested staging/app@X; the same bytes filed under prod/app@X (the occurrence's resourceUri,
    or a copied referrer) are not an attestation of prod/app, as kritis' attestlib decides."""
    out = judged(image(repository="prod/app"), signed(payload_text("registry.example/staging/app")),
                 tmp_path=tmp_path)
    assert out.status is Status.INVALID, out.reasons
    assert any("for another repository" in r and "registry.example/staging/app" in r for r in out.reasons)


@pytest.mark.parametrize("reference", [
    None,                                              # no identity at all
    "",                                                # empty
    "registry.example/team/app:1.0",                   # a tag: not a repository name
    f"registry.example/team/app@{DIGEST}",             # a digest in the reference
    "registry.example/team/app/extra",                 # a prefix of another repository
    "registry.example/team",                           # ... and the other way round
    "registry.example/Team/app",                       # not a valid name (upper case in the path;
                                                       # a host is case-insensitive, DNS-wise)
    "registry.example/team/app ",                      # trailing junk
])
def test_a_payload_must_name_exactly_the_repository(reference: str | None, tmp_path: Path) -> None:
    out = judged(image(), signed(payload_text(reference)), tmp_path=tmp_path)
    assert out.status is Status.INVALID, out.reasons


@pytest.mark.parametrize("reference", ["nginx", "library/nginx", "index.docker.io/library/nginx",
                                       "docker.io/library/nginx"])
def test_docker_hub_spellings_name_one_repository(reference: str, tmp_path: Path) -> None:
    """go-containerregistry's Repository.Name() and sigaudit's parser normalise Docker Hub alike."""
    out = judged(image("docker.io", "library/nginx"), signed(payload_text(reference)), tmp_path=tmp_path)
    assert out.status is Status.VERIFIED, out.reasons


def test_the_repository_and_digest_bound_payload_verifies(tmp_path: Path) -> None:
    out = judged(image(), signed(payload_text("registry.example/team/app")), tmp_path=tmp_path)
    assert out.status is Status.VERIFIED and "attested by qa" in out.reasons[0]
    assert "payload names" not in " ".join(out.reasons)


OTHER = "sha256:" + "b" * 64


@pytest.mark.parametrize("text", [
    # Python keeps the last duplicate, so do Go's decoder and others: a signer who reviewed the first
    # value signed something else. Refused, whichever comes first.
    '{"critical":{"identity":{"docker-reference":"registry.example/team/app"},'
    '"image":{"docker-manifest-digest":"OTHER","docker-manifest-digest":"DIGEST"},'
    '"type":"atomic container signature"}}',
    # Go matches struct fields case-insensitively: kritis reads "Image" (the last) as the image.
    '{"critical":{"identity":{"docker-reference":"registry.example/team/app"},'
    '"image":{"docker-manifest-digest":"DIGEST"},"Image":{"docker-manifest-digest":"OTHER"},'
    '"type":"atomic container signature"}}',
    '{"critical":{"identity":{"docker-reference":"registry.example/other/app"},'
    '"identity":{"docker-reference":"registry.example/team/app"},'
    '"image":{"docker-manifest-digest":"DIGEST"},"type":"atomic container signature"}}',
])
def test_a_payload_that_reads_two_ways_is_refused(text: str, tmp_path: Path) -> None:
    out = judged(image(), signed(text.replace("OTHER", OTHER).replace("DIGEST", DIGEST).encode()),
                 tmp_path=tmp_path)
    assert out.status is Status.INVALID, out.reasons
    assert any("malformed" in r and "twice" in r for r in out.reasons), out.reasons


# -- a listing cut at its bound --------------------------------------------------------------------


@dataclass
class Cut:
    """A source whose listing stopped at a bound (pages, attestations) after ``partial``."""

    partial: list[Attestation] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "memory"

    def attestations(self, urls: Sequence[str], note_name: str | None) -> list[Attestation]:
        raise AttestationListTruncated("the listing goes on after 20 pages", self.partial)


def _verdict_from(source: Cut, tmp_path: Path):
    spec = AttestationVerifierSpec(attestor="qa", publicKeys=[PEM], source="http://127.0.0.1:1/v1beta1/projects/p")
    v = AttestationVerifier.from_spec(spec, base_dir=tmp_path, loader=PolicyLoader(), source=source)
    rule = CompiledRule("attested", ("*",), ("*",), (v,))
    policy = Policy((rule,), (), (), parse_duration("720h"), frozenset(), 50, "sha256:x")
    material = SignatureMaterial(Descriptor("application/vnd.oci.image.manifest.v1+json", DIGEST, 1))
    return evaluate(image(), rule, v.verify(image(), material, NOW), [], policy, NOW, "prod")


def test_a_cut_listing_without_a_valid_attestation_is_an_error_not_unattested(tmp_path: Path) -> None:
    out = _verdict_from(Cut(), tmp_path)
    assert out.status is Status.ERROR and "not all of qa's attestations" in out.reasons[0], out.reasons
    bad = signed(payload_text("registry.example/team/app", "sha256:" + "b" * 64))
    assert _verdict_from(Cut([bad]), tmp_path).status is Status.ERROR  # the valid one may be further on


def test_a_cut_listing_with_a_valid_attestation_still_verifies(tmp_path: Path) -> None:
    good = signed(payload_text("registry.example/team/app"))
    assert _verdict_from(Cut([good]), tmp_path).status is Status.VERIFIED


# -- untrusted bytes -------------------------------------------------------------------------------


def test_nesting_too_deep_is_a_parse_error_not_a_recursion_error() -> None:
    from scanner.errors import ParseError
    from scanner.models import ReferrerArtifact
    from scanner.verify.attestation import REGISTRY_ARTIFACT_TYPE, Payload, registry_attestations

    deep = ReferrerArtifact("sha256:" + "1" * 64, REGISTRY_ARTIFACT_TYPE, REGISTRY_ARTIFACT_TYPE, b"[" * 200_000, {},
                            None)
    with pytest.raises(ParseError, match="nested too deeply"):
        registry_attestations([deep])
    with pytest.raises(ParseError, match="nested too deeply"):
        Payload.from_bytes(b'{"a":' * 10_000)  # 50 kB, under the payload bound


def test_an_occurrence_whose_resource_is_not_an_object_is_not_filed_under_the_image() -> None:
    from scanner.verify.attestation import occurrence_attestation

    occ = {"kind": "ATTESTATION", "resource": "registry.example/team/app", "attestation": {
        "serializedPayload": base64.b64encode(b"{}").decode(), "signatures": []}}
    att = occurrence_attestation(occ)
    assert att is not None and att.resource_url == ""


# -- credentials and fields that could not be enforced ---------------------------------------------


def test_credentials_in_a_grafeas_url_are_refused_and_never_repeated() -> None:
    """The source is named in every reason (JSON, HTML, CSV, the database): user:password in it leaked."""
    from scanner.errors import ConfigError
    from scanner.verify.attestation import GrafeasEndpoint

    with pytest.raises(ConfigError, match="SIGAUDIT_GRAFEAS_TOKEN") as refused:
        GrafeasEndpoint.parse("https://builder:hunter2@grafeas.example/v1beta1/projects/p")
    assert "hunter2" not in str(refused.value) and "builder" not in str(refused.value)
    with pytest.raises(ConfigError, match="query"):
        GrafeasEndpoint.parse("https://grafeas.example/v1beta1/projects/p?key=AIzaSecret")


def test_the_grafeas_token_is_never_sent_in_clear_text_to_another_machine() -> None:
    from scanner.errors import ConfigError
    from scanner.verify.attestation import GrafeasClient, GrafeasEndpoint

    with pytest.raises(ConfigError, match="https only"):
        GrafeasClient(GrafeasEndpoint.parse("http://grafeas.example/v1beta1/projects/p"), token="t0ken")
    GrafeasClient(GrafeasEndpoint.parse("http://127.0.0.1:8080/v1beta1/projects/p"), token="t0ken")  # this machine
    GrafeasClient(GrafeasEndpoint.parse("https://grafeas.example/v1beta1/projects/p"), token="t0ken")
    GrafeasClient(GrafeasEndpoint.parse("http://grafeas.example/v1beta1/projects/p"))  # no token: a warning only


def test_a_note_on_registry_attestations_is_refused_at_load(tmp_path: Path) -> None:
    """Registry attestations carry no note: noteName there would be silently unenforced."""
    from scanner.errors import ConfigError
    from scanner.policy.loader import load_policy

    (tmp_path / "k.pub").write_text(PEM)
    doc = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {"rules": [
        {"name": "r", "images": ["*"], "verifiers": [{"attestation": {
            "attestor": "qa", "publicKeys": ["k.pub"], "noteName": "projects/p/notes/qa"}}]}]}}
    (tmp_path / "policy.yaml").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="noteName applies to a Grafeas source only") as refused:
        load_policy(tmp_path / "policy.yaml")
    assert refused.value.field is not None and "attestation" in refused.value.field


@pytest.mark.parametrize(("first", "second"), [
    ({"publicKeys": ["a.pub", "b.pub"]}, {"publicKeys": ["b.pub", "a.pub"]}),
    ({"publicKeys": ["a.pub"]}, {"publicKeys": ["a.pub", "a.pub"]}),
    ({"publicKeys": ["a.pub"], "source": "http://127.0.0.1:8/v1beta1/projects/p", "noteName": "projects/p/notes/n"},
     {"publicKeys": ["a.pub"], "source": "grafeas+http://127.0.0.1:8/v1beta1/projects/p/",
      "noteName": "v1beta1/projects/p/notes/n"}),
])
def test_one_attestor_spelled_twice_cannot_make_up_an_n_of_m(first: dict, second: dict, tmp_path: Path) -> None:
    """count: 2 over the same attestor written two ways would be met by a single attestation."""
    from scanner.errors import ConfigError
    from scanner.policy.loader import load_policy

    (tmp_path / "a.pub").write_text(PEM)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    (tmp_path / "b.pub").write_bytes(other.public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    doc = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {"rules": [
        {"name": "r", "images": ["*"], "count": 2, "verifiers": [
            {"attestation": {"attestor": "qa", **first}}, {"attestation": {"attestor": "qa", **second}}]}]}}
    (tmp_path / "policy.yaml").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="listed twice"):
        load_policy(tmp_path / "policy.yaml")


def test_registry_attestations_past_the_bound_are_an_error_not_unattested(tmp_path: Path) -> None:
    """With ``maxSignatures`` above 100, discovery hands more attestation referrers than the verifier
    examines. Before, the verifier stopped at 100 without a word: 101 referrers of someone else (key ids
    we do not hold) put the attestor's own, further on, out of sight and the image read "not attested"."""
    from scanner.models import ReferrerArtifact
    from scanner.policy.loader import CompiledRule, Policy
    from scanner.verify.attestation import MAX_ATTESTATIONS, REGISTRY_ARTIFACT_TYPE

    def referrer(i: int, doc: dict) -> ReferrerArtifact:
        return ReferrerArtifact(f"sha256:{i:064x}", REGISTRY_ARTIFACT_TYPE, REGISTRY_ARTIFACT_TYPE,
                                json.dumps(doc).encode(), {}, None)

    noise = {"serializedPayload": base64.b64encode(b"{}").decode(),
             "signatures": [{"signature": "c2ln", "publicKeyId": "someone-else"}]}
    good = signed(payload_text("registry.example/team/app"))
    mine = {"serializedPayload": base64.b64encode(good.serialized_payload).decode(),
            "signatures": [{"signature": base64.b64encode(good.signatures[0].signature).decode()}]}
    spec = AttestationVerifierSpec(attestor="qa", publicKeys=[PEM], source="registry")
    v = AttestationVerifier.from_spec(spec, base_dir=tmp_path, loader=PolicyLoader())
    rule = CompiledRule("attested", ("*",), ("*",), (v,))
    policy = Policy((rule,), (), (), parse_duration("720h"), frozenset(), 500, "sha256:x")

    def verdict(docs: list[dict]):
        material = SignatureMaterial(Descriptor("application/vnd.oci.image.manifest.v1+json", DIGEST, 1),
                                     referrers=tuple(referrer(i, d) for i, d in enumerate(docs)))
        return evaluate(image(), rule, v.verify(image(), material, NOW), [], policy, NOW, "prod")

    out = verdict([noise] * (MAX_ATTESTATIONS + 1) + [mine])
    assert out.status is Status.ERROR and "first 100 were examined" in out.reasons[0], out.reasons
    assert verdict([noise] * (MAX_ATTESTATIONS - 1) + [mine]).status is Status.VERIFIED
    assert verdict([noise] * MAX_ATTESTATIONS).status is Status.UNSIGNED  # all of them read: none is qa's
