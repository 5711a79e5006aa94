"""Which hosts a cloud's workload identity is sent to: the cloud's own registry hosts, matched on the
whole host; a host that merely contains a cloud's name (a lookalike on another domain) gets nothing."""

from __future__ import annotations

import re

import pytest

from scanner.registry.cloud import provider_of_host


@pytest.mark.parametrize(("host", "provider"), [
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com", "ecr"),
    ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "ecr"),
    ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "ecr"),
    ("123456789012.dkr-ecr.eu-west-1.on.aws", "ecr"),
    ("public.ecr.aws", "ecr"),
    ("gcr.io", "gcr"), ("eu.gcr.io", "gcr"), ("europe-west1-docker.pkg.dev", "gcr"),
    ("myregistry.azurecr.io", "acr"), ("myregistry.azurecr.cn", "acr"),
])
def test_a_clouds_registry_hosts(host: str, provider: str) -> None:
    assert provider_of_host(host) == provider


@pytest.mark.parametrize("host", [
    "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example",
    "evil.example/123456789012.dkr.ecr.us-east-1.amazonaws.com",
    "123456789012.dkr.ecr.us-east-1.amazonaws.com:5000",
    "x123456789012.dkr.ecr.us-east-1.amazonaws.com",
    "public.ecr.aws.evil.example", "evilpublic.ecr.aws",
    "gcr.io.evil.example", "evilgcr.io", "a.b.gcr.io", "docker.pkg.dev", "europe-docker.pkg.dev.evil.example",
    "myregistry.azurecr.io.evil.example", "my.registry.azurecr.io", "docker.io", "127.0.0.1:5000",
])
def test_a_lookalike_host_is_no_clouds(host: str) -> None:
    assert provider_of_host(host) is None


def test_cloud_sdk_loggers_never_debug_even_with_vv() -> None:
    """botocore logs the GetAuthorizationToken reply and every request's headers (X-Amz-Security-Token)
    at DEBUG; google-auth and azure-identity log token traffic too. ``-vv`` must not turn them on, for the
    registry credentials and for KMS keys alike."""
    import logging

    from scanner.cli import _setup_logging

    names = ("botocore", "botocore.endpoint", "boto3", "google.auth", "azure.identity", "msal")
    root, before = logging.getLogger(), logging.getLogger().level
    try:
        for name in names:
            logging.getLogger(name.split(".")[0]).setLevel(logging.NOTSET)
        root.setLevel(logging.DEBUG)  # what -vv gives the root logger (pytest's handlers stop basicConfig here)
        _setup_logging(2)
        assert logging.getLogger("scanner").isEnabledFor(logging.DEBUG)
        for name in names:
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    finally:
        root.setLevel(before)


@pytest.mark.parametrize(("kind", "module", "extra"), [
    ("ecr", "boto3", "sigaudit[aws]"), ("gcr", "google.auth", "sigaudit[gcp]"),
    ("acr", "azure.identity", "sigaudit[azure]"),
])
def test_a_provider_without_its_sdk_is_unavailable_naming_the_extra(
    kind: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from scanner.registry.auth import CredentialUnavailable, DeferredCredential
    from scanner.registry.cloud import RESOLVERS

    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(CredentialUnavailable, match=re.escape(extra)):
        RESOLVERS[kind](DeferredCredential(kind, kind, "registry.example"))


def test_a_registry_trickling_its_token_exchange_answer_cannot_hold_the_credential_past_its_timeout(
    tmp_path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ACR's /oauth2/exchange goes to the registry host (any host with ``acr=HOST``): a header byte every
    # 0.3 s restarted httpx's per-read timeout for ever, under the credential source's lock.
    import socket
    import ssl
    import threading
    import time

    from scanner.registry import cloud
    from scanner.registry.auth import CredentialUnavailable
    from tests.harness.fixtures_registry import write_tls_material

    ca, cert, key = write_tls_material(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.setattr(cloud, "TIMEOUT", 1.0)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    stop = threading.Event()
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def trickle() -> None:
        raw, _ = srv.accept()
        try:
            with server_ctx.wrap_socket(raw, server_side=True) as conn:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                    if stop.wait(0.3):
                        return
                    conn.send(bytes([byte]))
        except OSError:
            return

    threading.Thread(target=trickle, daemon=True).start()
    outcome: list[BaseException | str] = []

    def exchange() -> None:
        try:
            outcome.append(cloud.exchange_acr_token(f"127.0.0.1:{port}", "entra-token"))
        except BaseException as exc:  # judged below
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=exchange, daemon=True)
    worker.start()
    worker.join(8)
    stop.set()
    srv.close()
    assert outcome, "the token exchange was still waiting for the trickled headers"
    assert isinstance(outcome[0], CredentialUnavailable), outcome
    assert "entra-token" not in str(outcome[0])
    assert time.monotonic() - started < 5


def test_a_token_exchange_answer_that_inflates_to_hundreds_of_mib_is_refused_uninflated(
    tmp_path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A registry (any host with ``acr=HOST``) answering /oauth2/exchange with a few hundred bytes of
    # "gzip, gzip": httpx's iter_bytes inflated each network chunk whole, so the size cap saw 256 MiB.
    import ssl

    from scanner.registry import cloud
    from scanner.registry.auth import CredentialUnavailable
    from tests.harness.bomb_server import peak_allocation, serving_gzip_bomb
    from tests.harness.fixtures_registry import write_tls_material

    ca, cert, key = write_tls_material(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    with serving_gzip_bomb(256, tls=ctx, content_type="application/json") as server, peak_allocation() as peak:
        with pytest.raises(CredentialUnavailable, match=r"encoded body|exceeds"):
            cloud.exchange_acr_token(f"127.0.0.1:{server.port}", "entra-token")
    assert peak.bytes < 32 * 2**20, f"{peak.bytes / 2**20:.0f} MiB allocated for a {server.size}-byte answer"
