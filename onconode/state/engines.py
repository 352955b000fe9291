"""The two engines behind ``StateDB``: SQLite (embedded, one host) and PostgreSQL (several hosts).

Queries are written once, in the SQL both engines share (``INSERT ... ON CONFLICT``, ``RETURNING``),
with ``?`` placeholders and PostgreSQL's row locks (``FOR UPDATE``, ``FOR UPDATE SKIP LOCKED``). On
PostgreSQL the placeholders become ``%s``. On SQLite the row locks are dropped: each of its
transactions starts with ``BEGIN IMMEDIATE``, which takes the database's one write lock, so its
writers are serialised already and a claim cannot be taken twice.

Each engine holds one connection; ``Database`` serialises its use between threads.
"""

from __future__ import annotations

import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from onconode.state.schema import Migration

Params = Sequence[Any]
# The PostgreSQL lock a starting process takes before it reads or changes the schema version, so
# that processes starting together migrate once (pg_advisory_xact_lock: held until the commit).
_SCHEMA_LOCK = 0x6F6E636F  # "onco"
_ROW_LOCK = re.compile(r"\s+FOR UPDATE(\s+SKIP LOCKED)?")


class Rows(Protocol):
    """What a query returns on either engine (a DB-API cursor)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Engine(ABC):
    """One connection to one database, in the dialect that engine speaks."""

    name: str
    errors: tuple[type[Exception], ...]

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> Rows:
        """Run one statement written in the shared dialect (see the module docstring)."""

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Params]) -> None: ...

    @abstractmethod
    def transaction(self, lazy: bool = False) -> Any:
        """A context manager: one transaction, committed on exit, rolled back on an exception.

        ``lazy``: the commit need not wait for the engine's log to reach the disk (the instance
        index: the files are the source of truth and are re-indexed at start).
        """

    @abstractmethod
    def migration_script(self, step: Migration) -> str: ...

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version, read inside the migration transaction (which locks it)."""

    @abstractmethod
    def set_schema_version(self, version: int) -> None: ...

    @abstractmethod
    def peek_schema_version(self) -> int:
        """The schema version, read without locking or creating anything (``onconode doctor``)."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def where(self) -> str:
        """The database, named for a person, without a password."""


@lru_cache(maxsize=1024)
def _for_sqlite(sql: str) -> str:
    return _ROW_LOCK.sub("", sql)


@lru_cache(maxsize=1024)
def _for_postgresql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class SQLiteEngine(Engine):
    """A SQLite file in WAL mode: readers never wait for the writer, one writer at a time."""

    name = "sqlite"
    errors = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=30000")

    def execute(self, sql: str, params: Params = ()) -> Rows:
        return self._conn.execute(_for_sqlite(sql), params)

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self._conn.executemany(_for_sqlite(sql), rows)

    @contextmanager
    def transaction(self, lazy: bool = False) -> Iterator[None]:
        # The write lock now, not at the first write. ``lazy`` is every commit here (synchronous=NORMAL).
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def migration_script(self, step: Migration) -> str:
        return step.sqlite

    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self._conn.execute(f"PRAGMA user_version={int(version)}")

    def peek_schema_version(self) -> int:
        return self.schema_version()

    def close(self) -> None:
        self._conn.close()

    @property
    def where(self) -> str:
        return f"SQLite {self._path}"


class PostgreSQLEngine(Engine):
    """A PostgreSQL connection (psycopg 3) in autocommit mode: a read is its own statement, and a
    transaction is opened explicitly. A broken connection (a server restart) is opened again at
    the next use; the statement that found it broken fails with ``StateError``."""

    name = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.errors = (psycopg.Error,)
        self._url = url
        self._conn = self._connect()

    def _connect(self) -> Any:
        # lock_timeout: a transaction waits for a row lock as long as SQLite's busy timeout.
        return self._psycopg.connect(self._url, autocommit=True, connect_timeout=10, application_name="onconode",
                                     options="-c lock_timeout=30000")

    def _connection(self) -> Any:
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def execute(self, sql: str, params: Params = ()) -> Rows:
        rows: Rows = self._connection().execute(_for_postgresql(sql), params or None)
        return rows

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        with self._connection().cursor() as cursor:
            cursor.executemany(_for_postgresql(sql), rows)

    @contextmanager
    def transaction(self, lazy: bool = False) -> Iterator[None]:
        # By hand rather than psycopg's transaction(): the setting goes with BEGIN, in one round trip.
        conn = self._connection()
        conn.execute("BEGIN; SET LOCAL synchronous_commit TO OFF" if lazy else "BEGIN")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if not conn.closed and not conn.broken:
                conn.execute("ROLLBACK")
            raise

    def migration_script(self, step: Migration) -> str:
        return step.postgresql

    def schema_version(self) -> int:
        conn = self._connection()
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def peek_schema_version(self) -> int:
        conn = self._connection()
        if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
            return 0
        return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)

    def set_schema_version(self, version: int) -> None:
        conn = self._connection()
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))

    def close(self) -> None:
        self._conn.close()

    @property
    def where(self) -> str:
        return describe_url(self._url)


def describe_url(url: str) -> str:
    """``PostgreSQL user@host:port/dbname``: the URL without its password."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except ProgrammingError:  # never quoted: an unparsable URL may still hold a password
        return "PostgreSQL (unparsable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"PostgreSQL {user}{parts.get('host') or 'localhost'}{port}/{parts.get('dbname') or ''}"


def open_engine(target: Path | str) -> Engine:
    """SQLite for a path, PostgreSQL for a ``postgresql://`` URL."""
    if isinstance(target, str):
        return PostgreSQLEngine(target)
    return SQLiteEngine(target)
