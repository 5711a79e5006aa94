"""The CLI's exit-code contract holds for every command, whatever escapes it: 0/1 are verdicts, 2 a usage
or configuration error, 3 a failed or partial run — never Python's exit 1 with a traceback.

The guard is proven on every command the CLI has (walked from ``main``, so a command added next year
is covered without editing this file), by making the command itself raise."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from scanner.cli import main
from scanner.errors import ConfigError, StoreError
from scanner.options import duration as _duration


def commands(
    group: click.Group = main, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"{name} cannot be loaded"
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, (*prefix, name))


ALL = sorted(commands(), key=lambda c: c[0])


def test_the_walk_finds_the_commands_of_the_contract() -> None:
    names = {" ".join(p) for p, _ in ALL}
    assert {"scan", "serve", "report", "db", "db upgrade", "check-policy"} <= names


def run(path: tuple[str, ...], cmd: click.Command, *pre: str) -> click.testing.Result:
    """Invoke ``cmd`` with its required arguments (a group: through its first subcommand, since a group's
    own code runs only on the way to one)."""
    args: list[str] = []
    while isinstance(cmd, click.Group):
        sub = sorted(cmd.list_commands(click.Context(cmd)))[0]
        args.append(sub)
        cmd = cmd.get_command(click.Context(cmd), sub)  # type: ignore[assignment]
    args += [a.name or "x" for a in cmd.params if isinstance(a, click.Argument) and a.required]
    return CliRunner().invoke(main, [*pre, *path, *args], catch_exceptions=False)


def raising(monkeypatch: pytest.MonkeyPatch, cmd: click.Command, exc: BaseException) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise exc

    monkeypatch.setattr(cmd, "callback", boom)


@pytest.mark.parametrize("path,cmd", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_an_unexpected_exception_in_any_command_is_exit_3_with_one_line(
    path: tuple[str, ...], cmd: click.Command, monkeypatch: pytest.MonkeyPatch
) -> None:
    raising(monkeypatch, cmd, RuntimeError("boom\nsecond line"))
    result = run(path, cmd)
    assert result.exit_code == 3, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["sigaudit: error: unexpected failure: RuntimeError: boom (-vv shows the traceback)"], lines


@pytest.mark.parametrize("path,cmd", ALL[:3], ids=[" ".join(p) for p, _ in ALL[:3]])
def test_minus_vv_shows_the_traceback(path: tuple[str, ...], cmd: click.Command,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    raising(monkeypatch, cmd, KeyError("k"))
    result = run(path, cmd, "-vv")
    assert result.exit_code == 3 and "Traceback" in result.output and "KeyError" in result.output


@pytest.mark.parametrize("exc,code", [(ConfigError("bad policy", source="p.yaml"), 2), (StoreError("db down"), 3),
                                      (KeyboardInterrupt(), 3), (click.ClickException("generic"), 2),
                                      (click.UsageError("usage"), 2), (SystemExit(1), 1)])
def test_typed_failures_keep_their_meaning(exc: BaseException, code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    path, cmd = next((p, c) for p, c in ALL if p == ("check-policy",))
    raising(monkeypatch, cmd, exc)
    result = run(path, cmd)
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output


@pytest.mark.parametrize("text,seconds", [("300", 300.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0),
                                          ("2.5m", 150.0)])
def test_deadline_durations(text: str, seconds: float) -> None:
    assert _duration(None, None, text) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["0", "-5", "5x", "m", "1h 30m", "10mm", "nan", "inf"])
def test_bad_deadlines_are_usage_errors(text: str) -> None:
    with pytest.raises(click.BadParameter):
        _duration(None, None, text)  # type: ignore[arg-type]


def test_deadline_from_the_environment_is_a_usage_error_when_bad() -> None:
    result = CliRunner().invoke(main, ["scan", "--no-store"], env={"SIGAUDIT_DEADLINE": "soon"})
    assert result.exit_code == 2 and "not a duration" in result.output


def test_a_pods_file_over_the_size_limit_is_exit_2_and_stdin_over_it_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from scanner.inventory import pods

    (tmp_path / "policy.yaml").write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n"
        "    - name: r\n      images: ['*']\n      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "k.pub").write_bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    big = tmp_path / "pods.json"
    with big.open("wb") as f:
        f.truncate(pods.MAX_PODS_FILE_BYTES + 1)  # sparse
    args = ["scan", "--no-store", "--policy", str(tmp_path / "policy.yaml"), "-o", "none", "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--pods-file", str(big)])
    assert result.exit_code == 2, result.output
    assert "over the 2 GiB limit on a pods file: nothing was scanned" in result.output
    # standard input has no size to check first: it is cut while read, and the scan fails (exit 3)
    monkeypatch.setattr(pods, "MAX_PODS_FILE_BYTES", 64)
    result = CliRunner().invoke(main, [*args, "--pods-file", "-"], input=b'{"kind": "List", "items": []}' + b" " * 64)
    assert result.exit_code == 3, result.output
    assert "<stdin>: larger than the 64 bytes limit on a pod list" in result.output


def test_a_command_whose_module_cannot_be_imported_is_exit_3_not_no_such_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A partial installation (a lazily imported command module missing) is sigaudit's failure, not the
    user's usage error: exit 3 naming the command and the import error, and --help still lists it."""
    monkeypatch.setitem(type(main)._lazy, "report", "scanner.no_such_module_for_this_test")
    monkeypatch.delitem(main.commands, "report", raising=False)
    result = CliRunner().invoke(main, ["report", "--db", "sqlite:///x.db"])
    assert result.exit_code == 3, result.output
    assert "cannot load the report command: ModuleNotFoundError" in result.output
    assert "No such command" not in result.output
    listing = CliRunner().invoke(main, ["--help"])
    assert listing.exit_code == 0 and "report" in listing.output


@pytest.mark.parametrize("age", ["999999d", "999999d "])
def test_verify_evidence_an_age_before_year_one_is_a_usage_error_not_a_crash(tmp_path: Path, age: str) -> None:
    """``--not-before 999999d`` reaches before datetime.min: refused as usage (exit 2), not exit 3."""
    r = CliRunner().invoke(main, ["verify-evidence", str(tmp_path / "pack.tar.gz"), "--insecure-use-pack-key",
                                  "--not-before", age])
    assert r.exit_code == 2, r.output
    assert "--not-before" in r.output and "Traceback" not in r.output


def test_a_one_shot_scan_does_not_walk_the_heap_again_and_again(tmp_path: Path) -> None:
    """Issue 19: with CPython's default collector thresholds a warm scan of 10,000 pods ran ~1,000
    young collections and 4-6 full ones (0.3-0.4 CPU-s of a 2.7 CPU-s scan) over objects that form no
    cycles. The scan command runs with larger thresholds (no full collection in a scan of thousands of
    pods) and gives the previous ones back when it ends."""
    import gc

    args = _scan_files(tmp_path, 4000, repos=1000)  # a policy matching none of them: no registry request
    full: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    before = gc.get_threshold()
    gc.callbacks.append(count)
    try:
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    finally:
        gc.callbacks.remove(count)
    assert result.exit_code == 1, result.output  # no rule matches: no-policy verdicts are not compliant
    assert len(json.loads((tmp_path / "out.json").read_text())["images"]) == 1000
    assert full == []
    assert gc.get_threshold() == before


def _scan_files(tmp_path: Path, pods: int, repos: int = 100) -> list[str]:
    """A --no-store scan of ``pods`` pods (in ``repos`` repositories) under a policy that matches none of them
    (no registry request)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from tests.harness.demo import _pod

    (tmp_path / "policy.yaml").write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n"
        "    - name: r\n      images: ['elsewhere.test/*']\n"
        "      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "k.pub").write_bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    digest = "sha256:" + "a" * 64
    items = [_pod(f"ns-{p % 20}", f"web-{p}", [("app", f"127.0.0.1:1/app{p % repos}:1",
                                                f"127.0.0.1:1/app{p % repos}@{digest}")]) for p in range(pods)]
    (tmp_path / "pods.json").write_text(json.dumps({"kind": "List", "items": items}))
    return ["scan", "--no-store", "--policy", str(tmp_path / "policy.yaml"), "-o", "none", "--json-out",
            str(tmp_path / "out.json"), "--no-progress", "--pods-file", str(tmp_path / "pods.json")]


def test_a_one_shot_scan_exits_without_walking_its_heap_in_the_interpreter_teardown(tmp_path: Path) -> None:
    """Issue 19: after a scan returned, the interpreter's teardown ran full collections over the whole heap
    (every module, the policy, the scan's models): 0.13-0.20 CPU-s of a 2 CPU-s window scan. The scan
    command collects what is unreachable once at exit and freezes the rest, so the collections of the
    teardown walk (almost) nothing — and the scan's output is whole. Observed from an ``atexit`` handler
    registered before the CLI's (so it runs after it): what the teardown's collections would walk."""
    import subprocess
    import sys

    args = _scan_files(tmp_path, 500)
    driver = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('WALK', len(gc.get_objects()), gc.get_freeze_count(), file=sys.stderr))\n"
        "from scanner.cli import main\n"
        f"main(args={args!r}, prog_name='sigaudit')\n"
    )
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]  # no rule matches: no-policy verdicts, not compliant
    assert len(json.loads((tmp_path / "out.json").read_text())["images"]) == 100
    walked, frozen = (int(n) for n in done.stderr.rsplit("WALK", 1)[1].split()[:2])
    assert frozen > 20_000  # the modules, the policy, the scan's models
    assert walked < frozen // 50, (walked, frozen)  # before: walked ~45,000, frozen 0


def test_the_scan_command_leaves_an_in_process_caller_s_heap_unfrozen_and_adds_one_exit_handler(
        tmp_path: Path) -> None:
    """A caller running scans in process (a test, an embedding) keeps a collectable heap while it runs:
    the freeze happens at its exit only, and its handler is registered once however many scans run."""
    import atexit
    import gc

    args = _scan_files(tmp_path, 20)
    assert CliRunner().invoke(main, args).exit_code == 1
    handlers = atexit._ncallbacks()
    assert CliRunner().invoke(main, args).exit_code == 1
    assert atexit._ncallbacks() == handlers
    assert gc.get_freeze_count() == 0
