"""Live inventory through the official ``kubernetes`` client.

Every Kubernetes API call sigaudit makes lives in this module (and the policy importers), so that
the Helm chart's ClusterRole can be derived from the code. Calls used here:

- ``CoreV1Api.list_pod_for_all_namespaces`` / ``list_namespaced_pod``   -> pods: list
- ``AppsV1Api.read_namespaced_replica_set``                            -> apps/replicasets: get
- ``BatchV1Api.read_namespaced_job``                                   -> batch/jobs: get
- ``CoreV1Api.read_namespaced_secret`` (only with pull-secret reading)  -> secrets: get

Responses are read raw (``_preload_content=False``) and parsed as JSON, so pods keep the API's
camelCase shape — the same shape as a ``kubectl get pods -o json`` file — and no model objects are
built for 10,000 pods.

Every request goes through the client :func:`load_api_client` makes, whose connection pool is
bounded (:class:`_BoundedPoolManager`), so no call site has to remember it: each request gets a
connect and a per-read timeout when its caller gave none, every socket operation (the header block's
reads included) is cut at the scan's ``--deadline`` and at the request's own total limit (a server
that trickles cannot hold it), and a body is read in chunks with a size cap, the clock checked
between chunks.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, Protocol

from scanner.errors import ConfigError, InventoryError
from scanner.inventory.pods import StaticOwnerResolver, controller_ref, namespace_selected
from scanner.models import Workload
from scanner.registry import deadline as deadlines

log = logging.getLogger(__name__)
MAX_LIST_RESTARTS = 3

# The bounds of every Kubernetes API request, as the registry client's (scanner/registry/client.py
# Limits: 5 s connect, 20 s a read, 60 s a request) but for an API server: a list page of 5,000 pods
# may take a busy server tens of seconds to start, so a read may wait 30 s and a request last 120 s.
# A caller's own timeout (the watch's, the server's TokenReview) is kept; the scan's --deadline, when
# there is one, cuts everything earlier.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
TOTAL_TIMEOUT = 120.0  # one request with its body, a trickle included (a watch: its timeoutSeconds + WATCH_SLACK)
# One reply at most: a page is at most --page-size pods (500 by default, 5,000 at most); a fat pod
# (many containers, env, managedFields) is 10-30 KB of JSON, so a default page of fat pods is a
# few MB and 64 MiB leaves room for 5,000 pods of ~13 KB. Over it the scan fails (lower --page-size)
# rather than hold an attacker's endless body in memory.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024  # the body of a non-2xx reply is only ever a diagnostic: cut there
_CHUNK = 64 * 1024
WATCH_SLACK = 30.0  # seconds past a watch's timeoutSeconds before the stream is cut (the server ends it then)
SCAN_DEADLINE = "scan deadline reached"
# A kubeconfig's credential command (user.exec: aws eks get-token, gke-gcloud-auth-plugin, kubelogin) is
# given this long to print its credential; the scan's --deadline cuts it earlier.
EXEC_TIMEOUT = 60.0


class ResponseTooLarge(ValueError):
    """A Kubernetes API reply over :data:`MAX_RESPONSE_BYTES`."""


class _BoundedResponse:
    """The raw urllib3 reply of one request, read under the request's deadlines: ``data`` reads the
    body in chunks, capped, with the clock checked between chunks; ``stream`` (a watch) likewise per
    chunk. Everything the kubernetes client and sigaudit use of a reply, nothing more."""

    def __init__(self, resp: Any, scopes: tuple[tuple[float | None, str], ...]) -> None:
        self._r = resp
        self._scopes = scopes
        self._body: bytes | None = None
        self.status = resp.status
        self.reason = resp.reason
        self.headers = resp.headers

    def getheaders(self) -> Any:
        return self._r.headers

    def getheader(self, name: str, default: Any = None) -> Any:
        return self._r.headers.get(name, default)

    def _within(self) -> ExitStack:
        stack = ExitStack()
        for at, words in self._scopes:
            stack.enter_context(deadlines.within(at, words))
        return stack

    def _check(self) -> None:
        words = deadlines.expired()
        if words:
            from scanner.registry.transport import DeadlineTimeout

            raise DeadlineTimeout(words)

    @property
    def data(self) -> bytes:
        if self._body is None:
            self._body = self._read_all()
        return self._body

    def read(self, amt: int | None = None, **_: Any) -> bytes:
        return self.data if amt is None else self._read_some(amt)

    @contextmanager
    def _closed_on_failure(self) -> Iterator[None]:
        """A reply left mid-body is closed (its connection never goes back to the pool), and a failure
        met after the request's deadline passed is that deadline's (:func:`_deadline_words`)."""
        try:
            yield
        except BaseException as exc:
            self._r.close()
            cut = _deadline_words(exc)
            if cut is exc:
                raise
            raise cut from exc

    def _read_some(self, amt: int) -> bytes:
        with self._within():
            self._check()
            return bytes(self._r.read(min(amt, _CHUNK)))

    def _read_all(self) -> bytes:
        ok = 200 <= int(self.status or 0) <= 299
        cap = MAX_RESPONSE_BYTES if ok else MAX_ERROR_BODY_BYTES
        body = bytearray()
        with self._closed_on_failure():
            with self._within():
                while True:
                    self._check()
                    chunk = self._r.read(_CHUNK)
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > cap:
                        if ok:
                            raise ResponseTooLarge(
                                f"the reply is over the {cap // (1024 * 1024)} MiB limit on one Kubernetes API "
                                "response (a list page: lower --page-size)")
                        del body[cap:]  # a diagnostic only: the start of it is enough
                        self._r.close()
                        break
                    self._check()
        self._r.release_conn()
        return bytes(body)

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        """A watch's events as they come, each step under the request's deadlines and at most
        :data:`_CHUNK` bytes: a chunked reply's chunks (a chunk announced as a terabyte is read a piece
        at a time), else whatever the socket has (``read1``: never a wait for a full buffer, never the
        body to its end — urllib3's ``stream(None)`` reads it whole). Only whole lines are handed on
        (the client's ``iter_resp_lines`` searches its whole buffer for a newline at every step: a long
        line in small pieces would cost quadratic time); a line over :data:`MAX_RESPONSE_BYTES` fails
        the stream (:class:`ResponseTooLarge`) rather than grow for ever."""
        step = _CHUNK if amt is None else max(1, min(amt, _CHUNK))
        if self._r.chunked:
            pieces: Iterator[bytes] = self._r.stream(step, decode_content=decode_content)
        else:
            pieces = iter(lambda: bytes(self._r.read1(step, decode_content=decode_content)), b"")
        pending = bytearray()  # the bytes after the last newline
        with self._closed_on_failure():
            while True:
                with self._within():
                    self._check()
                    piece = next(pieces, None)
                if piece is None:
                    break
                newline = piece.rfind(b"\n")
                if newline < 0:
                    pending += piece
                    if len(pending) > MAX_RESPONSE_BYTES:
                        raise ResponseTooLarge(
                            f"a watch event is over the {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB limit on one "
                            "Kubernetes API response")
                    continue
                line = bytes(pending) + piece[:newline + 1]
                pending = bytearray(piece[newline + 1:])
                yield line
        if pending:
            yield bytes(pending)

    @property
    def connection(self) -> Any:
        """The connection: ``Watch.stop`` shuts its socket down to end a read blocked in a watch."""
        return self._r.connection

    def release_conn(self) -> None:
        self._r.release_conn()

    def close(self) -> None:
        self._r.close()


def _deadline_words(exc: BaseException) -> BaseException:
    """What to raise for ``exc`` met reading a reply: the words of a deadline that has passed (the read
    was cut by it), else ``exc`` itself."""
    if isinstance(exc, deadlines.DeadlineExceeded | ResponseTooLarge):
        return exc
    words = deadlines.expired() or deadlines.cause(exc)
    if words:
        from scanner.registry.transport import DeadlineTimeout

        return DeadlineTimeout(words)
    return exc


class _BoundedPoolManager:
    """The kubernetes client's connection pool with the bounds of every request (module docstring):
    the client calls ``request`` and ``clear`` only."""

    def __init__(self, inner: Any, deadline_at: float | None) -> None:
        import urllib3

        from scanner.registry.transport import DEADLINE_POOLS

        if type(inner) in (urllib3.PoolManager, urllib3.ProxyManager):  # (a SOCKS proxy keeps its own pools:
            inner.pool_classes_by_scheme = DEADLINE_POOLS               # its requests get the checks between chunks)
        self._inner = inner
        self._deadline = deadline_at

    def request(self, method: str, url: str, **kw: Any) -> _BoundedResponse:
        import urllib3

        timeout = kw.get("timeout")
        if timeout is None:
            timeout = kw["timeout"] = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
        given = timeout.total if isinstance(timeout, urllib3.Timeout) else None
        total = float(given) if isinstance(given, int | float) and given > 0 else TOTAL_TIMEOUT
        # A watch stream is long by design: the server ends it after the timeoutSeconds it was asked for,
        # so that, and WATCH_SLACK, is its total (a server that ignores it and trickles a byte a read
        # timeout would hold it for ever); a watch that names none gets the total of any request.
        watch_for = _watch_seconds(url)
        if watch_for is not None:
            total = watch_for + WATCH_SLACK
        scopes = (
            (self._deadline, f"{SCAN_DEADLINE} while the Kubernetes API was read"),
            (time.monotonic() + total, f"no complete reply from the Kubernetes API within {total:g} s"),
        )
        stack = ExitStack()
        with stack:
            for at, words in scopes:
                stack.enter_context(deadlines.within(at, words))
            try:
                resp = self._inner.request(method, url, **kw)
            except Exception as exc:
                passed = deadlines.expired()
                if passed and deadlines.cause(exc) is None:
                    from scanner.registry.transport import DeadlineTimeout

                    raise DeadlineTimeout(passed) from exc
                raise
        return _BoundedResponse(resp, scopes)

    def clear(self) -> None:
        self._inner.clear()


def _watch_seconds(url: str) -> float | None:
    """The ``timeoutSeconds`` of a watch request (``watch=true``), or None (not a watch, or none named)."""
    from urllib.parse import parse_qs

    query = {k.lower(): v for k, v in parse_qs(url.partition("?")[2]).items()}
    if "true" not in [v.lower() for v in query.get("watch", [])]:
        return None
    try:
        return max(0.0, float(query.get("timeoutseconds", [""])[0]))
    except ValueError:
        return None


class _BoundedPopen(subprocess.Popen):  # type: ignore[type-arg]
    """The process of a kubeconfig's credential command (``user.exec``, an auth-provider's ``cmd-path``):
    the client waits for it with ``communicate()`` and no timeout, so a plugin that never ends (a login
    waiting for a browser, a stuck cloud CLI) held ``load_api_client`` — and the scan, past its
    ``--deadline`` — for ever. Here the wait is at most :data:`EXEC_TIMEOUT`, cut at the calling
    thread's deadline; then the plugin is killed and the client told in words that never quote its
    arguments (they can hold a client secret: the client logs what it is told)."""

    def communicate(self, input: Any = None, timeout: float | None = None) -> Any:
        left = deadlines.remaining()
        limit = EXEC_TIMEOUT if left is None else max(0.0, min(EXEC_TIMEOUT, left))
        if timeout is not None:
            limit = min(limit, timeout)
        try:
            return super().communicate(input, limit)
        except subprocess.TimeoutExpired:
            self.kill()
            with suppress(subprocess.TimeoutExpired):  # a descendant still holding the pipes is left to them
                super().communicate(None, 1.0)
            program = os.path.basename(str(self.args[0] if isinstance(self.args, list | tuple) else self.args))
            from kubernetes.config.config_exception import ConfigException

            raise ConfigException(
                f"the kubeconfig's credential command {program[:64]!r} did not finish within {limit:.1f} s; "
                "killed") from None


class _BoundedSubprocess:
    """The ``subprocess`` module as the client's credential-command code sees it: Popen bounded."""

    Popen = _BoundedPopen

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def _bound_credential_commands() -> None:
    from kubernetes.config import exec_provider, kube_config

    for module in (exec_provider, kube_config):
        if getattr(module, "subprocess", None) is subprocess:
            setattr(module, "subprocess", _BoundedSubprocess())  # noqa: B010 - the module has no stub for it


def _bounded(api_client: Any, deadline_at: float | None) -> Any:
    rest = api_client.rest_client
    rest.pool_manager = _BoundedPoolManager(rest.pool_manager, deadline_at)
    cfg = api_client.configuration
    refresh = getattr(cfg, "refresh_api_key_hook", None)
    if refresh is not None:  # an expired exec credential is fetched again before a request: the scan's too
        def bounded_refresh(conf: Any) -> Any:
            with deadlines.within(deadline_at, f"{SCAN_DEADLINE} while the kubeconfig's credential command ran"):
                return refresh(conf)

        cfg.refresh_api_key_hook = bounded_refresh
    return api_client


def load_api_client(
    kubeconfig: str | None = None, context: str | None = None, *, deadline: float | None = None
) -> Any:
    """In-cluster config when running in a pod (and no kubeconfig was named), else kubeconfig.

    Every request of the client is bounded (module docstring); ``deadline`` (a ``time.monotonic()``
    value: the scan's) cuts them all there.

    A kubeconfig that cannot be read or parsed is the user's input to fix: a ConfigError (exit 2)
    naming the file. Its lines are never quoted (a kubeconfig holds tokens and keys): a YAML error
    is reported by position only, any other parse failure by its type. A failing in-cluster config
    (no service account token) is the environment's: an InventoryError (exit 3)."""

    _bound_credential_commands()
    with deadlines.within(deadline, f"{SCAN_DEADLINE} while the kubeconfig's credential command ran"):
        return _load_api_client(kubeconfig, context, deadline)


def _load_api_client(kubeconfig: str | None, context: str | None, deadline: float | None) -> Any:
    from kubernetes import client, config

    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return _bounded(client.ApiClient(cfg), deadline)
        except Exception as exc:
            raise InventoryError(f"cannot load the in-cluster Kubernetes configuration: {_why(exc)}") from exc
    try:
        api = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    except Exception as exc:  # the loader raises whatever its YAML walk hits (YAMLError, TypeError, ...)
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ConfigError(f"cannot load the kubeconfig: {_why(exc)}", source=where, field="--kubeconfig") from exc
    return _bounded(api, deadline)


def _why(exc: Exception) -> str:
    """What went wrong loading a Kubernetes configuration, without echoing the file's content."""
    import yaml
    from kubernetes.config.config_exception import ConfigException

    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"not valid YAML{at}"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, ConfigException):  # the client's own words: keys and entry names, not values
        first = (str(exc).strip().splitlines() or [""])[0]
        return first[:200]
    return f"malformed ({type(exc).__name__}: not the shape of a kubeconfig)"


def _api_error(exc: Exception, what: str) -> InventoryError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        if exc.status == 403:
            return InventoryError(f"forbidden: {what} (the service account lacks this RBAC permission)")
        if exc.status == 401:
            return InventoryError(f"unauthorized: {what} (credentials rejected by the API server)")
        return InventoryError(f"{what}: API server answered {exc.status} {exc.reason}")
    why = deadlines.cause(exc)
    if why is not None:  # the words of the deadline; never the request (its headers hold the token)
        return InventoryError(f"{what}: {why}; nothing more was read")
    if isinstance(exc, ResponseTooLarge):
        return InventoryError(f"{what}: {exc}")
    return InventoryError(f"{what}: API server unreachable ({type(exc).__name__}: {exc})")


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Around one Kubernetes API call: a failure to exchange with the API server (refused, reset, cut at
    a deadline, a reply over its limit) becomes the :class:`InventoryError` naming ``what`` (never the
    request: its headers hold the token). An ``ApiException`` (the server's answer, for the caller to
    judge), an ``InventoryError`` and anything else pass through unchanged."""
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except InventoryError:
        raise
    except Exception as exc:
        if not isinstance(exc, ApiException) and _transport_error(exc):
            raise _api_error(exc, what) from exc
        raise


def _transport_error(exc: BaseException) -> bool:
    """A failure to exchange with the API server (refused, reset, timed out, cut at a deadline, a reply
    over its limit): urllib3's errors do not share a base with OSError."""
    return isinstance(exc, OSError | ValueError) or type(exc).__module__.startswith("urllib3")


def _load(resp: Any) -> dict[str, Any]:
    data = json.loads(resp.data)
    if not isinstance(data, dict):
        raise InventoryError("API server returned a non-object")
    return data


def _page(page: Mapping[str, Any], what: str) -> tuple[list[dict[str, Any]], str | None]:
    """The pods and the continue token of one list page, or InventoryError: a page whose items are not
    a list of objects (each with an object for metadata) is never read as fewer pods."""
    meta = page.get("metadata")
    items = page.get("items")
    token = meta.get("continue") if isinstance(meta, dict) else None
    if meta is not None and not isinstance(meta, dict):
        raise InventoryError(f"{what}: the API server's list has a metadata that is not an object")
    if "items" not in page:  # the API server's lists always carry it (null when empty): a Status, an empty {}
        raise InventoryError(f"{what}: the API server's reply is not a list (no items)")
    if items is not None and not isinstance(items, list):
        raise InventoryError(f"{what}: the API server's list has items that are not a list")
    if not all(isinstance(i, dict) and isinstance(i.get("metadata", {}), dict) for i in items or ()):
        raise InventoryError(f"{what}: the API server's list has items that are not pods (each an object "
                             "with an object for metadata)")
    if token is not None and not isinstance(token, str):
        raise InventoryError(f"{what}: the API server's list has a continue token that is not a string")
    return items or [], token or None


def iter_pods(
    *,
    api_client: Any = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    namespaces: Sequence[str] = (),
    exclude_namespaces: Sequence[str] = (),
    page_size: int = 500,
    problems: list[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield pods page by page (``limit``/``continue``).

    A 410 Gone on a ``continue`` token (the snapshot was compacted) restarts the list; pods already
    yielded are skipped by uid, so each pod is seen exactly once. A 403 on one named namespace is
    recorded in ``problems`` (the scan becomes partial); a 403 cluster-wide raises InventoryError.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CoreV1Api(api_client or load_api_client(kubeconfig, context))
    exact = [n for n in namespaces if not any(ch in n for ch in "*?[")]
    scoped = bool(namespaces) and len(exact) == len(namespaces)
    targets: list[str | None] = list(dict.fromkeys(exact)) if scoped else [None]
    seen: set[str] = set()
    for ns in targets:
        restarts = 0
        token: str | None = None
        tokens: set[str] = set()  # the continue tokens of this list so far
        what = f"list pods in namespace {ns}" if ns else "list pods in all namespaces"
        while True:
            try:
                if ns is None:
                    resp = api.list_pod_for_all_namespaces(limit=page_size, _continue=token, _preload_content=False)
                else:
                    resp = api.list_namespaced_pod(ns, limit=page_size, _continue=token, _preload_content=False)
                page = _load(resp)
            except ApiException as exc:
                if exc.status == 410 and token is not None and restarts < MAX_LIST_RESTARTS:
                    restarts += 1
                    log.warning("pod list continue token expired (410 Gone); restarting the list")
                    token, tokens = None, set()
                    continue
                err = _api_error(exc, what)
                if ns is not None and exc.status == 403 and problems is not None:
                    problems.append(str(err))
                    break
                raise err from exc
            except Exception as exc:
                if _transport_error(exc):
                        raise _api_error(exc, what) from exc
                raise
            items, token = _page(page, what)
            for pod in items:
                meta = pod.get("metadata") or {}
                uid = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
                if uid in seen:
                    continue
                if not namespace_selected(str(meta.get("namespace", "")), namespaces, exclude_namespaces):
                    continue
                seen.add(uid)
                yield pod
            if not token:
                break
            if token in tokens:  # a server handing back a token twice would page for ever (no --deadline)
                raise InventoryError(f"{what}: the API server sent a continue token it had sent before; "
                                     "the list would never end")
            tokens.add(token)


class KubeOwnerResolver:
    """Walk ReplicaSet -> Deployment and Job -> CronJob with GET calls, cached per scan.

    Without permission (403) or when the owner is gone (404), falls back to the static rules of
    pod-list files and remembers the problem once.
    """

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._apps = client.AppsV1Api(api_client)
        self._batch = client.BatchV1Api(api_client)
        self._cache: dict[tuple[str, str, str], Workload | None] = {}
        self._static = StaticOwnerResolver()
        self.problems: list[str] = []

    def _parent(self, namespace: str, kind: str, name: str) -> Workload | None:
        key = (namespace, kind, name)
        if key in self._cache:
            return self._cache[key]
        from kubernetes.client.exceptions import ApiException

        try:
            with api_errors(f"get {kind.lower()} {namespace}/{name}"):
                if kind == "ReplicaSet":
                    obj = _load(self._apps.read_namespaced_replica_set(name, namespace, _preload_content=False))
                else:
                    obj = _load(self._batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 403:
                msg = f"forbidden: get {kind.lower()}s in {namespace}; owners of its pods not walked"
                if msg not in self.problems:
                    self.problems.append(msg)
            self._cache[key] = None
            return None
        ref = controller_ref(obj.get("metadata") or {})
        result = Workload(str(ref.get("kind")), str(ref.get("name"))) if ref else Workload(kind, name)
        self._cache[key] = result
        return result

    def workload(self, namespace: str, pod: Mapping[str, Any]) -> Workload:
        meta = pod.get("metadata") or {}
        ref = controller_ref(meta)
        if ref is not None and ref.get("kind") in ("ReplicaSet", "Job"):
            parent = self._parent(namespace, str(ref["kind"]), str(ref.get("name", "")))
            if parent is not None:
                return parent
        return self._static.workload(namespace, pod)


class PullSecretSink(Protocol):
    """Where read pull secrets go (the registry credential store), kept per (namespace, name)."""

    def add_pull_secret(self, namespace: str, name: str, dockerconfigjson: bytes) -> None: ...


def with_pull_secrets(
    pods: Iterable[dict[str, Any]], api_client: Any, sink: PullSecretSink, problems: list[str]
) -> Iterator[dict[str, Any]]:
    """Pass the pods through, reading each imagePullSecret they name (once) into ``sink`` under its
    own namespace and name before the pod that names it is yielded. The sink keeps them apart: a
    secret is only ever used for the pods of its namespace that name it."""
    seen: set[tuple[str, str]] = set()
    for pod in pods:
        ns = str((pod.get("metadata") or {}).get("namespace") or "default")
        for s in (pod.get("spec") or {}).get("imagePullSecrets") or []:
            name = s.get("name") if isinstance(s, Mapping) else None
            if name and (ns, str(name)) not in seen:
                seen.add((ns, str(name)))
                data = read_pull_secret(api_client, ns, str(name), problems)
                if data:
                    sink.add_pull_secret(ns, str(name), data)
        yield pod


def read_pull_secret(
    api_client: Any, namespace: str, name: str, problems: list[str] | None = None
) -> bytes | None:
    """The ``.dockerconfigjson`` (or legacy ``.dockercfg``) of an imagePullSecret, or None.

    A forbidden read is a problem of the scan (it becomes partial): images behind that secret may
    then fail to authenticate, and the reader must know why."""
    import base64

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        with api_errors(f"get secret {namespace}/{name} (an imagePullSecret)"):
            obj = _load(client.CoreV1Api(api_client).read_namespaced_secret(name, namespace, _preload_content=False))
    except ApiException as exc:
        log.warning("cannot read pull secret %s/%s: %s %s", namespace, name, exc.status, exc.reason)
        if problems is not None and exc.status in (401, 403):
            problems.append(
                f"forbidden: get secrets in {namespace} (imagePullSecret {name}); "
                "registry credentials from it were not used"
            )
        return None
    data = obj.get("data") or {}
    for key in (".dockerconfigjson", ".dockercfg"):
        if key in data:
            try:
                raw = base64.b64decode(data[key])
            except ValueError:
                return None
            if key == ".dockercfg":  # legacy format: the auths map itself
                return b'{"auths":' + raw + b"}"
            return raw
    return None
