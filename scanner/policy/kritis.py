"""Audit with the kritis policies a cluster already enforces (``--policy-from kritis:FILE|cluster``).

Resources (``kritis.grafeas.io/v1beta1``; every form the CRDs have had is accepted):

* ``AttestationAuthority``: ``spec.noteReference`` (``[v1beta1/]projects/P/notes/N``), ``spec.publicKeys[]``
  (``keyType: PKIX`` with ``pkixPublicKey.publicKeyPem``, ``keyId``), legacy ``spec.publicKeyData``
  (base64 of the key) and ACK's ``spec.publicKeyId``. PGP keys are not supported (reported).
* ``GenericAttestationPolicy``: ``attestationAuthorityNames`` — an image must be attested by every
  listed authority (n-of-n); ``admissionAllowlistPatterns`` / ``admissionWhitelistPatterns``
  (``namePattern``) waive the namespace's GenericAttestationPolicies (kritis flattens them), with the
  reason "kritis admission allowlist". Every policy of a namespace applies and must hold.
* ``ImageSecurityPolicy``: ``attestationAuthorityName`` (current) or ``attestationAuthorityNames``;
  ``imageAllowlist`` / ``imageWhitelist`` waive that policy's rule only; vulnerability requirements are
  reported as not audited. An allowlist never waives another source's rules (native, Kyverno, ...).

Attestations are read from Grafeas: ``$SIGAUDIT_GRAFEAS_URL`` (default Container Analysis,
``https://containeranalysis.googleapis.com``), v1beta1, in the note's project, only that note's occurrences.

Kubernetes API calls (for the chart's RBAC): ``CustomObjectsApi.list_custom_object_for_all_namespaces``
kritis.grafeas.io/v1beta1 attestationauthorities, genericattestationpolicies, imagesecuritypolicies: list.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from scanner.clock import parse_kube_time
from scanner.errors import ConfigError, ParseError
from scanner.inventory.references import parse_reference
from scanner.models import ImageReference
from scanner.policy.admission import AdmissionPolicy, Controller
from scanner.policy.fields import FieldTable, classify, mapped, reported, table
from scanner.policy.loader import CompiledRule
from scanner.policy.schema import AttestationVerifierSpec, Exemption, ImageMatcher, VerifierSpec
from scanner.verify.attestation import parse_pkix_pem
from scanner.verify.base import Verifier

ALLOWLIST_REASON = "kritis admission allowlist"
FOREVER = datetime(9999, 12, 31, tzinfo=UTC)
DEFAULT_GRAFEAS = "https://containeranalysis.googleapis.com"
# Grafeas resource names (projects/P/notes/N): P and N become a URL path; nothing that would end or
# re-route it (?, #, %, .., spaces).
_NOTE = re.compile(r"^(?:v1beta1/|v1/)?projects/([A-Za-z0-9][A-Za-z0-9._:-]*)/notes/([A-Za-z0-9][A-Za-z0-9._:-]*)$")
_KINDS = ("AttestationAuthority", "GenericAttestationPolicy", "ImageSecurityPolicy")


_SIGNER = "used by kritis to sign, not to verify"
_COMMON = {
    "apiVersion": mapped(),
    "kind": mapped(),
    "metadata": mapped("name and namespace identify the resource"),
    "status": mapped("written by kritis"),
}
# What every field of the kritis resources becomes (scanner/policy/fields.py). The fields are those of
# the Go types (grafeas/kritis pkg/kritis/apis/kritis/v1beta1/*.go, which decode JSON keys
# case-insensitively) and of the CRDs in artifacts/*-crd.yaml, which spell some differently.
FIELDS: Mapping[str, FieldTable] = {
    "AttestationAuthority": table(
        {
            **_COMMON,
            "spec.noteReference": mapped("only this note's occurrences count"),
            "spec.publicKeys[].keyId": mapped(),
            "spec.publicKeys[].keyType": mapped("PKIX; PGP keys are left out (fewer keys: stricter)"),
            "spec.publicKeys[].asciiArmoredPgpPublicKey": reported(
                "PGP keys are not supported: attestations signed with them are not accepted"
            ),
            "spec.publicKeys[].pkixPublicKey.publicKeyPem": mapped(),
            "spec.publicKeys[].pkixPublicKey.signatureAlgorithm": reported(
                "the algorithm is taken from the key and signature (RSA PKCS#1 v1.5/PSS, ECDSA), same key"
            ),
            "spec.publicKeyData": mapped("legacy: base64 of a PEM key"),
            "spec.publicKeyId": mapped("ACK's fork: a key id hint"),
            "spec.privateKeySecretName": mapped(_SIGNER),
            "spec.policyType": reported("not used when verifying attestations"),
        }
    ),
    "GenericAttestationPolicy": table(
        {
            **_COMMON,
            "spec.attestationAuthorityNames": mapped("attested by every authority named (n-of-n)"),
            "spec.admissionAllowlistPatterns[].namePattern": mapped("an exemption"),
            "spec.admissionWhitelistPatterns[].namePattern": mapped("an exemption (former spelling)"),
        }
    ),
    "ImageSecurityPolicy": table(
        {
            **_COMMON,
            "spec.attestationAuthorityName": mapped("attested by this authority"),
            "spec.attestationAuthorityNames": mapped("attested by every authority named"),
            "spec.imageAllowlist": mapped("exemptions"),
            "spec.imageAllowList": mapped("exemptions (the CRD's spelling)"),
            "spec.imageWhitelist": mapped("exemptions (former spelling)"),
            "spec.packageVulnerabilityRequirements": reported(
                "vulnerability requirements are not audited (sigaudit audits signatures and attestations)"
            ),
            "spec.builtProjectIDs": reported("not audited"),
            "spec.privateKeySecretName": mapped(_SIGNER),
        }
    ),
}


# The JSON types of kritis' Go structs (pkg/kritis/apis/kritis/v1beta1/*.go) for every field sigaudit reads:
# a value of another type is a resource kritis could not decode, never a crash of the import.
_META_TYPES: Mapping[str, type | tuple[type, ...]] = {"metadata": dict, "metadata.name": str,
                                                      "metadata.namespace": str}
_TYPES: Mapping[str, Mapping[str, type | tuple[type, ...]]] = {
    "AttestationAuthority": {
        "spec": dict, "spec.noteReference": str, "spec.publicKeys": list, "spec.publicKeys[]": dict,
        "spec.publicKeys[].keyId": str, "spec.publicKeys[].keyType": str,
        "spec.publicKeys[].asciiArmoredPgpPublicKey": str, "spec.publicKeys[].pkixPublicKey": dict,
        "spec.publicKeys[].pkixPublicKey.publicKeyPem": str, "spec.publicKeyData": str, "spec.publicKeyId": str,
    },
    "GenericAttestationPolicy": {
        "spec": dict, "spec.attestationAuthorityNames": list, "spec.attestationAuthorityNames[]": str,
        **{f"spec.{f}{tail}": t for f in ("admissionAllowlistPatterns", "admissionWhitelistPatterns")
           for tail, t in (("", list), ("[]", dict), ("[].namePattern", str))},
    },
    "ImageSecurityPolicy": {
        "spec": dict, "spec.attestationAuthorityName": str, "spec.attestationAuthorityNames": list,
        "spec.attestationAuthorityNames[]": str,
        **{f"spec.{f}{tail}": t for f in ("imageAllowlist", "imageAllowList", "imageWhitelist")
           for tail, t in (("", list), ("[]", str))},
    },
}


_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")


def _type_errors(value: Any, types: Mapping[str, type | tuple[type, ...]], path: str = "") -> list[str]:
    """Where ``value`` holds a field of another JSON type than kritis' Go type declares (null is the
    zero value, as Go decodes it)."""
    want = types.get(path) if path else dict
    if value is None:
        return []
    if want is not None and (not isinstance(value, want) or (isinstance(value, bool) and bool not in (
            want if isinstance(want, tuple) else (want,)))):
        return [f"{path or 'the document'}: a {type(value).__name__}, kritis reads a {getattr(want, '__name__', want)}"]
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            child = f"{path}.{k}" if path else str(k)
            if any(t == child or t.startswith((child + ".", child + "[]")) for t in types):
                out += _type_errors(v, types, child)
    elif isinstance(value, list):
        for item in value:
            out += _type_errors(item, types, path + "[]")
    return out


def _meta(doc: Mapping[str, Any]) -> tuple[str, str]:
    meta = doc.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _one_pkix_pem(ctx: Any, name: str, where: str, pem: str) -> bool:
    """kritis (attestlib's PKIX key parsing) refuses a PEM that is not exactly one public key: a second
    block or trailing data makes the key invalid, never "the first key"."""
    try:
        parse_pkix_pem(pem.encode())
    except ParseError as exc:
        ctx.warn(name, f"{where}: {exc}: ignored")
        return False
    return True


def _authority_keys(ctx: Any, name: str, spec: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(PEM keys, key id hints) of an AttestationAuthority; warnings via ctx."""
    keys: list[str] = []
    ids: list[str] = []
    for i, pk in enumerate(spec.get("publicKeys") or []):
        if not isinstance(pk, Mapping):
            continue
        ktype = str(pk.get("keyType") or "PKIX").upper()
        if pk.get("keyId"):
            ids.append(str(pk["keyId"]))
        if ktype == "PGP" or pk.get("asciiArmoredPgpPublicKey"):
            ctx.warn(name, f"publicKeys[{i}] is a PGP key: not supported, ignored")
            continue
        if ktype != "PKIX":  # kritis' validatePublicKeyType: an unknown type is not a key
            ctx.warn(name, f"publicKeys[{i}] has keyType {ktype[:40]!r}, not PKIX: ignored")
            continue
        pem = (pk.get("pkixPublicKey") or {}).get("publicKeyPem")
        if not pem:
            ctx.warn(name, f"publicKeys[{i}] has no pkixPublicKey.publicKeyPem")
        elif _one_pkix_pem(ctx, name, f"publicKeys[{i}]", str(pem)):
            keys.append(str(pem))
    if spec.get("publicKeyData"):
        raw = str(spec["publicKeyData"]).strip()
        text = raw
        if "-----BEGIN" not in raw:
            try:
                text = base64.b64decode(raw, validate=True).decode("utf-8")
            except (binascii.Error, ValueError, UnicodeDecodeError):
                ctx.warn(name, "publicKeyData is neither PEM nor base64 of a PEM key: ignored")
                text = ""
        if "BEGIN PGP" in text:
            ctx.warn(name, "publicKeyData is a PGP key: not supported, ignored")
        elif "-----BEGIN" in text:
            if _one_pkix_pem(ctx, name, "publicKeyData", text):
                keys.append(text)
        elif text.strip().startswith(("awskms://", "gcpkms://", "azurekms://", "hashivault://")):
            # kritis reads a key here, never a KMS reference. Following one would be looser than kritis,
            # and would let whoever may write an authority in a namespace point sigaudit's cloud
            # credentials at an endpoint of their choosing (awskms://HOST/…, azurekms://HOST/…).
            ctx.warn(name, "publicKeyData names a KMS key, which kritis does not read: ignored")
        elif text:
            ctx.warn(name, "publicKeyData is not a PEM public key: ignored")
    if spec.get("publicKeyId"):  # ACK's fork
        ids.append(str(spec["publicKeyId"]))
    return keys, ids


_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


def _registry_like(component: str) -> bool:
    """go-containerregistry's test for a registry host as the first path component."""
    return "." in component or ":" in component or component == "localhost"


def name_pattern_matcher(patterns: Sequence[str]) -> ImageMatcher:
    """kritis' ``imageNamePatternMatch`` (pkg/kritis/util/allowlist.go), Binary Authorization's
    ``admissionWhitelistPatterns``: a pattern is the image exactly as written, or ends in ``*``, which
    matches any characters except ``/``. A ``*`` or ``?`` anywhere else is a literal (so matches no
    image), and a plain name does not match its other tags.

    kritis compares the pod's image string; sigaudit matches the normalised forms of the reference
    the image runs under (``repo:tag``, ``repo@digest``, ``repo:tag@digest``; a name without tag is
    ``:latest``), so Docker Hub's spellings are one image. Never wider than kritis' own matching."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for p in patterns:
        if p.endswith("*"):
            prefix = p[:-1]
            first = prefix.split("/", 1)[0]
            if first in _HUB_ALIASES and "/" in prefix:
                prefixes.append("docker.io/" + prefix.split("/", 1)[1])
            elif "/" in prefix and _registry_like(first):
                prefixes.append(prefix)
            else:  # Docker Hub, written without its registry (nginx*, library/nginx*, bitnami/*)
                prefixes.append(("docker.io/" if "/" in prefix else "docker.io/library/") + prefix)
            continue
        try:
            exact.add(str(parse_reference(p)))
        except ParseError:
            continue  # not an image name: kritis' exact comparison never matches it

    raw_exact = {p for p in patterns if not p.endswith("*")}
    raw_prefixes = [p[:-1] for p in patterns if p.endswith("*")]

    def kritis_match(image: str, names: set[str], starts: list[str]) -> bool:
        return image in names or any(image.startswith(p) and "/" not in image[len(p) :] for p in starts)

    def matches(ref: ImageReference | None, text: str) -> bool:
        if ref is None:  # the image as written could not be parsed: kritis' comparison, on the text
            return kritis_match(text, raw_exact, raw_prefixes)
        spellings = [f"{ref.repo}:{ref.tag}"] if ref.tag else []
        if ref.digest:
            spellings.append(f"{ref.repo}@{ref.digest}")
            if ref.tag:
                spellings.append(f"{ref.repo}:{ref.tag}@{ref.digest}")
        return any(kritis_match(s, exact, prefixes) for s in spellings)

    return matches


def _allowlist(ns: str, patterns: Sequence[str], source: str) -> list[Exemption]:
    """kritis allowlist patterns as one exemption of the namespace, with kritis' matching
    (:func:`name_pattern_matcher`), never sigaudit's wider globs (``*`` there also matches ``/``)."""
    good: list[str] = []
    for p in patterns:
        if not p:
            break  # kritis stops at an empty pattern (an error): the patterns after it are never consulted
        if p.strip() == p and "[" not in p and "]" not in p:  # else it names no image: never matches
            good.append(p)
    if not good:
        return []
    exemption = Exemption.model_validate(
        {"images": good, "namespaces": [ns], "reason": f"{ALLOWLIST_REASON} ({source})", "until": FOREVER}
    )
    return [exemption.matching_with(name_pattern_matcher(good))]


def _allowlist_field(spec: Mapping[str, Any], spellings: Sequence[str], notes: list[str]) -> list[Any]:
    """An allowlist that kritis versions spell differently (GenericAttestationPolicy
    ``admissionWhitelistPatterns`` in pkg/kritis/apis/kritis/v1beta1/genericattestation.go, later
    ``admissionAllowlistPatterns``; the ImageSecurityPolicy CRD's ``imageAllowList``, Go's
    case-insensitive ``imageAllowlist``, the former ``imageWhitelist``). Which one the cluster's kritis
    reads depends on its version, so under two spellings that differ (an empty one included) neither
    exempts: taking either could be looser than kritis. Not a list: nothing (with a note)."""
    present = [n for n in spellings if n in spec]
    if not present:
        return []
    values = [spec[n] or [] for n in present]
    if any(v != values[0] for v in values[1:]):
        notes.append(f"{' and '.join(present)} differ: which one kritis reads depends on its version, "
                     "so neither exempts")
        return []
    if not isinstance(values[0], list):
        notes.append(f"{present[0]} is not a list: it exempts nothing")
        return []
    return values[0]


def _gap_allowlists(ns: str, listed: Sequence[tuple[str, str, list[str]]]) -> list[Exemption]:
    """The GenericAttestationPolicies' patterns of one namespace, flattened as kritis' ReviewGAP does
    (``generateGapAllowlist``, pkg/kritis/review/review.go: every policy's patterns, in the order the API
    lists the policies — by name) and matched in that order, so an empty pattern stops the patterns of
    every policy after it too, not only its own."""
    out: list[Exemption] = []
    for _name, rule, patterns in sorted(listed, key=lambda x: x[0]):
        kept = patterns[: patterns.index("")] if "" in patterns else patterns
        out += _allowlist(ns, kept, rule)
        if len(kept) < len(patterns):
            break
    return out


def kritis_rules(ctx: Any, docs: Sequence[Mapping[str, Any]]) -> list[CompiledRule]:
    """``ctx`` is a :class:`scanner.policy.imports.ImportContext`. Allowlists become waivers of the rules
    kritis applies them to (an ImageSecurityPolicy's to its own rule; GenericAttestationPolicies' to every
    GenericAttestationPolicy of the namespace, as kritis flattens them), never of another policy's rule."""
    grafeas = os.environ.get("SIGAUDIT_GRAFEAS_URL", DEFAULT_GRAFEAS).rstrip("/")
    authorities: dict[tuple[str, str], Mapping[str, Any]] = {}
    malformed: dict[int, list[str]] = {}  # id(doc) -> why kritis could not decode it
    for d in docs:
        if d.get("kind") not in _KINDS:
            continue
        bad_meta = _type_errors({"metadata": d.get("metadata")}, _META_TYPES)
        if not bad_meta:
            ns, name = _meta(d)
            if not _DNS_LABEL.fullmatch(ns):  # a namespace is a label: never a glob ("*", "prod*") or junk
                bad_meta = [f"metadata.namespace {ns[:80]!r} is not a Kubernetes namespace name"]
            elif not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
                bad_meta = [f"metadata.name {name[:80]!r} is not a Kubernetes object name"]
        if bad_meta:  # the API server never serves such an object: a policy file to correct
            raise ConfigError(f"{d.get('kind')}: {'; '.join(bad_meta)}", source=ctx.source)
        malformed[id(d)] = _type_errors(d, _TYPES[str(d["kind"])])[:5]
        if d.get("kind") == "AttestationAuthority":
            if _meta(d) in authorities:  # the API holds one per name; a file could shadow one with another
                raise ConfigError(f"AttestationAuthority {'/'.join(_meta(d))} is defined twice: give each once",
                                  source=ctx.source)
            authorities[_meta(d)] = d

    def verifier_for(ns: str, auth_name: str, rule: str, notes: list[str], refusals: list[str]) -> Verifier | None:
        # kritis looks the authority up in the policy's own namespace, never in another one.
        doc = authorities.get((ns, auth_name))
        if doc is None:
            refusals.append(f"AttestationAuthority {ns}/{auth_name} not found")
            return None
        if malformed[id(doc)]:
            refusals.append(f"AttestationAuthority {ns}/{auth_name} is malformed: {'; '.join(malformed[id(doc)])}")
            return None
        fields = classify(doc, FIELDS["AttestationAuthority"])
        notes += [f"AttestationAuthority {auth_name}: {n}" for n in fields.reported]
        if fields.refused:
            refusals += [f"AttestationAuthority {auth_name}: {r}" for r in fields.refused]
            return None
        spec = doc.get("spec") or {}
        note = str(spec.get("noteReference") or "")
        m = _NOTE.match(note)
        if not m:
            # Refused where it is used, not the whole import: one namespace's resource never stops the
            # audit of the others.
            refusals.append(f"AttestationAuthority {ns}/{auth_name}: noteReference {note[:200]!r} is not "
                            "projects/PROJECT/notes/NOTE")
            return None
        keys, ids = _authority_keys(ctx, rule, spec)
        if not keys:
            refusals.append(f"AttestationAuthority {auth_name} has no usable PKIX key")
            return None
        att = AttestationVerifierSpec.model_validate(
            {
                "attestor": auth_name,
                "publicKeys": keys,
                "source": f"{grafeas}/v1beta1/projects/{m.group(1)}",
                "noteName": f"projects/{m.group(1)}/notes/{m.group(2)}",
                "publicKeyIds": ids,
            }
        )
        v: Verifier = ctx.loader.build_verifier(
            VerifierSpec(attestation=att), ctx.base_dir, f"{rule}.{auth_name}", rule
        )
        return v

    rules: list[CompiledRule] = []
    gaps: dict[str, list[int]] = {}  # namespace -> its GenericAttestationPolicies' rules (indices)
    # namespace -> (name, rule, namePatterns) of its GenericAttestationPolicies, flattened below as kritis does
    gap_patterns: dict[str, list[tuple[str, str, list[str]]]] = {}
    for d in docs:
        kind = d.get("kind")
        if kind not in ("GenericAttestationPolicy", "ImageSecurityPolicy"):
            continue
        ns, name = _meta(d)
        rule = f"kritis:{ns}/{name}"
        fields = classify(d, FIELDS[str(kind)])
        notes: list[str] = list(fields.reported)
        refusals: list[str] = list(fields.refused) + [f"malformed: {why}" for why in malformed[id(d)]]
        # A malformed policy is refused (its images are error) and nothing of it is read: not its
        # authorities, nor its allowlist (which then exempts nothing).
        spec = {} if malformed[id(d)] else d.get("spec") or {}
        if kind == "GenericAttestationPolicy":
            names = [str(n) for n in spec.get("attestationAuthorityNames") or []]
            patterns = _allowlist_field(spec, ("admissionAllowlistPatterns", "admissionWhitelistPatterns"), notes)
            allow = [str(p.get("namePattern") or "") for p in patterns if isinstance(p, Mapping)]
        else:
            names = [str(n) for n in spec.get("attestationAuthorityNames") or []]
            if spec.get("attestationAuthorityName"):
                names.append(str(spec["attestationAuthorityName"]))
            # kritis compares an ImageSecurityPolicy's allowlist entries as exact strings: one with a `*`
            # names no image (the trailing wildcard is a GenericAttestationPolicy pattern only).
            listed = _allowlist_field(spec, ("imageAllowlist", "imageAllowList", "imageWhitelist"), notes)
            entries = [str(p) for p in listed]
            allow = [p for p in entries if "*" not in p]
            for p in entries:
                if "*" in p:
                    ctx.warn(rule, f"imageAllowlist entry {p!r} exempts nothing: kritis compares entries exactly, "
                                   "and no image is named with a '*'")
        if kind == "GenericAttestationPolicy":
            gap_patterns.setdefault(ns, []).append((name, rule, allow))
            allowlisted = []
        else:
            allowlisted = _allowlist(ns, allow, rule)
        if not names and not malformed[id(d)]:
            for n in notes:
                ctx.warn(rule, n)
            ctx.warn(rule, "no attestation authority named: nothing to audit")
            continue
        # Every policy of the namespace applies and must hold: kritis reviews every ImageSecurityPolicy
        # and every GenericAttestationPolicy of the pod's namespace (pkg/kritis/review/review.go).
        if kind == "GenericAttestationPolicy":
            gaps.setdefault(ns, []).append(len(rules))
        verifiers = []
        if not refusals:
            for n in dict.fromkeys(names):
                v = verifier_for(ns, n, rule, notes, refusals)
                if v is not None:
                    verifiers.append(v)
        for n in notes:
            ctx.warn(rule, n)
        for why in refusals:
            ctx.warn(rule, f"refused: {why}")
        rules.append(
            CompiledRule(
                name=rule,
                images=("*",),
                namespaces=(ns,),
                verifiers=() if refusals else tuple(verifiers),
                source=f"kritis:{kind}/{name}",
                count=len(verifiers) or 1,  # attested by every authority the policy names
                notes=tuple(dict.fromkeys(notes)),
                refused=tuple(dict.fromkeys(refusals)),
                namespace=ns,
                waivers=() if kind == "GenericAttestationPolicy" else tuple(allowlisted),
                admission=AdmissionPolicy(
                    source="kritis", controller=Controller.KRITIS, kind=str(kind), name=name, namespace=ns,
                    created_at=parse_kube_time((d.get("metadata") or {}).get("creationTimestamp")
                                               if isinstance(d.get("metadata"), Mapping) else None),
                ),
            )
        )
    # kritis' ReviewGAP keeps only the last policy's answer (its loop overwrites it), so which one decides
    # depends on the order the API lists them; requiring every one is never looser.
    note = "kritis decides on the last GenericAttestationPolicy of the namespace it lists; sigaudit requires each"
    gap_allowlists = {ns: _gap_allowlists(ns, listed) for ns, listed in gap_patterns.items()}
    for ns, indices in gaps.items():
        for i in indices:
            r = rules[i]
            if len(indices) > 1:
                ctx.warn(r.name, note)
                r = replace(r, notes=(*r.notes, note))
            rules[i] = replace(r, waivers=tuple(gap_allowlists.get(ns, ())))
    return rules
