"""Capture and replay of the registry answers a verdict was reached on (issue #23).

:class:`RecordingReader` wraps the scan's :class:`~scanner.registry.reader.RegistryReader` for ONE image's
verification (the pipeline hands each image its own, so nothing is shared between images or threads)
and keeps every answer: manifests and blobs as bytes with their digest and media type, referrers
lists, tag lists, and the errors (a 404 for an absent ``.sig`` tag is as much a fact the verdict used
as a signature). :class:`ReplayReader` answers the same questions from such a record, with no network:
``sigaudit verify-evidence`` re-runs the same verification code over it. A question the record does
not hold is a :class:`~scanner.errors.RegistryError` ("not in the evidence pack"), never a "not found"
(which would read as "unsigned" and could change a verdict quietly).

:class:`Capture` is the pipeline's :class:`~scanner.pipeline.EvidenceSink` for one scan: it hands out
the per-image readers, keeps what each image was judged on, and knows which signature material the
store already holds for a cache hit (a warm scan fetches no signatures: the material of the first,
cold verification is kept content-addressed in the store and referenced by digest and material
fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scanner.errors import LimitExceeded, NotFound, ParseError, RegistryError, SigauditError
from scanner.models import ContainerRef, ContainerType, Descriptor, ImageReference, RunningImage, Workload
from scanner.registry.auth import CredentialStore
from scanner.registry.client import Manifest, RegistryStats
from scanner.registry.reader import RegistryReader, Secrets
from scanner.verify.sources import Use, noting

NOT_IN_PACK = "not in the evidence pack"
_ERRORS: dict[str, type[SigauditError]] = {
    "NotFound": NotFound, "RegistryError": RegistryError, "ParseError": ParseError, "LimitExceeded": LimitExceeded,
}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _desc_json(d: Descriptor) -> dict[str, Any]:
    return {"mediaType": d.media_type, "digest": d.digest, "size": d.size,
            "annotations": dict(d.annotations), "artifactType": d.artifact_type}


def _desc_from(j: Mapping[str, Any]) -> Descriptor:
    return Descriptor(str(j["mediaType"]), str(j["digest"]), int(j["size"]),
                      dict(j.get("annotations") or {}), j.get("artifactType"))


def _key(op: str, ref: ImageReference, reference: str, extra: str | None = None) -> str:
    return json.dumps([op, ref.registry, ref.repository, reference, extra])


@dataclass
class Material:
    """One image's recorded answers: ``answers`` (JSON-able, by key) and the bytes they name, and
    ``trust``: the trust-sources answers its verification used (CRLs, OCSP answers, Grafeas listings,
    lazily loaded roots; snapshot entries by ``[op, path]``, their bytes in ``blobs`` too). ``trust``
    None: a record made before sigaudit kept them per image (replayed from the scan's snapshot)."""

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    trust: dict[str, dict[str, Any]] | None = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"schema_version": 1,
                               "answers": [{"key": json.loads(k), **v} for k, v in sorted(self.answers.items())]}
        if self.trust is not None:
            doc["trust"] = [v for _, v in sorted(self.trust.items())]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], blobs: Mapping[str, bytes]) -> Material:
        answers = {}
        for a in doc.get("answers", []):
            a = dict(a)
            answers[json.dumps(a.pop("key"))] = a
        trust = None
        if "trust" in doc:
            trust = {json.dumps([str(e["op"]), str(e["path"])]): dict(e) for e in doc["trust"]}
        return cls(answers, dict(blobs), trust)

    def blob_names(self) -> set[str]:
        return {str(a["sha256"]) for a in self.answers.values() if "sha256" in a}

    def trust_entries(self) -> list[dict[str, Any]]:
        return list((self.trust or {}).values())


def trust_blob_names(doc: Mapping[str, Any]) -> set[str]:
    """The sha256 of every trust answer a recorded material document names (see :class:`Material`)."""
    return {str(e["sha256"]) for e in doc.get("trust") or () if isinstance(e, Mapping) and "sha256" in e}


class RecordingReader:
    """A RegistryReader that keeps every answer of the reader it wraps (for one image)."""

    def __init__(self, inner: RegistryReader) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.material = Material()

    @property
    def credentials(self) -> CredentialStore:
        return self._inner.credentials

    @property
    def stats(self) -> RegistryStats:
        return self._inner.stats

    def _keep(self, key: str, answer: dict[str, Any], data: bytes | None = None) -> None:
        with self._lock:
            if data is not None:
                self.material.blobs[answer["sha256"]] = data
            self.material.answers.setdefault(key, answer)

    def note_trust(self, use: Use) -> None:
        """A trust answer this image's verification used (a :func:`scanner.verify.sources.noting` tap)."""
        entry = {k: v for k, v in use.entry.items() if k in ("op", "path", "sha256", "value", "error", "redacted")}
        with self._lock:
            if use.data is not None and "sha256" in entry:
                self.material.blobs[str(entry["sha256"])] = use.data
            trust = self.material.trust if self.material.trust is not None else {}
            trust.setdefault(json.dumps([str(entry["op"]), str(entry["path"])]), entry)
            self.material.trust = trust

    def _failed(self, key: str, exc: SigauditError) -> None:
        status = getattr(exc, "status", None)
        self._keep(key, {"error": {"type": type(exc).__name__ if type(exc).__name__ in _ERRORS else "RegistryError",
                                   "message": str(exc), "status": status}})

    def head_manifest(self, ref: ImageReference, reference: str, secrets: Secrets = ()) -> Descriptor:
        key = _key("head_manifest", ref, reference)
        try:
            d = self._inner.head_manifest(ref, reference, secrets)
        except SigauditError as exc:
            self._failed(key, exc)
            raise
        self._keep(key, {"descriptor": _desc_json(d)})
        return d

    def get_manifest(self, ref: ImageReference, reference: str, secrets: Secrets = (), *,
                     max_bytes: int | None = None) -> Manifest:
        key = _key("get_manifest", ref, reference)
        try:
            m = self._inner.get_manifest(ref, reference, secrets, max_bytes=max_bytes)
        except SigauditError as exc:
            self._failed(key, exc)
            raise
        self._keep(key, {"digest": m.digest, "mediaType": m.media_type, "sha256": sha256_hex(m.raw)}, m.raw)
        return m

    def get_blob(self, ref: ImageReference, desc: Descriptor, secrets: Secrets = (), *,
                 max_bytes: int | None = None) -> bytes:
        key = _key("get_blob", ref, desc.digest)
        try:
            data = self._inner.get_blob(ref, desc, secrets, max_bytes=max_bytes)
        except SigauditError as exc:
            self._failed(key, exc)
            raise
        self._keep(key, {"mediaType": desc.media_type, "sha256": sha256_hex(data)}, data)
        return data

    def referrers(self, ref: ImageReference, digest: str, artifact_type: str | None = None,
                  secrets: Secrets = ()) -> tuple[list[Descriptor], str]:
        key = _key("referrers", ref, digest, artifact_type)
        try:
            descs, source = self._inner.referrers(ref, digest, artifact_type, secrets)
        except SigauditError as exc:
            self._failed(key, exc)
            raise
        self._keep(key, {"descriptors": [_desc_json(d) for d in descs], "source": source})
        return descs, source

    def uses_referrers_tag_schema(self, ref: ImageReference, digest: str, secrets: Secrets = ()) -> bool:
        key = _key("uses_referrers_tag_schema", ref, digest)
        try:
            value = self._inner.uses_referrers_tag_schema(ref, digest, secrets)
        except SigauditError as exc:
            self._failed(key, exc)
            raise
        self._keep(key, {"value": bool(value)})
        return value

    def answer_absent_tags_from_lists(self, repositories: Iterable[tuple[str, str]]) -> None:
        self._inner.answer_absent_tags_from_lists(repositories)

    def credential_source(self, registry: str, repository: str, secrets: Secrets,
                          named_for: Secrets | None = None) -> str | None:
        return self._inner.credential_source(registry, repository, secrets, named_for)


class ReplayReader:
    """A RegistryReader over recorded answers only: no network, every answer digest-checked again."""

    def __init__(self, material: Material) -> None:
        self._m = material
        self._stats = RegistryStats()
        self._credentials = CredentialStore()

    @property
    def credentials(self) -> CredentialStore:
        return self._credentials

    @property
    def stats(self) -> RegistryStats:
        return self._stats

    def _answer(self, key: str) -> dict[str, Any]:
        a = self._m.answers.get(key)
        if a is None:
            op, registry, repository, reference, _ = json.loads(key)
            raise RegistryError(f"{NOT_IN_PACK}: {op} {registry}/{repository} {reference}", registry=registry)
        err = a.get("error")
        if isinstance(err, Mapping):
            cls = _ERRORS.get(str(err.get("type")), RegistryError)
            message = str(err.get("message", ""))
            if issubclass(cls, RegistryError):
                status = err.get("status")
                raise cls(message, status=status if isinstance(status, int) else None)
            raise cls(message)
        return a

    def _bytes(self, a: Mapping[str, Any], max_bytes: int | None) -> bytes:
        data = self._m.blobs.get(str(a.get("sha256")))
        if data is None or sha256_hex(data) != a.get("sha256"):
            raise RegistryError(f"{NOT_IN_PACK}: blob sha256:{a.get('sha256')}")
        if max_bytes is not None and len(data) > max_bytes:
            raise LimitExceeded(f"{len(data)} bytes exceeds the limit of {max_bytes}")
        return data

    def head_manifest(self, ref: ImageReference, reference: str, secrets: Secrets = ()) -> Descriptor:
        return _desc_from(self._answer(_key("head_manifest", ref, reference))["descriptor"])

    def get_manifest(self, ref: ImageReference, reference: str, secrets: Secrets = (), *,
                     max_bytes: int | None = None) -> Manifest:
        a = self._answer(_key("get_manifest", ref, reference))
        raw = self._bytes(a, max_bytes)
        digest = str(a["digest"])
        if digest.startswith("sha256:") and digest != "sha256:" + sha256_hex(raw):
            raise ParseError(f"manifest digest mismatch for {reference}")
        if reference.startswith("sha256:") and reference != digest:
            raise ParseError(f"manifest digest mismatch for {reference}")
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ParseError(f"manifest is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ParseError("manifest is not a JSON object")
        return Manifest(digest, str(a["mediaType"]), raw, doc)

    def get_blob(self, ref: ImageReference, desc: Descriptor, secrets: Secrets = (), *,
                 max_bytes: int | None = None) -> bytes:
        data = self._bytes(self._answer(_key("get_blob", ref, desc.digest)), max_bytes)
        if desc.digest.startswith("sha256:") and desc.digest != "sha256:" + sha256_hex(data):
            raise ParseError(f"blob digest mismatch for {desc.digest}")
        return data

    def referrers(self, ref: ImageReference, digest: str, artifact_type: str | None = None,
                  secrets: Secrets = ()) -> tuple[list[Descriptor], str]:
        a = self._answer(_key("referrers", ref, digest, artifact_type))
        return [_desc_from(d) for d in a["descriptors"]], str(a["source"])

    def uses_referrers_tag_schema(self, ref: ImageReference, digest: str, secrets: Secrets = ()) -> bool:
        return bool(self._answer(_key("uses_referrers_tag_schema", ref, digest))["value"])

    def answer_absent_tags_from_lists(self, repositories: Iterable[tuple[str, str]]) -> None:
        """Nothing to do: a lookup the scan answered from a tag list was recorded as its own NotFound."""

    def credential_source(self, registry: str, repository: str, secrets: Secrets,
                          named_for: Secrets | None = None) -> str | None:
        return None


# -- RunningImage <-> JSON (the image as it was judged: reference, containers, notes, pull secrets) --

def image_to_json(img: RunningImage) -> dict[str, Any]:
    r = img.reference
    return {
        "reference": {"registry": r.registry, "repository": r.repository, "tag": r.tag, "digest": r.digest},
        "containers": [
            {"namespace": c.namespace, "pod": c.pod, "container": c.container, "type": c.container_type.value,
             "image": c.image, "imageID": c.image_id, "pullSecrets": list(c.pull_secrets), "podUID": c.pod_uid,
             "workload": {"kind": c.workload.kind, "name": c.workload.name}}
            for c in img.containers
        ],
        "notes": list(img.notes),
        "pullSecrets": [list(s) for s in img.pull_secrets],
    }


def image_from_json(doc: Mapping[str, Any]) -> RunningImage:
    r = doc["reference"]
    return RunningImage(
        ImageReference(str(r["registry"]), str(r["repository"]), r.get("tag"), r.get("digest")),
        tuple(
            ContainerRef(str(c["namespace"]), str(c["pod"]), str(c["container"]), ContainerType(c["type"]),
                         str(c["image"]), c.get("imageID"), Workload(str(c["workload"]["kind"]),
                                                                      str(c["workload"]["name"])),
                         tuple(str(s) for s in c.get("pullSecrets", ())), str(c.get("podUID", "")))
            for c in doc["containers"]
        ),
        tuple(str(n) for n in doc.get("notes", ())),
        tuple((str(a), str(b)) for a, b in doc.get("pullSecrets", ())),
    )


@dataclass
class Judged:
    """One image as the scan judged it, and the material it was judged on."""

    image: RunningImage
    fingerprint: str | None
    material: Material | None  # None: a cache hit whose (cold) material the store holds
    material_ref: str | None = None  # "material/<digest>/<fingerprint>" in the store


def material_ref(digest: str, fingerprint: str) -> str:
    from scanner.store.evidence import material_name  # one spelling, which `db prune` matches to cache rows

    return material_name(digest, fingerprint)


MAX_IMAGE_MANIFEST_BYTES = 4 * 1024 * 1024  # the distribution spec's recommended manifest limit


def record_image_manifest(reader: RecordingReader, image: RunningImage) -> None:
    """Record the running digest's manifest bytes (verification reads its descriptor only): the pack's
    OCI layout needs them for the upstream tools (cosign recomputes the signed digest from them, notation
    resolves the signed descriptor to them). Asked after the verdict's own questions, so it never changes
    what the verdict used; a failure leaves the layout without that image (recorded as an error answer)."""
    try:
        reader.get_manifest(image.reference, str(image.digest), image.pull_secrets,
                            max_bytes=MAX_IMAGE_MANIFEST_BYTES)
    except SigauditError:
        pass


class Capture:
    """The pipeline's EvidenceSink for one scan. ``known``: which material refs the store holds."""

    def __init__(self, known: Any = None, *, image_manifests: bool = False) -> None:
        self._known_lookup = known  # Callable[[Iterable[str]], Mapping[str, str] | set[str]] | None
        self._image_manifests = image_manifests  # record each cold image's manifest (the pack's OCI layout)
        # material ref -> the sha256 its name points at (None: known to exist, sha not asked). A name, once
        # written, never points elsewhere: the index reuses what this look-up found (issue 19).
        self._known: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self.judged: list[Judged] = []
        self.verified_at: datetime | None = None

    def started(self, now: datetime) -> None:
        self.verified_at = now

    def prepare(self, refs: Iterable[tuple[str, str]]) -> None:
        names = {material_ref(d, fp) for d, fp in refs}
        if self._known_lookup is not None and names:
            found = self._known_lookup(names)
            self._known.update(found if isinstance(found, Mapping) else dict.fromkeys(found))

    def reader(self, image: RunningImage, client: RegistryReader) -> RegistryReader:
        return RecordingReader(client)

    def seen_material(self) -> Mapping[str, str | None]:
        """The material refs :meth:`prepare` found, with the sha256 each points at where it was asked."""
        return self._known

    def has_material(self, digest: str, fingerprint: str) -> bool:
        return material_ref(digest, fingerprint) in self._known

    def trust_reads(self, reader: RegistryReader) -> AbstractContextManager[None]:
        return noting(reader.note_trust) if isinstance(reader, RecordingReader) else nullcontext()

    def judge(self, image: RunningImage, reader: RegistryReader, fingerprint: str | None, cached: bool) -> None:
        material = reader.material if isinstance(reader, RecordingReader) and not cached else None
        if self._image_manifests and material is not None and isinstance(reader, RecordingReader) and image.digest:
            record_image_manifest(reader, image)
        ref = material_ref(str(image.digest), fingerprint) if fingerprint is not None else None
        with self._lock:
            self.judged.append(Judged(image, fingerprint, material, ref))


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def scan_ref(scan_id: int) -> str:
    return f"scan/{scan_id}"


def _image_entries(store: Any, judged: Iterable[Judged], blobs: dict[str, bytes],
                   refs: dict[str, str], seen: Mapping[str, str | None] | None = None) -> list[dict[str, Any]]:
    """The index entries of ``judged`` images: a cold image's material is added to ``blobs`` (and named in
    ``refs`` by its material ref); a warm one points at the material its cache entry already names (as
    ``seen`` found it when the scan began, else looked up now)."""
    judged = list(judged)
    warm = {j.material_ref for j in judged if j.material is None and j.material_ref}
    known = {n: sha for n in warm if (sha := (seen or {}).get(n)) is not None}
    if warm - set(known):
        known.update(store.evidence_refs(warm - set(known)))
    images = []
    for j in judged:
        sha = None
        if j.material is not None:
            doc = canonical_json(j.material.to_json())
            sha = sha256_hex(doc)
            blobs[sha] = doc
            blobs.update(j.material.blobs)
            if j.material_ref is not None:
                refs[j.material_ref] = sha
        elif j.material_ref is not None:
            sha = known.get(j.material_ref)
        images.append({"image": image_to_json(j.image), "fingerprint": j.fingerprint, "material": sha})
    return images


# An index is written by every scan (it names the scan) and read only when a pack is built: a middle level
# (zlib's default) is ~40% cheaper than gzip's 9 for ~1% more bytes on these documents (issue 19).
INDEX_GZIP_LEVEL = 6


def _canonical_encoder() -> Any:
    """``json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` less its per-call
    set-up (a JSONEncoder and a C encoder built for each of the index's 6,000 values, a third of writing it:
    issue 19): json's C encoder with those arguments, made once. Without the circular-reference check,
    which only changes the error a self-containing value raises (ValueError becomes RecursionError); the
    index's values are built here from models, never self-containing."""
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    escape = json.encoder.c_encode_basestring  # type: ignore[attr-defined]
    if make is None or escape is None:  # an interpreter without json's C speedups
        return lambda doc: json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def fail(o: Any) -> Any:
        raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")

    encode = make(None, fail, escape, None, ":", ",", True, False, True)
    return lambda doc: "".join(encode(doc, 0))


_canonical_text = _canonical_encoder()


def _sorted_entries(images: Iterable[Mapping[str, Any]]) -> list[str]:
    """The canonical text of each index entry, ordered by its ``image`` (its canonical JSON; the whole entry
    breaks ties), each entry serialised ONCE: sorting by a second serialisation of every image cost as much
    as writing the document (issue 19)."""
    entries = []
    for i in images:
        if set(i) != {"fingerprint", "image", "material"}:
            raise ValueError(f"an index entry has the keys {sorted(i)}")
        image = _canonical_text(i["image"])
        # sort_keys order: fingerprint < image < material
        entries.append((image, f'{{"fingerprint":{_canonical_text(i["fingerprint"])},"image":{image},'
                               f'"material":{_canonical_text(i["material"])}}}'))
    entries.sort()
    return [e for _, e in entries]


def _list_pieces(entries: list[str]) -> Iterator[bytes]:
    """``[`` + the entries joined by ``,`` + ``]``, piece by piece (never held whole)."""
    yield b"["
    for n, entry in enumerate(entries):
        yield (entry if n == 0 else "," + entry).encode()
    yield b"]"


def _gzip(pieces: Iterable[bytes]) -> bytes:
    """A deterministic gzip stream (wbits 31: no name, time 0) of the pieces, streamed into the compressor."""
    z = zlib.compressobj(INDEX_GZIP_LEVEL, zlib.DEFLATED, 31)
    parts = [z.compress(p) for p in pieces]
    parts.append(z.flush())
    return b"".join(parts)


def index_bytes(head: Mapping[str, Any], images: Iterable[Mapping[str, Any]]) -> bytes:
    """The gzipped :func:`canonical_json` of ``{**head, "images": images}`` (an index of schema 1, which
    ``serve --watch`` batches still write), the images in :func:`_sorted_entries`' order. Byte-for-byte what
    ``canonical_json`` of the sorted document gives (tests/unit/evidence/test_capture.py compares them)."""
    if "images" in head:
        raise ValueError("the index head must not carry the images")
    entries = _sorted_entries(images)
    empty = _canonical_text({**head, "images": []})
    # "images" sorts before every other key of an index head (policy, scan_id, schema_version, source,
    # trust, verified_at), so the document opens with it: the entries go between its brackets.
    opening = '{"images":['
    if not empty.startswith(opening + "]"):
        raise ValueError("an index head has a key that sorts before 'images'")
    # Streamed into the compressor entry by entry: the document is never held whole, as text or as bytes
    # (~9 MB at the moment of a cold scan's peak RSS).
    return _gzip([opening[:-1].encode(), *_list_pieces(entries), empty[len(opening) + 1:].encode()])


@dataclass(frozen=True, slots=True)
class IndexImages:
    """A scan's image entries as their own blob (index schema 2): ``sha256`` names the gzipped blob,
    ``text_sha256`` its text; ``data`` the blob when it is not stored yet (None: an earlier scan stored it)."""

    sha256: str
    text_sha256: str
    data: bytes | None


def _gunzip_sha256(data: bytes, size: int) -> str | None:
    """The sha256 of what the gzip stream ``data`` holds, which must be ``size`` bytes (None: not one whole
    gzip stream, or not of that size), decompressed a megabyte at a time: the entries of a 10,000-container
    scan are ~4.5 MB of text, never held whole here. Never more than ``size`` + 1 bytes are inflated: a
    planted blob that inflates to more (a gzip bomb under an ``images/`` name) costs no more than the text."""
    z = zlib.decompressobj(31)
    h = hashlib.sha256()
    rest, out = data, 0
    try:
        while not z.eof:
            piece = z.decompress(rest, min(1 << 20, size - out + 1))
            out += len(piece)
            if out > size:
                return None
            h.update(piece)
            if not piece and not rest:  # truncated: no input left, nothing more to give
                break
            rest = z.unconsumed_tail
    except zlib.error:
        return None
    return h.hexdigest() if z.eof and not z.unused_data and out == size else None


def index_images(store: Any, images: Iterable[Mapping[str, Any]]) -> IndexImages:
    """The image entries of an index as a blob: the one an earlier scan stored when its entries were the same
    text (found by ``images/<sha256 of the text>`` and checked against it, so a name pointing elsewhere is
    never trusted: the entries are then compressed afresh), else a new one. A scan that judged the same
    images on the same material as the previous one stores no entries and compresses none (issue 19)."""
    from scanner.store.evidence import images_name

    entries = _sorted_entries(images)
    h = hashlib.sha256()
    size = 0
    for piece in _list_pieces(entries):
        h.update(piece)
        size += len(piece)
    text_sha = h.hexdigest()
    name = images_name(text_sha)
    sha = store.evidence_refs([name]).get(name)
    if sha is not None:
        data = store.evidence_blobs([sha]).get(sha)  # checked against its name (sha) by the store
        if data is not None and _gunzip_sha256(data, size) == text_sha:
            return IndexImages(sha, text_sha, None)
    data = _gzip(_list_pieces(entries))
    return IndexImages(sha256_hex(data), text_sha, data)


def keep(store: Any, scan_id: int, capture: Capture, *, policy_path: str | None, policy_from: Iterable[str],
         policy_digest: str, trust: Any) -> None:
    """Write what ``capture`` saw into the store: each cold image's material (content-addressed, named
    by digest and material fingerprint) and the scan's evidence index (``scan/<id>``), which names
    the trust snapshot, the verification time, the policy and the blob of its image entries (per image,
    the material it was judged on: :func:`index_images`)."""
    from scanner.store.evidence import EvidenceMissing, images_name

    blobs: dict[str, bytes] = dict(trust.blobs)
    refs: dict[str, str] = {}
    images = _image_entries(store, capture.judged, blobs, refs, capture.seen_material())
    head = {
        "schema_version": 2,
        "scan_id": scan_id,
        "verified_at": capture.verified_at.isoformat() if capture.verified_at else None,
        "policy": {"path": policy_path, "from": list(policy_from), "digest": policy_digest},
        "trust": trust.entries,
    }

    def put(entries: IndexImages) -> None:
        """The index naming ``entries`` (the blob this very write stores or needs: never another's name),
        written with them in one transaction."""
        doc = _gzip([canonical_json({**head, "images_blob": {"sha256": entries.sha256,
                                                             "text_sha256": entries.text_sha256}})])
        out = {**blobs, sha256_hex(doc): doc}
        if entries.data is not None:
            out[entries.sha256] = entries.data
        store.evidence_put(out, {**refs, scan_ref(scan_id): sha256_hex(doc),
                                 images_name(entries.text_sha256): entries.sha256},
                           needs=[] if entries.data is not None else [entries.sha256], at_head=True,
                           own=[scan_ref(scan_id)])  # its id is new: a name found under it was planted

    entries = index_images(store, images)
    try:
        put(entries)
    except EvidenceMissing:  # `db prune` deleted the earlier scan's entries since: store them afresh. Their
        # bytes may differ from the earlier ones (another zlib): the index names what is written now.
        data = _gzip(_list_pieces(_sorted_entries(images)))
        put(IndexImages(sha256_hex(data), entries.text_sha256, data))


def watch_ref(scan_id: int, batch: int) -> str:
    """The evidence index of one ``serve --watch`` batch added to scan ``scan_id`` (``batch``: the scan's
    count of watch verdicts after it, unique per batch)."""
    return f"{scan_ref(scan_id)}/watch/{batch}"


def keep_watch(store: Any, scan_id: int, batch: int, capture: Capture, digests: Iterable[str], *,
               policy_digest: str) -> None:
    """Write what ``capture`` saw for the verdicts ``serve --watch`` added to scan ``scan_id`` (those of
    ``digests``): each image's material like a scan's, and an index of the batch (``watch_ref``) naming
    its own time of verification, which the pack replays those images at."""
    wanted = set(digests)
    blobs: dict[str, bytes] = {}
    refs: dict[str, str] = {}
    images = _image_entries(store, [j for j in capture.judged if j.image.digest in wanted], blobs, refs,
                            capture.seen_material())
    head = {
        "schema_version": 1,
        "scan_id": scan_id,
        "source": "watch",
        "verified_at": capture.verified_at.isoformat() if capture.verified_at else None,
        "policy": {"digest": policy_digest},
    }
    doc = index_bytes(head, images)
    blobs[sha256_hex(doc)] = doc
    refs[watch_ref(scan_id, batch)] = sha256_hex(doc)
    store.evidence_put(blobs, refs)
