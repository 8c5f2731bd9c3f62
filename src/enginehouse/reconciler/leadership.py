"""Which server of a control plane runs the reconciler: exactly one at a time.

Several ``enginehouse up`` servers may share one PostgreSQL database; all of them serve the API
and the gateway, but only the holder of a lock runs what must be single (the reconciler, the
training supervisor, the demo's set-up). The lock is a session-level advisory lock held on a
connection of its own: PostgreSQL drops it when that connection ends, so a server that dies,
even by ``kill -9``, gives it up as soon as the database sees the connection close (at once on
one machine, where the kernel closes the socket; within the keepalive bound below across a
network). The others try to take it every ``poll_s`` seconds.

SQLite cannot be shared between servers, so a server on SQLite always leads (no lock, no
election thread): a second one on the same database file is refused at start instead
(``claim_sqlite_database``, ``AnotherServerError``), through an exclusive ``flock`` on a file
beside the database that the kernel releases when its holder dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from enginehouse.core.deadline import first_line
from enginehouse.db.session import Database, sqlite_file

log = logging.getLogger(__name__)

# The first half of every advisory-lock key enginehouse takes ("engh"); the second half is the
# schema's, so control planes in different schemas of one database never contend.
LOCK_CLASS = 0x656E6768
LEADER_LOCK = LOCK_CLASS
STARTUP_LOCK = LOCK_CLASS + 1
# libpq's keepalives on the lock connection: a leader cut off from the database notices (its
# check fails) within about idle + interval × count seconds instead of the kernel's two hours.
_CLIENT_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                      "keepalives_count": 3, "connect_timeout": 10}
# The same bound on the database's side, so it drops the lock of a server whose machine vanished
# (no FIN ever comes) within about 11 s. Ignored on a Unix socket, where death is seen at once.
_SERVER_KEEPALIVES = ("SET tcp_keepalives_idle = 5", "SET tcp_keepalives_interval = 2",
                      "SET tcp_keepalives_count = 3")


class AnotherServerError(RuntimeError):
    """A second server was started on a SQLite database a running server already uses."""


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a dedicated connection, outside the pool."""

    def __init__(self, url: str, key: int = LEADER_LOCK, application_name: str = "enginehouse leader lock") -> None:
        connect_args: dict[str, object] = {**_CLIENT_KEEPALIVES, "application_name": application_name}
        # NullPool: closing the connection really ends the session, which is what frees the lock.
        self._engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
        self._key = key
        self._connection: Connection | None = None

    def try_acquire(self) -> bool:
        try:
            connection = self._connect()
            taken = connection.execute(text("SELECT pg_try_advisory_lock(:k1, :k2)"),
                                       {"k1": self._key, "k2": schema_key(connection)}).scalar()
        except SQLAlchemyError as exc:
            log.warning("cannot reach the database to take the reconciler lock: %s", first_line(exc))
            self._drop()
            return False
        if not taken:
            self._drop()  # a standby holds no connection between tries
        return bool(taken)

    def still_held(self) -> bool:
        # A session lock is released only by its own session (we never unlock but in release())
        # or by the session's end: while the connection answers, the lock is ours.
        if self._connection is None:
            return False
        try:
            self._connection.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError as exc:
            log.warning("lost the connection that holds the reconciler lock: %s", first_line(exc))
            self._drop()
            return False

    def release(self) -> None:
        self._drop()  # ending the session frees its locks; no explicit unlock to forget

    def _connect(self) -> Connection:
        if self._connection is None:
            # Autocommit: a session lock outlives transactions, and the connection must never sit
            # "idle in transaction" between checks.
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            for statement in _SERVER_KEEPALIVES:
                connection.execute(text(statement))
            self._connection = connection
        return self._connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.invalidate()  # close the socket; never return it anywhere
                connection.close()
            except SQLAlchemyError:
                pass


def schema_key(connection: Connection) -> int:
    """The schema's half of a lock key: a signed 32-bit hash of its name, the same on every server."""
    schema = connection.execute(text("SELECT current_schema()")).scalar() or ""
    value = zlib.crc32(str(schema).encode())
    return value - (1 << 32) if value >= 1 << 31 else value


class SqliteServerLock:
    """An exclusive ``flock`` on ``<database file>.server-lock``: one server per SQLite file."""

    def __init__(self, database_path: Path) -> None:
        self.database_path = database_path
        self.path = database_path.with_name(database_path.name + ".server-lock")
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take it, or raise ``AnotherServerError`` naming the server that holds it."""
        if self._descriptor is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise AnotherServerError(
                f"another enginehouse server (pid {holder}) already uses the SQLite database "
                f"{self.database_path}; a SQLite database serves one server only: stop that one, "
                f"or give this one another data directory, or run several servers on PostgreSQL "
                f"(ENGINEHOUSE_DATABASE_URL)") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self._descriptor = descriptor  # a flock lasts as long as its descriptor

    def release(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)  # closing drops the flock; the file stays (removing it would race)


def claim_sqlite_database(url: str) -> SqliteServerLock | None:
    """Take the server lock of the SQLite file ``url`` names, held until released (or until the
    process ends), or raise ``AnotherServerError``. None for any other database: PostgreSQL is
    shared by its servers, and an in-memory SQLite database cannot be."""
    path = sqlite_file(url)
    if path is None:
        return None
    lock = SqliteServerLock(path)
    lock.acquire()
    return lock


def leader_lock(database: Database) -> AdvisoryLock | None:
    """The lock that elects this database's reconciler: an advisory lock on PostgreSQL; none on
    SQLite, whose one server (``claim_sqlite_database``) always leads."""
    return None if database.is_sqlite else AdvisoryLock(database.url)


class LeaderElection:
    """Holds the leader lock, or tries for it every ``poll_s`` seconds, in a thread of its own;
    runs ``on_gain`` once it holds the lock and ``on_lose`` if it loses it. Without a lock (a
    server on SQLite) it leads from ``start`` to ``stop``, with no thread."""

    def __init__(self, lock: AdvisoryLock | None, poll_s: float,
                 on_gain: Callable[[], None], on_lose: Callable[[], None]) -> None:
        self.lock = lock
        self.poll_s = poll_s
        self.on_gain = on_gain
        self.on_lose = on_lose
        self._leader = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        return self._leader

    def start(self) -> None:
        """Try once now (so a lone server runs its reconciler from its first request on), then
        keep trying, or checking, in the background. What starting the duties raises here is
        raised (a server that cannot run its reconciler does not start)."""
        self._try_to_lead(at_start=True)
        if not self._leader:
            log.info("another server leads: this one serves the API and the gateway, and takes over "
                     "the reconciler if that one stops (it tries every %g s)", self.poll_s)
        if self.lock is not None:
            self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
            self._thread.start()

    def stop(self, on_stop: Callable[[], None]) -> None:
        """Stop trying; if leading, run ``on_stop`` (the leader's shutdown) before the lock is
        given up, so no other server takes over a half-stopped control plane."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            if self._leader:
                on_stop()
        finally:
            self._leader = False
            if self.lock is not None:
                self.lock.release()

    def _run(self) -> None:
        while not self._stopping.wait(self.poll_s):
            try:
                if self._leader:
                    self._check_still_leader()
                else:
                    self._try_to_lead()
            except Exception:  # the election must go on whatever one pass met
                log.exception("leader election pass failed")

    def _try_to_lead(self, at_start: bool = False) -> None:
        if self.lock is not None and not self.lock.try_acquire():
            return
        self._leader = True
        log.info("this server now leads: it runs the reconciler and the training supervisor")
        try:
            self.on_gain()
        except Exception:
            # Half-started duties are stopped and the lock given back, so another server (or
            # this one, at the next try) can lead properly.
            log.exception("starting the reconciler failed; giving up the lead")
            self._give_up()
            if at_start:
                raise

    def _check_still_leader(self) -> None:
        assert self.lock is not None
        if self.lock.still_held():
            return
        log.warning("this server lost the lead (its database connection ended): it stops its reconciler "
                    "and leaves the replicas to the server that takes over")
        self._give_up()

    def _give_up(self) -> None:
        self._leader = False
        try:
            self.on_lose()
        finally:
            if self.lock is not None:
                self.lock.release()


@contextmanager
def one_server_at_a_time(url: str) -> Iterator[None]:
    """On PostgreSQL, servers starting together pass through this one after the other: migrating
    the schema and creating the first organization would otherwise race. Elsewhere a no-op."""
    if make_url(url).get_backend_name() != "postgresql":
        yield
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            key = {"k1": STARTUP_LOCK, "k2": schema_key(connection)}
            connection.execute(text("SELECT pg_advisory_lock(:k1, :k2)"), key)  # waits its turn
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k1, :k2)"), key)
    finally:
        engine.dispose()
