"""The clips an evaluation reads: one file (:func:`read_clip`) or a folder of them.

Reading is :func:`musicgen_jax.audio.load_audio`'s; this module only turns what can go wrong with a
clip to be scored (missing, undecodable, empty) into one :class:`AudioReadError`, which the command
line reports as one line and a report as a note beside the clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from musicgen_jax.audio.formats import AUDIO_SUFFIXES
from musicgen_jax.audio.io import load_audio


class AudioReadError(ValueError):
    """A path that is missing, not a file, not audio soundfile can decode, or holds no samples."""


def read_clip(path: str | Path) -> tuple[np.ndarray, int]:
    """float32 ``[channels, samples]`` and the sample rate of one audio file to evaluate."""
    try:
        audio, sample_rate = load_audio(path)
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
