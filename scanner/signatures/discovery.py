"""Find what is attached to a running digest: cosign ``.sig`` tags and OCI referrers.

Fetches bytes only (digest-checked by the registry client); judging them is the verifiers' job.
Every failure is recorded in ``SignatureMaterial.errors`` — an image whose material could not be
read completely is never mistaken for an unsigned one, and never for a verified one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from scanner.errors import LimitExceeded, NotFound, ParseError, RegistryError
from scanner.models import CosignLayer, Descriptor, ReferrerArtifact, RunningImage, SignatureMaterial
from scanner.registry.client import parse_descriptor
from scanner.registry.reader import RegistryReader
from scanner.verify.base import Wants

log = logging.getLogger(__name__)

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


def _candidate(d: Descriptor, types: list[str]) -> bool:
    """A listed referrer worth fetching: its listed type is wanted, or missing/the empty config type."""
    return d.artifact_type in (None, "", EMPTY_CONFIG) or any(d.artifact_type.startswith(t) for t in types)


def cosign_sig_tag(digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    return f"{algo}-{hexd}.sig"


def _artifact_type(doc: Mapping[str, object]) -> str:
    at = doc.get("artifactType")
    if isinstance(at, str) and at:
        return at
    config = doc.get("config")
    if isinstance(config, Mapping) and isinstance(config.get("mediaType"), str):
        return str(config["mediaType"])
    return ""


def discover(
    client: RegistryReader,
    image: RunningImage,
    wants: Wants,
    *,
    max_signatures: int = 50,
    need_descriptor: bool = True,
) -> SignatureMaterial:
    ref = image.reference
    secrets = image.pull_secrets
    errors: list[str] = []
    truncated = False
    descriptor = Descriptor("", image.digest, 0)
    if need_descriptor:
        try:
            descriptor = client.head_manifest(ref, image.digest, secrets)
        except NotFound:
            errors.append(f"the running digest {image.digest} is no longer in {ref.repo} (deleted or moved)")
        except (RegistryError, ParseError) as exc:
            errors.append(f"cannot read the image manifest: {exc}")

    layers: list[CosignLayer] = []
    sig_digest: str | None = None
    if wants.cosign_sig:
        try:
            sig = client.get_manifest(ref, cosign_sig_tag(image.digest), secrets)
            sig_digest = sig.digest
            raw_layers = sig.doc.get("layers") or []
            if not isinstance(raw_layers, list):
                raise ParseError("cosign signature manifest: `layers` is not a list")
            if len(raw_layers) > max_signatures:
                truncated = True
                errors.append(
                    f"cosign signature manifest has {len(raw_layers)} layers; only the first "
                    f"{max_signatures} were examined (maxSignatures)"
                )
            for i, entry in enumerate(raw_layers[:max_signatures]):
                desc = parse_descriptor(entry, f"cosign signature layer {i}")
                if desc.media_type != SIMPLESIGNING:
                    continue
                try:
                    payload = client.get_blob(ref, desc, secrets)
                except NotFound as exc:
                    # Only a missing .sig tag means "no cosign signatures"; a listed layer that is gone
                    # is a signature we could not read.
                    raise RegistryError(f"signature layer {desc.digest[:19]} listed but not found: {exc}") from exc
                layers.append(
                    CosignLayer(
                        payload=payload,
                        media_type=desc.media_type,
                        annotations=dict(desc.annotations),
                        digest=desc.digest,
                    )
                )
        except NotFound:
            pass  # no .sig tag: no legacy cosign signatures
        except (RegistryError, ParseError) as exc:
            errors.append(f"cannot read cosign signatures ({cosign_sig_tag(image.digest)}): {exc}")

    referrers: list[ReferrerArtifact] = []
    if wants.referrer_types:
        types = sorted(wants.referrer_types)
        try:
            # One listing, filtered here: the tag-schema fallback cannot filter server-side, and a
            # single request serves every wanted type.
            # Unfiltered, as cosign's GetBundles does: a registry may apply the filter to the wrong type;
            # the listed artifactType is only a hint, each candidate manifest decides.
            descs, _source = client.referrers(ref, image.digest, None, secrets)
            wanted = [d for d in descs if _candidate(d, types)]
            if len(wanted) > max_signatures:
                truncated = True
                errors.append(f"{len(wanted)} referrers found; only the first {max_signatures} were examined")
            for d in wanted[:max_signatures]:
                art = _fetch_referrer(client, image, d, types, errors)
                if art is not None:
                    referrers.append(art)
        except (RegistryError, ParseError) as exc:
            errors.append(f"cannot list referrers: {exc}")
    return SignatureMaterial(
        referrers_listed=bool(wants.referrer_types),
        image=descriptor,
        cosign_layers=tuple(layers),
        cosign_sig_digest=sig_digest,
        referrers=tuple(referrers),
        errors=tuple(errors),
        truncated=truncated,
    )


def _fetch_referrer(
    client: RegistryReader, image: RunningImage, d: Descriptor, types: list[str], errors: list[str]
) -> ReferrerArtifact | None:
    ref, secrets = image.reference, image.pull_secrets
    try:
        m = client.get_manifest(ref, d.digest, secrets)
        doc = m.doc
        atype = _artifact_type(doc)
        if not any(atype.startswith(t) for t in types):
            layers0 = doc.get("layers") or []
            first = layers0[0] if isinstance(layers0, list) and layers0 else {}
            lt = first.get("mediaType", "") if isinstance(first, Mapping) else ""
            if not any(str(lt).startswith(t) for t in types):
                return None
            atype = str(lt)
        subject = parse_descriptor(doc["subject"], "referrer subject") if doc.get("subject") is not None else None
        if subject is None or subject.digest != image.digest:
            errors.append(f"referrer {d.digest[:19]} names another subject; ignored")
            return None
        layers = doc.get("layers") or doc.get("blobs") or []
        if not isinstance(layers, list) or not layers:
            raise ParseError(f"referrer {d.digest[:19]} has no layers")
        blob_desc = parse_descriptor(layers[0], f"referrer {d.digest[:19]} layer")
        blob = client.get_blob(ref, blob_desc, secrets)
        annotations = doc.get("annotations") or {}
        return ReferrerArtifact(
            manifest_digest=m.digest,
            artifact_type=atype,
            blob_media_type=blob_desc.media_type,
            blob=blob,
            annotations={str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, Mapping) else {},
            subject=subject,
        )
    except NotFound:
        errors.append(f"referrer {d.digest[:19]} listed but not found")
    except LimitExceeded as exc:
        errors.append(f"referrer {d.digest[:19]} too large: {exc}")
    except (RegistryError, ParseError, KeyError) as exc:
        errors.append(f"cannot read referrer {d.digest[:19]}: {exc}")
    return None


def material_fingerprint(material: SignatureMaterial) -> str:
    """What was found attached to a digest, as a short string that changes when signatures do.
    Says which lookups were made, so a re-list repeats exactly those."""
    out = f"sig={material.cosign_sig_digest or '-'}"
    if material.referrers_listed:
        out += ";refs=" + ",".join(sorted(r.manifest_digest for r in material.referrers))
    return out


def relist_fingerprint(
    client: RegistryReader,
    image: RunningImage,
    previous: str,
    types: frozenset[str],
    *,
    max_signatures: int = 50,
    check_sig: bool = True,
) -> str:
    """The fingerprint again from a cheap re-list (a HEAD on the ``.sig`` tag; one referrers listing
    only if the previous scan listed them), without fetching signature blobs. Raises on registry
    errors (the caller then re-fetches everything).

    Every lookup goes through the reader: where the scan lets a repository's tag list answer "this tag
    is absent" (``answer_absent_tags_from_lists``: many digests, one credential source, no
    ``required: false`` rule), the client answers the ``.sig`` HEAD — and, on a registry without the
    referrers API, the ``sha256-<hex>`` tag its referrers lookup reads — from that list under its own
    rules; never here. A tag that exists is still looked at per digest: a replaced signature keeps its
    tag."""
    ref, secrets = image.reference, image.pull_secrets
    if not check_sig:
        out = "sig=-"  # no verifier reads the .sig layout
    else:
        try:
            out = f"sig={client.head_manifest(ref, cosign_sig_tag(image.digest), secrets).digest}"
        except NotFound:
            out = "sig=-"
    if ";refs=" in previous:
        order = sorted(types)
        descs, _ = client.referrers(ref, image.digest, None, secrets)
        wanted = [d for d in descs if _candidate(d, order)]
        out += ";refs=" + ",".join(sorted(d.digest for d in wanted[:max_signatures]))
    return out


def merge_material(first: SignatureMaterial, second: SignatureMaterial) -> SignatureMaterial:
    """``.sig`` material from one lookup plus referrers from a later one."""
    image = first.image if first.image.media_type else second.image
    return SignatureMaterial(
        image=image,
        cosign_layers=first.cosign_layers + second.cosign_layers,
        cosign_sig_digest=first.cosign_sig_digest or second.cosign_sig_digest,
        referrers=first.referrers + second.referrers,
        errors=first.errors + second.errors,
        truncated=first.truncated or second.truncated,
        referrers_listed=first.referrers_listed or second.referrers_listed,
    )
