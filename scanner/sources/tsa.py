"""RFC 3161 timestamp requests (``sigaudit evidence --tsa-url``): one TimeStampReq POSTed to a TSA,
bounded in size and wall-clock time like the other HTTP edges (``scanner.sources.http``).

    def request_timestamp(url: str, message: bytes, *, seconds: float = TSA_SECONDS) -> bytes

The request is over sha256(message), with a random nonce and ``certReq`` true (the token carries the
TSA's certificate, so it verifies offline). The answer must be a granted TimeStampResp whose token has
that imprint and that nonce; the token (the bare TimeStampToken, RFC 3161 §2.4.2) is returned. Whether
the TSA is trusted is the verifier's question (``scanner.verify.timestamps``), not this one's.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
from rfc3161_client import HashAlgorithm, TimestampRequestBuilder

from scanner.errors import SigauditError
from scanner.redact import display_url, redact_text
from scanner.registry import deadline
from scanner.verify import timestamps

TSA_SECONDS = 30.0  # wall clock for the whole exchange
MAX_RESPONSE_BYTES = timestamps.MAX_TOKEN_BYTES + 1024  # a larger token is refused when verified anyway
CONTENT_TYPE_QUERY = "application/timestamp-query"
CONTENT_TYPE_REPLY = "application/timestamp-reply"


class TsaError(SigauditError):
    """The TSA could not be reached, or its answer is not a timestamp over what was asked."""


def request_timestamp(url: str, message: bytes, *, seconds: float = TSA_SECONDS,
                      max_bytes: int = MAX_RESPONSE_BYTES) -> bytes:
    """A TimeStampToken over ``message`` from the TSA at ``url`` (http or https). TsaError naming the URL as
    shown (never a credential in it) when there is none."""
    shown = display_url(url)
    if not url.startswith(("http://", "https://")):
        raise TsaError(f"TSA URL {shown}: not http(s)")
    req = (TimestampRequestBuilder().data(message).hash_algorithm(HashAlgorithm.SHA256)
           .nonce(nonce=True).cert_request(cert_request=True).build())
    until = time.monotonic() + seconds
    body = bytearray()
    try:
        with deadline.install(httpx.Client(timeout=min(seconds, 10.0), follow_redirects=False)) as client, \
                deadline.within(until, "late"), \
                client.stream("POST", url, content=req.as_bytes(),
                              headers={"Content-Type": CONTENT_TYPE_QUERY, "Accept": CONTENT_TYPE_REPLY,
                                       "Accept-Encoding": "identity"}) as resp:
            # The answer as sent, never inflated: httpx inflates a whole network chunk at once ("gzip,
            # gzip" layer on layer), so a few hundred bytes took hundreds of MiB before the cap saw them.
            encoding = resp.headers.get("content-encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                raise TsaError(f"TSA {shown}: answered a {encoding[:40]!r}-encoded body, not asked for")
            for chunk in resp.iter_raw():
                body += chunk
                if len(body) > max_bytes:
                    raise TsaError(f"TSA {shown}: answer larger than {max_bytes} bytes")
                if time.monotonic() > until:
                    raise TsaError(f"TSA {shown}: no complete answer within {seconds:g} s")
            status = resp.status_code
    except httpx.HTTPError as exc:
        if deadline.cause(exc) is not None:
            raise TsaError(f"TSA {shown}: no complete answer within {seconds:g} s") from None
        raise TsaError(f"TSA {shown}: {type(exc).__name__}: {redact_text(str(exc))}") from None
    if status != 200:
        raise TsaError(f"TSA {shown}: answered HTTP {status}")
    try:
        status_code, token = timestamps.split_response(bytes(body))
        info = timestamps.parse_token(token).tst_info if status_code in (0, 1) and token else None
    except (timestamps.TimestampError, ValueError) as exc:
        raise TsaError(f"TSA {shown}: not a TimeStampResp: {str(exc)[:200]}") from None
    if info is None or token is None:  # granted, grantedWithMods (RFC 3161 §2.4.2) carry a token
        raise TsaError(f"TSA {shown}: refused the request (PKIStatus {status_code})")
    if (info.message_imprint.hash_algorithm.dotted_string != "2.16.840.1.101.3.4.2.1"
            or info.message_imprint.message != hashlib.sha256(message).digest()):
        raise TsaError(f"TSA {shown}: the token is over other bytes than the ones sent")
    if info.nonce != req.nonce:
        raise TsaError(f"TSA {shown}: the token's nonce is not the request's (a replayed answer)")
    return bytes(token)


TSA_CRL_SECONDS = 30.0  # wall clock for every CRL of the TSA's chain together
MAX_TSA_CERTIFICATES = 8  # certificates of a token whose CRLs are fetched


def _crl_problem(data: bytes, cert: Any, issuer: Any) -> str | None:
    """Why ``data`` is not a CRL of ``cert``'s issuer (signed by ``issuer`` when that certificate is at
    hand), or None. Only such bytes go into a pack: the locations come from the TSA's token, and the
    answer of whatever else they name (an internal endpoint's credentials) must never be stored."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
        named = crl.issuer == cert.issuer
    except (ValueError, TypeError):
        return "not a CRL"
    if not named:
        return "not a CRL of the certificate's issuer"
    if issuer is not None:
        try:
            signed = crl.is_signature_valid(issuer.public_key())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            signed = False
        if not signed:
            return "not a CRL signed by the certificate's issuer"
    return None


def _issuer(cert: Any, pool: list[Any]) -> Any:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

    for c in pool:
        if c.subject == cert.issuer:
            try:
                cert.verify_directly_issued_by(c)
                return c
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
    return None


def fetch_chain_crls(token: bytes, *, fetcher: Any = None, roots: Any = (),
                     seconds: float = TSA_CRL_SECONDS) -> list[tuple[str, bytes]]:
    """The CRLs of the token's certificates (``sigaudit evidence --tsa-url``: they go into the pack, under
    its signed manifest, so ``verify-evidence`` checks the TSA chain's revocation offline): for every
    certificate that is not self-signed, every CRL distribution point, its first ``http://`` name that
    answers with a CRL of the certificate's issuer (signed by it, when the issuer is among the token's
    certificates or ``roots``), and the delta CRL (Freshest CRL) the certificate or that CRL names, which
    the offline check applies as the live one does — through the CRL edge
    (``scanner.sources.http.crl_fetcher``: size-capped, each request time-bounded) within ``seconds`` in
    all. A point none of whose names answers so, or such a delta CRL, is a TsaError: a pack whose TSA
    chain cannot be checked later is not built (fail closed), and no other answer is ever stored. The
    verifier checks the CRLs again (validity, scope, revocation)."""
    from cryptography import x509

    from scanner.sources.http import crl_fetcher
    from scanner.verify.revocation import CRL_MAX_BYTES, CRL_TIMEOUT, crl_distribution_points, delta_crl_urls

    try:
        certs = timestamps.load_certificates(timestamps.parse_token(token))
    except ValueError as exc:
        raise TsaError(f"the TSA's token: {str(exc)[:200]}") from None
    fetcher = fetcher if fetcher is not None else crl_fetcher()
    until = time.monotonic() + seconds
    out: dict[str, bytes] = {}
    pool = [*certs, *roots]

    def get(url: str, cert: x509.Certificate) -> bytes:
        left = until - time.monotonic()
        if left <= 0:
            raise TsaError(f"the CRLs of the TSA's chain: not fetched within {seconds:g} s")
        data = bytes(fetcher.get(url, max_bytes=CRL_MAX_BYTES, timeout=min(CRL_TIMEOUT, left)))
        problem = _crl_problem(data, cert, _issuer(cert, pool))
        if problem is not None:
            raise ValueError(problem)
        return data

    def deltas(holder: x509.Certificate | x509.CertificateRevocationList) -> list[str]:
        try:
            return delta_crl_urls(holder)
        except ValueError:  # malformed: the verifier says so
            return []

    for cert in [c for c in certs if c.issuer != c.subject][:MAX_TSA_CERTIFICATES]:
        try:
            points = crl_distribution_points(cert)
        except ValueError as exc:
            raise TsaError(f"the TSA certificate {cert.subject.rfc4514_string()[:200]}: malformed CRL "
                           f"distribution points: {exc}") from None
        fresh: list[str] = []  # the delta CRL of each point: its base's Freshest CRL, else the certificate's
        for names in points:
            errors = []
            for url in names:
                if url in out:
                    break
                if not url.lower().startswith("http://"):
                    errors.append(f"{display_url(url)}: not http://")
                    continue
                try:
                    out[url] = get(url, cert)
                except TsaError:
                    raise
                except Exception as exc:  # the fetcher's errors are transport errors of any kind; or not the CRL
                    errors.append(f"{display_url(url)}: {redact_text(str(exc))[:200]}")
                    continue
                try:
                    data = out[url]
                    base = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
                            else x509.load_der_x509_crl(data))
                    named = deltas(base) or deltas(cert)
                except ValueError:  # not a CRL: the verifier says so
                    named = []
                if len(named) == 1:  # as the verifier (more than one delta CRL URL is "unknown" there)
                    fresh.append(named[0])
                break
            else:
                raise TsaError(f"the TSA certificate {cert.subject.rfc4514_string()[:200]} names a CRL that cannot be "
                               f"fetched: {'; '.join(errors) or 'no URI'}")
        for url in fresh:
            if url in out or not url.lower().startswith("http://"):
                continue
            try:
                out[url] = get(url, cert)
            except TsaError:
                raise
            except Exception as exc:
                raise TsaError(f"the TSA certificate {cert.subject.rfc4514_string()[:200]} names a delta CRL that "
                               f"cannot be fetched: {display_url(url)}: {redact_text(str(exc))[:200]}") from None
    return sorted(out.items())
