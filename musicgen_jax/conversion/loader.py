"""One loader: any model source to (config, parameters, tokenizer, codec, generation defaults).

A source is a musicgen-jax checkpoint directory (the layout of :mod:`checkpoint`, which training
runs write too), a transformers MusicGen directory (converted tensor by tensor on the way in), an
audiocraft LM checkpoint (``state_dict.bin``, with a T5 directory for its text encoder), or a
Hugging Face hub id of any of those. Inference (``MusicGen.from_pretrained``) and training
(``model.init_from``) both load through :func:`load_model`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from musicgen_jax import hub
from musicgen_jax.conversion import audiocraft_format, transformers_format
from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion.tensors import CheckpointError
from musicgen_jax.dtypes import numpy_dtype
from musicgen_jax.models.config import MusicGenConfig


@dataclasses.dataclass
class LoadedModel:
    config: MusicGenConfig
    params: dict  # host (NumPy) parameter tree in the dtype asked for
    tokenizer: Any
    codec_source: str | Path | None  # EncodecModel directory, MusicGen directory holding one, or hub id
    generation_defaults: dict
    source: str

    @property
    def codec_dir(self) -> Path | None:
        """The codec as a local directory, when it is one (a hub id is fetched by the codec itself)."""
        if self.codec_source is None:
            return None
        path = Path(self.codec_source)
        return path if path.is_dir() else None


def _map_leaves(function, tree):
    """``function`` over the leaves of a nested dict of arrays."""
    if isinstance(tree, dict):
        return {key: _map_leaves(function, value) for key, value in tree.items()}
    return function(tree)


def load_tokenizer(name_or_path: str | Path):
    """A Hugging Face tokenizer from a directory or hub id."""
    from transformers import AutoTokenizer

    directory = hub.resolve(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{directory}: could not load the tokenizer ({error})") from None


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str = "float32",
    tokenizer: str | Path | None = None,
    text_encoder: str | Path | None = None,
    preset: str | None = None,
    codec: str | Path | None = None,
    text_padding: str | None = None,
    adapter: str | Path | None = None,
) -> LoadedModel:
    """Load any supported source; parameters are read straight into ``dtype``.

    ``adapter``: a PEFT LoRA directory (``adapter_config.json`` + ``adapter_model.safetensors``, made
    with transformers + peft for this model, or by ``train.py export --adapter-only``) merged into
    the weights; the merge is done in float32 and the result cast to ``dtype``.

    ``tokenizer`` replaces the source's own tokenizer. ``text_encoder`` (a T5 directory or hub id;
    default: the one the checkpoint's xp.cfg names) and ``preset`` (optional; it must agree with
    the checkpoint's shape) are read only for audiocraft checkpoints (a directory holding
    ``state_dict.bin``, or the file), which hold just the language model; ``codec`` (an EnCodec
    directory or hub id) replaces the source's codec. ``text_padding`` ("mask" or
    "zeros_attended", see :class:`~musicgen_jax.models.config.ConditioningConfig`) replaces the
    config's.
    """
    if adapter is not None:
        from musicgen_jax.conversion.peft_format import merge_peft_adapter

        base = load_model(
            name_or_path,
            dtype="float32",
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            preset=preset,
            codec=codec,
            text_padding=text_padding,
        )
        adapter_dir = hub.resolve(adapter)
        merged = merge_peft_adapter(base.params, base.config, adapter_dir)
        target = numpy_dtype(dtype)
        params = _map_leaves(lambda leaf: leaf.astype(target), merged)
        return dataclasses.replace(base, params=params, source=f"{name_or_path} + {adapter}")
    local = Path(name_or_path).expanduser()
    is_file = not (isinstance(name_or_path, str) and name_or_path in hub.BUILTIN_MODELS) and local.is_file()
    directory = local if is_file else hub.resolve(name_or_path)
    if is_file and not audiocraft_format.is_audiocraft_checkpoint(directory):
        raise CheckpointError(
            f"{directory} is a file; point at the model's directory (a file is read only as an "
            "audiocraft LM checkpoint, state_dict.bin)"
        )
    if ckpt.is_checkpoint(directory):
        config, params = ckpt.load_checkpoint(directory, dtype)
        tokenizer_dir: str | Path = directory / ckpt.TOKENIZER
        if tokenizer is None and not Path(tokenizer_dir).is_dir():
            raise CheckpointError(f"{directory} has no {ckpt.TOKENIZER}/ directory; name a tokenizer")
        codec_dir = directory / ckpt.CODEC
        codec_source = codec_dir if codec_dir.is_dir() else config.audio.codec
        generation = ckpt.load_generation_config(directory)
    elif transformers_format.is_transformers_checkpoint(directory):
        config, params = transformers_format.load_transformers_params(directory, dtype)
        tokenizer_dir, codec_source = directory, directory
        generation = ckpt.load_generation_config(directory)
    elif audiocraft_format.is_audiocraft_checkpoint(directory):
        imported = audiocraft_format.load_audiocraft(
            directory, text_encoder=text_encoder, preset=preset, dtype=dtype
        )
        config, params = imported.config, imported.params
        tokenizer_dir, codec_source, generation = imported.text_encoder_dir, config.audio.codec, {}
    else:
        raise CheckpointError(
            f"{directory} is neither a musicgen-jax checkpoint ({ckpt.MARKER}), a transformers MusicGen "
            "directory (config.json with model_type 'musicgen'), nor an audiocraft LM (state_dict.bin)"
        )
    if text_padding is not None:
        config = config.with_text_padding(text_padding)
    return LoadedModel(
        config=config,
        params=params,
        tokenizer=load_tokenizer(tokenizer if tokenizer is not None else tokenizer_dir),
        codec_source=codec if codec is not None else codec_source,
        generation_defaults=generation,
        source=str(name_or_path),
    )
