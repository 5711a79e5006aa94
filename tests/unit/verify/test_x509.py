"""scanner/verify/x509.py: the certificate parse and the chain rules are done once per distinct bytes
(issue 19: the same signer's certificates arrive with every signature), and never serve other bytes."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization

from scanner.errors import ParseError
from scanner.verify import x509
from tests.unit.verify.test_notation_signing import issue


def _der(c: cx509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def chain() -> list[bytes]:
    root = issue("Memo Root", ca=True)
    leaf = issue("Memo Signer", issuer=root)
    return [_der(leaf.cert), _der(root.cert)]


def _count(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str) -> list[int]:
    calls = [0]
    real = getattr(obj, name)

    def counted(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(obj, name, counted)
    return calls


def test_the_same_certificates_are_parsed_and_their_chain_checked_once(monkeypatch: pytest.MonkeyPatch,
                                                                       chain: list[bytes]) -> None:
    parsed = _count(monkeypatch, cx509, "load_der_x509_certificate")  # the module x509.py calls through
    ruled = _count(monkeypatch, x509, "_validate_chain")
    for _ in range(5):
        certs = x509.load_der_chain(chain)
        x509.validate_signing_chain(certs)
    assert parsed[0] <= 2 and ruled[0] <= 1
    assert [_der(c) for c in x509.load_der_chain(chain)] == chain


def test_a_chain_that_breaks_the_rules_fails_every_time_with_its_reason(chain: list[bytes]) -> None:
    certs = x509.load_der_chain(chain)
    reversed_chain = [certs[1], certs[0]]  # root first: not issued by the leaf
    messages = set()
    for _ in range(3):
        with pytest.raises(x509.ChainError) as exc:
            x509.validate_signing_chain(reversed_chain)
        messages.add(str(exc.value))
    assert len(messages) == 1 and "is not issued by" in messages.pop()
    # The same certificates under the other profile are judged under its own rules, not served the code
    # signing outcome (a code-signing leaf is no timestamping leaf).
    x509.validate_signing_chain(certs)
    with pytest.raises(x509.ChainError, match="timestamp signing certificate"):
        x509.validate_timestamping_chain(certs)


def test_other_bytes_never_share_an_entry(chain: list[bytes]) -> None:
    x509.validate_signing_chain(x509.load_der_chain(chain))  # the good chain is known
    other_root = issue("Memo Root", ca=True)  # the same names, another key: the leaf is not its child
    certs = x509.load_der_chain([chain[0], _der(other_root.cert)])
    with pytest.raises(x509.ChainError, match="is not issued by"):
        x509.validate_signing_chain(certs)
    flipped = bytearray(chain[0])
    flipped[-5] ^= 0x01  # inside the signature value: another certificate whose signature does not verify
    try:
        bad = x509.load_der_chain([bytes(flipped), chain[1]])
    except ParseError:
        return
    assert _der(bad[0]) == bytes(flipped)
    with pytest.raises(x509.ChainError):
        x509.validate_signing_chain(bad)


def test_a_malformed_certificate_fails_every_time(chain: list[bytes]) -> None:
    for _ in range(2):
        with pytest.raises(ParseError, match="malformed"):
            x509.load_der_chain([chain[0][:40]])


def _sized(serial: int, filler: str) -> bytes:
    """A self-signed certificate whose subject is ``filler`` (an organisation) and its own serial."""
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = _KEY.setdefault("k", ec.generate_private_key(ec.SECP256R1()))
    name = cx509.Name([cx509.NameAttribute(NameOID.ORGANIZATION_NAME, filler),
                       cx509.NameAttribute(NameOID.COMMON_NAME, f"n{serial}")])
    cert = (cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC)).sign(key, hashes.SHA256()))
    return _der(cert)


_KEY: dict[str, Any] = {}


def test_the_memos_hold_no_attacker_sized_entries() -> None:
    """The memos live as long as ``serve``: whoever pushes signatures chooses the certificates' sizes.
    Chains of two ~60 KB certificates, each failing with a message quoting both subjects (a control
    character escaped six-fold), held ~0.45 MB each in them for good (~110 MB at the 256 entries they
    keep); now a large certificate or message is worked out again each time, its reason whole."""
    import gc
    import tracemalloc

    chains = 16
    ders = [_sized(i + 1, "\x01" * 30_000) for i in range(2 * chains)]
    assert len(ders[0]) <= x509.MAX_CERT_BYTES
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(chains):
            certs = x509.load_der_chain([ders[2 * i], ders[2 * i + 1]])  # the leaf is not issued by the other
            for _ in range(1 if i else 2):  # judged again the second time, with the same reason
                with pytest.raises(x509.ChainError, match="is not issued by") as exc:
                    x509.validate_signing_chain(certs)
                assert len(str(exc.value)) > 300_000
            del certs, exc
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2_000_000, f"{held / 1e6:.1f} MB held after {chains} chains"
