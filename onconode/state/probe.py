"""A look at the state database without changing it: for ``onconode doctor``, which must not
migrate, create or claim anything (``StateDB`` migrates when it opens)."""

from __future__ import annotations

from dataclasses import dataclass

from onconode.config import StateSettings
from onconode.state.engines import Engine, open_engine
from onconode.state.records import StateError
from onconode.state.shared_storage import SET_UP_KEY


@dataclass(frozen=True)
class StateProbe:
    """What the database holds: where it is, its schema version (0: empty), its ``node_id`` and
    whether it has set up a shared storage (None and False while empty)."""

    where: str
    version: int
    node_id: str | None
    storage_set_up: bool


def probe_state(settings: StateSettings) -> StateProbe:
    """Open, read, close.

    Raises
    ------
    StateError
        When the database cannot be reached or read.
    """
    if settings.url is None and not settings.database.is_file():
        return StateProbe(f"SQLite {settings.database} (not created yet)", 0, None, False)
    target = settings.url.get_secret_value() if settings.url is not None else settings.database
    try:
        engine = open_engine(target)
    except Exception as err:  # the engine's own error types are not known before it loads
        raise StateError(f"database: {err}") from err
    try:
        return _read(engine)
    except engine.errors as err:
        raise StateError(f"database {engine.where}: {err}") from err
    finally:
        engine.close()


def _read(engine: Engine) -> StateProbe:
    version = engine.peek_schema_version()
    meta: dict[str, str] = {}
    if version >= 2:  # the meta table came with version 2
        meta = {str(k): str(v) for k, v in engine.execute("SELECT key, value FROM meta").fetchall()}
    return StateProbe(engine.where, version, meta.get("node_id"), SET_UP_KEY in meta)
