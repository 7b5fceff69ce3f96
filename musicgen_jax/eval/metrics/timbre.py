"""Timbre: harmonic/percussive balance (HPSS) and the spectral shape of the sounding frames."""

from __future__ import annotations

import numpy as np

from musicgen_jax.eval.metrics.analysis import (
    ANALYSIS_RATE,
    FRAME_SILENCE_DBFS,
    MetricUnavailable,
    analysis_mono,
    fft_size,
    loud_frames,
    power_db,
    require_sound,
)

HPR_BOUND_DB = 100.0
SPECTRAL_KEYS = (
    "spectral_centroid_hz",
    "spectral_bandwidth_hz",
    "spectral_rolloff_hz",
    "spectral_flatness",
    "zero_crossing_rate",
)


def harmonic_percussive_energy(audio: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """(harmonic, percussive) energy from librosa's median-filtering HPSS of the magnitude STFT."""
    import librosa

    y = analysis_mono(audio, sample_rate)
    require_sound(y)
    n_fft = fft_size(len(y), 2048)
    magnitude = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=n_fft // 4))
    harmonic, percussive = librosa.decompose.hpss(magnitude)  # soft masks: the two add up to the input
    return float(np.sum(harmonic**2)), float(np.sum(percussive**2))


def spectral_statistics(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Mean spectral centroid, bandwidth, roll-off, flatness and zero-crossing rate over sounding frames."""
    import librosa

    y = analysis_mono(audio, sample_rate)
    require_sound(y)
    n_fft = fft_size(len(y), 2048)
    hop = n_fft // 4
    magnitude = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    loud = loud_frames(y, n_fft, hop)[: magnitude.shape[1]]
    if not np.any(loud):
        raise MetricUnavailable(f"no frame is above {FRAME_SILENCE_DBFS:.0f} dBFS")
    features = {
        "spectral_centroid_hz": librosa.feature.spectral_centroid(S=magnitude, sr=ANALYSIS_RATE, n_fft=n_fft),
        "spectral_bandwidth_hz": librosa.feature.spectral_bandwidth(
            S=magnitude, sr=ANALYSIS_RATE, n_fft=n_fft
        ),
        "spectral_rolloff_hz": librosa.feature.spectral_rolloff(S=magnitude, sr=ANALYSIS_RATE, n_fft=n_fft),
        "spectral_flatness": librosa.feature.spectral_flatness(S=magnitude),
        "zero_crossing_rate": librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop),
    }
    return {key: float(np.mean(value[0][: len(loud)][loud])) for key, value in features.items()}


def harmonic_balance(audio: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """(harmonic over percussive energy in dB, bounded to +-``HPR_BOUND_DB``; harmonic fraction)."""
    harmonic, percussive = harmonic_percussive_energy(audio, sample_rate)
    total = harmonic + percussive
    if total == 0.0:
        raise MetricUnavailable("no energy in the STFT")
    # Soft HPSS masks give exactly zero harmonic energy for isolated clicks: bound the ratio.
    tiny = total * 10.0 ** (-HPR_BOUND_DB / 10.0)
    return power_db((harmonic + tiny) / (percussive + tiny)), harmonic / total
