"""Scale benchmark: analysis with 1, 2 and 4 worker processes on PostgreSQL against the single SQLite
node, and ingest with 1 and 2 receiver processes on PostgreSQL against SQLite, in the same run.

Analysis. ``--studies`` copies of lidc-idri-0001 (133 CT slices), each with new Study, Series and
SOP Instance UIDs, are put in a fresh storage root and indexed (as start-up recovery indexes files);
then the configuration under test is started and left until its start-up work is over (its CPU
idle), every study is queued at once, and the clock runs until the last one is reported. Under test:
- ``sqlite``: the single node, ``onconode serve`` with every role on the SQLite state (one worker);
- ``postgresql xN``: N processes ``onconode serve --role analyse`` on one PostgreSQL database.
Every worker runs onnxruntime on one thread (``analysis.intra_op_threads: 1``), so one worker is
one core's worth of work. Printed: studies per hour, the speed-up over one worker and the scaling
efficiency against the CPU the machine has (speed-up / min(N, cores)), the CPU per study (workers
plus, on PostgreSQL, the database server), and the cores the rest of the machine used meanwhile.

Ingest. ``--count`` CT slices of 512x512 (bench/ingest.py's), sent by DCMTK storescu over four
associations to a node with ``node.receiver_processes`` 1 and then 2, on SQLite and on
PostgreSQL, ``--rounds`` times in a balanced order; printed: images/s, CPU per image (the node, and
the database server), and PostgreSQL / SQLite within each round.

Model: ``models/chest-ct-nodule`` when present, else the test model of bench/analyze.py (a strided
conv at 224x224: its inference is far cheaper than an EfficientNet's), and the output says which.
PostgreSQL is a private cluster (tests/postgres.py: initdb + pg_ctl, defaults but the port).

Not a test: no assertion on time. Run: ``.venv/bin/python bench/scale.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pydicom
import yaml
from pydicom.uid import generate_uid

from bench.ingest import balanced_order, cpu_seconds, make_slices, send, stop, wait_for_echo, wait_until_idle
from onconode.dicom_node.recovery import recover
from onconode.dicom_node.storage import InstanceStorage
from onconode.state import StateDB, StudyState
from tests.postgres import Cluster, start_cluster
from tests.support import free_port

DATA = Path(os.environ.get("ONCONODE_DATA", REPO.parent / "shared" / "data")) / "dicom"
STUDY = DATA / "lidc-idri-0001"
DONE = {StudyState.REPORTED, StudyState.DELIVERING, StudyState.DELIVERED, StudyState.NO_MODEL, StudyState.FAILED}
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Run:
    name: str
    seconds: float
    count: int  # studies or instances
    node_cpu: float
    db_cpu: float
    others_cores: float  # what the rest of the machine used meanwhile

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


def busy_cores(window: float, start: tuple[float, float]) -> float:
    """Cores the whole machine kept busy since ``start`` (``machine_times()``), over ``window`` s."""
    busy, _ = machine_times()
    return (busy - start[0]) / window


def machine_times() -> tuple[float, float]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK"), idle / os.sysconf("SC_CLK_TCK")


def models(folder: Path) -> tuple[Path, str, str]:
    real = REPO / "models"
    if (real / "chest-ct-nodule.yaml").is_file():
        return real, "chest-ct-nodule", "models/chest-ct-nodule (trained model)"
    from tests.inference.tiny_model import write_model

    write_model(folder, "bench-ct", "CT", size=224, k=32, patch=32)
    return folder, "bench-ct", "TEST MODEL (bench/analyze.py's strided conv at 224x224; models/chest-ct-nodule absent)"


def make_studies(folder: Path, count: int) -> Path:
    """``count`` copies of the 133-slice CT under new UIDs, laid out as a storage root holds them."""
    sources = [pydicom.dcmread(p) for p in sorted(STUDY.glob("*.dcm"))]
    for _ in range(count):
        study, series = generate_uid(), generate_uid()
        target = folder / study / series
        target.mkdir(parents=True)
        for ds in sources:
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.save_as(target / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return folder


def fill_storage(source: Path, root: Path, target: Path | str) -> list[str]:
    """Hard-link the prepared studies into ``root`` and index them in ``target``; their UIDs."""
    shutil.copytree(source, root, copy_function=os.link)
    db = StateDB(target)
    try:
        recover(InstanceStorage(root, 0), db, 1 << 30)
        return [s.study_uid for s in db.studies()]
    finally:
        db.close()


def config(work: Path, state: Path | str, models_folder: Path, **extra: object) -> Path:
    values = {
        "node": {"port": free_port(), "receiver_processes": 1},
        "storage": {"root": str(work / "store"), "results": str(work / "results"), "min_free_mb": 0},
        "state": {"url": state} if isinstance(state, str) else {"database": str(state)},
        "study": {"stable_seconds": 3600, "poll_seconds": 0.2}, "callers": [],
        "analysis": {"models": str(models_folder), "intra_op_threads": 1},
        "delivery": {"outbox": str(work / "outbox"), "poll_seconds": 0.2},
        "api": {"enabled": False}, "audit": {"path": None}, "log": {"level": "WARNING"}, **extra}
    path = work / f"onconode-{len(list(work.glob('onconode-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def serve(path: Path, *roles: str) -> subprocess.Popen[bytes]:
    flags = [arg for role in roles for arg in ("--role", role)]
    return subprocess.Popen([sys.executable, "-m", "onconode", "--config", str(path), "serve", *flags],
                            cwd=path.parent)


def settle(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is not None:
            raise RuntimeError(f"a node exited with {proc.returncode}")
        wait_until_idle(proc.pid, timeout=120)


def analyse(name: str, source: Path, work: Path, target: Path | str, workers: int, models_folder: Path,
            cluster: Cluster | None) -> Run:
    work.mkdir()
    uids = fill_storage(source, work / "store", target)
    path = config(work, target, models_folder)
    procs = [serve(path)] if cluster is None else [serve(path, "analyse") for _ in range(workers)]
    try:
        settle(procs)
        db = StateDB(target)
        try:
            cpu = sum(cpu_seconds(p.pid) for p in procs)
            db_cpu = cpu_seconds(postmaster(cluster)) if cluster else 0.0
            machine = machine_times()
            started = time.perf_counter()
            for uid in uids:
                db.transition(uid, StudyState.QUEUED, "benchmark", expect=[StudyState.RECEIVING])
            while sum(db.count_by_state()[s] for s in DONE) < len(uids):
                time.sleep(0.1)
            seconds = time.perf_counter() - started
            cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu
            db_cpu = (cpu_seconds(postmaster(cluster)) - db_cpu) if cluster else 0.0
            failed = db.count_by_state()[StudyState.FAILED] + db.count_by_state()[StudyState.NO_MODEL]
            if failed:
                raise RuntimeError(f"{name}: {failed} studies not analysed (see the node log)")
        finally:
            db.close()
        others = busy_cores(seconds, machine) - (cpu + db_cpu) / seconds
    finally:
        for proc in procs:
            stop(proc)
    return Run(name, seconds, len(uids), cpu, db_cpu, max(0.0, others))


def postmaster(cluster: Cluster) -> int:
    return int((cluster.folder / "data" / "postmaster.pid").read_text().split()[0])


def ingest(name: str, work: Path, target: Path | str, receivers: int, folders: list[Path], count: int,
           models_folder: Path, cluster: Cluster | None) -> Run:
    work.mkdir()
    path = config(work, target, models_folder, node={"port": free_port(), "receiver_processes": receivers})
    port = yaml.safe_load(path.read_text())["node"]["port"]
    proc = serve(path, "receive")
    try:
        wait_for_echo(port, "ONCONODE")
        settle([proc])
        os.sync()
        cpu, db_cpu = cpu_seconds(proc.pid), cpu_seconds(postmaster(cluster)) if cluster else 0.0
        machine = machine_times()
        seconds = send(port, "ONCONODE", folders)
        cpu = cpu_seconds(proc.pid) - cpu
        db_cpu = (cpu_seconds(postmaster(cluster)) - db_cpu) if cluster else 0.0
        others = busy_cores(seconds, machine) - (cpu + db_cpu) / seconds
    finally:
        stop(proc)
    return Run(name, seconds, count, cpu, db_cpu, max(0.0, others))


def report_analysis(runs: list[Run], studies: int, model: str) -> None:
    print(f"\nAnalysis of {studies} studies of 133 CT slices (lidc-idri-0001, new UIDs), model: {model}; "
          f"{CORES} cores\n")
    print(f"{'configuration':<16}{'studies/h':>10}{'speed-up':>10}{'eff./cores':>11}{'eff./CPU got':>13}"
          f"{'cores used':>11}{'CPU s/study':>12}{'of it DB':>9}{'others':>8}")
    base = next(r for r in runs if r.name == "postgresql x1")
    for run in runs:
        workers = int(run.name.rsplit("x", 1)[1]) if "x" in run.name else 1
        speedup = run.per_second / base.per_second
        used = (run.node_cpu + run.db_cpu) / run.seconds
        print(f"{run.name:<16}{run.per_second * 3600:>10.0f}{speedup:>9.2f}x{speedup / min(workers, CORES):>11.0%}"
              f"{speedup / (used / ((base.node_cpu + base.db_cpu) / base.seconds)):>13.0%}{used:>11.2f}"
              f"{(run.node_cpu + run.db_cpu) / run.count:>12.2f}{run.db_cpu / run.count:>9.3f}"
              f"{run.others_cores:>8.2f}")
    print("speed-up: over one PostgreSQL worker; eff./cores: speed-up / min(workers, cores); eff./CPU got: speed-up "
          "/ the growth of the cores the run obtained (1 = every core obtained turned into studies); cores used: "
          "the workers' and the database's CPU / wall time; others: cores the rest of the machine kept busy")


def report_ingest(rounds: list[list[Run]], count: int) -> None:
    print(f"\nIngest of {count} CT slices over 4 associations (storescu), {len(rounds)} round(s): median "
          "[min-max]\n")
    print(f"{'configuration':<26}{'images/s':>18}{'CPU ms/image':>14}{'of it DB':>10}{'others':>8}")
    for name in [r.name for r in rounds[0]]:
        same = [r for run in rounds for r in run if r.name == name]
        rates = [r.per_second for r in same]
        print(f"{name:<26}{f'{median(rates):.0f} [{min(rates):.0f}-{max(rates):.0f}]':>18}"
              f"{median((r.node_cpu + r.db_cpu) * 1000 / r.count for r in same):>14.2f}"
              f"{median(r.db_cpu * 1000 / r.count for r in same):>10.2f}{median(r.others_cores for r in same):>8.2f}")
    for receivers in (1, 2):
        ratios = [next(r for r in run if r.name == f"postgresql, {receivers} receiver(s)").per_second
                  / next(r for r in run if r.name == f"sqlite, {receivers} receiver(s)").per_second for run in rounds]
        print(f"PostgreSQL / SQLite, {receivers} receiver process(es): {median(ratios):.2f}x "
              f"[{min(ratios):.2f}-{max(ratios):.2f}]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=8, help="studies analysed by each configuration")
    parser.add_argument("--count", type=int, default=300, help="slices sent in each ingest run")
    parser.add_argument("--rounds", type=int, default=4, help="ingest rounds (a multiple of 4 balances the order)")
    parser.add_argument("--skip-analysis", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    if shutil.which("storescu") is None or not STUDY.is_dir():
        print("needs DCMTK storescu and the shared data (set ONCONODE_DATA)", file=sys.stderr)
        return 2
    cluster = start_cluster()
    try:
        with tempfile.TemporaryDirectory(prefix="onconode-scale-") as tmp:
            root = Path(tmp)
            models_folder, _, model = models(root / "models")
            if not args.skip_analysis:
                source = make_studies(root / "studies", args.studies)
                runs = [analyse("sqlite", source, root / "sqlite", root / "sqlite.db", 1, models_folder, None)]
                for workers in (1, 2, 4):
                    runs.append(analyse(f"postgresql x{workers}", source, root / f"pg-{workers}",
                                        cluster.database(), workers, models_folder, cluster))
                    print(f"analysis: {runs[-1].name} done", file=sys.stderr)
                report_analysis(runs, args.studies, model)
            if not args.skip_ingest:
                files = make_slices(root / "slices", args.count, 4)
                folders = sorted({f.parent for f in files})
                names = [(engine, receivers) for receivers in (1, 2) for engine in ("sqlite", "postgresql")]
                rounds = []
                for turn in range(args.rounds):
                    runs = []
                    order = balanced_order([f"{e}/{r}" for e, r in names], turn)
                    for key in order:
                        engine, receivers = key.split("/")
                        work = root / f"ingest-{turn}-{engine}-{receivers}"
                        target: Path | str = root / f"{work.name}.db" if engine == "sqlite" else cluster.database()
                        runs.append(ingest(f"{engine}, {receivers} receiver(s)", work, target, int(receivers),
                                           folders, len(files), models_folder,
                                           cluster if engine == "postgresql" else None))
                    rounds.append(sorted(runs, key=lambda r: r.name))
                    print(f"ingest: round {turn + 1}/{args.rounds} done", file=sys.stderr)
                report_ingest(rounds, len(files))
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
