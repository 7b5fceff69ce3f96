"""The MusicGen decoder: codebook embeddings summed, sinusoidal positions, pre-norm layers with
causal self-attention and cross-attention to the conditioning memory, one LM head per codebook.

Layers are stacked and scanned. One layer function serves three modes:

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
from musicgen_jax.models.cache import DecoderCache, empty_self_attention
from musicgen_jax.models.config import DecoderConfig
from musicgen_jax.sharding import axes

Mode = Literal["full", "project_memory", "cached"]


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def sinusoidal_positions(positions: jax.Array, dim: int) -> jax.Array:
    """``[len, dim]`` float32: cos then sin, ``inv_freq_i = exp(-i ln(10000) / (dim/2 - 1))``."""
    half = dim // 2
    inv_freq = jnp.exp(jnp.arange(half, dtype=jnp.float32) * jnp.float32(-math.log(10000) / (half - 1)))
    angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]
    emb = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def _layer_norm(config: DecoderConfig, dtype, param_dtype, name: str) -> nn.LayerNorm:
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
        cross_attention = Projections(cfg, self.dtype, self.param_dtype, name="cross_attention")

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
        normed = _layer_norm(cfg, self.dtype, self.param_dtype, "self_attention_norm")(hidden)
        query = self_attention.query(normed)  # [batch, length, heads, head_dim]
        key = self_attention.key(normed)
        value = self_attention.value(normed)
        cached = mode == "cached"
        if cached:
            # The stacked cache travels in the scan's carry and is updated in place: slicing it into
            # the scan's inputs and outputs would copy all of it at every step.
            layer = layer_inputs["layer"]
            at = (layer, 0, 0, cache_index, 0)
            new_key = key.transpose(0, 2, 1, 3).astype(cache_key.dtype)[
                None
            ]  # [1, batch, heads, length, head_dim]
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

        # Cross-attention to the conditioning memory.
        residual = hidden
        normed = _layer_norm(cfg, self.dtype, self.param_dtype, "cross_attention_norm")(hidden)
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
        normed = _layer_norm(cfg, self.dtype, self.param_dtype, "mlp_norm")(hidden)
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


class MusicGenDecoder(nn.Module):
    """Codebook tokens ``[batch, codebooks, length]`` to logits ``[batch, codebooks, length, vocab]``."""

    config: DecoderConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat_policy: str = "none"
    # Layers per iteration of the layer scan. 1 keeps one layer's program (fast to compile); more
    # trades compile time for fewer loop iterations a step, which may pay where an iteration costs
    # launches (GPUs). XLA:CPU copies unrolled layers' weight slices, so there it is slower
    # (docs/performance.md).
    scan_unroll: int = 1

    def setup(self) -> None:
        cfg = self.config
        if not 1 <= self.scan_unroll <= cfg.num_layers:
            raise ValueError(
                f"scan_unroll must be between 1 and the {cfg.num_layers} layers, got {self.scan_unroll}"
            )
        self.embed_tokens = self.param(
            "embed_tokens",
            nn.with_logical_partitioning(
                nn.initializers.normal(0.02), (axes.CODEBOOKS, axes.VOCAB, axes.EMBED)
            ),
            (cfg.num_codebooks, cfg.vocab_size + 1, cfg.hidden_size),
            self.param_dtype,
        )
        layer = DecoderLayer
        if self.remat_policy != "none":
            # kv_length, mode and deterministic are Python values; the count includes self.
            layer = nn.remat(
                layer, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=False, static_argnums=(7, 8, 9)
            )
        self.layers = nn.scan(
            layer,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(0,) + (nn.broadcast,) * 7,
            length=cfg.num_layers,
            unroll=self.scan_unroll,
            metadata_params={nn.PARTITION_NAME: axes.LAYERS},
        )(cfg, self.dtype, self.param_dtype, name="layers")
        self.final_norm = _layer_norm(cfg, self.dtype, self.param_dtype, "final_norm")
        self.embed_dropout = nn.Dropout(cfg.dropout)
        # [codebooks, vocab, hidden], PyTorch's Linear layout: the logits matmul contracts the
        # minor dimension of both operands, which needs no transposed copy of the heads per step.
        self.lm_heads = self.param(
            "lm_heads",
            nn.with_logical_partitioning(
                nn.initializers.normal(0.02), (axes.CODEBOOKS, axes.VOCAB, axes.EMBED)
            ),
            (cfg.num_codebooks, cfg.vocab_size, cfg.hidden_size),
            self.param_dtype,
        )

    def embed(self, tokens: jax.Array, positions: jax.Array, deterministic: bool) -> jax.Array:
        """Sum of per-codebook embeddings plus sinusoidal positions: ``[batch, length, hidden]``."""
        cfg = self.config
        table = self.embed_tokens.astype(self.dtype)  # [codebooks, vocab + 1, hidden]
        codebook = jnp.arange(cfg.num_codebooks)[None, :, None]
        hidden = table[codebook, tokens].sum(axis=1)  # [batch, length, hidden]
        if cfg.scale_embedding:
            hidden = hidden * math.sqrt(cfg.hidden_size)
        hidden = (hidden.astype(jnp.float32) + sinusoidal_positions(positions, cfg.hidden_size)[None]).astype(
            self.dtype
        )
        return self.embed_dropout(hidden, deterministic=deterministic)

    def logits(self, hidden: jax.Array) -> jax.Array:
        hidden = self.final_norm(hidden)
        logits = jnp.einsum(
            "btd,kvd->bktv", hidden, self.lm_heads.astype(self.dtype), preferred_element_type=jnp.float32
        )
        return nn.with_logical_constraint(
            logits, (axes.BATCH, axes.ACT_CODEBOOKS, axes.LENGTH, axes.ACT_VOCAB)
        )

    def __call__(
        self,
        tokens: jax.Array,  # [batch, codebooks, length] int32
        memory: jax.Array,  # [batch, cond_len, hidden]
        memory_mask: jax.Array,  # [batch, cond_len]
        deterministic: bool = True,
    ) -> jax.Array:
        """The full causal forward pass: logits ``[batch, codebooks, length, vocab]`` in float32."""
        positions = jnp.arange(tokens.shape[-1], dtype=jnp.int32)
        hidden = self.embed(tokens, positions, deterministic)
        (hidden, _, _), _ = self.layers(
            (hidden, None, None), None, memory, memory_mask, positions, None, None, "full", deterministic
        )
        return self.logits(hidden)

    def init_cache(
        self, memory: jax.Array, memory_mask: jax.Array, max_length: int, cache_dtype: jnp.dtype | None = None
    ) -> DecoderCache:
        """An empty self-attention cache of ``max_length`` and the memory's cross keys/values."""
        cfg = self.config
        dtype = cache_dtype or self.dtype
        batch = memory.shape[0]
        dummy = jnp.zeros((batch, 1, cfg.hidden_size), self.dtype)
        _, cross = self.layers(
            (dummy, None, None), None, memory, memory_mask, None, None, None, "project_memory", True
        )
        self_key, self_value = empty_self_attention(
            cfg.num_layers, batch, max_length, cfg.num_heads, cfg.head_dim, dtype
        )
        return DecoderCache(
            self_key=self_key,
            self_value=self_value,
            cross_key=cross["cross_key"].astype(dtype),
            cross_value=cross["cross_value"].astype(dtype),
            memory_mask=memory_mask.astype(bool),
            index=jnp.zeros((), jnp.int32),
        )

    def decode_step(
        self, tokens: jax.Array, cache: DecoderCache, kv_length: int | None = None
    ) -> tuple[jax.Array, DecoderCache]:
        """Run ``tokens [batch, codebooks, length]`` at positions ``cache.index + arange(length)``.

        ``kv_length`` (static) bounds the self-attention to the first cache positions; it must
        cover every position written so far. Default: the whole cache.
        """
        cfg = self.config
        length = tokens.shape[-1]
        positions = cache.index + jnp.arange(length, dtype=jnp.int32)
        hidden = self.embed(tokens, positions, True)
        layer_inputs = {
            "cross_key": cache.cross_key,
            "cross_value": cache.cross_value,
            "layer": jnp.arange(cfg.num_layers, dtype=jnp.int32),
        }
        carry = (hidden, cache.self_key, cache.self_value)
        (hidden, self_key, self_value), _ = self.layers(
            carry,
            layer_inputs,
            None,
            cache.memory_mask,
            positions,
            cache.index,
            kv_length or cache.max_length,
            "cached",
            True,
        )
        cache = cache.replace(self_key=self_key, self_value=self_value, index=cache.index + length)
        return self.logits(hidden), cache
