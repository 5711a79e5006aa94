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
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from scanner.errors import ConfigError, InventoryError
from scanner.inventory.pods import StaticOwnerResolver, controller_ref, namespace_selected
from scanner.models import Workload

log = logging.getLogger(__name__)
MAX_LIST_RESTARTS = 3


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """In-cluster config when running in a pod (and no kubeconfig was named), else kubeconfig.

    A kubeconfig that cannot be read or parsed is the user's input to fix: a ConfigError (exit 2)
    naming the file. Its lines are never quoted (a kubeconfig holds tokens and keys): a YAML error
    is reported by position only, any other parse failure by its type. A failing in-cluster config
    (no service account token) is the environment's: an InventoryError (exit 3)."""
    from kubernetes import client, config

    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return client.ApiClient(cfg)
        except Exception as exc:
            raise InventoryError(f"cannot load the in-cluster Kubernetes configuration: {_why(exc)}") from exc
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    except Exception as exc:  # the loader raises whatever its YAML walk hits (YAMLError, TypeError, ...)
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ConfigError(f"cannot load the kubeconfig: {_why(exc)}", source=where, field="--kubeconfig") from exc


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
    return InventoryError(f"{what}: API server unreachable ({type(exc).__name__}: {exc})")


def _load(resp: Any) -> dict[str, Any]:
    data = json.loads(resp.data)
    if not isinstance(data, dict):
        raise InventoryError("API server returned a non-object")
    return data


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
                    token = None
                    continue
                what = f"list pods in namespace {ns}" if ns else "list pods in all namespaces"
                err = _api_error(exc, what)
                if ns is not None and exc.status == 403 and problems is not None:
                    problems.append(str(err))
                    break
                raise err from exc
            except (OSError, ValueError) as exc:
                raise _api_error(exc, "list pods") from exc
            except Exception as exc:  # urllib3 errors do not share a base with OSError
                if type(exc).__module__.startswith("urllib3"):
                    raise _api_error(exc, "list pods") from exc
                raise
            for pod in page.get("items") or []:
                if not isinstance(pod, dict):
                    continue
                meta = pod.get("metadata") or {}
                uid = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
                if uid in seen:
                    continue
                if not namespace_selected(str(meta.get("namespace", "")), namespaces, exclude_namespaces):
                    continue
                seen.add(uid)
                yield pod
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                break


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
