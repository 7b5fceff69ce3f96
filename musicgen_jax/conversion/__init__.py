"""Checkpoints in and out: transformers, audiocraft, Hugging Face T5, and our own format."""

from musicgen_jax.conversion.audiocraft_format import is_audiocraft_checkpoint, load_audiocraft
from musicgen_jax.conversion.checkpoint import is_checkpoint, load_checkpoint, save_checkpoint
from musicgen_jax.conversion.t5_format import load_t5_encoder
from musicgen_jax.conversion.tensors import CheckpointError, TensorSource
from musicgen_jax.conversion.transformers_format import (
    convert_from_transformers,
    export_to_transformers,
    is_transformers_checkpoint,
    load_transformers_params,
)

__all__ = [
    "CheckpointError",
    "TensorSource",
    "convert_from_transformers",
    "export_to_transformers",
    "is_audiocraft_checkpoint",
    "is_checkpoint",
    "is_transformers_checkpoint",
    "load_audiocraft",
    "load_checkpoint",
    "load_t5_encoder",
    "load_transformers_params",
    "save_checkpoint",
]
