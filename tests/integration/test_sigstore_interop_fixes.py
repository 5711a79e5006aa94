"""Why each fix of the mock exists (tests/sigstore_mock/README.md): with one fix turned off, a
bundle signed by the real @sigstore/cli fails verification for the documented reason; with all on,
it verifies. Also pins sigaudit's own tolerance of ProtoJSON-omitted proof fields (fix 3 off)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from scanner.verify.identity import IdentityMatcher
from scanner.verify.sigstore_bundle import verify_bundle
from scanner.verify.trustroot import load_trusted_root_file
from tests.sigstore_mock.harness import MockSigstore, cosign_sign_statement

pytestmark = pytest.mark.integration

SUBJECT = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"
DIGEST = "sha256:" + "ab" * 32

CASES = {
    "all fixes": ((), "passed", "verified"),
    "pem": (("pem",), "failed", "log entry signatures do not match bundle"),
    "dsse": (("dsse",), "failed", "Integrated time only supported for dsse/hashedrekord 0.0.1"),
    # A one-leaf proof whose logIndex/hashes ProtoJSON omitted: sigaudit refills the defaults.
    "proof": (("proof",), "passed", "verified"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mock_fix(case: str, tmp_path: Path) -> None:
    skip, outcome, words = CASES[case]
    with MockSigstore.start(tmp_path, skip_fixes=skip) as mock:
        bundle = mock.attest(cosign_sign_statement(DIGEST), subject=SUBJECT, issuer=ISSUER)
        trust = load_trusted_root_file(mock.trusted_root)
    if "proof" in skip:
        assert b'"logIndex"' not in bundle.split(b'"inclusionProof"')[1].split(b'"checkpoint"')[0]
    ids = [IdentityMatcher.exact(subject=SUBJECT, issuer=ISSUER)]
    res = verify_bundle(bundle, "ab" * 32, trust=trust, identities=ids, now=datetime.now(UTC))
    assert res.outcome.value == outcome, res.reason
    assert words in res.reason
