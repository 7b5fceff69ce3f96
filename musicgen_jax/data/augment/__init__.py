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

from musicgen_jax.data.augment.augmenter import AppliedTransform, Augmenter
from musicgen_jax.data.augment.config import (
    ORDER,
    AugmentConfig,
    DistortionConfig,
    FrequencyMaskConfig,
    NoiseConfig,
    PitchShiftConfig,
    PolymixConfig,
    ReverbConfig,
    TimeMaskConfig,
    TimeStretchConfig,
)
from musicgen_jax.data.augment.transforms import (
    add_noise,
    distortion,
    frequency_mask,
    merge_captions,
    pitch_shift,
    polymix,
    reverb,
    synthetic_impulse_response,
    time_mask,
    time_stretch,
)

__all__ = [
    "ORDER",
    "AppliedTransform",
    "AugmentConfig",
    "Augmenter",
    "DistortionConfig",
    "FrequencyMaskConfig",
    "NoiseConfig",
    "PitchShiftConfig",
    "PolymixConfig",
    "ReverbConfig",
    "TimeMaskConfig",
    "TimeStretchConfig",
    "add_noise",
    "distortion",
    "frequency_mask",
    "merge_captions",
    "pitch_shift",
    "polymix",
    "reverb",
    "synthetic_impulse_response",
    "time_mask",
    "time_stretch",
]
