"""EnCodec's residual vector quantiser as it trains: codebooks learned by exponential-moving-average
k-means, not by gradients (audiocraft's ``EuclideanCodebook`` and ``ResidualVectorQuantization``).

Per stage, each frame takes its nearest codeword (the inference quantiser's
:func:`~musicgen_jax.codec.flax_quantizer.nearest_codeword`, so training and inference pick alike).
The encoder learns through a straight-through estimator and a commitment loss
(``mean |residual - stop_gradient(codeword)|^2`` per active stage); each codebook moves towards the
mean of the residuals assigned to it: ``cluster_size`` and ``embed_sum`` are moving averages of the
assignment counts and sums, and the codebook is their Laplace-smoothed ratio. Codewords whose
``cluster_size`` falls below ``dead_code_threshold`` are replaced by residuals drawn from the batch.

One deliberate difference from audiocraft: there the EMA update that follows a replacement
recomputes the replaced codeword from its stale statistics in the same step, undoing the
replacement; here the replaced codeword's statistics are reset to the drawn residual
(``embed_sum = residual * threshold``, ``cluster_size = threshold``), so it stays until the data
moves it, as lucidrains' vector-quantize-pytorch does.

Codebooks are initialised by k-means on the first batches' encoder outputs (audiocraft:
``kmeans_init=True``, 50 iterations on the first batch).

Everything here is a pure function of an explicit :class:`QuantizerState`.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from musicgen_jax.codec.flax_quantizer import nearest_codeword

EPS = 1e-5  # audiocraft's epsilon of the Laplace smoothing


@flax.struct.dataclass
class QuantizerState:
    codebooks: jax.Array  # [stages, size, dim]: what the codec encodes and decodes with
    cluster_size: jax.Array  # [stages, size]: moving average of how many vectors each codeword took
    embed_sum: jax.Array  # [stages, size, dim]: moving average of their sum (audiocraft's embed_avg)

    @classmethod
    def create(cls, codebooks: jax.Array) -> QuantizerState:
        stages, size, _ = codebooks.shape
        return cls(codebooks, jnp.ones((stages, size), codebooks.dtype), codebooks)


@flax.struct.dataclass
class Quantized:
    """One forward pass through the quantiser in training."""

    embeddings: jax.Array  # [batch, frames, dim]: straight-through sum of the active stages' codewords
    codes: jax.Array  # [stages, batch * frames] int32 (every stage, active or not)
    residuals: jax.Array  # [stages, batch * frames, dim]: each stage's input, without gradient
    commitment: jax.Array  # []: the commitment loss summed over active stages
    active: jax.Array  # [stages] bool


def quantize(codebooks: jax.Array, embeddings: jax.Array, active_stages: jax.Array) -> Quantized:
    """Quantise ``embeddings [batch, frames, dim]`` with the first ``active_stages`` (a traced int)
    of ``codebooks``; every stage is computed so the shapes stay static, the inactive ones masked."""
    batch, frames, dim = embeddings.shape
    stages = codebooks.shape[0]
    active = jnp.arange(stages) < active_stages
    residual = embeddings.reshape(batch * frames, dim)
    total = jnp.zeros_like(residual)
    codes, residuals, commitment = [], [], jnp.zeros((), jnp.float32)
    for stage in range(stages):
        indices = nearest_codeword(jax.lax.stop_gradient(codebooks[stage]), jax.lax.stop_gradient(residual))
        codeword = jax.lax.stop_gradient(codebooks[stage][indices])
        commitment = commitment + jnp.where(active[stage], jnp.mean(jnp.square(residual - codeword)), 0.0)
        codes.append(indices)
        residuals.append(jax.lax.stop_gradient(residual))
        residual = residual - codeword
        total = total + jnp.where(active[stage], codeword, 0.0)
    flat = embeddings.reshape(batch * frames, dim)
    straight_through = flat + jax.lax.stop_gradient(total - flat)
    return Quantized(
        straight_through.reshape(batch, frames, dim),
        jnp.stack(codes),
        jnp.stack(residuals),
        commitment,
        active,
    )


def ema_update(
    state: QuantizerState,
    quantized: Quantized,
    rng: jax.Array,
    decay: float,
    dead_code_threshold: float,
) -> tuple[QuantizerState, dict[str, jax.Array]]:
    """The codebooks after one batch (active stages only), and each stage's share of dead codes."""
    stages, size, _ = state.codebooks.shape
    onehot = jax.nn.one_hot(quantized.codes, size, dtype=jnp.float32)  # [stages, rows, size]
    counts = jnp.sum(onehot, axis=1)  # [stages, size]
    sums = jnp.einsum("srk,srd->skd", onehot, quantized.residuals, precision=jax.lax.Precision.HIGHEST)
    cluster_size = decay * state.cluster_size + (1 - decay) * counts
    embed_sum = decay * state.embed_sum + (1 - decay) * sums
    total = jnp.sum(cluster_size, axis=1, keepdims=True)
    smoothed = (cluster_size + EPS) / (total + size * EPS) * total  # Laplace smoothing
    codebooks = embed_sum / smoothed[..., None]

    # Dead codes: replaced by residuals of this batch drawn at random (with replacement).
    dead = cluster_size < dead_code_threshold  # [stages, size]
    rows = quantized.residuals.shape[1]
    picks = jax.random.randint(rng, (stages, size), 0, rows)
    drawn = jnp.take_along_axis(quantized.residuals, picks[..., None], axis=1)  # [stages, size, dim]
    codebooks = jnp.where(dead[..., None], drawn, codebooks)
    embed_sum = jnp.where(dead[..., None], drawn * dead_code_threshold, embed_sum)
    cluster_size = jnp.where(dead, dead_code_threshold, cluster_size)

    keep = ~quantized.active[:, None]  # inactive stages keep everything
    updated = QuantizerState(
        codebooks=jnp.where(keep[..., None], state.codebooks, codebooks),
        cluster_size=jnp.where(keep, state.cluster_size, cluster_size),
        embed_sum=jnp.where(keep[..., None], state.embed_sum, embed_sum),
    )
    metrics = {"dead_codes": jnp.sum(jnp.where(quantized.active[:, None], dead, False)) / (stages * size)}
    return updated, metrics


def kmeans(vectors: jax.Array, size: int, iterations: int, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """k-means of ``vectors [rows, dim]`` into ``size`` centroids, started from rows drawn at random;
    an empty cluster keeps its centroid. -> (centroids ``[size, dim]``, counts ``[size]``)."""
    rows = vectors.shape[0]
    centroids = vectors[jax.random.randint(rng, (size,), 0, rows)]

    def step(centroids, _):
        onehot = jax.nn.one_hot(nearest_codeword(centroids, vectors), size, dtype=jnp.float32)
        counts = jnp.sum(onehot, axis=0)
        sums = jnp.matmul(onehot.T, vectors, precision=jax.lax.Precision.HIGHEST)
        updated = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)
        return updated, None

    centroids, _ = jax.lax.scan(step, centroids, None, length=iterations)
    counts = jnp.sum(jax.nn.one_hot(nearest_codeword(centroids, vectors), size), axis=0)
    return centroids, counts


def kmeans_init(
    embeddings: jax.Array, stages: int, size: int, iterations: int, batches: int, rng: jax.Array
) -> QuantizerState:
    """Codebooks from k-means of ``embeddings [rows, dim]`` (gathered from ``batches`` batches),
    stage after stage on the residuals the stages before leave, with statistics that make the EMA
    start from them: counts per batch, the scale the moving averages keep."""
    residual = embeddings
    codebooks, cluster_sizes = [], []
    for key in jax.random.split(rng, stages):
        centroids, counts = kmeans(residual, size, iterations, key)
        residual = residual - centroids[nearest_codeword(centroids, residual)]
        codebooks.append(centroids)
        cluster_sizes.append(counts)
    codebooks = jnp.stack(codebooks)
    cluster_size = jnp.stack(cluster_sizes) / batches
    return QuantizerState(codebooks, cluster_size, codebooks * cluster_size[..., None])
