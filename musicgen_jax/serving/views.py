"""What a client sees of a task: its stored record plus, while it is in flight, live progress."""

from __future__ import annotations

import datetime

from musicgen_jax.serving.queue import GenerationQueue, Job
from musicgen_jax.serving.schemas import TaskStatus
from musicgen_jax.serving.store import TaskRecord


def task_status(record: TaskRecord, job: Job | None, queue: GenerationQueue) -> TaskStatus:
    """The status of ``record``; ``job`` is its device job while the task is in flight, else None."""
    progress = 1.0 if record.status == "completed" else (job.progress if job else 0.0)
    if record.status == "failed" and job is None:
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
        queue_position=(queue.position(job) or 0) if job and record.status == "queued" else None,
        prompt=record.request.get("prompt"),
        request=record.request,
        seed=record.seed,
        format=record.format,
        created_at=iso_time(record.created_at),
        started_at=iso_time(record.started_at),
        finished_at=iso_time(record.finished_at),
        queued_seconds=seconds_between(record.started_at, record.created_at),
        total_seconds=seconds_between(record.finished_at, record.created_at),
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


def iso_time(seconds: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC with milliseconds (None stays None)."""
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc).isoformat(
        timespec="milliseconds"
    )


def seconds_between(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else max(0.0, later - earlier)
