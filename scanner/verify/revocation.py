"""Certificate revocation for Notary Project chains: OCSP first, CRL as the fallback.

Rules: notaryproject/specifications ``specs/trust-store-trust-policy.md`` "Certificate
Revocation Evaluation" (as implemented by notation-core-go ``revocation/``):

* every certificate of the chain except the root is checked;
* a certificate with an OCSP URL is checked by OCSP; when OCSP cannot give an answer and the
  certificate has CRL distribution points, the CRLs decide; only CDPs → CRL; neither →
  non-revokable (counts as good);
* any certificate revoked → revoked; else any unknown → unknown; else good;
* a revocation entry with an invalidityDate after the authentic signing time does not revoke
  this signature.

Parsing and signature checks are ``cryptography``'s (OCSP request/response, CRL); the network is
reached only through the injected ``Fetcher`` (which bounds size and time), and only over
``http://`` as the spec requires. CRLs are cached by URL until their ``nextUpdate``.
"""

from __future__ import annotations

import enum
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from scanner.verify.base import Fetcher
from scanner.verify.x509 import is_issued_by, subject, verify_x509_style_signature


def _q(value: object) -> str:
    """Quote like Go's %q, so messages read as notation's do."""
    return json.dumps(value)

CRL_MAX_BYTES = 10 << 20
CRL_TIMEOUT = 5.0
OCSP_MAX_BYTES = 1 << 20
OCSP_TIMEOUT = 2.0
MAX_URLS = 4  # distribution points / responders tried per certificate
CLOCK_SKEW = timedelta(minutes=5)


class RevocationStatus(enum.StrEnum):
    OK = "ok"
    NON_REVOKABLE = "non-revokable"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class CertRevocation:
    subject: str
    status: RevocationStatus
    method: str  # "ocsp", "crl", "ocsp+crl", "none"
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RevocationResult:
    status: RevocationStatus
    certificates: tuple[CertRevocation, ...]
    reason: str

    @property
    def ok(self) -> bool:
        return self.status in (RevocationStatus.OK, RevocationStatus.NON_REVOKABLE)


class CRLCache:
    """In-memory CRLs keyed by URL, usable until their nextUpdate. Thread-safe; pass one per scan
    (or keep one across scans); the DER bytes are kept so a caller may persist them."""

    def __init__(self, max_entries: int = 256) -> None:
        self._entries: dict[str, tuple[x509.CertificateRevocationList, bytes]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, url: str, now: datetime) -> x509.CertificateRevocationList | None:
        with self._lock:
            hit = self._entries.get(url)
        if hit is None:
            return None
        crl = hit[0]
        nu = crl.next_update_utc
        if nu is None or now >= nu:
            self.drop(url)
            return None
        return crl

    def put(self, url: str, crl: x509.CertificateRevocationList, raw: bytes) -> None:
        with self._lock:
            if len(self._entries) >= self._max and url not in self._entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[url] = (crl, raw)

    def drop(self, url: str) -> None:
        with self._lock:
            self._entries.pop(url, None)

    def __len__(self) -> int:
        return len(self._entries)


class _Unknown(Exception):
    """Status could not be obtained from this source; the message says why."""


def _http_urls(names: Sequence[x509.GeneralName]) -> list[str]:
    return [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)
            and n.value.lower().startswith("http://")]


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return _http_urls([d.access_location for d in aia
                       if d.access_method == AuthorityInformationAccessOID.OCSP])[:MAX_URLS]


def crl_urls(cert: x509.Certificate) -> list[str]:
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return _http_urls([n for dp in cdp for n in (dp.full_name or [])])[:MAX_URLS]


def delta_crl_urls(ext_holder: x509.Certificate | x509.CertificateRevocationList) -> list[str]:
    """URLs of the Freshest CRL extension (RFC 5280 §5.2.6). ValueError when it is malformed."""
    try:
        fresh = ext_holder.extensions.get_extension_for_class(x509.FreshestCRL).value
    except x509.ExtensionNotFound:
        return []
    return _http_urls([n for dp in fresh for n in (dp.full_name or [])])


class RevocationChecker:
    """Checks a chain's revocation status through ``fetcher``; no fetcher → status unknown."""

    def __init__(self, fetcher: Fetcher | None, cache: CRLCache | None = None, *,
                 crl_max_bytes: int = CRL_MAX_BYTES, crl_timeout: float = CRL_TIMEOUT,
                 ocsp_max_bytes: int = OCSP_MAX_BYTES, ocsp_timeout: float = OCSP_TIMEOUT) -> None:
        self.fetcher = fetcher
        self.cache = cache if cache is not None else CRLCache()
        self.crl_max_bytes, self.crl_timeout = crl_max_bytes, crl_timeout
        self.ocsp_max_bytes, self.ocsp_timeout = ocsp_max_bytes, ocsp_timeout

    # -- chain ---------------------------------------------------------------------------------

    def check_chain(self, chain: Sequence[x509.Certificate], now: datetime,
                    signing_time: datetime | None = None) -> RevocationResult:
        """``signing_time``: the authentic signing time, for the invalidityDate exception."""
        results: list[CertRevocation] = []
        for i in range(len(chain) - 1):  # the root is non-revokable
            results.append(self.check_certificate(chain[i], chain[i + 1], now, signing_time))
        revoked = [r for r in results if r.status is RevocationStatus.REVOKED]
        unknown = [r for r in results if r.status is RevocationStatus.UNKNOWN]
        if revoked:
            return RevocationResult(RevocationStatus.REVOKED, tuple(results),
                                    f"certificate with subject {_q(revoked[0].subject)} is revoked"
                                    + (f" ({revoked[0].reason})" if revoked[0].reason else ""))
        if unknown:
            return RevocationResult(RevocationStatus.UNKNOWN, tuple(results),
                                    f"revocation status of certificate with subject {_q(unknown[0].subject)} is "
                                    f"unknown: {unknown[0].reason}")
        return RevocationResult(RevocationStatus.OK, tuple(results),
                                "no certificate in the chain is revoked" if results
                                else "the chain is a single self-signed certificate (non-revokable)")

    def check_certificate(self, cert: x509.Certificate, issuer: x509.Certificate, now: datetime,
                          signing_time: datetime | None) -> CertRevocation:
        subj = subject(cert)
        o_urls, c_urls = ocsp_urls(cert), crl_urls(cert)
        if not o_urls and not c_urls:
            return CertRevocation(subj, RevocationStatus.NON_REVOKABLE, "none",
                                  "the certificate names no OCSP responder or CRL distribution point")
        if self.fetcher is None:
            return CertRevocation(subj, RevocationStatus.UNKNOWN, "none",
                                  "revocation checking needs network access, which is not configured")
        ocsp_reason = ""
        if o_urls:
            try:
                status, why = self._ocsp(cert, issuer, o_urls, now, signing_time)
                return CertRevocation(subj, status, "ocsp", why)
            except _Unknown as exc:
                ocsp_reason = f"OCSP: {exc}"
            if not c_urls:
                return CertRevocation(subj, RevocationStatus.UNKNOWN, "ocsp", ocsp_reason)
        try:
            status, why = self._crl(cert, issuer, c_urls, now, signing_time)
            return CertRevocation(subj, status, "ocsp+crl" if o_urls else "crl", why)
        except _Unknown as exc:
            reason = f"{ocsp_reason}; CRL: {exc}" if ocsp_reason else f"CRL: {exc}"
            return CertRevocation(subj, RevocationStatus.UNKNOWN, "ocsp+crl" if o_urls else "crl", reason)

    # -- CRL -----------------------------------------------------------------------------------

    def _fetch_crl(self, url: str, issuer: x509.Certificate, now: datetime) -> x509.CertificateRevocationList:
        cached = self.cache.get(url, now)
        if cached is not None:
            return cached
        assert self.fetcher is not None
        try:
            raw = self.fetcher.get(url, max_bytes=self.crl_max_bytes, timeout=self.crl_timeout)
        except Exception as exc:  # the fetcher's errors are transport errors of any kind
            raise _Unknown(f"failed to download CRL from {url}: {exc}") from None
        try:
            crl = x509.load_der_x509_crl(raw) if not raw.lstrip().startswith(b"-----") \
                else x509.load_pem_x509_crl(raw)
        except (ValueError, x509.InvalidVersion) as exc:
            raise _Unknown(f"CRL from {url} is malformed: {exc}") from None
        try:
            crl_issuer = crl.issuer
            crl_issuer.rfc4514_string()
        except (ValueError, TypeError) as exc:
            raise _Unknown(f"CRL from {url} is malformed: {exc}") from None
        if crl_issuer != issuer.subject:
            raise _Unknown(f"CRL from {url} is issued by {_q(crl.issuer.rfc4514_string())}, not by the "
                           "certificate's issuer")
        try:
            valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        except (TypeError, UnsupportedAlgorithm, ValueError):
            valid = False
        if not valid:
            raise _Unknown(f"CRL from {url} is not signed by the certificate's issuer")
        nu = crl.next_update_utc
        if nu is None:
            raise _Unknown(f"CRL from {url} has no nextUpdate")
        if now >= nu:
            raise _Unknown(f"CRL from {url} expired at {nu.isoformat()} (nextUpdate has passed)")
        if crl.last_update_utc > now + CLOCK_SKEW:
            raise _Unknown(f"CRL from {url} is not valid yet (thisUpdate {crl.last_update_utc.isoformat()})")
        self.cache.put(url, crl, raw)
        return crl

    def _crl(self, cert: x509.Certificate, issuer: x509.Certificate, urls: Sequence[str], now: datetime,
             signing_time: datetime | None) -> tuple[RevocationStatus, str]:
        errors: list[str] = []
        for url in urls:  # "try the CDP URLs in order until one succeeds"
            try:
                base = self._fetch_crl(url, issuer, now)
                delta = self._delta_for(cert, base, issuer, now)
            except _Unknown as exc:
                errors.append(str(exc))
                continue
            return self._lookup(cert, base, delta, signing_time, url)
        raise _Unknown("; ".join(errors) or "no usable CRL distribution point")

    def _delta_for(self, cert: x509.Certificate, base: x509.CertificateRevocationList,
                   issuer: x509.Certificate, now: datetime) -> x509.CertificateRevocationList | None:
        # RFC 5280 §5.2.6 / §5.2.4; trust-store-trust-policy.md: delta CRLs MUST be supported.
        try:
            urls = delta_crl_urls(base) or delta_crl_urls(cert)
        except ValueError as exc:
            raise _Unknown(f"malformed Freshest CRL extension: {exc}") from None
        if not urls:
            return None
        if len(urls) > 1:
            raise _Unknown("more than one delta CRL URL is not supported")
        delta = self._fetch_crl(urls[0], issuer, now)
        try:
            indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number
        except x509.ExtensionNotFound:
            raise _Unknown(f"CRL from {urls[0]} is not a delta CRL") from None
        try:
            base_number = base.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            raise _Unknown("base CRL has no CRL number, a delta CRL cannot be applied") from None
        if indicator > base_number:
            raise _Unknown(f"delta CRL applies to base CRL number {indicator}, newer than {base_number}")
        return delta

    @staticmethod
    def _lookup(cert: x509.Certificate, base: x509.CertificateRevocationList,
                delta: x509.CertificateRevocationList | None, signing_time: datetime | None,
                url: str) -> tuple[RevocationStatus, str]:
        entry = base.get_revoked_certificate_by_serial_number(cert.serial_number)
        if delta is not None:
            d = delta.get_revoked_certificate_by_serial_number(cert.serial_number)
            if d is not None:
                entry = None if _reason(d) is x509.ReasonFlags.remove_from_crl else d
        if entry is None:
            return RevocationStatus.OK, f"not listed in the CRL from {url}"
        return _revoked_unless_before_invalidity(entry.extensions, entry.revocation_date_utc, signing_time,
                                                 f"serial {cert.serial_number:#x} is listed in the CRL from "
                                                 f"{url}")

    # -- OCSP ----------------------------------------------------------------------------------

    def _ocsp(self, cert: x509.Certificate, issuer: x509.Certificate, urls: Sequence[str], now: datetime,
              signing_time: datetime | None) -> tuple[RevocationStatus, str]:
        assert self.fetcher is not None
        # CertID with SHA-1 is what responders universally support (RFC 6960 §4.1.1; identification only).
        req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()  # noqa: S303
        body = req.public_bytes(serialization.Encoding.DER)
        errors = []
        for url in urls:
            try:
                raw = self.fetcher.post(url, body, content_type="application/ocsp-request",
                                        max_bytes=self.ocsp_max_bytes, timeout=self.ocsp_timeout)
            except Exception as exc:  # transport errors of any kind
                errors.append(f"{url}: {exc}")
                continue
            try:
                return self._judge_ocsp(raw, cert, issuer, req, now, signing_time, url)
            except _Unknown as exc:
                errors.append(f"{url}: {exc}")
        raise _Unknown("; ".join(errors))

    @staticmethod
    def _judge_ocsp(raw: bytes, cert: x509.Certificate, issuer: x509.Certificate, req: ocsp.OCSPRequest,
                    now: datetime, signing_time: datetime | None, url: str) -> tuple[RevocationStatus, str]:
        try:
            resp = ocsp.load_der_ocsp_response(raw)
        except ValueError as exc:
            raise _Unknown(f"malformed OCSP response: {exc}") from None
        if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise _Unknown(f"OCSP responder answered {resp.response_status.name}")
        if resp.serial_number != cert.serial_number or resp.issuer_key_hash != req.issuer_key_hash \
                or resp.issuer_name_hash != req.issuer_name_hash:
            raise _Unknown("OCSP response is about another certificate")
        responder = _ocsp_responder(resp, issuer)
        try:
            verify_x509_style_signature(responder.public_key(), resp.signature, resp.tbs_response_bytes,
                                        resp.signature_hash_algorithm)
        except (InvalidSignature, UnsupportedAlgorithm, TypeError, ValueError):
            raise _Unknown("OCSP response signature does not verify") from None
        if resp.this_update_utc > now + CLOCK_SKEW:
            raise _Unknown("OCSP response is not valid yet")
        if resp.next_update_utc is not None and now >= resp.next_update_utc:
            raise _Unknown(f"OCSP response expired at {resp.next_update_utc.isoformat()}")
        status = resp.certificate_status
        if status is ocsp.OCSPCertStatus.GOOD:
            return RevocationStatus.OK, f"OCSP responder {url} answered good"
        if status is ocsp.OCSPCertStatus.REVOKED:
            when = resp.revocation_time_utc
            return _revoked_unless_before_invalidity(resp.single_extensions, when, signing_time,
                                                     f"OCSP responder {url} answered revoked")
        raise _Unknown(f"OCSP responder {url} answered unknown")


def _reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except (x509.ExtensionNotFound, ValueError):
        return None


def _revoked_unless_before_invalidity(exts: x509.Extensions, revoked_at: datetime | None,
                                      signing_time: datetime | None, what: str) -> tuple[RevocationStatus, str]:
    try:
        invalid_from = exts.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc
    except (x509.ExtensionNotFound, ValueError):
        invalid_from = None
    if invalid_from is not None and signing_time is not None and signing_time < invalid_from:
        return RevocationStatus.OK, (f"{what}, but with invalidity date {invalid_from.isoformat()} after the "
                                     f"authentic signing time {signing_time.isoformat()}")
    suffix = f" (revoked at {revoked_at.isoformat()})" if revoked_at else ""
    return RevocationStatus.REVOKED, what + suffix


def _ocsp_responder(resp: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate:
    """RFC 6960 §4.2.2.2: the issuer itself, or a delegated responder it issued with id-kp-OCSPSigning."""
    if _names_responder(resp, issuer):
        return issuer
    for cand in resp.certificates[:4]:
        if not _names_responder(resp, cand) or not is_issued_by(cand, issuer):
            continue
        try:
            eku = cand.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (x509.ExtensionNotFound, ValueError):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in eku:
            return cand
    raise _Unknown("OCSP response is not signed by the issuer or a responder it authorised")


def _names_responder(resp: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if resp.responder_name is not None:
        return bool(resp.responder_name == cert.subject)
    key_hash = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    return resp.responder_key_hash == key_hash
