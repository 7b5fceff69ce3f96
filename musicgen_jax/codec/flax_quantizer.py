"""EnCodec's residual vector quantiser in Flax, equal to transformers' ``EncodecResidualVectorQuantizer``.

Stage ``k`` picks, for each frame, the codeword of codebook ``k`` nearest the residual left by the
stages before it, and subtracts it. The distance is computed as transformers computes it,
``-(|x|^2 - 2 x.e + |e|^2)`` maximised, so the same float32 roundings pick the same codeword; only
near-ties (two codewords within float32 rounding of each other) can go either way between
implementations. Decoding sums the chosen codewords, stage after stage in transformers' order.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


def nearest_codeword(codebook: jax.Array, vectors: jax.Array) -> jax.Array:
    """Index of the nearest row of ``codebook [size, dim]`` to each of ``vectors [rows, dim]``."""
    squared_norms = jnp.sum(jnp.square(vectors), axis=1, keepdims=True)  # [rows, 1]
    similarity = jnp.matmul(vectors, codebook.T, precision=HIGHEST)  # [rows, size]
    distance = -(squared_norms - 2 * similarity + jnp.sum(jnp.square(codebook), axis=1)[None])
    return jnp.argmax(distance, axis=-1).astype(jnp.int32)  # the first of equal maxima, as torch.max


class ResidualVectorQuantizer(nn.Module):
    """Codebooks ``[num_quantizers, codebook_size, dim]``; :meth:`encode` and :meth:`decode`."""

    num_quantizers: int
    codebook_size: int
    dim: int

    def setup(self):
        self.codebooks = self.param(
            "codebooks", nn.initializers.normal(1.0), (self.num_quantizers, self.codebook_size, self.dim)
        )

    def encode(self, embeddings: jax.Array, num_quantizers: int) -> jax.Array:
        """``[batch, frames, dim]`` -> codes ``[batch, num_quantizers, frames]`` int32."""
        batch, frames, dim = embeddings.shape
        residual = embeddings.reshape(batch * frames, dim)
        codes = []
        for stage in range(num_quantizers):
            indices = nearest_codeword(self.codebooks[stage], residual)  # [batch * frames]
            residual = residual - self.codebooks[stage][indices]
            codes.append(indices.reshape(batch, frames))
        return jnp.stack(codes, axis=1)

    def __call__(self, codes: jax.Array) -> jax.Array:
        return self.decode(codes)

    def decode(self, codes: jax.Array) -> jax.Array:
        """Codes ``[batch, K, frames]`` (any K up to ``num_quantizers``) -> ``[batch, frames, dim]``."""
        total = jnp.zeros((), self.codebooks.dtype)
        for stage in range(codes.shape[1]):
            total = total + self.codebooks[stage][codes[:, stage]]  # [batch, frames, dim]
        return total
