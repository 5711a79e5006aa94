"""Pagination against a real kube-apiserver: 2,000 pods read with a small page size, and a continue
token expired by an etcd compaction in the middle of the list (410 Gone) — every pod still seen
exactly once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.harness.fixtures_kube import (
    KubeAPIServer,
    bulk_pods,
    container,
    ensure_namespace,
    pod_template,
)

pytestmark = [pytest.mark.integration, pytest.mark.tools]

NS = "sigaudit-bulk"
COUNT = 2000
IMAGE_ID = "docker.io/library/nginx@sha256:" + "5e" * 32


class CountingClient:
    """Wraps a real ApiClient's REST layer and records the query of each pod list it sends."""

    def __init__(self, api_client: Any) -> None:
        self.lists: list[dict[str, Any]] = []
        rest = api_client.rest_client
        real = rest.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            parts = urlsplit(url)
            if method == "GET" and parts.path.endswith("/pods"):
                query: dict[str, Any] = dict(parse_qsl(parts.query))
                query.update({str(k): v for k, v in (kwargs.get("query_params") or [])})
                self.lists.append(query)
            return real(method, url, *args, **kwargs)

        rest.request = request
        self.api_client = api_client


@pytest.fixture(scope="module")
def bulk(kube_apiserver: KubeAPIServer) -> Iterator[list[str]]:
    ensure_namespace(kube_apiserver, NS)
    t0 = time.monotonic()
    tpl = pod_template({"app": "bulk"}, [container("app", "nginx:1.25")])
    names = bulk_pods(kube_apiserver, NS, COUNT, tpl, prefix="bulk", image_id=IMAGE_ID, threads=6)
    print(f"\ncreated {COUNT} pods (with status) in {time.monotonic() - t0:.1f}s")
    yield names


def _client(server: KubeAPIServer) -> CountingClient:
    from scanner.inventory.kube import load_api_client

    return CountingClient(load_api_client(str(server.kubeconfig)))


def test_small_pages_across_2000_pods(kube_apiserver: KubeAPIServer, bulk: list[str]) -> None:
    from scanner.inventory.kube import iter_pods

    counting = _client(kube_apiserver)
    seen = Counter(
        p["metadata"]["name"] for p in iter_pods(api_client=counting.api_client, namespaces=[NS], page_size=50)
    )
    assert set(seen) == set(bulk) and max(seen.values()) == 1
    assert len(counting.lists) == COUNT // 50
    assert all(str(q.get("limit")) == "50" for q in counting.lists)
    assert sum(1 for q in counting.lists if q.get("continue")) == COUNT // 50 - 1


def test_pod_stream_is_lazy_page_by_page(kube_apiserver: KubeAPIServer, bulk: list[str]) -> None:
    from scanner.inventory.kube import iter_pods

    counting = _client(kube_apiserver)
    it = iter_pods(api_client=counting.api_client, namespaces=[NS], page_size=100)
    for _ in range(100):
        next(it)
    assert len(counting.lists) == 1  # the second page is asked for only when the first is consumed
    next(it)
    assert len(counting.lists) == 2
    it.close()  # type: ignore[attr-defined]  # a generator


def test_expired_continue_token_restarts_the_list_and_sees_every_pod_once(
    kube_apiserver: KubeAPIServer, bulk: list[str]
) -> None:
    from scanner.inventory.kube import iter_pods

    counting = _client(kube_apiserver)
    it = iter_pods(api_client=counting.api_client, namespaces=[NS], page_size=200)
    seen: Counter[str] = Counter()
    for _ in range(400):  # two pages read; the third is asked for with a continue token
        seen[next(it)["metadata"]["name"]] += 1
    # Something changes, then etcd is compacted past the list's snapshot (as the API servers do every
    # 5 minutes): the continue token in hand is now too old.
    kube_apiserver.expire_continue_tokens(f"/api/v1/namespaces/{NS}/pods")
    for pod in it:
        seen[pod["metadata"]["name"]] += 1
    assert set(seen) == set(bulk)
    assert max(seen.values()) == 1, [n for n, c in seen.items() if c > 1][:5]
    # The list did restart: a third request carried the expired token, then one started afresh.
    starts = [i for i, q in enumerate(counting.lists) if not q.get("continue")]
    assert len(starts) == 2 and starts[1] == 3, counting.lists[:6]
