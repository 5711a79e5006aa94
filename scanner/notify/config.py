"""The ``--notify`` file: where notifications of new violations go (issue 24).

::

    max_items: 50              # changes per message (the most severe first) + a count of the rest
    expiring: true             # also "expiring soon" (the policy's expiry warning window)
    receivers:
      - name: security-webhook # names the receiver in logs, metrics and the dedup state (never its URL)
        type: webhook          # JSON POST, body signed: X-Sigaudit-Signature-256: sha256=<HMAC-SHA256 hex>
        url: https://hooks.example.com/sigaudit
        secret_env: SIGAUDIT_WEBHOOK_SECRET   # or secret_file: /etc/sigaudit/webhook-secret
      - name: slack
        type: slack            # a Slack-compatible incoming webhook; its URL is the secret
        url_file: /etc/sigaudit/slack-url     # or url_env / url
      - name: alertmanager
        type: alertmanager     # POST {url}/api/v2/alerts; routing applies to the labels
        url: https://alertmanager.monitoring.svc:9093
        bearer_token_file: /var/run/secrets/alertmanager-token   # optional
        labels: {team: platform}              # added to every alert
        alert_ttl: 24h         # endsAt of a firing alert; re-sent before it lapses while the violation lasts

Every receiver also takes ``timeout`` (per attempt, default 10s), ``retry_for`` (for all attempts,
default 60s; durations are seconds or ``90s``/``10m``/``24h``) and ``ca_file`` (a private CA). A
receiver URL is https, or http on 127.0.0.1 / [::1] only: an alert names images, namespaces and
workloads, and the webhook body is signed with a secret that an eavesdropper must not be able to test
guesses against. Secrets
(webhook secret, Slack URL, bearer token) come from the environment or a file (a Kubernetes Secret),
are read once at load and never logged, stored or shown.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scanner import yamldoc
from scanner.errors import ConfigError

MAX_FILE = 256 * 1024
MAX_SECRET = 16 * 1024
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62})$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}$")
LOOPBACK = ("127.0.0.1", "::1")
RESERVED_LABELS = frozenset({"alertname", "severity", "cluster", "namespace", "image", "digest", "rule"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReceiverSpec(_Strict):
    name: str
    type: Literal["webhook", "slack", "alertmanager"]
    url: str | None = None
    url_env: str | None = None
    url_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    bearer_token_env: str | None = None
    bearer_token_file: str | None = None
    ca_file: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(10.0, gt=0, le=300)
    retry_for: float = Field(60.0, ge=0, le=3600)
    alert_ttl: float = Field(24 * 3600.0, ge=300, le=30 * 86400)

    @field_validator("timeout", "retry_for", "alert_ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        """Seconds, or ``90s``, ``10m``, ``24h``, ``1h30m``."""
        if isinstance(value, str) and not value.replace(".", "", 1).isdigit():
            parts = _DURATION.findall(value.strip().lower())
            if not parts or "".join(n + u for n, u in parts) != value.strip().lower():
                raise ValueError("a duration: seconds, or e.g. 90s, 10m, 24h")
            return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
        return value

    @model_validator(mode="after")
    def _fields(self) -> ReceiverSpec:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: lowercase letters, digits, '.', '_', '-' (at most 63)")
        if sum(x is not None for x in (self.url, self.url_env, self.url_file)) != 1:
            raise ValueError("give exactly one of url, url_env, url_file")
        if self.type == "webhook" and sum(x is not None for x in (self.secret_env, self.secret_file)) != 1:
            raise ValueError("a webhook is signed: give exactly one of secret_env, secret_file")
        if self.type != "webhook" and (self.secret_env or self.secret_file):
            raise ValueError(f"secret_env/secret_file apply to webhooks, not {self.type}")
        if self.type != "alertmanager" and (self.bearer_token_env or self.bearer_token_file or self.labels):
            raise ValueError(f"bearer_token_*/labels apply to alertmanager, not {self.type}")
        if self.bearer_token_env and self.bearer_token_file:
            raise ValueError("give one of bearer_token_env, bearer_token_file")
        for k, v in self.labels.items():
            if not _LABEL.match(k) or k in RESERVED_LABELS or k.startswith("__"):
                raise ValueError(f"label {k!r} is not a Prometheus label name or is one sigaudit sets")
            if len(v) > 1024:
                raise ValueError(f"label {k!r}: value over 1024 characters")
        return self


class NotifySpec(_Strict):
    receivers: list[ReceiverSpec] = Field(min_length=1, max_length=32)
    max_items: int = Field(50, ge=1, le=1000)
    expiring: bool = True

    @model_validator(mode="after")
    def _unique(self) -> NotifySpec:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError("receiver names must be unique (they key the dedup state)")
        return self


@dataclass(frozen=True, slots=True)
class Receiver:
    """A receiver ready to use. Secrets are excluded from ``repr``: a log line or traceback that
    shows the object shows no secret."""

    name: str
    type: str
    url: str = field(repr=False)  # a Slack URL is a secret; logs use ``where``
    where: str  # scheme://host[:port] only
    secret: bytes | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    retry_for: float = 60.0
    alert_ttl: float = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    receivers: tuple[Receiver, ...]
    max_items: int = 50
    expiring: bool = True
    source: str = ""


def _read_secret(what: str, env: str | None, path: str | None, source: str) -> str:
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"{what}: environment variable {env} is not set or empty", source=source)
    else:
        assert path is not None
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_SECRET + 1)
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}", source=source) from None
        if len(raw) > MAX_SECRET:
            raise ConfigError(f"{what}: {path} is over {MAX_SECRET} bytes", source=source)
        try:
            value = raw.decode().strip()
        except UnicodeDecodeError:
            raise ConfigError(f"{what}: {path} is not UTF-8 text", source=source) from None
        if not value:
            raise ConfigError(f"{what}: {path} is empty", source=source)
    return value


def check_url(url: str, what: str, source: str) -> str:
    """https, or http to the loopback address only; no credentials in it. Returns scheme://host[:port]."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{what}: not a URL", source=source) from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"{what}: an https:// URL is needed", source=source)
    if parts.scheme == "http" and host not in LOOPBACK:
        raise ConfigError(f"{what}: plain http is refused except to 127.0.0.1 or [::1]: an alert names images and "
                          "workloads, and its signature must not travel in clear; use https", source=source)
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{what}: no credentials in the URL; use bearer_token_env/file or the webhook secret",
                          source=source)
    if any(c in url for c in "\r\n\t ") or len(url) > 2048:
        raise ConfigError(f"{what}: not a URL", source=source)
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port else "")


def _receiver(spec: ReceiverSpec, source: str) -> Receiver:
    what = f"receiver {spec.name}"
    url = spec.url if spec.url is not None else _read_secret(f"{what} url", spec.url_env, spec.url_file, source)
    where = check_url(url, what, source)
    secret = None
    if spec.type == "webhook":
        secret = _read_secret(f"{what} secret", spec.secret_env, spec.secret_file, source).encode()
    token = None
    if spec.bearer_token_env or spec.bearer_token_file:
        token = _read_secret(f"{what} bearer token", spec.bearer_token_env, spec.bearer_token_file, source)
        if any(c in token for c in "\r\n"):
            raise ConfigError(f"{what} bearer token: one line expected", source=source)
    if spec.ca_file is not None and not Path(spec.ca_file).is_file():
        raise ConfigError(f"{what}: ca_file {spec.ca_file} is not a readable file", source=source)
    return Receiver(spec.name, spec.type, url, where, secret, token, spec.ca_file, tuple(sorted(spec.labels.items())),
                    spec.timeout, spec.retry_for, spec.alert_ttl)


def parse(data: Any, source: str = "<notify>") -> NotifyConfig:
    try:
        spec = NotifySpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        # the message only: pydantic's input_value could be a URL that is itself a secret
        raise ConfigError(f"{first['msg']}", source=source, field=loc or None) from None
    return NotifyConfig(tuple(_receiver(r, source) for r in spec.receivers), spec.max_items, spec.expiring, source)


def load(path: str) -> NotifyConfig:
    """Read and check a ``--notify`` file, and read its secrets. Raises ConfigError (exit 2)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=path) from None
    if len(raw) > MAX_FILE:
        raise ConfigError(f"over {MAX_FILE} bytes", source=path)
    try:
        data = yamldoc.load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not YAML: {str(exc).splitlines()[0][:200]}", source=path) from None
    if not isinstance(data, dict):
        raise ConfigError("a mapping with `receivers:` is expected", source=path)
    return parse(data, path)
