"""Engine, sessions and schema migrations of the backend store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

_MIGRATIONS = Path(__file__).with_name("migrations")


# Execution option for connections that only read: on SQLite they begin deferred, so they
# never queue for the write lock (on the event loop, that would stall the lock's holder).
READ_ONLY = "cvm_read_only"


class StoreError(Exception):
    """The store could not be opened, migrated or written."""


def make_engine(url: str) -> Engine:
    """An engine tuned for the backend: SQLite in WAL mode shared across threads."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=20,
            max_overflow=40,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # The busy timeout serialises writers instead of failing them.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
            # Let SQLAlchemy, not pysqlite, decide when a transaction begins (below).
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            # A deferred transaction that reads and then writes fails with "database is
            # locked" at the upgrade, which busy_timeout never retries (SQLITE_BUSY_SNAPSHOT
            # in WAL). Taking the write lock at BEGIN makes concurrent writers wait their
            # turn instead. Pure reads (READ_ONLY) stay deferred: in WAL they never wait.
            if connection.get_execution_options().get(READ_ONLY):
                connection.exec_driver_sql("BEGIN")
            else:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        if database and database != ":memory:":
            # WAL (readers never wait for the writer) is a property of the file: set it
            # once here. Setting it on every new connection takes a lock that pooled
            # connections in open reads hold up, stalling requests under load.
            # A raw connection, because a SQLAlchemy one would BEGIN first and SQLite
            # refuses to change the journal mode inside a transaction.
            raw = engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA journal_mode=WAL")
            finally:
                raw.close()
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(url: str) -> Config:
    """Alembic configuration for `url`, without an alembic.ini on disk."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` to `revision` (idempotent)."""
    try:
        command.upgrade(alembic_config(url), revision)
    except Exception as exc:
        raise StoreError(f"migrating the store failed: {exc}") from exc


class Store:
    """The store: an engine and a session factory; `session()` is one transaction."""

    def __init__(self, url: str, *, migrate_schema: bool = True) -> None:
        self.url = url
        if migrate_schema:
            migrate(url)
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def new_session(self, *, read_only: bool = False) -> Session:
        """A session the caller commits or rolls back and closes (it connects on first use).

        `read_only` sessions never queue for SQLite's write lock (and must not write).
        """
        return self._read_sessions() if read_only else self._sessions()

    def close(self) -> None:
        self.engine.dispose()
