"""Offline keyless Sigstore for the interop tests: the mock Fulcio/Rekor of ``mock_server.js`` on
127.0.0.1, ``@sigstore/cli`` to sign, and the OCI layouts cosign writes.

    with MockSigstore.start(tmp_path) as sig:
        bundle = sig.attest(cosign_sign_statement(digest), subject=SUBJECT, issuer=ISSUER)
        attach_bundle(reg.url, "team/app", image, bundle, referrers_api=True)
        # policy: cosign: {keyless: {identities: [...], trustedRoot: sig.trusted_root}}

The npm packages are installed outside the checkout by ``tests/tools/ensure-tools.sh sigstore-mock``
into ``~/.cache/sigaudit-tools/sigstore-mock-<version>/``. Missing tools fail under ``CI`` and skip
elsewhere, like every other peer tool.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.harness import oci
from tests.harness.tools import _missing, cache_root, stop_process

HERE = Path(__file__).resolve().parent
MOCK_VERSION = json.loads((HERE / "package.json").read_text())["dependencies"]["@sigstore/mock"]
TOOL_NAME = f"sigstore-mock-{MOCK_VERSION}"
FIXES = ("pem", "dsse", "proof", "etag", "bearer")

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
INTOTO_STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"


def install_dir() -> Path:
    return cache_root() / TOOL_NAME


def require_mock() -> tuple[Path, Path]:
    """(node, node_modules) of the pinned install; fail under CI, skip elsewhere when missing."""
    node = shutil.which("node")
    modules = install_dir() / "node_modules"
    if node is None:
        _missing("node is not installed (apt-get install nodejs npm)")
        raise AssertionError("unreachable")
    if not (modules / "@sigstore" / "mock").is_dir() or not (modules / ".bin" / "sigstore").exists():
        _missing(
            f"@sigstore/mock {MOCK_VERSION} is not installed: "
            "run `make tools` (or tests/tools/ensure-tools.sh sigstore-mock)"
        )
        raise AssertionError("unreachable")
    return Path(node), modules


def _b64url(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def id_token(subject: str, issuer: str, claims: Mapping[str, str] | None = None) -> str:
    """An unsigned-looking JWT: the mock Fulcio decodes it without checking a signature and puts
    ``sub`` in the URI SAN and ``iss`` in the 1.3.6.1.4.1.57264.1.1 and .1.8 extensions. ``claims``
    (GitHub Actions token claims: ``repository``, ``ref``, ``sha``, ``workflow_ref``, ``event_name``,
    ``run_id``/``run_attempt``, ...) become the other Fulcio extensions, as the mock's
    ``extensionFromClaims`` maps them (1.2-1.6 raw, 1.9-1.22 DER UTF8String)."""
    now = int(time.time())
    claims = {**(claims or {}), "iss": issuer, "sub": subject, "aud": "sigstore", "iat": now, "exp": now + 600}
    return f"{_b64url({'alg': 'RS256', 'typ': 'JWT'})}.{_b64url(claims)}.c2lnYXVkaXQ"


def cosign_sign_statement(image_digest: str, predicate_type: str = COSIGN_SIGN_PREDICATE) -> bytes:
    """The in-toto statement ``cosign sign`` (v3, bundle format) signs for an image."""
    algo, _, hexd = image_digest.partition(":")
    stmt = {"_type": INTOTO_STATEMENT_V1, "subject": [{"digest": {algo: hexd}}],
            "predicateType": predicate_type, "predicate": {}}
    return json.dumps(stmt, separators=(",", ":")).encode()


@dataclass
class MockSigstore:
    """A running ``mock_server.js`` (Fulcio + Rekor) and the files it wrote."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    info: dict[str, Any]
    node: Path
    modules: Path
    skipped_fixes: tuple[str, ...] = field(default=())

    @classmethod
    def start(cls, workdir: Path, *, skip_fixes: Iterable[str] = (), timeout: float = 30.0) -> MockSigstore:
        node, modules = require_mock()
        workdir.mkdir(parents=True, exist_ok=True)
        skip = tuple(skip_fixes)
        cmd = [str(node), str(HERE / "mock_server.js"), "--out", str(workdir)]
        if skip:
            cmd += ["--skip-fix", ",".join(skip)]
        err = (workdir / "server.err").open("ab")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                env={**os.environ, "NODE_PATH": str(modules)})
        err.close()
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        os.set_blocking(proc.stdout.fileno(), False)
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            if proc.poll() is not None:
                break
            chunk = proc.stdout.read()
            if chunk:
                line += chunk
            else:
                time.sleep(0.05)
        if not line.endswith(b"\n"):
            stop_process(proc)
            tail = (workdir / "server.err").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mock_server.js did not start: {line!r}\n{tail}")
        return cls(proc, workdir, json.loads(line), node, modules, skip)

    def __enter__(self) -> MockSigstore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        stop_process(self.proc)

    # -- files -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def trusted_root(self) -> Path:
        return Path(self.info["trusted_root"])

    @property
    def rekor_pub(self) -> Path:
        return Path(self.info["rekor_pub"])

    @property
    def fulcio_root(self) -> Path:
        return Path(self.info["fulcio_root"])

    @property
    def ctlog_pub(self) -> Path:
        return Path(self.info["ctlog_pub"])

    # -- signing ---------------------------------------------------------------------------------

    def attest(self, statement: bytes, *, subject: str, issuer: str, claims: Mapping[str, str] | None = None,
               timeout: float = 60.0) -> bytes:
        """``sigstore attest`` (the real @sigstore/cli) against this mock: a v0.3 DSSE bundle."""
        n = len(list(self.workdir.glob("statement-*.json")))
        stmt_path = self.workdir / f"statement-{n}.json"
        out = self.workdir / f"bundle-{n}.json"
        stmt_path.write_bytes(statement)
        env = {**os.environ, "CI": "true", "SIGSTORE_ID_TOKEN": id_token(subject, issuer, claims)}
        env.pop("ACTIONS_ID_TOKEN_REQUEST_URL", None)
        r = subprocess.run(
            [str(self.modules / ".bin" / "sigstore"), "attest", str(stmt_path), "--fulcio-url", self.url,
             "--rekor-url", self.url, "--timeout", "20", "-o", str(out)],
            capture_output=True, text=True, timeout=timeout, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"sigstore attest failed ({r.returncode}): {r.stderr[-2000:]}")
        return out.read_bytes()

    def legacy_signature(self, payload: bytes, *, subject: str, issuer: str,
                         claims: Mapping[str, str] | None = None) -> dict[str, str]:
        """A keyless ``.sig`` layer's annotations, as cosign v2 writes them: an ephemeral P-256 key
        signs the simplesigning payload, the mock Fulcio certifies the key (leaf + chain), and the
        mock Rekor logs a hashedrekord 0.0.1 entry whose SET becomes the bundle annotation."""
        key = ec.generate_private_key(ec.SECP256R1())
        pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        # Fulcio v2 proof of possession: a signature over the token's subject.
        pop = base64.b64encode(key.sign(subject.encode(), ec.ECDSA(hashes.SHA256()))).decode()
        with httpx.Client(base_url=self.url, timeout=30.0) as c:
            r = c.post("/api/v2/signingCert", json={
                "credentials": {"oidcIdentityToken": id_token(subject, issuer, claims)},
                "publicKeyRequest": {"publicKey": {"algorithm": "ECDSA", "content": pub_pem},
                                     "proofOfPossession": pop}})
            r.raise_for_status()
            certs = r.json()["signedCertificateEmbeddedSct"]["chain"]["certificates"]
            leaf, chain = certs[0], "".join(certs[1:])
            sig = key.sign(payload, ec.ECDSA(hashes.SHA256()))
            sig_b64 = base64.b64encode(sig).decode()
            entry = {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
                "signature": {"content": sig_b64,
                              "publicKey": {"content": base64.b64encode(leaf.encode()).decode()}}}}
            r = c.post("/api/v1/log/entries", json=entry)
            r.raise_for_status()
            (logged,) = r.json().values()
        bundle = {"SignedEntryTimestamp": logged["verification"]["signedEntryTimestamp"],
                  "Payload": {"body": logged["body"], "integratedTime": logged["integratedTime"],
                              "logIndex": logged["logIndex"], "logID": logged["logID"]}}
        return {"dev.cosignproject.cosign/signature": sig_b64, "dev.sigstore.cosign/certificate": leaf,
                "dev.sigstore.cosign/chain": chain, "dev.sigstore.cosign/bundle": json.dumps(bundle)}


# -- OCI layouts ----------------------------------------------------------------------------------


def _referrers_tag(digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    return f"{algo}-{hexd}"


def attach_bundle(url: str, repo: str, subject: oci.Pushed, bundle: bytes, *, referrers_api: bool,
                  predicate_type: str = COSIGN_SIGN_PREDICATE, auth: oci.AuthLike = None) -> str:
    """Attach ``bundle`` to ``subject`` exactly as cosign v3 ``WriteReferrer`` does: an OCI 1.1
    artifact (artifactType = the bundle media type, empty config, the bundle as its one layer,
    ``subject``, ``dev.sigstore.bundle.*`` annotations). Without the referrers API
    (``referrers_api=False``) also maintain the ``sha256-<hex>`` tag-schema index, as
    go-containerregistry does on registries that do not answer ``OCI-Subject``. Returns the
    referrer manifest's digest."""
    annotations = {
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": predicate_type,
    }
    with httpx.Client(auth=auth, timeout=30.0) as c:
        art = oci.make_artifact(url, repo, subject, BUNDLE_MEDIA_TYPE, bundle,
                                payload_media_type=BUNDLE_MEDIA_TYPE, annotations=annotations, client=c)
        if not referrers_api:
            tag = _referrers_tag(subject.digest)
            r = c.get(f"{url}/v2/{repo}/manifests/{tag}", headers={"Accept": oci.OCI_INDEX})
            index: dict[str, Any] = (r.json() if r.status_code == 200
                                     else {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []})
            index["manifests"].append(art.descriptor(artifactType=BUNDLE_MEDIA_TYPE, annotations=annotations))
            oci.push_manifest(url, repo, tag, oci.canonical_json(index), oci.OCI_INDEX, client=c)
    return art.digest


def push_keyless_sig(url: str, repo: str, digest: str, layers: list[tuple[bytes, Mapping[str, str]]],
                     auth: oci.AuthLike = None) -> str:
    """The legacy ``sha256-<hex>.sig`` manifest (one simplesigning layer per signature)."""
    from tests.harness.cosign_sign import push_signatures

    return push_signatures(url, repo, digest, layers, auth=auth)
