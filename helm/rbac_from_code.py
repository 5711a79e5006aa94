#!/usr/bin/env python3
"""Derive the RBAC the scanner needs from its Kubernetes API calls.

Every API call goes through the official client's typed classes (``CoreV1Api``, ``AppsV1Api``,
``BatchV1Api``, ``CustomObjectsApi``, ...). This module reads the scanner's source with ``ast``, finds
the attribute calls whose name is a method of one of those classes, and asks the installed client
itself what each method does: the request path in the method's generated serializer gives the API
group and the resource (and subresource), the method's prefix gives the verb (``list_`` -> list,
``read_`` -> get, ...; a ``patch_`` sent as a server-side apply, ``_content_type="application/apply-patch+yaml"``,
also needs ``create``: the API server authorizes an apply of a missing object as a create).
``CustomObjectsApi`` methods take the group and plural as arguments; those must be string literals or
module-level string constants so that they can be read here.

No mapping is written by hand, so the Helm chart's rules can be compared with what the code calls
(tests/integration/test_helm_rbac.py).

    python helm/rbac_from_code.py [SOURCE_DIR ...]   # markdown table of the derived permissions
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = (REPO / "scanner",)

# Discovery endpoints every authenticated user may call (system:discovery); they need no rule.
DISCOVERY = {
    "get_api_resources",
    "get_api_group",
    "get_api_versions",
    "get_code",
    "get_service_account_issuer_open_id_configuration",
}

# Method-name prefix -> Kubernetes verb, longest prefix first.
_VERB_PREFIXES = (
    ("delete_collection_", "deletecollection"),
    ("connect_get_", "get"),
    ("connect_head_", "get"),
    ("connect_post_", "create"),
    ("connect_put_", "update"),
    ("connect_patch_", "patch"),
    ("connect_delete_", "delete"),
    ("connect_options_", "get"),
    ("list_", "list"),
    ("read_", "get"),
    ("get_", "get"),  # CustomObjectsApi
    ("create_", "create"),
    ("replace_", "update"),
    ("patch_", "patch"),
    ("delete_", "delete"),
    ("watch_", "watch"),
)

APPLY_PATCH = "application/apply-patch"  # server-side apply's content types (+yaml, +json, +cbor)

_PATH_RE = re.compile(r"""(?:resource_path\s*=\s*|^\s*)['"](/apis?/[^'"]+)['"]""", re.M)


@dataclass(frozen=True, slots=True, order=True)
class Permission:
    group: str  # "" for the core group
    resource: str  # plural, with "/subresource" when one is addressed
    verb: str

    def __str__(self) -> str:
        res = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {res}"


@dataclass(frozen=True, slots=True)
class CallSite:
    path: str
    line: int
    method: str
    cluster_wide: bool = False  # the request spans all namespaces (or a cluster-scoped resource)

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.method}"


@dataclass(slots=True)
class Derivation:
    permissions: dict[Permission, list[CallSite]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, perm: Permission, site: CallSite) -> None:
        self.permissions.setdefault(perm, []).append(site)


@functools.cache
def api_methods() -> dict[str, tuple[str, ...]]:
    """Public method name -> names of the client API classes that define it."""
    import kubernetes.client as kc

    index: dict[str, list[str]] = {}
    for cls_name in dir(kc):
        cls = getattr(kc, cls_name)
        if not (inspect.isclass(cls) and cls_name.endswith("Api") and cls_name != "ApiClient"):
            continue
        for name, _ in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_") or name.endswith(("_with_http_info", "_without_preload_content")):
                continue
            # Only generated endpoints (they come with a serializer or an *_with_http_info twin), not
            # helpers such as close().
            if not (hasattr(cls, f"_{name}_serialize") or hasattr(cls, f"{name}_with_http_info")):
                continue
            index.setdefault(name, []).append(cls_name)
    return {k: tuple(v) for k, v in index.items()}


def _verb(method: str) -> str:
    for prefix, verb in _VERB_PREFIXES:
        if method.startswith(prefix):
            return verb
    raise ValueError(f"no verb known for client method {method}")


@functools.cache
def request_path(cls_name: str, method: str) -> str:
    """The URL path template the client sends for ``cls_name.method``."""
    import kubernetes.client as kc

    cls = getattr(kc, cls_name)
    for candidate in (f"_{method}_serialize", f"{method}_with_http_info", method):
        fn = getattr(cls, candidate, None)
        if fn is None:
            continue
        found = _PATH_RE.findall(inspect.getsource(fn))
        if found:
            return str(found[0])
    raise ValueError(f"cannot find the request path of {cls_name}.{method}")


def permission_for_path(path: str, verb: str) -> Permission:
    """``/apis/apps/v1/namespaces/{namespace}/replicasets/{name}`` + get -> get replicasets.apps."""
    parts = [p for p in path.split("/") if p]
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    if rest[:2] == ["namespaces", "{namespace}"] and len(rest) > 2:
        rest = rest[2:]
    resource = rest[0]
    if len(rest) >= 3 and rest[1] == "{name}":
        resource = f"{resource}/{rest[2]}"
    return Permission(group, resource, verb)


def _module_constants(tree: ast.Module) -> dict[str, str]:
    consts: dict[str, str] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for t in targets:
                if isinstance(t, ast.Name):
                    consts[t.id] = value.value
    return consts


def _strings(node: ast.expr | None, consts: dict[str, str], loops: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The values an argument can take: a literal, a string constant, or a loop variable over a constant
    collection. Empty when it cannot be told from the source."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if isinstance(node, ast.Name):
        if node.id in consts:
            return (consts[node.id],)
        return loops.get(node.id, ())
    if isinstance(node, ast.Attribute) and node.attr in consts:  # e.g. self.PLURAL, a class constant
        return (consts[node.attr],)
    return ()


def _collections(tree: ast.Module) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Module-level dicts / tuples / lists of string literals: name -> (keys or items, dict values)."""
    out: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            keys: list[str] = []
            values: list[str] = []
            if isinstance(value, ast.Dict):
                keys = [k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
                values = [v.value for v in value.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
                if len(keys) != len(value.keys):
                    continue
            elif isinstance(value, ast.Tuple | ast.List):
                keys = [e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if len(keys) != len(value.elts):
                    continue
            else:
                continue
            for t in targets:
                if isinstance(t, ast.Name):
                    out[t.id] = (tuple(keys), tuple(values))
    return out


def _loop_values(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """Loop variables over constant collections: ``for p in PLURALS``, ``for p, kind in KINDS.items()``,
    ``for p in KINDS`` / ``KINDS.keys()`` / ``KINDS.values()``."""
    colls = _collections(tree)
    out: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.For | ast.comprehension):
            continue
        it, target = node.iter, node.target
        method = None
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and not it.args:
            method, it = it.func.attr, it.func.value
        if not (isinstance(it, ast.Name) and it.id in colls):
            continue
        keys, values = colls[it.id]
        if method in (None, "keys") and isinstance(target, ast.Name):
            out[target.id] = keys
        elif method == "values" and isinstance(target, ast.Name):
            out[target.id] = values
        elif method == "items" and isinstance(target, ast.Tuple) and len(target.elts) == 2:
            k, v = target.elts
            if isinstance(k, ast.Name):
                out[k.id] = keys
            if isinstance(v, ast.Name):
                out[v.id] = values
    return out


def _bind(cls_name: str, method: str, call: ast.Call) -> dict[str, ast.expr]:
    import kubernetes.client as kc

    params = [p for p in inspect.signature(getattr(getattr(kc, cls_name), method)).parameters if p != "self"]
    bound: dict[str, ast.expr] = {}
    for name, arg in zip(params, call.args, strict=False):
        bound[name] = arg
    for kw in call.keywords:
        if kw.arg is not None:
            bound[kw.arg] = kw.value
    return bound


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _class_constants(tree: ast.Module) -> dict[str, str]:
    """String constants assigned in class bodies (``GROUP = "kyverno.io"``), by attribute name."""
    consts: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            consts.update(_module_constants(ast.Module(body=node.body, type_ignores=[])))
    return consts


def derive_file(path: Path, text: str, result: Derivation, rel: str | None = None) -> None:
    tree = ast.parse(text, filename=str(path))
    consts = {**_class_constants(tree), **_module_constants(tree)}
    loops = _loop_values(tree)
    methods = api_methods()
    name = rel or str(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "DynamicClient":
            result.problems.append(f"{name}:{node.lineno}: DynamicClient: dynamic API access cannot be derived")
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr == "call_api":
                result.problems.append(f"{name}:{node.lineno}: call_api: raw API access cannot be derived")
            elif attr in methods and attr not in DISCOVERY:
                _record(result, name, node, attr, node, consts, loops)
        # A method passed rather than called, e.g. Watch().stream(api.list_x, ...).
        for arg in node.args:
            if isinstance(arg, ast.Attribute) and arg.attr in methods and arg.attr not in DISCOVERY:
                fake = ast.Call(func=arg, args=node.args[1:], keywords=node.keywords)
                ast.copy_location(fake, node)
                _record(result, name, fake, arg.attr, node, consts, loops, streamed=_is_stream(node))


def _is_stream(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Attribute) and call.func.attr == "stream"


def _record(
    result: Derivation,
    name: str,
    call: ast.Call,
    method: str,
    where: ast.AST,
    consts: dict[str, str],
    loops: dict[str, tuple[str, ...]],
    streamed: bool = False,
) -> None:
    line = getattr(where, "lineno", 0)
    classes = api_methods()[method]
    if len(classes) > 1:
        result.problems.append(f"{name}:{line} {method}: defined by several API classes {classes}; cannot tell which")
        return
    cls_name = classes[0]
    verb = _verb(method)
    if cls_name == "CustomObjectsApi":
        bound = _bind(cls_name, method, call)
        groups = _strings(bound.get("group"), consts, loops)
        plurals = _strings(bound.get("plural", bound.get("resource_plural")), consts, loops)
        if not groups or not plurals:
            result.problems.append(
                f"{name}:{line} {method}: group/plural are not string literals, constants or loop variables "
                "over a constant collection; RBAC cannot be derived"
            )
            return
        sub = next((f"/{x}" for x in ("status", "scale") if method.endswith(f"_{x}")), "")
        perms = [Permission(g, f"{p}{sub}", verb) for g in groups for p in plurals]
        cluster_wide = "namespaced" not in method
    else:
        path = request_path(cls_name, method)
        perms = [permission_for_path(path, verb)]
        bound = {kw.arg: kw.value for kw in call.keywords if kw.arg}
        cluster_wide = "{namespace}" not in path
    site = CallSite(name, line, method, cluster_wide)
    watching = streamed or _is_true(bound.get("watch"))
    if verb == "patch":
        content_type = next((kw.value for kw in call.keywords if kw.arg == "_content_type"), None)
        types = _strings(content_type, consts, loops)
        if content_type is not None and not types:
            result.problems.append(f"{name}:{line} {method}: _content_type is not a string literal or constant; "
                                   "whether the patch is a server-side apply (which also creates) cannot be told")
            return
        if any(t.startswith(APPLY_PATCH) for t in types):
            # A server-side apply creates the object when it does not exist: the API server then also
            # authorizes `create` (a 403 "cannot create resource" otherwise).
            perms = [*perms, *(Permission(p.group, p.resource, "create") for p in perms)]
    for perm in perms:
        if watching and perm.verb == "list":
            # Watch.stream(f) calls f(watch=True): a watch request, which needs only the watch verb.
            result.add(Permission(perm.group, perm.resource, "watch"), site)
        else:
            result.add(perm, site)


def iter_sources(dirs: Iterable[Path]) -> Iterator[Path]:
    for d in dirs:
        if d.is_file():
            yield d
        else:
            yield from sorted(p for p in d.rglob("*.py") if "__pycache__" not in p.parts)


def derive(dirs: Iterable[Path] = DEFAULT_SOURCES) -> Derivation:
    result = Derivation()
    for path in iter_sources(dirs):
        try:
            rel = str(path.relative_to(REPO))
        except ValueError:
            rel = str(path)
        derive_file(path, path.read_text(encoding="utf-8"), result, rel)
    return result


def needs_cluster_wide(result: Derivation, perm: Permission) -> bool:
    """True when no call site of ``perm`` works within one namespace (so a Role cannot grant it)."""
    return all(site.cluster_wide for site in result.permissions[perm])


def markdown(result: Derivation) -> str:
    lines = ["| API group | Resource | Verb | Scope | Called from |", "|---|---|---|---|---|"]
    for perm in sorted(result.permissions):
        sites = ", ".join(sorted({f"`{s.method}` ({s.path}:{s.line})" for s in result.permissions[perm]}))
        group = perm.group or '""'
        scope = "cluster-wide" if needs_cluster_wide(result, perm) else "per namespace"
        lines.append(f"| `{group}` | `{perm.resource}` | {perm.verb} | {scope} | {sites} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or list(DEFAULT_SOURCES)
    result = derive(args)
    print(markdown(result))
    for problem in result.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
