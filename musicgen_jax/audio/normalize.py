"""Loudness and level normalisation of generated audio before it is written.

Strategies (names as audiocraft's ``audio_write`` spells them):

* ``loudness`` (default): integrated loudness (ITU-R BS.1770, via pyloudnorm) to ``target_lufs``
  (-14 LUFS, audiocraft's and the streaming services' level), then scaled down if needed so the
  peak stays under ``peak_db``: never clips, so very peaky audio may end below the target.
* ``peak``: the peak to ``peak_db`` (-1 dBFS).
* ``rms``: the RMS of the mono mix to ``rms_db`` (-18 dBFS, audiocraft's headroom), with the same
  peak ceiling instead of audiocraft's clipping.
* ``clip``: unchanged but clamped to ``[-ceiling, ceiling]`` (audiocraft's ``clip``).
* ``none``: unchanged.

Audio is float ``[channels, samples]`` (or ``[samples]``); the output has the input's shape, float32.
Silence is returned unchanged by every strategy (there is no gain that makes it loud).
"""

from __future__ import annotations

import numpy as np

from musicgen_jax.audio.formats import DEFAULT_NORMALIZATION, NORMALIZATIONS
from musicgen_jax.audio.layout import require_finite

DEFAULT_TARGET_LUFS = -14.0
DEFAULT_PEAK_DB = -1.0
DEFAULT_RMS_DB = -18.0
# BS.1770 gates blocks below -70 LUFS; a signal quieter than that has no defined loudness.
_ABSOLUTE_GATE_LUFS = -70.0
_SILENCE = 1e-9


def check_strategy(strategy: str) -> str:
    if strategy not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {strategy!r}; choose one of {', '.join(NORMALIZATIONS)}")
    return strategy


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def peak_dbfs(audio: np.ndarray) -> float:
    """The sample peak in dBFS (``-inf`` for silence)."""
    peak = float(np.max(np.abs(audio))) if np.size(audio) else 0.0
    return 20.0 * np.log10(peak) if peak > 0 else float("-inf")


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """BS.1770 integrated loudness in LUFS of ``[channels, samples]`` or ``[samples]`` audio.

    ``-inf`` for silence; ``nan`` for audio shorter than one 400 ms gating block, which BS.1770
    does not define.
    """
    import pyloudnorm

    audio = np.asarray(audio, dtype=np.float64)
    if audio.shape[-1] < round(0.4 * sample_rate):
        return float("nan")
    meter = pyloudnorm.Meter(sample_rate)  # K-weighting, 400 ms blocks, 75% overlap, gated
    data = audio.T if audio.ndim == 2 else audio  # pyloudnorm takes [samples, channels]
    with np.errstate(divide="ignore"):  # log10(0) for silent blocks is pyloudnorm's -inf, not an error
        return float(meter.integrated_loudness(data))


def normalize_audio(
    audio: np.ndarray,
    sample_rate: int,
    strategy: str = DEFAULT_NORMALIZATION,
    *,
    target_lufs: float = DEFAULT_TARGET_LUFS,
    peak_db: float = DEFAULT_PEAK_DB,
    rms_db: float = DEFAULT_RMS_DB,
) -> np.ndarray:
    """``audio`` normalised by ``strategy`` (see the module docstring); ``peak_db`` is the ceiling.

    Clips shorter than 400 ms have no BS.1770 loudness: ``loudness`` falls back to ``rms`` at
    ``target_lufs`` dBFS for them.
    """
    check_strategy(strategy)
    audio = np.asarray(audio, dtype=np.float32)
    require_finite(audio)
    ceiling = db_to_gain(peak_db)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if strategy == "none":
        return audio
    if strategy == "clip":
        return np.clip(audio, -ceiling, ceiling)
    if peak <= _SILENCE:
        return audio
    if strategy == "peak":
        return _scaled(audio, ceiling / peak)
    if strategy == "loudness":
        loudness = integrated_loudness(audio, sample_rate)
        if not np.isnan(loudness):
            if not loudness > _ABSOLUTE_GATE_LUFS:  # silence, or every block under the absolute gate
                return audio
            return _scaled(audio, min(db_to_gain(target_lufs - loudness), ceiling / peak))
        rms_db = target_lufs  # too short for BS.1770: the RMS at the same level instead
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
    if rms <= _SILENCE:
        return audio
    return _scaled(audio, min(db_to_gain(rms_db) / rms, ceiling / peak))


def _scaled(audio: np.ndarray, gain: float) -> np.ndarray:
    return (audio * np.float32(gain)).astype(np.float32, copy=False)
