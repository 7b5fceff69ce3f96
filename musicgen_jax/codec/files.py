"""Where an EnCodec model's files are, and how its tensor names are spelled: shared by both backends.

A codec comes from a transformers ``EncodecModel`` directory, a transformers MusicGen directory
(its ``audio_encoder``), or a musicgen-jax checkpoint (its ``codec/`` directory), each local or a
hub id. :func:`open_codec` finds the config and the weights of any of them; the PyTorch bridge
(:mod:`musicgen_jax.codec.encodec`) and the JAX codec (:mod:`musicgen_jax.codec.jax_encodec`)
both load through it and both accept either spelling of torch's weight-norm tensors.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Iterable
from pathlib import Path

from musicgen_jax import hub
from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion.tensors import CheckpointError, TensorSource

# Old torch ``weight_norm`` names and the ``parametrizations`` names newer torch saves; both occur
# in published checkpoints (Meta's hub files use the old ones).
WEIGHT_NORM_ALIASES = (
    (".weight_g", ".parametrizations.weight.original0"),
    (".weight_v", ".parametrizations.weight.original1"),
)
# Codebook training statistics: unused at inference, absent from some exports.
OPTIONAL_SUFFIXES = (".inited", ".cluster_size", ".embed_avg")


@dataclasses.dataclass(frozen=True)
class CodecFiles:
    """One codec source, located: its config dict and where its tensors are."""

    directory: Path  # the directory holding the weights
    config: dict  # the EncodecConfig dict (a MusicGen config's ``audio_encoder`` section)
    prefix: str  # tensor-name prefix of the codec inside the weight files ("audio_encoder." or "")
    audio_channels: int | None  # MusicGen's channel count where the source records it
    codebooks: int | None = None  # MusicGen's codebooks per channel (its token layout), likewise

    @property
    def where(self) -> str:
        """The source as error messages name it."""
        return f"{self.directory} ({self.prefix}*)" if self.prefix else str(self.directory)

    def tensors(self) -> TensorSource:
        """The codec's tensors, named as in an ``EncodecModel`` state dict (prefix stripped)."""
        return TensorSource.open(self.directory, prefix=self.prefix)


def open_codec(source: str | Path) -> CodecFiles:
    """Locate the codec of a directory or hub id (see the module docstring for what is accepted)."""
    return locate_codec(hub.resolve(source))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable ({error})") from None


def locate_codec(directory: Path) -> CodecFiles:
    """The :class:`CodecFiles` of a local codec source directory."""
    if ckpt.is_checkpoint(directory):
        codec_dir = directory / ckpt.CODEC
        if not (codec_dir / "config.json").is_file():
            raise CheckpointError(
                f"{directory} is a musicgen-jax checkpoint without a codec/ directory; load the codec from "
                "its own source instead (e.g. facebook/encodec_32khz)"
            )
        decoder = ckpt.load_config(directory).decoder
        return dataclasses.replace(
            locate_codec(codec_dir),
            audio_channels=decoder.audio_channels,
            codebooks=decoder.num_codebooks // decoder.audio_channels,
        )
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"{directory} has no config.json: expected a transformers EncodecModel or MusicGen directory, "
            "or a musicgen-jax checkpoint"
        )
    config = read_json(config_path)
    model_type = config.get("model_type")
    if model_type == "encodec":
        return CodecFiles(directory, config, "", None)
    if model_type in ("musicgen", "musicgen_melody"):
        if "audio_encoder" not in config:
            raise CheckpointError(f"{config_path}: a MusicGen config without an audio_encoder section")
        decoder = config.get("decoder", {})
        channels, codebooks = decoder.get("audio_channels"), decoder.get("num_codebooks")
        per_channel = codebooks // (channels or 1) if isinstance(codebooks, int) else None
        return CodecFiles(directory, dict(config["audio_encoder"]), "audio_encoder.", channels, per_channel)
    raise CheckpointError(
        f"{config_path}: model_type is {model_type!r}; expected 'encodec' (an EncodecModel), 'musicgen' or "
        "'musicgen_melody' (a MusicgenForConditionalGeneration or its melody form: its audio_encoder)"
    )


def model_name(name: str, expected: Collection[str]) -> str | None:
    """The model's name for checkpoint tensor ``name`` (either weight-norm spelling), or None."""
    if name in expected:
        return name
    for old, new in WEIGHT_NORM_ALIASES:
        for this, other in ((old, new), (new, old)):
            if name.endswith(this) and (renamed := name[: -len(this)] + other) in expected:
                return renamed
    return None


def match_names(names: Iterable[str], expected: Collection[str]) -> tuple[dict[str, str], list[str]]:
    """({model name: checkpoint name}, checkpoint names that fit no model name)."""
    matched: dict[str, str] = {}
    unexpected = []
    for name in names:
        target = model_name(name, expected)
        if target is None:
            unexpected.append(name)
        else:
            matched[target] = name
    return matched, sorted(unexpected)


def missing_names(expected: Iterable[str], found: Collection[str]) -> list[str]:
    """Model names with no checkpoint tensor, the optional codebook statistics excepted."""
    return sorted(n for n in expected if n not in found and not n.endswith(OPTIONAL_SUFFIXES))


def fit_error(where: str, missing: list[str], unexpected: list[str]) -> CheckpointError | None:
    """The error for weights that do not fit the config, or None when they do."""
    if not missing and not unexpected:
        return None
    message = f"{where}: the EnCodec weights do not fit the config"
    if missing:
        message += f"; missing {', '.join(missing[:6])}" + (" ..." if len(missing) > 6 else "")
    if unexpected:
        message += f"; unexpected {', '.join(unexpected[:6])}"
    return CheckpointError(message)
