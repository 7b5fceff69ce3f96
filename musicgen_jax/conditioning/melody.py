"""A reference melody as MusicGen-melody reads it: chroma frames ``[frames, num_chroma]``.

The model takes one-hot chroma (the strongest pitch class of each frame), repeated whole as often as
needed and cut to its ``chroma_length`` frames; a row without a melody, and the null condition of
classifier-free guidance, take the null chroma: bin 0 in every frame, as transformers builds it.
This module prepares those arrays on the host (NumPy); the model projects them.

:func:`chroma_from_audio` computes them from a waveform as transformers'
``MusicgenMelodyFeatureExtractor`` does (its defaults: 32 kHz, ``n_fft`` 16384, hop 4096, 30 s):
mono (the channels' mean), cut to 30 s, zero-padded on both sides to ``n_fft`` when shorter; a
power spectrogram (centred frames, reflect padding, periodic Hann window, divided by the window's
energy: torchaudio's ``normalized=True``); a librosa-style chroma filter bank
(:func:`chroma_filter_bank`, tuning 0); each frame divided by its largest bin (at least 1e-6);
then one-hot at the largest bin (the first of ties). Audio at another rate is resampled with soxr
first, where transformers uses torchaudio's resampler: there results may differ slightly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from musicgen_jax.audio.io import resample
from musicgen_jax.audio.layout import require_finite

# transformers' MusicgenMelodyFeatureExtractor defaults (Meta's melody checkpoints use them).
CHROMA_SAMPLE_RATE = 32000
CHROMA_N_FFT = 16384
CHROMA_HOP = 4096
CHROMA_MAX_SECONDS = 30.0
# Below this RMS (about -80 dBFS) a melody is silence: its chroma would be the null chroma (bin 0
# everywhere), which is no melody at all, so it is refused rather than quietly ignored.
MIN_MELODY_RMS = 1e-4


class MelodyError(ValueError):
    """A melody the model cannot take. ``field`` names the input at fault."""

    def __init__(self, message: str, field: str = "melody"):
        super().__init__(message)
        self.field = field


def melody_excerpt(audio, sample_rate: int, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """``audio[..., start:end]`` (seconds; ``end`` None or -1: the end of the audio), refused with a
    ``MelodyError`` naming ``melody_start`` or ``melody_end`` when the range is empty or outside it."""
    array = np.asarray(audio, np.float32)
    length = array.shape[-1] / sample_rate
    stop = length if end is None or end == -1 else float(end)
    if start < 0:
        raise MelodyError(f"melody_start must be >= 0 seconds, got {start:g}", "melody_start")
    if start >= length:
        raise MelodyError(
            f"melody_start ({start:g} s) is past the end of the melody ({length:.2f} s)", "melody_start"
        )
    if stop <= start:
        raise MelodyError(f"melody_end ({stop:g} s) must be after melody_start ({start:g} s)", "melody_end")
    return array[..., round(start * sample_rate) : round(min(stop, length) * sample_rate)]


def require_audible(audio, sample_rate: int, max_seconds: float = CHROMA_MAX_SECONDS) -> None:
    """A ``MelodyError`` when the part of ``audio`` the chroma reads (the first ``max_seconds``)
    is silent: RMS below :data:`MIN_MELODY_RMS`."""
    array = np.asarray(audio, np.float32)
    mono = array.mean(axis=0) if array.ndim == 2 else array
    heard = mono[: int(max_seconds * sample_rate)].astype(np.float64)
    rms = float(np.sqrt(np.mean(heard**2))) if heard.size else 0.0
    if rms < MIN_MELODY_RMS:
        raise MelodyError(
            f"the melody is silent (RMS {rms:.1e} in its first {max_seconds:g} s, below {MIN_MELODY_RMS:g}); "
            "give audio with a tune in it"
        )


def melody_window(audio, sample_rate: int, start: float, seconds: float) -> np.ndarray:
    """``seconds`` of ``audio`` from ``start`` (seconds), the audio repeated periodically where it
    runs out: the melody a long-form window starting at ``start`` follows, as audiocraft's
    long-form generation cuts it (``ref_wav[..., positions % wav_length]``)."""
    array = np.asarray(audio, np.float32)
    first = int(round(start * sample_rate))
    positions = (first + np.arange(int(round(seconds * sample_rate)))) % array.shape[-1]
    return array[..., positions]


def window_chromas(
    audio, sample_rate: int, starts: Sequence[float], seconds: float, num_chroma: int = 12
) -> tuple[np.ndarray, ...]:
    """One chroma per long-form window (:func:`melody_window` from each start, ``seconds`` long).

    The melody as a whole must be audible (:func:`require_audible`); a window whose own excerpt
    is silent gets the null chroma, which is what the chroma of digital silence is (every bin 0,
    so the one-hot step picks bin 0)."""
    require_audible(audio, sample_rate)
    chromas = []
    for start in starts:
        excerpt = melody_window(audio, sample_rate, start, seconds)
        try:
            chromas.append(chroma_from_audio(excerpt, sample_rate, num_chroma=num_chroma))
        except MelodyError:  # this window's stretch is silent
            chromas.append(null_chroma(num_chroma))
    return tuple(chromas)


def null_chroma(num_chroma: int, frames: int = 1) -> np.ndarray:
    """``[frames, num_chroma]`` float32: bin 0 one-hot in every frame (no melody)."""
    chroma = np.zeros((frames, num_chroma), np.float32)
    chroma[:, 0] = 1.0
    return chroma


def fit_chroma(chroma: np.ndarray, length: int) -> np.ndarray:
    """``chroma [frames, bins]`` repeated whole ``ceil(length / frames)`` times and cut to ``length``
    frames, as transformers fits ``input_features`` to ``chroma_length``."""
    frames = chroma.shape[0]
    return np.tile(chroma, (-(-length // frames), 1))[:length]


def check_chroma(chroma, num_chroma: int) -> np.ndarray:
    """``chroma`` as float32 ``[frames, num_chroma]`` (at least one frame), or a ``MelodyError``."""
    array = np.asarray(chroma, np.float32)
    if array.ndim != 2 or array.shape[1] != num_chroma or array.shape[0] < 1:
        raise MelodyError(
            f"a melody's chroma must be [frames, {num_chroma}] with at least one frame, got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise MelodyError("a melody's chroma holds values that are not finite")
    return array


def chroma_batch(chromas: Sequence[np.ndarray | None], num_chroma: int, length: int) -> np.ndarray:
    """``[batch, length, num_chroma]`` float32 for the model: each row's chroma fitted to
    ``length`` frames (:func:`fit_chroma`), the null chroma where a row has none.

    Fitting each row on its own equals transformers' fitting of a batch whose rows are equally long
    (its feature extractor pads a batch to one length); rows of different lengths each repeat
    their own frames.
    """
    rows = [
        fit_chroma(null_chroma(num_chroma) if c is None else check_chroma(c, num_chroma), length)
        for c in chromas
    ]
    return np.stack(rows).astype(np.float32)


def chroma_filter_bank(num_frequency_bins: int, num_chroma: int, sample_rate: int) -> np.ndarray:
    """``[num_chroma, num_frequency_bins // 2 + 1]`` float64: librosa's chroma filters (tuning 0,
    each column L2-normalised, a Gaussian weighting centred 5 octaves above C0 with half-width 2
    octaves, rows starting at C)."""
    frequencies = np.linspace(0, sample_rate, num_frequency_bins, endpoint=False)[1:]
    # Fractional chroma bins above C0 (A440 / 16 sits at bin 0 of its octave before the roll).
    bins = num_chroma * np.log2(frequencies / (440.0 / 16))
    bins = np.concatenate(([bins[0] - 1.5 * num_chroma], bins))  # 0 Hz: 1.5 octaves below bin 1
    widths = np.concatenate((np.maximum(bins[1:] - bins[:-1], 1.0), [1.0]))
    offsets = bins[None, :] - np.arange(num_chroma, dtype=np.float64)[:, None]
    half = np.round(num_chroma / 2)
    offsets = np.remainder(offsets + half + 10 * num_chroma, num_chroma) - half  # in [-half, half)
    filters = np.exp(-0.5 * (2 * offsets / widths[None, :]) ** 2)
    filters = filters / np.sqrt(np.sum(filters**2, axis=0, keepdims=True))
    filters = filters * np.exp(-0.5 * ((bins / num_chroma - 5.0) / 2.0) ** 2)[None, :]
    filters = np.roll(filters, -3 * (num_chroma // 12), axis=0)
    return np.ascontiguousarray(filters[:, : num_frequency_bins // 2 + 1])


def power_spectrogram(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``[n_fft // 2 + 1, frames]`` float64 of ``audio [samples]`` (``samples > n_fft // 2``):
    centred frames with reflect padding, a periodic Hann window, |STFT|^2 over the window's energy."""
    padded = np.pad(np.asarray(audio, np.float64), n_fft // 2, mode="reflect")
    frames = 1 + (padded.shape[0] - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(padded[index] * window[None, :], axis=-1)  # [frames, bins]
    return (np.abs(spectrum) ** 2 / np.sum(window**2)).T


def chroma_from_audio(
    audio,
    sample_rate: int,
    *,
    num_chroma: int = 12,
    one_hot: bool = True,
    model_sample_rate: int = CHROMA_SAMPLE_RATE,
    n_fft: int = CHROMA_N_FFT,
    hop: int = CHROMA_HOP,
    max_seconds: float = CHROMA_MAX_SECONDS,
) -> np.ndarray:
    """``[frames, num_chroma]`` float32 chroma of a melody (``[samples]`` or ``[channels,
    samples]``), as transformers' feature extractor computes it (see the module docstring);
    ``one_hot=False`` gives the normalised chroma before the one-hot step. 30 s give 235 frames.
    Silent audio (:func:`require_audible`) is refused: its chroma would be no melody."""
    array = np.asarray(audio, np.float32)
    if array.ndim not in (1, 2) or array.shape[-1] == 0:
        raise MelodyError(f"a melody must be [samples] or [channels, samples] audio, got shape {array.shape}")
    try:
        require_finite(array, "the melody")
    except ValueError as error:
        raise MelodyError(str(error)) from None
    require_audible(array, int(sample_rate), max_seconds)
    mono = array.mean(axis=0) if array.ndim == 2 else array
    mono = resample(mono, int(sample_rate), model_sample_rate)[: int(max_seconds * model_sample_rate)]
    if mono.shape[0] < n_fft:
        pad = n_fft - mono.shape[0]
        mono = np.pad(mono, (pad // 2, pad - pad // 2))
    spectrogram = power_spectrogram(mono, n_fft, hop)
    chroma = chroma_filter_bank(n_fft, num_chroma, model_sample_rate) @ spectrogram  # [chroma, frames]
    chroma = (chroma / np.maximum(np.abs(chroma).max(axis=0, keepdims=True), 1e-6)).T  # [frames, chroma]
    if not one_hot:
        return chroma.astype(np.float32)
    peaks = np.zeros(chroma.shape, np.float32)
    peaks[np.arange(chroma.shape[0]), chroma.argmax(axis=-1)] = 1.0
    return peaks
