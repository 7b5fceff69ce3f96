"""The name tables between PyTorch checkpoints and the Flax parameter tree.

One table per checkpoint format: transformers' ``MusicgenForConditionalGeneration`` (and the T5
encoder inside it or on its own), and audiocraft's LM ``state_dict.bin``. A :class:`Rule` names a
Flax leaf, the PyTorch key (a template over layers or codebooks when the Flax leaf is stacked), and
the layout change between them. Loading checks every shape and that every key is consumed.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

import numpy as np

from musicgen_jax.models.config import MusicGenConfig, TextEncoderConfig

# copy: same array. transpose: torch Linear [out, in] <-> Flax [in, out]. heads_in: [heads * kv, in]
# <-> [in, heads, kv]. heads_out: [out, heads * kv] <-> [heads, kv, out].
Layout = Literal["copy", "transpose", "heads_in", "heads_out"]


@dataclasses.dataclass(frozen=True)
class Rule:
    path: tuple[str, ...]  # Flax parameter path
    key: str  # PyTorch name; "{i}" is the stacked index when ``stack`` is set
    layout: Layout = "copy"
    stack: int = 0  # size of the stacked leading axis of the Flax leaf (0: not stacked)
    heads: int = 0  # for heads_in / heads_out
    # A fused PyTorch tensor (audiocraft's in_proj_weight, q/k/v stacked by rows) feeds ``parts``
    # Flax leaves; this rule takes the rows of part ``part`` (of equal size).
    part: int = 0
    parts: int = 1

    def torch_keys(self) -> list[str]:
        return [self.key.format(i=i) for i in range(self.stack)] if self.stack else [self.key]

    def describe(self, key: str) -> str:
        """``key``, with the part of its rows when the tensor is fused."""
        return f"{key} (rows part {self.part + 1} of {self.parts})" if self.parts > 1 else key


def torch_part(array: np.ndarray, rule: Rule) -> np.ndarray:
    """The rows of a fused tensor that ``rule`` reads (the whole tensor when it is not fused)."""
    if rule.parts == 1:
        return array
    if array.shape[0] % rule.parts:
        raise ValueError(f"{array.shape[0]} rows do not split into {rule.parts} equal parts")
    size = array.shape[0] // rule.parts
    return array[rule.part * size : (rule.part + 1) * size]


def to_flax(array: np.ndarray, rule: Rule) -> np.ndarray:
    array = torch_part(array, rule)
    if rule.layout == "copy":
        return array
    if rule.layout == "transpose":
        return array.T
    if rule.layout == "heads_in":
        return array.T.reshape(array.shape[1], rule.heads, array.shape[0] // rule.heads)
    if rule.layout == "heads_out":
        return array.T.reshape(rule.heads, array.shape[1] // rule.heads, array.shape[0])
    raise ValueError(rule.layout)


def to_torch(array: np.ndarray, rule: Rule) -> np.ndarray:
    if rule.layout == "copy":
        return array
    if rule.layout == "transpose":
        return array.T
    if rule.layout == "heads_in":  # [in, heads, kv] -> [heads * kv, in]
        return array.reshape(array.shape[0], -1).T
    if rule.layout == "heads_out":  # [heads, kv, out] -> [out, heads * kv]
        return array.reshape(-1, array.shape[-1]).T
    raise ValueError(rule.layout)


def t5_encoder_rules(
    config: TextEncoderConfig, prefix: str = "", root: tuple[str, ...] = ("text_encoder",)
) -> list[Rule]:
    """transformers' T5 encoder keys (``T5EncoderModel``/``T5Model`` layout) under ``prefix``."""
    n = config.num_layers
    block = f"{prefix}encoder.block.{{i}}.layer"
    blocks = root + ("blocks",)
    rules = [
        Rule(root + ("token_embedding", "embedding"), f"{prefix}shared.weight"),
        Rule(
            root + ("relative_attention_bias",),
            f"{prefix}encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        ),
        Rule(blocks + ("attention_norm", "weight"), f"{block}.0.layer_norm.weight", stack=n),
        Rule(blocks + ("query", "kernel"), f"{block}.0.SelfAttention.q.weight", "transpose", n),
        Rule(blocks + ("key", "kernel"), f"{block}.0.SelfAttention.k.weight", "transpose", n),
        Rule(blocks + ("value", "kernel"), f"{block}.0.SelfAttention.v.weight", "transpose", n),
        Rule(blocks + ("output", "kernel"), f"{block}.0.SelfAttention.o.weight", "transpose", n),
        Rule(blocks + ("mlp_norm", "weight"), f"{block}.1.layer_norm.weight", stack=n),
        Rule(blocks + ("wo", "kernel"), f"{block}.1.DenseReluDense.wo.weight", "transpose", n),
        Rule(root + ("final_norm", "weight"), f"{prefix}encoder.final_layer_norm.weight"),
    ]
    if config.is_gated:
        rules += [
            Rule(blocks + ("wi_0", "kernel"), f"{block}.1.DenseReluDense.wi_0.weight", "transpose", n),
            Rule(blocks + ("wi_1", "kernel"), f"{block}.1.DenseReluDense.wi_1.weight", "transpose", n),
        ]
    else:
        rules.append(Rule(blocks + ("wi", "kernel"), f"{block}.1.DenseReluDense.wi.weight", "transpose", n))
    return rules


def t5_ignored_keys(prefix: str = "") -> list[str]:
    """Keys a T5 checkpoint may hold that the encoder does not use (tied copies, the T5 decoder)."""
    return [
        re.escape(f"{prefix}encoder.embed_tokens.weight"),
        re.escape(f"{prefix}decoder.") + ".*",
        re.escape(f"{prefix}lm_head.weight"),
    ]


def decoder_rules(config: MusicGenConfig, prefix: str = "decoder.") -> list[Rule]:
    """transformers' ``MusicgenForCausalLM`` keys under ``prefix``."""
    dec = config.decoder
    n, h = dec.num_layers, dec.num_heads
    layer = f"{prefix}model.decoder.layers.{{i}}"
    root = ("decoder",)
    layers = root + ("layers",)
    rules = [
        Rule(
            root + ("embed_tokens",),
            f"{prefix}model.decoder.embed_tokens.{{i}}.weight",
            stack=dec.num_codebooks,
        ),
        Rule(root + ("lm_heads",), f"{prefix}lm_heads.{{i}}.weight", stack=dec.num_codebooks),
        Rule(root + ("final_norm", "scale"), f"{prefix}model.decoder.layer_norm.weight"),
        Rule(root + ("final_norm", "bias"), f"{prefix}model.decoder.layer_norm.bias"),
        Rule(layers + ("fc1", "kernel"), f"{layer}.fc1.weight", "transpose", n),
        Rule(layers + ("fc2", "kernel"), f"{layer}.fc2.weight", "transpose", n),
    ]
    # A melody decoder (transformers' MusicgenMelodyForCausalLM) has no encoder_attn.
    attentions = [("self_attention", "self_attn")]
    norms = [("self_attention_norm", "self_attn_layer_norm")]
    if dec.cross_attention:
        attentions.append(("cross_attention", "encoder_attn"))
        norms.append(("cross_attention_norm", "encoder_attn_layer_norm"))
    norms.append(("mlp_norm", "final_layer_norm"))
    for ours, theirs in attentions:
        for proj, torch_proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            rules.append(
                Rule(
                    layers + (ours, proj, "kernel"), f"{layer}.{theirs}.{torch_proj}.weight", "heads_in", n, h
                )
            )
        rules.append(
            Rule(layers + (ours, "out", "kernel"), f"{layer}.{theirs}.out_proj.weight", "heads_out", n, h)
        )
    for ours, theirs in norms:
        rules.append(Rule(layers + (ours, "scale"), f"{layer}.{theirs}.weight", stack=n))
        rules.append(Rule(layers + (ours, "bias"), f"{layer}.{theirs}.bias", stack=n))
    return rules


def projection_rules(config: MusicGenConfig, prefix: str = "enc_to_dec_proj.") -> list[Rule]:
    if not config.has_text_projection:
        return []
    return [
        Rule(("text_projection", "kernel"), f"{prefix}weight", "transpose"),
        Rule(("text_projection", "bias"), f"{prefix}bias"),
    ]


def chroma_projection_rules(config: MusicGenConfig, prefix: str = "audio_enc_to_dec_proj.") -> list[Rule]:
    """A melody model's chroma projection (transformers builds it when num_chroma != width)."""
    if not config.has_chroma_projection:
        return []
    return [
        Rule(("chroma_projection", "kernel"), f"{prefix}weight", "transpose"),
        Rule(("chroma_projection", "bias"), f"{prefix}bias"),
    ]


def musicgen_rules(config: MusicGenConfig) -> list[Rule]:
    """Every rule of transformers' composite ``MusicgenForConditionalGeneration`` checkpoint, or of
    ``MusicgenMelodyForConditionalGeneration`` for a melody model (its decoder without
    ``encoder_attn``, plus ``audio_enc_to_dec_proj``)."""
    return (
        t5_encoder_rules(config.text_encoder, "text_encoder.")
        + projection_rules(config)
        + chroma_projection_rules(config)
        + decoder_rules(config, "decoder.")
    )


MUSICGEN_IGNORED = [
    r"audio_encoder\..*",  # the codec stays in PyTorch (see musicgen_jax.codec)
    r"decoder\.model\.decoder\.embed_positions\.weights",  # sinusoidal, recomputed
    *t5_ignored_keys("text_encoder."),
]


# ------------------------------------------------------------------------------------ audiocraft

AUDIOCRAFT_PROJECTION = "condition_provider.conditioners.description.output_proj"


def audiocraft_rules(config: MusicGenConfig) -> list[Rule]:
    """audiocraft's ``LMModel`` state dict (``best_state`` of ``state_dict.bin``), by its own names.

    ``emb.{k}``, ``linears.{k}``, ``out_norm``; per layer ``self_attn`` and ``cross_attention``
    with fused ``in_proj_weight`` (q, k, v stacked by rows) and ``out_proj``, ``linear1/2``,
    ``norm1/norm_cross/norm2``; the description conditioner's ``output_proj``.
    """
    dec = config.decoder
    n, h = dec.num_layers, dec.num_heads
    layer = "transformer.layers.{i}"
    root = ("decoder",)
    layers = root + ("layers",)
    rules = [
        Rule(root + ("embed_tokens",), "emb.{i}.weight", stack=dec.num_codebooks),
        Rule(root + ("lm_heads",), "linears.{i}.weight", stack=dec.num_codebooks),
        Rule(root + ("final_norm", "scale"), "out_norm.weight"),
        Rule(root + ("final_norm", "bias"), "out_norm.bias"),
        Rule(layers + ("fc1", "kernel"), f"{layer}.linear1.weight", "transpose", n),
        Rule(layers + ("fc2", "kernel"), f"{layer}.linear2.weight", "transpose", n),
    ]
    for ours, theirs in (("self_attention", "self_attn"), ("cross_attention", "cross_attention")):
        for part, proj in enumerate(("query", "key", "value")):
            rules.append(
                Rule(
                    layers + (ours, proj, "kernel"),
                    f"{layer}.{theirs}.in_proj_weight",
                    "heads_in",
                    n,
                    h,
                    part=part,
                    parts=3,
                )
            )
        rules.append(
            Rule(layers + (ours, "out", "kernel"), f"{layer}.{theirs}.out_proj.weight", "heads_out", n, h)
        )
    for ours, theirs in (
        ("self_attention_norm", "norm1"),
        ("cross_attention_norm", "norm_cross"),
        ("mlp_norm", "norm2"),
    ):
        rules.append(Rule(layers + (ours, "scale"), f"{layer}.{theirs}.weight", stack=n))
        rules.append(Rule(layers + (ours, "bias"), f"{layer}.{theirs}.bias", stack=n))
    return rules + projection_rules(config, f"{AUDIOCRAFT_PROJECTION}.")


# Tensors audiocraft keeps beside the LM that have no counterpart here.
AUDIOCRAFT_IGNORED = [r".*\.num_batches_tracked"]
