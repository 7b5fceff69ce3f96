"""The audio choices the project offers, named once: file formats, level normalisations, suffixes.

Plain constants with no imports, so that argument parsers (``musicgen_jax.cli``), request schemas
(``musicgen_jax.serving.schemas``) and the audio code itself offer the same choices.
"""

from __future__ import annotations

FORMATS: tuple[str, ...] = ("wav", "flac", "mp3")  # what save_audio writes
MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}
# normalize_audio's strategies, spelled as audiocraft's ``audio_write`` spells them.
NORMALIZATIONS: tuple[str, ...] = ("loudness", "peak", "rms", "clip", "none")
DEFAULT_NORMALIZATION = "loudness"
# What load_audio reads (libsndfile), for scanning folders of audio files.
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".aiff", ".aif")
