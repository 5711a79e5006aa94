"""Registry credentials: the pods' imagePullSecrets, docker ``config.json`` (``auths``, and with
``--registry-auth helpers`` its ``credHelpers``/``credsStore``), and the cloud providers' workload
identity (``--registry-auth ecr,gcr,acr``), tried in the kubelet's order.

Secrets live only in memory here; ``Credential.__repr__`` never shows them, and nothing in this
module logs them. What is logged and recorded is a credential's *source* (:meth:`CredentialStore.label`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from scanner.errors import ConfigError, SigauditError
from scanner.inventory.references import DOCKER_HUB

log = logging.getLogger(__name__)

_HUB_KEYS = {
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
    "https://index.docker.io/v1",
    "https://registry-1.docker.io",
}


@dataclass(frozen=True, slots=True)
class Credential:
    username: str = field(repr=False)
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return "Credential(<redacted>)"


class CredentialUnavailable(SigauditError):
    """A credential source (a helper, a cloud provider) could not give a credential. The message names
    the source and never carries its output."""


@dataclass(frozen=True, slots=True)
class DeferredCredential:
    """A credential obtained only when a request needs it, from a source that runs a program or calls
    a cloud API: ``kind`` is ``helper`` (``name`` the docker credential helper) or a cloud provider
    (``ecr``, ``gcr``, ``acr``). Bound to the one ``registry`` host it is for, and equal by what it
    stands for, so a tuple of candidates stays a stable key for grouping pods and caching tokens."""

    kind: str
    name: str
    registry: str

    @property
    def label(self) -> str:
        if self.kind == "helper":
            return f"credential helper docker-credential-{self.name}"
        return PROVIDER_LABELS.get(self.kind, self.kind)


Candidate = Credential | DeferredCredential
# What a source's resolver returns: the credential (None: the source has none for this registry) and
# until when (time.time()) it may be reused.
Resolved = tuple[Credential | None, float]
Resolver = Callable[[DeferredCredential], Resolved]

PROVIDERS = ("ecr", "gcr", "acr")
PROVIDER_LABELS = {
    "ecr": "Amazon ECR (AWS default credential chain)",
    "gcr": "Google Artifact Registry/GCR (application default credentials)",
    "acr": "Azure Container Registry (azure-identity token exchange)",
}
FAILURE_RETRY_SECONDS = 300.0  # a source that failed is asked again after this long, not on every request


@dataclass(frozen=True, slots=True)
class RegistryAuthConfig:
    """``--registry-auth``: which sources beyond pull secrets and ``auths`` are used. ``helpers``: the
    docker config's ``credHelpers``/``credsStore``; ``providers``: cloud providers matched by host;
    ``hosts``: a provider named for a host that does not look like the cloud's (``ecr=mirror:5000``)."""

    helpers: bool = False
    providers: frozenset[str] = frozenset()
    hosts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, values: Iterable[str]) -> RegistryAuthConfig:
        """``helpers``, ``ecr``, ``gcr``, ``acr``, ``PROVIDER=HOST`` (comma-separated or repeated);
        ``none`` alone turns everything off. Anything else is a ConfigError (exit 2)."""
        helpers, providers, hosts = False, set(), dict[str, str]()
        items = [i.strip() for v in values for i in v.split(",") if i.strip()]
        for item in items:
            name, eq, host = item.partition("=")
            name = name.strip().lower()
            if item.lower() == "none":
                if len(items) > 1:
                    raise ConfigError("`none` cannot be combined with other sources", field="--registry-auth")
                continue
            if name == "helpers" and not eq:
                helpers = True
            elif name in PROVIDERS:
                providers.add(name)
                if eq:
                    key = _normalise_key(host)
                    if not key or not re.fullmatch(r"[a-z0-9.-]+(:[0-9]{1,5})?", key):
                        raise ConfigError(f"{item[:100]!r}: {host[:100]!r} is not a registry host",
                                          field="--registry-auth")
                    if hosts.get(key, name) != name:
                        raise ConfigError(f"{key} is named for both {hosts[key]} and {name}", field="--registry-auth")
                    hosts[key] = name
            else:
                raise ConfigError(
                    f"unknown source {item[:100]!r} (expected helpers, ecr, gcr, acr, PROVIDER=HOST or none)",
                    field="--registry-auth",
                )
        return cls(helpers, frozenset(providers), MappingProxyType(hosts))

    def provider_for(self, registry: str) -> str | None:
        """The cloud provider whose workload identity is used for ``registry``: the one named for the
        host, else the enabled provider whose hosts it matches; None for any other host."""
        if registry in self.hosts:
            return self.hosts[registry]
        from scanner.registry.cloud import provider_of_host

        provider = provider_of_host(registry)
        return provider if provider in self.providers else None


def _normalise_key(key: str) -> str:
    """A docker config ``auths`` key as the kubelet reads it (``BasicDockerKeyring.Add``): the scheme
    dropped, the host lower-cased (Docker Hub's names as ``docker.io``), and the path kept — ``/v1/`` or
    ``/v2/`` in front of it dropped, cleaned (``.``, ``..``, empty segments), no slash at either end:
    ``reg.io``, ``reg.io:5000/team-a``, ``*.reg.io/team``. A query or fragment is not part of it."""
    key = key.strip()
    if key in _HUB_KEYS:
        return DOCKER_HUB
    key = re.sub(r"^https?://", "", key, flags=re.IGNORECASE)
    key = re.split(r"[?#]", key, maxsplit=1)[0]
    host, _, path = key.partition("/")
    userinfo, at, host = host.rpartition("@")  # url userinfo is never part of the host
    if at and not re.fullmatch(r"[A-Za-z0-9\-._:~!$&'()*+,;=%@]*", userinfo):
        # Not a URL's userinfo (Go's url.Parse, hence the kubelet, refuses the key): ``reg.io\@evil.io``
        # reads as reg.io to a reviewer (and to a browser), and its credential never goes to evil.io.
        return ""
    host = host.lower()
    if host in _HUB_KEYS:
        host = DOCKER_HUB
    path = "/" + unquote(path)
    if path.startswith(("/v1/", "/v2/")):
        path = path[3:]
    return "/".join([host, *_clean_path(path)])


def _clean_path(path: str) -> list[str]:
    """``path``'s segments as Go's ``path.Clean`` leaves them (a ``..`` above the root stays at it)."""
    out: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if out:
                out.pop()
        elif part and part != ".":
            out.append(part)
    return out


def _host_port(host: str) -> tuple[str, str]:
    """(host, port) as Go's ``net.SplitHostPort`` splits them (``[v6]:port``), else (host, "")."""
    if m := re.fullmatch(r"\[([^\]]*)\](?::(.*))?", host):
        return m[1], m[2] or ""
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, port
    return host, ""


# One position of a host glob: ``*`` (any run of characters), or a set of characters as (negated, ranges)
# — ``?`` is the negated empty set, a literal its own one-character range.
_GlobItem = str | tuple[bool, tuple[tuple[str, str], ...]]


def _glob_items(pattern: str) -> list[_GlobItem] | None:
    """``pattern``'s positions, or None when it is malformed (then it matches nothing)."""
    out: list[_GlobItem] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if not out or out[-1] != "*":
                out.append("*")
        elif c == "?":
            out.append((True, ()))
        elif c == "\\":
            if i + 1 == len(pattern):
                return None
            i += 1
            out.append((False, ((pattern[i], pattern[i]),)))
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] == "^" else i + 1)
            body = pattern[i + 1 : end]
            if end < 0 or body in ("", "^") or "\\" in body:
                return None
            neg = body.startswith("^")
            body = body.removeprefix("^")
            if not re.fullmatch(r"(?:[^\]\-\^](?:-[^\]\-\^])?)+", body):
                return None
            ranges: list[tuple[str, str]] = []
            j = 0
            while j < len(body):
                if body[j + 1 : j + 2] == "-":
                    ranges.append((body[j], body[j + 2]))  # lo > hi: matches nothing, as in Go
                    j += 3
                else:
                    ranges.append((body[j], body[j]))
                    j += 1
            out.append((neg, tuple(ranges)))
            i = end
        else:
            out.append((False, ((c, c),)))
        i += 1
    return out


def _glob_part(pattern: str, text: str) -> bool:
    """One dot-separated part of a host against a key's glob part, as Go's ``filepath.Match`` (which the
    kubelet uses): ``*`` any run of characters, ``?`` one, ``[...]`` a class (``^`` negates), ``\\``
    escapes; a malformed pattern matches nothing. Matched as a set of positions, one step per glob
    item (bounded by the host part's length) — never a regular expression, whose backtracking a key such as
    ``*a*a*a*a*a*a*c`` (a pull secret's, beside its own pod's image) turns exponential, holding the
    whole scan."""
    if not any(c in pattern for c in "*?[\\"):
        return pattern == text
    items = _glob_items(pattern)
    if items is None or sum(item != "*" for item in items) > len(text):
        return False

    at: dict[str, int] = {}  # each character of the host part: the bit set of where it stands
    for i, ch in enumerate(text):
        at[ch] = at.get(ch, 0) | 1 << i
    fits: dict[_GlobItem, int] = {}
    ends = 1  # bit i: the glob so far matches text[:i]
    for item in items:
        if isinstance(item, str):  # "*"
            ends = -(ends & -ends) & ((1 << (len(text) + 1)) - 1)  # every end from the first on
        else:
            if item not in fits:
                neg, ranges = item
                fits[item] = sum(m for ch, m in at.items() if any(lo <= ch <= hi for lo, hi in ranges) != neg)
            ends = (ends & fits[item]) << 1
        if not ends:
            return False
    return bool(ends >> len(text) & 1)


def key_matches(key: str, registry: str, repository: str) -> bool:
    """Whether a normalised ``auths`` key is for the image ``registry/repository``, as the kubelet
    matches (``URLsMatch``): the same port, as many host parts, each matching the key's glob part
    (``*.reg.io`` is ``a.reg.io``, never ``reg.io`` nor ``a.b.reg.io``); and the key's path a prefix of
    the repository on a ``/`` boundary (``reg.io/team`` is never ``reg.io/team-a/app``: stricter than
    the kubelet's plain string prefix, so one team's credential is never another's)."""
    host, _, path = key.partition("/")
    glob_host, glob_port = _host_port(host)
    target_host, target_port = _host_port(registry.lower())
    if glob_port != target_port:
        return False
    glob_parts, target_parts = glob_host.split("."), target_host.split(".")
    if len(glob_parts) != len(target_parts) or not all(map(_glob_part, glob_parts, target_parts)):
        return False
    return not path or repository == path or repository.startswith(path + "/")


def _specificity(key: str) -> tuple[int, bool]:
    """Most specific first: the longer path, then a host without a glob."""
    host, _, path = key.partition("/")
    return (-len(path.split("/")) if path else 0, any(c in host for c in "*?[\\"))


# (registry, repository, a pod's pull secrets or None for the scanner's own) -> the keys for that image.
_MatchedKey = tuple[str, str, tuple[tuple[str, str], ...] | None]
_MATCHED_MAX = 20_000

# A docker config's ``auths``: (normalised key, credential) in the file's order. A list, not a map: two
# spellings of one key (``reg.io``, ``https://reg.io/v1/``) are two credentials, both tried, as the
# kubelet keeps both (its keyring appends), never one silently dropped.
DockerAuths = tuple[tuple[str, Credential], ...]


def matching(creds: DockerAuths, registry: str, repository: str) -> list[Credential]:
    """The credentials of one docker config that are for ``registry/repository``, most specific key
    first (ties in the kubelet's own order: its index sorted in reverse, then the file's order)."""
    found = [(k, c) for k, c in creds if key_matches(k, registry, repository)]
    found.sort(key=lambda kc: kc[0], reverse=True)
    found.sort(key=lambda kc: _specificity(kc[0]))
    return [c for _, c in found]


def parse_docker_config(data: bytes, source: str) -> DockerAuths:
    """``{"auths": {"host": {"auth": b64(user:pass)} | {"username","password"} | {"identitytoken"}}}``."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid JSON: {exc}", source=source) from exc
    if not isinstance(doc, dict):
        raise ConfigError("not a JSON object", source=source)
    auths = doc.get("auths", {})
    if not isinstance(auths, dict):
        raise ConfigError("`auths` is not an object", source=source)
    out: list[tuple[str, Credential]] = []
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            continue
        fields = {}
        for name in ("auth", "username", "password", "identitytoken"):
            value = entry.get(name)
            if value is not None and not isinstance(value, str):
                # Never str() a secret-bearing field of the wrong type into a credential (or a message).
                raise ConfigError(
                    f"auths[{key[:253]!r}].{name} is a {type(value).__name__}, not a string", source=source
                )
            fields[name] = value or ""
        user, password = fields["username"], fields["password"]
        if fields["auth"]:
            try:
                decoded = base64.b64decode(fields["auth"], validate=False).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise ConfigError(f"auths[{key[:253]!r}].auth is not base64 user:password", source=source) from None
            user, _, password = decoded.partition(":")
        token = fields["identitytoken"]
        if user or token:
            out.append((_normalise_key(key), Credential(user or "<token>", password, token or None)))
    return tuple(out)


def default_docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


@dataclass(frozen=True, slots=True)
class HelperConfig:
    """The docker config's ``credHelpers`` (host → helper name) and ``credsStore`` (the helper for
    every other host). Read from the scanner's own docker config only: a pull secret is a tenant's
    file, and a tenant never chooses a program the scanner runs (the kubelet reads only ``auths``)."""

    per_host: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    store: str | None = None

    def helper_for(self, registry: str) -> str | None:
        return self.per_host.get(registry) or self.store

    def __bool__(self) -> bool:
        return bool(self.per_host or self.store)


def parse_helper_config(data: bytes, source: str) -> HelperConfig:
    """``{"credHelpers": {"host": "name"}, "credsStore": "name"}``; a name that is not a plain name
    (``docker-credential-<name>`` is looked up on PATH, never a path) is a ConfigError."""
    from scanner.registry.credhelpers import valid_helper_name

    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid JSON: {exc}", source=source) from exc
    if not isinstance(doc, dict):
        raise ConfigError("not a JSON object", source=source)
    helpers = doc.get("credHelpers") or {}
    store = doc.get("credsStore") or None
    if not isinstance(helpers, dict):
        raise ConfigError("`credHelpers` is not an object", source=source)
    def checked(name: object, where: str) -> str:
        if not isinstance(name, str) or not valid_helper_name(name):
            shown = name[:64] if isinstance(name, str) else type(name).__name__
            raise ConfigError(f"{where}: credential helper {shown!r} is not a plain helper name", source=source)
        return name

    per_host = {_normalise_key(str(k)): checked(v, f"credHelpers[{str(k)[:253]!r}]") for k, v in helpers.items()}
    store = checked(store, "credsStore") if store is not None else None
    return HelperConfig(MappingProxyType(per_host), store)


class CredentialStore:
    """Registry credentials, kept per owner: each pull secret under its (namespace, name), the scanner's
    own (docker ``config.json``: ``auths``, or its credential helpers), and the cloud providers'
    workload identity. Nothing is pooled: :meth:`candidates` gives a pod only its own pull secrets and
    the scanner's credentials, in the order the kubelet tries them, each bound to the one host it is for.

    Sources that run a program or call a cloud API are :class:`DeferredCredential` candidates, asked
    only when a request needs them (:meth:`resolve`), once per validity period, one at a time per
    source (many images needing the same helper run it once)."""

    def __init__(
        self,
        default: DockerAuths | Mapping[str, Credential] | None = None,
        *,
        helpers: HelperConfig | None = None,
        auth: RegistryAuthConfig | None = None,
        resolvers: Mapping[str, Resolver] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._interned: dict[Credential, Credential] = {}
        pairs = default.items() if isinstance(default, Mapping) else (default or ())
        self._default: DockerAuths = tuple((k, self._intern(c)) for k, c in pairs)
        self._secrets: dict[tuple[str, str], DockerAuths] = {}
        # The keys for an image, found once per (registry, repository[, pull secrets]): every request
        # asks, and a config (or a tenant's 1 MB secret) may hold tens of thousands of keys. Emptied when a
        # pull secret is added; bounded, so a long watch over a churning cluster does not grow it forever.
        self._matched: dict[_MatchedKey, list[Any]] = {}
        # The whole answer of :meth:`candidates` per (registry, repository, pull secrets): every registry
        # request asks (three times a request on a cold scan, issue 19). Emptied with ``_matched``.
        self._candidates: dict[_MatchedKey, tuple[Candidate, ...]] = {}
        self.auth = auth or RegistryAuthConfig()
        self._helpers = helpers if (helpers and self.auth.helpers) else HelperConfig()
        self._resolvers = dict(resolvers) if resolvers is not None else _default_resolvers()
        self._clock = clock
        self._resolved: dict[DeferredCredential, tuple[Credential | CredentialUnavailable | None, float]] = {}
        self._source_locks: dict[DeferredCredential, threading.Lock] = {}
        self._lock = threading.Lock()

    def _intern(self, cred: Credential) -> Credential:
        # Equal credentials (the same docker config copied into many namespaces) become one object,
        # so a credential set is one key however many secrets carry it.
        return self._interned.setdefault(cred, cred)

    @classmethod
    def from_docker_config(cls, path: str | Path | None, auth: RegistryAuthConfig | None = None) -> CredentialStore:
        auth = auth or RegistryAuthConfig()
        p = Path(path) if path else default_docker_config_path()
        if not p.exists():
            if path:
                raise ConfigError("docker config file not found", source=str(p))
            return cls(auth=auth)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read docker config: {exc.strerror or exc}", source=str(p)) from None
        helpers = parse_helper_config(data, str(p))
        if helpers and not auth.helpers:
            log.warning("%s names docker credential helpers (credHelpers/credsStore); they are not run "
                        "without --registry-auth helpers", p)
        return cls(parse_docker_config(data, str(p)), helpers=helpers, auth=auth)

    def add_pull_secret(self, namespace: str, name: str, dockerconfigjson: bytes) -> None:
        try:
            creds = parse_docker_config(dockerconfigjson, f"secret {namespace}/{name}")
        except ConfigError as exc:
            # One tenant's malformed secret never stops the cluster's scan: it is ignored, said so, and
            # that tenant's images are fetched without it (an error verdict if the registry wants it).
            log.warning("imagePullSecret ignored: %s", exc.diagnostics())
            creds = ()
        self._secrets[(namespace, name)] = tuple((k, self._intern(c)) for k, c in creds)
        self._matched = {}
        self._candidates = {}

    def _own(self, registry: str, repository: str) -> list[Candidate]:
        """The scanner's configured credentials for ``registry/repository``: its credential helper
        (``credHelpers`` for the host, else ``credsStore``: as docker, the helper then answers instead of
        ``auths``), else its ``auths`` entries for the image, most specific first."""
        helper = self._helpers.helper_for(registry)
        if helper is not None:
            return [DeferredCredential("helper", helper, registry)]
        return list(self._memo((registry, repository, None), lambda: matching(self._default, registry, repository)))

    def _memo(self, key: _MatchedKey, find: Callable[[], list[Any]]) -> list[Any]:
        memo = self._matched  # add_pull_secret replaces it: a list found before never lands in the new one
        found = memo.get(key)
        if found is None:
            found = find()
            if len(memo) >= _MATCHED_MAX:
                memo.clear()
            memo[key] = found
        return found

    def _from_secrets(
        self, registry: str, repository: str, secrets: tuple[tuple[str, str], ...]
    ) -> list[tuple[Credential, tuple[str, str]]]:
        """The entries of the pod's pull secrets for ``registry/repository``, as the kubelet orders them:
        it merges a pod's secrets into one keyring, so the most specific key of any secret comes first,
        and keys equally specific in the pod's order of its secrets."""
        return self._memo((registry, repository, secrets), lambda: self._find_in_secrets(registry, repository, secrets))

    def _find_in_secrets(
        self, registry: str, repository: str, secrets: tuple[tuple[str, str], ...]
    ) -> list[tuple[Credential, tuple[str, str]]]:
        found = [(key, n, cred, ref)
                 for n, ref in enumerate(dict.fromkeys(secrets))
                 for key, cred in self._secrets.get(ref, ()) if key_matches(key, registry, repository)]
        found.sort(key=lambda f: f[1])
        found.sort(key=lambda f: f[0], reverse=True)
        found.sort(key=lambda f: _specificity(f[0]))
        return [(cred, ref) for _, _, cred, ref in found]

    def candidates(
        self, registry: str, secrets: tuple[tuple[str, str], ...] = (), *, repository: str
    ) -> tuple[Candidate, ...]:
        """The credentials to try for the image ``registry/repository`` on behalf of pods whose
        imagePullSecrets are ``secrets`` ((namespace, name) in the pod's order), in the kubelet's order:
        those secrets' entries whose key is for the image (host glob and path prefix, most specific
        first), then the scanner's own (docker config or its helper), then the cloud provider whose
        registry this host is (``--registry-auth``); each once. Empty: anonymous. Another namespace's
        secrets are never among them; no candidate is for another host or another path."""
        memo = self._candidates  # add_pull_secret replaces it: an answer found before never lands in the new one
        key = (registry, repository, secrets)
        found = memo.get(key)
        if found is None:
            found = self._find_candidates(registry, secrets, repository)
            if len(memo) >= _MATCHED_MAX:
                memo.clear()
            memo[key] = found
        return found

    def _find_candidates(
        self, registry: str, secrets: tuple[tuple[str, str], ...], repository: str
    ) -> tuple[Candidate, ...]:
        out: list[Candidate] = []
        for cred, _ in self._from_secrets(registry, repository, secrets):
            if cred not in out:
                out.append(cred)
        for own in self._own(registry, repository):
            if own not in out:
                out.append(own)
        provider = self.auth.provider_for(registry)
        if provider is not None:
            out.append(DeferredCredential(provider, provider, registry))
        return tuple(out)

    def label(
        self, registry: str, secrets: tuple[tuple[str, str], ...], candidate: Candidate | None, *, repository: str
    ) -> str:
        """The source of ``candidate`` for pods with pull secrets ``secrets`` — by name, never contents."""
        if candidate is None:
            return "anonymous"
        if isinstance(candidate, DeferredCredential):
            return candidate.label
        holders = list(dict.fromkeys(f"{ns}/{name}" for cred, (ns, name) in
                                     self._from_secrets(registry, repository, secrets) if cred == candidate))
        if holders:
            return f"pull secret{'s' if len(holders) > 1 else ''} {', '.join(holders)}"
        return "the scanner's docker config"

    def describe(self, registry: str, secrets: tuple[tuple[str, str], ...] = (), *, repository: str) -> str:
        """Where :meth:`candidates` come from, by name only (never a secret's contents)."""
        names = [self.label(registry, secrets, c, repository=repository)
                 for c in self.candidates(registry, secrets, repository=repository)]
        return ", ".join(dict.fromkeys(names)) or "no credentials (anonymous)"

    def resolve(self, candidate: Candidate) -> Credential | None:
        """The credential ``candidate`` stands for; None when its source has none for the registry.
        Raises CredentialUnavailable (naming the source) when the source failed: a failure is
        remembered for FAILURE_RETRY_SECONDS, a credential until shortly before it expires."""
        if isinstance(candidate, Credential):
            return candidate
        with self._lock:
            lock = self._source_locks.setdefault(candidate, threading.Lock())
        with lock:  # one run of a helper / one token request per source at a time
            now = self._clock()
            with self._lock:
                cached = self._resolved.get(candidate)
            if cached is None or cached[1] <= now:
                resolver = self._resolvers.get(candidate.kind)
                try:
                    if resolver is None:
                        raise CredentialUnavailable(f"{candidate.label}: no resolver for this source")
                    cred, until = _bounded(resolver, candidate)
                    value: Credential | CredentialUnavailable | None = (
                        self._intern(cred) if cred is not None else None
                    )
                except CredentialUnavailable as exc:
                    value, until = exc, now + FAILURE_RETRY_SECONDS
                except Exception as exc:  # a source's bug or library surprise is its failure, never the scan's
                    log.debug("credential source %s failed", candidate.label, exc_info=True)
                    value = CredentialUnavailable(f"{candidate.label}: failed: {type(exc).__name__}")
                    until = now + FAILURE_RETRY_SECONDS
                cached = (value, until)
                with self._lock:
                    self._resolved[candidate] = cached
        if isinstance(cached[0], CredentialUnavailable):
            raise CredentialUnavailable(str(cached[0]))  # a fresh one per caller: threads share the cache
        return cached[0]


# At most this long for one source to give a credential (a helper's run, a cloud SDK's whole chain:
# STS then GetAuthorizationToken, the metadata server's ping then its token), and never past the scan's
# deadline (--deadline) in force on the calling thread.
SOURCE_TIMEOUT = 30.0
_GRACE = 0.5  # a source bounded by the deadline itself (a helper, killed then) says so first


def _bounded(resolver: Resolver, candidate: DeferredCredential) -> Resolved:
    """``resolver(candidate)`` through :func:`scanner.registry.deadline.run`, waited for at most
    SOURCE_TIMEOUT and never past the calling thread's deadline (plus _GRACE): the cloud SDKs (boto3's
    credential chain and its STS client, google-auth's metadata server requests) have their own timeouts
    and retries, per socket operation, that no deadline of ours reaches, so a token endpoint that accepts
    and never answers would hold the scan for minutes. The worker runs under the same deadlines and
    context (a helper is killed at them, httpx calls end at them); one left waiting in an SDK is
    abandoned and its late answer dropped. One mechanism with every other read run bounds: abandoned
    workers count toward ``deadline.MAX_ABANDONED`` (past it the source is not asked), and a source
    ending with ``SystemExit``/``KeyboardInterrupt`` is a failure (``WorkerExit``), never the command's
    exit."""
    from scanner.registry import deadline

    scope = deadline.current()
    left = None if scope is None else scope[0] - time.monotonic()
    if left is not None and left <= 0:
        raise CredentialUnavailable(f"{candidate.label}: not asked: {scope[1] if scope else 'deadline reached'}")
    # The scan's deadline binds: wait for it plus _GRACE, capped at SOURCE_TIMEOUT. Otherwise the source's
    # own SOURCE_TIMEOUT, set as a deadline (so the worker's own reads end there too), without grace.
    by_scan = scope is not None and left is not None and left < SOURCE_TIMEOUT
    wait = SOURCE_TIMEOUT if left is None else min(SOURCE_TIMEOUT, left + _GRACE)
    grace = wait - left if by_scan and left is not None else 0.0
    cap = deadline.within(None if by_scan else time.monotonic() + SOURCE_TIMEOUT,
                          f"credential source timeout ({SOURCE_TIMEOUT:g} s)")
    try:
        with cap:
            return deadline.run(lambda: resolver(candidate), grace=grace)
    except deadline.NotStarted as exc:
        raise CredentialUnavailable(f"{candidate.label}: not asked: {exc}") from None
    except deadline.Abandoned:
        why = scope[1] if scope is not None and left is not None and left + _GRACE <= SOURCE_TIMEOUT else None
        raise CredentialUnavailable(
            f"{candidate.label}: no answer within {wait:.1f} s" + (f" ({why})" if why else "") + "; abandoned"
        ) from None


HELPER_CACHE_SECONDS = 15 * 60.0


def _resolve_helper(candidate: DeferredCredential) -> Resolved:
    from scanner.registry import deadline
    from scanner.registry.credhelpers import HELPER_TIMEOUT, run_helper

    server = "https://index.docker.io/v1/" if candidate.registry == DOCKER_HUB else candidate.registry
    # Never past the scan's deadline (--deadline) in force on this thread: a helper is killed then.
    left = deadline.remaining()
    timeout = HELPER_TIMEOUT if left is None else max(0.1, min(HELPER_TIMEOUT, left))
    return run_helper(candidate.name, server, timeout=timeout), time.time() + HELPER_CACHE_SECONDS


def _default_resolvers() -> dict[str, Resolver]:
    from scanner.registry import cloud

    return {"helper": _resolve_helper, **cloud.RESOLVERS}
