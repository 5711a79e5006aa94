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
