"""Database plumbing: the engine (SQLite in WAL mode, or PostgreSQL), sessions and migrations.

SQLite transactions are begun by us, not by the driver: ``BEGIN IMMEDIATE`` for sessions that write
(so a read-then-write transaction never fails half way with "database is locked": it waits, up to
``busy_timeout``, for the single writer lock before reading anything), plain ``BEGIN`` for reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 5000
_BEGIN_OPTION = "framepack_sqlite_begin"
_MIGRATION_LOCK = 0x6670_6A6F_6273  # PostgreSQL advisory lock key serialising concurrent migrations


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, ``synchronous=NORMAL``, a busy timeout and our own BEGIN."""
    url = make_url(url)
    if url.drivername in ("postgresql", "postgres"):
        # SQLAlchemy's default PostgreSQL driver is psycopg2; we ship psycopg 3 (the `postgres` extra).
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() != "sqlite":
        # pre_ping: after a database restart, stale pooled connections are replaced, not handed out;
        # a connect timeout, so that an unreachable server is an error in seconds, not a hang.
        if url.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 5, **kwargs.get("connect_args", {})}
        return create_engine(url, pool_pre_ping=True, **kwargs)

    connect_args = {"check_same_thread": False, **kwargs.pop("connect_args", {})}
    memory = _is_memory(url)
    if memory:
        kwargs.setdefault("poolclass", StaticPool)  # one shared connection, or each one sees an empty database
    elif not str(url.database).startswith("file:"):
        Path(str(url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver must not BEGIN on its own: we do (below)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN " + conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED"))

    return engine


def _alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_engine(engine: Engine) -> None:
    """Bring the database behind ``engine`` to the newest schema (``alembic upgrade head``).

    All in one transaction that holds the writer lock (SQLite) or an advisory lock (PostgreSQL), so
    that processes starting together on a fresh database don't both create the tables.
    """
    url = engine.url.render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config = _alembic_config(url)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")


def upgrade_database(url: str) -> None:
    """Run ``alembic upgrade head`` on the database at ``url`` (no alembic.ini needed)."""
    engine = make_engine(url)
    try:
        upgrade_engine(engine)
    finally:
        engine.dispose()


class Database:
    """An engine and its session factories; ``session()`` commits on success and rolls back on error."""

    def __init__(self, url: str | URL, *, migrate: bool = True, **engine_kwargs: Any) -> None:
        self.engine = make_engine(url, **engine_kwargs)
        if migrate:
            upgrade_engine(self.engine)
        writer = self.engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        self._write = sessionmaker(bind=writer, expire_on_commit=False)
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``sqlite``, ``postgresql``, ..."""
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back if it raises.

        ``write=False`` is for read-only work; on SQLite it does not take the writer lock.
        """
        with (self._write if write else self._read)() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


class LeaderLock:
    """At most one holder among all processes on the database: for work that must run once per
    deployment (webhook delivery), whichever API replica holds the lock does it.

    PostgreSQL: a session advisory lock on a connection of its own, released by the server when the
    holder dies or its connection breaks (after which another replica takes it over). SQLite lives on
    one machine: every caller holds it (one server per SQLite file is the supported set-up).
    """

    def __init__(self, db: Database, key: int) -> None:
        self.db, self.key = db, key
        self._conn: Connection | None = None

    def held(self) -> bool:
        """Whether this process holds the lock now (taking it if it is free)."""
        if self.db.dialect != "postgresql":
            return True
        try:
            if self._conn is not None:
                self._conn.exec_driver_sql("SELECT 1")  # still connected, so still holding it
                return True
            conn = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar():
                self._conn = conn
                return True
            conn.close()
        except Exception:  # the database is away: nobody can be sure to hold it; try again later
            self.release()
        return False

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            # Invalidate, not close: close() would return the session (and its lock) to the pool.
            conn.invalidate()
            conn.close()


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (worth retrying), not that a query was wrong."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
