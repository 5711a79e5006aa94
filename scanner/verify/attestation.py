"""Attestations as Binary Authorization and kritis define them: an attestor's PKIX signature over a
small JSON payload naming the image digest.

Payload (the "container signature" JSON, verified over the exact ``serializedPayload`` bytes, never
re-serialised: kritis writes compact JSON, gcloud indented key-sorted JSON with a newline)::

    {"critical": {"identity": {"docker-reference": "REGISTRY/REPO"},
                  "image": {"docker-manifest-digest": "sha256:..."},
                  "type": "atomic container signature" | "Google cloud binauthz container signature"}}

Both names bind, as kritis' ``attestlib`` checks them (``checkAuthenticatedAttestation``): the digest
must be the running digest and the docker-reference the repository the image runs from (normalised as
go-containerregistry's ``Repository.Name()``, so ``index.docker.io/library/nginx`` is Docker Hub's
``nginx``). An attestation of the same digest in another repository is not an attestation of this one:
where attestations are filed (a Grafeas ``resourceUri``, a referrer) is not signed. A payload that names
a key twice (Go's decoder matches keys case-insensitively and keeps the last) is refused.

Signatures (kritis ``pkg/attestlib`` and Binary Authorization's PKIX algorithms): RSA PKCS#1 v1.5 and
RSA-PSS with SHA-256 / SHA-512 (PSS salt length detected, since kritis signs with the maximum salt and
Cloud KMS with the digest length), ECDSA P-256/SHA-256, P-384/SHA-384, P-521/SHA-512. ``publicKeyId``
is a hint only: every signature is tried against every key of the attestor.

Where attestations come from:

* ``source: http(s)://HOST[:PORT][/PREFIX]/v1beta1/projects/PROJECT`` (or ``/v1/projects/PROJECT``):
  a Grafeas API (Container Analysis, kritis' Grafeas). ``GET .../occurrences?filter=...&pageSize=&
  pageToken=`` — the filter is sent but not relied on (Grafeas' in-memory store ignores it): kind,
  resource URL (with and without ``https://``) and note are matched here, pages are bounded.
* ``source: registry``: OCI 1.1 referrers of the image with artifactType
  :data:`REGISTRY_ARTIFACT_TYPE`, whose single layer (same media type) is the Grafeas v1
  ``AttestationOccurrence`` JSON: ``{"serializedPayload": "<base64>", "signatures": [{"publicKeyId":
  "...", "signature": "<base64>"}]}``.

The trust decision (:func:`judge`) is pure. Reading Grafeas is I/O through an injected
:class:`AttestationSource` built at policy-load time (:class:`GrafeasClient` by default).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from scanner.errors import ConfigError, ParseError, SigauditError
from scanner.inventory.references import parse_reference
from scanner.models import (
    Outcome,
    ReferrerArtifact,
    RunningImage,
    SignatureFailure,
    SignatureMaterial,
    SignatureResult,
)
from scanner.redact import display_url
from scanner.verify.base import HttpGet, HttpGetError, Verifier, Wants, identity_of
from scanner.verify.keys import PublicKey, describe_key, key_sha256, parse_public_key, spki_der

if TYPE_CHECKING:
    from scanner.verify.kinds.attestation import AttestationVerifierSpec
    from scanner.verify.kinds.base import KeyLoader

log = logging.getLogger(__name__)

REGISTRY_ARTIFACT_TYPE = "application/vnd.sigaudit.attestation.v1+json"
KNOWN_PAYLOAD_TYPES = frozenset(
    {"atomic container signature", "Google cloud binauthz container signature", "cosign container image signature"}
)
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_SIGNATURES_PER_ATTESTATION = 16
MAX_ATTESTATIONS = 100  # examined per image
MAX_PAGES = 20
PAGE_SIZE = 100
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
TIMEOUT_SECONDS = 15.0  # per socket operation (httpx)
TOTAL_TIMEOUT_SECONDS = 60.0  # wall clock for one image's listing, every page and byte included


class AttestationSourceError(SigauditError):
    """The attestation source could not be read: the verdict is ``error``."""


class AttestationListTruncated(AttestationSourceError):
    """The listing stopped at a bound (pages, attestations) before its end: ``partial`` is what was
    read. A valid attestation among them still counts; without one, the verdict is ``error``, never
    "not attested" (the one that counts may be further on)."""

    def __init__(self, message: str, partial: Sequence[Attestation]) -> None:
        super().__init__(message)
        self.partial = tuple(partial)


# ----------------------------------------------------------------------------------------------
# Models (parse once)


@dataclass(frozen=True, slots=True)
class DetachedSignature:
    signature: bytes
    key_id: str = ""


@dataclass(frozen=True, slots=True)
class Attestation:
    """One signed attestation: payload bytes exactly as signed, and its signatures."""

    serialized_payload: bytes
    signatures: tuple[DetachedSignature, ...]
    origin: str  # occurrence name or referrer digest, for reasons
    note_name: str = ""
    resource_url: str = ""

    @classmethod
    def from_generic(
        cls, doc: Mapping[str, Any], *, origin: str, note_name: str = "", resource_url: str = ""
    ) -> Attestation:
        """From a Grafeas ``GenericSignedAttestation`` (v1beta1) or ``AttestationOccurrence`` (v1)."""
        payload_b64 = doc.get("serializedPayload")
        if not isinstance(payload_b64, str) or not payload_b64:
            raise ParseError(f"attestation {origin}: no serializedPayload")
        payload = _b64decode(payload_b64, f"attestation {origin}: serializedPayload")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ParseError(f"attestation {origin}: payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
        raw_sigs = doc.get("signatures") or []
        if not isinstance(raw_sigs, list):
            raise ParseError(f"attestation {origin}: signatures is not a list")
        sigs = []
        for s in raw_sigs[:MAX_SIGNATURES_PER_ATTESTATION]:
            if not isinstance(s, Mapping) or not isinstance(s.get("signature"), str):
                raise ParseError(f"attestation {origin}: a signature entry without a signature")
            sigs.append(
                DetachedSignature(
                    _b64decode(s["signature"], f"attestation {origin}: signature"), str(s.get("publicKeyId") or "")
                )
            )
        return cls(payload, tuple(sigs), origin, note_name, resource_url)


def _b64decode(text: str, what: str) -> bytes:
    """Grafeas' JSON carries bytes as standard base64; kritis' Go tests use unpadded base64url."""
    t = text.strip()
    try:
        if "-" in t or "_" in t:
            return base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
        return base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ParseError(f"{what}: not base64") from exc


def occurrence_attestation(occ: Mapping[str, Any]) -> Attestation | None:
    """A Grafeas occurrence (v1beta1 or v1 JSON) -> its PKIX attestation; None for other kinds and PGP."""
    if occ.get("kind") not in ("ATTESTATION", None):
        return None
    name = str(occ.get("name") or "(unnamed occurrence)")[:300]
    note = str(occ.get("noteName") or "")
    url = _occurrence_url(occ)
    details = occ.get("attestation")
    if not isinstance(details, Mapping):
        return None
    inner = details.get("attestation")
    if isinstance(inner, Mapping):  # v1beta1: attestation.attestation.genericSignedAttestation
        generic = inner.get("genericSignedAttestation")
        if not isinstance(generic, Mapping):
            return None  # pgpSignedAttestation: not supported
        return Attestation.from_generic(generic, origin=name, note_name=note, resource_url=url)
    if "serializedPayload" in details:  # v1: attestation.{serializedPayload, signatures}
        return Attestation.from_generic(details, origin=name, note_name=note, resource_url=url)
    return None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique even case-insensitively (Go's encoding/json, which kritis
    and Binary Authorization decode with, matches struct fields case-insensitively, last one wins)."""
    seen: set[str] = set()
    for k, _ in pairs:
        folded = k.casefold()
        if folded in seen:
            raise ParseError(f"key {k!r} appears twice")
        seen.add(folded)
    return dict(pairs)


def load_json(data: bytes | str, what: str, **kwargs: Any) -> Any:
    """``json.loads`` for untrusted bytes: any failure (including nesting too deep) is a ParseError."""
    try:
        return json.loads(data, **kwargs)
    except RecursionError as exc:
        raise ParseError(f"{what}: JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ParseError(f"{what} is not JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Payload:
    docker_reference: str
    digest: str
    type: str

    @classmethod
    def from_bytes(cls, data: bytes) -> Payload:
        if len(data) > MAX_PAYLOAD_BYTES:
            raise ParseError("payload too large")
        doc = load_json(data, "payload", object_pairs_hook=_unique_keys)
        crit = doc.get("critical") if isinstance(doc, dict) else None
        if not isinstance(crit, dict):
            raise ParseError("payload has no critical section")
        ident, image = crit.get("identity"), crit.get("image")
        ref = ident.get("docker-reference") if isinstance(ident, dict) else None
        digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
        ptype = crit.get("type")
        if not isinstance(digest, str) or not isinstance(ptype, str):
            raise ParseError("payload lacks critical.image.docker-manifest-digest or critical.type")
        return cls(ref if isinstance(ref, str) else "", digest, ptype)


def repository_mismatch(docker_reference: str, image: RunningImage) -> str | None:
    """Why a payload's ``docker-reference`` does not name the repository the image runs from, or None.

    kritis compares it with go-containerregistry's ``Repository.Name()`` of the image: a repository,
    without tag or digest. Docker Hub's spellings are one repository (``parse_reference`` normalises
    them as ``Repository.Name()`` does)."""
    if not docker_reference:
        return "it names no repository (critical.identity.docker-reference)"
    try:
        named = parse_reference(docker_reference)
    except ParseError:
        return f"its docker-reference {docker_reference[:200]!r} is not an image repository"
    last = docker_reference.rsplit("/", 1)[-1]
    if "@" in docker_reference or ":" in last:
        return f"its docker-reference {docker_reference[:200]!r} is not a bare repository (no tag or digest)"
    if named.repo != image.reference.repo:
        return f"it names repository {named.repo}, the image runs from {image.reference.repo}"
    return None


# ----------------------------------------------------------------------------------------------
# Signature checks (pure)


def pkix_key_id(key: PublicKey) -> str:
    """The default PKIX key id: ``ni:///sha-256;`` + unpadded base64url SHA-256 of the DER SPKI (RFC 6920)."""
    digest = hashlib.sha256(spki_der(key)).digest()
    return "ni:///sha-256;" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


_EC_HASH: Mapping[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


def verify_pkix(key: PublicKey, signature: bytes, payload: bytes) -> str | None:
    """The algorithm name if ``signature`` verifies over ``payload`` under ``key``, else None."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        h = _EC_HASH.get(key.curve.name)
        if h is None:
            return None
        try:
            algo = h()
            key.verify(signature, payload, ec.ECDSA(algo))
            return f"ECDSA_{key.curve.name.upper()}_{algo.name.upper()}"
        except (InvalidSignature, ValueError):
            return None
    if isinstance(key, rsa.RSAPublicKey):
        for h in (hashes.SHA256, hashes.SHA512):
            try:
                key.verify(signature, payload, padding.PKCS1v15(), h())
                return f"RSA_SIGN_PKCS1_{key.key_size}_{h.name.upper()}"
            except (InvalidSignature, ValueError):
                pass
            try:
                key.verify(signature, payload, padding.PSS(padding.MGF1(h()), padding.PSS.AUTO), h())
                return f"RSA_SIGN_PSS_{key.key_size}_{h.name.upper()}"
            except (InvalidSignature, ValueError):
                pass
        return None
    return None  # Ed25519 is not a Binary Authorization / kritis PKIX algorithm


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\r?\n[A-Za-z0-9+/=\r\n]+-----END \1-----")


def parse_pkix_pem(data: bytes) -> PublicKey:
    """One PEM public key and nothing else (kritis refuses a PEM followed by extra data), RSA or ECDSA."""
    text = data.strip()
    m = _PEM_BLOCK.fullmatch(text)
    if m is None or m.group(1) != b"PUBLIC KEY":
        raise ParseError("not exactly one PEM PUBLIC KEY block")
    key = parse_public_key(text)
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ParseError(f"{describe_key(key)} is not a PKIX attestation key (RSA or ECDSA)")
    return key


@dataclass(frozen=True, slots=True)
class AttestorKey:
    """One public key of an attestor, or the reason it is unavailable (a KMS outage)."""

    ref: str  # label: file, KMS URI or "(inline PEM)"
    key: PublicKey | None
    ids: frozenset[str] = frozenset()
    unavailable: str = ""


def resource_urls(image: RunningImage) -> tuple[str, ...]:
    """The resource URLs an attestation for this digest may carry: kritis uses ``https://``, gcloud none."""
    bare = f"{image.reference.repo}@{image.digest}"
    return (f"https://{bare}", bare)


def judge(
    attestation: Attestation,
    image: RunningImage,
    attestor: str,
    keys: Sequence[AttestorKey],
    *,
    verifier: str,
    source: str,
) -> SignatureResult | None:
    """One attestation -> a result; None when it is evidently another attestor's (every key id hint
    names a key we do not hold and nothing verifies)."""
    usable = [k for k in keys if k.key is not None]
    our_ids = frozenset().union(*(k.ids for k in keys))
    base_details: dict[str, Any] = {"attestation": attestation.origin, "source": source}
    signed_by: tuple[AttestorKey, str, DetachedSignature] | None = None
    for sig in attestation.signatures:
        for k in usable:
            assert k.key is not None
            alg = verify_pkix(k.key, sig.signature, attestation.serialized_payload)
            if alg:
                signed_by = (k, alg, sig)
                break
        if signed_by:
            break
    if signed_by is None:
        hinted = [s.key_id for s in attestation.signatures if s.key_id]
        if hinted and not any(h in our_ids for h in hinted):
            return None  # someone else's attestation in the same project / on the same image
        why = (
            "has no signatures"
            if not attestation.signatures
            else f"signature does not verify with any of {attestor}'s {len(usable)} key(s)"
        )
        return SignatureResult(
            kind="attestation",
            verifier=verifier,
            outcome=Outcome.FAILED,
            reason=f"attestation {attestation.origin} by {attestor} {why}",
            failure=SignatureFailure.INVALID,
            signer=attestor,
            identity=attestor,
            details={**base_details, "key_ids": hinted},
        )
    key, alg, sig = signed_by
    assert key.key is not None
    common: dict[str, Any] = {
        "kind": "attestation",
        "verifier": verifier,
        "signer": attestor,
        "identity": attestor,
        "key_sha256": key_sha256(key.key),
    }
    details = {**base_details, "algorithm": alg, "key": key.ref, "key_id": sig.key_id}
    try:
        payload = Payload.from_bytes(attestation.serialized_payload)
    except ParseError as exc:
        return SignatureResult(
            outcome=Outcome.FAILED,
            reason=f"attestation {attestation.origin} by {attestor}: signed payload is malformed: {exc}",
            failure=SignatureFailure.INVALID,
            details=details,
            **common,
        )
    if payload.digest != image.digest:
        return SignatureResult(
            outcome=Outcome.FAILED,
            reason=(
                f"attestation {attestation.origin} by {attestor} is for another image: it names "
                f"{payload.docker_reference or '?'}@{payload.digest}, the running digest is {image.digest}"
            ),
            failure=SignatureFailure.INVALID,
            details=details,
            **common,
        )
    if payload.type not in KNOWN_PAYLOAD_TYPES:
        return SignatureResult(
            outcome=Outcome.FAILED,
            reason=f"attestation {attestation.origin} by {attestor} has an unknown payload type {payload.type!r}",
            failure=SignatureFailure.INVALID,
            details=details,
            **common,
        )
    elsewhere = repository_mismatch(payload.docker_reference, image)
    if elsewhere is not None:
        return SignatureResult(
            outcome=Outcome.FAILED,
            reason=f"attestation {attestation.origin} by {attestor} is for another repository: {elsewhere}",
            failure=SignatureFailure.INVALID,
            details=details,
            **common,
        )
    return SignatureResult(
        outcome=Outcome.PASSED,
        reason=f"attested by {attestor} ({describe_key(key.key)} {alg}, {key.ref})",
        details=details,
        **common,
    )


# ----------------------------------------------------------------------------------------------
# Sources (I/O at the edge, injected)


class AttestationSource(Protocol):
    """Where a verifier reads attestations that are not part of the registry material."""

    @property
    def label(self) -> str: ...

    def attestations(self, resource_urls: Sequence[str], note_name: str | None) -> list[Attestation]:
        """Attestation occurrences for these resource URLs. Raises AttestationSourceError."""
        ...


@dataclass(frozen=True, slots=True)
class GrafeasEndpoint:
    base: str  # scheme://host[:port][/prefix]
    version: str  # "v1beta1" | "v1"
    project: str

    @classmethod
    def parse(cls, source: str) -> GrafeasEndpoint:
        url = source.removeprefix("grafeas+")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"attestation source {source!r}: use 'registry' or a Grafeas URL "
                              "http(s)://HOST[:PORT]/v1beta1/projects/PROJECT")
        if "@" in parts.netloc:
            # The source is named in every reason (JSON, reports, the database): never a password in it.
            raise ConfigError(f"attestation source {parts.scheme}://{parts.netloc.rsplit('@', 1)[1]}{parts.path}: "
                              "credentials in the URL are not accepted; give a bearer token in SIGAUDIT_GRAFEAS_TOKEN")
        if parts.query or parts.fragment:
            raise ConfigError(f"attestation source {parts.scheme}://{parts.netloc}{parts.path}: a query or fragment "
                              "would be dropped; the URL ends in /projects/PROJECT")
        segs = [s for s in parts.path.split("/") if s]
        for i in range(len(segs) - 2):
            if segs[i] in ("v1beta1", "v1") and segs[i + 1] == "projects" and i + 3 == len(segs):
                prefix = "/".join(segs[:i])
                base = f"{parts.scheme}://{parts.netloc}" + (f"/{prefix}" if prefix else "")
                return cls(base, segs[i], segs[i + 2])
        raise ConfigError(f"attestation source {source!r}: the path must end in /v1beta1/projects/PROJECT "
                          "(or /v1/projects/PROJECT)")

    @property
    def occurrences_url(self) -> str:
        return f"{self.base}/{self.version}/projects/{self.project}/occurrences"


class GrafeasClient:
    """Lists ATTESTATION occurrences over Grafeas' REST API (v1beta1 or v1), bounded in pages, bytes
    and time. Authorization: a bearer token from env SIGAUDIT_GRAFEAS_TOKEN, if set."""

    def __init__(
        self,
        endpoint: GrafeasEndpoint,
        *,
        token: str | None = None,
        get: HttpGet | None = None,
        page_size: int = PAGE_SIZE,
        max_pages: int = MAX_PAGES,
        total_timeout: float = TOTAL_TIMEOUT_SECONDS,
    ) -> None:
        self.endpoint = endpoint
        self._token = token
        self.page_size, self.max_pages, self.total_timeout = page_size, max_pages, total_timeout
        if endpoint.base.startswith("http://"):
            host = urlsplit(endpoint.base).hostname or ""
            if host not in ("127.0.0.1", "localhost", "::1"):
                if token:
                    raise ConfigError(f"attestation source {endpoint.base}: SIGAUDIT_GRAFEAS_TOKEN is sent over "
                                      "https only (or to this machine, 127.0.0.1), never in clear text")
                log.warning("insecure: reading attestations over plain http from %s", display_url(endpoint.base))
        if get is None:  # the edge's default (scanner/sources/http.py), as python-tuf's RequestsFetcher
            from scanner.sources.http import HttpxGet

            get = HttpxGet(timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False)
        # The listing's wall clock also holds while a server trickles its status line and headers.
        self._http_get: HttpGet = get
        # The trust sources in force when the policy was loaded: a scan records each listing (its evidence
        # pack holds it), and `verify-evidence` answers from the pack: no connection, no token sent.
        from scanner.verify import sources

        self._sources = sources.current()

    @property
    def label(self) -> str:
        """The endpoint as shown in reasons and logs: without any credential its URL carries."""
        return display_url(f"{self.endpoint.base}/{self.endpoint.version}/projects/{self.endpoint.project}")

    def _get(self, params: Mapping[str, str], until: float) -> dict[str, Any]:
        from urllib.parse import urlencode

        from scanner.verify.sources import MISSING

        url = self.endpoint.occurrences_url
        shown = display_url(url)
        try:
            raw = self._sources.fetched("grafeas", f"{url}?{urlencode(sorted(params.items()))}",
                                        lambda: self._fetch(url, params, until))
        except ConfigError as exc:  # a replay without this listing (verify-evidence): never a network call
            raise AttestationSourceError(f"{shown}: the listing is {MISSING}") from exc
        try:
            doc = load_json(raw, "the response")
        except ParseError as exc:
            raise AttestationSourceError(f"{shown}: {exc}") from exc
        if not isinstance(doc, dict):
            raise AttestationSourceError(f"{shown}: response is not a JSON object")
        return doc

    def _fetch(self, url: str, params: Mapping[str, str], until: float) -> bytes:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        shown = display_url(url)
        late = f"{shown}: no complete answer within {self.total_timeout:g}s"
        try:
            answer = self._http_get(url, params=params, headers=headers, max_bytes=MAX_RESPONSE_BYTES, until=until)
        except HttpGetError as exc:
            if exc.late:
                raise AttestationSourceError(late) from exc
            if exc.too_large:
                raise AttestationSourceError(f"{shown}: response larger than {MAX_RESPONSE_BYTES} bytes") from exc
            raise AttestationSourceError(f"cannot reach {shown}: {exc}") from exc
        body = answer.body
        if answer.status != 200:
            raise AttestationSourceError(f"{shown} answered {answer.status}: {body[:200]!r}")
        return bytes(body)

    def attestations(self, resource_urls: Sequence[str], note_name: str | None) -> list[Attestation]:
        wanted = set(resource_urls)
        quoted = " OR ".join(f'resourceUrl="{u}"' for u in resource_urls)
        params = {"filter": f'kind="ATTESTATION" AND ({quoted})', "pageSize": str(self.page_size)}
        out: list[Attestation] = []
        token = ""
        until = time.monotonic() + self.total_timeout
        for _page in range(self.max_pages):
            if time.monotonic() > until:
                raise AttestationSourceError(f"{self.label}: listing not complete within {self.total_timeout:g}s")
            doc = self._get({**params, **({"pageToken": token} if token else {})}, until)
            occs = doc.get("occurrences") or []
            if not isinstance(occs, list):
                raise AttestationSourceError(f"{self.label}: occurrences is not a list")
            for occ in occs:
                if not isinstance(occ, Mapping):
                    continue
                try:
                    att = occurrence_attestation(occ)
                except ParseError as exc:
                    # A malformed occurrence about this image is reported, not skipped silently.
                    if _occurrence_url(occ) in wanted:
                        raise AttestationSourceError(f"{self.label}: {exc}") from exc
                    continue
                if att is None or att.resource_url not in wanted:
                    continue
                if note_name and _note_tail(att.note_name) != _note_tail(note_name):
                    continue
                out.append(att)
            token = str(doc.get("nextPageToken") or "")
            if len(out) > MAX_ATTESTATIONS or (token and len(out) == MAX_ATTESTATIONS):
                raise AttestationListTruncated(
                    f"{self.label}: more than {MAX_ATTESTATIONS} attestations for the image; the first "
                    f"{MAX_ATTESTATIONS} were examined", out[:MAX_ATTESTATIONS])
            if not token:
                return out
        log.warning("%s: stopped after %d pages of occurrences", self.label, self.max_pages)
        raise AttestationListTruncated(
            f"{self.label}: the listing goes on after {self.max_pages} pages of {self.page_size} occurrences "
            "(the server may ignore the resourceUrl filter); the rest was not examined", out)


def _occurrence_url(occ: Mapping[str, Any]) -> str:
    """The resource URL an occurrence is filed under (v1: ``resourceUri``; v1beta1: ``resource.uri``)."""
    resource = occ.get("resource")
    url = occ.get("resourceUri") or (resource.get("uri") if isinstance(resource, Mapping) else None)
    return url if isinstance(url, str) else ""


def _note_tail(name: str) -> str:
    """``v1beta1/projects/p/notes/n`` and ``projects/p/notes/n`` name the same note."""
    i = name.find("projects/")
    return name[i:] if i >= 0 else name


def registry_attestations(referrers: Iterable[ReferrerArtifact]) -> list[Attestation]:
    """The attestation referrers, at most :data:`MAX_ATTESTATIONS`; past the bound, raises
    :class:`AttestationListTruncated` with those read (as the Grafeas listing does: never a silent cut,
    which would make "the valid one is further on" read as "not attested")."""
    out: list[Attestation] = []
    for r in referrers:
        if not r.artifact_type.startswith(REGISTRY_ARTIFACT_TYPE):
            continue
        if len(out) == MAX_ATTESTATIONS:
            raise AttestationListTruncated(
                f"more than {MAX_ATTESTATIONS} attestation referrers; the first {MAX_ATTESTATIONS} were examined",
                out)
        doc = load_json(r.blob, f"attestation referrer {r.manifest_digest[:19]}")
        if not isinstance(doc, Mapping):
            raise ParseError(f"attestation referrer {r.manifest_digest[:19]}: not a JSON object")
        out.append(Attestation.from_generic(doc, origin=f"referrer {r.manifest_digest[:19]}"))
    return out


# ----------------------------------------------------------------------------------------------
# The verifier


@dataclass(frozen=True, slots=True)
class AttestationVerifier(Verifier):
    attestor: str
    keys: tuple[AttestorKey, ...]
    source: AttestationSource | None = None  # None: attestations attached in the registry
    note_name: str | None = None
    rule: str = ""
    _fingerprint: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return f"attestation by {self.attestor}"

    @property
    def not_found_reason(self) -> str:
        return f"image is not attested by {self.attestor}"

    @property
    def wants(self) -> Wants:
        if self.source is None:
            return Wants(referrer_types=frozenset({REGISTRY_ARTIFACT_TYPE}))
        return Wants()

    @property
    def trust_fingerprint(self) -> str:
        return self._fingerprint

    def decision_identity(self, image: RunningImage) -> str | None:
        """Registry attestations only (Grafeas content is not part of the digest-checked material),
        with every key available: the attestor, each key by content and the ids that claim it (an
        attestation hinting only at ids we do not hold is someone else's, not a failure), the note,
        and the repository (the payload must name it). ``binds`` names what a payload must match, so
        results judged when only the digest was bound are never reused."""
        if self.source is not None or any(k.key is None for k in self.keys):
            return None
        return identity_of("attestation", {
            "binds": "digest+repository",
            "name": self.name,
            "attestor": self.attestor,
            "keys": [{"ref": k.ref, "spki_sha256": key_sha256(k.key) if k.key is not None else None,
                      "ids": sorted(k.ids)} for k in self.keys],
            "note_name": self.note_name,
            "repository": image.reference.repo,
        })

    @property
    def source_label(self) -> str:
        return self.source.label if self.source is not None else "registry"

    def verify(self, image: RunningImage, material: SignatureMaterial, now: datetime) -> tuple[SignatureResult, ...]:
        truncated: list[SignatureResult] = []
        try:
            if self.source is None:
                found = registry_attestations(material.referrers)
            else:
                found = self.source.attestations(resource_urls(image), self.note_name)
        except AttestationListTruncated as exc:
            found = list(exc.partial)
            truncated.append(self._error(f"not all of {self.attestor}'s attestations could be examined: {exc}"))
        except (AttestationSourceError, ParseError) as exc:
            return (self._error(f"cannot read {self.attestor}'s attestations from {self.source_label}: {exc}"),)
        unavailable = [
            self._error(f"key {k.ref} of {self.attestor} unavailable: {k.unavailable}")
            for k in self.keys
            if k.key is None
        ]
        if len(unavailable) == len(self.keys):
            return tuple(unavailable)  # nothing can be judged without a key: undecided, not absent
        results = [r for a in found if (r := judge(a, image, self.attestor, self.keys,
                                                   verifier=self.name, source=self.source_label))]
        if any(r.outcome is Outcome.PASSED for r in results):
            return tuple(results)
        # A key we could not fetch, or an attestation past the listing's bound, might have verified:
        # that is undecided, not absent.
        return (*truncated, *unavailable, *results)

    def _error(self, reason: str) -> SignatureResult:
        return SignatureResult(
            kind="attestation",
            verifier=self.name,
            outcome=Outcome.ERROR,
            reason=reason,
            failure=SignatureFailure.ERROR,
            signer=self.attestor,
            identity=self.attestor,
        )

    @classmethod
    def from_spec(
        cls,
        spec: AttestationVerifierSpec,
        *,
        base_dir: Path,
        loader: KeyLoader,
        source: AttestationSource | None = None,
        rule: str = "",
    ) -> AttestationVerifier:
        """Keys through the loader (files, PEM, https, KMS: cached per reference for the scan); a KMS
        key that cannot be fetched becomes an ``unavailable`` key, so images are ``error``, not the scan."""
        from scanner.verify.kms import KmsKeyUnavailable, key_ids_for

        extra_ids = frozenset(spec.public_key_ids)
        keys: list[AttestorKey] = []
        trusted: set[str] = set()  # what the fingerprint names: key contents, unavailable references
        for i, text in enumerate(spec.public_keys):
            where = f"attestation.publicKeys.{i}"
            try:
                key, label = loader.load_key(text, base_dir, where)
            except KmsKeyUnavailable as exc:
                keys.append(AttestorKey(text.strip(), None, frozenset(key_ids_for(text.strip())), exc.message))
                trusted.add("unavailable:" + text.strip())
                continue
            if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                raise ConfigError(f"{describe_key(key)} is not a PKIX attestation key (RSA or ECDSA)", field=where)
            ids = {pkix_key_id(key), *extra_ids}
            if text.strip().startswith(("awskms://", "gcpkms://", "azurekms://", "hashivault://")):
                ids.update(key_ids_for(text.strip()))
            keys.append(AttestorKey(label, key, frozenset(ids)))
            trusted.add(key_sha256(key))
        note = spec.note_name
        endpoint = None if spec.source == "registry" else GrafeasEndpoint.parse(spec.source)
        if source is None and endpoint is not None:
            import os

            source = GrafeasClient(endpoint, token=os.environ.get("SIGAUDIT_GRAFEAS_TOKEN") or None)
        # The fingerprint is canonical (a key set, the source and note as read), so that one verifier
        # spelled twice (keys in another order, `grafeas+http://…/` for `http://…`, `v1beta1/projects/…`
        # for `projects/…`) is recognised as listed twice, and never met twice by one attestation.
        where_from = "registry" if endpoint is None else (
            f"{endpoint.base}/{endpoint.version}/projects/{endpoint.project}")
        h = hashlib.sha256(json.dumps(
            {"kind": "attestation", "attestor": spec.attestor, "source": where_from,
             "note": _note_tail(note) if note else "", "keys": sorted(trusted)}, sort_keys=True).encode())
        return cls(spec.attestor, tuple(keys), source, note, rule, h.hexdigest())
