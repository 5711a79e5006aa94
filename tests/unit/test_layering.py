"""The layering of ``scanner/`` (ARCHITECTURE.md), read from the source with ``ast``: every import,
at module level and inside functions (a lazy import is still a dependency), and in the faces every
string naming another face (a command table that imports by name is still a dependency).

* Faces (the commands) never import each other, except the two edges listed, and nothing that is
  not a face imports a face: there is one scan use case (``scanner.scan``) and faces only call it.
* ``scanner.verify`` and ``scanner.policy`` decide trust from bytes, trust material and a clock: they
  do no network, cluster or database I/O. The imports that break this today are listed below as
  known exceptions (issue #18); the lists may only shrink: a new edge fails, and so does an entry
  that no longer exists (delete it).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("scanner",)

FACES = frozenset({"scanner.cli", "scanner.server", "scanner.scheduler"})
ALLOWED_FACE_EDGES = {
    # `sigaudit serve` is registered in the CLI's lazy command table by module name, so that
    # `sigaudit scan` does not pay for Starlette at start-up; the CLI only starts it.
    ("scanner.cli", "scanner.server"),
    # The serve process hosts the scheduler: its cron job and POST /api/scans start scans through
    # the same ScanRunner (one scan at a time), which calls the use case.
    ("scanner.server", "scanner.scheduler"),
}
USE_CASE = "scanner.scan"

PURE = ("scanner.verify", "scanner.policy")
# The cloud SDKs (KMS clients, their credential chains and transports) are I/O too: scanner/sources/kms.py
# makes their calls. A dynamic import (importlib.import_module, __import__) counts as an import of the name
# it is given, and one whose name the source does not spell is DYNAMIC: it cannot be checked, so it is refused.
DYNAMIC = "<dynamic import>"
CLOUD_SDKS = ("boto3", "botocore", "google.cloud", "google.api_core", "google.auth", "google.oauth2", "azure",
              "grpc", "hvac", "msal")
IO = ("httpx", "kubernetes", "urllib3", "requests", "socket", "scanner.registry", "scanner.store",
      "scanner.inventory.kube", "scanner.inventory.pods", "scanner.pipeline", "scanner.scan", *sorted(FACES),
      *CLOUD_SDKS, DYNAMIC)
# Issue #18: I/O inside the trust layers moved to the edge (scanner/sources/: Grafeas, Vault transit, key
# URLs, CRL/OCSP, the Kubernetes reads of --policy-from KIND:cluster), injected as protocols the trust layers
# declare (verify.base.HttpGet and Fetcher, policy.cluster.ClusterReader). Empty, and it stays so.
KNOWN_IO_EXCEPTIONS: set[tuple[str, str]] = set()
EDGE = "scanner.sources"
# Issue #18: verify never imports policy (verifier kinds carry their Specs in scanner/verify/kinds/,
# notation's trust policy and trust store are read by scanner/verify/notation_trust.py). Empty, and it
# stays so: policy builds verifiers (policy -> verify), never the other way round.
KNOWN_VERIFY_TO_POLICY: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    """Every module by the name it is imported as: scanner/reports and scanner/migrations are links to the
    repository's reports/ and migrations/ (issue 18), followed as the wheel's build follows them."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for folder, _dirs, files in os.walk(ROOT / package, followlinks=True):
            for file in sorted(f for f in files if f.endswith(".py")):
                path = Path(folder, file)
                parts = path.relative_to(ROOT).with_suffix("").parts
                out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return dict(sorted(out.items()))


MODULES = _modules()


def _is_dynamic_import(func: ast.expr) -> bool:
    """``importlib.import_module(...)``, ``import_module(...)``, ``__import__(...)``,
    ``importlib.__import__(...)``."""
    if isinstance(func, ast.Name):
        return func.id in ("import_module", "__import__")
    return isinstance(func, ast.Attribute) and func.attr in ("import_module", "__import__")


def _imports(name: str, path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in MODULES else target
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield arg.value
            else:
                yield DYNAMIC
        elif name in FACES and isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in FACES and node.value != name:
                yield node.value


def _edges() -> set[tuple[str, str]]:
    return {(name, target) for name, path in MODULES.items() for target in _imports(name, path)}


EDGES = _edges()


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_graph_sees_lazy_imports() -> None:
    # function-level imports and the CLI's command table are seen (else the rules below prove nothing)
    assert ("scanner.cli", "scanner.scan") in EDGES
    assert ("scanner.cli", "scanner.server") in EDGES
    assert ("scanner.scheduler", "scanner.scan") in EDGES
    assert ("scanner.scan", "scanner.pipeline") in EDGES
    assert ("scanner.sources.kube", "kubernetes") in {(a, b.split(".")[0]) for a, b in EDGES}
    assert ("scanner.policy.imports", "scanner.sources.kube") in EDGES  # the default reader, imported lazily


def test_the_graph_sees_dynamic_imports(tmp_path: Path) -> None:
    # an SDK loaded by name is still a dependency (issue #18: verify/kms.py once loaded boto3, google.cloud.kms
    # and azure.keyvault.keys with importlib, unseen by this test)
    sample = tmp_path / "sample.py"
    sample.write_text("import importlib\nfrom importlib import import_module\n"
                      "def f(n):\n    importlib.import_module('boto3')\n    import_module('google.cloud.kms')\n"
                      "    __import__('azure.keyvault.keys')\n    importlib.import_module(n)\n")
    assert set(_imports("scanner.verify.sample", sample)) == {
        "importlib", "boto3", "google.cloud.kms", "azure.keyvault.keys", DYNAMIC}
    assert ("scanner.sources.kms", "boto3") in EDGES  # the edge makes the SDK calls


def test_faces_do_not_import_faces() -> None:
    face_edges = {(a, b) for a, b in EDGES if a in FACES and b in FACES and a != b}
    assert face_edges <= ALLOWED_FACE_EDGES, face_edges - ALLOWED_FACE_EDGES
    assert ALLOWED_FACE_EDGES <= face_edges, f"no longer needed, remove: {ALLOWED_FACE_EDGES - face_edges}"


def test_only_faces_import_faces() -> None:
    assert not {(a, b) for a, b in EDGES if b in FACES and a not in FACES}


def test_one_use_case_that_knows_no_face_and_no_command_line() -> None:
    deps = {b for a, b in EDGES if a == USE_CASE}
    assert not {d for d in deps if d in FACES or _under(d, "click") or _under(d, "scanner.options")}, deps
    # the faces run scans through the use case, not by wiring the pipeline themselves
    for face in FACES:
        assert (face, USE_CASE) in EDGES, face
        wired = {b for a, b in EDGES if a == face for stage in ("scanner.pipeline", "scanner.registry",
                                                                "scanner.inventory") if _under(b, stage)}
        assert not wired, (face, wired)


def test_verify_and_policy_do_no_io() -> None:
    found = {
        (a, io)
        for a, b in EDGES
        if any(_under(a, p) for p in PURE)
        for io in IO
        if _under(b, io)
    }
    assert found <= KNOWN_IO_EXCEPTIONS, f"new I/O in a trust layer: {sorted(found - KNOWN_IO_EXCEPTIONS)}"
    assert KNOWN_IO_EXCEPTIONS <= found, f"fixed, remove from the list: {sorted(KNOWN_IO_EXCEPTIONS - found)}"


def test_the_verify_policy_cycle_only_shrinks() -> None:
    back = {(a, b) for a, b in EDGES if _under(a, "scanner.verify") and _under(b, "scanner.policy")}
    assert back <= KNOWN_VERIFY_TO_POLICY, f"new verify -> policy import: {sorted(back - KNOWN_VERIFY_TO_POLICY)}"
    assert KNOWN_VERIFY_TO_POLICY <= back, f"fixed, remove from the list: {sorted(KNOWN_VERIFY_TO_POLICY - back)}"


def _module_level_imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_the_trust_layers_take_the_edge_only_as_a_lazy_default() -> None:
    # A trust layer given no fetcher takes the edge's (as python-tuf's Updater takes RequestsFetcher), inside
    # the function that needs it: importing scanner.verify or scanner.policy loads no HTTP or cluster client.
    eager = {
        (name, target)
        for name, path in MODULES.items()
        if any(_under(name, p) for p in PURE)
        for target in _module_level_imports(path)
        if _under(target, EDGE)
    }
    assert not eager, eager


def test_importing_the_trust_layers_loads_no_network_or_cluster_client() -> None:
    import subprocess
    import sys

    pure = sorted(name for name in MODULES if any(_under(name, p) for p in PURE))
    code = (f"import sys, importlib\nfor m in {pure!r}: importlib.import_module(m)\n"
            # httpx._main is scanner/__init__'s stand-in; sigstore-python (cosign_keyless) brings requests itself
            "print(sorted(m for m in sys.modules if m in ('httpx', 'kubernetes')"
            " or m.startswith(('scanner.sources', 'scanner.registry', 'scanner.inventory.kube'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout


# Issue #18: the trust layers never write to the file system. Trust material an importer derives goes to
# the verifiers as bytes (scanner.verify.sources.virtual / virtual_tree), never through a temp file.
WRITING_METHODS = frozenset({"write_bytes", "write_text", "mkdir", "touch", "symlink_to", "hardlink_to", "unlink",
                             "rmdir"})  # pathlib's, and names no read-only call in the trust layers uses
WRITING_OS = frozenset({"open", "makedirs", "mkdir", "remove", "rename", "replace", "unlink", "rmdir", "symlink",
                        "link", "write", "truncate", "mkfifo"})
WRITING_MODULES = ("tempfile", "shutil")


def _is_read_mode(call: ast.Call, positional: int) -> bool:
    """``open``'s mode, read from the call: only a literal mode without w/a/x/+ is a read."""
    mode: ast.expr | None = call.args[positional] if len(call.args) > positional else None
    for kw in call.keywords:
        if kw.arg == "mode":
            mode = kw.value
    if mode is None:
        return True
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and not set(mode.value) & set("wax+")


def _writes(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, f"import {a.name}") for a in node.names if a.name in WRITING_MODULES)
        elif isinstance(node, ast.ImportFrom) and (node.module or "") in WRITING_MODULES:
            yield node.lineno, f"from {node.module} import ..."
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id == "open" and not _is_read_mode(node, 1):
                yield node.lineno, "open(..., writing)"
            elif isinstance(f, ast.Attribute):
                owner = f.value.id if isinstance(f.value, ast.Name) else ""
                if owner in WRITING_MODULES or (owner == "os" and f.attr in WRITING_OS):
                    yield node.lineno, f"{owner}.{f.attr}()"
                elif f.attr in WRITING_METHODS:
                    yield node.lineno, f".{f.attr}()"
                elif f.attr == "open" and not _is_read_mode(node, 0):
                    yield node.lineno, ".open(..., writing)"


def test_the_write_check_sees_writes(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import tempfile\nfrom shutil import copy\n"
        "def f(p, m):\n    p.mkdir()\n    p.write_bytes(b'')\n    open(p, 'w')\n    open(p, mode=m)\n"
        "    p.open('ab')\n    os.makedirs(p)\n    tempfile.mkdtemp()\n"
        "    open(p)\n    p.open()\n    open(p, 'rb')\n    'a'.replace('a', 'b')\n    os.path.join(p)\n"
    )
    assert [line for line, _ in _writes(sample)] == [1, 2, 4, 5, 6, 7, 8, 9, 10]


def test_verify_and_policy_never_write_files() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for name, path in MODULES.items()
        if any(_under(name, p) for p in PURE)
        for line, what in _writes(path)
    ]
    assert not found, "the trust layers write files (hand bytes to the verifiers instead):\n" + "\n".join(found)


# Issue #18: the repository's reports/ and migrations/ are the packages scanner.reports and scanner.migrations
# (links scanner/reports -> ../reports, scanner/migrations -> ../migrations; the wheel installs nothing else at
# the top of site-packages). Naming them as top-level packages works only from a checkout, and in an install
# loads another distribution's `reports` or `migrations` (common names) — or nothing.
REPOSITORY_PACKAGES = ("reports", "migrations")
CODE_TREES = ("scanner", "reports", "migrations", "tests", "bench", "helm")
# Calls whose first argument names a package (importlib, Jinja2's loader, importlib.resources, pkgutil,
# pkg_resources).
MODULE_NAME_CALLS = frozenset({"import_module", "__import__", "find_spec", "PackageLoader", "files", "path",
                               "read_text", "open_text", "read_binary", "open_binary", "contents", "get_data",
                               "resource_filename", "resource_string", "resource_stream"})
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def _names_a_repository_module(text: str) -> bool:
    """A dotted string naming a module of reports/ or migrations/ (a lazy command table, a patch target);
    ``"reports.yaml"`` is a file name, not a module."""
    if not DOTTED.fullmatch(text):
        return False
    top, sub = text.split(".")[:2]
    return top in REPOSITORY_PACKAGES and ((ROOT / top / f"{sub}.py").is_file() or (ROOT / top / sub).is_dir())


def _top_level_package_uses(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            f = node.func
            called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            names = [str(node.args[0].value)] if called in MODULE_NAME_CALLS else []
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _names_a_repository_module(node.value):
            names = [node.value]
        else:
            continue
        found |= {(node.lineno, n) for n in names if n.split(".")[0] in REPOSITORY_PACKAGES}
    return sorted(found)


def test_the_top_level_package_check_sees_every_spelling(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import reports\nimport migrations.env as e\nfrom reports.render import x\nfrom migrations import versions\n"
        "jinja2.PackageLoader('reports', 'templates')\nimportlib.import_module('reports.cli')\n"
        "lazy = {'report': 'reports.cli'}\n"
        "from scanner.reports import view\nfrom . import reports\nPLURAL = 'reports'\nopen('reports.yaml')\n"
        "d = {'f': 'reports.yaml'}\nmonkeypatch.setattr('migrations.env.context', None)\n"
        "importlib.resources.files('reports').joinpath('templates')\npkgutil.get_data('migrations', 'alembic.ini')\n"
    )
    assert [line for line, _ in _top_level_package_uses(sample)] == [1, 2, 3, 4, 5, 6, 7, 13, 14, 15]


def test_reports_and_migrations_are_used_under_scanner_only() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for tree in CODE_TREES
        for path in sorted((ROOT / tree).rglob("*.py"))
        for line, name in _top_level_package_uses(path)
    ]
    assert not found, "use scanner.reports / scanner.migrations:\n" + "\n".join(found)
