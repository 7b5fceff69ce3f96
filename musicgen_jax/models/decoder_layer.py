"""One MusicGen decoder layer: pre-norm causal self-attention, cross-attention to the conditioning
memory (not in a melody model, whose conditioning is a prefix of the sequence) and a feed-forward
block, with the bias-free head projections they share.

:class:`DecoderLayer` is the body :class:`~musicgen_jax.models.decoder.MusicGenDecoder` scans over
its stacked layers. One layer function serves three modes:

* ``full``: the whole sequence at once, causal (training, parity checks);
* ``project_memory``: only the cross-attention keys/values of the memory, for the cache;
* ``cached``: a chunk of new positions against the cache, writing its keys/values at ``index``.
"""

from __future__ import annotations

import math
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.models.activations import ACTIVATIONS
from musicgen_jax.models.attention import causal_mask, dot_product_attention
from musicgen_jax.models.config import DecoderConfig
from musicgen_jax.sharding import axes

Mode = Literal["full", "project_memory", "cached"]


def layer_norm(config: DecoderConfig, dtype, param_dtype, name: str) -> nn.LayerNorm:
    """The decoder's LayerNorm (the layers' three and the decoder's final one), torch's numerics."""
    return nn.LayerNorm(
        epsilon=config.layer_norm_epsilon,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=False,  # two-pass variance, as torch computes it
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axes.NORM,)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes.NORM,)),
        name=name,
    )


# Each projection's input and output dims, by letter: ``d`` hidden, ``h`` heads, ``k`` head dim,
# ``f`` feed-forward. Its kernel is ``[*in, *out]`` in the scanned (training) layout and
# ``[prod(out), prod(in)]`` in the unrolled one (see musicgen_jax.models.layer_layout).
PROJECTION_DIMS: dict[str, tuple[str, str]] = {
    "self_attention.query": ("d", "hk"),
    "self_attention.key": ("d", "hk"),
    "self_attention.value": ("d", "hk"),
    "self_attention.out": ("hk", "d"),
    "cross_attention.query": ("d", "hk"),
    "cross_attention.key": ("d", "hk"),
    "cross_attention.value": ("d", "hk"),
    "cross_attention.out": ("hk", "d"),
    "fc1": ("d", "f"),
    "fc2": ("f", "d"),
}


# name -> (path of its kernel in a layer's parameters, how many of the scanned kernel's leading axes
# are inputs).
PROJECTION_KERNELS: dict[str, tuple[tuple[str, ...], int]] = {
    name: ((*name.split("."), "kernel"), len(inputs)) for name, (inputs, _) in PROJECTION_DIMS.items()
}


def dim_sizes(config: DecoderConfig, letters: str) -> tuple[int, ...]:
    size = {"d": config.hidden_size, "h": config.num_heads, "k": config.head_dim, "f": config.ffn_dim}
    return tuple(size[c] for c in letters)


_LOGICAL = {"d": axes.EMBED, "h": axes.HEADS, "k": axes.KV, "f": axes.MLP}


class _Projection(nn.Module):
    """A bias-free projection from the last ``len(in_letters)`` dims of ``x`` to the output dims.

    Scanned layout: the kernel at its real shape ``[*in, *out]`` (``nn.DenseGeneral`` initialises
    a multi-axis kernel at a flat 2-D shape and reshapes it; under an active mesh and logical rules
    Flax re-runs that initializer inside ``apply`` and constrains the flat value with the 3-D
    logical spec, which fails). Unrolled (``out_in``): one 2-D ``[out, in]`` matrix, PyTorch's
    ``Linear`` weight, which XLA:CPU's dots read where it lies (a 3-D ``[h, k, d]`` kernel is
    transposed by a copy at every step). The parameter path (``<name>/kernel``) is Dense's.
    """

    config: DecoderConfig
    in_letters: str
    out_letters: str
    out_in: bool
    dtype: jnp.dtype
    param_dtype: jnp.dtype
    # Weight-only int8: an int8 kernel and a float32 ``scale`` per output feature (models/int8.py).
    int8: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        inputs = dim_sizes(self.config, self.in_letters)
        outputs = dim_sizes(self.config, self.out_letters)
        if self.out_in:
            shape = (math.prod(outputs), math.prod(inputs))
            logical = (_LOGICAL[self.out_letters[0]], _LOGICAL[self.in_letters[0]])
            scale_shape, scale_logical = shape[:1], logical[:1]
        else:
            shape = inputs + outputs
            logical = tuple(_LOGICAL[c] for c in self.in_letters + self.out_letters)
            scale_shape, scale_logical = outputs, logical[len(inputs) :]
        init = nn.initializers.zeros if self.int8 else nn.initializers.normal(0.02)
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(init, logical),
            shape,
            jnp.int8 if self.int8 else self.param_dtype,
        ).astype(self.dtype)
        x = x.astype(self.dtype)
        lead = x.shape[: x.ndim - len(inputs)]
        if self.out_in:
            y = jnp.einsum("...i,oi->...o", x.reshape(lead + shape[1:]), kernel)
        else:
            letters = self.in_letters + self.out_letters
            y = jnp.einsum(f"...{self.in_letters},{letters}->...{self.out_letters}", x, kernel)
        if self.int8:
            scale = self.param(
                "scale",
                nn.with_logical_partitioning(nn.initializers.ones, scale_logical),
                scale_shape,
                jnp.float32,
            )
            y = y * scale.astype(self.dtype)
        return y.reshape(lead + outputs)


def projection(
    config: DecoderConfig, name: str, out_in: bool, dtype, param_dtype, int8: bool = False
) -> _Projection:
    """The projection ``name`` of :data:`PROJECTION_DIMS` (its module named by the last part)."""
    inputs, outputs = PROJECTION_DIMS[name]
    return _Projection(config, inputs, outputs, out_in, dtype, param_dtype, int8, name=name.split(".")[-1])


class Projections(nn.Module):
    """The q/k/v/out projections of one attention block (no biases, as in MusicGen)."""

    config: DecoderConfig
    dtype: jnp.dtype
    param_dtype: jnp.dtype
    out_in: bool = False
    int8: bool = False

    def setup(self) -> None:
        def make(name: str) -> _Projection:  # q/k/v/out share their dims in both blocks
            return projection(
                self.config, f"self_attention.{name}", self.out_in, self.dtype, self.param_dtype, self.int8
            )

        self.query = make("query")
        self.key = make("key")
        self.value = make("value")
        self.out = make("out")


class DecoderLayer(nn.Module):
    """One layer, called as the body of ``nn.scan``: ``(carry, layer_inputs) -> (carry, outputs)``.

    ``out_in``: kernels stored ``[out, in]`` (the unrolled inference layout of
    :mod:`musicgen_jax.models.layer_layout`); the same products either way. ``int8``: weight-only
    int8 projections (:mod:`musicgen_jax.models.int8`).
    """

    config: DecoderConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    out_in: bool = False
    int8: bool = False

    @nn.compact
    def __call__(
        self,
        carry: tuple,  # (hidden [batch, length, hidden], cache keys, cache values) — caches stacked or None
        layer_inputs: dict | None,  # this layer's cross keys/values and index (cached mode), or None
        memory: jax.Array | None,  # [batch, cond_len, hidden]
        memory_mask: jax.Array | None,  # [batch, cond_len] bool
        positions: jax.Array,  # [length] int32
        cache_index: jax.Array | None,  # [] int32
        kv_length: int | None,  # attend to cache positions [0, kv_length) only (a static bound)
        mode: Mode,
        deterministic: bool,
    ) -> tuple[tuple, dict | None]:
        cfg = self.config
        scale = cfg.head_dim**-0.5
        hidden, cache_key, cache_value = carry
        self_attention = Projections(
            cfg, self.dtype, self.param_dtype, self.out_in, self.int8, name="self_attention"
        )
        cross_attention = (
            Projections(cfg, self.dtype, self.param_dtype, self.out_in, self.int8, name="cross_attention")
            if cfg.cross_attention
            else None
        )

        if mode == "project_memory":  # heads-major for the cache
            heads_major = lambda x: x.transpose(0, 2, 1, 3)
            return carry, {
                "cross_key": heads_major(cross_attention.key(memory)),
                "cross_value": heads_major(cross_attention.value(memory)),
            }

        def dropout(x, rate):
            return nn.Dropout(rate)(x, deterministic=deterministic)

        hidden = nn.with_logical_constraint(hidden, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))
        dropout_rng = None if deterministic or cfg.attention_dropout == 0 else self.make_rng("dropout")

        # Causal self-attention.
        residual = hidden
        normed = layer_norm(cfg, self.dtype, self.param_dtype, "self_attention_norm")(hidden)
        query = self_attention.query(normed)  # [batch, length, heads, head_dim]
        key = self_attention.key(normed)
        value = self_attention.value(normed)
        cached = mode == "cached"
        if cached:
            # The stacked cache travels in the scan's carry and is updated in place: slicing it into
            # the scan's inputs and outputs would copy all of it at every step.
            layer = layer_inputs["layer"]
            at = (layer, 0, 0, cache_index, 0)
            # [1, batch, heads, length, head_dim]
            new_key = key.transpose(0, 2, 1, 3).astype(cache_key.dtype)[None]
            new_value = value.transpose(0, 2, 1, 3).astype(cache_value.dtype)[None]
            cache_key = jax.lax.dynamic_update_slice(cache_key, new_key, at)
            cache_value = jax.lax.dynamic_update_slice(cache_value, new_value, at)
            _, batch, heads, _, head_dim = cache_key.shape
            window = (1, batch, heads, kv_length, head_dim)
            key = jax.lax.dynamic_slice(cache_key, (layer, 0, 0, 0, 0), window)[0]
            value = jax.lax.dynamic_slice(cache_value, (layer, 0, 0, 0, 0), window)[0]
        mask = causal_mask(positions, key.shape[2] if cached else key.shape[1])
        attended = dot_product_attention(
            query,
            key.astype(self.dtype),
            value.astype(self.dtype),
            mask,
            scale,
            cfg.attention_dropout,
            dropout_rng,
            heads_major=cached,
        )
        hidden = residual + dropout(self_attention.out(attended), cfg.dropout)

        if cross_attention is not None:  # to the conditioning memory
            residual = hidden
            normed = layer_norm(cfg, self.dtype, self.param_dtype, "cross_attention_norm")(hidden)
            query = cross_attention.query(normed)
            if mode == "cached":
                key, value = (
                    layer_inputs["cross_key"].astype(self.dtype),
                    layer_inputs["cross_value"].astype(self.dtype),
                )
            else:
                key, value = cross_attention.key(memory), cross_attention.value(memory)
            mask = memory_mask.astype(bool)[:, None, None, :]
            attended = dot_product_attention(
                query, key, value, mask, scale, cfg.attention_dropout, dropout_rng, heads_major=cached
            )
            hidden = residual + dropout(cross_attention.out(attended), cfg.dropout)

        # Feed-forward.
        residual = hidden
        normed = layer_norm(cfg, self.dtype, self.param_dtype, "mlp_norm")(hidden)
        up = projection(cfg, "fc1", self.out_in, self.dtype, self.param_dtype, self.int8)(normed)
        up = nn.with_logical_constraint(up, (axes.BATCH, axes.LENGTH, axes.ACT_MLP))
        up = dropout(ACTIVATIONS[cfg.activation](up), cfg.activation_dropout)
        down = projection(cfg, "fc2", self.out_in, self.dtype, self.param_dtype, self.int8)(up)
        hidden = residual + dropout(down, cfg.dropout)
        return (hidden, cache_key, cache_value), None
