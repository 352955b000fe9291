"""A private PostgreSQL cluster for tests and benches: ``initdb`` and ``pg_ctl`` in a temporary
folder, on a free loopback port, trust authentication on loopback only, stopped at the end.

The server binaries come from Debian's ``postgresql`` package (``.ci/run`` installs it): ``initdb``
on the PATH, else the newest ``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as
root, so under root the cluster runs as the ``postgres`` user the package creates. Each test gets
a database of its own (``Cluster.database``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import free_port

_SKIP = ("PostgreSQL server binaries (initdb, pg_ctl) not found: .ci/run installs them "
         "(apt-get install postgresql)")


def server_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                         if p.parent.name.isdigit() else 0, reverse=True)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


@dataclass
class Cluster:
    folder: Path
    port: int
    bin: Path
    _run_as: list[str] = field(default_factory=list)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def database(self) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``, else SIGTERM to the postmaster) and remove the folder."""
        pid_file = self.folder / "data" / "postmaster.pid"
        try:
            subprocess.run([*self._run_as, str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast",
                            "-w", "stop"], capture_output=True, check=False, timeout=60)
        finally:
            if pid_file.exists():  # pg_ctl could not stop it: the postmaster's own fast shutdown
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
                deadline = time.monotonic() + 30
                while pid_file.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
            shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster(options: dict[str, str] | None = None) -> Cluster:
    """initdb and start a cluster; ``options`` are server settings (``-c name=value``).

    Raises
    ------
    FileNotFoundError
        When the server binaries are not installed.
    RuntimeError
        When initdb or the start fails (its log is in the message).
    """
    binaries = server_binaries()
    if binaries is None:
        raise FileNotFoundError(_SKIP)
    folder = Path(tempfile.mkdtemp(prefix="onconode-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    init = subprocess.run([*run_as, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                           "-E", "UTF8", "--no-locale", "--no-sync"], capture_output=True, text=True, check=False)
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr[-2000:]}")
    port = free_port()
    settings = {"listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": str(folder),
                "max_connections": "200", **(options or {})}
    server_options = " ".join(f"-c {k}={v}" for k, v in settings.items())
    start = subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"),
                            "-w", "-t", "60", "-o", server_options, "start"], capture_output=True, text=True,
                           check=False)
    if start.returncode != 0:
        log = (folder / "server.log").read_text() if (folder / "server.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {start.stderr[-1000:]} {log[-2000:]}")
    return Cluster(folder, port, binaries, run_as)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One PostgreSQL cluster for the test session (skipped, with the reason, when not installed)."""
    if server_binaries() is None:
        pytest.skip(_SKIP)
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres: Cluster) -> Iterator[str]:
    """A fresh database of the session's cluster, dropped after the test."""
    url = postgres.database()
    yield url
    postgres.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """What ``StateDB`` opens, once per engine: a SQLite file, a PostgreSQL database's URL."""
    if request.param == "sqlite":
        return tmp_path / "state.db"
    url: str = request.getfixturevalue("postgres_url")
    return url
