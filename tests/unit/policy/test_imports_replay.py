"""What --policy-from KIND:cluster read is kept in the trust snapshot and replayed from it (evidence
packs): a listing, a CRD not installed (404), and of a Secret only the key taken from it."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from scanner.policy import imports
from scanner.verify import sources


class _Resp:
    def __init__(self, doc: Any) -> None:
        self.data = json.dumps(doc).encode()


class _FakeCustomObjects:
    calls = 0

    def __init__(self, api_client: Any = None) -> None:
        pass

    def list_cluster_custom_object(self, group: str, version: str, plural: str, **_: Any) -> _Resp:
        type(self).calls += 1
        if plural == "clusterpolicies":
            return _Resp({"items": [{"metadata": {"name": "p"}}]})
        raise ApiException(status=404, reason="Not Found")

    def list_custom_object_for_all_namespaces(self, group: str, version: str, plural: str, **_: Any) -> _Resp:
        type(self).calls += 1
        raise ApiException(status=404, reason="Not Found")


def test_cluster_listings_and_absent_crds_replay_without_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    import kubernetes.client

    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", _FakeCustomObjects)
    recording = sources.Recording()
    with sources.reading_from(recording):
        live = imports._cluster_docs(object(), "kyverno")
    assert [d["metadata"]["name"] for d in live] == ["p"]
    assert _FakeCustomObjects.calls == 2
    snap = recording.snapshot
    replay = sources.Replay(snap.entries, snap.blobs)
    with sources.reading_from(replay):
        again = imports._cluster_docs(object(), "kyverno")  # the namespaced Policy CRD was absent: replayed too
    assert again == live and _FakeCustomObjects.calls == 2  # no request: from the snapshot alone


def test_of_a_secret_only_its_key_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import kubernetes.client

    class _Core:
        def __init__(self, api_client: Any = None) -> None:
            pass

        def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> _Resp:
            return _Resp({"data": {"cosign.pub": base64.b64encode(b"PUBKEY").decode(),
                                   "token": base64.b64encode(b"s3cr3t").decode()}})

    monkeypatch.setattr(kubernetes.client, "CoreV1Api", _Core)
    ctx = imports.ImportContext(loader=None, base_dir=None, source="kyverno:cluster")  # type: ignore[arg-type]
    ctx.api_client = object()
    recording = sources.Recording()
    with sources.reading_from(recording):
        assert imports._secret_value(ctx, "ns", "s", "r") == "PUBKEY"
    assert list(recording.snapshot.blobs.values()) == [b"PUBKEY"]
    snap = recording.snapshot
    ctx.api_client = object()
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", None)  # any request would fail
    with sources.reading_from(sources.Replay(snap.entries, snap.blobs)):
        assert imports._secret_value(ctx, "ns", "s", "r") == "PUBKEY"
