"""The decoder's key/value cache as an explicit pytree.

Self-attention keys and values are written one position (or one prompt chunk) at a time at
``index``; cross-attention keys and values are computed once from the conditioning memory. All
arrays carry the stacked layer axis first so the scanned decoder layers slice them.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class DecoderCache:
    self_key: jax.Array  # [layers, batch, max_length, heads, head_dim]
    self_value: jax.Array  # [layers, batch, max_length, heads, head_dim]
    cross_key: jax.Array  # [layers, batch, cond_len, heads, head_dim]
    cross_value: jax.Array  # [layers, batch, cond_len, heads, head_dim]
    memory_mask: jax.Array  # [batch, cond_len] bool
    index: jax.Array  # [] int32: positions written so far (the next position to write)

    @property
    def max_length(self) -> int:
        return self.self_key.shape[2]

    @property
    def batch_size(self) -> int:
        return self.self_key.shape[1]

    def layer_slices(self) -> dict[str, jax.Array]:
        """What each scanned layer receives (sliced along axis 0 by the scan)."""
        return {
            "self_key": self.self_key,
            "self_value": self.self_value,
            "cross_key": self.cross_key,
            "cross_value": self.cross_value,
        }


def empty_self_attention(
    num_layers: int, batch: int, max_length: int, num_heads: int, head_dim: int, dtype: jnp.dtype
) -> tuple[jax.Array, jax.Array]:
    shape = (num_layers, batch, max_length, num_heads, head_dim)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)
