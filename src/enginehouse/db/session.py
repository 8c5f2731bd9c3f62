"""The database handle: made explicitly by whoever needs it (server, CLI, tests), never a global."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine as SqlEngine
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from enginehouse.db.models import EventModel

log = logging.getLogger(__name__)

# Told, after each commit that recorded events, the ids of the engines those events belong to.
ChangeListener = Callable[[set[str]], None]


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            database_file = sqlite_file(url)
            if database_file is not None:
                database_file.parent.mkdir(parents=True, exist_ok=True)
            self.engine: SqlEngine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._change_listeners: list[ChangeListener] = []
        event.listen(self._sessions, "after_flush", _note_changed_engines)
        event.listen(self._sessions, "after_commit", self._announce_changes)
        event.listen(self._sessions, "after_rollback", _forget_changed_engines)

    def on_engine_change(self, listener: ChangeListener) -> None:
        """Call ``listener`` after every commit that changed an engine or what it holds (every
        such change records an event), with those engines' ids. It runs on the committing
        thread, so it must be quick and thread-safe."""
        self._change_listeners.append(listener)

    def off_engine_change(self, listener: ChangeListener) -> None:
        """Stop calling ``listener`` (no error when it was not listening)."""
        if listener in self._change_listeners:
            self._change_listeners.remove(listener)

    @contextmanager
    def session(self, announce: bool = True) -> Iterator[Session]:
        """One unit of work: commits on success, rolls back on error. With ``announce`` false,
        the change listeners are not told of what it commits (the reconciler's own writes)."""
        session = self._sessions()
        session.info["announce"] = announce
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _announce_changes(self, session: Session) -> None:
        changed: set[str] = session.info.pop(_CHANGED, set())
        if not changed or not session.info.get("announce", True):
            return
        for listener in self._change_listeners:
            try:
                listener(changed)
            except Exception:  # a listener's trouble must not fail a write already committed
                log.exception("a change listener failed")

    def migrate(self) -> None:
        from enginehouse.db.migrate import upgrade_to_head

        upgrade_to_head(self.engine)

    def close(self) -> None:
        self.engine.dispose()


_CHANGED = "changed_engines"


def _note_changed_engines(session: Session, _flush_context: object) -> None:
    # After a flush the session still lists what the flush wrote as new.
    for obj in session.new:
        if isinstance(obj, EventModel):
            session.info.setdefault(_CHANGED, set()).add(obj.engine_id)


def _forget_changed_engines(session: Session) -> None:
    session.info.pop(_CHANGED, None)


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite database URL names; None for any other database, and for an in-memory
    SQLite database (which no other connection, let alone another server, can share)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the gateway read while the reconciler writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
