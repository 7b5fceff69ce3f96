"""Signal-level quality metrics of one clip, with or without a reference: level, loudness, noise,
tempo, pitch stability, harmonic/percussive balance, spectral shape and chroma agreement.

``evaluate_audio`` is the entry point (the server calls it); the per-metric functions are public
for callers that want one number. Each either returns its number or raises ``MetricUnavailable``
with the reason (silence, too short, no beats found); ``evaluate_audio`` turns that into ``None``
plus a note, so its output never holds NaN or infinity. ``METRIC_DOCS`` documents every key.

One module per family: :mod:`.level` (peak, loudness), :mod:`.noise` (SNR), :mod:`.rhythm`
(tempo), :mod:`.pitch` (pYIN), :mod:`.timbre` (HPSS, spectral shape), :mod:`.reference`
(log-mel and chroma against a reference); :mod:`.analysis` holds what they share and
:mod:`.evaluate` runs them all. The DSP is librosa's (onset envelope, beat tracker, pYIN, HPSS,
chroma, spectral features), pyloudnorm's through :mod:`musicgen_jax.audio.normalize` (ITU-R BS.1770
loudness) and scipy's (polyphase oversampling for true peak).
"""

from musicgen_jax.eval.metrics.analysis import (
    ANALYSIS_RATE,
    FRAME_SILENCE_DBFS,
    SILENCE_DBFS,
    MetricUnavailable,
)
from musicgen_jax.eval.metrics.descriptions import METRIC_DOCS, REFERENCE_KEYS
from musicgen_jax.eval.metrics.evaluate import AudioEvaluation, evaluate_audio, evaluate_audio_detailed
from musicgen_jax.eval.metrics.level import (
    CLIP_LEVEL,
    clipped_fraction,
    integrated_loudness_lufs,
    peak_dbfs,
    rms_dbfs,
    silence_fraction,
    true_peak_dbtp,
)
from musicgen_jax.eval.metrics.noise import NOISE_FLOOR_SNR_RANGE_DB, noise_floor_snr_db, si_snr_db, snr_db
from musicgen_jax.eval.metrics.pitch import PitchStatistics, pitch_statistics
from musicgen_jax.eval.metrics.reference import chroma_similarity, log_mel_distance_db
from musicgen_jax.eval.metrics.rhythm import (
    TEMPO_TOLERANCE,
    TEMPO_VERDICTS,
    TempoEstimate,
    estimate_tempo,
    tempo_verdict,
)
from musicgen_jax.eval.metrics.timbre import harmonic_percussive_energy, spectral_statistics

__all__ = [
    "ANALYSIS_RATE",
    "CLIP_LEVEL",
    "FRAME_SILENCE_DBFS",
    "METRIC_DOCS",
    "NOISE_FLOOR_SNR_RANGE_DB",
    "REFERENCE_KEYS",
    "SILENCE_DBFS",
    "TEMPO_TOLERANCE",
    "TEMPO_VERDICTS",
    "AudioEvaluation",
    "MetricUnavailable",
    "PitchStatistics",
    "TempoEstimate",
    "chroma_similarity",
    "clipped_fraction",
    "estimate_tempo",
    "evaluate_audio",
    "evaluate_audio_detailed",
    "harmonic_percussive_energy",
    "integrated_loudness_lufs",
    "log_mel_distance_db",
    "noise_floor_snr_db",
    "peak_dbfs",
    "pitch_statistics",
    "rms_dbfs",
    "si_snr_db",
    "silence_fraction",
    "snr_db",
    "spectral_statistics",
    "tempo_verdict",
    "true_peak_dbtp",
]
