"""A frozen base in 4 or 8 bits for QLoRA: block-wise absmax quantisation of the decoder's projection
kernels, dequantised inside the train step before the adapters are merged.

Each of a layer's ten projection kernels (``models/lora.py``'s targets, adapted or not) is viewed as
``[layers, in_features, out_features]`` and cut along ``in_features`` into blocks of ``BLOCK`` rows;
every block of every output column keeps its absolute maximum (float32) and codes of the values
divided by it:

* ``nf4``: the 16 levels of QLoRA's NormalFloat (quantiles of a normal distribution, exact 0 and
  ±1), the nearest level's index, two codes a byte: a quarter of bfloat16's memory (plus one float
  per 64 weights for the scales);
* ``int8``: ``round(127 * x)``, half of bfloat16's.

Embeddings, heads, norms and the text encoder stay in ``lora.base_dtype``. A
:class:`QuantizedKernel` carries its kernel's shape and dtype as static fields, so it is a pytree
node that ``jax.jit``, shardings and ``jax.eval_shape`` see through.
"""

from __future__ import annotations

import math
from typing import Literal

import flax
import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.models import lora as lora_lib

Kind = Literal["int8", "nf4"]
BLOCK = 64

# QLoRA's NF4 levels (Dettmers et al. 2023, bitsandbytes), ascending.
NF4_LEVELS = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    np.float32,
)
_NF4_MIDPOINTS = (NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2


@flax.struct.dataclass
class QuantizedKernel:
    codes: jax.Array  # nf4: [layers, blocks, BLOCK / 2, out] uint8 (two codes a byte); int8: [.., BLOCK, out]
    scales: jax.Array  # [layers, blocks, 1, out] float32: each block's absolute maximum
    shape: tuple[int, ...] = flax.struct.field(pytree_node=False)  # the kernel's
    inputs: int = flax.struct.field(pytree_node=False)  # input axes after the layer axis
    kind: str = flax.struct.field(pytree_node=False)
    dtype: str = flax.struct.field(pytree_node=False)  # of the dequantised kernel


def quantize_kernel(kernel: jax.Array, inputs: int, kind: Kind, block: int = BLOCK) -> QuantizedKernel:
    layers, dims = kernel.shape[0], kernel.shape[1:]
    fan_in, fan_out = math.prod(dims[:inputs]), math.prod(dims[inputs:])
    weights = jnp.asarray(kernel, jnp.float32).reshape(layers, fan_in, fan_out)
    pad = (-fan_in) % block
    if pad:
        weights = jnp.pad(weights, ((0, 0), (0, pad), (0, 0)))
    weights = weights.reshape(layers, -1, block, fan_out)
    scales = jnp.max(jnp.abs(weights), axis=2, keepdims=True)  # [layers, blocks, 1, out]
    unit = weights / jnp.where(scales > 0, scales, 1.0)  # in [-1, 1]
    if kind == "int8":
        codes = jnp.round(unit * 127.0).astype(jnp.int8)
    elif kind == "nf4":
        index = jnp.searchsorted(jnp.asarray(_NF4_MIDPOINTS), unit).astype(jnp.uint8)
        codes = index[:, :, 0::2] | (index[:, :, 1::2] << 4)
    else:
        raise ValueError(f"unknown quantisation {kind!r}; choose int8 or nf4")
    return QuantizedKernel(codes, scales, tuple(kernel.shape), inputs, kind, jnp.dtype(kernel.dtype).name)


def dequantize_kernel(quantized: QuantizedKernel) -> jax.Array:
    codes, scales = quantized.codes, quantized.scales
    if quantized.kind == "int8":
        unit = codes.astype(jnp.float32) / 127.0
    else:
        low, high = codes & 15, codes >> 4
        index = jnp.stack([low, high], axis=3).reshape(codes.shape[0], codes.shape[1], -1, codes.shape[-1])
        unit = jnp.asarray(NF4_LEVELS)[index.astype(jnp.int32)]
    weights = unit * scales  # [layers, blocks, BLOCK, out]
    shape = quantized.shape
    fan_in = math.prod(shape[1 : 1 + quantized.inputs])
    weights = weights.reshape(shape[0], -1, weights.shape[-1])[:, :fan_in]
    return weights.reshape(shape).astype(quantized.dtype)


def quantize_base(params: dict, kind: Kind) -> dict:
    """``params`` with every decoder projection kernel quantised."""
    for target, (_, inputs) in lora_lib.TARGETS.items():
        path = lora_lib.kernel_path(target)
        params = lora_lib.set_path(
            params, path, quantize_kernel(lora_lib.get_path(params, path), inputs, kind)
        )
    return params


def quantized_like(tree: dict, params_shapes: dict, kind: Kind, leaf) -> dict:
    """``tree`` (e.g. shardings, in the unquantised layout) with each projection kernel replaced by
    a :class:`QuantizedKernel` whose codes and scales are ``leaf`` (a sharding for both)."""
    for target, (_, inputs) in lora_lib.TARGETS.items():
        path = lora_lib.kernel_path(target)
        shape = lora_lib.get_path(params_shapes, path)
        node = QuantizedKernel(leaf, leaf, tuple(shape.shape), inputs, kind, jnp.dtype(shape.dtype).name)
        tree = lora_lib.set_path(tree, path, node)
    return tree


def dequantize_base(params: dict) -> dict:
    """``params`` with every :class:`QuantizedKernel` back to a kernel (unchanged without any)."""
    return jax.tree.map(
        lambda leaf: dequantize_kernel(leaf) if isinstance(leaf, QuantizedKernel) else leaf,
        params,
        is_leaf=lambda leaf: isinstance(leaf, QuantizedKernel),
    )
