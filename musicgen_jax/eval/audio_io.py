"""Reading audio files for evaluation, and the layout helpers every metric shares.

Audio inside ``musicgen_jax.eval`` is float32 ``[channels, samples]``; callers may pass
``[samples]`` and get it promoted. Reading goes through soundfile (WAV, FLAC, OGG, MP3 where
libsndfile has it) and :mod:`musicgen_jax.audio.io`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class AudioReadError(ValueError):
    """A path that is missing, not a file, or not audio soundfile can decode."""


def as_channels_first(audio: np.ndarray) -> np.ndarray:
    """``[samples]`` or ``[channels, samples]`` -> float32 ``[channels, samples]``."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return audio[None, :]
    if audio.ndim != 2:
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {audio.shape}")
    if audio.shape[0] > 8 and audio.shape[1] <= 8:
        # Many rows and a handful of columns is a [samples, channels] array passed by mistake.
        raise ValueError(
            f"audio of shape {audio.shape} looks like [samples, channels]; pass [channels, samples]"
        )
    return audio


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels: ``[channels, samples]`` or ``[samples]`` -> ``[samples]``."""
    return as_channels_first(audio).mean(axis=0)


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample along the last axis (the project's soxr resampler); a no-op when the rates match."""
    from musicgen_jax.audio.io import resample as resample_audio

    return resample_audio(audio, source_rate, target_rate)


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``[channels, samples]`` and its sample rate."""
    from musicgen_jax.audio.io import load_audio as read_audio

    try:
        audio, sample_rate = read_audio(path)
    except (OSError, ValueError) as error:
        raise AudioReadError(str(error)) from None
    if audio.shape[-1] == 0:
        raise AudioReadError(f"{path} holds no samples")
    return audio, sample_rate


def list_audio_files(directory: str | Path) -> list[Path]:
    """The audio files directly inside ``directory`` (sorted, by suffix)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AudioReadError(f"not a directory: {directory}")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise AudioReadError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {directory}")
    return files
