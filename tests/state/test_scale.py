"""Several processes on one PostgreSQL, as a site past one machine runs them: receivers, workers and
dispatchers started as ``onconode serve`` with roles, real associations, a real receiving SCP.

Every study is analysed exactly once and every output delivered; a worker killed during an
analysis loses the study to another after its lease, with one result; the process holding the
stability lease killed, another takes over. Leases are short here (seconds), so each takeover is
bounded in time; the tests poll for what they wait for.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from onconode.dicom_node.assembler import LEADER_LEASE
from onconode.dicom_node.scu import PeerAddress, send_paths
from onconode.state import DeliveryState, StateDB, StudyState
from onconode.state.owner import owner_pid
from tests.delivery.scp import CountingSCP
from tests.inference.tiny_model import write_model
from tests.state.nodes import SharedNode
from tests.state.studies import reuid_studies
from tests.support import wait_for

SERIES = "lung-pet-ct-dx-a0002-ct"
RULES = [{"name": "chest-ct", "modality": "CT", "min_slices": 10, "target": "lung", "model": "test-ct",
          "max_analysed_slices": 4, "key_slices": 2}]


class Site:
    """One PostgreSQL database, one shared storage root, one receiving SCP, and the nodes started."""

    def __init__(self, folder: Path, url: str, scp: CountingSCP, lease_seconds: float) -> None:
        self.folder, self.url, self.scp, self.lease_seconds = folder, url, scp, lease_seconds
        write_model(folder / "models", "test-ct", "CT", size=64)
        self.nodes: list[SharedNode] = []

    def node(self, name: str, *roles: str, receiver_processes: int = 1) -> SharedNode:
        node = SharedNode(
            self.folder / name, self.url, self.folder / "shared" / "store", roles=list(roles),
            node={"receiver_processes": receiver_processes}, state={"lease_seconds": self.lease_seconds},
            routing=RULES,
            analysis={"models": str(self.folder / "models"), "intra_op_threads": 1},
            destinations={"dicom": [{"ae_title": "PACS", "host": "127.0.0.1", "port": self.scp.port}]},
            delivery={"outbox": str(self.folder / "shared" / "outbox"), "poll_seconds": 0.2},
            study={"stable_seconds": 1, "poll_seconds": 0.2}, api={"enabled": False})
        self.nodes.append(node)
        return node

    def start(self, *nodes: SharedNode) -> None:
        for node in nodes:
            node.start(timeout=60)

    def db(self) -> StateDB:
        return StateDB(self.url)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def site(tmp_path: Path, postgres_url: str) -> Iterator[Site]:
    scp = CountingSCP("PACS").start()
    running = Site(tmp_path, postgres_url, scp, lease_seconds=10)
    try:
        yield running
    finally:
        running.stop()
        scp.stop()


def _send_over_associations(groups: list[tuple[SharedNode, list[Path]]]) -> None:
    """One association per group, all at once."""
    failures: list[str] = []

    def send(node: SharedNode, paths: list[Path]) -> None:
        report = send_paths(paths, PeerAddress("ONCONODE", "127.0.0.1", node.port))
        if not report.all_succeeded:
            failures.append(report.summary())

    threads = [threading.Thread(target=send, args=group) for group in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert failures == []


def _delivered(db: StateDB, count: int) -> bool:
    counts = db.count_by_state()
    assert counts[StudyState.FAILED] == 0 and counts[StudyState.NO_MODEL] == 0, counts
    return counts[StudyState.DELIVERED] == count


def test_two_receiving_nodes_three_workers_twenty_studies_each_analysed_once_and_delivered(
        site: Site, data: Path, tmp_path: Path) -> None:
    studies = reuid_studies(data / "dicom" / SERIES, tmp_path / "studies", count=20, slices=12)
    # Two receiving nodes on their own ports, the first with two receiver processes of its own.
    receivers = [site.node("receiver-0", "receive", receiver_processes=2), site.node("receiver-1", "receive")]
    workers = [site.node("worker-0", "analyse", "deliver"), site.node("worker-1", "analyse", "deliver"),
               site.node("worker-2", "analyse")]
    site.start(*receivers, *workers)
    uids = list(studies)
    groups = [(receivers[n % 2], [p for uid in uids[n::4] for p in studies[uid]]) for n in range(4)]
    _send_over_associations(groups)

    db = site.db()
    try:
        wait_for(lambda: _delivered(db, 20), 300, "20 studies delivered")
        claimers: Counter[str] = Counter()
        for uid in uids:
            transitions = db.transitions(uid)
            claims = [t for t in transitions if t.to_state is StudyState.ANALYSING]
            assert len(claims) == 1 and claims[0].reason is not None  # analysed once, by one worker
            claimers[claims[0].reason.removeprefix("claimed by ")] += 1
            assert [t.to_state for t in transitions].count(StudyState.REPORTED) == 1
            assert db.result_count(uid) == 1 and len(db.reports(uid)) == 1
            assert len(db.instances(uid)) == 12
        assert {owner_pid(o) for o in claimers} <= {w.proc.pid for w in workers if w.proc}
        assert len(claimers) >= 2, claimers  # the work was shared
        deliveries = db.deliveries()
        assert deliveries and all(d.state is DeliveryState.SENT for d in deliveries)
        assert len({d.study_uid for d in deliveries}) == 20
    finally:
        db.close()
    # At the receiving SCP: every object the database says was sent, each once (no dispatcher
    # sent what another was sending).
    wait_for(lambda: sum(site.scp.received.values()) >= len(deliveries), 30, "the SCP to count every object")
    assert set(site.scp.received) == {d.object_uid for d in deliveries}
    assert set(site.scp.received.values()) == {1}


def _stop_while_analysing(db: StateDB, workers: list[SharedNode], study_uid: str) -> SharedNode | None:
    """SIGSTOP the worker that holds ``study_uid``'s claim while it still holds it; None if it
    finished first."""
    def holder() -> SharedNode | None:
        lease = db.study_lease(study_uid)
        pid = owner_pid(lease[0]) if lease else None
        return next((w for w in workers if w.proc is not None and w.proc.pid == pid), None)

    worker = wait_for(holder, 60, f"a worker to claim {study_uid}", interval=0.01)
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGSTOP)
    study = db.study(study_uid)
    if study is None or study.state is not StudyState.ANALYSING or holder() is not worker:
        os.kill(worker.proc.pid, signal.SIGCONT)
        return None
    return worker


def test_a_worker_killed_during_an_analysis_loses_the_study_to_another_after_its_lease(
        tmp_path: Path, postgres_url: str, data: Path) -> None:
    scp = CountingSCP("PACS").start()
    site = Site(tmp_path, postgres_url, scp, lease_seconds=2)
    try:
        studies = reuid_studies(data / "dicom" / SERIES, tmp_path / "studies", count=3, slices=30)
        receiver = site.node("receiver", "receive", "deliver")
        workers = [site.node(f"worker-{n}", "analyse") for n in range(2)]
        site.start(receiver, *workers)
        db = site.db()
        try:
            for study_uid, paths in studies.items():  # one at a time, until one is caught mid-analysis
                assert send_paths(paths, PeerAddress("ONCONODE", "127.0.0.1", receiver.port)).all_succeeded
                stopped = _stop_while_analysing(db, workers, study_uid)
                if stopped is not None:
                    break
                wait_for(lambda: _delivered(db, len(db.studies())), 120, "the study delivered")
            else:
                pytest.fail("no analysis was caught under way")
            assert stopped.proc is not None
            killed = db.study_lease(study_uid)
            assert killed is not None
            os.kill(stopped.proc.pid, signal.SIGKILL)
            stopped.proc.wait(10)

            wait_for(lambda: _delivered(db, len(db.studies())), 120, "the study finished by the other worker")
            survivor = next(w for w in workers if w is not stopped)
            assert survivor.proc is not None
            takeover = [t for t in db.transitions(study_uid) if t.to_state is StudyState.ANALYSING][-1]
            assert takeover.reason == (f"taken over by {_owner_of(takeover.reason)}: the lease of {killed[0]} expired")
            assert owner_pid(_owner_of(takeover.reason)) == survivor.proc.pid
            assert db.result_count(study_uid) == 1 and len(db.reports(study_uid)) == 1
            assert [t.to_state for t in db.transitions(study_uid)].count(StudyState.REPORTED) == 1
            sent = db.deliveries(study_uid)
            assert sent and all(d.state is DeliveryState.SENT for d in sent)
        finally:
            db.close()
        wait_for(lambda: all(scp.received[d.object_uid] for d in sent), 30, "the SCP to count every object")
        assert all(scp.received[d.object_uid] == 1 for d in sent)
    finally:
        site.stop()
        scp.stop()


def _owner_of(reason: str | None) -> str:
    assert reason is not None and reason.startswith("taken over by ")
    return reason.removeprefix("taken over by ").split(":")[0]


def test_killing_the_holder_of_the_stability_lease_hands_it_to_another(
        tmp_path: Path, postgres_url: str, data: Path) -> None:
    scp = CountingSCP("PACS").start()
    site = Site(tmp_path, postgres_url, scp, lease_seconds=2)
    try:
        first, second = site.node("receiver-a", "receive"), site.node("receiver-b", "receive")
        site.start(first, second)
        db = site.db()
        try:
            holder = wait_for(lambda: db.lease_holder(LEADER_LEASE), 30, "a stability leader")
            leader = next(n for n in (first, second) if n.proc is not None and n.proc.pid == owner_pid(holder.owner))
            other = second if leader is first else first
            assert other.proc is not None
            leader.kill()

            study_uid, paths = next(iter(reuid_studies(data / "dicom" / SERIES, tmp_path / "s", 1, 12).items()))
            assert send_paths(paths, PeerAddress("ONCONODE", "127.0.0.1", other.port)).all_succeeded
            study = site.db()
            wait_for(lambda: (s := study.study(study_uid)) is not None and s.state is StudyState.QUEUED, 30,
                     "the study queued by the new leader")
            study.close()
            taken = db.lease_holder(LEADER_LEASE)
            assert taken is not None and owner_pid(taken.owner) == other.proc.pid
            assert taken.acquired_at > holder.acquired_at
        finally:
            db.close()
    finally:
        site.stop()
        scp.stop()
