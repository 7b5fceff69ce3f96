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


class _HeadsDense(nn.Module):
    """A bias-free projection to or from attention heads: ``einsum(equation, x, kernel)``.

    ``nn.DenseGeneral`` initialises a multi-axis kernel at a flat 2-D shape and reshapes it. Under
    an active mesh and logical rules Flax re-runs that initializer inside ``apply`` (its shape
    check) and constrains the flat value with the 3-D logical spec, which fails. A kernel declared
    at its real shape avoids that; the parameter path and layout are DenseGeneral's.
    """

    kernel_shape: tuple[int, ...]
    kernel_axes: tuple[str, ...]
    equation: str
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), self.kernel_axes),
            self.kernel_shape,
            self.param_dtype,
        )
        return jnp.einsum(self.equation, x.astype(self.dtype), kernel.astype(self.dtype))


class Projections(nn.Module):
    """The q/k/v/out projections of one attention block (no biases, as in MusicGen)."""

    config: DecoderConfig
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    def setup(self) -> None:
        cfg = self.config

        def heads(name: str) -> _HeadsDense:
            return _HeadsDense(
                (cfg.hidden_size, cfg.num_heads, cfg.head_dim),
                (axes.EMBED, axes.HEADS, axes.KV),
                "...d,dhk->...hk",
                self.dtype,
                self.param_dtype,
                name=name,
            )

        self.query = heads("query")
        self.key = heads("key")
        self.value = heads("value")
        self.out = _HeadsDense(
            (cfg.num_heads, cfg.head_dim, cfg.hidden_size),
            (axes.HEADS, axes.KV, axes.EMBED),
            "...hk,hkd->...d",
            self.dtype,
            self.param_dtype,
            name="out",
        )


class DecoderLayer(nn.Module):
    """One layer, called as the body of ``nn.scan``: ``(carry, layer_inputs) -> (carry, outputs)``."""

    config: DecoderConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

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
        self_attention = Projections(cfg, self.dtype, self.param_dtype, name="self_attention")
        cross_attention = (
            Projections(cfg, self.dtype, self.param_dtype, name="cross_attention")
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
        init = nn.initializers.normal(0.02)
        up = nn.Dense(
            cfg.ffn_dim,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(init, (axes.EMBED, axes.MLP)),
            name="fc1",
        )(normed)
        up = nn.with_logical_constraint(up, (axes.BATCH, axes.LENGTH, axes.ACT_MLP))
        up = dropout(ACTIVATIONS[cfg.activation](up), cfg.activation_dropout)
        down = nn.Dense(
            cfg.hidden_size,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(init, (axes.MLP, axes.EMBED)),
            name="fc2",
        )(up)
        hidden = residual + dropout(down, cfg.dropout)
        return (hidden, cache_key, cache_value), None
