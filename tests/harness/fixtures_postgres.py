"""A real PostgreSQL server for the store tests, and database URL fixtures.

``postgres_server`` (session): initdb + pg_ctl start of PostgreSQL 15 from Debian's packages, on
127.0.0.1 and a free port, unix sockets in its own temporary directory, trust authentication. As root,
the server runs as the ``postgres`` user (initdb refuses root). Stopped and removed at teardown.
``postgres_url`` (function): a fresh, empty database per test.
``sqlite_url`` (function): a SQLite file in the test's tmp_path.
``db_url`` (function, parametrised): each test runs on both.

Missing binaries: the tests fail when ``CI`` is set and are skipped otherwise.

tests/conftest.py registers this module as a plugin. The server is a process-wide singleton, so a
module that also imports these fixtures still shares the one server.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_VERSION_PREFERRED = "15"


def _need(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI but missing", pytrace=False)
    pytest.skip(f"{what} is missing")


def find_pg_bin() -> Path | None:
    explicit = os.environ.get("SIGAUDIT_PG_BIN")
    if explicit:
        return Path(explicit) if (Path(explicit) / "initdb").exists() else None
    preferred = Path(f"/usr/lib/postgresql/{PG_VERSION_PREFERRED}/bin")
    if (preferred / "initdb").exists():
        return preferred
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    bin_dir: Path
    base: Path
    port: int
    host: str = "127.0.0.1"
    user: str = "postgres"
    _as_postgres: bool = False
    _refs: int = 0
    _running: bool = False

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.base, user="postgres", group="postgres")
        os.chmod(self.base, 0o700)
        done = self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                         "--locale=C", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}\n{done.stderr}")
        options = (f"-c listen_addresses={self.host} -p {self.port} -k {self.base} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        done = self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                         "-o", options)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stdout}\n{done.stderr}\n{log}")
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")
            self._running = False
        shutil.rmtree(self.base, ignore_errors=True)

    def admin(self) -> Any:
        """An autocommit psycopg connection to the ``postgres`` database, as the superuser."""
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres",
                               autocommit=True, connect_timeout=10)

    def create_database(self) -> str:
        name = f"db_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_SERVER: PostgresServer | None = None


def _acquire_server() -> PostgresServer:
    global _SERVER
    if _SERVER is None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            _need("PostgreSQL server binaries (Debian package postgresql)")
            raise AssertionError("unreachable")
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            _need("runuser (to run PostgreSQL as the postgres user)")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _need("psycopg (pip install 'psycopg[binary]')")
        base = Path(tempfile.mkdtemp(prefix="sigaudit-pg-", dir="/tmp"))
        server = PostgresServer(bin_dir=bin_dir, base=base, port=_free_port())
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        atexit.register(server.stop)
        _SERVER = server
    _SERVER._refs += 1
    return _SERVER


def _release_server(server: PostgresServer) -> None:
    global _SERVER
    server._refs -= 1
    if server._refs <= 0:
        server.stop()
        _SERVER = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = _acquire_server()
    try:
        yield server
    finally:
        _release_server(server)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        # Wait a moment for test connections being closed, then force the rest out.
        deadline = time.monotonic() + 5
        while True:
            try:
                postgres_server.drop_database(name)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sigaudit.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))
