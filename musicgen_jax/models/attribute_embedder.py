"""Learned attribute conditioning for models trained by this project.

Each attribute becomes one memory token of decoder width joined to the cross-attention memory:
genre (categorical embedding), moods and instruments (mean of multi-hot embeddings), tempo and
duration (log-scale sinusoidal features through a linear projection). A missing attribute is a
masked token, so the null condition for guidance is simply "nothing present".
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.conditioning import vocabulary
from musicgen_jax.sharding import axes

NUM_ATTRIBUTE_TOKENS = 5  # genre, moods, instruments, tempo, duration
# The highest frequency of the scalar features, in half-cycles over the whole log range. Tempo's
# range (20-300 BPM) is wide, so a 5% tempo step is only ~1.8% of it: at 16 half-cycles that step
# turns the fastest feature by under a radian, and a tempo between two trained ones gets features
# between theirs. Faster features tell each trained tempo apart and nothing about the ones between.
MAX_FREQUENCY = 16.0


def _fourier_features(value: jax.Array, low: float, high: float, dim: int) -> jax.Array:
    """Log-scale sinusoidal features of a positive scalar in [low, high]: ``[..., dim]``."""
    unit = (jnp.log(jnp.maximum(value, 1e-3)) - math.log(low)) / (math.log(high) - math.log(low))
    freqs = jnp.exp(jnp.linspace(0.0, math.log(MAX_FREQUENCY), dim // 2))
    angles = unit[..., None] * freqs * math.pi
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class AttributeEmbedder(nn.Module):
    hidden_size: int
    feature_dim: int = 64
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, attributes: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """``attributes`` as from :func:`~musicgen_jax.conditioning.encode_attributes`.

        Returns memory tokens ``[batch, 5, hidden]`` and their mask ``[batch, 5]``.
        """
        init = nn.initializers.normal(0.02)

        def table(name: str, rows: int) -> jax.Array:
            return self.param(
                name,
                nn.with_logical_partitioning(init, (axes.ATTRIBUTE_VOCAB, axes.EMBED)),
                (rows, self.hidden_size),
                self.param_dtype,
            ).astype(self.dtype)

        genre = table("genre", len(vocabulary.GENRES) + 1)[attributes["genre"]]
        moods_hot = attributes["moods"].astype(self.dtype)
        instruments_hot = attributes["instruments"].astype(self.dtype)
        moods = (
            moods_hot
            @ table("moods", len(vocabulary.MOODS))
            / jnp.maximum(moods_hot.sum(-1, keepdims=True), 1)
        )
        instruments = (
            instruments_hot
            @ table("instruments", len(vocabulary.INSTRUMENTS))
            / jnp.maximum(instruments_hot.sum(-1, keepdims=True), 1)
        )

        def scalar(name: str, value: jax.Array, value_range: tuple[float, float]) -> jax.Array:
            features = _fourier_features(value, *value_range, self.feature_dim).astype(self.dtype)
            return nn.Dense(
                self.hidden_size,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=nn.with_logical_partitioning(init, (None, axes.EMBED)),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes.EMBED,)),
                name=name,
            )(features)

        tempo = scalar("tempo", attributes["tempo"], vocabulary.TEMPO_RANGE)
        duration = scalar("duration", attributes["duration"], vocabulary.DURATION_RANGE)
        tokens = jnp.stack([genre, moods, instruments, tempo, duration], axis=1)  # [batch, 5, hidden]
        mask = jnp.stack(
            [
                attributes["genre"] > 0,
                attributes["moods"].sum(-1) > 0,
                attributes["instruments"].sum(-1) > 0,
                attributes["tempo_present"] > 0,
                attributes["duration_present"] > 0,
            ],
            axis=1,
        )
        return tokens * mask[..., None].astype(tokens.dtype), mask
