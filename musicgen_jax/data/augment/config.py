"""What ``Augmenter`` may do: one frozen config per transform, each with its probability (0 by
default, so ``AugmentConfig()`` is the identity) and the ranges its parameters are drawn from."""

from __future__ import annotations

import dataclasses
from typing import Literal

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
