"""A reference melody as MusicGen-melody reads it: chroma frames ``[frames, num_chroma]``.

The model takes one-hot chroma (the strongest pitch class of each frame), repeated whole as often as
needed and cut to its ``chroma_length`` frames; a row without a melody, and the null condition of
classifier-free guidance, take the null chroma: bin 0 in every frame, as transformers builds it.
This module prepares those arrays on the host (NumPy); the model projects them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class MelodyError(ValueError):
    """A melody the model cannot take. ``field`` names the input at fault."""

    def __init__(self, message: str, field: str = "melody"):
        super().__init__(message)
        self.field = field


def null_chroma(num_chroma: int, frames: int = 1) -> np.ndarray:
    """``[frames, num_chroma]`` float32: bin 0 one-hot in every frame (no melody)."""
    chroma = np.zeros((frames, num_chroma), np.float32)
    chroma[:, 0] = 1.0
    return chroma


def fit_chroma(chroma: np.ndarray, length: int) -> np.ndarray:
    """``chroma [frames, bins]`` repeated whole ``ceil(length / frames)`` times and cut to ``length``
    frames, as transformers fits ``input_features`` to ``chroma_length``."""
    frames = chroma.shape[0]
    return np.tile(chroma, (-(-length // frames), 1))[:length]


def check_chroma(chroma, num_chroma: int) -> np.ndarray:
    """``chroma`` as float32 ``[frames, num_chroma]`` (at least one frame), or a ``MelodyError``."""
    array = np.asarray(chroma, np.float32)
    if array.ndim != 2 or array.shape[1] != num_chroma or array.shape[0] < 1:
        raise MelodyError(
            f"a melody's chroma must be [frames, {num_chroma}] with at least one frame, got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise MelodyError("a melody's chroma holds values that are not finite")
    return array


def chroma_batch(chromas: Sequence[np.ndarray | None], num_chroma: int, length: int) -> np.ndarray:
    """``[batch, length, num_chroma]`` float32 for the model: each row's chroma fitted to
    ``length`` frames (:func:`fit_chroma`), the null chroma where a row has none.

    Fitting each row on its own equals transformers' fitting of a batch whose rows are equally long
    (its feature extractor pads a batch to one length); rows of different lengths each repeat
    their own frames.
    """
    rows = [
        fit_chroma(null_chroma(num_chroma) if c is None else check_chroma(c, num_chroma), length)
        for c in chromas
    ]
    return np.stack(rows).astype(np.float32)
