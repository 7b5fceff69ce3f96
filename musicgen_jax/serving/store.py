"""Tasks that outlive the process: an embedded SQLite database and a directory of audio files.

Layout of ``data_dir``: ``tasks.sqlite3`` (one row per task) and ``audio/<task_id>.<format>``.
Audio is written atomically by :func:`musicgen_jax.audio.save_audio` before the row says
``completed``, so a row never points at half a file. On start :meth:`TaskStore.recover` marks every
task that was queued or running when the last process ended as failed (the device work is lost
with the process). :meth:`TaskStore.cleanup` deletes finished tasks by age, then oldest first while
the audio directory is over its size limit.

One connection, guarded by a lock: every statement is short, and callers are threads (the request
thread pool, the device worker, the audio pool), never the event loop itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STATUSES = ("queued", "running", "completed", "failed")
FINISHED = ("completed", "failed")
SCHEMA_VERSION = 1
INTERRUPTED = "interrupted: the server stopped before this task finished; submit it again"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    owner TEXT,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    format TEXT NOT NULL,
    seed INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    file_name TEXT,
    file_bytes INTEGER,
    sample_rate INTEGER,
    channels INTEGER,
    audio_seconds REAL,
    generate_seconds REAL,
    compile_seconds REAL,
    decode_seconds REAL,
    batch_size INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at);
CREATE INDEX IF NOT EXISTS tasks_owner ON tasks (owner, created_at);
"""


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    """One row of the ``tasks`` table (times are Unix seconds)."""

    task_id: str
    owner: str | None
    status: str
    request: dict[str, Any]
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


_COLUMNS = [f.name for f in dataclasses.fields(TaskRecord)]


class TaskStore:
    """The task table and the audio directory under ``data_dir``."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir).expanduser()
        self.audio_dir = self.data_dir / "audio"
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "tasks.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer's fsync
        self._db.execute("PRAGMA synchronous=NORMAL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise RuntimeError(
                f"{self.path} has schema version {version}; this server reads {SCHEMA_VERSION}"
            )
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------------------ writes

    def create(
        self, task_id: str, request: dict[str, Any], format: str, seed: int | None, owner: str | None
    ) -> TaskRecord:
        record = TaskRecord(task_id, owner, "queued", request, format, seed, time.time())
        with self._lock:
            self._db.execute(
                "INSERT INTO tasks (task_id, owner, status, request, format, seed, created_at) "
                "VALUES (?,?,?,?,?,?,?)",
                (task_id, owner, "queued", json.dumps(request), format, seed, record.created_at),
            )
        return record

    def mark_running(self, task_ids: list[str], started_at: float, batch_size: int) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE tasks SET status='running', started_at=?, batch_size=? "
                "WHERE task_id=? AND status='queued'",
                [(started_at, batch_size, task_id) for task_id in task_ids],
            )

    def complete(self, task_id: str, **fields: Any) -> None:
        """Mark completed with ``fields`` (file_name, file_bytes, sample_rate, timings, ...)."""
        self._update(task_id, status="completed", finished_at=time.time(), error=None, **fields)

    def fail(self, task_id: str, error: str, **fields: Any) -> None:
        self._update(task_id, status="failed", finished_at=time.time(), error=error, **fields)

    def _update(self, task_id: str, **fields: Any) -> None:
        unknown = set(fields) - set(_COLUMNS)
        if unknown:
            raise KeyError(f"unknown task fields {sorted(unknown)}")
        assignments = ", ".join(f"{name}=?" for name in fields)
        with self._lock:
            self._db.execute(f"UPDATE tasks SET {assignments} WHERE task_id=?", (*fields.values(), task_id))

    def recover(self) -> int:
        """Fail every task a previous process left queued or running; returns how many."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE tasks SET status='failed', error=?, finished_at=? "
                "WHERE status IN ('queued', 'running')",
                (INTERRUPTED, time.time()),
            )
        if cursor.rowcount:
            logger.warning("marked %d interrupted task(s) failed", cursor.rowcount)
        return cursor.rowcount

    # ------------------------------------------------------------------------------ reads

    def get(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM tasks WHERE task_id=?", (task_id,)
            ).fetchone()
        return _record(row) if row else None

    def list(
        self, limit: int = 20, status: str | None = None, owner: str | None = None, any_owner: bool = False
    ) -> list[TaskRecord]:
        """The newest tasks of ``owner`` (of everyone when ``any_owner``), newest first."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM tasks WHERE (? OR owner IS ?)"
        args: list[Any] = [any_owner, owner]
        if status is not None:
            query += " AND status=?"
            args.append(status)
        query += " ORDER BY created_at DESC LIMIT ?"
        args.append(int(limit))
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [_record(row) for row in rows]

    def delete(self, task_id: str) -> None:
        """Forget a task (and its file)."""
        record = self.get(task_id)
        with self._lock:
            self._db.execute("DELETE FROM tasks WHERE task_id=?", (task_id,))
        if record is not None and record.file_name:
            (self.audio_dir / record.file_name).unlink(missing_ok=True)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall()
        return dict.fromkeys(STATUSES, 0) | dict(rows)

    def audio_path(self, record: TaskRecord) -> Path | None:
        return self.audio_dir / record.file_name if record.file_name else None

    def new_audio_path(self, task_id: str, format: str) -> Path:
        return self.audio_dir / f"{task_id}.{format}"

    # ------------------------------------------------------------------------------ cleanup

    def cleanup(self, max_age_seconds: float, max_bytes: float, now: float | None = None) -> list[str]:
        """Delete finished tasks older than ``max_age_seconds``, then the oldest finished ones while
        their files total more than ``max_bytes``. Returns the deleted task ids."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT task_id, file_name, COALESCE(file_bytes, 0), COALESCE(finished_at, created_at) "
                "FROM tasks WHERE status IN ('completed', 'failed') "
                "ORDER BY COALESCE(finished_at, created_at)"
            ).fetchall()
        total = sum(row[2] for row in rows)
        doomed = []
        for task_id, file_name, size, finished in rows:  # oldest first
            if now - finished > max_age_seconds or total > max_bytes:
                doomed.append((task_id, file_name))
                total -= size
        for task_id, file_name in doomed:
            # The row goes first: a task that is gone is 404, never "completed" without its file.
            with self._lock:
                self._db.execute("DELETE FROM tasks WHERE task_id=?", (task_id,))
            if file_name:
                (self.audio_dir / file_name).unlink(missing_ok=True)
        if doomed:
            logger.info("cleanup deleted %d finished task(s)", len(doomed))
        return [task_id for task_id, _ in doomed]


def _record(row: tuple) -> TaskRecord:
    values = dict(zip(_COLUMNS, row))
    values["request"] = json.loads(values["request"])
    return TaskRecord(**values)
