"""The replay floor (bench/replay.py, issue 19 item 3): the ideal client makes the scan's own requests.

The cold target compares the scan with an ideal client doing "the same requests per digest"; a
hand-written floor (2 GETs + ECDSA per cosign digest) did less work than the scan (no unsigned 404s,
no notation chains, no probes). These tests hold the replay to the registry's own log of the scan."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from typing import Any

import pytest

from bench import replay as rp
from bench import run as bench
from tests.harness.fixtures_registry import LoggedRequest
from tests.harness.tools import require_binary

D1, D2, P1, S2, E2 = (f"sha256:{hashlib.sha256(x).hexdigest()}" for x in (b"i1", b"i2", b"p1", b"s2", b"e2"))


def _hex(d: str) -> str:
    return d.split(":", 1)[1]


LOG = [
    LoggedRequest("GET", "/v2/", 200),
    LoggedRequest("HEAD", f"/v2/n/manifests/{D2}", 200),
    LoggedRequest("GET", f"/v2/a/manifests/sha256-{_hex(D1)}.sig", 200),
    LoggedRequest("GET", f"/v2/n/referrers/{D2}", 404),
    LoggedRequest("GET", f"/v2/a/blobs/{P1}", 200),
    LoggedRequest("GET", f"/v2/n/manifests/sha256-{_hex(D2)}", 200),
    LoggedRequest("GET", "/v2/a/tags/list?n=1000", 200),
    LoggedRequest("GET", f"/v2/n/manifests/{S2}", 200),
    LoggedRequest("GET", f"/v2/n/blobs/{E2}", 200),
    LoggedRequest("GET", f"/v2/a/blobs/{P1}", 200),  # the same request twice: replayed twice
    LoggedRequest("GET", "/v2/a/tags/list?n=1000", 200),
]
OWNERS = {D1: D1, D2: D2, P1: D1, S2: D2, E2: D2}


def test_plan_holds_exactly_the_logged_requests_each_chain_in_log_order() -> None:
    units = rp.plan(LOG, OWNERS)
    assert rp.signature(r for u in units for r in u.requests) == rp.signature(LOG)
    assert sum(len(u.requests) for u in units) == len(LOG)
    chains = {u.owner: [r.path for r in u.requests] for u in units if u.owner is not None}
    assert chains[D1] == [f"/v2/a/manifests/sha256-{_hex(D1)}.sig", f"/v2/a/blobs/{P1}", f"/v2/a/blobs/{P1}"]
    assert chains[D2] == [f"/v2/n/manifests/{D2}", f"/v2/n/referrers/{D2}", f"/v2/n/manifests/sha256-{_hex(D2)}",
                          f"/v2/n/manifests/{S2}", f"/v2/n/blobs/{E2}"]
    # Requests no digest owns are made once each, as units of their own, in log order with the chains.
    assert [(u.owner, len(u.requests)) for u in units] == [(None, 1), (D2, 5), (D1, 3), (None, 1), (None, 1)]
    # A digest nobody published stays unattributed rather than joining some chain.
    assert rp.owner_of(f"/v2/a/blobs/sha256:{'0' * 64}", OWNERS) is None


def test_signature_check_verifies_cosign_and_notation_jws_in_process() -> None:
    from tests.harness import notation_sign as ns
    from tests.harness.cosign_sign import SIG_ANNOTATION, KeyPair

    trusted, wrong = KeyPair.ecdsa(), KeyPair.ecdsa()
    check = rp.SignatureCheck(trusted.private.public_key())

    def cosign_chain(key: KeyPair, payload: bytes, signed: bytes | None = None) -> dict[str, bytes]:
        digest = f"sha256:{hashlib.sha256(payload).hexdigest()}"
        sig = base64.b64encode(key.sign(signed or payload)).decode()
        manifest = {"layers": [{"digest": digest, "annotations": {SIG_ANNOTATION: sig}}]}
        return {"/v2/a/manifests/sha256-00.sig": json.dumps(manifest).encode(), f"/v2/a/blobs/{digest}": payload}

    assert check.chain(cosign_chain(trusted, b"payload")) == (1, 1)
    assert check.chain(cosign_chain(wrong, b"payload")) == (1, 0)  # checked, invalid: the scan judges it too
    assert check.chain(cosign_chain(trusted, b"payloaD", b"payload")) == (1, 0)  # tampered

    pki = ns.make_pki("replay test")
    subject = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D1, "size": 10}
    envelope = ns.jws_envelope(pki.chain, subject)
    edigest = f"sha256:{hashlib.sha256(envelope).hexdigest()}"
    sig_manifest = {"layers": [{"mediaType": ns.JWS_MEDIA_TYPE, "digest": edigest}]}
    bodies = {f"/v2/n/manifests/{S2}": json.dumps(sig_manifest).encode(), f"/v2/n/blobs/{edigest}": envelope}
    assert check.chain(bodies) == (1, 1)
    env = json.loads(envelope)
    env["payload"] = env["payload"][:-2] + ("AA" if env["payload"][-2:] != "AA" else "BB")
    bodies[f"/v2/n/blobs/{edigest}"] = json.dumps(env).encode()
    assert check.chain(bodies) == (1, 0)
    # A chain without a signature (an unsigned image's 404s, a tag list) verifies nothing.
    assert check.chain({"/v2/a/tags/list?n=1000": b'{"tags":[]}'}) == (0, 0)


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real docker-registry with 20 digests (cosign, notation, unsigned, wrong key, tampered), and the
    access-log lines of a real cold and warm sigaudit scan of them."""
    require_binary("docker-registry")
    from tests.harness.cosign_sign import KeyPair
    from tests.harness.fixtures_registry import start_distribution

    tmp = tmp_path_factory.mktemp("replay")
    reg = start_distribution(tmp / "registry")
    try:
        keys = {"trusted": KeyPair.ecdsa(), "wrong": KeyPair.ecdsa()}
        est = bench.publish(reg.url, reg.host, 20, 5, keys, True, tmp)
        pods = tmp / "pods.json"
        bench.write_pods(est, 40, pods)
        policy = bench.write_policy(est, keys, tmp)
        logged: dict[str, Any] = {"cold": [], "warm": []}
        for label in ("cold", "warm"):
            scan = bench.measure_scan(label, reg, est, pods, policy, tmp / "s.db", tmp, ["--concurrency", "4"],
                                      logged[label])
            assert scan["unexpected_verdicts"] == 0 and scan["exit_code"] == 1, scan
            logged[f"{label}_signatures"] = scan["signatures_authenticated"]
        yield reg, est, keys, logged
    finally:
        reg.stop()


@pytest.mark.parametrize("label", ["cold", "warm"])
def test_replay_floor_makes_the_scans_own_requests(estate, label: str) -> None:  # type: ignore[no-untyped-def]
    reg, est, keys, logged = estate
    scan_requests = logged[label]
    kinds = Counter(i.kind for i in est.images)
    assert kinds[bench.NOTATION] == 4 and kinds[bench.UNSIGNED] == 2
    before = bench.settle_count(reg)
    floor = bench.replay_floor(reg, est, keys, scan_requests, 4)
    replayed = reg.requests()[before:]
    # The registry's own log of the replay: the scan's (method, path, status) multiset, nothing else.
    assert rp.signature(replayed) == rp.signature(scan_requests)
    assert floor["same_requests_as_scan"] is True and floor["status_mismatches"] == 0
    assert floor["requests"] == floor["scan_requests"] == len(scan_requests)
    assert floor["client_cpu_per_request_ms"] > 0 and floor["concurrency"] == 4
    if label == "cold":
        # One chain per digest the scan asked the registry about (an unsigned digest in a busy repository
        # may be answered by the repository's tag list, a request of no digest); every signature the scan
        # verified is verified in process: cosign, notation, wrong key and tampered alike (the last two
        # invalid), none for the unsigned.
        owners = {i.digest: i.digest for i in est.images} | {a: i.digest for i in est.images for a in i.artifacts}
        asked = {rp.owner_of(r.path, owners) for r in scan_requests} - {None}
        assert len(asked) >= 20 - kinds[bench.UNSIGNED]
        assert floor["chains"] == len(asked)
        assert floor["signatures_checked"] == 20 - kinds[bench.UNSIGNED]
        assert floor["signatures_valid"] == kinds[bench.COSIGN] + kinds[bench.NOTATION]
        assert floor["same_signatures_as_scan"] is None  # not asked for here; the bench passes the scan's count
        assert logged["cold_signatures"] == floor["signatures_checked"]  # the scan's authenticity checks
        # The previous floor did other work: fewer requests, and none for notation or unsigned images.
        assert floor["requests"] > 2 * (20 - kinds[bench.NOTATION] - kinds[bench.UNSIGNED])


def test_replay_floor_notices_a_replay_that_differs_from_the_scan(estate, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The multiset check is not vacuous: a replay that drops a unit is reported as different."""
    reg, est, keys, logged = estate
    real_plan = rp.plan
    monkeypatch.setattr(rp, "plan", lambda requests, owners: real_plan(requests, owners)[1:])
    floor = bench.replay_floor(reg, est, keys, logged["cold"], 4)
    assert floor["same_requests_as_scan"] is False and floor["missing_examples"]
    assert floor["requests"] < floor["scan_requests"]

