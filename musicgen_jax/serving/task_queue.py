"""The task store's queue seen from one process: claims tasks as device jobs, keeps their leases alive.

Each process is one *worker* of the queue, named by :attr:`TaskQueue.worker_id` (host, process id
and a random part: a restarted process is a new worker). The device thread claims through
:meth:`TaskQueue.claim` (a :class:`~musicgen_jax.serving.queue.JobSource`); a heartbeat thread
renews the leases of every task the worker holds, every third of the lease, and writes their
progress. A worker that dies stops renewing; once its leases lapse another worker reclaims its
tasks. A worker that finds it no longer holds a task (its lease lapsed while it was stalled and
someone else took it) cancels its job; should it finish first anyway, the store refuses its result
(:meth:`~musicgen_jax.serving.store.TaskStore.complete` checks the holder), so a task's audio is
recorded once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from musicgen_jax.serving.queue import Job
from musicgen_jax.serving.store import TaskRecord, TaskStore

logger = logging.getLogger(__name__)


def shape_key_text(key: tuple) -> str:
    """A job's shape key as the store keeps it (tasks batch together only with equal keys)."""
    return json.dumps(list(key))


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class TaskQueue:
    """Claims from ``store`` for this process; ``make_job`` turns a claimed record into a device job
    (raising ValueError for a record it cannot run, which is then failed)."""

    def __init__(
        self,
        store: TaskStore,
        make_job: Callable[[TaskRecord], Job],
        *,
        lease_seconds: float = 30.0,
        worker_id: str | None = None,
    ):
        self.store = store
        self.make_job = make_job
        self.lease_seconds = lease_seconds
        self.worker_id = worker_id or new_worker_id()
        self.held: dict[str, Job] = {}  # task id -> its job, from claim to finish
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ claims

    def claim(self, limit: int, key: tuple | None) -> list[Job]:
        records = self.store.claim(
            self.worker_id, limit, self.lease_seconds, None if key is None else shape_key_text(key)
        )
        jobs = []
        for record in records:
            try:
                job = self.make_job(record)
            except Exception as error:  # noqa: BLE001 - a row this server cannot run fails alone
                logger.warning("task %s cannot run here: %s", record.task_id, error)
                self.store.fail(record.task_id, f"cannot run this task: {error}", worker=self.worker_id)
                continue
            with self._lock:
                self.held[record.task_id] = job
            jobs.append(job)
        return jobs

    def finished(self, task_id: str) -> None:
        """The task is recorded (or handed back): stop renewing its lease."""
        with self._lock:
            self.held.pop(task_id, None)

    def hand_back(self) -> int:
        """Return every unfinished task this worker holds to the queue (a graceful stop)."""
        count = self.store.release(self.worker_id)
        if count:
            logger.info("handed %d unfinished task(s) back to the queue", count)
        return count

    # ------------------------------------------------------------------------------ leases

    def start(self) -> None:
        self._thread = threading.Thread(target=self._heartbeat, name="musicgen-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def renew(self) -> None:
        """Renew this worker's leases now; cancel the jobs of tasks it turns out to have lost."""
        with self._lock:
            progress = {task_id: job.progress for task_id, job in self.held.items()}
        if not progress:
            return
        still_held = self.store.renew(self.worker_id, self.lease_seconds, progress)
        for task_id in set(progress) - still_held:
            with self._lock:
                job = self.held.pop(task_id, None)
            if job is not None and not job.future.done():
                logger.warning("task %s was taken over by another worker; cancelling it here", task_id)
                job.cancelled.set()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self.renew()
            except Exception:  # the database may be down for a while; keep trying
                logger.exception("renewing task leases failed")
