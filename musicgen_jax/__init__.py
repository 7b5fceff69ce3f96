"""musicgen-jax: MusicGen text-to-music in JAX/Flax.

The public API::

    from musicgen_jax import MusicGen
    model = MusicGen.from_pretrained("facebook/musicgen-small")
"""

from musicgen_jax.audio import load_audio, save_audio
from musicgen_jax.conditioning import Attributes, InvalidAttributeError
from musicgen_jax.conditioning.text import PromptError
from musicgen_jax.generation.params import GenerationParams, GenerationParamsError, GenerationRequest
from musicgen_jax.models.config import (
    AudioConfig,
    ConditioningConfig,
    DecoderConfig,
    MusicGenConfig,
    TextEncoderConfig,
)
from musicgen_jax.models.musicgen import MusicGenModel
from musicgen_jax.pipeline import GeneratedAudio, MusicGen

__version__ = "0.1.0"

__all__ = [
    "Attributes",
    "AudioConfig",
    "ConditioningConfig",
    "DecoderConfig",
    "GeneratedAudio",
    "GenerationParams",
    "GenerationParamsError",
    "GenerationRequest",
    "InvalidAttributeError",
    "MusicGen",
    "MusicGenConfig",
    "MusicGenModel",
    "PromptError",
    "TextEncoderConfig",
    "load_audio",
    "save_audio",
]
