"""The image installs from hashed lock files (issue #27, item 7): ``requirements.lock`` (pyproject's
dependencies and the ``postgres`` extra the image ships) and ``requirements-build.lock`` (the builder stage's
tools). Both are made by ``make lock`` (pip-compile --generate-hashes); here, without the network, that they
are still in step with their inputs: every direct requirement is pinned at a version its specifier allows,
nothing is pinned as direct that is no longer asked for, every pin has hashes, and nothing points pip at
another index."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
IMAGE_EXTRAS = ("postgres",)  # what tests/tools/lock.sh passes as --extra


@dataclass
class Pin:
    version: str
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)


def parse_lock(text: str) -> dict[str, Pin]:
    """pip-compile's output: ``name==version \\`` then ``--hash=sha256:…`` lines, then ``# via`` comments."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not raw.startswith((" ", "#")):
            m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)\s*\\?", line)
            assert m, f"not an exact pin: {raw!r}"
            current = pins.setdefault(canonicalize_name(m.group(1)), Pin(m.group(2)))
            in_via = False
            continue
        if line.startswith("--hash="):
            assert current is not None, raw
            current.hashes.append(line.removeprefix("--hash=").rstrip(" \\"))
            continue
        if line.startswith("# via"):
            assert current is not None, raw
            rest = line.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                current.via.add(rest)
            continue
        if line.startswith("#   ") and in_via and current is not None:
            current.via.add(line.removeprefix("#").strip())
            continue
        assert line.startswith("#"), f"unexpected line (an option pip would obey?): {raw!r}"
    return pins


def direct_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in IMAGE_EXTRAS:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


@pytest.fixture(scope="module")
def lock() -> dict[str, Pin]:
    return parse_lock((REPO / "requirements.lock").read_text(encoding="utf-8"))


def test_every_pin_is_exact_and_hashed(lock: dict[str, Pin]) -> None:
    assert lock, "requirements.lock pins nothing"
    for name, pin in lock.items():
        assert pin.hashes, f"{name} has no --hash: pip --require-hashes would refuse the lock"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), (name, pin.hashes)
        Version(pin.version)  # a real version, not a URL or a path


def test_direct_requirements_are_pinned_within_their_specifiers(lock: dict[str, Pin]) -> None:
    for req in direct_requirements():
        pin = lock.get(canonicalize_name(req.name))
        assert pin is not None, f"{req} (pyproject.toml) is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"requirements.lock pins {req.name}=={pin.version}, outside pyproject's {req}: run `make lock`")


def test_the_lock_asks_for_nothing_pyproject_dropped(lock: dict[str, Pin]) -> None:
    direct = {canonicalize_name(r.name) for r in direct_requirements()}
    locked_direct = {name for name, pin in lock.items() if "sigaudit (pyproject.toml)" in pin.via}
    assert locked_direct == direct, {"stale in the lock": locked_direct - direct, "missing": direct - locked_direct}


def test_extras_of_direct_requirements_are_pinned(lock: dict[str, Pin]) -> None:
    """The lock is written without extras (``psycopg``, not ``psycopg[binary]``), so pip installs an extra's
    packages only because they are pinned: psycopg-binary missing would leave the image without a driver."""
    for req in direct_requirements():
        for extra in req.extras:
            try:
                requires = importlib.metadata.requires(req.name) or []
            except importlib.metadata.PackageNotFoundError:
                pytest.fail(f"{req.name} is not installed in the test environment (make venv)")
            needed = [Requirement(r) for r in requires]
            needed = [r for r in needed if r.marker is not None and r.marker.evaluate({"extra": extra})]
            assert needed, f"{req.name}[{extra}] brings nothing?"
            for r in needed:
                assert canonicalize_name(r.name) in lock, f"{req.name}[{extra}] needs {r.name}, not in the lock"


def test_build_lock_matches_its_input() -> None:
    build = parse_lock((REPO / "requirements-build.lock").read_text(encoding="utf-8"))
    wanted = [Requirement(line) for line in (REPO / "requirements-build.in").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert {canonicalize_name(r.name) for r in wanted} == {
        n for n, p in build.items() if "-r requirements-build.in" in p.via}
    for r in wanted:
        pin = build[canonicalize_name(r.name)]
        assert pin.hashes and r.specifier.contains(pin.version, prereleases=True), (r, pin)


@pytest.mark.parametrize("bad", [
    "click>=8.1 \\\n    --hash=sha256:" + "a" * 64 + "\n",  # a range, not a pin
    "click==8.1.0\n    # via sigaudit (pyproject.toml)\n",  # no hash
    "--index-url https://example.invalid/simple\nclick==8.1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n",
])
def test_the_checks_catch_a_broken_lock(bad: str) -> None:
    with pytest.raises(AssertionError):
        pins = parse_lock(bad)
        for name, pin in pins.items():
            assert pin.hashes, name


def test_a_dropped_or_loosened_dependency_is_caught(lock: dict[str, Pin]) -> None:
    """What test_direct… and test_the_lock_asks… see when pyproject moves away from the lock."""
    stale = dict(lock)
    stale.pop("click")
    with pytest.raises(AssertionError):
        test_direct_requirements_are_pinned_within_their_specifiers(stale)
    moved = {**lock, "click": Pin("7.0", ["sha256:" + "a" * 64], {"sigaudit (pyproject.toml)"})}
    with pytest.raises(AssertionError):
        test_direct_requirements_are_pinned_within_their_specifiers(moved)
    extra = {**lock, "requests-toolbelt": Pin("1.0", ["sha256:" + "a" * 64], {"sigaudit (pyproject.toml)"})}
    with pytest.raises(AssertionError):
        test_the_lock_asks_for_nothing_pyproject_dropped(extra)


def test_the_dockerfile_names_this_lock() -> None:
    """The build checks requirements.lock against ARG REQUIREMENTS_SHA256 and records it in a label: both
    stages' defaults must be this lock's sha256 (`make lock` writes them)."""
    import hashlib

    want = hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()
    got = re.findall(r"^ARG REQUIREMENTS_SHA256=(\S*)$", (REPO / "Dockerfile").read_text(encoding="utf-8"), re.M)
    assert got == [want, want], f"Dockerfile names {got}, the lock is {want}: run `make lock`"
