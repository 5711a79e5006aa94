"""GrafeasClient against the open-source Grafeas v1beta1 server (built from github.com/grafeas/grafeas
v0.2.3, go/v1beta1/main): its in-memory store ignores `filter`, so matching by resource URL (both
spellings) and note happens client-side, across pages, within a page bound."""

from __future__ import annotations

import pytest

from scanner.verify.attestation import AttestationListTruncated, GrafeasClient, GrafeasEndpoint

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "c" * 64


def test_pagination_resource_urls_and_notes(grafeas_server) -> None:
    g = grafeas_server
    g.create_project("paged")
    mine = g.create_note("paged", "mine")
    theirs = g.create_note("paged", "theirs")
    for i in range(5):  # noise for other images, sorted before and after ours by occurrence name
        g.create_attestation("paged", mine, f"https://reg.example/other{i}@{DIGEST}", b"{}", b"s", "k")
    with_scheme = g.create_attestation("paged", mine, f"https://reg.example/app@{DIGEST}", b"{}", b"s", "k")
    bare = g.create_attestation("paged", mine, f"reg.example/app@{DIGEST}", b"{}", b"s", "k")
    g.create_attestation("paged", theirs, f"reg.example/app@{DIGEST}", b"{}", b"s", "k")
    urls = (f"https://reg.example/app@{DIGEST}", f"reg.example/app@{DIGEST}")
    client = GrafeasClient(GrafeasEndpoint.parse(g.project_url("paged")), page_size=2)
    found = client.attestations(urls, "v1beta1/projects/paged/notes/mine")
    assert sorted(a.origin for a in found) == sorted([with_scheme, bare])
    assert len(client.attestations(urls, None)) == 3  # without a note: every attestor's
    # A page bound smaller than the listing: stops, never loops forever, and says the listing was cut
    # (with what it saw: a valid attestation among them still counts; without one, the verdict is error).
    bounded = GrafeasClient(GrafeasEndpoint.parse(g.project_url("paged")), page_size=1, max_pages=2)
    with pytest.raises(AttestationListTruncated, match="after 2 pages") as cut:
        bounded.attestations(urls, None)
    assert len(cut.value.partial) <= 2


def _kritis_payload(repo: str, digest: str) -> bytes:
    import json

    return json.dumps({"critical": {"identity": {"docker-reference": repo}, "image": {"docker-manifest-digest": digest},
                                    "type": "atomic container signature"}}, separators=(",", ":")).encode()


def test_a_listing_cut_at_its_page_bound_is_error_never_unsigned(grafeas_server, tmp_path) -> None:
    """Issue #26 item 7 through the verifier and the engine, on the real server: the listing goes on past
    the page bound and no valid attestation was among the pages read -> `error`, the reason saying the
    rest was not examined (the valid one may be further on). With the attestor's attestation among the
    pages read, `verified`. Before: what had been read was judged as if it were all -> `unsigned`."""
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from scanner.models import Descriptor, ImageReference, RunningImage, SignatureMaterial, Status
    from scanner.policy.engine import evaluate
    from scanner.policy.loader import CompiledRule, Policy, PolicyLoader
    from scanner.policy.schema import AttestationVerifierSpec, parse_duration
    from scanner.verify.attestation import AttestationVerifier

    g = grafeas_server
    g.create_project("cut")
    note = g.create_note("cut", "qa")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    digest = "sha256:" + "d" * 64
    repo = "reg.example/team/app"
    for i in range(4):  # other images' attestations: the server ignores the filter, they fill the pages
        g.create_attestation("cut", note, f"https://reg.example/other{i}@{digest}", b"{}", b"s", "k")
    img = RunningImage(ImageReference("reg.example", "team/app", None, digest), ())
    material = SignatureMaterial(Descriptor("application/vnd.oci.image.manifest.v1+json", digest, 1))
    now = datetime.now(UTC)

    def verdict(max_pages: int) -> tuple[Status, tuple[str, ...]]:
        spec = AttestationVerifierSpec(attestor="qa", publicKeys=[pem], source=g.project_url("cut"), noteName=note)
        client = GrafeasClient(GrafeasEndpoint.parse(g.project_url("cut")), page_size=1, max_pages=max_pages)
        v = AttestationVerifier.from_spec(spec, base_dir=tmp_path, loader=PolicyLoader(), source=client)
        rule = CompiledRule("attested", ("*",), ("*",), (v,))
        policy = Policy((rule,), (), (), parse_duration("720h"), frozenset(), 50, "sha256:x")
        out = evaluate(img, rule, v.verify(img, material, now), [], policy, now, "prod")
        return out.status, out.reasons

    status, reasons = verdict(max_pages=2)  # 4 occurrences, 2 pages of 1: cut, nothing of this image's seen
    assert status is Status.ERROR, reasons
    assert "not all of qa's attestations could be examined" in reasons[0] and "not examined" in reasons[0]
    payload = _kritis_payload(repo, digest)
    g.create_attestation("cut", note, f"https://{repo}@{digest}", payload,
                         key.sign(payload, ec.ECDSA(hashes.SHA256())), "qa-key")
    assert verdict(max_pages=2)[0] in (Status.ERROR, Status.VERIFIED)  # which pages hold it: the server's order
    assert verdict(max_pages=10)[0] is Status.VERIFIED  # the whole listing read
