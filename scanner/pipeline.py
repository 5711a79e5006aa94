"""The one module that wires the stages:

inventory -> resolve -> fetch signatures -> verify -> evaluate policy  (-> store -> export, in the CLI)

Each unique running digest is fetched and verified once per scan, however many pods run it, with
bounded concurrency (per registry in the client, overall here).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from scanner import __version__
from scanner.clock import Clock, system_clock
from scanner.errors import ParseError, RegistryError
from scanner.inventory.pods import OwnerResolver, StaticOwnerResolver, containers_from_pod, pod_label
from scanner.inventory.references import parse_image_id, parse_reference
from scanner.models import (
    ContainerRef,
    Descriptor,
    ImageReference,
    Outcome,
    RunningImage,
    ScanResult,
    ScanState,
    SignatureFailure,
    SignatureMaterial,
    SignatureResult,
    UnresolvedImage,
    Verdict,
)
from scanner.policy.engine import apply_revocations, evaluate, match_exemption, match_rule, unresolved_verdict
from scanner.policy.loader import CompiledRule, Policy
from scanner.registry.client import RegistryClient
from scanner.registry.deadline import within
from scanner.signatures.discovery import discover, material_fingerprint, merge_material, relist_fingerprint
from scanner.verify.base import Verifier, Wants

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (phase, done, total)
SCAN_DEADLINE = "scan deadline reached"


@dataclass
class Inventory:
    """Containers grouped by running digest (or by spec image when no digest is known)."""

    running: dict[tuple[str, str, str], list[ContainerRef]] = field(default_factory=lambda: defaultdict(list))
    tags: dict[tuple[str, str, str], str | None] = field(default_factory=dict)
    notes: dict[tuple[str, str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    to_resolve: dict[str, list[ContainerRef]] = field(default_factory=lambda: defaultdict(list))
    unparseable: dict[str, tuple[str, list[ContainerRef]]] = field(default_factory=dict)
    pods: int = 0
    containers: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, c: ContainerRef) -> None:
        self.containers += 1
        try:
            spec_ref = parse_reference(c.image)
        except ParseError as exc:
            self.unparseable.setdefault(c.image, (str(exc), []))[1].append(c)
            return
        id_ref, digest, note = parse_image_id(c.image_id)
        if digest is None and spec_ref.digest:
            digest = spec_ref.digest
            note = "digest taken from the pod spec (the runtime reported none)"
        if digest is None:
            self.to_resolve[str(spec_ref)].append(c)
            return
        repo = id_ref or spec_ref
        key = (repo.registry, repo.repository, digest)
        self.running[key].append(c)
        self.tags.setdefault(key, spec_ref.tag)
        if note:
            self.notes[key].add(note)
        if id_ref is not None and id_ref.repo != spec_ref.repo:
            self.notes[key].add(f"pulled from {id_ref.repo} (spec names {spec_ref.repo})")


def build_inventory(pods: Iterable[dict[str, Any]], owners: OwnerResolver | None = None) -> Inventory:
    owners = owners or StaticOwnerResolver()
    inv = Inventory()
    for pod in pods:
        inv.pods += 1
        try:
            containers = containers_from_pod(pod, owners)
        except Exception as exc:  # any malformed pod is skipped and reported (partial scan), never fatal
            why = str(exc) if isinstance(exc, ParseError) else f"{type(exc).__name__}: {str(exc)[:200]}"
            inv.problems.append(f"pod {pod_label(pod)} skipped: {why}")
            continue
        for c in containers:
            inv.add(c)
    return inv


def _pull_secrets(containers: Iterable[ContainerRef]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({(c.namespace, s) for c in containers for s in c.pull_secrets}))


def resolve(
    inv: Inventory, client: RegistryClient, *, workers: int, deadline: float | None = None
) -> tuple[list[RunningImage], list[UnresolvedImage]]:
    """Tag -> digest for containers whose runtime gave no digest; group into RunningImages."""
    running: dict[tuple[str, str, str], RunningImage] = {}
    unresolved: list[UnresolvedImage] = []
    for key, containers in inv.running.items():
        registry, repository, digest = key
        ref = ImageReference(registry, repository, inv.tags.get(key), digest)
        running[key] = RunningImage(
            ref, tuple(containers), tuple(sorted(inv.notes.get(key, ()))), _pull_secrets(containers)
        )
    for image, (reason, containers) in inv.unparseable.items():
        unresolved.append(UnresolvedImage(None, image, tuple(containers), reason))

    def _resolve(item: tuple[str, list[ContainerRef]]) -> tuple[str, list[ContainerRef], str | None, str]:
        # returns (image text, containers, digest or None, error)
        text, containers = item
        ref = parse_reference(text)
        try:
            with within(deadline, SCAN_DEADLINE):
                desc = client.head_manifest(ref, ref.tag or "latest", _pull_secrets(containers))
            return text, containers, desc.digest, ""
        except (RegistryError, ParseError) as exc:
            return text, containers, None, str(exc)
        except Exception as exc:  # whatever a reply provokes, it is this image's error, never the scan's
            log.debug("resolving %s failed", text, exc_info=True)
            return text, containers, None, f"{type(exc).__name__}: {str(exc)[:200]}"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for text, containers, resolved, err in pool.map(_resolve, list(inv.to_resolve.items())):
            ref = parse_reference(text)
            if resolved is None:
                unresolved.append(
                    UnresolvedImage(
                        ref,
                        text,
                        tuple(containers),
                        f"no digest from the runtime and the tag could not be resolved: {err}",
                    )
                )
                continue
            note = (
                f"the runtime reported no digest; tag {ref.tag} resolved to {resolved} at scan time "
                "(the tag may have moved since the pod started)"
            )
            key = (ref.registry, ref.repository, resolved)
            if key in running:
                prev = running[key]
                running[key] = RunningImage(
                    prev.reference,
                    prev.containers + tuple(containers),
                    tuple(sorted({*prev.notes, note})),
                    _pull_secrets([*prev.containers, *containers]),
                )
            else:
                running[key] = RunningImage(
                    ref.with_digest(resolved), tuple(containers), (note,), _pull_secrets(containers)
                )
    return list(running.values()), unresolved


@dataclass(frozen=True, slots=True)
class _Group:
    rule: CompiledRule | None
    namespace: str
    containers: tuple[ContainerRef, ...]


def _groups(policy: Policy, image: RunningImage) -> list[_Group]:
    """Split an image's containers by the rule (and exemption scope) their namespace selects."""
    by_ns: dict[str, list[ContainerRef]] = defaultdict(list)
    for c in image.containers:
        by_ns[c.namespace].append(c)
    by_rule: dict[tuple[str | None, str], list[ContainerRef]] = defaultdict(list)
    rules: dict[str | None, CompiledRule | None] = {}
    first_ns: dict[tuple[str | None, str], str] = {}
    for ns, cs in sorted(by_ns.items()):
        rule = match_rule(policy, image.reference, ns)
        exemption_key = _exemption_key(policy, image, ns)
        key = (rule.name if rule else None, exemption_key)
        rules[key[0]] = rule
        by_rule[key] += cs
        first_ns.setdefault(key, ns)
    return [_Group(rules[k[0]], first_ns[k], tuple(cs)) for k, cs in by_rule.items()]


def _exemption_key(policy: Policy, image: RunningImage, namespace: str) -> str:
    ex = match_exemption(policy, image.reference, str(image.reference), namespace)
    return f"{ex.reason}|{ex.until.isoformat()}" if ex else ""


@dataclass
class ScanStats:
    verifications: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class VerificationCache(Protocol):
    """Signature results kept across scans (the store implements it)."""

    def cache_get_many(self, keys: Iterable[tuple[str, str]]) -> Mapping[tuple[str, str], Any]: ...

    def cache_put_many(self, entries: Iterable[Any]) -> None: ...


@dataclass
class CacheState:
    """Per-scan view of the cache: what was loaded up front, what to write back at the end."""

    hits: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    new: list[Any] = field(default_factory=list)
    reused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Running digests per (registry, repository): where many share a repository, one tag listing per
    # repository replaces a request per digest in the warm re-list.
    repo_digests: Mapping[tuple[str, str], int] = field(default_factory=dict)


LIST_TAGS_FROM = 3  # running digests in one repository before its tag list is worth a request


def _cacheable(v: Verifier) -> bool:
    # Verifiers whose verdict depends only on bytes + trust material (+ the clock, re-checked through
    # not_after). A verifier that may consult the network (notation: CRL/OCSP) says per result.
    return bool(getattr(v, "cacheable", False)) or hasattr(v, "results_cacheable")


def _results_cacheable(v: Verifier, results: tuple[SignatureResult, ...]) -> bool:
    if any(r.outcome is Outcome.ERROR for r in results):
        return False  # a check that could not run is retried next scan, never remembered
    check = getattr(v, "results_cacheable", None)
    return True if check is None else bool(check(results))


def _still_valid(results: tuple[SignatureResult, ...], now: datetime) -> bool:
    return all(r.not_after is None or r.not_after > now for r in results if r.outcome is Outcome.PASSED)


def verify_image(
    image: RunningImage,
    groups: list[_Group],
    client: RegistryClient,
    policy: Policy,
    now: datetime,
    stats: ScanStats,
    cache: CacheState | None = None,
) -> list[Verdict]:
    verifiers: dict[int, Verifier] = {}
    for g in groups:
        for v in g.rule.verifiers if g.rule else ():
            verifiers[id(v)] = v
    material = SignatureMaterial(image=Descriptor("", image.digest, 0))
    results: dict[int, tuple[SignatureResult, ...]] = {}
    wants = Wants()
    for v in verifiers.values():
        wants = wants | v.wants
    cached = _from_cache(image, verifiers, client, policy, now, wants, cache)
    if cached is not None:
        results = cached
    elif verifiers:
        # Referrer types that a verifier needs on their own (notation) are listed at once; those that
        # only complement the .sig layout (cosign bundles) are listed only when .sig did not satisfy
        # the rule — a signed image then costs two requests, not four.
        eager = frozenset(t for v in verifiers.values() if not v.wants.cosign_sig for t in v.wants.referrer_types)
        lazy = wants.referrer_types - eager
        material = discover(
            client,
            image,
            Wants(wants.cosign_sig, eager),
            max_signatures=policy.max_signatures,
            need_descriptor=bool(eager),
        )
        results = {vid: _run_verifier(v, image, material, now) for vid, v in verifiers.items()}
        if lazy and not _satisfied(groups, results, policy):
            extra = discover(
                client, image, Wants(False, lazy), max_signatures=policy.max_signatures, need_descriptor=False
            )
            material = merge_material(material, extra)
            results = {vid: _run_verifier(v, image, material, now) for vid, v in verifiers.items()}
        if (
            cache is not None
            and not material.errors
            and all(_cacheable(v) and _results_cacheable(v, results[vid]) for vid, v in verifiers.items())
        ):
            from scanner.store import CachedVerification

            fp = material_fingerprint(material)
            with cache.lock:
                cache.new += [
                    CachedVerification(image.digest, v.trust_fingerprint, fp, results[vid], now)
                    for vid, v in verifiers.items()
                ]
    with stats.lock:
        for found in results.values():
            for r in found:
                stats.verifications[f"{r.kind}|{r.outcome.value}"] += 1
    verdicts = []
    for g in groups:
        sub = RunningImage(image.reference, g.containers, image.notes, image.pull_secrets)
        rs = [r for v in (g.rule.verifiers if g.rule else ()) for r in results[id(v)]]
        verdicts.append(evaluate(sub, g.rule, rs, material.errors, policy, now, g.namespace))
    return verdicts


def _satisfied(groups: list[_Group], results: Mapping[int, tuple[SignatureResult, ...]], policy: Policy) -> bool:
    """Every group's rule already has enough verifiers with an unrevoked passing signature."""
    for g in groups:
        if g.rule is None:
            continue
        passing = {
            v.name
            for v in g.rule.verifiers
            if any(r.outcome is Outcome.PASSED for r in apply_revocations(results[id(v)], policy.revocations))
        }
        if len(passing) < g.rule.count:
            return False
    return True


def _from_cache(
    image: RunningImage,
    verifiers: Mapping[int, Verifier],
    client: RegistryClient,
    policy: Policy,
    now: datetime,
    wants: Wants,
    cache: CacheState | None,
) -> dict[int, tuple[SignatureResult, ...]] | None:
    """Cached results when every verifier is cacheable, cached, unexpired, and a cheap re-list shows
    the same signatures still attached (a vanished or replaced signature is a miss)."""
    if cache is None or not verifiers or not all(_cacheable(v) for v in verifiers.values()):
        return None
    entries: dict[int, Any] = {}
    for vid, v in verifiers.items():
        entry = cache.hits.get((image.digest, v.trust_fingerprint))
        if entry is None:
            return None
        entries[vid] = entry
    fingerprints = {e.material_fingerprint for e in entries.values()}
    if len(fingerprints) != 1 or not all(_still_valid(e.signatures, now) for e in entries.values()):
        return None
    try:
        current = relist_fingerprint(
            client,
            image,
            next(iter(fingerprints)),
            wants.referrer_types,
            max_signatures=policy.max_signatures,
            list_tags=cache.repo_digests.get((image.reference.registry, image.reference.repository), 0)
            >= LIST_TAGS_FROM,
            check_sig=wants.cosign_sig,
        )
    except (RegistryError, ParseError):
        return None
    if current != next(iter(fingerprints)):
        return None
    with cache.lock:
        cache.reused += 1
    return {vid: e.signatures for vid, e in entries.items()}


def _outcome(
    img: RunningImage, groups: list[_Group], fut: Future[list[Verdict]], deadline: float | None, policy: Policy,
    now: datetime,
) -> list[Verdict]:
    """The verdicts of one image's verification: its own, or ``error`` when it could not finish — the
    scan deadline passed, or anything at all went wrong in it (one image's failure is never the
    scan's, and never a pass)."""
    try:
        return fut.result(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
    except FuturesTimeout:
        fut.cancel()
        reason = SCAN_DEADLINE
    except Exception as exc:
        log.debug("verification of %s failed", img.reference, exc_info=True)
        reason = f"verification failed: {type(exc).__name__}: {str(exc)[:200]}"
    return [
        evaluate(
            RunningImage(img.reference, g.containers, img.notes, img.pull_secrets), g.rule, [], [reason], policy,
            now, g.namespace,
        )
        for g in groups
    ]


def _run_verifier(
    v: Verifier, image: RunningImage, material: SignatureMaterial, now: datetime
) -> tuple[SignatureResult, ...]:
    try:
        return v.verify(image, material, now)
    except Exception as exc:  # a verifier crash is an error verdict, never a pass
        log.exception("verifier %s crashed on %s", v.name, image.reference)
        return (
            SignatureResult(
                kind="internal",
                verifier=v.name,
                outcome=Outcome.ERROR,
                reason=f"verifier failed: {type(exc).__name__}: {str(exc)[:200]}",
                failure=SignatureFailure.ERROR,
            ),
        )


def run_scan(
    policy: Policy,
    pods: Iterable[dict[str, Any]],
    *,
    client: RegistryClient,
    cluster: str,
    owners: OwnerResolver | None = None,
    clock: Clock = system_clock,
    workers: int = 16,
    progress: Progress | None = None,
    inventory_problems: list[str] | None = None,
    stop: threading.Event | None = None,
    cache: VerificationCache | None = None,
    deadline: float | None = None,
) -> ScanResult:
    """``deadline``: a ``time.monotonic()`` value; registry requests stop there, and every image not
    judged by then gets an ``error`` verdict ("scan deadline reached") in a partial scan."""
    started = clock()
    inv = build_inventory(pods, owners)
    problems = [*(inventory_problems or []), *inv.problems]
    if progress:
        progress("inventory", inv.containers, inv.containers)
    running, unresolved = resolve(inv, client, workers=workers, deadline=deadline)
    now = clock()
    stats = ScanStats()
    verdicts: list[Verdict] = []
    work = [(img, _groups(policy, img)) for img in running]
    cache_state = None
    if cache is not None:
        keys = [
            (img.digest, v.trust_fingerprint)
            for img, gs in work
            for g in gs
            if g.rule
            for v in g.rule.verifiers
            if _cacheable(v)
        ]
        cache_state = CacheState(
            hits=cache.cache_get_many(keys) if keys else {},
            repo_digests=Counter((img.reference.registry, img.reference.repository) for img in running),
        )

    def _verify(img: RunningImage, groups: list[_Group]) -> list[Verdict]:
        with within(deadline, SCAN_DEADLINE):
            return verify_image(img, groups, client, policy, now, stats, cache_state)

    done = 0
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = [pool.submit(_verify, img, groups) for img, groups in work]
        for (img, groups), fut in zip(work, futures, strict=True):
            if stop is not None and stop.is_set():
                for f in futures:
                    f.cancel()
                raise InterruptedError("scan interrupted")
            verdicts += _outcome(img, groups, fut, deadline, policy, now)
            done += 1
            if progress:
                progress("verify", done, len(futures))
    finally:
        # Past the deadline nothing waits for the stragglers: their requests fail on the same deadline.
        late = deadline is not None and time.monotonic() >= deadline
        pool.shutdown(wait=not late, cancel_futures=True)
    if late:
        problems.append(f"{SCAN_DEADLINE}: images not judged by then have an error verdict")
    if cache is not None and cache_state is not None and cache_state.new:
        cache.cache_put_many(cache_state.new)
    verdicts += [unresolved_verdict(u, policy, now) for u in unresolved]
    verdicts.sort(key=lambda v: (v.image.display, v.rule or ""))
    state = ScanState.PARTIAL if problems else ScanState.COMPLETE
    with stats.lock:  # stragglers past the deadline may still be counting
        verifications = dict(stats.verifications)
    return ScanResult(
        cluster=cluster,
        started_at=started,
        finished_at=clock(),
        state=state,
        verdicts=tuple(verdicts),
        policy_digest=policy.digest,
        errors=tuple(problems),
        sigaudit_version=__version__,
        stats={
            **client.stats.as_dict(),
            "verifications": verifications,
            "pods": inv.pods,
            "cache_reused": cache_state.reused if cache_state else 0,
            "containers": inv.containers,
        },
    )
