"""The scan use case (``scanner.scan``) records every scan it begins: finished at its end, failed
when anything escapes (a crash, a stop request), never left running; without a store nothing is
recorded. A real SQLite store, an empty pod list: no registry is contacted."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from scanner import store as store_mod
from scanner.models import ScanState
from scanner.scan import ScanOptions, run_once


@pytest.fixture
def setup(tmp_path: Path) -> tuple[ScanOptions, str]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "k.pub").write_bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n"
        "    - name: r\n      images: ['*']\n      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
    (tmp_path / "pods.json").write_text(json.dumps({"kind": "List", "items": []}))
    url = f"sqlite:///{tmp_path / 's.db'}"
    store_mod.upgrade(url)
    return ScanOptions(cluster="c", policy_path=str(tmp_path / "policy.yaml"),
                       pods_file=str(tmp_path / "pods.json")), url


def test_a_finished_scan_is_recorded_with_its_id(setup: tuple[ScanOptions, str]) -> None:
    options, url = setup
    with store_mod.open_store(url) as store:
        result = run_once(options, store)
        assert result.scan_id is not None and result.state is ScanState.COMPLETE
        assert store.scan_summary(result.scan_id).state is ScanState.COMPLETE


def test_a_crash_inside_the_scan_marks_it_failed_and_propagates(setup: tuple[ScanOptions, str]) -> None:
    options, url = setup

    def boom(_phase: str, _done: int, _total: int) -> None:
        raise RuntimeError("progress display broke")

    with store_mod.open_store(url) as store:
        with pytest.raises(RuntimeError):
            run_once(options, store, progress=boom)
        (scan,) = store.list_scans("c")
        assert scan.state is ScanState.FAILED
        assert scan.errors == ("scan failed: RuntimeError: progress display broke",)


def test_a_stop_request_fails_the_scan_never_completes_it(setup: tuple[ScanOptions, str]) -> None:
    options, url = setup
    stop = threading.Event()
    stop.set()
    with store_mod.open_store(url) as store:
        with pytest.raises(InterruptedError):
            run_once(options, store, stop=stop)
        (scan,) = store.list_scans("c")
        assert scan.state is ScanState.FAILED and "interrupted" in scan.errors[0]


def test_without_a_store_nothing_is_recorded(setup: tuple[ScanOptions, str]) -> None:
    options, _url = setup
    result = run_once(options, None)
    assert result.scan_id is None and result.state is ScanState.COMPLETE


@pytest.mark.parametrize("server", ["https://127.0.0.1:1", None])
def test_policy_reports_that_cannot_be_written_leave_the_scan_complete(
    setup: tuple[ScanOptions, str], tmp_path: Path, caplog: pytest.LogCaptureFixture, server: str | None
) -> None:
    from dataclasses import replace

    import yaml

    options, url = setup
    kubeconfig = tmp_path / "kubeconfig"
    if server is None:
        kubeconfig.write_text("not: [a kubeconfig")  # refused when the reports are written
    else:  # nothing listens: the API calls fail
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    options = replace(options, cluster_reports="openreports", kubeconfig=str(kubeconfig))
    with store_mod.open_store(url) as store, caplog.at_level("WARNING"):
        result = run_once(options, store)
        assert result.state is ScanState.COMPLETE
        assert store.scan_summary(result.scan_id).state is ScanState.COMPLETE  # type: ignore[arg-type]
    assert any("policy reports" in r.getMessage() for r in caplog.records), caplog.text
