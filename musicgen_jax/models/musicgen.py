"""The whole MusicGen network as one Flax module: T5 encoder, projection, attribute embedder,
decoder. Methods are the entry points used by generation and training (``model.apply(params,
..., method=...)``); none of them does I/O or knows about devices.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.conditioning import null_attributes
from musicgen_jax.models.attribute_embedder import AttributeEmbedder
from musicgen_jax.models.cache import DecoderCache
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.models.decoder import MusicGenDecoder
from musicgen_jax.models.layer_layout import SCANNED
from musicgen_jax.models.t5 import T5Encoder
from musicgen_jax.sharding import axes


class MusicGenModel(nn.Module):
    config: MusicGenConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat_policy: str = "none"
    scan_unroll: int = 1  # decoder layers per layer-scan iteration (see MusicGenDecoder)
    layer_layout: str = SCANNED  # the decoder's parameter layout (models/layer_layout.py)
    int8: bool = False  # weight-only int8 decoder projections and heads (models/int8.py)

    def setup(self) -> None:
        cfg = self.config
        self.text_encoder = T5Encoder(cfg.text_encoder, self.dtype, self.param_dtype)

        def to_decoder_width(input_axis: str) -> nn.Dense:
            """A biased projection of conditioning features to the decoder's width."""
            return nn.Dense(
                cfg.decoder.hidden_size,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.normal(0.02), (input_axis, axes.EMBED)
                ),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes.EMBED,)),
            )

        if cfg.has_text_projection:
            self.text_projection = to_decoder_width(axes.TEXT_EMBED)
        if cfg.has_chroma_projection:
            self.chroma_projection = to_decoder_width(axes.CHROMA)
        if cfg.uses_learned_attributes:
            self.attribute_embedder = AttributeEmbedder(
                cfg.decoder.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype
            )
        self.decoder = MusicGenDecoder(
            cfg.decoder,
            self.dtype,
            self.param_dtype,
            self.remat_policy,
            self.scan_unroll,
            self.layer_layout,
            self.int8,
        )

    # ----------------------------------------------------------------------------- conditioning

    def encode_text(self, text_ids: jax.Array, text_mask: jax.Array, deterministic: bool = True) -> jax.Array:
        """T5 hidden states ``[batch, text_len, d_model]`` (what a frozen-T5 run may precompute)."""
        return self.text_encoder(text_ids, text_mask, deterministic)

    def condition(
        self,
        text_states: jax.Array,  # [batch, text_len, d_model] T5 output
        text_mask: jax.Array,  # [batch, text_len]
        attributes: dict[str, jax.Array] | None = None,
        chroma: jax.Array | None = None,  # [batch, frames, num_chroma]: a melody model's melodies
    ) -> tuple[jax.Array, jax.Array]:
        """Cross-attention memory ``[batch, cond_len, hidden]`` and its mask from T5 states.

        A melody model returns its decoder prefix instead: ``[chroma states; text memory]``
        (``cond_len = chroma_length + text_len``) with an all-true mask, as transformers builds
        it: the chroma projected and repeated (or cut) to ``chroma_length`` frames, then the text
        as below (padded positions zero and, unlike cross-attention, still read by the decoder).
        ``chroma`` None: every row's melody is the null chroma (bin 0, one-hot).

        As transformers does: project to decoder width, then zero padded positions, which the
        cross-attention then masks (``conditioning.text_padding`` "mask"). With "zeros_attended"
        the zeroed positions stay visible to the cross-attention, as in audiocraft, whose
        cross-attention has no key padding mask: their keys and values are zero, so each takes
        softmax mass (a score of 0) and adds nothing. An empty text (mask all zero) is all zeros
        either way, which attends to nothing in effect: the null condition is unchanged.
        """
        memory = self.text_projection(text_states) if self.config.has_text_projection else text_states
        memory = memory * text_mask[..., None].astype(memory.dtype)
        if self.config.is_melody:
            prefix = jnp.concatenate([self.chroma_states(chroma, memory.shape[0]), memory], axis=1)
            prefix = nn.with_logical_constraint(prefix, (axes.BATCH, axes.COND_LEN, axes.ACT_EMBED))
            return prefix, jnp.ones(prefix.shape[:2], bool)
        if self.config.conditioning.text_padding == "zeros_attended":
            mask = jnp.ones(text_mask.shape, bool)
        else:
            mask = text_mask.astype(bool)
        if self.config.uses_learned_attributes:
            if attributes is None:
                raise ValueError("this model learned attribute embeddings: pass attributes (or null ones)")
            tokens, token_mask = self.attribute_embedder(attributes)
            memory = jnp.concatenate([memory, tokens.astype(memory.dtype)], axis=1)
            mask = jnp.concatenate([mask, token_mask], axis=1)
        memory = nn.with_logical_constraint(memory, (axes.BATCH, axes.COND_LEN, axes.ACT_EMBED))
        return memory, mask

    def chroma_states(self, chroma: jax.Array | None, batch: int) -> jax.Array:
        """A melody model's chroma prefix ``[batch, chroma_length, hidden]``: ``chroma [batch,
        frames, num_chroma]`` (None: the null chroma, bin 0 one-hot) repeated whole as often as
        needed and cut to ``chroma_length`` frames, then projected to decoder width."""
        melody = self.config.melody
        if chroma is None:
            chroma = jnp.zeros((batch, 1, melody.num_chroma), self.dtype).at[:, :, 0].set(1)
        frames = chroma.shape[1]
        repeats = -(-melody.chroma_length // frames)
        chroma = jnp.tile(chroma.astype(self.dtype), (1, repeats, 1))[:, : melody.chroma_length]
        return self.chroma_projection(chroma) if self.config.has_chroma_projection else chroma

    def null_condition(self, memory: jax.Array, memory_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The null condition of classifier-free guidance for conditioning of this shape, as
        transformers builds it: zero memory, nothing attended (:func:`null_condition`); for a melody
        model, the null chroma's states (bin 0 one-hot, projected: not zero) then zero text states,
        every position attended."""
        if not self.config.is_melody:
            return null_condition(memory, memory_mask)
        batch, length = memory.shape[:2]
        chroma = self.chroma_states(None, batch).astype(memory.dtype)
        text = jnp.zeros((batch, length - chroma.shape[1], memory.shape[2]), memory.dtype)
        return jnp.concatenate([chroma, text], axis=1), jnp.ones_like(memory_mask)

    def with_null_condition(self, memory: jax.Array, memory_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Conditional rows then null rows, ``[2 * batch, ...]``, for one guided decoder batch."""
        null_memory, null_mask = self.null_condition(memory, memory_mask)
        return jnp.concatenate([memory, null_memory], axis=0), jnp.concatenate(
            [memory_mask, null_mask], axis=0
        )

    def encode(
        self,
        text_ids: jax.Array,
        text_mask: jax.Array,
        attributes: dict[str, jax.Array] | None = None,
        deterministic: bool = True,
        chroma: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        text_states = self.encode_text(text_ids, text_mask, deterministic)
        return self.condition(text_states, text_mask, attributes, chroma)

    # ---------------------------------------------------------------------------------- decoding

    def decode(
        self, tokens: jax.Array, memory: jax.Array, memory_mask: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        """Full causal pass: logits ``[batch, codebooks, length, vocab]`` (float32)."""
        return self.decoder(tokens, memory, memory_mask, deterministic)

    def init_cache(
        self, memory: jax.Array, memory_mask: jax.Array, max_length: int, cache_dtype: jnp.dtype | None = None
    ) -> DecoderCache:
        return self.decoder.init_cache(memory, memory_mask, max_length, cache_dtype)

    def decode_step(
        self, tokens: jax.Array, cache: DecoderCache, kv_length: int | None = None
    ) -> tuple[jax.Array, DecoderCache]:
        return self.decoder.decode_step(tokens, cache, kv_length)

    def __call__(
        self,
        text_ids: jax.Array,
        text_mask: jax.Array,
        tokens: jax.Array,
        attributes: dict[str, jax.Array] | None = None,
        deterministic: bool = True,
        chroma: jax.Array | None = None,  # [batch, frames, num_chroma], melody models only
    ) -> jax.Array:
        memory, memory_mask = self.encode(text_ids, text_mask, attributes, deterministic, chroma)
        return self.decode(tokens, memory, memory_mask, deterministic)


def init_inputs(config: MusicGenConfig) -> tuple:
    """The smallest arguments of ``MusicGenModel.__call__`` (``init`` and ``jax.eval_shape``): text ids
    and mask ``[1, 2]``, tokens ``[1, codebooks, 2]``, and null attributes for learned-attribute models."""
    text = jnp.ones((1, 2), jnp.int32)
    tokens = jnp.zeros((1, config.decoder.num_codebooks, 2), jnp.int32)
    attributes = null_attributes(1).as_dict() if config.uses_learned_attributes else None
    return text, text, tokens, attributes


def null_condition(memory: jax.Array, memory_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The null condition for classifier-free guidance of a cross-attention model: zero memory,
    nothing attended (a melody model's is :meth:`MusicGenModel.null_condition`).

    Equal to transformers' (zero T5 states, mask 0: the projection's bias is masked away) and to
    audiocraft's empty-string condition with mask 0.
    """
    return jnp.zeros_like(memory), jnp.zeros_like(memory_mask)


def with_null_condition(memory: jax.Array, memory_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Conditional rows then null rows, ``[2 * batch, ...]``, for one guided decoder batch of a
    cross-attention model (any model: :meth:`MusicGenModel.with_null_condition`)."""
    null_memory, null_mask = null_condition(memory, memory_mask)
    return jnp.concatenate([memory, null_memory], axis=0), jnp.concatenate([memory_mask, null_mask], axis=0)
