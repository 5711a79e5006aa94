"""A plain clone of the project runs its own tests: nothing under tests/ reads outside the repository."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.vectors import VECTORS

ROOT = Path(__file__).resolve().parents[2]
# A path that leaves the checkout: the shared folder beside CI's clone, or this machine's layout.
OUTSIDE = re.compile(r"""(\.\./shared|/work/|["']shared["']\s*/|parents\[\d\]\.parent)""")


def _sources() -> list[Path]:
    files = []
    for ext in ("*.py", "*.sh", "*.js", "*.go"):
        files += [p for p in (ROOT / "tests").rglob(ext) if "data" not in p.relative_to(ROOT / "tests").parts[:1]]
    files += [ROOT / "Makefile", *(ROOT / ".ci").glob("*")]
    return [p for p in files if "node_modules" not in p.parts and p.is_file()]


def test_no_test_source_reads_outside_the_repository() -> None:
    offenders = []
    for path in _sources():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            code = line.split("#", 1)[0] if path.suffix in (".sh", "") else line
            if OUTSIDE.search(code) and path.name != "test_layout.py":
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    hint = "tests must use tests/data (copy vectors there with PROVENANCE.md):\n"
    assert offenders == [], hint + "\n".join(offenders)


def test_every_vector_set_carries_its_provenance() -> None:
    sets = [p for p in VECTORS.iterdir() if p.is_dir()]
    assert {p.name for p in sets} >= {"cosign", "notation", "sigstore-conformance", "sigstore-python"}
    for s in sets:
        assert (s / "PROVENANCE.md").is_file(), f"{s.name} has no PROVENANCE.md"
        assert (s / "cases.json").is_file(), f"{s.name} has no cases.json"


def test_make_tools_builds_every_tool_a_test_asks_for() -> None:
    """A fresh machine's `make test` builds exactly what CI's tests need (grafeas was once left out)."""
    script = (ROOT / "tests/tools/ensure-tools.sh").read_text()
    default = set(re.search(r"^DEFAULT_TOOLS=\(([^)]*)\)", script, re.M).group(1).split())  # type: ignore[union-attr]
    asked = set()
    for path in _sources():
        if path.suffix == ".py":
            asked |= set(re.findall(r"""(?:require_tool|tool_path)\(\s*["']([\w-]+)["']""", path.read_text()))
    asked |= {"kube-apiserver", "sigstore-mock"}  # required by fixtures_kube.py and sigstore_mock/harness.py
    assert asked, "found no tool requests: the pattern above is stale"
    assert asked <= default, f"tools the tests need that `make tools` does not build: {sorted(asked - default)}"
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"ensure-tools\.sh\s*$", recipe, re.M), "`make test` must build the default tool set"


def test_make_system_deps_installs_every_program_a_test_asks_for() -> None:
    """A fresh machine's `make test` installs the Debian package of every program the tests start
    (prometheus-alertmanager was once left out: it was installed by hand on the machine that wrote its test)."""
    from tests.harness.tools import DEBIAN_PACKAGES

    makefile = (ROOT / "Makefile").read_text()
    apt = set()
    for m in re.finditer(r"^APT_NEEDED\s*\+?:?=\s*(.*)$", makefile, re.M):
        apt |= set(m.group(1).split())
    # htpasswd is only a fallback for when the bcrypt module (a test dependency) is absent.
    not_needed = {"htpasswd", "no-such-binary-sigaudit"}
    asked = set()
    for path in _sources():
        if path.suffix == ".py":
            asked |= set(re.findall(r"""require_binary\(\s*["']([\w.-]+)["']""", path.read_text()))
    assert asked, "found no program requests: the pattern above is stale"
    packages = {DEBIAN_PACKAGES.get(name, name) for name in asked - not_needed}
    missing = sorted(packages - apt)
    assert not missing, f"packages the tests need that `make system-deps` does not install: {missing}"


# Tests of the repository as a whole (its layout, import graph, lock file, tools), not of one module.
PROJECT_TESTS = {"test_layout", "test_layering", "test_fuzz_smoke", "test_mutation_tool", "test_requirements_lock",
                 "test_startup_imports"}
# Top-level code folders besides scanner/ whose tests mirror them too (reports/ is scanner.reports: a package of
# scanner/ through its link).
OTHER_TREES = {"bench", "helm"}


def test_unit_tests_mirror_the_source_tree() -> None:
    """``tests/unit/<package>/test_<module>[_<aspect>].py``: a flat unit test names a module of scanner/ itself
    (or is a test of the repository as a whole); a unit test folder names a package of scanner/ or another
    top-level code folder, so a reader finds a module's tests where the module is."""
    unit = ROOT / "tests" / "unit"
    scanner_modules = {p.stem for p in (ROOT / "scanner").glob("*.py")}
    packages = {p.name for p in (ROOT / "scanner").iterdir() if (p / "__init__.py").is_file()} | OTHER_TREES
    misplaced = []
    for test in sorted(unit.glob("test_*.py")):
        stem = test.stem
        if stem in PROJECT_TESTS:
            continue
        module = stem.removeprefix("test_")
        if not any(module == m or module.startswith(m + "_") for m in scanner_modules):
            misplaced.append(f"{test.relative_to(ROOT)}: names no module of scanner/")
    for folder in sorted(p for p in unit.iterdir() if p.is_dir() and p.name != "__pycache__"):
        if folder.name not in packages:
            misplaced.append(f"{folder.relative_to(ROOT)}/: names no package of scanner/ nor {sorted(OTHER_TREES)}")
    assert not misplaced, "unit tests must mirror the source tree:\n" + "\n".join(misplaced)


def test_reports_and_migrations_resolve_to_this_checkout_under_scanner() -> None:
    """Issue #18: the repository keeps reports/ and migrations/ at its top, and they are imported as
    scanner.reports and scanner.migrations — the names the wheel installs them under — through the links
    scanner/reports -> ../reports and scanner/migrations -> ../migrations. Run as the tests and the CLI run
    (``python -m`` from the checkout), they resolve to this checkout's folders, never to another checkout's
    (an editable install's finder) nor to another distribution's top-level ``reports``."""
    for name in ("reports", "migrations"):
        link = ROOT / "scanner" / name
        assert link.is_symlink() and link.readlink() == Path("..", name), f"scanner/{name} must link to ../{name}"
    code = ("import json, scanner.reports, scanner.migrations, jinja2\n"
            "from scanner.store.migrate import script_location\n"
            "loader = jinja2.PackageLoader('scanner.reports', 'templates')\n"
            "print(json.dumps([scanner.reports.__file__, scanner.migrations.__file__, str(script_location()),"
            " loader.get_source(jinja2.Environment(), 'report.html.j2')[1]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    reports, migrations, location, template = (Path(p).resolve() for p in json.loads(out.stdout))
    assert reports == ROOT / "reports" / "__init__.py"
    assert migrations == ROOT / "migrations" / "__init__.py"
    assert location == ROOT / "migrations" and (location / "env.py").is_file()
    assert template == ROOT / "reports" / "templates" / "report.html.j2"
