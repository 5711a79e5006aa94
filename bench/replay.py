"""The replay floor (issue 19 item 3): the scan's own registry requests, made by an ideal client.

The issue's cold target compares the scan with "an ideal client floor measured in the same run at the
same concurrency (... the same requests per digest, ECDSA in process)". A hand-written floor (2 GETs
and one ECDSA per cosign digest) does other work than the scan: it skips the unsigned images' 404s,
the notation chains, the probes. This floor takes the scan's exact requests from the registry's
access log instead and replays them:

* :func:`plan` groups the logged requests into units of work: each image digest's chain, in the
  order the scan made it (a request belongs to a digest when its path names the digest or an
  artifact the bench published for it — the ``.sig`` payload, the notation signature manifest and
  envelope); a request no digest owns (the ``/v2/`` probe, a repository's tag list) is a unit of
  its own, made once. The plan holds exactly the logged multiset — nothing dropped, merged or added.
* :func:`replay` runs the units on N threads over one urllib3 ``HTTPConnectionPool(maxsize=N,
  block=True)``, each chain sequential, every body read, then one signature verify in process per
  signature the chain's bodies carry (:class:`SignatureCheck`): ECDSA P-256 over the cosign payload,
  and for a notation JWS the signature over ``protected.payload`` with the leaf certificate's key (no
  chain building) — no auth, policy, store, output or process start.

The bench (bench/run.py) checks afterwards that the registry logged the same (method, path, status)
multiset for the replay as for the scan.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

# The Accept header the scan sends for manifests (OCI and Docker, image and index); harmless on blobs.
ACCEPT = ", ".join(("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json"))
COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"
JWS_MEDIA_TYPE = "application/jose+json"
_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")


class Logged(Protocol):
    """One access-log line (tests/harness/fixtures_registry.LoggedRequest has this shape)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def status(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Unit:
    """Requests made one after another: one digest's chain (``owner`` = the digest), or one request
    no digest owns (``owner`` None)."""

    owner: str | None
    requests: tuple[Logged, ...]


def signature(requests: Iterable[Logged]) -> Counter[tuple[str, str, int]]:
    """The (method, path, status) multiset of some requests: what the replay must reproduce."""
    return Counter((r.method, r.path, r.status) for r in requests)


def owner_of(path: str, owners: Mapping[str, str]) -> str | None:
    """The image digest a request path belongs to: the first ``sha256:``/``sha256-`` digest in it that
    ``owners`` (artifact or image digest -> image digest) knows."""
    for m in _DIGEST.finditer(path):
        found = owners.get(f"sha256:{m.group(1)}")
        if found is not None:
            return found
    return None


def plan(requests: Sequence[Logged], owners: Mapping[str, str]) -> list[Unit]:
    """Group logged requests into units, ordered by each unit's first request in the log; within a
    digest's chain the log order. Every logged request is in exactly one unit (duplicates too)."""
    chains: dict[str, list[Logged]] = {}
    order: list[tuple[str | None, Any]] = []  # (owner, chain list) or (None, the lone request)
    for r in requests:
        owner = owner_of(r.path, owners)
        if owner is None:
            order.append((None, r))
        elif owner in chains:
            chains[owner].append(r)
        else:
            chains[owner] = [r]
            order.append((owner, chains[owner]))
    return [Unit(None, (item,)) if owner is None else Unit(owner, tuple(item)) for owner, item in order]


class SignatureCheck:
    """One signature verify in process per signature in a chain's bodies (the work the scan's verifiers
    do at the least): cosign's ECDSA P-256 over the payload blob with the trusted key; a notation JWS
    (signature-envelope-jws.md) over ``protected.payload`` with the leaf certificate's key, the leaf's
    key parsed once per certificate. Invalid signatures are counted, not raised: the scan judges the
    wrong-key and tampered images too."""

    def __init__(self, cosign_key: Any) -> None:
        self.cosign_key = cosign_key
        self._leaf_keys: dict[str, Any] = {}
        self._lock = threading.Lock()

    def chain(self, bodies: Mapping[str, bytes]) -> tuple[int, int]:
        """(signatures checked, valid ones) among the manifests and blobs fetched by one chain."""
        checked = valid = 0
        for path, body in bodies.items():
            repo, sep, _ = path.partition("/manifests/")
            if not sep:
                continue
            try:
                doc = json.loads(body)
            except ValueError:
                continue
            layers = doc.get("layers") if isinstance(doc, dict) else None
            for layer in layers if isinstance(layers, list) else ():
                if not isinstance(layer, dict):
                    continue
                blob = bodies.get(f"{repo}/blobs/{layer.get('digest')}")
                if blob is None:
                    continue
                annotations = layer.get("annotations") or {}
                if COSIGN_SIGNATURE in annotations:
                    checked += 1
                    valid += self.cosign(annotations[COSIGN_SIGNATURE], blob)
                elif layer.get("mediaType") == JWS_MEDIA_TYPE:
                    checked += 1
                    valid += self.jws(blob)
        return checked, valid

    def cosign(self, sig_b64: str, payload: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            self.cosign_key.verify(base64.b64decode(sig_b64), payload, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def jws(self, envelope: bytes) -> bool:
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        try:
            env = json.loads(envelope)
            leaf = env["header"]["x5c"][0]
            alg = json.loads(_b64u(env["protected"]))["alg"]
            sig = _b64u(env["signature"])
            signed = f"{env['protected']}.{env['payload']}".encode()
        except (ValueError, KeyError, IndexError, TypeError):
            return False
        key = self._leaf_keys.get(leaf)
        if key is None:
            key = x509.load_der_x509_certificate(base64.b64decode(leaf)).public_key()
            with self._lock:
                self._leaf_keys[leaf] = key
        h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}.get(str(alg)[2:])
        if h is None:
            return False
        try:
            if alg.startswith("ES") and isinstance(key, ec.EllipticCurvePublicKey):
                half = len(sig) // 2
                der = encode_dss_signature(int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big"))
                key.verify(der, signed, ec.ECDSA(h))
            elif alg.startswith("PS") and isinstance(key, rsa.RSAPublicKey):
                key.verify(sig, signed, padding.PSS(padding.MGF1(h), h.digest_size), h)
            else:
                return False
        except InvalidSignature:
            return False
        return True


def _b64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class ReplayResult:
    units: int
    requests: int
    status_mismatches: int  # a replayed status other than the logged one (the registry changed?)
    signatures_checked: int
    signatures_valid: int


def replay(pool: Any, units: Sequence[Unit], check: SignatureCheck, workers: int) -> ReplayResult:
    """Make every unit's requests on ``pool`` (an urllib3 pool of ``workers`` connections), ``workers``
    units at a time, each unit's requests in order with every body read, then its signature checks."""
    headers = {"Accept": ACCEPT}

    def one(unit: Unit) -> tuple[int, int, int, int]:
        bodies: dict[str, bytes] = {}
        mismatches = 0
        for r in unit.requests:
            resp = pool.request(r.method, r.path, headers=headers)  # preload_content: the body is read
            mismatches += resp.status != r.status
            if r.method == "GET" and resp.status == 200:
                bodies[r.path] = resp.data
        checked, valid = check.chain(bodies) if bodies else (0, 0)
        return len(unit.requests), mismatches, checked, valid

    with ThreadPoolExecutor(max_workers=workers) as ex:
        results = list(ex.map(one, units))
    return ReplayResult(units=len(units), requests=sum(r[0] for r in results),
                        status_mismatches=sum(r[1] for r in results),
                        signatures_checked=sum(r[2] for r in results), signatures_valid=sum(r[3] for r in results))
