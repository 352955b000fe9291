"""Soak benchmark: real studies over concurrent associations while hostile connections keep coming.

Starts ``onconode serve`` (with the receiver processes config/onconode.yaml ships, short network and
handshake timeouts), makes ``--studies`` studies of ``--slices`` CT slices from one real slice (new
UIDs each) and sends them over ``--associations`` concurrent associations (pynetdicom, each file's
bytes unchanged). Meanwhile a hostile connection arrives every ``--hostile-every`` seconds, in
turn: silent; a stalled A-ASSOCIATE-RQ header; an A-ASSOCIATE-RQ announcing 4 GiB; an association
then a P-DATA-TF announcing 4 GiB; an unknown PDU type; a zero-length P-DATA-TF; a PDU trickled a
byte at a time; a data set past ``node.max_dataset_bytes``.

Prints, for every node process (the node and each receiver) at the start and at the end: RSS,
open files and threads; then instances acknowledged (Success answers) against instances stored
(files) and indexed (rows), and how the hostile connections ended. Not a test: it asserts nothing
and takes a minute or so. Run: ``.venv/bin/python bench/soak.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from onconode import runtime
from onconode.config import load_settings
from onconode.dicom_node.scu import PeerAddress, SendError, echo, send_paths

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ONCONODE_DATA", REPO.parent / "shared" / "data"))
SOURCE = DATA / "dicom" / "lidc-idri-0001" / "IM-0067.dcm"
RECEIVER_PROCESSES = load_settings(REPO / "config" / "onconode.yaml").node.receiver_processes
TIMEOUT = 3.0  # node.network_timeout_seconds and node.handshake_timeout_seconds during the soak
MAX_DATASET = 4 << 20


@dataclass(frozen=True)
class ProcessFigures:
    pid: int
    name: str
    rss_mib: float
    open_files: int
    threads: int


def figures(pid: int, name: str) -> ProcessFigures:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return ProcessFigures(pid, name, int(status["VmRSS"].split()[0]) / 1024, len(os.listdir(f"/proc/{pid}/fd")),
                          int(status["Threads"]))


def node_processes(node: subprocess.Popen[bytes]) -> list[tuple[int, str]]:
    children = [int(c) for task in Path(f"/proc/{node.pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    receivers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    return [(node.pid, "node")] + [(pid, f"receiver {i}") for i, pid in enumerate(sorted(receivers))]


def print_figures(label: str, node: subprocess.Popen[bytes]) -> None:
    print(f"\n{label}:")
    print(f"  {'process':<12}{'pid':>8}{'RSS MiB':>10}{'open files':>12}{'threads':>9}")
    for pid, name in node_processes(node):
        f = figures(pid, name)
        print(f"  {f.name:<12}{f.pid:>8}{f.rss_mib:>10.1f}{f.open_files:>12}{f.threads:>9}")


def make_studies(folder: Path, studies: int, slices: int) -> list[list[Path]]:
    ds = pydicom.dcmread(SOURCE)
    made = []
    for s in range(studies):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        paths = []
        for i in range(slices):
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = i + 1
            path = folder / f"s{s:03d}" / f"{i:04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        made.append(paths)
    return made


# --- hostile connections (PS3.8 9.3 byte for byte) ------------------------------------------------

def _associate_rq() -> bytes:
    def item(kind: int, value: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(value)) + value
    body = struct.pack(">HH16s16s32s", 1, 0, b"ONCONODE".ljust(16), b"HOSTILE".ljust(16), b"\0" * 32)
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    body += item(0x20, b"\x01\0\0\0" + item(0x30, b"1.2.840.10008.1.1") + item(0x40, b"1.2.840.10008.1.2"))
    body += item(0x50, item(0x51, struct.pack(">I", 16384)))
    return struct.pack(">BBI", 1, 0, len(body)) + body


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT * 4)


def _associated(port: int) -> socket.socket:
    sock = _connect(port)
    sock.sendall(_associate_rq())
    sock.recv(65536)  # the A-ASSOCIATE-AC
    return sock


def _silent(port: int) -> socket.socket:
    return _connect(port)


def _stalled_header(port: int) -> socket.socket:
    sock = _connect(port)
    sock.sendall(_associate_rq()[:6])
    return sock


def _huge_request(port: int) -> socket.socket:
    sock = _connect(port)
    sock.sendall(struct.pack(">BBI", 1, 0, 0xFFFFFFFF))
    return sock


def _huge_p_data(port: int) -> socket.socket:
    sock = _associated(port)
    sock.sendall(struct.pack(">BBI", 4, 0, 0xFFFFFFFF))
    return sock


def _unknown_type(port: int) -> socket.socket:
    sock = _associated(port)
    sock.sendall(struct.pack(">BBI", 9, 0, 4) + b"\0" * 4)
    return sock


def _empty_p_data(port: int) -> socket.socket:
    sock = _associated(port)
    sock.sendall(struct.pack(">BBI", 4, 0, 0))
    return sock


def _trickle(port: int) -> socket.socket:
    sock = _associated(port)
    for byte in struct.pack(">BBI", 4, 0, 100) + b"\0" * 20:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.5)
    return sock


def _oversized_data_set(port: int) -> socket.socket:
    sock = _associated(port)
    fragment = struct.pack(">BBIIBB", 4, 0, 65536 + 6, 65536 + 2, 1, 0x00) + bytes(65536)
    try:
        for _ in range(2 * MAX_DATASET // 65536):
            sock.sendall(fragment)
    except OSError:
        pass
    return sock


HOSTILE: list[Callable[[int], socket.socket]] = [
    _silent, _stalled_header, _huge_request, _huge_p_data, _unknown_type, _empty_p_data, _trickle,
    _oversized_data_set]


def hostile_loop(port: int, every: float, stop: threading.Event, held: dict[str, list[float]]) -> None:
    """One hostile connection every ``every`` seconds, each waited on (in its own thread) until the
    node drops it; ``held[kind]`` gets how long each was held, ``inf`` for one the node kept."""
    def run(attack: Callable[[int], socket.socket]) -> None:
        start = time.monotonic()
        seconds = float("inf")
        try:
            sock = attack(port)
            sock.settimeout(TIMEOUT * 4)
            while sock.recv(65536):
                pass
            seconds = time.monotonic() - start
        except TimeoutError:
            pass
        except OSError:  # reset: dropped
            seconds = time.monotonic() - start
        held.setdefault(attack.__name__.strip("_"), []).append(seconds)

    threads = []
    for attack in itertools.cycle(HOSTILE):
        if stop.wait(every):
            break
        thread = threading.Thread(target=run, args=(attack,), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(TIMEOUT * 6)


def start_node(work: Path, port: int) -> subprocess.Popen[bytes]:
    config = work / "onconode.yaml"
    config.write_text(json.dumps({
        "node": {"port": port, "receiver_processes": RECEIVER_PROCESSES, "network_timeout_seconds": TIMEOUT,
                 "handshake_timeout_seconds": TIMEOUT, "max_dataset_bytes": MAX_DATASET},
        "storage": {"root": str(work / "store"), "min_free_mb": 0},
        "state": {"database": str(work / "onconode.db")}, "study": {"stable_seconds": 3600}, "callers": [],
        "routing": [], "api": {"enabled": False}, "audit": {"path": None}, "log": {"level": "WARNING"}}))
    proc = subprocess.Popen([sys.executable, "-m", "onconode", "--config", str(config), "serve"], cwd=work,
                            stderr=(work / "node.log").open("wb"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if echo(PeerAddress("ONCONODE", "127.0.0.1", port)) == 0:
                return proc
        except SendError:  # not listening yet
            time.sleep(0.2)
    raise TimeoutError("the node did not answer C-ECHO")


def main() -> int:
    runtime.configure()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--associations", type=int, default=4)
    parser.add_argument("--hostile-every", type=float, default=1.0, help="seconds between hostile connections")
    parser.add_argument("--port", type=int, default=11790)
    args = parser.parse_args()
    if not SOURCE.is_file():
        print(f"shared data not found at {DATA} (set ONCONODE_DATA)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="onconode-soak-",
                                     dir=REPO / "var" if (REPO / "var").is_dir() else None) as tmp:
        work = Path(tmp)
        studies = make_studies(work / "studies", args.studies, args.slices)
        node = start_node(work, args.port)
        try:
            time.sleep(2)  # the node's start-up work (imports in the background) settles
            print_figures("start", node)
            stop, held = threading.Event(), dict[str, list[float]]()
            hostile = threading.Thread(target=hostile_loop, args=(args.port, args.hostile_every, stop, held))
            hostile.start()
            acknowledged: list[int] = []
            peer = PeerAddress("ONCONODE", "127.0.0.1", args.port)

            def send(share: list[list[Path]]) -> None:
                report = send_paths([p for study in share for p in study], peer)
                acknowledged.append(report.sent)

            start = time.monotonic()
            senders = [threading.Thread(target=send, args=(studies[i::args.associations],))
                       for i in range(args.associations)]
            for thread in senders:
                thread.start()
            for thread in senders:
                thread.join()
            seconds = time.monotonic() - start
            stop.set()
            hostile.join()
            time.sleep(TIMEOUT + 1)  # what the hostile connections left is gone
            print_figures("end", node)
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(30)
        stored = len(list((work / "store").rglob("*.dcm")))
        with sqlite3.connect(work / "onconode.db") as db:
            indexed = db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        total = args.studies * args.slices
        print(f"\n{args.studies} studies x {args.slices} slices over {args.associations} associations in "
              f"{seconds:.1f} s ({total / seconds:.0f} images/s), a hostile connection every {args.hostile_every} s")
        print(f"instances sent {total}, acknowledged {sum(acknowledged)}, stored {stored}, indexed {indexed}")
        print(f"hostile connections (node timeouts {TIMEOUT} s): kind, count, dropped, longest held")
        for kind, seconds in sorted(held.items()):
            dropped = [s for s in seconds if s != float("inf")]
            print(f"  {kind:<20}{len(seconds):>4}{len(dropped):>4}{max(dropped, default=0):>8.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
