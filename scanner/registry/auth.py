"""Registry credentials: docker ``config.json`` and the pods' imagePullSecrets.

Secrets live only in memory here; ``Credential.__repr__`` never shows them, and nothing in this
module logs them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from scanner.errors import ConfigError
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


def _normalise_key(key: str) -> str:
    if key in _HUB_KEYS:
        return DOCKER_HUB
    key = re.sub(r"^https?://", "", key.strip())
    host = key.split("/", 1)[0]
    return DOCKER_HUB if host in _HUB_KEYS else host


def parse_docker_config(data: bytes, source: str) -> dict[str, Credential]:
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
    out: dict[str, Credential] = {}
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
            out[_normalise_key(key)] = Credential(user or "<token>", password, token or None)
    return out


def default_docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


class CredentialStore:
    """Registry credentials, kept per owner: the scanner's own (docker ``config.json``) and each pull
    secret under its (namespace, name). Nothing is pooled: :meth:`candidates` gives a pod only its own
    pull secrets and the scanner's credentials, in the order the kubelet tries them."""

    def __init__(self, default: dict[str, Credential] | None = None) -> None:
        self._interned: dict[Credential, Credential] = {}
        self._default = {k: self._intern(c) for k, c in (default or {}).items()}
        self._secrets: dict[tuple[str, str], dict[str, Credential]] = {}

    def _intern(self, cred: Credential) -> Credential:
        # Equal credentials (the same docker config copied into many namespaces) become one object,
        # so a credential set is one key however many secrets carry it.
        return self._interned.setdefault(cred, cred)

    @classmethod
    def from_docker_config(cls, path: str | Path | None) -> CredentialStore:
        p = Path(path) if path else default_docker_config_path()
        if not p.exists():
            if path:
                raise ConfigError("docker config file not found", source=str(p))
            return cls()
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read docker config: {exc.strerror or exc}", source=str(p)) from None
        return cls(parse_docker_config(data, str(p)))

    def add_pull_secret(self, namespace: str, name: str, dockerconfigjson: bytes) -> None:
        try:
            creds = parse_docker_config(dockerconfigjson, f"secret {namespace}/{name}")
        except ConfigError as exc:
            # One tenant's malformed secret never stops the cluster's scan: it is ignored, said so, and
            # that tenant's images are fetched without it (an error verdict if the registry wants it).
            log.warning("imagePullSecret ignored: %s", exc.diagnostics())
            creds = {}
        self._secrets[(namespace, name)] = {k: self._intern(c) for k, c in creds.items()}

    def candidates(self, registry: str, secrets: tuple[tuple[str, str], ...] = ()) -> tuple[Credential, ...]:
        """The credentials to try for ``registry`` on behalf of pods whose imagePullSecrets are
        ``secrets`` ((namespace, name) in the pod's order), in the kubelet's order: each of those
        secrets' entry for the registry, then the scanner's own docker config; each credential once.
        Empty: anonymous. Another namespace's secrets are never among them."""
        out: list[Credential] = []
        for key in secrets:
            cred = self._secrets.get(key, {}).get(registry)
            if cred is not None and cred not in out:
                out.append(cred)
        own = self._default.get(registry)
        if own is not None and own not in out:
            out.append(own)
        return tuple(out)

    def describe(self, registry: str, secrets: tuple[tuple[str, str], ...] = ()) -> str:
        """Where :meth:`candidates` come from, by name only (never a secret's contents)."""
        names = [f"pull secret {ns}/{name}" for ns, name in secrets if registry in self._secrets.get((ns, name), {})]
        if registry in self._default:
            names.append("the scanner's docker config")
        return ", ".join(dict.fromkeys(names)) or "no credentials (anonymous)"
