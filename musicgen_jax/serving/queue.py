"""The device owner: one worker thread that takes queued requests and generates them in batches.

No other thread touches the model's generator, so generations never fight over the device. The
worker takes the oldest job, then gathers up to ``max_batch`` jobs of the same shape key (length
bucket, number of windows, beam search or not) for at most ``window`` seconds, and runs them as one
batch. Rows of a batch are independent (per-row seeds and sampling knobs), so a request's music
does not depend on its company. The batch is padded with copies of its first request up to the
generator's batch bucket, so the text encoder sees only bucket sizes (which warm-up compiled).

Jobs come from two places: the local queue (:meth:`GenerationQueue.submit`: live streams, whose
frames go to a socket of this process) and a :class:`JobSource` (the task store's queue, shared by
every replica when it is PostgreSQL), which the worker polls when the local queue is empty and
which :meth:`GenerationQueue.wake` nudges when a task is submitted here. A batch is gathered from
one place: claimed tasks batch with claimed tasks of the same key, claimed during the window.

A batch that fails is retried one job at a time, so one bad request cannot fail its neighbours.
Jobs are cancelled (a stream stopped, the server shutting down) between chunks of the decode loop:
the progress callback raises once every job of the batch is cancelled.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from musicgen_jax.generation.params import GenerationRequest
from musicgen_jax.generation.shapes import ShapePlan

logger = logging.getLogger(__name__)

STREAM_CHUNK_SECONDS = 0.2  # audio per loop chunk of a batch that streams


def stream_loop_chunks(shapes: ShapePlan) -> tuple[int, int]:
    """(first, later) positions per loop chunk of a batch that streams. A stream wants its first
    audio early: the loop runs in short chunks (:data:`STREAM_CHUNK_SECONDS` of frames, the first
    also past the delay pattern) so frames reach the codec's decoder as they complete, at the cost
    of one host round trip per chunk."""
    chunk = max(1, shapes.frames(STREAM_CHUNK_SECONDS))
    return chunk + shapes.num_delays, chunk


class JobSource(Protocol):
    """Where the worker finds jobs besides its local queue (the task store's queue)."""

    def claim(self, limit: int, key: tuple | None) -> list[Job]:
        """Up to ``limit`` jobs of shape ``key`` (None: of the oldest waiting job's key), now claimed."""
        ...


class QueueFull(RuntimeError):
    """More jobs are waiting than the server accepts."""


class CancelReason(enum.Enum):
    """Why a job did not finish: its callers answer differently (a stream closes with 1012 on shutdown)."""

    REQUESTED = "requested"  # every job of its batch was cancelled (a stream stopped, a client left)
    SHUTDOWN = "shutdown"  # the server is stopping


class Cancelled(RuntimeError):
    """The job was cancelled before it finished; ``reason`` says why (the message is for people)."""

    def __init__(self, message: str, reason: CancelReason):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(eq=False)
class Job:
    """One request waiting for (or on) the device."""

    request: GenerationRequest  # with a concrete seed
    key: tuple  # shape key: jobs batch together only with equal keys
    task_id: str | None = None
    on_frames: Callable[[np.ndarray], None] | None = None  # new frames [K, n] as they complete (streams)
    on_start: Callable[[float, int], None] | None = None  # (start time, batch size), on the worker thread
    submitted_at: float = dataclasses.field(default_factory=time.time)
    frames_total: int = 0
    frames_done: int = 0
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)

    @property
    def progress(self) -> float:
        return min(1.0, self.frames_done / self.frames_total) if self.frames_total else 0.0


@dataclasses.dataclass(frozen=True)
class JobResult:
    frames: np.ndarray  # [K, frames] int32 codec codes (the audio prompt included)
    seed: int
    batch_size: int
    started_at: float
    finished_at: float
    generate_seconds: float  # the batch's device time, compilation excluded
    compile_seconds: float


class GenerationQueue:
    """Pending jobs and the worker thread that runs them on ``engine`` (a
    :class:`~musicgen_jax.generation.engine.GenerationEngine`; may be set by the start-up hook)."""

    def __init__(
        self,
        engine=None,
        *,
        max_batch: int = 8,
        window: float = 0.03,
        max_pending: int = 256,
        on_batch: Callable[[list[Job], float, float], None] | None = None,
        source: JobSource | None = None,
        poll_interval: float = 0.2,
    ):
        self.engine = engine
        self.source = source
        self.poll_interval = poll_interval  # how often an idle worker asks the source for work
        self.max_batch = max_batch
        self.window = window
        self.max_pending = max_pending
        self.on_batch = on_batch  # (jobs, generate_seconds, compile_seconds) after each batch, for metrics
        self._pending: deque[Job] = deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.running: list[Job] = []

    # ------------------------------------------------------------------------------ producers

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`QueueFull` when ``max_pending`` jobs are waiting."""
        with self._condition:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._pending) >= self.max_pending:
                raise QueueFull(f"{len(self._pending)} requests are already waiting; try again shortly")
            self._pending.append(job)
            self._condition.notify()

    def wake(self) -> None:
        """Tell an idle worker the source has new work (a task submitted in this process)."""
        with self._condition:
            self._condition.notify_all()

    @property
    def accepting(self) -> bool:
        return not self._stopping

    @property
    def depth(self) -> int:
        """Jobs in the local queue (the source counts its own)."""
        return len(self._pending)

    def position(self, job: Job) -> int | None:
        """0-based place of ``job`` in the queue (None when not waiting)."""
        with self._condition:
            for index, pending in enumerate(self._pending):
                if pending is job:
                    return index
        return None

    # ------------------------------------------------------------------------------ the worker

    def start(self, before: Callable[[], None] | None = None) -> None:
        """Start the worker thread; it runs ``before`` (loading, warm-up) first, owning the device."""
        self._thread = threading.Thread(target=self._run, args=(before,), name="musicgen-device", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> list[Job]:
        """Cancel what is queued and running, stop the worker; returns the jobs that did not run."""
        with self._condition:
            self._stopping = True
            dropped = list(self._pending)
            self._pending.clear()
            for job in self.running:
                job.cancelled.set()
            self._condition.notify_all()
        for job in dropped:
            _resolve(
                job, error=Cancelled("the server shut down before this request ran", CancelReason.SHUTDOWN)
            )
        if self._thread is not None:
            self._thread.join(timeout)
        return dropped

    def _run(self, before: Callable[[], None] | None) -> None:
        if before is not None:
            try:
                before()
            except Exception:
                logger.exception("device start-up failed; the worker is not serving")
                return
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._execute(batch)

    def _next_batch(self) -> list[Job] | None:
        while True:
            with self._condition:
                if self._stopping:
                    return None
                if self._pending:
                    return self._gather_local()
            claimed = self._claim(self.max_batch, None)
            if claimed:
                return self._gather_claimed(claimed)
            with self._condition:
                if not self._pending and not self._stopping:
                    self._condition.wait(self.poll_interval if self.source is not None else None)

    def _gather_local(self) -> list[Job]:
        """The oldest local job and local company of its key (holding the condition)."""
        first = self._pending.popleft()
        batch = [first]
        deadline = time.monotonic() + self.window
        while len(batch) < self.max_batch:
            self._take_matching(first.key, batch)
            remaining = deadline - time.monotonic()
            if len(batch) >= self.max_batch or remaining <= 0 or self._stopping:
                break
            self._condition.wait(remaining)
        self.running = batch
        return batch

    def _gather_claimed(self, batch: list[Job]) -> list[Job] | None:
        """Claimed jobs, and more of their key claimed until the window closes."""
        deadline = time.monotonic() + self.window
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with self._condition:
                if not self._stopping:
                    self._condition.wait(remaining)
            if self._stopping:
                break
            batch += self._claim(self.max_batch - len(batch), batch[0].key)
        if self._stopping:  # never started: the source's owner hands them back
            for job in batch:
                _resolve(job, error=Cancelled("the server shut down before this ran", CancelReason.SHUTDOWN))
            return None
        with self._condition:
            self.running = batch
        return batch

    def _claim(self, limit: int, key: tuple | None) -> list[Job]:
        if self.source is None:
            return []
        try:
            return self.source.claim(limit, key)
        except Exception:  # the database may be down for a while; the worker lives on
            logger.exception("claiming queued tasks failed; trying again shortly")
            time.sleep(self.poll_interval)
            return []

    def _take_matching(self, key: tuple, batch: list[Job]) -> None:
        """Move queued jobs with ``key`` into ``batch`` (oldest first, up to the maximum)."""
        for job in list(self._pending):
            if len(batch) >= self.max_batch:
                return
            if job.key == key:
                self._pending.remove(job)
                batch.append(job)

    def _execute(self, batch: list[Job]) -> None:
        live = [job for job in batch if not job.cancelled.is_set()]
        for job in batch:
            if job.cancelled.is_set():
                _resolve(job, error=Cancelled("cancelled before it started", CancelReason.REQUESTED))
        if not live:
            self.running = []
            return
        try:
            self._generate(live)
        except Cancelled as error:
            for job in live:
                _resolve(job, error=Cancelled(str(error), error.reason))
        except Exception as error:  # noqa: BLE001 - every job gets an answer; the worker must live on
            if len(live) > 1:
                logger.warning("a batch of %d failed (%s); retrying its jobs one by one", len(live), error)
                for job in live:
                    if job.future.done():
                        continue
                    try:
                        self._generate([job])
                    except Exception as single_error:  # noqa: BLE001
                        _resolve(job, error=single_error)
            else:
                _resolve(live[0], error=error)
        finally:
            self.running = []

    def _generate(self, jobs: list[Job]) -> None:
        started = time.time()
        for job in jobs:
            job.frames_done = 0
            if job.on_start is not None:
                job.on_start(started, len(jobs))
        requests = [job.request for job in jobs]
        if all(r.params.num_beams == 1 for r in requests):
            # Pad to the batch bucket with copies of the first row (beams run row by row: no padding).
            requests += [requests[0]] * (self.engine.shapes.batch_bucket(len(requests)) - len(requests))

        def on_frames(row: int, frames: np.ndarray) -> None:
            if row >= len(jobs):
                return  # a padding row
            job = jobs[row]
            job.frames_done += frames.shape[1]
            if job.on_frames is not None and not job.cancelled.is_set():
                job.on_frames(frames)

        def progress(done: int, total: int) -> None:
            if self._stopping:
                raise Cancelled("the server shut down while generating", CancelReason.SHUTDOWN)
            if all(job.cancelled.is_set() for job in jobs):
                raise Cancelled("cancelled while generating", CancelReason.REQUESTED)

        streaming = any(job.on_frames is not None for job in jobs)
        first, chunk = stream_loop_chunks(self.engine.shapes) if streaming else (None, None)
        output = self.engine.generate(
            requests, progress=progress, on_frames=on_frames, chunk_frames=chunk, first_chunk_frames=first
        )
        finished = time.time()
        for i, job in enumerate(jobs):
            job.frames_done = job.frames_total
            result = JobResult(
                frames=output.frames[i],
                seed=int(output.seeds[i]),
                batch_size=len(jobs),
                started_at=started,
                finished_at=finished,
                generate_seconds=output.generate_seconds,
                compile_seconds=output.compile_seconds,
            )
            _resolve(job, result=result)
        if self.on_batch is not None:
            self.on_batch(jobs, output.generate_seconds, output.compile_seconds)


def _resolve(job: Job, result: JobResult | None = None, error: BaseException | None = None) -> None:
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)
