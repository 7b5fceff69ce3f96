"""Audio files in and out (WAV, FLAC, MP3), the channels-first layout, and loudness normalisation."""

from musicgen_jax.audio.formats import AUDIO_SUFFIXES, FORMATS, NORMALIZATIONS
from musicgen_jax.audio.io import load_audio, resample, resolve_format, save_audio
from musicgen_jax.audio.layout import as_channels_first, check_channels_first, to_mono
from musicgen_jax.audio.normalize import integrated_loudness, normalize_audio

__all__ = [
    "AUDIO_SUFFIXES",
    "FORMATS",
    "NORMALIZATIONS",
    "as_channels_first",
    "check_channels_first",
    "integrated_loudness",
    "load_audio",
    "normalize_audio",
    "resample",
    "resolve_format",
    "save_audio",
    "to_mono",
]
