"""A state database reached behind ``StateDB``'s back, as an older OncoNode or an operator would."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg


def execute(target: Path | str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (``?`` placeholders) on a SQLite file or a PostgreSQL URL and commit."""
    if isinstance(target, Path):
        conn = sqlite3.connect(target)
        try:
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    with psycopg.connect(target, autocommit=True) as pg:
        cursor = pg.execute(sql.replace("?", "%s"), params or None)
        return cursor.fetchall() if cursor.description else []


def script(target: Path | str, statements: Sequence[str]) -> None:
    for statement in statements:
        execute(target, statement)


def schema_version(target: Path | str) -> int:
    if isinstance(target, Path):
        return int(execute(target, "PRAGMA user_version")[0][0])
    return int(execute(target, "SELECT version FROM schema_version")[0][0])


def set_schema_version(target: Path | str, version: int) -> None:
    if isinstance(target, Path):
        execute(target, f"PRAGMA user_version={int(version)}")
    else:
        execute(target, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        execute(target, "DELETE FROM schema_version")
        execute(target, "INSERT INTO schema_version (version) VALUES (?)", (version,))
