"""audiocraft's own LM checkpoint (``state_dict.bin`` as Meta publishes it) into musicgen-jax.

The file is a torch-saved dict: ``best_state`` (the ``LMModel`` state dict: ``emb.*``,
``transformer.layers.*`` with fused ``in_proj_weight``, ``out_norm``, ``linears.*`` and the
description conditioner's ``output_proj``) and ``xp.cfg`` (the training config as OmegaConf YAML),
which gives the model's shape (:meth:`MusicGenConfig.from_audiocraft`) and names its text encoder.
The T5 encoder and the EnCodec codec come from their own checkpoints.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from musicgen_jax import hub
from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion.key_maps import AUDIOCRAFT_IGNORED, AUDIOCRAFT_PROJECTION, audiocraft_rules
from musicgen_jax.conversion.params import load_params
from musicgen_jax.conversion.t5_format import load_t5_encoder
from musicgen_jax.conversion.tensors import CheckpointError, TensorSource, load_torch_file
from musicgen_jax.models.config import MusicGenConfig

STATE_DICT = "state_dict.bin"
TORCH_SUFFIXES = (".bin", ".th", ".pt", ".pth")


@dataclasses.dataclass
class AudiocraftImport:
    config: MusicGenConfig
    params: dict  # host (NumPy) parameter tree: the LM and the T5 encoder
    text_encoder_dir: Path  # the T5 directory (also its tokenizer)


def is_audiocraft_checkpoint(path: str | Path) -> bool:
    """A directory holding ``state_dict.bin``, or a PyTorch file itself (``state_dict.bin`` or any
    ``.bin``/``.th``/``.pt`` file; reading it checks that it is an audiocraft package)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return (path / STATE_DICT).is_file()
    return path.is_file() and (path.name == STATE_DICT or path.suffix in TORCH_SUFFIXES)


def state_dict_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path / STATE_DICT if path.is_dir() else path


def text_encoder_source(name: str | Path) -> str | Path:
    """Where to find a T5 audiocraft names: its legacy hub ids (``t5-base``, ...) live under
    ``google-t5/`` on the hub now; a local directory of that name is used as it is."""
    if isinstance(name, str) and "/" not in name and not Path(name).expanduser().exists():
        return f"google-t5/{name}"
    return name


def read_package(path: str | Path) -> tuple[dict, TensorSource]:
    """``xp.cfg`` (as a dict) and the LM tensors of an audiocraft checkpoint file or directory."""
    file = state_dict_file(path)
    package = load_torch_file(file)
    if not isinstance(package, dict) or "best_state" not in package:
        raise CheckpointError(f"{file}: not an audiocraft LM checkpoint (no 'best_state' in it)")
    if "xp.cfg" not in package:
        raise CheckpointError(
            f"{file}: no 'xp.cfg' beside 'best_state'; audiocraft's export (audiocraft.utils.export."
            "export_lm) writes the training config there, and the model's shape is read from it"
        )
    xp_cfg = package["xp.cfg"]
    if isinstance(xp_cfg, str):  # OmegaConf.to_yaml, as audiocraft exports it
        try:
            xp_cfg = yaml.safe_load(xp_cfg)
        except yaml.YAMLError as error:
            raise CheckpointError(f"{file}: its xp.cfg is not valid YAML ({error})") from None
    elif not isinstance(xp_cfg, dict):  # an OmegaConf DictConfig pickled by older exports
        try:
            from omegaconf import OmegaConf
        except ImportError:
            raise CheckpointError(
                f"{file}: its xp.cfg is a {type(xp_cfg).__name__}; install omegaconf to read it"
            ) from None
        xp_cfg = OmegaConf.to_container(xp_cfg, resolve=True)
    if not isinstance(xp_cfg, dict):
        raise CheckpointError(f"{file}: its xp.cfg is not a mapping")
    return xp_cfg, TensorSource.from_torch_state(package["best_state"], file)


def load_audiocraft(
    path: str | Path,
    *,
    text_encoder: str | Path | None = None,
    preset: str | None = None,
    dtype: str = "float32",
) -> AudiocraftImport:
    """Config and Flax parameters of an audiocraft LM checkpoint (a directory or the file itself).

    The shape comes from the checkpoint's ``xp.cfg``; the projection is kept whenever the
    checkpoint has one (audiocraft's always does, at any widths). ``text_encoder`` (a T5 directory
    or hub id) replaces the one xp.cfg names. ``preset`` (a preset name or YAML path) is optional:
    its other settings are used, but every shape fact must agree with the checkpoint's, or the
    error names the field and both values. Errors about tensors name the checkpoint's own keys.
    """
    file = state_dict_file(path)
    xp_cfg, source = read_package(file)
    t5_dir = hub.resolve(text_encoder_source(text_encoder or MusicGenConfig.audiocraft_text_encoder(xp_cfg)))
    text_config, text_params = load_t5_encoder(t5_dir, dtype)
    # audiocraft's always has one; without it, the widths decide (and a missing one is named).
    projection = True if f"{AUDIOCRAFT_PROJECTION}.weight" in source else None
    name = (file.parent if file.name == STATE_DICT else file.with_suffix("")).name
    try:
        config = MusicGenConfig.from_audiocraft(
            xp_cfg, text_config, text_projection=projection, name=name or "musicgen"
        )
    except ValueError as error:
        raise CheckpointError(f"{file}: {error}") from None
    if preset is not None:
        chosen = MusicGenConfig.preset(preset)
        disagreements = chosen.audiocraft_disagreements(config)
        if disagreements:
            raise CheckpointError(
                f"preset {preset!r} does not fit {file}: "
                + "; ".join(disagreements)
                + " (leave the preset out to take the checkpoint's own shape)"
            )
        try:
            config = dataclasses.replace(chosen, text_projection=projection)
        except ValueError as error:
            raise CheckpointError(f"preset {preset!r} with {file}: {error}") from None
    lm_shapes = {p: s for p, s in ckpt.expected_shapes(config).items() if p[0] != "text_encoder"}
    try:
        params = load_params(
            source.get, source.keys(), audiocraft_rules(config), lm_shapes, dtype, AUDIOCRAFT_IGNORED
        )
    except CheckpointError as error:
        raise CheckpointError(f"{file}: {error}") from None
    params.update(text_params)
    return AudiocraftImport(config=config, params=params, text_encoder_dir=t5_dir)
