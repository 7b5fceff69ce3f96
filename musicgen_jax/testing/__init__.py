"""Test scaffolding: random tiny models of the tiny presets and a small word-level tokenizer,
built locally for tests, benchmarks and offline notebooks.

It sits beside the library, not in it: it may import the models, conversion and codec layers,
and nothing in ``musicgen_jax`` proper imports it. Real runs name their tokenizer and weights.
"""

from musicgen_jax.testing.models import (
    MELODY_VARIANTS,
    VARIANTS,
    save_tiny_checkpoint,
    save_tiny_transformers_musicgen,
    tiny_config,
)
from musicgen_jax.testing.tokenizer import build_tokenizer, save_tokenizer

__all__ = [
    "MELODY_VARIANTS",
    "VARIANTS",
    "build_tokenizer",
    "save_tiny_checkpoint",
    "save_tiny_transformers_musicgen",
    "save_tokenizer",
    "tiny_config",
]
