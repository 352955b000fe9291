"""Ingest benchmark: OncoNode vs DCMTK storescp vs Orthanc, on loopback, in the same run.

Makes N CT slices of 512x512 from one real slice (new UIDs each), then sends them with DCMTK
storescu (TCP_NODELAY=1, the same sender for every receiver) over one association and over four
concurrent associations to:
  (a) OncoNode (fsync + rename + index before Success),
  (b) storescp with TCP_NODELAY=1 (writes files, no fsync),
  (c) Orthanc with TCP_NODELAY=1 (its own SQLite index and storage area),
  (d) a bare pynetdicom SCP that only writes durably (bench/bare_pynetdicom_scp.py): the share of
      the time that is pynetdicom's own, not OncoNode's checks and index,
and prints images/s, MB/s and the receiver's CPU per image for each, OncoNode's ratios, and the
physical floor for durable ingest: this disk's own write+fsync+rename(+folder fsync) rate for the
same files. CPU per image is steadier than images/s on a shared machine.

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

import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ONCONODE_DATA", REPO.parent / "shared" / "data"))
SOURCE = DATA / "dicom" / "lidc-idri-0001" / "IM-0067.dcm"
ENV = {**os.environ, "TCP_NODELAY": "1"}


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
    def cpu_ms_per_instance(self) -> str:
        return "-" if self.cpu_seconds is None else f"{self.cpu_seconds * 1000 / self.count:.2f}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and of the children it has reaped (storescp --fork), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


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
        "node": {"port": port}, "storage": {"root": str(work / "store"), "min_free_mb": 0},
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--port", type=int, default=11700)
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "echoscu", "Orthanc"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: install the peers (.ci/run or ../shared/PEERS.md)", file=sys.stderr)
            return 2
    if not SOURCE.is_file():
        print(f"shared data not found at {DATA} (set ONCONODE_DATA)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="onconode-bench-", dir=REPO / "var" if (REPO / "var").is_dir() else None) as tmp:
        root = Path(tmp)
        results: list[Result] = []
        floors = []
        for associations in (1, 4):
            files = make_slices(root / f"slices-{associations}", args.count, associations)
            megabytes = sum(f.stat().st_size for f in files) / 1e6
            folders = sorted({f.parent for f in files})
            floors.append(Result("fsync floor", associations, fsync_floor(files, root / f"floor-{associations}", associations),
                                 len(files), megabytes))
            for i, (name, (ae, start)) in enumerate(TARGETS.items()):
                port = args.port + 10 * i + associations
                work = root / f"{name}-{associations}"
                work.mkdir()
                proc = start(work, port)
                try:
                    cpu_before = cpu_seconds(proc.pid)
                    seconds = send(port, ae, folders)
                    time.sleep(0.2)  # storescp reaps its forked children on its next loop
                    cpu = cpu_seconds(proc.pid) - cpu_before
                finally:
                    stop(proc)
                results.append(Result(name, associations, seconds, len(files), megabytes, cpu))
                make_slices(root / f"slices-{associations}", args.count, associations)  # fresh UIDs for the next

    print(f"\nIngest of {args.count} CT slices 512x512 ({SOURCE.name}), storescu TCP_NODELAY=1 on loopback\n")
    print(f"{'receiver':<14}{'assocs':>7}{'images/s':>11}{'MB/s':>9}{'seconds':>9}{'CPU ms/image':>14}")
    for r in floors + results:
        print(f"{r.target:<14}{r.associations:>7}{r.per_second:>11.0f}{r.mb_per_second:>9.1f}{r.seconds:>9.2f}"
              f"{r.cpu_ms_per_instance:>14}")
    print()
    for associations in (1, 4):
        ours = next(r for r in results if r.target == "onconode" and r.associations == associations)
        for r in [x for x in results if x.associations == associations and x.target != "onconode"] + [
                next(f for f in floors if f.associations == associations)]:
            print(f"OncoNode / {r.target:<12} ({associations} assoc): {ours.per_second / r.per_second:5.2f}x")
    one = next(r for r in results if r.target == "onconode" and r.associations == 1)
    four = next(r for r in results if r.target == "onconode" and r.associations == 4)
    print(f"OncoNode 4 associations / 1 association: {four.per_second / one.per_second:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
