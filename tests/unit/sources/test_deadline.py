"""A policy load's remote reads end at the command's deadline (scanner/sources/deadline.py), whatever their
own limits: real sockets on 127.0.0.1 (a listener that never answers, a server that trickles, a redirect
chain), the real CLI, and a name lookup that never returns."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scanner.errors import DeadlineReached
from tests.harness.fixtures_registry import write_tls_material
from tests.vectors import VECTORS

KEY = (VECTORS / "cosign/legacy-oci-connaisseur/keys/alice.pub.pem").read_bytes()
ROOT = Path(__file__).resolve().parents[3]
DEADLINE = 3.0
# Past the deadline: the interpreter's start-up (the deadline starts after it), the grace a read cut by
# the deadline has to say so itself (0.5 s), the exit; on a loaded 2-core machine.
MARGIN = 4.0
SECRET = "s3cr3t-never-shown"


class Silent:
    """A TCP listener on 127.0.0.1 that accepts every connection and never sends a byte (no TLS
    ServerHello, no HTTP answer). ``accepted`` counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        self.held.append(conn)

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    s = Silent()
    yield s
    s.close()


@pytest.fixture
def tls_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    ca, cert, key = write_tls_material(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(cert), str(key))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    return tls


def _https(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def trickling(tls_env: ssl.SSLContext) -> Iterator[str]:
    """An https key server whose answer is a real key, a byte every 0.2 s (each byte restarts httpx's
    read timeout; the key URL's own limit is 30 s)."""

    yield from _https(_key_handler(0.2), tls_env)


def _key_handler(pause: float) -> type[BaseHTTPRequestHandler]:
    """A key server's handler: a real key, ``pause`` s after each of its bytes (0: at once)."""

    class Key(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(KEY)))
            self.end_headers()
            for piece in ([KEY[i:i + 1] for i in range(len(KEY))] if pause else [KEY]):
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(pause)

    return Key


@pytest.fixture
def redirect_chain(tls_env: ssl.SSLContext) -> Iterator[str]:
    """An https key server that answers each hop after 1 s with a redirect to the next one (httpx follows
    20; the key URL's own limit is 30 s)."""

    class Hops(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            time.sleep(1.0)
            hop = int(self.path.rsplit("/", 1)[1] or 0)
            self.send_response(302)
            self.send_header("Location", f"/hop/{hop + 1}")
            self.send_header("Content-Length", "0")
            self.end_headers()

    yield from _https(Hops, tls_env)


def _policy(tmp_path: Path, keys: list[str]) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({  # JSON is YAML
        "apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "t"},
        "spec": {"rules": [{"name": f"r{i}", "images": ["*"],
                            "verifiers": [{"cosign": {"key": key, "ignoreTlog": True}}]}
                           for i, key in enumerate(keys)]}}))
    return path


def _scan(tmp_path: Path, keys: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                                                         float]:
    """The real CLI: ``sigaudit scan --deadline 3`` of an empty pod list under a policy naming ``keys``."""
    pods = tmp_path / "pods.json"
    pods.write_text('{"kind": "List", "items": []}')
    args = [sys.executable, "-m", "scanner.cli", "scan", "--no-store", "--policy", str(_policy(tmp_path, keys)),
            "--pods-file", str(pods), "-o", "none", "--no-progress", "--deadline", f"{DEADLINE:g}"]
    began = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=45,
                          env={**os.environ, **(env or {})})
    return proc, time.monotonic() - began


def _ends_at_the_deadline(proc: subprocess.CompletedProcess[str], elapsed: float, *names: str) -> None:
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert elapsed <= DEADLINE + MARGIN, (elapsed, proc.stderr)
    assert "deadline reached while the policy was loaded" in proc.stderr, proc.stderr
    for name in names:
        assert name in proc.stderr, proc.stderr
    assert SECRET not in proc.stderr, proc.stderr


def test_a_silent_key_url_ends_the_scan_at_its_deadline_naming_it_without_its_secrets(
    tmp_path: Path, silent: Silent, tls_env: ssl.SSLContext
) -> None:
    # Before: the key URL's own limits only (10 s for the TLS handshake's first read; exit 2, a "bad policy").
    url = f"https://reader:{SECRET}@127.0.0.1:{silent.port}/keys/cosign.pub?token={SECRET}&sig={SECRET}"
    proc, elapsed = _scan(tmp_path, [url])
    _ends_at_the_deadline(proc, elapsed, f"key URL https://127.0.0.1:{silent.port}/keys/cosign.pub")


def test_ten_silent_key_urls_hold_the_scan_no_longer_than_one(tmp_path: Path, silent: Silent,
                                                              tls_env: ssl.SSLContext) -> None:
    # Before: ten times the key URL's own limit, one after the other.
    proc, elapsed = _scan(tmp_path, [f"https://127.0.0.1:{silent.port}/k{i}.pub" for i in range(10)])
    _ends_at_the_deadline(proc, elapsed, f"https://127.0.0.1:{silent.port}/k0.pub")
    assert silent.accepted == 1  # the first read met the deadline; no other was started after it


def test_a_key_url_trickling_its_answer_ends_the_scan_at_its_deadline(tmp_path: Path, trickling: str) -> None:
    # Before: every byte restarted httpx's read timeout; only the key URL's own 30 s ended it.
    proc, elapsed = _scan(tmp_path, [f"{trickling}/cosign.pub"])
    _ends_at_the_deadline(proc, elapsed, f"{trickling}/cosign.pub")


def test_a_key_url_redirecting_slowly_from_hop_to_hop_ends_the_scan_at_its_deadline(
    tmp_path: Path, redirect_chain: str
) -> None:
    proc, elapsed = _scan(tmp_path, [f"{redirect_chain}/hop/0"])
    _ends_at_the_deadline(proc, elapsed, f"{redirect_chain}/hop/0")


def test_a_kms_that_never_answers_ends_the_scan_at_its_deadline_without_its_token(
    tmp_path: Path, silent: Silent
) -> None:
    # Vault's transit API, as the KMS key edge reads it (the SDK KMSs go through the same _bounded call).
    # Before: its own 10 s per read, then the key was "unavailable" and the scan went on (exit 1, images
    # `error`), never ended by --deadline.
    proc, elapsed = _scan(tmp_path, ["hashivault://cosign-key"],
                          {"VAULT_ADDR": f"http://127.0.0.1:{silent.port}", "VAULT_TOKEN": SECRET})
    _ends_at_the_deadline(proc, elapsed, "KMS key hashivault://cosign-key")


def test_an_aws_kms_that_never_answers_is_cut_at_the_policy_load_deadline(
    tmp_path: Path, silent: Silent, monkeypatch: pytest.MonkeyPatch
) -> None:
    # boto3 with its own timeouts and retries (10 s per read, two attempts, 30 s in all before).
    from scanner.policy.sources import load_policies

    for name, value in {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL_KMS": f"http://127.0.0.1:{silent.port}"}.items():
        monkeypatch.setenv(name, value)
    ref = "awskms:///arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    began = time.monotonic()
    with pytest.raises(DeadlineReached) as err:
        load_policies(str(_policy(tmp_path, [ref])), (), deadline=time.monotonic() + 1.5)
    assert time.monotonic() - began < 1.5 + 1.5
    assert "KMS key awskms:///arn:aws:kms" in str(err.value) and SECRET not in str(err.value)


def test_a_name_lookup_that_never_returns_is_abandoned_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # getaddrinfo has no timeout: no socket deadline reaches it (httpx's connect timeout starts after it).
    from scanner.policy.sources import load_policies

    real = socket.getaddrinfo
    released = threading.Event()

    def hanging(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "keys.hang.invalid":
            released.wait(20)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    began = time.monotonic()
    try:
        with pytest.raises(DeadlineReached, match=r"key URL https://keys\.hang\.invalid/cosign\.pub"):
            load_policies(str(_policy(tmp_path, ["https://keys.hang.invalid/cosign.pub"])), (),
                          deadline=time.monotonic() + 1.5)
        assert time.monotonic() - began < 1.5 + 1.5
    finally:
        released.set()


def test_a_deadline_already_passed_asks_no_key_source(tmp_path: Path, silent: Silent) -> None:
    from scanner.policy.sources import load_policies

    began = time.monotonic()
    with pytest.raises(DeadlineReached, match="was not read"):
        load_policies(str(_policy(tmp_path, [f"https://127.0.0.1:{silent.port}/k.pub"])), (),
                      deadline=time.monotonic() - 1)
    assert time.monotonic() - began < 1.0
    time.sleep(0.2)
    assert silent.accepted == 0  # never connected


def test_a_key_read_in_time_is_read_and_a_policy_without_a_deadline_is_unchanged(tmp_path: Path,
                                                                                 tls_env: ssl.SSLContext) -> None:
    from scanner.policy.sources import load_policies

    for base in _https(_key_handler(0), tls_env):
        policy = str(_policy(tmp_path, [f"{base}/cosign.pub"]))
        for deadline in (time.monotonic() + 20, None):
            assert len(load_policies(policy, (), deadline=deadline).rules) == 1


def test_check_policy_naming_a_silent_key_url_ends_at_its_deadline(tmp_path: Path, silent: Silent,
                                                                   tls_env: ssl.SSLContext) -> None:
    # check-policy loads the policy through the same load_policies as a scan: its --deadline cuts the key read
    # (before fix/keydl: the key URL's own 10 s, exit 2 "bad policy").
    url = f"https://reader:{SECRET}@127.0.0.1:{silent.port}/keys/cosign.pub?token={SECRET}"
    args = [sys.executable, "-m", "scanner.cli", "check-policy", str(_policy(tmp_path, [url])),
            "--deadline", f"{DEADLINE:g}s"]
    began = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=45, env=dict(os.environ))
    _ends_at_the_deadline(proc, time.monotonic() - began, f"key URL https://127.0.0.1:{silent.port}/keys/cosign.pub")
    assert SECRET not in proc.stdout


class TrickleForever(Silent):
    """A plain-HTTP listener on 127.0.0.1 that, on every connection, sends a byte every 0.2 s and never
    completes a status line: each byte restarts an SDK's per-read timeout, so only a wall clock ends it."""

    def _serve(self, conn: socket.socket) -> None:
        threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            while not self.closed.wait(0.2):
                try:
                    conn.sendall(b"H")
                except OSError:
                    return


def test_serve_scans_against_a_kms_trickling_forever_leave_a_bounded_number_of_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve loads the policy at every scan: each load's KMS call (boto3, real sockets) was abandoned at the
    # deadline and its thread, with its socket, hung for as long as the KMS trickled -- one more per scan.
    from scanner.policy.sources import load_policies
    from scanner.registry import deadline as deadlines

    monkeypatch.setattr(deadlines, "MAX_ABANDONED", 3, raising=False)
    monkeypatch.setattr(deadlines, "_abandoned", [], raising=False)
    kms = TrickleForever()
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_KMS": f"http://127.0.0.1:{kms.port}"}.items():
        monkeypatch.setenv(name, value)
    ref = "awskms:///arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    policy = str(_policy(tmp_path, [ref]))
    before = {t.ident for t in threading.enumerate()}
    try:
        for _ in range(7):
            with pytest.raises(DeadlineReached) as err:  # never a key, never a pass
                load_policies(policy, (), deadline=time.monotonic() + 0.4)
            assert SECRET not in str(err.value)
        time.sleep(0.3)
        left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()
                and t.name.startswith("sigaudit-")]
        assert len(left) <= 3, [t.name for t in left]
    finally:
        kms.close()
