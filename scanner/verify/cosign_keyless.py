"""Keyless cosign: Fulcio certificates + Rekor, in both cosign layouts.

Layouts (cosign v3 semantics, ``cmd/cosign/cli/verify/verify.go``):

* **Sigstore bundles as OCI referrers** (cosign v3 / ``--new-bundle-format``, sigstore-js): verified
  by ``scanner.verify.sigstore_bundle`` (sigstore-python underneath). If an image-signature bundle
  is attached, only bundles count: there is no fallback to ``.sig`` when they exist but fail.
  Attestation bundles (``cosign attest``) are judged too, for ``requirePredicateTypes``, but are
  never image signatures (``scanner.verify.cosign_rules``), so they do not hide a ``.sig``.
* **Legacy ``.sig`` tag** (``sha256-<hex>.sig``), one layer per signature: simplesigning payload,
  ``dev.cosignproject.cosign/signature``, ``dev.sigstore.cosign/certificate`` + ``/chain``,
  ``dev.sigstore.cosign/bundle`` (Rekor SET), ``dev.sigstore.cosign/rfc3161timestamp``. Verified here
  (cosign ``pkg/cosign/verify.go``): signature with the leaf key, SET (``scanner.verify.rekor``) and
  TSA timestamps give the signing time, the chain is validated **at that time** against the trust
  root's Fulcio CAs (never at scan time: Fulcio certificates live ten minutes), SCT unless
  ``ignoreSCT``, then identity (SAN + OIDC issuer, exact or full-match regexp).

``not_after`` stays None: a Fulcio certificate's expiry says nothing about the signature's future.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scanner.errors import ConfigError
from scanner.models import (
    Check,
    CheckName,
    CosignLayer,
    Outcome,
    RunningImage,
    SignatureFailure,
    SignatureMaterial,
    SignatureResult,
    SignedTime,
    TimeSource,
)
from scanner.verify.base import Verifier, Wants, identity_of
from scanner.verify.conditions import AttestationRequirement, attestations_identity, requirements_from
from scanner.verify.cosign import PayloadError, parse_simplesigning
from scanner.verify.cosign_rules import ROLE_SIGNATURE, apply_cosign_rules, claimed_role
from scanner.verify.identity import IdentityMatcher, cert_identity, match_identities
from scanner.verify.kinds.cosign import CosignVerifierSpec
from scanner.verify.rekor import (
    RekorError,
    RekorKey,
    as_verifying_key,
    rekor_keys_from_trust,
    verify_rekor_bundle_annotation,
    verify_signature,
)
from scanner.verify.sigstore_bundle import (
    BUNDLE_MEDIA_TYPE_PREFIX,
    DEFAULT_MAX_BUNDLE_BYTES,
    is_bundle_media_type,
    verify_bundle_for_digest,
)
from scanner.verify.trustroot import (
    FulcioChainError,
    LazyTrust,
    SigstoreTrust,
    fulcio_chain_at,
    load_trusted_root_file,
    log_instances,
    public_good_trust,
    read_pem_arg,
    sct_problem_at,
    trust_from_pems,
    with_log_keys,
)

ANN_SIGNATURE = "dev.cosignproject.cosign/signature"
ANN_CERTIFICATE = "dev.sigstore.cosign/certificate"
ANN_CHAIN = "dev.sigstore.cosign/chain"
ANN_BUNDLE = "dev.sigstore.cosign/bundle"
ANN_RFC3161 = "dev.sigstore.cosign/rfc3161timestamp"

KIND_LEGACY = "cosign-keyless"
MAX_SIGNATURES = 100
MAX_CERT_PEM_BYTES = 64 * 1024
MAX_CHAIN_CERTS = 10
OFFLINE_ENV = "SIGAUDIT_SIGSTORE_OFFLINE"


class _Fail(Exception):
    def __init__(self, check: CheckName, reason: str, failure: SignatureFailure = SignatureFailure.INVALID):
        self.check, self.reason, self.failure = check, reason, failure
        super().__init__(reason)


def _load_pem_certs(text: str, what: str, limit: int) -> list[x509.Certificate]:
    if len(text) > MAX_CERT_PEM_BYTES:
        raise _Fail(CheckName.INTEGRITY, f"{what} annotation larger than {MAX_CERT_PEM_BYTES} bytes")
    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError as exc:
        raise _Fail(CheckName.INTEGRITY, f"{what} annotation is not PEM certificates: {exc}") from exc
    if len(certs) > limit:
        raise _Fail(CheckName.INTEGRITY, f"{what} holds {len(certs)} certificates (bound {limit})")
    return certs


def check_simplesigning_payload(payload: bytes, image_digest: str,
                                annotations: Mapping[str, str] | None = None) -> None:
    """cosign ``SimpleClaimVerifier``: the payload's ``critical.image.docker-manifest-digest``
    must be the running digest (``docker-reference`` is ignored by design), and the requested
    ``optional`` annotations must match exactly."""
    try:
        doc = parse_simplesigning(payload)  # one parser (and size bound) for key-based and keyless
    except PayloadError as exc:
        raise _Fail(CheckName.INTEGRITY, f"payload is not a cosign simplesigning document: {exc}") from exc
    claimed = doc["critical"]["image"]["docker-manifest-digest"]
    if claimed != image_digest:
        raise _Fail(CheckName.DIGEST, f"payload signs {claimed}, not the running digest {image_digest}")
    optional = doc.get("optional") or {}
    for key, want in sorted((annotations or {}).items()):
        got = optional.get(key) if isinstance(optional, dict) else None
        if not isinstance(got, str) or got != want:
            raise _Fail(CheckName.INTEGRITY, f"payload annotation {key}={got!r}, policy requires {want!r}")


def _verify_chain_at(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                     trust: SigstoreTrust, when: datetime) -> list[x509.Certificate]:
    """Path from the leaf to a Fulcio CA of the trust root that is valid at ``when``
    (``scanner.verify.trustroot.fulcio_chain_at``, shared with the bundle path)."""
    try:
        return fulcio_chain_at(leaf, intermediates, trust, when)
    except FulcioChainError as exc:
        raise _Fail(CheckName.AUTHENTICITY, str(exc)) from exc


def _check_fulcio_profile(leaf: x509.Certificate) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise _Fail(CheckName.AUTHENTICITY, f"certificate lacks {exc.oid.dotted_string}") from exc
    if not ku.digital_signature:
        raise _Fail(CheckName.AUTHENTICITY, "certificate key usage is not digitalSignature")
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise _Fail(CheckName.AUTHENTICITY, "certificate extended key usage lacks codeSigning")


def _verify_tsa(annotation: str, signature: bytes, trust: SigstoreTrust) -> datetime:
    """cosign's ``rfc3161timestamp`` annotation: ``{"SignedRFC3161Timestamp": b64 DER}``, a
    timestamp over the raw signature bytes, chained to a TSA of the trust root."""
    from rfc3161_client import decode_timestamp_response
    from sigstore.verify import Verifier

    if len(annotation) > MAX_CERT_PEM_BYTES:
        raise _Fail(CheckName.TIMESTAMP, "timestamp annotation too large")
    try:
        raw = base64.b64decode(json.loads(annotation)["SignedRFC3161Timestamp"], validate=True)
        tsr = decode_timestamp_response(raw)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise _Fail(CheckName.TIMESTAMP, f"malformed RFC 3161 timestamp annotation: {exc}") from exc
    if not trust.root.get_timestamp_authorities():
        raise _Fail(CheckName.TIMESTAMP, "signature carries an RFC 3161 timestamp but the trust root has no TSA")
    result = Verifier(trusted_root=trust.root)._verify_signed_timestamp(tsr, signature)
    if result is None:
        raise _Fail(CheckName.TIMESTAMP, "RFC 3161 timestamp does not verify with a TSA of the trust root")
    return result.time


class CosignKeylessVerifier(Verifier):
    """The ``Verifier`` for ``cosign: {keyless: ...}`` policy entries."""

    def __init__(
        self,
        *,
        identities: Sequence[IdentityMatcher],
        trust: SigstoreTrust | LazyTrust,
        ignore_tlog: bool = False,
        ignore_sct: bool = False,
        require_predicate_types: Sequence[str] = (),
        annotations: Mapping[str, str] | None = None,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        name: str | None = None,
        attestations: Sequence[AttestationRequirement] = (),
    ) -> None:
        if not identities:
            raise ConfigError("a keyless cosign verifier needs at least one identity")
        self._identities = tuple(identities)
        self._trust = trust
        self._ignore_tlog = ignore_tlog
        self._ignore_sct = ignore_sct
        self._require = tuple(require_predicate_types)
        self._attestations = tuple(attestations)
        self._annotations = dict(annotations or {})
        self._max_bundle = max_bundle_bytes
        self._name = name or f"cosign keyless {self._identities[0]}" + (
            f" (+{len(self._identities) - 1})" if len(self._identities) > 1 else "")
        self._rekor_keys: tuple[str, list[RekorKey]] | None = None

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_spec(
        cls,
        spec: CosignVerifierSpec,
        *,
        base_dir: Path,
        public_good: Callable[[], SigstoreTrust] | None = None,
        offline: bool | None = None,
        name: str | None = None,
    ) -> CosignKeylessVerifier:
        """Build from a policy entry. Files are read here; the public-good root (no ``trustedRoot``
        and no ``roots``) is loaded lazily on first use through ``public_good`` (default: the TUF
        client, offline when ``offline`` or env ``SIGAUDIT_SIGSTORE_OFFLINE=1``)."""
        kl = spec.keyless
        if kl is None:
            raise ConfigError("not a keyless cosign verifier (no keyless: section)")
        identities = [IdentityMatcher.from_spec(i) for i in kl.identities]
        ignore_sct = spec.ignore_sct or bool(kl.ctlog and kl.ctlog.ignore_sct)
        trust: SigstoreTrust | LazyTrust
        # One place for each piece of trust (the schema refuses a second one); a Rekor or CT key
        # replaces the logs of whichever root is used, so it is enforced for .sig and bundles alike.
        rekor_src = kl.rekor.pubkey if kl.rekor else spec.rekor_pubkey
        ctlog_src = kl.ctlog.pubkey if kl.ctlog else None
        root_file = kl.trusted_root or spec.trusted_root
        if kl.roots:
            if not rekor_src:
                raise ConfigError("keyless roots need rekor.pubkey (the Rekor log key)", field="keyless.rekor")
            if not ctlog_src and not ignore_sct:
                raise ConfigError("keyless roots need ctlog.pubkey unless ctlog.ignoreSCT is set",
                                  field="keyless.ctlog")
            trust = trust_from_pems(kl.roots, rekor_src, ctlog_src, base_dir=base_dir)
        else:
            rekor_pem = read_pem_arg(rekor_src, base_dir, "rekor.pubkey") if rekor_src else None
            ctlog_pem = read_pem_arg(ctlog_src, base_dir, "ctlog.pubkey") if ctlog_src else None
            if root_file:
                trust = with_log_keys(load_trusted_root_file(root_file, base_dir=base_dir),
                                      rekor_pem=rekor_pem, ctlog_pem=ctlog_pem)
            else:
                off = offline if offline is not None else os.environ.get(OFFLINE_ENV, "") in ("1", "true")
                base_loader: Callable[[], SigstoreTrust] = public_good or (lambda: public_good_trust(offline=off))
                label = "sigstore-public-good"
                for what, pem in (("rekor", rekor_pem), ("ctlog", ctlog_pem)):
                    if pem is not None:
                        log_instances(pem, f"{what}.pubkey")  # a bad key is a configuration error now
                        label += f";{what}={hashlib.sha256(pem).hexdigest()}"

                def load() -> SigstoreTrust:
                    return with_log_keys(base_loader(), rekor_pem=rekor_pem, ctlog_pem=ctlog_pem)

                trust = LazyTrust(load, name="the Sigstore public-good trust root", label=label)
        return cls(identities=identities, trust=trust, ignore_tlog=spec.ignore_tlog, ignore_sct=ignore_sct,
                   require_predicate_types=spec.require_predicate_types, annotations=spec.annotations,
                   name=name, attestations=requirements_from(spec.attestation_entries()))

    # -- Verifier protocol -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def wants(self) -> Wants:
        return Wants(cosign_sig=True, referrer_types=frozenset({BUNDLE_MEDIA_TYPE_PREFIX}))

    @property
    def trust_fingerprint(self) -> str:
        root = self._trust.fingerprint if isinstance(self._trust, SigstoreTrust) else self._trust.label
        parts = {
            "root": root,
            "identities": [str(i) for i in self._identities],
            "ignore_tlog": self._ignore_tlog, "ignore_sct": self._ignore_sct,
            "require": sorted(self._require), "annotations": sorted(self._annotations.items()),
            **attestations_identity(self._attestations),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def decision_identity(self, image: RunningImage) -> str | None:
        """The trust root by content (Fulcio CAs, Rekor, CT and TSA keys all live in it; the
        public-good root is loaded to name it), identities, log/SCT settings, required predicate
        types and annotations. The repository is not read: bundles and payloads bind the digest."""
        try:
            trust = self._trust.get() if isinstance(self._trust, LazyTrust) else self._trust
        except ConfigError:
            return None  # judged afresh: signatures then get an error verdict naming the root
        return identity_of("cosign-keyless", {
            "name": self._name,
            "trusted_root_sha256": trust.fingerprint,
            "identities": [_identity_doc(i) for i in self._identities],
            "ignore_tlog": self._ignore_tlog,
            "ignore_sct": self._ignore_sct,
            "require_predicate_types": sorted(set(self._require)),
            "annotations": dict(sorted(self._annotations.items())),
            "max_bundle_bytes": self._max_bundle,
            **attestations_identity(self._attestations),
        })

    def results_cacheable(self, results: tuple[SignatureResult, ...]) -> bool:
        """Attestation conditions that read the clock (``now``) are judged afresh every scan."""
        return not any(c.uses_now for a in self._attestations for c in a.conditions)

    def verify(self, image: RunningImage, material: SignatureMaterial,
               now: datetime) -> tuple[SignatureResult, ...]:
        bundles = [r for r in material.referrers
                   if is_bundle_media_type(r.artifact_type) or is_bundle_media_type(r.blob_media_type)]
        layers = list(material.cosign_layers)
        if not bundles and not layers:
            return ()
        try:
            trust = self._trust.get() if isinstance(self._trust, LazyTrust) else self._trust
        except ConfigError as exc:
            reason = f"trust root unavailable: {exc}"
            return (SignatureResult(kind="sigstore-bundle" if bundles else KIND_LEGACY, verifier=self.name,
                                    outcome=Outcome.ERROR, reason=reason, failure=SignatureFailure.ERROR,
                                    checks=(Check(CheckName.AUTHENTICITY, Outcome.ERROR, reason),)),)
        results: list[SignatureResult] = []
        for ref in bundles[:MAX_SIGNATURES]:
            res = verify_bundle_for_digest(ref.blob, image.digest, trust=trust, identities=self._identities,
                                           now=now, max_bundle_bytes=self._max_bundle,
                                           verifier_name=self.name, annotations=self._annotations,
                                           ignore_tlog=self._ignore_tlog, ignore_sct=self._ignore_sct,
                                           requirements=self._attestations)
            results.append(_with_details(res, {"referrer": ref.manifest_digest}))
        # cosign v3: image-signature bundles found -> only bundles count (no fallback to .sig when they fail).
        if not any(claimed_role(ref.blob) == ROLE_SIGNATURE for ref in bundles[:MAX_SIGNATURES]):
            results += [self._verify_layer(layer, image.digest, trust, now) for layer in layers[:MAX_SIGNATURES]]
        return apply_cosign_rules(results, self._require, self._attestations)

    # -- internals ---------------------------------------------------------------------------

    def _keys_for(self, trust: SigstoreTrust) -> list[RekorKey]:
        if self._rekor_keys is None or self._rekor_keys[0] != trust.fingerprint:
            self._rekor_keys = (trust.fingerprint, rekor_keys_from_trust(trust))
        return self._rekor_keys[1]

    def _verify_layer(self, layer: CosignLayer, image_digest: str, trust: SigstoreTrust,
                      now: datetime) -> SignatureResult:
        checks: list[Check] = []
        details: dict[str, Any] = {"layer": layer.digest}
        signer = ""
        issuer: str | None = None
        key_sha: str | None = None
        signed_at: SignedTime | None = None
        try:
            ann = layer.annotations
            sig_b64 = ann.get(ANN_SIGNATURE)
            if not sig_b64:
                raise _Fail(CheckName.INTEGRITY, "layer has no signature annotation")
            cert_pem = ann.get(ANN_CERTIFICATE)
            if not cert_pem:
                raise _Fail(CheckName.AUTHENTICITY,
                            "signature has no certificate (key-based): not for a keyless verifier")
            leaf = _load_pem_certs(cert_pem, "certificate", 1)
            if not leaf:
                raise _Fail(CheckName.INTEGRITY, "certificate annotation holds no certificate")
            cert = leaf[0]
            chain = _load_pem_certs(ann.get(ANN_CHAIN, ""), "chain", MAX_CHAIN_CERTS) if ann.get(ANN_CHAIN) else []
            ident = cert_identity(cert)
            signer, issuer = ident.primary, ident.issuer
            spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
            key_sha = hashlib.sha256(spki).hexdigest()
            try:
                signature = base64.b64decode(sig_b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _Fail(CheckName.INTEGRITY, "signature annotation is not base64") from exc

            # 1. integrity: the payload names this digest, and the leaf key signed it.
            check_simplesigning_payload(layer.payload, image_digest, self._annotations)
            checks.append(Check(CheckName.DIGEST, Outcome.PASSED, f"payload names {image_digest}"))
            if not verify_signature(as_verifying_key(cert.public_key(), "certificate key"), signature,
                                    layer.payload):
                raise _Fail(CheckName.INTEGRITY, "signature does not verify with the certificate's key")
            checks.append(Check(CheckName.INTEGRITY, Outcome.PASSED, "signature verified"))

            # 2. trusted time: Rekor SET integrated time, RFC 3161 timestamps.
            times: list[SignedTime] = []
            bundle_ann = ann.get(ANN_BUNDLE)
            if not self._ignore_tlog:
                if not bundle_ann:
                    raise _Fail(CheckName.TLOG, "no Rekor bundle annotation; the policy requires the log")
                try:
                    rk = verify_rekor_bundle_annotation(
                        bundle_ann, signature_b64=sig_b64, payload=layer.payload,
                        signer_pem_or_der=cert.public_bytes(serialization.Encoding.PEM),
                        rekor_keys=self._keys_for(trust), now=now)
                except RekorError as exc:
                    raise _Fail(CheckName.TLOG, f"Rekor bundle: {exc.reason}") from exc
                times.append(SignedTime(rk.integrated_time, TimeSource.REKOR_SET))
                details.update(log_index=rk.log_index, log_id=rk.log_id, integrated_time=int(
                    rk.integrated_time.timestamp()))
                checks.append(Check(CheckName.TLOG, Outcome.PASSED,
                                    f"Rekor SET verified (log index {rk.log_index})"))
            tsa_ann = ann.get(ANN_RFC3161)
            if tsa_ann:
                times.append(SignedTime(_verify_tsa(tsa_ann, signature, trust), TimeSource.TSA))
            if not times:
                raise _Fail(CheckName.TIMESTAMP,
                            "no trusted signing time (neither a Rekor SET nor an RFC 3161 timestamp)")
            signed_at = SignedTime.earliest(times)
            assert signed_at is not None
            checks.append(Check(CheckName.TIMESTAMP, Outcome.PASSED,
                                f"signed at {signed_at.value.isoformat()} ({signed_at.source.value})"))

            # 3. authenticity: chain at every trusted time, Fulcio profile, SCT.
            verified_chain: list[x509.Certificate] = []
            for t in times:
                verified_chain = _verify_chain_at(cert, chain, trust, t.value)
            _check_fulcio_profile(cert)
            details["chain_sha256"] = [hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()
                                       for c in verified_chain]
            if not self._ignore_sct:
                from sigstore._internal.sct import verify_sct
                from sigstore._internal.trust import KeyringPurpose
                from sigstore.errors import Error as SigstoreError

                try:
                    verify_sct(cert, verified_chain[1:], trust.root.ct_keyring(KeyringPurpose.VERIFY))
                except SigstoreError as exc:
                    raise _Fail(CheckName.AUTHENTICITY, f"SCT does not verify: {exc}") from exc
                problem = sct_problem_at(trust, cert, [t.value for t in times])
                if problem is not None:  # the CT key must be valid then (validFor), as the CA and log key
                    raise _Fail(CheckName.AUTHENTICITY, f"SCT: {problem}")
            checks.append(Check(CheckName.AUTHENTICITY, Outcome.PASSED,
                                "certificate chains to a Fulcio root at the signing time"
                                + ("" if self._ignore_sct else ", SCT verified")))

            # 4. identity.
            ok, why = match_identities(cert, self._identities)
            if not ok:
                raise _Fail(CheckName.IDENTITY, why)
            checks.append(Check(CheckName.IDENTITY, Outcome.PASSED, why))
        except _Fail as f:
            outcome = Outcome.ERROR if f.failure is SignatureFailure.ERROR else Outcome.FAILED
            checks.append(Check(f.check, outcome, f.reason))
            return SignatureResult(kind=KIND_LEGACY, verifier=self.name, outcome=outcome, reason=f.reason,
                                   failure=f.failure, signer=signer, key_sha256=key_sha,
                                   identity=signer or None, issuer=issuer, signed_at=signed_at,
                                   checks=tuple(checks), details=details)
        except Exception as exc:  # never crash the scan on hostile input
            reason = f"keyless verification could not run: {type(exc).__name__}: {exc}"
            checks.append(Check(CheckName.AUTHENTICITY, Outcome.ERROR, reason))
            return SignatureResult(kind=KIND_LEGACY, verifier=self.name, outcome=Outcome.ERROR, reason=reason,
                                   failure=SignatureFailure.ERROR, signer=signer, checks=tuple(checks),
                                   details=details)
        return SignatureResult(
            kind=KIND_LEGACY, verifier=self.name, outcome=Outcome.PASSED,
            reason=f"keyless signature by {signer} (issuer {issuer}) verified", signer=signer,
            key_sha256=key_sha, identity=signer, issuer=issuer, signed_at=signed_at, not_after=None,
            checks=tuple(checks), details=details)


def _identity_doc(i: IdentityMatcher) -> dict[str, Any]:
    """Exact values and regular expressions kept apart (``str(i)`` would let one pass for the other)."""
    return {"issuer": {"exact": i.issuer.exact, "regexp": i.issuer.regexp},
            "subject": {"exact": i.subject.exact, "regexp": i.subject.regexp},
            "extensions": {name: {"exact": m.exact, "regexp": m.regexp} for name, m in sorted(i.extensions)},
            # Since issue #25: an absent extension fails every requirement (it read as "" before, so
            # ".*" accepted it); results cached under the old reading are not reused.
            "absent_extension": "never-matches"}


def _with_details(res: SignatureResult, extra: Mapping[str, Any]) -> SignatureResult:
    return dataclasses.replace(res, details={**res.details, **extra})
