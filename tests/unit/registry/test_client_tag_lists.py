"""Absent tags answered from one tag listing per repository (issue 19: a cold scan's ``.sig`` and
referrers-tag 404s, one per unsigned digest, became one listing per repository). The same fact as
the 404 — the registry says the tag is not there — and nothing else: a listed tag is still fetched,
and a listing that cannot be used leaves every lookup to its own request."""

from __future__ import annotations

import json

import httpx
import pytest

from scanner.errors import NotFound
from scanner.models import ImageReference
from scanner.registry.client import OCI_MANIFEST
from tests.harness.handler_registry import handler_client

REF = ImageReference("evil.test", "team/app", "1", None)
OTHER = ImageReference("evil.test", "team/other", "1", None)
SIG = "sha256-" + "a" * 64 + ".sig"
ABSENT = ["sha256-" + c * 64 + ".sig" for c in "bcd"] + ["sha256-" + "e" * 64]
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                  "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []}).encode()


def registry(seen: list[str], tags_reply: httpx.Response | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/tags/list"):
            return tags_reply if tags_reply is not None else httpx.Response(200, json={"tags": ["1", SIG]})
        if request.url.path.endswith(f"/manifests/{SIG}") or request.url.path.endswith("/manifests/1"):
            return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST}, content=MANIFEST)
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    return handler_client(handler, insecure_registries={"evil.test"})


def test_unlisted_tags_of_a_named_repository_are_not_found_after_one_listing() -> None:
    seen: list[str] = []
    with registry(seen) as c:
        c.answer_absent_tags_from_lists([("evil.test", "team/app")])
        for tag in ABSENT:
            with pytest.raises(NotFound, match="not in the repository's tag list"):
                c.get_manifest(REF, tag)
        assert c.get_manifest(REF, SIG).raw == MANIFEST  # a listed tag is still fetched (and checked)
    assert seen == ["GET /v2/team/app/tags/list", f"GET /v2/team/app/manifests/{SIG}"]


def test_a_head_by_tag_is_answered_from_the_same_listing_under_the_same_rule() -> None:
    """HEAD (a warm scan's re-list of a `.sig` tag) asks the one place a GET asks: an unlisted tag is
    not found with the same words, a listed one is still asked, a digest never comes from the list."""
    seen: list[str] = []
    with registry(seen) as c:
        c.answer_absent_tags_from_lists([("evil.test", "team/app")])
        for tag in ABSENT:
            with pytest.raises(NotFound, match="not in the repository's tag list"):
                c.head_manifest(REF, tag)
        assert c.head_manifest(REF, SIG).size == len(MANIFEST)
        with pytest.raises(NotFound) as exc:
            c.head_manifest(REF, "sha256:" + "f" * 64)
    assert "tag list" not in str(exc.value)
    assert seen[0] == "GET /v2/team/app/tags/list" and seen.count("GET /v2/team/app/tags/list") == 1
    assert not [s for s in seen if any(s.endswith(t) for t in ABSENT)], seen
    assert f"HEAD /v2/team/app/manifests/{SIG}" in seen
    assert seen[-1] == "HEAD /v2/team/app/manifests/sha256:" + "f" * 64


def test_a_repository_not_named_is_asked_per_tag() -> None:
    seen: list[str] = []
    with registry(seen) as c:
        c.answer_absent_tags_from_lists([("evil.test", "team/app")])
        with pytest.raises(NotFound):
            c.get_manifest(OTHER, ABSENT[0])
    assert seen == [f"GET /v2/team/other/manifests/{ABSENT[0]}"]


@pytest.mark.parametrize("reply", [
    httpx.Response(403, json={"errors": [{"code": "DENIED"}]}),
    httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN"}]}),
    httpx.Response(200, content=b"not json"),
    httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000),  # nested past json's recursion limit
    httpx.Response(200, json={"tags": "sha256-x.sig"}),
    httpx.Response(200, json={"tags": [1, 2]}),
    httpx.Response(200, json={"tags": ["1"]},
                   headers={"Link": '<http://elsewhere.test/v2/x/tags/list?n=1>; rel="next"'}),
    # A registry ignoring n=1000: more tags than five pages asked for, each kept for the whole scan (a 4 MiB
    # page of short tags is ~270 MiB of set per repository)
    httpx.Response(200, json={"tags": [f"t{i}" for i in range(5001)]}),
    httpx.Response(200, json={"tags": ["1", "t" * 129]}),  # no tag is longer than 128 (distribution spec)
    httpx.Response(200, json={"tags": ["1"]}, headers={"Link": '<http://[::1/v2/x/tags/list>; rel="next"'}),
    # A 200 whose document is no tag list of this repository says nothing of its tags (it was read as
    # "no tags": every .sig and referrers tag absent, a verified image shown unsigned)
    httpx.Response(200, json=[]),
    httpx.Response(200, content=b"null"),
    httpx.Response(200, json={}),
    httpx.Response(200, json={"errors": [{"code": "DENIED", "message": "requested access is denied"}]}),
    httpx.Response(200, json={"name": "team/other", "tags": ["1"]}),
], ids=["refused", "not-found", "not-json", "too-deep", "not-a-list", "not-strings", "next-page-elsewhere",
        "more-than-asked", "a-tag-too-long", "next-page-unparseable", "not-an-object", "json-null", "no-tags-member",
        "an-error-document", "another-repository"])
def test_a_listing_that_cannot_be_used_leaves_each_lookup_to_its_own_request(reply: httpx.Response) -> None:
    seen: list[str] = []
    with registry(seen, reply) as c:
        c.answer_absent_tags_from_lists([("evil.test", "team/app")])
        assert c.get_manifest(REF, SIG).raw == MANIFEST
        with pytest.raises(NotFound) as exc:
            c.get_manifest(REF, ABSENT[0])
    assert "tag list" not in str(exc.value)
    assert seen == ["GET /v2/team/app/tags/list", f"GET /v2/team/app/manifests/{SIG}",
                    f"GET /v2/team/app/manifests/{ABSENT[0]}"]


@pytest.mark.parametrize("lookup", ["get_manifest", "head_manifest"])
def test_with_two_credential_sources_each_tag_is_asked_under_the_refusal_rule(lookup: str) -> None:
    """bob's password is wrong (401); alice lists the repository without the tag. Asked per tag, alice's
    404 does not stand beside bob's refusal (he might see it): an error, never "unsigned" — a listing
    would hide the refusal, so it is not used when more than one source applies."""
    import base64

    from scanner.errors import RegistryError
    from scanner.registry.auth import CredentialStore

    store, refs = CredentialStore(), []
    for user in ("alice", "bob"):
        token = base64.b64encode(f"{user}:{'alice-pw' if user == 'alice' else 'wrong'}".encode()).decode()
        store.add_pull_secret("team-a", f"{user}-secret",
                              json.dumps({"auths": {"evil.test": {"auth": token}}}).encode())
        refs.append(("team-a", f"{user}-secret"))
    alice = "Basic " + base64.b64encode(b"alice:alice-pw").decode()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.headers.get("authorization") != alice:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if request.url.path.endswith("/tags/list"):
            return httpx.Response(200, json={"tags": ["1"]})
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    with handler_client(handler, credentials=store, insecure_registries={"evil.test"}) as c:
        c.answer_absent_tags_from_lists([("evil.test", "team/app")])
        for order in (tuple(refs), tuple(reversed(refs))):
            with pytest.raises(RegistryError, match="cannot be told"):
                getattr(c, lookup)(REF, ABSENT[0], order)
    assert not any("/tags/list" in s for s in seen)
    assert sum(s.endswith(ABSENT[0]) for s in seen) >= 4  # each order: each source asked for the tag
