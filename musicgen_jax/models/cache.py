"""The decoder's key/value cache as an explicit pytree.

Self-attention keys and values are written one position (or one prompt chunk) at a time at
``index``; cross-attention keys and values are computed once from the conditioning memory (a
melody model has none: its conditioning prefix fills the first self-attention positions). All
arrays carry the stacked layer axis first so the scanned decoder layers slice them.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class DecoderCache:
    # Heads-major, so attention reads each head's positions contiguously without transposing.
    self_key: jax.Array  # [layers, batch, heads, max_length, head_dim]
    self_value: jax.Array  # [layers, batch, heads, max_length, head_dim]
    cross_key: jax.Array  # [layers, batch, heads, cond_len, head_dim]
    cross_value: jax.Array  # [layers, batch, heads, cond_len, head_dim]
    memory_mask: jax.Array  # [batch, cond_len] bool
    index: jax.Array  # [] int32: positions written so far (the next position to write)
    # Positions of a melody model's conditioning prefix, written first (static; 0 with
    # cross-attention, whose cross keys/values are then empty: cond_len 0).
    prefix_length: int = flax.struct.field(pytree_node=False, default=0)

    @property
    def max_length(self) -> int:
        """Positions the cache holds, the prefix's included."""
        return self.self_key.shape[3]


def empty_self_attention(
    num_layers: int, batch: int, max_length: int, num_heads: int, head_dim: int, dtype: jnp.dtype
) -> tuple[jax.Array, jax.Array]:
    shape = (num_layers, batch, num_heads, max_length, head_dim)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)
