"""``relist_fingerprint`` (a warm scan's re-list) asks the registry reader for each tag, as every other
lookup does, and never answers a tag from a listing itself: the client alone decides when a tag list
may stand for a per-tag "not found" (issue 19's follow-up: the re-list once read ``tag_set`` directly
and skipped the client's rule for repositories with more than one credential source)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from scanner.errors import RegistryError
from scanner.models import ImageReference, RunningImage
from scanner.registry.auth import CredentialStore
from scanner.signatures.discovery import cosign_sig_tag, relist_fingerprint
from tests.harness.handler_registry import handler_client

DIGESTS = ["sha256:" + c * 64 for c in "abc"]
TYPES = frozenset({"application/vnd.dev.sigstore.bundle.v0.3+json"})


def _image(digest: str, secrets: tuple[tuple[str, str], ...] = ()) -> RunningImage:
    return RunningImage(ImageReference("evil.test", "team/app", "1", digest), (), pull_secrets=secrets)


def _handler(seen: list[str], tags: list[str]):
    """A registry without the referrers API (its referrers live in `sha256-<hex>` tags) whose listing says
    ``tags``; every manifest is absent."""
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/tags/list"):
            return httpx.Response(200, json={"tags": tags})
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
    return handler


def test_a_warm_relist_of_many_digests_costs_one_listing_and_one_referrers_probe() -> None:
    """Three digests of a listed repository, previously without `.sig` and without referrers (read on a
    registry whose referrers are tags): the `.sig` HEADs and the referrers-tag GETs are answered by the
    client from one listing; the only other request is the registry's one referrers API probe."""
    seen: list[str] = []
    with handler_client(_handler(seen, ["1"]), insecure_registries={"evil.test"}) as c:
        c.answer_absent_tags_from_lists([("evil.test", "team/app")])
        for d in DIGESTS:
            assert relist_fingerprint(c, _image(d), "sig=-;refs=", TYPES) == "sig=-;refs="
    assert seen == ["GET /v2/team/app/tags/list", f"GET /v2/team/app/referrers/{DIGESTS[0]}"]


def test_a_repository_the_scan_did_not_name_is_relisted_per_tag() -> None:
    seen: list[str] = []
    with handler_client(_handler(seen, ["1"]), insecure_registries={"evil.test"}) as c:
        for d in DIGESTS:
            assert relist_fingerprint(c, _image(d), "sig=-", TYPES) == "sig=-"
    assert seen == [f"HEAD /v2/team/app/manifests/{cosign_sig_tag(d)}" for d in DIGESTS]


@pytest.mark.parametrize("order", [0, 1])
def test_with_two_credential_sources_the_relist_never_answers_from_the_listing(order: int) -> None:
    """bob's password is wrong (401), alice lists the repository without the `.sig` tags and is told 404
    for each. The re-list must ask each tag under the refusal rule (an error: bob might see it, so the
    cached `unsigned` is not confirmed), never take alice's listing for "still unsigned"."""
    store, refs = CredentialStore(), []
    for user, pw in (("alice", "alice-pw"), ("bob", "wrong")):
        token = base64.b64encode(f"{user}:{pw}".encode()).decode()
        store.add_pull_secret("team-a", f"{user}-secret", json.dumps({"auths": {"evil.test": {"auth": token}}})
                              .encode())
        refs.append(("team-a", f"{user}-secret"))
    secrets = tuple(refs) if order == 0 else tuple(reversed(refs))
    alice = "Basic " + base64.b64encode(b"alice:alice-pw").decode()
    seen: list[str] = []
    inner = _handler(seen, ["1"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != alice:
            seen.append(f"{request.method} {request.url.path} refused")
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return inner(request)

    with handler_client(handler, credentials=store, insecure_registries={"evil.test"}) as c:
        c.answer_absent_tags_from_lists([("evil.test", "team/app")])
        for d in DIGESTS:
            with pytest.raises(RegistryError, match="cannot be told"):
                relist_fingerprint(c, _image(d, secrets), "sig=-", TYPES)
    assert not any("/tags/list" in s for s in seen)
    for d in DIGESTS:
        assert f"HEAD /v2/team/app/manifests/{cosign_sig_tag(d)}" in seen
