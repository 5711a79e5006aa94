"""Who may read ``/api/*`` and ``/reports/*`` of ``sigaudit serve``, and start scans.

Two ways, either or both (a request passes if one of the configured ways accepts it):

* a bearer token read from a file (``--auth-token-file``, a mounted Secret; re-read when the file
  changes, so a rotated Secret takes effect without a restart), compared in constant time;
* Kubernetes TokenReview + SubjectAccessReview (the kube-rbac-proxy model, without the sidecar): the
  bearer token is reviewed by the API server, then the user it names must be allowed a verb on a
  resource the operator grants through RBAC — by default ``get`` on ``reports.sigaudit.io`` to read
  and ``create`` on ``scans.sigaudit.io`` to start a scan. Answers are cached briefly (allowed and
  denied alike) so a busy client does not turn into API-server load; the cache is bounded.

A request that no configured way accepts is refused (401 without or with an unknown token, 403 when
the token is valid but the user lacks the permission, 503 when the API server could not answer:
never let through). Browser-borne requests are refused before any of this (see
:func:`cross_site_refusal`): a bearer token is never sent by a browser on its own, but the loopback
no-auth mode and the POST endpoint must not be reachable from a web page either.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scanner.errors import ConfigError

log = logging.getLogger("sigaudit.serve.auth")

MAX_TOKEN_BYTES = 16 * 1024  # a ServiceAccount token is ~1 KB; anything far larger is not a token
MIN_FILE_TOKEN_CHARS = 16
REVIEW_CACHE_SECONDS = 60.0
REVIEW_CACHE_ENTRIES = 1024
# Reviews in flight at once, and how long a request waits for a slot: a stalled API server (or a flood of
# made-up tokens) must not occupy every worker thread, which also answer /readyz and /metrics.
MAX_REVIEWS_IN_FLIGHT = 8
REVIEW_SLOT_WAIT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Access:
    """The SubjectAccessReview resource attributes a request needs: ``VERB:GROUP/RESOURCE``."""

    verb: str
    group: str
    resource: str
    namespace: str = ""

    @classmethod
    def parse(cls, text: str, *, namespace: str = "", field: str = "--auth-kube-read") -> Access:
        verb, sep, rest = text.partition(":")
        group, slash, resource = rest.rpartition("/")
        if not sep or not slash or not verb.strip() or not resource.strip() or any(c.isspace() for c in text):
            raise ConfigError(f"{text!r} is not VERB:GROUP/RESOURCE (e.g. get:sigaudit.io/reports)", field=field)
        return cls(verb, group, resource, namespace)

    def attributes(self) -> dict[str, str]:
        attrs = {"verb": self.verb, "group": self.group, "resource": self.resource}
        if self.namespace:
            attrs["namespace"] = self.namespace
        return attrs

    def __str__(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {resource}{where}"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int = 200  # the HTTP status of a refusal
    reason: str = ""
    user: str = ""


class TokenFile:
    """The shared bearer token in a file; re-read when the file changes (a Secret volume swaps a symlink)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._digest = b""
        self._load()

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            if st.st_size > MAX_TOKEN_BYTES:
                raise ConfigError(f"{self.path} is {st.st_size} bytes: not a bearer token", field="--auth-token-file")
            token = Path(self.path).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {self.path}: {exc.strerror or exc}",
                              field="--auth-token-file") from exc
        if len(token) < MIN_FILE_TOKEN_CHARS:
            raise ConfigError(f"the token in {self.path} is shorter than {MIN_FILE_TOKEN_CHARS} characters "
                              "(generate one with e.g. `openssl rand -hex 32`)", field="--auth-token-file")
        self._digest, self._stamp = hashlib.sha256(token).digest(), stamp

    def matches(self, presented: str) -> bool:
        with self._lock:
            try:
                self._load()
            except ConfigError as exc:  # removed, emptied or unreadable: no token is accepted until it is back
                if self._digest:
                    log.warning("auth: %s; refusing every token until the file holds one again", exc.diagnostics())
                self._digest, self._stamp = b"", None
            expected = self._digest
        # Constant time: digests of equal length, compared with hmac.compare_digest.
        return bool(expected) and hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), expected)


Post = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]
TOKEN_REVIEWS = "tokenreviews"  # noqa: S105 - a resource name, not a secret
SUBJECT_ACCESS_REVIEWS = "subjectaccessreviews"


def kube_post(api_client: Any) -> Post:
    """Create a TokenReview or a SubjectAccessReview with the kubernetes client (its typed methods, so
    helm/rbac_from_code.py derives the chart's ``create`` rules on both from this code)."""
    from kubernetes import client

    # Any: the bodies are plain dicts and the answers raw (_preload_content=False), which the stubs do not model.
    authn: Any = client.AuthenticationV1Api(api_client)
    authz: Any = client.AuthorizationV1Api(api_client)

    def post(kind: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        if kind == TOKEN_REVIEWS:
            resp = authn.create_token_review(dict(body), _preload_content=False, _request_timeout=10)
        else:
            resp = authz.create_subject_access_review(dict(body), _preload_content=False, _request_timeout=10)
        doc = json.loads(resp.data)
        if not isinstance(doc, dict):
            raise ValueError("the API server's answer is not an object")
        return doc

    return post


class KubeReviewer:
    """TokenReview then SubjectAccessReview, with a small bounded cache of both answers."""

    def __init__(self, post: Post, *, audiences: Sequence[str] = (), ttl: float = REVIEW_CACHE_SECONDS,
                 max_entries: int = REVIEW_CACHE_ENTRIES, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._post = post
        self._audiences = list(audiences)
        self._ttl = ttl
        self._max = max_entries
        self._now = monotonic
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[bytes, Access], tuple[float, Decision]] = OrderedDict()
        self._slots = threading.BoundedSemaphore(MAX_REVIEWS_IN_FLIGHT)

    def review(self, token: str, access: Access) -> Decision:
        key = (hashlib.sha256(token.encode()).digest(), access)
        now = self._now()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        if not self._slots.acquire(timeout=REVIEW_SLOT_WAIT_SECONDS):
            return Decision(False, 503, "too many token reviews in flight; retry")
        try:
            decision = self._review(token, access)
        finally:
            self._slots.release()
        if decision.status != 503:  # an outage is not remembered: the next request asks again
            with self._lock:
                self._cache[key] = (now + self._ttl, decision)
                self._cache.move_to_end(key)
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
        return decision

    def _review(self, token: str, access: Access) -> Decision:
        spec: dict[str, Any] = {"token": token}
        if self._audiences:
            spec["audiences"] = self._audiences
        try:
            tr = self._post(TOKEN_REVIEWS, {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec})
            status = tr.get("status") or {}
            if not status.get("authenticated"):
                return Decision(False, 401, "the bearer token is not valid")
            user = status.get("user") or {}
            if self._audiences and not set(status.get("audiences") or ()) & set(self._audiences):
                return Decision(False, 401, "the bearer token is not for this audience")
            name = str(user.get("username") or "")
            sar_spec: dict[str, Any] = {"user": name, "groups": list(user.get("groups") or []),
                                        "resourceAttributes": access.attributes()}
            if user.get("uid"):
                sar_spec["uid"] = str(user["uid"])
            if user.get("extra"):
                sar_spec["extra"] = user["extra"]
            sar = self._post(SUBJECT_ACCESS_REVIEWS, {
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": sar_spec})
        except Exception as exc:  # any failure to ask is a refusal, never a pass
            # Not str(exc): an API error's text may carry the response, and the request held the token.
            log.warning("auth: cannot review a token with the API server: %s (status %s)", type(exc).__name__,
                        getattr(exc, "status", "none"))
            return Decision(False, 503, "the Kubernetes API server could not review the token")
        sar_status = sar.get("status") or {}
        if sar_status.get("allowed") is True and not sar_status.get("denied"):
            return Decision(True, user=name)
        return Decision(False, 403, f"{name or 'this user'} may not {access}", user=name)


def kube_reviewer(kubeconfig: str | None, context: str | None, *, audiences: Sequence[str] = ()) -> KubeReviewer:
    """A reviewer with the same Kubernetes credentials the inventory uses (in-cluster, or kubeconfig)."""
    from scanner.errors import InventoryError
    from scanner.inventory.kube import load_api_client

    try:
        api_client = load_api_client(kubeconfig, context)
    except InventoryError as exc:
        raise ConfigError(exc.diagnostics(), field="--auth-kubernetes") from exc
    return KubeReviewer(kube_post(api_client), audiences=audiences)


class Authenticator:
    """The configured ways in; with none, every request passes (only allowed on loopback, see serve)."""

    def __init__(self, token_file: TokenFile | None = None, kube: KubeReviewer | None = None) -> None:
        self.token_file = token_file
        self.kube = kube

    @property
    def enabled(self) -> bool:
        return self.token_file is not None or self.kube is not None

    def check(self, authorization: str | None, access: Access) -> Decision:
        if not self.enabled:
            return Decision(True)
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Decision(False, 401, "authentication required: send Authorization: Bearer <token>")
        if len(token) > MAX_TOKEN_BYTES:
            return Decision(False, 401, "the bearer token is not valid")
        if self.token_file is not None and self.token_file.matches(token):
            return Decision(True, user="token-file")
        if self.kube is not None:
            return self.kube.review(token, access)
        return Decision(False, 401, "the bearer token is not valid")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_only(hostport: str) -> str:
    hostport = hostport.strip().lower()
    if hostport.startswith("["):
        return hostport[1:].partition("]")[0]
    return hostport.rpartition(":")[0] if hostport.count(":") == 1 else hostport


def cross_site_refusal(headers: Mapping[str, str], *, unsafe: bool) -> str | None:
    """Why a request looks like one a web page made the browser send, or None.

    * ``Sec-Fetch-Site: cross-site`` (or ``same-site``: another host of the same site) — refused for
      every protected request;
    * an ``Origin`` whose host:port is not the ``Host`` the request was sent to (``Origin: null``
      included) — refused for every protected request (browsers send Origin on every POST and on
      cross-origin GETs);
    * for an unsafe method (POST): a body that is not ``application/json`` (a form post needs no CORS
      preflight; a JSON one does, and sigaudit answers no preflight)."""
    site = headers.get("sec-fetch-site", "").strip().lower()
    if site in ("cross-site", "same-site"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc or \
                parts.netloc.lower() != headers.get("host", "").strip().lower():
            return "cross-origin request refused (Origin does not match Host)"
    if unsafe:
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return "POST needs Content-Type: application/json"
    return None


def rebinding_refusal(headers: Mapping[str, str]) -> str | None:
    """Without authentication (loopback only), a Host that is not a loopback name: a page on a name
    that rebinds to 127.0.0.1 (DNS rebinding) is same-origin in the browser, and would read the reports."""
    host = _host_only(headers.get("host", ""))
    if is_loopback(host):
        return None
    return "Host is not a loopback name (the server runs without authentication on loopback only)"


__all__ = [
    "Access",
    "Authenticator",
    "Decision",
    "KubeReviewer",
    "TokenFile",
    "cross_site_refusal",
    "is_loopback",
    "kube_post",
    "kube_reviewer",
    "rebinding_refusal",
]
