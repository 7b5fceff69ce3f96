"""The MusicGen decoder: codebook embeddings summed, sinusoidal positions, the layers
(:class:`~musicgen_jax.models.decoder_layer.DecoderLayer`: pre-norm causal self-attention and
cross-attention to the conditioning memory; a scan over stacked layers, or a loop over one array a
layer in the unrolled layout of :mod:`musicgen_jax.models.layer_layout`), one LM head per codebook,
and the KV-cache entry points (:meth:`MusicGenDecoder.init_cache`, :meth:`MusicGenDecoder.decode_step`).

A melody decoder (``cross_attention: false``) reads its conditioning as a prefix of the sequence
instead: ``[prefix; tokens]`` through causal self-attention only; its cache holds the prefix.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.models.cache import PER_LAYER_SPARE, DecoderCache, empty_self_attention
from musicgen_jax.models.config import DecoderConfig
from musicgen_jax.models.decoder_layer import DecoderLayer, layer_norm
from musicgen_jax.models.layer_layout import LAYOUTS, SCANNED, UNROLLED
from musicgen_jax.sharding import axes

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
    # "scanned" (stacked layers, one nn.scan) or "unrolled" (one parameter array a layer, kernels
    # [out, in], a Python loop; inference only): see musicgen_jax.models.layer_layout.
    layer_layout: str = SCANNED
    # Weight-only int8 projections and LM heads (inference; musicgen_jax.models.int8).
    int8: bool = False

    def setup(self) -> None:
        cfg = self.config
        if not 1 <= self.scan_unroll <= cfg.num_layers:
            raise ValueError(
                f"scan_unroll must be between 1 and the {cfg.num_layers} layers, got {self.scan_unroll}"
            )
        if self.layer_layout not in LAYOUTS:
            raise ValueError(f"layer_layout must be one of {', '.join(LAYOUTS)}, got {self.layer_layout!r}")
        if self.layer_layout == UNROLLED and self.remat_policy != "none":
            raise ValueError("the unrolled layer layout is for inference: it takes no remat policy")
        self.embed_tokens = self.param(
            "embed_tokens",
            nn.with_logical_partitioning(
                nn.initializers.normal(0.02), (axes.CODEBOOKS, axes.VOCAB, axes.EMBED)
            ),
            (cfg.num_codebooks, cfg.vocab_size + 1, cfg.hidden_size),
            self.param_dtype,
        )
        if self.layer_layout == UNROLLED:  # Flax names them layers_0, layers_1, ...
            self.layers = [
                DecoderLayer(cfg, self.dtype, self.param_dtype, out_in=True, int8=self.int8)
                for _ in range(cfg.num_layers)
            ]
        else:
            self.layers = self._scanned_layers()
        if self.int8 and self.layer_layout != UNROLLED:
            raise ValueError("int8 weights run in the unrolled layer layout (layer_layout='unrolled')")
        self.final_norm = layer_norm(cfg, self.dtype, self.param_dtype, "final_norm")
        self.embed_dropout = nn.Dropout(cfg.dropout)
        # [codebooks, vocab, hidden], PyTorch's Linear layout: the logits matmul contracts the
        # minor dimension of both operands, which needs no transposed copy of the heads per step.
        self.lm_heads = self.param(
            "lm_heads",
            nn.with_logical_partitioning(
                nn.initializers.zeros if self.int8 else nn.initializers.normal(0.02),
                (axes.CODEBOOKS, axes.VOCAB, axes.EMBED),
            ),
            (cfg.num_codebooks, cfg.vocab_size, cfg.hidden_size),
            jnp.int8 if self.int8 else self.param_dtype,
        )
        if self.int8:  # one scale per vocabulary row of each head
            self.lm_heads_scale = self.param(
                "lm_heads_scale",
                nn.with_logical_partitioning(nn.initializers.ones, (axes.CODEBOOKS, axes.VOCAB)),
                (cfg.num_codebooks, cfg.vocab_size),
                jnp.float32,
            )

    def _scanned_layers(self):
        cfg = self.config
        layer = DecoderLayer
        if self.remat_policy != "none":
            # kv_length, mode and deterministic are Python values; the count includes self.
            layer = nn.remat(
                layer, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=False, static_argnums=(7, 8, 9)
            )
        return nn.scan(
            layer,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(0,) + (nn.broadcast,) * 7,
            length=cfg.num_layers,
            unroll=self.scan_unroll,
            metadata_params={nn.PARTITION_NAME: axes.LAYERS},
        )(cfg, self.dtype, self.param_dtype, name="layers")

    def _run_layers(self, carry: tuple, layer_inputs: dict | None, *args) -> tuple[tuple, dict | None]:
        """The layer loop, ``(hidden, keys, values), layer_inputs -> (...), outputs``, with the caches,
        ``layer_inputs`` and outputs stacked (scanned) or per-layer tuples (unrolled); ``args`` are
        :class:`DecoderLayer`'s broadcast arguments."""
        if self.layer_layout == SCANNED:
            return self.layers(carry, layer_inputs, *args)
        hidden, keys, values = carry
        new_keys, new_values, outputs = [], [], []
        for index, layer in enumerate(self.layers):
            inputs = None if layer_inputs is None else {k: v[index] for k, v in layer_inputs.items()}
            key = None if keys is None else keys[index]
            value = None if values is None else values[index]
            (hidden, key, value), output = layer((hidden, key, value), inputs, *args)
            new_keys.append(key)
            new_values.append(value)
            outputs.append(output)
        keys = None if keys is None else tuple(new_keys)
        values = None if values is None else tuple(new_values)
        stacked = None if outputs[0] is None else {k: tuple(o[k] for o in outputs) for k in outputs[0]}
        return (hidden, keys, values), stacked

    @property
    def _per_layer(self) -> bool:
        return self.layer_layout == UNROLLED

    def embed(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        deterministic: bool,
        prefix: jax.Array | None = None,  # [batch, prefix_len, hidden]: a melody model's conditioning
    ) -> jax.Array:
        """Sum of per-codebook embeddings (after ``prefix``, when given) plus sinusoidal positions:
        ``[batch, prefix_len + length, hidden]``; ``positions`` covers the prefix too."""
        cfg = self.config
        table = self.embed_tokens.astype(self.dtype)  # [codebooks, vocab + 1, hidden]
        codebook = jnp.arange(cfg.num_codebooks)[None, :, None]
        hidden = table[codebook, tokens].sum(axis=1)  # [batch, length, hidden]
        if cfg.scale_embedding:
            hidden = hidden * math.sqrt(cfg.hidden_size)
        if prefix is not None:
            hidden = jnp.concatenate([prefix.astype(hidden.dtype), hidden], axis=1)
        return self.with_positions(hidden, positions, deterministic)

    def with_positions(self, hidden: jax.Array, positions: jax.Array, deterministic: bool) -> jax.Array:
        sinusoids = sinusoidal_positions(positions, self.config.hidden_size)[None]
        hidden = (hidden.astype(jnp.float32) + sinusoids).astype(self.dtype)
        return self.embed_dropout(hidden, deterministic=deterministic)

    def logits(self, hidden: jax.Array) -> jax.Array:
        hidden = self.final_norm(hidden)
        logits = jnp.einsum(
            "btd,kvd->bktv", hidden, self.lm_heads.astype(self.dtype), preferred_element_type=jnp.float32
        )
        if self.int8:
            logits = logits * self.lm_heads_scale[None, :, None, :]
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
        """The full causal forward pass: logits ``[batch, codebooks, length, vocab]`` in float32.

        Without cross-attention (melody), ``memory`` is the conditioning prefix: the sequence is
        ``[memory; tokens]`` (positions from 0 at the prefix's start, every prefix position attended:
        ``memory_mask`` is not read) and the logits are those of the token positions.
        """
        length = tokens.shape[-1]
        if self.config.cross_attention:
            positions = jnp.arange(length, dtype=jnp.int32)
            hidden = self.embed(tokens, positions, deterministic)
        else:
            positions = jnp.arange(memory.shape[1] + length, dtype=jnp.int32)
            hidden = self.embed(tokens, positions, deterministic, prefix=memory)
            memory = memory_mask = None
        (hidden, _, _), _ = self._run_layers(
            (hidden, None, None), None, memory, memory_mask, positions, None, None, "full", deterministic
        )
        return self.logits(hidden[:, -length:])

    def init_cache(
        self, memory: jax.Array, memory_mask: jax.Array, max_length: int, cache_dtype: jnp.dtype | None = None
    ) -> DecoderCache:
        """An empty self-attention cache of ``max_length`` and the memory's cross keys/values; for a
        melody model, a cache of ``prefix_len + max_length`` positions with the prefix (``memory``)
        already run through the layers (prefilled once: every later step costs what a MusicGen step
        costs, less the cross-attention)."""
        cfg = self.config
        dtype = cache_dtype or self.dtype
        batch = memory.shape[0]
        if not cfg.cross_attention:
            return self._prefilled_cache(memory, max_length, dtype)
        dummy = jnp.zeros((batch, 1, cfg.hidden_size), self.dtype)
        _, cross = self._run_layers(
            (dummy, None, None), None, memory, memory_mask, None, None, None, "project_memory", True
        )
        self_key, self_value = empty_self_attention(
            cfg.num_layers, batch, max_length, cfg.num_heads, cfg.head_dim, dtype, self._per_layer
        )
        cast = lambda tree: jax.tree.map(lambda x: x.astype(dtype), tree)
        return DecoderCache(
            self_key=self_key,
            self_value=self_value,
            cross_key=cast(cross["cross_key"]),
            cross_value=cast(cross["cross_value"]),
            memory_mask=memory_mask.astype(bool),
            index=jnp.zeros((), jnp.int32),
            spare_positions=PER_LAYER_SPARE if self._per_layer else 0,
        )

    def _prefilled_cache(self, prefix: jax.Array, max_length: int, dtype) -> DecoderCache:
        cfg = self.config
        batch, prefix_length = prefix.shape[:2]
        self_key, self_value = empty_self_attention(
            cfg.num_layers,
            batch,
            prefix_length + max_length,
            cfg.num_heads,
            cfg.head_dim,
            dtype,
            self._per_layer,
        )
        empty_cross = jnp.zeros((cfg.num_layers, batch, cfg.num_heads, 0, cfg.head_dim), dtype)
        if self._per_layer:
            empty_cross = tuple(empty_cross)
        cache = DecoderCache(
            self_key=self_key,
            self_value=self_value,
            cross_key=empty_cross,
            cross_value=empty_cross,
            memory_mask=jnp.zeros((batch, 0), bool),
            index=jnp.zeros((), jnp.int32),
            prefix_length=prefix_length,
            spare_positions=PER_LAYER_SPARE if self._per_layer else 0,
        )
        positions = jnp.arange(prefix_length, dtype=jnp.int32)
        hidden = self.with_positions(prefix.astype(self.dtype), positions, True)
        _, cache = self._run_cached(hidden, positions, cache, prefix_length)
        return cache

    def decode_step(
        self, tokens: jax.Array, cache: DecoderCache, kv_length: int | None = None
    ) -> tuple[jax.Array, DecoderCache]:
        """Run ``tokens [batch, codebooks, length]`` at positions ``cache.index + arange(length)``.

        ``kv_length`` (static) bounds the self-attention to the first cache positions past the
        prefix (a melody model's conditioning); it must cover every position written so far.
        Default: the whole cache.
        """
        length = tokens.shape[-1]
        positions = cache.index + jnp.arange(length, dtype=jnp.int32)
        hidden = self.embed(tokens, positions, True)
        span = cache.max_length if kv_length is None else cache.prefix_length + kv_length
        hidden, cache = self._run_cached(hidden, positions, cache, span)
        return self.logits(hidden), cache

    def _run_cached(
        self, hidden: jax.Array, positions: jax.Array, cache: DecoderCache, kv_length: int
    ) -> tuple[jax.Array, DecoderCache]:
        """The layers over ``hidden`` at ``positions`` (from ``cache.index``) against the cache: the
        last layer's output and the cache with these positions written."""
        cfg = self.config
        length = hidden.shape[1]
        # The layer's index into its cache: stacked, its place; a layer's own cache has one entry.
        layer = jnp.arange(cfg.num_layers, dtype=jnp.int32)
        layer_inputs = {"layer": tuple(jnp.zeros_like(layer)) if self._per_layer else layer}
        if cfg.cross_attention:
            layer_inputs.update(cross_key=cache.cross_key, cross_value=cache.cross_value)
        carry = (hidden, cache.self_key, cache.self_value)
        (hidden, self_key, self_value), _ = self._run_layers(
            carry,
            layer_inputs,
            None,
            cache.memory_mask,
            positions,
            cache.index,
            kv_length,
            "cached",
            True,
        )
        cache = cache.replace(self_key=self_key, self_value=self_value, index=cache.index + length)
        return hidden, cache
