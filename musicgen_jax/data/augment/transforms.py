"""The transforms: plain functions of the audio and explicit parameters, each testable on its own.

Audio is float ``[channels, samples]`` or ``[samples]``; each output keeps the layout and is float32.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from musicgen_jax.audio.layout import as_channels_first


def with_channels(audio: np.ndarray) -> tuple[np.ndarray, bool]:
    """float32 ``[channels, samples]`` (the project's one layout check) and whether the input was 1-D,
    so that ``restore_rank`` can hand back the caller's layout."""
    return as_channels_first(audio), np.ndim(audio) == 1


def restore_rank(audio: np.ndarray, was_mono: bool) -> np.ndarray:
    """float32 audio in the caller's layout: ``[samples]`` again if the input was 1-D."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio[0] if was_mono else audio


def time_stretch(audio: np.ndarray, rate: float) -> np.ndarray:
    """librosa's phase-vocoder stretch: length becomes ``round(samples / rate)``, pitch kept."""
    import librosa

    audio, was_mono = with_channels(audio)
    return restore_rank(librosa.effects.time_stretch(audio, rate=rate), was_mono)


def pitch_shift(audio: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """librosa's pitch shift (stretch then resample): frequencies scale by ``2 ** (semitones / 12)``."""
    import librosa

    audio, was_mono = with_channels(audio)
    return restore_rank(librosa.effects.pitch_shift(audio, sr=sample_rate, n_steps=semitones), was_mono)


def time_mask(audio: np.ndarray, start: int, end: int, fade: int = 0) -> np.ndarray:
    """Zero samples ``[start, end)``; ``fade`` samples before and after ramp linearly to avoid clicks."""
    audio, was_mono = with_channels(audio)
    audio = audio.copy()
    samples = audio.shape[-1]
    start, end = max(0, start), min(samples, end)
    if end <= start:
        return restore_rank(audio, was_mono)
    audio[:, start:end] = 0.0
    if fade > 0:
        before = np.arange(max(0, start - fade), start)
        audio[:, before] *= (start - before) / (fade + 1.0)  # 1 far from the mask, towards 0 at its edge
        after = np.arange(end, min(samples, end + fade))
        audio[:, after] *= (after - end + 1.0) / (fade + 1.0)
    return restore_rank(audio, was_mono)


def frequency_mask(
    audio: np.ndarray, sample_rate: int, low_hz: float, high_hz: float, n_fft: int = 1024
) -> np.ndarray:
    """Zero the STFT bins whose centre lies in ``[low_hz, high_hz]`` and resynthesise (same length).

    SpecAugment masks spectrogram features; masking the STFT and inverting it applies the same idea
    to the waveform, so the codec tokenises audio that really lacks that band.
    """
    import librosa

    audio, was_mono = with_channels(audio)
    samples = audio.shape[-1]
    if samples < n_fft:
        n_fft = max(16, 1 << (samples.bit_length() - 1))
    spectrum = librosa.stft(audio, n_fft=n_fft, hop_length=n_fft // 4)  # [channels, bins, frames]
    frequencies = librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft)
    spectrum[:, (frequencies >= low_hz) & (frequencies <= high_hz), :] = 0.0
    return restore_rank(librosa.istft(spectrum, hop_length=n_fft // 4, n_fft=n_fft, length=samples), was_mono)


def _pink(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f power spectrum (white shaped by 1/sqrt(f) in the frequency domain)."""
    white = np.fft.rfft(rng.standard_normal(shape), axis=-1)
    scale = 1.0 / np.sqrt(np.maximum(np.arange(white.shape[-1]), 1.0))
    return np.fft.irfft(white * scale, n=shape[-1], axis=-1)


def add_noise(
    audio: np.ndarray, snr_db: float, rng: np.random.Generator, color: Literal["white", "pink"] = "white"
) -> np.ndarray:
    """Add independent noise per channel, scaled so that signal power / noise power = ``snr_db``.

    Both powers are the measured means over the whole clip, so the SNR is exact for this draw. A
    silent clip is returned unchanged (there is no level to set the noise against).
    """
    audio, was_mono = with_channels(audio)
    signal_power = float(np.mean(np.square(audio, dtype=np.float64)))
    if signal_power == 0.0:
        return restore_rank(audio, was_mono)
    noise = rng.standard_normal(audio.shape) if color == "white" else _pink(audio.shape, rng)
    noise *= math.sqrt(signal_power / (float(np.mean(noise**2)) * 10.0 ** (snr_db / 10.0)))
    return restore_rank(audio + noise, was_mono)


def synthetic_impulse_response(
    sample_rate: int, rt60_s: float, rng: np.random.Generator, channels: int = 1
) -> np.ndarray:
    """``[channels, rt60 samples]`` of Gaussian noise under an envelope falling 60 dB over ``rt60_s``,
    unit energy per channel; independent per channel, so stereo stays decorrelated like a real room."""
    length = max(1, int(rt60_s * sample_rate))
    envelope = np.exp(
        -math.log(1000.0) * np.arange(length) / (rt60_s * sample_rate)
    )  # 1000x amplitude = 60 dB
    response = rng.standard_normal((channels, length)) * envelope
    return response / np.linalg.norm(response, axis=-1, keepdims=True)


def reverb(
    audio: np.ndarray, sample_rate: int, rt60_s: float, wet: float, rng: np.random.Generator
) -> np.ndarray:
    """``(1 - wet) * dry + wet * (dry * impulse response)``, cut to the input length."""
    from scipy.signal import fftconvolve

    audio, was_mono = with_channels(audio)
    response = synthetic_impulse_response(sample_rate, rt60_s, rng, audio.shape[0])
    reverberant = fftconvolve(audio.astype(np.float64), response, mode="full", axes=-1)[:, : audio.shape[-1]]
    return restore_rank((1.0 - wet) * audio + wet * reverberant, was_mono)


def distortion(audio: np.ndarray, drive_db: float) -> np.ndarray:
    """tanh soft clipping: ``tanh(g x)`` with ``g = 10 ** (drive_db / 20)``, rescaled to the input peak.

    Keeping the peak (rather than the gain) keeps the level in range while the curve's compression
    adds odd harmonics, more with more drive.
    """
    audio, was_mono = with_channels(audio)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return restore_rank(audio, was_mono)
    gain = 10.0 ** (drive_db / 20.0)
    return restore_rank(np.tanh(gain * audio) * (peak / math.tanh(gain * peak)), was_mono)


def merge_captions(first: str, second: str, joiner: str = " and ") -> str:
    """``"first and second"``; either alone when the other is empty."""
    first, second = first.strip(), second.strip()
    return joiner.join(caption for caption in (first, second) if caption)


def polymix(audio: np.ndarray, other: np.ndarray, gain_db: float) -> np.ndarray:
    """``audio + other`` with ``other`` looped or cropped to length, matched in channels and set
    ``gain_db`` relative to the clip's RMS; scaled down only if the sum would clip."""
    audio, was_mono = with_channels(audio)
    other, _ = with_channels(other)
    samples = audio.shape[-1]
    if other.shape[-1] == 0:
        return restore_rank(audio, was_mono)
    other = np.tile(other, (1, -(-samples // other.shape[-1])))[:, :samples]
    if other.shape[0] != audio.shape[0]:
        other = np.broadcast_to(other.mean(axis=0, keepdims=True), audio.shape)
    audio_rms = math.sqrt(float(np.mean(np.square(audio, dtype=np.float64))))
    other_rms = math.sqrt(float(np.mean(np.square(other, dtype=np.float64))))
    if audio_rms > 0.0 and other_rms > 0.0:
        other = other * (audio_rms / other_rms * 10.0 ** (gain_db / 20.0))
    mixed = audio + other
    peak = float(np.max(np.abs(mixed)))
    return restore_rank(mixed / peak if peak > 1.0 else mixed, was_mono)
