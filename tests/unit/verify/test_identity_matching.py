"""Identity matching on certificates made here (cryptography): SAN kinds, both OIDC issuer encodings, and
the defence in depth that a certificate without SAN or issuer matches no identity at all, even ``.*``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sigstore.errors import VerificationError

from scanner.verify.identity import (
    _FULCIO_OTHERNAME,
    OIDC_ISSUER_V1,
    OIDC_ISSUER_V2,
    IdentityMatcher,
    IdentityPolicy,
    _Match,
    cert_extensions,
    cert_identity,
    cert_issuer,
    match_identities,
)

ISSUER = "https://issuer.example"
KEY = ec.generate_private_key(ec.SECP256R1())


def make_cert(
    *, emails: tuple[str, ...] = (), uris: tuple[str, ...] = (), others: tuple[tuple[str, bytes], ...] = (),
    v1: bytes | None = None, v2: bytes | None = None, extra: tuple[tuple[str, bytes], ...] = (),
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(KEY.public_key())
         .serial_number(1).not_valid_before(datetime(2026, 1, 1, tzinfo=UTC))
         .not_valid_after(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=1)))
    general: list[x509.GeneralName] = [x509.RFC822Name(e) for e in emails]
    general += [x509.UniformResourceIdentifier(u) for u in uris]
    general += [x509.OtherName(x509.ObjectIdentifier(oid), value) for oid, value in others]
    if general:
        b = b.add_extension(x509.SubjectAlternativeName(general), critical=False)
    if v1 is not None:
        b = b.add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V1, v1), critical=False)
    if v2 is not None:
        b = b.add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V2, v2), critical=False)
    for oid, raw in extra:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), raw), critical=False)
    return b.sign(KEY, hashes.SHA256())


def der_utf8(text: str) -> bytes:
    return asn1.encode_der(text)


def test_exact_and_regexp_matches() -> None:
    assert _Match(exact="a@b").matches("a@b") and not _Match(exact="a@b").matches("a@bc")
    assert _Match(regexp="a.*").matches("abc")
    assert not _Match(regexp="a").matches("abc")  # whole value only
    assert not _Match(regexp="b").matches("abc")
    assert str(_Match(exact="x")) == "x" and str(_Match(regexp="x.*")) == "~/x.*/"


@pytest.mark.parametrize("kwargs", [{}, {"exact": "a", "regexp": "a"}, {"regexp": "x" * 1025}, {"regexp": "("}])
def test_a_match_needs_exactly_one_sane_pattern(kwargs: dict[str, str]) -> None:
    with pytest.raises((ValueError, re.error)):  # both refuse the policy at load
        _Match(**kwargs)


def test_a_pattern_of_the_maximum_length_is_accepted() -> None:
    assert _Match(regexp="x" * 1024).matches("x" * 1024)


def test_matcher_needs_issuer_and_one_san() -> None:
    m = IdentityMatcher.exact(subject="a@b", issuer=ISSUER)
    assert m.matches(["x@y", "a@b"], ISSUER)  # any SAN
    assert not m.matches(["x@y"], ISSUER)
    assert not m.matches(["a@b"], "https://other")
    assert not m.matches(["a@b"], None)
    r = IdentityMatcher.regexp(subject=".*@b", issuer="https://issuer\\..*")
    assert r.matches(["a@b"], ISSUER) and not r.matches(["a@c"], ISSUER)
    assert str(m) == f"subject a@b issuer {ISSUER}"


def test_required_extensions_need_extensions_read() -> None:
    m = IdentityMatcher(_Match(exact=ISSUER), _Match(exact="a@b"), (("githubWorkflowRef", _Match(exact="r")),))
    assert m.matches(["a@b"], ISSUER, {"githubWorkflowRef": "r"})
    assert not m.matches(["a@b"], ISSUER, {"githubWorkflowRef": "s"})
    assert not m.matches(["a@b"], ISSUER, None)
    plain = IdentityMatcher.exact(subject="a@b", issuer=ISSUER)
    assert plain.matches(["a@b"], ISSUER, None)  # nothing required: nothing to read
    assert str(m).endswith(" githubWorkflowRef r")


def test_sans_of_every_kind_are_read() -> None:
    cert = make_cert(emails=("a@b",), uris=("https://x/y",),
                     others=((_FULCIO_OTHERNAME.dotted_string, der_utf8("user!")), ("1.2.3.4", der_utf8("no")),
                             (_FULCIO_OTHERNAME.dotted_string, b"\x02\x01\x05")),  # an INTEGER
                     v2=der_utf8(ISSUER))
    ident = cert_identity(cert)
    assert ident.sans == ("a@b", "https://x/y", "user!")  # another otherName type, a malformed one: skipped
    assert ident.issuer == ISSUER and ident.primary == "a@b"
    assert cert_identity(make_cert(v2=der_utf8(ISSUER))).primary == ""


def test_the_v2_issuer_comes_first_then_v1() -> None:
    assert cert_issuer(make_cert(v1=b"https://v1", v2=der_utf8("https://v2"))) == "https://v2"
    assert cert_issuer(make_cert(v1=b"https://v1")) == "https://v1"
    assert cert_issuer(make_cert(v1=b"https://v1", v2=b"not der")) == "https://v1"  # malformed v2: the other form
    assert cert_issuer(make_cert(v1=b"\xff\xfe")) is None
    assert cert_issuer(make_cert()) is None


def test_only_fulcio_extensions_are_read() -> None:
    cert = make_cert(v1=b"https://v1", extra=(("1.3.6.1.4.1.57264.1.2", b"push"), ("1.2.3.4", b"x")))
    assert cert_extensions(cert) == {"oidcIssuer": "https://v1", "githubWorkflowTrigger": "push"}


ANYONE = IdentityMatcher.regexp(subject=".*", issuer=".*")


def test_a_certificate_without_san_matches_no_identity_even_anyone() -> None:
    ok, why = match_identities(make_cert(v2=der_utf8(ISSUER)), [ANYONE])
    assert not ok and why == "certificate has no subject alternative name"


def test_a_certificate_without_issuer_matches_no_identity_even_anyone() -> None:
    ok, why = match_identities(make_cert(emails=("a@b",)), [ANYONE])
    assert not ok and "no OIDC issuer" in why


def test_match_reason_names_the_identity_and_what_was_wanted() -> None:
    cert = make_cert(emails=("a@b", "c@d"), v2=der_utf8(ISSUER))
    ok, why = match_identities(cert, [IdentityMatcher.exact(subject="c@d", issuer=ISSUER)])
    assert ok and why == f"identity a@b (issuer {ISSUER}) matches subject c@d issuer {ISSUER}"
    wants = IdentityMatcher(_Match(exact=ISSUER), _Match(exact="z@z"), (("githubWorkflowRef", _Match(exact="r")),))
    ok, why = match_identities(cert, [wants, IdentityMatcher.exact(subject="y@y", issuer=ISSUER)])
    assert not ok
    assert why == (f"identity a@b, c@d (issuer {ISSUER}, githubWorkflowRef '(absent)') matches none of the trusted "
                   f"identities: {wants}; subject y@y issuer {ISSUER}")


def test_identity_policy() -> None:
    with pytest.raises(ValueError, match="at least one"):
        IdentityPolicy([])
    cert = make_cert(emails=("a@b",), v2=der_utf8(ISSUER))
    IdentityPolicy([IdentityMatcher.exact(subject="a@b", issuer=ISSUER)]).verify(cert)
    with pytest.raises(VerificationError, match="matches none"):
        IdentityPolicy([IdentityMatcher.exact(subject="x@b", issuer=ISSUER)]).verify(cert)


def test_extensions_not_read_fail_even_a_pattern_that_accepts_empty() -> None:
    m = IdentityMatcher(_Match(exact=ISSUER), _Match(exact="a@b"), (("githubWorkflowRef", _Match(regexp=".*")),))
    assert m.matches(["a@b"], ISSUER, {"githubWorkflowRef": ""})
    assert not m.matches(["a@b"], ISSUER, {})  # absent fails every requirement, even ``.*`` (#25)
    assert not m.matches(["a@b"], ISSUER, None)
