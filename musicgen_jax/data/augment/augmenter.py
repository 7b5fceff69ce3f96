"""``Augmenter``: draws whether and how to apply each transform of an ``AugmentConfig`` from the
``np.random.Generator`` the caller passes in, so the same generator state gives the same output."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from musicgen_jax.data.augment.config import ORDER, AugmentConfig
from musicgen_jax.data.augment.transforms import (
    add_noise,
    distortion,
    frequency_mask,
    merge_captions,
    pitch_shift,
    polymix,
    restore_rank,
    reverb,
    time_mask,
    time_stretch,
    with_channels,
)


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
        audio, was_mono = with_channels(audio)
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
        return restore_rank(audio, was_mono), caption, tuple(applied)

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
