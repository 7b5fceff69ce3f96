"""What every metric family shares: the analysis rates, the silence thresholds, and how a metric
says it has no value for a clip (:class:`MetricUnavailable`)."""

from __future__ import annotations

import math

import numpy as np

from musicgen_jax.audio.io import resample
from musicgen_jax.audio.layout import to_mono

ANALYSIS_RATE = 22050  # librosa's native rate: tempo, HPSS, chroma and spectral features run here
SILENCE_DBFS = -90.0  # a clip whose peak is below this is treated as digital silence
FRAME_SILENCE_DBFS = -60.0  # frames below this RMS are left out of frame averages


class MetricUnavailable(Exception):
    """A metric that has no meaningful value for this clip; the message says why."""


def power_db(power_ratio: float) -> float:
    return 10.0 * math.log10(power_ratio)


def is_silent(audio: np.ndarray) -> bool:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return peak <= 10.0 ** (SILENCE_DBFS / 20.0)


def require_sound(audio: np.ndarray) -> None:
    if audio.size == 0:
        raise MetricUnavailable("empty clip")
    if is_silent(audio):
        raise MetricUnavailable(f"silent clip (peak below {SILENCE_DBFS:.0f} dBFS)")


def require_duration(samples: int, sample_rate: int, seconds: float, what: str) -> None:
    if samples < seconds * sample_rate:
        raise MetricUnavailable(
            f"{what} needs at least {seconds:g} s, the clip has {samples / sample_rate:.3f} s"
        )


def fft_size(samples: int, preferred: int) -> int:
    """The preferred FFT size, or the largest power of two that fits a short clip (min 64)."""
    size = preferred
    while size > 64 and size > samples:
        size //= 2
    return size


def analysis_mono(audio: np.ndarray, sample_rate: int, rate: int = ANALYSIS_RATE) -> np.ndarray:
    """The mono mix ``[samples]`` resampled to the analysis ``rate``."""
    return resample(to_mono(audio), sample_rate, rate)


def loud_frames(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """A boolean per STFT frame (centred, like librosa's): RMS above ``FRAME_SILENCE_DBFS``."""
    import librosa

    rms = librosa.feature.rms(y=y, frame_length=frame_length, hop_length=hop_length)[0]
    return rms > 10.0 ** (FRAME_SILENCE_DBFS / 20.0)
