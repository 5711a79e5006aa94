"""Notation verification: what a signature whose chain is not trusted can make the scanner do.

Under a level that only logs authenticity (``audit``), a signature whose chain leads to no trust
store is still evaluated to the end, revocation included. Its certificates are the signer's own
making: the CRL and OCSP URLs in them would make the scanner send requests wherever the pusher of
a signature likes (an internal service, a cloud metadata endpoint). They are not contacted; the
status is "unknown" for that reason, which an ``audit`` level only logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.models import CheckName, Outcome
from scanner.registry.fetcher import HttpFetcher
from tests.unit.test_notation_signing import IMAGE, NOW, Server, issue, jws, make_verifier, material


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def test_an_untrusted_chain_does_not_make_the_scanner_contact_its_endpoints(tmp_path: Path, server: Server) -> None:
    trusted_root = issue("Trusted Root", ca=True)
    own_root = issue("Pusher Root", ca=True)
    leaf = issue("Pusher", issuer=own_root, crl_url=f"{server.base}/internal-service",
                 ocsp_url=f"{server.base}/metadata")
    v = make_verifier(tmp_path, [trusted_root], level="audit", fetcher=HttpFetcher())
    (r,) = v.verify(IMAGE, material(jws([leaf, own_root])), NOW)
    assert server.hits == []
    assert r.outcome is Outcome.PASSED  # audit: authenticity and revocation are logged, as notation does
    rev = next(c for c in r.checks if c.name is CheckName.REVOCATION)
    assert rev.outcome is Outcome.ERROR and not rev.enforced
    assert "does not lead to the trust store" in rev.reason


def test_a_trusted_chain_is_still_checked(tmp_path: Path, server: Server) -> None:
    root = issue("Trusted Root", ca=True)
    leaf = issue("Signer", issuer=root, crl_url=f"{server.base}/leaf.crl")
    v = make_verifier(tmp_path, [root], level="audit", fetcher=HttpFetcher())
    v.verify(IMAGE, material(jws([leaf, root])), NOW)
    assert server.hits == ["/leaf.crl"]
