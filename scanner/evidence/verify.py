"""``sigaudit verify-evidence``: check a pack and recompute every verdict from it alone (issue #23).

The pack is untrusted input: it is read into memory under bounds (members, sizes, total), and only
regular files and directories under ``evidence/`` with plain relative names are accepted (no links,
devices, absolute or ``..`` paths, no name twice). Then:

1. MANIFEST.json's DSSE signature against the key the auditor pins (``--key``);
2. the sha256 of every file against MANIFEST.json; a file present but not listed, or listed but
   absent, fails too — each problem names the file;
3. the policy is rebuilt from ``trust/`` only (:class:`scanner.verify.sources.Replay`: no file of this
   machine, no network) and must give the digest the scan recorded;
4. each image's verification is re-run by the pipeline's own code over a :class:`ReplayReader` of
   its recorded registry answers, at the scan's time; status, rule and deciding reason must equal the
   recorded verdicts, and each VSA (signed by the same key) must say PASSED exactly when they pass.
"""

from __future__ import annotations

import gzip
import io
import json
import posixpath
import tarfile
from collections import Counter
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from scanner.errors import ConfigError, SigauditError
from scanner.evidence import dsse, vsa
from scanner.evidence.capture import Material, ReplayReader, image_from_json, sha256_hex, trust_blob_names
from scanner.evidence.pack import (
    MANIFEST,
    MANIFEST_PAYLOAD_TYPE,
    MANIFEST_SIG,
    MANIFEST_TSR,
    ROOT,
    judged_at,
    verdict_record,
    vsa_passed,
    vsa_status,
)

MAX_PACK_BYTES = 1024**3  # uncompressed, all members together (a 2,000-image pack: ~7 MB compressed)
MAX_MEMBER_BYTES = 256 * 1024**2
MAX_MEMBERS = 200_000
MAX_COMPRESSED_RATIO = 200  # a gzip bomb is refused before it is inflated far
FUTURE_SKEW = timedelta(minutes=5)  # clocks of the scanning and the auditing host may differ by that much


class PackError(SigauditError):
    """The pack cannot be read as an evidence pack (named member and why): a tampered or hostile pack."""


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: int = 0
    verdicts: int = 0
    files: int = 0
    scan: dict[str, Any] = field(default_factory=dict)  # which scan the pack says it is (id, cluster, time)
    timestamp: dict[str, Any] = field(default_factory=dict)  # the TSA's verified time of the manifest signature

    @property
    def ok(self) -> bool:
        return not self.problems


def _safe_name(name: str) -> str | None:
    """The member's path inside ``evidence/``, or None when it is not a plain relative path there."""
    if name.startswith("/") or "\\" in name or "\x00" in name:
        return None
    norm = posixpath.normpath(name)
    if norm != name.rstrip("/") or norm.startswith("../") or norm == ".." or "/../" in norm:
        return None
    if norm == ROOT:
        return ""
    if not norm.startswith(ROOT + "/"):
        return None
    rest = norm[len(ROOT) + 1:]
    return rest if rest and all(p not in ("", ".", "..") for p in rest.split("/")) else None


def read_pack(path: Path, *, max_bytes: int = MAX_PACK_BYTES, max_member: int = MAX_MEMBER_BYTES,
              max_members: int = MAX_MEMBERS) -> dict[str, bytes]:
    """The pack's files (path under ``evidence/`` -> bytes). PackError for anything not a plain pack."""
    try:
        compressed = path.stat().st_size
    except OSError as exc:
        raise ConfigError(f"cannot read the pack: {exc.strerror}", source=str(path)) from exc
    limit = min(max_bytes, max(compressed, 1) * MAX_COMPRESSED_RATIO + 1024 * 1024)
    try:
        with gzip.open(path, "rb") as gz:
            raw = gz.read(limit + 1)
    except (OSError, EOFError) as exc:
        raise PackError(f"the pack is not a gzip file: {exc}") from None
    if len(raw) > limit:
        raise PackError(f"the pack inflates past {limit} bytes (a compression bomb or an oversized pack)")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            count = total = 0
            for m in tar:
                count += 1
                if count > max_members:
                    raise PackError(f"the pack has more than {max_members} members")
                rel = _safe_name(m.name)
                if rel is None:
                    raise PackError(f"member {m.name[:200]!r}: not a plain relative path under {ROOT}/")
                if m.isdir():
                    continue
                # Only plain files: a sparse member (GNU or PAX GNU.sparse.*) is "regular" to tarfile
                # but inflates to its claimed size from a few bytes, past every bound on the archive.
                if m.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or m.sparse is not None:
                    raise PackError(f"member {m.name[:200]!r}: a link or special file is not allowed (nor sparse)")
                if m.size > max_member:
                    raise PackError(f"member {m.name[:200]!r}: larger than {max_member} bytes")
                total += m.size
                if total > max_bytes:
                    raise PackError(f"the pack's files add up to more than {max_bytes} bytes")
                if rel in files:
                    raise PackError(f"member {m.name[:200]!r}: appears twice")
                f = tar.extractfile(m)
                if f is None:
                    raise PackError(f"member {m.name[:200]!r}: unreadable")
                data = f.read(m.size + 1)
                if len(data) != m.size:
                    raise PackError(f"member {m.name[:200]!r}: holds {len(data)} bytes, its header says {m.size}")
                files[rel] = data
    except tarfile.TarError as exc:
        raise PackError(f"the pack is not a tar archive: {exc}") from None
    return files


def _json(files: Mapping[str, bytes], name: str) -> Any:
    try:
        return json.loads(files[name])
    except KeyError:
        raise PackError(f"{name}: missing") from None
    except (ValueError, RecursionError) as exc:  # nested past the parser's depth: a hostile file, not a crash
        raise PackError(f"{name}: not JSON: {exc}") from None


def check_integrity(files: Mapping[str, bytes], key_pem: bytes, out: Outcome) -> dict[str, Any] | None:
    """Steps 1-2. The manifest, when its signature holds (else None and the problem is in ``out``)."""
    if MANIFEST not in files or MANIFEST_SIG not in files:
        out.problems.append(f"{MANIFEST if MANIFEST not in files else MANIFEST_SIG}: missing")
        return None
    try:
        _, payload = dsse.verify_envelope(files[MANIFEST_SIG], key_pem, payload_type=MANIFEST_PAYLOAD_TYPE)
    except dsse.EvidenceError as exc:
        out.problems.append(f"{MANIFEST_SIG}: the manifest signature does not verify with the given key: {exc}")
        return None
    if payload != files[MANIFEST]:
        out.problems.append(f"{MANIFEST}: differs from the signed manifest")
        return None
    manifest = _json(files, MANIFEST)
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict):
        out.problems.append(f"{MANIFEST}: no file list")
        return None
    for name in sorted(set(files) - set(listed) - {MANIFEST, MANIFEST_SIG, MANIFEST_TSR}):
        out.problems.append(f"{name}: not listed in {MANIFEST}")
    for name, want in sorted(listed.items()):
        if name not in files:
            out.problems.append(f"{name}: listed in {MANIFEST} but missing")
        elif sha256_hex(files[name]) != want:
            out.problems.append(f"{name}: sha256 differs from {MANIFEST} (tampered)")
    out.files = len(listed)
    return dict(manifest)


def recompute(files: Mapping[str, bytes], key_pem: bytes, out: Outcome) -> None:
    """Steps 3-4, on a pack whose integrity holds."""
    from scanner.pipeline import ScanStats, _groups, verify_image
    from scanner.policy.sources import load_policies
    from scanner.verify import sources as trust_sources

    replay = _json(files, "policy/replay.json")
    try:
        verified_at = datetime.fromisoformat(str(replay["verified_at"]))
        if verified_at.tzinfo is None:
            raise ValueError("a time without a zone")
        entries = list(_json(files, "trust/sources.json")["entries"])
        blobs = {str(e["sha256"]): files.get(str(e.get("file")), b"") for e in entries if "sha256" in e}
        sources = trust_sources.Replay(entries, blobs)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PackError(f"policy/replay.json or trust/sources.json: malformed: {type(exc).__name__}: {exc}") from None
    with trust_sources.reading_from(sources):
        try:
            policy = load_policies(replay.get("path"), tuple(replay.get("from") or ()))
        except (ConfigError, OSError) as exc:
            msg = exc.diagnostics() if isinstance(exc, SigauditError) else str(exc)
            out.problems.append(f"trust/: the policy does not load from the pack's trust snapshot: {msg}")
            return
        if policy.digest != replay.get("digest"):
            out.problems.append(f"trust/: the snapshot gives policy digest {policy.digest}, the scan recorded "
                                f"{replay.get('digest')}")
            return
        records = sorted(n for n in files if n.startswith("images/") and n.endswith("/record.json"))
        for record_name in records:
            try:
                _recompute_image(files, record_name, policy, verified_at, key_pem, out,
                                 verify_image=verify_image, groups=_groups, stats=ScanStats())
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a malformed record is a finding
                out.problems.append(f"{record_name}: malformed: {type(exc).__name__}: {str(exc)[:200]}")
    _cross_check(files, records, out)
    _check_layouts(files, out)


def _check_layouts(files: Mapping[str, bytes], out: Outcome) -> None:
    """Each image's OCI layout (for the upstream tools) is content-addressed and holds only the material
    the recompute used: every layout blob is also the image's ``blobs/<sha256>``."""
    from scanner.evidence.ocilayout import LAYOUT, check_layout

    marker = f"/{LAYOUT}/"
    layouts: dict[str, dict[str, bytes]] = {}  # one pass over the pack, grouped by layout (not per image)
    for name, data in files.items():
        if name.startswith("images/") and marker in name:
            layouts.setdefault(name[: name.index(marker) + len(marker)], {})[name] = data
    for prefix, members in sorted(layouts.items()):
        image_dir = prefix[: -len(marker)]
        digest = image_dir.removeprefix("images/").replace("-", ":", 1)
        out.problems.extend(check_layout(members, prefix, digest))
        for name in sorted(n for n in members if n.startswith(prefix + "blobs/sha256/")):
            if files.get(f"{image_dir}/blobs/{name.rsplit('/', 1)[1]}") != members[name]:
                out.problems.append(f"{name}: not the material recorded in {image_dir}/blobs/")


def _check_identity(files: Mapping[str, bytes], manifest: Mapping[str, Any], out: Outcome) -> None:
    """The signed manifest, policy/replay.json and reports/scan.json name one scan: its id, cluster,
    policy digest and time of verification (which lies within the scan's start and end) — a pack cannot
    replay its material at a time, or under a scan, other than the one it reports."""
    replay = _json(files, "policy/replay.json")
    doc = _json(files, "reports/scan.json")
    scan = doc.get("scan") if isinstance(doc, dict) else None
    if not isinstance(replay, dict) or not isinstance(scan, dict):
        out.problems.append("policy/replay.json or reports/scan.json: malformed")
        return
    same = {
        "scan id": (manifest.get("scan_id"), replay.get("scan_id"), scan.get("id")),
        "cluster": (manifest.get("cluster"), replay.get("cluster"), scan.get("cluster")),
        "policy digest": (manifest.get("policy_digest"), replay.get("digest"), scan.get("policy_digest")),
        "time of verification": (manifest.get("verified_at"), replay.get("verified_at"), replay.get("verified_at")),
    }
    for what, (a, b, c) in same.items():
        if not (a == b == c) or a is None:
            out.problems.append(f"{MANIFEST}, policy/replay.json, reports/scan.json: the {what} differs "
                                f"({str(a)[:100]!r}, {str(b)[:100]!r}, {str(c)[:100]!r})")
    try:
        at = datetime.fromisoformat(str(replay.get("verified_at")))
        start = datetime.fromisoformat(str(scan.get("started_at")).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(scan.get("finished_at")).replace("Z", "+00:00"))
        inside = start - timedelta(seconds=1) <= at <= end + timedelta(seconds=1)
    except (TypeError, ValueError) as exc:
        out.problems.append(f"policy/replay.json or reports/scan.json: a time is malformed: {exc}")
        return
    if not inside:
        out.problems.append(f"policy/replay.json: verified_at {at.isoformat()} is outside the scan "
                            f"({start.isoformat()} .. {end.isoformat()})")
    checked_at = datetime.now(UTC)
    if at.tzinfo is not None and at > checked_at + FUTURE_SKEW:  # a future-dated pack would pass --not-before
        out.problems.append(f"policy/replay.json: verified_at {at.isoformat()} is after the time of this check "
                            f"({checked_at.isoformat()}): a time no sigaudit could have seen")
    out.scan = {"id": scan.get("id"), "cluster": scan.get("cluster"), "verified_at": replay.get("verified_at")}


def _cross_check(files: Mapping[str, bytes], records: list[str], out: Outcome) -> None:
    """The scan's own document lists the same running digests and verdicts as the records (a pack
    cannot hide a failing image by leaving its record out), and no image without a running digest is
    compliant."""
    doc = _json(files, "reports/scan.json")
    try:
        in_doc: dict[str, Counter[tuple[str, str, bool]]] = {}
        for i in doc["images"]:
            if i.get("digest") is None:
                if i.get("compliant") is not False or i.get("status") in ("verified", "exempt"):
                    out.problems.append(f"reports/scan.json: {str(i.get('reference'))[:200]} is compliant without a "
                                        "running digest")
                continue
            in_doc.setdefault(str(i["digest"]), Counter())[
                (str(i.get("rule") or ""), str(i["status"]), i.get("compliant") is True)] += 1
        in_records: dict[str, Counter[tuple[str, str, bool]]] = {}
        for name in records:
            rec = _json(files, name)
            in_records[str(rec["digest"])] = Counter((str(v.get("rule") or ""), str(v["status"]),
                                                      v.get("compliant") is True) for v in rec["verdicts"])
        _check_reports(files, doc, out)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        out.problems.append(f"reports/: malformed: {type(exc).__name__}: {str(exc)[:200]}")
        return
    for digest in sorted(set(in_doc) | set(in_records)):
        if in_doc.get(digest) != in_records.get(digest):
            out.problems.append(f"images/{digest.replace(':', '-')}/record.json: its verdicts differ from "
                                f"reports/scan.json's for {digest}" if digest in in_records else
                                f"reports/scan.json: {digest} has no record under images/")


def _check_reports(files: Mapping[str, bytes], doc: Mapping[str, Any], out: Outcome) -> None:
    """What a reader takes from the pack without re-verifying — the summary, the CSV, the OSCAL
    observations and findings — says what reports/scan.json's images say (which the recompute holds)."""
    from scanner.reports.render import csv_records

    images = list(doc["images"])
    ok = {"verified", "exempt"}
    summary = doc["summary"]
    compliant = sum(1 for i in images if i.get("compliant") is True)
    want = {"images": len(images), "compliant": compliant, "non_compliant": len(images) - compliant}
    by_status = Counter(str(i["status"]) for i in images)
    if any(summary.get(k) != v for k, v in want.items()) or any(
            int(n) != by_status.get(s, 0) for s, n in dict(summary["by_status"]).items()) or (
            set(by_status) - set(summary["by_status"])):
        out.problems.append("reports/scan.json: its summary does not count its images")
    per_container = Counter((str(i.get("digest") or ""), str(i["status"]), "true" if i.get("compliant") is True
                             else "false") for i in images for _ in i.get("containers", []))
    rows = csv_records(files["reports/verdicts.csv"].decode())
    in_csv = Counter((r["digest"], r["status"], r["compliant"]) for r in rows)
    if in_csv != per_container:
        out.problems.append("reports/verdicts.csv: its rows differ from reports/scan.json's images")
    inventory = _json(files, "inventory/workloads.json")
    in_inventory = Counter((c["namespace"], c["pod"], c["container"], c.get("digest"), c["owner"]["kind"],
                            c["owner"]["name"]) for c in inventory["containers"])
    in_doc = Counter({(c["namespace"], c["pod"], c["container"], i.get("digest"), c["workload_kind"],
                       c["workload_name"]): 1 for i in images for c in i.get("containers", [])})
    if +in_inventory != in_doc or any(n != 1 for n in in_inventory.values()):
        out.problems.append("inventory/workloads.json: its containers differ from reports/scan.json's")
    oscal_doc = _json(files, "reports/assessment-results.json")
    result = oscal_doc["assessment-results"]["results"][0]
    observed: dict[str, tuple[str, str, str]] = {}
    for o in result.get("observations", []):
        props = {p["name"]: p["value"] for p in o.get("props", [])}
        observed[o["uuid"]] = (props.get("digest", ""), props.get("status", ""), props.get("compliant", ""))
    per_image = Counter((str(i.get("digest") or ""), str(i["status"]), "true" if i.get("compliant") is True
                         else "false") for i in images)
    if Counter(observed.values()) != per_image:
        out.problems.append("reports/assessment-results.json: its observations differ from reports/scan.json's images")
    for f in result.get("findings", []):
        members = [observed.get(r["observation-uuid"]) for r in f.get("related-observations", [])]
        satisfied = bool(members) and all(m is not None and m[1] in ok for m in members)
        if f["target"]["status"]["state"] != ("satisfied" if satisfied else "not-satisfied"):
            out.problems.append(f"reports/assessment-results.json: finding {str(f.get('title'))[:200]!r} says "
                                f"{f['target']['status']['state']}, its observations do not")


def _recompute_image(files: Mapping[str, bytes], record_name: str, policy: Any, now: datetime, key_pem: bytes,
                     out: Outcome, *, verify_image: Any, groups: Any, stats: Any) -> None:
    from scanner.verify import sources as trust_sources

    d = record_name.rsplit("/", 1)[0]
    checked_at = datetime.now(UTC)
    record = _json(files, record_name)
    digest = str(record.get("digest"))
    if d != "images/" + digest.replace(":", "-"):
        out.problems.append(f"{record_name}: records digest {digest} in another image's directory")
        return
    out.images += 1
    recorded = Counter(_key(v) for v in record.get("verdicts", []))
    got: Counter[tuple[str, str, str, bool]] = Counter()
    for j in record.get("judgements", []):
        img = image_from_json(j["image"])
        if img.digest != digest:
            out.problems.append(f"{record_name}: a judgement of {img.digest} under {digest}")
            return
        at = now  # the scan's time; a serve --watch judgement its own (never before the scan's)
        if j.get("verified_at"):
            at = datetime.fromisoformat(str(j["verified_at"]))
            if at.tzinfo is None or at < now:
                out.problems.append(f"{record_name}: a judgement verified at {str(j['verified_at'])[:40]}, before "
                                    f"the scan's time {now.isoformat()} (or without a zone)")
                return
            if at > checked_at + FUTURE_SKEW:  # no pack can hold a verdict reached after it is checked
                out.problems.append(f"{record_name}: a judgement verified at {at.isoformat()}, after the time of "
                                    f"this check ({checked_at.isoformat()}): a time no sigaudit could have seen")
                return
        material = Material(trust=None)
        if j.get("answers"):
            doc = _json(files, str(j["answers"]))
            names = {str(a["sha256"]) for a in doc.get("answers", []) if "sha256" in a}
            material = Material.from_json(doc, {s: files[f"{d}/blobs/{s}"] for s in names if f"{d}/blobs/{s}" in files})
        # The trust answers this image's verification read (its CRLs, listings...), and only those: never
        # another image's (a record from before sigaudit kept them per image uses the scan's snapshot).
        own_trust = (trust_sources.answering_first(material.trust_entries(), {
            s: files[f"trust/files/{s}"] for s in trust_blob_names({"trust": material.trust_entries()})
            if f"trust/files/{s}" in files}) if material.trust is not None else nullcontext())
        try:
            with own_trust:
                verdicts = verify_image(img, groups(policy, img), ReplayReader(material), policy, at, stats)
        except Exception as exc:  # the pipeline's own guard makes this an error verdict; say it here
            out.problems.append(f"{record_name}: re-verification failed: {type(exc).__name__}: {str(exc)[:200]}")
            return
        got.update(_key(verdict_record(v)) for v in verdicts)
    out.verdicts += sum(recorded.values())
    if not record.get("judgements") and recorded and all(k[1] == "error" for k in recorded):
        # The verification never finished (scan deadline, a crash): an error verdict, never compliant,
        # with nothing to recompute — said, not a mismatch.
        out.notes.append(f"{record_name}: error verdict of an unfinished verification, not recomputed")
        got = recorded
    if got != recorded:
        for k in sorted((recorded - got).elements()):
            out.problems.append(f"{record_name}: recorded verdict not reproduced: rule {k[0]!r} {k[1]}"
                                f"{' (compliant)' if k[3] else ''}: {k[2]}")
        for k in sorted((got - recorded).elements()):
            out.problems.append(f"{record_name}: the pack's material gives: rule {k[0]!r} {k[1]}"
                                f"{' (compliant)' if k[3] else ''}: {k[2]}")
    repos = {f"{j['image']['reference']['registry']}/{j['image']['reference']['repository']}"
             for j in record.get("judgements", [])}
    _check_vsa(files, d, digest, [v["status"] for v in record.get("verdicts", [])], key_pem, out,
               now=judged_at(now, record.get("judgements", [])), policy_digest=str(policy.digest),
               repositories=repos)


def _key(v: Mapping[str, Any]) -> tuple[str, str, str, bool]:
    # compliant too: a warn-only rule's violation is compliant; an invalid verdict said compliant is a lie
    return (str(v.get("rule") or ""), str(v.get("status")), str(v.get("deciding_reason")), v.get("compliant") is True)


def _check_vsa(files: Mapping[str, bytes], d: str, digest: str, statuses: list[str], key_pem: bytes,
               out: Outcome, *, now: datetime, policy_digest: str, repositories: set[str]) -> None:
    name = f"{d}/vsa.intoto.json"
    if name not in files:
        out.problems.append(f"{name}: missing")
        return
    try:
        _, payload = dsse.verify_envelope(files[name], key_pem, payload_type=vsa.PAYLOAD_TYPE)
        statement = json.loads(payload)
        predicate = statement["predicate"]
        result = predicate["verificationResult"]
        subjects = statement["subject"]
        # Exactly this image: a second subject would carry this verdict to another digest, another
        # name or resourceUri to another repository (slsa-verifier matches on them, nothing else does).
        subject = subjects[0] if isinstance(subjects, list) and len(subjects) == 1 else None
        subject_name = subject.get("name") if isinstance(subject, dict) else None
        subject_ok = isinstance(subject, dict) and subject.get("digest") == {"sha256": digest.removeprefix("sha256:")}
        resource = predicate.get("resourceUri")
        claims = {
            "_type": (statement.get("_type"), vsa.STATEMENT_TYPE),
            "predicateType": (statement.get("predicateType"), vsa.PREDICATE_TYPE),
            "verifier.id": ((predicate.get("verifier") or {}).get("id"), vsa.VERIFIER_ID),
            "timeVerified": (predicate.get("timeVerified"), vsa._rfc3339(now)),
            "policy.digest": ((predicate.get("policy") or {}).get("digest"),
                              {"sha256": policy_digest.removeprefix("sha256:")}),
        }
    except (dsse.EvidenceError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        out.problems.append(f"{name}: not a VSA signed by the given key: {exc}")
        return
    if not subject_ok:
        out.problems.append(f"{name}: its subject is not {digest} alone")
    elif (not isinstance(subject_name, str) or resource != f"{subject_name}@{digest}"
          or (repositories and subject_name not in repositories)):
        out.problems.append(f"{name}: its subject name / resourceUri {str(resource)[:200]!r} is not the "
                            f"repository the image was judged in ({', '.join(sorted(repositories)) or '?'})")
    for what, (got_value, want_value) in claims.items():
        if got_value != want_value:
            out.problems.append(f"{name}: {what} is {str(got_value)[:200]!r}, the scan's is {str(want_value)[:200]!r}")
    want = "PASSED" if vsa_passed(statuses) else "FAILED"
    if result != want:
        out.problems.append(f"{name}: says {result}, the verdicts say {want}")
    allowed = set(vsa.levels_for(vsa_status(statuses)))
    levels = predicate.get("verifiedLevels") if isinstance(predicate, dict) else None
    if not isinstance(levels, list) or not set(map(str, levels)) <= allowed:
        out.problems.append(f"{name}: verifiedLevels {levels!r} claim more than the verdicts show ({sorted(allowed)})")


@dataclass(frozen=True)
class TimestampTrust:
    """How verify-evidence treats MANIFEST.json.tsr: the TSA roots the auditor trusts (``--tsa-ca-cert``),
    or (``pack_chain``, insecure) the self-signed certificates inside the token; ``required``: a pack
    without a token fails."""

    roots: tuple[x509.Certificate, ...] = ()
    pack_chain: bool = False
    required: bool = False
    skip_revocation: bool = False  # --insecure-skip-tsa-revocation: the TSA chain's CRLs are not checked


def _self_signed(cert: x509.Certificate) -> bool:
    """A root whose self-signature verifies, its signature BIT STRING without unused bits (cryptography
    ignores that octet: a flipped bit there would pass unseen)."""
    from scanner.verify.timestamps import TimestampError, der_children

    try:
        cert.verify_directly_issued_by(cert)
        parts = der_children(cert.public_bytes(Encoding.DER))
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm, TimestampError):
        return False
    return len(parts) == 3 and parts[2][0] == 0x03 and parts[2][1] == 0


def check_timestamp(files: Mapping[str, bytes], key_pem: bytes, manifest: Mapping[str, Any],
                    trust: TimestampTrust, out: Outcome) -> None:
    """The token, when present, is a trusted TSA's over the bytes of a manifest signature that verifies
    with the pinned key (not any signature in the envelope), at a time not before the scan's."""
    from scanner.verify.timestamps import (
        check_signer_algorithms,
        load_certificates,
        parse_token,
        verify_timestamp_token,
    )

    token = files.get(MANIFEST_TSR)
    if token is None:
        if manifest.get("timestamp") is not None:
            out.problems.append(f"{MANIFEST_TSR}: missing, and {MANIFEST} says the pack was timestamped (removed)")
        elif trust.required or trust.roots:
            why = "--require-timestamp" if trust.required else "--tsa-ca-cert"
            out.problems.append(f"{MANIFEST_TSR}: missing ({why}): the manifest is not timestamped")
        return
    try:
        resp = parse_token(token)
        pool = load_certificates(resp)
        shape = (resp.signed_data.version, [si.version for si in resp.signed_data.signer_infos])
        check_signer_algorithms(token)
    except ValueError as exc:  # TimestampError too
        out.problems.append(f"{MANIFEST_TSR}: not a timestamp token: {str(exc)[:200]}")
        return
    if shape[0] != 3 or len(shape[1]) != 1 or shape[1][0] not in (1, 3):  # RFC 5652 §5.1, §5.3; RFC 3161 §2.4.2
        out.problems.append(f"{MANIFEST_TSR}: not a timestamp token of one signer (CMS versions {shape})")
        return
    roots = list(trust.roots)
    if not roots and trust.pack_chain:
        roots = [c for c in pool if c.subject == c.issuer and _self_signed(c)]
    if not roots:
        out.problems.append(f"{MANIFEST_TSR}: no TSA certificate to check it against: give --tsa-ca-cert "
                            "(or --insecure-use-pack-tsa-cert)" if not trust.pack_chain else
                            f"{MANIFEST_TSR}: the token carries no root certificate: give --tsa-ca-cert")
        return
    try:
        key = dsse.load_public_key(key_pem)
        payload_type, payload, sigs = dsse.parse_envelope(files[MANIFEST_SIG])
    except (dsse.EvidenceError, ConfigError) as exc:
        out.problems.append(f"{MANIFEST_SIG}: {exc}")
        return
    message = dsse.pae(payload_type, payload)
    signed = [sig for sig in sigs if dsse.verify_raw(key, sig, message)]
    errors: list[str] = []
    for sig in signed:
        try:
            ts = verify_timestamp_token(token, sig, roots)
            break
        except ValueError as exc:  # TimestampError, or a certificate the token carries that does not parse
            errors.append(str(exc))
    else:
        out.problems.append(f"{MANIFEST_TSR}: not a trusted TSA's timestamp over the manifest signature: "
                            f"{(errors or ['no signature of the given key'])[0][:300]}")
        return
    # The certificates are outside the TSA's signature: one the chain does not use (a tampered copy of the
    # root, a stray certificate) fails too, so that no byte of the token can change unnoticed there.
    used = {c.public_bytes(Encoding.DER) for c in (*ts.tsa_chain, *roots)}
    if any(c.public_bytes(Encoding.DER) not in used for c in pool):
        out.problems.append(f"{MANIFEST_TSR}: carries a certificate that is not in the TSA's chain (tampered)")
        return
    try:
        verified_at = datetime.fromisoformat(str(manifest.get("verified_at")))
        before = verified_at.tzinfo is not None and ts.latest < verified_at - timedelta(seconds=1)
    except ValueError:
        before = False  # _check_identity names the malformed time
    if before:
        out.problems.append(f"{MANIFEST_TSR}: the TSA's time {ts.gen_time.isoformat()} is before the scan's "
                            f"verification ({verified_at.isoformat()})")
        return
    if trust.skip_revocation:
        revocation = "not checked (--insecure-skip-tsa-revocation)"
        out.notes.append(f"{MANIFEST_TSR}: the revocation of the TSA's chain was not checked "
                         "(--insecure-skip-tsa-revocation)")
    else:
        problem = _tsa_revocation(files, manifest, ts)
        if problem is not None:
            out.problems.append(f"{MANIFEST_TSR}: {problem}")
            return
        revocation = "checked against the pack's CRLs"
    out.timestamp = {"time": ts.gen_time.isoformat(), "accuracy_seconds": ts.accuracy.total_seconds(),
                     "tsa": ts.tsa_chain[0].subject.rfc4514_string()[:300],
                     "trusted_by": "tsa-ca-cert" if trust.roots else "the token's own chain (insecure)",
                     "revocation": revocation}


class _PackCrls:
    """A Fetcher answering only the CRLs a pack holds (by the URL the manifest names): no network."""

    def __init__(self, crls: Mapping[str, bytes]) -> None:
        self._crls = crls

    def get(self, url: str, *, max_bytes: int, timeout: float) -> bytes:
        data = self._crls.get(url)
        if data is None:
            raise LookupError("not in the evidence pack")
        if len(data) > max_bytes:
            raise LookupError(f"larger than {max_bytes} bytes")
        return data

    def post(self, url: str, body: bytes, *, content_type: str, max_bytes: int, timeout: float) -> bytes:
        raise LookupError("OCSP is not answered from an evidence pack")


def _tsa_revocation(files: Mapping[str, bytes], manifest: Mapping[str, Any], ts: Any) -> str | None:
    """The TSA chain's revocation, from the CRLs the signed manifest names (fetched when the pack was
    built), at the TSA's time: any certificate of the chain revoked, or one whose revocation the pack
    cannot settle (a distribution point without its CRL, a stale CRL, OCSP only), fails. No
    invalidityDate exception: the only time at hand is the TSA's own, which a compromised key backdates."""
    from scanner.verify.revocation import RevocationChecker, RevocationStatus

    listed = manifest.get("tsa_revocation")
    crls: dict[str, bytes] = {}
    entries = listed.get("crls") if isinstance(listed, dict) else []
    for e in entries if isinstance(entries, list) else []:
        name = str(e.get("file")) if isinstance(e, dict) else ""
        if not name.startswith("tsa/crls/") or name not in files:
            return f"{name[:200] or 'a CRL'} named in {MANIFEST}'s tsa_revocation is not in the pack"
        crls[str(e.get("url"))] = files[name]
    rr = RevocationChecker(_PackCrls(crls)).check_chain(list(ts.tsa_chain), ts.gen_time)
    if rr.status is RevocationStatus.REVOKED:
        return f"the TSA's certificate chain is revoked: {rr.reason}"
    if rr.status is RevocationStatus.UNKNOWN:
        return (f"the revocation of the TSA's chain cannot be settled from the pack: {rr.reason} "
                "(--insecure-skip-tsa-revocation accepts that)")
    return None


@dataclass(frozen=True)
class Expected:
    """What the auditor expects of the pack, checked against its signed manifest: a scan verified no
    earlier than ``not_before`` (a stale pack replayed as current fails), and scan ``scan_id`` (a pack
    of another scan substituted for the one asked for fails)."""

    not_before: datetime | None = None
    scan_id: int | None = None


def check_expected(manifest: Mapping[str, Any], expected: Expected, out: Outcome) -> None:
    if expected.scan_id is not None:
        got = manifest.get("scan_id")
        if not isinstance(got, int) or isinstance(got, bool) or got != expected.scan_id:
            out.problems.append(f"{MANIFEST}: the pack is of scan {str(got)[:40]}, not the expected scan "
                                f"{expected.scan_id} (--expect-scan)")
    if expected.not_before is not None:
        try:
            at = datetime.fromisoformat(str(manifest.get("verified_at")))
            if at.tzinfo is None:
                raise ValueError("a time without a zone")
        except ValueError as exc:
            out.problems.append(f"{MANIFEST}: verified_at is malformed ({exc}): cannot check --not-before")
            return
        if at < expected.not_before:
            out.problems.append(f"{MANIFEST}: the scan was verified at {at.isoformat()}, before "
                                f"{expected.not_before.isoformat()} (--not-before): a stale pack")


def verify_pack(path: Path, key_pem: bytes, timestamp: TimestampTrust | None = None,
                expected: Expected | None = None) -> Outcome:
    out = Outcome()
    try:
        files = read_pack(path)
        manifest = check_integrity(files, key_pem, out)
        if manifest is not None:
            check_expected(manifest, expected or Expected(), out)
            check_timestamp(files, key_pem, manifest, timestamp or TimestampTrust(), out)
        if manifest is not None and out.ok:
            _check_identity(files, manifest, out)
            recompute(files, key_pem, out)
    except PackError as exc:
        out.problems.append(str(exc))
    return out
