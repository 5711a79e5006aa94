"""Pushgateway and Prometheus fixtures run the real Debian daemons."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_pushgateway_accepts_a_push(pushgateway):
    body = "# TYPE sigaudit_harness_value gauge\nsigaudit_harness_value 42\n"
    r = httpx.put(f"{pushgateway.url}/metrics/job/harness/instance/one", content=body)
    assert r.status_code == 200, r.text
    text = pushgateway.metrics_text()
    assert 'sigaudit_harness_value{instance="one",job="harness"} 42' in text


def test_prometheus_scrapes_the_pushgateway(pushgateway, prometheus_factory):
    body = "# TYPE sigaudit_harness_scraped gauge\nsigaudit_harness_scraped 7\n"
    assert httpx.put(f"{pushgateway.url}/metrics/job/harness", content=body).status_code == 200
    prom = prometheus_factory([pushgateway.host])
    result = prom.wait_for("sigaudit_harness_scraped", timeout=30)
    assert result[0]["value"][1] == "7"
    assert result[0]["metric"]["job"] == "harness"  # honor_labels keeps the pushed job label
    assert prom.query('up{job="sigaudit"}')[0]["value"][1] == "1"
    with pytest.raises(RuntimeError):
        prom.query("this is not promql")


def test_a_pushgateway_keeps_nothing_between_runs(tmp_path):
    """Debian's pushgateway persists to /var/lib/prometheus/pushgateway.data by default: every gateway the
    tests started loaded what earlier ones had pushed, so a group pushed by one test (cluster "pushed", 12
    hours earlier) made the staleness alert of another fire. The harness's gateways keep metrics in memory."""
    import secrets

    from tests.harness.fixtures_prometheus import start_pushgateway

    probe = f"harness-{secrets.token_hex(4)}"
    first = start_pushgateway(tmp_path / "first")
    try:
        body = "# TYPE sigaudit_harness_kept gauge\nsigaudit_harness_kept 1\n"
        assert httpx.put(f"{first.url}/metrics/job/harness/probe/{probe}", content=body).status_code == 200
    finally:
        first.stop()  # a gateway with a persistence file writes it on shutdown
    second = start_pushgateway(tmp_path / "second")
    try:
        assert probe not in second.metrics_text()
    finally:
        second.stop()
