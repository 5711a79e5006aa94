"""What a request costs the client beyond urllib3's own work (issue 19): a socket's timeout is set
only when it changes, and a host's route (proxy or pool) is found once — with the deadline still
cutting every operation and a pool closed under the client asked for again."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from scanner.errors import RegistryError
from scanner.models import ImageReference
from scanner.registry.client import OCI_MANIFEST, Limits, RegistryClient

MANIFEST = b'{"schemaVersion": 2, "mediaType": "%s", "layers": []}' % OCI_MANIFEST.encode()
REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: " + OCI_MANIFEST.encode()
         + b"\r\nContent-Length: %d\r\n\r\n" % len(MANIFEST) + MANIFEST)


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    """A keep-alive server answering every request with REPLY; yields its host and accepted count."""
    sock = socket.create_server(("127.0.0.1", 0))
    accepted = [0]

    def run(conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                _, data = data.split(b"\r\n\r\n", 1)
                conn.sendall(REPLY)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            accepted[0] += 1
            threading.Thread(target=run, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{sock.getsockname()[1]}", accepted
    sock.close()


def test_a_kept_alive_connection_sets_its_timeout_only_when_it_changes(
    server: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, accepted = server
    calls = []
    real = socket.socket.settimeout
    monkeypatch.setattr(socket.socket, "settimeout", lambda s, t: (calls.append(t), real(s, t))[1])
    with RegistryClient(insecure_registries={host}, limits=Limits(retries=0)) as client:
        for _ in range(20):
            client.get_manifest(ImageReference(host, "app", "1", None), "1")
    assert accepted[0] == 1
    # urllib3's own two a request (the write timeout, then the read timeout) and the connect's; ours
    # (before the write and every recv, capped by the deadline) only when they change it
    assert len(calls) <= 2 * 20 + 3, calls


def test_a_pool_closed_under_the_client_is_asked_for_again(server: tuple[str, list[int]]) -> None:
    host, accepted = server
    with RegistryClient(insecure_registries={host}, limits=Limits(retries=0)) as client:
        client.get_manifest(ImageReference(host, "app", "1", None), "1")
        # a pool closed and dropped by the manager (as an evicted one might be): never used again
        client._http._direct.connection_from_host("127.0.0.1", int(host.rsplit(":", 1)[1]), "http").close()
        client._http._direct.clear()
        client.get_manifest(ImageReference(host, "app", "1", None), "1")
    assert accepted[0] == 2


def test_the_deadline_still_cuts_a_request_whose_timeout_was_left_alone(server: tuple[str, list[int]]) -> None:
    from scanner.registry import deadline

    host, _ = server
    with RegistryClient(insecure_registries={host}, limits=Limits(retries=0)) as client:
        client.get_manifest(ImageReference(host, "app", "1", None), "1")
        with deadline.within(0.0, "scan deadline reached"), pytest.raises(RegistryError, match="deadline"):
            client.get_manifest(ImageReference(host, "app", "1", None), "1")


def test_a_reply_of_declared_length_is_read_in_one_call_and_its_connection_kept(
    server: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its Content-Length is read, a reply is complete (http.client closed it, urllib3 released the
    connection): no second read that could only say b"" (issue 19, the request wrapper)."""
    import urllib3.response

    host, accepted = server
    reads: list[int | None] = []
    real = urllib3.response.HTTPResponse.read

    def counting(self: urllib3.response.HTTPResponse, amt: int | None = None, *a: object, **kw: object) -> bytes:
        reads.append(amt)
        return real(self, amt, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(urllib3.response.HTTPResponse, "read", counting)
    with RegistryClient(insecure_registries={host}, limits=Limits(retries=0)) as client:
        for _ in range(5):
            assert client.get_manifest(ImageReference(host, "app", "1", None), "1").raw == MANIFEST
    assert len(reads) == 5
    assert accepted[0] == 1  # still one kept-alive connection


def test_a_request_enters_no_generator_context_manager_and_parses_no_host_again(
    server: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """sigaudit's per-request path is plain code (issue 19: each ``@contextmanager`` use costs a
    generator, and the path had three; ``SplitResult.hostname`` / ``.port`` parse the netloc at each
    access): after a host's first request, neither runs again for it (urllib3's own are its own)."""
    import contextlib
    import urllib.parse

    host, _ = server
    entered: list[object] = []
    real_enter = contextlib._GeneratorContextManager.__enter__
    monkeypatch.setattr(contextlib._GeneratorContextManager, "__enter__",
                        lambda self: (entered.append(self.gen.gi_code.co_qualname), real_enter(self))[1])
    parsed: list[str] = []
    real_hostinfo = urllib.parse._NetlocResultMixinStr._hostinfo  # type: ignore[attr-defined]
    monkeypatch.setattr(urllib.parse._NetlocResultMixinStr, "_hostinfo",
                        property(lambda self: (parsed.append(self.netloc), real_hostinfo.fget(self))[1]))
    with RegistryClient(insecure_registries={host}, limits=Limits(retries=0)) as client:
        client.get_manifest(ImageReference(host, "app", "1", None), "1")
        entered.clear()
        parsed.clear()
        from scanner.registry import deadline

        with deadline.within(1e12, "scan deadline reached"):  # as a scan's worker runs them
            client.get_manifest(ImageReference(host, "app", "1", None), "1")
            client.head_manifest(ImageReference(host, "app", "1", None), "1")
    assert [e for e in entered if "_error_catcher" not in e] == [] and parsed == []
