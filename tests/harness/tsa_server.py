"""A real RFC 3161 TSA on 127.0.0.1 for tests: OpenSSL's own TSA (``openssl ts -reply``) answering
``POST application/timestamp-query`` over HTTP (RFC 3161 §3.4), with a fresh root and a timestamping
leaf (EKU timeStamping, critical). ``tsa.root_pem`` is what an auditor gives as ``--tsa-ca-cert``.

    with TsaServer.start(tmp_path) as tsa:
        tsa.url, tsa.root_pem, tsa.requests   # the request bodies it answered
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.harness.tools import require_binary


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigaudit tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tsa_pki(directory: Path, cn: str = "Test TSA", *, crl_url: str | None = None,
                 delta_url: str | None = None) -> bytes:
    """Write ``tsa.pem``, ``tsa.key``, ``root.pem``, ``root.key``, ``ts.cnf`` into ``directory``; returns the
    root PEM. ``crl_url``: the TSA certificate names it as its CRL distribution point; ``delta_url`` as
    its Freshest CRL (delta CRLs)."""
    now = datetime.now(UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (x509.CertificateBuilder().subject_name(_name(cn + " Root")).issuer_name(_name(cn + " Root"))
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(root.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
               .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                              critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True))
    if crl_url:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(crl_url)], None, None, None)]), critical=False)
    if delta_url:
        builder = builder.add_extension(x509.FreshestCRL([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(delta_url)], None, None, None)]), critical=False)
    leaf = builder.sign(root_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    (directory / "root.key").write_bytes(root_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
    (directory / "tsa.pem").write_bytes(leaf.public_bytes(pem))
    (directory / "tsa.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    (directory / "root.pem").write_bytes(root.public_bytes(pem))
    (directory / "ts.cnf").write_text("[tsa]\ndefault_tsa = t\n[t]\nserial = ./serial\ndefault_policy = 1.2.3.4\n"
                                      "digests = sha256\nsigner_digest = sha256\ness_cert_id_alg = sha256\n"
                                      "accuracy = secs:1\n")
    (directory / "serial").write_text("01\n")
    return root.public_bytes(pem)


def openssl_reply(directory: Path, query: bytes, *, token_only: bool = False) -> bytes:
    """``openssl ts -reply`` over a DER TimeStampReq with the TSA in ``directory``: a TimeStampResp (or
    the bare token)."""
    (directory / "req.tsq").write_bytes(query)
    subprocess.run([str(require_binary("openssl")), "ts", "-reply", "-config", "ts.cnf", "-queryfile", "req.tsq",
                    "-signer", "tsa.pem", "-inkey", "tsa.key", "-chain", "root.pem",
                    *(["-token_out"] if token_only else []),
                    "-out", "resp.tsr"], cwd=directory, check=True, capture_output=True, timeout=30)
    return (directory / "resp.tsr").read_bytes()


@dataclass
class TsaServer:
    url: str
    root_pem: bytes
    directory: Path
    requests: list[bytes] = field(default_factory=list)

    @classmethod
    @contextmanager
    def start(cls, directory: Path, *, crl_url: str | None = None,
              delta_url: str | None = None) -> Iterator[TsaServer]:
        directory.mkdir(parents=True, exist_ok=True)
        root_pem = make_tsa_pki(directory, crl_url=crl_url, delta_url=delta_url)
        lock = threading.Lock()
        seen: list[bytes] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 16))
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_error(415)
                    return
                with lock:
                    seen.append(body)
                    try:
                        reply = openssl_reply(directory, body)
                    except subprocess.CalledProcessError:
                        self.send_error(400)
                        return
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield cls(f"http://127.0.0.1:{httpd.server_address[1]}/tsr", root_pem, directory, seen)
        finally:
            httpd.shutdown()
            httpd.server_close()


def tsa_crl(directory: Path, *, revoked: bool = False, next_update: datetime | None = None,
            delta: bool = False) -> bytes:
    """A DER CRL of the TSA's root (in ``directory``, made by :func:`make_tsa_pki`), listing the TSA
    certificate when ``revoked``; ``delta``: a delta CRL (number 2) over the base CRL number 1."""
    root = x509.load_pem_x509_certificate((directory / "root.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "root.key").read_bytes(), None)
    tsa = x509.load_pem_x509_certificate((directory / "tsa.pem").read_bytes())
    now = datetime.now(UTC)
    b = (x509.CertificateRevocationListBuilder().issuer_name(root.subject).last_update(now - timedelta(hours=1))
         .next_update(next_update or now + timedelta(days=1))
         .add_extension(x509.CRLNumber(2 if delta else 1), critical=False))
    if delta:
        b = b.add_extension(x509.DeltaCRLIndicator(1), critical=True)
    if revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(tsa.serial_number)
                                      .revocation_date(now - timedelta(minutes=30)).build())
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]
