"""The CLI's exit-code contract holds for every command, whatever escapes it: 0/1 are verdicts, 2 a usage
or configuration error, 3 a failed or partial run — never Python's exit 1 with a traceback.

The guard is proven on every command the CLI has (walked from ``main``, so a command added next year
is covered without editing this file), by making the command itself raise."""

from __future__ import annotations

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


def test_a_one_shot_scan_collects_young_objects_less_often(tmp_path: Path) -> None:
    """``sigaudit scan`` runs one scan and exits: its cyclic collector runs every 20,000 net allocations,
    not CPython's 700, which walked the scan's growing heap ~0.25 CPU-s per warm 10,000-pod scan (issue 19).
    The older generations keep CPython's ratios."""
    import gc

    from scanner.cli import SCAN_GC_THRESHOLD

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        CliRunner().invoke(main, ["scan", "--no-store", "--pods-file", str(tmp_path / "absent.json")])
        assert gc.get_threshold() == SCAN_GC_THRESHOLD == (20_000, 10, 10)
    finally:
        gc.set_threshold(*saved)
