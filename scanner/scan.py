"""The scan use case: one scan of one cluster, from options to a stored :class:`ScanResult`.

load the policy → inventory (a pod-list file or the Kubernetes API, with pull secrets) → registry
client → :func:`scanner.pipeline.run_scan` (with the verification cache and the deadline) → store
(begin, heartbeats, finish; a failure of any kind marks the scan failed) → the result.

Every face runs scans through here and nowhere else: ``sigaudit scan`` (:mod:`scanner.cli`) calls
:func:`run_once`; ``sigaudit serve`` (its schedule and ``POST /api/scans``, :mod:`scanner.scheduler`)
calls :func:`load_inputs` and :func:`begin` when the request arrives (it answers with the scan id)
and :func:`run_begun` in the scan's thread. Faces build :class:`ScanOptions`, handle their own
signals, progress display and exports (JSON, table, HTML, metrics), and map exceptions to exit codes
or HTTP statuses. Nothing here prints, exits, or imports a face.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from scanner import __version__
from scanner.clock import Clock, system_clock
from scanner.errors import SigauditError, StoreError, StoreFull
from scanner.models import RunningImage, ScanResult, ScanState, Verdict

if TYPE_CHECKING:
    from scanner.notify.config import NotifyConfig
    from scanner.pipeline import Progress
    from scanner.policy.loader import Policy
    from scanner.registry.auth import CredentialStore
    from scanner.store import Store
    from scanner.verify.sources import Snapshot

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 30.0  # seconds between heartbeats of a running scan (the store's stale limit is minutes)


@dataclass(frozen=True, slots=True)
class Retention:
    """What ``sigaudit db prune`` keeps (``--keep``, ``--keep-scans``); the rest of the detail is
    deleted, the scans' summaries stay. At least one of the two is set."""

    keep: timedelta | None = None
    keep_scans: int | None = None

    def __post_init__(self) -> None:
        if self.keep is None and self.keep_scans is None:
            raise ValueError("a retention keeps something: give keep or keep_scans")


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """Everything one scan needs; the meaning of ``sigaudit scan``'s and ``sigaudit serve``'s options
    of the same names (see :mod:`scanner.options`, which defines both commands' flags)."""

    cluster: str = "default"
    policy_path: str | None = None
    policy_from: tuple[str, ...] = ()
    pods_file: str | None = None  # a `kubectl get pods -A -o json` file ('-': stdin); None: the live API
    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    kubeconfig: str | None = None
    context: str | None = None
    docker_config: str | None = None
    pull_secrets: bool = False  # read the pods' imagePullSecrets through the API
    # More credential sources: "helpers", "ecr", "gcr", "acr", "PROVIDER=HOST" (see RegistryAuthConfig)
    registry_auth: tuple[str, ...] = ()
    # Images verified at once, and requests per registry at once. 32 by measurement (README "Performance",
    # remote registries): against a registry 40 ms away a cold scan makes ~2.5 requests per digest, so at 8
    # the round trips alone were 25 s for 2,000 digests; at 32 they are 6 s, below what the CPU allows.
    # ``concurrency`` is raised with it: an image's requests are sequential, so fewer workers would cap it.
    concurrency: int = 32
    registry_concurrency: int = 32
    registry_budget: int | None = None  # manifest GETs per registry per scan
    page_size: int = 500  # pods per API list page
    deadline: float | None = None  # seconds from the start of the scan
    cache: bool = True  # reuse verification results kept in the store
    recheck_after: float | None = None  # seconds: the re-check window (scanner.pipeline._from_window)
    retention: Retention | None = None  # prune the cluster's old scans after each successful one
    notify_path: str | None = None  # --notify: receivers of new violations (scanner.notify.config)
    cluster_reports: str | None = None  # "openreports" / "policyreport": apply the reports to the cluster
    # Record each cold image's own manifest for the evidence pack's OCI layouts (`scan --evidence`): one
    # more manifest GET per image, so only when a pack is asked for, and never under a registry budget.
    image_manifests: bool = False
    # --db-capacity: the size the database may reach (PostgreSQL's disk is not visible to a client); the
    # faces open the store with it (scanner.store.open_store's capacity_bytes).
    db_capacity: int | None = None


@dataclass(frozen=True, slots=True)
class ScanInputs:
    """What is read before a scan is recorded as started: a bad policy or credentials file is a
    configuration error of the request, not a failed scan."""

    policy: Policy
    credentials: CredentialStore
    deadline_at: float | None  # a time.monotonic() value
    notify: NotifyConfig | None = None
    trust: Snapshot | None = None  # the trust material the policy was built from, as read (evidence packs)


def load_inputs(options: ScanOptions) -> ScanInputs:
    """Load the policy (and its imports) and the registry credentials, and refuse a pods file over its
    size limit. Raises ConfigError or InventoryError (a policy imported from the cluster could not be
    read). The deadline starts here."""
    from scanner.policy.sources import load_policies
    from scanner.registry.auth import CredentialStore, RegistryAuthConfig

    deadline_at = time.monotonic() + options.deadline if options.deadline else None
    if options.pods_file:
        from scanner.inventory.pods import check_pods_file

        check_pods_file(options.pods_file)
    from scanner.verify import sources as trust_sources

    recording = trust_sources.Recording()  # what the policy was built from, for the evidence pack
    with trust_sources.reading_from(recording):
        policy = load_policies(options.policy_path, options.policy_from, kubeconfig=options.kubeconfig,
                               context=options.context, deadline=deadline_at)
    credentials = CredentialStore.from_docker_config(
        options.docker_config, RegistryAuthConfig.parse(options.registry_auth)
    )
    notify = None
    if options.notify_path:
        from scanner.notify.config import load as load_notify

        notify = load_notify(options.notify_path)
    return ScanInputs(policy, credentials, deadline_at, notify, recording.snapshot)


def begin(options: ScanOptions, store: Store, inputs: ScanInputs, clock: Clock = system_clock) -> int:
    """Record a running scan of ``options.cluster``. Raises ScanInProgress (another live scan of the
    cluster) or StoreError."""
    try:
        scan_id = store.begin_scan(options.cluster, clock(), inputs.policy.digest, __version__)
    except StoreFull:
        if options.retention is None:
            raise
        apply_retention(options, store, clock)  # make room, then try once more
        scan_id = store.begin_scan(options.cluster, clock(), inputs.policy.digest, __version__)
    try:
        usage = store.disk_usage()
    except StoreError:
        return scan_id
    if usage.nearly_full:
        log.warning("the database %s is nearly full (%s): delete old scans with `sigaudit db prune --keep 30d` "
                    "(or scan with --retention) before it is full", store.url, usage.describe())
    return scan_id


def run_begun(
    options: ScanOptions,
    store: Store | None,
    scan_id: int | None,
    inputs: ScanInputs,
    *,
    clock: Clock = system_clock,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
) -> ScanResult:
    """Run the scan recorded as ``scan_id`` (None, with no store: not recorded) to its end.

    The scan is marked finished (complete or partial) only after its last verdict; whatever escapes
    (a stop request, an inventory or store error, a crash) marks it failed and is re-raised. A stop
    request raises InterruptedError.
    """
    from scanner.registry.client import RegistryClient

    client = None
    try:
        alive = (store.keepalive(scan_id, interval=heartbeat_interval)
                 if store is not None and scan_id is not None else nullcontext())
        with alive:
            client = RegistryClient(
                credentials=inputs.credentials,
                insecure_registries=inputs.policy.insecure_registries,
                per_registry_concurrency=options.registry_concurrency,
                manifest_budget=options.registry_budget,
            )
            capture = _capture(store, scan_id,
                               image_manifests=options.image_manifests and options.registry_budget is None)
            result = _scan(options, store, inputs, client, clock=clock, stop=stop, progress=progress,
                           capture=capture)
            if stop is not None and stop.is_set():
                raise InterruptedError("interrupted: a stop was requested")
            if store is not None and scan_id is not None:
                from scanner.policy.loader import policy_summary

                store.finish_scan(scan_id, result, policy_summary(inputs.policy))
                result = replace(result, scan_id=scan_id)
                _keep_evidence(options, store, scan_id, inputs, capture)
                result = _notify(inputs, store, result, scan_id, clock)
        if store is not None and scan_id is not None:
            apply_retention(options, store, clock)
    except BaseException as exc:  # every failure is recorded: never a half scan that looks whole
        if store is not None and scan_id is not None:
            _mark_failed(store, scan_id, exc)
            if isinstance(exc, StoreFull):  # make room for the next scan, which would fail the same way
                apply_retention(options, store, clock)
        raise
    finally:
        if client is not None:
            client.close()
    if options.cluster_reports:  # after the scan is recorded: nothing here changes it
        _publish_reports(options, result)
    return result


def run_once(
    options: ScanOptions,
    store: Store | None,
    *,
    inputs: ScanInputs | None = None,
    clock: Clock = system_clock,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
) -> ScanResult:
    """One whole scan: :func:`load_inputs` (unless given), :func:`begin` (with a store) and
    :func:`run_begun`. ``store`` None: nothing is recorded and no cache is used."""
    inputs = inputs if inputs is not None else load_inputs(options)
    scan_id = begin(options, store, inputs, clock) if store is not None else None
    return run_begun(options, store, scan_id, inputs, clock=clock, stop=stop, progress=progress,
                     heartbeat_interval=heartbeat_interval)


def _capture(store: Store | None, scan_id: int | None, *, image_manifests: bool = False) -> Any:
    """With a store, every scan keeps the material its verdicts used (``sigaudit evidence`` builds a
    pack from it later, for any scan still in retention). ``image_manifests``: also record each cold
    image's manifest for the pack's OCI layouts — one more manifest GET, so not under a
    ``--registry-budget`` (the budget is for the verdicts, never spent on evidence)."""
    if store is None or scan_id is None:
        return None
    from scanner.evidence.capture import Capture

    return Capture(known=lambda names: store.evidence_refs(names), image_manifests=image_manifests)


def _keep_evidence(options: ScanOptions, store: Store, scan_id: int, inputs: ScanInputs, capture: Any) -> None:
    """The scan's evidence material into the store; a failure is logged, never the scan's (the verdicts
    are stored already; ``sigaudit evidence`` then says this scan has no evidence)."""
    if capture is None or inputs.trust is None:
        return
    from scanner.evidence.capture import keep

    try:
        keep(store, scan_id, capture, policy_path=options.policy_path, policy_from=options.policy_from,
             policy_digest=inputs.policy.digest, trust=inputs.trust)
    except StoreError as exc:
        log.warning("the evidence material of scan %d was not kept: %s", scan_id, exc.diagnostics())
    except Exception:  # a bug here must not turn a finished scan into a failed one
        log.exception("the evidence material of scan %d was not kept", scan_id)


def _notify(inputs: ScanInputs, store: Store, result: ScanResult, scan_id: int, clock: Clock) -> ScanResult:
    """``--notify``: tell the receivers what became non-compliant. Never fails the scan."""
    if inputs.notify is None:
        return result
    from scanner.notify.send import after_scan

    failed = after_scan(store, inputs.notify, result, scan_id, clock=clock)
    try:
        store.add_scan_stats(scan_id, "notifications_failed", failed)
    except StoreError as exc:
        log.warning("cannot record the notification outcome of scan %d: %s", scan_id, exc.diagnostics())
    return replace(result, stats={**result.stats, "notifications_failed": failed})


def apply_retention(options: ScanOptions, store: Store, clock: Clock = system_clock) -> None:
    """``--retention``: prune the scanned cluster's old scans (and unused cache entries). A failure
    is logged, never the scan's: the verdicts are stored already."""
    retention = options.retention
    if retention is None:
        return
    before = clock() - retention.keep if retention.keep is not None else None
    try:
        pruned = store.prune(before=before, keep_scans=retention.keep_scans, cluster=options.cluster)
    except StoreError as exc:
        log.warning("retention: cannot prune the old scans of %r: %s", options.cluster, exc.diagnostics())
        return
    if pruned.scans or pruned.cache_entries:
        log.info("retention: deleted the detail of %d scans of %r (%d rows) and %d cache entries",
                 pruned.scans, options.cluster, pruned.rows, pruned.cache_entries)


def _publish_reports(options: ScanOptions, result: ScanResult) -> None:
    """The scan's policy reports applied to the cluster (``--reports``); a failure is logged, never a
    change of the verdicts or of the scan's state."""
    from scanner.clusterreports.apply import publish
    from scanner.inventory.kube import load_api_client
    from scanner.inventory.pods import namespace_selected

    try:
        api = load_api_client(options.kubeconfig, options.context)
    except Exception as exc:  # ConfigError, or a kubeconfig that is not even YAML (whose parser error would
        # quote the file's lines, credentials included: only its type is logged)
        log.warning("policy reports not written: %s", exc.diagnostics() if isinstance(exc, SigauditError)
                    else f"cannot load the kubeconfig ({type(exc).__name__})")
        return
    try:
        outcome = publish(result, options.cluster_reports or "", api,
                          in_scope=lambda ns: namespace_selected(ns, options.namespaces, options.exclude_namespaces))
    except Exception:  # a bug here must not end a scan that succeeded
        log.exception("policy reports not written")
        return
    finally:
        api.close()
    for problem in outcome.problems:
        log.warning("policy reports: %s", problem)
    log.info("policy reports: %d applied, %d stale deleted", len(outcome.applied), len(outcome.deleted))


def failure_message(exc: BaseException) -> str:
    """One line naming what ended a scan."""
    if isinstance(exc, SigauditError):
        return exc.diagnostics()
    if isinstance(exc, InterruptedError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _mark_failed(store: Store, scan_id: int, exc: BaseException) -> None:
    try:
        store.fail_scan(scan_id, [f"scan failed: {failure_message(exc)}"])
    except StoreError as store_exc:
        log.error("cannot mark scan %d failed: %s", scan_id, store_exc.diagnostics())
    except Exception:  # the original failure is the one to report
        log.exception("cannot mark scan %d failed", scan_id)


def _scan(
    options: ScanOptions,
    store: Store | None,
    inputs: ScanInputs,
    client: Any,
    *,
    clock: Clock,
    stop: threading.Event | None,
    progress: Progress | None,
    capture: Any = None,
) -> ScanResult:
    problems: list[str] = []
    owners = None
    pods: Iterable[dict[str, Any]]
    if options.pods_file:
        from scanner.inventory.pods import INVENTORY_FIELDS, iter_pods_file, select_namespaces

        pods = iter_pods_file(options.pods_file, keep=INVENTORY_FIELDS,  # only what the inventory reads
                              deadline=inputs.deadline_at, stop=stop)
        if options.namespaces or options.exclude_namespaces:
            pods = select_namespaces(pods, options.namespaces, options.exclude_namespaces)
    else:
        from scanner.inventory.kube import KubeOwnerResolver, iter_pods, load_api_client, with_pull_secrets

        api = load_api_client(options.kubeconfig, options.context, deadline=inputs.deadline_at)
        owners = KubeOwnerResolver(api)
        pods = iter_pods(
            api_client=api,
            namespaces=options.namespaces,
            exclude_namespaces=options.exclude_namespaces,
            page_size=options.page_size,
            problems=problems,
        )
        if options.pull_secrets:
            pods = with_pull_secrets(pods, api, inputs.credentials, problems)
    return _judge(options, store, inputs, client, pods, owners, problems, clock=clock, stop=stop, progress=progress,
                  workers=options.concurrency, deadline=inputs.deadline_at, capture=capture)


def _judge(
    options: ScanOptions,
    store: Store | None,
    inputs: ScanInputs,
    client: Any,
    pods: Iterable[dict[str, Any]],
    owners: Any,
    problems: list[str],
    *,
    clock: Clock,
    stop: threading.Event | None,
    progress: Progress | None,
    workers: int,
    deadline: float | None,
    capture: Any = None,
) -> ScanResult:
    """The pipeline over ``pods``, with the verification cache when there is a store: the one way a
    verdict is reached (scans and ``serve --watch`` alike)."""
    from scanner.pipeline import run_scan

    result = run_scan(
        inputs.policy,
        pods,
        client=client,
        cluster=options.cluster,
        owners=owners,
        clock=clock,
        workers=workers,
        progress=progress,
        inventory_problems=problems,
        stop=stop,
        cache=store if (store is not None and options.cache) else None,
        deadline=deadline,
        recheck_after=timedelta(seconds=options.recheck_after) if options.recheck_after else None,
        evidence=capture,
    )
    if owners is not None and owners.problems:
        result = replace(result, errors=(*result.errors, *owners.problems), state=ScanState.PARTIAL)
    return explain_admission(inputs.policy, result, store)


def explain_admission(policy: Policy, result: ScanResult, store: Store | None) -> ScanResult:
    """Say why each non-compliant image judged by an imported admission policy runs anyway (issue #25
    item 5): the pure analysis of scanner/policy/admission.py over the policy's admission facts, the
    cluster's webhooks and, with a store, which digests earlier scans found verified. Never changes a
    verdict's status; a store that cannot answer only leaves the "signature removed" cause unexamined."""
    from scanner.models import Status
    from scanner.policy.admission import explain

    rules = {(r.source, r.name): r.admission for r in policy.rules if r.admission is not None}
    if not rules:
        return result
    history = {}
    if store is not None:
        unsigned = [v.digest for v in result.verdicts if v.status is Status.UNSIGNED and v.digest]
        try:
            history = store.verified_before(result.cluster, unsigned, result.started_at) if unsigned else {}
        except StoreError as exc:
            log.warning("admission analysis: earlier verdicts not read: %s", exc.diagnostics())
    verdicts = explain(result.verdicts, rules, webhooks=policy.webhooks, revocations=policy.revocations,
                       verified_before=history)
    return replace(result, verdicts=verdicts)


def judge_pods(
    options: ScanOptions,
    store: Store | None,
    inputs: ScanInputs,
    pods: Iterable[dict[str, Any]],
    api: Any,
    *,
    clock: Clock = system_clock,
    deadline: float | None = None,
    capture: Any = None,
) -> ScanResult:
    """The verdicts of ``pods`` already read from the API (``serve --watch``), through the same
    pipeline, verification cache, owner walk and pull-secret reading (each pod's own namespace) as a
    scan, at ``--registry-concurrency``. Nothing is recorded here; ``capture`` (:func:`watch_capture`)
    keeps what each image was judged on, for :func:`keep_watch_evidence`."""
    from scanner.inventory.kube import KubeOwnerResolver, with_pull_secrets
    from scanner.registry.client import RegistryClient

    problems: list[str] = []
    owners = KubeOwnerResolver(api)
    if options.pull_secrets:
        pods = with_pull_secrets(pods, api, inputs.credentials, problems)
    client = RegistryClient(
        credentials=inputs.credentials,
        insecure_registries=inputs.policy.insecure_registries,
        per_registry_concurrency=options.registry_concurrency,
        manifest_budget=options.registry_budget,
    )
    try:
        return _judge(options, store, inputs, client, pods, owners, problems, clock=clock, stop=None,
                      progress=None, workers=options.registry_concurrency, deadline=deadline, capture=capture)
    finally:
        client.close()


def watch_capture(store: Store) -> Any:
    """What ``serve --watch`` keeps of a batch's verifications for the evidence pack, like a scan."""
    from scanner.evidence.capture import Capture

    return Capture(known=lambda names: store.evidence_refs(names), image_manifests=False)


def keep_watch_evidence(store: Store, scan_id: int, batch: int, inputs: ScanInputs, capture: Any,
                        verdicts: Iterable[Verdict]) -> None:
    """The material of the verdicts ``serve --watch`` added to scan ``scan_id``, into the store (the
    pack of the scan replays them at the batch's time). A failure is logged, never the watch's."""
    from scanner.evidence.capture import keep_watch

    digests = {str(v.image.digest) for v in verdicts if isinstance(v.image, RunningImage) and v.image.digest}
    try:
        keep_watch(store, scan_id, batch, capture, digests, policy_digest=inputs.policy.digest)
    except StoreError as exc:
        log.warning("watch: the evidence material of scan %d's watch verdicts was not kept: %s", scan_id,
                    exc.diagnostics())
    except Exception:
        log.exception("watch: the evidence material of scan %d's watch verdicts was not kept", scan_id)


def after_watch(options: ScanOptions, store: Store, inputs: ScanInputs, scan_id: int,
                clock: Clock = system_clock) -> None:
    """Scan ``scan_id`` gained verdicts from ``serve --watch``: notify the receivers of what became
    non-compliant (deduplicated as after a scan) and apply its policy reports again. Never raises."""
    if inputs.notify is None and not options.cluster_reports:
        return
    try:
        result = store.load_scan(scan_id)
    except StoreError as exc:
        log.warning("watch: cannot read scan %d back: %s", scan_id, exc.diagnostics())
        return
    _notify(inputs, store, result, scan_id, clock)
    if options.cluster_reports:
        _publish_reports(options, result)
