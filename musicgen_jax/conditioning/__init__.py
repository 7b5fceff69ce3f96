"""What the model is conditioned on: text descriptions and structured musical attributes."""

from musicgen_jax.conditioning.attributes import (
    ATTRIBUTE_FIELDS,
    ATTRIBUTE_KEYS,
    Attributes,
    EncodedAttributes,
    InvalidAttributeError,
    encode_attributes,
    keep_attributes,
    null_attributes,
    render_description,
)
from musicgen_jax.conditioning.text import PromptError, TextBatch, TextTokenizer

__all__ = [
    "ATTRIBUTE_FIELDS",
    "ATTRIBUTE_KEYS",
    "Attributes",
    "EncodedAttributes",
    "InvalidAttributeError",
    "PromptError",
    "TextBatch",
    "TextTokenizer",
    "encode_attributes",
    "keep_attributes",
    "null_attributes",
    "render_description",
]
