"""Fuzz targets: every parser that sees untrusted bytes, each as ``check(data: bytes) -> None``.

A target passes an input when the code under test returns normally or raises a *typed* error:
``scanner.errors.SigauditError`` (ParseError, LimitExceeded, ConfigError, InventoryError, ...) — or,
for verifiers, returns ``SignatureResult``s. Anything else (KeyError, TypeError, RecursionError, an
untyped ValueError, ...) is a finding. Seeds come from the public vectors in ``tests/data/vectors``
(read, never copied) and from material made here at import time (keys, a CA, a CRL, signed payloads).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scanner.errors import SigauditError
from tests.vectors import VECTORS

NOW = datetime(2025, 6, 1, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


class Finding(Exception):
    """An untyped exception escaped a parser."""


@dataclass(frozen=True)
class Target:
    name: str
    check: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]] = field(default=lambda: [])
    typed: tuple[type[BaseException], ...] = (SigauditError,)


def _files(pattern: str, limit: int = 40, max_bytes: int = 256 * 1024) -> list[bytes]:
    if not VECTORS.is_dir():
        return []
    out = []
    for p in sorted(VECTORS.glob(pattern))[:limit]:
        if p.is_file() and p.stat().st_size <= max_bytes:
            out.append(p.read_bytes())
    return out


# -- pod lists --------------------------------------------------------------------------------------


def check_pods(data: bytes) -> None:
    from scanner.errors import SigauditError
    from scanner.inventory.pods import INVENTORY_FIELDS, StaticOwnerResolver, containers_from_pod, iter_pods_file

    # Built whole, and as a scan reads a pod file (only the fields the inventory reads).
    for keep in (None, INVENTORY_FIELDS):
        owners = StaticOwnerResolver()
        try:
            for n, pod in enumerate(iter_pods_file("fuzz.json", stream=io.BytesIO(data), keep=keep)):
                containers_from_pod(pod, owners)
                if n > 1000:
                    break
        except SigauditError:
            if keep is not None:
                raise


def seeds_pods() -> list[bytes]:
    from tests.harness.demo import _pod

    pod = _pod("ns", "p", [("c", "reg.example/a/b:1", "reg.example/a/b@" + DIGEST)], owner=("ReplicaSet", "rs-1"),
               init=[("i", "busybox", None)], ephemeral=[("e", "alpine@" + DIGEST, "docker-pullable://x@" + DIGEST)],
               pull_secrets=["s"])
    return [json.dumps({"kind": "List", "items": [pod, pod]}).encode(), json.dumps(pod).encode(),
            b'{"items": []}', b'{"kind":"PodList","items":[{"metadata":{},"spec":{"containers":[{}]}}]}']


# -- docker config.json / pull secrets --------------------------------------------------------------


def check_docker_config(data: bytes) -> None:
    from scanner.registry.auth import CredentialStore, parse_docker_config, parse_helper_config

    CredentialStore().add_pull_secret("ns", "secret", data)  # a tenant's secret: never raises
    parse_docker_config(data, "config.json")
    parse_helper_config(data, "config.json")  # credHelpers/credsStore: a ConfigError or plain names


def check_helperoutput(data: bytes) -> None:
    """What a docker credential helper prints: a Credential or a CredentialUnavailable that never
    carries any of the bytes."""
    from scanner.registry.auth import CredentialUnavailable
    from scanner.registry.credhelpers import parse_helper_output

    try:
        parse_helper_output(data, "docker-credential-fuzz")
    except CredentialUnavailable as exc:
        assert "docker-credential-fuzz" in str(exc)
        secret = data.strip()
        assert len(secret) < 8 or secret.decode(errors="replace") not in str(exc), "helper output in a message"


def seeds_helperoutput() -> list[bytes]:
    return [b'{"ServerURL": "r.io", "Username": "u", "Secret": "s3cret"}', b'{"Username": "<token>", "Secret": "t"}',
            b"credentials not found in native keychain", b'{"Username": 1, "Secret": null}', b"[" * 5000, b"\xff\xfe"]


def seeds_docker_config() -> list[bytes]:
    auth = base64.b64encode(b"user:pass").decode()
    return [json.dumps({"auths": {"r.io": {"auth": auth}, "https://index.docker.io/v1/": {"auth": auth},
                                  "q.io": {"username": "u", "password": "p"}, "t.io": {"identitytoken": "tok"}}}
                       ).encode(), b'{"auths": {}}', b'{"auths": {"r.io": {"auth": 12345}}}',
            b'{"credHelpers": {"r.io": "ecr-login", "https://Q.io/v1/": "gcloud"}, "credsStore": "desktop"}',
            b'{"credHelpers": {"r.io": "../../bin/sh"}, "credsStore": ["x"]}']


# -- image references -------------------------------------------------------------------------------


def check_reference(data: bytes) -> None:
    from scanner.inventory.references import parse_image_id, parse_reference

    text = data.decode("utf-8", "replace")
    try:
        ref = parse_reference(text)
        str(ref)
    except SigauditError:
        pass
    parse_image_id(text)
    parse_image_id("docker-pullable://" + text)


def seeds_reference() -> list[bytes]:
    return [s.encode() for s in (
        "nginx", "nginx:1.25", "docker.io/library/nginx:1.25@" + DIGEST, "localhost:5000/a/b:c",
        "[::1]:5000/x@" + DIGEST, "ghcr.io/o/r@sha512:" + "cd" * 64, "sha256:" + "ef" * 32,
        "docker-pullable://quay.io/a/b@" + DIGEST, "REG.example/UPPER:tag",
    )]


# -- manifests and indexes ---------------------------------------------------------------------------

_client = None


def check_manifest(data: bytes) -> None:
    global _client
    from scanner.registry.client import RegistryClient, parse_descriptor, parse_manifest, sha256_digest

    if _client is None:
        _client = RegistryClient()
    m = parse_manifest(data, "application/vnd.oci.image.manifest.v1+json", sha256_digest(data))
    for key in ("layers", "manifests", "blobs"):
        items = m.doc.get(key)
        if isinstance(items, list):
            for i, item in enumerate(items[:64]):
                parse_descriptor(item, f"{key}[{i}]")
    if m.doc.get("subject") is not None:
        parse_descriptor(m.doc["subject"], "subject")
    _client._index_entries(data, "fuzz")


def seeds_manifest() -> list[bytes]:
    from tests.harness import oci

    layer = oci.descriptor(oci.OCI_LAYER, b"x", annotations={"a": "b"})
    return [
        oci.canonical_json({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                            "config": oci.descriptor(oci.OCI_CONFIG, b"{}"), "layers": [layer],
                            "subject": oci.descriptor(oci.OCI_MANIFEST, b"s")}),
        oci.canonical_json({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
            {**oci.descriptor(oci.OCI_MANIFEST, b"m"), "artifactType": "application/vnd.cncf.notary.signature",
             "platform": {"os": "linux"}}]}),
        *_files("notation/notation-cli-e2e/**/blobs/sha256/*", limit=30, max_bytes=16 * 1024),
    ]


# -- cosign payloads and annotations ---------------------------------------------------------------

_cosign: dict[str, object] = {}


def _cosign_setup() -> tuple[object, object]:
    if not _cosign:
        from scanner.verify.cosign import CosignKeyVerifier
        from scanner.verify.keys import parse_public_key
        from tests.harness.cosign_sign import KeyPair

        kp = KeyPair.ecdsa()
        key = parse_public_key(kp.public_pem.encode())
        _cosign["kp"] = kp
        _cosign["verifier"] = CosignKeyVerifier(key, key_label="fuzz", ignore_tlog=False)
    return _cosign["kp"], _cosign["verifier"]


ANNOTATION_KEYS = ("dev.cosignproject.cosign/signature", "dev.sigstore.cosign/certificate",
                   "dev.sigstore.cosign/chain", "dev.sigstore.cosign/bundle", "dev.sigstore.cosign/rfc3161timestamp")


def check_cosign(data: bytes) -> None:
    """``data`` = payload NUL annotation NUL annotation ...: the layer as discovery hands it over."""
    from scanner.models import CosignLayer, Descriptor, ImageReference, Outcome, RunningImage, SignatureMaterial
    from scanner.verify.cosign import PayloadError, parse_simplesigning

    _, verifier = _cosign_setup()
    parts = data.split(b"\x00")
    payload = parts[0]
    annotations = {k: v.decode("utf-8", "replace") for k, v in zip(ANNOTATION_KEYS, parts[1:], strict=False)}
    try:
        parse_simplesigning(payload)
    except PayloadError:
        pass
    image = RunningImage(ImageReference("reg.example", "a/b", "1", DIGEST), ())
    layer = CosignLayer(payload=payload, media_type="application/vnd.dev.cosign.simplesigning.v1+json",
                        annotations=annotations, digest="sha256:" + "00" * 32)
    material = SignatureMaterial(image=Descriptor("", DIGEST, 0), cosign_layers=(layer,))
    results = verifier.verify(image, material, NOW)  # type: ignore[attr-defined]
    assert len(results) == 1
    if results[0].outcome is Outcome.PASSED:
        _assert_really_signed(payload, annotations)


def _assert_really_signed(payload: bytes, annotations: dict[str, str]) -> None:
    """A PASSED result for fuzzed bytes must be a payload for DIGEST that the key really signed."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    kp, _ = _cosign_setup()
    doc = json.loads(payload)
    if doc["critical"]["image"]["docker-manifest-digest"] != DIGEST:
        raise Finding("a payload naming another digest passed")
    sig = base64.b64decode(annotations[ANNOTATION_KEYS[0]])
    kp.private.public_key().verify(sig, payload, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]


def seeds_cosign() -> list[bytes]:
    from tests.harness.cosign_sign import simplesigning_payload

    kp, _ = _cosign_setup()
    payload = simplesigning_payload("reg.example/a/b", DIGEST)
    sig = base64.b64encode(kp.sign(payload)).decode().encode()  # type: ignore[attr-defined]
    bundle = json.dumps({"SignedEntryTimestamp": "AAAA", "Payload": {"body": "e30=", "integratedTime": 1,
                                                                       "logIndex": 1, "logID": "00"}}).encode()
    seeds = [payload + b"\x00" + sig, payload + b"\x00" + sig + b"\x00\x00\x00" + bundle,
             simplesigning_payload("x", "sha256:" + "00" * 32) + b"\x00AAAA"]
    seeds += [p + b"\x00AAAA" for p in _files("cosign/legacy-oci-connaisseur/**/*.json", limit=20)]
    return seeds


# -- notation JWS and COSE envelopes ---------------------------------------------------------------


def _check_envelope(media_type: str, data: bytes) -> None:
    from scanner.verify.notation_envelope import parse_envelope

    env = parse_envelope(media_type, data)
    env.verify_signature()


def check_jws(data: bytes) -> None:
    _check_envelope("application/jose+json", data)


def check_cose(data: bytes) -> None:
    _check_envelope("application/cose", data)


def seeds_jws() -> list[bytes]:
    return [b for b in _files("notation/**/*.sig", limit=80) if b.lstrip().startswith(b"{")] + [
        b'{"payload":"e30","protected":"e30","header":{"x5c":[]},"signature":""}']


def seeds_cose() -> list[bytes]:
    return [b for b in _files("notation/**/*.sig", limit=80) if not b.lstrip().startswith(b"{")] + [b"\xd2\x84"]


# -- certificates and keys ---------------------------------------------------------------------------


def check_x509(data: bytes) -> None:
    from scanner.verify import x509 as sx
    from scanner.verify.keys import parse_public_key

    try:
        parse_public_key(data)
    except SigauditError:
        pass
    chain = sx.load_der_chain([data])
    for cert in chain:
        sx.validity_problem(cert, NOW)
        sx.subject(cert)
        sx.fingerprint(cert)
    try:
        sx.validate_signing_chain(chain)
    except sx.ChainError:
        pass


def seeds_x509() -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    out = []
    for pem in _files("sigstore-python/assets/x509/*.pem", limit=12):
        try:
            out.append(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER))
        except ValueError:
            continue
    pki = _pki()
    out += [pki["ca_der"], pki["leaf_der"], pki["leaf_pem"], pki["key_pem"]]
    return out


# -- CRLs (through the revocation checker, as notation uses it) ------------------------------------

_pki_cache: dict[str, Any] = {}
CRL_URL = "http://crl.fuzz.invalid/ca.crl"


def _pki() -> dict[str, Any]:
    if _pki_cache:
        return _pki_cache
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz CA")])
    t0 = NOW - timedelta(days=30)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(t0).not_valid_after(NOW + timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    dp = x509.CRLDistributionPoints([x509.DistributionPoint([x509.UniformResourceIdentifier(CRL_URL)], None, None,
                                                            None)])
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(4242)
            .not_valid_before(t0).not_valid_after(NOW + timedelta(days=30))
            .add_extension(dp, critical=False).sign(ca_key, hashes.SHA256()))

    def crl(revoked: bool, next_update: datetime) -> bytes:
        b = (x509.CertificateRevocationListBuilder().issuer_name(ca_name).last_update(t0)
             .next_update(next_update).add_extension(x509.CRLNumber(7), critical=False))
        if revoked:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(4242)
                                          .revocation_date(t0).build())
        return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    _pki_cache.update(
        ca=ca, leaf=leaf, ca_der=ca.public_bytes(serialization.Encoding.DER),
        leaf_der=leaf.public_bytes(serialization.Encoding.DER),
        leaf_pem=leaf.public_bytes(serialization.Encoding.PEM),
        key_pem=leaf_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo),
        crls=[crl(False, NOW + timedelta(days=7)), crl(True, NOW + timedelta(days=7)),
              crl(False, NOW - timedelta(days=1))],
    )
    return _pki_cache


class _BytesFetcher:
    def __init__(self) -> None:
        self.data = b""

    def get(self, url: str, *, max_bytes: int, timeout: float) -> bytes:
        if len(self.data) > max_bytes:
            raise OSError("too large")
        return self.data

    def post(self, url: str, body: bytes, *, content_type: str, max_bytes: int, timeout: float) -> bytes:
        return self.data


_fetcher = _BytesFetcher()


def check_crl(data: bytes) -> None:
    from scanner.verify.revocation import CertRevocation, CRLCache, RevocationChecker

    pki = _pki()
    _fetcher.data = data
    checker = RevocationChecker(_fetcher, CRLCache())
    out = checker.check_certificate(pki["leaf"], pki["ca"], NOW, None)
    assert isinstance(out, CertRevocation)


def seeds_crl() -> list[bytes]:
    return [*_pki()["crls"], *_files("notation/**/*.crl", limit=10)]


# -- policy files ------------------------------------------------------------------------------------


def check_policy(data: bytes) -> None:
    from scanner.policy.loader import parse_policy_document

    parse_policy_document(data, "fuzz.yaml")


def seeds_policy() -> list[bytes]:
    repo = Path(__file__).resolve().parents[2]
    base = (b"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nmetadata: {name: x}\nspec:\n"
            b"  rules:\n    - name: r\n      images: ['reg/*']\n      verifiers: [{cosign: {key: k.pub}}]\n"
            b"  exemptions:\n    - {images: ['*'], reason: r, until: '2099-01-01T00:00:00Z'}\n"
            b"  revocations: [{keySha256: '" + b"ab" * 32 + b"', reason: leaked}]\n")
    return [base, *(p.read_bytes() for p in sorted((repo / "tests" / "data" / "policies").glob("*.yaml")))]


# -- sigstore bundles ---------------------------------------------------------------------------------

_trust: dict[str, object] = {}


def check_bundle(data: bytes) -> None:
    from scanner.models import SignatureResult
    from scanner.verify.identity import IdentityMatcher
    from scanner.verify.sigstore_bundle import verify_bundle_for_digest
    from scanner.verify.trustroot import load_trusted_root_file

    if "t" not in _trust:
        _trust["t"] = load_trusted_root_file(VECTORS / "sigstore-conformance" / "cases" /
                                             "invalid-ct-key_fail" / "trusted_root.json")
    r = verify_bundle_for_digest(data, DIGEST, trust=_trust["t"],  # type: ignore[arg-type]
                                 identities=[IdentityMatcher.regexp(subject=".*", issuer=".*")], now=NOW)
    assert isinstance(r, SignatureResult)


def seeds_bundle() -> list[bytes]:
    return _files("sigstore-conformance/cases/*/bundle.sigstore.json", limit=40) + _files(
        "sigstore-python/assets/**/*.sigstore.json", limit=20)


def _typed_cosign() -> tuple[type[BaseException], ...]:
    return (SigauditError,)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("pods", check_pods, seeds_pods),
    Target("docker-config", check_docker_config, seeds_docker_config),
    Target("helperoutput", check_helperoutput, seeds_helperoutput),
    Target("reference", check_reference, seeds_reference),
    Target("manifest", check_manifest, seeds_manifest),
    Target("cosign", check_cosign, seeds_cosign),
    Target("jws", check_jws, seeds_jws),
    Target("cose", check_cose, seeds_cose),
    Target("x509", check_x509, seeds_x509),
    Target("crl", check_crl, seeds_crl),
    Target("policy", check_policy, seeds_policy),
    Target("bundle", check_bundle, seeds_bundle),
)}


def run_one(target: Target, data: bytes) -> None:
    """Run ``target`` on ``data``; raise :class:`Finding` when an untyped exception escapes."""
    try:
        target.check(data)
    except target.typed:
        return
    except Finding:
        raise
    except Exception as exc:
        raise Finding(f"{target.name}: {type(exc).__name__}: {exc}") from exc
