"""Every Kubernetes API request honours ``--deadline`` and reads a bounded body (issue: an attacker's
listener that accepts and never answers, or answers headers and then trickles, held ``sigaudit scan
--deadline 3`` until it was killed at 60 s). A real socket server on 127.0.0.1 plays the API server;
the real CLI runs against a kubeconfig that points at it (bearer token included, never printed)."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SECRET = "k8s-bearer-token-never-printed"
POLICY = (
    "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n"
    "    - name: r\n      images: ['*']\n      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n"
)
DEADLINE = 3.0
MARGIN = 4.0  # interpreter start and exit around the deadline (a correctness bound, not a speed test)


def _requests(conn: socket.socket, stop: threading.Event) -> Iterator[bytes]:
    """The head of each request on the connection (GETs: no bodies), until it closes or the test ends."""
    buf = b""
    while not stop.is_set():
        while b"\r\n\r\n" not in buf:
            got = conn.recv(65536)
            if not got:
                return
            buf += got
        head, _, buf = buf.partition(b"\r\n\r\n")
        yield head


def _read_request(conn: socket.socket) -> bytes | None:
    return next(_requests(conn, threading.Event()), None)


def _json_reply(body: bytes, *, close: bool = False) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + (b"Connection: close\r\n" if close else b"")
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _silent(conn: socket.socket, stop: threading.Event) -> None:
    _read_request(conn)
    stop.wait(90)


def _trickle_headers(conn: socket.socket, stop: threading.Event) -> None:
    _read_request(conn)
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 10_000:
        if stop.wait(0.5):
            return
        conn.sendall(bytes([byte]))


def _trickle_body(conn: socket.socket, stop: threading.Event) -> None:
    _read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                 b'{"kind":"PodList","items":[')
    while not stop.wait(0.5):
        conn.sendall(b" ")


def _oversized(conn: socket.socket, stop: threading.Event) -> None:
    _read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                 b'{"kind":"PodList","items":[')
    pad = b" " * (1024 * 1024)
    try:
        for _ in range(200):  # 200 MiB, well over the cap, unless the client hangs up first
            if stop.is_set():
                return
            conn.sendall(pad)
    except OSError:
        return


def _quietly(behaviour: Callable[[socket.socket, threading.Event], None], conn: socket.socket,
             stop: threading.Event) -> None:
    try:
        behaviour(conn, stop)
    except OSError:  # the scanner hung up: what it should do
        pass


@pytest.fixture
def fake_apiserver() -> Iterator[Callable[[Callable[[socket.socket, threading.Event], None]], int]]:
    stop = threading.Event()
    socks: list[socket.socket] = []

    def start(behaviour: Callable[[socket.socket, threading.Event], None]) -> int:
        srv = socket.create_server(("127.0.0.1", 0))
        socks.append(srv)

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                socks.append(conn)
                threading.Thread(target=_quietly, args=(behaviour, conn, stop), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        return int(srv.getsockname()[1])

    yield start
    stop.set()
    for s in socks:
        s.close()


def _kubeconfig(tmp_path: Path, port: int) -> Path:
    """A kubeconfig naming the fake API server, with a bearer token that must never be printed."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        f"users: [{{name: u, user: {{token: {SECRET}}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    return kubeconfig


def _scan(
    tmp_path: Path, port: int, *extra: str, deadline: float | None = DEADLINE, kubeconfig: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    (tmp_path / "policy.yaml").write_text(POLICY)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "k.pub").write_bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    kubeconfig = kubeconfig or _kubeconfig(tmp_path, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}
    cmd = [sys.executable, "-m", "scanner.cli", "scan", "--no-progress", "-o", "none",
           "--policy", str(tmp_path / "policy.yaml"), "--kubeconfig", str(kubeconfig), *extra]
    if deadline is not None:
        cmd += ["--deadline", f"{deadline:g}s"]
    began = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    return proc, time.monotonic() - began


@pytest.mark.parametrize("behaviour", [_silent, _trickle_headers, _trickle_body],
                         ids=["accept-and-silent", "headers-trickled", "body-trickled"])
def test_a_stalling_api_server_ends_the_scan_at_its_deadline_with_exit_3(
    tmp_path: Path, fake_apiserver: Callable[..., int], behaviour: Callable[..., None]
) -> None:
    port = fake_apiserver(behaviour)
    proc, elapsed = _scan(tmp_path, port, "--no-store")
    assert proc.returncode == 3, proc.stderr
    assert elapsed <= DEADLINE + MARGIN, f"a {DEADLINE:g} s deadline took {elapsed:.1f} s"
    assert "scan deadline reached" in proc.stderr and "Kubernetes API" in proc.stderr, proc.stderr
    assert "list pods" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_a_scan_cut_at_its_deadline_is_stored_failed_never_complete(
    tmp_path: Path, fake_apiserver: Callable[..., int]
) -> None:
    port = fake_apiserver(_trickle_body)
    db = tmp_path / "s.db"
    upgrade = subprocess.run([sys.executable, "-m", "scanner.cli", "db", "upgrade", "--db", f"sqlite:///{db}"],
                             capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    proc, elapsed = _scan(tmp_path, port, "--db", f"sqlite:///{db}")
    assert proc.returncode == 3, proc.stderr
    assert elapsed <= DEADLINE + MARGIN + 2, f"a {DEADLINE:g} s deadline took {elapsed:.1f} s"
    with sqlite3.connect(db) as conn:
        states = [row[0] for row in conn.execute("SELECT state FROM scans")]
    assert states and "complete" not in states, states
    assert SECRET not in proc.stderr + proc.stdout


def test_an_endless_page_is_cut_at_the_size_limit_without_a_deadline(
    tmp_path: Path, fake_apiserver: Callable[..., int]
) -> None:
    port = fake_apiserver(_oversized)
    proc, _ = _scan(tmp_path, port, "--no-store", deadline=None)
    assert proc.returncode == 3, proc.stderr
    assert "64 MiB" in proc.stderr and "list pods" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def _pod_list(owner: bool, secret: bool) -> bytes:
    import json

    meta: dict[str, object] = {"name": "p", "namespace": "ns", "uid": "u1"}
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs", "controller": True,
                                    "apiVersion": "apps/v1", "uid": "u2"}]
    spec: dict[str, object] = {"containers": [{"name": "c", "image": "127.0.0.1:1/x/y@sha256:" + "a" * 64}]}
    if secret:
        spec["imagePullSecrets"] = [{"name": "pull"}]
    return json.dumps({"kind": "PodList", "metadata": {}, "items": [{"metadata": meta, "spec": spec}]}).encode()


def _lists_then_stalls(owner: bool, secret: bool) -> Callable[[socket.socket, threading.Event], None]:
    """Answers the pod list at once; every other request (the owner GET, the pull secret) is left silent."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        for head in _requests(conn, stop):
            if not head.split(b" ", 2)[1].startswith(b"/api/v1/pods"):
                stop.wait(90)
                return
            conn.sendall(_json_reply(_pod_list(owner, secret)))

    return behaviour


@pytest.mark.parametrize(("owner", "secret", "what"), [(True, False, "get replicaset ns/rs"),
                                                       (False, True, "get secret ns/pull")],
                         ids=["owner-get", "pull-secret"])
def test_every_kubernetes_read_of_the_scan_ends_at_its_deadline(
    tmp_path: Path, fake_apiserver: Callable[..., int], owner: bool, secret: bool, what: str
) -> None:
    port = fake_apiserver(_lists_then_stalls(owner, secret))
    proc, elapsed = _scan(tmp_path, port, "--no-store", *(["--pull-secrets"] if secret else []))
    assert proc.returncode == 3, proc.stderr
    assert elapsed <= DEADLINE + MARGIN, f"a {DEADLINE:g} s deadline took {elapsed:.1f} s"
    assert what in proc.stderr and "scan deadline reached" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr + proc.stdout


def _error_without_end(conn: socket.socket, stop: threading.Event) -> None:
    _read_request(conn)
    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n")
    pad = b"x" * (1024 * 1024)
    for _ in range(200):
        if stop.is_set():
            return
        conn.sendall(pad)


def test_an_endless_error_body_is_cut_and_the_status_reported(
    tmp_path: Path, fake_apiserver: Callable[..., int]
) -> None:
    port = fake_apiserver(_error_without_end)
    proc, _ = _scan(tmp_path, port, "--no-store", deadline=None)
    assert proc.returncode == 3, proc.stderr
    assert "answered 500" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr + proc.stdout


def test_without_a_scan_deadline_a_request_is_cut_at_its_own_total(
    tmp_path: Path, fake_apiserver: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sources, policy reports and the watch's lists have no scan deadline: a trickle a byte every
    0.5 s (each recv well inside the read timeout) is still cut at the request's total."""
    from scanner.errors import InventoryError
    from scanner.inventory import kube

    monkeypatch.setattr(kube, "TOTAL_TIMEOUT", 1.5)
    port = fake_apiserver(_trickle_headers)
    kubeconfig = _kubeconfig(tmp_path, port)
    api = kube.load_api_client(str(kubeconfig))
    began = time.monotonic()
    with pytest.raises(InventoryError) as err:
        kube.read_pull_secret(api, "ns", "pull")
    assert time.monotonic() - began < 1.5 + 2.0
    assert "within 1.5 s" in str(err.value) and SECRET not in str(err.value)


@pytest.mark.parametrize("source", ["kyverno:cluster", "kritis:cluster", "clusterimagepolicy:cluster"])
def test_a_policy_read_from_a_silent_api_server_ends_the_scan_at_its_deadline(
    tmp_path: Path, fake_apiserver: Callable[..., int], source: str
) -> None:
    """``--policy-from KIND:cluster`` is read before any pod: its requests are the scan's too, cut at
    ``--deadline`` (they had only the per-request total, 120 s, and held the scan past its deadline)."""
    port = fake_apiserver(_silent)
    (tmp_path / "pods.json").write_text('{"kind": "List", "items": []}')
    proc, elapsed = _scan(tmp_path, port, "--no-store", "--policy-from", source,
                          "--pods-file", str(tmp_path / "pods.json"))
    assert proc.returncode == 3, proc.stderr
    assert elapsed <= DEADLINE + MARGIN, f"a {DEADLINE:g} s deadline took {elapsed:.1f} s"
    assert "scan deadline reached" in proc.stderr and "--policy-from" in proc.stderr, proc.stderr
    assert "list " in proc.stderr, proc.stderr  # names what was being read
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def _lists_then_watch(body: Callable[[socket.socket, threading.Event], None]
                      ) -> Callable[[socket.socket, threading.Event], None]:
    """Answers a pod list (one per connection) with an empty list; a watch request gets ``body``."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        head = _read_request(conn)
        if head is None:
            return
        if b"watch=true" not in head.split(b"\r\n", 1)[0]:
            conn.sendall(_json_reply(b'{"kind":"PodList","metadata":{"resourceVersion":"7"},"items":[]}', close=True))
            return
        body(conn, stop)

    return behaviour


def _send_mebibytes(conn: socket.socket, stop: threading.Event, count: int) -> None:
    pad = b"x" * (1024 * 1024)
    for _ in range(count):
        if stop.is_set():
            return
        conn.sendall(pad)


def _watch_line_without_end_close_framed(conn: socket.socket, stop: threading.Event) -> None:
    """A watch reply framed by the connection's close, one line that never ends (96 MiB, then closed)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    _send_mebibytes(conn, stop, 96)


def _watch_chunk_of_a_terabyte(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"%x\r\n" % (1 << 40))
    _send_mebibytes(conn, stop, 96)


def _watch_trickled_past_its_timeout(conn: socket.socket, stop: threading.Event) -> None:
    """A watch that ignores its timeoutSeconds: a blank line every 0.3 s (each read well inside the
    read timeout), for 20 s."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(66):
        if stop.wait(0.3):
            return
        conn.sendall(b"1\r\n\n\r\n")


class _Sink:
    def pod_seen(self, pod: object) -> None: ...
    def pod_gone(self, uid: str) -> None: ...
    def listed(self, namespace: str | None, uids: set[str]) -> None: ...


@pytest.mark.parametrize("body", [_watch_line_without_end_close_framed, _watch_chunk_of_a_terabyte],
                         ids=["close-framed", "chunk-of-a-terabyte"])
def test_a_watch_event_without_end_is_cut_at_the_size_limit(
    tmp_path: Path, fake_apiserver: Callable[..., int], body: Callable[..., None]
) -> None:
    """``serve --watch``: the client's stream(None) read a close-framed watch body whole, and the line
    buffer grew without bound (96 MiB sent: ~900 MB resident for 400 MiB), and a chunk announced as a
    terabyte was a MemoryError. A watch line over the reply limit now fails that watch (the informer
    retries after its backoff) with the memory of one reply."""
    from scanner.inventory import kube
    from scanner.inventory.watch import PodInformer

    port = fake_apiserver(_lists_then_watch(body))
    api = kube.load_api_client(str(_kubeconfig(tmp_path, port)))
    informer = PodInformer(api, _Sink(), timeout_seconds=5)
    rv = informer._list(threading.Event())
    with pytest.raises(kube.ResponseTooLarge, match="64 MiB"):
        informer._watch_once(rv, threading.Event(), 5)


def test_a_watch_that_ignores_its_timeout_is_cut_after_it(
    tmp_path: Path, fake_apiserver: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch is asked to end after timeoutSeconds; a server that keeps it open with a byte now and
    then (each read inside the read timeout) held the informer for ever (no re-list, no resume): it is
    cut WATCH_SLACK after its timeoutSeconds."""
    from scanner.inventory import kube
    from scanner.inventory.watch import PodInformer
    from scanner.registry.deadline import DeadlineExceeded

    monkeypatch.setattr(kube, "WATCH_SLACK", 1.0)
    port = fake_apiserver(_lists_then_watch(_watch_trickled_past_its_timeout))
    api = kube.load_api_client(str(_kubeconfig(tmp_path, port)))
    informer = PodInformer(api, _Sink(), timeout_seconds=1)
    rv = informer._list(threading.Event())
    began = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="within 2 s"):
        informer._watch_once(rv, threading.Event(), 1)
    assert time.monotonic() - began < 2 + 2.0


def test_a_credential_command_that_never_ends_is_killed_at_the_scan_deadline(
    tmp_path: Path, fake_apiserver: Callable[..., int]
) -> None:
    """A kubeconfig ``user.exec`` plugin that never prints (a login waiting for a browser, a stuck cloud
    CLI): the client waits for it without a timeout, so ``scan --deadline 3s`` waited as long as the
    plugin did. It is killed at the deadline, and its arguments (a client secret) are never printed."""
    port = fake_apiserver(_silent)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: /bin/sh,"
        f" args: ['-c', 'sleep 45 # --oidc-client-secret={SECRET}']}}}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    proc, elapsed = _scan(tmp_path, port, "--no-store", kubeconfig=kubeconfig)
    assert proc.returncode == 3, proc.stderr
    assert elapsed <= DEADLINE + MARGIN + 2, f"a {DEADLINE:g} s deadline took {elapsed:.1f} s"  # (+ the kill)
    assert "credential command 'sh' did not finish" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr + proc.stdout


def _answers(page: bytes) -> Callable[[socket.socket, threading.Event], None]:
    """Answers every request on the connection with the pod list ``page``."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        for _ in _requests(conn, stop):
            conn.sendall(_json_reply(page))

    return behaviour


_POD = '{"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": {"containers": []}}'


@pytest.mark.parametrize(("page", "words"), [
    ('{"kind": "PodList", "metadata": {"continue": "again"}, "items": [' + _POD + "]}", "continue token"),
    ('{"kind": "PodList", "metadata": [], "items": []}', "metadata"),
    ('{"kind": "PodList", "metadata": {}, "items": "' + "x" * 50 + '"}', "items"),
    ('{"kind": "PodList", "metadata": {}, "items": {"a": ' + _POD + "}}", "items"),
    ('{"kind": "PodList", "metadata": {}, "items": [' + _POD + ", 7]}", "items"),
    ('{"kind": "PodList", "metadata": {}, "items": [{"metadata": []}]}', "metadata"),
    ('{"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "try later"}', "items"),
], ids=["repeated-continue-token", "metadata-a-list", "items-a-string",
        "items-an-object", "an-item-not-an-object", "a-pod-metadata-a-list", "a-status-with-200"])
def test_a_malformed_or_endless_pod_list_fails_the_scan_never_reads_as_complete(
    tmp_path: Path, fake_apiserver: Callable[..., int], page: str, words: str
) -> None:
    """A page handing back a continue token it had sent paged for ever without --deadline; a page whose
    items are not a list of objects was read as fewer pods (a complete scan, exit 0), and a metadata
    that is not an object was an unexpected error."""
    port = fake_apiserver(_answers(page.encode()))
    proc, _ = _scan(tmp_path, port, "--no-store", deadline=None)
    assert proc.returncode == 3, proc.stderr
    assert "list pods" in proc.stderr and words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_a_malformed_pod_list_never_tells_the_watch_every_pod_is_gone(
    tmp_path: Path, fake_apiserver: Callable[..., int]
) -> None:
    """``serve --watch``: a list whose items are not a list of pods was read as no pods, and the sink
    told that every pod it knew was gone; it is a failed list (retried after the informer's backoff)."""
    from scanner.errors import InventoryError
    from scanner.inventory import kube
    from scanner.inventory.watch import PodInformer

    listed: list[set[str]] = []

    class Sink(_Sink):
        def listed(self, namespace: str | None, uids: set[str]) -> None:
            listed.append(uids)

    page = b'{"kind": "PodList", "metadata": {"resourceVersion": "7"}, "items": "' + b"x" * 50 + b'"}'
    port = fake_apiserver(_answers(page))
    informer = PodInformer(kube.load_api_client(str(_kubeconfig(tmp_path, port))), Sink())
    with pytest.raises(InventoryError, match="items"):
        informer._list(threading.Event())
    assert listed == []


@pytest.mark.parametrize("source", ["kyverno:cluster", "clusterimagepolicy:cluster"])
def test_check_policy_reading_a_silent_api_server_ends_at_its_deadline(
    tmp_path: Path, fake_apiserver: Callable[..., int], source: str
) -> None:
    """``check-policy --policy-from KIND:cluster`` reads the same API as a scan: its ``--deadline`` cuts those
    reads (it had none: 120 s per request, several requests) with exit 3 naming the read."""
    port = fake_apiserver(_silent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}
    cmd = [sys.executable, "-m", "scanner.cli", "check-policy", "--policy-from", source,
           "--kubeconfig", str(_kubeconfig(tmp_path, port)), "--deadline", f"{DEADLINE:g}s"]
    began = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    elapsed = time.monotonic() - began
    assert proc.returncode == 3, proc.stderr
    assert elapsed <= DEADLINE + MARGIN, f"a {DEADLINE:g} s deadline took {elapsed:.1f} s"
    assert "deadline reached" in proc.stderr and "--policy-from" in proc.stderr, proc.stderr
    assert "list " in proc.stderr, proc.stderr  # names what was being read
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
    assert SECRET not in proc.stderr + proc.stdout and proc.stdout == ""


def test_check_policy_deadline_is_parsed_as_scans(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules: []\n")
    for bad in ("0", "-3", "soon", "1x"):
        proc = subprocess.run([sys.executable, "-m", "scanner.cli", "check-policy", str(tmp_path / "policy.yaml"),
                               "--deadline", bad], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "--deadline" in proc.stderr, (bad, proc.stderr)
    ok = subprocess.run([sys.executable, "-m", "scanner.cli", "check-policy", str(tmp_path / "policy.yaml"),
                         "--deadline", "1m"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
