"""Audit with the policies users already have: Kyverno ``verifyImages``, sigstore policy-controller
``ClusterImagePolicy`` and notation trust policies, mapped onto native rules.

``--policy-from kyverno:FILE|cluster``, ``clusterimagepolicy:FILE|cluster``, ``notation:DIR``. Imported
rules come after the native file's rules. Every imported rule that matches an image applies, beside the
native file's (whose own rules combine as its ``match`` says): all of them must hold, as the admission
controllers require of every matching policy (see scanner/policy/engine.py). Native exemptions and
revocations apply on top. Every field that is not supported, or only approximated, is reported per rule
(``Policy.warnings``, and as a note on every verdict the rule produces) — never silently ignored.

Kubernetes API calls (for the chart's RBAC; see scanner/inventory/kube.py):
- ``CustomObjectsApi.list_cluster_custom_object``  kyverno.io/v1 clusterpolicies,
  policy.sigstore.dev/v1beta1 clusterimagepolicies, policy.sigstore.dev/v1alpha1 trustroots: list
- ``CustomObjectsApi.list_custom_object_for_all_namespaces``  kyverno.io/v1 policies: list
- ``CustomObjectsApi.list_cluster_custom_object``  policies.kyverno.io/v1 imagevalidatingpolicies: list
- ``CustomObjectsApi.list_custom_object_for_all_namespaces``  kyverno.io/v2 policyexceptions,
  policies.kyverno.io/v1 policyexceptions: list
- ``CustomObjectsApi.list_cluster_custom_object``  notation.nirmata.io/v1alpha1 trustpolicies, truststores: list
- ``CoreV1Api.read_namespaced_secret``  secrets named by key.secretRef / keys.secret: get
- ``AdmissionregistrationV1Api.list_validating_webhook_configuration``  the admission controllers' webhooks
  (their failurePolicy explains why a non-compliant pod was admitted; scanner/policy/admission.py): list
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from scanner import yamldoc
from scanner.clock import parse_kube_time
from scanner.errors import ConfigError
from scanner.models import ImageReference
from scanner.policy.admission import (
    AdmissionFilter,
    AdmissionMode,
    AdmissionPolicy,
    AdmissionScope,
    Controller,
    WebhookConfig,
)
from scanner.policy.cluster import ClusterReader, ClusterReadError
from scanner.policy.fields import FieldTable, classify, mapped, refused, reported, table
from scanner.policy.loader import CompiledRule, Policy, PolicyLoader
from scanner.policy.schema import CosignVerifierSpec, NotationVerifierSpec, VerifierSpec, parse_duration
from scanner.redact import redact_bytes
from scanner.verify import sources as trust_sources
from scanner.verify.base import Verifier
from scanner.verify.static import StaticVerifier

MAX_IMPORT_BYTES = 8 * 1024 * 1024
_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.S)


@dataclass
class ImportContext:
    loader: PolicyLoader
    base_dir: Path
    source: str
    cluster: ClusterReader | None = None  # set when reading from the cluster
    warnings: list[str] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)

    def warn(self, rule: str, message: str) -> str:
        text = f"{self.source} rule {rule}: {message}"
        self.warnings.append(text)
        return message


def _docs(data: bytes, source: str) -> list[dict[str, Any]]:
    if len(data) > MAX_IMPORT_BYTES:
        raise ConfigError(f"larger than {MAX_IMPORT_BYTES} bytes", source=source)
    try:
        docs = [d for d in yamldoc.load_all(data.decode("utf-8")) if d is not None]
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid YAML/JSON: {exc}", source=source) from exc
    except RecursionError as exc:  # nesting deeper than the parser's stack: not a document Kubernetes serves
        raise ConfigError("invalid YAML/JSON: nested too deeply", source=source) from exc
    out: list[dict[str, Any]] = []
    for d in docs:
        if isinstance(d, dict) and d.get("kind") == "List" and isinstance(d.get("items"), list):
            out += [i for i in d["items"] if isinstance(i, dict)]
        elif isinstance(d, dict):
            out.append(d)
        else:
            raise ConfigError("each document must be a mapping", source=source)
    return out


def _pems(text: str) -> list[str]:
    return [m.group(0) + "\n" for m in _PEM_BLOCK.finditer(text or "")]


def _secret_value(ctx: ImportContext, namespace: str, name: str, rule: str,
                  entry: str | None = "cosign.pub") -> str | None:
    """The public key in a Secret, as the admission controller takes it: ``entry`` of its data (Kyverno's
    ``keys.secret`` is cosign's ``k8s://``, which reads ``cosign.pub`` alone), or with ``entry`` None its
    only data entry (policy-controller refuses a Secret of several). Never another entry: a Secret also
    holding ``cosign.key`` / ``cosign.password`` (the signing pair) gives no key, not one of those."""
    if ctx.cluster is None:
        ctx.warn(rule, f"key from Secret {namespace}/{name} can only be read with --policy-from ...:cluster")
        return None
    def read() -> bytes:
        # Only the key taken from the Secret is answered (and kept in a scan's trust snapshot, hence its
        # evidence pack): never the Secret's other data. Its base64 text, as the API gives it.
        data = ctx.cluster.secret_data(namespace, name)  # type: ignore[union-attr]
        key = entry if entry is not None else (next(iter(data)) if len(data) == 1 else None)
        if key is None or key not in data:
            return b""
        value = data[key]
        return value.encode("utf-8", "replace") if isinstance(value, str) else b"\x00"

    try:
        value = trust_sources.fetched("kube-secret", f"{namespace}/{name}", read)
    except ClusterReadError as exc:
        raise ConfigError(
            f"cannot read Secret {namespace}/{name} named by rule {rule}: {exc}", source=ctx.source
        ) from exc
    if not value:
        return None
    try:  # a binary Secret (a DER key) or a malformed value: no key, so the rule is refused
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (ValueError, TypeError) as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        ctx.warn(rule, f"Secret {namespace}/{name}: its key is not a text key ({type(exc).__name__})")
        return None


# ----------------------------------------------------------------------------------------------
# Kyverno


def _notation_from_certs(ctx: ImportContext, pem: str, rule: str, *, tsa: str = "") -> Verifier:
    """A notation verifier trusting these certificates (Kyverno's Notary attestor: any identity)."""
    files: dict[str, str] = {"x509/ca/kyverno/certs.pem": pem}
    stores = ["ca:kyverno"]
    if tsa.strip():
        files["x509/tsa/kyverno-tsa/tsa.pem"] = "".join(_pems(tsa))
        stores.append("tsa:kyverno-tsa")
    policy = {
        "version": "1.0",
        "trustPolicies": [
            {
                "name": re.sub(r"[^A-Za-z0-9_.-]", "-", rule)[:60] or "kyverno",
                "registryScopes": ["*"],
                "signatureVerification": {"level": "strict"},
                "trustStores": stores,
                "trustedIdentities": ["*"],
            }
        ],
    }
    files["trustpolicy.json"] = json.dumps(policy)
    root = Path(trust_sources.virtual_tree(files))
    spec = NotationVerifierSpec.model_validate({"trustPolicy": str(root / "trustpolicy.json"), "trustStore": str(root)})
    return ctx.loader.build_verifier(VerifierSpec(notation=spec), ctx.base_dir, f"{rule}.notary", rule)


def kyverno_rules(ctx: ImportContext, docs: Iterable[Mapping[str, Any]]) -> list[CompiledRule]:
    """ClusterPolicy/Policy ``verifyImages`` rules and ImageValidatingPolicies, with the waivers their
    PolicyExceptions grant."""
    from scanner.policy.kyverno import kyverno_rules as rules
    from scanner.policy.kyverno_ivp import apply_exceptions, ivp_rules

    docs = list(docs)
    return apply_exceptions(ctx, docs, [*rules(ctx, docs), *ivp_rules(ctx, docs)])


# ----------------------------------------------------------------------------------------------
# sigstore policy-controller ClusterImagePolicy


_CIP_SUFFIX = re.compile(r"(?::[\w][\w.-]*)?(?:@sha256:[0-9a-f]{64})?")


def _glob_nfa(tokens: Sequence[tuple[str, str]], text: str) -> bool:
    """Whether the glob tokens (``**`` any run, ``*`` a run without ``/``, ``?`` one character but ``/``,
    ``=`` a literal character) match the whole text, by simulating the automaton: O(len(text) x
    len(tokens)). A backtracking regular expression took 30 s per image name for ``**a**a**a**a**ab``."""
    def closure(states: set[int]) -> set[int]:
        stack = list(states)
        while stack:
            j = stack.pop()
            if j < len(tokens) and tokens[j][0] in ("*", "**") and j + 1 not in states:
                states.add(j + 1)
                stack.append(j + 1)
        return states

    states = closure({0})
    for ch in text:
        nxt: set[int] = set()
        for j in states:
            if j >= len(tokens):
                continue
            kind, lit = tokens[j]
            if kind == "**" or (kind == "*" and ch != "/"):
                nxt.add(j)
            elif (kind == "?" and ch != "/") or (kind == "=" and ch == lit):
                nxt.add(j + 1)
        if not nxt:
            return False
        states = closure(nxt)
    return len(tokens) in states


def cip_glob_matcher(globs: Sequence[str]) -> Callable[[ImageReference], bool]:
    """policy-controller's glob: ``*`` stays within one path segment, ``**`` crosses them; a glob without
    a registry means Docker Hub (``index.docker.io``); it matches the repository, with or without tag."""
    patterns: list[list[tuple[str, str]]] = []
    for g in globs:
        g = g.strip()
        if g.startswith("index.docker.io/"):
            g = "docker.io/" + g[len("index.docker.io/") :]
        first = g.split("/", 1)[0]
        has_registry = "/" in g and ("." in first or ":" in first or first == "localhost")
        if not has_registry and not g.startswith("*"):
            g = ("docker.io/library/" if "/" not in g else "docker.io/") + g
        tokens: list[tuple[str, str]] = []
        i = 0
        while i < len(g):
            if g.startswith("**", i):
                tokens.append(("**", ""))
                i += 2
            elif g[i] in "*?":
                tokens.append((g[i], ""))
                i += 1
            else:
                tokens.append(("=", g[i]))
                i += 1
        patterns.append(tokens)

    def match(ref: ImageReference) -> bool:
        cands = [ref.repo, f"{ref.repo}:{ref.tag}" if ref.tag else ref.repo]
        for c in cands:
            # The glob, then an optional ":tag" and "@sha256:..." (policy-controller matches either).
            cuts = [len(c), *(k for k, ch in enumerate(c) if ch in ":@")]
            for k in cuts:
                if _CIP_SUFFIX.fullmatch(c[k:]) and any(_glob_nfa(t, c[:k]) for t in patterns):
                    return True
        return False

    return match


def _trust_roots(docs: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {
        str((d.get("metadata") or {}).get("name")): d
        for d in docs
        if d.get("kind") == "TrustRoot" and str(d.get("apiVersion", "")).startswith("policy.sigstore.dev/")
    }


def _trust_root_json(tr: Mapping[str, Any]) -> bytes | None:
    """A TrustRoot resource with ``sigstoreKeys`` is a trusted_root.json in YAML (PEMs base64'd)."""
    keys = (tr.get("spec") or {}).get("sigstoreKeys")
    if not isinstance(keys, Mapping):
        return None

    def der_of(b64pem: str) -> str:
        pem = base64.b64decode(b64pem).decode() if "-----BEGIN" not in b64pem else b64pem
        blocks = _pems(pem)
        body = "".join(blocks[0].splitlines()[1:-1]) if blocks else ""
        return body

    def conv(items: Any, kind: str) -> list[dict[str, Any]]:
        out = []
        for it in items or []:
            d = dict(it)
            if kind == "ca":
                chain = d.get("certChain") or {}
                raw = chain.get("certificates") if isinstance(chain, Mapping) else None
                if isinstance(chain, str) or raw is None:
                    pems = _pems(base64.b64decode(chain).decode() if isinstance(chain, str) else "")
                    d["certChain"] = {"certificates": [{"rawBytes": "".join(p.splitlines()[1:-1])} for p in pems]}
            else:
                pk = d.get("publicKey")
                if isinstance(pk, str):
                    d["publicKey"] = {
                        "rawBytes": der_of(pk),
                        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                        "validFor": {"start": "1970-01-01T00:00:00Z"},
                    }
                if "logID" in d and "logId" not in d:
                    d["logId"] = {"keyId": d.pop("logID")}
                if isinstance(d.get("logId"), str):
                    d["logId"] = {"keyId": d["logId"]}
            d.setdefault("validFor", {"start": "1970-01-01T00:00:00Z"})
            out.append(d)
        return out

    root = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "certificateAuthorities": conv(keys.get("certificateAuthorities"), "ca"),
        "tlogs": conv(keys.get("tLogs") or keys.get("tlogs"), "log"),
        "ctlogs": conv(keys.get("ctLogs") or keys.get("ctlogs"), "log"),
        "timestampAuthorities": conv(keys.get("timestampAuthorities"), "ca"),
    }
    return json.dumps(root).encode()


_OFFLINE = "not contacted (audits run offline): the attached Rekor bundle and certificates are verified"
_ELSEWHERE = (
    "signatures are looked up in the image's own repository: signatures kept only elsewhere are not "
    "found (unsigned), never accepted"
)
_A = "spec.authorities[]"

# What every field of policy-controller's ClusterImagePolicy (and a referenced TrustRoot) becomes;
# see scanner/policy/fields.py. Semantics: pkg/webhook/validator.go (an authority without ctlog has no
# transparency-log check, except keyless without a trustRootRef, which uses the public Rekor keys).
CIP_FIELDS: FieldTable = table(
    {
        "apiVersion": mapped(),
        "kind": mapped(),
        "metadata": mapped("the name identifies the rule"),
        "status": mapped("written by policy-controller"),
        "spec.images[].glob": mapped("policy-controller's glob semantics"),
        "spec.mode": mapped("warn: reported, not counted"),
        "spec.match": reported("resource selectors are not evaluated: the policy applies to every matching image"),
        "spec.policy": refused("CUE/Rego policies are not evaluated"),
        f"{_A}.name": mapped(),
        f"{_A}.key.data": mapped(),
        f"{_A}.key.kms": mapped(),
        f"{_A}.key.secretRef.name": mapped(),
        f"{_A}.key.secretRef.namespace": mapped(),
        f"{_A}.key.hashAlgorithm": reported("only sha256 is used: other signatures do not verify"),
        f"{_A}.keyless.url": reported(_OFFLINE),
        f"{_A}.keyless.ca-cert.data": mapped(),
        f"{_A}.keyless.ca-cert.kms": refused("a Fulcio CA from a KMS is not supported"),
        f"{_A}.keyless.ca-cert.secretRef": refused("a Fulcio CA from a Secret is not supported"),
        f"{_A}.keyless.ca-cert.hashAlgorithm": reported("only sha256 is used"),
        f"{_A}.keyless.identities[].issuer": mapped(),
        f"{_A}.keyless.identities[].issuerRegExp": mapped("must match the whole issuer"),
        f"{_A}.keyless.identities[].subject": mapped(),
        f"{_A}.keyless.identities[].subjectRegExp": mapped("must match the whole subject"),
        f"{_A}.keyless.insecureIgnoreSCT": mapped(),
        f"{_A}.keyless.trustRootRef": mapped(),
        f"{_A}.ctlog.url": mapped("a transparency-log entry is required; " + _OFFLINE),
        f"{_A}.ctlog.trustRootRef": mapped("the Rekor keys of that TrustRoot"),
        f"{_A}.rfc3161timestamp.trustRootRef": refused("signed timestamps (TSA) are not supported"),
        f"{_A}.signatureFormat": mapped("where signatures are stored: .sig tags and bundle referrers are both read"),
        f"{_A}.source": reported(_ELSEWHERE),
        f"{_A}.attestations": refused("attestations and their policies are not evaluated"),
        f"{_A}.static.action": mapped(),
        f"{_A}.static.message": mapped("shown with the verdict"),
    }
)
TRUSTROOT_FIELDS: FieldTable = table(
    {
        "apiVersion": mapped(),
        "kind": mapped(),
        "metadata": mapped("the name is what trustRootRef names"),
        "status": mapped("written by policy-controller"),
        "spec.sigstoreKeys": mapped("becomes a trusted_root.json"),
        "spec.remote": refused("a TUF-served trust root is not supported: give sigstoreKeys"),
        "spec.repository": refused("a TUF repository trust root is not supported: give sigstoreKeys"),
    }
)


def cip_rules(ctx: ImportContext, docs: Sequence[Mapping[str, Any]]) -> list[CompiledRule]:
    roots = _trust_roots(docs)
    rules: list[CompiledRule] = []
    for doc in docs:
        if doc.get("kind") != "ClusterImagePolicy" or not str(doc.get("apiVersion", "")).startswith(
            "policy.sigstore.dev/"
        ):
            continue
        name = str((doc.get("metadata") or {}).get("name") or "?")
        spec = doc.get("spec") or {}
        globs = [str(i.get("glob")) for i in spec.get("images") or [] if isinstance(i, Mapping) and i.get("glob")]
        if not globs:
            ctx.warn(name, "no images[].glob: skipped")
            continue
        fields = classify(doc, CIP_FIELDS)
        notes: list[str] = list(fields.reported)
        refusals: list[str] = list(fields.refused)
        verifiers: list[Verifier] = []
        if not refusals:
            for j, auth in enumerate(spec.get("authorities") or []):
                if not isinstance(auth, Mapping):
                    continue
                aname = str(auth.get("name") or f"authority-{j}")
                verifiers += _cip_authority(ctx, auth, f"{name}/{aname}", roots, notes, refusals)
            if not spec.get("authorities"):
                refusals.append("no authorities: nothing to verify the image against")
        mode = str(spec.get("mode") or "enforce")
        if mode not in ("enforce", "warn"):
            notes.append(f"mode {mode!r} unknown: enforce used")
            mode = "enforce"
        for n in notes:
            ctx.warn(name, n)
        for why in refusals:
            ctx.warn(name, f"refused: {why}")
        rules.append(
            CompiledRule(
                name=name,
                images=tuple(globs),
                namespaces=("*",),
                verifiers=() if refusals else tuple(verifiers),
                mode=mode,
                source=f"clusterimagepolicy:ClusterImagePolicy/{name}",
                count=1,
                matcher=cip_glob_matcher(globs),
                notes=tuple(dict.fromkeys(notes)),
                refused=tuple(dict.fromkeys(refusals)),
                admission=_cip_admission(doc, name, mode),
            )
        )
    return rules


def _cip_admission(doc: Mapping[str, Any], name: str, mode: str) -> AdmissionPolicy:
    """How policy-controller applied the policy at admission (scanner/policy/admission.py)."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    spec = doc.get("spec") if isinstance(doc.get("spec"), Mapping) else {}
    assert isinstance(meta, Mapping) and isinstance(spec, Mapping)
    match = spec.get("match")
    narrowing = (
        tuple(AdmissionFilter(description=f"match={m}"[:300]) for m in match)
        if isinstance(match, list) and match else ()
    )
    return AdmissionPolicy(
        source="clusterimagepolicy",
        controller=Controller.POLICY_CONTROLLER,
        kind="ClusterImagePolicy",
        name=name,
        created_at=parse_kube_time(meta.get("creationTimestamp")),
        mode=AdmissionMode.WARN if mode == "warn" else AdmissionMode.ENFORCE,
        scope=AdmissionScope(narrowing=narrowing),
    )


def _cip_authority(
    ctx: ImportContext,
    auth: Mapping[str, Any],
    name: str,
    roots: Mapping[str, Mapping[str, Any]],
    notes: list[str],
    refusals: list[str],
) -> list[Verifier]:
    """The verifier of one authority (policy-controller: any one authority passing is enough)."""
    kinds = [k for k in ("key", "keyless", "static") if k in auth]
    if len(kinds) != 1:
        refusals.append(f"authority {name}: give exactly one of key, keyless, static (has {kinds})")
        return []
    if "static" in auth:
        action = str((auth.get("static") or {}).get("action") or "")
        try:
            return [StaticVerifier(action, source=f"ClusterImagePolicy {name}")]
        except ValueError as exc:
            raise ConfigError(str(exc), source=ctx.source, field=name) from exc
    keyless = auth.get("keyless") if isinstance(auth.get("keyless"), Mapping) else None
    ctlog = auth.get("ctlog") if isinstance(auth.get("ctlog"), Mapping) else None
    # policy-controller: no ctlog means no transparency-log check, except keyless without a
    # trustRootRef, which checks against the public Rekor keys.
    ignore_tlog = ctlog is None and not (keyless is not None and not keyless.get("trustRootRef"))
    refs = {str(r) for r in ((keyless or {}).get("trustRootRef"), (ctlog or {}).get("trustRootRef")) if r}
    if len(refs) > 1:
        refusals.append(f"authority {name}: keyless and ctlog name different trustRootRefs {sorted(refs)}")
        return []
    trusted_root: str | None = None
    if refs:
        (ref,) = refs
        tr = roots.get(ref)
        if tr is None:
            refusals.append(
                f"authority {name}: TrustRoot {ref!r} not found (give it in the same file or read from the cluster)"
            )
            return []
        tr_fields = classify(tr, TRUSTROOT_FIELDS)
        if tr_fields.refused:
            refusals += [f"TrustRoot {ref}: {why}" for why in tr_fields.refused]
            return []
        data = _trust_root_json(tr)
        if data is None:
            refusals.append(f"authority {name}: TrustRoot {ref!r} has no sigstoreKeys")
            return []
        trusted_root = trust_sources.virtual(data, ".json")
        ctx.raw.append(data)
    key = auth.get("key")
    if isinstance(key, Mapping):
        material = key.get("data") or key.get("kms")
        secret = key.get("secretRef")
        if not material and isinstance(secret, Mapping) and secret.get("name"):
            material = _secret_value(ctx, str(secret.get("namespace") or "cosign-system"), str(secret["name"]), name,
                                     entry=None)
        if not material:
            refusals.append(f"authority {name}: key without data, kms or a readable secretRef")
            return []
        spec = CosignVerifierSpec.model_validate(
            {"key": str(material), "ignoreTlog": ignore_tlog, **({"trustedRoot": trusted_root} if trusted_root else {})}
        )
        return [ctx.loader.build_verifier(VerifierSpec(cosign=spec), ctx.base_dir, name, name)]
    if keyless is not None:
        ids = []
        for ident in keyless.get("identities") or []:
            if not isinstance(ident, Mapping):
                continue
            d = {k: str(ident[k]) for k in ("issuer", "issuerRegExp", "subject", "subjectRegExp") if ident.get(k)}
            if "issuer" not in d:
                d.setdefault("issuerRegExp", ".*")
            if "subject" not in d:
                d.setdefault("subjectRegExp", ".*")
            ids.append(d)
        if not ids:
            # policy-controller requires identities on a keyless authority; without them nothing is pinned.
            refusals.append(f"authority {name}: keyless without identities")
            return []
        ca = keyless.get("ca-cert") or keyless.get("caCert")
        spec_d: dict[str, Any] = {"identities": ids}
        if trusted_root:
            spec_d["trustedRoot"] = trusted_root
        elif isinstance(ca, Mapping) and ca.get("data"):
            spec_d["roots"] = trust_sources.virtual(str(ca["data"]), ".pem")
            notes.append(f"authority {name}: ca-cert without Rekor/CT keys: give a TrustRoot for full verification")
        spec = CosignVerifierSpec.model_validate(
            {"keyless": spec_d, "ignoreTlog": ignore_tlog, "ignoreSCT": bool(keyless.get("insecureIgnoreSCT"))}
        )
        return [ctx.loader.build_verifier(VerifierSpec(cosign=spec), ctx.base_dir, name, name)]
    refusals.append(f"authority {name}: {kinds[0]} is not a mapping")
    return []


# ----------------------------------------------------------------------------------------------
# notation configuration directory


def notation_rules(ctx: ImportContext, directory: Path) -> list[CompiledRule]:
    policy_file = next(
        (directory / n for n in ("trustpolicy.oci.json", "trustpolicy.json") if trust_sources.is_file(directory / n)),
        None,
    )
    if policy_file is None:
        raise ConfigError(
            "no trustpolicy.oci.json or trustpolicy.json in the notation directory", source=str(directory)
        )
    store = directory / "truststore"
    if not trust_sources.is_dir(store):
        raise ConfigError("no truststore/ directory beside the trust policy", source=str(directory))
    data = trust_sources.read_bytes(policy_file)
    ctx.raw.append(data)
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"trust policy is not JSON: {exc}", source=str(policy_file)) from exc
    scopes: list[str] = []
    for st in doc.get("trustPolicies") or []:
        scopes += [str(s) for s in st.get("registryScopes") or []]
    spec = NotationVerifierSpec.model_validate({"trustPolicy": str(policy_file), "trustStore": str(store)})
    verifier = ctx.loader.build_verifier(VerifierSpec(notation=spec), directory, "notation", "notation")
    images = ("*",) if "*" in scopes else tuple(dict.fromkeys(scopes))
    return [
        CompiledRule(
            name=f"notation:{policy_file.name}",
            images=images,
            namespaces=("*",),
            verifiers=(verifier,),
            source=f"notation:{directory}",
        )
    ]


def notation_cluster_rules(ctx: ImportContext, docs: Sequence[Mapping[str, Any]]) -> list[CompiledRule]:
    """kyverno-notation-aws ``TrustPolicy``/``TrustStore`` resources (notation.nirmata.io/v1alpha1): one
    rule per TrustPolicy, with every TrustStore available to it."""
    stores = [d for d in docs if d.get("kind") == "TrustStore"]
    store_file = trust_sources.virtual(yaml.safe_dump_all(stores) if stores else "", ".truststores.yaml")
    rules: list[CompiledRule] = []
    for doc in docs:
        if doc.get("kind") != "TrustPolicy":
            continue
        name = str((doc.get("metadata") or {}).get("name") or "?")
        policy_file = trust_sources.virtual(yaml.safe_dump(doc), ".trustpolicy.yaml")
        scopes = [
            str(s)
            for st in (doc.get("spec") or {}).get("trustPolicies") or []
            for s in (st.get("registryScopes") or [])
        ]
        spec = NotationVerifierSpec.model_validate({"trustPolicy": policy_file, "trustStore": store_file})
        verifier = ctx.loader.build_verifier(VerifierSpec(notation=spec), ctx.base_dir, f"TrustPolicy/{name}", name)
        images = ("*",) if "*" in scopes else tuple(dict.fromkeys(scopes))
        rules.append(
            CompiledRule(
                name=f"TrustPolicy/{name}",
                images=images or ("*",),
                namespaces=("*",),
                verifiers=(verifier,),
                source=f"notation:TrustPolicy/{name}",
            )
        )
    return rules


# ----------------------------------------------------------------------------------------------
# from the cluster


class _LazyCluster:
    """The cluster's reader, connected (its kubeconfig read) at its first request. Every request goes
    through the trust sources: a replay of a pack's trust snapshot (``verify-evidence``) answers them
    all, so it never reads this machine's kubeconfig nor reaches a cluster."""

    def __init__(self, kubeconfig: str | None, context: str | None, deadline: float | None = None) -> None:
        self._args = (kubeconfig, context)
        self._deadline = deadline
        self._reader: ClusterReader | None = None

    def _get(self) -> ClusterReader:
        if self._reader is None:  # the edge's default, as python-tuf's Updater takes its RequestsFetcher
            from scanner.sources.kube import KubeClusterReader

            self._reader = KubeClusterReader.connect(*self._args, deadline=self._deadline)
        return self._reader

    def policy_documents(self, kind: Any) -> list[dict[str, Any]]:
        return self._get().policy_documents(kind)

    def secret_data(self, namespace: str, name: str) -> Mapping[str, Any]:
        return self._get().secret_data(namespace, name)

    def validating_webhook_configurations(self) -> list[Any]:
        return self._get().validating_webhook_configurations()


def _recorded(what: str, read: Callable[[], Any]) -> Any:
    """A cluster read through the trust sources (recorded in a scan's snapshot, answered by a replay)."""
    return json.loads(trust_sources.fetched("kube", what, lambda: json.dumps(read(), sort_keys=True).encode()))


def _controller_of(configuration: str, webhook: str) -> Controller | None:
    """Which admission controller a webhook belongs to, by the names those controllers give them."""
    if ".kyverno.svc" in webhook or configuration.startswith("kyverno-"):
        return Controller.KYVERNO
    if webhook.endswith("sigstore.dev") or configuration.endswith("policy.sigstore.dev"):
        return Controller.POLICY_CONTROLLER
    if "kritis" in webhook or "kritis" in configuration:
        return Controller.KRITIS
    return None


def webhooks_from(items: Sequence[Any]) -> tuple[WebhookConfig, ...]:
    """The webhooks of Kyverno, policy-controller and kritis among ValidatingWebhookConfiguration objects."""
    out: list[WebhookConfig] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        meta = item.get("metadata") if isinstance(item.get("metadata"), Mapping) else {}
        assert isinstance(meta, Mapping)
        configuration = str(meta.get("name") or "")[:253]
        hooks = item.get("webhooks") if isinstance(item.get("webhooks"), list) else []
        assert isinstance(hooks, list)
        for hook in hooks:
            if not isinstance(hook, Mapping):
                continue
            name = str(hook.get("name") or "")[:253]
            controller = _controller_of(configuration, name)
            if controller is not None:
                policy = hook.get("failurePolicy")
                out.append(WebhookConfig(controller, configuration, name,
                                         str(policy)[:16] if isinstance(policy, str) and policy else "Fail"))
    return tuple(out)


def _cluster_webhooks(cluster: ClusterReader, warnings: list[str]) -> tuple[WebhookConfig, ...]:
    """The admission controllers' webhooks in the cluster. They only explain findings: a failure to read
    them is a warning (the webhook cause is then not examined), never the scan's."""
    try:
        items = _recorded("admissionregistration.k8s.io/v1 validatingwebhookconfigurations",
                          cluster.validating_webhook_configurations)
    except (ClusterReadError, ConfigError) as exc:  # ConfigError: a replay without this answer
        warnings.append(f"{exc}: whether an admission webhook fails open is not examined")
        return ()
    return webhooks_from(items)


def _refuse_unshaped(docs: Sequence[Mapping[str, Any]], source: str) -> None:
    """An object whose metadata or spec is not a mapping (``spec: x``) is refused (exit 2): the API server's
    schema never stores one, and the importers would fail on it with an unexpected error (exit 3)."""
    for d in docs:
        for key in ("metadata", "spec"):
            if d.get(key) is not None and not isinstance(d.get(key), Mapping):
                name = d.get("metadata", {}).get("name") if isinstance(d.get("metadata"), Mapping) else None
                raise ConfigError(f"{d.get('kind')} {name or '?'}: {key} is a {type(d.get(key)).__name__}, "
                                  "not a mapping", source=source)


def _refuse_duplicates(rules: Sequence[CompiledRule]) -> None:
    """A rule's identity is (source, namespace, name). Two rules with the same identity (the same
    policy given twice, in two files or as two documents) are refused, never merged or shadowed."""
    seen: set[tuple[str, str, str]] = set()
    for r in rules:
        if r.identity in seen:
            where = f" in namespace {r.namespace}" if r.namespace else ""
            raise ConfigError(
                f"rule {r.name!r}{where} from {r.source} is defined twice: give each policy once "
                "(two documents or two --policy-from sources hold the same policy)"
            )
        seen.add(r.identity)


def merge(
    policy: Policy | None,
    policy_from: Sequence[str],
    *,
    loader: PolicyLoader,
    kubeconfig: str | None,
    context: str | None,
    cluster: ClusterReader | None = None,
    deadline: float | None = None,
) -> Policy:
    """``policy`` with the rules imported from ``policy_from``. A ``KIND:cluster`` source is read through
    ``cluster`` (default: the edge's reader of the API server named by ``kubeconfig``/``context``, every
    request cut at ``deadline``, the scan's ``time.monotonic()`` value)."""
    rules = list(policy.rules) if policy else []
    warnings: list[str] = list(policy.warnings) if policy else []
    sources = list(policy.sources) if policy else []
    h = hashlib.sha256((policy.digest if policy else "").encode())
    used_cluster: ClusterReader | None = None
    for spec in policy_from:
        kind, sep, where = spec.partition(":")
        kind = kind.lower()
        if not sep or kind not in ("kyverno", "clusterimagepolicy", "notation", "kritis") or not where:
            raise ConfigError(
                f"--policy-from {spec!r}: use kyverno:FILE|cluster, clusterimagepolicy:FILE|cluster, "
                "kritis:FILE|cluster or notation:DIR"
            )
        trust_sources.refuse_virtual(where, spec)
        ctx = ImportContext(
            loader=loader, base_dir=Path(where).parent if where != "cluster" else Path.cwd(), source=spec
        )
        if kind == "notation" and where != "cluster":
            new = notation_rules(ctx, Path(where))
        else:
            if where == "cluster":
                if cluster is None:
                    cluster = _LazyCluster(kubeconfig, context, deadline)
                used_cluster = ctx.cluster = cluster
                docs = _recorded(f"{kind} policy documents",
                                 lambda r=cluster, k=kind: r.policy_documents(k))  # type: ignore[misc]
                ctx.raw.append(json.dumps(docs, sort_keys=True).encode())
            else:
                try:
                    data = trust_sources.read_bytes(Path(where))
                except OSError as exc:
                    raise ConfigError(f"cannot read: {exc.strerror}", source=where) from exc
                ctx.raw.append(data)
                docs = _docs(data, where)
            trust_sources.refuse_virtual(docs, spec)
            if kind != "kritis":  # kritis' importer refuses a malformed resource per rule (scanner/policy/kritis.py)
                _refuse_unshaped(docs, spec)
            if kind == "kritis":
                from scanner.policy.kritis import kritis_rules

                new = kritis_rules(ctx, docs)
            elif kind == "notation":
                new = notation_cluster_rules(ctx, docs)
            else:
                new = kyverno_rules(ctx, docs) if kind == "kyverno" else cip_rules(ctx, docs)
            if not new:
                ctx.warnings.append(f"{spec}: no image verification rules found")
        rules += new
        warnings += ctx.warnings
        sources.append(spec)
        for raw in ctx.raw:
            h.update(hashlib.sha256(redact_bytes(raw)).digest())
    _refuse_duplicates(rules)
    webhooks = _cluster_webhooks(used_cluster, warnings) if used_cluster is not None else ()
    for r in rules:
        for v in r.verifiers:
            h.update(v.trust_fingerprint.encode())
        h.update(json.dumps([r.identity, r.sets, r.refused, r.count], default=str).encode())
    base = policy or Policy(
        rules=(),
        exemptions=(),
        revocations=(),
        expiry_warning=parse_duration("720h"),
        insecure_registries=frozenset(),
        max_signatures=50,
        digest="",
    )
    return replace(
        base,
        rules=tuple(rules),
        warnings=tuple(warnings),
        sources=tuple(sources),
        digest="sha256:" + h.hexdigest(),
        webhooks=webhooks,
    )
