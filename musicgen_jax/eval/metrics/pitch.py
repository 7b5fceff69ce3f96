"""Pitch: pYIN's f0 track summarised as voicing, median pitch, spread and jitter in cents."""

from __future__ import annotations

import dataclasses

import numpy as np

from musicgen_jax.eval.metrics.analysis import analysis_mono, require_duration, require_sound

PITCH_RATE = 16000  # pYIN runs here: fast enough, and C7 (2093 Hz) is far below Nyquist
PITCH_MAX_SECONDS = 30.0  # longer clips are pitch-tracked over their first 30 s only
PITCH_RESOLUTION = 0.2  # semitones per pYIN pitch bin: 20 cents; 0.1 costs ten times as much


@dataclasses.dataclass(frozen=True)
class PitchStatistics:
    voiced_fraction: float
    median_hz: float | None
    std_cents: float | None
    jitter_cents: float | None


def pitch_statistics(
    audio: np.ndarray, sample_rate: int, fmin: float = 65.4, fmax: float = 2093.0
) -> PitchStatistics:
    """pYIN f0 track (C2..C7 by default) summarised as voicing and spread in cents.

    pYIN is a monophonic tracker: on a chord or a full mix it follows the strongest partial or marks
    the frame unvoiced, so these numbers describe lead lines and solo instruments best. Its f0 comes
    in 20-cent bins (``PITCH_RESOLUTION``): spreads well below that read as 0.
    """
    import librosa

    y = analysis_mono(audio, sample_rate, PITCH_RATE)[: int(PITCH_MAX_SECONDS * PITCH_RATE)]
    require_sound(y)
    frame_length = 1024
    require_duration(len(y), PITCH_RATE, frame_length / PITCH_RATE, "pitch tracking")
    f0, voiced, _ = librosa.pyin(
        y,
        fmin=fmin,
        fmax=fmax,
        sr=PITCH_RATE,
        frame_length=frame_length,
        hop_length=frame_length // 4,
        resolution=PITCH_RESOLUTION,
    )
    voiced = voiced & np.isfinite(f0)
    fraction = float(np.mean(voiced))
    if np.count_nonzero(voiced) < 2:
        return PitchStatistics(fraction, None, None, None)
    median = float(np.median(f0[voiced]))
    cents = 1200.0 * np.log2(f0 / median)  # NaN where unvoiced
    both_voiced = voiced[1:] & voiced[:-1]
    jitter = float(np.median(np.abs(np.diff(cents)[both_voiced]))) if np.any(both_voiced) else None
    return PitchStatistics(fraction, median, float(np.std(cents[voiced])), jitter)
