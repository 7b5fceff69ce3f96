"""transformers ``MusicgenForConditionalGeneration`` (and ``MusicgenMelodyForConditionalGeneration``)
directories to and from musicgen-jax.

Import reads the composite checkpoint tensor by tensor (T5 text encoder, ``enc_to_dec_proj``,
decoder) into the Flax tree; the EnCodec weights (``audio_encoder.*``) are written out as a
standalone transformers ``EncodecModel`` directory for the PyTorch codec bridge. Export writes the
same directory layout back, which ``MusicgenForConditionalGeneration.from_pretrained`` loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion.key_maps import MUSICGEN_IGNORED, musicgen_rules
from musicgen_jax.conversion.params import export_params, load_params
from musicgen_jax.conversion.tensors import CheckpointError, TensorSource, save_safetensors
from musicgen_jax.models.config import MusicGenConfig

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)
# The feature extractor's config: transformers 4 saves preprocessor_config.json, 5 processor_config.json.
CODEC_EXTRA_FILES = ("preprocessor_config.json", "processor_config.json")


# transformers' MusicgenForConditionalGeneration and MusicgenMelodyForConditionalGeneration.
MODEL_TYPES = ("musicgen", "musicgen_melody")


def is_transformers_checkpoint(directory: str | Path) -> bool:
    config = Path(directory) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") in MODEL_TYPES
    except json.JSONDecodeError:
        return False


def read_transformers_config(directory: str | Path) -> dict:
    path = Path(directory) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable ({error})") from None
    if data.get("model_type") not in MODEL_TYPES:
        raise CheckpointError(
            f"{path}: model_type is {data.get('model_type')!r}, expected 'musicgen' or 'musicgen_melody' "
            "(a transformers MusicgenForConditionalGeneration or MusicgenMelodyForConditionalGeneration "
            "checkpoint)"
        )
    return data


def load_transformers_params(directory: str | Path, dtype: str = "float32") -> tuple[MusicGenConfig, dict]:
    """Config and Flax parameters (NumPy) of a transformers MusicGen directory."""
    directory = Path(directory)
    hf_config = read_transformers_config(directory)
    config = MusicGenConfig.from_transformers(
        hf_config, name=hf_config.get("_name_or_path") or directory.name
    )
    source = TensorSource.open(directory)
    source.use_tied_copy("text_encoder.shared.weight", "text_encoder.encoder.embed_tokens.weight")
    params = load_params(
        source.get,
        source.keys(),
        musicgen_rules(config),
        ckpt.expected_shapes(config),
        dtype,
        MUSICGEN_IGNORED,
    )
    return config, params


def write_codec_directory(source_dir: str | Path, codec_dir: str | Path) -> Path:
    """The ``audio_encoder`` of a composite checkpoint as a standalone ``EncodecModel`` directory."""
    source_dir, codec_dir = Path(source_dir), Path(codec_dir)
    hf_config = read_transformers_config(source_dir)
    codec_config = dict(hf_config["audio_encoder"])
    codec_config.setdefault("model_type", "encodec")
    codec_config["architectures"] = ["EncodecModel"]
    source = TensorSource.open(source_dir, prefix="audio_encoder.")
    codec_dir.mkdir(parents=True, exist_ok=True)
    save_safetensors(dict(source.items()), codec_dir, stem="model")
    (codec_dir / "config.json").write_text(json.dumps(codec_config, indent=2))
    for name in CODEC_EXTRA_FILES:
        if (source_dir / name).is_file():
            shutil.copy(source_dir / name, codec_dir / name)
    return codec_dir


def _copy_tokenizer(source_dir: Path, target_dir: Path) -> bool:
    found = [name for name in TOKENIZER_FILES if (source_dir / name).is_file()]
    if not found:
        return False
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in found:
        shutil.copy(source_dir / name, target_dir / name)
    return True


def convert_from_transformers(source_dir: str | Path, output_dir: str | Path, dtype: str = "float32") -> Path:
    """Convert a transformers MusicGen directory into a musicgen-jax checkpoint directory."""
    source_dir, output_dir = Path(source_dir), Path(output_dir)
    config, params = load_transformers_params(source_dir, dtype)
    output_dir.mkdir(parents=True, exist_ok=True)
    generation = {}
    if (source_dir / "generation_config.json").is_file():
        generation = json.loads((source_dir / "generation_config.json").read_text())
    ckpt.save_checkpoint(output_dir, config, params, generation_config=generation or None)
    write_codec_directory(source_dir, output_dir / ckpt.CODEC)
    if not _copy_tokenizer(source_dir, output_dir / ckpt.TOKENIZER):
        raise CheckpointError(
            f"{source_dir} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:4])}, ...); "
            "save the processor or tokenizer into it first"
        )
    return output_dir


def export_to_transformers(
    checkpoint_dir: str | Path, output_dir: str | Path, dtype: str | None = None
) -> Path:
    """Write a musicgen-jax checkpoint as a directory transformers loads."""
    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    config, params = ckpt.load_checkpoint(checkpoint_dir)
    if config.has_text_projection and config.text_encoder.d_model == config.decoder.hidden_size:
        # transformers builds enc_to_dec_proj only when the widths differ, and an affine map with a
        # bias cannot be folded into T5 or the bias-free cross-attention projections exactly.
        raise CheckpointError(
            f"{checkpoint_dir}: the model keeps a text projection (audiocraft's output_proj) although "
            f"its text encoder and decoder are both {config.decoder.hidden_size} wide; transformers' "
            "MusicGen has enc_to_dec_proj only when those widths differ, so this model has no "
            "transformers form (it runs here as it is)"
        )
    codec_dir = checkpoint_dir / ckpt.CODEC
    codec_config = None
    tensors = export_params(params, musicgen_rules(config), dtype)
    if (codec_dir / "config.json").is_file():
        codec_config = json.loads((codec_dir / "config.json").read_text())
        codec = TensorSource.open(codec_dir)
        tensors.update({f"audio_encoder.{name}": value for name, value in codec.items()})
    else:
        raise CheckpointError(
            f"{checkpoint_dir} has no codec/ directory; transformers' MusicGen needs the EnCodec weights"
        )
    hf_config = config.to_transformers(codec_config)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob("model*.safetensors*"):
        stale.unlink()
    hf_config.save_pretrained(str(output_dir))
    save_safetensors(tensors, output_dir, stem="model")
    generation = ckpt.load_generation_config(checkpoint_dir) or default_generation_config(config)
    (output_dir / "generation_config.json").write_text(json.dumps(generation, indent=2))
    _copy_tokenizer(checkpoint_dir / ckpt.TOKENIZER, output_dir)
    for name in CODEC_EXTRA_FILES:
        if (codec_dir / name).is_file():
            shutil.copy(codec_dir / name, output_dir / name)
    return output_dir


def default_generation_config(config: MusicGenConfig) -> dict:
    """The generation_config.json Meta's checkpoints ship (sampling, top-k 250, guidance 3, 30 s)."""
    pad = config.decoder.pad_token_id
    return {
        "bos_token_id": pad,
        "pad_token_id": pad,
        "decoder_start_token_id": pad,
        "do_sample": True,
        "guidance_scale": 3.0,
        "max_length": int(round(config.max_duration * config.audio.frame_rate)),
        "top_k": 250,
    }


def params_to_transformers_tensors(config: MusicGenConfig, params: dict) -> dict[str, np.ndarray]:
    """The PyTorch-named tensors of the text encoder, projection and decoder (no codec)."""
    return export_params(params, musicgen_rules(config))
