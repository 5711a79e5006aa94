"""Fixture builder: Notary Project (notation) signatures made with ``cryptography`` + ``cbor2``.

Writes what ``notation sign`` writes (notaryproject/specifications ``signature-envelope-jws.md``,
``signature-envelope-cose.md``, ``signature-specification.md`` "Storage"): a JWS (JSON serialization)
or COSE_Sign1 envelope over the payload ``{"targetArtifact": <image descriptor>}``, stored as a blob
of a referrer manifest (artifactType ``application/vnd.cncf.notary.signature``, empty config, one
layer, ``subject`` = the image, annotation ``io.cncf.notary.x509chain.thumbprint#S256``). For a
registry without the OCI referrers API the ``sha256-<hex>`` referrers tag-schema index is updated
too. Used by the unit tests (envelopes only), ``make demo`` and the benchmark; the integration tests
cross-check it against notation-go (tests/tools/notation-go).

    pki = make_pki()
    sign_image(url, "team/app", digest, pki.chain, expiry=timedelta(days=30))
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from tests.harness import oci

ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
JWS_MEDIA_TYPE = "application/jose+json"
COSE_MEDIA_TYPE = "application/cose"
PAYLOAD_MEDIA_TYPE = "application/vnd.cncf.notary.payload.v1+json"
THUMBPRINT_ANNOTATION = "io.cncf.notary.x509chain.thumbprint#S256"
SIGNING_AGENT = "sigaudit-tests/1.0"


# ----------------------------------------------------------------------------------------------
# A small PKI.


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: Any

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))


def name(cn: str, org: str = "sigaudit") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(cn: str, *, issuer: Issued | None = None, ca: bool = False, key: Any = None, org: str = "sigaudit",
          not_before: datetime | None = None, not_after: datetime | None = None,
          crl_url: str | Sequence[str] | None = None, ocsp_url: str | None = None, serial: int | None = None,
          eku: list[x509.ObjectIdentifier] | None = None) -> Issued:
    """A CA or code-signing certificate (self-signed when ``issuer`` is None), as notation requires them.
    ``crl_url``: one URL, or several, each its own CRL distribution point (partitioned CRLs)."""
    now = datetime.now(UTC)
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder().subject_name(name(cn, org))
         .issuer_name(issuer.cert.subject if issuer else name(cn, org))
         .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(not_before or now - timedelta(days=1))
         .not_valid_after(not_after or now + timedelta(days=365)))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    if crl_url:
        points = [crl_url] if isinstance(crl_url, str) else list(crl_url)
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(u)], None, None, None) for u in points]), critical=False)
    if ocsp_url:
        b = b.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    return Issued(b.sign(issuer.key if issuer else key, hashes.SHA256()), key)


@dataclass(frozen=True)
class PKI:
    root: Issued
    leaf: Issued

    @property
    def chain(self) -> list[Issued]:
        return [self.leaf, self.root]

    def chain_pem(self) -> bytes:
        return b"".join(c.pem for c in self.chain)


def make_pki(cn: str = "Signer", *, org: str = "sigaudit", leaf_not_before: datetime | None = None,
             leaf_not_after: datetime | None = None, crl_url: str | None = None,
             serial: int | None = None) -> PKI:
    """A root CA and a code-signing leaf it issued (the root valid for a year around now)."""
    root = issue(f"{cn} Root", ca=True, org=org, not_before=leaf_not_before)
    leaf = issue(cn, issuer=root, org=org, not_before=leaf_not_before, not_after=leaf_not_after,
                 crl_url=crl_url, serial=serial)
    return PKI(root, leaf)


def crl(issuer: Issued, revoked: Sequence[int], *, this_update: datetime | None = None,
        next_update: datetime | None = None, number: int = 1) -> bytes:
    """A DER CRL from ``issuer`` revoking ``revoked`` serials."""
    now = datetime.now(UTC)
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
         .last_update(this_update or now - timedelta(minutes=5))
         .next_update(next_update or now + timedelta(days=1)).add_extension(x509.CRLNumber(number), critical=False))
    for s in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                      .revocation_date(now - timedelta(minutes=5)).build())
    return b.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# ----------------------------------------------------------------------------------------------
# Envelopes.


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def default_alg(key: Any) -> str:
    """notation's algorithm for a key (signature-specification.md "Algorithm Selection")."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]
    if isinstance(key, rsa.RSAPrivateKey):
        return {2048: "PS256", 3072: "PS384", 4096: "PS512"}[key.key_size]
    raise TypeError(f"unsupported key {type(key).__name__}")


def raw_signature(key: Any, data: bytes, alg: str) -> bytes:
    """JWS/COSE signature bytes: RSASSA-PSS, or ECDSA as fixed-size r||s (RFC 7518 section 3.4)."""
    h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
    if alg.startswith("PS"):
        return bytes(key.sign(data, padding.PSS(padding.MGF1(h), h.digest_size), h))
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(h)))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def payload(target: Mapping[str, Any]) -> bytes:
    """The notation payload for a target descriptor (mediaType, digest, size, optional annotations)."""
    t = {k: target[k] for k in ("mediaType", "digest", "size")}
    if target.get("annotations"):
        t["annotations"] = dict(target["annotations"])
    return json.dumps({"targetArtifact": t}, separators=(",", ":")).encode()


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def jws_envelope(chain: Sequence[Issued], target: Mapping[str, Any], *, signing_time: datetime | None = None,
                 expiry: datetime | None = None, alg: str | None = None, scheme: str = "notary.x509",
                 extra: Mapping[str, Any] | None = None, crit: list[str] | None = None,
                 body: bytes | None = None, time_format: Any = _rfc3339) -> bytes:
    """A notation JWS envelope (signature-envelope-jws.md). ``extra``/``crit``/``body`` override
    protected headers, the critical list and the payload bytes (for malformed-input tests)."""
    signing_time = signing_time or datetime.now(UTC)
    alg = alg or default_alg(chain[0].key)
    hdr: dict[str, Any] = {"alg": alg, "cty": PAYLOAD_MEDIA_TYPE,
                           "crit": list(crit) if crit is not None else ["io.cncf.notary.signingScheme"],
                           "io.cncf.notary.signingScheme": scheme}
    if scheme == "notary.x509":
        hdr["io.cncf.notary.signingTime"] = time_format(signing_time)
    else:
        hdr["io.cncf.notary.authenticSigningTime"] = time_format(signing_time)
        if crit is None:
            hdr["crit"].append("io.cncf.notary.authenticSigningTime")
    if expiry is not None:
        hdr["io.cncf.notary.expiry"] = time_format(expiry)
        if crit is None:
            hdr["crit"].append("io.cncf.notary.expiry")
    hdr.update(extra or {})
    prot, pay = b64u(json.dumps(hdr).encode()), b64u(body if body is not None else payload(target))
    sig = raw_signature(chain[0].key, f"{prot}.{pay}".encode(), alg)
    x5c = [base64.b64encode(c.cert.public_bytes(serialization.Encoding.DER)).decode() for c in chain]
    unprotected = {"x5c": x5c, "io.cncf.notary.signingAgent": SIGNING_AGENT}
    return json.dumps({"payload": pay, "protected": prot, "header": unprotected, "signature": b64u(sig)}).encode()


_COSE_ALG = {"ES256": -7, "ES384": -35, "ES512": -36, "PS256": -37, "PS384": -38, "PS512": -39}


def cose_envelope(chain: Sequence[Issued], target: Mapping[str, Any], *, signing_time: datetime | None = None,
                  expiry: datetime | None = None, alg: str | None = None) -> bytes:
    """A notation COSE_Sign1 envelope (signature-envelope-cose.md), tagged 18."""
    signing_time = signing_time or datetime.now(UTC)
    alg = alg or default_alg(chain[0].key)
    crit: list[Any] = ["io.cncf.notary.signingScheme"]
    hdr: dict[Any, Any] = {1: _COSE_ALG[alg], 2: crit, 3: PAYLOAD_MEDIA_TYPE,
                           "io.cncf.notary.signingScheme": "notary.x509",
                           "io.cncf.notary.signingTime": cbor2.CBORTag(1, int(signing_time.timestamp()))}
    if expiry is not None:
        crit.append("io.cncf.notary.expiry")
        hdr["io.cncf.notary.expiry"] = cbor2.CBORTag(1, int(expiry.timestamp()))
    prot = cbor2.dumps(hdr)
    pay = payload(target)
    sig = raw_signature(chain[0].key, cbor2.dumps(["Signature1", prot, b"", pay]), alg)
    unprotected = {33: [c.cert.public_bytes(serialization.Encoding.DER) for c in chain],
                   "io.cncf.notary.signingAgent": SIGNING_AGENT}
    return bytes(cbor2.dumps(cbor2.CBORTag(18, [prot, unprotected, pay, sig])))


# ----------------------------------------------------------------------------------------------
# Storage.


def thumbprints(chain: Sequence[Issued]) -> str:
    return json.dumps([hashlib.sha256(c.cert.public_bytes(serialization.Encoding.DER)).hexdigest() for c in chain])


def referrers_api(url_base: str, repo: str, digest: str, auth: oci.AuthLike = None) -> bool:
    """Whether the registry answers the OCI 1.1 referrers API for this repository."""
    with httpx.Client(auth=auth, timeout=30.0) as c:
        r = c.get(f"{url_base}/v2/{repo}/referrers/{digest}")
    return r.status_code == 200 and r.headers.get("content-type", "").startswith(oci.OCI_INDEX)


def push_signature(url_base: str, repo: str, subject: Mapping[str, Any], envelope: bytes, media_type: str,
                   chain: Sequence[Issued], *, tag_schema: bool | None = None, auth: oci.AuthLike = None,
                   signed_at: datetime | None = None) -> str:
    """Push ``envelope`` as a notation signature referring to ``subject``; returns the manifest digest.

    ``tag_schema`` None: update the ``sha256-<hex>`` index only when the registry has no referrers API.
    """
    blob_digest = oci.push_blob(url_base, repo, envelope, auth)
    oci.push_blob(url_base, repo, oci.EMPTY_JSON, auth)
    manifest = {
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": oci.OCI_EMPTY, "digest": oci.sha256_digest(oci.EMPTY_JSON), "size": 2},
        "layers": [{"mediaType": media_type, "digest": blob_digest, "size": len(envelope)}],
        "subject": {k: subject[k] for k in ("mediaType", "digest", "size")},
        "annotations": {THUMBPRINT_ANNOTATION: thumbprints(chain),
                        "org.opencontainers.image.created": _rfc3339(signed_at or datetime.now(UTC))},
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    digest = oci.push_manifest(url_base, repo, oci.sha256_digest(body), body, oci.OCI_MANIFEST, auth)
    if tag_schema is None:
        tag_schema = not referrers_api(url_base, repo, subject["digest"], auth)
    if tag_schema:
        _add_to_tag_index(url_base, repo, subject["digest"], {
            "mediaType": oci.OCI_MANIFEST, "digest": digest, "size": len(body), "artifactType": ARTIFACT_TYPE,
            "annotations": manifest["annotations"]}, auth)
    return digest


def _add_to_tag_index(url_base: str, repo: str, subject_digest: str, entry: Mapping[str, Any],
                      auth: oci.AuthLike) -> None:
    tag = subject_digest.replace(":", "-")
    with httpx.Client(auth=auth, timeout=30.0) as c:
        r = c.get(f"{url_base}/v2/{repo}/manifests/{tag}", headers={"Accept": oci.OCI_INDEX})
    manifests: list[Any] = []
    if r.status_code == 200:
        manifests = [m for m in r.json().get("manifests", []) if m.get("digest") != entry["digest"]]
    elif r.status_code != 404:
        raise RuntimeError(f"read referrers tag {tag}: HTTP {r.status_code} {r.text[:300]}")
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [*manifests, dict(entry)]}
    oci.push_manifest(url_base, repo, tag, json.dumps(index, separators=(",", ":")).encode(), oci.OCI_INDEX, auth)


def image_descriptor(url_base: str, repo: str, digest: str, auth: oci.AuthLike = None) -> dict[str, Any]:
    """The descriptor (mediaType, digest, size) of a manifest already in the registry."""
    with httpx.Client(auth=auth, timeout=30.0) as c:
        r = c.get(f"{url_base}/v2/{repo}/manifests/{digest}", headers={"Accept": oci.MANIFEST_ACCEPT})
    if r.status_code != 200:
        raise RuntimeError(f"get manifest {repo}@{digest}: HTTP {r.status_code}")
    media_type = r.headers.get("content-type", "").split(";")[0] or json.loads(r.content)["mediaType"]
    return {"mediaType": media_type, "digest": digest, "size": len(r.content)}


def sign_image(url_base: str, repo: str, digest: str, chain: Sequence[Issued], *, envelope: str = "jws",
               expiry: timedelta | datetime | None = None, signing_time: datetime | None = None,
               payload_digest: str | None = None, tag_schema: bool | None = None,
               auth: oci.AuthLike = None) -> str:
    """Sign the image ``repo@digest`` like ``notation sign`` and push the signature; returns its manifest digest.

    ``expiry`` is a duration from the signing time (``--expiry``) or an instant. ``payload_digest``
    signs another manifest of the repository while attaching the signature to ``digest`` (a
    signature that does not match the artifact it is attached to).
    """
    signing_time = signing_time or datetime.now(UTC)
    subject = image_descriptor(url_base, repo, digest, auth)
    target = image_descriptor(url_base, repo, payload_digest, auth) if payload_digest else subject
    until = signing_time + expiry if isinstance(expiry, timedelta) else expiry
    if envelope == "jws":
        blob, media_type = jws_envelope(chain, target, signing_time=signing_time, expiry=until), JWS_MEDIA_TYPE
    elif envelope == "cose":
        blob, media_type = cose_envelope(chain, target, signing_time=signing_time, expiry=until), COSE_MEDIA_TYPE
    else:
        raise ValueError(f"unknown envelope {envelope!r}")
    return push_signature(url_base, repo, subject, blob, media_type, chain, tag_schema=tag_schema, auth=auth,
                          signed_at=signing_time)


def write_trust_material(directory: Any, roots: Mapping[str, Sequence[Issued]], *, level: str = "strict",
                         identities: Sequence[str] = ("*",), scopes: Sequence[str] = ("*",),
                         stores: Sequence[str] | None = None, override: Mapping[str, str] | None = None,
                         name: str = "sigaudit") -> tuple[Any, Any]:
    """Write ``trustpolicy.json`` and ``truststore/x509/ca/<store>/*.pem``; returns (policy path, store dir)."""
    from pathlib import Path

    d = Path(directory)
    store_dir = d / "truststore"
    for store, certs in roots.items():
        sd = store_dir / "x509" / "ca" / store
        sd.mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(certs):
            (sd / f"cert{i}.pem").write_bytes(c.pem)
    sv: dict[str, Any] = {"level": level}
    if override:
        sv["override"] = dict(override)
    doc = {"version": "1.0", "trustPolicies": [{
        "name": name, "registryScopes": list(scopes), "signatureVerification": sv,
        "trustStores": list(stores) if stores is not None else [f"ca:{s}" for s in roots],
        "trustedIdentities": list(identities)}]}
    policy = d / "trustpolicy.json"
    policy.write_text(json.dumps(doc, indent=1))
    return policy, store_dir
