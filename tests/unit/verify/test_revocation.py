"""Revocation (CRL and OCSP) against answers an attacker can give.

CRLs and OCSP responses travel over plain HTTP (the Notary Project requires it; the data is
signed), so anyone on the path can serve *any* CRL or response the issuer ever signed: a delta CRL
in place of the complete one, a CRL of another partition or scope, an older delta, a reply about
several certificates. None of them may clear a revoked certificate. Each case is served by a real
HTTP server on 127.0.0.1 through ``HttpFetcher``, as a scan reaches it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from scanner.registry.fetcher import HttpFetcher
from scanner.verify.revocation import CRLCache, RevocationChecker, RevocationStatus
from tests.harness.notation_sign import Issued
from tests.unit.verify.test_notation_signing import NOW, T0, Server, issue

REVOKED_SERIAL = 0x7001


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def crl(issuer: Issued, revoked: list[int], *, number: int = 5, delta_of: int | None = None,
        idp: x509.IssuingDistributionPoint | None = None, extra: x509.ExtensionType | None = None,
        extra_critical: bool = True, freshest: str | None = None, removed: tuple[int, ...] = ()) -> bytes:
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject).last_update(T0)
         .next_update(T0 + timedelta(days=30)).add_extension(x509.CRLNumber(number), critical=False))
    if delta_of is not None:
        b = b.add_extension(x509.DeltaCRLIndicator(delta_of), critical=True)
    if idp is not None:
        b = b.add_extension(idp, critical=True)
    if extra is not None:
        b = b.add_extension(extra, critical=extra_critical)
    if freshest is not None:
        b = b.add_extension(x509.FreshestCRL([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(freshest)], None, None, None)]), critical=False)
    for serial in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(T0 + timedelta(days=1)).build())
    for serial in removed:  # a delta CRL's "removeFromCRL" entry (RFC 5280 §5.3.1)
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(T0 + timedelta(days=1))
                                      .add_extension(x509.CRLReason(x509.ReasonFlags.remove_from_crl), critical=False)
                                      .build())
    return b.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def idp(*, full_name: str | None = None, ca_only: bool = False, user_only: bool = False,
        reasons: frozenset[x509.ReasonFlags] | None = None) -> x509.IssuingDistributionPoint:
    return x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(full_name)] if full_name else None, relative_name=None,
        only_contains_user_certs=user_only, only_contains_ca_certs=ca_only, only_some_reasons=reasons,
        indirect_crl=False, only_contains_attribute_certs=False)


def status(leaf: Issued, root: Issued, cache: CRLCache | None = None) -> Any:
    return RevocationChecker(HttpFetcher(), cache).check_chain([leaf.cert, root.cert], NOW)


# ----------------------------------------------------------------------------------------------
# CRLs


def test_control_the_complete_crl_revokes(server: Server) -> None:
    root = issue("Root", ca=True)
    leaf = issue("Leaf", issuer=root, crl_url=f"{server.base}/leaf.crl", serial=REVOKED_SERIAL)
    server.routes["/leaf.crl"] = (200, crl(root, [REVOKED_SERIAL]))
    assert status(leaf, root).status is RevocationStatus.REVOKED


def test_a_delta_crl_served_in_place_of_the_complete_crl_is_not_believed(server: Server) -> None:
    root = issue("Root", ca=True)
    leaf = issue("Leaf", issuer=root, crl_url=f"{server.base}/leaf.crl", serial=REVOKED_SERIAL)
    server.routes["/leaf.crl"] = (200, crl(root, [], number=6, delta_of=5))  # lists only recent changes
    r = status(leaf, root)
    assert r.status is RevocationStatus.UNKNOWN and "is a delta CRL, not a complete CRL" in r.reason


@pytest.mark.parametrize(("scope", "needle"), [
    (idp(ca_only=True), "covers only CA certificates"),
    (idp(full_name="http://crl.example/partition-2.crl"), "is for another distribution point"),
    (idp(reasons=frozenset({x509.ReasonFlags.key_compromise})), "covers only some revocation reasons"),
])
def test_a_crl_of_another_scope_does_not_clear_the_certificate(scope: x509.IssuingDistributionPoint, needle: str,
                                                               server: Server) -> None:
    """RFC 5280 §6.3.3 (b): a CRL whose issuing distribution point does not cover the certificate
    (CA certificates only, another partition, some reasons only) says nothing about its absence."""
    root = issue("Root", ca=True)
    leaf = issue("Leaf", issuer=root, crl_url=f"{server.base}/leaf.crl", serial=REVOKED_SERIAL)
    server.routes["/leaf.crl"] = (200, crl(root, [], idp=scope))
    r = status(leaf, root)
    assert r.status is RevocationStatus.UNKNOWN and needle in r.reason, r.reason
    # A CRL of the right scope is used: it names this point.
    server.routes["/leaf.crl"] = (200, crl(root, [], idp=idp(full_name=f"{server.base}/leaf.crl", user_only=True)))
    assert status(leaf, root).status is RevocationStatus.OK


def test_a_partial_crl_that_lists_the_certificate_still_revokes(server: Server) -> None:
    root = issue("Root", ca=True)
    leaf = issue("Leaf", issuer=root, crl_url=f"{server.base}/leaf.crl", serial=REVOKED_SERIAL)
    server.routes["/leaf.crl"] = (200, crl(root, [REVOKED_SERIAL],
                                           idp=idp(reasons=frozenset({x509.ReasonFlags.key_compromise}))))
    assert status(leaf, root).status is RevocationStatus.REVOKED


@pytest.mark.parametrize("ext", [
    x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"),
    x509.IssuerAlternativeName([x509.UniformResourceIdentifier("http://ca.example/")]),  # not processed here
    x509.AuthorityInformationAccess([x509.AccessDescription(
        x509.oid.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier("http://ca.example/ca.crt"))]),
], ids=["unknown", "issuerAltName", "authorityInfoAccess"])
def test_an_unknown_critical_extension_makes_the_crl_unusable(ext: x509.ExtensionType, server: Server) -> None:
    root = issue("Root", ca=True)
    leaf = issue("Leaf", issuer=root, crl_url=f"{server.base}/leaf.crl", serial=REVOKED_SERIAL)
    server.routes["/leaf.crl"] = (200, crl(root, [], extra=ext))
    r = status(leaf, root)
    assert r.status is RevocationStatus.UNKNOWN and "unsupported critical extensions" in r.reason
    server.routes["/leaf.crl"] = (200, crl(root, [], extra=ext, extra_critical=False))  # non-critical: ignored
    assert status(leaf, root).status is RevocationStatus.OK


def test_every_distribution_point_is_checked(server: Server) -> None:
    """Two points, two partitions: the first does not list the certificate, the second does. As
    notation-core-go checks every point, the certificate is revoked (it was OK after the first)."""
    root = issue("Root", ca=True)
    leaf = issue("Leaf", issuer=root, crl_url=[f"{server.base}/p1.crl", f"{server.base}/p2.crl"],
                 serial=REVOKED_SERIAL)
    server.routes["/p1.crl"] = (200, crl(root, []))
    server.routes["/p2.crl"] = (200, crl(root, [REVOKED_SERIAL]))
    assert status(leaf, root).status is RevocationStatus.REVOKED
    server.routes["/p2.crl"] = (404, b"")  # a point that cannot be read leaves the status unknown
    assert status(leaf, root).status is RevocationStatus.UNKNOWN
    server.routes["/p2.crl"] = (200, crl(root, []))
    assert status(leaf, root).status is RevocationStatus.OK


def test_an_older_delta_cannot_take_a_revocation_back(server: Server) -> None:
    """A delta CRL whose number is not above the base's is older than the base: replayed, its
    removeFromCRL entry would clear a certificate the current base lists."""
    root = issue("Root", ca=True)
    leaf = issue("Leaf", issuer=root, crl_url=f"{server.base}/leaf.crl", serial=REVOKED_SERIAL)
    server.routes["/leaf.crl"] = (200, crl(root, [REVOKED_SERIAL], number=8, freshest=f"{server.base}/delta.crl"))
    server.routes["/delta.crl"] = (200, crl(root, [], number=7, delta_of=6, removed=(REVOKED_SERIAL,)))
    r = status(leaf, root)
    assert r.status is RevocationStatus.UNKNOWN and "is not greater than the base CRL number" in r.reason
    # A newer delta may take it back.
    server.routes["/delta.crl"] = (200, crl(root, [], number=9, delta_of=8, removed=(REVOKED_SERIAL,)))
    assert status(leaf, root).status is RevocationStatus.OK


def test_the_crl_cache_is_per_issuer(server: Server) -> None:
    """A re-keyed CA keeps its name and its distribution point; the CRL cached for the old key's
    certificates must not answer for the new key's (it was checked against the old key only)."""
    old_key, new_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    old_ca = issue("Rekeyed CA", ca=True, key=old_key)
    new_ca = issue("Rekeyed CA", ca=True, key=new_key)
    assert old_ca.cert.subject == new_ca.cert.subject
    url = f"{server.base}/ca.crl"
    old_leaf = issue("Old Leaf", issuer=old_ca, crl_url=url, serial=REVOKED_SERIAL)
    new_leaf = issue("New Leaf", issuer=new_ca, crl_url=url, serial=REVOKED_SERIAL)
    cache = CRLCache()
    server.routes["/ca.crl"] = (200, crl(old_ca, []))
    assert status(old_leaf, old_ca, cache).status is RevocationStatus.OK
    server.routes["/ca.crl"] = (200, crl(new_ca, [REVOKED_SERIAL]))
    assert status(new_leaf, new_ca, cache).status is RevocationStatus.REVOKED


@pytest.mark.parametrize("where", ["crl", "ocsp", "both"])
def test_endpoints_that_cannot_be_asked_are_unknown_not_non_revokable(where: str, server: Server) -> None:
    """A certificate naming its CRL or OCSP responder only over https or ldap (which the Notary Project
    revocation rules do not fetch) is not "non-revokable": its status is unknown, as notation-core-go says."""
    root = issue("Root", ca=True)
    kw: dict[str, Any] = {}
    if where in ("crl", "both"):
        kw["crl_url"] = "ldap://ldap.example/cn=Root,o=Acme?certificateRevocationList"
    if where in ("ocsp", "both"):
        kw["ocsp_url"] = f"https://127.0.0.1:{server.base.rsplit(':', 1)[1]}/ocsp"
    leaf = issue("Leaf", issuer=root, **kw)
    r = status(leaf, root)
    assert r.status is RevocationStatus.UNKNOWN, r.reason
    assert "not an http:// URL" in r.reason
    assert server.hits == []


# ----------------------------------------------------------------------------------------------
# OCSP: a reply about several certificates (RFC 6960 §4.2.1 allows it; cryptography's builder
# writes one SingleResponse, so a second is spliced in and the reply re-signed).


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    tag, first = data[pos], data[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    n = first & 0x7F
    length = int.from_bytes(data[pos + 2:pos + 2 + n], "big")
    return tag, pos + 2 + n, pos + 2 + n + length


def _items(data: bytes) -> list[bytes]:
    _, start, end = _tlv(data, 0)
    out, pos = [], start
    while pos < end:
        _, _, e = _tlv(data, pos)
        out.append(data[pos:e])
        pos = e
    return out


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _basic(resp: bytes) -> tuple[bytes, bytes, bytes]:
    """(responseStatus, responseType, BasicOCSPResponse) of an OCSPResponse."""
    status_, wrapped = _items(resp)
    _, s, e = _tlv(wrapped, 0)
    rtype, octets = _items(wrapped[s:e])
    _, os_, oe = _tlv(octets, 0)
    return status_, rtype, octets[os_:oe]


def two_single_responses(first: bytes, second: bytes, key: Any) -> bytes:
    status_, rtype, basic = _basic(first)
    parts = _items(basic)
    tbs = _items(parts[0])
    tbs2 = _items(_items(_basic(second)[2])[0])
    i = next(k for k, t in enumerate(tbs) if t[0] == 0x30)  # responses SEQUENCE OF SingleResponse
    j = next(k for k, t in enumerate(tbs2) if t[0] == 0x30)
    tbs[i] = _der(0x30, b"".join(_items(tbs[i])) + b"".join(_items(tbs2[j])))
    new_tbs = _der(0x30, b"".join(tbs))
    sig = key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    new_basic = _der(0x30, new_tbs + parts[1] + _der(0x03, b"\x00" + sig) + b"".join(parts[3:]))
    return _der(0x30, status_ + _der(0xA0, _der(0x30, rtype + _der(0x04, new_basic))))


def _one(root: Issued, cert: x509.Certificate, st: ocsp.OCSPCertStatus) -> bytes:
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=root.cert, algorithm=hashes.SHA1(), cert_status=st, this_update=T0,
        next_update=T0 + timedelta(days=30), revocation_time=T0 if st is ocsp.OCSPCertStatus.REVOKED else None,
        revocation_reason=None).responder_id(ocsp.OCSPResponderEncoding.HASH, root.cert)
    return b.sign(root.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(("answers", "expected"), [
    (("leaf", "good", "other", "revoked"), RevocationStatus.OK),
    (("other", "good", "leaf", "revoked"), RevocationStatus.REVOKED),
    (("other", "good", "third", "good"), RevocationStatus.UNKNOWN),
])
def test_an_ocsp_reply_about_several_certificates_is_read_for_this_one(
        answers: tuple[str, str, str, str], expected: RevocationStatus, server: Server) -> None:
    root = issue("OCSP Root", ca=True)
    certs = {"leaf": issue("Leaf", issuer=root, ocsp_url=f"{server.base}/ocsp"),
             "other": issue("Other", issuer=root), "third": issue("Third", issuer=root)}
    st = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED}
    reply = two_single_responses(_one(root, certs[answers[0]].cert, st[answers[1]]),
                                 _one(root, certs[answers[2]].cert, st[answers[3]]), root.key)
    assert len(list(ocsp.load_der_ocsp_response(reply).responses)) == 2
    answer: Callable[[bytes], tuple[int, bytes]] = lambda body: (200, reply)  # noqa: E731
    server.routes["/ocsp"] = answer
    r = status(certs["leaf"], root)
    assert r.status is expected, r.reason
    if expected is RevocationStatus.UNKNOWN:
        assert "about another certificate" in r.reason


def test_crl_downloads_per_certificate_are_bounded(server: Server) -> None:
    """Every point is read, but not every name of every point: a certificate naming 4 points of 4
    unreachable locations each costs at most 6 downloads (each bounded in time and size)."""
    root = issue("Root", ca=True)
    leaf = issue("Leaf", issuer=root, serial=REVOKED_SERIAL, crl_url=[f"{server.base}/p{i}.crl" for i in range(4)])
    ext = leaf.cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert len(ext) == 4
    many = x509.CRLDistributionPoints([x509.DistributionPoint(
        [x509.UniformResourceIdentifier(f"{server.base}/p{i}-{j}.crl") for j in range(4)], None, None, None)
        for i in range(4)])
    b = (x509.CertificateBuilder().subject_name(leaf.cert.subject).issuer_name(root.cert.subject)
         .public_key(leaf.key.public_key()).serial_number(REVOKED_SERIAL)
         .not_valid_before(leaf.cert.not_valid_before_utc).not_valid_after(leaf.cert.not_valid_after_utc)
         .add_extension(many, critical=False))
    cert = b.sign(root.key, hashes.SHA256())
    r = RevocationChecker(HttpFetcher()).check_chain([cert, root.cert], NOW)
    assert r.status is RevocationStatus.UNKNOWN
    assert len(server.hits) == 6 and "more than 6 CRL locations" in r.reason


# ----------------------------------------------------------------------------------------------
# CRL entries, reasons and the cache (issue #26 items 4 and 5)


def _crl_with_entry(issuer: Issued, serial: int, ext: x509.ExtensionType, critical: bool) -> bytes:
    entry = (x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(T0 + timedelta(days=1))
             .add_extension(ext, critical=critical).build())
    return (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject).last_update(T0)
            .next_update(T0 + timedelta(days=30)).add_extension(x509.CRLNumber(5), critical=False)
            .add_revoked_certificate(entry).sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def test_a_crl_with_an_unknown_critical_entry_extension_is_unusable(server: Server) -> None:
    """RFC 5280 §5.3: a CRL with a critical entry extension that cannot be processed is not used for
    any certificate, also those it does not list."""
    root = issue("Root", ca=True)
    leaf = issue("Leaf", issuer=root, crl_url=f"{server.base}/leaf.crl", serial=REVOKED_SERIAL)
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.2"), b"\x05\x00")
    server.routes["/leaf.crl"] = (200, _crl_with_entry(root, 0x42, ext, critical=True))
    r = status(leaf, root)
    assert r.status is RevocationStatus.UNKNOWN and "unsupported critical extension" in r.reason, r.reason
    server.routes["/leaf.crl"] = (200, _crl_with_entry(root, 0x42, ext, critical=False))
    assert status(leaf, root).status is RevocationStatus.OK


def test_an_indirect_crl_by_its_entries_is_unusable(server: Server) -> None:
    """A certificateIssuer entry extension makes the following entries another issuer's: a serial alone
    no longer says which certificate is listed (even without an indirectCRL issuing distribution point)."""
    root = issue("Root", ca=True)
    leaf = issue("Leaf", issuer=root, crl_url=f"{server.base}/leaf.crl", serial=REVOKED_SERIAL)
    other = x509.CertificateIssuer([x509.DirectoryName(x509.Name.from_rfc4514_string("CN=Other CA"))])
    server.routes["/leaf.crl"] = (200, _crl_with_entry(root, 0x42, other, critical=True))
    r = status(leaf, root)
    assert r.status is RevocationStatus.UNKNOWN and "indirect CRL" in r.reason, r.reason


def _leaf_with_points(root: Issued, points: list[tuple[str, frozenset[x509.ReasonFlags] | None]]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    cdp = x509.CRLDistributionPoints([x509.DistributionPoint([x509.UniformResourceIdentifier(u)], None, reasons, None)
                                      for u, reasons in points])
    return (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string("CN=Leaf,O=Acme"))
            .issuer_name(root.cert.subject).public_key(key.public_key()).serial_number(REVOKED_SERIAL)
            .not_valid_before(T0 - timedelta(days=1)).not_valid_after(T0 + timedelta(days=365))
            .add_extension(cdp, critical=False).sign(root.key, hashes.SHA256()))


def test_a_distribution_point_for_some_reasons_does_not_clear_the_others(server: Server) -> None:
    """RFC 5280 §6.3.3: the CRL of a point limited to keyCompromise says nothing about a certificate
    revoked for another reason (listed in another CRL the certificate does not name)."""
    root = issue("Root", ca=True)
    kc = frozenset({x509.ReasonFlags.key_compromise})
    leaf = _leaf_with_points(root, [(f"{server.base}/kc.crl", kc)])
    server.routes["/kc.crl"] = (200, crl(root, []))
    r = RevocationChecker(HttpFetcher()).check_chain([leaf, root.cert], NOW)
    assert r.status is RevocationStatus.UNKNOWN and "covers only some revocation reasons" in r.reason, r.reason
    # Two points that cover every reason together decide.
    rest = frozenset(x509.ReasonFlags) - {x509.ReasonFlags.unspecified, x509.ReasonFlags.remove_from_crl} - kc
    leaf = _leaf_with_points(root, [(f"{server.base}/kc.crl", kc), (f"{server.base}/rest.crl", rest)])
    server.routes["/rest.crl"] = (200, crl(root, []))
    assert RevocationChecker(HttpFetcher()).check_chain([leaf, root.cert], NOW).status is RevocationStatus.OK
    server.routes["/rest.crl"] = (200, crl(root, [REVOKED_SERIAL]))
    assert RevocationChecker(HttpFetcher()).check_chain([leaf, root.cert], NOW).status is RevocationStatus.REVOKED


def test_a_cached_crl_is_checked_against_the_issuer_on_every_use(server: Server) -> None:
    """However a CRL got into the cache (another issuer of the same name, a cache persisted and read
    back), it answers only for certificates whose issuer signed it: the issuer and signature are
    checked on every use, and an entry that fails is replaced by a fresh download."""
    real_ca = issue("Rekeyed CA", ca=True)
    impostor = issue("Rekeyed CA", ca=True)  # same name, another key
    leaf = issue("Leaf", issuer=real_ca, crl_url=f"{server.base}/ca.crl", serial=REVOKED_SERIAL)
    stale = x509.load_der_x509_crl(crl(impostor, []))

    class Warmed(CRLCache):
        def get(self, url: str, now: Any) -> x509.CertificateRevocationList | None:
            return stale

    server.routes["/ca.crl"] = (200, crl(real_ca, [REVOKED_SERIAL]))
    r = status(leaf, real_ca, Warmed())
    assert r.status is RevocationStatus.REVOKED, r.reason
    assert server.hits == ["/ca.crl"]


# ----------------------------------------------------------------------------------------------
# OCSP replays (attacker pass): plain http lets anyone serve any response the issuer ever signed.


def _ocsp_good(signer: Issued, root: Issued, cert: x509.Certificate, *, this_update: Any,
               next_update: Any, delegated: bool = False) -> bytes:
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=root.cert, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
        this_update=this_update, next_update=next_update, revocation_time=None, revocation_reason=None)
    b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
    if delegated:
        b = b.certificates([signer.cert])
    return b.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_an_old_ocsp_good_without_next_update_does_not_last_forever(server: Server) -> None:
    """A 'good' with no nextUpdate, signed a year before the certificate was revoked, replayed today."""
    root = issue("OCSP Root", ca=True)
    leaf = issue("Leaf", issuer=root, ocsp_url=f"{server.base}/ocsp")
    server.routes["/ocsp"] = (200, _ocsp_good(root, root, leaf.cert, this_update=NOW - timedelta(days=365),
                                              next_update=None))
    r = status(leaf, root)
    assert r.status is RevocationStatus.UNKNOWN and "no nextUpdate" in r.reason, r.reason
    server.routes["/ocsp"] = (200, _ocsp_good(root, root, leaf.cert, this_update=NOW - timedelta(hours=2),
                                              next_update=None))
    assert status(leaf, root).status is RevocationStatus.OK


def test_an_expired_delegated_ocsp_responder_is_not_believed(server: Server) -> None:
    """An expired responder's key is no longer looked after: whoever has it could answer 'good' for
    every certificate of the CA."""
    root = issue("OCSP Root", ca=True)
    leaf = issue("Leaf", issuer=root, ocsp_url=f"{server.base}/ocsp")
    old = issue("Responder", issuer=root, eku=[x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING],
                not_before=NOW - timedelta(days=800), not_after=NOW - timedelta(days=30))
    server.routes["/ocsp"] = (200, _ocsp_good(old, root, leaf.cert, this_update=NOW - timedelta(hours=1),
                                              next_update=NOW + timedelta(days=1), delegated=True))
    r = status(leaf, root)
    assert r.status is RevocationStatus.UNKNOWN and "delegated responder" in r.reason, r.reason
    current = issue("Responder", issuer=root, eku=[x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING])
    server.routes["/ocsp"] = (200, _ocsp_good(current, root, leaf.cert, this_update=NOW - timedelta(hours=1),
                                              next_update=NOW + timedelta(days=1), delegated=True))
    assert status(leaf, root).status is RevocationStatus.OK


def test_a_cached_crl_serves_again_only_when_the_trust_sources_allow_it(server: Server) -> None:
    """Issue #23: a scan notes each reuse for the image judged now; an evidence replay allows only the
    CRL the replayed image recorded — else the CRL is fetched (from that image's record) again."""
    ca = issue("Root", ca=True)
    leaf = issue("Leaf", issuer=ca, crl_url=f"{server.base}/ca.crl", serial=REVOKED_SERIAL)
    server.routes["/ca.crl"] = (200, crl(ca, []))
    asked: list[tuple[str, bytes]] = []
    allow = [True]

    def reusable(url: str, der: bytes) -> bool:
        asked.append((url, der))
        return allow[0]

    cache = CRLCache(reusable=reusable)
    assert status(leaf, ca, cache).status is RevocationStatus.OK
    assert status(leaf, ca, cache).status is RevocationStatus.OK
    assert server.hits == ["/ca.crl"] and [u for u, _ in asked] == [f"{server.base}/ca.crl"]
    allow[0] = False
    assert status(leaf, ca, cache).status is RevocationStatus.OK
    assert server.hits == ["/ca.crl", "/ca.crl"]  # refused: fetched again
