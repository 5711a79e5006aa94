"""sigaudit's notation verdicts agree with ``notation verify`` on images signed by the real CLI.

The pinned notation (tests/tools/versions.env) signs images in a local docker-registry (no
referrers API: notation and discovery both use the referrers tag schema) with test certificates:
``notation cert generate-test`` for the self-signed cases and, for revocation, a CA chain made
here whose leaf names a CRL served on 127.0.0.1 (signed through notation's local
``signingkeys.json`` key/certificate entries). Discovery is the lead's ``discover``; the clock is
the real one, since notation verify uses it too.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scanner.models import ImageReference, Outcome, RunningImage
from scanner.policy.schema import NotationVerifierSpec
from scanner.registry.client import RegistryClient
from scanner.registry.fetcher import HttpFetcher
from scanner.signatures.discovery import discover
from scanner.verify.notation import NotationVerifier
from tests.harness import oci
from tests.harness.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.tools]


class Notation:
    def __init__(self, binary: Path, home: Path) -> None:
        self.binary, self.home = binary, home
        self.config = home / "notation"
        self.config.mkdir(parents=True, exist_ok=True)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "XDG_CONFIG_HOME": str(self.home), "HOME": str(self.home)}
        proc = subprocess.run([str(self.binary), *args], env=env, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"notation {' '.join(args)} failed: {proc.stdout}\n{proc.stderr}")
        return proc

    def policy(self, level: str = "strict", identities: list[str] | None = None, stores: list[str] | None = None,
               override: dict[str, str] | None = None) -> Path:
        sv: dict[str, Any] = {"level": level}
        if override:
            sv["override"] = override
        doc = {"version": "1.0", "trustPolicies": [{
            "name": "it", "registryScopes": ["*"], "signatureVerification": sv,
            "trustStores": stores or ["ca:it"], "trustedIdentities": identities or ["*"]}]}
        for name in ("trustpolicy.oci.json", "trustpolicy.json"):
            (self.config / name).write_text(json.dumps(doc))
        return self.config / "trustpolicy.oci.json"


class CRLServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        files = self.files

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _ca_chain(tmp: Path, crl_base: str) -> tuple[Path, Path, Any, Any, int]:
    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                          x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigaudit"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    root_key = rsa.generate_private_key(65537, 3072)
    root = (x509.CertificateBuilder().subject_name(name("IT Root")).issuer_name(name("IT Root"))
            .public_key(root_key.public_key()).serial_number(1).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(root_key, hashes.SHA256()))
    leaf_key = rsa.generate_private_key(65537, 2048)
    leaf = (x509.CertificateBuilder().subject_name(name("IT Signer")).issuer_name(root.subject)
            .public_key(leaf_key.public_key()).serial_number(0x1000).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=20))
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(f"{crl_base}/leaf.crl")], None, None, None)]), critical=False)
            .sign(root_key, hashes.SHA256()))
    key_path, chain_path = tmp / "it.key", tmp / "it.crt"
    key_path.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    pem = serialization.Encoding.PEM
    chain_path.write_bytes(leaf.public_bytes(pem) + root.public_bytes(pem))
    return key_path, chain_path, root, root_key, leaf.serial_number


def _crl(root: x509.Certificate, key: Any, revoked: list[int]) -> bytes:
    now = datetime.now(UTC)
    b = (x509.CertificateRevocationListBuilder().issuer_name(root.subject).last_update(now - timedelta(minutes=1))
         .next_update(now + timedelta(days=1)).add_extension(x509.CRLNumber(1), critical=False))
    for s in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                      .revocation_date(now - timedelta(minutes=1)).build())
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _ours(notation: Notation, host: str, repo: str, digest: str, fetcher: HttpFetcher | None) -> bool:
    spec = NotationVerifierSpec(trustPolicy=str(notation.config / "trustpolicy.oci.json"),
                                trustStore=str(notation.config / "truststore"))
    verifier = NotationVerifier.from_spec(spec, base_dir=notation.home, fetcher=fetcher)
    image = RunningImage(ImageReference(host, repo, None, digest), ())
    with RegistryClient(insecure_registries={host}) as client:
        material = discover(client, image, verifier.wants)
    assert not material.errors, material.errors
    results = verifier.verify(image, material, datetime.now(UTC))
    return any(r.outcome is Outcome.PASSED for r in results)


def _theirs(notation: Notation, ref: str) -> bool:
    return notation.run("verify", "--insecure-registry", ref, check=False).returncode == 0


def test_matrix_agrees_with_notation_verify(registry: Any, tmp_path: Path) -> None:
    binary = require_tool("notation")
    n = Notation(binary, tmp_path / "home")
    n.run("cert", "generate-test", "--default", "it")  # key+cert "it", trust store ca:it
    host = registry.host
    rows: list[tuple[str, bool, bool]] = []

    def image(repo: str) -> str:
        return oci.make_image(registry.url, repo, "v1")

    def sign(repo: str, digest: str, *extra: str) -> str:
        ref = f"{host}/{repo}@{digest}"
        n.run("sign", "--insecure-registry", *extra, ref)
        return ref

    def compare(label: str, repo: str, digest: str, ref: str, fetcher: HttpFetcher | None = None) -> None:
        rows.append((label, _theirs(n, ref), _ours(n, host, repo, digest, fetcher)))

    good = image("it/good")
    ref = sign("it/good", good)
    n.policy()
    compare("good jws strict", "it/good", good, ref)
    cose = image("it/cose")
    ref_c = sign("it/cose", cose, "--signature-format", "cose")
    compare("good cose strict", "it/cose", cose, ref_c)
    n.policy(identities=["x509.subject: C=US, ST=WA, O=Someone Else"])
    compare("wrong identity", "it/good", good, ref)
    n.policy(level="audit", identities=["x509.subject: C=US, ST=WA, O=Someone Else"])
    compare("wrong identity audit", "it/good", good, ref)
    expired = image("it/expired")
    ref_e = sign("it/expired", expired, "--expiry", "2s")
    time.sleep(3)
    for level in ("strict", "permissive", "audit"):
        n.policy(level=level)
        compare(f"expired signature {level}", "it/expired", expired, ref_e)
    unsigned = image("it/unsigned")
    n.policy()
    rows.append(("unsigned", _theirs(n, f"{host}/it/unsigned@{unsigned}"),
                 _ours(n, host, "it/unsigned", unsigned, None)))
    # Untrusted root: the signature's certificate is not in the store the policy names.
    other = n.config / "truststore" / "x509" / "ca" / "other"
    other.mkdir(parents=True)
    (tmp_path / "other").mkdir()
    _, _, other_root, _, _ = _ca_chain(tmp_path / "other", "http://127.0.0.1:9/unused.crl")
    (other / "other.crt").write_bytes(other_root.public_bytes(serialization.Encoding.PEM))
    n.policy(stores=["ca:other"])
    compare("untrusted root", "it/good", good, ref)
    n.policy(level="audit", stores=["ca:other"])
    compare("untrusted root audit", "it/good", good, ref)

    # Revocation through a CRL on 127.0.0.1, signed with a CA-issued key via signingkeys.json.
    server = CRLServer()
    try:
        key_path, chain_path, root, root_key, serial = _ca_chain(tmp_path, server.base)
        keys_file = n.config / "signingkeys.json"
        keys = json.loads(keys_file.read_text())
        keys["keys"].append({"name": "ca-key", "keyPath": str(key_path), "certPath": str(chain_path)})
        keys_file.write_text(json.dumps(keys))
        store = n.config / "truststore" / "x509" / "ca" / "itca"
        store.mkdir(parents=True)
        (store / "root.crt").write_bytes(root.public_bytes(serialization.Encoding.PEM))
        crl_img = image("it/crl")
        ref_r = sign("it/crl", crl_img, "--key", "ca-key")
        with HttpFetcher() as fetcher:
            server.files["/leaf.crl"] = _crl(root, root_key, [])
            n.policy(stores=["ca:itca"])
            compare("crl good", "it/crl", crl_img, ref_r, fetcher)
            server.files["/leaf.crl"] = _crl(root, root_key, [serial])
            compare("crl revoked strict", "it/crl", crl_img, ref_r, fetcher)
            n.policy(level="permissive", stores=["ca:itca"])
            compare("crl revoked permissive", "it/crl", crl_img, ref_r, fetcher)
    finally:
        server.close()

    table = "\n".join(f"{label:32} notation={'pass' if a else 'fail':4}  sigaudit={'pass' if b else 'fail'}"
                      for label, a, b in rows)
    print("\n" + table)
    assert all(a == b for _, a, b in rows), table
    assert next(r for r in rows if r[0] == "good jws strict")[1] is True
