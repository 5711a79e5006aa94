"""Certificate revocation for Notary Project chains: OCSP first, CRL as the fallback.

Rules: notaryproject/specifications ``specs/trust-store-trust-policy.md`` "Certificate
Revocation Evaluation" (as implemented by notation-core-go ``revocation/``):

* every certificate of the chain except the root is checked;
* a certificate with an OCSP URL is checked by OCSP; when OCSP cannot give an answer and the
  certificate has CRL distribution points, the CRLs decide; only CDPs → CRL; neither →
  non-revokable (counts as good). A responder or distribution point named in another scheme
  than ``http`` (``https``, ``ldap``) cannot be asked: it gives "unknown", never "non-revokable";
* every distribution point is checked (they may hold partitioned CRLs; the names of one point are
  locations of one CRL, tried in turn), and a CRL is used only if it covers the certificate:
  not a delta CRL, no unknown critical extension of the CRL or of an entry, no entry of another
  issuer (certificateIssuer), and an issuing distribution point that names this point and this
  kind of certificate (RFC 5280 §5.2, §5.3, §6.3.3); "good" needs CRLs that cover every revocation
  reason together (a point or CRL limited to some reasons clears only those);
* an OCSP response is read for the SingleResponse about this certificate (RFC 6960 §4.2.1);
* any certificate revoked → revoked; else any unknown → unknown; else good;
* a revocation entry with an invalidityDate after the authentic signing time does not revoke
  this signature.

Parsing and signature checks are ``cryptography``'s (OCSP request/response, CRL); the network is
reached only through the injected ``Fetcher`` (which bounds size and time), and only over
``http://`` as the spec requires. CRLs are cached by URL and issuer until their ``nextUpdate``; the
cache only saves downloads: issuer, signature and validity are checked on every use.
"""

from __future__ import annotations

import enum
import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    CRLEntryExtensionOID,
    ExtendedKeyUsageOID,
    ExtensionOID,
)

from scanner.verify.base import Fetcher
from scanner.verify.x509 import is_ca, is_issued_by, subject, verify_x509_style_signature


def _q(value: object) -> str:
    """Quote like Go's %q, so messages read as notation's do."""
    return json.dumps(value)

CRL_MAX_BYTES = 10 << 20
CRL_TIMEOUT = 5.0
OCSP_MAX_BYTES = 1 << 20
OCSP_TIMEOUT = 2.0
MAX_URLS = 4  # distribution points / responders tried per certificate
MAX_CRL_DOWNLOADS = 6  # CRL URLs tried per certificate, every distribution point together
MAX_SINGLE_RESPONSES = 64  # SingleResponses examined in one OCSP reply
CLOCK_SKEW = timedelta(minutes=5)
# An OCSP response without nextUpdate is believed this long after its thisUpdate: over plain http
# anyone may replay an old "good" signed before the revocation, which would otherwise never expire
# (mozilla::pkix bounds it so; the CA/B Forum code-signing requirements cap OCSP validity at 10 days).
OCSP_MAX_AGE_WITHOUT_NEXT_UPDATE = timedelta(days=10)


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

    def __init__(self, max_entries: int = 256, *, reusable: Callable[[str, bytes], bool] | None = None) -> None:
        """``reusable(url, der)``: asked before each hit is served (the trust sources' edge: a scan notes
        the CRL as used by the image judged now, an evidence replay serves only the CRL that image
        recorded); False makes it a miss."""
        self._entries: dict[str, tuple[x509.CertificateRevocationList, bytes]] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self._reusable = reusable

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

    def may_reuse(self, key: str, url: str) -> bool:
        """Whether the entry under ``key`` (fetched from ``url``) may serve now (``reusable``)."""
        with self._lock:
            hit = self._entries.get(key)
        return hit is None or self._reusable is None or self._reusable(url, hit[1])

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


# Every reason a CRL can be limited to (RFC 5280 §5.2.5 ReasonFlags; unused/removeFromCRL excluded).
ALL_REASONS = frozenset({x509.ReasonFlags.key_compromise, x509.ReasonFlags.ca_compromise,
                         x509.ReasonFlags.affiliation_changed, x509.ReasonFlags.superseded,
                         x509.ReasonFlags.cessation_of_operation, x509.ReasonFlags.certificate_hold,
                         x509.ReasonFlags.privilege_withdrawn, x509.ReasonFlags.aa_compromise})


class _Unknown(Exception):
    """Status could not be obtained from this source; the message says why."""


def _uris(names: Sequence[x509.GeneralName]) -> list[str]:
    return [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)]


def _is_http(url: str) -> bool:
    return url.lower().startswith("http://")


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """Every OCSP responder the certificate names, whatever the scheme (only http can be asked)."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return _uris([d.access_location for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP])[:MAX_URLS]


def crl_distribution_points(cert: x509.Certificate) -> list[tuple[str, ...]]:
    """The URIs of each CRL distribution point, whatever the scheme. A point named otherwise (a
    relative name, a directory name) has no URI: it cannot be fetched and gives "unknown"."""
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [tuple(_uris(list(dp.full_name or []))[:MAX_URLS]) for dp in cdp][:MAX_URLS]


def crl_point_reasons(cert: x509.Certificate) -> list[frozenset[x509.ReasonFlags] | None]:
    """The ``reasons`` of each distribution point of :func:`crl_distribution_points` (None: all):
    a point limited to some reasons gives a CRL that says nothing about the others (RFC 5280 §6.3.3)."""
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [frozenset(dp.reasons) if dp.reasons is not None else None for dp in cdp][:MAX_URLS]


def crl_urls(cert: x509.Certificate) -> list[str]:
    return [u for point in crl_distribution_points(cert) for u in point]


def delta_crl_urls(ext_holder: x509.Certificate | x509.CertificateRevocationList) -> list[str]:
    """URLs of the Freshest CRL extension (RFC 5280 §5.2.6), whatever the scheme. ValueError when
    it is malformed."""
    try:
        fresh = ext_holder.extensions.get_extension_for_class(x509.FreshestCRL).value
    except x509.ExtensionNotFound:
        return []
    return _uris([n for dp in fresh for n in (dp.full_name or [])])


# CRL extensions processed here (RFC 5280 §5.2): any other critical one makes the CRL unusable. The
# authority key identifier is settled by the signature check; issuerAltName and authorityInfoAccess
# are not read (RFC 5280 has them non-critical), so a critical one is not "processed" either.
_KNOWN_CRL_EXTENSIONS = {ExtensionOID.ISSUING_DISTRIBUTION_POINT, ExtensionOID.DELTA_CRL_INDICATOR,
                         ExtensionOID.CRL_NUMBER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
                         ExtensionOID.FRESHEST_CRL}
# CRL entry extensions processed here (RFC 5280 §5.3); certificateIssuer (indirect CRLs) is refused.
_KNOWN_CRL_ENTRY_EXTENSIONS = {CRLEntryExtensionOID.CRL_REASON, CRLEntryExtensionOID.INVALIDITY_DATE}


def _has_extension(crl: x509.CertificateRevocationList, cls: type[x509.ExtensionType]) -> bool:
    try:
        crl.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return False
    return True


def _crl_scope(crl: x509.CertificateRevocationList, cert: x509.Certificate, point: Sequence[str],
               url: str) -> frozenset[x509.ReasonFlags] | None:
    """RFC 5280 §6.3.3 (b): whether ``crl`` covers ``cert`` for the distribution point ``point``.
    Returns the revocation reasons it covers (None: all; a CRL of some reasons only can revoke, not
    clear, unless others cover the rest); raises ``_Unknown`` when it does not cover the certificate."""
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return None
    if idp.indirect_crl:
        raise _Unknown(f"CRL from {url} is an indirect CRL, which is not supported")
    if idp.only_contains_attribute_certs:
        raise _Unknown(f"CRL from {url} covers only attribute certificates")
    if idp.only_contains_ca_certs and not is_ca(cert):
        raise _Unknown(f"CRL from {url} covers only CA certificates")
    if idp.only_contains_user_certs and is_ca(cert):
        raise _Unknown(f"CRL from {url} covers only end-entity certificates")
    if idp.full_name is not None and not set(_uris(list(idp.full_name))) & set(point):
        raise _Unknown(f"CRL from {url} is for another distribution point "
                       f"({', '.join(_uris(list(idp.full_name))) or 'no URI'})")
    if idp.relative_name is not None:
        raise _Unknown(f"CRL from {url} names its distribution point relatively, which is not supported")
    return frozenset(idp.only_some_reasons) if idp.only_some_reasons is not None else None


def _check_crl_for(crl: x509.CertificateRevocationList, issuer: x509.Certificate, url: str, now: datetime) -> None:
    """What makes a parsed CRL usable for certificates of ``issuer`` at ``now``: issued and signed
    by it, current. Run on every use of a CRL, downloaded or cached."""
    if crl.issuer != issuer.subject:
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


def _check_crl_processable(crl: x509.CertificateRevocationList, url: str) -> None:
    """Refuse what no certificate could use: an unknown critical extension of the CRL (RFC 5280
    §5.2) or of an entry (§5.3), or entries of another issuer (certificateIssuer: an indirect CRL)."""
    try:
        exts = list(crl.extensions)
        entry_exts = [(e.serial_number, list(e.extensions)) for e in crl]
    except (ValueError, TypeError) as exc:
        raise _Unknown(f"CRL from {url} is malformed: {exc}") from None
    unknown = [e.oid.dotted_string for e in exts if e.critical and e.oid not in _KNOWN_CRL_EXTENSIONS]
    if unknown:
        raise _Unknown(f"CRL from {url} has unsupported critical extensions {unknown} (RFC 5280 §5.2)")
    for serial, ext_list in entry_exts:
        for e in ext_list:
            if e.oid == CRLEntryExtensionOID.CERTIFICATE_ISSUER:
                # Entries of another issuer (an indirect CRL): a serial alone no longer names a certificate.
                raise _Unknown(f"CRL from {url} lists certificates of another issuer (certificateIssuer entry "
                               "extension, an indirect CRL), which is not supported")
            if e.critical and e.oid not in _KNOWN_CRL_ENTRY_EXTENSIONS:
                raise _Unknown(f"CRL from {url} has an entry (serial {serial:#x}) with the unsupported critical "
                               f"extension {e.oid.dotted_string} (RFC 5280 §5.3)")


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
                    signing_time: datetime | None = None, *, untrusted: str | None = None) -> RevocationResult:
        """``signing_time``: the authentic signing time, for the invalidityDate exception — vouched for
        by a party other than the chain checked here (never a time the checked keys sign themselves,
        such as a TSA's own genTime for the TSA's chain: a compromised key would backdate it). The
        caller decides which source counts: notation passes only a signing authority's
        authenticSigningTime for the signing chain, never a TSA's genTime (as notation-go does).
        ``untrusted``: why the chain is not trusted; then the endpoints it names are not contacted
        (whoever can push a signature would otherwise make the scanner send requests wherever it
        likes) and any certificate naming one is "unknown" for that reason."""
        results: list[CertRevocation] = []
        for i in range(len(chain) - 1):  # the root is non-revokable
            results.append(self.check_certificate(chain[i], chain[i + 1], now, signing_time, untrusted=untrusted))
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
                          signing_time: datetime | None, *, untrusted: str | None = None) -> CertRevocation:
        subj = subject(cert)
        try:
            o_urls, points = ocsp_urls(cert), crl_distribution_points(cert)
        except ValueError as exc:  # a malformed AIA or CDP extension: what it names is not known
            return CertRevocation(subj, RevocationStatus.UNKNOWN, "none",
                                  f"the certificate's revocation extensions are malformed: {exc}")
        if not o_urls and not points:
            return CertRevocation(subj, RevocationStatus.NON_REVOKABLE, "none",
                                  "the certificate names no OCSP responder or CRL distribution point")
        if untrusted is not None:
            return CertRevocation(subj, RevocationStatus.UNKNOWN, "none",
                                  f"not checked: {untrusted}, so the endpoints it names are not contacted")
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
            if not points:
                return CertRevocation(subj, RevocationStatus.UNKNOWN, "ocsp", ocsp_reason)
        try:
            status, why = self._crl(cert, issuer, points, now, signing_time)
            return CertRevocation(subj, status, "ocsp+crl" if o_urls else "crl", why)
        except _Unknown as exc:
            reason = f"{ocsp_reason}; CRL: {exc}" if ocsp_reason else f"CRL: {exc}"
            return CertRevocation(subj, RevocationStatus.UNKNOWN, "ocsp+crl" if o_urls else "crl", reason)

    # -- CRL -----------------------------------------------------------------------------------

    def _fetch_crl(self, url: str, issuer: x509.Certificate, now: datetime) -> x509.CertificateRevocationList:
        """A CRL from ``url`` issued and signed by ``issuer``, current at ``now``, with no critical
        extension (of the CRL or of an entry) this module does not process. Cached per URL and issuer,
        but the cache only saves the download: the issuer, signature and validity period are checked
        on **every** use (notation-core-go validates after every fetch, cached or not), so no cache
        entry, however it got there, answers for a certificate whose issuer did not sign it."""
        if not _is_http(url):
            raise _Unknown(f"CRL distribution point {url} is not an http:// URL, which is not supported")
        key = f"{hashlib.sha256(issuer.public_bytes(serialization.Encoding.DER)).hexdigest()} {url}"
        cached = self.cache.get(key, now)
        if cached is not None and self.cache.may_reuse(key, url):
            try:
                _check_crl_for(cached, issuer, url, now)
                return cached
            except _Unknown:
                self.cache.drop(key)  # not usable for this issuer now: download afresh
        crl, raw = self._download_crl(url)
        _check_crl_for(crl, issuer, url, now)  # before its entries are read: only the issuer's CRLs cost that
        _check_crl_processable(crl, url)
        self.cache.put(key, crl, raw)
        return crl

    def _download_crl(self, url: str) -> tuple[x509.CertificateRevocationList, bytes]:
        """Download and parse (what it may be used for is decided by the caller)."""
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
            crl.issuer.rfc4514_string()
        except (ValueError, TypeError) as exc:
            raise _Unknown(f"CRL from {url} is malformed: {exc}") from None
        return crl, raw

    def _crl(self, cert: x509.Certificate, issuer: x509.Certificate, points: Sequence[tuple[str, ...]],
             now: datetime, signing_time: datetime | None) -> tuple[RevocationStatus, str]:
        """Every distribution point is checked (partitioned CRLs, as notation-core-go checks every
        one): revoked by any → revoked; else any that cannot be read → unknown; else good only when
        the CRLs read cover every revocation reason together (RFC 5280 §6.3.3, the reasons mask)."""
        goods: list[str] = []
        unknown: list[str] = []
        covered: set[x509.ReasonFlags] = set()
        partial: list[str] = []
        budget = [MAX_CRL_DOWNLOADS]  # URLs tried for one certificate, all points together
        try:
            point_reasons = crl_point_reasons(cert)
        except ValueError as exc:
            raise _Unknown(f"the certificate's CRL distribution points are malformed: {exc}") from None
        for i, point in enumerate(points):
            dp_reasons = point_reasons[i] if i < len(point_reasons) else None
            try:
                status, why, reasons = self._crl_point(cert, issuer, point, now, signing_time, budget, dp_reasons)
            except _Unknown as exc:
                unknown.append(str(exc))
                continue
            if status is RevocationStatus.REVOKED:
                return status, why
            goods.append(why)
            if reasons is None:
                covered |= ALL_REASONS
            else:
                covered |= reasons
                partial.append(f"{why} (reasons {', '.join(sorted(r.name for r in reasons)) or 'none'})")
        if unknown:
            raise _Unknown("; ".join(unknown))
        if not ALL_REASONS <= covered:
            missing = ", ".join(sorted(r.name for r in ALL_REASONS - covered))
            raise _Unknown(f"each CRL read covers only some revocation reasons ({'; '.join(partial)}), "
                           f"none covers {missing} (RFC 5280 §6.3.3)")
        return RevocationStatus.OK, "; ".join(goods)

    def _crl_point(self, cert: x509.Certificate, issuer: x509.Certificate, point: Sequence[str],
                   now: datetime, signing_time: datetime | None, budget: list[int],
                   dp_reasons: frozenset[x509.ReasonFlags] | None = None,
                   ) -> tuple[RevocationStatus, str, frozenset[x509.ReasonFlags] | None]:
        """One distribution point: its URLs are locations of one CRL, tried in order until one
        gives a CRL that covers the certificate. Also returns the reasons that CRL covers (None: all),
        those of the point and of the CRL's issuing distribution point together."""
        errors: list[str] = []
        for url in point:
            if budget[0] <= 0:
                errors.append(f"not tried: more than {MAX_CRL_DOWNLOADS} CRL locations for one certificate")
                break
            budget[0] -= 1
            try:
                base = self._fetch_crl(url, issuer, now)
                if _has_extension(base, x509.DeltaCRLIndicator):
                    # Served in place of the complete CRL, it lists only recent changes.
                    raise _Unknown(f"CRL from {url} is a delta CRL, not a complete CRL")
                idp_reasons = _crl_scope(base, cert, point, url)
                delta = self._delta_for(cert, base, issuer, point, now)
            except _Unknown as exc:
                errors.append(str(exc))
                continue
            status, why = self._lookup(cert, base, delta, signing_time, url)
            reasons = dp_reasons if idp_reasons is None else (
                idp_reasons if dp_reasons is None else idp_reasons & dp_reasons)
            return status, why, reasons
        raise _Unknown("; ".join(errors) or "a CRL distribution point names no URL")

    def _delta_for(self, cert: x509.Certificate, base: x509.CertificateRevocationList,
                   issuer: x509.Certificate, point: Sequence[str],
                   now: datetime) -> x509.CertificateRevocationList | None:
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
            delta_number = delta.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            raise _Unknown("base or delta CRL has no CRL number, a delta CRL cannot be applied") from None
        if indicator > base_number:
            raise _Unknown(f"delta CRL applies to base CRL number {indicator}, newer than {base_number}")
        if delta_number <= base_number:
            # An older delta (replayed over plain HTTP) could "remove from CRL" what the base now lists.
            raise _Unknown(f"delta CRL number {delta_number} is not greater than the base CRL number {base_number}")
        if _crl_scope(delta, cert, [*point, urls[0]], urls[0]) is not None:
            raise _Unknown(f"delta CRL from {urls[0]} covers only some revocation reasons")
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
            if not _is_http(url):
                errors.append(f"{url}: OCSP responder is not an http:// URL, which is not supported")
                continue
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
            if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
                raise _Unknown(f"OCSP responder answered {resp.response_status.name}")
            # RFC 6960 §4.2.1: a response may carry several SingleResponses; only the one whose
            # CertID is this certificate's speaks for it (the others are bounded and ignored).
            single = next((r for r in list(resp.responses)[:MAX_SINGLE_RESPONSES]
                           if r.serial_number == cert.serial_number and r.issuer_key_hash == req.issuer_key_hash
                           and r.issuer_name_hash == req.issuer_name_hash), None)
            tbs, signature, hash_alg = resp.tbs_response_bytes, resp.signature, resp.signature_hash_algorithm
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise _Unknown(f"malformed OCSP response: {exc}") from None
        if single is None:
            raise _Unknown("OCSP response is about another certificate")
        responder = _ocsp_responder(resp, issuer, now)
        try:
            verify_x509_style_signature(responder.public_key(), signature, tbs, hash_alg)
        except (InvalidSignature, UnsupportedAlgorithm, TypeError, ValueError):
            raise _Unknown("OCSP response signature does not verify") from None
        if single.this_update_utc > now + CLOCK_SKEW:
            raise _Unknown("OCSP response is not valid yet")
        if single.next_update_utc is not None and now >= single.next_update_utc:
            raise _Unknown(f"OCSP response expired at {single.next_update_utc.isoformat()}")
        if single.next_update_utc is None and now >= single.this_update_utc + OCSP_MAX_AGE_WITHOUT_NEXT_UPDATE:
            raise _Unknown(f"OCSP response has no nextUpdate and its thisUpdate {single.this_update_utc.isoformat()} "
                           f"is older than {OCSP_MAX_AGE_WITHOUT_NEXT_UPDATE.days} days")
        status = single.certificate_status
        if status is ocsp.OCSPCertStatus.GOOD:
            return RevocationStatus.OK, f"OCSP responder {url} answered good"
        if status is ocsp.OCSPCertStatus.REVOKED:
            when = single.revocation_time_utc
            return _revoked_unless_before_invalidity(_single_extensions(resp, single), when, signing_time,
                                                     f"OCSP responder {url} answered revoked")
        raise _Unknown(f"OCSP responder {url} answered unknown")


def _single_extensions(resp: ocsp.OCSPResponse, single: ocsp.OCSPSingleResponse) -> x509.Extensions:
    """The singleExtensions of ``single`` (cryptography exposes them only for a one-response reply;
    with several, the invalidityDate exception is not applied: the revocation stands)."""
    try:
        return resp.single_extensions
    except ValueError:
        return x509.Extensions([])


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


def _ocsp_responder(resp: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime) -> x509.Certificate:
    """RFC 6960 §4.2.2.2: the issuer itself, or a delegated responder it issued with id-kp-OCSPSigning,
    valid now (an expired responder's key is no longer looked after: it could sign any answer)."""
    if _names_responder(resp, issuer):
        return issuer
    for cand in resp.certificates[:4]:
        if not _names_responder(resp, cand) or not is_issued_by(cand, issuer):
            continue
        if not (cand.not_valid_before_utc - CLOCK_SKEW <= now <= cand.not_valid_after_utc):
            raise _Unknown(f"OCSP response is signed by a delegated responder whose certificate is not valid now "
                           f"(valid {cand.not_valid_before_utc.isoformat()} to {cand.not_valid_after_utc.isoformat()})")
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
