"""What the server does, without HTTP: load and warm the model, turn requests into tasks, write files.

Threads, and what each owns:

* ``musicgen-device`` (:class:`~musicgen_jax.serving.queue.GenerationQueue`): loads the model,
  compiles the warm-up buckets, then runs every generation. Nothing else calls the generator.
* ``musicgen-audio-*`` (a small pool): the CPU-bound audio work: decoding codes with the codec,
  normalising and encoding files, reading uploads, encoding audio prompts, evaluation metrics.
* the event loop only awaits these (``run_in_executor``), so it never blocks on the model.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import io
import logging
import threading
import time
import uuid
from typing import Any

import numpy as np

from musicgen_jax.audio.layout import MAX_CHANNELS
from musicgen_jax.conditioning.text import PromptError
from musicgen_jax.serving.metrics import ServerMetrics
from musicgen_jax.serving.queue import Cancelled, GenerationQueue, Job, JobResult
from musicgen_jax.serving.schemas import GenerateRequest, TaskStatus
from musicgen_jax.serving.security import KeyRing, RateLimiter
from musicgen_jax.serving.settings import ServerSettings
from musicgen_jax.serving.store import FINISHED, TaskRecord, TaskStore

logger = logging.getLogger(__name__)

SHUT_DOWN = "interrupted: the server shut down before this task finished; submit it again"
INTERNAL = "generation failed because of an internal error (logged on the server)"


class NotReady(RuntimeError):
    """The model is still loading or warming up (or failed to)."""


class AudioInputError(ValueError):
    """An uploaded file that is not usable audio."""


class FieldError(ValueError):
    """A request value the model cannot take, with the field it belongs to."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


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
                handle.job.future.set_exception(Cancelled(SHUT_DOWN))
        self.audio_pool.shutdown(wait=True, cancel_futures=False)
        self.store.close()

    def _load_and_warm(self) -> None:
        try:
            if self.model is None:
                from musicgen_jax import MusicGen

                logger.info("loading %s (%s)", self.settings.model, self.settings.dtype)
                self.model = MusicGen.from_pretrained(self.settings.model, dtype=self.settings.dtype)
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
        from musicgen_jax.audio import save_audio

        settings, model = self.settings, self.model
        engine, shapes = model.engine, model.engine.shapes
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
        frames = max(8, int(model.frame_rate // 5))
        audio = model.decode(np.zeros((1, model.num_codebooks, frames), np.int32))[0]
        path = self.store.data_dir / f".warmup-{uuid.uuid4().hex[:8]}.wav"
        try:
            save_audio(path, audio + 1e-3, model.sample_rate, normalization="loudness")
        finally:
            path.unlink(missing_ok=True)
        logger.info("warm-up took %.1f s", time.perf_counter() - began)

    def require_ready(self) -> None:
        if self.state != "ready":
            detail = (
                f"the model failed to load: {self.error}"
                if self.state == "failed"
                else f"the model is {self.state}; try again shortly"
            )
            raise NotReady(detail)

    # ------------------------------------------------------------------------------ requests

    def build_request(self, body: GenerateRequest, input_audio: bytes | None = None):
        """A validated :class:`~musicgen_jax.generation.params.GenerationRequest` with a concrete seed.

        Raises ValueError (the library's messages) for anything the model cannot do.
        """
        settings, model = self.settings, self.model
        if body.prompt is not None and len(body.prompt) > settings.max_prompt_chars:
            raise ValueError(
                f"prompt is {len(body.prompt)} characters long; this server takes at most {settings.max_prompt_chars}"
            )
        duration = body.duration if body.duration is not None else settings.default_duration
        if duration > settings.max_duration:
            raise ValueError(
                f"duration must be at most {settings.max_duration:g} seconds on this server, got {duration:g}"
            )
        audio_prompt = None
        if input_audio is not None:
            audio, rate = read_audio(input_audio, settings.max_input_audio_seconds, "input_audio")
            audio_prompt = (
                continuation_slice(audio, rate, body.continuation_start, body.continuation_end),
                rate,
            )
            prompt_seconds = audio_prompt[0].shape[-1] / rate
            if prompt_seconds >= duration:
                raise ValueError(
                    f"the audio prompt ({prompt_seconds:.2f} s) must be shorter than duration ({duration:g} s), "
                    "which includes it; raise duration or shorten continuation_end"
                )
        elif body.continuation_start > 0 or body.continuation_end not in (None, -1):
            raise ValueError("continuation_start and continuation_end need an input_audio upload")
        _check_attributes(body)
        requests = model.make_requests(
            body.prompt,
            duration=float(duration),
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            guidance_scale=body.guidance_scale,
            num_beams=body.num_beams,
            seed=body.seed,
            genre=body.genre,
            mood=body.mood,
            tempo=body.tempo,
            instruments=body.instruments,
            key=body.key,
            audio_prompt=None if audio_prompt is None else audio_prompt[0],
            audio_prompt_sample_rate=None if audio_prompt is None else audio_prompt[1],
        )
        request = dataclasses.replace(requests[0], params=requests[0].params.with_seed())
        self._check_prompt_tokens(request)
        return request

    def _check_prompt_tokens(self, request) -> None:
        """The token-count check generation would do, now, through the model's own text path."""
        text = self.model.engine.text
        try:
            text.check_length(text.render(request.prompt, request.attributes))
        except PromptError as error:
            raise FieldError(error.field, str(error)) from None

    def applied_settings(self, body: GenerateRequest, request) -> dict[str, Any]:
        """The settings a task ran with, as its status reports them."""
        params, attributes = request.params, request.attributes
        prompt_frames = 0 if request.prompt_codes is None else int(np.asarray(request.prompt_codes).shape[1])
        return {
            "prompt": request.prompt,
            "duration": params.duration,
            "temperature": params.temperature,
            "top_k": params.top_k,
            "top_p": params.top_p,
            "num_beams": params.num_beams,
            "guidance_scale": params.guidance_scale,
            "seed": params.seed,
            "genre": attributes.genre if attributes else None,
            "mood": list(attributes.moods) if attributes else [],
            "tempo": attributes.tempo if attributes else None,
            "instruments": list(attributes.instruments) if attributes else [],
            "key": attributes.key if attributes else None,
            "format": body.format,
            "normalization_strategy": body.normalization_strategy,
            "audio_prompt_seconds": prompt_frames / self.model.frame_rate if prompt_frames else None,
        }

    def shape_key(self, request) -> tuple:
        """Jobs batch together when their compiled programs agree (see :mod:`.queue`)."""
        return self.model.engine.shapes.shape_key(request)

    def make_job(self, request, **fields: Any) -> Job:
        job = Job(request, self.shape_key(request), **fields)
        job.frames_total = self.model.engine.shapes.frames(request.params.duration)
        return job

    def submit_task(self, body: GenerateRequest, request, owner: str | None) -> TaskHandle:
        """Record a task and queue it; raises QueueFull."""
        task_id = uuid.uuid4().hex
        self.store.create(
            task_id, self.applied_settings(body, request), body.format, request.params.seed, owner
        )

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
        """Decode, normalise and write the task's file (audio pool), then mark it finished."""
        task_id, model = handle.task_id, self.model
        status = "failed"
        try:
            try:
                result: JobResult = handle.job.future.result()
            except Cancelled as error:
                self.store.fail(task_id, SHUT_DOWN if "shut down" in str(error) else f"cancelled: {error}")
                return
            except ValueError as error:  # the library's own words about a request it cannot run
                self.store.fail(task_id, str(error))
                return
            except Exception:
                logger.exception("task %s failed", task_id)
                self.store.fail(task_id, INTERNAL)
                return
            began = time.perf_counter()
            try:
                audio = model.decode(result.frames[None])[0]  # [channels, samples]
                path = self.store.new_audio_path(task_id, handle.format)
                from musicgen_jax.audio import save_audio

                save_audio(
                    path, audio, model.sample_rate, format=handle.format, normalization=handle.normalization
                )
            except Exception:
                logger.exception("task %s: writing its audio failed", task_id)
                self.store.fail(task_id, "writing the audio file failed (logged on the server)")
                return
            decode_seconds = time.perf_counter() - began
            self.store.complete(
                task_id,
                file_name=path.name,
                file_bytes=path.stat().st_size,
                sample_rate=model.sample_rate,
                channels=int(audio.shape[0]),
                audio_seconds=audio.shape[-1] / model.sample_rate,
                generate_seconds=result.generate_seconds,
                compile_seconds=result.compile_seconds,
                decode_seconds=decode_seconds,
                batch_size=result.batch_size,
                started_at=result.started_at,
            )
            status = "completed"
            self.metrics.task_latency.observe(time.time() - handle.job.submitted_at)
        except Exception:
            logger.exception("task %s: could not record its outcome", task_id)
        finally:
            self.metrics.tasks.labels(status).inc()
            with self._live_lock:
                self.live.pop(task_id, None)
            if not handle.finished.done():
                handle.finished.set_result(status)

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
        progress = 1.0 if record.status == "completed" else (handle.job.progress if handle else 0.0)
        if record.status == "failed" and handle is None:
            progress = 0.0
        generate = record.generate_seconds
        decode = record.decode_seconds
        rtf = None
        if record.audio_seconds and generate is not None and decode is not None and generate + decode > 0:
            rtf = record.audio_seconds / (generate + decode)
        return TaskStatus(
            task_id=record.task_id,
            status=record.status,
            progress=progress,
            # A queued job no longer in the queue is in the batch being formed: next.
            queue_position=(self.queue.position(handle.job) or 0)
            if handle and record.status == "queued"
            else None,
            prompt=record.request.get("prompt"),
            request=record.request,
            seed=record.seed,
            format=record.format,
            created_at=_iso(record.created_at),
            started_at=_iso(record.started_at),
            finished_at=_iso(record.finished_at),
            queued_seconds=_difference(record.started_at, record.created_at),
            total_seconds=_difference(record.finished_at, record.created_at),
            generate_seconds=generate,
            compile_seconds=record.compile_seconds,
            decode_seconds=decode,
            real_time_factor=rtf,
            audio_seconds=record.audio_seconds,
            sample_rate=record.sample_rate,
            channels=record.channels,
            batch_size=record.batch_size,
            error=record.error,
            download_url=f"/download/{record.task_id}" if record.status == "completed" else None,
        )

    def is_finished(self, record: TaskRecord) -> bool:
        return record.status in FINISHED

    # ------------------------------------------------------------------------------ evaluation

    def evaluate(self, audio: np.ndarray, rate: int, reference: tuple[np.ndarray, int] | None = None):
        from musicgen_jax.eval import evaluate_audio_detailed

        if reference is None:
            return evaluate_audio_detailed(audio, rate)
        return evaluate_audio_detailed(audio, rate, reference[0], reference[1])

    def load_task_audio(self, record: TaskRecord) -> tuple[np.ndarray, int]:
        from musicgen_jax.audio import load_audio

        path = self.store.audio_path(record)
        if path is None or not path.is_file():
            raise FileNotFoundError(f"the audio of task {record.task_id} was deleted")
        return load_audio(path)


# ---------------------------------------------------------------------------------- helpers


def read_audio(data: bytes, max_seconds: float, what: str) -> tuple[np.ndarray, int]:
    """Uploaded bytes as float32 ``[channels, samples]`` and their rate; AudioInputError if unusable."""
    import soundfile

    if not data:
        raise AudioInputError(f"{what} is empty")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as file:
            rate = int(file.samplerate)
            if file.frames > max_seconds * rate:  # refuse before decoding a long file
                raise AudioInputError(
                    f"{what} is {file.frames / rate:.1f} s long; this server takes at most {max_seconds:g} s"
                )
            audio = file.read(dtype="float32", always_2d=True).T  # [channels, samples]
    except AudioInputError:
        raise
    except Exception as error:  # noqa: BLE001 - libsndfile's many ways of saying "not audio"
        raise AudioInputError(
            f"{what} is not an audio file this server can read (WAV, FLAC, MP3, OGG): {_first_line(error)}"
        ) from None
    if audio.shape[-1] == 0:
        raise AudioInputError(f"{what} holds no samples")
    if audio.shape[0] > MAX_CHANNELS:
        raise AudioInputError(f"{what} has {audio.shape[0]} channels; at most {MAX_CHANNELS} are accepted")
    if not np.isfinite(audio).all():
        raise AudioInputError(f"{what} holds NaN or infinite samples")
    return np.ascontiguousarray(audio), rate


def continuation_slice(audio: np.ndarray, rate: int, start: float, end: float | None) -> np.ndarray:
    """``audio[..., start:end]`` in seconds (``end`` None or -1: the end), with clear errors."""
    length = audio.shape[-1] / rate
    stop = length if end is None or end == -1 else end
    if start >= length:
        raise ValueError(f"continuation_start ({start:g} s) is past the end of input_audio ({length:.2f} s)")
    if stop <= start:
        raise ValueError(f"continuation_end ({stop:g} s) must be after continuation_start ({start:g} s)")
    piece = audio[:, round(start * rate) : round(min(stop, length) * rate)]
    if piece.shape[-1] < rate // 50:
        raise ValueError("the audio prompt is shorter than one codec frame (20 ms)")
    return piece


def _check_attributes(body: GenerateRequest) -> None:
    """Each attribute on its own, so an error names its field."""
    from musicgen_jax.conditioning import Attributes, InvalidAttributeError

    for field, value in (
        ("genre", body.genre),
        ("mood", body.mood),
        ("instruments", body.instruments),
        ("key", body.key),
        ("tempo", body.tempo),
    ):
        try:
            Attributes.create(**{field: value})
        except InvalidAttributeError as error:
            raise FieldError(field, str(error)) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc).isoformat(
        timespec="milliseconds"
    )


def _difference(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else max(0.0, later - earlier)
