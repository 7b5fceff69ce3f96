"""Where a run's model comes from: a preset (random init, optionally a pretrained T5), or any source
the loader reads (musicgen-jax checkpoint, transformers directory, audiocraft LM, or a hub id) to
fine-tune.

Returns host (NumPy) parameters, the tokenizer and the codec/generation files to carry along. A run
directory uses the checkpoint layout's names (:mod:`musicgen_jax.conversion.checkpoint`: model
config, tokenizer, codec, generation defaults), so it is self-contained and exports to the
inference format without its source.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from musicgen_jax import config_io, hub
from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion import transformers_format
from musicgen_jax.conversion.loader import load_model, load_tokenizer
from musicgen_jax.conversion.t5_format import load_t5_encoder
from musicgen_jax.conversion.tensors import CheckpointError
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.training.config import ModelSpec, resolve_model_config


@dataclasses.dataclass
class ModelSource:
    config: MusicGenConfig
    params: dict | None  # the full tree to start from (fine-tuning), else None (random init)
    overrides: dict  # top-level subtrees replacing the random init (a pretrained text encoder)
    tokenizer: Any
    codec_from: Path | None  # a transformers MusicGen dir (codec inside) or an EncodecModel dir
    generation_config: dict | None


def load_model_source(spec: ModelSpec) -> ModelSource:
    source = _load_pretrained(spec) if spec.init_from is not None else _from_preset(spec)
    _check_vocabulary(source.tokenizer, source.config)
    return source


def _check_vocabulary(tokenizer, config: MusicGenConfig) -> None:
    """A tokenizer whose ids run past the text encoder's embedding table would train on garbage."""
    if len(tokenizer) > config.text_encoder.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {len(tokenizer)} tokens but the text encoder embeds "
            f"{config.text_encoder.vocab_size}: set model.text_encoder.vocab_size, or name the matching "
            "tokenizer in model.tokenizer"
        )


def _load_pretrained(spec: ModelSpec) -> ModelSource:
    try:
        loaded = load_model(spec.init_from, dtype="float32", tokenizer=spec.tokenizer)
    except CheckpointError as error:
        raise CheckpointError(f"model.init_from: {error}") from None
    config = resolve_model_config(spec, loaded.config)
    generation = loaded.generation_defaults or None
    return ModelSource(config, loaded.params, {}, loaded.tokenizer, loaded.codec_dir, generation)


def _from_preset(spec: ModelSpec) -> ModelSource:
    config = resolve_model_config(spec)
    overrides: dict = {}
    tokenizer_from = spec.tokenizer
    if spec.text_encoder_from is not None:
        t5_dir = hub.resolve(spec.text_encoder_from)
        t5_config, overrides = load_t5_encoder(t5_dir, "float32")
        if t5_config != config.text_encoder:
            raise CheckpointError(
                f"model.text_encoder_from: {t5_dir} is {t5_config}, "
                f"but the model config asks for {config.text_encoder}"
            )
        tokenizer_from = tokenizer_from or t5_dir
    if tokenizer_from is None:
        raise CheckpointError(
            "a model trained from a preset needs its tokenizer: set model.tokenizer (a tokenizer directory "
            "or hub id) or model.text_encoder_from (a T5 whose tokenizer is used)"
        )
    # A codec on disk (the demo recipe's) travels with the run, so its export is self-contained; a
    # hub id stays a name in the config, resolved where the model is loaded.
    codec_dir = Path(config.audio.codec).expanduser()
    codec_from = codec_dir if codec_dir.is_dir() else None
    return ModelSource(config, None, overrides, load_tokenizer(tokenizer_from), codec_from, None)


def write_run_files(source: ModelSource, output_dir: Path) -> None:
    """The model config, tokenizer, codec and generation defaults beside the checkpoints."""
    config_io.save_yaml(source.config, output_dir / ckpt.CONFIG)
    source.tokenizer.save_pretrained(str(output_dir / ckpt.TOKENIZER))
    if source.generation_config is not None:
        (output_dir / ckpt.GENERATION).write_text(json.dumps(source.generation_config, indent=2))
    codec_dir = output_dir / ckpt.CODEC
    if source.codec_from is not None and not codec_dir.is_dir():
        if transformers_format.is_transformers_checkpoint(source.codec_from):
            transformers_format.write_codec_directory(source.codec_from, codec_dir)
        else:
            shutil.copytree(source.codec_from, codec_dir)
