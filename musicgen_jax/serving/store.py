"""Tasks that outlive the process, and the queue they wait in: one interface, two databases.

:class:`TaskStore` is what the server uses; :class:`SqliteTaskStore` (here, the default: one
process, ``data_dir/tasks.sqlite3``) and
:class:`~musicgen_jax.serving.postgres_store.PostgresTaskStore` (replicas sharing one database)
implement it with the same SQL, apart from a few dialect words. Audio files live in an
:class:`~musicgen_jax.serving.audio_storage.AudioStorage` (``data_dir/audio`` by default), written
whole before the row says ``completed``, so a row never points at half a file.

The queue is the table: a task is *claimable* while it is queued or running, carries its
generation request (``job``) and nobody holds a live lease on it. A device owner claims the oldest
claimable task and more of the same shape (``claim``), setting ``claimed_by`` and
``lease_expires_at``; it renews its leases while it works (``renew``); it finishes a task only while
it still holds it (``complete`` and ``fail`` check ``claimed_by``), so when a lease lapses and
another owner reclaims the task, exactly one of them records its audio. Lease times come from the
database's clock, so replicas never compare their own clocks.

What happens to unfinished tasks when a process ends is the store's policy (:attr:`shared`): a
private SQLite store fails them as interrupted (the work died with the only process); a shared
store hands them back to the queue for another replica.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from musicgen_jax.serving.audio_storage import AudioStorage

logger = logging.getLogger(__name__)

STATUSES = ("queued", "running", "completed", "failed")
FINISHED = ("completed", "failed")
SCHEMA_VERSION = 2
INTERRUPTED = "interrupted: the server stopped before this task finished; submit it again"
MAX_ATTEMPTS = 3  # claims of one task before it is failed (a request that kills its replica every time)
TOO_MANY_ATTEMPTS = f"failed: {MAX_ATTEMPTS} replicas claimed this task and none finished it"


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    """One row of the tasks table (times are Unix seconds)."""

    task_id: str
    owner: str | None
    status: str
    request: dict[str, Any]  # the settings as applied, as the status reports them
    format: str
    seed: int | None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    file_name: str | None = None
    file_bytes: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    audio_seconds: float | None = None
    generate_seconds: float | None = None
    compile_seconds: float | None = None
    decode_seconds: float | None = None
    batch_size: int | None = None
    # The queue (schema version 2).
    job: dict[str, Any] | None = None  # the generation request, for whichever replica runs it
    shape_key: str | None = None  # tasks batch together only with equal keys
    cache_key: str | None = None  # equal for identical requests with an explicit seed
    claimed_by: str | None = None  # the device owner holding (or that last held) the task
    lease_expires_at: float | None = None  # database clock
    attempts: int = 0  # claims so far
    progress: float | None = None  # 0-1, written by the claimant's lease renewals
    etag: str | None = None  # the audio file's content digest


COLUMNS = [f.name for f in dataclasses.fields(TaskRecord)]
_JSON_COLUMNS = ("request", "job")
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks"
# A column of version 1 and its type, or one added since; "{real}" and "{int}" are dialect words.
COLUMN_TYPES = {
    "task_id": "TEXT PRIMARY KEY",
    "owner": "TEXT",
    "status": "TEXT NOT NULL",
    "request": "TEXT NOT NULL",
    "format": "TEXT NOT NULL",
    "seed": "{int}",
    "created_at": "{real} NOT NULL",
    "started_at": "{real}",
    "finished_at": "{real}",
    "error": "TEXT",
    "file_name": "TEXT",
    "file_bytes": "{int}",
    "sample_rate": "{int}",
    "channels": "{int}",
    "audio_seconds": "{real}",
    "generate_seconds": "{real}",
    "compile_seconds": "{real}",
    "decode_seconds": "{real}",
    "batch_size": "{int}",
    "job": "TEXT",
    "shape_key": "TEXT",
    "cache_key": "TEXT",
    "claimed_by": "TEXT",
    "lease_expires_at": "{real}",
    "attempts": "{int} NOT NULL DEFAULT 0",
    "progress": "{real}",
    "etag": "TEXT",
}
INDEXES = (
    "CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at)",
    "CREATE INDEX IF NOT EXISTS tasks_owner ON tasks (owner, created_at)",
    "CREATE INDEX IF NOT EXISTS tasks_claimable ON tasks (status, created_at)",
    "CREATE INDEX IF NOT EXISTS tasks_cache ON tasks (cache_key)",
    "CREATE INDEX IF NOT EXISTS tasks_claimed ON tasks (claimed_by)",
)
# Queued or running, runnable here, and nobody's live lease on it.
_CLAIMABLE = (
    "status IN ('queued', 'running') AND job IS NOT NULL AND (claimed_by IS NULL OR lease_expires_at < {now})"
)

Execute = Callable[[str, Sequence[Any]], list[tuple]]


class TaskStore(abc.ABC):
    """The task table and the audio storage. Thread-safe; callers are threads, never the event loop."""

    #: True when other processes share the queue: unfinished work is handed back, not failed.
    shared: bool = False
    # Dialect words: the database's clock in Unix seconds, and what makes a claim skip others' rows.
    NOW = ""
    LOCK_ROWS = ""
    IS = "IS"  # "owner IS ?" matches NULL too

    def __init__(self, storage: AudioStorage):
        self.storage = storage

    # ------------------------------------------------------------------------------ the database

    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[Execute]:
        """One transaction; yields ``execute(sql, args) -> rows`` (SQL with ``?`` placeholders)."""

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._transaction() as execute:
            return execute(sql, args)

    def _sql(self, sql: str) -> str:
        return sql.replace("{now}", self.NOW).replace("{claimable}", _CLAIMABLE.replace("{now}", self.NOW))

    @abc.abstractmethod
    def close(self) -> None: ...

    # ------------------------------------------------------------------------------ writes

    def create(
        self,
        task_id: str,
        request: dict[str, Any],
        format: str,
        seed: int | None,
        owner: str | None,
        *,
        job: dict[str, Any] | None = None,
        shape_key: str | None = None,
        cache_key: str | None = None,
    ) -> TaskRecord:
        """A queued task; with ``job`` it is claimable by any device owner."""
        record = TaskRecord(
            task_id,
            owner,
            "queued",
            request,
            format,
            seed,
            time.time(),
            job=job,
            shape_key=shape_key,
            cache_key=cache_key,
        )
        names = ("task_id", "owner", "status", "request", "format", "seed", "created_at", "job")
        names += ("shape_key", "cache_key")
        values = [_column_value(name, getattr(record, name)) for name in names]
        self._execute(f"INSERT INTO tasks ({', '.join(names)}) VALUES ({','.join('?' * len(names))})", values)
        return record

    def claim(
        self, worker: str, limit: int, lease_seconds: float, shape_key: str | None = None
    ) -> list[TaskRecord]:
        """Claim up to ``limit`` claimable tasks, oldest first: of ``shape_key``, or of the oldest
        task's key. A task claimed :data:`MAX_ATTEMPTS` times already is failed instead."""
        with self._transaction() as execute:
            execute(
                self._sql(
                    "UPDATE tasks SET status='failed', error=?, finished_at=?, lease_expires_at=NULL "
                    "WHERE {claimable} AND attempts >= ?"
                ),
                (TOO_MANY_ATTEMPTS, time.time(), MAX_ATTEMPTS),
            )
            if shape_key is None:
                oldest = execute(
                    self._sql(
                        "SELECT task_id, shape_key FROM tasks WHERE {claimable} "
                        f"ORDER BY created_at, task_id LIMIT 1 {self.LOCK_ROWS}"
                    ),
                    (),
                )
                if not oldest:
                    return []
                first, shape_key = oldest[0]
            else:
                first = None
            rows = execute(
                self._sql(
                    "SELECT task_id FROM tasks WHERE {claimable} AND shape_key = ? "
                    f"ORDER BY created_at, task_id LIMIT ? {self.LOCK_ROWS}"
                ),
                (shape_key, int(limit)),
            )
            ids = [first] if first is not None else []
            ids += [row[0] for row in rows if row[0] != first][: int(limit) - len(ids)]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            execute(
                self._sql(
                    "UPDATE tasks SET claimed_by=?, lease_expires_at={now} + ?, attempts=attempts + 1 "
                    f"WHERE task_id IN ({marks})"
                ),
                (worker, float(lease_seconds), *ids),
            )
            claimed = execute(f"{_SELECT} WHERE task_id IN ({marks})", ids)
        order = {task_id: index for index, task_id in enumerate(ids)}
        return sorted((_record(row) for row in claimed), key=lambda record: order[record.task_id])

    def renew(self, worker: str, lease_seconds: float, progress: dict[str, float] | None = None) -> set[str]:
        """Extend ``worker``'s leases (and record its tasks' progress); the task ids it still holds."""
        with self._transaction() as execute:
            for task_id, value in (progress or {}).items():
                execute(
                    "UPDATE tasks SET progress=? WHERE task_id=? AND claimed_by=?",
                    (float(value), task_id, worker),
                )
            rows = execute(
                self._sql(
                    "UPDATE tasks SET lease_expires_at={now} + ? "
                    "WHERE claimed_by=? AND status IN ('queued', 'running') RETURNING task_id"
                ),
                (float(lease_seconds), worker),
            )
        return {row[0] for row in rows}

    def mark_running(
        self, task_ids: list[str], started_at: float, batch_size: int, worker: str | None = None
    ) -> None:
        """The tasks' batch started (on ``worker``, which must hold them when given)."""
        with self._transaction() as execute:
            for task_id in task_ids:
                execute(
                    "UPDATE tasks SET status='running', started_at=?, batch_size=?, progress=0 "
                    "WHERE task_id=? AND status IN ('queued', 'running') "
                    "AND (CAST(? AS TEXT) IS NULL OR claimed_by=?)",
                    (started_at, batch_size, task_id, worker, worker),
                )

    def complete(self, task_id: str, worker: str | None = None, **fields: Any) -> bool:
        """Mark completed with ``fields`` (file_name, file_bytes, etag, timings, ...). With ``worker``,
        only while that worker holds the task; False when it does not (another finished it)."""
        return self._finish(task_id, worker, status="completed", error=None, progress=1.0, **fields)

    def fail(self, task_id: str, error: str, worker: str | None = None, **fields: Any) -> bool:
        return self._finish(task_id, worker, status="failed", error=error, **fields)

    def _finish(self, task_id: str, worker: str | None, **fields: Any) -> bool:
        fields = dict(fields, finished_at=time.time(), lease_expires_at=None)
        _check_columns(fields)
        assignments = ", ".join(f"{name}=?" for name in fields)
        rows = self._execute(
            f"UPDATE tasks SET {assignments} WHERE task_id=? AND status IN ('queued', 'running') "
            "AND (CAST(? AS TEXT) IS NULL OR claimed_by=?) RETURNING task_id",
            (*(_column_value(n, v) for n, v in fields.items()), task_id, worker, worker),
        )
        return bool(rows)

    def release(self, worker: str, task_ids: Sequence[str] | None = None) -> int:
        """Hand ``worker``'s unfinished tasks (or just ``task_ids``) back to the queue; how many."""
        query = (
            "UPDATE tasks SET status='queued', claimed_by=NULL, lease_expires_at=NULL, started_at=NULL, "
            "batch_size=NULL, progress=NULL, attempts=CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END "
            "WHERE claimed_by=? AND status IN ('queued', 'running')"
        )
        args: list[Any] = [worker]
        if task_ids is not None:
            if not task_ids:
                return 0
            query += f" AND task_id IN ({','.join('?' * len(task_ids))})"
            args += list(task_ids)
        return len(self._execute(query + " RETURNING task_id", args))

    def fail_unfinished(self, error: str) -> int:
        """Fail every queued or running task (a private store whose only process stops); how many."""
        rows = self._execute(
            "UPDATE tasks SET status='failed', error=?, finished_at=?, lease_expires_at=NULL "
            "WHERE status IN ('queued', 'running') RETURNING task_id",
            (error, time.time()),
        )
        return len(rows)

    def recover(self) -> int:
        """What a starting process does about the tasks that ended processes left: a private store
        fails them as interrupted; a shared one leaves them to their leases. Returns how many failed."""
        if self.shared:
            return 0
        count = self.fail_unfinished(INTERRUPTED)
        if count:
            logger.warning("marked %d interrupted task(s) failed", count)
        return count

    # ------------------------------------------------------------------------------ reads

    def get(self, task_id: str) -> TaskRecord | None:
        rows = self._execute(f"{_SELECT} WHERE task_id=?", (task_id,))
        return _record(rows[0]) if rows else None

    def list(
        self, limit: int = 20, status: str | None = None, owner: str | None = None, any_owner: bool = False
    ) -> list[TaskRecord]:
        """The newest tasks of ``owner`` (of everyone when ``any_owner``), newest first."""
        query = f"{_SELECT} WHERE (? OR owner {self.IS} ?)"
        args: list[Any] = [bool(any_owner), owner]
        if status is not None:
            query += " AND status=?"
            args.append(status)
        query += " ORDER BY created_at DESC LIMIT ?"
        args.append(int(limit))
        return [_record(row) for row in self._execute(query, args)]

    def delete(self, task_id: str) -> None:
        """Forget a task (and its file)."""
        rows = self._execute("DELETE FROM tasks WHERE task_id=? RETURNING file_name", (task_id,))
        for (file_name,) in rows:
            if file_name:
                self.storage.delete(file_name)

    def counts(self) -> dict[str, int]:
        rows = self._execute("SELECT status, COUNT(*) FROM tasks GROUP BY status")
        return dict.fromkeys(STATUSES, 0) | {status: int(count) for status, count in rows}

    def queue_depth(self) -> int:
        """Tasks waiting for a device owner (claimed ones in a batch being formed excluded)."""
        rows = self._execute(
            self._sql("SELECT COUNT(*) FROM tasks WHERE {claimable} AND status='queued'"), ()
        )
        return int(rows[0][0])

    def queue_position(self, record: TaskRecord) -> int | None:
        """0-based place of a queued task among the waiting ones (0 once claimed); None otherwise."""
        if record.status != "queued":
            return None
        rows = self._execute(
            self._sql(
                "SELECT COUNT(*) FROM tasks WHERE {claimable} AND status='queued' "
                "AND (created_at < ? OR (created_at = ? AND task_id < ?))"
            ),
            (record.created_at, record.created_at, record.task_id),
        )
        return int(rows[0][0])

    def find_completed(self, cache_key: str, owner: str | None) -> TaskRecord | None:
        """The newest completed task of ``owner`` with ``cache_key`` (an identical request)."""
        rows = self._execute(
            f"{_SELECT} WHERE cache_key=? AND owner {self.IS} ? AND status='completed' "
            "ORDER BY created_at DESC LIMIT 1",
            (cache_key, owner),
        )
        return _record(rows[0]) if rows else None

    # ------------------------------------------------------------------------------ audio

    @property
    def audio_dir(self) -> Path | None:
        """The audio directory when storage is local."""
        return self.storage.directory

    def audio_path(self, record: TaskRecord) -> Path | None:
        """The local path of a task's file (None when it has none or storage is remote)."""
        return self.storage.local_path(record.file_name) if record.file_name else None

    # ------------------------------------------------------------------------------ cleanup

    def cleanup(self, max_age_seconds: float, max_bytes: float, now: float | None = None) -> list[str]:
        """Delete finished tasks older than ``max_age_seconds``, then the oldest finished ones while
        their files total more than ``max_bytes``. Returns the deleted task ids."""
        now = time.time() if now is None else now
        rows = self._execute(
            "SELECT task_id, COALESCE(file_bytes, 0), COALESCE(finished_at, created_at) "
            "FROM tasks WHERE status IN ('completed', 'failed') "
            "ORDER BY COALESCE(finished_at, created_at)"
        )
        total = sum(row[1] for row in rows)
        doomed = []
        for task_id, size, finished in rows:  # oldest first
            if now - finished > max_age_seconds or total > max_bytes:
                doomed.append(task_id)
                total -= size
        deleted = []
        for task_id in doomed:
            # The row goes first: a task that is gone is 404, never "completed" without its file.
            # Whoever deletes the row (replicas clean up concurrently) deletes the file.
            gone = self._execute("DELETE FROM tasks WHERE task_id=? RETURNING file_name", (task_id,))
            for (file_name,) in gone:
                deleted.append(task_id)
                if file_name:
                    self.storage.delete(file_name)
        if deleted:
            logger.info("cleanup deleted %d finished task(s)", len(deleted))
        return deleted


class SqliteTaskStore(TaskStore):
    """The default store: ``data_dir/tasks.sqlite3``, one process. One connection, guarded by a
    lock: every statement is short. Claims take SQLite's write lock (``BEGIN IMMEDIATE``)."""

    NOW = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, data_dir: str | Path, storage: AudioStorage | None = None):
        self.data_dir = Path(data_dir).expanduser()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(storage or AudioStorage(self.data_dir / "audio"))
        self.path = self.data_dir / "tasks.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer's fsync
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}; this server reads {SCHEMA_VERSION}"
            )
        with self._transaction() as execute:
            execute(f"CREATE TABLE IF NOT EXISTS tasks ({_column_definitions(self)})", ())
            present = {row[1] for row in execute("PRAGMA table_info(tasks)", ())}
            for name in COLUMNS:
                if name not in present:  # a version 1 database: the queue's columns are new
                    execute(f"ALTER TABLE tasks ADD COLUMN {name} {_column_type(self, name)}", ())
            for index in INDEXES:
                execute(index, ())
            execute(f"PRAGMA user_version={SCHEMA_VERSION}", ())

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Execute]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield lambda sql, args: self._db.execute(sql, tuple(args)).fetchall()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _column_type(store: TaskStore, name: str) -> str:
    integer, real = ("BIGINT", "DOUBLE PRECISION") if store.shared else ("INTEGER", "REAL")
    return COLUMN_TYPES[name].replace("{int}", integer).replace("{real}", real)


def _column_definitions(store: TaskStore) -> str:
    return ", ".join(f"{name} {_column_type(store, name)}" for name in COLUMNS)


def _check_columns(fields: dict[str, Any]) -> None:
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown task fields {sorted(unknown)}")


def _column_value(name: str, value: Any) -> Any:
    return json.dumps(value) if name in _JSON_COLUMNS and value is not None else value


def _record(row: tuple) -> TaskRecord:
    values = dict(zip(COLUMNS, row))
    for name in _JSON_COLUMNS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    values["attempts"] = values["attempts"] or 0
    return TaskRecord(**values)
