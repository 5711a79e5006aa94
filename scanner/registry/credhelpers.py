"""Docker credential helpers: ``docker-credential-<name> get`` (the docker-credential-helpers protocol).

The helper reads the server URL on stdin and prints ``{"ServerURL", "Username", "Secret"}`` on stdout; a
``Username`` of ``<token>`` means ``Secret`` is an identity token. A helper that has nothing for the
server exits non-zero printing ``credentials not found in native keychain``: no credential, not an error.

A helper is a program the scanner runs, so everything about it is bounded: its name (no paths), its
time (it is killed, with everything it started, past ``timeout``), its output (``max_output`` bytes,
then it is killed). Its output is never shown in a message — a helper that misbehaves may print the
secret — only its size and exit status.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading

from scanner.registry.auth import Credential, CredentialUnavailable

# docker-credential-helpers: credentials.errCredentialsNotFoundMessage
NOT_FOUND = "credentials not found in native keychain"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HELPER_TIMEOUT = 10.0
HELPER_MAX_OUTPUT = 64 * 1024


def valid_helper_name(name: str) -> bool:
    """A helper is named, never a path: ``docker-credential-<name>`` is looked up on PATH only."""
    return bool(_NAME.fullmatch(name))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the helper and anything it started (its own session)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def run_helper(
    name: str, server_url: str, *, timeout: float = HELPER_TIMEOUT, max_output: int = HELPER_MAX_OUTPUT
) -> Credential | None:
    """The credential helper ``name`` has for ``server_url``; None when it has none. Raises
    CredentialUnavailable (naming the helper, never showing its output) for anything else."""
    program = f"docker-credential-{name}"
    if not valid_helper_name(name):
        raise CredentialUnavailable(f"credential helper name {name[:64]!r} is not a plain name; refused")
    path = shutil.which(program)
    if path is None:
        raise CredentialUnavailable(f"credential helper {program} not found on PATH")
    try:
        proc = subprocess.Popen(
            [path, "get"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        raise CredentialUnavailable(f"credential helper {program} could not be run: {exc.strerror or exc}") from None
    out = bytearray()
    over = threading.Event()
    abandoned = threading.Event()

    def pump() -> None:
        # The reader owns the pipe while it runs: a descendant that left the helper's session can keep
        # it open past the kill, and a descriptor closed under a blocked read would be read again once
        # its number is reused (another pipe, a registry or database socket). So the pipe is closed
        # here, when the read ends, and by run_helper only once this thread is over.
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        try:
            while (chunk := os.read(fd, 65536)) and not abandoned.is_set():
                out.extend(chunk)
                if len(out) > max_output:
                    over.set()
                    _kill(proc)
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                proc.stdout.close()

    reader = threading.Thread(target=pump, name=f"credhelper-{name}", daemon=True)
    reader.start()
    try:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):  # a helper that does not read its stdin still gets judged
            proc.stdin.write(server_url.encode())
            proc.stdin.close()
        reader.join(timeout)
        if reader.is_alive():
            _kill(proc)
            reader.join(1)
            abandoned.set()  # a descendant that escaped the kill holds the pipe: the reader ends with it
            raise CredentialUnavailable(f"credential helper {program} did not answer within {timeout:g} s; killed")
        try:
            status = proc.wait(max(1.0, timeout / 10))
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise CredentialUnavailable(
                f"credential helper {program} did not exit within {timeout:g} s; killed"
            ) from None
    finally:
        if proc.poll() is None:
            _kill(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        abandoned.set()
        for stream in (proc.stdin, None if reader.is_alive() else proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
    if over.is_set():
        raise CredentialUnavailable(f"credential helper {program} printed more than {max_output} bytes; killed")
    if status != 0:
        if bytes(out).strip().decode(errors="replace") == NOT_FOUND:
            return None
        raise CredentialUnavailable(
            f"credential helper {program} failed (exit status {status}; its {len(out)}-byte output is not shown)"
        )
    return parse_helper_output(bytes(out), program)


def parse_helper_output(data: bytes, program: str) -> Credential:
    """``{"ServerURL", "Username", "Secret"}`` → Credential. Nothing of ``data`` is ever put in a message."""
    garbage = CredentialUnavailable(
        f"credential helper {program} answered with something that is not a credential "
        f"({len(data)} bytes, not shown; expected a JSON object with Username and Secret)"
    )
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise garbage from None
    if not isinstance(doc, dict):
        raise garbage
    user, secret = doc.get("Username"), doc.get("Secret")
    if not isinstance(user, str) or not isinstance(secret, str) or not user or not secret:
        raise garbage
    if user == "<token>":
        return Credential("<token>", "", secret)
    return Credential(user, secret)
