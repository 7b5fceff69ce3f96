"""What the server does, without HTTP: load and warm the model, turn requests into tasks, finish them.

Threads, and what each owns:

* ``musicgen-device`` (:class:`~musicgen_jax.serving.queue.GenerationQueue`): loads the model,
  compiles the warm-up buckets, then runs every generation. Nothing else calls the generator.
* ``musicgen-audio-*`` (a small pool): the CPU-bound audio work: decoding codes with the codec,
  normalising and encoding files (:mod:`.audio_files`), reading uploads (:mod:`.uploads`),
  encoding audio prompts (:mod:`.generation_request`), evaluation metrics (:mod:`.evaluation`).
* the event loop only awaits these (``run_in_executor``), so it never blocks on the model.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
import uuid
from typing import Any

from musicgen_jax.generation.loop import completed_frames
from musicgen_jax.serving import generation_request, views
from musicgen_jax.serving.audio_files import touch_audio_path, write_task_audio
from musicgen_jax.serving.errors import NotReady
from musicgen_jax.serving.metrics import ServerMetrics
from musicgen_jax.serving.queue import (
    Cancelled,
    CancelReason,
    GenerationQueue,
    Job,
    JobResult,
    stream_loop_chunks,
)
from musicgen_jax.serving.schemas import GenerateRequest, StreamRequest, TaskStatus
from musicgen_jax.serving.security import KeyRing, RateLimiter
from musicgen_jax.serving.settings import ServerSettings
from musicgen_jax.serving.store import FINISHED, TaskRecord, TaskStore

logger = logging.getLogger(__name__)

SHUT_DOWN = "interrupted: the server shut down before this task finished; submit it again"
INTERNAL = "generation failed because of an internal error (logged on the server)"


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
        self.store = TaskStore(settings.data_dir)
        self.keys = KeyRing(settings.load_api_keys())
        self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.audio_pool = concurrent.futures.ThreadPoolExecutor(
            settings.audio_workers, thread_name_prefix="musicgen-audio"
        )
        # The codec's OpenMP threads otherwise spin against the device thread and each other.
        import torch

        torch.set_num_threads(settings.torch_threads)
        self.queue = GenerationQueue(
            None,
            max_batch=settings.max_batch_size,
            window=settings.batch_window_ms / 1000.0,
            max_pending=settings.max_queue_size,
            on_batch=self._record_batch,
        )
        self.live: dict[str, TaskHandle] = {}
        self.sessions: dict[str, Any] = {}  # session id -> streaming.StreamSession
        self._live_lock = threading.Lock()
        self.started_at = time.time()
        self._started = False
        self.metrics.queue_depth.set_function(lambda: self.queue.depth)
        self.metrics.ready.set_function(lambda: 1.0 if self.state == "ready" else 0.0)

    # ------------------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Recover the store, then load and warm the model on the device thread (returns at once)."""
        if self._started:
            raise RuntimeError("this server was already started; create a new app to serve again")
        self._started = True
        self.store.recover()
        if self.start_worker:
            self.queue.start(before=self._load_and_warm)
        else:  # tests of the HTTP layer: tasks stay queued
            threading.Thread(target=self._load_and_warm, name="musicgen-loader", daemon=True).start()

    def stop(self) -> None:
        """Cancel queued and running work (their tasks fail as interrupted), drain the audio pool."""
        self.queue.stop(timeout=30.0)
        with self._live_lock:
            leftovers = list(self.live.values())
        for handle in leftovers:  # the worker never started them (or was not running)
            if not handle.job.future.done():
                handle.job.future.set_exception(Cancelled(SHUT_DOWN, CancelReason.SHUTDOWN))
        self.audio_pool.shutdown(wait=True, cancel_futures=False)
        self.store.close()

    def _load_and_warm(self) -> None:
        try:
            if self.model is None:
                from musicgen_jax import MusicGen

                logger.info("loading %s (%s)", self.settings.model, self.settings.dtype)
                self.model = MusicGen.from_pretrained(
                    self.settings.model, dtype=self.settings.dtype, codec_backend=self.settings.codec_backend
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
        touch_audio_path(self.model, self.store.data_dir, stream_push_frames=stream_pushes(self.model))
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

    def submit_task(self, body: GenerateRequest, request, owner: str | None) -> TaskHandle:
        """Record a task and queue it; raises QueueFull."""
        task_id = uuid.uuid4().hex
        settings = generation_request.applied_settings(body, request, self.model.frame_rate)
        self.store.create(task_id, settings, body.format, request.params.seed, owner)

        def on_start(started_at: float, batch_size: int) -> None:
            self.store.mark_running([task_id], started_at, batch_size)
            self.metrics.queue_wait.observe(started_at - handle.job.submitted_at)

        handle = TaskHandle(
            task_id,
            self.make_job(request, task_id=task_id, on_start=on_start),
            body.format,
            body.normalization_strategy,
        )
        with self._live_lock:
            self.live[task_id] = handle
        try:
            self.queue.submit(handle.job)
        except Exception:
            with self._live_lock:
                self.live.pop(task_id, None)
            self.store.delete(task_id)
            raise
        handle.job.future.add_done_callback(lambda _: self._in_audio_pool(self._finish_task, handle))
        return handle

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
            self.metrics.tasks.labels(status).inc()
            with self._live_lock:
                self.live.pop(task_id, None)
            if not handle.finished.done():
                handle.finished.set_result(status)

    def _record_outcome(self, handle: TaskHandle) -> str:
        """The task's final status, written to the store: "completed" with its file, or "failed"."""
        task_id, model = handle.task_id, self.model
        try:
            result: JobResult = handle.job.future.result()
        except Cancelled as error:
            self.store.fail(
                task_id, SHUT_DOWN if error.reason is CancelReason.SHUTDOWN else f"cancelled: {error}"
            )
            return "failed"
        except ValueError as error:  # the library's own words about a request it cannot run
            self.store.fail(task_id, str(error))
            return "failed"
        except Exception:
            logger.exception("task %s failed", task_id)
            self.store.fail(task_id, INTERNAL)
            return "failed"
        began = time.perf_counter()
        try:
            path = self.store.new_audio_path(task_id, handle.format)
            audio = write_task_audio(model, result.frames, path, handle.format, handle.normalization)
        except Exception:
            logger.exception("task %s: writing its audio failed", task_id)
            self.store.fail(task_id, "writing the audio file failed (logged on the server)")
            return "failed"
        self.store.complete(
            task_id,
            file_name=path.name,
            file_bytes=path.stat().st_size,
            sample_rate=model.sample_rate,
            channels=int(audio.shape[0]),
            audio_seconds=audio.shape[-1] / model.sample_rate,
            generate_seconds=result.generate_seconds,
            compile_seconds=result.compile_seconds,
            decode_seconds=time.perf_counter() - began,
            batch_size=result.batch_size,
            started_at=result.started_at,
        )
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
        return views.task_status(record, handle.job if handle else None, self.queue)

    def is_finished(self, record: TaskRecord) -> bool:
        return record.status in FINISHED
