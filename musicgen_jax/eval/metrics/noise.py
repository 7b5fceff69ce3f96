"""Noise: SNR and scale-invariant SNR against a reference, and an SNR estimate without one."""

from __future__ import annotations

import math

import numpy as np

from musicgen_jax.audio.layout import as_channels_first, to_mono
from musicgen_jax.eval.metrics.analysis import (
    ANALYSIS_RATE,
    MetricUnavailable,
    analysis_mono,
    power_db,
    require_duration,
    require_sound,
)

NOISE_FLOOR_PERCENTILE = 10.0
NOISE_FLOOR_SNR_RANGE_DB = (-20.0, 80.0)
STEADY_BIN_RATIO = 0.15  # 10th percentile / mean above this: the bin holds a steady partial, not noise


def snr_db(audio: np.ndarray, reference: np.ndarray) -> float:
    """``10 log10(sum(ref^2) / sum((audio - ref)^2))`` over the common length; no alignment or gain."""
    audio, reference = common_layout(audio, reference)
    require_sound(reference)
    noise = float(np.sum((audio.astype(np.float64) - reference) ** 2))
    if noise == 0.0:
        raise MetricUnavailable("the clip equals the reference (infinite SNR)")
    return power_db(float(np.sum(reference.astype(np.float64) ** 2)) / noise)


def si_snr_db(audio: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SNR (Le Roux et al. 2019): project the clip on the reference, the rest is noise."""
    audio, reference = common_layout(audio, reference)
    estimate = to_mono(audio).astype(np.float64)
    target = to_mono(reference).astype(np.float64)
    estimate -= estimate.mean()
    target -= target.mean()
    require_sound(target)
    scaled = target * (np.dot(estimate, target) / np.dot(target, target))
    noise = float(np.sum((estimate - scaled) ** 2))
    signal = float(np.sum(scaled**2))
    if noise == 0.0:
        raise MetricUnavailable("the clip is a scaled copy of the reference (infinite SI-SNR)")
    if signal == 0.0:
        raise MetricUnavailable("the clip is uncorrelated with the reference (SI-SNR of minus infinity)")
    return power_db(signal / noise)


def noise_floor_snr_db(audio: np.ndarray, sample_rate: int) -> float:
    """SNR without a reference, from a minimum-statistics style noise floor (see ``METRIC_DOCS``).

    Noise power in one STFT bin is exponentially distributed, so its 10th percentile is -ln(0.9) =
    0.105 of its mean, and dividing by that recovers the noise power wherever the music leaves the
    bin quiet 10% of the time. A bin whose 10th percentile is above 0.15 of its mean holds a steady
    partial instead (a sinusoid's power barely varies): its floor is interpolated from the
    noise-like bins around it, since a noise floor is smooth across frequency; so is a lone
    noise-like bin between steady ones (two partials beating in their shared leakage). Partials with
    vibrato or tremolo fluctuate like noise and are partly counted as noise: the estimate under-reads.
    """
    import librosa

    y = analysis_mono(audio, sample_rate)
    require_sound(y)
    require_duration(len(y), ANALYSIS_RATE, 1.0, "the noise-floor estimate")
    power = (
        np.abs(librosa.stft(y.astype(np.float64), n_fft=1024, hop_length=256, center=False)) ** 2
    )  # [freq, frames]
    mean = power.mean(axis=1)
    low_quantile = np.percentile(power, NOISE_FLOOR_PERCENTILE, axis=1)
    noise_like = _drop_isolated(low_quantile <= STEADY_BIN_RATIO * mean)
    low, high = NOISE_FLOOR_SNR_RANGE_DB
    if not np.any(noise_like):
        return high  # every bin is a steady partial: no noise floor to be seen
    bins = np.arange(len(mean))
    correction = -math.log(1.0 - NOISE_FLOOR_PERCENTILE / 100.0)
    floor = np.interp(bins, bins[noise_like], low_quantile[noise_like]) / correction
    total, noise = float(mean.sum()), float(floor.sum())
    if noise <= total * 10.0 ** (-high / 10.0):
        return high
    return float(np.clip(power_db(max(total - noise, 1e-30) / noise), low, high))


def _drop_isolated(mask: np.ndarray) -> np.ndarray:
    """``mask`` without its single-bin runs: a lone "noise-like" bin between steady partials is two
    partials beating in their shared leakage, not a view of the noise floor."""
    left = np.concatenate([[False], mask[:-1]])
    right = np.concatenate([mask[1:], [False]])
    return mask & (left | right)


def common_layout(audio: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as ``[channels, samples]`` with the same channel count (mono if they differ) and length."""
    audio, reference = as_channels_first(audio), as_channels_first(reference)
    if audio.shape[0] != reference.shape[0]:
        audio, reference = audio.mean(axis=0, keepdims=True), reference.mean(axis=0, keepdims=True)
    length = min(audio.shape[-1], reference.shape[-1])
    if length == 0:
        raise MetricUnavailable("empty clip or reference")
    return audio[:, :length], reference[:, :length]
