"""Ingest benchmark: OncoNode vs DCMTK storescp vs Orthanc, on loopback, in the same run.

Makes N CT slices of 512x512 from one real slice (new UIDs each), then sends them with DCMTK
storescu (TCP_NODELAY=1, the same sender for every receiver) over one association and over four
concurrent associations to:
  (a) OncoNode (fsync + rename + index before Success), with the receiver processes that
      config/onconode.yaml ships (node.receiver_processes),
  (b) storescp with TCP_NODELAY=1 (writes files, no fsync),
  (c) Orthanc with TCP_NODELAY=1 (its own SQLite index and storage area),
  (d) a bare pynetdicom SCP that only writes durably (bench/bare_pynetdicom_scp.py): the share of
      the time that is pynetdicom's own, not OncoNode's checks and index,
and prints images/s, MB/s and the receiver's CPU per image for each, OncoNode's ratios, and the
physical floor for durable ingest: this disk's own write+fsync+rename(+folder fsync) rate for the
same files. CPU per image (the receiver's processes together) is steadier than images/s on a
shared machine. Each receiver is sent to once its start-up work is over (its CPU idle) and the file
system has written back what earlier steps left dirty: the steady state is measured, not the start,
and no run pays for another's files.

Everything is measured --rounds times (default 4) and the median is printed with its range; each
ratio is taken within a round (same machine state) before its median. This machine's rates vary
by tens of percent from run to run.

Not a test: no assertion on time. Run: `make bench` or `.venv/bin/python bench/ingest.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import pydicom
from pydicom.uid import generate_uid

from onconode.config import load_settings

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ONCONODE_DATA", REPO.parent / "shared" / "data"))
SOURCE = DATA / "dicom" / "lidc-idri-0001" / "IM-0067.dcm"
ENV = {**os.environ, "TCP_NODELAY": "1"}
# OncoNode runs with the receiver processes config/onconode.yaml ships (associations over several interpreters).
RECEIVER_PROCESSES = load_settings(REPO / "config" / "onconode.yaml").node.receiver_processes


@dataclass(frozen=True)
class Result:
    target: str
    associations: int
    seconds: float
    count: int
    megabytes: float
    cpu_seconds: float | None = None  # the receiver's user+system CPU (threads and reaped children)

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.megabytes / self.seconds

    @property
    def cpu_ms_per_instance(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds * 1000 / self.count


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, of the children it has reaped (storescp --fork) and of those still
    running (OncoNode's receiver processes), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = {int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()}
    except FileNotFoundError:  # it has just exited: its parent's reaped-children fields count it
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK") + sum(map(cpu_seconds, children))


def make_slices(folder: Path, count: int, groups: int) -> list[Path]:
    """``count`` copies of a real CT slice, each with new SOP Instance UIDs, in ``groups`` sub-folders."""
    ds = pydicom.dcmread(SOURCE)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        sub = folder / f"g{i % groups}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def fsync_floor(files: list[Path], target: Path, writers: int) -> float:
    """Seconds to write the same files durably the way OncoNode must (temp, fsync, rename, fsync of the
    folder), with as many concurrent writers as there are associations."""
    blobs = [f.read_bytes() for f in files]
    target.mkdir(parents=True)

    def write(shard: int) -> None:
        folder = target / f"w{shard}"
        folder.mkdir()
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        for i in range(shard, len(blobs), writers):
            temp = folder / f".{i}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            os.write(fd, blobs[i])
            os.fdatasync(fd)
            os.close(fd)
            os.replace(temp, folder / f"{i}.dcm")
            os.fsync(dir_fd)
        os.close(dir_fd)

    start = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers)))
    return time.perf_counter() - start


def wait_until_idle(pid: int, timeout: float = 30) -> None:
    """Until the receiver's start-up work is over (OncoNode imports its reporting libraries in the
    background, about 2 s of CPU): ingest is measured in the steady state, for every receiver alike."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - before < 0.02:  # under 4% of a core over half a second
            return
        before = now
    raise TimeoutError(f"receiver {pid} still busy after {timeout} s")


def wait_for_echo(port: int, ae: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["echoscu", "-aet", "BENCH", "-aec", ae, "127.0.0.1", str(port)],
                          capture_output=True, env=ENV, check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{ae} on {port} did not answer C-ECHO")


def send(port: int, ae: str, folders: list[Path]) -> float:
    """storescu, one association per folder, all at once; seconds until the last one finishes."""
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", "BENCH", "-aec", ae, "+sd", "127.0.0.1", str(port), str(f)],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for f in folders]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"storescu to {ae} failed: {err.decode()[-500:]}")
    return time.perf_counter() - start


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_onconode(work: Path, port: int) -> subprocess.Popen[bytes]:
    config = work / "onconode.yaml"
    config.write_text(json.dumps({
        "node": {"port": port, "receiver_processes": RECEIVER_PROCESSES},
        "storage": {"root": str(work / "store"), "min_free_mb": 0},
        "state": {"database": str(work / "onconode.db")}, "study": {"stable_seconds": 3600}, "callers": [],
        "log": {"level": "WARNING"}}))
    proc = subprocess.Popen([sys.executable, "-m", "onconode", "--config", str(config), "serve"], cwd=work)
    wait_for_echo(port, "ONCONODE")
    return proc


def start_storescp(work: Path, port: int) -> subprocess.Popen[bytes]:
    (work / "in").mkdir(parents=True)
    proc = subprocess.Popen(["storescp", "--fork", "-aet", "STORESCP", "-od", str(work / "in"), str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_echo(port, "STORESCP")
    return proc


def start_orthanc(work: Path, port: int) -> subprocess.Popen[bytes]:
    http = port + 1
    work.mkdir(parents=True, exist_ok=True)
    (work / "orthanc.json").write_text(json.dumps({
        "Name": "BenchPACS", "StorageDirectory": "db", "IndexDirectory": "db", "DicomAet": "ORTHANC",
        "DicomPort": port, "HttpPort": http, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": True, "StableAge": 3600, "SaveJobs": False}))
    proc = subprocess.Popen(["Orthanc", "orthanc.json"], cwd=work, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/system", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    wait_for_echo(port, "ORTHANC")
    return proc


def start_bare_pynetdicom(work: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "bare_pynetdicom_scp.py"), str(port),
                             str(work / "in")])
    wait_for_echo(port, "BARESCP")
    return proc


TARGETS = {"onconode": ("ONCONODE", start_onconode), "storescp": ("STORESCP", start_storescp),
           "orthanc": ("ORTHANC", start_orthanc), "pynetdicom": ("BARESCP", start_bare_pynetdicom)}


def balanced_order(names: list[str], turn: int) -> list[str]:
    """The receivers' order in round ``turn`` (a Williams design): over len(names) rounds each runs
    once in every place and once right after every other. A run can leave the machine slower for the
    next one (here OncoNode has spent four times the kernel CPU per image right after the bare
    pynetdicom SCP), so no receiver may always follow the same one."""
    n = len(names)
    offsets = [0] + [(k + 1) // 2 if k % 2 else n - k // 2 for k in range(1, n)]
    return [names[(turn + offset) % n] for offset in offsets]


def measure_round(root: Path, count: int, base_port: int, turn: int) -> list[Result]:
    """The fsync floor and every receiver, over 1 and then 4 associations, each on fresh UIDs, in
    the order ``balanced_order`` gives round ``turn``."""
    results: list[Result] = []
    names = list(TARGETS)
    order = balanced_order(names, turn)
    for associations in (1, 4):
        files = make_slices(root / f"slices-{associations}", count, associations)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        folders = sorted({f.parent for f in files})
        os.sync()
        results.append(Result("fsync floor", associations,
                              fsync_floor(files, root / f"floor-{associations}", associations), len(files), megabytes))
        for name in order:
            ae, start = TARGETS[name]
            port = base_port + 10 * names.index(name) + associations
            work = root / f"{name}-{associations}"
            work.mkdir()
            proc = start(work, port)
            try:
                wait_until_idle(proc.pid)
                os.sync()  # no run pays for the write-back of the files an earlier step left dirty
                cpu_before = cpu_seconds(proc.pid)
                seconds = send(port, ae, folders)
                time.sleep(0.2)  # storescp reaps its forked children on its next loop
                cpu = cpu_seconds(proc.pid) - cpu_before
            finally:
                stop(proc)
            results.append(Result(name, associations, seconds, len(files), megabytes, cpu))
            make_slices(root / f"slices-{associations}", count, associations)  # fresh UIDs for the next
    return results


def report(rounds: list[list[Result]], count: int) -> None:
    """Median (and range) over the rounds of each rate, and of each ratio taken within a round."""
    print(f"\nIngest of {count} CT slices 512x512 ({SOURCE.name}), storescu TCP_NODELAY=1 on loopback, "
          f"{len(rounds)} round(s): median [min-max]\n")
    print(f"{'receiver':<14}{'assocs':>7}{'images/s':>20}{'MB/s':>9}{'CPU ms/image':>14}")
    for first in sorted(rounds[0], key=lambda r: (r.associations, r.target != "fsync floor",
                                                  list(TARGETS).index(r.target) if r.target in TARGETS else 0)):
        same = [r for run in rounds for r in run if (r.target, r.associations) == (first.target, first.associations)]
        rates = [r.per_second for r in same]
        cpu = [r.cpu_ms_per_instance for r in same if r.cpu_ms_per_instance is not None]
        spread = f"{median(rates):.0f} [{min(rates):.0f}-{max(rates):.0f}]"
        print(f"{first.target:<14}{first.associations:>7}{spread:>20}{median(r.mb_per_second for r in same):>9.1f}"
              f"{f'{median(cpu):.2f}' if cpu else '-':>14}")
    print()

    def rate(run: list[Result], target: str, associations: int) -> float:
        return next(r.per_second for r in run if (r.target, r.associations) == (target, associations))

    def ratio_line(label: str, values: list[float]) -> None:
        print(f"{label:<46}{median(values):5.2f}x [{min(values):.2f}-{max(values):.2f}]")

    for associations in (1, 4):
        for other in [t for t in TARGETS if t != "onconode"] + ["fsync floor"]:
            ratio_line(f"OncoNode / {other} ({associations} assoc):",
                       [rate(run, "onconode", associations) / rate(run, other, associations) for run in rounds])
    ratio_line("OncoNode 4 associations / 1 association:",
               [rate(run, "onconode", 4) / rate(run, "onconode", 1) for run in rounds])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4,
                        help="repeat everything; the median is reported (a multiple of 4 balances the order)")
    parser.add_argument("--port", type=int, default=11700)
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "echoscu", "Orthanc"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: install the peers (.ci/run or ../shared/PEERS.md)", file=sys.stderr)
            return 2
    if not SOURCE.is_file():
        print(f"shared data not found at {DATA} (set ONCONODE_DATA)", file=sys.stderr)
        return 2
    rounds = []
    for n in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="onconode-bench-",
                                         dir=REPO / "var" if (REPO / "var").is_dir() else None) as tmp:
            rounds.append(measure_round(Path(tmp), args.count, args.port, n))
        print(f"round {n + 1}/{args.rounds} done", file=sys.stderr)
    report(rounds, args.count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
