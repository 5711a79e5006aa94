"""The registry fixtures start real registries that the oci helpers can push to and pull from."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.harness import oci
from tests.harness.oci import RegistryAuth

pytestmark = pytest.mark.integration


def test_push_pull_round_trip(registry):
    before = registry.request_count()
    pushed = oci.push_image(registry.url, "harness/roundtrip", "v1", layers=[b"layer-bytes"])
    raw, media_type = oci.get_manifest(registry.url, "harness/roundtrip", "v1")
    assert raw == pushed.manifest
    assert media_type == oci.OCI_MANIFEST
    assert oci.sha256_digest(raw) == pushed.digest
    manifest = json.loads(raw)
    assert oci.get_blob(registry.url, "harness/roundtrip", manifest["layers"][0]["digest"]) == b"layer-bytes"
    # by digest too
    assert oci.get_manifest(registry.url, "harness/roundtrip", pushed.digest)[0] == raw
    # the access log saw our requests: 2 blobs x (POST + PUT) + manifest PUT + 2 manifest GETs + blob GET
    assert registry.request_count() - before >= 8
    assert registry.request_count("PUT", "/v2/harness/roundtrip/manifests/") >= 1


def test_index_and_delete(registry):
    index, children = oci.push_index(registry.url, "harness/multi", "multi")
    raw, media_type = oci.get_manifest(registry.url, "harness/multi", "multi")
    assert media_type == oci.OCI_INDEX
    listed = [m["digest"] for m in json.loads(raw)["manifests"]]
    assert listed == [c.digest for c in children.values()]
    assert oci.make_index(registry.url, "harness/multi", None) != index.digest  # random content
    # storage.delete.enabled is on
    r = httpx.delete(f"{registry.url}/v2/harness/multi/manifests/{index.digest}")
    assert r.status_code == 202
    assert httpx.get(f"{registry.url}/v2/harness/multi/manifests/{index.digest}").status_code == 404


def test_htpasswd_auth(registry_factory):
    reg = registry_factory(auth="htpasswd", users={"bob": "s3cret"})
    assert httpx.get(f"{reg.url}/v2/").status_code == 401
    assert httpx.get(f"{reg.url}/v2/", auth=("bob", "wrong")).status_code == 401
    assert httpx.get(f"{reg.url}/v2/", auth=("bob", "s3cret")).status_code == 200
    digest = oci.make_image(reg.url, "private/app", "1", auth=reg.auth)
    assert oci.get_manifest(reg.url, "private/app", digest, auth=("bob", "s3cret"))[1] == oci.OCI_MANIFEST
    with pytest.raises(RuntimeError, match="401"):
        oci.get_manifest(reg.url, "private/app", digest)


def test_token_auth_challenge_by_hand(registry_factory):
    """Walk the Bearer challenge with a plain httpx client, exactly as a client library must."""
    reg = registry_factory(auth="token", users={"alice": "wonderland"})
    with httpx.Client(timeout=10.0) as c:
        r = c.get(f"{reg.url}/v2/hand/app/tags/list")
        assert r.status_code == 401
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        params = dict(oci._CHALLENGE_PARAM.findall(challenge))
        assert params["realm"] == reg.token_server.realm
        assert params["service"] == reg.token_server.service
        assert params["scope"] == "repository:hand/app:pull"

        # wrong password: the token server refuses
        bad = c.get(
            params["realm"], params={"service": params["service"], "scope": params["scope"]}, auth=("alice", "nope")
        )
        assert bad.status_code == 401

        scope = "repository:hand/app:pull,push"
        tok = c.get(
            params["realm"], params={"service": params["service"], "scope": scope}, auth=("alice", "wonderland")
        )
        assert tok.status_code == 200
        bearer = {"Authorization": f"Bearer {tok.json()['token']}"}
        assert c.get(f"{reg.url}/v2/", headers=bearer).status_code == 200

        data = b"pushed-with-a-token"
        digest = oci.sha256_digest(data)
        start = c.post(f"{reg.url}/v2/hand/app/blobs/uploads/", headers=bearer)
        assert start.status_code == 202, start.text
        put = c.put(
            httpx.URL(start.headers["location"]).copy_merge_params({"digest": digest}), content=data, headers=bearer
        )
        assert put.status_code == 201, put.text
        got = c.get(f"{reg.url}/v2/hand/app/blobs/{digest}", headers=bearer)
        assert got.status_code == 200 and got.content == data

        # a token for another repository does not open this one
        other = c.get(
            params["realm"],
            params={"service": params["service"], "scope": "repository:elsewhere:pull"},
            auth=("alice", "wonderland"),
        ).json()["token"]
        denied = c.get(f"{reg.url}/v2/hand/app/blobs/{digest}", headers={"Authorization": f"Bearer {other}"})
        assert denied.status_code == 401


def test_token_auth_with_registry_auth(registry_factory):
    reg = registry_factory(
        auth="token",
        token_grants={"alice": {"pull", "push"}, "reader": {"pull"}},
        users={"alice": "wonderland", "reader": "r"},
    )
    digest = oci.make_image(reg.url, "team/app", "v1", auth=reg.auth)
    assert isinstance(reg.auth, RegistryAuth) and reg.auth.token_requests >= 1
    reader = RegistryAuth("reader", "r")
    assert oci.get_manifest(reg.url, "team/app", "v1", auth=reader)[0]
    with pytest.raises(RuntimeError):
        oci.make_image(reg.url, "team/app", "v2", auth=reader)  # pull-only grant
    assert oci.sha256_digest(oci.get_manifest(reg.url, "team/app", digest, auth=reader)[0]) == digest
    accounts = {r.account for r in reg.token_server.requests}
    assert accounts == {"alice", "reader"}


def test_referrers_registry_serves_referrers_api(referrers_registry):
    reg = referrers_registry
    subject = oci.push_image(reg.url, "harness/signed", "v1")
    empty = oci.list_referrers(reg.url, "harness/signed", subject.digest)
    assert empty.status_code == 200
    assert json.loads(empty.content)["manifests"] == []

    art = oci.make_artifact(
        reg.url, "harness/signed", subject, "application/vnd.example.sig", b"sig", annotations={"org.example": "yes"}
    )
    other = oci.make_artifact(reg.url, "harness/signed", subject, "application/vnd.example.sbom", b"sbom")
    r = oci.list_referrers(reg.url, "harness/signed", subject.digest)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(oci.OCI_INDEX)
    index = r.json()
    assert index["mediaType"] == oci.OCI_INDEX
    found = {m["digest"]: m for m in index["manifests"]}
    assert set(found) == {art.digest, other.digest}
    assert found[art.digest]["artifactType"] == "application/vnd.example.sig"
    assert found[art.digest]["annotations"] == {"org.example": "yes"}

    filtered_r = oci.list_referrers(
        reg.url, "harness/signed", subject.digest, artifact_type="application/vnd.example.sbom"
    )
    assert filtered_r.headers["oci-filters-applied"] == "artifactType"
    assert [m["digest"] for m in filtered_r.json()["manifests"]] == [other.digest]
    assert reg.request_count("GET", "/v2/harness/signed/referrers/") == 3

    # a manifest PUT with a subject is acknowledged with OCI-Subject (distribution-spec v1.1)
    raw = oci.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "artifactType": "application/vnd.example.note",
            "config": oci.descriptor(oci.OCI_EMPTY, oci.EMPTY_JSON),
            "layers": [oci.descriptor(oci.OCI_EMPTY, oci.EMPTY_JSON)],
            "subject": subject.descriptor(),
        }
    )
    put = httpx.put(
        f"{reg.url}/v2/harness/signed/manifests/{oci.sha256_digest(raw)}",
        content=raw,
        headers={"Content-Type": oci.OCI_MANIFEST},
    )
    assert put.status_code == 201 and put.headers["oci-subject"] == subject.digest
    plain = oci.push_image(reg.url, "harness/signed", "plain")
    assert "oci-subject" not in httpx.head(f"{reg.url}/v2/harness/signed/manifests/{plain.digest}").headers
    assert httpx.delete(f"{reg.url}/v2/harness/signed/manifests/{oci.sha256_digest(raw)}").status_code == 202

    # deleting a referrer removes it from the list
    assert httpx.delete(f"{reg.url}/v2/harness/signed/manifests/{other.digest}").status_code == 202
    left = oci.list_referrers(reg.url, "harness/signed", subject.digest).json()["manifests"]
    assert [m["digest"] for m in left] == [art.digest]


def test_distribution_has_no_referrers_api(registry):
    """Sanity check on the peers: distribution 2.8 answers 404, so clients must fall back to tags."""
    subject = oci.push_image(registry.url, "harness/norefs", "v1")
    assert oci.list_referrers(registry.url, "harness/norefs", subject.digest).status_code == 404


def test_tls_registry(registry_factory):
    reg = registry_factory(tls=True)
    assert reg.url.startswith("https://") and reg.ca_path is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{reg.url}/v2/")  # not trusted by default
    with reg.client() as c:
        digest = oci.make_image(reg.url, "tls/app", "v1", client=c)
        assert oci.get_manifest(reg.url, "tls/app", digest, client=c)[0]
