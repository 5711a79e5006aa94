"""An OCI distribution client: manifests, indexes, tags, blobs and the referrers API.

Built on urllib3 connection pools, one per host (:mod:`scanner.registry.transport`: the transport
measured cheapest per request, with the wall-clock deadline at the socket), used from a bounded thread
pool; concurrency is bounded per registry. Every reply is untrusted: sizes are capped
while streaming, digests are checked before anything is parsed, retries honour ``Retry-After``,
redirects to another host never carry credentials, and plain HTTP is used only for registries the
policy lists as insecure.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import json
import logging
import re
import ssl
import threading
import time
import traceback
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import urllib3
from urllib3 import exceptions as u3

from scanner.errors import LimitExceeded, NotFound, ParseError, RegistryError
from scanner.inventory.references import SHA256_RE, registry_api_host
from scanner.models import Descriptor, ImageReference
from scanner.registry import deadline
from scanner.registry.auth import Candidate, Credential, CredentialStore, CredentialUnavailable
from scanner.registry.transport import Transport

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join(MANIFEST_TYPES)
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Limits:
    manifest_bytes: int = 4 * 1024 * 1024
    blob_bytes: int = 4 * 1024 * 1024
    index_entries: int = 1000
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    total_timeout: float = 60.0  # per request, including a slow trickle of bytes
    retries: int = 3
    max_retry_after: float = 10.0  # a longer Retry-After is waited this long (then retried, then an error)
    # Seconds of retry waits per registry per scan, summed over threads: once spent, that registry's
    # 429/5xx replies are errors at once, so one throttled registry cannot keep the workers asleep
    # while the images of every other registry wait.
    backoff_budget: float = 60.0
    max_redirects: int = 5
    token_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: str
    media_type: str
    raw: bytes
    doc: Mapping[str, Any]

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw))

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass
class RegistryStats:
    """Thread-safe counters: requests and errors by registry and status code."""

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, registry: str, code: str, error: bool) -> None:
        with self._lock:
            self.requests[f"{registry}|{code}"] += 1
            if error:
                self.errors[f"{registry}|{code}"] += 1

    def as_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"registry_requests": dict(self.requests), "registry_errors": dict(self.errors)}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# Digest algorithms whose content is checked: OCI image-spec descriptor.md ("Registered algorithms":
# sha256, sha512) and sha384, which distribution also accepts. Anything else is refused, never fetched
# and parsed unchecked.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def is_digest(reference: str) -> bool:
    """A manifest reference that is a digest, not a tag (tags never contain ':')."""
    return ":" in reference


def checkable_digest(digest: str, where: str) -> tuple[str, str]:
    """(algorithm, hex) of a digest whose content we can check; ParseError for any other."""
    algo, _, hexd = digest.partition(":")
    length = DIGEST_HEX_LENGTHS.get(algo)
    if length is None:
        raise ParseError(
            f"{where}: digest algorithm {algo[:20]!r} is not supported ({', '.join(DIGEST_HEX_LENGTHS)}); "
            "refused rather than read unchecked"
        )
    if len(hexd) != length or not re.fullmatch(r"[0-9a-f]+", hexd):
        raise ParseError(f"{where}: malformed {algo} digest {digest[:80]!r}")
    return algo, hexd


def verify_digest(data: bytes, digest: str, where: str) -> None:
    """Raise ParseError unless ``data`` hashes to ``digest``; an algorithm we cannot check is an error."""
    algo, hexd = checkable_digest(digest, where)
    actual = hashlib.new(algo, data).hexdigest()
    if actual != hexd:
        raise ParseError(f"{where}: content hashes to {algo}:{actual}, not {digest}: does not match its digest: "
                         "tampered or corrupt")


def parse_descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, Mapping):
        raise ParseError(f"{where}: descriptor is not an object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(digest, str) or not re.fullmatch(r"[a-z0-9]+:[0-9a-f]{32,128}", digest):
        raise ParseError(f"{where}: descriptor digest missing or malformed")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ParseError(f"{where}: descriptor size missing or negative")
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise ParseError(f"{where}: annotations must map strings to strings")
    artifact_type = obj.get("artifactType")
    return Descriptor(
        media_type=str(media_type or ""),
        digest=digest,
        size=size,
        annotations=dict(annotations),
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
    )


def parse_manifest(raw: bytes, media_type_header: str, digest: str) -> Manifest:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"manifest {digest[:19]}: not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ParseError(f"manifest {digest[:19]}: not a JSON object")
    if doc.get("schemaVersion") != 2:
        raise ParseError(f"manifest {digest[:19]}: schemaVersion {doc.get('schemaVersion')!r} is not supported")
    media_type = doc.get("mediaType") or media_type_header.split(";")[0].strip()
    if not media_type:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type not in MANIFEST_TYPES and media_type != "application/vnd.oci.artifact.manifest.v1+json":
        raise ParseError(f"manifest {digest[:19]}: unsupported media type {media_type!r}")
    return Manifest(digest=digest, media_type=str(media_type), raw=raw, doc=doc)


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    try:
        secs = float(value)
    except ValueError:
        try:
            secs = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if secs != secs:  # NaN
        return None
    return max(0.0, min(secs, cap))


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_TOKEN = re.compile(r"[\x21-\x7e]+")  # RFC 6750's b64token is a subset; anything else is no header value
# Everything urllib3, http.client and the sockets under them (and the URL parsing around them) raise
# for a peer or reply that cannot be used: transport failures, timeouts, malformed status lines and
# headers, URLs that do not parse. Caught where a request is made and turned into RegistryError, so no
# reply can raise past the client.
_TRANSPORT_FAILURES = (u3.HTTPError, http.client.HTTPException, OSError, ValueError)


@dataclass(frozen=True, slots=True)
class Reply:
    """A registry's answer once its body has been read: status and (case-insensitive) headers."""

    status_code: int
    headers: Mapping[str, str]


def _scope_repository(scope: str) -> str:
    """The repository of a token scope ``repository:NAME:pull``: the credentials for a request are
    chosen by the image's path as well as its host (a docker config key may be ``reg.io/team-a``)."""
    kind, _, rest = scope.partition(":")
    name, colon, _ = rest.rpartition(":")
    if kind != "repository" or not colon or not name:
        raise ValueError(f"not a repository scope: {scope[:200]!r}")
    return name


def _basic(username: str, password: str) -> str:
    """RFC 7617 Basic credentials, UTF-8 (as httpx sent them)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class BudgetExhausted(RegistryError):
    """The per-registry manifest GET budget of this scan is spent (pull-rate etiquette)."""


_TAGS_PER_PAGE = 1000  # asked per tag-list page; a listing holding more than its pages asked for is unusable
_TAG_MAX = 128  # the distribution spec's longest tag


class RegistryClient:
    """Thread-safe; share one per scan. ``secrets`` arguments name the pods' pull secrets."""

    def __init__(
        self,
        *,
        credentials: CredentialStore | None = None,
        insecure_registries: frozenset[str] | set[str] = frozenset(),
        limits: Limits | None = None,
        per_registry_concurrency: int = 16,
        verify_tls: bool | str = True,
        manifest_budget: int | None = None,
    ) -> None:
        """``manifest_budget``: at most this many manifest GETs per registry for the life of the client
        (one scan) — what pull-rate limits such as Docker Hub's count; HEADs are free. Once spent,
        every further manifest GET to that registry raises :class:`BudgetExhausted`."""
        self.limits = limits or Limits()
        self.credentials = credentials or CredentialStore()
        self.insecure = frozenset(insecure_registries)
        self.stats = RegistryStats()
        self._per_registry = per_registry_concurrency
        self._sems: dict[str, threading.BoundedSemaphore] = {}
        # Tokens and tag lists are kept per credential: what one tenant's credentials read is never
        # served to a request made on behalf of another.
        self._tokens: dict[tuple[str, str, Credential | None], tuple[str, float]] = {}
        self._preferred: dict[tuple[str, str, tuple[Candidate, ...]], Candidate] = {}
        # The candidate (None: anonymous) whose request last succeeded, per registry, scope and
        # candidate set: the credential *source* recorded with the verdicts, never the secret.
        self._worked: dict[tuple[str, str, tuple[Candidate, ...]], Candidate | None] = {}
        self._basic: set[str] = set()
        self._no_referrers_api: set[str] = set()  # registries that answered 404: go straight to the tag
        self._budget = manifest_budget
        self._tag_sets: dict[tuple[str, str, tuple[Candidate, ...]], frozenset[str] | None] = {}
        self._has_referrers_api: set[str] = set()
        self._listed_repos: frozenset[tuple[str, str]] = frozenset()  # see answer_absent_tags_from_lists
        self._probe_locks: dict[str, threading.Lock] = {}
        self._tag_locks: dict[tuple[str, str, tuple[Candidate, ...]], threading.Lock] = {}
        self._manifest_gets: Counter[str] = Counter()
        self._backoff_spent: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        # The per-registry semaphore (``_slot``) bounds concurrency, not the pools: a slot covers one
        # exchange with its redirect hops to other hosts, and waiting for it is bounded by the deadline.
        # The pools keep as many idle connections as were in use at once (several registries may
        # redirect to one blob host, hence the margin), so none is dropped with a warning.
        self._http = Transport(
            verify_tls=verify_tls,
            connect_timeout=self.limits.connect_timeout,
            read_timeout=self.limits.read_timeout,
            maxsize=max(64, per_registry_concurrency * 4),
            headers={"User-Agent": "sigaudit", "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _base(self, registry: str) -> str:
        scheme = "http" if registry in self.insecure else "https"
        return f"{scheme}://{registry_api_host(registry)}"

    def _sem(self, registry: str) -> threading.BoundedSemaphore:
        sem = self._sems.get(registry)  # made once per registry: read without the lock after that
        if sem is None:
            with self._lock:
                sem = self._sems.setdefault(registry, threading.BoundedSemaphore(self._per_registry))
        return sem

    def _slot(self, registry: str) -> threading.BoundedSemaphore:
        """One of the registry's concurrent request slots, for one exchange (never across a wait): the
        semaphore, acquired; the caller releases it (``try``/``finally``, not a generator's context
        manager: this is every request's path, issue 19)."""
        sem = self._sem(registry)
        left = deadline.remaining()
        if not sem.acquire(timeout=None if left is None else max(left, 0.0)):
            raise RegistryError(f"{registry}: {deadline.expired() or 'deadline reached'}", registry=registry)
        return sem

    def _pause(self, registry: str, seconds: float, why: str, status: int | None) -> None:
        """Wait before a retry, outside the registry's slot, within its backoff budget and the deadline."""
        with self._lock:
            spent = self._backoff_spent[registry]
            if spent + seconds > self.limits.backoff_budget:
                over = True
            else:
                over = False
                self._backoff_spent[registry] += seconds
        if over:
            raise RegistryError(
                f"{registry}: {why}; not retried: {spent:.0f}s of this scan already went into waiting for this "
                f"registry (budget {self.limits.backoff_budget:g}s)",
                registry=registry,
                status=status,
            )
        left = deadline.remaining()
        if left is not None and left <= seconds:
            words = deadline.current()
            raise RegistryError(
                f"{registry}: {why}; {words[1] if words else 'deadline reached'} before a retry", registry=registry,
                status=status,
            )
        time.sleep(seconds)

    def _spend_budget(self, registry: str) -> None:
        with self._lock:
            if self._budget is not None and self._manifest_gets[registry] >= self._budget:
                exhausted = True
            else:
                exhausted = False
                self._manifest_gets[registry] += 1
        if exhausted:
            self.stats.record(registry, "budget-exhausted", True)
            raise BudgetExhausted(
                f"{registry}: registry request budget exhausted ({self._budget} manifest GETs this scan, "
                "--registry-budget)",
                registry=registry,
            )

    def manifest_gets(self, registry: str) -> int:
        """Manifest GETs sent to ``registry`` so far (what the budget counts). Read by the budget's tests
        (tests/unit/test_bench_registry_budget.py) only; the scan's own counters are in ``stats``."""
        with self._lock:
            return self._manifest_gets[registry]

    def _auth_header(self, registry: str, scope: str, cred: Credential | None) -> dict[str, str]:
        with self._lock:
            tok = self._tokens.get((registry, scope, cred))
            basic = registry in self._basic
        if tok and tok[1] > time.monotonic():
            return {"Authorization": f"Bearer {tok[0]}"}
        if basic and cred:
            return {"Authorization": _basic(cred.username, cred.password)}
        return {}

    def _fetch_token(self, registry: str, challenge: str, scope: str, cred: Credential | None) -> None:
        """Exchange ``cred`` for a bearer token at the realm of ``challenge``. The caller passes only a
        challenge the registry itself answered (never one from a host it redirected to), so the realm is
        the registry's choice: like containerd and the docker CLI, the credentials go to that realm even
        on another host (Docker Hub's is auth.docker.io), over HTTPS unless the registry is insecure."""
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"{registry}: bearer challenge without realm", registry=registry, status=401)
        try:
            realm_url = urlsplit(realm)
            realm_url.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            raise RegistryError(
                f"{registry}: token realm {realm[:200]!r} is not a valid URL", registry=registry, status=401
            ) from None
        if realm_url.scheme not in ("https", "http") or not realm_url.hostname:
            raise RegistryError(
                f"{registry}: token realm {realm[:200]!r} is not an http(s) URL", registry=registry, status=401
            )
        if realm_url.scheme == "http" and registry not in self.insecure:
            raise RegistryError(
                f"{registry}: token realm {realm} is plain HTTP; refusing (list the registry in "
                "insecureRegistries to allow)",
                registry=registry,
                status=401,
            )
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        query = {k: v for k, v in query.items() if v}
        headers: dict[str, str] = {}
        form: bytes | None = None
        if cred and cred.identity_token:
            method, url = "POST", realm
            form = urlencode({
                **query,
                "grant_type": "refresh_token",
                "refresh_token": cred.identity_token,
                "client_id": "sigaudit",
            }).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            method, url = "GET", realm + ("&" if "?" in realm else "?") + urlencode(query)
            if cred:
                headers["Authorization"] = _basic(cred.username, cred.password)
        limit = self.limits.token_bytes
        at = time.monotonic() + self.limits.total_timeout
        try:
            # Streamed under the same total deadline as any request, and capped while reading: the
            # token service is as untrusted as the registry (a 512 MiB reply once took 1 GiB of RSS).
            with deadline.within(at, "total timeout exceeded"), self._open(method, url, headers, form) as resp:
                self.stats.record(registry, f"token-{resp.status}", resp.status >= 400)
                if resp.status in (401, 403):
                    who = "the configured credentials were rejected" if cred else "anonymous access refused"
                    raise RegistryError(
                        f"{registry}: token service refused ({resp.status}): {who}",
                        registry=registry,
                        status=resp.status,
                    )
                if resp.status != 200:
                    raise RegistryError(
                        f"{registry}: token service answered {resp.status}",
                        registry=registry,
                        status=resp.status,
                    )
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise RegistryError(
                        f"{registry}: token service reply of {int(declared)} bytes exceeds the limit of {limit}",
                        registry=registry,
                    )
                raw = _read_capped(resp, limit, at, url)
        except LimitExceeded:
            raise RegistryError(
                f"{registry}: token service reply exceeds the limit of {limit} bytes", registry=registry
            ) from None
        except _TRANSPORT_FAILURES as exc:
            self.stats.record(registry, "token-error", True)
            raise RegistryError(
                f"{registry}: token service {realm_url.netloc}: {_describe_transport_error(exc)}", registry=registry
            ) from exc
        try:
            body = json.loads(raw)
            token = body.get("token") or body.get("access_token")
            ttl = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError, RecursionError) as exc:
            raise RegistryError(f"{registry}: token service reply is not JSON", registry=registry) from exc
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{registry}: token service reply has no token", registry=registry)
        if not _TOKEN.fullmatch(token):
            # A token is a credential: one that cannot be sent as a header (a line break, a space, a
            # non-ASCII character) was quoted whole in the verdict by the HTTP library's refusal.
            raise RegistryError(
                f"{registry}: token service reply has a malformed token ({len(token)} characters, not quoted: "
                "only printable ASCII without spaces can be sent)",
                registry=registry,
            )
        if not ttl == ttl:  # NaN
            ttl = 60.0
        with self._lock:
            self._tokens[(registry, scope, cred)] = (token, time.monotonic() + max(ttl - 10, 5))

    def _request(
        self,
        method: str,
        registry: str,
        path: str,
        *,
        scope: str,
        secrets: tuple[tuple[str, str], ...],
        headers: Mapping[str, str] | None = None,
        max_bytes: int,
        unknown_if_refused: bool = True,
    ) -> tuple[Reply, bytes]:
        """One request with auth, retries and a streamed size cap. Returns (response, body).

        ``secrets`` are the pull secrets of the pods the request is made for: only their credentials
        and the scanner's own are used, each tried in turn, as the kubelet does, when the registry
        refuses the previous one (401/403) *or says it has no such thing* (404: GHCR, ECR, Harbor
        answer NAME_UNKNOWN / MANIFEST_UNKNOWN to an account that may not see a repository); the one
        that worked is tried first next time. A not-found answer stands only once every credential
        was tried and none was refused (a refused one might have seen it: an error naming both); a
        later one that failed otherwise (transport, 5xx, budget, a source that could not give a
        credential) is the error, named as its own source, never the earlier one's not-found. Every
        credential's manifest GET counts against the budget. ``unknown_if_refused=False`` (the referrers
        API, whose 404 may mean "no such API": its fallback, the tag schema, is asked under the rule)
        lets a not-found stand over a refusal."""
        candidates = self.credentials.candidates(registry, secrets, repository=_scope_repository(scope))
        with self._lock:
            preferred = self._preferred.get((registry, scope, candidates))
        order: list[Candidate | None] = (
            [preferred, *(c for c in candidates if c is not preferred)] if preferred else list(candidates)
        ) or [None]
        url = self._base(registry) + path
        unavailable: list[str] = []  # sources that could not give a credential, said with the final error
        # The first not-found answer of a credential: the answer when every later one says the same.
        not_found: tuple[Reply, bytes, Candidate | None] | None = None
        # Sources the registry refused (401/403). A not-found is only an answer when every source that
        # might see the thing looked: with a refusal among them (a hidden repository says 404 to the
        # account that may not see it) whether it exists cannot be told — an error, never "unsigned".
        refused: list[tuple[Candidate | None, int]] = []
        refusals = refused if unknown_if_refused else []  # what _refused_not_found weighs
        for i, candidate in enumerate(order):
            more = i + 1 < len(order)
            try:
                cred = self.credentials.resolve(candidate) if candidate is not None else None
            except CredentialUnavailable as exc:
                unavailable.append(str(exc))
                if more:
                    continue
                if not_found is not None:  # a source that failed is never a not-found: fail closed
                    self._attempted(registry, scope, candidates, candidate)
                raise RegistryError(f"{registry}: {'; '.join(unavailable)}", registry=registry) from None
            if cred is None and candidate is not None:
                # The source has nothing for this registry: the next one; anonymous when none is left
                # and no source failed (a source that failed is never replaced by anonymous access).
                if more:
                    continue
                if unavailable:
                    if not_found is not None:
                        self._attempted(registry, scope, candidates, None)
                    raise RegistryError(f"{registry}: {'; '.join(unavailable)}", registry=registry)
                if not_found is not None:  # every source with a credential was tried
                    self._refused_not_found(registry, scope, secrets, candidates, not_found[2], refusals)
                    self._remember(registry, scope, secrets, candidates, not_found[2])
                    return not_found[0], not_found[1]
                candidate = None
            try:
                if method == "GET" and "/manifests/" in path:
                    self._spend_budget(registry)  # each credential's GET is one the registry counts
                resp, body, from_registry = self._authenticated(
                    method, registry, url, scope, cred, headers or {}, max_bytes
                )
            except RegistryError as exc:
                if exc.status in (401, 403):
                    refused.append((candidate, exc.status))
                if more and exc.status in (401, 403):
                    continue
                if not_found is not None:
                    if exc.status in (401, 403) and not unavailable:
                        self._refused_not_found(registry, scope, secrets, candidates, not_found[2], refusals)
                        self._remember(registry, scope, secrets, candidates, not_found[2])
                        return not_found[0], not_found[1]  # not weighed (the referrers API): it stands
                    self._attempted(registry, scope, candidates, candidate)  # its own failure, named as its
                if unavailable:
                    raise RegistryError(f"{exc}; {'; '.join(unavailable)}", registry=registry,
                                        status=exc.status) from exc
                raise
            if from_registry and resp.status_code in (401, 403):
                refused.append((candidate, resp.status_code))
                if more:
                    continue
            if more and from_registry and resp.status_code == 404:
                # Not found *for this credential*: a registry that hides what an account may not see
                # says 404; the next credential may see it (as the kubelet tries its next secret).
                if not_found is None:
                    not_found = (resp, body, candidate)
                continue
            if not_found is not None and resp.status_code in (401, 403) and from_registry and not unavailable:
                self._refused_not_found(registry, scope, secrets, candidates, not_found[2], refusals)
                self._remember(registry, scope, secrets, candidates, not_found[2])
                return not_found[0], not_found[1]  # not weighed (the referrers API): it stands
            if resp.status_code == 404 and refusals:  # not found for this one, refused to another: unknown
                self._refused_not_found(registry, scope, secrets, candidates, candidate, refusals)
            if resp.status_code < 400 or (resp.status_code == 404 and from_registry):
                self._remember(registry, scope, secrets, candidates, candidate)  # the registry took it
            elif not_found is not None:
                self._attempted(registry, scope, candidates, candidate)
            if unavailable and resp.status_code in (401, 403):
                raise RegistryError(
                    f"{registry}: access refused ({resp.status_code}); {'; '.join(unavailable)}",
                    registry=registry, status=resp.status_code,
                )
            return resp, body
        raise AssertionError("unreachable: the last credential's answer is always returned")

    def _refused_not_found(
        self,
        registry: str,
        scope: str,
        secrets: tuple[tuple[str, str], ...],
        candidates: tuple[Candidate, ...],
        said_not_found: Candidate | None,
        refused: list[tuple[Candidate | None, int]],
    ) -> None:
        """Raise when a not-found answer would stand though the registry refused another source: a
        registry that hides a repository says 404 to an account that may not see it, so the refused
        source might have seen what the other was told is not there (a ``.sig`` tag: "unsigned", which
        ``required: false`` allows). The sources are named, never their contents."""
        if not refused:
            return
        self._attempted(registry, scope, candidates, refused[0][0])
        def label(c: Candidate | None) -> str:
            return self.credentials.label(registry, secrets, c, repository=_scope_repository(scope))

        who = ", ".join(dict.fromkeys(f"{label(c)} ({code})" for c, code in refused))
        raise RegistryError(
            f"{registry}: not found with {label(said_not_found)}, and access refused to "
            f"{who}: whether it exists cannot be told",
            registry=registry, status=refused[0][1],
        )

    def _attempted(
        self, registry: str, scope: str, candidates: tuple[Candidate, ...], candidate: Candidate | None
    ) -> None:
        """The source whose failure is the answer after an earlier credential's not-found: the verdict
        names it (:meth:`credential_source`), never the earlier source whose not-found was set aside."""
        with self._lock:
            self._worked[(registry, scope, candidates)] = candidate

    def _remember(
        self,
        registry: str,
        scope: str,
        secrets: tuple[tuple[str, str], ...],
        candidates: tuple[Candidate, ...],
        candidate: Candidate | None,
    ) -> None:
        key = (registry, scope, candidates)
        with self._lock:
            if candidate is not None:
                self._preferred[key] = candidate
            first = key not in self._worked or self._worked[key] != candidate
            self._worked[key] = candidate
        if first and candidates:  # -v says which source answered (never the secret)
            log.info("%s (%s): registry credentials from %s", registry, scope,
                     self.credentials.label(registry, secrets, candidate, repository=_scope_repository(scope)))

    def credential_source(
        self,
        registry: str,
        repository: str,
        secrets: tuple[tuple[str, str], ...],
        named_for: tuple[tuple[str, str], ...] | None = None,
    ) -> str | None:
        """Which source's credential the last answered request for ``registry/repository`` on behalf
        of pods with pull secrets ``secrets`` used ("anonymous" when every source had nothing for it);
        None before any request was answered, or when no source applies to the registry at all. A pull
        secret is named among ``named_for`` (default ``secrets``): the secrets of the pods the answer is
        for, so a verdict never names another tenant's secret."""
        candidates = self.credentials.candidates(registry, secrets, repository=repository)
        if not candidates:
            return None
        key = (registry, f"repository:{repository}:pull", candidates)
        with self._lock:
            if key not in self._worked:
                return None
            worked = self._worked[key]
        return self.credentials.label(registry, secrets if named_for is None else named_for, worked,
                                      repository=repository)

    def _authenticated(
        self,
        method: str,
        registry: str,
        url: str,
        scope: str,
        cred: Credential | None,
        headers: Mapping[str, str],
        max_bytes: int,
    ) -> tuple[Reply, bytes, bool]:
        """The request with one credential (or none): answers the registry's own challenge once,
        retries transient failures (every wait outside the registry's request slot). Returns
        (response, body, whether the registry itself answered)."""
        attempt, authed = 0, False
        while True:
            hdrs = {**headers, **self._auth_header(registry, scope, cred)}
            failure: Exception | None = None
            slot = self._slot(registry)  # held for the exchange only: every wait below is outside it
            try:
                resp, body, final_url = self._send(method, url, hdrs, max_bytes, registry)
            except _TransportFailure as exc:
                failure = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            finally:
                slot.release()
            if failure is not None:
                kind = _failure_kind(failure)
                self.stats.record(registry, kind, True)
                # Retried: a connection broken mid-reply, a connect that timed out, a write that failed
                # (as with httpx). Not: a refused connection, DNS, TLS, a stalled reply, any deadline.
                if (
                    attempt < min(self.limits.retries, 2)
                    and kind not in ("ConnectError", "ReadTimeout")
                    and deadline.cause(failure) is None
                ):
                    attempt += 1
                    self._pause(registry, 0.2 * 2**attempt, _describe_transport_error(failure), None)
                    continue
                raise RegistryError(f"{registry}: {_describe_transport_error(failure)}", registry=registry) from failure
            self.stats.record(registry, str(resp.status_code), resp.status_code >= 400 and resp.status_code != 404)
            from_registry = final_url == url or urlsplit(final_url).netloc == urlsplit(url).netloc
            if resp.status_code == 401 and not from_registry:
                # A host the registry redirected to (blob storage, a CDN) may not say where the
                # registry's credentials go: its challenge is never answered (host = host:port).
                raise RegistryError(
                    f"{registry}: redirect target {urlsplit(final_url).netloc} demanded authentication (401); "
                    "the registry's credentials are never sent on a redirect target's challenge",
                    registry=registry,
                )
            if resp.status_code == 401 and not authed:
                authed = True
                challenge = resp.headers.get("www-authenticate", "")
                if challenge.lower().startswith("bearer"):
                    self._fetch_token(registry, challenge, scope, cred)
                    continue
                if challenge.lower().startswith("basic") and cred is not None:
                    with self._lock:
                        self._basic.add(registry)
                    continue
                raise RegistryError(
                    f"{registry}: authentication required and no credentials configured",
                    registry=registry,
                    status=401,
                )
            if resp.status_code in RETRY_STATUS and attempt < self.limits.retries:
                attempt += 1
                wait = _retry_after(resp.headers.get("retry-after"), self.limits.max_retry_after)
                why = "rate limited (429)" if resp.status_code == 429 else f"registry answered {resp.status_code}"
                self._pause(
                    registry, wait if wait is not None else min(0.5 * 2**attempt, 8.0), why, resp.status_code
                )
                continue
            return resp, body, from_registry

    @contextmanager
    def _open(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> Iterator[urllib3.BaseHTTPResponse]:
        """One request; the reply's connection goes back to its pool only if its body was read to the
        end (urllib3 releases it then), and is closed otherwise — a reply left mid-stream, a cap
        reached, a deadline — so no later request reads this one's leftover bytes."""
        resp = self._http.open(method, url, headers, body)
        try:
            yield resp
        finally:
            resp.close()  # after a complete read urllib3 has already released the connection: a no-op
            resp.release_conn()

    def _send(
        self, method: str, url: str, headers: dict[str, str], max_bytes: int, registry: str
    ) -> tuple[Reply, bytes, str]:
        """One exchange (following same-registry redirects) under the total deadline. Transport
        failures are raised as :class:`_TransportFailure` (the caller may retry); every other way a
        reply can be unusable — a body that does not decode, a URL that does not parse — is a
        RegistryError. Returns (reply, body, the URL that answered)."""
        at = time.monotonic() + self.limits.total_timeout
        try:
            with deadline.within(at, "total timeout exceeded"):
                return self._exchange(method, url, headers, max_bytes, registry, at)
        except _TRANSPORT_FAILURES as exc:
            _drop_locals(exc)
            if _failure_kind(exc) != "InvalidReply":
                raise _TransportFailure() from exc
            self.stats.record(registry, "InvalidReply", True)
            raise RegistryError(f"{registry}: {_describe_transport_error(exc)}", registry=registry) from exc

    def _exchange(
        self, method: str, url: str, headers: dict[str, str], max_bytes: int, registry: str, at: float
    ) -> tuple[Reply, bytes, str]:
        origin = urlsplit(url).netloc
        for _ in range(self.limits.max_redirects + 1):
            # As :meth:`_open`, without a generator's context manager (every request's path, issue 19).
            resp = self._http.open(method, url, headers)
            try:
                status = resp.status
                if status in (301, 302, 303, 307, 308) and "location" in resp.headers:
                    url = urljoin(url, resp.headers["location"])
                    if urlsplit(url).netloc != origin:
                        # Credentials never follow a redirect to another host (blob storage, CDN, ...).
                        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                    if urlsplit(url).scheme == "http" and registry not in self.insecure:
                        raise RegistryError(
                            f"{registry}: redirect to plain HTTP {urlsplit(url).netloc} refused", registry=registry
                        )
                    _read_capped(resp, 64 * 1024, at, url, quiet=True)  # so the connection can be reused
                    continue
                # Every reply is read to its end (a HEAD's is empty; error bodies are capped small): a
                # response closed mid-stream closes its connection, and the next request would then pay
                # for a new one (measured in bench/: every HEAD of a warm scan opened a connection).
                reply = Reply(status, resp.headers)
                if method == "HEAD":
                    _read_capped(resp, 0, at, url, quiet=True)
                    return reply, b"", url
                if status >= 400:
                    body = _read_capped(resp, 64 * 1024, at, url, quiet=True)
                    return reply, body, url  # a 404's error codes tell a hidden repository (NAME_UNKNOWN)
                length = resp.headers.get("content-length")
                if length and length.isdigit() and int(length) > max_bytes:
                    raise LimitExceeded(f"{_short(url)}: {int(length)} bytes exceeds the limit of {max_bytes}")
                return reply, _read_capped(resp, max_bytes, at, url), url
            finally:
                resp.close()  # after a complete read urllib3 has already released the connection
                resp.release_conn()
        raise RegistryError(f"{registry}: too many redirects", registry=registry)

    # -- API --------------------------------------------------------------------------------------

    def _check(self, resp: Reply, registry: str, what: str) -> None:
        code = resp.status_code
        if code == 404:
            raise NotFound(f"{registry}: {what} not found", registry=registry, status=404)
        if code == 401:
            raise RegistryError(f"{registry}: {what}: authentication refused (401)", registry=registry, status=401)
        if code == 403:
            raise RegistryError(f"{registry}: {what}: access denied (403)", registry=registry, status=403)
        if code == 429:
            raise RegistryError(f"{registry}: {what}: rate limited (429) after retries", registry=registry, status=429)
        if code >= 400:
            raise RegistryError(f"{registry}: {what}: registry answered {code}", registry=registry, status=code)
        if code >= 300:
            raise RegistryError(f"{registry}: {what}: unexpected {code}", registry=registry, status=code)

    def _manifest_request(
        self, method: str, ref: ImageReference, reference: str, secrets: tuple[tuple[str, str], ...], max_bytes: int
    ) -> tuple[Reply, bytes]:
        """HEAD or GET ``/v2/<repo>/manifests/<reference>``, checked (404 -> NotFound, ...)."""
        resp, body = self._request(
            method,
            ref.registry,
            f"/v2/{ref.repository}/manifests/{reference}",
            scope=f"repository:{ref.repository}:pull",
            secrets=secrets,
            headers={"Accept": ACCEPT},
            max_bytes=max_bytes,
        )
        self._check(resp, ref.registry, f"manifest {ref.repo}:{reference}")
        return resp, body

    def head_manifest(
        self, ref: ImageReference, reference: str, secrets: tuple[tuple[str, str], ...] = ()
    ) -> Descriptor:
        """tag or digest -> descriptor (digest from ``Docker-Content-Digest``; GET if HEAD lacks it). A tag
        is answered from the repository's tag list under the same rule as :meth:`get_manifest`."""
        if is_digest(reference):
            checkable_digest(reference, f"manifest {ref.repo}@{reference[:80]}")
        else:
            self._raise_if_absent_from_list(ref, reference, secrets)
        resp, _ = self._manifest_request("HEAD", ref, reference, secrets, 0)
        digest = resp.headers.get("docker-content-digest", "")
        media = resp.headers.get("content-type", "").split(";")[0].strip()
        size = resp.headers.get("content-length", "")
        if SHA256_RE.match(digest) and media in MANIFEST_TYPES and size.isdigit():
            if reference.startswith("sha256:") and digest != reference:
                raise ParseError(f"{ref.repo}: registry reports digest {digest} for {reference}")
            if not is_digest(reference) or digest == reference:
                return Descriptor(media, digest, int(size))
        # No usable header, or asked by another algorithm's digest: fetch it and check it.
        return self.get_manifest(ref, reference, secrets).descriptor

    def answer_absent_tags_from_lists(self, repositories: Iterable[tuple[str, str]]) -> None:
        """For these (registry, repository) pairs — where a scan reads many digests — a manifest GET by
        a *tag* first consults the repository's tag list (:meth:`tag_set`: one listing per scan and
        credential set): a tag the list does not hold is answered :class:`NotFound` without a request.
        A cosign ``.sig`` tag or a referrers-schema ``sha256-<hex>`` tag that is absent then costs one
        listing per repository instead of a 404 per digest (issue 19: 600 of a cold scan's 5,001
        requests). The same fact as the 404: the registry says, with the same credentials, the tag is
        not there. A tag that is listed is still fetched (and checked) per digest; a listing refused,
        failed or too long (None), or pods with more than one credential source for the repository,
        leave every lookup to its own request."""
        with self._lock:
            self._listed_repos = self._listed_repos | frozenset(repositories)

    def _absent_from_list(self, ref: ImageReference, tag: str, secrets: tuple[tuple[str, str], ...]) -> bool:
        """Whether ``tag`` may be answered absent from ``ref``'s tag list: the one place that decides it,
        for every lookup of a manifest by tag (:meth:`get_manifest`, :meth:`head_manifest`, and through
        them the ``.sig`` tag, the referrers tag schema, a warm scan's re-list)."""
        with self._lock:
            listed = (ref.registry, ref.repository) in self._listed_repos
        if not listed:
            return False
        if len(self.credentials.candidates(ref.registry, secrets, repository=ref.repository)) > 1:
            # Several sources: a per-tag 404 stands only once none of them was refused (a refused one
            # might see what the others are told is not there); a listing hides which answered, so
            # each tag is asked under that rule instead.
            return False
        tags = self.tag_set(ref, secrets)
        return tags is not None and tag not in tags

    def _raise_if_absent_from_list(self, ref: ImageReference, tag: str, secrets: tuple[tuple[str, str], ...]) -> None:
        if self._absent_from_list(ref, tag, secrets):
            raise NotFound(f"{ref.registry}: manifest {ref.repo}:{tag} not found (not in the repository's "
                           "tag list)", registry=ref.registry, status=404)

    def get_manifest(
        self,
        ref: ImageReference,
        reference: str,
        secrets: tuple[tuple[str, str], ...] = (),
        *,
        max_bytes: int | None = None,
    ) -> Manifest:
        if is_digest(reference):
            checkable_digest(reference, f"manifest {ref.repo}@{reference[:80]}")  # refused before any request
        else:
            self._raise_if_absent_from_list(ref, reference, secrets)
        resp, body = self._manifest_request("GET", ref, reference, secrets, max_bytes or self.limits.manifest_bytes)
        if is_digest(reference):
            # Asked by digest (the running image, a referrer listed by digest): the content must be it,
            # whatever the algorithm; one we cannot check is refused.
            verify_digest(body, reference, f"manifest {ref.repo}@{reference[:80]}")
            return parse_manifest(body, resp.headers.get("content-type", ""), reference)
        claimed = resp.headers.get("docker-content-digest")
        if claimed:
            verify_digest(body, claimed, f"manifest {ref.repo}:{reference} (registry's Docker-Content-Digest)")
        return parse_manifest(body, resp.headers.get("content-type", ""), sha256_digest(body))

    def get_blob(
        self,
        ref: ImageReference,
        desc: Descriptor,
        secrets: tuple[tuple[str, str], ...] = (),
        *,
        max_bytes: int | None = None,
    ) -> bytes:
        limit = max_bytes or self.limits.blob_bytes
        checkable_digest(desc.digest, f"{ref.repo}: blob {desc.digest[:19]}")  # refused before any request
        if desc.size > limit:
            raise LimitExceeded(
                f"{ref.repo}: blob {desc.digest[:19]} of {desc.size} bytes exceeds the limit of {limit}"
            )
        resp, body = self._request(
            "GET",
            ref.registry,
            f"/v2/{ref.repository}/blobs/{desc.digest}",
            scope=f"repository:{ref.repository}:pull",
            secrets=secrets,
            max_bytes=limit,
        )
        self._check(resp, ref.registry, f"blob {desc.digest[:19]}")
        if len(body) != desc.size:
            raise ParseError(f"{ref.repo}: blob {desc.digest[:19]} is {len(body)} bytes, descriptor says {desc.size}")
        verify_digest(body, desc.digest, f"{ref.repo}: blob {desc.digest[:19]}")
        return body

    def uses_referrers_tag_schema(
        self, ref: ImageReference, digest: str, secrets: tuple[tuple[str, str], ...] = ()
    ) -> bool:
        """Whether ``ref``'s registry lacks the referrers API (its referrers then live in tags). Asked
        once per registry and client: the first caller probes with one referrers request for
        ``digest`` while the others wait for its answer. Raises what the probe raises."""
        registry = ref.registry
        with self._lock:
            if registry in self._no_referrers_api:
                return True
            if registry in self._has_referrers_api:
                return False
            lock = self._probe_locks.setdefault(registry, threading.Lock())
        with lock:
            with self._lock:
                if registry in self._no_referrers_api or registry in self._has_referrers_api:
                    return registry in self._no_referrers_api
            self.referrers(ref, digest, secrets=secrets, _probing=True)
            with self._lock:
                return registry in self._no_referrers_api

    def tag_set(
        self, ref: ImageReference, secrets: tuple[tuple[str, str], ...] = (), *, max_pages: int = 5
    ) -> frozenset[str] | None:
        """Every tag of ``ref``'s repository, listed once per client (one scan) and credential set
        however many threads ask; None when the listing is refused, fails or exceeds ``max_pages``
        pages of 1000 tags (the caller then asks per digest). Lets a warm scan see that ``.sig`` /
        referrers tags are still absent without one request per digest. Per credential set: a list
        read with one tenant's credentials never answers for another's."""
        candidates = self.credentials.candidates(ref.registry, secrets, repository=ref.repository)
        key = (ref.registry, ref.repository, candidates)
        with self._lock:
            if key in self._tag_sets:
                return self._tag_sets[key]
            lock = self._tag_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._tag_sets:
                    return self._tag_sets[key]
            found = self._list_tags(ref, secrets, max_pages)
            with self._lock:
                self._tag_sets[key] = found
            return found

    def _list_tags(
        self, ref: ImageReference, secrets: tuple[tuple[str, str], ...], max_pages: int
    ) -> frozenset[str] | None:
        path = f"/v2/{ref.repository}/tags/list?n={_TAGS_PER_PAGE}"
        tags: set[str] = set()
        for _ in range(max_pages):
            try:
                resp, body = self._request(
                    "GET",
                    ref.registry,
                    path,
                    scope=f"repository:{ref.repository}:pull",
                    secrets=secrets,
                    max_bytes=self.limits.manifest_bytes,
                )
                if resp.status_code != 200:
                    return None
                doc = json.loads(body)
            except (RegistryError, ParseError, ValueError, UnicodeDecodeError, RecursionError):
                return None  # (RecursionError: a reply nested too deep for json)
            if not _tag_list_of(doc, ref.repository):
                return None  # not this repository's tag list: never read as "it has no tags"
            page = doc["tags"] if doc["tags"] is not None else []  # null: a repository without tags
            if not isinstance(page, list) or not all(isinstance(t, str) and len(t) <= _TAG_MAX for t in page):
                return None  # (a tag longer than the distribution spec's 128 characters is no tag)
            tags.update(page)
            if len(tags) > max_pages * _TAGS_PER_PAGE:
                # More than was asked for (a registry ignoring ``n``): kept for the whole scan, a 4 MiB page
                # of short tags per repository would be ~270 MiB each; asked per digest instead.
                return None
            nxt = _next_link(resp.headers.get("link"))
            if not nxt:
                return frozenset(tags)
            try:
                parts = urlsplit(nxt)
            except ValueError:  # e.g. "http://[::1/…": an unusable listing, never the lookup's failure
                return None
            if parts.netloc and parts.netloc != registry_api_host(ref.registry):
                return None
            path = parts.path + ("?" + parts.query if parts.query else "")
        return None  # too many tags to be cheaper than asking per digest

    def referrers(
        self,
        ref: ImageReference,
        digest: str,
        artifact_type: str | None = None,
        secrets: tuple[tuple[str, str], ...] = (),
        *,
        _probing: bool = False,
    ) -> tuple[list[Descriptor], str]:
        """Referrers of ``digest``: the OCI 1.1 API, else the ``sha256-<hex>`` tag schema.

        Returns (descriptors, source) where source is "api", "tag" or "none". Filtering by
        artifactType is always re-applied here (the registry may ignore the filter). Whether the
        registry has the API is learnt once per client: concurrent first callers wait for one probe.
        """
        if not _probing:
            registry = ref.registry
            with self._lock:
                known = registry in self._no_referrers_api or registry in self._has_referrers_api
                lock = None if known else self._probe_locks.setdefault(registry, threading.Lock())
            if lock is not None:
                with lock:  # the first caller's own request is the probe; the others wait for it
                    with self._lock:
                        known = registry in self._no_referrers_api or registry in self._has_referrers_api
                    if not known:
                        return self.referrers(ref, digest, artifact_type, secrets, _probing=True)
        if ref.registry in self._no_referrers_api:
            return self._referrers_tag(ref, digest, artifact_type, secrets)
        path = f"/v2/{ref.repository}/referrers/{digest}"
        if artifact_type:
            path += "?" + urlencode({"artifactType": artifact_type})
        entries: list[Descriptor] = []
        source = "api"
        pages = 0
        while True:
            resp, body = self._request(
                "GET",
                ref.registry,
                path,
                scope=f"repository:{ref.repository}:pull",
                secrets=secrets,
                headers={"Accept": OCI_INDEX},
                max_bytes=self.limits.manifest_bytes,
                unknown_if_refused=False,  # a 404 may mean "no API": the tag schema is then asked
            )
            if resp.status_code == 404 and pages == 0:
                if "NAME_UNKNOWN" not in _error_codes(body):
                    with self._lock:
                        self._no_referrers_api.add(ref.registry)
                # else: the repository is unknown to every credential tried (or hidden from them, as
                # GHCR, ECR and Harbor answer): that says nothing of the registry's API, and is never
                # learnt for its other repositories (whose referrers would then be looked for in tags only).
                return self._referrers_tag(ref, digest, artifact_type, secrets)
            self._check(resp, ref.registry, f"referrers of {digest[:19]}")
            if pages == 0:
                with self._lock:
                    self._has_referrers_api.add(ref.registry)
            entries += self._index_entries(body, f"{ref.repo} referrers of {digest[:19]}")
            pages += 1
            nxt = _next_link(resp.headers.get("link"))
            if not nxt or pages >= 20:
                break
            path = (
                nxt
                if nxt.startswith("/")
                else urlsplit(nxt).path + ("?" + urlsplit(nxt).query if urlsplit(nxt).query else "")
            )
        return _filter(entries, artifact_type), source

    def _referrers_tag(
        self, ref: ImageReference, digest: str, artifact_type: str | None, secrets: tuple[tuple[str, str], ...]
    ) -> tuple[list[Descriptor], str]:
        tag = digest.replace(":", "-", 1)[:128]
        try:
            m = self.get_manifest(ref, tag, secrets)
        except NotFound:
            return [], "none"
        if not m.is_index:
            return [], "none"
        return _filter(self._index_entries(m.raw, f"{ref.repo}:{tag}"), artifact_type), "tag"

    def _index_entries(self, raw: bytes, where: str) -> list[Descriptor]:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"{where}: index is not JSON") from exc
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if manifests is None:
            manifests = []
        if not isinstance(manifests, list):
            raise ParseError(f"{where}: `manifests` is not a list")
        if len(manifests) > self.limits.index_entries:
            raise LimitExceeded(f"{where}: {len(manifests)} entries exceed the limit of {self.limits.index_entries}")
        return [parse_descriptor(m, where) for m in manifests]


_UNTRUSTED_TYPES = (None, "", "application/vnd.oci.empty.v1+json")


def _filter(entries: list[Descriptor], artifact_type: str | None) -> list[Descriptor]:
    if not artifact_type:
        return entries
    # Registries and old fallback indexes may report the config's media type (the empty type) as a
    # referrer's artifactType: keep those and decide from the manifest itself (SPEC-NOTES §4/§6).
    return [e for e in entries if e.artifact_type in _UNTRUSTED_TYPES or e.artifact_type.startswith(artifact_type)]


def _error_codes(body: bytes) -> set[str]:
    """The ``errors[].code`` of a distribution error reply (empty when it is not one)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return set()
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return set()
    return {e["code"] for e in errors if isinstance(e, dict) and isinstance(e.get("code"), str)}


def _tag_list_of(doc: Any, repository: str) -> bool:
    """Whether ``doc`` is a tag list page (the distribution spec's ``{"name": ..., "tags": [...]}``) of
    ``repository``: an object whose ``tags`` member is there (null: no tags) and whose ``name``, when
    given, is that repository. Anything else a 200 may carry — another JSON value, an error document,
    an object without ``tags``, another repository's list — says nothing of this repository's tags: read
    as an empty list it would answer every ``.sig`` and referrers tag "absent" (a verified image shown
    ``unsigned``, a bad signature shown ``unsigned`` instead of ``invalid``)."""
    if not isinstance(doc, dict) or "tags" not in doc:
        return False
    return "name" not in doc or doc["name"] == repository


def _next_link(header: str | None) -> str | None:
    if not header:
        return None
    m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', header)
    return m.group(1) if m else None


def _short(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"[:160]


class _BoundedDecoder:
    """Content-Encoding undone with the output bounded. httpx's own decoders inflate each network chunk
    whole (64 KiB of gzip can become 64 MiB) before any cap is checked, so a compression bomb would cost
    memory in every worker at once. We ask for ``identity``; a server that compresses anyway may use
    gzip or deflate, decoded here at most one byte past the cap; anything else is refused."""

    def __init__(self, encoding: str, url: str) -> None:
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip().lower() not in ("", "identity")]
        self._url = url
        if not codings:
            self._z = None
        elif codings in (["gzip"], ["x-gzip"], ["deflate"]):
            self._z = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
        else:
            raise RegistryError(f"{_short(url)}: unsupported Content-Encoding {encoding[:60]!r}")

    def feed(self, data: bytes, room: int) -> bytes:
        """The decoded bytes of ``data``: at most ``room + 1`` (one past the room tells the caller)."""
        if self._z is None:
            return data
        try:
            out = self._z.decompress(data, room + 1)
            while self._z.unconsumed_tail and len(out) <= room:
                out += self._z.decompress(self._z.unconsumed_tail, room + 1 - len(out))
        except zlib.error as exc:
            raise RegistryError(f"{_short(self._url)}: reply body could not be decoded (Content-Encoding): {exc}") \
                from None
        return out


def _read_capped(
    resp: urllib3.BaseHTTPResponse, max_bytes: int, until: float, url: str, *, quiet: bool = False
) -> bytes:
    """The body, decoded, at most ``max_bytes`` (LimitExceeded beyond; ``quiet``: drained raw and cut, for
    HEADs and error replies that are read only so the connection can be reused; a reply cut short is
    closed, never reused, by :meth:`RegistryClient._open`)."""
    decoder = None if quiet else _BoundedDecoder(resp.headers.get("content-encoding", ""), url)
    chunks: list[bytes] = []
    total = 0
    while True:
        raw = resp.read(64 * 1024, decode_content=False)
        if not raw:
            break
        chunk = raw if decoder is None else decoder.feed(raw, max_bytes - total)
        total += len(chunk)
        if total > max_bytes:
            if quiet:
                break
            raise LimitExceeded(f"{_short(url)}: reply exceeds the limit of {max_bytes} bytes")
        if time.monotonic() > until:
            raise RegistryError(f"{_short(url)}: reply too slow (total timeout exceeded)")
        chunks.append(chunk)
        if resp.length_remaining == 0:
            # The declared length is read: http.client has closed the reply and urllib3 released its
            # connection, so the next read could only answer b"" (issue 19: one read call less a reply).
            # A HEAD never gets here (its first read is empty), nor a chunked or unframed reply (None).
            break
    return b"".join(chunks)


def _drop_locals(exc: BaseException) -> None:
    """Clear the finished frames of a transport failure's tracebacks (its chain included): urllib3
    raises a reply broken mid-body through context managers, a reference cycle whose frames hold the
    body read so far (up to the reply limit). Cleared, those bytes go at once, not at the cyclic
    collector's next pass; the traceback keeps its files and lines."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen and len(seen) < 16:
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)  # a frame still running is skipped
        e = e.__cause__ or e.__context__


class _TransportFailure(Exception):
    """Raised from a transport failure (its ``__cause__``) that the caller may retry."""


def _failure_kind(exc: BaseException) -> str:
    """The failure's kind, as the registry statistics count it (the names httpx gave them)."""
    if isinstance(exc, u3.NewConnectionError | u3.SSLError | ssl.SSLError | ConnectionRefusedError):
        return "ConnectError"
    if isinstance(exc, u3.ConnectTimeoutError):
        return "ConnectTimeout"
    if isinstance(exc, u3.ReadTimeoutError | u3.TimeoutError | TimeoutError):
        return "ReadTimeout"
    if isinstance(exc, u3.ProxyError):
        return "ProxyError"
    if isinstance(exc, ValueError | u3.DecodeError | u3.HeaderParsingError | u3.InvalidHeader):
        return "InvalidReply"
    if isinstance(exc, u3.ProtocolError | http.client.HTTPException | OSError):
        return "RemoteProtocolError"
    return type(exc).__name__


def _describe_transport_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    words = deadline.cause(exc)
    if words:
        return f"reply too slow ({words})"
    if isinstance(exc, u3.DecodeError):
        return f"reply body could not be decoded (Content-Encoding): {text[:200]}"
    kind = _failure_kind(exc)
    if kind == "InvalidReply" and re.search(r"header (value|name)", text, re.IGNORECASE):
        # http.client refusing one of our request headers quotes it, and it may be a credential.
        return "a request header could not be sent (not quoted: it may hold a credential)"
    if kind == "InvalidReply":
        return f"invalid URL or header in the reply: {text[:200]}"
    if kind == "ConnectTimeout":
        return "connection timed out"
    if kind == "ReadTimeout":
        return "reply stalled (read timeout)"
    if kind in ("ConnectError", "ProxyError"):
        low = text.lower()
        if isinstance(exc, u3.NameResolutionError) or "name or service not known" in low \
                or "nodename nor servname" in low or "temporary failure in name" in low:
            return "DNS lookup failed"
        if isinstance(exc, u3.SSLError | ssl.SSLError) or "certificate" in low or "ssl" in low or "tls" in low:
            return f"TLS error: {text[:200]}"
        if "refused" in low:
            return "connection refused"
        return f"cannot connect: {text[:200]}"
    if kind == "RemoteProtocolError":
        return f"connection broken mid-reply (truncated body?): {text[:200]}"
    return f"{type(exc).__name__}: {text[:200]}"
