"""Docker credential helpers are real programs run by the scanner: the helpers here are small Python
scripts on PATH that implement the docker-credential-helpers protocol (or break it: hang, print
garbage, print without end, exit non-zero with the secret in their output). Each is bounded, named in
the failure, and none of their output ever reaches a message."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.registry.auth import CredentialUnavailable
from scanner.registry.credhelpers import NOT_FOUND, run_helper

SECRET = "Helper-Secret-9d1c07"


def write_helper(bindir: Path, name: str, body: str) -> Path:
    path = bindir / f"docker-credential-{name}"
    path.write_text(f"#!{sys.executable}\nimport sys, json, time, os, subprocess\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    write_helper(bindir, "good", f"""
        assert sys.argv[1:] == ["get"], sys.argv
        server = sys.stdin.read()
        if server == "nothing.example":
            print({NOT_FOUND!r}); sys.exit(1)
        if server == "token.example":
            print(json.dumps({{"ServerURL": server, "Username": "<token>", "Secret": "{SECRET}"}})); sys.exit(0)
        print(json.dumps({{"ServerURL": server, "Username": "u-" + server, "Secret": "{SECRET}"}}))
    """)
    write_helper(bindir, "hang", "sys.stdin.read(); time.sleep(120)\n")
    # A helper that starts a child holding its stdout open: killing the helper alone would not end the read.
    write_helper(bindir, "hangchild", "subprocess.Popen(['sleep', '120']); time.sleep(120)\n")
    write_helper(bindir, "garbage", f"print('Username={SECRET} not json')\n")
    write_helper(bindir, "endless", "sys.stdout.write('x' * 10_000_000); sys.stdout.flush(); time.sleep(120)\n")
    write_helper(bindir, "fails", f"print('denied for {SECRET}'); sys.exit(3)\n")
    write_helper(bindir, "emptysecret", "print(json.dumps({'Username': 'u', 'Secret': ''}))\n")
    write_helper(bindir, "listsecret", "print(json.dumps({'Username': 'u', 'Secret': ['x']}))\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    yield bindir


def test_a_helper_answers_with_the_credential_for_the_server_it_is_asked(helpers: Path) -> None:
    cred = run_helper("good", "registry.example:5000")
    assert cred is not None and (cred.username, cred.password) == ("u-registry.example:5000", SECRET)
    assert SECRET not in repr(cred)


def test_a_token_username_means_an_identity_token(helpers: Path) -> None:
    cred = run_helper("good", "token.example")
    assert cred is not None and cred.identity_token == SECRET and cred.password == ""


def test_credentials_not_found_is_no_credential_not_an_error(helpers: Path) -> None:
    assert run_helper("good", "nothing.example") is None


def test_a_missing_helper_is_named(helpers: Path) -> None:
    with pytest.raises(CredentialUnavailable, match="docker-credential-absent not found on PATH"):
        run_helper("absent", "r.example")


@pytest.mark.parametrize("name", ["../good", "/bin/sh", "", "a b", "-x", "x" * 65])
def test_a_helper_name_that_is_a_path_is_refused_and_never_run(helpers: Path, name: str) -> None:
    with pytest.raises(CredentialUnavailable, match="not a plain name"):
        run_helper(name, "r.example")


@pytest.mark.parametrize("name", ["hang", "hangchild"])
def test_a_hanging_helper_is_killed_at_its_timeout(helpers: Path, name: str) -> None:
    started = time.monotonic()
    with pytest.raises(CredentialUnavailable, match=f"docker-credential-{name} did not answer within 1 s; killed"):
        run_helper(name, "r.example", timeout=1.0)
    assert time.monotonic() - started < 8


@pytest.mark.parametrize("name", ["garbage", "emptysecret", "listsecret"])
def test_a_helper_printing_garbage_is_an_error_that_never_shows_its_output(helpers: Path, name: str) -> None:
    with pytest.raises(CredentialUnavailable, match="not a credential") as info:
        run_helper(name, "r.example")
    assert SECRET not in str(info.value) and f"docker-credential-{name}" in str(info.value)


def test_a_helper_printing_without_end_is_cut_at_the_output_limit(helpers: Path) -> None:
    started = time.monotonic()
    with pytest.raises(CredentialUnavailable, match="printed more than 65536 bytes; killed"):
        run_helper("endless", "r.example", timeout=30.0)
    assert time.monotonic() - started < 10


def test_a_failing_helper_is_named_with_its_status_never_its_output(helpers: Path) -> None:
    with pytest.raises(CredentialUnavailable, match="docker-credential-fails failed \\(exit status 3") as info:
        run_helper("fails", "r.example")
    assert SECRET not in str(info.value)


def test_a_descendant_that_escapes_the_kill_never_makes_the_reader_read_a_reused_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The helper's child leaves its session (killpg misses it) and keeps the helper's stdout open. The
    # reader, abandoned blocked in read(), used to go on reading the descriptor *number* after run_helper
    # closed it: once the number was reused (here a pipe; in a scan a registry or database socket) it
    # stole that file's bytes.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    go = tmp_path / "go"
    write_helper(bindir, "escape", f"""
        sys.stdin.read()
        if os.fork() == 0:
            os.setsid()
            deadline = time.monotonic() + 30
            while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:
                time.sleep(0.05)
            os.write(1, b"late output\\n")
            time.sleep(1)
            os._exit(0)
        os._exit(0)
    """)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(CredentialUnavailable, match="did not answer"):
        run_helper("escape", "registry.example", timeout=0.3)
    pipes = [os.pipe() for _ in range(8)]  # take the descriptor numbers run_helper gave back
    try:
        for _, w in pipes:
            os.write(w, b"mine")
        go.touch()
        time.sleep(0.6)  # the escaped child writes; a reader on a reused number would then read again
        for r, _ in pipes:
            os.set_blocking(r, False)
            try:
                assert os.read(r, 100) == b"mine"
            except BlockingIOError:
                pytest.fail("another file's bytes were read by the helper's abandoned reader")
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
