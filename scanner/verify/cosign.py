"""cosign key-based verification of the legacy ``.sig`` layout (and key-signed Sigstore bundles).

The policy fields of a ``cosign:`` entry apply to every layout, through the rules shared with the
keyless verifier (``scanner.verify.cosign_rules``): ``annotations`` on each image signature,
``requirePredicateTypes`` over the verified attestation bundles, attestations never counted as
image signatures.

Per cosign ``specs/SIGNATURE_SPEC.md`` and ``pkg/cosign/verify.go``: each simplesigning layer's
``dev.cosignproject.cosign/signature`` annotation is a base64 signature over the exact layer bytes;
the payload's ``critical.image.docker-manifest-digest`` must equal the running digest
(``critical.identity.docker-reference`` is ignored, as cosign ignores it). Pure: bytes, a key and a
clock in; results out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from scanner.errors import ConfigError, ParseError
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
from scanner.verify.conditions import AttestationRequirement, attestations_identity
from scanner.verify.cosign_rules import apply_cosign_rules
from scanner.verify.keys import PublicKey, describe_key, key_sha256, spki_der, verify_signature

SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
BUNDLE_ARTIFACT_PREFIX = "application/vnd.dev.sigstore.bundle"
MAX_PAYLOAD_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TlogEntry:
    integrated_time: datetime
    log_index: int
    log_id: str


# (bundle annotation JSON, signature base64, payload bytes, signer key DER) -> entry; raises on failure.
TlogCheck = Callable[[str, str, bytes, bytes], TlogEntry]
# (bundle bytes, image digest, key, now, required annotations) -> result (sigstore bundles attached
# as referrers).
# (bundle, digest, key, now, annotations, attestation requirements) -> result
BundleCheck = Callable[[bytes, str, PublicKey, datetime, Mapping[str, str], Sequence[AttestationRequirement]],
                       SignatureResult]


@dataclass(frozen=True, slots=True)
class SigstoreTrustRef:
    """What the tlog and bundle checks of a key verifier trust, named for its decision identity.

    ``pinned``: the sha256 of the configured material's bytes (``rekorPubKey``, ``trustedRoot``;
    None when not configured). ``public_good``: set when the checks consult the Sigstore public-good
    root for every logged signature (the log is required and neither is configured); it loads the
    root and returns the sha256 of its content, raising ``ConfigError`` when it cannot be had.
    ``bundles_pinned`` False: key-signed bundles are checked against the public-good root although
    the identity does not name it, so results that relied on it are not reused.
    """

    pinned: Mapping[str, str | None]
    public_good: Callable[[], str] | None = None
    bundles_pinned: bool = True


class PayloadError(ParseError, ValueError):
    pass


def parse_simplesigning(payload: bytes) -> Mapping[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"payload is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("critical"), dict):
        raise PayloadError("payload has no `critical` object")
    image = doc["critical"].get("image")
    if not isinstance(image, dict) or not isinstance(image.get("docker-manifest-digest"), str):
        raise PayloadError("payload has no critical.image.docker-manifest-digest")
    return doc


class CosignKeyVerifier(Verifier):
    """One public key; any one signature that verifies with it (and binds the digest) passes."""

    kind = "cosign"

    def __init__(
        self,
        key: PublicKey,
        *,
        key_label: str,
        ignore_tlog: bool,
        annotations: Mapping[str, str] | None = None,
        require_predicate_types: Sequence[str] = (),
        tlog_check: TlogCheck | None = None,
        bundle_check: BundleCheck | None = None,
        sigstore_trust: SigstoreTrustRef | None = None,
        attestations: Sequence[AttestationRequirement] = (),
    ) -> None:
        self._key = key
        self._key_der = spki_der(key)
        self._key_id = key_sha256(key)
        self._label = key_label
        self._ignore_tlog = ignore_tlog
        self._annotations = dict(annotations or {})
        self._require = tuple(require_predicate_types)
        self._attestations = tuple(attestations)
        if self._attestations and bundle_check is None:
            raise ConfigError("attestations needs Sigstore bundle support (sigstore-python), which is not installed",
                              field="attestations")
        if self._require and bundle_check is None:
            # Attestations are only read from Sigstore bundles; without them the field could not be honoured.
            raise ConfigError("requirePredicateTypes needs Sigstore bundle support (sigstore-python), "
                              "which is not installed", field="requirePredicateTypes")
        self._tlog_check = tlog_check
        self._bundle_check = bundle_check
        self._sigstore_trust = sigstore_trust

    @property
    def name(self) -> str:
        return f"cosign key {describe_key(self._key)} sha256:{self._key_id[:12]}"

    @property
    def wants(self) -> Wants:
        types = frozenset({BUNDLE_ARTIFACT_PREFIX}) if self._bundle_check is not None else frozenset()
        return Wants(cosign_sig=True, referrer_types=types)

    @property
    def trust_fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self._key_der)
        h.update(
            json.dumps(
                {"tlog": not self._ignore_tlog, "ann": self._annotations, "bundles": self._bundle_check is not None,
                 "require": sorted(self._require), **attestations_identity(self._attestations),
                 # v2: attestations are not image signatures; annotations apply to bundles too.
                 "rules": 2},
                sort_keys=True,
            ).encode()
        )
        if self._sigstore_trust is not None and any(self._sigstore_trust.pinned.values()):
            # the configured Rekor key / trusted root, by content (the policy digest shows a change)
            h.update(json.dumps(dict(self._sigstore_trust.pinned), sort_keys=True).encode())
        return h.hexdigest()

    def decision_identity(self, image: RunningImage) -> str | None:
        """Key, label, log and annotation settings, and the content of the Rekor/trusted-root trust
        the SET and bundle checks use. Nothing here reads the repository: the payload's
        docker-reference is ignored (as cosign does), only the digest binds."""
        sigstore: dict[str, Any] | None = None
        if self._tlog_check is not None or self._bundle_check is not None:
            if self._sigstore_trust is None:
                return None  # a check whose trust is not named: its results cannot be keyed
            sigstore = dict(self._sigstore_trust.pinned)
            if self._sigstore_trust.public_good is not None:
                try:
                    sigstore["public_good"] = self._sigstore_trust.public_good()
                except ConfigError:
                    return None  # verified afresh; a check needing the root is then an error
            sigstore["bundles_pinned"] = self._sigstore_trust.bundles_pinned
        return identity_of(self.kind, {
            "name": self.name,
            "label": self._label,
            "key_spki_sha256": self._key_id,
            "tlog": not self._ignore_tlog,
            "tlog_check": self._tlog_check is not None,
            "bundle_check": self._bundle_check is not None,
            "annotations": dict(sorted(self._annotations.items())),
            "require_predicate_types": sorted(set(self._require)),
            **attestations_identity(self._attestations),
            "sigstore": sigstore,
        })

    def results_cacheable(self, results: tuple[SignatureResult, ...]) -> bool:
        """A bundle whose log entry or timestamp was checked against a root the identity does not
        pin (the public-good root, consulted for bundles only) is judged afresh every scan, and so are
        attestations whose conditions read the clock (``now``)."""
        if any(c.uses_now for a in self._attestations for c in a.conditions):
            return False
        if self._sigstore_trust is None or self._sigstore_trust.bundles_pinned:
            return True
        return not any(
            r.kind == "sigstore-bundle"
            and any(c.name in (CheckName.TLOG, CheckName.TIMESTAMP) and c.outcome is not Outcome.SKIPPED
                    for c in r.checks)
            for r in results
        )

    def verify(self, image: RunningImage, material: SignatureMaterial, now: datetime) -> tuple[SignatureResult, ...]:
        results: list[SignatureResult] = []
        if self._bundle_check is not None:
            for art in material.referrers:
                if art.artifact_type.startswith(BUNDLE_ARTIFACT_PREFIX) or art.blob_media_type.startswith(
                    BUNDLE_ARTIFACT_PREFIX
                ):
                    r = self._bundle_check(art.blob, image.digest, self._key, now, self._annotations,
                                           self._attestations)
                    # Attribute the bundle to this verifier and key: n-of-m counting and key
                    # revocation both rely on it.
                    results.append(
                        replace(
                            r, verifier=self.name, key_sha256=self._key_id, signer=r.signer or f"sha256:{self._key_id}"
                        )
                    )
        for layer in material.cosign_layers:
            results.append(self._verify_layer(layer, image.digest))
        return apply_cosign_rules(results, self._require, self._attestations)

    def _result(
        self, outcome: Outcome, reason: str, failure: SignatureFailure, checks: list[Check], **extra: Any
    ) -> SignatureResult:
        return SignatureResult(
            kind=self.kind,
            verifier=self.name,
            outcome=outcome,
            reason=reason,
            failure=failure,
            signer=f"sha256:{self._key_id}",
            key_sha256=self._key_id,
            checks=tuple(checks),
            **extra,
        )

    def _invalid(
        self, checks: list[Check], check: CheckName, check_reason: str, reason: str, details: Mapping[str, Any]
    ) -> SignatureResult:
        """The failed check recorded, and the signature counted invalid with the reason."""
        checks.append(Check(check, Outcome.FAILED, check_reason))
        return self._result(Outcome.FAILED, reason, SignatureFailure.INVALID, checks, details=details)

    def _verify_layer(self, layer: CosignLayer, digest: str) -> SignatureResult:
        checks: list[Check] = []
        sig_b64 = layer.annotations.get(SIG_ANNOTATION)
        if not sig_b64:
            return self._invalid(
                checks,
                CheckName.INTEGRITY,
                "layer has no signature annotation",
                "signature layer without a signature annotation",
                {"layer": layer.digest},
            )
        try:
            signature = base64.b64decode(sig_b64, validate=True)
        except (binascii.Error, ValueError):
            return self._invalid(
                checks,
                CheckName.INTEGRITY,
                "signature annotation is not base64",
                "malformed signature (not base64)",
                {"layer": layer.digest},
            )
        if not verify_signature(self._key, signature, layer.payload):
            return self._invalid(
                checks,
                CheckName.AUTHENTICITY,
                f"does not verify with {self._label}",
                f"signature does not verify with key {self._label} (signed by another key, or the payload was altered)",
                {"layer": layer.digest},
            )
        checks.append(Check(CheckName.AUTHENTICITY, Outcome.PASSED, f"verifies with {self._label}"))
        try:
            doc = parse_simplesigning(layer.payload)
        except PayloadError as exc:
            return self._invalid(
                checks, CheckName.INTEGRITY, str(exc), f"signed payload is malformed: {exc}", {"layer": layer.digest}
            )
        signed_digest = doc["critical"]["image"]["docker-manifest-digest"]
        docker_ref = (doc["critical"].get("identity") or {}).get("docker-reference", "")
        details: dict[str, Any] = {"layer": layer.digest, "docker_reference": str(docker_ref)[:512]}
        if signed_digest != digest:
            return self._invalid(
                checks,
                CheckName.DIGEST,
                f"payload is for {signed_digest[:80]}",
                f"signature is for another image ({signed_digest[:80]}), not the running digest",
                details,
            )
        checks.append(Check(CheckName.DIGEST, Outcome.PASSED, "payload names the running digest"))
        raw_optional = doc.get("optional")
        optional: Mapping[str, Any] = raw_optional if isinstance(raw_optional, dict) else {}
        for k, v in sorted(self._annotations.items()):
            got = optional.get(k)
            # cosign compares the JSON values: 1 is not "1", and an absent annotation is not "None".
            if not isinstance(got, str) or got != v:
                return self._invalid(
                    checks,
                    CheckName.INTEGRITY,
                    f"annotation {k} is {'absent' if k not in optional else repr(got)[:120]}, not {v!r}",
                    f"required annotation {k}={v!r} missing from the payload",
                    details,
                )
        signed_at: SignedTime | None = None
        if self._ignore_tlog:
            checks.append(Check(CheckName.TLOG, Outcome.SKIPPED, "ignoreTlog: true"))
        else:
            bundle = layer.annotations.get(BUNDLE_ANNOTATION)
            if not bundle:
                checks.append(Check(CheckName.TLOG, Outcome.ERROR, "no Rekor bundle attached"))
                return self._result(
                    Outcome.ERROR,
                    "the transparency log is required but the signature carries no "
                    "Rekor bundle, and the log is not queried online (set ignoreTlog: true for "
                    "keys used without a log)",
                    SignatureFailure.ERROR,
                    checks,
                    details=details,
                )
            if self._tlog_check is None:
                checks.append(Check(CheckName.TLOG, Outcome.ERROR, "no Rekor key configured"))
                return self._result(
                    Outcome.ERROR,
                    "the transparency log is required but cannot be checked: no "
                    "Rekor public key or trusted root is configured",
                    SignatureFailure.ERROR,
                    checks,
                    details=details,
                )
            try:
                entry = self._tlog_check(bundle, sig_b64, layer.payload, self._key_der)
            except Exception as exc:
                return self._invalid(
                    checks,
                    CheckName.TLOG,
                    str(exc)[:300],
                    f"transparency-log bundle does not verify: {str(exc)[:300]}",
                    details,
                )
            signed_at = SignedTime(entry.integrated_time.astimezone(UTC), TimeSource.REKOR_SET)
            details.update({"log_index": entry.log_index, "log_id": entry.log_id})
            checks.append(Check(CheckName.TLOG, Outcome.PASSED, f"Rekor entry {entry.log_index}"))
        return self._result(
            Outcome.PASSED,
            f"signed with key {self._label}",
            SignatureFailure.NONE,
            checks,
            signed_at=signed_at,
            details=details,
        )
