"""The one module that wires the stages:

inventory -> resolve -> fetch signatures -> verify -> evaluate policy  (-> store -> export, in the CLI)

Each unique running digest is fetched and verified once per scan, however many pods run it, with
bounded concurrency (per registry in the client, overall here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
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
from scanner.policy.engine import evaluate_rules, rule_satisfied, scopes, unresolved_verdicts
from scanner.policy.loader import CompiledRule, Policy
from scanner.registry.auth import Candidate
from scanner.registry.deadline import within
from scanner.registry.reader import RegistryReader
from scanner.signatures.discovery import discover, material_fingerprint, merge_material, relist_fingerprint
from scanner.verify.base import Verifier, Wants

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (phase, done, total)
SCAN_DEADLINE = "scan deadline reached"
# How long past the deadline an image's own verification may still end with its own reason (a credential
# source abandoned at the deadline names itself 0.5 s after it: registry.auth._GRACE) before it is judged
# "scan deadline reached". One window for all images (their work runs at once), so a scan ends at most this
# much after its deadline; the scan is partial either way.
LATE_GRACE = 1.0


@dataclass
class Inventory:
    """Containers grouped by running digest; those whose running digest is unknown are grouped by
    spec image and the reason it is unknown (they are never judged on what the spec names)."""

    running: dict[tuple[str, str, str], list[ContainerRef]] = field(default_factory=lambda: defaultdict(list))
    tags: dict[tuple[str, str, str], str | None] = field(default_factory=dict)
    notes: dict[tuple[str, str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    unknown: dict[tuple[str, str], list[ContainerRef]] = field(default_factory=lambda: defaultdict(list))
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
        id_ref, digest, why = parse_image_id(c.image_id)
        if digest is None:
            # Not started yet, a local image id, an imageID we cannot read: what runs is unknown, and
            # neither the spec's tag nor its digest stands in for it.
            self.unknown[(str(spec_ref), why or "the runtime reported no registry digest")].append(c)
            return
        repo = id_ref or spec_ref
        key = (repo.registry, repo.repository, digest)
        self.running[key].append(c)
        self.tags.setdefault(key, spec_ref.tag)
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


def _secret_refs(c: ContainerRef) -> tuple[tuple[str, str], ...]:
    """The pod's own imagePullSecrets, (namespace, name) in the pod's order."""
    return tuple((c.namespace, s) for s in c.pull_secrets)


def _by_credentials(
    client: RegistryReader, registry: str, repository: str, containers: Iterable[ContainerRef]
) -> list[tuple[tuple[tuple[str, str], ...], list[ContainerRef]]]:
    """Split containers by the credentials their pods may use for ``registry`` (their own pull
    secrets, then the scanner's): a verdict is reached with one credential set and never lent to
    pods of another — the same digest under two sets is judged twice. The repository matters: a pull
    secret's key may be for a path (``reg.io/team-a``). Returns (pull secrets that
    stand for the set, containers), in first-seen order."""
    sets: dict[tuple[Candidate, ...], tuple[tuple[tuple[str, str], ...], list[ContainerRef]]] = {}
    asked: dict[tuple[tuple[str, str], ...], tuple[Candidate, ...]] = {}  # the pods of a digest share secrets
    for c in containers:
        refs = _secret_refs(c)
        found = asked.get(refs)
        if found is None:
            found = asked[refs] = client.credentials.candidates(registry, refs, repository=repository)
        sets.setdefault(found, (refs, []))[1].append(c)
    return list(sets.values())


def _registry_repository(text: str) -> tuple[str, str]:
    ref = parse_reference(text)
    return ref.registry, ref.repository


def _judged_apart(
    client: RegistryReader, registry: str, repository: str, refs: tuple[tuple[str, str], ...]
) -> str:
    return (
        f"judged with {client.credentials.describe(registry, refs, repository=repository)}: pods of this digest "
        "that use other registry credentials are judged separately"
    )


def _credential_reasons(v: Verdict, img: RunningImage, client: RegistryReader) -> tuple[str, ...]:
    """The reason that says which credential source read the image (its name, never the secret; a pull
    secret only among those of the verdict's own pods), when the registry answered at all."""
    ref = img.reference
    own = tuple(dict.fromkeys(s for c in v.image.containers for s in _secret_refs(c)))
    source = client.credential_source(ref.registry, ref.repository, img.pull_secrets, named_for=own)
    return () if source is None else (f"registry credentials: {source}",)


@dataclass(frozen=True, slots=True)
class UnknownDigest:
    """Containers whose running digest is unknown, and what their pod spec names at scan time (its
    pinned digest, or its tag resolved now): judged for information only, never as what runs."""

    image: UnresolvedImage
    current: RunningImage | None = None
    named: str = ""  # how ``current`` was found, for the information reason


def resolve(
    inv: Inventory, client: RegistryReader, *, workers: int, deadline: float | None = None
) -> tuple[list[RunningImage], list[UnknownDigest]]:
    """Group containers into RunningImages, one per running digest and credential set (see
    :func:`_by_credentials`). For containers whose running digest is unknown, resolve what the spec
    names now (a tag -> digest request, with their own credentials), for information only."""
    running: dict[tuple[str, str, str, tuple[Candidate, ...]], RunningImage] = {}
    unknown: list[UnknownDigest] = []
    for key, all_containers in inv.running.items():
        registry, repository, digest = key
        ref = ImageReference(registry, repository, inv.tags.get(key), digest)
        for refs, containers in _by_credentials(client, registry, repository, all_containers):
            creds = client.credentials.candidates(registry, refs, repository=repository)
            running[(registry, repository, digest, creds)] = RunningImage(
                ref, tuple(containers), tuple(sorted(inv.notes.get(key, ()))), refs
            )
    for image, (reason, containers) in inv.unparseable.items():
        unknown.append(UnknownDigest(UnresolvedImage(None, image, tuple(containers), reason)))
    to_look_up = [
        (text, why, refs, containers)
        for (text, why), all_containers in inv.unknown.items()
        for refs, containers in _by_credentials(client, *_registry_repository(text), all_containers)
    ]

    def _current(item: tuple[str, str, tuple[tuple[str, str], ...], list[ContainerRef]]) -> UnknownDigest:
        text, why, secrets, containers = item
        ref = parse_reference(text)
        image = UnresolvedImage(ref, text, tuple(containers), why)
        if ref.digest:
            return UnknownDigest(image, RunningImage(ref, image.containers, (), secrets),
                                 f"the pod spec names {ref.digest}")
        tag = ref.tag or "latest"
        try:
            with within(deadline, SCAN_DEADLINE):
                desc = client.head_manifest(ref, tag, secrets)
        except (RegistryError, ParseError) as exc:
            return UnknownDigest(replace(image, notes=(f"information only: tag {tag} could not be resolved: {exc}",)))
        except Exception as exc:  # whatever a reply provokes, it is this image's note, never the scan's failure
            log.debug("resolving %s failed", text, exc_info=True)
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
            return UnknownDigest(replace(image, notes=(f"information only: tag {tag} could not be resolved: {why}",)))
        return UnknownDigest(image, RunningImage(ref.with_digest(desc.digest), image.containers, (), secrets),
                             f"tag {tag} resolves to {desc.digest} at scan time")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        unknown += pool.map(_current, to_look_up)
    per_digest = Counter(k[:3] for k in running)
    return [
        replace(img, notes=(*img.notes, _judged_apart(client, k[0], k[1], img.pull_secrets)))
        if per_digest[k[:3]] > 1
        else img
        for k, img in running.items()
    ], unknown


def _unknown_verdicts(
    unknown: list[UnknownDigest], client: RegistryReader, policy: Policy, now: datetime, stats: ScanStats,
    *, workers: int, deadline: float | None = None,
) -> list[Verdict]:
    """``error`` verdicts for containers whose running digest is unknown; the verdict of what their spec
    names at scan time is added to the reasons as information only."""

    def _one(item: UnknownDigest) -> list[Verdict]:
        notes = list(item.image.notes)
        if item.current is not None:
            try:
                with within(deadline, SCAN_DEADLINE):
                    info = verify_image(item.current, _groups(policy, item.current), client, policy, now, stats)
            except Exception as exc:  # information only: its failure is said, and the verdict stays error
                log.debug("information-only verification of %s failed", item.image.image, exc_info=True)
                notes.append(f"information only: what the spec names could not be verified: {type(exc).__name__}")
                info = []
            for v in info:
                rule = f" under rule {v.rule!r}" if v.rule else ""
                notes.append(
                    f"information only, not what runs: {item.named}; that digest on its own is "
                    f"{v.status.value}{rule}: {v.headline}"
                )
        return unresolved_verdicts(replace(item.image, notes=tuple(notes)), policy, now)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return [v for verdicts in pool.map(_one, unknown) for v in verdicts]


@dataclass(frozen=True, slots=True)
class _Group:
    rules: tuple[CompiledRule, ...]  # every rule that applies (each must hold); empty: no rule matches
    namespace: str
    containers: tuple[ContainerRef, ...]

    @property
    def verifiers(self) -> tuple[Verifier, ...]:
        return tuple(v for r in self.rules for v in r.verifiers)


def _groups(policy: Policy, image: RunningImage) -> list[_Group]:
    """Split an image's containers by the rules and exemption their namespace selects (by identity,
    never by rule name: see scanner.policy.engine.scopes)."""
    return [
        _Group(sc.rules, sc.namespace, sc.containers)
        for sc in scopes(policy, image.reference, str(image.reference), image.containers)
    ]


@dataclass
class ScanStats:
    verifications: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class VerificationCache(Protocol):
    """Signature results kept across scans (the store implements it)."""

    def cache_get_many(self, keys: Iterable[tuple[str, str]]) -> Mapping[tuple[str, str], Any]: ...

    def cache_put_many(self, entries: Iterable[Any]) -> None: ...

    def relists_get_many(self, keys: Iterable[tuple[str, str]]) -> Mapping[tuple[str, str], Any]: ...

    def relists_put_many(self, marks: Iterable[Any]) -> None: ...


@dataclass
class CacheState:
    """Per-scan view of the cache: what was loaded up front, what to write back at the end."""

    hits: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    new: list[Any] = field(default_factory=list)
    reused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The re-check window (``--recheck-after``; None: every cached result is re-listed every scan),
    # the re-list marks loaded up front by (digest, scope), those to write back, and how many images
    # were judged from the window.
    window: timedelta | None = None
    relists: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    new_relists: list[Any] = field(default_factory=list)
    from_window: int = 0
    cluster: str = ""  # part of every re-list scope: one cluster's re-list never stands for another's
    # relist_scope by (cluster, credential store, registry, repository, pull secrets): asked up to three times
    # per image, the same for every digest of a repository read with the same credentials.
    scopes: dict[tuple[Any, ...], str] = field(default_factory=dict)

    def scope(self, client: RegistryReader, image: RunningImage) -> str:
        ref = image.reference
        key = (self.cluster, id(client.credentials), ref.registry, ref.repository, image.pull_secrets)
        found = self.scopes.get(key)
        if found is None:
            found = self.scopes[key] = relist_scope(client, image, self.cluster)
        return found


class EvidenceSink(Protocol):
    """Keeps what each image was judged on, for the evidence pack (``scanner.evidence.capture.Capture``)."""

    def started(self, now: datetime) -> None: ...

    def prepare(self, refs: Iterable[tuple[str, str]]) -> None:
        """(digest, material fingerprint) of the cache hits to come: whose material is at hand."""
        ...

    def reader(self, image: RunningImage, client: RegistryReader) -> RegistryReader:
        """The reader one image's verification uses (its own: it records that image's answers)."""
        ...

    def has_material(self, digest: str, fingerprint: str) -> bool: ...

    def trust_reads(self, reader: RegistryReader) -> AbstractContextManager[None]:
        """Around one image's verification (in its thread): the trust material it reads (CRLs, OCSP
        answers, listings, lazily loaded roots) is kept with ``reader``'s record, so it follows the
        verdict into the store and into the pack of a later scan that reuses it."""
        ...

    def judge(self, image: RunningImage, reader: RegistryReader, fingerprint: str | None, cached: bool) -> None: ...


LIST_TAGS_FROM = 3  # running digests in one repository before its tag list is worth a request


def _cache_key(image: RunningImage, v: Verifier) -> tuple[str, str] | None:
    """The one place a cache key is made: the digest and the identity the verifier declares for this
    image (None: its results for this image are not reused)."""
    try:
        identity = v.decision_identity(image)
    except Exception:  # a bug in a verifier costs the cache, never the scan or the verdict
        log.exception("verifier %s could not state its decision identity for %s", v.name, image.reference)
        return None
    return None if identity is None else (image.digest, identity)


def image_cache_keys(image: RunningImage, groups: list[_Group]) -> dict[int, tuple[str, str] | None]:
    """The cache key of each verifier of ``image`` (by ``id``), as :func:`verify_image` looks them up."""
    return {id(v): _cache_key(image, v) for g in groups for v in g.verifiers}


def _results_cacheable(v: Verifier, results: tuple[SignatureResult, ...]) -> bool:
    if any(r.outcome is Outcome.ERROR for r in results):
        return False  # a check that could not run is retried next scan, never remembered
    return v.results_cacheable(results)


def relist_scope(client: RegistryReader, image: RunningImage, cluster: str = "") -> str:
    """What a re-list of ``image``'s signatures stands for besides the digest: the cluster that scanned
    (its scanner has its own credentials), the registry, the repository and the credential sources it
    was read with, by name (never a secret's contents). A re-list in another repository, with another
    tenant's pull secrets or by another cluster's scanner is another scope."""
    ref = image.reference
    who = client.credentials.describe(ref.registry, image.pull_secrets, repository=ref.repository)
    return hashlib.sha256(json.dumps([cluster, ref.registry, ref.repository, who]).encode()).hexdigest()


def window_due(window: timedelta, digest: str, scope: str, checked_at: datetime | None, now: datetime) -> bool:
    """Whether the signatures of ``digest`` in ``scope`` must be re-listed in this scan. Each (digest,
    scope) has its own share of the window, between half of it and all of it (a hash of the two), so
    that the digests of one cold scan fall due spread over the window's second half instead of all in
    one scan, and no verdict is served from a re-list as old as the window. (Re-lists happen only in
    scans: two of them can be up to the window plus one scan interval apart.) A mark without a time, or
    with a time after ``now`` (a clock set back), is never recent."""
    if checked_at is None or checked_at > now:
        return True
    share = int(hashlib.sha256(f"{digest}|{scope}".encode()).hexdigest()[:8], 16) / 2**32
    return now - checked_at >= window * (1 - share / 2)


def _still_valid(results: tuple[SignatureResult, ...], now: datetime) -> bool:
    return all(r.not_after is None or r.not_after > now for r in results if r.outcome is Outcome.PASSED)


def _hit_fingerprint(keys: Mapping[int, Any], cache: Any) -> str | None:
    """The material fingerprint of the cache hits an image is judged from (one material: the cache and
    the re-check window serve a verdict only when every verifier's hit names the same)."""
    found = {cache.hits[k].material_fingerprint for k in keys.values() if k is not None and k in cache.hits}
    return next(iter(found)) if len(found) == 1 else None


def _evidence_has(evidence: EvidenceSink | None, image: RunningImage, fingerprint: str | None) -> bool:
    """Whether a cache hit may serve: always without evidence capture; with it, only when the store keeps
    the material the hit was judged on (else the pack could not show it)."""
    if evidence is None:
        return True
    return fingerprint is not None and evidence.has_material(str(image.digest), fingerprint)


def verify_image(
    image: RunningImage,
    groups: list[_Group],
    client: RegistryReader,
    policy: Policy,
    now: datetime,
    stats: ScanStats,
    cache: CacheState | None = None,
    evidence: EvidenceSink | None = None,
    keys: Mapping[int, tuple[str, str] | None] | None = None,
    *,
    more_reasons: Callable[[Verdict], tuple[str, ...]] | None = None,
) -> list[Verdict]:
    """``keys``: this image's cache keys by ``id(verifier)`` when the caller made them already
    (:func:`image_cache_keys`; each is a decision identity, made once per image and scan).
    ``more_reasons``: reasons the caller appends to each verdict once judged (the credential source),
    in the same copy of the verdict as the window's reason (a frozen verdict's copy costs ~12 µs)."""
    verifiers: dict[int, Verifier] = {}
    for g in groups:
        for v in g.verifiers:
            verifiers[id(v)] = v
    material = SignatureMaterial(image=Descriptor("", image.digest, 0))
    results: dict[int, tuple[SignatureResult, ...]] = {}
    wants = Wants()
    for v in verifiers.values():
        wants = wants | v.wants
    if cache is None:
        keys = {}
    elif keys is None:
        keys = image_cache_keys(image, groups)
    windowed = _from_window(image, keys, client, groups, now, cache)
    checked_at = None
    fingerprint = None
    if windowed is not None and not _evidence_has(evidence, image, _hit_fingerprint(keys, cache)):
        windowed = None  # the evidence pack needs the material a hit was judged on: verify afresh
    cached = None if windowed is not None else _from_cache(image, keys, client, policy, now, wants, cache)
    if cached is not None and not _evidence_has(evidence, image, _hit_fingerprint(keys, cache)):
        cached = None
    if windowed is not None:
        results, checked_at = windowed
        fingerprint = _hit_fingerprint(keys, cache)
    elif cached is not None:
        fingerprint = _hit_fingerprint(keys, cache)
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
            and all(keys[vid] is not None and _results_cacheable(v, results[vid]) for vid, v in verifiers.items())
        ):
            from scanner.store import CachedVerification

            # Named for the evidence only when cached: a later hit reuses this material, never that of a
            # verification that met errors (with the same fingerprint).
            fingerprint = material_fingerprint(material)
            with cache.lock:
                cache.new += [
                    CachedVerification(*key, fingerprint, results[vid], now)
                    for vid in verifiers
                    if (key := keys[vid]) is not None
                ]
            _mark_relisted(image, client, fingerprint, now, cache)
    if evidence is not None:
        evidence.judge(image, client, fingerprint, windowed is not None or cached is not None)
    with stats.lock:
        for found in results.values():
            for r in found:
                stats.verifications[f"{r.kind}|{r.outcome.value}"] += 1
    verdicts = []
    for g in groups:
        sub = RunningImage(image.reference, g.containers, image.notes, image.pull_secrets)
        per_rule = [[results[id(v)] for v in rule.verifiers] for rule in g.rules]
        verdict = evaluate_rules(sub, g.rules, per_rule, material.errors, policy, now, g.namespace)
        more = more_reasons(verdict) if more_reasons is not None else ()
        if checked_at is not None:
            verdict = replace(verdict, checked_at=checked_at, reasons=(
                *verdict.reasons,
                f"judged from the verification cache without a registry request: its signatures were last "
                f"seen attached at {checked_at.isoformat()} (re-check window)", *more))
        elif more:
            verdict = replace(verdict, reasons=(*verdict.reasons, *more))
        verdicts.append(verdict)
    return verdicts


def _satisfied(groups: list[_Group], results: Mapping[int, tuple[SignatureResult, ...]], policy: Policy) -> bool:
    """Every rule of every group is already satisfied (the same decision as the verdict's)."""
    return all(
        rule_satisfied(rule, [results[id(v)] for v in rule.verifiers], policy.revocations).ok
        for g in groups
        for rule in g.rules
    )


def _mark_relisted(image: RunningImage, client: RegistryReader, fingerprint: str, now: datetime,
                   cache: CacheState) -> None:
    """Record that ``image``'s signatures were seen attached now (only with a re-check window)."""
    if cache.window is None:
        return
    from scanner.store import RelistMark

    mark = RelistMark(image.digest, cache.scope(client, image), fingerprint, now)
    with cache.lock:
        cache.new_relists.append(mark)


def _from_window(
    image: RunningImage,
    keys: Mapping[int, tuple[str, str] | None],
    client: RegistryReader,
    groups: list[_Group],
    now: datetime,
    cache: CacheState | None,
) -> tuple[dict[int, tuple[SignatureResult, ...]], datetime] | None:
    """Cached results and when their signatures were last seen attached, without any request, when a
    re-check window is set and: every verifier is cached under its identity, all of one material,
    whose re-list mark in this image's scope (repository, credentials) is of that material and not
    due (:func:`window_due`); the cached results were a pass of every rule (a cached unsigned,
    invalid or undecided result is re-checked every scan); and no cached pass has lapsed by ``now``
    (a lapsed one is verified again, as without a window: only the verifier knows whether an
    authentic timestamp keeps it valid). Revocations are judged on the results by the engine."""
    if cache is None or cache.window is None or not keys:
        return None
    entries: dict[int, Any] = {}
    for vid, key in keys.items():
        entry = cache.hits.get(key) if key is not None else None
        if entry is None:
            return None
        entries[vid] = entry
    fingerprints = {e.material_fingerprint for e in entries.values()}
    if len(fingerprints) != 1:
        return None
    results: dict[int, tuple[SignatureResult, ...]] = {vid: tuple(e.signatures) for vid, e in entries.items()}
    if any(r.outcome is Outcome.ERROR for rs in results.values() for r in rs):
        return None
    if not all(_still_valid(rs, now) for rs in results.values()):
        return None
    # A pass when judged (before revocation and expiry, which are judged now on these facts).
    if not all(rule_satisfied(rule, [results[id(v)] for v in rule.verifiers], ()).ok
               for g in groups for rule in g.rules):
        return None
    scope = cache.scope(client, image)
    mark = cache.relists.get((image.digest, scope))
    if mark is None or mark.material_fingerprint not in fingerprints:
        return None
    if window_due(cache.window, image.digest, scope, mark.checked_at, now):
        return None
    with cache.lock:
        cache.from_window += 1
    return results, mark.checked_at


def _from_cache(
    image: RunningImage,
    keys: Mapping[int, tuple[str, str] | None],
    client: RegistryReader,
    policy: Policy,
    now: datetime,
    wants: Wants,
    cache: CacheState | None,
) -> dict[int, tuple[SignatureResult, ...]] | None:
    """Cached results when every verifier declares an identity for this image, is cached under it,
    unexpired, and a cheap re-list shows the same signatures still attached (a vanished or replaced
    signature is a miss)."""
    if cache is None or not keys:
        return None
    entries: dict[int, Any] = {}
    for vid, key in keys.items():
        entry = cache.hits.get(key) if key is not None else None
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
            check_sig=wants.cosign_sig,
        )
    except (RegistryError, ParseError):
        return None
    if current != next(iter(fingerprints)):
        return None
    _mark_relisted(image, client, current, now, cache)
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
        return fut.result(timeout=None if deadline is None else max(0.0, deadline + LATE_GRACE - time.monotonic()))
    except FuturesTimeout:
        fut.cancel()
        reason = SCAN_DEADLINE
    except Exception as exc:
        log.debug("verification of %s failed", img.reference, exc_info=True)
        reason = f"verification failed: {type(exc).__name__}: {str(exc)[:200]}"
    return [
        evaluate_rules(
            RunningImage(img.reference, g.containers, img.notes, img.pull_secrets), g.rules,
            [[[] for _ in rule.verifiers] for rule in g.rules], [reason], policy, now, g.namespace,
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
    client: RegistryReader,
    cluster: str,
    owners: OwnerResolver | None = None,
    clock: Clock = system_clock,
    workers: int = 16,
    progress: Progress | None = None,
    inventory_problems: list[str] | None = None,
    stop: threading.Event | None = None,
    cache: VerificationCache | None = None,
    deadline: float | None = None,
    recheck_after: timedelta | None = None,
    evidence: EvidenceSink | None = None,
) -> ScanResult:
    """``deadline``: a ``time.monotonic()`` value; registry requests stop there, and every image not
    judged by then gets an ``error`` verdict ("scan deadline reached") in a partial scan.
    ``recheck_after``: the re-check window (needs ``cache``): see :func:`_from_window`."""
    started = clock()
    inv = build_inventory(pods, owners)
    problems = [*(inventory_problems or []), *inv.problems]
    if progress:
        progress("inventory", inv.containers, inv.containers)
    running, unknown = resolve(inv, client, workers=workers, deadline=deadline)
    now = clock()
    if evidence is not None:
        evidence.started(now)
    stats = ScanStats()
    verdicts: list[Verdict] = []
    work = [(img, _groups(policy, img)) for img in running]
    # Where many digests share a repository, its tag list answers "no .sig / referrers tag" for all of
    # them (one request instead of a 404 per digest), cold or warm — except where a matching rule has
    # `required: false`: there "unsigned" passes, and a listing filtered by per-tag permission or served
    # from a lagging cache omits a tag that would have been refused (error) or read (a bad signature).
    # Every image this client will verify counts, the information-only ones of pods whose running digest is
    # unknown (`_unknown_verdicts`, after the listing is allowed) included.
    judged = [*work, *((u.current, _groups(policy, u.current)) for u in unknown if u.current is not None)]
    loose = {(img.reference.registry, img.reference.repository)
             for img, gs in judged for g in gs for rule in g.rules if not rule.required}
    repo_digests = Counter(k for img in running if (k := (img.reference.registry, img.reference.repository))
                           not in loose)
    client.answer_absent_tags_from_lists(k for k, n in repo_digests.items() if n >= LIST_TAGS_FROM)
    cache_state = None
    image_keys: list[dict[int, tuple[str, str] | None] | None] = [None] * len(work)
    if cache is not None:
        image_keys = [image_cache_keys(img, gs) for img, gs in work]  # once per image: verify_image reuses them
        keys = [key for per in image_keys if per for key in per.values() if key is not None]
        cache_state = CacheState(
            hits=cache.cache_get_many(keys) if keys else {},
            window=recheck_after,
            cluster=cluster,
        )
        if recheck_after is not None and running:
            cache_state.relists = cache.relists_get_many(
                {(img.digest, cache_state.scope(client, img)) for img in running})
        if evidence is not None:
            evidence.prepare((e.digest, e.material_fingerprint) for e in cache_state.hits.values())

    def _verify(img: RunningImage, groups: list[_Group],
                keys: dict[int, tuple[str, str] | None] | None) -> list[Verdict]:
        reader = evidence.reader(img, client) if evidence is not None else client
        with within(deadline, SCAN_DEADLINE), (evidence.trust_reads(reader) if evidence is not None
                                               else nullcontext()):
            return verify_image(img, groups, reader, policy, now, stats, cache_state, evidence, keys,
                                more_reasons=lambda v: _credential_reasons(v, img, client))

    done = 0
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = [pool.submit(_verify, img, groups, ks) for (img, groups), ks in zip(work, image_keys, strict=True)]
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
        with cache_state.lock:
            new = list(cache_state.new)
        cache.cache_put_many(new)
    if cache is not None and cache_state is not None and cache_state.new_relists:
        with cache_state.lock:
            marks = list(cache_state.new_relists)
        cache.relists_put_many(marks)
    verdicts += _unknown_verdicts(unknown, client, policy, now, stats, workers=workers, deadline=deadline)
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
            "cache_window": cache_state.from_window if cache_state else 0,
            "containers": inv.containers,
        },
    )
