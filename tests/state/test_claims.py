"""Work claimed, not assumed, on both engines: studies and deliveries leased to one holder at a time,
taken over after the lease, and a named lease that elects one process."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from onconode.state import DeliveryState, NewDelivery, NewReport, StateDB, StudyState
from onconode.state.heartbeat import Heartbeat
from onconode.state.owner import process_owner
from tests.state.conftest import instance
from tests.support import wait_for

Open = Callable[[str], StateDB]


def _queue(db: StateDB, count: int) -> list[str]:
    studies = [f"1.2.{n}" for n in range(1, count + 1)]
    for n, study in enumerate(studies):
        db.record_instance(instance(f"{study}.1", study=study, at=1000.0 + n))
        assert db.transition(study, StudyState.QUEUED, "test")
    return studies


def test_a_queued_study_is_claimed_by_one_worker_under_a_lease(open_db: Open) -> None:
    a, b = open_db("host-a/1/1"), open_db("host-b/2/2")
    _queue(a, 1)
    claim = a.claim_study(lease_seconds=30)
    assert claim is not None and claim.study_uid == "1.2.1" and claim.taken_over_from is None
    assert b.claim_study(lease_seconds=30) is None  # analysing under a live lease: not b's
    study = b.study("1.2.1")
    assert study is not None and study.state is StudyState.ANALYSING
    assert b.study_lease("1.2.1") == ("host-a/1/1", claim.expires_at)
    assert b.transitions("1.2.1")[-1].reason == "claimed by host-a/1/1"
    # Only the holder moves it on.
    assert not b.transition("1.2.1", StudyState.FAILED, "not mine", expect=[StudyState.ANALYSING])
    assert not b.add_result("1.2.1", {"outcome": "analysed"})
    assert a.add_result("1.2.1", {"outcome": "analysed"})
    assert a.transition("1.2.1", StudyState.NO_MODEL, "done", expect=[StudyState.ANALYSING])
    assert a.study_lease("1.2.1") is None  # leaving ANALYSING ends the lease


def test_workers_claiming_at_once_each_get_different_studies(open_db: Open) -> None:
    studies = _queue(open_db("setup/0/0"), 20)
    workers = [open_db(f"host-{n}/1/1") for n in range(4)]
    claimed: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(len(workers))

    def work(db: StateDB) -> None:
        start.wait()
        while (claim := db.claim_study(lease_seconds=30)) is not None:
            with lock:
                claimed[claim.study_uid] += 1

    threads = [threading.Thread(target=work, args=(db,)) for db in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(studies) and set(claimed.values()) == {1}


def test_an_expired_claim_is_taken_over_and_the_first_holder_records_nothing(open_db: Open) -> None:
    a, b = open_db("host-a/1/1"), open_db("host-b/2/2")
    _queue(a, 1)
    first = a.claim_study(lease_seconds=0.3)
    assert first is not None
    assert a.add_result("1.2.1", {"outcome": "analysed", "by": "a"})  # a dies before the report
    wait_for(lambda: b.claim_study(lease_seconds=30), 10, "the takeover")
    assert b.study_lease("1.2.1")[0] == "host-b/2/2"  # type: ignore[index]
    assert b.transitions("1.2.1")[-1].reason == "taken over by host-b/2/2: the lease of host-a/1/1 expired"
    assert b.result_count("1.2.1") == 0  # the unfinished claim's row went with it

    # The first holder, back from a stall, can record nothing.
    assert not a.renew_study_lease(first, 30)
    assert not a.add_result("1.2.1", {"outcome": "analysed", "by": "a"})
    report = NewReport("1.2.1", Path("/outbox/1.2.1/9"), "9.9", Path("/outbox/1.2.1/9/sr.dcm"), "f")
    assert a.record_report(report, [], reported="late") is None
    assert not a.transition("1.2.1", StudyState.FAILED, "late", expect=[StudyState.ANALYSING])

    assert b.add_result("1.2.1", {"outcome": "analysed", "by": "b"})
    assert b.record_report(report, [], reported="positive") is not None
    assert b.result_count("1.2.1") == 1 and b.latest_result("1.2.1") == {"outcome": "analysed", "by": "b"}
    assert [t.to_state for t in b.transitions("1.2.1")][-3:] == [
        StudyState.ANALYSING, StudyState.ANALYSING, StudyState.REPORTED]


def test_a_heartbeat_keeps_a_claim_past_its_lease(open_db: Open) -> None:
    a, b = open_db("host-a/1/1"), open_db("host-b/2/2")
    _queue(a, 1)
    claim = a.claim_study(lease_seconds=0.6)
    assert claim is not None
    with Heartbeat(lambda: a.renew_study_lease(claim, 0.6), 0.1, what="test") as beat:
        deadline = time.monotonic() + 1.5  # two and a half leases
        while time.monotonic() < deadline:
            assert b.claim_study(lease_seconds=30) is None
            time.sleep(0.05)
    assert not beat.lost


def test_a_new_instance_during_the_analysis_ends_the_claim(open_db: Open) -> None:
    a = open_db("host-a/1/1")
    _queue(a, 1)
    claim = a.claim_study(lease_seconds=30)
    assert claim is not None
    a.record_instance(instance("1.2.1.2", study="1.2.1", at=2000.0))
    study = a.study("1.2.1")
    assert study is not None and study.state is StudyState.RECEIVING and a.study_lease("1.2.1") is None
    assert not a.renew_study_lease(claim, 30)
    assert not a.add_result("1.2.1", {"outcome": "analysed"})


def test_the_named_lease_has_one_holder_until_it_expires_or_is_released(open_db: Open) -> None:
    a, b = open_db("host-a/1/1"), open_db("host-b/2/2")
    assert a.hold_lease("assembler", 0.4)
    assert a.hold_lease("assembler", 0.4)  # renewed
    assert not b.hold_lease("assembler", 0.4)
    holder = b.lease_holder("assembler")
    assert holder is not None and holder.owner == "host-a/1/1"
    wait_for(lambda: b.hold_lease("assembler", 30), 10, "b to take the expired lease")
    assert not a.hold_lease("assembler", 30)
    b.release_lease("assembler")
    assert a.hold_lease("assembler", 30)  # at once after a clean release


def _report(db: StateDB, study: str, objects: int) -> None:
    db.record_instance(instance(f"{study}.1", study=study))
    report = NewReport(study, Path(f"/outbox/{study}"), f"{study}.9", Path(f"/outbox/{study}/sr.dcm"), "f")
    assert db.record_report(report, [NewDelivery("PACS@h:104", "dicom", seq, Path(f"/outbox/{study}/{seq}.dcm"),
                                                 f"{study}.9.{seq}") for seq in range(objects)]) is not None


def test_due_deliveries_are_claimed_by_one_dispatcher_at_a_time(open_db: Open) -> None:
    a, b = open_db("host-a/1/1"), open_db("host-b/2/2")
    _report(a, "1.2.1", 3)
    _report(a, "1.2.2", 3)
    now = time.time()
    mine = a.claim_deliveries(now, lease_seconds=0.4, limit=4)
    theirs = b.claim_deliveries(now, lease_seconds=30)
    assert len(mine) == 4 and len(theirs) == 2 and not {d.id for d in mine} & {d.id for d in theirs}
    assert [d.seq for d in mine] == [0, 1, 2, 0]  # in send order
    # b records its failures; a record of a's rows by b is refused while a holds them.
    b.delivery_failed(mine[0].id, "refused", time.time() + 60)
    assert a.deliveries("1.2.1")[0].attempts == 0
    a.delivery_sent(mine[0].id)
    # a stalls past its lease: b takes what a did not record.
    taken = wait_for(lambda: b.claim_deliveries(time.time(), lease_seconds=30), 10, "the expired rows")
    assert sorted(d.id for d in taken) == sorted(d.id for d in mine[1:])
    assert a.renew_deliveries([d.id for d in mine], 30) == 0
    a.delivery_failed(mine[1].id, "too late", time.time() + 60)  # not a's any more: not counted
    assert a.deliveries("1.2.1")[1].attempts == 0
    for d in taken + theirs:
        b.delivery_sent(d.id)
    assert a.delivery_totals()[DeliveryState.SENT] == 6


def test_released_deliveries_are_due_again_at_once(open_db: Open) -> None:
    a, b = open_db("host-a/1/1"), open_db("host-b/2/2")
    _report(a, "1.2.1", 2)
    claimed = a.claim_deliveries(time.time(), lease_seconds=30)
    assert b.claim_deliveries(time.time(), lease_seconds=30) == []
    a.release_deliveries([d.id for d in claimed])
    assert len(b.claim_deliveries(time.time(), lease_seconds=30)) == 2


def test_leases_of_a_process_of_this_host_that_is_gone_expire_at_start(open_db: Open) -> None:
    import os
    import socket

    host = socket.gethostname()
    dead = open_db(f"{host}/{2**22 + 12345}/1")  # no such process ID
    restarted = open_db(f"{host}/{os.getpid()}/1")  # this ID, but a process that started at another time
    alive = open_db(process_owner(os.getppid()))  # a running process
    elsewhere = open_db("another-host/1/1")
    _queue(dead, 4)
    for db in (dead, restarted, alive, elsewhere):
        assert db.claim_study(lease_seconds=300) is not None
    _report(dead, "1.2.9", 1)
    assert dead.claim_deliveries(time.time(), lease_seconds=300)
    assert dead.hold_lease("assembler", 300)

    starting = open_db(process_owner())
    assert starting.expire_leases_of_gone_holders() == 2
    claims = [starting.claim_study(lease_seconds=30) for _ in range(2)]
    assert {c.taken_over_from for c in claims if c is not None} == {dead.owner, restarted.owner}
    assert starting.claim_study(lease_seconds=30) is None  # the live holders keep theirs
    assert len(starting.claim_deliveries(time.time(), lease_seconds=30)) == 1
    assert starting.hold_lease("assembler", 30)
