"""The decoder's key/value cache as an explicit pytree.

Self-attention keys and values are written one position (or one prompt chunk) at a time at
``index``; cross-attention keys and values are computed once from the conditioning memory (a
melody model has none: its conditioning prefix fills the first self-attention positions). For the
scanned layer layout every array carries the stacked layer axis first, for the scanned layers to
slice; for the unrolled layout (:mod:`musicgen_jax.models.layer_layout`) each is a tuple of the
layers' own arrays (self-attention ones keep a leading axis of 1), so a layer reads and updates its
cache in place without slicing a stacked one.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class DecoderCache:
    # Heads-major, so attention reads each head's positions contiguously without transposing.
    # Unrolled: tuples of [1, batch, heads, max_length, head_dim] and [batch, heads, cond_len, head_dim].
    self_key: jax.Array | tuple  # [layers, batch, heads, max_length, head_dim]
    self_value: jax.Array | tuple  # [layers, batch, heads, max_length, head_dim]
    cross_key: jax.Array | tuple  # [layers, batch, heads, cond_len, head_dim]
    cross_value: jax.Array | tuple  # [layers, batch, heads, cond_len, head_dim]
    memory_mask: jax.Array  # [batch, cond_len] bool
    index: jax.Array  # [] int32: positions written so far (the next position to write)
    # Positions of a melody model's conditioning prefix, written first (static; 0 with
    # cross-attention, whose cross keys/values are then empty: cond_len 0).
    prefix_length: int = flax.struct.field(pytree_node=False, default=0)
    # Positions allocated past max_length and never attended (static). The unrolled layout keeps one:
    # then every attention window is a proper slice of a layer's buffer; a window that is the whole
    # buffer, read in the same loop iteration that updates it in place, makes XLA:CPU copy the
    # buffer four times a step (docs/performance.md, version 7).
    spare_positions: int = flax.struct.field(pytree_node=False, default=0)

    @property
    def max_length(self) -> int:
        """Positions the cache holds, the prefix's included."""
        return jax.tree.leaves(self.self_key)[0].shape[3] - self.spare_positions

    def select_rows(self, rows: jax.Array) -> DecoderCache:
        """The self-attention cache of batch rows ``rows`` (in that order; a beam's reordering)."""
        take = lambda tree: jax.tree.map(lambda x: x[:, rows], tree)  # batch is axis 1
        return self.replace(self_key=take(self.self_key), self_value=take(self.self_value))


PER_LAYER_SPARE = 1  # DecoderCache.spare_positions of the unrolled layout


def empty_self_attention(
    num_layers: int,
    batch: int,
    max_length: int,
    num_heads: int,
    head_dim: int,
    dtype: jnp.dtype,
    per_layer: bool = False,
) -> tuple:
    """Zero keys and values: stacked ``[layers, ...]``, or with ``per_layer`` tuples of ``[1, ...]``
    with :data:`PER_LAYER_SPARE` positions past ``max_length``."""
    if per_layer:
        shape = (1, batch, num_heads, max_length + PER_LAYER_SPARE, head_dim)
        zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(num_layers))
        return zeros(), zeros()
    shape = (num_layers, batch, num_heads, max_length, head_dim)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)
