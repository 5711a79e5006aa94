"""Content addressing in the registry client: whatever digest a manifest or blob is asked by, the bytes
that come back are checked against it before anything parses them; an algorithm that cannot be
checked is refused before any request. The registry here is an httpx MockTransport playing a hostile
one: no real registry serves content under a digest it does not hash to."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from scanner.errors import ParseError
from scanner.models import Descriptor, ImageReference
from scanner.registry.client import OCI_MANIFEST, RegistryClient

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

    return RegistryClient(insecure_registries={"evil.test"}, transport=httpx.MockTransport(handler))


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
