"""Load an AuditPolicy file: YAML -> pydantic schema -> compiled rules with built verifiers.

This is the edge where files and URLs are read (keys, trust stores, trusted roots). Every problem is
a ConfigError naming the file, the line and the field.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from scanner import yamldoc
from scanner.errors import ConfigError, ParseError
from scanner.models import ImageReference
from scanner.policy.admission import AdmissionPolicy, WebhookConfig
from scanner.policy.schema import (
    AuditPolicyDocument,
    Exemption,
    Revocation,
    VerifierSpec,
    parse_duration,
)
from scanner.redact import display_url, redact_bytes
from scanner.verify import sources
from scanner.verify.base import Fetcher, Verifier
from scanner.verify.keys import PublicKey, parse_public_key

MAX_POLICY_BYTES = 4 * 1024 * 1024
MAX_URL_KEY_BYTES = 64 * 1024
KEY_URL_DEADLINE = 30.0  # seconds for a whole key fetch, headers included (httpx's timeout is per read)
KMS_SCHEMES = ("awskms://", "gcpkms://", "azurekms://", "hashivault://")


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    images: tuple[str, ...]
    namespaces: tuple[str, ...]
    verifiers: tuple[Verifier, ...]
    mode: str = "enforce"
    source: str = ""  # which policy (file, imported resource) the rule came from
    count: int = 1  # verifiers that must each pass (n-of-m)
    # Imported policies (Kyverno, ClusterImagePolicy, notation) need a little more than the native file:
    skip_images: tuple[str, ...] = ()  # globs the rule does not apply to (Kyverno skipImageReferences)
    exclude_namespaces: tuple[str, ...] = ()  # namespaces the rule does not apply to
    required: bool = True  # False: unsigned is allowed (reported, not counted), a bad signature is not
    matcher: Callable[[ImageReference], bool] | None = None  # replaces `images` globs when set
    notes: tuple[str, ...] = ()  # approximations and unsupported fields, shown with every verdict
    # Requirement sets, all required: (count, indices into `verifiers`). Empty: one set, `count` of all.
    sets: tuple[tuple[int, tuple[int, ...]], ...] = ()
    # Why an imported rule cannot be enforced as written: every image it matches is `error`.
    refused: tuple[str, ...] = ()
    namespace: str = ""  # the namespace of a namespaced source object (Kyverno Policy); "" = cluster-wide
    # Every rule that matches an image applies, and all of them must hold (as Kyverno and policy-controller
    # require of every matching policy). Rules that name the same group here are alternatives instead:
    # only the first of them that matches applies (the native file's `match: first`, its default).
    first_match: str = ""
    # Waivers of this rule's verdict only, never of another rule's (kritis admission allowlists belong to
    # their policy); the policy's exemptions waive every rule's verdict for their scope.
    waivers: tuple[Exemption, ...] = ()
    # The admission-controller object the rule was imported from, as that controller applies it
    # (scanner/policy/admission.py); None for the native file's rules. Explains, never decides.
    admission: AdmissionPolicy | None = None

    @property
    def identity(self) -> tuple[str, str, str]:
        """What tells two rules apart: (source, namespace, name). Never merged by name alone."""
        return (self.source, self.namespace, self.name)

    @property
    def requirement_sets(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        if self.sets:
            return self.sets
        return ((self.count, tuple(range(len(self.verifiers)))),)


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[CompiledRule, ...]
    exemptions: tuple[Exemption, ...]
    revocations: tuple[Revocation, ...]
    expiry_warning: timedelta
    insecure_registries: frozenset[str]
    max_signatures: int
    digest: str  # sha256 over the policy documents (and referenced trust material), for the report
    sources: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = ()  # unsupported fields of imported policies, per rule
    # The admission controllers' webhooks, read from the cluster with ``--policy-from ...:cluster``.
    webhooks: tuple[WebhookConfig, ...] = ()


KeyFetcher = Callable[[str], bytes]


def _default_key_fetcher(url: str) -> bytes:
    """A key named by URL, read through the edge (``scanner/sources/http.py``): the policy layer does no I/O."""
    from scanner.sources.http import fetch_key_url

    return fetch_key_url(url, max_bytes=MAX_URL_KEY_BYTES, seconds=KEY_URL_DEADLINE)


def _yaml_line(root: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (aliases already applied)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == part:
                    nxt = v
                    line = k.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
        if node is None:
            break
    return line


def parse_policy_document(data: bytes, source: str) -> AuditPolicyDocument:
    if len(data) > MAX_POLICY_BYTES:
        raise ConfigError(f"policy file larger than {MAX_POLICY_BYTES} bytes", source=source)
    try:
        text = data.decode("utf-8")
        root = yamldoc.compose(text)
        doc = yamldoc.load(text)
    except UnicodeDecodeError as exc:
        raise ConfigError("policy is not UTF-8 text", source=source) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"invalid YAML: {getattr(exc, 'problem', exc)}", source=source, line=mark.line + 1 if mark else None
        ) from exc
    if not isinstance(doc, dict):
        raise ConfigError("a policy file is a YAML mapping (apiVersion, kind, spec)", source=source)
    sources.refuse_virtual(doc, source)
    try:
        return AuditPolicyDocument.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after"))]
        dotted = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise ConfigError(_in_rule(doc, loc) + msg + more, source=source, line=_yaml_line(root, loc),
                          field=dotted or None) from exc


def _in_rule(doc: Mapping[str, Any], loc: list[Any]) -> str:
    """``rule 'NAME': `` when an error lies inside a named rule (a path says only its index)."""
    if len(loc) < 3 or loc[:2] != ["spec", "rules"] or not isinstance(loc[2], int):
        return ""
    rules = doc.get("spec", {}).get("rules") if isinstance(doc.get("spec"), dict) else None
    if not isinstance(rules, list) or loc[2] >= len(rules) or not isinstance(rules[loc[2]], dict):
        return ""
    name = rules[loc[2]].get("name")
    return f"rule {name[:100]!r}: " if isinstance(name, str) and name else ""


class PolicyLoader:
    """Builds verifiers from specs. One per scan; caches keys loaded from URLs."""

    def __init__(self, *, key_fetcher: KeyFetcher | None = None, fetcher: Fetcher | None = None) -> None:
        self._fetch_key = key_fetcher or _default_key_fetcher
        self._fetcher = fetcher
        self._crl_cache: Any = None
        self._keys: dict[str, PublicKey] = {}
        self.trust_material: list[bytes] = []  # everything trust-relevant, hashed into the policy digest

    def load_key(self, text: str, base_dir: Path, where: str) -> tuple[PublicKey, str]:
        text = text.strip()
        if text in self._keys:
            return self._keys[text], _label(text)
        if text.startswith(KMS_SCHEMES):
            from scanner.verify import kms  # optional, provider SDKs are extras

            data = sources.fetched("kms", text, lambda: kms.fetch_public_key_pem(text))
        elif text.startswith("-----BEGIN"):
            data = text.encode()
        elif text.startswith("https://"):
            data = sources.fetched("url", text, lambda: self._fetch_key(text))
        elif text.startswith("http://"):
            raise ConfigError("keys are fetched over https only", field=where)
        elif sources.is_virtual(text):  # keys arrive inline or from a file; never another import's material
            raise ConfigError(f"a key cannot be read from {sources.MEM_PREFIX!r}", field=where)
        else:
            path = (base_dir / text).expanduser()
            try:
                data = sources.read_bytes(path)[: MAX_URL_KEY_BYTES + 1]
            except OSError as exc:
                raise ConfigError(f"cannot read key file {path}: {exc.strerror}", field=where) from exc
        try:
            key = parse_public_key(data)
        except ParseError as exc:
            raise ConfigError(f"unusable key: {exc}", field=where) from exc
        self._keys[text] = key
        self.trust_material.append(data)
        return key, _label(text)

    def build_verifier(self, spec: VerifierSpec, base_dir: Path, where: str, rule: str) -> Verifier:
        """The verifier of one entry, built by its kind (``scanner/verify/kinds/``) with this loader as
        its edge to files, URLs, KMS and the scan's CRL cache."""
        kind, value = spec.entry()
        return kind.build(value, _EntryTrust(self, base_dir, where, rule))

    def fetcher(self) -> Fetcher:
        if self._fetcher is None:
            # CRL/OCSP over HTTP, size- and time-bounded; recorded or replayed with the trust sources.
            # Made at its first request: most scans fetch nothing (a cached verdict, a key signature),
            # and the HTTP client's imports were a tenth of a scan's start-up (issue 19).
            self._fetcher = sources.wrap_fetcher(_FirstUse(_crl_fetcher))
        return self._fetcher

    def crl_cache(self) -> Any:
        if self._crl_cache is None:
            from scanner.verify.revocation import CRLCache

            # one per policy load: CRLs reused until nextUpdate, each reuse noted by (or, replayed, checked
            # against) the trust sources in force now
            self._crl_cache = CRLCache(reusable=sources.reuse_check())
        return self._crl_cache


def _crl_fetcher() -> Fetcher:
    from scanner.sources.http import crl_fetcher

    return crl_fetcher()


class _FirstUse:
    """A :class:`Fetcher` made by ``make`` at its first request (once, whatever the threads)."""

    def __init__(self, make: Callable[[], Fetcher]) -> None:
        self._make = make
        self._made: Fetcher | None = None
        self._lock = threading.Lock()

    def _fetcher(self) -> Fetcher:
        with self._lock:
            if self._made is None:
                self._made = self._make()
            return self._made

    def get(self, url: str, *, max_bytes: int, timeout: float) -> bytes:
        return self._fetcher().get(url, max_bytes=max_bytes, timeout=timeout)

    def post(self, url: str, body: bytes, *, content_type: str, max_bytes: int, timeout: float) -> bytes:
        return self._fetcher().post(url, body, content_type=content_type, max_bytes=max_bytes, timeout=timeout)


@dataclass(frozen=True, slots=True)
class _EntryTrust:
    """The loader as one verifier entry's ``Trust`` (scanner.verify.kinds.base)."""

    loader: PolicyLoader
    base_dir: Path
    where: str
    rule: str

    def load_key(self, text: str, base_dir: Path, where: str) -> tuple[PublicKey, str]:
        return self.loader.load_key(text, base_dir, where)

    def fetcher(self) -> Fetcher:
        return self.loader.fetcher()

    def crl_cache(self) -> Any:
        return self.loader.crl_cache()

    def add_material(self, data: bytes) -> None:
        self.loader.trust_material.append(data)


def _label(text: str) -> str:
    """How a key reference is shown in reasons and reports: a URL without its credentials."""
    if text.startswith("-----BEGIN"):
        return "(inline PEM)"
    if "://" in text:
        text = display_url(text)
    return text if len(text) < 120 else text[:117] + "..."


def load_policy(path: str | Path, *, loader: PolicyLoader | None = None) -> Policy:
    p = Path(path)
    sources.refuse_virtual(str(p), str(p))
    try:
        data = sources.read_bytes(p)
    except OSError as exc:
        raise ConfigError(f"cannot read policy: {exc.strerror}", source=str(p)) from exc
    return compile_policy(
        parse_policy_document(data, str(p)), source=str(p), base_dir=p.parent, raw=data, loader=loader
    )


def compile_policy(
    doc: AuditPolicyDocument, *, source: str, base_dir: Path, raw: bytes, loader: PolicyLoader | None = None
) -> Policy:
    loader = loader or PolicyLoader()
    rules = []
    for i, rule in enumerate(doc.spec.rules):
        verifiers: list[Verifier] = []
        sets: list[tuple[int, tuple[int, ...]]] = []
        groups = [(rule.count or 1, rule.verifiers, f"spec.rules.{i}.verifiers")] if rule.verifiers else [
            (vs.count, vs.verifiers, f"spec.rules.{i}.verifierSets.{k}.verifiers")
            for k, vs in enumerate(rule.verifier_sets)
        ]
        for count, specs, at in groups:
            members = []
            for j, v in enumerate(specs):
                where = f"{at}.{j}"
                try:
                    verifiers.append(loader.build_verifier(v, base_dir, where, rule.name))
                except ConfigError as exc:
                    if exc.source is None:
                        raise ConfigError(str(exc), source=source, field=exc.field or where) from exc
                    raise
                members.append(len(verifiers) - 1)
            prints = [verifiers[m].trust_fingerprint for m in members]
            if count > 1 and len(set(prints)) < len(prints):
                # n-of-m over one verifier listed twice would be met by a single signature.
                raise ConfigError(f"the same verifier is listed twice while count is {count}", source=source, field=at)
            sets.append((count, tuple(members)))
        rules.append(
            CompiledRule(
                rule.name,
                tuple(rule.images),
                tuple(rule.namespaces),
                tuple(verifiers),
                rule.mode,
                source,
                rule.count or 1,
                sets=tuple(sets) if rule.verifier_sets else (),
                first_match=source if doc.spec.match == "first" else "",
            )
        )
    # Over the text with URL credentials masked: a rotated password is not another policy, and the
    # evidence pack (which never holds the credentials) reproduces the digest.
    h = hashlib.sha256(redact_bytes(raw))
    for material in loader.trust_material:
        h.update(hashlib.sha256(redact_bytes(material)).digest())
    for compiled in rules:
        for built in compiled.verifiers:
            h.update(built.trust_fingerprint.encode())
    return Policy(
        rules=tuple(rules),
        exemptions=tuple(doc.spec.exemptions),
        revocations=tuple(doc.spec.revocations),
        expiry_warning=parse_duration(doc.spec.expiry_warning),
        insecure_registries=frozenset(doc.spec.insecure_registries),
        max_signatures=doc.spec.max_signatures,
        digest="sha256:" + h.hexdigest(),
        sources=(source,),
    )


def policy_summary(policy: Policy) -> dict[str, Any]:
    """A JSON-able description for reports (no key material)."""
    return {
        "digest": policy.digest,
        "sources": list(policy.sources),
        "rules": [
            {
                "name": r.name,
                "images": list(r.images),
                "namespaces": list(r.namespaces),
                "exclude_namespaces": list(r.exclude_namespaces),
                "skip_images": list(r.skip_images),
                "mode": r.mode,
                "count": r.count,
                # What must pass: every set, each with `count` of its verifiers (one set unless verifierSets).
                "verifier_sets": [
                    {"count": n, "verifiers": [r.verifiers[i].name for i in members]}
                    for n, members in (r.requirement_sets if r.verifiers else ())
                ],
                "namespace": r.namespace,
                # How the rule combines with the others that match the same image.
                "applies": (
                    f"unless an earlier rule of {r.first_match} matches (first matching rule applies)"
                    if r.first_match
                    else "whenever it matches (every matching rule must hold)"
                ),
                "refused": list(r.refused),
                "required": r.required,
                "verifiers": [v.name for v in r.verifiers],
                "source": r.source,
                "notes": list(r.notes),
            }
            for r in policy.rules
        ],
        "exemptions": [json.loads(e.model_dump_json(by_alias=True)) for e in policy.exemptions]
        + _waivers(policy.rules),
        "revocations": [json.loads(r.model_dump_json(by_alias=True)) for r in policy.revocations],
    }


def _waivers(rules: Sequence[CompiledRule]) -> list[dict[str, Any]]:
    """Rules' own waivers, for the exemptions register: each once, with the rules it waives."""
    seen: dict[int, tuple[Exemption, list[str]]] = {}
    for r in rules:
        for w in r.waivers:
            seen.setdefault(id(w), (w, []))[1].append(r.name)
    return [{**json.loads(w.model_dump_json(by_alias=True)), "rules": names} for w, names in seen.values()]
