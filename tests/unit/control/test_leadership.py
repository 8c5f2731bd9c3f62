"""Which server leads: PostgreSQL's advisory lock (one holder; a holder that dies, even by
SIGKILL, lets another take over), the election around it, and SQLite's one-server lock (a second
server is refused, saying why)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from enginehouse.reconciler.leadership import (
    AdvisoryLock, AnotherServerError, LeaderElection, SqliteServerLock, claim_sqlite_database, one_server_at_a_time,
)
from enginehouse.server import create_app
from enginehouse.settings import Settings
from tests.databases import postgres_schema
from tests.integration.harness import wait_for

# -- PostgreSQL: the advisory lock ----------------------------------------------------------------


def test_one_holder_wins_and_its_release_lets_the_other_win() -> None:
    with postgres_schema() as url:
        first, second = AdvisoryLock(url), AdvisoryLock(url)
        try:
            assert first.try_acquire()
            assert not second.try_acquire()
            assert first.still_held() and not second.still_held()
            first.release()  # its connection closes: the session's lock goes with it
            assert second.try_acquire()
            assert not first.try_acquire()
        finally:
            first.release()
            second.release()


def test_control_planes_in_different_schemas_do_not_contend() -> None:
    with postgres_schema() as one, postgres_schema() as other:
        first, second = AdvisoryLock(one), AdvisoryLock(other)
        try:
            assert first.try_acquire() and second.try_acquire()
        finally:
            first.release()
            second.release()


def test_a_holder_killed_by_sigkill_frees_the_lock_at_once() -> None:
    with postgres_schema() as url:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, url], stdout=subprocess.PIPE, text=True,
        )
        waiting = AdvisoryLock(url)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            assert not waiting.try_acquire()
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
            killed = time.monotonic()
            wait_for(waiting.try_acquire, timeout=15, interval=0.05, what="the lock to be free")
            print(f"lock free {time.monotonic() - killed:.2f} s after the holder's SIGKILL")
        finally:
            holder.kill()
            holder.wait(timeout=10)
            waiting.release()


_HOLD_LOCK = """
import sys, time
from enginehouse.reconciler.leadership import AdvisoryLock
lock = AdvisoryLock(sys.argv[1])
assert lock.try_acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_lost_connection_is_a_lost_lead() -> None:
    with postgres_schema() as url:
        lock = AdvisoryLock(url, application_name="eh-test-doomed")
        admin = create_engine(url)
        try:
            assert lock.try_acquire()
            with admin.begin() as connection:  # what a database restart does to every session
                connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE application_name = 'eh-test-doomed'"))
            assert not lock.still_held()
            assert lock.try_acquire()  # a fresh connection takes it again: nobody else wanted it
        finally:
            lock.release()
            admin.dispose()


def test_servers_starting_together_migrate_one_after_the_other() -> None:
    with postgres_schema() as url:
        inside: list[str] = []
        overlap = threading.Event()

        def start(name: str) -> None:
            with one_server_at_a_time(url):
                if inside:
                    overlap.set()
                inside.append(name)
                time.sleep(0.3)
                inside.remove(name)

        threads = [threading.Thread(target=start, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not overlap.is_set()


# -- the election ------------------------------------------------------------------------------


class Duties:
    def __init__(self) -> None:
        self.events: list[str] = []

    def gain(self) -> None:
        self.events.append("gain")

    def lose(self) -> None:
        self.events.append("lose")

    def stop(self) -> None:
        self.events.append("stop")


def test_a_standby_takes_over_when_the_leader_stops() -> None:
    with postgres_schema() as url:
        duties = [Duties(), Duties()]
        elections = [LeaderElection(AdvisoryLock(url), 0.1, d.gain, d.lose) for d in duties]
        try:
            for election in elections:
                election.start()
            assert elections[0].is_leader and not elections[1].is_leader
            assert duties[0].events == ["gain"] and duties[1].events == []
            elections[0].stop(duties[0].stop)
            assert duties[0].events == ["gain", "stop"]  # stopped while still holding the lock
            wait_for(lambda: elections[1].is_leader, timeout=10, what="the standby to lead")
            assert duties[1].events == ["gain"]
        finally:
            for election, duty in zip(elections, duties):
                election.stop(duty.stop)


def test_a_leader_whose_connection_ends_stops_leading() -> None:
    with postgres_schema() as url:
        duties = Duties()
        election = LeaderElection(AdvisoryLock(url, application_name="eh-test-leader"), 0.1,
                                  duties.gain, duties.lose)
        admin = create_engine(url)
        try:
            election.start()
            assert election.is_leader
            with admin.begin() as connection:
                connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE application_name = 'eh-test-leader'"))
            wait_for(lambda: "lose" in duties.events, timeout=10, what="the lead to be given up")
            # Nobody else wants it: the next try takes it again, with fresh duties.
            wait_for(lambda: duties.events == ["gain", "lose", "gain"], timeout=10, what="the lead again")
        finally:
            election.stop(duties.stop)
            admin.dispose()


def test_two_servers_on_one_postgresql_database(tmp_path: Path) -> None:
    """Both answer; the first leads (health, metrics), and the second leads once it stops."""
    with postgres_schema() as url:
        settings = [Settings(data_dir=tmp_path / "data", database_url=url, bootstrap_key="eh-test-lead",
                             leader_poll_s=0.1) for _ in range(2)]
        first = TestClient(create_app(settings[0])).__enter__()
        try:
            with TestClient(create_app(settings[1])) as second:
                assert first.get("/health").json()["reconciler"] == "leader"
                assert second.get("/health").json()["reconciler"] == "standby"
                assert "enginehouse_reconciler_leader 1.0" in first.get("/metrics").text
                assert "enginehouse_reconciler_leader 0.0" in second.get("/metrics").text
                for client in (first, second):
                    engines = client.get("/v1/engines", headers={"Authorization": "Bearer eh-test-lead"})
                    assert engines.status_code == 200
                first.__exit__(None, None, None)
                wait_for(lambda: second.get("/health").json()["reconciler"] == "leader", timeout=10,
                         what="the second server to lead")
                assert "enginehouse_reconciler_leader 1.0" in second.get("/metrics").text
                assert second.app.state.reconciler is not None  # type: ignore[attr-defined]
        finally:
            first.__exit__(None, None, None)


# -- SQLite: one server -------------------------------------------------------------------------


def test_a_second_server_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "enginehouse.db"
    first, second = SqliteServerLock(database), SqliteServerLock(database)
    first.acquire()
    assert first.path.read_text() == f"{os.getpid()}\n"  # what a refused server names
    with pytest.raises(AnotherServerError) as refused:
        second.acquire()
    message = str(refused.value)
    assert str(database) in message and "PostgreSQL" in message
    first.release()
    second.acquire()
    second.release()


def test_only_a_sqlite_file_is_claimed(tmp_path: Path) -> None:
    database = tmp_path / "enginehouse.db"
    lock = claim_sqlite_database(f"sqlite:///{database}")
    try:
        assert lock is not None and lock.database_path == database
        with pytest.raises(AnotherServerError, match="serves one server only"):
            claim_sqlite_database(f"sqlite:///{database}")
    finally:
        assert lock is not None
        lock.release()
    assert claim_sqlite_database("sqlite://") is None  # in memory: nothing to share
    assert claim_sqlite_database("postgresql+psycopg://nobody@127.0.0.1:1/none") is None  # never connects


def test_without_a_lock_a_server_leads_from_start_to_stop_with_no_thread() -> None:
    duties = Duties()
    election = LeaderElection(None, 0.01, duties.gain, duties.lose)
    election.start()
    assert election.is_leader and duties.events == ["gain"]
    assert election._thread is None  # nothing to poll: no other server can lead
    election.stop(duties.stop)
    assert not election.is_leader and duties.events == ["gain", "stop"]


def test_a_sqlite_lock_dies_with_its_holder(tmp_path: Path) -> None:
    database = tmp_path / "enginehouse.db"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_FILE_LOCK, str(database)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(AnotherServerError, match=f"pid {holder.pid}"):
            SqliteServerLock(database).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        lock = SqliteServerLock(database)
        lock.acquire()  # raises while another holds it
        lock.release()
    finally:
        holder.kill()
        holder.wait(timeout=10)


_HOLD_FILE_LOCK = """
import sys, time
from pathlib import Path
from enginehouse.reconciler.leadership import SqliteServerLock
lock = SqliteServerLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_server_app_on_one_sqlite_data_dir_does_not_start(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", bootstrap_key="eh-test-sqlite")
    with TestClient(create_app(settings)) as first:
        assert first.get("/health").json()["reconciler"] == "leader"
        assert first.app.state.election.lock is None  # type: ignore[attr-defined]  # its one server leads
        with pytest.raises(AnotherServerError, match="serves one server only"):
            with TestClient(create_app(settings)):
                pass
        assert first.get("/health").status_code == 200
    with TestClient(create_app(settings)) as again:  # the first one's stop freed it
        assert again.get("/health").json()["reconciler"] == "leader"
