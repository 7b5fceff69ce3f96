"""``POST /evaluate`` without HTTP: signal metrics of uploaded audio or of a completed task's file.

Runs on the audio pool; the metrics are :mod:`musicgen_jax.eval`'s (see ``METRIC_DOCS``).
"""

from __future__ import annotations

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
    path = store.audio_path(record)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"the audio of task {record.task_id} was deleted")
    return load_audio(path)
