"""What the server does, without HTTP: load and warm the model, turn requests into tasks, finish them.

Threads, and what each owns:

* ``musicgen-device`` (:class:`~musicgen_jax.serving.queue.GenerationQueue`): loads the model,
  compiles the warm-up buckets, then runs every generation. Nothing else calls the generator.
* ``musicgen-audio-*`` (a small pool): the CPU-bound audio work: decoding codes with the codec,
  normalising and encoding files (:mod:`.audio_files`), reading uploads (:mod:`.uploads`),
  encoding audio prompts (:mod:`.generation_request`), evaluation metrics (:mod:`.evaluation`).
* ``musicgen-lease`` (:class:`~musicgen_jax.serving.task_queue.TaskQueue`): renews the leases of
  the tasks this process has claimed.
* the event loop only awaits these (``run_in_executor``), so it never blocks on the model.

Tasks go through the store's queue whichever store it is: ``POST /generate`` records a task with
its request (:func:`~musicgen_jax.serving.generation_request.encode_request`), and a device owner,
this process's or another replica's, claims it. Live streams stay in this process's own queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from musicgen_jax.generation.loop import completed_frames
from musicgen_jax.serving import generation_request, views
from musicgen_jax.serving.audio_files import touch_audio_path, write_task_audio
from musicgen_jax.serving.audio_storage import AudioStorage
from musicgen_jax.serving.errors import NotReady
from musicgen_jax.serving.metrics import ServerMetrics
from musicgen_jax.serving.queue import (
    Cancelled,
    CancelReason,
    GenerationQueue,
    Job,
    JobResult,
    QueueFull,
    stream_loop_chunks,
)
from musicgen_jax.serving.schemas import GenerateRequest, StreamRequest, TaskStatus
from musicgen_jax.serving.security import KeyRing, RateLimiter
from musicgen_jax.serving.settings import ServerSettings
from musicgen_jax.serving.store import FINISHED, SqliteTaskStore, TaskRecord, TaskStore
from musicgen_jax.serving.task_queue import TaskQueue, shape_key_text

logger = logging.getLogger(__name__)

SHUT_DOWN = "interrupted: the server shut down before this task finished; submit it again"
INTERNAL = "generation failed because of an internal error (logged on the server)"


def open_store(settings: ServerSettings) -> TaskStore:
    """The task store the settings name: PostgreSQL (``database_url``, shared by replicas) or
    SQLite in ``data_dir``; audio in ``storage_url`` or ``data_dir/audio``."""
    storage = AudioStorage(settings.storage_url or Path(settings.data_dir).expanduser() / "audio")
    if settings.database_url:
        from musicgen_jax.serving.postgres_store import PostgresTaskStore

        return PostgresTaskStore(settings.database_url, storage)
    return SqliteTaskStore(settings.data_dir, storage)


def file_digest(path: Path) -> str:
    """A file's SHA-256 (hex): its ETag."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stream_pushes(model) -> list[int]:
    """Frames a stream with the default ``chunk_duration`` pushes to its codec decoder (what warm-up
    compiles the decoder for): what the loop's first chunk completes, then a chunk's worth (later
    pushes gather at least that)."""
    shapes, decoder = model.engine.shapes, model.config.decoder
    first, _ = stream_loop_chunks(shapes)
    # The loop fills positions from 1 (0 is the BOS column).
    first_push = completed_frames(1 + first, decoder.num_codebooks, decoder.audio_channels)
    later = round(StreamRequest.model_fields["chunk_duration"].default * shapes.frame_rate)
    return sorted({max(1, first_push), max(1, later)})


@dataclasses.dataclass(eq=False)
class TaskHandle:
    """A task in flight: its device job and a future set once its file is written (or it failed)."""

    task_id: str
    job: Job
    format: str
    normalization: str
    finished: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)


class MusicService:
    """The model, the queue, the task store and the audio pool of one server."""

    def __init__(self, settings: ServerSettings, model=None, *, start_worker: bool = True):
        self.settings = settings
        self.model = model
        self.start_worker = start_worker
        self.state = "loading"  # loading -> warming -> ready, or failed
        self.error: str | None = None
        self.metrics = ServerMetrics()
        self.store = open_store(settings)
        self.keys = KeyRing(settings.load_api_keys())
        self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.audio_pool = concurrent.futures.ThreadPoolExecutor(
            settings.audio_workers, thread_name_prefix="musicgen-audio"
        )
        # The codec's OpenMP threads otherwise spin against the device thread and each other.
        import torch

        torch.set_num_threads(settings.torch_threads)
        self.tasks = TaskQueue(self.store, self._claimed_job, lease_seconds=settings.lease_seconds)
        self.queue = GenerationQueue(
            None,
            max_batch=settings.max_batch_size,
            window=settings.batch_window_ms / 1000.0,
            max_pending=settings.max_queue_size,
            on_batch=self._record_batch,
            source=self.tasks,
            poll_interval=settings.queue_poll_ms / 1000.0,
        )
        self.live: dict[str, TaskHandle] = {}
        self.sessions: dict[str, Any] = {}  # session id -> streaming.StreamSession
        self._live_lock = threading.Lock()
        self.started_at = time.time()
        self._started = False
        self.metrics.queue_depth.set_function(self._queue_depth)
        self.metrics.ready.set_function(lambda: 1.0 if self.state == "ready" else 0.0)

    # ------------------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Recover the store, then load and warm the model on the device thread (returns at once)."""
        if self._started:
            raise RuntimeError("this server was already started; create a new app to serve again")
        self._started = True
        self.store.recover()
        self.tasks.start()
        if self.start_worker:
            self.queue.start(before=self._load_and_warm)
        else:  # tests of the HTTP layer: tasks stay queued
            threading.Thread(target=self._load_and_warm, name="musicgen-loader", daemon=True).start()

    def stop(self) -> None:
        """Cancel queued and running work, drain the audio pool. A shared store gets this process's
        unfinished tasks back (another replica runs them); a private one fails them as interrupted."""
        self.queue.stop(timeout=30.0)
        with self._live_lock:
            leftovers = list(self.live.values())
        for handle in leftovers:  # the worker never started them (or was not running)
            if not handle.job.future.done():
                handle.job.future.set_exception(Cancelled(SHUT_DOWN, CancelReason.SHUTDOWN))
        self.audio_pool.shutdown(wait=True, cancel_futures=False)
        self.tasks.stop()
        try:
            if self.store.shared:
                self.tasks.hand_back()
            else:
                self.store.fail_unfinished(SHUT_DOWN)
        finally:
            self.store.close()

    def _load_and_warm(self) -> None:
        try:
            if self.model is None:
                from musicgen_jax import MusicGen

                logger.info("loading %s (%s)", self.settings.model, self.settings.dtype)
                self.model = MusicGen.from_pretrained(
                    self.settings.model,
                    dtype=self.settings.dtype,
                    codec_backend=self.settings.codec_backend,
                    quantize=self.settings.quantize,
                )
            self.queue.engine = self.model.engine
            self.state = "warming"
            self._warm_up()
            self.state = "ready"
            logger.info("ready: %d compiled programs", self.model.engine.compile_count)
        except Exception as error:
            self.state, self.error = "failed", f"{type(error).__name__}: {error}"
            raise

    def _warm_up(self) -> None:
        """Compile the configured buckets and touch every lazily initialised library once."""
        settings, engine = self.settings, self.model.engine
        shapes = engine.shapes
        began = time.perf_counter()
        if not settings.warmup_batch_sizes:  # nothing to compile ahead: everything compiles on first use
            settings = settings.model_copy(update={"warmup_text_tokens": []})
        sizes = sorted(
            {shapes.batch_bucket(b) for b in settings.warmup_batch_sizes if b <= settings.max_batch_size}
        )
        durations = [d for d in settings.warmup_durations if d <= settings.max_duration]
        for tokens in settings.warmup_text_tokens:
            if sizes and durations:
                engine.warmup(batch_sizes=sizes, durations=durations, text_tokens=tokens)
            # The text encoder compiles per (batch, text length); batches are padded to buckets.
            engine.warmup_text_encoder(shapes.batch_buckets_up_to(settings.max_batch_size), tokens)
        touch_audio_path(
            self.model, self.store.storage.scratch_directory(), stream_push_frames=stream_pushes(self.model)
        )
        logger.info("warm-up took %.1f s", time.perf_counter() - began)

    def require_ready(self) -> None:
        if self.state != "ready":
            detail = (
                f"the model failed to load: {self.error}"
                if self.state == "failed"
                else f"the model is {self.state}; try again shortly"
            )
            raise NotReady(detail)

    # ------------------------------------------------------------------------------ tasks

    def build_request(self, body: GenerateRequest, input_audio: bytes | None = None):
        """See :func:`~musicgen_jax.serving.generation_request.build_request` (raises ValueError)."""
        return generation_request.build_request(self.model, self.settings, body, input_audio)

    def make_job(self, request, **fields: Any) -> Job:
        """A device job; jobs batch together when their compiled programs agree (see :mod:`.queue`)."""
        shapes = self.model.engine.shapes
        job = Job(request, shapes.shape_key(request), **fields)
        job.frames_total = shapes.frames(request.params.duration)
        return job

    def submit_task(
        self, body: GenerateRequest, request, owner: str | None, use_cache: bool = True
    ) -> tuple[TaskRecord, bool]:
        """Record a task in the store's queue, or (``use_cache``) find an identical finished one (same
        model, settings and explicit seed: its audio is the answer). Returns (task, whether it was
        found); raises QueueFull."""
        if not self.queue.accepting:
            raise QueueFull("the server is shutting down")
        job = {
            "generation": generation_request.encode_request(request),
            "normalization": body.normalization_strategy,
        }
        key = None
        if body.seed is not None:  # a drawn seed makes every request new
            key = generation_request.cache_key(
                self.settings.model, self.settings.dtype, dict(job, format=body.format)
            )
            cached = self.store.find_completed(key, owner) if use_cache else None
            if cached is not None and cached.file_name and self.store.storage.exists(cached.file_name):
                self.metrics.cache_hits.inc()
                return cached, True
        waiting = self.store.queue_depth()
        if waiting >= self.settings.max_queue_size:
            raise QueueFull(f"{waiting} requests are already waiting; try again shortly")
        record = self.store.create(
            uuid.uuid4().hex,
            generation_request.applied_settings(body, request, self.model.frame_rate),
            body.format,
            request.params.seed,
            owner,
            job=job,
            shape_key=shape_key_text(self.model.engine.shapes.shape_key(request)),
            cache_key=key,
        )
        self.queue.wake()
        return record, False

    def _claimed_job(self, record: TaskRecord) -> Job:
        """The device job of a task this process claimed (on the device thread)."""
        task_id, worker = record.task_id, self.tasks.worker_id
        request = generation_request.decode_request(record.job["generation"])

        def on_start(started_at: float, batch_size: int) -> None:
            self.store.mark_running([task_id], started_at, batch_size, worker=worker)
            self.metrics.queue_wait.observe(max(0.0, started_at - record.created_at))

        job = self.make_job(request, task_id=task_id, on_start=on_start)
        job.submitted_at = record.created_at
        handle = TaskHandle(task_id, job, record.format, record.job["normalization"])
        with self._live_lock:
            self.live[task_id] = handle
        job.future.add_done_callback(lambda _: self._in_audio_pool(self._finish_task, handle))
        return job

    async def wait_finished(self, task_id: str, timeout: float) -> TaskRecord | None:
        """The task once it is finished, or as it is when ``timeout`` runs out (None: no such task).
        Polls the store: any replica may be running it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            record = await loop.run_in_executor(None, self.store.get, task_id)
            remaining = deadline - loop.time()
            if record is None or record.status in FINISHED or remaining <= 0:
                return record
            handle = self.live.get(task_id)
            if handle is not None:  # running here: its end is announced
                await asyncio.wait([asyncio.wrap_future(handle.finished)], timeout=min(remaining, 1.0))
            else:
                await asyncio.sleep(min(remaining, 0.1))

    def _in_audio_pool(self, fn, *args) -> None:
        try:
            self.audio_pool.submit(fn, *args)
        except RuntimeError:  # the pool is shut down (stopping): finish here rather than lose the task
            fn(*args)

    def _finish_task(self, handle: TaskHandle) -> None:
        """Write the task's file (audio pool) and record how it ended; then set ``handle.finished``."""
        task_id = handle.task_id
        status = "failed"
        try:
            status = self._record_outcome(handle)
        except Exception:
            logger.exception("task %s: could not record its outcome", task_id)
        finally:
            if status in FINISHED:
                self.metrics.tasks.labels(status).inc()
            with self._live_lock:
                self.live.pop(task_id, None)
            self.tasks.finished(task_id)
            if not handle.finished.done():
                handle.finished.set_result(status)

    def _record_outcome(self, handle: TaskHandle) -> str:
        """How the task ended, written to the store: "completed" with its file, "failed", "queued"
        (handed back to the queue), or "taken" (another worker holds it now; nothing written). Every
        write names this worker, so the store takes it only while this worker holds the task."""
        task_id, model, worker = handle.task_id, self.model, self.tasks.worker_id
        try:
            result: JobResult = handle.job.future.result()
        except Cancelled as error:
            if error.reason is CancelReason.SHUTDOWN and self.store.shared:
                self.store.release(worker, [task_id])
                return "queued"
            message = SHUT_DOWN if error.reason is CancelReason.SHUTDOWN else f"cancelled: {error}"
            return "failed" if self.store.fail(task_id, message, worker=worker) else "taken"
        except ValueError as error:  # the library's own words about a request it cannot run
            return "failed" if self.store.fail(task_id, str(error), worker=worker) else "taken"
        except Exception:
            logger.exception("task %s failed", task_id)
            return "failed" if self.store.fail(task_id, INTERNAL, worker=worker) else "taken"
        began = time.perf_counter()
        # A name of this attempt's own: a worker that lost the task never overwrites the winner's file.
        file_name = f"{task_id}-{uuid.uuid4().hex[:8]}.{handle.format}"
        storage = self.store.storage
        try:
            with storage.writing(file_name) as path:
                audio = write_task_audio(model, result.frames, path, handle.format, handle.normalization)
                size, etag = path.stat().st_size, file_digest(path)
        except Exception:
            logger.exception("task %s: writing its audio failed", task_id)
            failed = self.store.fail(
                task_id, "writing the audio file failed (logged on the server)", worker=worker
            )
            return "failed" if failed else "taken"
        completed = self.store.complete(
            task_id,
            worker=worker,
            file_name=file_name,
            file_bytes=size,
            etag=etag,
            sample_rate=model.sample_rate,
            channels=int(audio.shape[0]),
            audio_seconds=audio.shape[-1] / model.sample_rate,
            generate_seconds=result.generate_seconds,
            compile_seconds=result.compile_seconds,
            decode_seconds=time.perf_counter() - began,
            batch_size=result.batch_size,
            started_at=result.started_at,
        )
        if not completed:
            logger.warning("task %s was finished by another worker; dropping this copy", task_id)
            storage.delete(file_name)
            return "taken"
        self.metrics.task_latency.observe(time.time() - handle.job.submitted_at)
        return "completed"

    def _record_batch(self, jobs: list[Job], generate_seconds: float, compile_seconds: float) -> None:
        seconds = sum(job.request.params.duration for job in jobs)
        self.metrics.batch_size.observe(len(jobs))
        self.metrics.generation_seconds.observe(generate_seconds)
        self.metrics.audio_seconds.inc(seconds)
        self.metrics.compile_seconds.inc(compile_seconds)
        if generate_seconds > 0:
            self.metrics.real_time_factor.observe(seconds / generate_seconds)

    # ------------------------------------------------------------------------------ views

    def visible(self, record: TaskRecord | None, owner: str | None) -> bool:
        """Whether the caller may see ``record``: everyone when keys are off, else its owner only."""
        return record is not None and (not self.keys.enabled or record.owner == owner)

    def task_status(self, record: TaskRecord) -> TaskStatus:
        handle = self.live.get(record.task_id)
        job = handle.job if handle else None
        status = views.task_status(record, job, self.queue)
        if job is not None:  # claimed here: the live job knows best
            return status
        update: dict[str, Any] = {}
        if record.status == "queued":  # waiting in the store's queue
            update["queue_position"] = self.store.queue_position(record)
        elif record.status == "running" and record.progress is not None:  # on another replica
            update["progress"] = min(1.0, max(0.0, record.progress))
        return status.model_copy(update=update) if update else status

    def _queue_depth(self) -> float:
        """Requests waiting for a device: the store's queue (every replica's, when shared) and the
        streams waiting here."""
        try:
            return float(self.store.queue_depth() + self.queue.depth)
        except Exception:  # a scrape must not fail because the database is away
            logger.warning("queue depth unavailable", exc_info=True)
            return float("nan")

    def is_finished(self, record: TaskRecord) -> bool:
        return record.status in FINISHED
