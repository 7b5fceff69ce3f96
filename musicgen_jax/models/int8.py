"""Weight-only int8 inference: the decoder's projections and LM heads as int8 with one float32 scale
per output feature (symmetric absmax: ``w ≈ q * scale``, ``q`` in [-127, 127]).

A pure function of an unrolled parameter tree (:mod:`musicgen_jax.models.layer_layout`): each
projection kernel ``[out, in]`` becomes an int8 ``kernel`` and a ``scale`` ``[out]`` beside it, the
heads ``[codebooks, vocab, hidden]`` an int8 ``lm_heads`` and ``lm_heads_scale`` ``[codebooks,
vocab]``. The model (``int8=True``) converts a kernel to the compute dtype inside the product and
scales the product's output, so activations, the cache, norms, embeddings and the text encoder stay
in the compute dtype. The decoder's weights then take a quarter of their float32 bytes (about half
of bfloat16's); ``benchmarks/bf16_agreement.py`` measures what it changes in the tokens.

Why not ``qwix``: its quantisation works by intercepting ``flax.nnx``/linen ``Dense`` calls and
failed on this project's linen modules (see models/lora.py); the int8 model here is a few lines of
the projection itself, and XLA does the conversion.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.models.decoder_layer import PROJECTION_KERNELS
from musicgen_jax.models.layer_layout import is_unrolled, layer_name
from musicgen_jax.models.tree_paths import get_path, has_path, set_path

INT8 = "int8"
QUANTIZE_CHOICES = (INT8,)
QMAX = 127


def check_quantize(quantize: str | None) -> str | None:
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)} or None, got {quantize!r}")
    return quantize


def quantize_rows(weight, axis: int = -1) -> tuple:
    """``(int8 codes, float32 scales)`` of ``weight`` with one scale per slice along ``axis`` removed
    (the input features): ``weight ≈ codes * scales[..., None]``. An all-zero row gets scale 1."""
    xp = jnp if isinstance(weight, jax.Array) else np
    weight = weight.astype(xp.float32)
    absmax = xp.max(xp.abs(weight), axis=axis)
    scale = xp.where(absmax > 0, absmax / QMAX, 1.0).astype(xp.float32)
    codes = xp.clip(xp.round(weight / xp.expand_dims(scale, axis)), -QMAX, QMAX).astype(xp.int8)
    return codes, scale


def quantize_int8(params: dict) -> dict:
    """An unrolled model parameter tree with the decoder's projections and heads in int8 (the
    other leaves are the same arrays)."""
    if not is_unrolled(params):
        raise ValueError("int8 quantisation takes the unrolled layer layout (layer_layout.to_unrolled)")
    decoder = dict(params["decoder"])
    index = 0
    while layer_name(index) in decoder:
        layer = decoder[layer_name(index)]
        for path, _ in PROJECTION_KERNELS.values():
            if not has_path(layer, path):  # a melody layer has no cross-attention
                continue
            codes, scale = quantize_rows(get_path(layer, path), axis=1)
            layer = set_path(set_path(layer, path, codes), (*path[:-1], "scale"), scale)
        decoder[layer_name(index)] = layer
        index += 1
    decoder["lm_heads"], decoder["lm_heads_scale"] = quantize_rows(decoder["lm_heads"], axis=-1)
    return {**params, "decoder": decoder}
