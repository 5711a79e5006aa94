"""Build a scan's evidence pack (issue #23) from the store: everything a third party needs to
re-verify every verdict offline, signed.

Layout (one directory ``evidence/`` in a deterministic ``.tar.gz``: sorted members, fixed mtimes,
uid/gid 0, gzip without a name or time — two builds of one scan with a deterministic signature
scheme (Ed25519, RSA PKCS#1 v1.5) are byte-identical)::

    MANIFEST.json              sha256 of every other file (and the scan it describes)
    MANIFEST.json.dsse.json    DSSE envelope over MANIFEST.json (the operator's key, file or KMS)
    MANIFEST.json.tsr          with --tsa-url: an RFC 3161 TimeStampToken over that envelope's signature bytes
    tsa/crls/<sha256>.crl      with --tsa-url: the CRLs of the TSA's chain, fetched at build (manifest: tsa_revocation)
    verdict-signing.pub        the public key (a convenience: verify-evidence pins its own --key)
    VERIFY.md                  the offline commands
    policy/replay.json         how the policy was loaded (paths as given), its digest, the time of verification
    policy/applied.json        the rules as applied (``policy_summary``)
    trust/sources.json         every trust-material question the policy load asked, and its answer
    trust/files/<sha256>       the bytes of those answers (policy files, keys, trust roots, trust stores, CRLs),
                               and of the trust answers each image's verification used (answers-<n>.json "trust")
    inventory/workloads.json   pod/container -> running digest, owner
    images/<sha256-hex>/record.json        the image(s) as judged, the recorded verdicts, the material files
    images/<sha256-hex>/answers-<n>.json   the registry answers a judgement used, and the trust answers its
                                           verification read (CRL, OCSP, Grafeas listing, lazy root; by sha256)
    images/<sha256-hex>/blobs/<sha256>     manifests, signature layers, envelopes, bundles, raw
    images/<sha256-hex>/vsa.intoto.json    the image's SLSA VSA, DSSE-signed
    reports/scan.json  reports/verdicts.csv  reports/report.html  reports/assessment-results.json (OSCAL)
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scanner import __version__
from scanner.errors import ConfigError, StoreError
from scanner.evidence import dsse, ocilayout, oscal, vsa
from scanner.evidence.capture import canonical_json, image_from_json, scan_ref, sha256_hex, trust_blob_names
from scanner.models import RunningImage, ScanResult, Status, Verdict

ROOT = "evidence"
MANIFEST = "MANIFEST.json"
MANIFEST_SIG = "MANIFEST.json.dsse.json"
MANIFEST_TSR = "MANIFEST.json.tsr"  # made after the manifest, so not listed in it: it covers the signature itself
MANIFEST_PAYLOAD_TYPE = "application/vnd.sigaudit.evidence-manifest+json"
TSA_CRLS = "tsa/crls"  # the CRLs of the TSA's chain (with --tsa-url), named in the manifest's tsa_revocation
PASSING = (Status.VERIFIED, Status.EXEMPT)  # what a VSA says PASSED for; anything else FAILED


def _dump(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def digest_dir(digest: str) -> str:
    return "images/" + digest.replace(":", "-")


def verdict_record(v: Verdict) -> dict[str, Any]:
    """What verify-evidence compares: the rule, the status and the deciding reason."""
    deciding = v.reasons[v.deciding_reason] if 0 <= v.deciding_reason < len(v.reasons) else ""
    return {"rule": v.rule, "status": v.status.value, "compliant": v.compliant, "deciding_reason": deciding,
            "reasons": list(v.reasons)}


def vsa_passed(statuses: Iterable[str]) -> bool:
    got = list(statuses)
    return bool(got) and all(s in {p.value for p in PASSING} for s in got)


def vsa_status(statuses: list[str]) -> str:
    """One status for the image's VSA: the worst of its verdicts (a VSA never claims more than each)."""
    for s in ("error", "invalid", "revoked", "expired", "unsigned", "no-policy"):
        if s in statuses:
            return s
    if statuses and all(s == "verified" for s in statuses):
        return "verified"
    if statuses and all(s in ("verified", "exempt") for s in statuses):
        return "exempt"
    return "error"


def load_index(store: Any, scan_id: int) -> dict[str, Any]:
    sha = store.evidence_refs([scan_ref(scan_id)]).get(scan_ref(scan_id))
    if sha is None:
        raise ConfigError(f"scan {scan_id} has no evidence material (scanned without a store, before this "
                          "sigaudit kept evidence, or its material was pruned)")
    blob = store.evidence_blobs([sha]).get(sha)
    if blob is None:
        raise StoreError(f"the evidence index of scan {scan_id} is missing from the store")
    from scanner.store.evidence import gunzip

    try:
        doc = json.loads(gunzip(blob))
    except (ValueError, RecursionError) as exc:
        raise StoreError(f"the evidence index of scan {scan_id} is malformed: {exc}") from None
    if not isinstance(doc, dict):
        raise StoreError(f"the evidence index of scan {scan_id} is malformed")
    _own(doc, scan_id, None, f"the evidence index of scan {scan_id}")
    return _with_images(store, doc, f"the evidence index of scan {scan_id}")


def _own(doc: dict[str, Any], scan_id: int, source: str | None, what: str) -> None:
    """StoreError unless ``doc`` is an index of scan ``scan_id`` of that ``source`` (None: the scan's own index;
    "watch": a serve --watch batch). Its names (``scan/<id>``, ``scan/<id>/watch/<n>``) are predictable and
    written only if absent: one planted at another scan's index, or at an index of the other kind, is kept by
    the write, and every reader of an index goes through here, never that scan's pack."""
    if type(doc.get("scan_id")) is not int or doc["scan_id"] != scan_id:
        raise StoreError(f"{what} is malformed: it is that of scan {str(doc.get('scan_id'))[:20]!r}")
    if doc.get("source") != source:
        raise StoreError(f"{what} is malformed: it is " + ("a serve --watch batch's" if doc.get("source") == "watch"
                                                           else "a scan's own" if "source" not in doc
                                                           else f"of source {str(doc['source'])[:20]!r}"))


def _with_images(store: Any, doc: dict[str, Any], what: str) -> dict[str, Any]:
    """``doc`` with its image entries in ``images``, whether it holds them (schema 1) or names their blob
    (schema 2, checked against the text it names): a StoreError when they cannot be read."""
    from scanner.store.evidence import index_images

    try:
        # which entries the scan judged is said once, in its schema's spelling (a schema-2 index naming no
        # blob read as no images: a pack presenting none of what the scan judged); `db prune` reads leniently
        if ("images_blob" in doc) == ("images" in doc):
            raise ValueError("it holds its image entries and names a blob of them" if "images" in doc
                             else "it names no image entries")
        if "images_blob" in doc and not isinstance(doc["images_blob"], dict):
            raise ValueError("its images_blob is malformed")
        if (doc.get("schema_version") == 1) != ("images" in doc):
            raise ValueError(f"its image entries are not those of its schema_version {doc.get('schema_version')!r}")
        images = index_images(doc, store.evidence_blobs)
        for n, j in enumerate(images):
            _check_entry(j, n)
    except ValueError as exc:
        raise StoreError(f"{what} is malformed: {exc}") from None
    return {**doc, "images": images}


def _check_entry(j: Any, n: int) -> None:
    """ValueError unless ``j`` is an image entry as the pack reads it (an image, its fingerprint, the sha256
    of its material or None): a damaged or planted entry is the store's clear error, never a KeyError or
    TypeError out of the pack's build (exit 3, 'unexpected failure')."""
    from scanner.evidence.capture import image_from_json

    if not isinstance(j, dict) or set(j) != {"fingerprint", "image", "material"}:
        raise ValueError(f"its image entry {n} is not an image entry")
    if not all(v is None or isinstance(v, str) for v in (j["fingerprint"], j["material"])):
        raise ValueError(f"its image entry {n} has a fingerprint or material that is no string")
    try:
        image_from_json(j["image"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"its image entry {n} is not an image: {exc!r}") from None
    digest = j["image"]["reference"].get("digest") if isinstance(j["image"]["reference"], dict) else None
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ValueError(f"its image entry {n} names no sha256 digest")


def load_watch_indexes(store: Any, scan_id: int) -> list[dict[str, Any]]:
    """The indexes of the ``serve --watch`` batches added to scan ``scan_id`` (oldest first)."""
    from scanner.evidence.capture import watch_ref
    from scanner.store.evidence import gunzip

    refs = store.evidence_refs_under(watch_ref(scan_id, 0).removesuffix("0"))
    blobs = store.evidence_blobs(set(refs.values()))
    out = []
    for name, sha in sorted(refs.items(), key=lambda kv: int(kv[0].rsplit("/", 1)[1]) if
                            kv[0].rsplit("/", 1)[1].isdigit() else 0):
        try:
            doc = json.loads(gunzip(blobs[sha]))
        except (KeyError, ValueError, RecursionError) as exc:
            raise StoreError(f"the evidence index {name} is missing or malformed: {exc}") from None
        if not isinstance(doc, dict):  # read as no batch, it left the batch's verdicts unexplained, silently
            raise StoreError(f"the evidence index {name} is malformed")
        _own(doc, scan_id, "watch", f"the evidence index {name}")
        out.append(_with_images(store, doc, f"the evidence index {name}"))
    return out


def judged_at(scan_time: datetime, judgements: Sequence[Mapping[str, Any]]) -> datetime:
    """When an image was last judged: the latest of its judgements' own times (``serve --watch``
    batches), else the scan's. A VSA says that time."""
    times = [datetime.fromisoformat(str(j["verified_at"])) for j in judgements if j.get("verified_at")]
    return max([scan_time, *times])


def build_files(store: Any, scan_id: int, signer: dsse.Signer, *, tsa_url: str | None = None,
                tsa_roots: Sequence[x509.Certificate] = ()) -> dict[str, bytes]:
    """The pack's files (path -> bytes), MANIFEST and its signature included; with ``tsa_url``, the
    TSA's timestamp over the signature too (checked against ``tsa_roots`` when given)."""
    from scanner.clock import fixed_clock
    from scanner.document import iter_scan_json
    from scanner.reports.render import csv_for_result, html_for_result

    index = load_index(store, scan_id)
    result: ScanResult = store.load_scan(scan_id)
    summary = store.scan_summary(scan_id)
    policy_summary = store.policy_summary(scan_id)
    verified_at = datetime.fromisoformat(str(index["verified_at"]))
    built_at = result.finished_at or verified_at
    files: dict[str, bytes] = {}

    # trust snapshot and policy
    entries = []
    trust_shas = set()
    for e in index.get("trust", []):
        e = dict(e)
        if "sha256" in e:
            e["file"] = f"trust/files/{e['sha256']}"
            trust_shas.add(str(e["sha256"]))
        entries.append(e)
    trust_blobs = store.evidence_blobs(trust_shas)
    missing = trust_shas - set(trust_blobs)
    if missing:
        raise StoreError(f"the trust snapshot of scan {scan_id} lacks {len(missing)} file(s) in the store")
    for sha, data in trust_blobs.items():
        files[f"trust/files/{sha}"] = data
    files["trust/sources.json"] = _dump({"schema_version": 1, "entries": entries})
    policy = index["policy"]
    files["policy/replay.json"] = _dump({"schema_version": 1, "path": policy.get("path"),
                                         "from": policy.get("from", []), "digest": policy["digest"],
                                         "verified_at": index["verified_at"], "scan_id": scan_id,
                                         "cluster": result.cluster})
    files["policy/applied.json"] = _dump(policy_summary or {})

    # images: material, records, VSAs
    by_digest: dict[str, list[Verdict]] = {}
    for v in result.verdicts:
        if isinstance(v.image, RunningImage) and v.image.digest:
            by_digest.setdefault(str(v.image.digest), []).append(v)
    judged: dict[str, list[dict[str, Any]]] = {}
    for j in index.get("images", []):
        judged.setdefault(str(j["image"]["reference"]["digest"]), []).append(j)
    # what `serve --watch` added to the scan, each batch judged at its own time under the same policy (a
    # batch under another policy is left out: its verdicts then fail closed as not reproduced)
    for batch in load_watch_indexes(store, scan_id):
        if batch.get("policy", {}).get("digest") != policy["digest"] or not batch.get("verified_at"):
            continue
        for j in batch.get("images", []):
            judged.setdefault(str(j["image"]["reference"]["digest"]), []).append(
                {**j, "verified_at": batch["verified_at"]})
    material_docs = store.evidence_blobs({str(j["material"]) for js in judged.values() for j in js if j["material"]})
    policy_hex = str(policy["digest"]).removeprefix("sha256:")
    layout_repos: dict[str, str] = {}  # digest -> the registry/repository its layout's material is from
    for digest in sorted(set(by_digest) | set(judged)):
        d = digest_dir(digest)
        judgements = []
        inputs: list[tuple[str, Mapping[str, str]]] = []
        materials: list[dict[str, Any]] = []
        image_blobs: dict[str, bytes] = {}
        for n, j in enumerate(judged.get(digest, [])):
            answers_file = None
            doc = material_docs.get(str(j["material"])) if j["material"] else None
            if doc is not None:
                answers_file = f"{d}/answers-{n}.json"
                material = json.loads(doc)
                shas = {str(a["sha256"]) for a in material.get("answers", []) if "sha256" in a}
                for sha, data in store.evidence_blobs(shas).items():
                    files[f"{d}/blobs/{sha}"] = data
                    image_blobs[sha] = data
                # the trust answers the verification used (CRLs, listings...): once in the pack, by content
                wanted = trust_blob_names(material) - {p.removeprefix("trust/files/") for p in files}
                got = store.evidence_blobs(wanted)
                if set(got) != wanted:
                    raise StoreError(f"the material of image {digest} of scan {scan_id} lacks "
                                     f"{len(wanted - set(got))} trust file(s) in the store")
                for sha, data in got.items():
                    files[f"trust/files/{sha}"] = data
                files[answers_file] = _dump(material)
                materials.append(material)
            judgement = {"image": j["image"], "fingerprint": j["fingerprint"], "answers": answers_file}
            if j.get("verified_at"):  # a serve --watch batch: replayed at its own time, not the scan's
                judgement["verified_at"] = j["verified_at"]
            judgements.append(judgement)
        # the same material as an OCI image layout, for `cosign verify --local-image` / `notation --oci-layout`
        first_ref = judged[digest][0]["image"]["reference"] if judged.get(digest) else None
        layout = ocilayout.layout_files(digest, materials, image_blobs, None if first_ref is None else
                                        (str(first_ref["registry"]), str(first_ref["repository"])))
        for rel, data in layout.items():
            files[f"{d}/{ocilayout.LAYOUT}/{rel}"] = data
        verdicts = [verdict_record(v) for v in by_digest.get(digest, [])]
        files[f"{d}/record.json"] = _dump({"schema_version": 1, "digest": digest, "judgements": judgements,
                                           "verdicts": verdicts})
        # the image's signature files (its blobs/ and answers-<n>.json), without a pass over the whole pack
        own = {f"{d}/blobs/{sha}" for sha in image_blobs} | {str(j["answers"]) for j in judgements if j["answers"]}
        for path in sorted(own):
            inputs.append((path, {"sha256": sha256_hex(files[path])}))
        statuses = [v["status"] for v in verdicts] or ["error"]
        status = vsa_status(statuses)
        first = by_digest[digest][0].image if by_digest.get(digest) else image_from_json(judged[digest][0]["image"])
        ref = first.reference
        if ref is None:  # a RunningImage always has one
            raise StoreError(f"image {digest} of scan {scan_id} has no reference")
        if layout and first_ref is not None:
            layout_repos[digest] = f"{first_ref['registry']}/{first_ref['repository']}"
        workloads = sorted({(c.namespace, c.workload.kind, c.workload.name)
                            for v in by_digest.get(digest, []) for c in v.image.containers})
        statement = vsa.vsa_statement(vsa.VsaInput(
            repository=f"{ref.registry}/{ref.repository}", digest=digest, verifier_version=__version__,
            time_verified=judged_at(verified_at, judgements), policy_uri="policy/applied.json",
            policy_digest={"sha256": policy_hex},
            input_attestations=inputs, passed=vsa_passed(statuses), verified_levels=vsa.levels_for(status),
            workloads=[{"namespace": ns, "kind": k, "name": nm} for ns, k, nm in workloads],
            status=status, reasons=tuple(r for v in verdicts for r in v["reasons"][:1]),
        ))
        files[f"{d}/vsa.intoto.json"] = _dump(dsse.sign_envelope(vsa.PAYLOAD_TYPE, canonical_json(statement), signer))

    # inventory
    containers = []
    for v in result.verdicts:
        for c in v.image.containers:
            containers.append({"namespace": c.namespace, "pod": c.pod, "container": c.container,
                              "type": c.container_type.value, "image": c.image, "imageID": c.image_id,
                              "digest": v.image.digest if isinstance(v.image, RunningImage) else None,
                              "owner": {"kind": c.workload.kind, "name": c.workload.name}})
    uniq = {json.dumps(w, sort_keys=True): w for w in containers}
    files["inventory/workloads.json"] = _dump({"schema_version": 1, "containers": [uniq[k] for k in sorted(uniq)]})

    # reports
    files["reports/scan.json"] = "".join(iter_scan_json(result)).encode() + b"\n"
    files["reports/verdicts.csv"] = csv_for_result(result).encode()
    files["reports/report.html"] = html_for_result(result, None, policy_summary=policy_summary,
                                                   clock=fixed_clock(built_at)).encode()
    evidence = {p: sha256_hex(b) for p, b in files.items() if p.startswith("images/")}
    files["reports/assessment-results.json"] = _dump(oscal.assessment_results(summary, result.verdicts, evidence,
                                                                               now=built_at))
    files["verdict-signing.pub"] = signer.public_key_pem()
    layouts = sorted(layout_repos.items())
    keys = sorted((str(e["path"]), str(e["file"])) for e in entries
                  if e.get("file") and str(e["path"]).endswith((".pub", ".pem", ".key")) and "/truststore/" not in
                  str(e["path"]))
    files["VERIFY.md"] = (_verify_md(result, scan_id) + _verify_md_layouts(layouts, keys)
                          + (_verify_md_timestamp() if tsa_url else "")).encode()

    tsa_crls: list[dict[str, str]] = []
    tsa_certs: set[bytes] = set()
    if tsa_url:  # the CRLs of the TSA's chain, under the signed manifest (checked offline by verify-evidence)
        # verified like the final token: an untrusted TSA's certificates name no location sigaudit contacts
        probe = timestamp_signature(hashlib.sha256(b"sigaudit evidence: the TSA's chain").digest(), tsa_url,
                                    tsa_roots)
        tsa_certs = _token_certificates(probe)
        from scanner.sources.tsa import fetch_chain_crls

        for url, der in fetch_chain_crls(probe, roots=tsa_roots):
            name = f"{TSA_CRLS}/{sha256_hex(der)}.crl"
            files[name] = der
            tsa_crls.append({"url": url, "file": name})

    manifest = {"schema_version": 1, "scan_id": scan_id, "cluster": result.cluster,
                "policy_digest": policy["digest"], "verified_at": index["verified_at"],
                "sigaudit_version": __version__,
                "files": {p: hashlib.sha256(b).hexdigest() for p, b in sorted(files.items())}}
    if tsa_url:  # signed: a pack whose token was stripped (it cannot be listed above) says it had one
        manifest["timestamp"] = MANIFEST_TSR
        manifest["tsa_revocation"] = {"crls": tsa_crls}
    files[MANIFEST] = _dump(manifest)
    envelope = dsse.sign_envelope(MANIFEST_PAYLOAD_TYPE, files[MANIFEST], signer)
    files[MANIFEST_SIG] = _dump(envelope)
    if tsa_url:
        files[MANIFEST_TSR] = timestamp_signature(base64.b64decode(envelope["signatures"][0]["sig"]), tsa_url,
                                                  tsa_roots)
        if _token_certificates(files[MANIFEST_TSR]) != tsa_certs:
            from scanner.sources.tsa import TsaError

            raise TsaError("the TSA signed with other certificates than a moment before (the CRLs in the pack "
                           "are for those): build the pack again")
    return files


def _token_certificates(token: bytes) -> set[bytes]:
    from scanner.sources.tsa import TsaError
    from scanner.verify.timestamps import load_certificates, parse_token

    try:
        return {c.public_bytes(serialization.Encoding.DER) for c in load_certificates(parse_token(token))}
    except ValueError as exc:
        raise TsaError(f"the TSA's token: {str(exc)[:200]}") from None


def timestamp_signature(signature: bytes, tsa_url: str, tsa_roots: Sequence[x509.Certificate] = ()) -> bytes:
    """The TSA's token over the manifest signature's bytes; with ``tsa_roots``, verified against them now
    (a TSA the auditor will not trust fails the build, not the audit)."""
    from scanner.sources.tsa import TsaError, request_timestamp
    from scanner.verify.timestamps import TimestampError, verify_timestamp_token

    token = request_timestamp(tsa_url, signature)
    if tsa_roots:
        try:
            verify_timestamp_token(token, signature, tsa_roots)
        except TimestampError as exc:
            raise TsaError(f"the TSA's token does not verify against --tsa-ca-cert: {exc}") from None
    return token


def _verify_md_timestamp() -> str:
    return f"""
## The manifest's timestamp (RFC 3161)

{MANIFEST_TSR} is a TSA's TimeStampToken over the raw signature bytes of {MANIFEST_SIG} (sha256
message imprint): it proves the signed manifest existed at the TSA's time. verify-evidence checks it
against the TSA certificate you trust and prints that time (`--require-timestamp` fails a pack without one):

    sigaudit verify-evidence pack.tar.gz --key verdict-signing.pub --tsa-ca-cert tsa-root.pem

The CRLs of the TSA's certificate chain were fetched when the pack was built: {TSA_CRLS}/<sha256>.crl,
named with their distribution point in MANIFEST.json's tsa_revocation (signed). verify-evidence checks
the chain's revocation from them alone, at the TSA's time: a revoked certificate, or one naming a
distribution point whose CRL is absent, stale or not its issuer's, fails the pack
(`--insecure-skip-tsa-revocation` accepts that, with a warning). The OpenSSL recipe below checks the
token only, not revocation.

With OpenSSL, after `tar -xzf pack.tar.gz`:

    python3 -c 'import json,base64,sys;e=json.load(open("evidence/{MANIFEST_SIG}"));\
    sys.stdout.buffer.write(base64.b64decode(e["signatures"][0]["sig"]))' > manifest.sig
    openssl ts -verify -data manifest.sig -in evidence/{MANIFEST_TSR} -token_in -CAfile tsa-root.pem
"""


def _verify_md(result: ScanResult, scan_id: int) -> str:
    return f"""# Evidence pack of scan {scan_id} of cluster {result.cluster}

Re-verify every verdict offline (no network is opened), against the verdict-signing key you were
given out of band (the copy in this pack proves nothing by itself):

    sigaudit verify-evidence pack.tar.gz --key verdict-signing.pub

It checks MANIFEST.json's DSSE signature and the sha256 of every file, rebuilds the policy from
trust/ and policy/, re-runs every image's verification over images/<digest>/ at the scan's time
(policy/replay.json), and compares status and deciding reason with each recorded verdict and VSA.
Each image is replayed with the trust answers its own verification read (answers-<n>.json "trust":
CRLs, OCSP answers, Grafeas listings, a lazily loaded root; bytes in trust/files/), never another
image's: a verdict a later scan reused from an earlier one carries them too.
Exit 0: all holds; 1: a mismatch or tampered file (named); 2: usage; 3: unexpected failure.

To refuse a stale or substituted pack, say which scan you expect and how old it may be (both are
checked against the signed manifest):

    sigaudit verify-evidence pack.tar.gz --key verdict-signing.pub --expect-scan {scan_id} --not-before 7d

With the upstream tools, after `tar -xzf pack.tar.gz`:

    # each image's VSA (one per running digest, failed ones included)
    slsa-verifier verify-vsa --attestation-path evidence/images/sha256-<hex>/vsa.intoto.json \\
        --public-key-path verdict-signing.pub --subject-digest sha256:<hex> \\
        --verifier-id {vsa.VERIFIER_ID} --resource-uri <registry/repo>@sha256:<hex> \\
        --verified-level {vsa.SIGNATURE_VERIFIED}
    # the manifest's hashes
    cd evidence && python3 -c 'import json,hashlib;m=json.load(open("MANIFEST.json"));\\
    print(all(hashlib.sha256(open(p,"rb").read()).hexdigest()==h for p,h in m["files"].items()))'

reports/assessment-results.json is OSCAL {oscal.OSCAL_VERSION} assessment-results for GRC tools.
"""


def _verify_md_layouts(layouts: list[tuple[str, str]], keys: list[tuple[str, str]]) -> str:
    """VERIFY.md's section for the upstream tools on each image's OCI layout (``images/<digest>/oci/``)."""
    if not layouts:
        return ""
    nl = "\n"
    key_lines = [f"{p}  ->  evidence/{f}" for p, f in keys] or ["(none: the policy names no key file)"]
    images = [f"evidence/{digest_dir(d)}/{ocilayout.LAYOUT}  {d}  {repo}" for d, repo in layouts]
    return f"""
## The upstream tools on each image's OCI layout (offline)

images/sha256-<hex>/oci/ is an OCI image layout of the material sigaudit recorded for that image: the
image manifest, the cosign `.sig`/`.att` manifests and their layers, and the image's referrers (notation
signature manifests and envelopes, Sigstore bundles). Every blob in it is also one of
images/sha256-<hex>/blobs/, and verify-evidence checks that. The layouts (directory, digest, repository):

```
{nl.join(images)}
```

Key files of the trust snapshot (the path the scan read -> its copy in the pack):

```
{nl.join(key_lines)}
```

cosign v2, for signatures in the `.sig` tag made with a key (`--insecure-ignore-tlog` only where the
policy said `ignoreTlog`; keyless signatures also need `--certificate-identity`,
`--certificate-oidc-issuer` and the trusted root from trust/):

```sh
cosign verify --local-image evidence/images/sha256-<hex>/oci --key <key copy> --insecure-ignore-tlog
```

notation (`--oci-layout` is experimental), with a configuration made from the trust snapshot alone:

```sh
{NOTATION_CONFIG_SH}NOTATION_EXPERIMENTAL=1 XDG_CONFIG_HOME=$PWD/notation-config notation verify \\
    --oci-layout evidence/images/sha256-<hex>/oci@sha256:<hex> --scope <registry/repository>
```

Run them in a network namespace (`unshare -n`) to see that nothing is fetched. The upstream tools
check the signatures against the trust given, not sigaudit's policy (identities beyond the trust
policy, expiry warnings, exemptions, revocation lists): `sigaudit verify-evidence` is the full
re-verification.
"""


# VERIFY.md's recipe for notation's configuration ($XDG_CONFIG_HOME/notation/{trustpolicy.json,truststore/})
# from trust/sources.json; run from the directory the pack was extracted in (the tests run it as written).
NOTATION_CONFIG_SH = """python3 - <<'EOF'
import json, pathlib, shutil
root = pathlib.Path("evidence")
entries = json.loads((root / "trust/sources.json").read_text())["entries"]
pol = next(x for x in entries if x["path"].endswith("trustpolicy.json") and x.get("file"))
base, out = pol["path"].rsplit("/", 1)[0] + "/truststore/", pathlib.Path("notation-config/notation")
out.mkdir(parents=True)
shutil.copyfile(root / pol["file"], out / "trustpolicy.json")
for x in entries:
    rel = x["path"][len(base):] if x.get("file") and x["path"].startswith(base) else ""
    if rel and ".." not in rel.split("/"):
        (out / "truststore" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / x["file"], out / "truststore" / rel)
EOF
"""


def write_tar(files: Mapping[str, bytes], out: Any) -> None:
    """A deterministic .tar.gz of ``files`` under ``evidence/``: sorted, mtime 0, root-owned, 0644/0755."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
        for d in [ROOT, *(f"{ROOT}/{d}" for d in dirs)]:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path in sorted(files):
            info = tarfile.TarInfo(f"{ROOT}/{path}")
            info.size, info.mode, info.mtime = len(files[path]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[path]))
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())


def write_pack(store: Any, scan_id: int, sign_key: str, out_path: str, *, tsa_url: str | None = None,
               tsa_roots: Sequence[x509.Certificate] = (), deadline_s: float | None = None,
               deadline_words: str | None = None) -> int:
    """Build scan ``scan_id``'s pack signed with ``sign_key`` (a PEM file or a KMS URI) into
    ``out_path`` (written beside it, then renamed: never a half pack), timestamped by ``tsa_url`` when
    given. With ``deadline_s``, every KMS and TSA call is cut once that many seconds have passed (the
    wall-clock deadline of ``scanner.registry.deadline``; ``deadline_words`` say what passed). Returns its
    size in bytes."""
    import os
    import time
    from pathlib import Path

    from scanner.registry import deadline

    until = None if deadline_s is None else time.monotonic() + deadline_s
    with deadline.within(until, deadline_words or f"evidence deadline of {deadline_s or 0:g}s reached"):
        signer = dsse.signer_from(sign_key)
        files = build_files(store, scan_id, signer, tsa_url=tsa_url, tsa_roots=tsa_roots)
    out = Path(out_path)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            write_tar(files, fh)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out.stat().st_size
