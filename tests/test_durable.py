"""Durable files on a real file system: final name, no temporary left, page cache given back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from onconode.durable import DurableFile, prefetch
from tests.support import require, wait_for

DATA = os.urandom(1 << 20)


def _cached_bytes(path: Path) -> int:
    """Bytes of ``path`` in the page cache, as util-linux fincore (mincore(2)) reports them."""
    out = subprocess.run([require("fincore"), "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_commit_makes_the_file_final_and_leaves_its_pages_out_of_the_cache(tmp_path: Path) -> None:
    written = tmp_path / "plain.bin"
    written.write_bytes(DATA)
    if _cached_bytes(written) == 0:
        pytest.skip("this file system keeps no page cache for new files; nothing to measure")

    final = tmp_path / "study" / "series" / "instance.dcm"
    DurableFile(tmp_path).commit(DATA, final, root=tmp_path)

    assert _cached_bytes(final) == 0  # given back once durable: a plain write above stayed cached
    assert final.read_bytes() == DATA  # read back from the disk
    assert not list(tmp_path.rglob(".*.tmp"))


def test_prefetch_brings_durable_files_back_into_the_cache_and_skips_missing_ones(tmp_path: Path) -> None:
    probe = tmp_path / "plain.bin"
    probe.write_bytes(DATA)
    if _cached_bytes(probe) == 0:
        pytest.skip("this file system keeps no page cache for new files; nothing to measure")
    finals = [tmp_path / "study" / f"{n}.dcm" for n in range(3)]
    for final in finals:
        DurableFile(tmp_path).commit(DATA, final, root=tmp_path)
    assert all(_cached_bytes(f) == 0 for f in finals)

    prefetch([*finals, tmp_path / "gone.dcm"])

    wait_for(lambda: all(_cached_bytes(f) == len(DATA) for f in finals) or None, timeout=10,
             what="the prefetched files in the page cache")
