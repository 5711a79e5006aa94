"""Scans in the store, on SQLite and a real PostgreSQL: round trip, one scan per cluster at a time,
abandoned scans, atomic writes under injected faults (killed connection, killed process)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from scanner.errors import ScanInProgress, StoreError
from scanner.models import (
    Check,
    CheckName,
    ContainerRef,
    ContainerType,
    ExemptionKind,
    ExemptionRef,
    ImageReference,
    Outcome,
    RunningImage,
    ScanResult,
    ScanState,
    SignatureFailure,
    SignatureResult,
    SignedTime,
    Status,
    TimeSource,
    UnresolvedImage,
    Verdict,
    Workload,
)
from scanner.store import ABANDONED, Store, open_store, upgrade

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _container(ns: str, pod: str, name: str, image: str, kind: str = "Deployment",
               ctype: ContainerType = ContainerType.CONTAINER, image_id: str | None = None) -> ContainerRef:
    return ContainerRef(ns, pod, name, ctype, image, image_id, Workload(kind, pod.rsplit("-", 1)[0]),
                        pull_secrets=("regcred",), pod_uid=f"uid-{pod}-{name}")


def sample_result(cluster: str = "prod", at: datetime = T0, n_extra: int = 0,
                  state: ScanState = ScanState.COMPLETE) -> ScanResult:
    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    key = "ab" * 32
    good = SignatureResult(
        kind="cosign", verifier="rule vendor / cosign key 1", outcome=Outcome.PASSED,
        reason="signature verified", signer=key, key_sha256=key,
        signed_at=SignedTime(at - timedelta(days=3), TimeSource.REKOR_SET),
        not_after=None,
        checks=(Check(CheckName.INTEGRITY, Outcome.PASSED, "payload digest matches"),
                Check(CheckName.AUTHENTICITY, Outcome.PASSED, "ECDSA P-256"),
                Check(CheckName.TLOG, Outcome.SKIPPED, "ignoreTlog", enforced=False)),
        details={"payload_digest": "sha256:" + "9" * 64, "annotations": ("a", "b"), "raw": b"\x00\x01"},
    )
    bad = SignatureResult(
        kind="notation", verifier="rule vendor / notation 2", outcome=Outcome.FAILED,
        reason="certificate expired", failure=SignatureFailure.EXPIRED, signer="CN=<script>alert(1)</script>",
        identity="CN=signer", issuer="CN=CA", signed_at=SignedTime(at - timedelta(days=400), TimeSource.CLAIMED),
        not_after=(at - timedelta(days=1)).astimezone(timezone(timedelta(hours=-5))),
        checks=(Check(CheckName.EXPIRY, Outcome.FAILED, "notAfter passed"),),
        details={"chain_sha256": ("c1", "c2"), "when": at},
    )
    running = RunningImage(
        ImageReference("docker.io", "library/nginx", "1.25", d1),
        (_container("web", "web-abc12", "nginx", "nginx:1.25", image_id=f"docker.io/library/nginx@{d1}"),
         _container("web", "web-def34", "nginx", "nginx:1.25", image_id=f"docker-pullable://nginx@{d1}"),
         _container("jobs", "backup-1", "init", "nginx:1.25", kind="CronJob", ctype=ContainerType.INIT)),
        notes=("digest resolved from tag because the runtime reported none",),
        pull_secrets=(("web", "regcred"),),
    )
    multi = RunningImage(ImageReference("ghcr.io", "acme/app", None, d2),
                         (_container("apps", "app-1", "app", f"ghcr.io/acme/app@{d2}", kind="Pod"),))
    verdicts = [
        Verdict(running, Status.VERIFIED, ("signature verified by cosign key 1",), rule="vendor",
                policy_source="policy.yaml", signatures=(good,), expiring=True,
                not_after=at + timedelta(days=10)),
        Verdict(multi, Status.EXPIRED, ("signature by key 3 does not verify", "certificate expired"), rule="vendor",
                signatures=(bad, good), deciding_reason=1),
        Verdict(UnresolvedImage(ImageReference("quay.io", "x/y", "latest"), "quay.io/x/y:latest",
                                (_container("ops", "y-1", "y", "quay.io/x/y:latest"),), "registry unreachable",
                                ("information only: tag latest could not be resolved: refused",)),
                Status.ERROR, ("registry unreachable", "information only: tag latest could not be resolved: refused")),
        Verdict(UnresolvedImage(None, "::bad::", (_container("ops", "z-1", "z", "::bad::"),), "bad reference"),
                Status.ERROR, ("bad reference",), warn_only=True),
        Verdict(RunningImage(ImageReference("registry.k8s.io", "pause", "3.9", "sha256:" + "3" * 64), ()),
                Status.EXEMPT, ("exempt until 2027-01-01: pause image",), rule=None,
                exemptions=(ExemptionRef(ExemptionKind.POLICY, "pause image", datetime(2027, 1, 1, tzinfo=UTC),
                                         "secops"),
                            ExemptionRef(ExemptionKind.WAIVER, "allowlist", at - timedelta(days=1), lapsed=True,
                                         rule="kritis:ns/gap"))),
    ]
    for i in range(n_extra):
        d = f"sha256:{i:064x}"
        verdicts.append(Verdict(
            RunningImage(ImageReference("localhost:5000", f"bench/r{i % 200}", None, d),
                         tuple(_container(f"ns{i % 7}", f"p{i}-{j}", "c", f"localhost:5000/bench/r{i % 200}")
                               for j in range(5))),
            Status.VERIFIED, ("ok",), rule="bench", signatures=(good, bad)))
    return ScanResult(cluster=cluster, started_at=at, finished_at=at + timedelta(seconds=42), state=state,
                      verdicts=tuple(verdicts), policy_digest="sha256:" + "p" * 64,
                      errors=("namespace secret-ns: forbidden",) if state == ScanState.PARTIAL else (),
                      sigaudit_version="0.1.0")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    upgrade(db_url)
    s = open_store(db_url)
    s.check_schema()
    try:
        yield s
    finally:
        s.close()


def record(store: Store, result: ScanResult) -> int:
    scan_id = store.begin_scan(result.cluster, result.started_at, result.policy_digest,
                               result.sigaudit_version)
    store.finish_scan(scan_id, result)
    return scan_id


# -- round trip ----------------------------------------------------------------------------------


def test_save_then_load_gives_the_same_scan(store: Store) -> None:
    result = sample_result()
    scan_id = record(store, result)
    loaded = store.load_scan(scan_id)
    assert loaded.scan_id == scan_id
    assert dataclasses.replace(loaded, scan_id=None) == result
    # Datetimes come back aware UTC, on SQLite too.
    sig = loaded.verdicts[1].signatures[0]
    assert sig.not_after is not None and sig.not_after.utcoffset() == timedelta(0)
    assert loaded.started_at.tzinfo is not None and loaded.started_at.utcoffset() == timedelta(0)
    assert loaded.verdicts[0].signatures[0].details["raw"] == b"\x00\x01"
    assert isinstance(loaded.verdicts[0].image, RunningImage)
    assert isinstance(loaded.verdicts[3].image, UnresolvedImage) and loaded.verdicts[3].image.reference is None


# The verdict row (images.id) a scan names at position :p, and every one it names.
IMAGES_OF = ("SELECT m.image_id FROM verdict_set_members m JOIN scans s ON s.verdict_set_id = m.set_id "
             "WHERE s.id = :i")
IMAGE_AT = IMAGES_OF + " AND m.position = :p"


def test_a_deciding_reason_outside_the_reasons_is_a_damaged_database_not_a_crash(store: Store) -> None:
    scan_id = record(store, sample_result())
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE images SET deciding_reason = 7 WHERE id = ({IMAGE_AT})"),
                     {"i": scan_id, "p": 1})
    with pytest.raises(StoreError, match=r"deciding_reason 7 .* damaged"):
        store.load_scan(scan_id)


def test_exemptions_round_trip_and_old_rows_load_without_them(store: Store) -> None:
    scan_id = record(store, sample_result())
    exempt = store.load_scan(scan_id).verdicts[4]
    assert [(x.kind, x.reason, x.lapsed, x.rule) for x in exempt.exemptions] == [
        (ExemptionKind.POLICY, "pause image", False, None), (ExemptionKind.WAIVER, "allowlist", True, "kritis:ns/gap")]
    assert exempt.exemptions[0].until.utcoffset() == timedelta(0)
    with store.engine.begin() as conn:  # a row written before migration 0005
        conn.execute(sa.text(f"UPDATE images SET exemptions = NULL WHERE id IN ({IMAGES_OF})"), {"i": scan_id})
    assert store.load_scan(scan_id).verdicts[4].exemptions == ()
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE images SET exemptions = '[{\"kind\": \"nope\"}]' "
                             f"WHERE id = ({IMAGE_AT})"), {"i": scan_id, "p": 4})
    with pytest.raises(StoreError, match=r"image row \d+: its exemptions cannot be read .* damaged"):
        store.load_scan(scan_id)


def test_summary_counts_and_listings(store: Store) -> None:
    first = record(store, sample_result("prod", T0))
    other = record(store, sample_result("staging", T0 + timedelta(minutes=5)))
    partial = record(store, sample_result("prod", T0 + timedelta(hours=1), state=ScanState.PARTIAL))
    second = record(store, sample_result("prod", T0 + timedelta(hours=2)))

    summary = store.scan_summary(second)
    # verified and exempt; a warn-only error is never compliant (undecided is not waived by warn mode)
    assert summary.total == 5 and summary.compliant == 2
    assert summary.counts["verified"] == 1 and summary.counts["error"] == 2 and summary.counts["unsigned"] == 0
    assert summary.state == ScanState.COMPLETE and summary.version == "0.1.0"

    assert store.clusters() == ["prod", "staging"]
    assert store.latest_scan_id("prod") == second
    assert store.latest_scan_id() == second
    assert store.latest_scan_id("staging") == other
    assert store.latest_scan_id("nope") is None
    assert store.previous_scan_id(second) == first  # partial scans are skipped for diffs
    assert store.previous_scan_id(first) is None
    assert [s.id for s in store.list_scans("prod")] == [second, partial, first]
    assert [s.id for s in store.list_scans(limit=2)] == [second, partial]
    assert [s.id for s in store.history("prod", limit=10)] == [first, partial, second]
    assert store.scan_summary(partial).errors == ("namespace secret-ns: forbidden",)


def test_retention_keeps_the_latest_complete_scan(store: Store) -> None:
    ids = [record(store, sample_result("prod", T0 + timedelta(days=i))) for i in range(3)]
    assert store.delete_scans_before(T0 + timedelta(days=30)) == 2
    assert [s.id for s in store.list_scans()] == [ids[-1]]
    assert store.load_scan(ids[-1]).verdicts  # its rows are intact


# -- one scan per cluster ------------------------------------------------------------------------


def test_a_second_scan_of_the_same_cluster_is_refused(store: Store, db_url: str) -> None:
    first = store.begin_scan("prod", T0, "p", "v")
    other = open_store(db_url)
    try:
        with pytest.raises(ScanInProgress, match="prod"):
            other.begin_scan("prod", T0, "p", "v")
        other_cluster = other.begin_scan("staging", T0, "p", "v")  # another cluster is fine
        other.fail_scan(other_cluster, ["test"])
        store.finish_scan(first, sample_result("prod"))
        nxt = other.begin_scan("prod", T0 + timedelta(hours=1), "p", "v")  # after it finished: fine
        other.fail_scan(nxt, ["test"])
    finally:
        other.close()


def test_two_scans_starting_at_once_never_both_run(db_url: str, store: Store) -> None:
    stores = [open_store(db_url) for _ in range(3)]
    barrier = threading.Barrier(len(stores))
    started: list[int] = []
    refused: list[BaseException] = []

    def go(s: Store) -> None:
        barrier.wait(timeout=30)
        try:
            started.append(s.begin_scan("prod", T0, "p", "v"))
        except ScanInProgress as exc:
            refused.append(exc)

    threads = [threading.Thread(target=go, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(started) == 1 and len(refused) == 2
    finally:
        for s in stores:
            s.close()


def test_heartbeat_and_fail(store: Store) -> None:
    scan_id = store.begin_scan("prod", T0, "p", "v")
    store.heartbeat(scan_id)
    store.fail_scan(scan_id, ["inventory: API server unreachable"])
    summary = store.scan_summary(scan_id)
    assert summary.state == ScanState.FAILED and summary.errors == ("inventory: API server unreachable",)
    assert store.latest_scan_id("prod") is None
    assert store.latest_scan_id("prod", complete_only=False) == scan_id
    with pytest.raises(StoreError, match="no longer running"):
        store.heartbeat(scan_id)
    with pytest.raises(StoreError, match="failed, not running"):
        store.finish_scan(scan_id, sample_result("prod"))


def test_a_stale_running_scan_is_abandoned(db_url: str, store: Store) -> None:
    crashed = store.begin_scan("prod", T0, "p", "v")
    # The process that started it dies without a word: on PostgreSQL its session (and lock) ends.
    store.close()
    clock = Clock(datetime.now(UTC))
    later = open_store(db_url, clock=clock)
    try:
        if later.dialect == "sqlite":
            # SQLite has no session locks: a fresh heartbeat from this very process counts as alive ...
            with pytest.raises(ScanInProgress):
                later.begin_scan("prod", T0, "p", "v")
            clock.at += timedelta(minutes=11)  # ... until it is older than the stale limit.
        scan_id = later.begin_scan("prod", T0 + timedelta(minutes=11), "p", "v")
        old = later.scan_summary(crashed)
        assert old.state == ScanState.FAILED and ABANDONED in old.errors
        assert later.scan_summary(scan_id).state == ScanState.RUNNING
        later.finish_scan(scan_id, sample_result("prod", T0 + timedelta(minutes=11)))
        assert later.latest_scan_id("prod") == scan_id
    finally:
        later.close()


def test_a_scan_abandoned_by_another_process_cannot_be_finished(db_url: str, store: Store) -> None:
    clock = Clock(datetime.now(UTC))
    slow = open_store(db_url, clock=clock)
    try:
        scan_id = slow.begin_scan("prod", T0, "p", "v")
        if slow.dialect != "sqlite":
            slow._scans.release_scan_lock(scan_id)  # its lock session is lost (network blip)
        clock.at += timedelta(minutes=30)
        fresh = open_store(db_url, clock=clock)
        try:
            fresh.fail_scan(fresh.begin_scan("prod", T0, "p", "v"), ["x"])
        finally:
            fresh.close()
        with pytest.raises(StoreError, match="not running"):
            slow.finish_scan(scan_id, sample_result("prod"))
        assert slow.load_scan(scan_id).verdicts == ()
    finally:
        slow.close()


# -- atomicity under faults ----------------------------------------------------------------------


def _state_and_rows(store: Store, scan_id: int) -> tuple[str, int, int]:
    with store.engine.connect() as conn:
        state = conn.execute(sa.text("SELECT state FROM scans WHERE id = :i"), {"i": scan_id}).scalar_one()
        images = conn.execute(sa.text(f"SELECT count(*) FROM ({IMAGES_OF}) x"), {"i": scan_id}).scalar()
        ctrs = conn.execute(sa.text(
            "SELECT count(*) FROM containers c JOIN verdict_set_members m ON m.group_id = c.group_id "
            "JOIN scans s ON s.verdict_set_id = m.set_id WHERE s.id = :i"), {"i": scan_id}).scalar()
    return state, int(images or 0), int(ctrs or 0)


def test_a_failure_half_way_through_the_write_records_nothing(store: Store) -> None:
    previous = record(store, sample_result("prod"))
    scan_id = store.begin_scan("prod", T0 + timedelta(hours=1), "p", "v")
    seen_inside: list[int] = []

    def explode(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        # The last statement: every image, container, signature and check row is already written.
        if statement.lstrip().upper().startswith("UPDATE SCANS"):
            cursor.execute("SELECT count(*) FROM verdict_set_members WHERE set_id = (SELECT max(id) FROM verdict_sets)")
            seen_inside.append(cursor.fetchone()[0])
            raise RuntimeError("injected failure after the rows, before the scan is marked finished")

    sa.event.listen(store.engine, "before_cursor_execute", explode)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            store.finish_scan(scan_id, sample_result("prod", T0 + timedelta(hours=1), n_extra=50))
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", explode)
    # the new scan's verdicts were there, inside the transaction ...
    assert seen_inside == [len(sample_result("prod", T0, n_extra=50).verdicts)]
    assert _state_and_rows(store, scan_id) == ("running", 0, 0)  # ... and are gone with it
    assert store.latest_scan_id("prod") == previous


@pytest.mark.parametrize("phase", ["during-copy", "before-completion-mark"])
def test_connection_killed_mid_write_leaves_the_scan_unfinished(postgres_url: str, phase: str) -> None:
    upgrade(postgres_url)
    store = open_store(postgres_url)
    admin = open_store(postgres_url)
    try:
        previous = record(store, sample_result("prod"))
        scan_id = store.begin_scan("prod", T0 + timedelta(hours=1), "p", "v")
        killed: list[int] = []

        def terminate(conn) -> None:  # type: ignore[no-untyped-def]
            pid = conn.connection.dbapi_connection.info.backend_pid
            with admin.engine.connect() as other:
                assert other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
            killed.append(pid)

        def before(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
            if phase == "before-completion-mark" and statement.lstrip().upper().startswith("UPDATE SCANS"):
                terminate(conn)

        def after(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
            # The id allocation for signatures went through; the COPY of the rows comes next.
            if phase == "during-copy" and "nextval" in statement and params and "signatures" in str(params):
                terminate(conn)

        sa.event.listen(store.engine, "before_cursor_execute", before)
        sa.event.listen(store.engine, "after_cursor_execute", after)
        try:
            with pytest.raises(StoreError, match="cannot record scan") as err:
                store.finish_scan(scan_id, sample_result("prod", T0 + timedelta(hours=1), n_extra=50))
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", before)
            sa.event.remove(store.engine, "after_cursor_execute", after)
        assert killed, "the connection was not killed: the test did not test anything"
        assert "postgres@127.0.0.1" in str(err.value)
        assert _state_and_rows(admin, scan_id) == ("running", 0, 0)
        assert admin.latest_scan_id("prod") == previous
        # finish_scan gave up the cluster lock: the next run starts cleanly, abandoning the old row.
        nxt = admin.begin_scan("prod", T0 + timedelta(hours=2), "p", "v")
        assert admin.scan_summary(scan_id).errors == (ABANDONED,)
        admin.finish_scan(nxt, sample_result("prod", T0 + timedelta(hours=2)))
        assert admin.latest_scan_id("prod") == nxt
    finally:
        store.close()
        admin.close()


CHILD = textwrap.dedent("""
    import sys, time
    from datetime import datetime, timedelta, UTC
    import sqlalchemy as sa
    sys.path.insert(0, sys.argv[2])
    from test_store_scans import sample_result, T0
    from scanner.store import open_store
    store = open_store(sys.argv[1])
    scan_id = store.begin_scan("prod", T0 + timedelta(hours=1), "p", "v")

    def hang(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE SCANS"):  # every row written, not marked
            print(f"MIDWRITE {scan_id}", flush=True)
            time.sleep(120)

    sa.event.listen(store.engine, "before_cursor_execute", hang)
    store.finish_scan(scan_id, sample_result("prod", T0 + timedelta(hours=1), n_extra=100))
    print("FINISHED", flush=True)
""")


def test_process_killed_mid_write_then_a_clean_next_scan(store: Store, db_url: str) -> None:
    previous = record(store, sample_result("prod"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, db_url, str(Path(__file__).parent)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("MIDWRITE"), f"child did not reach the write: {line!r} {child.stderr.read()}"
        scan_id = int(line.split()[1])
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert _state_and_rows(store, scan_id) == ("running", 0, 0)
    assert store.latest_scan_id("prod") == previous
    # Restart: the dead process's scan is abandoned at once (its pid is gone / its lock released).
    nxt = store.begin_scan("prod", T0 + timedelta(hours=2), "p", "v")
    assert store.scan_summary(scan_id).state == ScanState.FAILED
    store.finish_scan(nxt, sample_result("prod", T0 + timedelta(hours=2)))
    assert store.latest_scan_id("prod") == nxt


def test_unreachable_database_is_a_store_error_without_the_password(postgres_server) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(StoreError) as err:
        open_store(f"postgresql://sigaudit:Sup3rS3cret@127.0.0.1:{port}/sigaudit")
    assert "Sup3rS3cret" not in str(err.value)
    assert "cannot connect to postgresql+psycopg://sigaudit:***@127.0.0.1" in str(err.value)
    # A server that answers but has no such database.
    with pytest.raises(StoreError) as err:
        open_store(postgres_server.url("no_such_db").replace("postgres@", "postgres:Sup3rS3cret@"))
    assert "Sup3rS3cret" not in str(err.value) and "no_such_db" in str(err.value)


def test_large_scan_round_trip(store: Store) -> None:
    result = sample_result("prod", n_extra=400)
    scan_id = record(store, result)
    assert dataclasses.replace(store.load_scan(scan_id), scan_id=None) == result


def test_keepalive_refreshes_the_heartbeat(store: Store) -> None:
    import time

    scan_id = store.begin_scan("prod", T0, "p", "v")
    before = store.scan_summary(scan_id).heartbeat_at
    with store.keepalive(scan_id, interval=0.05):
        time.sleep(0.5)
    after = store.scan_summary(scan_id).heartbeat_at
    assert before is not None and after is not None and after > before
    store.fail_scan(scan_id, ["test"])


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="naive datetime"):
        store.begin_scan("prod", datetime(2026, 1, 1), "p", "v")
    assert store.list_scans() == []


def test_counts_by_namespace(store: Store) -> None:
    scan_id = record(store, sample_result("prod"))
    assert store.counts_by_namespace(scan_id) == {
        ("web", "verified"): 1,  # two pods, one image
        ("jobs", "verified"): 1,
        ("apps", "expired"): 1,
        ("ops", "error"): 2,
    }


# -- hostile text ------------------------------------------------------------------------------------


def test_text_a_tenant_or_a_registry_can_write_never_stops_a_scan_being_recorded(store: Store) -> None:
    """The API server takes NUL and any length in a pod's image and ownerReference kind/name; a registry's
    signature can carry a NUL in a certificate subject or a lone surrogate in JSON. PostgreSQL refused
    such a row (NUL in text, varchar(128) overflow) and with it the whole scan: one tenant could keep the
    cluster's audit from ever being recorded. Each is stored, marked (U+FFFD, "…"), and the scan loads."""
    nul, long_kind, long_name = "reg.example/app\x00:1", "K" * 200, "w" * 400
    hostile = UnresolvedImage(
        None, nul, (ContainerRef("ns\x00x", "p" * 300, "c", ContainerType.CONTAINER, nul, None,
                                 Workload(long_kind, long_name), pod_uid="u" * 100),),
        f"reference {nul!r} cannot be parsed", ("lone \ud800 surrogate",))
    sig = SignatureResult(kind="notation", verifier="n", outcome=Outcome.FAILED, reason="untrusted \ud800 signer",
                          failure=SignatureFailure.INVALID, signer="CN=evil\x00", identity="CN=evil\x00",
                          checks=(Check(CheckName.AUTHENTICITY, Outcome.FAILED, "CN=evil\x00 not trusted"),),
                          details={"subject": "CN=evil\x00\ud800"})
    running = RunningImage(ImageReference("reg.example", "r" * 600, "t" * 200, "sha256:" + "4" * 64),
                           (ContainerRef("ns", "p", "c", ContainerType.CONTAINER, "img", None, Workload("Pod", "p")),))
    result = ScanResult("prod", T0, T0 + timedelta(seconds=1), ScanState.COMPLETE, (
        Verdict(hostile, Status.ERROR, ("running digest unknown: \x00",), rule="r" * 300),
        Verdict(running, Status.INVALID, ("signed by CN=evil\x00",), signatures=(sig,)),
    ), "sha256:" + "p" * 64, errors=("namespace \x00: forbidden",))
    scan_id = record(store, result)
    back = store.load_scan(scan_id)
    assert back.state == ScanState.COMPLETE and store.latest_scan_id("prod") == scan_id
    h, r = back.verdicts
    c = h.image.containers[0]
    assert h.image.image == "reg.example/app\ufffd:1" and c.image == "reg.example/app\ufffd:1"
    assert c.namespace == "ns\ufffdx" and len(c.workload.kind) == 128 and c.workload.kind.endswith("\u2026")
    assert len(c.workload.name) == 253 and len(c.pod) == 253 and h.rule is not None and len(h.rule) == 253
    assert r.signatures[0].signer == "CN=evil\ufffd" and "\x00" not in r.signatures[0].checks[0].reason
    assert len(r.image.reference.repository) == 512 and len(r.image.reference.tag or "") == 128
    assert r.signatures[0].details["subject"] == "CN=evil\ufffd\ufffd"
    from scanner.reports import render

    for fmt in (render.render_html, render.render_json, render.render_csv):  # what serve and report answer
        fmt(store, scan_id).encode("utf-8")


# -- admission (issue #25 item 5) -----------------------------------------------------------------


def test_verified_before_names_the_latest_finished_scan_that_verified_a_digest(store: Store) -> None:
    from scanner.models import AdmissionCause, AdmissionEvidence, AdmissionFinding

    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    record(store, sample_result(at=T0))
    record(store, sample_result(at=T0 + timedelta(days=1)))
    record(store, sample_result(cluster="other", at=T0 + timedelta(days=2)))
    later = T0 + timedelta(days=3)
    assert store.verified_before("prod", [d1, d2, "sha256:" + "f" * 64], later) == {d1: T0 + timedelta(days=1)}
    assert store.verified_before("prod", [d1], T0 + timedelta(hours=1)) == {d1: T0}
    assert store.verified_before("prod", [d1], T0) == {}  # only scans before
    assert store.verified_before("nowhere", [d1], later) == {}
    # the finding round-trips
    result = sample_result(at=later)
    finding = AdmissionFinding("ClusterPolicy/p", "kyverno:ClusterPolicy/p", False, (
        AdmissionEvidence(AdmissionCause.SIGNATURE_REMOVED, {"last_verified_scan_at": "2026-01-02T00:00:00Z"}),))
    v = dataclasses.replace(result.verdicts[1], admission=finding)
    result = dataclasses.replace(result, verdicts=(result.verdicts[0], v, *result.verdicts[2:]))
    loaded = store.load_scan(record(store, result))
    assert loaded.verdicts[1].admission == finding and loaded.verdicts[0].admission is None
