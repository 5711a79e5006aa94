"""The pipeline's evidence sink: each image's verification reads through its own recording reader; a
cold verification names its material only when it is cached (never one that met errors); a cache hit
whose material the store lacks is verified afresh; the recorded answers replay to the same verdict."""

from __future__ import annotations

from pathlib import Path

from scanner.evidence.capture import Capture, Material, ReplayReader, material_ref
from scanner.models import Status
from scanner.pipeline import CacheState, ScanStats, _groups, verify_image
from tests.harness.registry_sim import InMemoryRegistry
from tests.unit.test_pipeline_cache import KEY, NOW, ONE_KEY, REPO, running, write_policy


def judge(image, reg, policy, cache, capture):
    reader = capture.reader(image, reg)
    return verify_image(image, _groups(policy, image), reader, policy, NOW, ScanStats(), cache, capture)


def test_cold_material_replays_to_the_same_verdict_and_is_named_when_cached(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    capture, cache = Capture(), CacheState()
    (v,) = judge(image, reg, policy, cache, capture)
    assert v.status is Status.VERIFIED
    (j,) = capture.judged
    assert j.material is not None and j.material.blobs
    assert j.material_ref == material_ref(image.digest, cache.new[0].material_fingerprint)
    (again,) = verify_image(image, _groups(policy, image), ReplayReader(j.material), policy, NOW, ScanStats())
    assert (again.status, again.reasons) == (v.status, v.reasons)
    # nothing recorded: an error, never "unsigned"
    (empty,) = verify_image(image, _groups(policy, image), ReplayReader(Material()), policy, NOW, ScanStats())
    assert empty.status is Status.ERROR


def test_material_that_met_errors_is_never_named_for_later_hits(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    reg.fail.add("get_blob")
    capture, cache = Capture(), CacheState()
    (v,) = judge(image, reg, policy, cache, capture)
    assert v.status is Status.ERROR and not cache.new
    assert capture.judged[0].material_ref is None  # the error's answers never stand for the fingerprint


def test_a_hit_without_material_in_the_store_is_verified_afresh(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, ONE_KEY)
    reg = InMemoryRegistry()
    image = running(reg)
    reg.sign_cosign(REPO, image.digest, KEY)
    first = CacheState()
    judge(image, reg, policy, first, Capture())
    warm = CacheState(hits={(e.digest, e.decision_identity): e for e in first.new})
    reg.requests.clear()
    lacking = Capture(known=lambda names: set())
    lacking.prepare((e.digest, e.material_fingerprint) for e in warm.hits.values())
    judge(image, reg, policy, warm, lacking)
    assert any(call == "get_blob" for call, _ in reg.requests) and lacking.judged[0].material is not None
    reg.requests.clear()
    having = Capture(known=lambda names: set(names))
    having.prepare((e.digest, e.material_fingerprint) for e in warm.hits.values())
    (v,) = judge(image, reg, policy, warm, having)
    assert v.status is Status.VERIFIED and not any(call == "get_blob" for call, _ in reg.requests)
    (j,) = having.judged
    assert j.material is None and j.material_ref is not None  # the store's cold material stands for it


def test_the_image_manifest_for_the_layouts_is_asked_only_when_a_pack_is(tmp_path: Path) -> None:
    """Every scan with a store keeps its material; the running image's own manifest (for the pack's OCI
    layouts) costs one more GET per image, so only `scan --evidence` asks for it."""
    from scanner.scan import _capture

    policy = write_policy(tmp_path, ONE_KEY)
    asked = []
    for wanted in (False, True):
        reg = InMemoryRegistry()
        image = running(reg)
        reg.sign_cosign(REPO, image.digest, KEY)
        capture = _capture(object(), 1, image_manifests=wanted)  # type: ignore[arg-type]
        (v,) = judge(image, reg, policy, CacheState(), capture)
        assert v.status is Status.VERIFIED
        asked.append(sum(1 for call, what in reg.requests if call == "get_manifest" and image.digest in what))
    assert asked[0] == 0 and asked[1] == 1, asked


def test_a_capture_asks_no_image_manifest_unless_told(tmp_path: Path) -> None:
    """The extra GET per image is opt-in at the class too, not only in ``scan._capture``: a Capture
    built elsewhere (a future face, a test) costs no request it was not asked to make."""
    policy = write_policy(tmp_path, ONE_KEY)
    asked = []
    for capture in (Capture(), Capture(image_manifests=True)):  # the default, then the opt-in
        reg = InMemoryRegistry()
        image = running(reg)
        reg.sign_cosign(REPO, image.digest, KEY)
        (v,) = judge(image, reg, policy, CacheState(), capture)
        assert v.status is Status.VERIFIED
        asked.append(sum(1 for call, what in reg.requests if call == "get_manifest" and image.digest in what))
    assert asked == [0, 1], asked
