"""The verification cache across scans (issue 9), on SQLite and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scanner.models import Check, CheckName, Outcome, SignatureResult, SignedTime, TimeSource
from scanner.store import CachedVerification, Store, open_store, upgrade

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
D1, D2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def sig(reason: str = "verified") -> SignatureResult:
    return SignatureResult(
        kind="cosign", verifier="rule a / key 1", outcome=Outcome.PASSED, reason=reason, signer="k",
        key_sha256="cd" * 32, signed_at=SignedTime(T0, TimeSource.REKOR_SET),
        checks=(Check(CheckName.INTEGRITY, Outcome.PASSED, "ok"),),
        details={"payload": b"{}", "layers": ("x",)},
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(db_url: str, clock: Clock) -> Iterator[Store]:
    upgrade(db_url)
    s = open_store(db_url, clock=clock)
    try:
        yield s
    finally:
        s.close()


def test_a_cached_verification_comes_back_equal(store: Store) -> None:
    assert store.cache_get(D1, "trust-1") is None
    store.cache_put(D1, "trust-1", "sig:sha256:1|ref:sha256:2", [sig(), sig("second")])
    hit = store.cache_get(D1, "trust-1")
    assert hit == CachedVerification(D1, "trust-1", "sig:sha256:1|ref:sha256:2", (sig(), sig("second")), T0)


def test_another_trust_fingerprint_misses(store: Store) -> None:
    store.cache_put(D1, "trust-1", "m", [sig()])
    assert store.cache_get(D1, "trust-2") is None  # changed policy or trust root: re-verify
    assert store.cache_get(D2, "trust-1") is None


def test_put_replaces_and_get_many_returns_only_hits(store: Store, clock: Clock) -> None:
    store.cache_put(D1, "t", "m1", [sig("old")])
    clock.at = T0 + timedelta(hours=1)
    store.cache_put_many([CachedVerification(D1, "t", "m2", (sig("new"),), clock.at),
                          CachedVerification(D2, "t", "m3", (), clock.at)])
    got = store.cache_get_many([(D1, "t"), (D2, "t"), (D2, "other"), ("sha256:" + "c" * 64, "t")])
    assert set(got) == {(D1, "t"), (D2, "t")}
    assert got[(D1, "t")].material_fingerprint == "m2" and got[(D1, "t")].signatures == (sig("new"),)
    assert got[(D2, "t")].signatures == ()


def test_prune_drops_what_was_not_used(store: Store, clock: Clock) -> None:
    store.cache_put(D1, "t", "m", [sig()])
    store.cache_put(D2, "t", "m", [sig()])
    clock.at = T0 + timedelta(days=10)
    assert store.cache_get(D1, "t") is not None  # a hit counts as a use
    assert store.cache_prune(T0 + timedelta(days=5)) == 1
    assert store.cache_get(D1, "t") is not None and store.cache_get(D2, "t") is None
    assert store.cache_invalidate() == 1
    assert store.cache_get(D1, "t") is None


def test_many_entries_in_chunks(store: Store) -> None:
    entries = [CachedVerification(f"sha256:{i:064x}", "t", f"m{i}", (sig(),), T0) for i in range(1200)]
    store.cache_put_many(entries)
    got = store.cache_get_many([(e.digest, "t") for e in entries], touch=False)
    assert len(got) == 1200 and got[(entries[777].digest, "t")].material_fingerprint == "m777"


def test_rows_keyed_before_decision_identities_are_never_read(store: Store) -> None:
    """Issue 17 A: keys are now ``di<N>:<sha256>`` decision identities. A row written under an older
    key (a bare sha256 hex trust fingerprint, ``static:pass``) can never equal one, so it is never
    served; the key still fits the column, so no migration is needed."""
    from scanner.models import ImageReference, RunningImage
    from scanner.store.schema import verification_cache
    from scanner.verify.base import IDENTITY_PREFIX
    from scanner.verify.static import StaticVerifier

    image = RunningImage(ImageReference("reg.example", "prod/app", "1", D1), ())
    identity = StaticVerifier("pass", source="s").decision_identity(image)
    assert identity is not None and identity.startswith(IDENTITY_PREFIX)
    assert len(identity) <= verification_cache.c.trust_fingerprint.type.length
    for legacy in ("ab" * 32, "static:pass"):
        store.cache_put(D1, legacy, "m", [sig("old logic")])
    assert store.cache_get(D1, identity) is None
    store.cache_put(D1, identity, "m", [sig()])
    assert store.cache_get(D1, identity).signatures == (sig(),)
    assert store.cache_get(D1, "static:pass").signatures == (sig("old logic"),)


def _count_cache_updates(store: Store) -> list[int]:
    """Rows written by every UPDATE of verification_cache from now on (one item per statement)."""
    import sqlalchemy as sa

    written: list[int] = []

    def after(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE") and "verification_cache" in statement:
            written.append(max(cursor.rowcount, 0))

    sa.event.listen(store.engine, "after_cursor_execute", after)
    return written


def test_a_warm_scan_rewrites_no_cache_row(store: Store, clock: Clock) -> None:
    """Issue 20: every scan rewrote every hit's used_at (dead rows on PostgreSQL, WAL on SQLite)."""
    entries = [CachedVerification(f"sha256:{i:064x}", "t", f"m{i}", (sig(),), T0) for i in range(50)]
    store.cache_put_many(entries)
    keys = [(e.digest, "t") for e in entries]
    written = _count_cache_updates(store)
    for minutes in (1, 30, 59):  # warm scans within the granularity of the last recorded use
        clock.at = T0 + timedelta(minutes=minutes)
        assert len(store.cache_get_many(keys)) == 50
    assert sum(written) == 0
    clock.at = T0 + timedelta(hours=7)  # older than the granularity: recorded once, for every hit
    store.cache_get_many(keys)
    assert sum(written) == 50
    assert store.cache_get(entries[0].digest, "t").used_at == T0 + timedelta(hours=7)  # type: ignore[union-attr]


def test_a_hit_records_the_use_of_its_own_entry_only(store: Store, clock: Clock) -> None:
    """An entry of an old decision identity is not kept alive because its digest still runs."""
    store.cache_put(D1, "old-identity", "m", [sig()])
    store.cache_put(D1, "new-identity", "m", [sig()])
    clock.at = T0 + timedelta(days=40)
    assert store.cache_get(D1, "new-identity") is not None
    assert store.cache_prune(T0 + timedelta(days=30)) == 1
    assert store.cache_get(D1, "old-identity") is None and store.cache_get(D1, "new-identity") is not None



# -- attacker review of fix/winwarm: a cache row that does not decode ----------------------------------------

_GOOD = {"name": "integrity", "outcome": "passed", "reason": "ok", "enforced": True}
_DAMAGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "a check name in another case": lambda raw: [{**raw, "checks": [{**_GOOD, "name": "Integrity"}]}],
    "an unknown outcome": lambda raw: [{**raw, "checks": [{**_GOOD, "outcome": "PASSED"}]}],
    "a list as a check reason": lambda raw: [{**raw, "checks": [{**_GOOD, "reason": ["ok"]}]}],
    "an object as a check reason": lambda raw: [{**raw, "checks": [{**_GOOD, "reason": {"a": 1}}]}],
    "a check without its name": lambda raw: [{**raw, "checks": [{k: v for k, v in _GOOD.items() if k != "name"}]}],
    "a signing time that is no time": lambda raw: [{**raw, "signed_at": "yesterday"}],
    "results that are an object": lambda raw: {"checks": []},
    "results that are null": lambda raw: None,
    "a signature that is a number": lambda raw: [5],
}


def _damage_d2_and_read(store: Store, sql_value: str) -> None:
    """D1 and D2 cached, D2's results replaced by ``sql_value`` (text as written to the column): D2 is a miss,
    D1 is still served, and the write that follows a new verification replaces D2's row."""
    import sqlalchemy as sa

    store.cache_put(D1, "t", "m", [sig()])
    store.cache_put(D2, "t", "m", [sig()])
    cell = ":r" if store.engine.dialect.name == "sqlite" else "CAST(:r AS JSON)"
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE verification_cache SET results = {cell} WHERE digest = :d"),
                     {"r": sql_value, "d": D2})
    got = store.cache_get_many([(D1, "t"), (D2, "t")])
    assert set(got) == {(D1, "t")} and got[(D1, "t")].signatures == (sig(),)
    store.cache_put(D2, "t", "m", [sig()])  # what the scan writes once it verified D2 again
    assert store.cache_get(D2, "t") == CachedVerification(D2, "t", "m", (sig(),), T0)


@pytest.mark.parametrize("damage", sorted(_DAMAGES))
def test_a_cache_row_that_does_not_decode_is_a_miss_and_the_next_write_replaces_it(store: Store, damage: str) -> None:
    """A row damaged on disk, written by hand or by another version is never served and never fails the
    read: a warm scan stopped with exit 3 on it ("unexpected failure: ValueError: 'Integrity' is not a
    valid CheckName"), and fix/winwarm's per-value check memo turned a list or object reason, which the
    code before it read, into a TypeError too."""
    import json

    from scanner.store import codec

    _damage_d2_and_read(store, json.dumps(_DAMAGES[damage](codec.signature_to_json(sig()))))


@pytest.mark.parametrize("text", ["not json", "[" * 100_000 + "]" * 100_000])
def test_a_sqlite_cache_row_that_is_not_json_is_a_miss(sqlite_url: str, clock: Clock, text: str) -> None:
    """SQLite keeps whatever text is written to a JSON column: text that does not parse, or parses past
    the decoder's depth, is one miss, not a failed read of the whole cache."""
    upgrade(sqlite_url)
    with open_store(sqlite_url, clock=clock) as s:
        _damage_d2_and_read(s, text)


def test_a_cache_row_nested_past_the_decoders_depth_is_a_miss_on_every_backend(store: Store) -> None:
    """PostgreSQL accepts JSON nested thousands of levels deep; its driver decoded the column while fetching,
    so the RecursionError escaped the per-row check and failed the whole read (exit 3 for the scan). The
    column is read as text on every backend and decoded row by row."""
    _damage_d2_and_read(store, "[" * 3000 + "]" * 3000)


def test_a_warm_scan_over_damaged_cache_rows_verifies_again_and_repairs_them(registry, tmp_path) -> None:
    """The real CLI on the real docker-registry: every cache row damaged by hand (a signature without its
    fields) made the next scan fail with exit 3 ("unexpected failure: KeyError: 'kind'"); now that scan
    verifies again (the cold scan's verdicts, nothing served from the cache), says so on stderr, and the
    scan after it is served by the cache."""
    import json
    import subprocess
    import sys

    import sqlalchemy as sa

    from tests.harness.demo import publish_estate, write_pods, write_policy

    est = publish_estate(registry.url, registry.host)
    policy, pods = write_policy(est, tmp_path), write_pods(est, tmp_path / "pods.json")
    db = f"sqlite:///{tmp_path / 'warm.db'}"

    def scan() -> tuple[dict[str, Any], str]:
        r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy",
                            str(policy), "--db", db, "-o", "json", "--cluster", "c", "--no-progress"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 1, r.stderr  # the demo estate has non-compliant images; the scan itself is fine
        return json.loads(r.stdout), r.stderr

    def statuses(doc: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted((str(i.get("digest") or i.get("reference")), str(i["status"])) for i in doc["images"])

    def reused(doc: dict[str, Any]) -> int:
        with open_store(db) as s:
            return int(s.load_scan(doc["scan"]["id"]).stats["cache_reused"])

    cold, _ = scan()
    assert {"verified", "non_compliant"} <= {s for _, s in statuses(cold)} or len(statuses(cold)) >= 5
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        damaged = conn.execute(sa.text("UPDATE verification_cache SET results = "
                                       "'[{\"checks\": [{\"name\": \"Integrity\"}]}]'")).rowcount
    engine.dispose()
    assert damaged >= 5
    again, stderr = scan()
    assert statuses(again) == statuses(cold) and reused(again) == 0
    assert "cannot be read" in stderr and "Traceback" not in stderr
    warm, _ = scan()
    assert statuses(warm) == statuses(cold) and reused(warm) >= 5
