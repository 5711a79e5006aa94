"""The RFC 3161 request of ``evidence --tsa-url`` (scanner/sources/tsa.py) against real sockets on
127.0.0.1: OpenSSL's TSA answering, and TSAs that misbehave — each a TsaError, never a token."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from scanner.sources.tsa import TsaError, request_timestamp
from scanner.verify.timestamps import verify_timestamp_token
from tests.harness.tsa_server import make_tsa_pki, openssl_reply


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[Callable[[Callable[[bytes], bytes]], str]]:
    """A TSA whose answer to each query is ``answer(query)``; returns its URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[bytes], bytes]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/tsr"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_openssl_tsa_token_verifies_over_the_message(tsa, tmp_path: Path) -> None:
    root = x509.load_pem_x509_certificate(make_tsa_pki(tmp_path))
    token = request_timestamp(tsa(lambda q: openssl_reply(tmp_path, q)), b"signature bytes")
    assert verify_timestamp_token(token, b"signature bytes", [root]).tsa_chain[-1] == root


def test_a_replayed_answer_another_imprint_a_refusal_and_garbage_are_refused(tsa, tmp_path: Path) -> None:
    make_tsa_pki(tmp_path)
    first: list[bytes] = []

    def replay(q: bytes) -> bytes:  # the answer to the first query, every time (another nonce)
        if not first:
            first.append(openssl_reply(tmp_path, q))
        return first[0]

    url = tsa(replay)
    request_timestamp(url, b"m")
    with pytest.raises(TsaError, match="nonce"):
        request_timestamp(url, b"m")
    other: list[bytes] = []

    def over_other(q: bytes) -> bytes:  # a fresh answer, but for another request's imprint
        from rfc3161_client import HashAlgorithm, TimestampRequestBuilder
        other.append(q)
        return openssl_reply(tmp_path, TimestampRequestBuilder().data(b"other").hash_algorithm(
            HashAlgorithm.SHA256).build().as_bytes())

    with pytest.raises(TsaError, match="other bytes"):
        request_timestamp(tsa(over_other), b"m")
    with pytest.raises(TsaError, match="refused"):
        request_timestamp(tsa(lambda q: bytes.fromhex("30053003020102")), b"m")  # PKIStatus rejection
    for junk in (b"", b"\x30\x80", b"<html>not a TSA</html>", b"\x30\x03\x02\x01\x00"):
        with pytest.raises(TsaError):
            request_timestamp(tsa(lambda q, j=junk: j), b"m")


def test_an_oversized_or_trickling_answer_is_bounded(tsa) -> None:
    with pytest.raises(TsaError, match="larger than"):
        request_timestamp(tsa(lambda q: b"\x30" * (1 << 20)), b"m")

    class Slow(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100):
                try:
                    self.wfile.write(b"\x30")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start = time.monotonic()
        with pytest.raises(TsaError, match="within"):
            request_timestamp(f"http://127.0.0.1:{server.server_address[1]}/", b"m", seconds=1.0)
        assert time.monotonic() - start < 5
    finally:
        server.shutdown()
        server.server_close()


def test_an_answer_that_inflates_to_hundreds_of_mib_is_refused_uninflated() -> None:
    # A few hundred bytes, Content-Encoding "gzip, gzip": httpx inflated each network chunk whole, layer
    # on layer, so the 64 KiB cap saw the answer only after 256 MiB had been allocated.
    from tests.harness.bomb_server import peak_allocation, serving_gzip_bomb

    with serving_gzip_bomb(256) as server, peak_allocation() as peak:
        with pytest.raises(TsaError, match=r"encoded body|larger than"):
            request_timestamp(f"{server.url}/", b"m")
    assert peak.bytes < 32 * 1024 * 1024, peak


def test_the_url_credential_is_never_shown(tsa) -> None:
    with pytest.raises(TsaError) as err:
        request_timestamp("http://user:s3cret@127.0.0.1:9/tsr", b"m")
    assert "s3cret" not in str(err.value)
    with pytest.raises(TsaError, match="not http"):
        request_timestamp("file:///etc/passwd", b"m")


def test_the_chains_crls_stored_are_only_crls_signed_by_the_certificates_issuer(tsa, tmp_path: Path) -> None:
    """fetch_chain_crls keeps only what a pack may carry: a CRL of the TSA certificate's issuer, signed by
    it. The same issuer name under another key, or any other answer, is refused (the build fails)."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from scanner.sources.tsa import fetch_chain_crls
    from tests.harness.tsa_server import tsa_crl

    url = "http://ca.invalid/tsa.crl"
    root = x509.load_pem_x509_certificate(make_tsa_pki(tmp_path, crl_url=url))
    token = request_timestamp(tsa(lambda q: openssl_reply(tmp_path, q)), b"probe")
    now = datetime.now(UTC)
    forged = (x509.CertificateRevocationListBuilder().issuer_name(root.subject).last_update(now)
              .next_update(now + timedelta(days=1)).sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
              .public_bytes(serialization.Encoding.DER))

    class Fetcher:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def get(self, u: str, *, max_bytes: int, timeout: float) -> bytes:
            assert u == url
            return self.data

    for data, why in ((forged, "not a CRL signed by the certificate's issuer"),
                      (b'{"SecretAccessKey": "x"}', "not a CRL")):
        with pytest.raises(TsaError, match=why):
            fetch_chain_crls(token, fetcher=Fetcher(data), roots=[root])
    good = tsa_crl(tmp_path)
    assert fetch_chain_crls(token, fetcher=Fetcher(good), roots=[root]) == [(url, good)]
