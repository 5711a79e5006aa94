"""The store's JSON encoding of signature details and cache entries, and its UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from scanner.models import Check, CheckName, Outcome, SignatureFailure, SignatureResult, SignedTime, TimeSource
from scanner.store import codec
from scanner.store.schema import UTCDateTime

T = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def test_details_with_tuples_bytes_and_datetimes_come_back_equal() -> None:
    details = {
        "chain": ("ab", "cd"),
        "der": b"\x00\x01\xff",
        "integrated": T,
        "log": {"index": 12, "ok": True, "ratio": 0.5, "none": None, "list": [1, (2, 3)]},
    }
    assert codec.decode(codec.encode(details)) == details
    assert isinstance(codec.decode(codec.encode(details))["chain"], tuple)


def test_a_mapping_that_uses_the_tag_key_is_not_mistaken_for_a_tagged_value() -> None:
    hostile = {"$sigaudit": "bytes", "v": "AAAA"}
    assert codec.decode(codec.encode(hostile)) == hostile


def test_values_json_cannot_hold_faithfully_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        codec.encode({"t": datetime(2026, 1, 1)})
    with pytest.raises(TypeError, match="keys must be strings"):
        codec.encode({1: "x"})
    with pytest.raises(TypeError, match="cannot store"):
        codec.encode({"o": object()})


def test_signature_result_json_round_trip() -> None:
    sig = SignatureResult(
        kind="notation", verifier="rule vendor / verifier 1", outcome=Outcome.FAILED,
        reason="certificate revoked", failure=SignatureFailure.REVOKED, signer="CN=signer",
        key_sha256="ab" * 32, identity="CN=signer", issuer="CN=ca", signed_at=SignedTime(T, TimeSource.TSA),
        not_after=T + timedelta(days=1),
        checks=(Check(CheckName.INTEGRITY, Outcome.PASSED), Check(CheckName.REVOCATION, Outcome.FAILED,
                "serial 12 revoked", enforced=False)),
        details={"chain": ("a", "b")},
    )
    assert codec.signature_from_json(codec.signature_to_json(sig)) == sig


def test_rows_without_a_time_source_load_as_unknown_never_authentic() -> None:
    """Cache rows written before the source was recorded: the time is kept, but it proves nothing."""
    sig = SignatureResult(kind="cosign", verifier="v", outcome=Outcome.PASSED, reason="ok",
                          signed_at=SignedTime(T, TimeSource.REKOR_SET))
    old = {k: v for k, v in codec.signature_to_json(sig).items() if k != "signed_at_source"}
    back = codec.signature_from_json(old)
    assert back.signed_at == SignedTime(T, TimeSource.UNKNOWN) and not back.signed_at.authentic
    assert codec.signed_time(T, "no-such-source") == SignedTime(T, TimeSource.UNKNOWN)


def test_utc_datetime_refuses_naive_and_normalises_to_utc() -> None:
    col = UTCDateTime()
    pg = postgresql.dialect()  # type: ignore[no-untyped-call]
    lite = sqlite.dialect()
    with pytest.raises(ValueError, match="naive"):
        col.process_bind_param(datetime(2026, 1, 1), pg)
    plus2 = datetime(2026, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    assert col.process_bind_param(plus2, pg) == datetime(2026, 1, 1, tzinfo=UTC)
    stored = col.process_bind_param(plus2, lite)
    assert stored == datetime(2026, 1, 1) and stored.tzinfo is None
    back = col.process_result_value(stored, lite)
    assert back == datetime(2026, 1, 1, tzinfo=UTC) and back.tzinfo is UTC


def test_checks_read_from_the_cache_equal_fresh_ones_and_a_bad_one_is_still_refused() -> None:
    """signature_from_json builds each distinct check once (issue 19): the checks it returns must equal
    what the Check constructor gives for the same values — the reason masked as the model masks it, the
    enforcement flag kept apart — and an unknown check name must fail every time, not once."""
    reasons = ["ok", "fetched https://user:secret@reg.example/v2/", "nul\x00here", "ok"]
    raw = codec.signature_to_json(SignatureResult(
        kind="cosign", verifier="key", outcome=Outcome.PASSED, reason="r", failure=SignatureFailure.NONE,
        signer="s", checks=tuple(Check(CheckName.INTEGRITY, Outcome.PASSED, r, enforced=n % 2 == 0)
                                 for n, r in enumerate(reasons))))
    for _ in range(2):
        loaded = codec.signature_from_json(raw)
        assert loaded.checks == tuple(Check(CheckName.INTEGRITY, Outcome.PASSED, r, enforced=n % 2 == 0)
                                      for n, r in enumerate(reasons))
        assert "secret" not in repr(loaded.checks) and "\x00" not in repr(loaded.checks)
        assert [c.enforced for c in loaded.checks] == [True, False, True, False]
    bad = {**raw, "checks": [{**raw["checks"][0], "name": "no-such-check"}]}
    for _ in range(2):
        with pytest.raises(ValueError):
            codec.signature_from_json(bad)


def test_the_check_memo_keeps_no_long_reason_and_refuses_a_reason_that_is_not_text() -> None:
    """Attacker review of fix/winwarm: the per-value check memo outlives a scan in ``serve``; a reason can
    quote what a signature carries, so a long one is built on its own (equal to a fresh Check), never kept,
    and a reason that is not text (a hand-written or damaged cache row) is refused, not memoised or served."""
    long_reason = "identity " + "x" * 100_000 + " does not match"
    raw = codec.signature_to_json(SignatureResult(
        kind="cosign", verifier="key", outcome=Outcome.FAILED, reason="r", failure=SignatureFailure.INVALID,
        signer="s", checks=(Check(CheckName.IDENTITY, Outcome.FAILED, long_reason),)))
    codec._check.cache_clear()
    loaded = codec.signature_from_json(raw)
    assert loaded.checks == (Check(CheckName.IDENTITY, Outcome.FAILED, long_reason),)
    assert codec._check.cache_info().currsize == 0  # nothing of 100 KB stays behind the scan
    for reason in (["ok"], {"a": 1}, 5, None):
        bad = {**raw, "checks": [{**raw["checks"][0], "reason": reason}]}
        with pytest.raises(TypeError):
            codec.signature_from_json(bad)
