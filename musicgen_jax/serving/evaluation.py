"""``POST /evaluate`` without HTTP: signal metrics of uploaded audio or of a completed task's file.

Runs on the audio pool; the metrics are :mod:`musicgen_jax.eval`'s (see ``METRIC_DOCS``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from musicgen_jax.audio import load_audio
from musicgen_jax.eval import evaluate_audio_detailed
from musicgen_jax.serving.store import TaskRecord, TaskStore


def evaluate(audio: np.ndarray, rate: int, reference: tuple[np.ndarray, int] | None = None):
    """Metrics and notes of ``audio`` ``[channels, samples]``, against ``(reference, rate)`` if given."""
    if reference is None:
        return evaluate_audio_detailed(audio, rate)
    return evaluate_audio_detailed(audio, rate, reference[0], reference[1])


def load_task_audio(store: TaskStore, record: TaskRecord) -> tuple[np.ndarray, int]:
    """A completed task's audio ``[channels, samples]`` and rate; FileNotFoundError once deleted."""
    storage = store.storage
    if not record.file_name or not storage.exists(record.file_name):
        raise FileNotFoundError(f"the audio of task {record.task_id} was deleted")
    path = storage.local_path(record.file_name)
    if path is not None:
        return load_audio(path)
    with tempfile.TemporaryDirectory(prefix="musicgen-evaluate-") as scratch:  # remote storage
        local = Path(scratch) / record.file_name
        local.write_bytes(storage.read(record.file_name))
        return load_audio(local)
