"""Sigstore trust roots: a ``trusted_root.json`` file, Kyverno-style PEMs, or the public-good root.

Everything becomes one sigstore-python ``TrustedRoot`` (protobuf-specs ``trusted_root.json``), so
bundle verification, SET/checkpoint/SCT keys and TSA chains all come from the same place.

* ``load_trusted_root_file(path)``: the file of the Sigstore protobuf specs (private deployments,
  air-gapped clusters).
* ``trust_from_pems(roots_pem, rekor_pem, ctlog_pem)``: Kyverno's ``roots`` + ``rekor.pubkey`` +
  ``ctlog.pubkey``; assembled into an equivalent ``trusted_root.json`` with open-ended validity.
* ``public_good_trust(offline=...)``: the Sigstore public-good instance through sigstore-python's TUF
  client, whose cache lives on disk (``~/.cache/sigstore-python``, ``~/.local/share/sigstore-python``);
  offline it uses the cache, or the root embedded in sigstore-python when the cache is empty.

Loading happens at the edge (policy loading, or lazily once per process for the public-good root);
verification itself never reads files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from sigstore.models import TrustedRoot
from sigstore_models.trustroot import v1 as trustroot_v1

from scanner.errors import ConfigError
from scanner.verify import sources

_log = logging.getLogger(__name__)

MAX_TRUSTED_ROOT_BYTES = 4 * 1024 * 1024
_EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class SigstoreTrust:
    """A loaded Sigstore trust root plus where it came from (for names and fingerprints)."""

    root: TrustedRoot
    source: str
    fingerprint: str  # sha256 of the trusted_root.json bytes
    raw: bytes = field(repr=False, default=b"")


def trust_from_json(raw: bytes, *, source: str) -> SigstoreTrust:
    """Parse ``trusted_root.json`` bytes (raises ``ConfigError`` when malformed)."""
    if len(raw) > MAX_TRUSTED_ROOT_BYTES:
        raise ConfigError(f"trusted root larger than {MAX_TRUSTED_ROOT_BYTES} bytes", source=source)
    try:
        inner = trustroot_v1.TrustedRoot.from_json(raw)
        root = TrustedRoot(inner)
    except Exception as exc:  # pydantic ValidationError, sigstore Error, ValueError ...
        raise ConfigError(f"not a valid Sigstore trusted_root.json: {exc}", source=source) from exc
    if not inner.tlogs:
        raise ConfigError("trusted root has no transparency log (tlogs)", source=source)
    return SigstoreTrust(root, source, hashlib.sha256(raw).hexdigest(), raw)


def load_trusted_root_file(path: str | Path, *, base_dir: Path | None = None) -> SigstoreTrust:
    p = sources.under(base_dir, path)
    try:
        raw = sources.read_bytes(p)
    except OSError as exc:
        raise ConfigError(f"cannot read trusted root: {exc}", source=str(p)) from exc
    return trust_from_json(raw, source=str(p))


def read_pem_arg(text_or_path: str, base_dir: Path | None, what: str) -> bytes:
    if "-----BEGIN" in text_or_path:
        return text_or_path.encode()
    p = sources.under(base_dir, text_or_path)
    try:
        return sources.read_bytes(p)
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc}", source=str(p)) from exc


def _key_details(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {
            "secp256r1": "PKIX_ECDSA_P256_SHA_256",
            "secp384r1": "PKIX_ECDSA_P384_SHA_384",
            "secp521r1": "PKIX_ECDSA_P521_SHA_512",
        }.get(key.curve.name, "UNSPECIFIED")
    if isinstance(key, rsa.RSAPublicKey):
        return "PKIX_RSA_PKCS1V15_2048_SHA256" if key.key_size <= 2048 else (
            "PKIX_RSA_PKCS1V15_3072_SHA256" if key.key_size <= 3072 else "PKIX_RSA_PKCS1V15_4096_SHA256")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "PKIX_ED25519"
    return "UNSPECIFIED"


def _log_instance(pem: bytes, what: str) -> dict[str, object]:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ConfigError(f"{what} is not a PEM public key: {exc}") from exc
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    details = _key_details(key)
    if details == "UNSPECIFIED":
        raise ConfigError(f"{what}: unsupported key type")
    return {
        "baseUrl": "",
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": base64.b64encode(der).decode(),
            "keyDetails": details,
            "validFor": {"start": _EPOCH},
        },
        "logId": {"keyId": base64.b64encode(hashlib.sha256(der).digest()).decode()},
    }


def _name_attr(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    attrs = cert.subject.get_attributes_for_oid(oid)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def trusted_root_json_from_pems(roots_pem: bytes, rekor_pem: bytes, ctlog_pem: bytes | None) -> bytes:
    """Assemble a ``trusted_root.json`` from Kyverno-style PEM material (open-ended validity)."""
    try:
        certs = x509.load_pem_x509_certificates(roots_pem)
    except ValueError as exc:
        raise ConfigError(f"roots is not PEM certificates: {exc}") from exc
    if not certs or len(certs) > 10:
        raise ConfigError("roots must hold between 1 and 10 PEM certificates")
    doc: dict[str, object] = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [_log_instance(rekor_pem, "rekor.pubkey")],
        "certificateAuthorities": [
            {
                "subject": {"organization": _name_attr(certs[-1], NameOID.ORGANIZATION_NAME),
                            "commonName": _name_attr(certs[-1], NameOID.COMMON_NAME)},
                "uri": "",
                "certChain": {
                    "certificates": [
                        {"rawBytes": base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()}
                        for c in certs
                    ]
                },
                "validFor": {"start": _EPOCH},
            }
        ],
        "ctlogs": [_log_instance(ctlog_pem, "ctlog.pubkey")] if ctlog_pem else [],
        "timestampAuthorities": [],
    }
    return json.dumps(doc, sort_keys=True).encode()


def trust_from_pems(
    roots: str, rekor_pubkey: str, ctlog_pubkey: str | None, *, base_dir: Path | None = None
) -> SigstoreTrust:
    raw = trusted_root_json_from_pems(
        read_pem_arg(roots, base_dir, "roots"),
        read_pem_arg(rekor_pubkey, base_dir, "rekor.pubkey"),
        read_pem_arg(ctlog_pubkey, base_dir, "ctlog.pubkey") if ctlog_pubkey else None,
    )
    return trust_from_json(raw, source="keyless roots/rekor/ctlog PEMs")


def _cached_tuf_expiry() -> datetime | None:
    """When the cached TUF ``timestamp.json`` of the public-good repository expires (None when there
    is none, or it cannot be read): the TUF rule for how long cached metadata may be believed."""
    from sigstore._internal.tuf import DEFAULT_TUF_URL, _get_dirs

    metadata_dir, _ = _get_dirs(DEFAULT_TUF_URL)
    try:
        doc = json.loads((metadata_dir / "timestamp.json").read_bytes())
        return datetime.fromisoformat(str(doc["signed"]["expires"]).replace("Z", "+00:00"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


PUBLIC_GOOD = "sigstore public-good (TUF)"


def public_good_trust(*, offline: bool, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> SigstoreTrust:
    """The public-good root (see :func:`_public_good_root`), read through the trust sources: recorded into
    a scan's trust snapshot, and replayed from an evidence pack without TUF, its cache or the network."""
    raw = sources.fetched("sigstore", "public-good trusted_root.json",
                          lambda: _public_good_root(offline=offline, now=now))
    return trust_from_json(raw, source=PUBLIC_GOOD)


def _public_good_root(*, offline: bool, now: Callable[[], datetime]) -> bytes:
    """The Sigstore public-good root through sigstore-python's TUF client.

    Online: refresh TUF metadata; when the refresh fails, the on-disk cache is used (a warning is
    logged) only while its TUF timestamp metadata has not expired. Past that, a stale root could
    still trust a CA or log that a TUF update has since retired (a freeze attack, which is what TUF's
    expiry prevents): ``ConfigError``. Offline (``SIGAUDIT_SIGSTORE_OFFLINE=1``, chosen deliberately
    for air-gapped clusters): the cache only (sigstore-python seeds it from its embedded root).
    Raises ``ConfigError`` when no root can be had.
    """
    from sigstore.models import ClientTrustConfig

    errors: list[str] = []
    for mode in ((True,) if offline else (False, True)):
        if mode and not offline:
            expires = _cached_tuf_expiry()
            if expires is None or expires <= now():
                errors.append("offline cache: " + (f"its TUF metadata expired at {expires.isoformat()}"
                                                   if expires is not None else "it was never refreshed")
                              + "; a stale root may still trust a retired CA or log (set "
                                "SIGAUDIT_SIGSTORE_OFFLINE=1 to use the cached root deliberately)")
                continue
        try:
            config = ClientTrustConfig.production(offline=mode)
            root = config.trusted_root
        except Exception as exc:  # TUFError, OSError, validation errors
            errors.append(f"{'offline cache' if mode else 'TUF refresh'}: {exc}")
            if not mode:
                _log.warning("Sigstore public-good TUF refresh failed (%s); trying the on-disk cache", exc)
            continue
        return bytes(root._inner.to_json().encode())
    raise ConfigError("cannot load the Sigstore public-good trust root: " + "; ".join(errors))


class LazyTrust:
    """A trust root loaded on first use, once (the public-good TUF root), remembering a failure."""

    def __init__(self, loader: Callable[[], SigstoreTrust], *, name: str, label: str = "sigstore-public-good") -> None:
        self._loader = loader
        self.name = name
        self.label = label  # names what will be loaded (before it is), for configuration fingerprints
        self._lock = threading.Lock()
        # Loaded on first use, in whichever thread: through the trust sources in force now (at policy load).
        self._sources = sources.current()
        self._value: SigstoreTrust | None = None
        self._error: ConfigError | None = None
        self._used: list[sources.Use] = []  # what the load fetched: each later use is one of it too

    def get(self) -> SigstoreTrust:
        with self._lock:
            if self._value is not None and not all(
                    self._sources.reusable(u.kind, u.ref, u.data) for u in self._used if u.data is not None):
                self._value = None  # a replay of an image that recorded another root: load that one
            if self._value is None and self._error is None:
                used: list[sources.Use] = []
                try:
                    with sources.reading_from(self._sources), sources.noting(lambda u: used.append(u) if u.fetched
                                                                             else None):
                        self._value = self._loader()
                    self._used = used
                except ConfigError as exc:
                    self._error = exc
                except Exception as exc:
                    self._error = ConfigError(f"cannot load {self.name}: {exc}")
            if self._error is not None:
                raise self._error
            assert self._value is not None
            return self._value


def log_instances(pem: bytes, what: str) -> list[dict[str, object]]:
    """``trusted_root.json`` log entries (open-ended validity) for one or more PEM public keys;
    ``ConfigError`` when there is none or one is unusable (called at policy load)."""
    marker = b"-----BEGIN PUBLIC KEY-----"
    chunks = [marker + c for c in pem.split(marker)[1:]]
    if not chunks:
        raise ConfigError(f"{what} holds no PEM public key")
    return [_log_instance(c, what) for c in chunks]


def with_log_keys(trust: SigstoreTrust, *, rekor_pem: bytes | None = None,
                  ctlog_pem: bytes | None = None) -> SigstoreTrust:
    """The same trust root with its transparency-log keys (``rekor_pem``) and/or its CT-log keys
    (``ctlog_pem``) replaced by the policy's, as cosign's ``--rekor-public-key`` / Kyverno's
    ``rekor.pubkey`` and ``ctlog.pubkey`` replace them: every format the root then serves (legacy
    ``.sig`` SETs, Sigstore bundles, SCTs) is judged with those keys, and the fingerprint (the
    decision identity) names the result."""
    if rekor_pem is None and ctlog_pem is None:
        return trust
    doc = json.loads(trust.raw or trust.root._inner.to_json().encode())
    replaced = []
    if rekor_pem is not None:
        doc["tlogs"] = log_instances(rekor_pem, "rekor.pubkey")
        replaced.append("Rekor")
    if ctlog_pem is not None:
        doc["ctlogs"] = log_instances(ctlog_pem, "ctlog.pubkey")
        replaced.append("CT log")
    raw = json.dumps(doc, sort_keys=True).encode()
    return trust_from_json(raw, source=f"{trust.source} with the policy's {' and '.join(replaced)} key")


class FulcioChainError(ValueError):
    """The certificate does not chain to a Fulcio CA of the trust root valid at the given time."""


def fulcio_chain_at(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], trust: SigstoreTrust,
                    when: datetime) -> list[x509.Certificate]:
    """Path from the leaf to a Fulcio CA of the trust root **whose ``validFor`` covers** ``when``,
    with every certificate valid at ``when`` (sigstore-go ``VerifyLeafCertificate``). sigstore-python
    trusts every CA of the root whatever its ``validFor`` (``get_fulcio_certs``), so a CA retired
    from the root (its X.509 validity often runs years longer) would still vouch for certificates
    issued after its retirement; every keyless path calls this with each verified signing time.
    Fulcio leaves carry codeSigning, not clientAuth: only the EKU validators are relaxed, as
    sigstore-python does."""
    from cryptography.x509 import ExtendedKeyUsage
    from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store
    from cryptography.x509.verification import VerificationError as X509VerificationError

    anchors = fulcio_certs_at(trust, when)
    if not anchors:
        retired = [f"{ca.subject.common_name or ca.uri or '?'} (validFor {ca.valid_for.start.isoformat()} to "
                   f"{ca.valid_for.end.isoformat() if ca.valid_for.end else 'open'})"
                   for ca in trust.root._inner.certificate_authorities][:4]
        raise FulcioChainError(f"no Fulcio CA of the trust root is valid at {when.isoformat()}"
                               + (f"; retired or not yet valid: {', '.join(retired)}" if retired else ""))
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(ExtendedKeyUsage, Criticality.NON_CRITICAL,
                                                                     None)
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(ExtendedKeyUsage, Criticality.NON_CRITICAL,
                                                                     None)
    verifier = (PolicyBuilder().store(Store(anchors)).time(when)
                .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy).build_client_verifier())
    try:
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except (X509VerificationError, x509.UnsupportedGeneralNameType) as exc:
        raise FulcioChainError(f"certificate does not chain to a Fulcio CA of the trust root valid at "
                               f"{when.isoformat()}: {exc}") from exc


def _timerange_covers(valid: object, when: datetime) -> bool:
    """protobuf-specs ``TimeRange`` is a closed interval; no range means no bound."""
    if valid is None:
        return True
    start, end = getattr(valid, "start", None), getattr(valid, "end", None)
    return (start is None or start <= when) and (end is None or when <= end)


def _log_problem_at(logs: Sequence[trustroot_v1.TransparencyLogInstance], what: str, key_id: bytes,
                    times: Sequence[datetime], at: str) -> str | None:
    matching = [t for t in logs if t.log_id.key_id == key_id]
    if not matching:
        return f"no {what} of the trust root has log id {key_id.hex()}"
    for when in times:
        if not any(_timerange_covers(t.public_key.valid_for, when) for t in matching):
            ends = sorted(str(t.public_key.valid_for.end.isoformat()) for t in matching
                          if t.public_key.valid_for is not None and t.public_key.valid_for.end is not None)
            retired = f" (retired at {ends[-1]})" if ends else ""
            return (f"the key of {what} {key_id.hex()} is not valid at {at} {when.isoformat()}"
                    f"{retired} (validFor in the trust root)")
    return None


def fulcio_profile_problem(leaf: x509.Certificate) -> str | None:
    """The Fulcio certificate profile sigstore-python checks (its ``_verify_common_signing_cert``
    step 3): key usage digitalSignature, extended key usage codeSigning. None when it holds."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        return f"certificate lacks {exc.oid.dotted_string}"
    except ValueError as exc:
        return f"certificate extensions are malformed: {exc}"
    if not ku.digital_signature:
        return "certificate key usage is not digitalSignature"
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        return "certificate extended key usage lacks codeSigning"
    return None


def tlog_problem_at(trust: SigstoreTrust, key_id: bytes, when: datetime | Sequence[datetime],
                    at: str = "the entry's integrated time") -> str | None:
    """None when the trust root has a transparency log (Rekor) with this log id (key id) whose key's
    ``validFor`` (a closed interval) covers ``when`` (an entry's integrated time, or every verified
    signing time); else why not. sigstore-python accepts entries of a log whatever its key's
    validity period; sigstore-go and this project's legacy SET check (``scanner.verify.rekor``) do not."""
    times = [when] if isinstance(when, datetime) else list(when)
    return _log_problem_at(trust.root._inner.tlogs, "transparency log (Rekor)", key_id, times, at)


def ctlog_problem_at(trust: SigstoreTrust, key_id: bytes, times: Sequence[datetime],
                     at: str = "the verified signing time") -> str | None:
    """As :func:`tlog_problem_at`, for the CT log that signed a certificate's SCT: sigstore-python
    verifies the SCT with every CT key of the root whatever its ``validFor``."""
    return _log_problem_at(trust.root._inner.ctlogs, "CT log", key_id, times, at)


def sct_problem_at(trust: SigstoreTrust, cert: x509.Certificate, times: Sequence[datetime]) -> str | None:
    """The SCT sigstore-python verifies (the certificate's one embedded SCT) must come from a CT log
    whose key is valid at every verified signing time (and at the SCT's own timestamp)."""
    try:
        scts = list(cert.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps).value)
    except x509.ExtensionNotFound:
        return "the certificate carries no SCT"
    except ValueError as exc:
        return f"the certificate's SCT extension is malformed: {exc}"
    if len(scts) != 1:
        return f"expected one SCT in the certificate, found {len(scts)}"
    sct = scts[0]
    return ctlog_problem_at(trust, sct.log_id, [*times, sct.timestamp.replace(tzinfo=UTC)],
                            "the verified signing time / SCT time")


def material_valid_at(trust: SigstoreTrust, times: Sequence[datetime]) -> SigstoreTrust:
    """The same trust root keeping only the material (Fulcio CAs, Rekor keys, CT keys, TSAs) whose
    ``validFor`` covers every one of ``times`` (protobuf-specs TrustedRoot; sigstore-go applies
    it so). Handed to sigstore-python, which does not read ``validFor`` for CAs, Rekor or CT keys,
    it makes retired material unusable whatever the code path that picks it."""
    doc = json.loads(trust.raw or trust.root._inner.to_json().encode())

    def covers(valid: object) -> bool:
        if not isinstance(valid, dict):
            return True
        start = _parse_time(valid.get("start"))
        end = _parse_time(valid.get("end"))
        return all((start is None or start <= t) and (end is None or t <= end) for t in times)

    doc["certificateAuthorities"] = [c for c in doc.get("certificateAuthorities") or []
                                     if covers(c.get("validFor"))]
    doc["timestampAuthorities"] = [c for c in doc.get("timestampAuthorities") or []
                                   if covers(c.get("validFor"))]
    for logs in ("tlogs", "ctlogs"):
        doc[logs] = [t for t in doc.get(logs) or [] if covers((t.get("publicKey") or {}).get("validFor"))]
    raw = json.dumps(doc, sort_keys=True).encode()
    inner = trustroot_v1.TrustedRoot.from_json(raw)
    return SigstoreTrust(TrustedRoot(inner), f"{trust.source} (material valid at the signing time)",
                         hashlib.sha256(raw).hexdigest(), raw)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def ca_valid_at(ca: trustroot_v1.CertificateAuthority, when: datetime) -> bool:
    """``validFor`` is a closed interval (protobuf-specs TimeRange)."""
    start = ca.valid_for.start
    end = ca.valid_for.end
    return start <= when and (end is None or when <= end)


def fulcio_certs_at(trust: SigstoreTrust, when: datetime) -> list[x509.Certificate]:
    """Certificates of every Fulcio CA whose validity period covers ``when``."""
    out: list[x509.Certificate] = []
    for ca in trust.root._inner.certificate_authorities:
        if ca_valid_at(ca, when):
            out.extend(x509.load_der_x509_certificate(c.raw_bytes) for c in ca.cert_chain.certificates)
    return out


def utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
