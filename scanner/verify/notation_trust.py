"""Notation's own trust material: ``trustpolicy.json`` and the trust store directory.

Also the ``TrustPolicy`` / ``TrustStore`` custom resources of kyverno-notation-aws
(``apiVersion: notation.nirmata.io/v1alpha1``) read from YAML files.

Everything here runs at the edge (configuration load time). Documents are validated exactly as
notation validates them (notaryproject/specifications ``specs/trust-store-trust-policy.md``,
"Trust Policy" and "Trust Store"); a bad document raises ``TrustPolicyError`` /
``TrustStoreError`` with notation's wording, which ``load_*`` turn into ``ConfigError`` naming the
file.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from scanner import yamldoc
from scanner.errors import ConfigError
from scanner.verify import sources
from scanner.verify.x509 import is_ca

log = logging.getLogger(__name__)


def _q(value: object) -> str:
    """Quote like Go's %q, so messages read as notation's do."""
    return json.dumps(value)

MAX_POLICY_BYTES = 1 << 20
MAX_STORE_FILE_BYTES = 1 << 20
MAX_STORE_CERTS = 1000


class TrustPolicyError(ValueError):
    """The trust policy document is invalid (message in notation's words)."""


class TrustStoreError(ValueError):
    """A named trust store is missing or holds something it must not."""


class Level(enum.StrEnum):
    STRICT = "strict"
    PERMISSIVE = "permissive"
    AUDIT = "audit"
    SKIP = "skip"


class Action(enum.StrEnum):
    ENFORCE = "enforce"
    LOG = "log"
    SKIP = "skip"


class Validation(enum.StrEnum):
    INTEGRITY = "integrity"
    AUTHENTICITY = "authenticity"
    AUTHENTIC_TIMESTAMP = "authenticTimestamp"
    EXPIRY = "expiry"
    REVOCATION = "revocation"


# trust-store-trust-policy.md "Signature Verification details": the level table.
_E, _L, _S = Action.ENFORCE, Action.LOG, Action.SKIP
LEVEL_ACTIONS: Mapping[Level, Mapping[Validation, Action]] = {
    Level.STRICT: {v: _E for v in Validation},
    Level.PERMISSIVE: {Validation.INTEGRITY: _E, Validation.AUTHENTICITY: _E,
                       Validation.AUTHENTIC_TIMESTAMP: _L, Validation.EXPIRY: _L, Validation.REVOCATION: _L},
    Level.AUDIT: {Validation.INTEGRITY: _E, Validation.AUTHENTICITY: _L,
                  Validation.AUTHENTIC_TIMESTAMP: _L, Validation.EXPIRY: _L, Validation.REVOCATION: _L},
    Level.SKIP: {v: _S for v in Validation},
}

STORE_TYPES = ("ca", "signingAuthority", "tsa")
_STORE_NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")
# A fully qualified repository: host[:port]/path (distribution reference grammar, lower-case path).
_SCOPE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+$"
)
X509_SUBJECT = "x509.subject"


# ----------------------------------------------------------------------------------------------
# Distinguished names (RFC 4514 as notation parses them with go-ldap's ParseDN).

_ATTR_ALIASES = {"S": "ST"}


def parse_dn(text: str) -> dict[str, str]:
    """Parse ``CN=a,O=b,...`` into {attribute type: value}. Raises ValueError when malformed.

    Escapes ``\\,`` ``\\;`` ``\\\\`` ``\\+`` ``\\"`` ``\\=`` ``\\ `` and ``\\XX`` hex pairs are honoured; an
    unescaped ``=`` inside a value, a value starting with ``#`` (BER form), a multi-valued RDN (``+``)
    or a repeated attribute type is refused, as notation refuses them.
    """
    rdns: dict[str, str] = {}
    i, n = 0, len(text)
    if not text.strip():
        raise ValueError("empty distinguished name")
    while i < n:
        # attribute type
        j = text.find("=", i)
        if j < 0:
            raise ValueError(f"incomplete type, value pair in {_q(text)}")
        attr = text[i:j].strip().upper()
        if not re.fullmatch(r"[A-Z][A-Z0-9-]*|[0-9]+(?:\.[0-9]+)+", attr):
            raise ValueError(f"invalid attribute type {_q(attr)} in {_q(text)}")
        attr = _ATTR_ALIASES.get(attr, attr)
        i = j + 1
        while i < n and text[i] == " ":
            i += 1
        if i < n and text[i] == "#":
            raise ValueError(f"BER-encoded value not supported in {_q(text)}")
        value: list[str] = []
        trailing_escaped = 0  # length of value that must not be stripped at the end
        while i < n:
            ch = text[i]
            if ch == "\\":
                if i + 1 >= n:
                    raise ValueError(f"dangling escape in {_q(text)}")
                nxt = text[i + 1]
                if nxt in ',;+"\\<>=# ':
                    value.append(nxt)
                    i += 2
                elif i + 2 < n and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 1:i + 3]):
                    value.append(chr(int(text[i + 1:i + 3], 16)))
                    i += 3
                else:
                    raise ValueError(f"invalid escape in {_q(text)}")
                trailing_escaped = len(value)
                continue
            if ch in ",;":
                break
            if ch == "+":
                raise ValueError(f"multi-valued RDNs are not supported: {_q(text)}")
            if ch in '="<>':
                raise ValueError(f"unescaped {_q(ch)} in attribute value in {_q(text)}")
            value.append(ch)
            i += 1
        raw = "".join(value)
        keep = "".join(value[:trailing_escaped])
        val = keep + raw[trailing_escaped:].rstrip(" ")
        if not val:
            raise ValueError(f"empty value for {attr} in {_q(text)}")
        if attr in rdns:
            raise ValueError(f"duplicate attribute {attr} in {_q(text)}")
        rdns[attr] = val
        if i < n:  # skip the separator
            i += 1
            while i < n and text[i] == " ":
                i += 1
            if i >= n:
                raise ValueError(f"trailing separator in {_q(text)}")
    return rdns


_OID_SHORT = {
    x509.NameOID.COMMON_NAME: "CN", x509.NameOID.COUNTRY_NAME: "C", x509.NameOID.LOCALITY_NAME: "L",
    x509.NameOID.STATE_OR_PROVINCE_NAME: "ST", x509.NameOID.STREET_ADDRESS: "STREET",
    x509.NameOID.ORGANIZATION_NAME: "O", x509.NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    x509.NameOID.SERIAL_NUMBER: "SERIALNUMBER", x509.NameOID.POSTAL_CODE: "POSTALCODE",
    x509.NameOID.DOMAIN_COMPONENT: "DC", x509.NameOID.USER_ID: "UID",
}


def _go_escape(value: str) -> str:
    # Go's crypto/x509/pkix Name.String escaping (RFC 2253): notation renders the certificate's
    # subject with it and parses the result again with go-ldap, so '=' stays unescaped and a value
    # holding it cannot be matched (trusted_identity_cases "bad-cert.pem").
    out = []
    for k, ch in enumerate(value):
        if ch in ',+"\\<>;' or (k == 0 and ch in " #") or (k == len(value) - 1 and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def subject_string(name: x509.Name) -> str:
    """The subject as notation prints it (most significant RDN last, like Go's pkix.Name.String)."""
    parts = []
    for rdn in reversed(list(name.rdns)):
        sub = []
        for attr in rdn:
            short = _OID_SHORT.get(attr.oid, attr.oid.dotted_string)
            val = attr.value if isinstance(attr.value, str) else attr.value.hex()
            sub.append(f"{short}={_go_escape(val)}")
        parts.append("+".join(sub))
    return ",".join(parts)


def check_trusted_identities(trusted_identities: Sequence[str], leaf: x509.Certificate) -> str | None:
    """None when the leaf matches (``*`` or a subset match of an ``x509.subject:`` item), else why not.

    trust-store-trust-policy.md "Trusted Identities Constraints": every RDN in the identity must
    equal the same attribute of the signing certificate's subject; any one item suffices; items
    without the ``x509.subject`` prefix are not about x509 and are ignored.
    """
    if any(t.strip() == "*" for t in trusted_identities):
        return None
    wanted: list[dict[str, str]] = []
    for item in trusted_identities:
        prefix, sep, value = item.partition(":")
        if not sep or prefix.strip() != X509_SUBJECT:
            continue
        try:
            wanted.append(parse_dn(value.strip()))
        except ValueError as exc:
            return f"error while parsing trusted identity {_q(item)}: {exc}"
    if not wanted:
        return "no x509 trusted identities are configured in the trust policy"
    try:
        have = parse_dn(subject_string(leaf.subject))
    except ValueError as exc:
        return f"error while parsing the certificate subject {_q(subject_string(leaf.subject))}: {exc}"
    for rdns in wanted:
        if all(have.get(k) == v for k, v in rdns.items()):
            return None
    return ("signing certificate from the digital signature does not match the X.509 trusted "
            f"identities {[dict(sorted(w.items())) for w in wanted]}")


# ----------------------------------------------------------------------------------------------
# Trust policy documents.


@dataclass(frozen=True, slots=True)
class TrustPolicyStatement:
    name: str
    level: Level
    actions: Mapping[Validation, Action]
    registry_scopes: tuple[str, ...] = ()
    verify_timestamp: str = "always"  # "always" | "afterCertExpiry"
    trust_stores: tuple[tuple[str, str], ...] = ()  # (type, name)
    trusted_identities: tuple[str, ...] = ()
    global_policy: bool = False

    def action(self, v: Validation) -> Action:
        return self.actions[v]

    def stores_of(self, store_type: str) -> tuple[str, ...]:
        return tuple(n for t, n in self.trust_stores if t == store_type)


@dataclass(frozen=True, slots=True)
class TrustPolicyDocument:
    version: str
    statements: tuple[TrustPolicyStatement, ...]
    kind: str = "oci"  # "oci" (registryScopes) or "blob" (trustpolicy.blob.json)
    raw: Mapping[str, Any] = field(default_factory=dict)

    def statement_for(self, repo: str) -> TrustPolicyStatement | None:
        """trust-store-trust-policy.md "Selecting a trust policy": exact scope, else ``*``."""
        for s in self.statements:
            if repo in s.registry_scopes:
                return s
        for s in self.statements:
            if "*" in s.registry_scopes:
                return s
        return None


def _str_list(stmt: Mapping[str, Any], key: str, name: str) -> list[str] | None:
    val = stmt.get(key)
    if val is None:
        return None
    if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
        raise TrustPolicyError(f"trust policy statement {_q(name)}: {key} must be a list of strings")
    return list(val)


def _parse_statement(stmt: Any, kind: str) -> TrustPolicyStatement:
    if not isinstance(stmt, dict):
        raise TrustPolicyError("each trust policy statement must be an object")
    allowed = {"name", "signatureVerification", "trustStores", "trustedIdentities"}
    allowed |= {"registryScopes"} if kind == "oci" else {"globalPolicy"}
    unknown = set(stmt) - allowed
    if unknown:
        raise TrustPolicyError(f"trust policy statement has unknown fields {sorted(unknown)}")
    name = stmt.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TrustPolicyError("a trust policy statement is missing a name, every statement requires a name")
    sv = stmt.get("signatureVerification")
    if not isinstance(sv, dict) or "level" not in sv:
        raise TrustPolicyError(f"trust policy statement {_q(name)} is missing signatureVerification level")
    extra = set(sv) - {"level", "override", "verifyTimestamp"}
    if extra:
        raise TrustPolicyError(f"trust policy statement {_q(name)}: unknown signatureVerification fields "
                               f"{sorted(extra)}")
    try:
        level = Level(sv["level"])
    except ValueError:
        raise TrustPolicyError(f"invalid signature verification level {_q(sv['level'])} in trust policy "
                               f"statement {_q(name)}") from None
    actions: dict[Validation, Action] = dict(LEVEL_ACTIONS[level])
    override = sv.get("override") or {}
    if not isinstance(override, dict):
        raise TrustPolicyError(f"trust policy statement {_q(name)}: override must be an object")
    if override and level is Level.SKIP:
        raise TrustPolicyError(f"signature verification level \"skip\" can not be overridden in trust "
                               f"policy statement {_q(name)}")
    for key, act in override.items():
        if key == "integrity":
            raise TrustPolicyError('"integrity" verification can not be overridden in custom signature '
                                   f"verification of trust policy statement {_q(name)}")
        try:
            v = Validation(key)
        except ValueError:
            raise TrustPolicyError(f"verification type {_q(key)} in custom signature verification of trust "
                                   f"policy statement {_q(name)} is not supported") from None
        ok = ("enforce", "log", "skip") if v is Validation.REVOCATION else ("enforce", "log")
        if act not in ok:
            raise TrustPolicyError(f"verification action {_q(act)} for {_q(key)} in trust policy statement "
                                   f"{_q(name)} is not supported, use one of {', '.join(ok)}")
        actions[v] = Action(act)
    verify_ts = sv.get("verifyTimestamp", "always") or "always"
    if verify_ts not in ("always", "afterCertExpiry"):
        raise TrustPolicyError(f"trust policy statement {_q(name)} has invalid verifyTimestamp {_q(verify_ts)}")

    scopes = _str_list(stmt, "registryScopes", name) if kind == "oci" else None
    if kind == "oci":
        if not scopes:
            raise TrustPolicyError(f"trust policy statement {_q(name)} has zero registry scopes, it must "
                                   "specify registry scopes with at least one value")
        if "*" in scopes and len(scopes) > 1:
            raise TrustPolicyError(f"trust policy statement {_q(name)} uses wildcard registry scope '*', a "
                                   "wildcard scope cannot be used in conjunction with other scope values")
        for sc in scopes:
            if sc != "*" and not _SCOPE.match(sc):
                raise TrustPolicyError(f"registry scope {_q(sc)} is not valid, make sure it is a fully "
                                       "qualified repository without the scheme, protocol or tag. For "
                                       "example domain.com/my/repository or a local scope like "
                                       "local/myOCILayout")

    stores = _str_list(stmt, "trustStores", name) or []
    identities = _str_list(stmt, "trustedIdentities", name) or []
    parsed_stores: list[tuple[str, str]] = []
    if level is Level.SKIP and (stores or identities):
        # notation-go trustpolicy.validatePolicyCore refuses this rather than ignoring the lists.
        raise TrustPolicyError(f"trust policy statement {_q(name)} is set to skip signature verification but "
                               "configured with trust stores and/or trusted identities, remove them if signature "
                               "verification needs to be skipped")
    if level is not Level.SKIP:
        if not stores or not identities:
            raise TrustPolicyError(f"trust policy statement {_q(name)} is either missing trust stores or "
                                   "trusted identities, both must be specified")
        for s in stores:
            typ, sep, sname = s.partition(":")
            if not sep:
                if s.strip() in STORE_TYPES:
                    raise TrustPolicyError(f"invalid trust policy statement: {_q(name)} is missing separator in "
                                           f"trust store value {_q(s)}. The required format is "
                                           "<TrustStoreType>:<TrustStoreName>")
                raise TrustPolicyError(f"trust policy statement {_q(name)} has malformed trust store value "
                                       f"{_q(s)}. The required format is <TrustStoreType>:<TrustStoreName>")
            if typ not in STORE_TYPES:
                raise TrustPolicyError(f"trust policy statement {_q(name)} uses an unsupported trust store type "
                                       f"{_q(typ)} in trust store value {_q(s)}")
            if not _STORE_NAME.match(sname):
                raise TrustPolicyError(f"trust policy statement {_q(name)} uses an unsupported trust store name "
                                       f"{_q(sname)} in trust store value {_q(s)}. Named store name needs to "
                                       "follow [a-zA-Z0-9_.-]+ format")
            if (typ, sname) in parsed_stores:
                raise TrustPolicyError(f"trust policy statement {_q(name)} has duplicate trust store value {_q(s)}")
            parsed_stores.append((typ, sname))
        _validate_identities(name, identities)
    return TrustPolicyStatement(
        name=name, level=level, actions=actions, registry_scopes=tuple(scopes or ()),
        verify_timestamp=verify_ts, trust_stores=tuple(parsed_stores),
        trusted_identities=tuple(identities), global_policy=bool(stmt.get("globalPolicy", False)),
    )


def _validate_identities(name: str, identities: list[str]) -> None:
    if "*" in identities:
        if len(identities) > 1:
            raise TrustPolicyError(f"trust policy statement {_q(name)} uses a wildcard trusted identity '*', a "
                                   "wildcard identity cannot be used in conjunction with other values")
        return
    dns: list[tuple[str, dict[str, str]]] = []
    for item in identities:
        if not item.strip():
            raise TrustPolicyError(f"trust policy statement {_q(name)} has an empty trusted identity")
        prefix, sep, value = item.partition(":")
        if not sep:
            raise TrustPolicyError(f"trust policy statement {_q(name)} has trusted identity {_q(item)} missing "
                                   "separator")
        if prefix.strip() != X509_SUBJECT:
            continue  # other identity types (e.g. a plugin's) are not validated here
        if not value.strip():
            raise TrustPolicyError(f"trust policy statement {_q(name)} has trusted identity {_q(item)} without "
                                   "an identity value")
        try:
            rdns = parse_dn(value.strip())
        except ValueError as exc:
            raise TrustPolicyError(f"trust policy statement {_q(name)} has trusted identity {_q(item)} with "
                                   f"invalid identity value: {exc}") from None
        for mandatory in ("C", "ST", "O"):
            if mandatory not in rdns:
                raise TrustPolicyError(f"trust policy statement {_q(name)} has trusted identity {_q(item)} "
                                       f"without an element of the mandatory attributes (C, ST, O): has no "
                                       f"mandatory RDN attribute for \"{mandatory}\"")
        dns.append((item, rdns))
    for i, (a_text, a) in enumerate(dns):
        for b_text, b in dns[i + 1:]:
            small, big = (a, b) if len(a) <= len(b) else (b, a)
            if all(big.get(k) == v for k, v in small.items()):
                raise TrustPolicyError(f"trust policy statement {_q(name)} has overlapping x509 "
                                       f"trustedIdentities, {_q(a_text)} overlaps with {_q(b_text)}")


def parse_trust_policy(doc: Any) -> TrustPolicyDocument:
    """Validate a decoded trust policy document (OCI ``trustpolicy.json`` or blob policy)."""
    if not isinstance(doc, dict):
        raise TrustPolicyError("trust policy document must be a JSON object")
    unknown = set(doc) - {"version", "trustPolicies"}
    if unknown:
        raise TrustPolicyError(f"trust policy document has unknown fields {sorted(unknown)}")
    version = doc.get("version")
    if version != "1.0":
        raise TrustPolicyError(f"trust policy document uses unsupported version {_q(version)}")
    stmts = doc.get("trustPolicies")
    if not isinstance(stmts, list) or not stmts:
        raise TrustPolicyError("trust policy document can not have zero trust policy statements")
    # trustpolicy.blob.json has no registryScopes anywhere; an OCI policy always has them.
    kind = "blob" if all(isinstance(s, dict) and "registryScopes" not in s for s in stmts) else "oci"
    parsed = [_parse_statement(s, kind) for s in stmts]
    names = [s.name for s in parsed]
    for n in names:
        if names.count(n) > 1:
            raise TrustPolicyError(f"multiple oci trust policy statements use the same name {_q(n)}, statement "
                                   "names must be unique")
    if kind == "oci":
        seen: dict[str, str] = {}
        for s in parsed:
            for sc in s.registry_scopes:
                if sc in seen:
                    raise TrustPolicyError(f"registry scope {_q(sc)} is present in multiple oci trust policy "
                                           "statements, one registry scope value can only be associated "
                                           "with one statement")
                seen[sc] = s.name
    else:
        globals_ = [s for s in parsed if s.global_policy]
        if len(globals_) > 1:
            raise TrustPolicyError("multiple blob trust policy statements have globalPolicy set to true, only "
                                   "one trust policy statement should be marked as global policy")
        if globals_ and globals_[0].level is Level.SKIP:
            raise TrustPolicyError(f"blob trust policy statement {_q(globals_[0].name)} cannot have "
                                   "verification level \"skip\" and globalPolicy set to true")
    return TrustPolicyDocument(version=version, statements=tuple(parsed), kind=kind, raw=doc)


def parse_trust_policy_bytes(data: bytes) -> TrustPolicyDocument:
    if len(data) > MAX_POLICY_BYTES:
        raise TrustPolicyError(f"trust policy document is larger than {MAX_POLICY_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrustPolicyError(f"malformed trust policy: {exc}") from None
    return parse_trust_policy(doc)


def load_trust_policy(path: Path) -> TrustPolicyDocument:
    """Read a ``trustpolicy.json`` (or a kyverno-notation-aws ``TrustPolicy`` YAML)."""
    try:
        data = sources.read_bytes(path)
    except OSError as exc:
        raise ConfigError(f"cannot read trust policy: {exc.strerror}", source=str(path)) from None
    try:
        if path.suffix in (".yaml", ".yml"):
            return load_trust_policy_cr(data)
        return parse_trust_policy_bytes(data)
    except TrustPolicyError as exc:
        raise ConfigError(str(exc), source=str(path)) from None


# ----------------------------------------------------------------------------------------------
# kyverno-notation-aws custom resources (notation.nirmata.io/v1alpha1).

CR_API_VERSION = "notation.nirmata.io/v1alpha1"


def _yaml_docs(data: bytes) -> list[dict[str, Any]]:
    if len(data) > MAX_POLICY_BYTES:
        raise TrustPolicyError(f"document is larger than {MAX_POLICY_BYTES} bytes")
    try:
        docs = [d for d in yamldoc.load_all(data) if d is not None]
    except yaml.YAMLError as exc:
        raise TrustPolicyError(f"malformed YAML: {exc}") from None
    if not all(isinstance(d, dict) for d in docs):
        raise TrustPolicyError("every YAML document must be a mapping")
    return docs


def load_trust_policy_cr(data: bytes) -> TrustPolicyDocument:
    """The single ``kind: TrustPolicy`` resource in a YAML stream, validated like trustpolicy.json."""
    docs = [d for d in _yaml_docs(data) if d.get("kind") == "TrustPolicy"]
    if len(docs) != 1:
        raise TrustPolicyError(f"expected exactly one kind: TrustPolicy resource, found {len(docs)}")
    doc = docs[0]
    if doc.get("apiVersion") != CR_API_VERSION:
        raise TrustPolicyError(f"TrustPolicy apiVersion must be {CR_API_VERSION}")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise TrustPolicyError("TrustPolicy has no spec")
    unknown = set(spec) - {"version", "trustPolicies"}
    if unknown:
        # The CRD (kyverno-notation-aws configs/crds/notation.nirmata.io_trustpolicies.yaml) has only
        # these two; anything else is not understood, and is refused rather than dropped.
        raise TrustPolicyError(f"TrustPolicy spec has unknown fields {sorted(unknown)}")
    spec = dict(spec)
    # The CRD lets `override: {}` through; strip empty optional objects before validating.
    for st in spec.get("trustPolicies") or []:
        if isinstance(st, dict) and isinstance(st.get("signatureVerification"), dict):
            sv = st["signatureVerification"]
            if sv.get("override") == {}:
                sv.pop("override")
    return parse_trust_policy(spec)


# ----------------------------------------------------------------------------------------------
# Trust store.


@dataclass(frozen=True, slots=True)
class NamedStore:
    store_type: str
    name: str
    certificates: tuple[x509.Certificate, ...]
    source: str  # directory or resource it came from


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """PEM (one or more) or a single DER certificate."""
    try:
        if b"-----BEGIN" in data:
            return list(x509.load_pem_x509_certificates(data))
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise TrustStoreError(f"failed to read the trusted certificate {what}: {exc}") from None


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, Exception):  # InvalidSignature and unsupported key types
        return False
    return True


def validate_store_certificates(store_type: str, name: str, fname: str, certs: Sequence[x509.Certificate]) -> None:
    """trust-store-trust-policy.md "Trust Store": ca/signingAuthority hold CA certificates or a
    self-signed signing certificate; tsa holds root CA certificates."""
    for cert in certs:
        subj = subject_string(cert.subject)
        if store_type == "tsa":
            if not is_ca(cert):
                raise TrustStoreError(f"failed to validate the trusted certificate {fname} in trust store "
                                      f"{name} of type {store_type}: certificate with subject {_q(subj)} is not "
                                      "a root CA certificate: basic constraints CA is false")
            if cert.subject != cert.issuer:
                raise TrustStoreError(f"failed to validate the trusted certificate {fname} in trust store "
                                      f"{name} of type {store_type}: certificate with subject {_q(subj)} is not "
                                      f"a root CA certificate: issuer ({subject_string(cert.issuer)}) and "
                                      f"subject ({subj}) are not the same")
            if not _is_self_signed(cert):
                raise TrustStoreError(f"failed to validate the trusted certificate {fname} in trust store "
                                      f"{name} of type {store_type}: certificate with subject {_q(subj)} is not "
                                      "self-signed")
        elif not is_ca(cert) and not _is_self_signed(cert):
            raise TrustStoreError(f"failed to validate the trusted certificate {fname} in trust store {name} "
                                  f"of type {store_type}: certificate with subject {_q(subj)} is not a CA "
                                  "certificate or self-signed signing certificate")


def load_named_store(root: Path, store_type: str, name: str) -> NamedStore:
    """``<root>/x509/<type>/<name>/*`` (``root`` may also be the ``x509`` directory itself)."""
    base = root / "x509" if sources.is_dir(root / "x509") else root
    directory = base / store_type / name
    if sources.is_symlink(directory):
        raise TrustStoreError(f"the trust store {_q(name)} of type {_q(store_type)} is a symlink, which is not "
                              "allowed")
    if not sources.is_dir(directory):
        raise TrustStoreError(f"the trust store {_q(name)} of type {_q(store_type)} does not exist")
    certs: list[x509.Certificate] = []
    for entry in sources.iterdir(directory):
        if sources.is_symlink(entry):
            raise TrustStoreError(f"the trust store {_q(name)} of type {_q(store_type)} holds a symlink "
                                  f"{_q(entry.name)}, which is not allowed")
        if sources.is_dir(entry):
            log.warning("trust store %s:%s: ignoring sub-directory %s", store_type, name, entry.name)
            continue
        if sources.size(entry) > MAX_STORE_FILE_BYTES:
            raise TrustStoreError(f"trusted certificate file {entry.name} in trust store {name} is too large")
        data = sources.read_bytes(entry)
        loaded = load_certificates(data, f"{entry.name} in trust store {name} of type {store_type}")
        if not loaded:
            raise TrustStoreError(f"no x509 certificates were found in trusted certificate {entry.name} of "
                                  f"trust store {name} of type {store_type}")
        validate_store_certificates(store_type, name, entry.name, loaded)
        certs.extend(loaded)
        if len(certs) > MAX_STORE_CERTS:
            raise TrustStoreError(f"trust store {name} holds more than {MAX_STORE_CERTS} certificates")
    if not certs:
        raise TrustStoreError(f"trust store {name} of type {store_type} has no x509 certificates")
    return NamedStore(store_type, name, tuple(certs), str(directory))


def load_trust_store_crs(data: bytes) -> list[NamedStore]:
    """kyverno-notation-aws ``kind: TrustStore`` resources: spec.trustStoreName, type, caBundle (PEM)."""
    out = []
    for doc in _yaml_docs(data):
        if doc.get("kind") != "TrustStore":
            continue
        if doc.get("apiVersion") != CR_API_VERSION:
            raise TrustStoreError(f"TrustStore apiVersion must be {CR_API_VERSION}")
        spec = doc.get("spec") or {}
        unknown = set(spec) - {"trustStoreName", "type", "caBundle"}
        if unknown:
            raise TrustStoreError(f"TrustStore spec has unknown fields {sorted(unknown)}")
        name = spec.get("trustStoreName") or (doc.get("metadata") or {}).get("name")
        typ = spec.get("type", "ca")
        bundle = spec.get("caBundle")
        if not isinstance(name, str) or not _STORE_NAME.match(name):
            raise TrustStoreError(f"TrustStore has an invalid trustStoreName {_q(name)}")
        if typ not in STORE_TYPES:
            raise TrustStoreError(f"TrustStore {name} has unsupported type {_q(typ)}")
        if not isinstance(bundle, str) or "-----BEGIN CERTIFICATE-----" not in bundle:
            raise TrustStoreError(f"TrustStore {name} has no PEM caBundle")
        certs = load_certificates(bundle.encode(), f"caBundle of TrustStore {name}")
        validate_store_certificates(typ, name, "caBundle", certs)
        out.append(NamedStore(typ, name, tuple(certs), f"TrustStore/{name}"))
    return out
