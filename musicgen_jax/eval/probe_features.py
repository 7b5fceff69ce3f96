"""A fixed, weight-free audio feature for the attribute probes: enough to tell the synthetic set's
instruments, genres and moods apart, and deterministic (librosa DSP only, no randomness).

Per analysis window (16 kHz mono, :data:`WINDOW_SECONDS` long), :data:`FEATURE_DIMENSION` numbers:

- **level** (3): RMS in dB, the spread of frame levels and their slope over the window (a crescendo);
  everything below is computed on the window scaled to a fixed RMS, so timbre does not move with
  loudness (which the moods set);
- **spectrum** (120): per log-mel band (40) the mean and spread of the log energy, and the mean
  absolute frame-to-frame change (onsets and decays in that band: a plucked note against a pad);
- **contrast and flatness** (16): spectral contrast's mean and spread per octave band (peaks over
  valleys: tones against noise) and the mean and spread of the log flatness;
- **harmony** (17): the best major and minor key-profile correlations (Krumhansl-Kessler) and their
  difference, the fraction of frames whose best triad is major and the mean major-minor margin, and
  the chroma rotated to its best key's tonic: all key-invariant, so they speak of the mode;
- **modulation** (40): for 8 groups of 5 adjacent mel bands, the log power of the band envelope's
  fluctuation in 0.5-2, 2-4, 4-8, 8-16 and 16-31 Hz: how each register moves (held pads, chords on
  the beat or off it, eighth-note melodies, the 5-6 Hz vibrato of strings and lead);
- **rhythm** (12): log2 of librosa's tempo estimate, the onset envelope's mean and relative spread,
  and the autocorrelation of three onset envelopes (all bands, below 440 Hz, above 4.7 kHz) at half,
  one and two beats: the beat's clarity and where the kick and hi-hat fall.
"""

from __future__ import annotations

import itertools

import numpy as np

from musicgen_jax.audio.io import resample
from musicgen_jax.audio.layout import to_mono

SAMPLE_RATE = 16000
WINDOW_SECONDS = 4.0
HOP_SECONDS = 2.0
MIN_SECONDS = 1.0  # a shorter clip is zero-padded to this (the chroma frames are 256 ms)
N_MELS = 40
HOP = 256  # STFT hop for everything but the chroma
MODULATION_EDGES_HZ = (0.5, 2.0, 4.0, 8.0, 16.0, 31.0)
MODULATION_GROUPS = 8  # of N_MELS // MODULATION_GROUPS adjacent bands
FEATURE_DIMENSION = 3 + 3 * N_MELS + 16 + 17 + MODULATION_GROUPS * (len(MODULATION_EDGES_HZ) - 1) + 12
_EPS = 1e-9
_REFERENCE_RMS = 0.1

# Krumhansl-Kessler key profiles, tonic first.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _triads(third: int) -> np.ndarray:
    """``[12, 12]`` unit templates of the triads (root, ``third``, fifth) on every root."""
    template = np.zeros(12)
    template[[0, third, 7]] = 1.0 / np.sqrt(3.0)
    return np.stack([np.roll(template, root) for root in range(12)])


_MAJOR_TRIADS, _MINOR_TRIADS = _triads(4), _triads(3)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation, 0 for a constant input (silence) instead of NaN."""
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + _EPS))


def _autocorrelation(envelope: np.ndarray, lags: tuple[float, ...]) -> list[float]:
    """Normalised autocorrelation of ``envelope`` at fractional ``lags`` (best neighbouring integer)."""
    envelope = envelope - envelope.mean()
    energy = float(envelope @ envelope) + _EPS
    values = []
    for lag in lags:
        nearest = int(round(lag))
        candidates = [
            float(envelope[:-k] @ envelope[k:])
            for k in (nearest - 1, nearest, nearest + 1)
            if 0 < k < len(envelope)
        ]
        values.append(max(candidates) / energy if candidates else 0.0)
    return values


def _level(y: np.ndarray) -> list[float]:
    import librosa

    frame_db = 20.0 * np.log10(librosa.feature.rms(y=y, frame_length=1024, hop_length=HOP)[0] + 1e-6)
    slope = np.polyfit(np.linspace(0.0, 1.0, len(frame_db)), frame_db, 1)[0] if len(frame_db) > 1 else 0.0
    return [20.0 * np.log10(np.sqrt(np.mean(y**2)) + 1e-6), float(frame_db.std()), float(slope)]


def _harmony(y: np.ndarray) -> np.ndarray:
    import librosa

    # Long frames (256 ms) resolve semitones down to the bass register; A440 tuning is assumed (the
    # synthetic set's), not estimated, which silence could not do.
    chroma = librosa.feature.chroma_stft(y=y, sr=SAMPLE_RATE, n_fft=4096, hop_length=1024, tuning=0.0)
    chroma = chroma / (np.linalg.norm(chroma, axis=0, keepdims=True) + _EPS)
    major_fit, minor_fit = (_MAJOR_TRIADS @ chroma).max(axis=0), (_MINOR_TRIADS @ chroma).max(axis=0)
    mean = chroma.mean(axis=1)  # [12]
    major = [_correlation(np.roll(_MAJOR_PROFILE, k), mean) for k in range(12)]
    minor = [_correlation(np.roll(_MINOR_PROFILE, k), mean) for k in range(12)]
    tonic = int(np.argmax(np.maximum(major, minor)))
    keys = [max(major), max(minor), max(major) - max(minor)]
    triads = [float(np.mean(major_fit > minor_fit)), float(np.mean(major_fit - minor_fit))]
    return np.concatenate([keys, triads, np.roll(mean, -tonic) / (mean.sum() + _EPS)])


def _modulation(log_mel: np.ndarray) -> np.ndarray:
    groups = log_mel.reshape(MODULATION_GROUPS, -1, log_mel.shape[1]).mean(axis=1)  # [groups, frames]
    groups = (groups - groups.mean(axis=1, keepdims=True)) * np.hanning(groups.shape[1])
    power = np.abs(np.fft.rfft(groups, axis=1)) ** 2  # [groups, modulation frequencies]
    frequencies = np.fft.rfftfreq(groups.shape[1], HOP / SAMPLE_RATE)
    bands = [
        power[:, (frequencies >= low) & (frequencies < high)].sum(axis=1)
        for low, high in itertools.pairwise(MODULATION_EDGES_HZ)
    ]
    return np.log(np.stack(bands, axis=1) + 1e-6).ravel()  # [groups * bands]


def _rhythm(log_mel: np.ndarray) -> list[float]:
    import librosa

    onset = librosa.onset.onset_strength(S=log_mel * (10.0 / np.log(10.0)), sr=SAMPLE_RATE, hop_length=HOP)
    tempo = float(librosa.feature.tempo(onset_envelope=onset, sr=SAMPLE_RATE, hop_length=HOP)[0])
    tempo = tempo if np.isfinite(tempo) and tempo > 0 else 120.0  # no onsets: any fixed value
    beat = 60.0 / tempo * SAMPLE_RATE / HOP  # frames per beat
    rise = np.maximum(0.0, np.diff(log_mel, axis=1))  # [mels, frames - 1]
    values = [np.log2(tempo), float(onset.mean()), float(onset.std() / (onset.mean() + _EPS))]
    for envelope in (
        onset,
        rise[:6].sum(axis=0),
        rise[-8:].sum(axis=0),
    ):  # all, low (< 440 Hz), top (> 4.7 kHz)
        values += _autocorrelation(envelope, (beat / 2, beat, 2 * beat))
    return values


def window_features(y: np.ndarray) -> np.ndarray:
    """The ``[FEATURE_DIMENSION]`` features of one mono 16 kHz window (see the module docstring)."""
    import librosa

    y = np.asarray(y, dtype=np.float64)
    y = np.pad(y, (0, max(0, int(MIN_SECONDS * SAMPLE_RATE) - len(y))))
    level = _level(y)
    y = y * (_REFERENCE_RMS / (np.sqrt(np.mean(y**2)) + _EPS))
    power = np.abs(librosa.stft(y, n_fft=1024, hop_length=HOP)) ** 2  # [513, frames]
    mel = librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE, n_mels=N_MELS)
    log_mel = np.log(mel + 1e-6)  # [mels, frames]
    magnitude = np.sqrt(power)
    contrast = librosa.feature.spectral_contrast(S=magnitude, sr=SAMPLE_RATE)  # [7, frames]
    log_flatness = np.log(librosa.feature.spectral_flatness(S=magnitude)[0] + 1e-6)
    features = np.concatenate(
        [
            level,
            log_mel.mean(axis=1),
            log_mel.std(axis=1),
            np.abs(np.diff(log_mel, axis=1)).mean(axis=1),
            contrast.mean(axis=1),
            contrast.std(axis=1),
            [log_flatness.mean(), log_flatness.std()],
            _harmony(y),
            _modulation(log_mel),
            _rhythm(log_mel),
        ]
    )
    assert features.shape == (FEATURE_DIMENSION,), features.shape
    return features


class ProbeEmbedder:
    """:func:`window_features` over windows of :data:`WINDOW_SECONDS` every :data:`HOP_SECONDS`
    (a clip no longer than one window is one window): an ``AudioEmbedder`` for FAD, and the rows
    whose mean the attribute probes classify."""

    name = "probe"
    sample_rate = SAMPLE_RATE
    dimension = FEATURE_DIMENSION

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Raw features ``[windows, FEATURE_DIMENSION]`` of ``audio`` (``[channels, samples]``)."""
        y = resample(to_mono(audio), sample_rate, SAMPLE_RATE)
        if len(y) == 0:
            raise ValueError("cannot embed an empty clip")
        window, hop = int(WINDOW_SECONDS * SAMPLE_RATE), int(HOP_SECONDS * SAMPLE_RATE)
        starts = range(0, len(y) - window + 1, hop) if len(y) > window else [0]
        return np.stack([window_features(y[start : start + window]) for start in starts])
