"""Sigstore bundles (v0.1 to v0.3) bound to a running image digest.

Certificate (keyless) bundles are verified by **sigstore-python** (``Verifier.verify_dsse`` /
``verify_artifact``: trusted time, chain at that time, SCT, identity policy, inclusion proof,
checkpoint, SET, entry consistency). Written here, because sigstore-python does not do it:

* the binding to the image: a DSSE in-toto statement must name the running digest among its
  ``subject[].digest.sha256`` (cosign ``IntotoSubjectClaimVerifier``); a message signature must be
  over the digest (``messageDigest`` = the manifest's sha256);
* public-key ("managed key") bundles, whose verification material is only a key hint: the
  signature on ``cryptography``, the log entry's consistency (hashedrekord 0.0.1/0.0.2, dsse 0.0.1)
  by hand, while the inclusion proof, checkpoint, SET and RFC 3161 timestamps reuse
  sigstore-python's own checks (``TransparencyLogEntry._verify``, ``Verifier._verify_signed_timestamp``);
* the predicate types of attestations, recorded in ``details["predicate_types"]``;
* what the bundle is (``details["role"]``), as cosign v3 writes them: ``cosign sign`` makes an
  **image signature** — a DSSE in-toto statement with predicate type :data:`COSIGN_SIGN_PREDICATE`,
  whose ``-a`` annotations are the ``annotations`` of the statement's subject (cosign
  ``signDigestBundle``, checked by ``IntotoSubjectClaimVerifier``) — or, from other clients, a
  message signature over the digest; any other predicate type (``cosign attest --type spdxjson``,
  SLSA, ...) is an **attestation**, never an image signature;
* the policy's required annotations, on image signatures (a message signature carries none).

Spec: sigstore protobuf-specs ``sigstore_bundle.proto``, the client verification steps in
tests/data/vectors/SPEC-NOTES.md §2, cosign ``specs/BUNDLE_SPEC.md``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError
from sigstore.models import Bundle, InvalidBundle, TransparencyLogEntry

from scanner.models import Check, CheckName, Outcome, SignatureFailure, SignatureResult, SignedTime, TimeSource
from scanner.verify.conditions import ERROR as CONDITIONS_ERROR
from scanner.verify.conditions import AttestationRequirement
from scanner.verify.conditions import evaluate as evaluate_conditions
from scanner.verify.cosign_rules import (
    CONDITIONS,
    CONTENT_DSSE,
    CONTENT_MESSAGE,
    INTOTO_PAYLOAD_TYPE,
    ROLE_ATTESTATION,
    ROLE_SIGNATURE,
    content_role,
)
from scanner.verify.identity import IdentityMatcher, IdentityPolicy, cert_identity, match_identities
from scanner.verify.rekor import (
    RekorError,
    VerifyingKey,
    check_hashedrekord_body,
    verify_signature,
)
from scanner.verify.trustroot import (
    FulcioChainError,
    SigstoreTrust,
    fulcio_chain_at,
    fulcio_profile_problem,
    material_valid_at,
    sct_problem_at,
    tlog_problem_at,
    utc,
)

DEFAULT_MAX_BUNDLE_BYTES = 4 * 1024 * 1024
BUNDLE_MEDIA_TYPE_PREFIX = "application/vnd.dev.sigstore.bundle"
_MAX_TIMESTAMPS = 32  # as sigstore-python / sigstore-go
_FUTURE_SKEW = timedelta(minutes=5)
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
KIND = "sigstore-bundle"


def is_bundle_media_type(media_type: str | None) -> bool:
    return bool(media_type) and str(media_type).startswith(BUNDLE_MEDIA_TYPE_PREFIX)


def _with_proto3_defaults(bundle_bytes: bytes) -> bytes:
    """Restore the fields protobuf's JSON mapping omits when they hold their default value.

    ProtoJSON writers (cosign's protojson, sigstore-js's ts-proto encoder) drop empty repeated fields
    and zero scalars, but sigstore-python's bundle model requires some of them: a key-signed bundle
    made without a log (``cosign sign --key --tlog-upload=false``) has no ``tlogEntries`` at all, and
    the inclusion proof of entry 0 of a shard has no ``logIndex`` (and a one-leaf tree no ``hashes``).
    Refill exactly those, so the model sees what the writer meant; anything else is left to the
    model's own validation. Non-JSON input is returned unchanged (the model reports it)."""
    try:
        doc = json.loads(bundle_bytes)
    except (ValueError, UnicodeDecodeError):
        return bundle_bytes
    if not isinstance(doc, dict) or not isinstance(doc.get("verificationMaterial"), dict):
        return bundle_bytes
    vm = doc["verificationMaterial"]
    changed = False
    if "tlogEntries" not in vm:
        vm["tlogEntries"] = []
        changed = True
    entries = vm.get("tlogEntries")
    if isinstance(entries, list):
        for entry in entries:
            proof = entry.get("inclusionProof") if isinstance(entry, dict) else None
            if isinstance(proof, dict):
                for name, default in (("logIndex", "0"), ("hashes", [])):
                    if name not in proof:
                        proof[name] = default
                        changed = True
    return json.dumps(doc).encode() if changed else bundle_bytes


def _validation_summary(exc: ValueError) -> str:
    """``malformed bundle: <field path>: <message>`` rather than pydantic's bare headline."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) >= 3 and "validation error" in lines[0]:
        return f"{lines[0]} ({lines[1]}: {lines[2].split(' [type=')[0]})"
    return lines[0] if lines else type(exc).__name__


class _Fail(Exception):
    """One check failed; carries the check and the failure class."""

    def __init__(self, check: CheckName, reason: str, failure: SignatureFailure = SignatureFailure.INVALID):
        self.check, self.reason, self.failure = check, reason, failure
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class _Statement:
    """What the verifier needs from a verified in-toto statement."""

    predicate_type: str
    subject_annotations: Mapping[str, Any]  # of the first subject naming the digest (cosign's rule)
    document: Mapping[str, Any] = field(default_factory=dict)  # the whole statement (for conditions)
    subject: Mapping[str, Any] = field(default_factory=dict)  # the subject naming the digest


@dataclass(slots=True)
class _Outcome:
    signer: str = ""
    issuer: str | None = None
    key_sha256: str | None = None
    signed_at: SignedTime | None = None
    details: dict[str, Any] | None = None
    statement: _Statement | None = field(default=None)
    times: list[datetime] = field(default_factory=list)  # the verified signing times


def _spki_sha256(key: Any) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _statement(payload_type: str, payload: bytes, digest_hex: str) -> _Statement:
    """Bind an in-toto statement to the digest (cosign ``IntotoSubjectClaimVerifier``)."""
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise _Fail(CheckName.DIGEST, f"DSSE payload type {payload_type!r} is not an in-toto statement")
    try:
        stmt = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Fail(CheckName.INTEGRITY, f"in-toto statement is not JSON: {exc}") from exc
    if not isinstance(stmt, dict) or not isinstance(stmt.get("subject"), list):
        raise _Fail(CheckName.INTEGRITY, "in-toto statement has no subject list")
    if stmt.get("_type") not in ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"):
        raise _Fail(CheckName.INTEGRITY, f"unknown in-toto statement type {stmt.get('_type')!r}")
    for s in stmt["subject"][:1024]:
        if not (isinstance(s, dict) and isinstance(s.get("digest"), dict) and "sha256" in s["digest"]):
            continue
        if str(s["digest"]["sha256"]).lower() != digest_hex:
            continue
        ann = s.get("annotations")
        ptype = stmt.get("predicateType")
        return _Statement(ptype if isinstance(ptype, str) else "", ann if isinstance(ann, dict) else {}, stmt, s)
    raise _Fail(CheckName.DIGEST,
                f"the in-toto statement's subjects do not include sha256:{digest_hex} "
                "(attestation for another artifact)")


def _check_annotations(required: Mapping[str, str], content: str, statement: _Statement | None) -> str:
    """cosign ``-a k=v`` on an image-signature bundle: each must be on the statement's subject, as
    the same string (cosign compares the JSON values; ``1`` is not ``"1"``, absent is not ``"None"``)."""
    if content == CONTENT_MESSAGE or statement is None:
        raise _Fail(CheckName.INTEGRITY,
                    f"the policy requires annotations ({', '.join(sorted(required))}) but a message-signature "
                    "bundle carries none")
    have = statement.subject_annotations
    for key, want in sorted(required.items()):
        got = have.get(key)
        if not isinstance(got, str) or got != want:
            shown = "absent" if key not in have else repr(got)[:120]
            raise _Fail(CheckName.INTEGRITY, f"required annotation {key}={want!r} not on the signed subject "
                                             f"({shown})")
    return f"annotations {', '.join(f'{k}={v!r}' for k, v in sorted(required.items()))} signed"


# ----------------------------------------------------------------------------------------------
# certificate bundles: sigstore-python


def _verify_cert_bundle(bundle: Bundle, digest_hex: str, trust: SigstoreTrust,
                        identities: Sequence[IdentityMatcher], extra_policy: Any,
                        checks: list[Check]) -> _Outcome:
    from sigstore.hashes import Hashed
    from sigstore.verify import Verifier
    from sigstore.verify.policy import AllOf
    from sigstore_models.common.v1 import HashAlgorithm

    cert = bundle.signing_certificate
    ident = cert_identity(cert)
    ok, why = match_identities(cert, identities)
    if not ok:
        raise _Fail(CheckName.IDENTITY, why)
    checks.append(Check(CheckName.IDENTITY, Outcome.PASSED, why))

    policies: list[Any] = [IdentityPolicy(identities)]
    if extra_policy is not None:
        policies.append(extra_policy)

    def run(root: SigstoreTrust) -> tuple[Any, tuple[str, bytes] | None]:
        """sigstore-python's verification with ``root``: (the verifier, the DSSE payload)."""
        verifier = Verifier(trusted_root=root.root)
        if bundle._inner.dsse_envelope is not None:
            return verifier, verifier.verify_dsse(bundle, AllOf(policies))
        hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest_hex))
        verifier.verify_artifact(hashed, bundle, AllOf(policies))
        return verifier, None

    details: dict[str, Any] = {}
    try:
        verifier, dsse = run(trust)
        times = verifier._establish_time(bundle)
    except (VerificationError, InvalidBundle) as exc:
        raise _Fail(CheckName.AUTHENTICITY, f"sigstore verification failed: {exc}") from exc
    except SigstoreError as exc:  # MetadataError etc.: the trust root could not be used
        raise _Fail(CheckName.AUTHENTICITY, f"sigstore verification could not run: {exc}",
                    SignatureFailure.ERROR) from exc

    # What sigstore-python leaves out: the trust root's validity periods (``validFor``). Only the
    # material valid at every verified signing time may vouch: the Fulcio CA that issued the
    # certificate, the Rekor key of the log entry, the CT key of the SCT (the TSAs' own periods
    # sigstore-python checks). Each is checked here, for a reason that names it ...
    when = [t.time for t in times]
    for t in when:
        try:
            fulcio_chain_at(cert, [], trust, t)
        except FulcioChainError as exc:
            raise _Fail(CheckName.AUTHENTICITY, str(exc)) from exc
    _check_log_validity(bundle._inner.verification_material.tlog_entries, trust, when)
    problem = sct_problem_at(trust, cert, when)
    if problem is not None:
        raise _Fail(CheckName.AUTHENTICITY, f"SCT: {problem}")
    # ... and the whole verification runs again on the root without the material that is not, so
    # nothing sigstore-python picks from the root can be retired material.
    try:
        _, dsse_again = run(material_valid_at(trust, when))
    except (SigstoreError, InvalidBundle, ValueError) as exc:
        raise _Fail(CheckName.AUTHENTICITY, "sigstore verification failed with only the trust material valid "
                                            f"at the signing time: {exc}") from exc
    if dsse_again != dsse:
        raise _Fail(CheckName.AUTHENTICITY, "sigstore verification gave another payload on the second run")

    if dsse is not None:
        ptype, payload = dsse
        checks.append(Check(CheckName.AUTHENTICITY, Outcome.PASSED,
                            "DSSE signature, certificate chain, SCT and log entry verified"))
        details["content"] = CONTENT_DSSE
        statement: _Statement | None = _statement(ptype, payload, digest_hex)
        assert statement is not None
        details["predicate_types"] = [statement.predicate_type]
    else:
        checks.append(Check(CheckName.AUTHENTICITY, Outcome.PASSED,
                            "signature over the digest, certificate chain, SCT and log entry verified"))
        details["content"] = CONTENT_MESSAGE
        details["predicate_types"] = []
        statement = None

    chain_fps = [hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()]
    details["chain_sha256"] = chain_fps
    details["verified_times"] = sorted(t.time.isoformat() for t in times)
    from sigstore._internal.timestamp import TimestampSource

    signed = [SignedTime(t.time.astimezone(UTC), TimeSource.TSA if t.source is TimestampSource.TIMESTAMP_AUTHORITY
                         else TimeSource.REKOR_SET) for t in times]
    return _Outcome(
        signer=ident.primary, issuer=ident.issuer, key_sha256=_spki_sha256(cert.public_key()),
        signed_at=SignedTime.earliest(signed), details=details, statement=statement,
    )


def _check_log_validity(entries: Sequence[Any], trust: SigstoreTrust, times: Sequence[datetime]) -> None:
    """Each log entry must come from a log whose key the trust root holds valid at its integrated
    time when that serves as a signing time (it has an inclusion promise), and at every verified
    signing time (an entry proven only by its checkpoint, as Rekor v2's, has no time of its own)."""
    for e in entries:
        problem = None
        if e.integrated_time and e.inclusion_promise:
            problem = tlog_problem_at(trust, e.log_id.key_id, utc(e.integrated_time))
        if problem is None and times:
            problem = tlog_problem_at(trust, e.log_id.key_id, times, "the verified signing time")
        if problem is not None:
            raise _Fail(CheckName.TLOG, problem)


def _bundle_certificate(inner: Any) -> x509.Certificate:
    vm = inner.verification_material
    try:
        if vm.certificate is not None:
            return x509.load_der_x509_certificate(vm.certificate.raw_bytes)
        if vm.x509_certificate_chain is not None and vm.x509_certificate_chain.certificates:
            return x509.load_der_x509_certificate(vm.x509_certificate_chain.certificates[0].raw_bytes)
    except ValueError as exc:
        raise _Fail(CheckName.INTEGRITY, f"bundle certificate is malformed: {exc}") from exc
    raise _Fail(CheckName.INTEGRITY, "bundle carries no certificate")


def _verify_cert_bundle_relaxed(inner: Any, digest_hex: str, trust: SigstoreTrust,
                                identities: Sequence[IdentityMatcher], checks: list[Check], *,
                                ignore_tlog: bool, ignore_sct: bool) -> _Outcome:
    """A certificate bundle under the policy's ``ignoreTlog`` / ``ignoreSCT`` (cosign's
    ``--insecure-ignore-tlog`` / ``--insecure-ignore-sct``), which sigstore-python cannot honour: it
    requires exactly one log entry and an SCT. The signature, log entry (when there is one, checked
    as for key bundles) and RFC 3161 timestamps are judged with the certificate's key; then the
    certificate as sigstore-python does (chain to a Fulcio CA valid at every verified time, Fulcio
    profile, SCT unless ignored, identity). Without a log entry only a timestamp gives a time: a
    Fulcio certificate lives minutes, and is never judged at scan time."""
    from sigstore._internal.sct import verify_sct
    from sigstore._internal.trust import KeyringPurpose

    cert = _bundle_certificate(inner)
    ident = cert_identity(cert)
    ok, why = match_identities(cert, identities)
    if not ok:
        raise _Fail(CheckName.IDENTITY, why)
    checks.append(Check(CheckName.IDENTITY, Outcome.PASSED, why))
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise _Fail(CheckName.AUTHENTICITY, "unsupported certificate key type")
    out = _verify_key_bundle(inner, digest_hex, trust, key, None, checks, ignore_tlog=ignore_tlog,
                             require_time=True)
    if not out.times:
        raise _Fail(CheckName.TIMESTAMP, "no trusted signing time: the log is ignored (ignoreTlog) and the bundle "
                                         "has no RFC 3161 timestamp from a TSA of the trust root")
    chain: list[x509.Certificate] = []
    for t in out.times:
        try:
            chain = fulcio_chain_at(cert, [], trust, t)
        except FulcioChainError as exc:
            raise _Fail(CheckName.AUTHENTICITY, str(exc)) from exc
    problem = fulcio_profile_problem(cert)
    if problem is not None:
        raise _Fail(CheckName.AUTHENTICITY, problem)
    if ignore_sct:
        checks.append(Check(CheckName.AUTHENTICITY, Outcome.SKIPPED, "SCT not checked (ignoreSCT)", enforced=False))
    else:
        try:
            verify_sct(cert, chain[1:], material_valid_at(trust, out.times).root.ct_keyring(KeyringPurpose.VERIFY))
        except SigstoreError as exc:
            raise _Fail(CheckName.AUTHENTICITY, f"failed to verify SCT on signing certificate: {exc}") from exc
        problem = sct_problem_at(trust, cert, out.times)
        if problem is not None:
            raise _Fail(CheckName.AUTHENTICITY, f"SCT: {problem}")
    checks.append(Check(CheckName.AUTHENTICITY, Outcome.PASSED,
                        "certificate chains to a Fulcio CA valid at the signing time"
                        + ("" if ignore_sct else ", SCT verified")))
    details = dict(out.details or {})
    details["chain_sha256"] = [hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()]
    return _Outcome(signer=ident.primary, issuer=ident.issuer, key_sha256=_spki_sha256(key),
                    signed_at=out.signed_at, details=details, statement=out.statement, times=out.times)


# ----------------------------------------------------------------------------------------------
# public-key bundles: hand-written on cryptography (sigstore-python refuses them)


def _verify_prehashed(key: VerifyingKey, signature: bytes, digest: bytes, artifact: bytes | None) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        else:
            if artifact is None:
                raise _Fail(CheckName.INTEGRITY, "Ed25519 message signatures need the artifact bytes",
                            SignatureFailure.ERROR)
            key.verify(signature, artifact)
    except InvalidSignature:
        return False
    return True


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _Fail(CheckName.TLOG, f"log entry: {what} missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Fail(CheckName.TLOG, f"log entry: {what} is not base64") from exc


def _same_key(pem_or_der: bytes, key: VerifyingKey) -> bool:
    from scanner.verify.rekor import load_signer

    try:
        other = load_signer(pem_or_der)
    except RekorError:
        return False
    other_key = other.public_key() if isinstance(other, x509.Certificate) else other
    return _spki_sha256(other_key) == _spki_sha256(key)


def _check_key_entry_body(entry: TransparencyLogEntry, *, key: VerifyingKey, signature: bytes,
                          digest: bytes, dsse_payload: bytes | None) -> str:
    """The log entry must describe this signature, key and artifact (CVE-2022-36056 class)."""
    kind = entry._inner.kind_version.kind
    version = entry._inner.kind_version.version
    body = entry._inner.canonicalized_body
    try:
        doc: Any = json.loads(body)
        spec: Any = doc["spec"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _Fail(CheckName.TLOG, f"log entry body is malformed: {exc}") from exc
    if (doc.get("kind"), doc.get("apiVersion")) != (kind, version):
        raise _Fail(CheckName.TLOG, "log entry body kind/version differ from the bundle's kindVersion")
    try:
        if kind == "hashedrekord" and version == "0.0.1":
            if dsse_payload is not None:
                raise _Fail(CheckName.TLOG, "a DSSE bundle cannot be logged as hashedrekord 0.0.1")
            check_hashedrekord_body(body, signature=signature, payload_sha256=digest.hex(), signer=key)
        elif kind == "hashedrekord" and version == "0.0.2":
            rek = spec["hashedRekordV002"]
            if rek["data"].get("algorithm") != "SHA2_256" or _b64(rek["data"]["digest"], "digest") != digest:
                raise _Fail(CheckName.TLOG, "log entry is for another artifact (data.digest differs)")
            if _b64(rek["signature"]["content"], "signature") != signature:
                raise _Fail(CheckName.TLOG, "log entry is for another signature")
            verifier = rek["signature"]["verifier"]
            # A key (managed-key bundles) or the signing certificate (keyless bundles).
            raw_key = _b64((verifier["x509Certificate"] if "x509Certificate" in verifier
                            else verifier["publicKey"])["rawBytes"], "verifier key")
            if not _same_key(raw_key, key):
                raise _Fail(CheckName.TLOG, "log entry is for another key")
        elif kind == "dsse" and version == "0.0.1":
            if dsse_payload is None:
                raise _Fail(CheckName.TLOG, "a message-signature bundle cannot be logged as dsse")
            ph = spec["payloadHash"]
            if ph.get("algorithm") != "sha256" or ph.get("value") != hashlib.sha256(dsse_payload).hexdigest():
                raise _Fail(CheckName.TLOG, "log entry payload hash does not match the envelope")
            sigs = spec["signatures"]
            if not isinstance(sigs, list) or len(sigs) != 1:
                raise _Fail(CheckName.TLOG, "log entry must list exactly the envelope's one signature")
            if _b64(sigs[0]["signature"], "signature") != signature or not _same_key(
                    _b64(sigs[0]["verifier"], "verifier"), key):
                raise _Fail(CheckName.TLOG, "log entry signatures do not match the envelope")
        else:
            raise _Fail(CheckName.TLOG, f"unsupported log entry type {kind}/{version}")
    except RekorError as exc:
        raise _Fail(CheckName.TLOG, exc.reason) from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise _Fail(CheckName.TLOG, f"log entry body lacks {exc}") from exc
    return f"{kind}/{version}"


def _verify_key_bundle(inner: Any, digest_hex: str, trust: SigstoreTrust, key: VerifyingKey,
                       artifact: bytes | None, checks: list[Check], ignore_tlog: bool = False,
                       require_time: bool = False) -> _Outcome:
    from rfc3161_client import decode_timestamp_response
    from sigstore._internal.trust import KeyringPurpose
    from sigstore.dsse import Envelope
    from sigstore.verify import Verifier
    from sigstore.verify import verifier as sigstore_verifier

    try:
        Bundle.BundleType(inner.media_type)
    except ValueError as exc:
        raise _Fail(CheckName.INTEGRITY, f"unsupported bundle media type {inner.media_type!r}") from exc
    vm = inner.verification_material
    entries = vm.tlog_entries
    tsrs_raw = (vm.timestamp_verification_data.rfc3161_timestamps
                if vm.timestamp_verification_data else [])
    if not entries and ignore_tlog and not tsrs_raw and not require_time:
        # ``cosign sign --key --tlog-upload=false`` (v3): no log entry, no timestamp. With the
        # policy's ``ignoreTlog: true`` (cosign ``--insecure-ignore-tlog``) the key signature and
        # the binding to the digest are the whole check, as for a legacy ``.sig`` without a bundle.
        return _verify_key_bundle_without_log(inner, digest_hex, key, checks)
    if len(entries) > 1 or (not entries and not ignore_tlog):
        raise _Fail(CheckName.INTEGRITY, "expected exactly one transparency log entry in the bundle"
                    + ("" if entries else " (set ignoreTlog: true for signatures made without a log)"))
    # No entry (the policy ignores the log): the RFC 3161 timestamps are the only trusted time.
    entry: TransparencyLogEntry | None = None
    if entries:
        try:
            entry = TransparencyLogEntry(entries[0])
        except InvalidBundle as exc:
            raise _Fail(CheckName.INTEGRITY, str(exc)) from exc
    if len(tsrs_raw) > _MAX_TIMESTAMPS:
        raise _Fail(CheckName.TIMESTAMP, f"too many signed timestamps: {len(tsrs_raw)}")
    if len({t.signed_timestamp for t in tsrs_raw}) != len(tsrs_raw):
        raise _Fail(CheckName.TIMESTAMP, "duplicate signed timestamps")
    promise = entry._inner.inclusion_promise if entry is not None else None
    if entry is not None and inner.media_type == Bundle.BundleType.BUNDLE_0_1 and not promise:
        raise _Fail(CheckName.INTEGRITY, "a v0.1 bundle must contain an inclusion promise")
    if not promise and not tsrs_raw:
        raise _Fail(CheckName.INTEGRITY, "bundle must contain an inclusion promise or signed timestamps")

    # The signature over the artifact (message) or the DSSE PAE.
    dsse_payload: bytes | None = None
    if inner.dsse_envelope is not None:
        try:
            env = Envelope(inner.dsse_envelope)
        except SigstoreError as exc:
            raise _Fail(CheckName.INTEGRITY, f"bad DSSE envelope: {exc}") from exc
        signature = env.signature
        if not verify_signature(key, signature, env.pae()):
            raise _Fail(CheckName.INTEGRITY, "DSSE signature does not verify with the configured key")
        dsse_payload = env._inner.payload
        digest = bytes.fromhex(digest_hex)
        statement: _Statement | None = _statement(env._inner.payload_type, dsse_payload, digest_hex)
        assert statement is not None
        ptypes = [statement.predicate_type]
        entry_digest = hashlib.sha256(env.pae()).digest() \
            if entry is not None and entry._inner.kind_version.version == "0.0.2" else digest
    elif inner.message_signature is not None:
        ms = inner.message_signature
        signature = ms.signature
        digest = bytes.fromhex(digest_hex)
        if ms.message_digest is not None and ms.message_digest.digest != digest:
            raise _Fail(CheckName.DIGEST, "the bundle's messageDigest is not the artifact's digest")
        if not _verify_prehashed(key, signature, digest, artifact):
            raise _Fail(CheckName.INTEGRITY, "signature does not verify with the configured key")
        ptypes = []
        statement = None
        entry_digest = digest
    else:
        raise _Fail(CheckName.INTEGRITY, "bundle has neither a message signature nor a DSSE envelope")
    checks.append(Check(CheckName.INTEGRITY, Outcome.PASSED,
                        "signature verified with the " + ("certificate's key" if require_time else "configured key")))

    # Trusted time: RFC 3161 timestamps from the trust root's TSAs, and the SET's integrated time.
    times: list[SignedTime] = []
    if tsrs_raw:
        if not trust.root.get_timestamp_authorities():
            raise _Fail(CheckName.TIMESTAMP, "bundle has signed timestamps but the trust root has no TSA")
        verifier = Verifier(trusted_root=trust.root)
        for raw in tsrs_raw:
            try:
                tsr = decode_timestamp_response(raw.signed_timestamp)
            except ValueError as exc:
                raise _Fail(CheckName.TIMESTAMP, "invalid timestamp response") from exc
            result = verifier._verify_signed_timestamp(tsr, signature)
            if result is not None:
                times.append(SignedTime(result.time.astimezone(UTC), TimeSource.TSA))
    if entry is not None and entry._inner.integrated_time and promise:
        kv = entry._inner.kind_version
        if not (kv.kind in ("dsse", "hashedrekord") and kv.version == "0.0.1"):
            raise _Fail(CheckName.TLOG, "integrated time only supported for dsse/hashedrekord 0.0.1")
        times.append(SignedTime(utc(entry._inner.integrated_time), TimeSource.REKOR_SET))
    if len(times) < sigstore_verifier.VERIFIED_TIME_THRESHOLD:
        raise _Fail(CheckName.TIMESTAMP, "not enough sources of verified time")

    when = [t.value for t in times]
    key_id = _spki_sha256(key)
    details = {"content": CONTENT_DSSE if dsse_payload is not None else CONTENT_MESSAGE,
               "predicate_types": ptypes, "verified_times": sorted(t.value.isoformat() for t in times)}
    if entry is None:
        checks.append(Check(CheckName.TLOG, Outcome.SKIPPED, "no transparency log entry; not required (ignoreTlog)",
                            enforced=False))
        return _Outcome(signer=f"sha256:{key_id}", key_sha256=key_id, signed_at=SignedTime.earliest(times),
                        details=details, statement=statement, times=when)
    _check_log_validity([entry._inner], trust, when)
    try:
        # Only the log keys valid at the signing time may prove the entry (sigstore-python's keyring
        # holds every key of the root whatever its validFor).
        entry._verify(material_valid_at(trust, when).root.rekor_keyring(KeyringPurpose.VERIFY))
    except VerificationError as exc:
        raise _Fail(CheckName.TLOG, f"invalid log entry: {exc}") from exc
    except SigstoreError as exc:
        raise _Fail(CheckName.TLOG, f"log entry could not be checked: {exc}", SignatureFailure.ERROR) from exc
    kind = _check_key_entry_body(entry, key=key, signature=signature, digest=entry_digest,
                                 dsse_payload=dsse_payload)
    checks.append(Check(CheckName.TLOG, Outcome.PASSED,
                        f"{kind} entry {entry._inner.log_index} included and consistent"))
    return _Outcome(signer=f"sha256:{key_id}", key_sha256=key_id, signed_at=SignedTime.earliest(times),
                    details=details, statement=statement, times=when)


def _verify_key_bundle_without_log(inner: Any, digest_hex: str, key: VerifyingKey,
                                   checks: list[Check]) -> _Outcome:
    """A key-signed DSSE bundle with neither a log entry nor a timestamp (policy ignores the log)."""
    from sigstore.dsse import Envelope

    if inner.dsse_envelope is None:
        raise _Fail(CheckName.INTEGRITY, "a bundle without a log entry must carry a DSSE envelope")
    try:
        env = Envelope(inner.dsse_envelope)
    except SigstoreError as exc:
        raise _Fail(CheckName.INTEGRITY, f"bad DSSE envelope: {exc}") from exc
    if not verify_signature(key, env.signature, env.pae()):
        raise _Fail(CheckName.INTEGRITY, "DSSE signature does not verify with the configured key")
    statement = _statement(env._inner.payload_type, env._inner.payload, digest_hex)
    checks.append(Check(CheckName.INTEGRITY, Outcome.PASSED, "signature verified with the configured key"))
    checks.append(Check(CheckName.TLOG, Outcome.SKIPPED, "no transparency log entry; not required (ignoreTlog)",
                        enforced=False))
    key_id = _spki_sha256(key)
    return _Outcome(signer=f"sha256:{key_id}", key_sha256=key_id, signed_at=None,
                    details={"content": CONTENT_DSSE, "predicate_types": [statement.predicate_type],
                             "verified_times": []}, statement=statement)


# ----------------------------------------------------------------------------------------------


def verify_bundle(
    bundle_bytes: bytes,
    artifact_sha256: str,
    *,
    trust: SigstoreTrust,
    identities: Sequence[IdentityMatcher] = (),
    public_key: VerifyingKey | None = None,
    now: datetime | None = None,
    artifact: bytes | None = None,
    extra_policy: Any = None,
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
    verifier_name: str = "sigstore bundle",
    ignore_tlog: bool = False,
    annotations: Mapping[str, str] | None = None,
    ignore_sct: bool = False,
    requirements: Sequence[AttestationRequirement] = (),
) -> SignatureResult:
    """Verify one Sigstore bundle over an artifact whose sha256 (hex) is given.

    Exactly one of ``identities`` (certificate bundles) and ``public_key`` (managed-key bundles).
    ``extra_policy`` is an optional sigstore-python ``VerificationPolicy`` applied on top.
    ``ignore_tlog`` accepts a bundle with no log entry (a key bundle then needs no timestamp either;
    a certificate bundle needs an RFC 3161 timestamp, its only trusted time). ``ignore_sct``
    (certificate bundles) does not ask the certificate for an SCT. A log entry or an SCT that is
    there is checked all the same when sigstore-python judges the bundle.
    ``annotations`` (cosign ``-a``) must be signed on an image-signature bundle's subject; they are
    not asked of attestations (as ``cosign verify-attestation`` does not). ``details["role"]`` says
    which of the two the bundle is. ``requirements`` (the policy's ``attestations``): the conditions
    for the predicate type of a verified attestation are evaluated over its statement, at ``now``;
    the outcome lands in ``details["conditions"]`` (the rules of :mod:`cosign_rules` judge it).
    Never raises for bad input: returns a ``SignatureResult`` (INVALID / ERROR with a reason).
    """
    checks: list[Check] = []

    def result(outcome: Outcome, reason: str, failure: SignatureFailure, out: _Outcome | None,
               extra: dict[str, Any]) -> SignatureResult:
        details = dict(out.details or {}) if out else {}
        details.update(extra)
        return SignatureResult(
            kind=KIND, verifier=verifier_name, outcome=outcome, reason=reason, failure=failure,
            signer=out.signer if out else "", key_sha256=out.key_sha256 if out else None,
            identity=(out.signer or None) if out and out.issuer else None,
            issuer=out.issuer if out else None, signed_at=out.signed_at if out else None,
            checks=tuple(checks), details=details,
        )

    extra: dict[str, Any] = {"artifact_sha256": artifact_sha256}
    try:
        if (not identities) == (public_key is None):
            raise _Fail(CheckName.AUTHENTICITY,
                        "a bundle verifier needs exactly one of identities / public key",
                        SignatureFailure.ERROR)
        if not re.fullmatch(r"[0-9a-f]{64}", artifact_sha256):
            raise _Fail(CheckName.DIGEST, f"not a sha256 hex digest: {artifact_sha256!r}",
                        SignatureFailure.ERROR)
        if len(bundle_bytes) > max_bundle_bytes:
            raise _Fail(CheckName.INTEGRITY, f"bundle is {len(bundle_bytes)} bytes, larger than the "
                                             f"{max_bundle_bytes}-byte bound")
        from sigstore_models.bundle.v1 import Bundle as _InnerBundle

        try:
            inner = _InnerBundle.from_json(_with_proto3_defaults(bundle_bytes))
        except ValueError as exc:
            raise _Fail(CheckName.INTEGRITY, f"malformed bundle: {_validation_summary(exc)}") from exc
        extra["media_type"] = inner.media_type
        entries = inner.verification_material.tlog_entries
        if entries:
            extra["log_index"] = int(entries[0].log_index)
            extra["log_id"] = entries[0].log_id.key_id.hex()
            extra["tlog_kind"] = f"{entries[0].kind_version.kind}/{entries[0].kind_version.version}"
            if entries[0].integrated_time:
                extra["integrated_time"] = int(entries[0].integrated_time)
        if inner.verification_material.public_key is not None:
            if public_key is None:
                raise _Fail(CheckName.AUTHENTICITY, "bundle is signed with a managed key (no certificate); "
                                                   "this verifier trusts certificate identities")
            out = _verify_key_bundle(inner, artifact_sha256, trust, public_key, artifact, checks, ignore_tlog)
        else:
            if public_key is not None:
                raise _Fail(CheckName.AUTHENTICITY,
                            "bundle carries a certificate; this verifier trusts a key")
            if ignore_sct or (ignore_tlog and not entries):
                # What sigstore-python cannot be told to skip (it requires one log entry and an SCT).
                if extra_policy is not None:
                    raise _Fail(CheckName.AUTHENTICITY, "an extra verification policy needs sigstore-python, "
                                                        "which cannot ignore the log or the SCT",
                                SignatureFailure.ERROR)
                out = _verify_cert_bundle_relaxed(inner, artifact_sha256, trust, identities, checks,
                                                  ignore_tlog=ignore_tlog, ignore_sct=ignore_sct)
            else:
                try:
                    bundle = Bundle(inner)
                except (InvalidBundle, VerificationError, ValueError) as exc:
                    raise _Fail(CheckName.INTEGRITY, f"invalid bundle: {exc}") from exc
                out = _verify_cert_bundle(bundle, artifact_sha256, trust, identities, extra_policy, checks)
        if now is not None and out.signed_at is not None and out.signed_at.value > now + _FUTURE_SKEW:
            raise _Fail(CheckName.TIMESTAMP, f"signing time {out.signed_at.value.isoformat()} is in the future")
        details = out.details if out.details is not None else {}
        out.details = details
        ptypes_seen = details.get("predicate_types") or []
        role = content_role(str(details.get("content", "")), ptypes_seen[0] if ptypes_seen else None)
        extra["role"] = role
        if annotations and role == ROLE_SIGNATURE:
            checks.append(Check(CheckName.INTEGRITY, Outcome.PASSED,
                                _check_annotations(annotations, str(details.get("content", "")), out.statement)))
    except _Fail as f:
        checks.append(Check(f.check, Outcome.ERROR if f.failure is SignatureFailure.ERROR else Outcome.FAILED,
                            f.reason))
        outcome = Outcome.ERROR if f.failure is SignatureFailure.ERROR else Outcome.FAILED
        return result(outcome, f.reason, f.failure, None, extra)
    except Exception as exc:  # a bug or an unexpected library error: never crash the scan
        reason = f"bundle verification could not run: {type(exc).__name__}: {exc}"
        checks.append(Check(CheckName.AUTHENTICITY, Outcome.ERROR, reason))
        return result(Outcome.ERROR, reason, SignatureFailure.ERROR, None, extra)
    checks.append(Check(CheckName.DIGEST, Outcome.PASSED, f"bound to sha256:{artifact_sha256}"))
    if extra.get("role") == ROLE_ATTESTATION and out.statement is not None:
        # Only now, the statement verified and bound to the digest, are its contents read.
        judged = _judge_conditions(requirements, out.statement, now)
        if judged is not None:
            extra[CONDITIONS] = judged
    ptypes = (out.details or {}).get("predicate_types") or []
    what = f"attestation {ptypes[0]}" if extra.get("role") == ROLE_ATTESTATION else "image signature"
    who = f"{out.signer} (issuer {out.issuer})" if out.issuer else out.signer
    return result(Outcome.PASSED, f"sigstore bundle {what} by {who} verified", SignatureFailure.NONE,
                  out, extra)


def _judge_conditions(requirements: Sequence[AttestationRequirement], statement: _Statement,
                      now: datetime | None) -> dict[str, Any] | None:
    req = next((r for r in requirements if r.predicate_type == statement.predicate_type), None)
    if req is None:
        return None
    if now is None:
        return {"predicate_type": req.predicate_type, "outcome": CONDITIONS_ERROR,
                "results": [{"expression": "", "outcome": CONDITIONS_ERROR, "value": "no scan clock given"}]}
    try:
        outcome, results = evaluate_conditions(req, statement.document, statement.subject, now)
    except Exception as exc:  # the evaluator's own bug: the conditions could not be judged
        outcome, results = CONDITIONS_ERROR, ()
        return {"predicate_type": req.predicate_type, "outcome": outcome,
                "results": [{"expression": "", "outcome": outcome, "value": f"{type(exc).__name__}: {exc}"[:300]}]}
    return {"predicate_type": req.predicate_type, "outcome": outcome, "results": [r.as_details() for r in results]}


def verify_bundle_for_digest(
    bundle_bytes: bytes,
    image_digest: str,
    *,
    trust: SigstoreTrust,
    identities: Sequence[IdentityMatcher] = (),
    public_key: VerifyingKey | None = None,
    now: datetime | None = None,
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
    verifier_name: str = "sigstore bundle",
    ignore_tlog: bool = False,
    annotations: Mapping[str, str] | None = None,
    ignore_sct: bool = False,
    requirements: Sequence[AttestationRequirement] = (),
) -> SignatureResult:
    """Verify a bundle found as an OCI referrer of ``image_digest`` (``sha256:<hex>``).

    DSSE bundles must carry an in-toto statement naming the digest; message signatures must be
    over the digest (the sha256 of the image manifest). Predicate types land in
    ``details["predicate_types"]``.
    """
    m = _DIGEST.fullmatch(image_digest)
    if m is None:
        reason = f"unsupported image digest {image_digest!r} (sha256 only)"
        return SignatureResult(kind=KIND, verifier=verifier_name, outcome=Outcome.ERROR, reason=reason,
                               failure=SignatureFailure.ERROR,
                               checks=(Check(CheckName.DIGEST, Outcome.ERROR, reason),))
    return verify_bundle(bundle_bytes, m.group(1), trust=trust, identities=identities, public_key=public_key,
                         now=now, max_bundle_bytes=max_bundle_bytes, verifier_name=verifier_name,
                         ignore_tlog=ignore_tlog, annotations=annotations, ignore_sct=ignore_sct,
                         requirements=requirements)
