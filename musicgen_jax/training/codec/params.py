"""The codec's trainable parameters: the Flax SEANet encoder and decoder, weight-normalised.

EnCodec trains every convolution under weight norm (a direction ``v`` and a per-output-channel
length ``g``); the inference codec (:mod:`musicgen_jax.codec.flax_seanet`) holds the folded
``kernel = g * v / |v|``. Here each convolution ``kernel`` leaf becomes ``kernel_g [out]`` and
``kernel_v [width, in, out]`` for training (configs with ``norm_type: weight_norm``; the
``time_group_norm`` ones train plain kernels, as torch does), and :func:`fold` gives the inference
tree back. The LSTM's matrices are not convolutions and have no weight norm, in torch either.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.flax_seanet import Decoder, Encoder

KERNEL, KERNEL_G, KERNEL_V = "kernel", "kernel_g", "kernel_v"


def _kernel_norm(kernel: jax.Array) -> jax.Array:
    """``|v|`` per output channel: over width and input channels (torch's ``dim=0`` is the output)."""
    return jnp.sqrt(jnp.sum(jnp.square(kernel), axis=(0, 1)))


def unfold(params: dict) -> dict:
    """Inference tree -> weight-normalised training tree (``g = |kernel|``, ``v = kernel``)."""
    flat = {}
    for path, leaf in traverse_util.flatten_dict(params).items():
        if path[-1] == KERNEL:
            flat[path[:-1] + (KERNEL_G,)] = _kernel_norm(leaf)
            flat[path[:-1] + (KERNEL_V,)] = leaf
        else:
            flat[path] = leaf
    return traverse_util.unflatten_dict(flat)


def fold(params: dict) -> dict:
    """Weight-normalised training tree -> inference tree (``kernel = g * v / |v|``); plain kernels pass."""
    flat = traverse_util.flatten_dict(params)
    out = {}
    for path, leaf in flat.items():
        if path[-1] == KERNEL_V:
            g = flat[path[:-1] + (KERNEL_G,)]
            out[path[:-1] + (KERNEL,)] = leaf * (g / _kernel_norm(leaf))
        elif path[-1] != KERNEL_G:
            out[path] = leaf
    return traverse_util.unflatten_dict(out)


def init_generator(config: CodecConfig, rng: jax.Array) -> dict:
    """Random ``{"encoder", "decoder"}`` parameters in the training form."""
    encoder_key, decoder_key = jax.random.split(rng)
    audio = jnp.zeros((1, config.hop_length, config.audio_channels))
    embeddings = jnp.zeros((1, 1, config.hidden_size))
    params = {
        "encoder": Encoder(config).init(encoder_key, audio)["params"],
        "decoder": Decoder(config).init(decoder_key, embeddings)["params"],
    }
    return to_training(config, params)


def to_training(config: CodecConfig, params: dict) -> dict:
    """``{"encoder", "decoder"}`` inference parameters in the training form of ``config``."""
    return unfold(params) if config.norm_type == "weight_norm" else params
