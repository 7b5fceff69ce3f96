"""The T5 encoder in Flax (v1.0 ReLU and v1.1/flan gated feed-forward), equal to transformers'.

T5 specifics that parity depends on: RMS norm without mean or bias, queries not scaled by
sqrt(d_kv), a relative position bias computed once (block 0's table, shared by all blocks), softmax
in float32. The relative-position table lives at the encoder level so that the blocks are identical
and can be scanned.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.models.activations import ACTIVATIONS
from musicgen_jax.models.config import TextEncoderConfig
from musicgen_jax.sharding import axes


def relative_position_bucket(
    relative_position: jax.Array, num_buckets: int, max_distance: int, bidirectional: bool = True
) -> jax.Array:
    """Bucket a (memory - query) position offset the way Mesh TensorFlow / transformers do."""
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        relative_position = jnp.abs(relative_position)
    else:
        relative_position = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    # Log-spaced buckets for large offsets; float32 as in the reference, then truncated.
    safe = jnp.maximum(relative_position, 1).astype(jnp.float32)
    large = max_exact + (
        jnp.log(safe / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).astype(relative_position.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(is_small, relative_position, large)


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction, statistics in float32."""

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weight = self.param(
            "weight",
            nn.with_logical_partitioning(nn.initializers.ones, (axes.NORM,)),
            (x.shape[-1],),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        normed = x32 * jax.lax.rsqrt(variance + self.epsilon)
        return (weight.astype(jnp.float32) * normed).astype(self.dtype)


def _dense(features, in_axis: str, out_axis: str, dtype, param_dtype, name: str, std: float = 0.05):
    return nn.Dense(
        features,
        use_bias=False,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(std), (in_axis, out_axis)),
        name=name,
    )


class T5Block(nn.Module):
    """One encoder block: pre-norm self-attention, then pre-norm feed-forward, both residual."""

    config: TextEncoderConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self, hidden: jax.Array, attention_bias: jax.Array, deterministic: bool = True
    ) -> tuple[jax.Array, None]:
        cfg = self.config
        inner = cfg.num_heads * cfg.d_kv
        batch, length, _ = hidden.shape

        normed = RMSNorm(cfg.layer_norm_epsilon, self.dtype, self.param_dtype, name="attention_norm")(hidden)
        dense = lambda n, f, i, o: _dense(f, i, o, self.dtype, self.param_dtype, n)
        q = dense("query", inner, axes.TEXT_EMBED, axes.TEXT_HEADS)(normed)
        k = dense("key", inner, axes.TEXT_EMBED, axes.TEXT_HEADS)(normed)
        v = dense("value", inner, axes.TEXT_EMBED, axes.TEXT_HEADS)(normed)
        split = lambda t: t.reshape(batch, length, cfg.num_heads, cfg.d_kv)
        q, k, v = split(q), split(k), split(v)
        # No 1/sqrt(d) scaling in T5: the bias and the initialisation absorb it.
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(scores + attention_bias, axis=-1)
        weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=deterministic)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), v).reshape(batch, length, inner)
        out = dense("output", cfg.d_model, axes.TEXT_HEADS, axes.TEXT_EMBED)(attended)
        hidden = hidden + nn.Dropout(cfg.dropout_rate)(out, deterministic=deterministic)

        normed = RMSNorm(cfg.layer_norm_epsilon, self.dtype, self.param_dtype, name="mlp_norm")(hidden)
        act = ACTIVATIONS[cfg.activation]
        if cfg.is_gated:
            gate = act(dense("wi_0", cfg.d_ff, axes.TEXT_EMBED, axes.TEXT_MLP)(normed))
            ff = gate * dense("wi_1", cfg.d_ff, axes.TEXT_EMBED, axes.TEXT_MLP)(normed)
        else:
            ff = act(dense("wi", cfg.d_ff, axes.TEXT_EMBED, axes.TEXT_MLP)(normed))
        ff = nn.Dropout(cfg.dropout_rate)(ff, deterministic=deterministic)
        ff = dense("wo", cfg.d_model, axes.TEXT_MLP, axes.TEXT_EMBED)(ff)
        hidden = hidden + nn.Dropout(cfg.dropout_rate)(ff, deterministic=deterministic)
        return hidden, None


class T5Encoder(nn.Module):
    """Token ids and a padding mask to hidden states ``[batch, length, d_model]``."""

    config: TextEncoderConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self, input_ids: jax.Array, attention_mask: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        cfg = self.config
        embed = nn.Embed(
            cfg.vocab_size,
            cfg.d_model,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(1.0), (axes.TEXT_VOCAB, axes.TEXT_EMBED)
            ),
            name="token_embedding",
        )
        hidden = embed(input_ids)  # [batch, length, d_model]
        hidden = nn.Dropout(cfg.dropout_rate)(hidden, deterministic=deterministic)

        length = input_ids.shape[1]
        position = jnp.arange(length, dtype=jnp.int32)
        bucket = relative_position_bucket(
            position[None, :] - position[:, None],
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
        )  # [query, key]
        table = self.param(
            "relative_attention_bias",
            nn.with_logical_partitioning(nn.initializers.normal(0.05), (axes.BUCKETS, axes.TEXT_HEADS)),
            (cfg.relative_attention_num_buckets, cfg.num_heads),
            self.param_dtype,
        )
        position_bias = jnp.take(table, bucket, axis=0).astype(jnp.float32).transpose(2, 0, 1)[None]
        # Padded keys get the most negative float, as transformers' additive masks do.
        key_mask = attention_mask.astype(bool)[:, None, None, :]
        mask_bias = jnp.where(key_mask, 0.0, jnp.finfo(jnp.float32).min)
        attention_bias = position_bias + mask_bias  # [batch, heads, query, key]

        blocks = nn.scan(
            T5Block,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast, nn.broadcast),
            length=cfg.num_layers,
            metadata_params={nn.PARTITION_NAME: axes.LAYERS},
        )(cfg, self.dtype, self.param_dtype, name="blocks")
        hidden, _ = blocks(hidden, attention_bias, deterministic)
        hidden = RMSNorm(cfg.layer_norm_epsilon, self.dtype, self.param_dtype, name="final_norm")(hidden)
        return nn.Dropout(cfg.dropout_rate)(hidden, deterministic=deterministic)
