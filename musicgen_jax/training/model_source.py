"""Where a run's model comes from: a preset (random init, optionally a pretrained T5), or a
checkpoint to fine-tune (musicgen-jax directory, transformers directory, or a hub id of either).

Returns host (NumPy) parameters, the tokenizer and the codec/generation files to carry along, so
that a run directory is self-contained and exports to the inference format without its source.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from musicgen_jax import hub
from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion import transformers_format
from musicgen_jax.conversion.tensors import CheckpointError
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.training.config import ModelSpec, resolve_model_config

logger = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
CODEC_DIR = "codec"
GENERATION_FILE = "generation_config.json"
MODEL_CONFIG_FILE = "model_config.yaml"


@dataclasses.dataclass
class ModelSource:
    config: MusicGenConfig
    params: dict | None  # the full tree to start from (fine-tuning), else None (random init)
    overrides: dict  # top-level subtrees replacing the random init (a pretrained text encoder)
    tokenizer: Any
    codec_from: Path | None  # a transformers MusicGen dir (codec inside) or an EncodecModel dir
    generation_config: dict | None


def _load_tokenizer(source: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(hub.resolve(source)))


def load_model_source(spec: ModelSpec) -> ModelSource:
    if spec.init_from is not None:
        source = _load_pretrained(spec)
    else:
        source = _from_preset(spec)
    if spec.tokenizer is not None:
        source.tokenizer = _load_tokenizer(spec.tokenizer)
    return source


def _load_pretrained(spec: ModelSpec) -> ModelSource:
    directory = hub.resolve(spec.init_from)
    if ckpt.is_checkpoint(directory):
        base, params = ckpt.load_checkpoint(directory, "float32")
        tokenizer = (
            _load_tokenizer(directory / ckpt.TOKENIZER) if (directory / ckpt.TOKENIZER).is_dir() else None
        )
        codec = directory / ckpt.CODEC if (directory / ckpt.CODEC).is_dir() else None
        generation = ckpt.load_generation_config(directory) or None
    elif transformers_format.is_transformers_checkpoint(directory):
        base, params = transformers_format.load_transformers_params(directory, "float32")
        tokenizer = _load_tokenizer(directory)
        codec = directory
        path = directory / "generation_config.json"
        generation = json.loads(path.read_text()) if path.is_file() else None
    else:
        raise CheckpointError(
            f"model.init_from: {directory} is neither a musicgen-jax checkpoint nor a transformers MusicGen "
            "directory (convert audiocraft checkpoints with convert/hf_to_jax.py first)"
        )
    config = resolve_model_config(spec, base)
    if tokenizer is None:
        raise CheckpointError(f"model.init_from: {directory} has no tokenizer; set model.tokenizer")
    return ModelSource(config, params, {}, tokenizer, codec, generation)


def _from_preset(spec: ModelSpec) -> ModelSource:
    config = resolve_model_config(spec)
    overrides: dict = {}
    tokenizer = None
    if spec.text_encoder_from is not None:
        from musicgen_jax.conversion.t5_format import load_t5_encoder

        t5_dir = hub.resolve(spec.text_encoder_from)
        t5_config, t5_params = load_t5_encoder(t5_dir, "float32")
        if t5_config != config.text_encoder:
            raise CheckpointError(
                f"model.text_encoder_from: {t5_dir} is {t5_config}, "
                f"but the model config asks for {config.text_encoder}"
            )
        overrides = t5_params
        tokenizer = _load_tokenizer(t5_dir)
    if tokenizer is None and spec.tokenizer is None:  # load_model_source loads model.tokenizer
        raise CheckpointError(
            f"model.preset {spec.preset!r} trains from scratch and names no tokenizer: set model.tokenizer "
            "(a tokenizer directory or hub id, e.g. t5-base) or model.text_encoder_from (a pretrained T5, "
            "whose tokenizer is used)"
        )
    return ModelSource(config, None, overrides, tokenizer, None, None)


def write_run_files(source: ModelSource, output_dir: Path) -> None:
    """The model config, tokenizer, codec and generation defaults beside the checkpoints."""
    from musicgen_jax import config_io

    config_io.save_yaml(source.config, output_dir / MODEL_CONFIG_FILE)
    source.tokenizer.save_pretrained(str(output_dir / TOKENIZER_DIR))
    if source.generation_config is not None:
        (output_dir / GENERATION_FILE).write_text(json.dumps(source.generation_config, indent=2))
    codec_dir = output_dir / CODEC_DIR
    if source.codec_from is not None and not codec_dir.is_dir():
        if transformers_format.is_transformers_checkpoint(source.codec_from):
            transformers_format.write_codec_directory(source.codec_from, codec_dir)
        else:
            shutil.copytree(source.codec_from, codec_dir)
