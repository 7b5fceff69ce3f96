"""What the model is conditioned on: text descriptions and structured musical attributes."""

from musicgen_jax.conditioning.attributes import (
    Attributes,
    EncodedAttributes,
    InvalidAttributeError,
    encode_attributes,
    null_attributes,
    render_description,
)

__all__ = [
    "Attributes",
    "EncodedAttributes",
    "InvalidAttributeError",
    "encode_attributes",
    "null_attributes",
    "render_description",
]
