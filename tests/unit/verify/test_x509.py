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
