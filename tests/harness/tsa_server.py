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


def make_tsa_pki(directory: Path, cn: str = "Test TSA") -> bytes:
    """Write ``tsa.pem``, ``tsa.key``, ``root.pem``, ``ts.cnf`` into ``directory``; returns the root PEM."""
    now = datetime.now(UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (x509.CertificateBuilder().subject_name(_name(cn + " Root")).issuer_name(_name(cn + " Root"))
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(root.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
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
    def start(cls, directory: Path) -> Iterator[TsaServer]:
        directory.mkdir(parents=True, exist_ok=True)
        root_pem = make_tsa_pki(directory)
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
