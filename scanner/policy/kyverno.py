"""Kyverno ``ClusterPolicy`` / ``Policy`` rules with ``verifyImages`` (kyverno.io/v1), as native rules.

Semantics followed (kyverno ``pkg/engine/internal/imageverifier.go``, ``api/kyverno/v1``):

* A namespaced ``Policy`` applies only in its own namespace. Its rules are named
  ``<namespace>/<policy>/<rule>`` and come from ``kyverno:Policy/<namespace>/<policy>``, so two
  teams' policies that share names stay two rules.
* ``attestors`` is a list of sets, **every** set must be satisfied; within a set, ``count`` entries
  (all of them when no count is given) must verify. A ``publicKeys`` holding several PEM keys is
  several entries (Kyverno's ExpandStaticKeys). This maps onto native ``verifierSets``.
* Keyless ``subject``/``issuer`` are Kyverno wildcards (``*``, ``?``) over the whole value;
  ``additionalExtensions`` are Fulcio certificate extensions matched the same way; both are enforced.
* Every matching rule of every policy applies and must hold ("all matching policy rules will always be
  applied"), and so does every ``verifyImages`` entry of a rule whose ``imageReferences`` match: each
  entry is a native rule without a ``first_match`` group. ``applyRules: One`` is audited as ``All``.
* The deprecated single-attestor fields (``key``, ``issuer``/``subject``/``roots``,
  ``additionalExtensions``, ``annotations``) are converted as ``ImageVerification.Convert`` does.

What every field of the CRD becomes is declared in :data:`FIELDS` (see scanner/policy/fields.py):
mapped, reported on every verdict of the rule, or refused (the rule's images are then ``error``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from scanner.clock import parse_kube_time
from scanner.errors import ConfigError
from scanner.policy.admission import AdmissionFilter, AdmissionMode, AdmissionPolicy, AdmissionScope, Controller
from scanner.policy.engine import namespace_matches
from scanner.policy.fields import Field, FieldTable, classify, mapped, refused, reported, table
from scanner.policy.imports import ImportContext, _notation_from_certs, _pems, _secret_value
from scanner.policy.loader import KMS_SCHEMES, CompiledRule
from scanner.policy.schema import COSIGN_EXTENSIONS, CosignVerifierSpec, VerifierSpec, extension_name
from scanner.verify import sources as trust_sources
from scanner.verify.base import Verifier

_ADMISSION = "admission-controller behaviour: an audit judges every running pod whatever it says"
_OFFLINE_REKOR = "not queried (audits run offline): the Rekor bundle attached to the signature is verified"
_TSA = "timestamp authority chains are not supported by this importer"
_ELSEWHERE = (
    "signatures are looked up in the image's own repository: signatures kept only elsewhere are not "
    "found (unsigned), never accepted"
)
_SHA256 = "only sha256 is used: a signature made with another digest algorithm does not verify"

VI = "spec.rules[].verifyImages[]"


def _entry_fields(e: str) -> dict[str, Field]:
    out: dict[str, Field] = {
        f"{e}.keys.publicKeys": mapped(),
        f"{e}.keys.kms": mapped(),
        f"{e}.keys.secret.name": mapped(),
        f"{e}.keys.secret.namespace": mapped(),
        f"{e}.keys.signatureAlgorithm": reported(_SHA256),
        f"{e}.signatureAlgorithm": reported(_SHA256),
        f"{e}.certificates.cert": mapped(),
        f"{e}.certificates.certChain": mapped("Notary: the trust store; Cosign: refused (the chain is not validated)"),
        f"{e}.keyless.issuer": mapped("a Kyverno wildcard over the whole issuer"),
        f"{e}.keyless.issuerRegExp": mapped("must match the whole issuer (stricter than Go's unanchored match)"),
        f"{e}.keyless.subject": mapped("a Kyverno wildcard over the whole subject"),
        f"{e}.keyless.subjectRegExp": mapped("must match the whole subject (stricter than Go's unanchored match)"),
        f"{e}.keyless.roots": mapped(),
        f"{e}.keyless.additionalExtensions": mapped(
            "cosign's Fulcio extensions (oidcIssuer, githubWorkflow*), enforced as Kyverno wildcards; a "
            "certificate without the extension never matches"),
        f"{e}.attestor": refused("nested attestor sets are not supported"),
        f"{e}.repository": reported(_ELSEWHERE),
        f"{e}.annotations": mapped("signature annotations that must be present (cosign -a)"),
    }
    for kind in ("keys", "certificates", "keyless"):
        out[f"{e}.{kind}.rekor.ignoreTlog"] = mapped()
        out[f"{e}.{kind}.rekor.pubkey"] = mapped()
        out[f"{e}.{kind}.rekor.url"] = reported(_OFFLINE_REKOR)
        out[f"{e}.{kind}.ctlog.ignoreSCT"] = mapped()
        out[f"{e}.{kind}.ctlog.pubkey"] = mapped("keyless: the CT log key; keys and certificates have no SCT")
        out[f"{e}.{kind}.ctlog.tsaCertChain"] = refused(_TSA)
    return out


def _match_fields(block: str, exclude: bool) -> dict[str, Field]:
    dropped = (
        "not evaluated: an exclude filter that uses it is dropped, so the rule applies more widely"
        if exclude
        else "not evaluated: the rule applies to every pod of the namespaces it names"
    )
    who = (
        "who made the admission request is unknown to an audit: an exclude filter that uses it is dropped"
        if exclude
        else "who made the admission request is unknown to an audit: the rule applies whoever it was"
    )
    out: dict[str, Field] = {}
    for form in ("", ".any[]", ".all[]"):
        b = f"spec.rules[].{block}{form}"
        out |= {
            f"{b}.resources.kinds": mapped("Pod (or a workload kind: audited on the pods it creates)"),
            f"{b}.resources.namespaces": mapped(),
            f"{b}.resources.operations": mapped(
                "every running pod was admitted by a CREATE: match applies whatever they are; an exclude "
                "filter without CREATE excludes nothing from an audit"
            ),
            f"{b}.resources.name": reported(dropped),
            f"{b}.resources.names": reported(dropped),
            f"{b}.resources.selector": reported(dropped),
            f"{b}.resources.namespaceSelector": reported(dropped),
            f"{b}.resources.annotations": reported(dropped),
            f"{b}.subjects": reported(who),
            f"{b}.roles": reported(who),
            f"{b}.clusterRoles": reported(who),
        }
    return out


FIELDS: FieldTable = table(
    {
        "apiVersion": mapped(),
        "kind": mapped(),
        "metadata": mapped("name (and a Policy's namespace) identify the rules"),
        "status": mapped("written by Kyverno"),
        **{
            f"spec.{k}": mapped(_ADMISSION)
            for k in (
                "admission",
                "background",
                "emitWarning",
                "failurePolicy",
                "generateExisting",
                "generateExistingOnPolicyUpdate",
                "mutateExistingOnPolicyUpdate",
                "schemaValidation",
                "useServerSideApply",
                "validationFailureAction",
                "validationFailureActionOverrides",
                "webhookTimeoutSeconds",
                "webhookConfiguration.failurePolicy",
                "webhookConfiguration.timeoutSeconds",
            )
        },
        "spec.applyRules": mapped(
            "All (the default): every matching rule applies, as in sigaudit; One is audited as All, with a note"
        ),
        "spec.webhookConfiguration.matchConditions": reported(
            "CEL match conditions are not evaluated: the rules apply to every matching pod"
        ),
        "spec.rules[].name": mapped(),
        "spec.rules[].context": reported("not evaluated; variables ({{...}}) that would use it are refused"),
        "spec.rules[].preconditions": reported("not evaluated: the rule applies to every matching image"),
        "spec.rules[].celPreconditions": reported("not evaluated: the rule applies to every matching image"),
        "spec.rules[].imageExtractors": reported("images in custom resources: the pods' containers are audited"),
        "spec.rules[].reportProperties": mapped("labels of Kyverno's reports"),
        "spec.rules[].skipBackgroundRequests": mapped(_ADMISSION),
        "spec.rules[].validate": mapped("another kind of rule: only verifyImages rules are imported"),
        "spec.rules[].mutate": mapped("another kind of rule: only verifyImages rules are imported"),
        "spec.rules[].generate": mapped("another kind of rule: only verifyImages rules are imported"),
        **_match_fields("match", exclude=False),
        **_match_fields("exclude", exclude=True),
        f"{VI}.imageReferences": mapped(),
        f"{VI}.image": mapped("deprecated: converted as ImageVerification.Convert does"),
        f"{VI}.skipImageReferences": mapped(),
        f"{VI}.type": mapped("Cosign and SigstoreBundle: cosign verifiers (.sig and bundle referrers); Notary"),
        f"{VI}.key": mapped("deprecated: converted as ImageVerification.Convert does"),
        f"{VI}.issuer": mapped("deprecated: converted as ImageVerification.Convert does"),
        f"{VI}.subject": mapped("deprecated: converted as ImageVerification.Convert does"),
        f"{VI}.roots": mapped("deprecated: converted as ImageVerification.Convert does; refused elsewhere"),
        f"{VI}.additionalExtensions": mapped("deprecated: converted as ImageVerification.Convert does"),
        f"{VI}.annotations": mapped("signature annotations that must be present (cosign -a)"),
        f"{VI}.required": mapped(),
        f"{VI}.verifyDigest": mapped("sigaudit always verifies the running digest"),
        f"{VI}.mutateDigest": mapped(_ADMISSION),
        f"{VI}.useCache": mapped(_ADMISSION),
        f"{VI}.failureAction": mapped(_ADMISSION),
        f"{VI}.cosignOCI11": mapped("where signatures are stored: sigaudit reads .sig tags and OCI 1.1 referrers"),
        f"{VI}.repository": reported(_ELSEWHERE),
        f"{VI}.imageRegistryCredentials": reported("registry credentials come from sigaudit's own configuration"),
        f"{VI}.attestations": refused("attestations (in-toto predicates and their conditions) are not evaluated"),
        f"{VI}.validate": refused("validate.deny conditions are not evaluated"),
        f"{VI}.attestors[].count": mapped("each attestor set becomes one of the rule's verifierSets"),
        **_entry_fields(f"{VI}.attestors[].entries[]"),
    }
)

_VARIABLE = re.compile(r"\{\{.*?\}\}", re.S)


def _wildcard_regexp(pattern: str) -> str:
    """Kyverno's wildcard (IGLOU-EU/go-wildcard v1: ``*`` any run, ``?`` one character) as a
    full-match regular expression."""
    return "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)


# ----------------------------------------------------------------------------------------------
# match / exclude


def _filters(block: Any) -> tuple[str, list[Mapping[str, Any]]]:
    """("any" | "all", filters) of a match/exclude block (the legacy form is one "any" filter).

    A filter of the wrong shape (``resources: Pod``, ``namespaces: legacy`` as a string, ``any`` not a
    list) is refused (exit 2), never read letter by letter nor dropped: Kyverno's schema rejects it, and
    reading ``"legacy"`` as six one-letter namespaces would silently narrow the rule."""
    if block is None:
        return "any", []
    if not isinstance(block, Mapping):
        raise ConfigError(f"a match/exclude block is a {type(block).__name__}, not a mapping")
    for form in ("any", "all"):
        if block.get(form) is not None and not isinstance(block.get(form), list):
            raise ConfigError(f"match/exclude {form} is a {type(block.get(form)).__name__}, not a list")
    if block.get("all"):
        filters = [f for f in block["all"] if isinstance(f, Mapping)]
        how = "all"
    else:
        filters = [f for f in block.get("any") or [] if isinstance(f, Mapping)]
        if block.get("resources") or block.get("subjects") or block.get("roles") or block.get("clusterRoles"):
            filters.append(block)
        how = "any"
    for f in filters:
        res = f.get("resources")
        if res is not None and not isinstance(res, Mapping):
            raise ConfigError(f"match/exclude resources is a {type(res).__name__}, not a mapping")
        for key in ("namespaces", "kinds", "names", "operations"):
            value = (res or {}).get(key)
            if value is not None and not isinstance(value, list):
                raise ConfigError(f"match/exclude resources.{key} is a {type(value).__name__}, not a list")
    return how, filters


def _mixed(block: Any) -> bool:
    """A block that combines any, all and the legacy form: its meaning is not approximated."""
    if not isinstance(block, Mapping):
        return False
    legacy = any(block.get(k) for k in ("resources", "subjects", "roles", "clusterRoles"))
    return sum(bool(x) for x in (block.get("any"), block.get("all"), legacy)) > 1


def _pod_kinds(kinds: list[str]) -> bool:
    return not kinds or any(k.rsplit("/", 1)[-1] in ("Pod", "*") for k in kinds)


def _clean(f: Mapping[str, Any]) -> bool:
    """An exclude filter that only names namespaces (and pods, and the CREATE that admitted every
    running pod): an audit can evaluate it exactly."""
    res = f.get("resources") or {}
    if any(f.get(k) for k in ("subjects", "roles", "clusterRoles")):
        return False
    if any(res.get(k) for k in ("name", "names", "selector", "namespaceSelector", "annotations")):
        return False
    operations = [str(o).upper() for o in res.get("operations") or []]
    if operations and "CREATE" not in operations:
        return False  # excludes other requests only: the pods' creation was still verified
    return _pod_kinds([str(k) for k in res.get("kinds") or []])


def _match_namespaces(block: Any) -> tuple[list[str], str | None]:
    """(namespace globs the rule applies to, a note when the approximation widens the rule)."""
    if _mixed(block):
        return ["*"], "match combines any/all/resources: the rule is audited in every namespace"
    how, filters = _filters(block)
    lists = [[str(n) for n in (f.get("resources") or {}).get("namespaces") or []] for f in filters]
    if not filters:
        return ["*"], None
    if how == "any":
        if any(not ns for ns in lists):
            return ["*"], None  # one filter without namespaces matches pods of every namespace
        return sorted({n for ns in lists for n in ns}), None
    named = [ns for ns in lists if ns]
    if not named:
        return ["*"], None
    if len(named) == 1:
        return named[0], None
    return sorted({n for ns in named for n in ns}), "match.all with several namespace lists: the union is audited"


def _exclude_namespaces(block: Any) -> tuple[list[str], str | None]:
    """(namespace globs excluded, a note when filters were dropped). Only filters an audit can
    evaluate exactly exclude anything: dropping a filter makes the rule apply more widely, never less."""
    if _mixed(block):
        return [], "exclude combines any/all/resources: it was dropped"
    how, filters = _filters(block)
    if not filters:
        return [], None
    if how == "any":
        out: list[str] = []
        dropped = 0
        for f in filters:
            ns = [str(n) for n in (f.get("resources") or {}).get("namespaces") or []]
            kinds = [str(k) for k in (f.get("resources") or {}).get("kinds") or []]
            if not _clean(f):
                dropped += 1
            elif ns:
                out += ns
            elif kinds:
                out.append("*")  # excludes pods in every namespace
            else:
                dropped += 1
        note = f"{dropped} exclude filter(s) not evaluable by an audit were dropped" if dropped else None
        return sorted(set(out)), note
    if all(_clean(f) for f in filters):
        named = [[str(n) for n in (f.get("resources") or {}).get("namespaces") or []] for f in filters]
        named = [ns for ns in named if ns]
        if len(named) == 1:
            return named[0], None
    return [], "exclude.all is not evaluable by an audit: it was dropped"


# ----------------------------------------------------------------------------------------------
# attestors


def _convert(vi: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The attestor sets, with the deprecated single-attestor form converted as Kyverno does
    (ImageVerification.Convert: key, or issuer+subject+roots, with annotations)."""
    sets = [a for a in vi.get("attestors") or [] if isinstance(a, Mapping)]
    if vi.get("key") or vi.get("issuer"):
        entry: dict[str, Any] = {}
        if vi.get("annotations"):
            entry["annotations"] = vi["annotations"]
        if vi.get("key"):
            entry["keys"] = {"publicKeys": vi["key"]}
        elif vi.get("issuer"):
            entry["keyless"] = {
                k: v
                for k, v in {
                    "issuer": vi.get("issuer"),
                    "subject": vi.get("subject"),
                    "roots": vi.get("roots"),
                    "additionalExtensions": vi.get("additionalExtensions"),
                }.items()
                if v
            }
        if entry:
            sets = [*sets, {"entries": [entry]}]
    return sets


def _expand_static_keys(entries: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Kyverno's ExpandStaticKeys: an entry whose publicKeys holds several PEM keys is several entries."""
    out: list[Mapping[str, Any]] = []
    for e in entries:
        keys = e.get("keys")
        pems = _pems(str(keys.get("publicKeys") or "")) if isinstance(keys, Mapping) else []
        if isinstance(keys, Mapping) and len(pems) > 1:
            out += [{**e, "keys": {**keys, "publicKeys": pem}} for pem in pems]
        else:
            out.append(e)
    return out


def _cosign(ctx: ImportContext, rule: str, where: str, spec: dict[str, Any]) -> Verifier:
    return ctx.loader.build_verifier(
        VerifierSpec(cosign=CosignVerifierSpec.model_validate(spec)), ctx.base_dir, f"{rule}.{where}", rule
    )


# Every field of an attestor entry that names key or trust material (one rule for all of them).
_TENANT_KEY_FIELDS = {
    "keys": ("publicKeys", "kms"),
    "certificates": ("cert", "certChain"),
    "keyless": ("roots",),
}
_TENANT_LOG_FIELDS = (("rekor", "pubkey"), ("ctlog", "pubkey"), ("ctlog", "tsaCertChain"))


def _tenant_key_refusal(field: str, material: str) -> str | None:
    """Why a key field of a namespaced ``Policy`` (writable by the namespace's tenant) may not be used.
    Credentials and trust material stay with their owner: a tenant's key material is inline PEM (or
    a Secret of its own namespace, whose value is checked here too). A file path would read the
    scanner's disk, an https:// URL would fetch from a host of the tenant's choosing, and a KMS
    reference naming its own endpoint (awskms://HOST/…, azurekms:// outside Azure Key Vault) would aim
    sigaudit's cloud credentials at it; any spelling of the scheme. A KMS key at the provider's
    default endpoint stays allowed. A ClusterPolicy is the cluster admin's, like the operator's own
    policy file, and is not limited."""
    text = material.strip()
    if text.startswith("-----BEGIN"):
        return None
    if text.lower().startswith(KMS_SCHEMES):
        from scanner.verify.kms import custom_endpoint

        try:
            host = custom_endpoint(text)
        except ConfigError as exc:
            return f"in a namespaced Policy, a KMS reference must be well formed: {exc}"
        if host is not None:
            return (f"a namespaced Policy may not name a KMS endpoint ({host!r}): it would send sigaudit's "
                    "cloud credentials there; use the provider's default endpoint, or a ClusterPolicy")
        return None
    kind = "a URL" if "://" in text else "a file path"
    return (f"a namespaced Policy's {field} must be inline PEM or a Secret in its own namespace, not {kind} "
            f"({text[:80]!r}): key material of a tenant comes from the tenant's namespace only")


def _tenant_entry_refusals(entry: Mapping[str, Any], ns: str) -> list[str]:
    """The tenant key-source rule over every key field of one attestor entry of a namespaced Policy."""
    out: list[str] = []
    for kind, fields in _TENANT_KEY_FIELDS.items():
        block = entry.get(kind)
        if not isinstance(block, Mapping):
            continue
        values = [(f"{kind}.{f}", block.get(f)) for f in fields]
        for sub, f in _TENANT_LOG_FIELDS:
            part = block.get(sub)
            values.append((f"{kind}.{sub}.{f}", part.get(f) if isinstance(part, Mapping) else part))
        for field, value in values:
            if value is None or value == "":
                continue
            why = _tenant_key_refusal(field, str(value))
            if why:
                out.append(why)
        secret = block.get("secret")
        if kind == "keys" and isinstance(secret, Mapping):
            other = str(secret.get("namespace") or "")
            if other and other != ns:
                out.append(f"a namespaced Policy (namespace {ns!r}) may read a key only from a Secret in its own "
                           f"namespace, not from namespace {other!r}")
    return out


def _entry(
    ctx: ImportContext,
    entry: Mapping[str, Any],
    vtype: str,
    rule: str,
    ns: str,
    annotations: Mapping[str, Any],
    refusals: list[str],
) -> Verifier | None:
    """The one verifier of one attestor entry (Kyverno: an entry is keys, certificates or keyless)."""
    kinds = [k for k in ("keys", "certificates", "keyless", "attestor") if entry.get(k)]
    if len(kinds) != 1:
        refusals.append(f"an attestor entry must give exactly one of keys, certificates, keyless (has {kinds})")
        return None
    if ns:
        tenant = _tenant_entry_refusals(entry, ns)
        if tenant:
            refusals.extend(tenant)
            return None
    ann = entry.get("annotations") if entry.get("annotations") is not None else annotations
    ann = {str(k): str(v) for k, v in (ann or {}).items()}
    if vtype == "notary":
        certs = entry.get("certificates") or {}
        pem = "".join(_pems(str(certs.get("cert") or ""))) + "".join(_pems(str(certs.get("certChain") or "")))
        if not pem or kinds != ["certificates"]:
            refusals.append("a Notary attestor entry needs certificates (cert and/or certChain)")
            return None
        if ann:
            refusals.append("annotations on Notary signatures are not supported")
            return None
        return _notation_from_certs(ctx, pem, rule)
    keys = entry.get("keys")
    if isinstance(keys, Mapping):
        rekor = keys.get("rekor") or {}
        sources = [k for k in ("publicKeys", "kms", "secret") if keys.get(k)]
        if len(sources) != 1:
            refusals.append(f"keys must give exactly one of publicKeys, kms, secret (has {sources})")
            return None
        if keys.get("publicKeys"):
            material = (_pems(str(keys["publicKeys"])) or [str(keys["publicKeys"])])[0]
        elif keys.get("kms"):
            material = str(keys["kms"])
        else:
            secret = keys["secret"]
            if not isinstance(secret, Mapping) or not secret.get("name"):
                refusals.append("keys.secret must be a map with a name (and optionally a namespace)")
                return None
            value = _secret_value(ctx, str(secret.get("namespace") or ns or "default"), str(secret.get("name")), rule)
            if not value:
                refusals.append(f"the key in Secret {secret.get('name')!r} could not be read")
                return None
            material = value
        if ns:
            why = _tenant_key_refusal("keys.secret" if keys.get("secret") else "keys", material)
            if why:
                refusals.append(why)
                return None
        return _cosign(
            ctx,
            rule,
            "keys",
            {
                "key": material,
                "ignoreTlog": bool(rekor.get("ignoreTlog", False)),
                "annotations": ann,
                **({"rekorPubKey": rekor["pubkey"]} if rekor.get("pubkey") else {}),
            },
        )
    keyless = entry.get("keyless")
    if isinstance(keyless, Mapping):
        ident: dict[str, Any] = {}
        for exact, rx in (("subject", "subjectRegExp"), ("issuer", "issuerRegExp")):
            if keyless.get(rx):
                if keyless.get(exact):
                    # Kyverno checks both when both are given; one identity here holds one of each.
                    refusals.append(f"keyless gives both {exact} and {rx}")
                    return None
                ident[rx] = str(keyless[rx])
            elif keyless.get(exact):
                ident[rx] = _wildcard_regexp(str(keyless[exact]))
            else:
                ident[rx] = ".*"
        extensions = keyless.get("additionalExtensions") or {}
        if extensions:
            if not isinstance(extensions, Mapping):
                refusals.append("additionalExtensions: not a map of extension name to value")
                return None
            required: dict[str, str] = {}
            for k, v in extensions.items():
                try:
                    # Kyverno reads cosign's CertExtensionMap only (by name or OID); any other key
                    # fails verification there, so accepting it here would be looser: refused.
                    name = extension_name(str(k), COSIGN_EXTENSIONS)
                except ValueError as exc:
                    refusals.append(f"additionalExtensions: {exc} (Kyverno knows {', '.join(COSIGN_EXTENSIONS)})")
                    return None
                if name in required:
                    # Kyverno checks both spellings (name and OID); one regexp cannot hold both.
                    refusals.append(f"additionalExtensions names {name} twice (by name and by OID)")
                    return None
                required[name] = _wildcard_regexp(str(v))
            ident["extensionsRegExp"] = required
        spec_d: dict[str, Any] = {"identities": [ident]}
        if keyless.get("roots"):
            spec_d["roots"] = trust_sources.virtual(str(keyless["roots"]), ".pem")
        rekor = keyless.get("rekor") or {}
        if rekor.get("pubkey"):
            spec_d["rekor"] = {"pubkey": trust_sources.virtual(str(rekor["pubkey"]), ".pem")}
        ctlog = keyless.get("ctlog") or {}
        if ctlog.get("pubkey") or ctlog.get("ignoreSCT"):
            spec_d["ctlog"] = {
                **({"pubkey": trust_sources.virtual(str(ctlog["pubkey"]), ".pem")} if ctlog.get("pubkey") else {}),
                "ignoreSCT": bool(ctlog.get("ignoreSCT")),
            }
        return _cosign(
            ctx,
            rule,
            "keyless",
            {"keyless": spec_d, "ignoreTlog": bool(rekor.get("ignoreTlog", False)), "annotations": ann},
        )
    certs = entry.get("certificates")
    if isinstance(certs, Mapping):
        cert = "".join(_pems(str(certs.get("cert") or "")))
        if not cert:
            refusals.append("certificates without a cert")
            return None
        if certs.get("certChain"):
            refusals.append("certificates.certChain: the chain of a Cosign certificate is not validated")
            return None
        return _cosign(
            ctx,
            rule,
            "certificates",
            {
                "key": cert,
                "ignoreTlog": bool((certs.get("rekor") or {}).get("ignoreTlog", False)),
                "annotations": ann,
            },
        )
    refusals.append("nested attestor sets are not supported")
    return None


# ----------------------------------------------------------------------------------------------
# policies and rules


def kyverno_rules(ctx: ImportContext, docs: Iterable[Mapping[str, Any]]) -> list[CompiledRule]:
    rules: list[CompiledRule] = []
    for doc in docs:
        kind = doc.get("kind")
        if kind not in ("ClusterPolicy", "Policy") or not str(doc.get("apiVersion", "")).startswith("kyverno.io/"):
            continue
        meta = doc.get("metadata") or {}
        pname = str(meta.get("name") or "?")
        pns = ""
        if kind == "Policy":
            pns = str(meta.get("namespace") or "")
            if not pns:
                raise ConfigError(
                    f"Kyverno Policy {pname!r} has no metadata.namespace: a namespaced Policy applies only in "
                    "its namespace (export it with `kubectl get policy -A -o yaml`, or set the namespace)",
                    source=ctx.source,
                )
        label = f"Policy/{pns}/{pname}" if pns else f"ClusterPolicy/{pname}"
        prefix = f"{pns}/{pname}" if pns else pname
        spec = doc.get("spec") or {}
        # Fields of the policy itself (every rule of it shares them); the rules are classified one by one.
        top = classify(doc, FIELDS, skip=("spec.rules",))
        top_notes = list(top.reported)
        if str(spec.get("applyRules") or "All").lower() == "one":
            # Kyverno stops at the first rule that applied to the pod; the rules' match blocks are only
            # partly evaluable here (labels, names, ...), so "first" could pick a rule Kyverno would not
            # and skip the one it applies. Every matching rule is audited instead: never looser.
            top_notes.append(
                "spec.applyRules: One: every matching rule of the policy is audited, not only the first "
                "(stricter than Kyverno when several rules match an image)"
            )
        for r in spec.get("rules") or []:
            if not isinstance(r, Mapping) or not r.get("verifyImages"):
                continue
            rname = f"{prefix}/{r.get('name', '?')}"
            rule_fields = classify(r, FIELDS, "spec.rules[]", skip=("spec.rules[].verifyImages",))
            notes = [*top_notes, *rule_fields.reported]
            refusals = [*top.refused, *rule_fields.refused]
            ns_in, widened = _match_namespaces(r.get("match"))
            ns_out, dropped = _exclude_namespaces(r.get("exclude"))
            notes += [n for n in (widened, dropped) if n]
            if pns:
                if not namespace_matches(ns_in, pns):
                    ctx.warn(rname, f"matches namespaces {ns_in}, never {pns!r}, its own: it applies nowhere")
                    continue
                namespaces = [pns]
            else:
                namespaces = ns_in
            vis = [vi for vi in r.get("verifyImages") or [] if isinstance(vi, Mapping)]
            for i, vi in enumerate(vis):
                vname = rname if len(vis) == 1 else f"{rname}#{i}"
                admission = _admission(doc, str(kind), pname, pns, r, vi)
                rules += [
                    replace(rule, admission=admission)
                    for rule in _verify_images(
                        ctx, vi, vname, label, pns, namespaces, ns_out, list(dict.fromkeys(notes)), list(refusals)
                    )
                ]
    return rules


# ----------------------------------------------------------------------------------------------
# how Kyverno applied the rule at admission (scanner/policy/admission.py): explains, never decides

_ACTIONS = {"enforce": AdmissionMode.ENFORCE, "audit": AdmissionMode.AUDIT}


def _action(value: Any, default: AdmissionMode) -> AdmissionMode:
    return _ACTIONS.get(str(value).strip().lower(), default) if value is not None else default


def _res(f: Mapping[str, Any]) -> Mapping[str, Any]:
    res = f.get("resources")
    return res if isinstance(res, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(str(x) for x in value) if isinstance(value, list) else ()


def _describe(f: Mapping[str, Any]) -> str:
    res = _res(f)
    parts = [f"{k}={res[k]}" for k in sorted(res, key=str) if res.get(k)]
    parts += [f"{k}={f[k]}" for k in ("subjects", "roles", "clusterRoles") if f.get(k)]
    return " ".join(parts)[:300]


def _as_filter(f: Mapping[str, Any]) -> AdmissionFilter:
    res = _res(f)
    return AdmissionFilter(description=_describe(f), namespaces=_strs(res.get("namespaces")),
                           kinds=_strs(res.get("kinds")))


def _admission(
    doc: Mapping[str, Any], kind: str, name: str, namespace: str, rule: Mapping[str, Any], vi: Mapping[str, Any]
) -> AdmissionPolicy:
    spec = doc.get("spec") if isinstance(doc.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    # Kyverno's default validationFailureAction is Audit; a verifyImages failureAction (1.13+) wins.
    mode = _action(vi.get("failureAction"), _action(spec.get("validationFailureAction"), AdmissionMode.AUDIT))
    if spec.get("admission") is False:
        mode = AdmissionMode.OFF
    overrides = tuple(
        (_action(o.get("action"), mode), _strs(o.get("namespaces")))
        for o in _list(spec.get("validationFailureActionOverrides"))
        if isinstance(o, Mapping) and _strs(o.get("namespaces")) and vi.get("failureAction") is None
    )
    hook = spec.get("webhookConfiguration") if isinstance(spec.get("webhookConfiguration"), Mapping) else {}
    assert isinstance(hook, Mapping)
    failure_policy = hook.get("failurePolicy") or spec.get("failurePolicy")
    _, matches = _filters(rule.get("match"))
    kinds: list[str] = []
    for f in matches:
        fk = _strs(_res(f).get("kinds"))
        if not fk:
            kinds = []
            break
        kinds += fk
    narrowing = tuple(
        _as_filter(f) for f in matches
        if any(_res(f).get(k) for k in ("name", "names", "selector", "namespaceSelector", "annotations"))
        or any(f.get(k) for k in ("subjects", "roles", "clusterRoles"))
    )
    _, excludes = _filters(rule.get("exclude"))
    return AdmissionPolicy(
        source="kyverno",
        controller=Controller.KYVERNO,
        kind=kind,
        name=name,
        namespace=namespace,
        created_at=parse_kube_time(meta.get("creationTimestamp")),
        mode=mode,
        scope=AdmissionScope(
            match_kinds=tuple(dict.fromkeys(kinds)),
            excludes=tuple(_as_filter(f) for f in excludes if not _clean(f) or _mixed(rule.get("exclude"))),
            narrowing=narrowing,
        ),
        failure_policy=str(failure_policy) if failure_policy else None,
        mode_overrides=overrides,
    )


def _verify_images(
    ctx: ImportContext,
    vi: Mapping[str, Any],
    name: str,
    label: str,
    pns: str,
    namespaces: list[str],
    exclude: list[str],
    notes: list[str],
    refusals: list[str],
) -> list[CompiledRule]:
    images = [str(x) for x in vi.get("imageReferences") or vi.get("images") or []]
    if vi.get("image"):
        images.append(str(vi["image"]))
    if not images:
        ctx.warn(name, "verifyImages entry without imageReferences: skipped")
        return []
    fields = classify(vi, FIELDS, VI)
    notes += fields.reported
    refusals += fields.refused
    for text in (*images, *(str(x) for x in vi.get("skipImageReferences") or [])):
        if _VARIABLE.search(text):
            refusals.append(f"image reference {text!r} uses a variable: variables are not evaluated")
    elsewhere = vi.get("repository") or any(
        isinstance(e, Mapping) and e.get("repository")
        for a in vi.get("attestors") or [] if isinstance(a, Mapping) for e in a.get("entries") or [])
    if elsewhere and not bool(vi.get("required", True)):
        # Looked for beside the image, a bad signature kept elsewhere is not found: "unsigned", which
        # required: false lets pass where Kyverno, reading it, fails the image.
        refusals.append("required: false with signatures kept in another repository (repository): a bad "
                        "signature there would not be found here, and unsigned passes")
    vtype = str(vi.get("type") or "Cosign").lower()
    if vtype not in ("cosign", "sigstorebundle", "notary"):
        refusals.append(f"type {vi.get('type')!r} is not supported")
    if vi.get("roots") and not vi.get("issuer"):
        refusals.append("verifyImages.roots without issuer: applies to other attestors in ways not mapped")
    verifiers: list[Verifier] = []
    sets: list[tuple[int, tuple[int, ...]]] = []
    attestor_sets = _convert(vi)
    if not refusals:
        for k, a in enumerate(attestor_sets):
            entries = _expand_static_keys([e for e in a.get("entries") or [] if isinstance(e, Mapping)])
            members: list[int] = []
            for e in entries:
                if _VARIABLE.search(str(e)):
                    refusals.append(f"attestors[{k}] uses a variable: variables are not evaluated")
                    break
                v = _entry(ctx, e, vtype, name, pns, vi.get("annotations") or {}, refusals)
                if v is not None:
                    verifiers.append(v)
                    members.append(len(verifiers) - 1)
            if refusals:
                break
            want = a.get("count")
            if want is not None and (not isinstance(want, int) or isinstance(want, bool) or want < 0):
                refusals.append(f"attestors[{k}].count {want!r} is not a count")
                break
            need = len(members) if not want else int(want)  # Kyverno: no count (or 0) means every entry
            if not members or need > len(members):
                refusals.append(f"attestors[{k}] needs {need} of {len(members)} entries: it can never be satisfied")
                break
            sets.append((need, tuple(members)))
        if not attestor_sets:
            refusals.append("no attestors: nothing to verify the image signature against")
    for n in notes:
        ctx.warn(name, n)
    for why in refusals:
        ctx.warn(name, f"refused: {why}")
    return [
        CompiledRule(
            name=name,
            images=tuple(images),
            namespaces=tuple(namespaces),
            verifiers=() if refusals else tuple(verifiers),
            mode="enforce",
            source=f"kyverno:{label}",
            count=1,
            skip_images=tuple(str(x) for x in vi.get("skipImageReferences") or []),
            exclude_namespaces=tuple(exclude),
            required=bool(vi.get("required", True)),
            notes=tuple(dict.fromkeys(notes)),
            sets=() if refusals else tuple(sets),
            refused=tuple(dict.fromkeys(refusals)),
            namespace=pns,
        )
    ]
