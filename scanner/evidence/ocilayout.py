"""One image's recorded registry answers as an OCI image layout (issue #23), so that the upstream
tools can re-check the signatures offline: ``cosign verify --local-image <dir>`` and
``notation verify --oci-layout <dir>@sha256:…``.

What the tools read (from their source):

- cosign ``pkg/oci/layout`` (v2): ``index.json`` entries carry an annotation ``kind``; the signed
  image is the entry ``kind=dev.cosignproject.cosign/image`` (``…/imageIndex`` for an index), whose
  digest is recomputed from the manifest bytes in ``blobs/``; its signatures are the entry
  ``kind=dev.cosignproject.cosign/sigs`` (the ``.sig`` tag's manifest) with its layers in ``blobs/``.
  Neither config nor image layers are read.
- oras-go ``content/oci`` (notation ``--oci-layout``): every manifest listed in ``index.json`` is
  indexed, a referrer is found through its ``subject``, and the reference ``@sha256:…`` resolves to
  the listed descriptor, whose media type and size must equal the signed payload's target.

So the layout lists the image manifest (recorded at capture time), the ``.sig``/``.att`` tag
manifests and every recorded referrer manifest (notation signatures, Sigstore bundles), and holds
every recorded manifest and blob under ``blobs/sha256/<hex>``. Only bytes whose sha256 matches their
name are written: the layout is content-addressed like the rest of the pack.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from scanner.evidence.capture import sha256_hex

LAYOUT = "oci"
KIND = "kind"
KIND_IMAGE = "dev.cosignproject.cosign/image"
KIND_IMAGE_INDEX = "dev.cosignproject.cosign/imageIndex"
KIND_SIGS = "dev.cosignproject.cosign/sigs"
KIND_ATTS = "dev.cosignproject.cosign/atts"
REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = frozenset({OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"})
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}\n'


def _dump(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def layout_files(digest: str, materials: Iterable[Mapping[str, Any]], blobs: Mapping[str, bytes],
                 repository: tuple[str, str] | None = None) -> dict[str, bytes]:
    """The layout's files (path relative to the layout directory -> bytes) for image ``digest``, from its
    recorded material documents (``Material.to_json``) and their blobs (by sha256 hex). Empty when
    the image manifest was not recorded (no tool could run on the layout). ``repository`` (registry,
    repository): only that repository's answers — one digest run from two repositories has two sets of
    signatures, and a layout holds one (the one VERIFY.md names)."""
    hexd = digest.removeprefix("sha256:")
    sig_tag, att_tag = f"sha256-{hexd}.sig", f"sha256-{hexd}.att"
    out: dict[str, bytes] = {}
    entries: dict[str, dict[str, Any]] = {}
    image_entry: dict[str, Any] | None = None
    for material in materials:
        for a in material.get("answers", []):
            key, sha = a.get("key"), a.get("sha256")
            data = blobs.get(str(sha)) if sha is not None else None
            if data is None or sha256_hex(data) != sha:
                continue
            if repository is not None and (not isinstance(key, list) or len(key) < 3
                                           or (key[1], key[2]) != repository):
                continue
            out[f"blobs/sha256/{sha}"] = data
            if not isinstance(key, list) or len(key) < 4 or key[0] != "get_manifest":
                continue
            if a.get("digest") != f"sha256:{sha}":
                continue  # a manifest whose recorded digest is not its bytes' is not listed
            reference, media_type = str(key[3]), str(a.get("mediaType", ""))
            desc: dict[str, Any] = {"mediaType": media_type, "digest": f"sha256:{sha}", "size": len(data)}
            if reference == digest:
                desc["annotations"] = {KIND: KIND_IMAGE_INDEX if media_type in INDEX_TYPES else KIND_IMAGE}
                image_entry = desc
                continue
            if reference in (sig_tag, att_tag):
                desc["annotations"] = {KIND: KIND_SIGS if reference == sig_tag else KIND_ATTS, REF_NAME: reference}
            else:
                try:
                    doc = json.loads(data)
                except (ValueError, RecursionError):
                    doc = None
                subject = doc.get("subject") if isinstance(doc, dict) else None
                if not isinstance(subject, dict) or subject.get("digest") != digest:
                    continue  # only this image's referrers
                if isinstance(doc, dict) and isinstance(doc.get("artifactType"), str):
                    desc["artifactType"] = doc["artifactType"]
            entries.setdefault(desc["digest"], desc)
    if image_entry is None:
        return {}
    entries.pop(image_entry["digest"], None)
    manifests = [image_entry, *(entries[d] for d in sorted(entries))]
    out["oci-layout"] = OCI_LAYOUT
    out["index.json"] = _dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
    return out


def check_layout(files: Mapping[str, bytes], prefix: str, digest: str | None = None) -> list[str]:
    """Problems with the layout under ``prefix`` (e.g. ``images/sha256-…/oci/``): a blob whose bytes are
    not its name, an index.json entry with no blob or a wrong size, and (given the image ``digest``) an
    index that would point the upstream tools at another image or another image's ``.sig`` tag: exactly
    one ``kind`` image entry, naming ``digest``, and cosign tag entries named for it."""
    problems = []
    for name in sorted(n for n in files if n.startswith(prefix + "blobs/")):
        rest = name[len(prefix):]
        if not rest.startswith("blobs/sha256/") or sha256_hex(files[name]) != rest.removeprefix("blobs/sha256/"):
            problems.append(f"{name}: its bytes do not hash to its name")
    index = files.get(prefix + "index.json")
    if index is None:
        return [*problems, f"{prefix}index.json: missing"]
    try:
        doc = json.loads(index)
        manifests = doc["manifests"]
        for m in manifests:
            blob = files.get(prefix + "blobs/" + str(m["digest"]).replace(":", "/"))
            if blob is None or len(blob) != int(m["size"]):
                problems.append(f"{prefix}index.json: {m['digest']} has no blob of its size in the layout")
        if digest is not None:
            problems += _check_entries(manifests, prefix, digest)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        problems.append(f"{prefix}index.json: malformed ({type(exc).__name__})")
    return problems


def _check_entries(manifests: list[Any], prefix: str, digest: str) -> list[str]:
    hexd = digest.removeprefix("sha256:")
    tags = {KIND_SIGS: f"sha256-{hexd}.sig", KIND_ATTS: f"sha256-{hexd}.att"}
    problems = []
    kinds = [((m.get("annotations") or {}).get(KIND), m) for m in manifests]
    images = [m for k, m in kinds if k in (KIND_IMAGE, KIND_IMAGE_INDEX)]
    if len(images) != 1 or images[0].get("digest") != digest:
        problems.append(f"{prefix}index.json: its image entry is not exactly one, naming {digest}")
    for kind, tag in tags.items():
        entries = [m for k, m in kinds if k == kind]
        if len(entries) > 1 or any((m.get("annotations") or {}).get(REF_NAME) != tag for m in entries):
            problems.append(f"{prefix}index.json: its {kind} entry is not one, named {tag}")
    return problems
