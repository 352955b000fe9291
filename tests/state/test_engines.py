"""What the two engines must do alike under several writers: receivers on several hosts indexing one
study at once, a transaction that fails leaving nothing, a lost PostgreSQL connection opened again."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from onconode.state import StateDB, StateError, StudyState
from tests.state import raw
from tests.state.conftest import instance

Open = Callable[[str], StateDB]


def test_receivers_indexing_one_new_study_at_once_create_it_once(open_db: Open) -> None:
    receivers = [open_db(f"receiver-{n}/1/1") for n in range(4)]
    start = threading.Barrier(len(receivers))
    errors: list[BaseException] = []

    def index(n: int, db: StateDB) -> None:
        start.wait()
        try:
            for i in range(25):
                db.record_instance(instance(f"1.2.3.{n}.{i}", at=1000.0 + i))
        except StateError as err:  # collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=index, args=(n, db)) for n, db in enumerate(receivers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    db = receivers[0]
    study = db.study("1.2.3")
    assert study is not None and study.instances == 100 and study.last_received_at == 1024.0
    assert [t.reason for t in db.transitions("1.2.3")] == ["first instance"]


def test_a_failed_transaction_leaves_nothing_and_the_connection_serves_on(state_target: Path | str) -> None:
    db = StateDB(state_target)
    try:
        db.record_instance(instance("1.1"))
        with pytest.raises(StateError), db._transaction() as conn:  # the plumbing itself
            conn.execute("UPDATE studies SET reason = 'half done' WHERE study_uid = '1.2.3'")
            conn.execute("INSERT INTO no_such_table VALUES (1)")
        study = db.study("1.2.3")
        assert study is not None and study.reason is None
        assert db.transition("1.2.3", StudyState.STABLE, "quiet")
    finally:
        db.close()


def test_a_lost_postgresql_connection_is_opened_again(postgres_url: str) -> None:
    db = StateDB(postgres_url)
    try:
        db.record_instance(instance("1.1"))
        backend = raw.execute(postgres_url, "SELECT pid FROM pg_stat_activity WHERE application_name = 'onconode'")
        raw.execute(postgres_url, "SELECT pg_terminate_backend(?)", (backend[0][0],))  # as a server restart would
        with pytest.raises(StateError):
            db.study("1.2.3")
        study = db.study("1.2.3")  # the next use opens a new connection
        assert study is not None and study.instances == 1
        assert db.transition("1.2.3", StudyState.STABLE, "quiet")
    finally:
        db.close()


def test_a_closed_state_database_is_a_bug_not_an_outage(state_target: Path | str) -> None:
    db = StateDB(state_target)
    db.close()
    with pytest.raises(RuntimeError, match="closed") as raised:
        db.study("1.2.3")
    assert not isinstance(raised.value, StateError)  # the API answers 500, not 503 "try again"
