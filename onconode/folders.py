"""The files under folders, walked one way by every command that takes a folder (send, analyze).

Hidden entries below a given folder (names beginning with ".") are left out: in a storage root they
are temporary files (``.incoming``, ``.<name>.tmp``), elsewhere operating-system and editor debris,
never instances someone means to send or analyse.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path


def files_under(paths: Iterable[Path]) -> Iterator[Path]:
    """Each path that is a file, and the files under each folder (recursively, sorted).

    Raises
    ------
    FileNotFoundError
        For a path that is neither a file nor a folder.
    """
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*")
                              if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
