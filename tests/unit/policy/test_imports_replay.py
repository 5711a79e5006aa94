"""What --policy-from KIND:cluster read is kept in the trust snapshot and replayed from it (evidence
packs): the listings, and of a Secret only the key taken from it; a replay never asks the cluster."""

from __future__ import annotations

import base64
from typing import Any

from scanner.policy import imports
from scanner.verify import sources


class _Cluster:
    """A ClusterReader (scanner/policy/cluster.py) answering from memory, counting what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def policy_documents(self, kind: str) -> list[dict[str, Any]]:
        self.asked.append(f"documents {kind}")
        return [{"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "p"}}]

    def secret_data(self, namespace: str, name: str) -> dict[str, Any]:
        self.asked.append(f"secret {namespace}/{name}")
        return {"cosign.pub": base64.b64encode(b"PUBKEY").decode(), "token": base64.b64encode(b"s3cr3t").decode()}

    def validating_webhook_configurations(self) -> list[Any]:
        self.asked.append("webhooks")
        return [{"metadata": {"name": "kyverno-resource-validating-webhook-cfg"}}]


def test_cluster_listings_replay_without_the_cluster() -> None:
    cluster = _Cluster()
    recording = sources.Recording()
    with sources.reading_from(recording):
        live = imports._recorded("kyverno policy documents", lambda: cluster.policy_documents("kyverno"))
        hooks = imports._cluster_webhooks(cluster, [])
    assert [d["metadata"]["name"] for d in live] == ["p"] and cluster.asked == ["documents kyverno", "webhooks"]
    snap = recording.snapshot
    with sources.reading_from(sources.Replay(snap.entries, snap.blobs)):
        again = imports._recorded("kyverno policy documents", lambda: cluster.policy_documents("kyverno"))
        assert imports._cluster_webhooks(cluster, []) == hooks
    assert again == live and cluster.asked == ["documents kyverno", "webhooks"]  # from the snapshot alone


def test_of_a_secret_only_its_key_is_kept() -> None:
    cluster = _Cluster()
    ctx = imports.ImportContext(loader=None, base_dir=None, source="kyverno:cluster")  # type: ignore[arg-type]
    ctx.cluster = cluster  # type: ignore[assignment]
    recording = sources.Recording()
    with sources.reading_from(recording):
        assert imports._secret_value(ctx, "ns", "s", "r") == "PUBKEY"
    kept = b"".join(recording.snapshot.blobs.values())
    assert b"s3cr3t" not in kept and base64.b64encode(b"s3cr3t") not in kept
    snap = recording.snapshot
    with sources.reading_from(sources.Replay(snap.entries, snap.blobs)):
        assert imports._secret_value(ctx, "ns", "s", "r") == "PUBKEY"
    assert cluster.asked == ["secret ns/s"]  # the replay asked nothing


class _SigningSecret(_Cluster):
    """The Secret `cosign generate-key-pair k8s://ns/s` writes, without its public half: the signing pair."""

    def secret_data(self, namespace: str, name: str) -> dict[str, Any]:
        self.asked.append(f"secret {namespace}/{name}")
        return {"cosign.key": base64.b64encode(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----").decode(),
                "cosign.password": base64.b64encode(b"hunter2").decode()}


def test_a_secret_without_its_key_entry_gives_no_key_and_none_of_its_other_entries_is_kept() -> None:
    """Kyverno (cosign's k8s://) reads cosign.pub alone; policy-controller the only entry of a Secret. A
    Secret pointed at by mistake that holds the signing pair gives no key (the rule is refused), and
    neither the private key nor its password reaches the trust snapshot (store, evidence pack)."""
    for entry in ({}, {"entry": None}):  # Kyverno's (the default), policy-controller's
        cluster = _SigningSecret()
        ctx = imports.ImportContext(loader=None, base_dir=None, source="kyverno:cluster")  # type: ignore[arg-type]
        ctx.cluster = cluster  # type: ignore[assignment]
        recording = sources.Recording()
        with sources.reading_from(recording):
            assert imports._secret_value(ctx, "ns", "s", "r", **entry) is None  # type: ignore[arg-type]
        kept = b"".join(recording.snapshot.blobs.values())
        for secret in (b"hunter2", b"PRIVATE KEY"):
            assert secret not in kept and base64.b64encode(secret) not in kept, (entry, kept)
    # policy-controller: a Secret of several entries is refused, even with a public key among them
    ctx = imports.ImportContext(loader=None, base_dir=None, source="cip:cluster")  # type: ignore[arg-type]
    ctx.cluster = _Cluster()  # type: ignore[assignment]
    with sources.reading_from(sources.Recording()):
        assert imports._secret_value(ctx, "ns", "s", "r", entry=None) is None
        assert imports._secret_value(ctx, "ns", "s", "r") == "PUBKEY"
