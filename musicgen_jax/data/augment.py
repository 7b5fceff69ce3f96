"""Waveform augmentation for training, before tokenisation: time stretch, pitch shift, time and
frequency masking, added noise, reverb, distortion and polymix (two clips mixed, captions merged).

Each transform is a plain function of the audio and explicit parameters (testable on its own);
``Augmenter`` draws whether and how to apply each one from an ``AugmentConfig`` and a
``np.random.Generator`` that the caller passes in, so the same seed gives the same output. A grain
``RandomMapTransform`` calls it as ``Augmenter(config).apply(audio, rate, caption, rng)``.

Every transform starts at probability 0: an ``AugmentConfig()`` is the identity, and a YAML file
turns on what it names; the tokeniser takes one (``python -m musicgen_jax.data.tokenize ...
--augment augment.yaml --augment-copies 2`` tokenises augmented copies beside each file)::

    augment:
      pitch_shift: {probability: 0.3, min_semitones: -2, max_semitones: 2}
      noise: {probability: 0.2, min_snr_db: 20, max_snr_db: 40}

Audio is float ``[channels, samples]`` or ``[samples]``; the output keeps the layout and is float32.
Only time stretch changes the length (by ``1 / rate``); crop or pad after it if batches need a fixed one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

ORDER = (
    "polymix",
    "time_stretch",
    "pitch_shift",
    "distortion",
    "reverb",
    "noise",
    "time_mask",
    "frequency_mask",
)  # mix first so every effect applies to the mix; room then sensor noise; masks (dropout) last


def _check_probability(probability: float) -> None:
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")


def _check_range(low: float, high: float, name: str) -> None:
    if low > high:
        raise ValueError(f"min_{name} ({low}) is above max_{name} ({high})")


@dataclasses.dataclass(frozen=True)
class TimeStretchConfig:
    """Phase-vocoder time stretch by ``rate`` (> 1 faster and shorter), log-uniform in the range."""

    probability: float = 0.0
    min_rate: float = 0.9
    max_rate: float = 1.1

    def __post_init__(self) -> None:
        _check_probability(self.probability)
        _check_range(self.min_rate, self.max_rate, "rate")
        if self.min_rate <= 0.0:
            raise ValueError(f"min_rate must be positive, got {self.min_rate}")


@dataclasses.dataclass(frozen=True)
class PitchShiftConfig:
    """Pitch shift by a uniform number of semitones, duration kept."""

    probability: float = 0.0
    min_semitones: float = -2.0
    max_semitones: float = 2.0

    def __post_init__(self) -> None:
        _check_probability(self.probability)
        _check_range(self.min_semitones, self.max_semitones, "semitones")


@dataclasses.dataclass(frozen=True)
class TimeMaskConfig:
    """``count`` silenced regions, each up to ``max_fraction`` of the clip, with ``fade_ms`` ramps outside."""

    probability: float = 0.0
    max_fraction: float = 0.1
    count: int = 1
    fade_ms: float = 5.0

    def __post_init__(self) -> None:
        _check_probability(self.probability)
        if not 0.0 <= self.max_fraction <= 1.0 or self.count < 0 or self.fade_ms < 0.0:
            raise ValueError("max_fraction must be in [0, 1], count and fade_ms non-negative")


@dataclasses.dataclass(frozen=True)
class FrequencyMaskConfig:
    """``count`` bands removed in the STFT, each up to ``max_fraction`` of the mel range, resynthesised."""

    probability: float = 0.0
    max_fraction: float = 0.15
    count: int = 1
    n_fft: int = 1024

    def __post_init__(self) -> None:
        _check_probability(self.probability)
        if not 0.0 <= self.max_fraction <= 1.0 or self.count < 0 or self.n_fft < 16:
            raise ValueError("max_fraction must be in [0, 1], count non-negative, n_fft at least 16")


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    """Added white or pink Gaussian noise at a uniform SNR (dB, against the clip's own power)."""

    probability: float = 0.0
    min_snr_db: float = 20.0
    max_snr_db: float = 40.0
    color: Literal["white", "pink"] = "white"

    def __post_init__(self) -> None:
        _check_probability(self.probability)
        _check_range(self.min_snr_db, self.max_snr_db, "snr_db")


@dataclasses.dataclass(frozen=True)
class ReverbConfig:
    """Convolution with a synthetic room: exponentially decaying noise reaching -60 dB at ``rt60``."""

    probability: float = 0.0
    min_rt60_s: float = 0.2
    max_rt60_s: float = 1.0
    min_wet: float = 0.1
    max_wet: float = 0.4

    def __post_init__(self) -> None:
        _check_probability(self.probability)
        _check_range(self.min_rt60_s, self.max_rt60_s, "rt60_s")
        _check_range(self.min_wet, self.max_wet, "wet")
        if self.min_rt60_s <= 0.0 or not 0.0 <= self.min_wet <= self.max_wet <= 1.0:
            raise ValueError("rt60 must be positive and wet within [0, 1]")


@dataclasses.dataclass(frozen=True)
class DistortionConfig:
    """tanh soft clipping after a uniform drive (dB), output rescaled to the input's peak."""

    probability: float = 0.0
    min_drive_db: float = 6.0
    max_drive_db: float = 20.0

    def __post_init__(self) -> None:
        _check_probability(self.probability)
        _check_range(self.min_drive_db, self.max_drive_db, "drive_db")


@dataclasses.dataclass(frozen=True)
class PolymixConfig:
    """Mix in another clip at a uniform gain (dB, relative to equal RMS) and join the captions."""

    probability: float = 0.0
    min_gain_db: float = -6.0
    max_gain_db: float = 0.0
    joiner: str = " and "

    def __post_init__(self) -> None:
        _check_probability(self.probability)
        _check_range(self.min_gain_db, self.max_gain_db, "gain_db")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """One sub-config per transform; applied in ``ORDER``. All probabilities default to 0 (identity)."""

    polymix: PolymixConfig = dataclasses.field(default_factory=PolymixConfig)
    time_stretch: TimeStretchConfig = dataclasses.field(default_factory=TimeStretchConfig)
    pitch_shift: PitchShiftConfig = dataclasses.field(default_factory=PitchShiftConfig)
    distortion: DistortionConfig = dataclasses.field(default_factory=DistortionConfig)
    reverb: ReverbConfig = dataclasses.field(default_factory=ReverbConfig)
    noise: NoiseConfig = dataclasses.field(default_factory=NoiseConfig)
    time_mask: TimeMaskConfig = dataclasses.field(default_factory=TimeMaskConfig)
    frequency_mask: FrequencyMaskConfig = dataclasses.field(default_factory=FrequencyMaskConfig)


# ----------------------------------------------------------------------------- the transforms


def _channels_first(audio: np.ndarray) -> tuple[np.ndarray, bool]:
    """float32 ``[channels, samples]`` and whether the input was 1-D."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return audio[None, :], True
    if audio.ndim != 2:
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {audio.shape}")
    return audio, False


def _restore(audio: np.ndarray, was_mono: bool) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    return audio[0] if was_mono else audio


def time_stretch(audio: np.ndarray, rate: float) -> np.ndarray:
    """librosa's phase-vocoder stretch: length becomes ``round(samples / rate)``, pitch kept."""
    import librosa

    audio, was_mono = _channels_first(audio)
    return _restore(librosa.effects.time_stretch(audio, rate=rate), was_mono)


def pitch_shift(audio: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """librosa's pitch shift (stretch then resample): frequencies scale by ``2 ** (semitones / 12)``."""
    import librosa

    audio, was_mono = _channels_first(audio)
    return _restore(librosa.effects.pitch_shift(audio, sr=sample_rate, n_steps=semitones), was_mono)


def time_mask(audio: np.ndarray, start: int, end: int, fade: int = 0) -> np.ndarray:
    """Zero samples ``[start, end)``; ``fade`` samples before and after ramp linearly to avoid clicks."""
    audio, was_mono = _channels_first(audio)
    audio = audio.copy()
    samples = audio.shape[-1]
    start, end = max(0, start), min(samples, end)
    if end <= start:
        return _restore(audio, was_mono)
    audio[:, start:end] = 0.0
    if fade > 0:
        before = np.arange(max(0, start - fade), start)
        audio[:, before] *= (start - before) / (fade + 1.0)  # 1 far from the mask, towards 0 at its edge
        after = np.arange(end, min(samples, end + fade))
        audio[:, after] *= (after - end + 1.0) / (fade + 1.0)
    return _restore(audio, was_mono)


def frequency_mask(
    audio: np.ndarray, sample_rate: int, low_hz: float, high_hz: float, n_fft: int = 1024
) -> np.ndarray:
    """Zero the STFT bins whose centre lies in ``[low_hz, high_hz]`` and resynthesise (same length).

    SpecAugment masks spectrogram features; masking the STFT and inverting it applies the same idea
    to the waveform, so the codec tokenises audio that really lacks that band.
    """
    import librosa

    audio, was_mono = _channels_first(audio)
    samples = audio.shape[-1]
    if samples < n_fft:
        n_fft = max(16, 1 << (samples.bit_length() - 1))
    spectrum = librosa.stft(audio, n_fft=n_fft, hop_length=n_fft // 4)  # [channels, bins, frames]
    frequencies = librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft)
    spectrum[:, (frequencies >= low_hz) & (frequencies <= high_hz), :] = 0.0
    return _restore(librosa.istft(spectrum, hop_length=n_fft // 4, n_fft=n_fft, length=samples), was_mono)


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
    audio, was_mono = _channels_first(audio)
    signal_power = float(np.mean(np.square(audio, dtype=np.float64)))
    if signal_power == 0.0:
        return _restore(audio, was_mono)
    noise = rng.standard_normal(audio.shape) if color == "white" else _pink(audio.shape, rng)
    noise *= math.sqrt(signal_power / (float(np.mean(noise**2)) * 10.0 ** (snr_db / 10.0)))
    return _restore(audio + noise, was_mono)


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

    audio, was_mono = _channels_first(audio)
    response = synthetic_impulse_response(sample_rate, rt60_s, rng, audio.shape[0])
    reverberant = fftconvolve(audio.astype(np.float64), response, mode="full", axes=-1)[:, : audio.shape[-1]]
    return _restore((1.0 - wet) * audio + wet * reverberant, was_mono)


def distortion(audio: np.ndarray, drive_db: float) -> np.ndarray:
    """tanh soft clipping: ``tanh(g x)`` with ``g = 10 ** (drive_db / 20)``, rescaled to the input peak.

    Keeping the peak (rather than the gain) keeps the level in range while the curve's compression
    adds odd harmonics, more with more drive.
    """
    audio, was_mono = _channels_first(audio)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return _restore(audio, was_mono)
    gain = 10.0 ** (drive_db / 20.0)
    return _restore(np.tanh(gain * audio) * (peak / math.tanh(gain * peak)), was_mono)


def merge_captions(first: str, second: str, joiner: str = " and ") -> str:
    """``"first and second"``; either alone when the other is empty."""
    first, second = first.strip(), second.strip()
    return joiner.join(caption for caption in (first, second) if caption)


def polymix(audio: np.ndarray, other: np.ndarray, gain_db: float) -> np.ndarray:
    """``audio + other`` with ``other`` looped or cropped to length, matched in channels and set
    ``gain_db`` relative to the clip's RMS; scaled down only if the sum would clip."""
    audio, was_mono = _channels_first(audio)
    other, _ = _channels_first(other)
    samples = audio.shape[-1]
    if other.shape[-1] == 0:
        return _restore(audio, was_mono)
    other = np.tile(other, (1, -(-samples // other.shape[-1])))[:, :samples]
    if other.shape[0] != audio.shape[0]:
        other = np.broadcast_to(other.mean(axis=0, keepdims=True), audio.shape)
    audio_rms = math.sqrt(float(np.mean(np.square(audio, dtype=np.float64))))
    other_rms = math.sqrt(float(np.mean(np.square(other, dtype=np.float64))))
    if audio_rms > 0.0 and other_rms > 0.0:
        other = other * (audio_rms / other_rms * 10.0 ** (gain_db / 20.0))
    mixed = audio + other
    peak = float(np.max(np.abs(mixed)))
    return _restore(mixed / peak if peak > 1.0 else mixed, was_mono)


# ----------------------------------------------------------------------------- the augmenter


@dataclasses.dataclass(frozen=True)
class AppliedTransform:
    """One transform that fired, with the parameters it drew (for logging and tests)."""

    name: str
    parameters: dict[str, Any]


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _mel_band(rng: np.random.Generator, sample_rate: int, max_fraction: float) -> tuple[float, float]:
    """A band drawn uniformly on the mel scale (so widths are perceptually even), in Hz."""
    import librosa

    top = float(librosa.hz_to_mel(sample_rate / 2.0))
    width = rng.uniform(0.0, max_fraction) * top
    low = rng.uniform(0.0, top - width)
    return float(librosa.mel_to_hz(low)), float(librosa.mel_to_hz(low + width))


class Augmenter:
    """Applies the transforms of an ``AugmentConfig``, each with its own probability, in ``ORDER``."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def apply(
        self,
        audio: np.ndarray,
        sample_rate: int,
        caption: str = "",
        rng: np.random.Generator | None = None,
        other: tuple[np.ndarray, str] | None = None,
    ) -> tuple[np.ndarray, str]:
        """The augmented ``(audio, caption)``. ``other`` is ``(audio, caption)`` of a second clip at the
        same sample rate, used by polymix (which is skipped without it)."""
        audio, caption, _ = self.apply_logged(audio, sample_rate, caption, rng, other)
        return audio, caption

    def apply_logged(
        self,
        audio: np.ndarray,
        sample_rate: int,
        caption: str = "",
        rng: np.random.Generator | None = None,
        other: tuple[np.ndarray, str] | None = None,
    ) -> tuple[np.ndarray, str, tuple[AppliedTransform, ...]]:
        """``apply`` plus the list of transforms that fired and their parameters."""
        if rng is None:
            raise ValueError("pass rng=np.random.Generator: augmentation must be reproducible under a seed")
        audio, was_mono = _channels_first(audio)
        # One child stream per transform, seeded from draws of ``rng`` (always all of them): switching
        # one transform on or off leaves the draws of the others as they were. Seeds are drawn rather
        # than ``rng.spawn``-ed because spawning depends on the SeedSequence's spawn count, not on the
        # generator's state, and grain resets the state of pooled generators per element.
        seeds = rng.integers(0, 2**63, size=len(ORDER))
        streams = {name: np.random.default_rng(int(seed)) for name, seed in zip(ORDER, seeds, strict=True)}
        applied: list[AppliedTransform] = []
        for name in ORDER:
            settings = getattr(self.config, name)
            stream = streams[name]
            if settings.probability == 0.0 or stream.random() >= settings.probability:
                continue
            if name == "polymix" and other is None:
                continue
            if audio.shape[-1] == 0:
                break
            audio, caption, parameters = self._one(name, settings, audio, sample_rate, caption, stream, other)
            applied.append(AppliedTransform(name, parameters))
        return _restore(audio, was_mono), caption, tuple(applied)

    @staticmethod
    def _one(name, settings, audio, sample_rate, caption, rng, other):
        if name == "polymix":
            gain = float(rng.uniform(settings.min_gain_db, settings.max_gain_db))
            other_audio, other_caption = other
            return (
                polymix(audio, other_audio, gain),
                merge_captions(caption, other_caption, settings.joiner),
                {"gain_db": gain},
            )
        if name == "time_stretch":
            rate = _log_uniform(rng, settings.min_rate, settings.max_rate)
            return time_stretch(audio, rate), caption, {"rate": rate}
        if name == "pitch_shift":
            semitones = float(rng.uniform(settings.min_semitones, settings.max_semitones))
            return pitch_shift(audio, sample_rate, semitones), caption, {"semitones": semitones}
        if name == "distortion":
            drive = float(rng.uniform(settings.min_drive_db, settings.max_drive_db))
            return distortion(audio, drive), caption, {"drive_db": drive}
        if name == "reverb":
            rt60 = float(rng.uniform(settings.min_rt60_s, settings.max_rt60_s))
            wet = float(rng.uniform(settings.min_wet, settings.max_wet))
            return reverb(audio, sample_rate, rt60, wet, rng), caption, {"rt60_s": rt60, "wet": wet}
        if name == "noise":
            snr = float(rng.uniform(settings.min_snr_db, settings.max_snr_db))
            return (
                add_noise(audio, snr, rng, settings.color),
                caption,
                {"snr_db": snr, "color": settings.color},
            )
        if name == "time_mask":
            samples = audio.shape[-1]
            fade = int(settings.fade_ms * sample_rate / 1000.0)
            regions = []
            for _ in range(settings.count):
                width = int(rng.uniform(0.0, settings.max_fraction) * samples)
                start = int(rng.integers(0, samples - width + 1))
                audio = time_mask(audio, start, start + width, fade)
                regions.append((start, start + width))
            return audio, caption, {"regions": regions}
        if name == "frequency_mask":
            bands = []
            for _ in range(settings.count):
                low, high = _mel_band(rng, sample_rate, settings.max_fraction)
                audio = frequency_mask(audio, sample_rate, low, high, settings.n_fft)
                bands.append((low, high))
            return audio, caption, {"bands_hz": bands}
        raise AssertionError(f"no transform called {name}")
