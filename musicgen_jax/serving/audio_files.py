"""Codec codes into the files a task's client downloads (on the audio pool: decoding is CPU work)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from musicgen_jax.audio import save_audio


def write_task_audio(model, frames: np.ndarray, path: Path, format: str, normalization: str) -> np.ndarray:
    """Decode ``frames`` ``[K, frames]`` with the model's codec, normalise, write ``path``; the audio
    ``[channels, samples]`` as written (before normalisation)."""
    audio = model.decode(frames[None])[0]  # [channels, samples]
    save_audio(path, audio, model.sample_rate, format=format, normalization=normalization)
    return audio


def touch_audio_path(model, directory: Path, stream_push_frames: Sequence[int] = ()) -> None:
    """Decode (whole and streamed) and write a few silent frames once, so the codec and the file
    encoders initialise during warm-up rather than in the first request; and compile the streaming
    decoder for streams of ``stream_push_frames``-frame pushes (the JAX codec's compiled windows)."""
    frames = max(8, int(model.frame_rate // 5))
    silence = np.zeros((1, model.num_codebooks, frames), np.int32)  # [1, codebooks, frames]
    audio = model.decode(silence)[0]  # [channels, samples]
    stream = model.codec.streaming_decoder()
    stream.push(silence)
    stream.flush()
    for push_frames in stream_push_frames:
        stream.warm_up(push_frames)
    path = directory / f".warmup-{uuid.uuid4().hex[:8]}.wav"
    try:
        save_audio(path, audio + 1e-3, model.sample_rate, normalization="loudness")
    finally:
        path.unlink(missing_ok=True)
