"""Issue #18: the wheel installs nothing at the top of site-packages but ``scanner`` (and its dist-info), so
another distribution that ships the common package names ``reports`` or ``migrations`` — here a tiny
application with its own report module and Alembic ``migrations/env.py`` — can be installed beside sigaudit
without either overwriting the other's files, and uninstalling one leaves the other whole.

The wheel is built with ``pip wheel --no-deps`` from a copy of exactly what the Dockerfile copies (no stale
``build/`` of the checkout), installed with ``--no-deps --no-index`` into a fresh virtualenv; sigaudit's
dependencies come from this test interpreter's site-packages through a ``.pth`` line appended *after* the
virtualenv's own site-packages (the installed wheel wins; nothing is downloaded; no ``.pth`` of that
directory, such as an editable install's finder, is run)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# What the Dockerfile copies into its builder (tests/integration/test_dockerfile_install.py checks that list).
WHEEL_INPUTS = ("pyproject.toml", "README.md", "scanner", "reports", "migrations")

# The other distribution: an application with a top-level ``reports`` package and Alembic migrations of its own.
OTHER_FILES = {
    "reports/__init__.py": 'WHO = "othertool"\n',
    "reports/render.py": 'def render() -> str:\n    return "othertool report"\n',
    "reports/view.py": 'VIEW = "othertool"\n',
    "migrations/__init__.py": 'WHO = "othertool"\n',
    "migrations/env.py": 'raise SystemExit("othertool migrations/env.py")\n',
    "migrations/script.py.mako": "othertool\n",
    "migrations/versions/__init__.py": "",
    "migrations/versions/0001_initial.py": 'revision = "ot1"\ndown_revision = None\n',
}
OTHER_CHECK = ("import reports, reports.render, reports.view, migrations, pathlib; "
               "assert reports.WHO == migrations.WHO == 'othertool'; "
               "assert reports.render.render() == 'othertool report' and reports.view.VIEW == 'othertool'; "
               "assert (pathlib.Path(migrations.__file__).parent / 'env.py').read_text().count('othertool') == 1")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _other_wheel(directory: Path) -> Path:
    """A minimal, valid wheel (PEP 427) of ``othertool`` 1.0, written by hand: no build backend needed."""
    info = "othertool-1.0.dist-info"
    files = {
        **OTHER_FILES,
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: othertool\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: sigaudit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/top_level.txt": "migrations\nreports\n",
    }
    record = [f"{name},{_record_hash(text.encode())},{len(text.encode())}" for name, text in files.items()]
    path = directory / "othertool-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sigaudit's wheel, built by ``pip wheel --no-deps`` from a copy of the Dockerfile's inputs (links kept as
    links, as a clone has them)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.db")
    for name in WHEEL_INPUTS:
        origin = REPO / name
        if origin.is_dir() and not origin.is_symlink():
            shutil.copytree(origin, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(origin, src / name, follow_symlinks=False)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                          "-w", str(root / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (found,) = (root / "dist").glob("sigaudit-*.whl")
    return found


@dataclass
class Venv:
    path: Path
    home: Path

    @property
    def purelib(self) -> Path:
        (lib,) = (self.path / "lib").glob("python3*/site-packages")
        return lib

    @contextmanager
    def _deps_hidden(self) -> Iterator[None]:
        """pip runs without the dependency path, so it never sees (nor could touch) the test's own install."""
        pth = self.purelib / "zz-sigaudit-test-deps.pth"
        pth.unlink(missing_ok=True)
        try:
            yield
        finally:
            deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
            pth.write_text("".join(f"{d}\n" for d in sorted(deps)), encoding="utf-8")

    def pip(self, *args: str) -> None:
        with self._deps_hidden():
            out = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q",
                                  "--python", str(self.path / "bin" / "python"), *args],
                                 capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "SIGAUDIT_"))}
        env.update(HOME=str(self.home), SIGAUDIT_DATA_DIR=str(self.home / "data"),
                   PATH=f"{self.path / 'bin'}:{env.get('PATH', '')}")
        return env

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """A command of the virtualenv, from a directory that holds no checkout."""
        return subprocess.run([str(self.path / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True,
                              timeout=300, cwd=self.home, env=self.env())


def _venv(root: Path) -> Venv:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    (root / "home").mkdir()
    venv = Venv(root / "venv", root / "home")
    with venv._deps_hidden():
        pass
    return venv


def _sigaudit_works(venv: Venv, tag: str) -> None:
    """``db upgrade`` migrates to the shipped head with sigaudit's own env.py; a scan is stored; ``report``
    renders it with sigaudit's templates (HTML) and view model (JSON)."""
    work = venv.home / tag
    work.mkdir()
    url = f"sqlite:///{work / 'sigaudit.db'}"
    up = venv.run("sigaudit", "db", "upgrade", "--db", url)
    assert up.returncode == 0, up.stdout + up.stderr
    current = venv.run("sigaudit", "db", "current", "--db", url)
    head = venv.run("python", "-c", "from scanner.store.migrate import head_revision; print(head_revision())")
    assert head.returncode == 0, head.stderr
    assert current.returncode == 0 and current.stdout.split() == [head.stdout.strip()], (current, head)
    (work / "pods.json").write_text('{"apiVersion": "v1", "kind": "List", "items": []}', encoding="utf-8")
    (work / "policy.yaml").write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nmetadata: {name: t}\n"
                                      "spec:\n  rules: []\n", encoding="utf-8")
    scan = venv.run("sigaudit", "scan", "--policy", str(work / "policy.yaml"), "--pods-file", str(work / "pods.json"),
                    "--db", url, "--no-progress", "-o", "none")
    assert scan.returncode == 0, scan.stdout + scan.stderr
    html = venv.run("sigaudit", "report", "--db", url, "--format", "html", "--out", str(work / "r.html"))
    assert html.returncode == 0, html.stdout + html.stderr
    assert "<html" in (work / "r.html").read_text(encoding="utf-8").lower()
    js = venv.run("sigaudit", "report", "--db", url, "--format", "json")
    assert js.returncode == 0, js.stdout + js.stderr
    assert json.loads(js.stdout)["scan"]["status"] == "complete"


def _other_works(venv: Venv) -> None:
    out = venv.run("python", "-c", OTHER_CHECK)
    assert out.returncode == 0, out.stderr


def test_the_wheel_installs_only_the_scanner_package(wheel: Path) -> None:
    """The mechanism: whatever package is added next, the wheel's top level is ``scanner`` and its metadata;
    the repository's reports/ and migrations/ ship whole (code, templates, Alembic's files) under it."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert {name.split("/", 1)[0] for name in names} == {"scanner", dist_info}, sorted(names)[:20]
    for tree in ("reports", "migrations"):
        files = {p.relative_to(REPO).as_posix() for p in (REPO / tree).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
        assert files and {f"scanner/{f}" for f in files} <= names, sorted({f"scanner/{f}" for f in files} - names)


def test_other_distribution_installed_after_sigaudit(wheel: Path, tmp_path: Path) -> None:
    venv = _venv(tmp_path)
    venv.pip("install", "--no-deps", "--no-index", str(wheel))
    venv.pip("install", "--no-deps", "--no-index", str(_other_wheel(tmp_path)))
    _other_works(venv)
    _sigaudit_works(venv, "both")
    # Uninstalling the other removes only its files.
    venv.pip("uninstall", "-y", "othertool")
    _sigaudit_works(venv, "without-other")


def test_sigaudit_installed_after_the_other_and_uninstalled(wheel: Path, tmp_path: Path) -> None:
    venv = _venv(tmp_path)
    venv.pip("install", "--no-deps", "--no-index", str(_other_wheel(tmp_path)))
    venv.pip("install", "--no-deps", "--no-index", str(wheel))
    _other_works(venv)
    _sigaudit_works(venv, "both")
    # Uninstalling sigaudit removes only its files.
    venv.pip("uninstall", "-y", "sigaudit")
    _other_works(venv)
