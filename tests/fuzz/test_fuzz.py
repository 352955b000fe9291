"""The ingest fuzz target (``fuzz_ingest.py``) runs clean for a bounded time: no crash, no escaped
exception, no verdict of the PDU guard that depends on how the stream was cut into reads.

``make fuzz`` runs it for longer and keeps what it finds in ``var/fuzz-corpus``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

TARGET = Path(__file__).with_name("fuzz_ingest.py")
SEEDS = Path(__file__).with_name("corpus")
SECONDS = 30  # the fuzzing itself; start-up and the seeds add a few


def test_the_ingest_fuzz_target_runs_clean(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris (the test extra) is not installed: no fuzzing")
    work = tmp_path / "corpus"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(TARGET), f"-max_total_time={SECONDS}", "-rss_limit_mb=2048", "-timeout=10",
         f"-artifact_prefix={tmp_path}/", str(work), str(SEEDS)],
        capture_output=True, text=True, timeout=SECONDS + 60, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Done" in done.stderr and not list(tmp_path.glob("crash-*"))
