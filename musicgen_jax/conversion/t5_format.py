"""Hugging Face T5 checkpoints (``T5EncoderModel``, ``T5Model``, ``T5ForConditionalGeneration``) into
the Flax :class:`~musicgen_jax.models.t5.T5Encoder`: ``model.safetensors``, ``pytorch_model.bin``
(sharded or not) or transformers' Flax ``flax_model.msgpack`` layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from musicgen_jax.conversion.key_maps import t5_encoder_rules, t5_ignored_keys
from musicgen_jax.conversion.params import load_params
from musicgen_jax.conversion.tensors import CheckpointError, TensorSource
from musicgen_jax.models.config import TextEncoderConfig
from musicgen_jax.models.t5 import T5Encoder


def text_encoder_config_from_json(data: dict) -> TextEncoderConfig:
    try:
        return TextEncoderConfig.from_transformers(data)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"not a T5 config: {error}") from None


def expected_t5_shapes(config: TextEncoderConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    ids = jnp.ones((1, 2), jnp.int32)
    shapes = jax.eval_shape(lambda: T5Encoder(config).init(jax.random.key(0), ids, ids))
    return {
        ("text_encoder",) + path: tuple(leaf.shape)
        for path, leaf in traverse_util.flatten_dict(nn.unbox(shapes["params"])).items()
    }


def load_t5_encoder(directory: str | Path, dtype: str = "float32") -> tuple[TextEncoderConfig, dict]:
    """Config and ``{"text_encoder": params}`` from a local T5 directory (see :mod:`musicgen_jax.hub`)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: no config.json; not a Hugging Face T5 directory")
    config = text_encoder_config_from_json(json.loads(config_path.read_text()))
    source = TensorSource.open(directory)
    source.use_tied_copy("shared.weight", "encoder.embed_tokens.weight")
    params = load_params(
        source.get,
        source.keys(),
        t5_encoder_rules(config),
        expected_t5_shapes(config),
        dtype,
        ignored=t5_ignored_keys(),
    )
    return config, params
