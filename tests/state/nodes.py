"""``onconode serve`` processes that share one state database and one storage root, with roles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onconode.state import StateDB
from tests.support import NodeProcess


class SharedNode(NodeProcess):
    """A node process of a site: its own folder (config, log), the site's state and storage."""

    def __init__(self, folder: Path, database: Path | str, store: Path, roles: list[str] | None = None,
                 **overrides: Any) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.target = database
        sections: dict[str, Any] = {
            "state": {"url": database} if isinstance(database, str) else {"database": str(database)},
            "storage": {"root": str(store), "min_free_mb": 1, "results": str(store.parent / "results")},
        }
        if roles is not None:
            sections["roles"] = roles
        for name, values in overrides.items():
            if isinstance(values, dict) and isinstance(sections.get(name), dict):
                sections[name] = {**sections[name], **values}
            else:
                sections[name] = values
        super().__init__(folder, **sections)  # with a URL, the SQLite path NodeProcess names is unused

    def db(self) -> StateDB:
        return StateDB(self.target)
