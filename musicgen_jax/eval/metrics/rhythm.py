"""Rhythm: tempo from librosa's beat tracker, beat regularity and pulse clarity, and the verdict on
a measured tempo against the one it should be (shared by the codec and prompt-adherence reports)."""

from __future__ import annotations

import dataclasses

import numpy as np

from musicgen_jax.eval.metrics.analysis import (
    ANALYSIS_RATE,
    MetricUnavailable,
    analysis_mono,
    require_duration,
    require_sound,
)

MIN_TEMPO_SECONDS = 2.0
MIN_BEATS = 4
TEMPO_TOLERANCE = 0.05  # relative: the ±5% the demo model's prompt-adherence checks use
TEMPO_VERDICTS = ("kept", "octave", "lost", "unmeasured")


def tempo_verdict(measured: float | None, reference: float | None) -> str:
    """``kept`` within :data:`TEMPO_TOLERANCE` of ``reference``, ``octave`` within it of half or
    double (an error of its own kind, not kept), ``lost`` otherwise, ``unmeasured`` without both."""
    if measured is None or reference is None:
        return "unmeasured"
    ratio = measured / reference
    within = TEMPO_TOLERANCE + 1e-9  # inclusive: 126 bpm for 120 is a hit, whatever the rounding
    if abs(ratio - 1.0) <= within:
        return "kept"
    if any(abs(ratio / octave - 1.0) <= within for octave in (0.5, 2.0)):
        return "octave"
    return "lost"


@dataclasses.dataclass(frozen=True)
class TempoEstimate:
    bpm: float
    beat_times: np.ndarray  # [beats] seconds
    beat_interval_cv: float
    local_tempo_std_bpm: float
    pulse_clarity: float


def estimate_tempo(audio: np.ndarray, sample_rate: int, hop_length: int = 256) -> TempoEstimate:
    """Tempo from librosa's beat tracker, refined by a line fit through the beat times.

    librosa's tempo is quantised to its autocorrelation lags (at 22 kHz and hop 256, 120 BPM sits
    between lags worth 117.5 and 119.0 BPM); the slope of beat time against beat index averages the
    per-beat frame error away, which gives sub-BPM accuracy on steady material.
    """
    import librosa

    y = analysis_mono(audio, sample_rate)
    require_sound(y)
    require_duration(len(y), ANALYSIS_RATE, MIN_TEMPO_SECONDS, "tempo")
    onset_envelope = librosa.onset.onset_strength(y=y, sr=ANALYSIS_RATE, hop_length=hop_length)
    if not np.any(onset_envelope > 0):
        raise MetricUnavailable("no onsets")
    _, beat_times = librosa.beat.beat_track(
        onset_envelope=onset_envelope, sr=ANALYSIS_RATE, hop_length=hop_length, units="time"
    )
    if len(beat_times) < MIN_BEATS:
        raise MetricUnavailable(f"the beat tracker found {len(beat_times)} beats, fewer than {MIN_BEATS}")
    period = float(np.polyfit(np.arange(len(beat_times)), beat_times, 1)[0])  # seconds per beat
    intervals = np.diff(beat_times)
    local = librosa.feature.tempo(
        onset_envelope=onset_envelope, sr=ANALYSIS_RATE, hop_length=hop_length, aggregate=None
    )
    return TempoEstimate(
        bpm=60.0 / period,
        beat_times=np.asarray(beat_times),
        beat_interval_cv=float(np.std(intervals) / np.mean(intervals)),
        local_tempo_std_bpm=float(np.std(local)),
        pulse_clarity=_pulse_clarity(onset_envelope, period * ANALYSIS_RATE / hop_length),
    )


def measured_bpm(audio: np.ndarray, sample_rate: int) -> float | None:
    """:func:`estimate_tempo`'s bpm, or ``None`` where it finds none (silence, too short, no beat)."""
    try:
        return estimate_tempo(audio, sample_rate).bpm
    except MetricUnavailable:
        return None


def _pulse_clarity(onset_envelope: np.ndarray, period_frames: float) -> float:
    """Autocorrelation of the mean-removed onset envelope at the beat period, over its value at lag 0."""
    envelope = onset_envelope - onset_envelope.mean()
    energy = float(np.dot(envelope, envelope))
    lag = int(round(period_frames))
    if energy == 0.0 or lag >= len(envelope):
        return 0.0
    # The period is fractional in frames: take the best of the neighbouring integer lags.
    values = [
        float(np.dot(envelope[:-k], envelope[k:])) for k in (lag - 1, lag, lag + 1) if 0 < k < len(envelope)
    ]
    return max(values) / energy
