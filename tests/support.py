"""Test support: start a real node process, find the shared data, send and inspect instances."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from pydicom.filereader import _read_file_meta_info, read_preamble
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from onconode import runtime
from onconode.state import StateDB, Study, StudyState

REPO = Path(__file__).resolve().parents[1]
# The tests and the benchmarks that use these helpers are processes of their own: they send files
# as stored, as the node does (STORE_SEND_CHUNKED_DATASET), and keep data set values out of the log.
runtime.configure()
T = TypeVar("T")


def data_root() -> Path | None:
    root = Path(os.environ.get("ONCONODE_DATA", REPO.parent / "shared" / "data"))
    return root if (root / "dicom").is_dir() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (CI installs it via .ci/run: apt-get install dcmtk)")
    return path


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """``check()``'s first truthy value within ``timeout`` seconds; fails the test naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its File Meta Information: the data set as sent."""
    with path.open("rb") as f:
        read_preamble(f, force=False)
        _read_file_meta_info(f)
        return f.read()


def echo_status(port: int, called_ae: str = "ONCONODE", calling_ae: str = "TESTSCU") -> int | None:
    """C-ECHO status, or None when the association is not established."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


class NodeProcess:
    """``onconode serve`` as a child process with its own config, storage and database in a folder."""

    def __init__(self, folder: Path, **overrides: Any) -> None:
        self.folder = folder
        self.port = free_port()
        config: dict[str, Any] = {
            "node": {"port": self.port},
            "storage": {"root": str(folder / "store"), "min_free_mb": 1, "results": str(folder / "results")},
            "state": {"database": str(folder / "onconode.db")},
            "study": {"stable_seconds": 1, "poll_seconds": 0.2},
            "callers": [],
            "api": {"port": free_port()},
            "audit": {"path": str(folder / "audit.jsonl")},
        }
        for section, values in overrides.items():
            if isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        self.config = config
        self.config_path = folder / "onconode.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = folder / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.config['api']['port']}"

    @property
    def audit_path(self) -> Path:
        return Path(self.config["audit"]["path"])

    @property
    def store(self) -> Path:
        return Path(self.config["storage"]["root"])

    def start(self, timeout: float = 20, serve_args: tuple[str, ...] = ()) -> None:
        """Start ``onconode serve`` (with ``serve_args``, e.g. ``("--role", "api")``); returns once it is up."""
        log = self.log_path.open("ab")
        offset = log.tell()
        self.proc = subprocess.Popen([sys.executable, "-m", "onconode", "--config", str(self.config_path), "serve",
                                      *serve_args], stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            if "event=node_started" in self.log_path.read_text()[offset:]:
                return
            time.sleep(0.05)
        raise TimeoutError(f"node not ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def receivers(self) -> list[int]:
        """The node's receiver processes (``node.receiver_processes`` > 1): its children that
        multiprocessing spawned, not its resource tracker."""
        assert self.proc is not None
        return sorted(pid for task in Path(f"/proc/{self.proc.pid}/task").iterdir()
                      for pid in map(int, _proc_text(task / "children").split())
                      if "spawn_main" in _proc_text(Path(f"/proc/{pid}/cmdline")))

    def db(self) -> StateDB:
        return StateDB(self.folder / "onconode.db")

    def study(self, study_uid: str) -> Study | None:
        db = self.db()
        try:
            return db.study(study_uid)
        finally:
            db.close()

    def wait_for_state(self, study_uid: str, state: StudyState, timeout: float = 15) -> Study:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            study = self.study(study_uid)
            if study is not None and study.state == state:
                return study
            time.sleep(0.1)
        raise AssertionError(f"study {study_uid} not {state.value} after {timeout} s: {self.study(study_uid)}")

    def stored_files(self) -> list[Path]:
        return sorted(self.store.rglob("*.dcm"))

    def leftovers(self) -> list[Path]:
        """Temporary files holding data: none may remain after any failure. (Empty ones are made
        ahead of need in ``.incoming`` while the node runs, ``durable.ReadyFiles``.)"""
        return sorted(p for p in self.store.rglob("*.tmp") if p.stat().st_size)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout: float = 10) -> str:
        """The log once it holds ``text``: an association's line is written when its connection
        closes, which may be a moment after the peer has seen the outcome."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert text in log, f"{text!r} not logged within {timeout} s: {log[-1500:]}"
        return log


def _proc_text(path: Path) -> str:
    """A /proc file's text, empty when its thread or process ended between listing and reading."""
    try:
        return path.read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""
