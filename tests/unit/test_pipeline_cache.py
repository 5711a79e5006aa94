"""The pipeline's cache and satisfaction logic (``verify_image``, ``_from_cache``, ``_satisfied``) against
the in-memory registry (tests/harness/registry_sim.py): a cached pass is reused only while its
signature is unexpired and still the one attached; what could not be checked is never remembered;
the lazy referrer listing happens exactly when the ``.sig`` layout did not satisfy the rule."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scanner import pipeline
from scanner.models import (
    ContainerRef,
    ContainerType,
    ImageReference,
    Outcome,
    RunningImage,
    SignatureFailure,
    SignatureResult,
    Status,
    Workload,
)
from scanner.pipeline import CacheState, ScanStats, _cache_key, _from_cache, _groups, _satisfied, verify_image
from scanner.policy.loader import Policy, load_policy
from scanner.store import CachedVerification
from scanner.verify.static import StaticVerifier
from tests.harness.cosign_sign import KeyPair
from tests.harness.registry_sim import InMemoryRegistry

NOW = datetime(2026, 6, 1, tzinfo=UTC)
REPO = ImageReference("reg.test", "team/app", "1")
KEY = KeyPair.ecdsa()
OTHER = KeyPair.ecdsa()


def write_policy(tmp_path: Path, rules: str) -> Policy:
    (tmp_path / "k.pub").write_text(KEY.public_pem)
    (tmp_path / "o.pub").write_text(OTHER.public_pem)
    (tmp_path / "p.yaml").write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n" + rules)
    return load_policy(tmp_path / "p.yaml")


ONE_KEY = "    - {name: r, images: ['*'], verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n"
TWO_OF_TWO = ("    - {name: r, images: ['*'], count: 2, verifiers: [{cosign: {key: k.pub, ignoreTlog: true}},"
              " {cosign: {key: o.pub, ignoreTlog: true}}]}\n")
ONE_OF_TWO = ("    - {name: r, images: ['*'], verifiers: [{cosign: {key: k.pub, ignoreTlog: true}},"
              " {cosign: {key: o.pub, ignoreTlog: true}}]}\n")


def running(reg: InMemoryRegistry, digest: str | None = None, repo: ImageReference = REPO) -> RunningImage:
    digest = digest or reg.push_image(repo)
    c = ContainerRef("ns", "pod", "c", ContainerType.CONTAINER, f"{repo.repo}:1", f"{repo.repo}@{digest}",
                     Workload("Deployment", "app"))
    return RunningImage(repo.with_digest(digest), (c,))


def scan(image: RunningImage, reg: InMemoryRegistry, policy: Policy, cache: CacheState | None,
         now: datetime = NOW) -> Status:
    verdicts = verify_image(image, _groups(policy, image), reg, policy, now, ScanStats(), cache)
    assert len(verdicts) == 1
    return verdicts[0].status


def remembered(image: RunningImage, reg: InMemoryRegistry, policy: Policy) -> CacheState:
    """A first scan's cache writes, as the next scan loads them."""
    first = CacheState()
    assert scan(image, reg, policy, first) is Status.VERIFIED
    assert first.new, "a verified image with readable material is remembered"
    return CacheState(hits={(e.digest, e.decision_identity): e for e in first.new})


def fetched_blobs(reg: InMemoryRegistry) -> int:
    return sum(1 for call, _ in reg.requests if call == "get_blob")


def test_a_cold_scan_remembers_each_verifier_under_its_key_and_the_material(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    sig = reg.sign_cosign(REPO, image.digest, KEY)
    cache = CacheState()
    assert scan(image, reg, policy, cache) is Status.VERIFIED
    (v,) = _groups(policy, image)[0].verifiers
    assert [(e.digest, e.decision_identity, e.material_fingerprint) for e in cache.new] == [
        (*_cache_key(image, v), f"sig={sig}")  # type: ignore[misc]
    ]
    assert cache.new[0].signatures[0].outcome is Outcome.PASSED and cache.new[0].computed_at == NOW


def test_a_warm_scan_reuses_the_pass_without_fetching_a_signature(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    warm = remembered(image, reg, policy)
    reg.requests.clear()
    assert scan(image, reg, policy, warm) is Status.VERIFIED
    assert warm.reused == 1 and fetched_blobs(reg) == 0 and not warm.new
    assert ("head_manifest", f"{REPO.repository}:{image.digest.replace(':', '-')}.sig") in reg.requests


def test_without_a_cache_nothing_is_remembered_or_reused(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    assert scan(image, reg, policy, None) is Status.VERIFIED
    assert fetched_blobs(reg) == 1
    assert _from_cache(image, {1: ("d", "i")}, reg, policy, NOW, pipeline.Wants(True), None) is None


def test_a_replaced_signature_is_judged_again(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    warm = remembered(image, reg, policy)
    reg.sign_cosign(REPO, image.digest, OTHER)  # the .sig tag now holds another key's signature
    assert scan(image, reg, policy, warm) is Status.INVALID
    assert warm.reused == 0


def test_a_removed_signature_is_judged_again(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    warm = remembered(image, reg, policy)
    reg.delete_tag(REPO, image.digest.replace(":", "-") + ".sig")
    assert scan(image, reg, policy, warm) is Status.UNSIGNED
    assert warm.reused == 0


def test_an_expired_cached_pass_is_not_reused(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    warm = remembered(image, reg, policy)
    (key, entry), = warm.hits.items()
    expired = tuple(replace(r, not_after=NOW - timedelta(seconds=1)) for r in entry.signatures)
    warm = CacheState(hits={key: replace(entry, signatures=expired)})
    reg.requests.clear()
    assert scan(image, reg, policy, warm) is Status.VERIFIED
    assert warm.reused == 0 and fetched_blobs(reg) == 1
    # ... while one that expires later is
    later = tuple(replace(r, not_after=NOW + timedelta(seconds=1)) for r in entry.signatures)
    warm = CacheState(hits={key: replace(entry, signatures=later)})
    assert scan(image, reg, policy, warm) is Status.VERIFIED and warm.reused == 1


def test_an_expired_failure_does_not_block_reuse(tmp_path: Path) -> None:
    """Only passes carry the expiry that matters: a cached failure's not_after is not a reason to re-fetch."""
    assert pipeline._still_valid((SignatureResult("cosign", "v", Outcome.FAILED, "x", SignatureFailure.INVALID,
                                                  not_after=NOW - timedelta(days=1)),), NOW)
    assert not pipeline._still_valid((SignatureResult("cosign", "v", Outcome.PASSED, "x",
                                                      not_after=NOW),), NOW)  # not_after is exclusive
    assert pipeline._still_valid((SignatureResult("cosign", "v", Outcome.PASSED, "x"),), NOW)


def test_every_verifier_must_be_cached_under_one_material_to_reuse(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_OF_TWO)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    warm = remembered(image, reg, policy)
    assert len(warm.hits) == 2
    (k1, e1), (k2, e2) = warm.hits.items()
    assert scan(image, reg, policy, CacheState(hits={k1: e1})) is Status.VERIFIED  # one verifier missing
    partial = CacheState(hits={k1: e1})
    scan(image, reg, policy, partial)
    assert partial.reused == 0
    mixed = CacheState(hits={k1: e1, k2: replace(e2, material_fingerprint="sig=-")})
    scan(image, reg, policy, mixed)
    assert mixed.reused == 0
    both = CacheState(hits={k1: e1, k2: e2})
    scan(image, reg, policy, both)
    assert both.reused == 1


def test_a_registry_error_on_the_relist_means_a_fresh_verification(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    warm = remembered(image, reg, policy)
    reg.fail.add("head_manifest")
    assert scan(image, reg, policy, warm) is Status.VERIFIED
    assert warm.reused == 0


def test_unreadable_material_is_never_remembered(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    reg.fail.add("get_blob")
    cache = CacheState()
    assert scan(image, reg, policy, cache) is Status.ERROR
    assert cache.new == []


def test_a_result_that_could_not_be_checked_is_never_remembered(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    (group,) = _groups(policy, image)
    only = replace(group.rules[0], verifiers=(_Erroring("pass", source="t"),))
    cache = CacheState()
    (verdict,) = verify_image(image, [pipeline._Group((only,), group.namespace, group.containers)], reg, policy,
                              NOW, ScanStats(), cache)
    assert verdict.status is Status.ERROR
    assert cache.new == []
    assert not pipeline._results_cacheable(StaticVerifier("pass", source="t"), (
        SignatureResult("x", "v", Outcome.ERROR, "could not", SignatureFailure.ERROR),))
    assert pipeline._results_cacheable(StaticVerifier("pass", source="t"), (
        SignatureResult("x", "v", Outcome.FAILED, "bad", SignatureFailure.INVALID),))


class _Erroring(StaticVerifier):
    """A verifier with a decision identity whose check could not run (an error result)."""

    def verify(self, image: RunningImage, material: object, now: datetime) -> tuple[SignatureResult, ...]:
        return (SignatureResult("static", self.name, Outcome.ERROR, "could not run", SignatureFailure.ERROR),)


class _NoIdentity(StaticVerifier):
    def decision_identity(self, image: RunningImage) -> str | None:
        return None


class _BrokenIdentity(StaticVerifier):
    def decision_identity(self, image: RunningImage) -> str | None:
        raise RuntimeError("bug")


def test_a_verifier_without_an_identity_is_neither_remembered_nor_reused(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    image = running(InMemoryRegistry())
    assert _cache_key(image, _NoIdentity("pass", source="t")) is None
    assert _cache_key(image, _BrokenIdentity("pass", source="t")) is None
    ok = StaticVerifier("pass", source="t")
    assert _cache_key(image, ok) == (image.digest, ok.decision_identity(image))
    reg = InMemoryRegistry()
    entry = CachedVerification(image.digest, "i", "sig=-", (), NOW)
    state = CacheState(hits={(image.digest, "i"): entry})
    assert _from_cache(image, {1: None}, reg, policy, NOW, pipeline.Wants(), state) is None
    assert _from_cache(image, {}, reg, policy, NOW, pipeline.Wants(), state) is None
    got = _from_cache(image, {1: (image.digest, "i")}, reg, policy, NOW, pipeline.Wants(), state)
    assert got == {1: ()} and state.reused == 1


def test_n_of_m_needs_n_distinct_verifiers(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, TWO_OF_TWO)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    assert scan(image, reg, policy, CacheState()) is not Status.VERIFIED
    reg.sign_cosign(REPO, image.digest, KEY, OTHER)
    assert scan(image, reg, policy, CacheState()) is Status.VERIFIED


def _result(ok: bool) -> tuple[SignatureResult, ...]:
    return (SignatureResult("cosign", "v", Outcome.PASSED if ok else Outcome.FAILED, "r",
                            SignatureFailure.NONE if ok else SignatureFailure.INVALID),)


@pytest.mark.parametrize(("first", "second", "expected"),
                         [(True, True, True), (True, False, False), (False, True, False), (False, False, False)])
def test_satisfied_is_the_verdicts_n_of_m(tmp_path: Path, first: bool, second: bool, expected: bool) -> None:
    policy = write_policy(tmp_path, TWO_OF_TWO)
    image = running(InMemoryRegistry())
    groups = _groups(policy, image)
    v1, v2 = groups[0].verifiers
    assert _satisfied(groups, {id(v1): _result(first), id(v2): _result(second)}, policy) is expected


def test_satisfied_needs_every_rule_of_every_group(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    image = running(InMemoryRegistry())
    (ga,) = _groups(write_policy(tmp_path / "a", ONE_KEY), image)
    policy = write_policy(tmp_path / "b", ONE_KEY)
    (gb,) = _groups(policy, image)
    (v1,), (v2,) = ga.verifiers, gb.verifiers
    for groups in ([pipeline._Group((*ga.rules, *gb.rules), "ns", image.containers)], [ga, gb]):
        assert not _satisfied(groups, {id(v1): _result(True), id(v2): _result(False)}, policy)
        assert not _satisfied(groups, {id(v1): _result(False), id(v2): _result(True)}, policy)
        assert _satisfied(groups, {id(v1): _result(True), id(v2): _result(True)}, policy)


def test_bundles_are_listed_only_when_the_sig_layout_did_not_satisfy_the_rule(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    (v,) = _groups(policy, running(InMemoryRegistry()))[0].verifiers
    assert v.wants.cosign_sig and v.wants.referrer_types, "the key verifier also reads key-signed bundles"
    reg = InMemoryRegistry()
    signed = running(reg)
    reg.sign_cosign(REPO, signed.digest, KEY)
    assert scan(signed, reg, policy, None) is Status.VERIFIED
    assert not any(call == "referrers" for call, _ in reg.requests)
    assert not any(call == "head_manifest" for call, _ in reg.requests)  # no eager type: no descriptor needed
    unsigned = running(reg, reg.push_image(REPO, "2", b"other"))
    reg.requests.clear()
    assert scan(unsigned, reg, policy, None) is Status.UNSIGNED
    assert ("referrers", f"{REPO.repository}@{unsigned.digest}") in reg.requests


def test_one_verifier_that_cannot_be_remembered_keeps_the_whole_image_out_of_the_cache(tmp_path: Path) -> None:
    """Results are stored only when every verifier's may be: one verifier's error (it has a decision
    identity, so only its results make it uncacheable) means none of the image's results is stored."""
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    (group,) = _groups(policy, image)
    (rule,) = group.rules
    erroring = _Erroring("pass", source="t")
    assert _cache_key(image, erroring) is not None
    both = replace(rule, verifiers=(*rule.verifiers, erroring), count=1)
    groups = [pipeline._Group((both,), group.namespace, group.containers)]
    cache = CacheState()
    (verdict,) = verify_image(image, groups, reg, policy, NOW, ScanStats(), cache)
    assert verdict.status is Status.VERIFIED  # one of two is enough
    assert cache.new == []


def test_an_error_among_passes_is_not_remembered() -> None:
    ok = SignatureResult("x", "v", Outcome.PASSED, "fine")
    err = SignatureResult("x", "v", Outcome.ERROR, "could not", SignatureFailure.ERROR)
    assert not pipeline._results_cacheable(StaticVerifier("pass", source="t"), (ok, err))


def test_one_expired_verifier_entry_means_no_reuse(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_OF_TWO)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    warm = remembered(image, reg, policy)
    e1, e2 = warm.hits.values()
    passing, other = (e1, e2) if e1.signatures[0].outcome is Outcome.PASSED else (e2, e1)
    expired = replace(passing, signatures=tuple(replace(r, not_after=NOW - timedelta(seconds=1))
                                                for r in passing.signatures))
    state = CacheState(hits={(expired.digest, expired.decision_identity): expired,
                             (other.digest, other.decision_identity): other})
    scan(image, reg, policy, state)
    assert state.reused == 0


# The re-check window (--recheck-after, issue 19): a cached pass whose signatures were seen attached
# within the window is judged without any request; everything else is re-checked as without it.

WINDOW = timedelta(hours=1)


def windowed(image: RunningImage, reg: InMemoryRegistry, policy: Policy, cache: CacheState,
             now: datetime = NOW) -> pipeline.Verdict:
    (verdict,) = verify_image(image, _groups(policy, image), reg, policy, now, ScanStats(), cache)
    return verdict


def cold_with_window(image: RunningImage, reg: InMemoryRegistry, policy: Policy) -> CacheState:
    """A first scan with the window, and the state the next scan loads from what it wrote."""
    first = CacheState(window=WINDOW)
    assert windowed(image, reg, policy, first).status is Status.VERIFIED
    assert first.new_relists, "a verified image's signatures are marked as seen attached"
    return CacheState(hits={(e.digest, e.decision_identity): e for e in first.new},
                      relists={(m.digest, m.scope): m for m in first.new_relists}, window=WINDOW)


def signed(tmp_path: Path, rules: str = ONE_KEY) -> tuple[Policy, InMemoryRegistry, RunningImage]:
    policy = write_policy(tmp_path, rules)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    return policy, reg, image


def test_inside_the_window_a_cached_pass_is_judged_without_any_request(tmp_path: Path) -> None:
    policy, reg, image = signed(tmp_path)
    warm = cold_with_window(image, reg, policy)
    reg.requests.clear()
    v = windowed(image, reg, policy, warm, NOW + timedelta(minutes=20))
    assert v.status is Status.VERIFIED and v.checked_at == NOW
    assert reg.requests == [] and warm.from_window == 1 and not warm.new and not warm.new_relists
    assert "re-check window" in v.reasons[-1]


def test_without_a_window_the_cached_pass_is_relisted_every_scan(tmp_path: Path) -> None:
    policy, reg, image = signed(tmp_path)
    warm = cold_with_window(image, reg, policy)
    warm.window = None
    reg.requests.clear()
    v = windowed(image, reg, policy, warm, NOW + timedelta(minutes=1))
    assert v.status is Status.VERIFIED and v.checked_at is None and reg.requests and warm.from_window == 0


def test_once_due_the_signatures_are_relisted_and_marked_again(tmp_path: Path) -> None:
    policy, reg, image = signed(tmp_path)
    warm = cold_with_window(image, reg, policy)
    reg.requests.clear()
    later = NOW + WINDOW  # every digest is due by the end of the window, whatever its share
    v = windowed(image, reg, policy, warm, later)
    assert v.status is Status.VERIFIED and v.checked_at is None
    assert [call for call, _ in reg.requests] == ["head_manifest"] and warm.reused == 1
    assert [m.checked_at for m in warm.new_relists] == [later]


def test_a_signature_removed_is_seen_at_the_next_relist(tmp_path: Path) -> None:
    """The documented trade-off: inside the window the removal is not seen; once due, it is."""
    policy, reg, image = signed(tmp_path)
    warm = cold_with_window(image, reg, policy)
    reg.delete_tag(REPO, image.digest.replace(":", "-") + ".sig")
    assert windowed(image, reg, policy, warm, NOW + timedelta(minutes=1)).status is Status.VERIFIED
    assert windowed(image, reg, policy, warm, NOW + WINDOW).status is Status.UNSIGNED


def test_the_digests_of_one_scan_fall_due_spread_over_the_second_half_of_the_window() -> None:
    digests = [f"sha256:{i:064x}" for i in range(400)]
    due = {t: sum(pipeline.window_due(WINDOW, d, "s", NOW, NOW + t) for d in digests)
           for t in (WINDOW / 2 - timedelta(seconds=1), WINDOW * 3 / 4, WINDOW)}
    assert due[WINDOW / 2 - timedelta(seconds=1)] == 0
    assert 100 < due[WINDOW * 3 / 4] < 300
    assert due[WINDOW] == len(digests)


def test_a_mark_without_a_time_or_from_the_future_is_never_recent() -> None:
    assert pipeline.window_due(WINDOW, "sha256:a", "s", None, NOW)
    assert pipeline.window_due(WINDOW, "sha256:a", "s", NOW + timedelta(seconds=1), NOW)


def test_an_unsigned_or_failed_cached_result_is_never_served_from_the_window(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, OTHER)  # signed, but not by the policy's key: invalid
    first = CacheState(window=WINDOW)
    assert windowed(image, reg, policy, first).status is Status.INVALID
    warm = CacheState(hits={(e.digest, e.decision_identity): e for e in first.new},
                      relists={(m.digest, m.scope): m for m in first.new_relists}, window=WINDOW)
    assert warm.hits and warm.relists, "the invalid result is cached and marked"
    reg.requests.clear()
    assert windowed(image, reg, policy, warm, NOW + timedelta(minutes=1)).status is Status.INVALID
    assert reg.requests and warm.from_window == 0


def test_a_mark_of_other_material_or_another_repository_does_not_count(tmp_path: Path) -> None:
    policy, reg, image = signed(tmp_path)
    warm = cold_with_window(image, reg, policy)
    ((key, mark),) = warm.relists.items()
    other_material = CacheState(hits=warm.hits, relists={key: replace(mark, material_fingerprint="sig=-")},
                                window=WINDOW)
    reg.requests.clear()
    assert windowed(image, reg, policy, other_material, NOW + timedelta(minutes=1)).checked_at is None
    assert reg.requests
    # The same digest pulled from another repository: its .sig tag there was never seen.
    elsewhere = ImageReference("reg.test", "team/copy", "1")
    copy = RunningImage(elsewhere.with_digest(image.digest), image.containers)
    reg.requests.clear()
    v = windowed(copy, reg, policy, warm, NOW + timedelta(minutes=1))
    assert v.checked_at is None and reg.requests and warm.from_window == 0


def test_another_tenants_pull_secrets_are_another_scope(tmp_path: Path) -> None:
    policy, reg, image = signed(tmp_path)
    for ns in ("a", "b"):
        reg.credentials.add_pull_secret(ns, "pull", json.dumps(
            {"auths": {"reg.test": {"username": f"tenant-{ns}", "password": "pw"}}}).encode())
    tenant_a = replace(image, pull_secrets=(("a", "pull"),))
    tenant_b = replace(image, pull_secrets=(("b", "pull"),))
    first = CacheState(window=WINDOW)
    assert windowed(tenant_a, reg, policy, first).status is Status.VERIFIED
    warm = CacheState(hits={(e.digest, e.decision_identity): e for e in first.new},
                      relists={(m.digest, m.scope): m for m in first.new_relists}, window=WINDOW)
    assert pipeline.relist_scope(reg, tenant_a) != pipeline.relist_scope(reg, tenant_b)
    reg.requests.clear()
    assert windowed(tenant_b, reg, policy, warm, NOW + timedelta(minutes=1)).checked_at is None
    assert reg.requests, "tenant b's credentials are used to re-list, not tenant a's mark"
    assert windowed(tenant_a, reg, policy, warm, NOW + timedelta(minutes=1)).checked_at == NOW
    # Another cluster's scanner (its own credentials) sharing the database does not use the marks either.
    other_cluster = replace(warm, cluster="other", from_window=0)
    reg.requests.clear()
    assert windowed(tenant_a, reg, policy, other_cluster, NOW + timedelta(minutes=1)).checked_at is None
    assert reg.requests


def test_a_policy_or_trust_change_misses_the_window(tmp_path: Path) -> None:
    policy, reg, image = signed(tmp_path)
    warm = cold_with_window(image, reg, policy)
    (tmp_path / "other").mkdir()
    changed = write_policy(tmp_path / "other", ONE_KEY.replace("k.pub", "o.pub"))
    reg.requests.clear()
    v = windowed(image, reg, changed, warm, NOW + timedelta(minutes=1))
    assert v.status is Status.INVALID and v.checked_at is None and fetched_blobs(reg) == 1


def test_a_revoked_key_is_honoured_inside_the_window(tmp_path: Path) -> None:
    policy, reg, image = signed(tmp_path)
    warm = cold_with_window(image, reg, policy)
    (entry,) = warm.hits.values()
    key_sha = entry.signatures[0].key_sha256
    assert key_sha
    (tmp_path / "r").mkdir()
    revoking = write_policy(tmp_path / "r",
                            ONE_KEY + f"  revocations:\n    - {{keySha256: '{key_sha}', reason: leaked}}\n")
    reg.requests.clear()
    v = windowed(image, reg, revoking, warm, NOW + timedelta(minutes=1))
    assert v.status is Status.REVOKED and v.checked_at == NOW and reg.requests == []


def test_a_pass_that_lapsed_since_is_verified_again_inside_the_window(tmp_path: Path) -> None:
    policy, reg, image = signed(tmp_path)
    warm = cold_with_window(image, reg, policy)
    ((key, entry),) = warm.hits.items()
    lapsing = tuple(replace(r, not_after=NOW + timedelta(minutes=5)) for r in entry.signatures)
    warm.hits = {key: replace(entry, signatures=lapsing)}
    assert windowed(image, reg, policy, warm, NOW + timedelta(minutes=1)).checked_at == NOW
    reg.requests.clear()
    v = windowed(image, reg, policy, warm, NOW + timedelta(minutes=6))
    assert v.checked_at is None and fetched_blobs(reg) == 1


def test_the_relist_scope_is_made_once_per_repository_credentials_and_cluster(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked up to three times per image (load the marks, judge, mark), the scope is computed once per
    (cluster, credentials, registry, repository, pull secrets) of a scan (issue 19), and every one of
    those still makes its own scope."""
    reg = InMemoryRegistry()
    reg.credentials.add_pull_secret("a", "pull", json.dumps(
        {"auths": {"reg.test": {"username": "tenant-a", "password": "pw"}}}).encode())
    images = [running(reg) for _ in range(3)]
    other_repo = running(reg, repo=ImageReference("reg.test", "team/other", "1"))
    tenant = replace(images[0], pull_secrets=(("a", "pull"),))
    calls: list[tuple[str, str]] = []
    real = pipeline.relist_scope

    def counting(client: object, image: RunningImage, cluster: str = "") -> str:
        calls.append((image.reference.repository, cluster))
        return real(client, image, cluster)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "relist_scope", counting)
    state = CacheState(window=WINDOW)
    for _ in range(3):
        for img in [*images, other_repo, tenant]:
            assert state.scope(reg, img) == real(reg, img)
    assert sorted(calls) == [("team/app", ""), ("team/app", ""), ("team/other", "")]
    other_cluster = replace(state, cluster="other")  # shares the memo: the cluster is part of its key
    assert other_cluster.scope(reg, images[0]) == real(reg, images[0], "other") != state.scope(reg, images[0])


def test_a_digests_containers_are_split_by_credentials_with_one_question_per_secret_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pods of a Deployment share their pull secrets: the credential candidates are asked once per
    distinct set of a digest, not once per container (issue 19), and the split is the same."""
    reg = InMemoryRegistry()
    for ns in ("a", "b"):
        reg.credentials.add_pull_secret(ns, "pull", json.dumps(
            {"auths": {"reg.test": {"username": f"tenant-{ns}", "password": "pw"}}}).encode())

    def container(ns: str, pod: str, secrets: tuple[str, ...]) -> ContainerRef:
        return ContainerRef(ns, pod, "c", ContainerType.CONTAINER, "reg.test/team/app:1", None,
                            Workload("Deployment", "app"), secrets)

    containers = [*(container("a", f"p{i}", ("pull",)) for i in range(10)), container("b", "q", ("pull",)),
                  container("a", "r", ()), *(container("a", f"s{i}", ("pull",)) for i in range(3))]
    asked: list[tuple[tuple[str, str], ...]] = []
    real = reg.credentials.candidates

    def counting(registry: str, secrets: tuple[tuple[str, str], ...] = (), *, repository: str) -> tuple[object, ...]:
        asked.append(secrets)
        return real(registry, secrets, repository=repository)

    monkeypatch.setattr(reg.credentials, "candidates", counting)
    groups = pipeline._by_credentials(reg, "reg.test", "team/app", containers)
    assert sorted(asked) == sorted([(("a", "pull"),), (("b", "pull"),), ()])
    assert [(refs, [c.pod for c in cs]) for refs, cs in groups] == [
        ((("a", "pull"),), [*(f"p{i}" for i in range(10)), *(f"s{i}" for i in range(3))]),
        ((("b", "pull"),), ["q"]),
        ((), ["r"]),
    ]


def test_a_windowed_verdict_takes_its_window_and_credential_reasons_in_one_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A frozen verdict's copy costs ~12 µs: the 1,600 verdicts a window scan of the bench estate serves
    # were copied twice (the window's reason, then the credential source's), now once, with the reasons
    # in the same order (issue 19).
    policy, reg, image = signed(tmp_path)
    warm = cold_with_window(image, reg, policy)
    copies: list[str] = []

    def counting_replace(obj: object, /, **changes: object) -> object:
        copies.append(type(obj).__name__)
        return replace(obj, **changes)  # type: ignore[type-var]

    monkeypatch.setattr(pipeline, "replace", counting_replace)
    (v,) = verify_image(image, _groups(policy, image), reg, policy, NOW + timedelta(minutes=20), ScanStats(), warm,
                        more_reasons=lambda v: ("registry credentials: anonymous",))
    assert copies.count("Verdict") == 1
    assert v.checked_at == NOW and "re-check window" in v.reasons[-2]
    assert v.reasons[-1] == "registry credentials: anonymous"
    copies.clear()
    (fresh,) = verify_image(image, _groups(policy, image), reg, policy, NOW, ScanStats(), None,
                            more_reasons=lambda v: ())
    assert copies.count("Verdict") == 0 and fresh.status is Status.VERIFIED  # nothing to add: no copy

