"""Against a reference: log-mel distance and chroma (key and harmony) similarity.

(SNR and SI-SNR against a reference are noise measures: :mod:`musicgen_jax.eval.metrics.noise`.)
"""

from __future__ import annotations

import warnings

import numpy as np

from musicgen_jax.eval.metrics.analysis import (
    ANALYSIS_RATE,
    MetricUnavailable,
    analysis_mono,
    fft_size,
    require_sound,
)

LOG_MEL_RANGE_DB = 80.0


def _chroma(y: np.ndarray) -> np.ndarray:
    import librosa

    n_fft = fft_size(len(y), 4096)  # 186 ms at 22 kHz: semitone resolution down to about 100 Hz
    return librosa.feature.chroma_stft(y=y, sr=ANALYSIS_RATE, n_fft=n_fft, hop_length=n_fft // 4, norm=None)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        raise MetricUnavailable("a chroma vector is zero")
    return float(np.dot(a, b) / norms)


def chroma_similarity(
    audio: np.ndarray, sample_rate: int, reference: np.ndarray, reference_sample_rate: int | None = None
) -> tuple[float, float]:
    """(cosine of mean chroma vectors, mean framewise chroma cosine over frames where both sound)."""
    y = analysis_mono(audio, sample_rate)
    r = analysis_mono(reference, reference_sample_rate or sample_rate)
    require_sound(y)
    require_sound(r)
    chroma_y, chroma_r = _chroma(y), _chroma(r)  # [12, frames]
    overall = _cosine(chroma_y.mean(axis=1), chroma_r.mean(axis=1))
    frames = min(chroma_y.shape[1], chroma_r.shape[1])
    a, b = chroma_y[:, :frames], chroma_r[:, :frames]
    norms = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    sounding = norms > 1e-8 * max(float(norms.max()), 1e-30)
    if not np.any(sounding):
        raise MetricUnavailable("no frame where both clips sound")
    framewise = float(np.mean(np.sum(a * b, axis=0)[sounding] / norms[sounding]))
    return overall, framewise


def log_mel_distance_db(
    audio: np.ndarray, sample_rate: int, reference: np.ndarray, reference_sample_rate: int | None = None
) -> float:
    """Mean |dB difference| of 64-band log-mel spectrograms over the common length, both floored
    ``LOG_MEL_RANGE_DB`` below the reference's loudest bin."""
    y = analysis_mono(audio, sample_rate)
    r = analysis_mono(reference, reference_sample_rate or sample_rate)
    length = min(len(y), len(r))
    if length == 0:
        raise MetricUnavailable("empty clip or reference")
    n_fft = fft_size(length, 2048)
    mel_y, mel_r = _mel_power(y[:length], n_fft), _mel_power(r[:length], n_fft)  # [64, frames]
    if not np.any(mel_r > 0):
        raise MetricUnavailable("silent reference")
    # One absolute floor for both (not per clip), so that a level change still shows up as distance.
    floor = float(mel_r.max()) * 10.0 ** (-LOG_MEL_RANGE_DB / 10.0)
    return float(np.mean(np.abs(10.0 * np.log10(np.maximum(mel_y, floor) / np.maximum(mel_r, floor)))))


def _mel_power(y: np.ndarray, n_fft: int) -> np.ndarray:
    """The 64-band mel power spectrogram ``[64, frames]`` of ``y`` at the analysis rate."""
    import librosa

    with warnings.catch_warnings():
        # A clip shorter than 2048 samples gets a small FFT, and some of the 64 bands no bin.
        warnings.filterwarnings("ignore", message="Empty filters detected")
        return librosa.feature.melspectrogram(
            y=y, sr=ANALYSIS_RATE, n_fft=n_fft, hop_length=n_fft // 4, n_mels=64
        )
