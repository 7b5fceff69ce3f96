"""Scaled dot-product attention with boolean masks, softmax in float32.

Masked positions get the most negative float32 added, as transformers' additive masks do, so a row
whose every key is masked (the null condition of classifier-free guidance) averages its values
uniformly instead of producing NaN; with the null condition those values are zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = jnp.finfo(jnp.float32).min


def dot_product_attention(
    query: jax.Array,  # [batch, q_len, heads, head_dim]
    key: jax.Array,  # [batch, k_len, heads, head_dim], or [batch, heads, k_len, head_dim] if heads_major
    value: jax.Array,  # like key
    mask: jax.Array | None,  # broadcastable to [batch, heads, q_len, k_len], True = attend
    scale: float,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    heads_major: bool = False,
) -> jax.Array:
    """Attention output ``[batch, q_len, heads, head_dim]`` in the query's dtype.

    The KV cache is stored heads-major (``[batch, heads, positions, head_dim]``) so that both
    products read it in place; the training path's fresh keys come sequence-major.
    """
    kv = "bhkd" if heads_major else "bkhd"
    scores = jnp.einsum(f"bqhd,{kv}->bhqk", query, key, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        scores = jnp.where(mask, scores, NEG_INF)
    weights = jax.nn.softmax(scores, axis=-1)
    if dropout_rate > 0.0 and dropout_rng is not None:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    return jnp.einsum(f"bhqk,{kv}->bqhd", weights.astype(value.dtype), value)


def causal_mask(query_positions: jax.Array, key_length: int) -> jax.Array:
    """``[1, 1, q_len, key_length]``: key position <= query position."""
    keys = jnp.arange(key_length, dtype=jnp.int32)
    return (keys[None, :] <= query_positions[:, None])[None, None]
