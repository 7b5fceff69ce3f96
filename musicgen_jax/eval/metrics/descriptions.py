"""What every key of ``evaluate_audio``'s result means, in words (the report prints these)."""

from __future__ import annotations

from musicgen_jax.eval.metrics.analysis import FRAME_SILENCE_DBFS
from musicgen_jax.eval.metrics.level import CLIP_LEVEL

METRIC_DOCS: dict[str, str] = {
    "duration_s": "clip length in seconds",
    "sample_rate": "sample rate of the clip in Hz",
    "channels": "number of channels",
    "peak_dbfs": "sample peak level, dB relative to full scale (0 dBFS = |x| of 1)",
    "true_peak_dbtp": "inter-sample peak from 4x polyphase oversampling (BS.1770-4 Annex 2 style), dBTP",
    "rms_dbfs": "RMS level over the whole clip, dBFS",
    "crest_factor_db": "peak minus RMS, dB; low values mean heavy compression or clipping",
    "clipped_fraction": f"fraction of samples with |x| >= {CLIP_LEVEL}",
    "silence_fraction": f"fraction of 50 ms frames whose RMS is below {FRAME_SILENCE_DBFS:.0f} dBFS",
    "loudness_lufs": "integrated loudness (ITU-R BS.1770-4, pyloudnorm), LUFS; needs >= 0.4 s",
    "noise_floor_snr_db": (
        "SNR estimated without a reference: per-frequency noise floor from the 10th percentile of the "
        "STFT power over time, corrected for the exponential distribution of noise power, with steady "
        "partials interpolated over; total power minus floor over floor. Reads within about 0.5 dB on "
        "steady or intermittent tones in white noise, within about 3 dB in pink noise; under-reads "
        "partials with vibrato or tremolo, which fluctuate like noise; clamped to [-20, 80] dB"
    ),
    "tempo_bpm": "tempo in beats per minute from a least-squares fit of librosa's beat times",
    "beat_count": "number of beats the beat tracker found",
    "beat_interval_cv": "coefficient of variation (std/mean) of inter-beat intervals; 0 is a steady pulse",
    "tempo_local_std_bpm": "standard deviation of librosa's local (per-frame, 8 s window) tempo, BPM",
    "pulse_clarity": (
        "normalised autocorrelation of the onset envelope at the beat period, -1..1: near 1 for a clear "
        "steady pulse, near 0 when the tracker found beats in material without one"
    ),
    "voiced_fraction": "fraction of frames pYIN marks voiced (a clear single pitch)",
    "pitch_median_hz": "median f0 of the voiced frames, Hz",
    "pitch_std_cents": "standard deviation of f0 around its median over voiced frames, cents (20-cent bins)",
    "pitch_jitter_cents": (
        "median absolute frame-to-frame f0 change over voiced frames, cents (16 ms hop, 20-cent bins)"
    ),
    "harmonic_percussive_ratio_db": (
        "energy of librosa's HPSS harmonic part over its percussive part, dB, bounded to [-100, 100] "
        "(a click track has no harmonic energy at all)"
    ),
    "harmonic_fraction": "harmonic energy / (harmonic + percussive energy), 0..1",
    "spectral_centroid_hz": "mean spectral centroid over non-silent frames, Hz",
    "spectral_bandwidth_hz": "mean spectral bandwidth over non-silent frames, Hz",
    "spectral_rolloff_hz": "mean 85% spectral roll-off over non-silent frames, Hz",
    "spectral_flatness": "mean spectral flatness over non-silent frames, 0 (tonal) .. 1 (white noise)",
    "zero_crossing_rate": "mean zero-crossing rate over non-silent frames, crossings per sample",
    "snr_db": "SNR against the reference: 10 log10(|ref|^2 / |audio - ref|^2), dB (no alignment)",
    "si_snr_db": "scale-invariant SNR against the reference (mean removed, optimal gain), dB",
    "log_mel_distance_db": (
        "mean absolute difference of the 64-band log-mel spectrograms, dB, both floored 80 dB below the "
        "reference's loudest bin so that near-silent bands do not dominate"
    ),
    "chroma_similarity": "cosine similarity of the time-averaged chroma vectors (key/harmony profile), -1..1",
    "chroma_similarity_framewise": "mean framewise chroma cosine similarity over frames where both sound",
}

REFERENCE_KEYS = (
    "snr_db",
    "si_snr_db",
    "log_mel_distance_db",
    "chroma_similarity",
    "chroma_similarity_framewise",
)
