"""The per-registry manifest GET budget (issue 9, registry etiquette): GETs counted per registry,
HEADs free, and once spent every further manifest GET fails with a typed error naming the budget."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from scanner.errors import RegistryError
from scanner.models import ImageReference
from scanner.registry.client import BudgetExhausted, RegistryClient

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def _client(budget: int | None, seen: list[tuple[str, str, str]]) -> RegistryClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.method, request.url.path))
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json", "Docker-Content-Digest": DIGEST,
                   "Content-Length": str(len(MANIFEST))}
        return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else MANIFEST)

    return RegistryClient(insecure_registries={"a.test", "b.test"}, transport=httpx.MockTransport(handler),
                          manifest_budget=budget)


def test_budget_counts_manifest_gets_per_registry_and_heads_are_free() -> None:
    seen: list[tuple[str, str, str]] = []
    a, b = ImageReference("a.test", "team/app", "1", None), ImageReference("b.test", "team/app", "1", None)
    with _client(2, seen) as client:
        for _ in range(5):
            assert client.head_manifest(a, DIGEST).digest == DIGEST  # HEAD: not counted
        client.get_manifest(a, DIGEST)
        client.get_manifest(a, DIGEST)
        with pytest.raises(BudgetExhausted, match="registry request budget exhausted") as info:
            client.get_manifest(a, DIGEST)
        assert isinstance(info.value, RegistryError) and info.value.registry == "a.test"
        assert client.head_manifest(a, DIGEST).digest == DIGEST  # HEADs still allowed after exhaustion
        client.get_manifest(b, DIGEST)  # another registry has its own budget
        assert client.manifest_gets("a.test") == 2 and client.manifest_gets("b.test") == 1
        assert client.stats.as_dict()["registry_errors"] == {"a.test|budget-exhausted": 1}
    gets_to_a = [s for s in seen if s[0] == "a.test" and s[1] == "GET"]
    assert len(gets_to_a) == 2  # the refused GET never reached the registry


def test_no_budget_means_unlimited_and_zero_means_none() -> None:
    seen: list[tuple[str, str, str]] = []
    ref = ImageReference("a.test", "team/app", "1", None)
    with _client(None, seen) as client:
        for _ in range(20):
            client.get_manifest(ref, DIGEST)
        assert client.manifest_gets("a.test") == 20
    with _client(0, seen) as client, pytest.raises(BudgetExhausted):
        client.get_manifest(ref, DIGEST)
