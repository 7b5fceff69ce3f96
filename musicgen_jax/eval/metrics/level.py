"""Level and loudness: sample and true peak, RMS, BS.1770 loudness, clipped and silent fractions.

Peak and loudness are :mod:`musicgen_jax.audio.normalize`'s measurements (the ones normalisation
targets); this module adds what makes them metrics: no value for silence or a too-short clip.
"""

from __future__ import annotations

import math

import numpy as np

from musicgen_jax.audio import normalize
from musicgen_jax.audio.layout import as_channels_first, to_mono
from musicgen_jax.eval.metrics.analysis import (
    FRAME_SILENCE_DBFS,
    MetricUnavailable,
    power_db,
    require_duration,
    require_sound,
)

CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped
MIN_LOUDNESS_SECONDS = 0.4  # one BS.1770 gating block
MAX_LOUDNESS_CHANNELS = 5  # BS.1770 weights up to 5 channels (pyloudnorm's limit)


def peak_dbfs(audio: np.ndarray) -> float:
    """Sample peak in dBFS."""
    audio = as_channels_first(audio)
    require_sound(audio)
    return float(normalize.peak_dbfs(audio))


def true_peak_dbtp(audio: np.ndarray, sample_rate: int) -> float:
    """Peak of the 4x-oversampled signal (catches inter-sample overs that the sample peak misses)."""
    from scipy.signal import resample_poly

    audio = as_channels_first(audio)
    require_sound(audio)
    # BS.1770-4 asks for 4x oversampling below 96 kHz; resample_poly's Kaiser FIR does the interpolation.
    factor = 4 if sample_rate < 96000 else 2
    oversampled = resample_poly(audio.astype(np.float64), factor, 1, axis=-1)
    return 20.0 * math.log10(max(float(np.max(np.abs(oversampled))), float(np.max(np.abs(audio)))))


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level over all channels and samples, dBFS."""
    audio = as_channels_first(audio)
    require_sound(audio)
    return power_db(float(np.mean(np.square(audio, dtype=np.float64))))


def integrated_loudness_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """ITU-R BS.1770-4 integrated loudness (K-weighting, gating) via pyloudnorm, LUFS."""
    audio = as_channels_first(audio)
    require_sound(audio)
    require_duration(audio.shape[-1], sample_rate, MIN_LOUDNESS_SECONDS, "loudness")
    if audio.shape[0] > MAX_LOUDNESS_CHANNELS:
        raise MetricUnavailable(
            f"pyloudnorm weights at most {MAX_LOUDNESS_CHANNELS} channels, the clip has {audio.shape[0]}"
        )
    loudness = normalize.integrated_loudness(audio, sample_rate)
    if not math.isfinite(loudness):
        raise MetricUnavailable("every 400 ms block is below the -70 LUFS absolute gate")
    return float(loudness)


def clipped_fraction(audio: np.ndarray) -> float:
    """Fraction of samples at or above ``CLIP_LEVEL`` in magnitude (0 for an empty clip)."""
    audio = as_channels_first(audio)
    return float(np.mean(np.abs(audio) >= CLIP_LEVEL)) if audio.size else 0.0


def silence_fraction(audio: np.ndarray, sample_rate: int) -> float:
    """Fraction of 50 ms frames (no overlap, a partial last frame dropped) whose RMS is below
    ``FRAME_SILENCE_DBFS``; a clip shorter than one frame is one frame. An empty clip is all silence."""
    mono = to_mono(audio).astype(np.float64)
    if len(mono) == 0:
        return 1.0
    frame = max(1, int(0.05 * sample_rate))
    count = len(mono) // frame
    frames = mono[None, :] if count == 0 else mono[: count * frame].reshape(count, frame)  # [frames, samples]
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return float(np.mean(rms < 10.0 ** (FRAME_SILENCE_DBFS / 20.0)))
