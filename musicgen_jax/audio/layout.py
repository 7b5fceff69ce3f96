"""Audio arrays are channels first: float ``[channels, samples]`` (``[batch, channels, samples]``
at the codec); ``[samples]`` is taken as mono.

The usual mistake is a channels-last array, the layout soundfile and most audio libraries use
(``[samples, channels]``). It is caught by shape: more than ``MAX_CHANNELS`` rows over at most that
many columns is no real channel layout (eight covers 7.1 surround).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_CHANNELS = 8


def check_channels_first(audio: Any) -> None:
    """ValueError when the last two axes of ``audio`` look like ``[samples, channels]``."""
    shape = np.shape(audio)
    if len(shape) >= 2 and shape[-2] > MAX_CHANNELS and shape[-1] <= MAX_CHANNELS:
        given, wanted = "[samples, channels]", "[channels, samples]"
        if len(shape) == 3:
            given, wanted = "[batch, samples, channels]", "[batch, channels, samples]"
        raise ValueError(f"audio of shape {shape} looks like {given}; pass {wanted}")


def as_channels_first(audio: Any) -> np.ndarray:
    """float32 ``[channels, samples]`` from ``[samples]`` (mono) or ``[channels, samples]``;
    ValueError for any other rank and for a channels-last array."""
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim == 1:
        return array[None, :]
    if array.ndim != 2:
        raise ValueError(f"audio must be [channels, samples] or [samples], got shape {array.shape}")
    check_channels_first(array)
    return array


def to_mono(audio: Any) -> np.ndarray:
    """The mean of the channels: ``[channels, samples]`` or ``[samples]`` -> float32 ``[samples]``."""
    return as_channels_first(audio).mean(axis=0)


def require_finite(audio: Any, name: str = "audio") -> None:
    """ValueError when ``audio`` holds a NaN or an infinity (no gain or codec can repair one)."""
    if not np.isfinite(audio).all():
        raise ValueError(f"{name} contains NaN or infinite values")
