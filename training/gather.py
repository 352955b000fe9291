"""Rebuild the training data from its manifest: ``python -m training.gather chest-ct|brain-mr``.

Input: ``training/sources/<model>.yaml`` (every series: repository@commit, paths, identity, licence,
label source) and local git snapshots of those repositories (the search tool's ``fetch`` leaves
them under ``/work/.mirror/<owner>+<name>/repo/.git``; ``--mirrors`` points elsewhere). Output: the
files, byte for byte as committed, under ``$ONCONODE_TRAINING_DATA/<model>/<key>/`` (default
``data/training``, git-ignored).

Why from git objects at a named commit rather than a working tree: the commit pins the bytes, so
anyone with the same repositories rebuilds exactly the same data, and a repository that later moves
its files to Git LFS (as concept-to-clinic did) still yields them at the recorded commit.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DEFAULT_MIRRORS = Path(os.environ.get("ONCONODE_MIRRORS", "/work/.mirror"))


def training_root() -> Path:
    """``$ONCONODE_TRAINING_DATA``, else ``data/training`` under the working directory."""
    return Path(os.environ.get("ONCONODE_TRAINING_DATA", "data/training"))


def sources_dir() -> Path:
    """``$ONCONODE_TRAINING_SOURCES``, else ``training/sources``: the data manifests."""
    return Path(os.environ.get("ONCONODE_TRAINING_SOURCES", Path(__file__).parent / "sources"))


def load_sources(model: str) -> dict[str, Any]:
    """The manifest of one model's training data, as written in ``training/sources/<model>.yaml``."""
    data = yaml.safe_load((sources_dir() / f"{model}.yaml").read_text())
    if not isinstance(data, dict) or "series" not in data:
        raise ValueError(f"training/sources/{model}.yaml: expected a mapping with a 'series' list")
    return data


def git_dir(mirrors: Path, repo: str) -> Path:
    """The snapshot's git directory: ``repo/.git`` for a work-tree snapshot, ``repo`` for a bare one
    (``fetch`` delivers both kinds)."""
    root = mirrors / repo.replace("/", "+") / "repo"
    return root if not (root / ".git").is_dir() and (root / "HEAD").is_file() else root / ".git"


def _git(gdir: Path, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={gdir}", *args], check=True, capture_output=True).stdout


def files_of(gdir: Path, commit: str, path: str) -> list[str]:
    """Every file at ``commit`` under ``path`` (a file or a folder), sorted."""
    out = _git(gdir, "ls-tree", "-r", "--name-only", "-z", commit, "--", path)
    return sorted(p for p in out.decode().split("\0") if p)


def local_name(root: str, name: str) -> Path:
    """Where a repository file lands inside the series folder: a listed file by its own name, a file
    inside a listed folder by its path below that folder."""
    return Path(name).relative_to(Path(root).parent if name == root else root)


def local_path(entry: dict[str, Any], name: str, dest: Path) -> Path:
    """The gathered copy of ``name`` (a repository path equal to, or below, one of ``entry['paths']``).

    Raises
    ------
    ValueError
        If ``name`` is under none of the entry's paths.
    """
    for root in entry["paths"]:
        if name == root or name.startswith(root.rstrip("/") + "/"):
            return dest / local_name(root, name)
    raise ValueError(f"{entry['key']}: {name} is not under any of its paths")


def gather_series(entry: dict[str, Any], mirrors: Path, dest: Path) -> int:
    """Copy one series' files into ``dest``; returns how many were written (0 when already there).

    Each entry names ``repo``, ``commit`` and ``paths`` (files or folders: a CT folder and, for
    contour labels, the RTSTRUCT file); ``sha256`` (optional) maps a path to the hash the bytes must
    have. Two repository files that would land on the same local name stop the entry.
    """
    gdir = git_dir(mirrors, entry["repo"])
    if not gdir.is_dir():
        raise FileNotFoundError(f"{entry['key']}: no snapshot of {entry['repo']} at {gdir} (fetch it first)")
    written = 0
    claimed: dict[Path, str] = {}
    for root in entry["paths"]:
        found = files_of(gdir, entry["commit"], root)
        if not found:
            raise FileNotFoundError(f"{entry['key']}: {entry['repo']}@{entry['commit'][:8]} has no {root}")
        for name in found:
            target = dest / local_name(root, name)
            if claimed.setdefault(target, name) != name:
                raise ValueError(f"{entry['key']}: {name} and {claimed[target]} would both be {target}")
            if target.is_file():
                continue
            try:
                data = _git(gdir, "show", f"{entry['commit']}:{name}")
            except subprocess.CalledProcessError as err:
                raise FileNotFoundError(f"{entry['key']}: the snapshot lacks the bytes of {name} (files of 4 MiB "
                                        "and more, and Git LFS content, are not in snapshots)") from err
            want = (entry.get("sha256") or {}).get(name)
            if want and hashlib.sha256(data).hexdigest() != want:
                raise ValueError(f"{entry['key']}: {name} does not have the recorded sha256")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written += 1
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--mirrors", type=Path, default=DEFAULT_MIRRORS)
    parser.add_argument("--only", nargs="*", help="series keys to gather (default: all in the manifest)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sources = load_sources(args.model)
    out = training_root() / args.model
    for entry in sources["series"]:
        if args.only and entry["key"] not in args.only:
            continue
        written = gather_series(entry, args.mirrors, out / entry["key"])
        log.info("series=%s files_written=%d", entry["key"], written)


if __name__ == "__main__":
    main()
