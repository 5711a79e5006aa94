"""Sigstore pieces for key-based cosign verification: the Rekor SET of the legacy ``.sig`` bundle
annotation, and key-signed Sigstore bundles found as referrers (cosign v3 layout).

Trust material is resolved here, at the edge (policy loading): the verifier's ``rekorPubKey`` or
``trustedRoot`` when given, else the Sigstore public-good root, loaded lazily once and only if a
signature actually needs it (so air-gapped key-only policies never touch TUF).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from scanner.errors import ConfigError
from scanner.models import Check, CheckName, Outcome, SignatureFailure, SignatureResult
from scanner.verify import sources
from scanner.verify.base import sha256_hex
from scanner.verify.cosign import BundleCheck, SigstoreTrustRef, TlogCheck, TlogEntry
from scanner.verify.keys import PublicKey
from scanner.verify.kinds.cosign import CosignVerifierSpec

if TYPE_CHECKING:
    from scanner.verify.conditions import AttestationRequirement
    from scanner.verify.rekor import RekorKey
    from scanner.verify.trustroot import SigstoreTrust

# sigstore-python (and through it tuf, securesystemslib, ...) costs about half a second to import; a
# key-only policy whose images carry no Rekor bundle and no Sigstore bundle never pays for it.


def _read(text: str, base_dir: Path, what: str) -> bytes:
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    path = sources.under(base_dir, text).expanduser()
    try:
        return sources.read_bytes(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _trust(spec: CosignVerifierSpec, base_dir: Path, rekor_pem: bytes | None) -> Callable[[], SigstoreTrust]:
    """The root bundles are judged with: ``trustedRoot`` or the public-good root, its logs replaced
    by ``rekorPubKey`` when given (so the key is enforced for bundles as for ``.sig`` SETs)."""
    from scanner.verify.trustroot import LazyTrust, load_trusted_root_file, public_good_trust, with_log_keys

    if spec.trusted_root:
        loaded = with_log_keys(load_trusted_root_file(spec.trusted_root, base_dir=base_dir), rekor_pem=rekor_pem)
        return lambda: loaded
    offline = os.environ.get("SIGAUDIT_SIGSTORE_OFFLINE", "") not in ("", "0", "false")
    lazy = LazyTrust(lambda: with_log_keys(public_good_trust(offline=offline), rekor_pem=rekor_pem),
                     name="the Sigstore public-good trust root")
    return lazy.get


def for_key_verifier(
    spec: CosignVerifierSpec, base_dir: Path
) -> tuple[TlogCheck | None, BundleCheck, SigstoreTrustRef]:
    """The SET check (None when the log is ignored), the bundle check, and what both trust."""
    # A configured trusted root is read now (a bad file is a configuration error, exit 2); the
    # public-good root, and sigstore-python with it, only when a signature (or, with a cache, the
    # decision identity of a verifier that checks every logged signature against it) needs it.
    rekor_keys: list[RekorKey] | None = None
    rekor_pem: bytes | None = None
    if spec.rekor_pubkey:
        from scanner.verify.rekor import load_rekor_keys_from_pem

        rekor_pem = _read(spec.rekor_pubkey, base_dir, "Rekor public key")
        rekor_keys = load_rekor_keys_from_pem(rekor_pem, source="rekorPubKey")

    loaded: list[Callable[[], SigstoreTrust]] = [_trust(spec, base_dir, rekor_pem)] if spec.trusted_root else []
    lock = threading.Lock()

    def trust() -> SigstoreTrust:
        with lock:
            if not loaded:
                loaded.append(_trust(spec, base_dir, rekor_pem))
        return loaded[0]()

    def keys() -> list[RekorKey]:
        from scanner.verify.rekor import load_rekor_keys_from_trusted_root

        if rekor_keys is not None:
            return rekor_keys
        t = trust()
        return load_rekor_keys_from_trusted_root(t.raw, source=t.source)

    def tlog_check(annotation: str, signature_b64: str, payload: bytes, key_der: bytes) -> TlogEntry:
        from scanner.verify.rekor import verify_rekor_bundle_annotation

        res = verify_rekor_bundle_annotation(
            annotation, signature_b64=signature_b64, payload=payload, signer_pem_or_der=key_der, rekor_keys=keys()
        )
        return TlogEntry(res.integrated_time, res.log_index, res.log_id)

    def bundle_check(bundle: bytes, digest: str, key: PublicKey, now: datetime,
                     annotations: Mapping[str, str],
                     requirements: Sequence[AttestationRequirement] = ()) -> SignatureResult:
        from scanner.verify.sigstore_bundle import verify_bundle_for_digest

        try:
            t = trust()
        except ConfigError as exc:
            reason = f"a Sigstore bundle is attached but no trust root is available to check its log entry: {exc}"
            return SignatureResult(
                kind="sigstore-bundle",
                verifier="cosign key (bundle)",
                outcome=Outcome.ERROR,
                reason=reason,
                failure=SignatureFailure.ERROR,
                checks=(Check(CheckName.TLOG, Outcome.ERROR, reason),),
            )
        return verify_bundle_for_digest(
            bundle, digest, trust=t, public_key=key, now=now, verifier_name="cosign key (bundle)",
            ignore_tlog=spec.ignore_tlog, annotations=annotations, requirements=requirements,
        )

    # What the checks trust, by content. Configured material is pinned by its bytes. The public-good
    # root is named by its content when every logged .sig signature is checked against it (the log
    # is required and no rekorPubKey/trustedRoot is given); when it only serves key-signed bundles,
    # it is left unnamed (an air-gapped, key-only policy never loads it for a cache key) and the
    # results of bundles that relied on it are not reused.
    pinned = {
        "rekor_pubkey_sha256": sha256_hex(rekor_pem) if rekor_pem is not None else None,
        "trusted_root_sha256": trust().fingerprint if spec.trusted_root else None,
    }
    routine = not spec.ignore_tlog and rekor_pem is None and not spec.trusted_root
    ref = SigstoreTrustRef(
        pinned,
        public_good=(lambda: trust().fingerprint) if routine else None,
        bundles_pinned=bool(spec.trusted_root) or routine,
    )
    return (None if spec.ignore_tlog else tlog_check), bundle_check, ref
