"""Audio files in and out (WAV, FLAC, MP3) and loudness normalisation."""

from musicgen_jax.audio.io import FORMATS, load_audio, resample, resolve_format, save_audio
from musicgen_jax.audio.normalize import NORMALIZATIONS, integrated_loudness, normalize_audio

__all__ = [
    "FORMATS",
    "NORMALIZATIONS",
    "integrated_loudness",
    "load_audio",
    "normalize_audio",
    "resample",
    "resolve_format",
    "save_audio",
]
