"""Fixture builder: cosign-format signatures made with `cryptography`, pushed to a real registry.

Writes exactly what ``cosign sign --key`` writes for the legacy layout (cosign
``specs/SIGNATURE_SPEC.md``): a manifest tagged ``sha256-<hex>.sig`` whose layers are simplesigning
payloads with the base64 signature in the ``dev.cosignproject.cosign/signature`` annotation. Used by
tests, ``make demo`` and the benchmark; the real cosign CLI is used where it is built.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from tests.harness import oci

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    private: PrivateKey

    @classmethod
    def ecdsa(cls, curve: ec.EllipticCurve | None = None) -> KeyPair:
        return cls(ec.generate_private_key(curve or ec.SECP256R1()))

    @classmethod
    def rsa(cls, bits: int = 2048) -> KeyPair:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def ed25519(cls) -> KeyPair:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    @property
    def spki_sha256(self) -> str:
        import hashlib

        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()

    def sign(self, data: bytes) -> bytes:
        k = self.private
        if isinstance(k, ec.EllipticCurvePrivateKey):
            return k.sign(data, ec.ECDSA(hashes.SHA256()))
        if isinstance(k, rsa.RSAPrivateKey):
            return k.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return k.sign(data)


def simplesigning_payload(repo: str, digest: str, optional: Mapping[str, Any] | None = None) -> bytes:
    doc = {
        "critical": {
            "identity": {"docker-reference": repo},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": dict(optional) if optional else None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def sig_tag(digest: str) -> str:
    return digest.replace(":", "-", 1) + ".sig"


def push_signatures(
    url_base: str,
    repo: str,
    digest: str,
    layers: list[tuple[bytes, Mapping[str, str]]],
    *,
    auth: oci.AuthLike = None,
    client: httpx.Client | None = None,
) -> str:
    """Push a ``.sig`` manifest with the given (payload, annotations) layers; returns its digest."""
    config = oci.canonical_json({"architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": []}})
    oci.push_blob(url_base, repo, config, auth=auth, client=client)
    descs = []
    for payload, layer_annotations in layers:
        oci.push_blob(url_base, repo, payload, auth=auth, client=client)
        descs.append(oci.descriptor(SIMPLESIGNING, payload, annotations=dict(layer_annotations)))
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": oci.descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": descs,
    }
    raw = oci.canonical_json(manifest)
    oci.push_manifest(url_base, repo, sig_tag(digest), raw, oci.OCI_MANIFEST, auth=auth, client=client)
    return oci.sha256_digest(raw)


def sign_image(
    url_base: str,
    repo_host: str,
    repo: str,
    digest: str,
    *keys: KeyPair,
    payload_digest: str | None = None,
    tamper: bool = False,
    optional: Mapping[str, Any] | None = None,
    auth: oci.AuthLike = None,
    client: httpx.Client | None = None,
) -> str:
    """Sign ``digest`` with each key (one layer each) the way ``cosign sign --key`` does.

    ``payload_digest`` signs a payload naming another digest; ``tamper`` alters the payload after
    signing (the signature then no longer verifies).
    """
    layers = []
    for key in keys:
        payload = simplesigning_payload(f"{repo_host}/{repo}", payload_digest or digest, optional)
        sig = base64.b64encode(key.sign(payload)).decode()
        if tamper:
            payload = payload.replace(b"cosign container image signature", b"cosign container image signaturE")
        layers.append((payload, {SIG_ANNOTATION: sig}))
    return push_signatures(url_base, repo, digest, layers, auth=auth, client=client)
