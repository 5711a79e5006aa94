"""Kyverno ``ImageValidatingPolicy`` (policies.kyverno.io/v1) as native rules.

Semantics followed (kyverno ``pkg/image/verification/evaluator/policy.go``, ``pkg/cel/libs/imageverify``,
``pkg/image/verifiers/ivpol/cosign/opts.go`` at the commit named in tests/data/upstream-crds/PROVENANCE.md):

* ``matchImageReferences``: gobwas globs (``*`` any run, slashes included; ``?``; ``[...]``;
  ``{a,b}``) over the image as the pod spec writes it; no entry means every image. The pod spec's
  spelling is not known to an audit, so a glob is tried on every spelling of the running reference
  (short Docker Hub names included): the rule applies at least wherever Kyverno's would.
* ``attestors`` are named; the ``validations`` (CEL) say which must verify. Only the documented shapes
  are recognised (:func:`_parse_validation`), each mapped exactly:

  - ``images.containers.map(image, verifyImageSignatures(image, [attestors.a, attestors.b])).all(e, e > 0)``
    (or ``.all(image, verifyImageSignatures(...) > 0)``; ``>= n``, ``> n-1``, ``== <all of them>``) — a
    requirement set: ``n`` of those attestors' verifiers;
  - the same with ``verifyAttestationSignatures(image, attestations.x, [attestors...])`` — ``n`` of the
    attestors must have a verified in-toto attestation of ``x``'s predicate type;
  - ``images.containers.map(image, <expression over extractPayload(image, attestations.x)>).all(e, e)``
    — a CEL condition over the verified statement of ``x`` (scanner/verify/conditions.py's
    ``statement``), on every attestor that verifies ``x``.

  Any other expression is refused at import (a ConfigError naming the policy and the expression): an
  expression is never dropped or approximated.
* ``validationActions``: ``Deny`` or ``Audit`` — violations count; ``Warn`` alone — reported, not counted.
* ``images.containers`` holds only the regular containers in Kyverno; sigaudit's rule judges every
  container of a pod that runs a matching image (stricter for init and ephemeral containers).

What every field of the CRD becomes is declared in :data:`FIELDS` (see scanner/policy/fields.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scanner.clock import parse_kube_time
from scanner.errors import ConfigError
from scanner.inventory.references import _HUB_ALIASES, DOCKER_HUB
from scanner.models import ImageReference
from scanner.policy.admission import AdmissionFilter, AdmissionMode, AdmissionPolicy, AdmissionScope, Controller
from scanner.policy.fields import FieldTable, classify, mapped, refused, reported, table
from scanner.policy.imports import ImportContext, _notation_from_certs, _pems
from scanner.policy.loader import KMS_SCHEMES, CompiledRule
from scanner.policy.schema import FULCIO_EXTENSIONS, CosignVerifierSpec, VerifierSpec, extension_name
from scanner.verify import sources as trust_sources
from scanner.verify.base import Verifier
from scanner.verify.conditions import ConditionError, _code_only, compile_condition

API_GROUP = "policies.kyverno.io"
KIND = "ImageValidatingPolicy"

_ADMISSION = "admission-controller behaviour: an audit judges every running pod whatever it says"
_OFFLINE = "not contacted (audits run offline): the transparency-log entry attached to the signature is verified"
_ELSEWHERE = (
    "signatures are looked up in the image's own repository: signatures kept only elsewhere are not "
    "found (unsigned), never accepted"
)
_NOT_EVALUATED = "not evaluated: the policy applies to every pod running a matching image"
_EXPRESSION = "a CEL expression producing trust material is not evaluated"
_C = "spec.attestors[].cosign"
_MC = "spec.matchConstraints"


def _rules_fields(block: str, exclude: bool) -> dict[str, Any]:
    why = ("not evaluated: an exclusion is dropped, so the policy applies more widely" if exclude
           else "every running pod is audited, whatever kinds, operations or names the rule lists")
    f = reported if exclude else mapped
    return {f"{_MC}.{block}[].{k}": f(why)
            for k in ("apiGroups", "apiVersions", "operations", "resourceNames", "resources", "scope")}


FIELDS: FieldTable = table(
    {
        "apiVersion": mapped(),
        "kind": mapped(),
        "metadata": mapped("the name identifies the rule"),
        "status": mapped("written by Kyverno"),
        "spec.failurePolicy": mapped(_ADMISSION),
        "spec.webhookConfiguration.timeoutSeconds": mapped(_ADMISSION),
        "spec.evaluation.admission.enabled": mapped(_ADMISSION),
        "spec.evaluation.background.enabled": mapped(_ADMISSION),
        "spec.evaluation.mode": mapped("Kubernetes (pods): the running pods are audited"),
        "spec.autogen.podControllers.controllers": mapped("the pods the controllers create are audited"),
        "spec.auditAnnotations[].key": mapped("annotations of Kyverno's audit events"),
        "spec.auditAnnotations[].valueExpression": mapped("annotations of Kyverno's audit events"),
        **_rules_fields("resourceRules", exclude=False),
        **_rules_fields("excludeResourceRules", exclude=True),
        f"{_MC}.matchPolicy": mapped(_ADMISSION),
        f"{_MC}.namespaceSelector": reported(_NOT_EVALUATED + " in every namespace"),
        f"{_MC}.objectSelector": reported(_NOT_EVALUATED),
        "spec.matchConditions[].name": reported(_NOT_EVALUATED),
        "spec.matchConditions[].expression": reported(_NOT_EVALUATED),
        "spec.matchImageReferences[].glob": mapped("Kyverno's glob, tried on every spelling of the running image"),
        "spec.matchImageReferences[].expression": refused("CEL image matching is not evaluated"),
        "spec.images[].name": reported("custom image extractors: the pods' containers are audited; a validation "
                                       "over another image list is refused"),
        "spec.images[].expression": reported("custom image extractors: the pods' containers are audited; a "
                                             "validation over another image list is refused"),
        "spec.variables[].name": reported("not evaluated; a validation that uses a variable is refused"),
        "spec.variables[].expression": reported("not evaluated; a validation that uses a variable is refused"),
        "spec.validationActions": mapped("Deny, Audit: violations count; Warn alone: reported, not counted"),
        "spec.validationConfigurations.mutateDigest": mapped(_ADMISSION),
        "spec.validationConfigurations.verifyDigest": mapped("sigaudit always verifies the running digest"),
        "spec.validationConfigurations.required": mapped(
            "the validations decide; false only drops Kyverno's catch-all check, never the validations"),
        "spec.credentials.providers": reported("registry credentials come from sigaudit's own configuration"),
        "spec.credentials.secrets": reported("registry credentials come from sigaudit's own configuration"),
        "spec.credentials.allowInsecureRegistry": reported(
            "insecure registries come from sigaudit's own configuration (its policy's insecureRegistries)"),
        "spec.validations[].expression": mapped("the documented shapes; any other expression refuses the import"),
        "spec.validations[].message": mapped("the admission response's text: the verdict's reasons say what failed"),
        "spec.validations[].messageExpression": mapped("the admission response's text: the verdict's reasons say "
                                                       "what failed"),
        "spec.validations[].reason": mapped("the admission response's reason"),
        "spec.attestations[].name": mapped(),
        "spec.attestations[].intoto.type": mapped("the predicate type of a verified in-toto attestation"),
        "spec.attestations[].referrer.type": mapped("refused when a validation uses it (OCI referrer artifacts "
                                                    "signed by notation are not verified)"),
        "spec.attestors[].name": mapped(),
        f"{_C}.key.data": mapped("inline PEM only"),
        f"{_C}.key.kms": mapped(),
        f"{_C}.key.expression": refused(_EXPRESSION),
        f"{_C}.key.hashAlgorithm": reported(
            "only sha256 is used: a signature made with another digest does not verify"),
        f"{_C}.keyless.identities[].issuer": mapped("exact"),
        f"{_C}.keyless.identities[].subject": mapped("exact"),
        f"{_C}.keyless.identities[].issuerRegExp": mapped("must match the whole issuer (stricter than Go's "
                                                          "unanchored match)"),
        f"{_C}.keyless.identities[].subjectRegExp": mapped("must match the whole subject (stricter than Go's "
                                                           "unanchored match)"),
        f"{_C}.keyless.identities[].subjectExpression": refused("a CEL subject is not evaluated"),
        f"{_C}.keyless.additionalExtensions": mapped(
            "Fulcio certificate extensions required exactly (by name or OID), on every identity"),
        f"{_C}.keyless.roots": mapped("inline PEM: the Fulcio roots"),
        f"{_C}.certificate.cert.value": mapped("the certificate's key verifies the signature"),
        f"{_C}.certificate.cert.expression": refused(_EXPRESSION),
        f"{_C}.certificate.certChain.value": refused("the chain of a Cosign certificate is not validated"),
        f"{_C}.certificate.certChain.expression": refused(_EXPRESSION),
        f"{_C}.ctlog.url": reported(_OFFLINE),
        f"{_C}.ctlog.rekorPubKey": mapped(),
        f"{_C}.ctlog.ctLogPubKey": mapped("keyless: the CT log key"),
        f"{_C}.ctlog.insecureIgnoreTlog": mapped(),
        f"{_C}.ctlog.insecureIgnoreSCT": mapped(),
        f"{_C}.ctlog.tsaCertChain": refused("timestamp authority chains are not supported by this importer"),
        f"{_C}.trustedRoot.value": mapped("a trusted_root.json"),
        f"{_C}.trustedRoot.expression": refused(_EXPRESSION),
        f"{_C}.tuf.mirror": refused("a TUF-served trust root is not supported: give trustedRoot.value"),
        f"{_C}.tuf.root.data": refused("a TUF-served trust root is not supported: give trustedRoot.value"),
        f"{_C}.tuf.root.path": refused("a TUF-served trust root is not supported: give trustedRoot.value"),
        f"{_C}.source.repository": reported(_ELSEWHERE),
        f"{_C}.source.tagPrefix": reported(_ELSEWHERE),
        f"{_C}.source.PullSecrets[].name": reported("registry credentials come from sigaudit's own configuration"),
        f"{_C}.annotations": mapped("signature annotations that must be present (cosign -a)"),
        "spec.attestors[].notary.certs.value": mapped("the notation trust store (any identity)"),
        "spec.attestors[].notary.certs.expression": refused(_EXPRESSION),
        "spec.attestors[].notary.tsaCerts.value": mapped("the notation TSA trust store"),
        "spec.attestors[].notary.tsaCerts.expression": refused(_EXPRESSION),
    }
)


# ----------------------------------------------------------------------------------------------
# shapes: every value the importer reads has the type Kyverno's schema gives it, or the document is refused
# (exit 2, naming the field) before anything is mapped; a malformed document is never read letter by letter,
# dropped, or a crash.

_C_SHAPES = {
    "": dict, ".name": str, ".cosign": dict, ".notary": dict,
    ".cosign.key": dict, ".cosign.key.data": str, ".cosign.key.kms": str,
    ".cosign.keyless": dict, ".cosign.keyless.identities": list, ".cosign.keyless.identities[]": dict,
    **{f".cosign.keyless.identities[].{k}": str for k in ("issuer", "subject", "issuerRegExp", "subjectRegExp")},
    ".cosign.keyless.additionalExtensions": dict, ".cosign.keyless.roots": str,
    ".cosign.ctlog": dict, ".cosign.ctlog.rekorPubKey": str, ".cosign.ctlog.ctLogPubKey": str,
    ".cosign.ctlog.insecureIgnoreTlog": bool, ".cosign.ctlog.insecureIgnoreSCT": bool,
    ".cosign.trustedRoot": dict, ".cosign.trustedRoot.value": str,
    ".cosign.certificate": dict, ".cosign.certificate.cert": dict, ".cosign.certificate.cert.value": str,
    ".cosign.annotations": dict, ".notary.certs": dict, ".notary.certs.value": str,
    ".notary.tsaCerts": dict, ".notary.tsaCerts.value": str,
}
IVP_SHAPES: dict[str, type] = {
    "metadata": dict, "metadata.name": str, "spec": dict,
    "spec.matchImageReferences": list, "spec.matchImageReferences[]": dict, "spec.matchImageReferences[].glob": str,
    "spec.attestors": list, **{f"spec.attestors[]{k}": v for k, v in _C_SHAPES.items()},
    "spec.attestations": list, "spec.attestations[]": dict, "spec.attestations[].name": str,
    "spec.attestations[].intoto": dict, "spec.attestations[].intoto.type": str, "spec.attestations[].referrer": dict,
    "spec.validations": list, "spec.validations[]": dict, "spec.validations[].expression": str,
    "spec.validationActions": list, "spec.validationActions[]": str,
    "spec.matchConstraints": dict, "spec.matchConstraints.resourceRules": list,
    "spec.matchConstraints.resourceRules[]": dict, "spec.matchConstraints.resourceRules[].resources": list,
    "spec.matchConstraints.excludeResourceRules": list, "spec.matchConstraints.excludeResourceRules[]": dict,
    "spec.matchConstraints.excludeResourceRules[].resources": list,
    "spec.evaluation": dict, "spec.evaluation.admission": dict, "spec.failurePolicy": str,
    "spec.matchConditions": list,
}
_META_SHAPES: dict[str, type] = {"metadata": dict, "metadata.name": str, "metadata.namespace": str,
                                 "metadata.annotations": dict, "spec": dict}
EXCEPTION_SHAPES: dict[str, type] = {
    **_META_SHAPES,
    "spec.exceptions": list, "spec.exceptions[]": dict, "spec.exceptions[].policyName": str,
    "spec.exceptions[].ruleNames": list, "spec.exceptions[].ruleNames[]": str, "spec.background": bool,
    "spec.match": dict,
    **{k.replace("FORM", form): v for form in ("any", "all") for k, v in {
        "spec.match.FORM": list, "spec.match.FORM[]": dict, "spec.match.FORM[].resources": dict,
        "spec.match.FORM[].resources.kinds": list, "spec.match.FORM[].resources.kinds[]": str,
        "spec.match.FORM[].resources.namespaces": list, "spec.match.FORM[].resources.namespaces[]": str,
        "spec.match.FORM[].resources.operations": list, "spec.match.FORM[].resources.operations[]": str,
    }.items()},
}
CEL_EXCEPTION_SHAPES: dict[str, type] = {
    **_META_SHAPES,
    "spec.policyRefs": list, "spec.policyRefs[]": dict, "spec.policyRefs[].name": str, "spec.policyRefs[].kind": str,
    "spec.images": list, "spec.images[]": str, "spec.expiresAt": str, "spec.matchConditions": list,
}


def _at(node: Any, segs: list[str], where: str) -> Iterable[tuple[str, Any]]:
    """(concrete path, value) of every value set at a declared path (``[]``: each item of a list)."""
    if not segs:
        yield where, node
        return
    seg = segs[0]
    key = seg.removesuffix("[]")
    if not isinstance(node, Mapping) or node.get(key) is None:
        return  # absent, or under a value of the wrong type (reported at its own, shorter path)
    value = node[key]
    here = f"{where}.{key}" if where else key
    if seg.endswith("[]"):
        if isinstance(value, list):
            for n, item in enumerate(value):
                yield from _at(item, segs[1:], f"{here}[{n}]") if segs[1:] else [(f"{here}[{n}]", item)]
        return
    yield from _at(value, segs[1:], here)


def check_shapes(doc: Mapping[str, Any], shapes: Mapping[str, type], label: str, source: str) -> None:
    for path, want in shapes.items():
        for where, value in _at(doc, path.split("."), ""):
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ConfigError(f"{label}: {where} is a {type(value).__name__}, not a {want.__name__} (Kyverno's "
                                  "schema rejects it): the document is refused", source=source)


# ----------------------------------------------------------------------------------------------
# matchImageReferences


MAX_GLOB_CHARS = 1024
MAX_GLOB_EXPANSION = 256  # alternatives a glob's {a,b} groups may expand to

_STAR = None  # a token of a compiled glob: None is "*", a callable matches one character


def _alternatives(glob: str) -> list[str]:
    """The glob with its ``{a,b}`` groups expanded (gobwas' "any of"; nested groups too)."""
    depth, start, i = 0, -1, 0
    while i < len(glob):
        ch = glob[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            end = glob.find("]", i + 1)
            if end < 0:
                raise ValueError("an unclosed [")
            i = end + 1
            continue
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                inner, parts, d, last = glob[start + 1 : i], [], 0, 0
                k = 0
                while k < len(inner):
                    c = inner[k]
                    if c == "\\":
                        k += 2
                        continue
                    d += c == "{"
                    d -= c == "}"
                    if c == "," and d == 0:
                        parts.append(inner[last:k])
                        last = k + 1
                    k += 1
                parts.append(inner[last:])
                out: list[str] = []
                for part in parts:
                    for rest in _alternatives(part + glob[i + 1 :]):
                        out.append(glob[:start] + rest)
                        if len(out) > MAX_GLOB_EXPANSION:
                            raise ValueError(f"its {{...}} groups expand to more than {MAX_GLOB_EXPANSION} patterns")
                return out
        i += 1
    if depth:
        raise ValueError("an unclosed {")
    return [glob]


def _tokens(glob: str) -> list[Callable[[str], bool] | None]:
    out: list[Callable[[str], bool] | None] = []
    i, n = 0, len(glob)
    while i < n:
        ch = glob[i]
        if ch == "\\":
            if i + 1 >= n:
                raise ValueError("a trailing backslash")
            out.append(_literal(glob[i + 1]))
            i += 2
            continue
        if ch == "*":
            if not out or out[-1] is not _STAR:  # consecutive stars are one
                out.append(_STAR)
        elif ch == "?":
            out.append(_any_char)
        elif ch == "[":
            end = glob.find("]", i + 1)
            if end < 0:
                raise ValueError("an unclosed [")
            body = glob[i + 1 : end]
            neg = body.startswith("!")
            body = body[1:] if neg else body
            if not body:
                raise ValueError("an empty []")
            ranges: list[tuple[str, str]] = []
            j = 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    ranges.append((body[j], body[j + 2]))
                    j += 3
                else:
                    ranges.append((body[j], body[j]))
                    j += 1
            out.append(_char_class(tuple(ranges), neg))
            i = end + 1
            continue
        else:
            out.append(_literal(ch))
        i += 1
    return out


def _literal(lit: str) -> Callable[[str], bool]:
    return lambda c: c == lit


def _any_char(_c: str) -> bool:
    return True


def _char_class(ranges: tuple[tuple[str, str], ...], negated: bool) -> Callable[[str], bool]:
    return lambda c: any(lo <= c <= hi for lo, hi in ranges) != negated


def _END(_c: str) -> bool:  # past the last token: matches nothing
    return False


def _match(tokens: list[Callable[[str], bool] | None], text: str) -> bool:
    """Whether single-character tokens and stars match the whole text: the wildcard matcher that goes back
    only to the last star (O(len(text) x len(tokens))), never a backtracking regular expression, which a
    glob of a few stars makes take minutes (a policy would hold the scan past its deadline)."""
    i = j = 0
    star, mark = -1, 0
    while i < len(text):
        tok = tokens[j] if j < len(tokens) else _END
        if tok is _STAR:
            star, mark = j, i
            j += 1
        elif tok is not _END and tok is not None and tok(text[i]):
            i += 1
            j += 1
        elif star >= 0:
            j, mark = star + 1, mark + 1
            i = mark
        else:
            return False
    while j < len(tokens) and tokens[j] is _STAR:
        j += 1
    return j == len(tokens)


def compile_glob(glob: str) -> Callable[[str], bool]:
    """A gobwas/glob pattern compiled without separators, as Kyverno does (``*`` any run, slashes included;
    ``?``; ``[a-z]``, ``[!a-z]``; ``{a,b}``; ``\\`` escapes); ValueError for one gobwas would reject or
    one too large."""
    if len(glob) > MAX_GLOB_CHARS:
        raise ValueError(f"longer than {MAX_GLOB_CHARS} characters")
    compiled = [_tokens(g) for g in _alternatives(glob)]
    return lambda text: any(_match(t, text) for t in compiled)


def _spellings(ref: ImageReference) -> list[str]:
    """Every way a pod spec may have written the running image (the tag may be absent, the digest
    present or not; Docker Hub names short or long)."""
    repos = [ref.repo]
    if ref.registry in DOCKER_HUB_HOSTS:
        # every host name the inventory normalises to Docker Hub (scanner/inventory/references.py), with
        # and without the implicit library/ of an official image, and the short names
        paths = [ref.repository]
        if ref.repository.startswith("library/"):
            paths.append(ref.repository.removeprefix("library/"))
        repos += [f"{host}/{path}" for host in DOCKER_HUB_HOSTS for path in paths] + paths
        repos = list(dict.fromkeys(repos))
    out: list[str] = []
    for r in repos:
        out.append(r)
        if ref.tag:
            out.append(f"{r}:{ref.tag}")
        if ref.digest:
            out.append(f"{r}@{ref.digest}")
            if ref.tag:
                out.append(f"{r}:{ref.tag}@{ref.digest}")
    return out


# the host names the inventory reads as Docker Hub: one list, so a new alias there is a spelling here
DOCKER_HUB_HOSTS = (DOCKER_HUB, *sorted(_HUB_ALIASES - {DOCKER_HUB}))


def glob_matcher(globs: Iterable[str], fold_case: bool = False) -> Callable[[ImageReference], bool]:
    """Whether a running image matches one of ``globs`` in some spelling a pod spec may have used.
    ``fold_case`` (a rule's reach, never an exemption's): the inventory lowercases the registry host, which
    a pod spec may write in capitals (Kyverno's glob is case-sensitive over the spec's text), so the glob
    is also tried lowercased: the rule applies at least wherever Kyverno's would."""
    globs = list(globs)
    if fold_case:
        globs += [g.lower() for g in globs if g.lower() != g]
    patterns = [compile_glob(g) for g in globs]

    def match(ref: ImageReference) -> bool:
        if not patterns:
            return True  # Kyverno: no matchImageReferences means every image
        return any(p(s) for p in patterns for s in _spellings(ref))

    return match


# ----------------------------------------------------------------------------------------------
# validations


@dataclass(frozen=True, slots=True)
class Requirement:
    """``count`` of ``attestors`` verify the image (``attestation`` None) or that attestation."""

    attestors: tuple[str, ...]
    count: int
    attestation: str | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """A CEL condition over the verified statement of ``attestation`` (sigaudit's ``statement``)."""

    attestation: str
    expression: str


_WS = re.compile(r"\s+")
_ID = r"[A-Za-z_][A-Za-z0-9_]*"


def _rx(pattern: str, **parts: str) -> str:
    """``pattern`` with each ``<NAME>`` replaced by ``parts[NAME]`` (regular expressions built from parts)."""
    for k, v in parts.items():
        pattern = pattern.replace(f"<{k}>", v)
    return pattern


_LIST = _rx(r"\[\s*((?:attestors\.<ID>\s*,\s*)*attestors\.<ID>)\s*,?\s*\]", ID=_ID)
_CALL_SIG = _rx(r"verifyImageSignatures\(\s*(?P<v1><ID>)\s*,\s*<LIST>\s*\)", ID=_ID, LIST=_LIST)
_CALL_ATT = _rx(r"verifyAttestationSignatures\(\s*(?P<v1><ID>)\s*,\s*attestations\.(?P<att><ID>)\s*,\s*<LIST>\s*\)",
                ID=_ID, LIST=_LIST)
_CMP = r"(?P<op>>=|>|==)\s*(?P<n>\d+)"
_CATEGORIES = ("containers", "initContainers", "ephemeralContainers")
_CAT = _rx(r"images\.(?P<cat><ID>)", ID=_ID)


def _count_shapes(call: str) -> list[re.Pattern[str]]:
    # images.containers.map(image, CALL).all(e, e > 0)   |   images.containers.all(image, CALL > 0)
    parts = {"CAT": _CAT, "ID": _ID, "CALL": call, "CMP": _CMP}
    return [
        re.compile(_rx(r"<CAT>\.map\(\s*(?P<v0><ID>)\s*,\s*<CALL>\s*\)\.all\(\s*(?P<e0><ID>)\s*,\s*(?P<e1><ID>)\s*<CMP>"
                       r"\s*\)", **parts)),
        re.compile(_rx(r"<CAT>\.all\(\s*(?P<v0><ID>)\s*,\s*<CALL>\s*<CMP>\s*\)", **parts)),
    ]


_SIG_SHAPES = _count_shapes(_CALL_SIG)
_ATT_SHAPES = _count_shapes(_CALL_ATT)
_PAYLOAD_SHAPES = [
    re.compile(_rx(r"<CAT>\.map\(\s*(?P<v0><ID>)\s*,\s*(?P<body>.+)\)\.all\(\s*(?P<e0><ID>)\s*,\s*(?P<e1><ID>)\s*\)",
                   CAT=_CAT, ID=_ID), re.S),
    re.compile(_rx(r"<CAT>\.all\(\s*(?P<v0><ID>)\s*,\s*(?P<body>.+)\)", CAT=_CAT, ID=_ID), re.S),
]
# Identifiers that may not appear, unqualified, in a payload condition once extractPayload is replaced:
# Kyverno's other inputs (not evaluated here) and sigaudit's own condition variables (other meanings).
_FOREIGN = ("image", "images", "attestors", "attestations", "object", "oldObject", "request", "namespaceObject",
            "variables", "imageData", "resource", "globalContext", "http", "predicate", "subject", "now",
            "statement", "extractPayload", "verifyImageSignatures", "verifyAttestationSignatures",
            "getImageData", "parseImageReference")


def _need(op: str, n: int, listed: int) -> int | None:
    """The count an ``e OP n`` comparison asks of a count of verified attestors (0..listed), when it is
    "at least k"; None when it is not (``== k`` with k short of all would also refuse more)."""
    if op == ">":
        return n + 1
    if op == ">=":
        return n
    return n if n == listed else None


def _attestor_names(text: str) -> tuple[str, ...]:
    return tuple(re.findall(_rx(r"attestors\.(<ID>)", ID=_ID), text))


def _parse_validation(expression: str) -> Requirement | Condition:
    """The requirement or condition one validation expression states; ValueError when it is not one of
    the recognised shapes (the caller refuses the import)."""
    text = _WS.sub(" ", expression).strip()
    for shapes, is_att in ((_SIG_SHAPES, False), (_ATT_SHAPES, True)):
        for shape in shapes:
            m = shape.fullmatch(text)
            if m is None:
                continue
            gd = m.groupdict()
            if gd["v0"] != gd["v1"] or (gd.get("e0") is not None and gd["e0"] != gd["e1"]):
                raise ValueError("the iteration variables do not line up")
            _category(gd["cat"])
            names = _attestor_names(m.group(0)[m.start("v1") - m.start(0):])
            if len(set(names)) != len(names):
                raise ValueError("an attestor is listed twice")
            need = _need(gd["op"], int(gd["n"]), len(names))
            if need is None:
                raise ValueError(f"'{gd['op']} {gd['n']}' is not 'at least n' of {len(names)} attestors")
            if need < 1:
                raise ValueError(f"it asks {need} verified attestors: it verifies nothing")
            if need > len(names):
                raise ValueError(f"it asks {need} of {len(names)} attestors: it can never hold")
            return Requirement(names, need, gd["att"] if is_att else None)
    for shape in _PAYLOAD_SHAPES:
        m = shape.fullmatch(text)
        if m is None:
            continue
        gd = m.groupdict()
        if gd.get("e0") is not None and gd["e0"] != gd["e1"]:
            raise ValueError("the iteration variables do not line up")
        _category(gd["cat"])
        var, body = gd["v0"], gd["body"]
        call = re.compile(_rx(r"extractPayload\(\s*<V>\s*,\s*attestations\.(<ID>)\s*\)", V=re.escape(var), ID=_ID))
        atts = set(call.findall(body))
        if len(atts) != 1:
            raise ValueError("a payload condition must read extractPayload(image, attestations.x) of one attestation")
        if len(call.findall(_code_only(body))) != len(call.findall(body)):
            raise ValueError("extractPayload(...) is also written inside a string or a comment")
        code = _code_only(call.sub("__payload__", body))
        if code.count("(") != code.count(")") or code.count("[") != code.count("]"):
            raise ValueError("the condition's brackets do not balance")
        bare = [w for w in (*_FOREIGN, var) if re.search(r"(?<![.\w])" + re.escape(w) + r"\b", code)]
        if bare:
            raise ValueError(f"the condition also reads {', '.join(sorted(set(bare)))}")
        rewritten = call.sub("statement", body)
        try:
            compile_condition(rewritten)
        except ConditionError as exc:
            raise ValueError(f"as a condition over the statement: {exc}") from exc
        return Condition(atts.pop(), rewritten.strip())
    raise ValueError("not one of the recognised shapes")


def _category(cat: str) -> None:
    if cat not in _CATEGORIES:
        raise ValueError(f"images.{cat} is a custom image list (only {', '.join(_CATEGORIES)} are pods' images)")


# ----------------------------------------------------------------------------------------------
# attestors


@dataclass
class _Attestor:
    name: str
    doc: Mapping[str, Any]
    built: dict[str | None, Verifier] = field(default_factory=dict)  # by attestation (None: image signature)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _pem_only(value: Any, what: str) -> str:
    text = str(value or "")
    blocks = _pems(text)
    if not blocks:
        raise ValueError(f"{what} must be inline PEM (not a file, URL or other reference)")
    return "".join(blocks)


def _one_pem(value: Any, what: str) -> str:
    """Kyverno reads the first PEM block of a key or certificate: a second one is never trusted, so a value
    with several is refused rather than read otherwise."""
    pem = _pem_only(value, what)
    if len(_pems(pem)) != 1:
        raise ValueError(f"{what} holds {len(_pems(pem))} PEM blocks: give one (one attestor per key)")
    return pem


def _cosign_spec(a: Mapping[str, Any], att_type: str | None, conditions: list[str]) -> dict[str, Any]:
    """A native cosign verifier spec for one IVP cosign attestor; ValueError for what cannot be mapped."""
    kinds = [k for k in ("key", "keyless", "certificate") if a.get(k)]
    if len(kinds) != 1:
        raise ValueError(f"a cosign attestor gives exactly one of key, keyless, certificate (has {kinds})")
    ctlog = _map(a.get("ctlog"))
    spec: dict[str, Any] = {
        "ignoreTlog": bool(ctlog.get("insecureIgnoreTlog")),
        "annotations": {str(k): str(v) for k, v in (a.get("annotations") or {}).items()},
    }
    if att_type is not None:
        spec["attestations"] = [{"predicateType": att_type, "conditions": conditions}]
    tr = _map(a.get("trustedRoot"))
    trusted_root = trust_sources.virtual(str(tr["value"]), ".json") if tr.get("value") else None
    rekor = (
        trust_sources.virtual(_pem_only(ctlog["rekorPubKey"], "ctlog.rekorPubKey"), ".pem")
        if ctlog.get("rekorPubKey") else None
    )
    if a.get("key"):
        key = a["key"]
        if not isinstance(key, Mapping):
            raise ValueError("key is not a map")
        if key.get("data") and key.get("kms"):
            raise ValueError("key gives both data and kms")
        if key.get("data"):
            spec["key"] = _one_pem(key["data"], "key.data")
        elif key.get("kms"):
            kms = str(key["kms"])
            if not kms.lower().startswith(KMS_SCHEMES):
                raise ValueError(f"key.kms {kms[:60]!r} is not a KMS reference ({', '.join(KMS_SCHEMES)})")
            spec["key"] = kms
        else:
            raise ValueError("key without data or kms")
        if trusted_root:
            spec["trustedRoot"] = trusted_root
        if rekor:
            spec["rekorPubKey"] = rekor
        return spec
    if a.get("certificate"):
        cert = a["certificate"].get("cert") if isinstance(a["certificate"], Mapping) else None
        value = cert.get("value") if isinstance(cert, Mapping) else None
        spec["key"] = _one_pem(value, "certificate.cert.value")
        if rekor:
            spec["rekorPubKey"] = rekor
        return spec
    kl = a["keyless"]
    if not isinstance(kl, Mapping):
        raise ValueError("keyless is not a map")
    extensions: dict[str, str] = {}
    for k, v in (kl.get("additionalExtensions") or {}).items():
        name = extension_name(str(k), FULCIO_EXTENSIONS)
        if name in extensions:
            raise ValueError(f"additionalExtensions names {name} twice (by name and by OID)")
        extensions[name] = str(v)
    ids = []
    for ident in kl.get("identities") or []:
        if not isinstance(ident, Mapping):
            continue
        d: dict[str, Any] = {}
        for exact, rx in (("issuer", "issuerRegExp"), ("subject", "subjectRegExp")):
            if ident.get(exact) and ident.get(rx):
                raise ValueError(f"an identity gives both {exact} and {rx}")
            if ident.get(exact):
                d[exact] = str(ident[exact])
            else:
                d[rx] = str(ident.get(rx) or ".*")
        if extensions:
            d["extensions"] = dict(extensions)
        ids.append(d)
    if not ids:
        raise ValueError("keyless without identities: nothing pins the signer")
    kspec: dict[str, Any] = {"identities": ids}
    if kl.get("roots"):
        kspec["roots"] = trust_sources.virtual(_pem_only(kl["roots"], "keyless.roots"), ".pem")
    if trusted_root:
        kspec["trustedRoot"] = trusted_root
    if rekor:
        kspec["rekor"] = {"pubkey": rekor}
    if ctlog.get("ctLogPubKey") or ctlog.get("insecureIgnoreSCT"):
        kspec["ctlog"] = {
            **({"pubkey": trust_sources.virtual(_pem_only(ctlog["ctLogPubKey"], "ctlog.ctLogPubKey"), ".pem")}
               if ctlog.get("ctLogPubKey") else {}),
            "ignoreSCT": bool(ctlog.get("insecureIgnoreSCT")),
        }
    spec["keyless"] = kspec
    return spec


def _build(ctx: ImportContext, rule: str, att: _Attestor, attestation: str | None, att_type: str | None,
           conditions: list[str]) -> Verifier:
    key = attestation
    if key in att.built:
        return att.built[key]
    where = f"{rule}.{att.name}" + (f".{attestation}" if attestation else "")
    if att.doc.get("cosign") is not None:
        c = att.doc["cosign"]
        if not isinstance(c, Mapping):
            raise ValueError("cosign is not a map")
        spec = CosignVerifierSpec.model_validate(_cosign_spec(c, att_type, conditions))
        v = ctx.loader.build_verifier(VerifierSpec(cosign=spec), ctx.base_dir, where, rule)
    elif att.doc.get("notary") is not None:
        if attestation is not None:
            raise ValueError("attestations verified by a notary attestor (signed referrers) are not supported")
        n = att.doc["notary"]
        certs = n.get("certs") if isinstance(n, Mapping) else None
        pem = _pem_only(certs.get("value") if isinstance(certs, Mapping) else None, "notary.certs.value")
        tsa = n.get("tsaCerts") if isinstance(n, Mapping) else None
        tsa_pem = _pem_only(tsa.get("value"), "notary.tsaCerts.value") if isinstance(tsa, Mapping) and tsa else ""
        v = _notation_from_certs(ctx, pem, where, tsa=tsa_pem)
    else:
        raise ValueError("an attestor gives neither cosign nor notary")
    att.built[key] = v
    return v


# ----------------------------------------------------------------------------------------------
# policies


def _mode(actions: Any) -> str:
    # Kyverno's values are Deny, Audit and Warn (case-sensitive): anything else is never read as Warn.
    acts = {str(a) for a in actions or []} if isinstance(actions, list) else set()
    if acts and acts <= {"Warn"}:
        return "warn"
    return "enforce"


def ivp_rules(ctx: ImportContext, docs: Iterable[Mapping[str, Any]]) -> list[CompiledRule]:
    rules: list[CompiledRule] = []
    for doc in docs:
        kind = doc.get("kind")
        if not str(doc.get("apiVersion", "")).startswith(API_GROUP + "/"):
            continue
        name = str(_map(doc.get("metadata")).get("name") or "?")
        if kind == "Namespaced" + KIND:
            ctx.warnings.append(f"{ctx.source}: {kind} {name!r} is not imported (only cluster-wide {KIND}s are)")
            continue
        if kind != KIND:
            continue
        check_shapes(doc, IVP_SHAPES, f"{KIND} {name!r}", ctx.source)
        rules.append(_ivp_rule(ctx, doc, name))
    return rules


def _ivp_rule(ctx: ImportContext, doc: Mapping[str, Any], name: str) -> CompiledRule:
    spec = _map(doc.get("spec"))
    label = f"{KIND}/{name}"
    fields = classify(doc, FIELDS)
    notes = list(fields.reported)
    refusals = list(fields.refused)
    globs = [str(m["glob"]) for m in spec.get("matchImageReferences") or [] if isinstance(m, Mapping) and m.get("glob")]
    matcher: Callable[[ImageReference], bool] = lambda _ref: True  # noqa: E731
    try:
        matcher = glob_matcher(globs, fold_case=True)
    except ValueError as exc:
        refusals.append(f"spec.matchImageReferences: a glob gobwas would reject: {exc}")
    attestors: dict[str, _Attestor] = {}
    for a in spec.get("attestors") or []:
        if isinstance(a, Mapping) and a.get("name"):
            if str(a["name"]) in attestors:
                refusals.append(f"attestor {a['name']!r} is named twice")
            attestors[str(a["name"])] = _Attestor(str(a["name"]), a)
    attestations = {
        str(a["name"]): a for a in spec.get("attestations") or [] if isinstance(a, Mapping) and a.get("name")
    }

    requirements: list[Requirement] = []
    conditions: dict[str, list[str]] = {}
    for i, v in enumerate(spec.get("validations") or []):
        expr = str(v.get("expression") or "") if isinstance(v, Mapping) else ""
        try:
            parsed = _parse_validation(expr)
        except ValueError as exc:
            raise ConfigError(
                f"{label}: spec.validations[{i}].expression cannot be mapped exactly ({exc}), so the policy is "
                f"refused rather than approximated: {expr.strip()[:300]!r}", source=ctx.source) from exc
        if isinstance(parsed, Condition):
            conditions.setdefault(parsed.attestation, []).append(parsed.expression)
        else:
            requirements.append(parsed)
    verifiers: list[Verifier] = []
    sets: list[tuple[int, tuple[int, ...]]] = []
    if not requirements:
        refusals.append("no validation verifies a signature or an attestation: nothing to verify the images against")
    verified_atts = {r.attestation for r in requirements if r.attestation}
    for att_name in conditions:
        if att_name not in verified_atts:
            refusals.append(f"a validation reads the payload of attestation {att_name!r} that no validation "
                            "verifies (Kyverno: extractPayload fails)")
    if not refusals:
        index: dict[int, int] = {}
        for req in requirements:
            members: list[int] = []
            att_type: str | None = None
            if req.attestation is not None:
                att = attestations.get(req.attestation)
                intoto = att.get("intoto") if isinstance(att, Mapping) else None
                if isinstance(att, Mapping) and att.get("referrer"):
                    refusals.append(f"attestation {req.attestation!r}: OCI referrer attestations are not verified")
                    break
                if not isinstance(intoto, Mapping) or not intoto.get("type"):
                    refusals.append(f"attestation {req.attestation!r}: only in-toto attestations (intoto.type) "
                                    "are verified" if att is not None else f"no attestation {req.attestation!r}")
                    break
                att_type = str(intoto["type"])
            for a_name in req.attestors:
                if a_name not in attestors:
                    refusals.append(f"a validation names attestor {a_name!r}, which the policy does not declare")
                    break
                try:
                    v = _build(ctx, label, attestors[a_name], req.attestation, att_type,
                               conditions.get(req.attestation or "", []))
                except (ValueError, ConfigError) as exc:
                    refusals.append(f"attestor {a_name!r}: {exc}")
                    break
                if id(v) not in index:
                    verifiers.append(v)
                    index[id(v)] = len(verifiers) - 1
                members.append(index[id(v)])
            if refusals:
                break
            sets.append((req.count, tuple(members)))
    mode = _mode(spec.get("validationActions"))
    for n in notes:
        ctx.warn(label, n)
    for why in refusals:
        ctx.warn(label, f"refused: {why}")
    return CompiledRule(
        name=label,
        images=tuple(globs) or ("*",),
        namespaces=("*",),
        verifiers=() if refusals else tuple(verifiers),
        mode=mode,
        source=f"kyverno:{label}",
        count=1,
        matcher=matcher,
        notes=tuple(dict.fromkeys(notes)),
        sets=() if refusals else tuple(sets),
        refused=tuple(dict.fromkeys(refusals)),
        admission=_admission(doc, name, spec),
    )


# ----------------------------------------------------------------------------------------------
# how Kyverno applied the policy at admission (scanner/policy/admission.py): explains, never decides

_RESOURCE_KINDS = {"pods": "Pod", "deployments": "Deployment", "statefulsets": "StatefulSet",
                   "daemonsets": "DaemonSet", "replicasets": "ReplicaSet", "jobs": "Job", "cronjobs": "CronJob",
                   "replicationcontrollers": "ReplicationController", "*": "*"}


def _kinds_of(rules: Any) -> tuple[str, ...]:
    """The kinds a list of admission resourceRules names (``pods`` -> ``Pod``; subresources are not pods)."""
    out: list[str] = []
    for r in rules if isinstance(rules, list) else []:
        for res in (r.get("resources") if isinstance(r, Mapping) else None) or []:
            text = str(res)
            out.append(_RESOURCE_KINDS.get(text, text))
    return tuple(dict.fromkeys(out))


def _admission(doc: Mapping[str, Any], name: str, spec: Mapping[str, Any]) -> AdmissionPolicy:
    actions = {str(a) for a in spec.get("validationActions") or []} if isinstance(
        spec.get("validationActions"), list) else set()
    mode = (AdmissionMode.ENFORCE if "Deny" in actions or not actions
            else AdmissionMode.AUDIT if "Audit" in actions else AdmissionMode.WARN)
    evaluation = _map(spec.get("evaluation"))
    if _map(evaluation.get("admission")).get("enabled") is False:
        mode = AdmissionMode.OFF
    mc = _map(spec.get("matchConstraints"))
    kinds = _kinds_of(mc.get("resourceRules"))
    excludes = tuple(AdmissionFilter(description=f"excludeResourceRules {r}"[:300], kinds=_kinds_of([r]))
                     for r in mc.get("excludeResourceRules") or [] if isinstance(r, Mapping))
    narrowing = tuple(
        AdmissionFilter(description=f"{k}={mc[k] if k in mc else spec[k]}"[:300])
        for k in ("namespaceSelector", "objectSelector", "matchConditions")
        if (mc.get(k) if k != "matchConditions" else spec.get(k))
    )
    return AdmissionPolicy(
        source="imagevalidatingpolicy",
        controller=Controller.KYVERNO,
        kind=KIND,
        name=name,
        created_at=parse_kube_time(_map(doc.get("metadata")).get("creationTimestamp")),
        mode=mode,
        scope=AdmissionScope(match_kinds=kinds, excludes=excludes, narrowing=narrowing),
        failure_policy=str(spec["failurePolicy"]) if spec.get("failurePolicy") else None,
    )


# ----------------------------------------------------------------------------------------------
# PolicyException (kyverno.io/v2 for ClusterPolicy/Policy; policies.kyverno.io for ImageValidatingPolicy)

_SELECTOR = "who or which objects (names, labels, annotations, requesters) is not known to an audit"


def _exception_match_fields(form: str) -> dict[str, Any]:
    b = f"spec.match.{form}[]"
    out: dict[str, Any] = {
        f"{b}.resources.kinds": mapped("Pod (or *): a filter naming only other kinds covers no running pod"),
        f"{b}.resources.namespaces": mapped("within the exception's own namespace only"),
        f"{b}.resources.operations": mapped("a filter without CREATE did not cover the pod's admission: "
                                            "it covers no running pod"),
    }
    for k in ("name", "names", "selector", "namespaceSelector", "annotations"):
        out[f"{b}.resources.{k}"] = refused(_SELECTOR)
    for k in ("subjects", "roles", "clusterRoles"):
        out[f"{b}.{k}"] = refused(_SELECTOR)
    return out


EXCEPTION_FIELDS: FieldTable = table(
    {
        "apiVersion": mapped(),
        "kind": mapped(),
        "metadata": mapped("name and namespace identify the exception; it covers its own namespace only"),
        "status": mapped("written by Kyverno"),
        "spec.background": mapped("false: Kyverno's background scans (what an audit is) do not apply it: "
                                  "neither does sigaudit"),
        "spec.exceptions[].policyName": mapped(),
        "spec.exceptions[].ruleNames": mapped("Kyverno wildcards over the rule's name"),
        **_exception_match_fields("any"),
        **_exception_match_fields("all"),
        "spec.conditions": refused("conditions over the admission request are not evaluated"),
        "spec.podSecurity": mapped("controls of podSecurity rules: no bearing on verifyImages rules"),
    }
)

CEL_EXCEPTION_FIELDS: FieldTable = table(
    {
        "apiVersion": mapped(),
        "kind": mapped(),
        "metadata": mapped("name and namespace identify the exception; it covers its own namespace only"),
        "status": mapped("written by Kyverno"),
        "spec.policyRefs[].name": mapped(),
        "spec.policyRefs[].kind": mapped("ImageValidatingPolicy (an exception of other kinds covers nothing here)"),
        "spec.matchConditions[].name": refused("CEL conditions over the admitted object are not evaluated"),
        "spec.matchConditions[].expression": refused("CEL conditions over the admitted object are not evaluated"),
        "spec.images": mapped("Kyverno's glob: only these images are exempt (Kyverno's ImageValidatingPolicy "
                              "exempts the whole pod: stricter)"),
        "spec.allowedValues": mapped("values of ValidatingPolicies: no bearing on image verification"),
        "spec.expiresAt": mapped("the exemption ends then"),
        "spec.evaluationMode": mapped("Kubernetes (pods): the running pods are audited"),
        "spec.reportResult": mapped("how Kyverno reports it: sigaudit reports exempt"),
        "spec.properties": mapped("properties of Kyverno's reports"),
    }
)

FOREVER_ISO = "9999-12-31T23:59:59Z"
_NAMESPACE_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")  # Kubernetes: an RFC 1123 label


def _exception_namespaces(doc: Mapping[str, Any], ns: str, label: str) -> list[str]:
    """The namespaces (of ``ns``, the exception's own, or none) whose pods a kyverno.io exception covers."""
    match = (doc.get("spec") or {}).get("match") or {}
    filters = [f for f in (match.get("any") or []) if isinstance(f, Mapping)]
    all_ = [f for f in (match.get("all") or []) if isinstance(f, Mapping)]
    if all_ and (filters or len(all_) > 1):
        raise ConfigError(f"{label}: match.all with several filters (or with match.any) is not evaluated exactly "
                          "by an audit: the exception is refused")
    filters += all_
    if not filters:
        return []  # Kyverno: an empty match covers nothing
    from scanner.policy.kyverno import _wildcard_regexp

    for f in filters:
        res = f.get("resources") or {}
        kinds = [str(k).rsplit("/", 1)[-1] for k in res.get("kinds") or []]
        if kinds and not any(k in ("Pod", "*") for k in kinds):
            continue
        ops = [str(o).upper() for o in res.get("operations") or []]
        if ops and "CREATE" not in ops:
            continue
        globs = [str(n) for n in res.get("namespaces") or []]
        if not globs or any(re.fullmatch(_wildcard_regexp(g), ns) for g in globs):
            return [ns]
    return []


def _ref_rule_name(rule: CompiledRule) -> tuple[str, str] | None:
    """(Kyverno policy name as an exception names it, rule name) of an imported Kyverno rule."""
    source = rule.source.removeprefix("kyverno:")
    if source.startswith("ClusterPolicy/"):
        policy = source.removeprefix("ClusterPolicy/")
    elif source.startswith("Policy/"):
        policy = source.removeprefix("Policy/")  # namespace/name
    else:
        return None
    rname = rule.name.removeprefix(policy + "/")
    return policy, re.sub(r"#\d+$", "", rname)


def _names_rules(targets: list[tuple[str, str]]) -> Callable[[CompiledRule], bool]:
    """Whether a kyverno.io exception's (policyName, ruleNames regexp) pairs name an imported rule."""
    def covers(rule: CompiledRule) -> bool:
        ref = _ref_rule_name(rule)
        return ref is not None and any(ref[0] == p and re.fullmatch(rx, ref[1]) for p, rx in targets)
    return covers


def _names_ivps(refs: set[str]) -> Callable[[CompiledRule], bool]:
    def covers(rule: CompiledRule) -> bool:
        return any(rule.source == f"kyverno:{KIND}/{r}" for r in refs)
    return covers


def _exception_images(match: Callable[[ImageReference], bool]) -> Callable[[ImageReference | None, str], bool]:
    def hit(ref: ImageReference | None, _text: str) -> bool:
        return ref is not None and match(ref)  # an unresolved image is never exempt by an image list
    return hit


def apply_exceptions(ctx: ImportContext, docs: Iterable[Mapping[str, Any]],
                     rules: list[CompiledRule]) -> list[CompiledRule]:
    """``rules`` with the waivers the PolicyExceptions among ``docs`` grant. An exception covers only pods
    of its own namespace, names the policy and rules it waives, and is refused (ConfigError) when its
    scope cannot be evaluated exactly."""
    from dataclasses import replace

    from scanner.policy.kyverno import _wildcard_regexp
    from scanner.policy.schema import Exemption

    waivers: dict[int, list[Exemption]] = {}
    for doc in docs:
        if doc.get("kind") != "PolicyException":
            continue
        group = str(doc.get("apiVersion", "")).split("/", 1)[0]
        meta = _map(doc.get("metadata"))
        name, ns = str(meta.get("name") or "?"), str(meta.get("namespace") or "")
        label = f"PolicyException {ns}/{name}"
        if group in ("kyverno.io", API_GROUP):
            check_shapes(doc, EXCEPTION_SHAPES if group == "kyverno.io" else CEL_EXCEPTION_SHAPES, label, ctx.source)
        if not ns:
            raise ConfigError(f"{label}: no metadata.namespace: an exception covers pods of its own namespace only "
                              "(export it with `kubectl get policyexceptions -A -o yaml`)", source=ctx.source)
        if not _NAMESPACE_NAME.fullmatch(ns):
            # the namespace becomes the waiver's namespace pattern: a glob there ("*", "team-*") would reach
            # every namespace it matches, not the exception's own
            raise ConfigError(f"{label}: metadata.namespace {ns[:70]!r} is not a namespace name (a lowercase "
                              "RFC 1123 label): the exception is refused", source=ctx.source)
        table_ = EXCEPTION_FIELDS if group == "kyverno.io" else CEL_EXCEPTION_FIELDS if group == API_GROUP else None
        if table_ is None:
            continue
        fields = classify(doc, table_)
        if fields.refused:
            raise ConfigError(f"{label} cannot be evaluated exactly by an audit, so it is refused: "
                              + "; ".join(fields.refused), source=ctx.source)
        spec = doc.get("spec") or {}
        annotations = meta.get("annotations") or {}
        why = str(annotations.get("policies.kyverno.io/description") or annotations.get("description") or "")
        reason = f"Kyverno {label}" + (f": {why}" if why else "")
        until = FOREVER_ISO
        matcher: Callable[[ImageReference], bool] | None = None
        covers: Callable[[CompiledRule], bool]
        images = ["*"]
        if group == "kyverno.io":
            if spec.get("background") is False:
                ctx.warnings.append(f"{ctx.source}: {label} has background: false: not applied by an audit")
                continue
            namespaces = _exception_namespaces(doc, ns, label)
            targets: list[tuple[str, str]] = []
            for e in spec.get("exceptions") or []:
                if isinstance(e, Mapping) and e.get("policyName"):
                    targets += [(str(e["policyName"]), _wildcard_regexp(str(r))) for r in e.get("ruleNames") or []]

            covers = _names_rules(targets)
        else:
            namespaces = [ns]
            if spec.get("expiresAt"):
                until = str(spec["expiresAt"])
            if spec.get("images"):
                images = [str(i) for i in spec["images"]]
                try:
                    m = glob_matcher(images)
                except ValueError as exc:
                    raise ConfigError(f"{label}: spec.images: {exc}", source=ctx.source) from exc
                matcher = m
            # Kyverno (pkg/cel/engine/exception.go ListExceptions): name and kind must both be equal.
            refs = {str(r.get("name")) for r in spec.get("policyRefs") or []
                    if isinstance(r, Mapping) and r.get("kind") == KIND}

            covers = _names_ivps(refs)
        if not namespaces:
            ctx.warnings.append(f"{ctx.source}: {label} covers no running pod of its namespace {ns!r}")
            continue
        try:
            ex = Exemption.model_validate({"images": images, "namespaces": namespaces, "reason": reason,
                                           "until": until})
        except ValueError as exc:
            raise ConfigError(f"{label}: {exc}", source=ctx.source) from exc
        if matcher is not None:
            ex = ex.matching_with(_exception_images(matcher))
        hit = False
        for i, r in enumerate(rules):
            if covers(r):
                waivers.setdefault(i, []).append(ex)
                hit = True
        if not hit:
            ctx.warnings.append(f"{ctx.source}: {label} names no imported policy rule")
    return [replace(r, waivers=(*r.waivers, *waivers[i])) if i in waivers else r for i, r in enumerate(rules)]
