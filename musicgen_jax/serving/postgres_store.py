"""The shared task store: one PostgreSQL database for every replica (``database_url``).

The same table and SQL as :class:`~musicgen_jax.serving.store.SqliteTaskStore`; claims lock the
rows they take with ``FOR UPDATE SKIP LOCKED``, so replicas claiming at once take different tasks
without waiting for each other, and lease times use the database's clock. The schema is created
or migrated on start under an advisory lock (replicas starting together migrate once); the
version is kept in ``musicgen_schema``.

One connection per store, guarded by a lock (every statement is short); a broken connection is
replaced on the next call, so a database restart costs the calls made while it was down.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from musicgen_jax.serving.audio_storage import AudioStorage
from musicgen_jax.serving.store import (
    COLUMNS,
    INDEXES,
    SCHEMA_VERSION,
    Execute,
    TaskStore,
    _column_definitions,
    _column_type,
)

logger = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x6D75_7369_6367_656E  # "musicgen": serialises replicas migrating at once


class StoreUnavailable(RuntimeError):
    """The database cannot be reached (the message names it without its password)."""


def describe(url: str) -> str:
    """``user@host:port/database`` of a connection URL, never its password."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:  # an unparsable URL: say nothing of it
        return "the database"
    where = f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}"
    return f"{parts.get('user', '')}@{where}/{parts.get('dbname', '')}"


class PostgresTaskStore(TaskStore):
    """Tasks in PostgreSQL (``postgresql://user@host:5432/db``), shared by every replica."""

    shared = True
    NOW = "extract(epoch from clock_timestamp())::double precision"
    LOCK_ROWS = "FOR UPDATE SKIP LOCKED"
    IS = "IS NOT DISTINCT FROM"

    def __init__(self, url: str, storage: AudioStorage, *, connect_timeout: float = 10.0):
        try:
            import psycopg
        except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
            raise RuntimeError('database_url needs psycopg 3: pip install "psycopg[binary]"') from None
        super().__init__(storage)
        self.url = url
        self._psycopg = psycopg
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._connection = None
        try:
            self._migrate()
        except psycopg.OperationalError as error:
            message = str(error).replace(url, describe(url)).strip().splitlines()[0]
            raise StoreUnavailable(f"cannot reach the task database {describe(url)}: {message}") from None

    def _connect(self):
        if self._connection is None or self._connection.closed or self._connection.broken:
            self._connection = self._psycopg.connect(
                self.url, autocommit=True, connect_timeout=int(self._connect_timeout)
            )
        return self._connection

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Execute]:
        with self._lock:
            connection = self._connect()
            with connection.transaction(), connection.cursor() as cursor:

                def execute(sql: str, args) -> list[tuple]:
                    cursor.execute(sql.replace("?", "%s"), tuple(args))
                    return cursor.fetchall() if cursor.description is not None else []

                yield execute

    def _migrate(self) -> None:
        with self._transaction() as execute:
            execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            execute("CREATE TABLE IF NOT EXISTS musicgen_schema (version INTEGER NOT NULL)", ())
            rows = execute("SELECT version FROM musicgen_schema", ())
            version = rows[0][0] if rows else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the database has schema version {version}; this server reads {SCHEMA_VERSION}"
                )
            execute(f"CREATE TABLE IF NOT EXISTS tasks ({_column_definitions(self)})", ())
            present = execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'tasks'",
                (),
            )
            for name in sorted(set(COLUMNS) - {row[0] for row in present}):
                execute(f"ALTER TABLE tasks ADD COLUMN {name} {_column_type(self, name)}", ())
            for index in INDEXES:
                execute(index, ())
            if rows:
                execute("UPDATE musicgen_schema SET version=?", (SCHEMA_VERSION,))
            else:
                execute("INSERT INTO musicgen_schema (version) VALUES (?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
