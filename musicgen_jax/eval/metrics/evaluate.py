"""``evaluate_audio``: every metric of ``METRIC_DOCS`` for one clip, each family measured on its own.

A metric that does not apply (silence, too short, no beats) raises ``MetricUnavailable`` and becomes
``None`` with the reason as a note; any other error in one family is logged and noted the same way,
so that one library edge case in a server never takes the other metrics down with it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from musicgen_jax.audio.io import resample
from musicgen_jax.audio.layout import as_channels_first, require_finite
from musicgen_jax.eval.metrics.analysis import MetricUnavailable
from musicgen_jax.eval.metrics.level import (
    clipped_fraction,
    integrated_loudness_lufs,
    peak_dbfs,
    rms_dbfs,
    silence_fraction,
    true_peak_dbtp,
)
from musicgen_jax.eval.metrics.noise import noise_floor_snr_db, si_snr_db, snr_db
from musicgen_jax.eval.metrics.pitch import pitch_statistics
from musicgen_jax.eval.metrics.reference import chroma_similarity, log_mel_distance_db
from musicgen_jax.eval.metrics.rhythm import estimate_tempo
from musicgen_jax.eval.metrics.timbre import SPECTRAL_KEYS, harmonic_balance, spectral_statistics

logger = logging.getLogger(__name__)

TEMPO_KEYS = ("tempo_bpm", "beat_count", "beat_interval_cv", "tempo_local_std_bpm", "pulse_clarity")
PITCH_KEYS = ("voiced_fraction", "pitch_median_hz", "pitch_std_cents", "pitch_jitter_cents")

Metrics = dict[str, float | int | None]


@dataclasses.dataclass(frozen=True)
class AudioEvaluation:
    """``metrics``: every key of ``METRIC_DOCS`` that applies (``None`` when not measurable);
    ``notes``: the reason for each ``None``, and remarks such as a reference that was resampled."""

    metrics: Metrics
    notes: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics), "notes": dict(self.notes)}


def evaluate_audio(
    audio: np.ndarray,
    sample_rate: int,
    reference: np.ndarray | None = None,
    reference_sample_rate: int | None = None,
) -> Metrics:
    """Every metric of ``METRIC_DOCS`` for one clip (``[channels, samples]`` or ``[samples]``).

    Reference metrics (``REFERENCE_KEYS``) appear only when a reference is given; it is resampled to
    the clip's rate when ``reference_sample_rate`` differs. A value is ``None`` when the metric does
    not apply (silence, too short, no beats); ``evaluate_audio_detailed`` also returns the reasons.
    """
    return evaluate_audio_detailed(audio, sample_rate, reference, reference_sample_rate).metrics


def evaluate_audio_detailed(
    audio: np.ndarray,
    sample_rate: int,
    reference: np.ndarray | None = None,
    reference_sample_rate: int | None = None,
) -> AudioEvaluation:
    """``evaluate_audio`` with a note for every ``None`` and for any adjustment made to the reference."""
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    audio = _checked(audio, "audio")  # [channels, samples]
    if reference is not None:
        reference = _checked(reference, "reference")  # [channels, samples]
    metrics: Metrics = {}
    notes: dict[str, str] = {}
    _measure_clip(audio, sample_rate, metrics, notes)
    if reference is not None:
        reference_rate = reference_sample_rate or sample_rate
        reference = _match_reference(reference, reference_rate, audio, sample_rate, notes)
        _measure_against_reference(audio, sample_rate, reference, metrics, notes)
    return AudioEvaluation(_finite_or_none(metrics, notes), notes)


def _checked(audio: np.ndarray, name: str) -> np.ndarray:
    audio = as_channels_first(audio)
    require_finite(audio, name)
    return audio


def _measure(
    metrics: Metrics, notes: dict[str, str], keys: tuple[str, ...], compute: Callable[[], Any]
) -> None:
    """Store ``compute()`` (one value, or a tuple of one per key) under ``keys``; ``None`` and a note
    for each key when it raises."""
    try:
        values = compute()
        if len(keys) == 1:
            values = (values,)
    except MetricUnavailable as reason:
        values = (None,) * len(keys)
        notes.update(dict.fromkeys(keys, str(reason)))
    except Exception as error:
        # The note and the log carry the error, so that catching it here does not lose it.
        logger.warning("metric %s failed", "/".join(keys), exc_info=True)
        values = (None,) * len(keys)
        notes.update(dict.fromkeys(keys, f"failed: {type(error).__name__}: {error}"))
    metrics.update(zip(keys, values, strict=True))


def _measure_clip(audio: np.ndarray, sample_rate: int, metrics: Metrics, notes: dict[str, str]) -> None:
    """The metrics of the clip alone, in ``METRIC_DOCS`` order."""
    metrics["duration_s"] = audio.shape[-1] / sample_rate
    metrics["sample_rate"] = int(sample_rate)
    metrics["channels"] = int(audio.shape[0])
    _measure(metrics, notes, ("peak_dbfs",), lambda: peak_dbfs(audio))
    _measure(metrics, notes, ("true_peak_dbtp",), lambda: true_peak_dbtp(audio, sample_rate))
    _measure(metrics, notes, ("rms_dbfs",), lambda: rms_dbfs(audio))
    _measure(metrics, notes, ("crest_factor_db",), lambda: peak_dbfs(audio) - rms_dbfs(audio))
    metrics["clipped_fraction"] = clipped_fraction(audio)
    metrics["silence_fraction"] = silence_fraction(audio, sample_rate)
    _measure(metrics, notes, ("loudness_lufs",), lambda: integrated_loudness_lufs(audio, sample_rate))
    _measure(metrics, notes, ("noise_floor_snr_db",), lambda: noise_floor_snr_db(audio, sample_rate))
    _measure(metrics, notes, TEMPO_KEYS, lambda: _tempo_values(audio, sample_rate))
    _measure(metrics, notes, PITCH_KEYS, lambda: _pitch_values(audio, sample_rate, notes))
    _measure(
        metrics,
        notes,
        ("harmonic_percussive_ratio_db", "harmonic_fraction"),
        lambda: harmonic_balance(audio, sample_rate),
    )
    _measure(
        metrics,
        notes,
        SPECTRAL_KEYS,
        lambda: tuple(spectral_statistics(audio, sample_rate)[key] for key in SPECTRAL_KEYS),
    )


def _tempo_values(audio: np.ndarray, sample_rate: int) -> tuple[float, int, float, float, float]:
    tempo = estimate_tempo(audio, sample_rate)
    return (
        tempo.bpm,
        len(tempo.beat_times),
        tempo.beat_interval_cv,
        tempo.local_tempo_std_bpm,
        tempo.pulse_clarity,
    )


def _pitch_values(
    audio: np.ndarray, sample_rate: int, notes: dict[str, str]
) -> tuple[float, float | None, float | None, float | None]:
    """pYIN's summary; a note for each statistic that too few voiced frames leave undefined."""
    stats = pitch_statistics(audio, sample_rate)
    if stats.median_hz is None:
        notes["pitch_median_hz"] = notes["pitch_std_cents"] = "fewer than two voiced frames"
    if stats.jitter_cents is None:
        notes["pitch_jitter_cents"] = "no two consecutive voiced frames"
    return stats.voiced_fraction, stats.median_hz, stats.std_cents, stats.jitter_cents


def _match_reference(
    reference: np.ndarray, reference_rate: int, audio: np.ndarray, sample_rate: int, notes: dict[str, str]
) -> np.ndarray:
    """The reference at the clip's rate, with notes on the resampling and on a length mismatch."""
    if reference_rate != sample_rate:
        reference = resample(reference, reference_rate, sample_rate)
        notes["reference"] = f"resampled from {reference_rate} Hz to {sample_rate} Hz"
    samples = audio.shape[-1]
    if reference.shape[-1] != samples:
        common = min(reference.shape[-1], samples) / sample_rate
        notes["reference_length"] = (
            f"clip {samples / sample_rate:.3f} s, reference {reference.shape[-1] / sample_rate:.3f} s: "
            f"sample-wise metrics use the first {common:.3f} s"
        )
    return reference


def _measure_against_reference(
    audio: np.ndarray, sample_rate: int, reference: np.ndarray, metrics: Metrics, notes: dict[str, str]
) -> None:
    """``REFERENCE_KEYS``; the reference is already at the clip's rate."""
    _measure(metrics, notes, ("snr_db",), lambda: snr_db(audio, reference))
    _measure(metrics, notes, ("si_snr_db",), lambda: si_snr_db(audio, reference))
    _measure(
        metrics,
        notes,
        ("log_mel_distance_db",),
        lambda: log_mel_distance_db(audio, sample_rate, reference, sample_rate),
    )
    _measure(
        metrics,
        notes,
        ("chroma_similarity", "chroma_similarity_framewise"),
        lambda: chroma_similarity(audio, sample_rate, reference, sample_rate),
    )


def _finite_or_none(metrics: dict[str, Any], notes: dict[str, str]) -> Metrics:
    """Plain Python numbers, with any non-finite value replaced by ``None`` (and a note): never NaN."""
    clean: Metrics = {}
    for key, value in metrics.items():
        if value is None:
            clean[key] = None
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            clean[key] = int(value)
        elif math.isfinite(float(value)):
            clean[key] = float(value)
        else:
            clean[key] = None
            notes.setdefault(key, f"not finite ({value})")
    return clean
