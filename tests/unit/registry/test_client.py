"""Content addressing in the registry client: whatever digest a manifest or blob is asked by, the bytes
that come back are checked against it before anything parses them; an algorithm that cannot be
checked is refused before any request. The registry here is a function served on a real socket
(tests/harness/handler_registry.py) playing a hostile one: no real registry serves content under a
digest it does not hash to."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest

from scanner.errors import ParseError
from scanner.models import Descriptor, ImageReference
from scanner.registry.client import OCI_MANIFEST, RegistryClient
from tests.harness.handler_registry import Handler, handler_client

REF = ImageReference("evil.test", "team/app", "1", None)


def manifest(note: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "annotations": {"note": note},
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                  "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []}).encode()


GOOD, FORGED = manifest("listed"), manifest("served instead")
SHA512 = "sha512:" + hashlib.sha512(GOOD).hexdigest()
SHA384 = "sha384:" + hashlib.sha384(GOOD).hexdigest()
SHA256 = "sha256:" + hashlib.sha256(GOOD).hexdigest()


def client(body: bytes, seen: list[str], *, content_digest: str | None = None) -> RegistryClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        headers = {"Content-Type": OCI_MANIFEST, "Content-Length": str(len(body))}
        if content_digest:
            headers["Docker-Content-Digest"] = content_digest
        return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else body)

    return handler_client(handler, insecure_registries={"evil.test"})


@pytest.mark.parametrize("digest", [SHA512, SHA384, SHA256])
def test_a_manifest_asked_by_digest_must_hash_to_it_whatever_the_algorithm(digest: str) -> None:
    with client(FORGED, []) as c, pytest.raises(ParseError, match="does not match its digest"):
        c.get_manifest(REF, digest)
    with client(GOOD, []) as c:
        m = c.get_manifest(REF, digest)
        assert m.digest == digest and m.doc["annotations"]["note"] == "listed"


@pytest.mark.parametrize("digest", ["md5:" + hashlib.md5(GOOD).hexdigest(),
                                    "blake3:" + "a" * 64, "sha256:" + "a" * 63, "sha512:" + "a" * 64])
def test_a_digest_that_cannot_be_checked_is_refused_before_any_request(digest: str) -> None:
    seen: list[str] = []
    with client(GOOD, seen) as c:
        with pytest.raises(ParseError, match=r"not supported|malformed"):
            c.get_manifest(REF, digest)
        with pytest.raises(ParseError, match=r"not supported|malformed"):
            c.head_manifest(REF, digest)
        with pytest.raises(ParseError, match=r"not supported|malformed"):
            c.get_blob(REF, Descriptor("application/octet-stream", digest, len(GOOD)))
    assert seen == []


def test_a_head_by_another_algorithm_is_confirmed_by_fetching_and_checking() -> None:
    # The registry's Docker-Content-Digest is its sha256: it cannot confirm a sha512 request.
    seen: list[str] = []
    with client(FORGED, seen, content_digest="sha256:" + hashlib.sha256(FORGED).hexdigest()) as c:
        with pytest.raises(ParseError, match="does not match its digest"):
            c.head_manifest(REF, SHA512)
    assert [s.split()[0] for s in seen] == ["HEAD", "GET"]


def test_a_tag_whose_claimed_digest_does_not_match_is_refused_whatever_the_algorithm() -> None:
    with client(FORGED, [], content_digest=SHA512) as c, pytest.raises(ParseError, match="does not match"):
        c.get_manifest(REF, "1")
    with client(GOOD, [], content_digest=SHA512) as c:
        assert c.get_manifest(REF, "1").digest == SHA256


def test_a_blob_is_checked_against_its_sha512_digest() -> None:
    with client(FORGED, []) as c, pytest.raises(ParseError, match="does not match its digest"):
        c.get_blob(REF, Descriptor("application/octet-stream", SHA512, len(FORGED)))
    with client(GOOD, []) as c:
        assert c.get_blob(REF, Descriptor("application/octet-stream", SHA512, len(GOOD))) == GOOD


# -- credential sources tried in turn (issue #21) ------------------------------------------------

from scanner.errors import RegistryError  # noqa: E402
from scanner.registry.auth import (  # noqa: E402
    Credential,
    CredentialStore,
    CredentialUnavailable,
    DeferredCredential,
    RegistryAuthConfig,
)


def basic_registry(accept: str, seen: list[str | None]) -> Handler:
    """A registry with Basic auth accepting one ``user:password``."""

    def handler(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization")
        seen.append(auth)
        if auth != "Basic " + base64.b64encode(accept.encode()).decode():
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(len(GOOD))},
                              content=b"" if request.method == "HEAD" else GOOD)

    return handler


def store_with(answers: dict[str, object], *, auth: str = "helpers,ecr=evil.test") -> CredentialStore:
    def resolve(c: DeferredCredential) -> tuple[Credential | None, float]:
        answer = answers[c.kind]
        if isinstance(answer, Exception):
            raise answer
        return answer, 1e12  # type: ignore[return-value]

    data = json.dumps({"credsStore": "desk"}).encode()
    from scanner.registry.auth import parse_helper_config

    return CredentialStore(helpers=parse_helper_config(data, "c"), auth=RegistryAuthConfig.parse([auth]),
                           resolvers={"helper": resolve, "ecr": resolve})


def test_a_failing_helper_is_passed_over_for_the_next_source_which_is_recorded() -> None:
    seen: list[str | None] = []
    store = store_with({"helper": CredentialUnavailable("credential helper docker-credential-desk not found"),
                        "ecr": Credential("AWS", "ecr-pass")})
    with handler_client(basic_registry("AWS:ecr-pass", seen), credentials=store,
                        insecure_registries={"evil.test"}) as c:
        assert c.credential_source("evil.test", "team/app", ()) is None  # nothing asked yet
        c.get_manifest(REF, SHA256)
        assert c.credential_source("evil.test", "team/app", ()) == "Amazon ECR (AWS default credential chain)"


def test_a_source_that_failed_is_never_replaced_by_anonymous_access() -> None:
    seen: list[str | None] = []
    store = store_with({"helper": CredentialUnavailable("credential helper docker-credential-desk failed")},
                       auth="helpers")
    with handler_client(basic_registry("AWS:ecr-pass", seen), credentials=store,
                        insecure_registries={"evil.test"}) as c, \
            pytest.raises(RegistryError, match="docker-credential-desk failed"):
        c.get_manifest(REF, SHA256)
    assert seen == []  # not even an anonymous request


def test_when_every_source_is_refused_the_error_names_the_ones_that_failed() -> None:
    seen: list[str | None] = []
    store = store_with({"helper": CredentialUnavailable("credential helper docker-credential-desk timed out"),
                        "ecr": Credential("AWS", "stale")})
    with handler_client(basic_registry("AWS:ecr-pass", seen), credentials=store,
                        insecure_registries={"evil.test"}) as c, \
            pytest.raises(RegistryError) as info:
        c.get_manifest(REF, SHA256)
    assert "docker-credential-desk timed out" in str(info.value) and "stale" not in str(info.value)


def test_a_source_with_nothing_for_the_registry_leaves_anonymous_access() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST}, content=GOOD)

    store = store_with({"helper": None}, auth="helpers")
    with handler_client(handler, credentials=store, insecure_registries={"evil.test"}) as c:
        c.get_manifest(REF, SHA256)
        assert seen == [None] and c.credential_source("evil.test", "team/app", ()) == "anonymous"


@pytest.mark.parametrize("token", ["SECRETTOKEN\r\nX-Evil: 1", "SECRET TOKEN", "SECRETTOKEN\u00e9"])
def test_a_token_that_cannot_be_a_header_is_refused_and_never_quoted(token: str) -> None:
    # The HTTP library's refusal of the header quoted the whole "Bearer <token>" in the verdict.
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": token})
        if request.headers.get("authorization"):
            return httpx.Response(404)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://evil.test/token"'})

    with client_for(handler) as c, pytest.raises(RegistryError) as info:
        c.get_manifest(REF, "1")
    assert "SECRET" not in str(info.value) and "malformed token" in str(info.value), str(info.value)


def client_for(handler: Handler) -> RegistryClient:
    return handler_client(handler, insecure_registries={"evil.test"})


def test_a_cookie_one_tenants_request_earned_is_never_sent_on_anothers() -> None:
    # httpx kept a cookie jar per client — one client per scan, shared by every tenant: a registry (or
    # its load balancer) that opens a session cookie after tenant A authenticated then served tenant
    # B's anonymous requests with A's access, and B's verdict said "anonymous".
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        ok = httpx.Response(200, headers={"Content-Type": OCI_MANIFEST, "Set-Cookie": "session=alice; Path=/"},
                            content=GOOD)
        if request.headers.get("authorization") == "Basic " + base64.b64encode(b"alice:a").decode():
            return ok
        if "session=alice" in (request.headers.get("cookie") or ""):
            return ok
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    store = CredentialStore()
    secret = json.dumps({"auths": {"evil.test": {"auth": base64.b64encode(b"alice:a").decode()}}}).encode()
    store.add_pull_secret("team-a", "regcred", secret)
    with handler_client(handler, credentials=store, insecure_registries={"evil.test"}) as c:
        c.get_manifest(REF, SHA256, (("team-a", "regcred"),))
        with pytest.raises(RegistryError, match="authentication"):
            c.get_manifest(REF, SHA256, ())  # tenant B: no pull secret, no docker config
    assert seen and not any(seen), seen


# -- a registry that hides what an account may not see (404), as GHCR, ECR and Harbor do ----------

from scanner.errors import NotFound  # noqa: E402
from scanner.registry.client import BudgetExhausted  # noqa: E402


def _secret(host: str, user: str, password: str) -> bytes:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": token}}}).encode()


def _basic_of(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def hiding_registry(seen: list[tuple[str, str, str | None]], *, sees: dict[str, int]) -> Handler:
    """Basic auth; each account in ``sees`` (user -> status) is answered that status for everything
    (404: the repository is hidden from it; 200: the manifest); an unknown account is refused (401)."""

    def handler(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization")
        seen.append((request.method, request.url.host, auth))
        for user, status in sees.items():
            if auth == _basic_of(user, user + "-pw"):
                if status == 200:
                    return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST,
                                                        "Content-Length": str(len(GOOD))},
                                          content=b"" if request.method == "HEAD" else GOOD)
                if status == 599:
                    return httpx.Response(500, content=b"broken")
                return httpx.Response(status, content=b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    return handler


def two_secrets(*users: str, other_host: str = "elsewhere.test") -> tuple[CredentialStore, tuple[tuple[str, str], ...]]:
    store = CredentialStore()
    refs = []
    for user in users:
        store.add_pull_secret("team-a", f"{user}-secret", _secret("evil.test", user, user + "-pw"))
        refs.append(("team-a", f"{user}-secret"))
    # a third secret of the pod is for another host: never sent to evil.test
    store.add_pull_secret("team-a", "other-host", _secret(other_host, "carol", "carol-pw"))
    refs.append(("team-a", "other-host"))
    return store, tuple(refs)


def test_a_404_for_the_first_pull_secret_is_retried_with_the_next_which_is_named() -> None:
    seen: list[tuple[str, str, str | None]] = []
    store, refs = two_secrets("alice", "bob")
    with handler_client(hiding_registry(seen, sees={"alice": 404, "bob": 200}), credentials=store,
                        insecure_registries={"evil.test"}) as c:
        assert c.get_manifest(REF, SHA256, refs).raw == GOOD
        assert c.credential_source("evil.test", "team/app", refs) == "pull secret team-a/bob-secret"
        # the one that worked is tried first next time (the HEAD, then the GET it needs: both bob's)
        seen.clear()
        c.head_manifest(REF, SHA256, refs)
        assert seen and {a for _, _, a in seen} == {_basic_of("bob", "bob-pw")}
    assert all(host == "evil.test" for _, host, _ in seen)
    assert not any(a and "carol" in base64.b64decode(a.split()[1]).decode() for _, _, a in seen if a)


def test_a_later_credentials_refusal_never_lets_an_earlier_not_found_stand() -> None:
    """alice's account sees no such repository (404); bob's password is wrong (401), in either order:
    a hiding registry says 404 to an account that may not see a repository, so bob — who was refused —
    might have seen it. Whether it exists cannot be told: an error naming both (never a NotFound, which
    for a signature tag is "unsigned", and "unsigned" is what ``required: false`` allows)."""
    for first in (True, False):
        seen: list[tuple[str, str, str | None]] = []
        store, refs = two_secrets("alice", "bob") if first else two_secrets("bob", "alice")
        with handler_client(hiding_registry(seen, sees={"alice": 404}), credentials=store,
                            insecure_registries={"evil.test"}) as c:
            with pytest.raises(RegistryError) as info:
                c.get_manifest(REF, SHA256, refs)
            assert not isinstance(info.value, NotFound)
            assert "not found with pull secret team-a/alice-secret" in str(info.value)
            assert "refused to pull secret team-a/bob-secret (401)" in str(info.value)
            assert c.credential_source("evil.test", "team/app", refs) == "pull secret team-a/bob-secret"


@pytest.mark.parametrize("bob", [599, 403])
def test_a_later_credentials_failure_is_an_error_never_the_earlier_not_found(bob: int) -> None:
    """alice: not found; bob's request fails (a 5xx after retries) or is forbidden after the
    not-found: when bob's answer is no answer at all, the image is never "not found" (never
    "unsigned" for a signature tag)."""
    seen: list[tuple[str, str, str | None]] = []
    store, refs = two_secrets("alice", "bob")
    from scanner.registry.client import Limits

    with handler_client(hiding_registry(seen, sees={"alice": 404, "bob": bob}), credentials=store,
                        insecure_registries={"evil.test"}, limits=Limits(retries=0)) as c:
        with pytest.raises(RegistryError) as info:
            c.get_manifest(REF, SHA256, refs)
        assert not isinstance(info.value, NotFound) and str(min(bob, 500)) in str(info.value)
        assert c.credential_source("evil.test", "team/app", refs) == "pull secret team-a/bob-secret"


def test_a_not_found_for_every_credential_is_asked_once_each_and_counts_against_the_budget() -> None:
    seen: list[tuple[str, str, str | None]] = []
    store, refs = two_secrets("alice", "bob")
    with handler_client(hiding_registry(seen, sees={"alice": 404, "bob": 404}), credentials=store,
                        insecure_registries={"evil.test"}, manifest_budget=3) as c:
        with pytest.raises(NotFound):
            c.get_manifest(REF, SHA256, refs)
        assert c.manifest_gets("evil.test") == 2  # one GET per credential, each counted
        # the budget's last GET goes to alice; bob's cannot be sent: never "not found", an error
        with pytest.raises(BudgetExhausted):
            c.get_manifest(REF, "sha256:" + "e" * 64, refs)
        assert c.manifest_gets("evil.test") == 3
        assert len([s for s in seen if s[0] == "GET"]) <= 3 + 2  # plus at most one 401 challenge per account


def test_a_hidden_repositorys_404_never_teaches_that_the_registry_lacks_the_referrers_api() -> None:
    """A repository no credential may see answers 404 NAME_UNKNOWN to the referrers API too; that says
    nothing of the registry's API. Learnt registry-wide, it sent every other repository's referrers to
    the tag schema, where signatures pushed through the API are not: "unsigned"."""
    from scanner.registry.client import OCI_INDEX

    entry = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "b" * 64, "size": 10,
             "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v2/team/hidden/"):
            return httpx.Response(404, content=b'{"errors":[{"code":"NAME_UNKNOWN","message":"hidden"}]}')
        if "/referrers/" in request.url.path:
            return httpx.Response(200, headers={"Content-Type": OCI_INDEX}, content=index)
        return httpx.Response(404, content=b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')

    digest = "sha256:" + "a" * 64
    with handler_client(handler, insecure_registries={"evil.test"}) as c:
        hidden = ImageReference("evil.test", "team/hidden", None, digest)
        assert c.referrers(hidden, digest) == ([], "none")
        found, source = c.referrers(REF, digest)
        assert source == "api" and [d.digest for d in found] == [entry["digest"]]
        assert not c.uses_referrers_tag_schema(REF, digest)


def test_a_registry_without_the_referrers_api_is_still_learnt_from_its_404() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(404, content=b"404 page not found\n")  # distribution 2.8: no such route

    digest = "sha256:" + "a" * 64
    with handler_client(handler, insecure_registries={"evil.test"}) as c:
        assert c.referrers(REF, digest) == ([], "none")
        assert c.uses_referrers_tag_schema(REF, digest)
        seen.clear()
        c.referrers(REF, digest)
        assert not any("/referrers/" in p for p in seen)  # straight to the tag


def test_a_refused_source_leaves_the_referrers_api_probe_to_the_tag_schema_and_weighs_the_tag() -> None:
    """A registry without the referrers API answers its route 404 to every account: with a stale second
    secret (401) that 404 still means "no API" and the tag schema is asked — where bob finds the
    referrers (a notation signature). But a tag bob does not find while the stale one is refused is
    not "no referrers": it cannot be told."""
    from scanner.registry.client import OCI_INDEX

    entry = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "b" * 64, "size": 10,
             "artifactType": "application/vnd.cncf.notary.signature"}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
    digest, other = "sha256:" + "a" * 64, "sha256:" + "c" * 64
    store, refs = two_secrets("bob", "stale")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != _basic_of("bob", "bob-pw"):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if request.url.path.endswith("/manifests/" + digest.replace(":", "-")):
            return httpx.Response(200, headers={"Content-Type": OCI_INDEX, "Content-Length": str(len(index))},
                                  content=b"" if request.method == "HEAD" else index)
        return httpx.Response(404, content=b"404 page not found\n")  # distribution 2.8: no referrers route

    with handler_client(handler, credentials=store, insecure_registries={"evil.test"}) as c:
        found, source = c.referrers(REF, digest, None, refs)
        assert source == "tag" and [d.digest for d in found] == [entry["digest"]]
        with pytest.raises(RegistryError) as info:
            c.referrers(REF, other, None, refs)
        assert not isinstance(info.value, NotFound) and "refused to pull secret team-a/stale-secret" in str(info.value)
