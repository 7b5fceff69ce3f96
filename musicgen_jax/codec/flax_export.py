"""The JAX codec's Flax parameter tree -> a transformers ``EncodecModel`` directory, checked.

The inverse of :mod:`musicgen_jax.codec.flax_params`, read off the same name table
(:func:`~musicgen_jax.codec.flax_params.weight_rules`) and the same axis orders (``TO_FLAX_AXES``),
so a codec trained here loads in transformers (``EncodecModel.from_pretrained``), in the PyTorch
bridge and back in :class:`~musicgen_jax.codec.JaxEncodec`. Tensors are named as transformers 5
names them (weight norm as ``parametrizations.weight.original0/1``; loaders here read either
spelling). Weight norm is un-folded: ``g = |kernel|`` over every axis but torch's first and
``v = kernel``, so folding again (``g * v / |v|``) gives the kernel back to float32 rounding.

The codebooks' training statistics, which transformers' ``EncodecEuclideanCodebook`` holds but
never reads at inference, are written too: ``inited`` = 1, and ``cluster_size``/``embed_avg`` from a
trainer's EMA k-means state when it is given, else ones and the codewords themselves (the state in
which ``embed_avg / cluster_size`` is the codebook, as EnCodec's EMA update keeps it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from flax import traverse_util

from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.flax_params import (
    CODEBOOK_STATISTICS,
    TO_FLAX_AXES,
    WeightRule,
    expected_shapes,
    weight_norm_magnitude,
    weight_rules,
)
from musicgen_jax.conversion.tensors import save_safetensors

CONFIG_FILE = "config.json"
WEIGHTS_STEM = "model"  # model.safetensors, as transformers' save_pretrained names it
STATISTICS = ("cluster_size", "embed_avg")  # the EMA k-means state a trainer may pass


def to_torch_tensors(
    config: CodecConfig, params: dict, codebook_statistics: dict | None = None
) -> dict[str, np.ndarray]:
    """Every tensor of transformers' ``EncodecModel(config).state_dict()``, as float32 NumPy arrays.

    ``params``: the Flax tree ``{"encoder", "decoder", "quantizer"}`` (JAX or NumPy leaves, any float
    dtype), every leaf checked against ``config``. ``codebook_statistics``: ``{"cluster_size":
    [Q, size], "embed_avg": [Q, size, dim]}`` or None (see the module docstring)."""
    flat = _checked_leaves(config, params)
    tensors: dict[str, np.ndarray] = {}
    for rule in weight_rules(config):
        tensors.update(zip(rule.keys, _to_torch(rule, flat[rule.path]), strict=True))
        if rule.layout == "stack":  # the codebooks: their statistics sit beside each ``embed``
            tensors.update(_codebook_statistics(rule, flat[rule.path], codebook_statistics))
    return tensors


def save_pretrained(
    config: CodecConfig,
    params: dict,
    directory: str | Path,
    codebook_statistics: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of a transformers ``EncodecModel`` to ``directory``.

    Both are written to a staging directory beside ``directory`` and renamed into place, so a
    failure leaves either the old directory or none, never half an export. An existing non-empty
    ``directory`` is refused unless ``overwrite`` is set, and even then unless it holds an EnCodec
    model (a ``config.json`` of ``model_type`` ``encodec``): it is then replaced whole."""
    directory = Path(directory)
    tensors = to_torch_tensors(config, params, codebook_statistics)  # every check before the disk
    _check_target(directory, overwrite)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial", dir=directory.parent))
    try:
        save_safetensors(tensors, staging, stem=WEIGHTS_STEM)
        config_dict = {**config.to_dict(), "architectures": ["EncodecModel"]}
        (staging / CONFIG_FILE).write_text(json.dumps(config_dict, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private to its owner
        _move_into_place(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return directory


# ---------------------------------------------------------------------------------- tensors


def _checked_leaves(config: CodecConfig, params: dict) -> dict[tuple[str, ...], np.ndarray]:
    """The leaves of ``params`` by path as float32 NumPy, each the shape ``config`` implies, all finite."""
    if not isinstance(params, dict) and not hasattr(params, "items"):
        raise ValueError(f"params must be the codec's parameter tree (a dict), got {type(params).__name__}")
    flat = traverse_util.flatten_dict(dict(params))
    shapes = expected_shapes(config)
    missing = sorted("/".join(path) for path in shapes.keys() - flat.keys())
    unexpected = sorted("/".join(path) for path in flat.keys() - shapes.keys())
    if missing or unexpected:
        message = "the parameter tree does not fit the codec config"
        for what, names in (("missing", missing), ("unexpected", unexpected)):
            if names:
                message += f"; {what} {', '.join(names[:6])}" + (" ..." if len(names) > 6 else "")
        raise ValueError(message)
    leaves = {}
    for path, shape in shapes.items():
        name = "/".join(path)
        if not hasattr(flat[path], "shape"):
            raise ValueError(f"parameter {name} is a {type(flat[path]).__name__}, not an array")
        leaf = np.asarray(flat[path]).astype(np.float32)
        if leaf.shape != shape:
            raise ValueError(f"parameter {name} has shape {leaf.shape}; the codec config implies {shape}")
        if not np.isfinite(leaf).all():
            raise ValueError(f"parameter {name} holds NaN or infinite values")
        leaves[path] = leaf
    return leaves


def _to_torch(rule: WeightRule, leaf: np.ndarray) -> list[np.ndarray]:
    """The torch tensors of ``rule.keys`` made from the Flax ``leaf`` (the inverse of loading)."""
    if rule.layout == "stack":
        return list(leaf)  # [Q, size, dim] -> one [size, dim] per codebook
    axes = TO_FLAX_AXES.get(rule.layout.removeprefix("weight_norm_"))
    weight = leaf if axes is None else np.ascontiguousarray(leaf.transpose(np.argsort(axes)))
    if not rule.layout.startswith("weight_norm_"):
        return [weight]
    g = weight_norm_magnitude(weight)  # [out, 1, 1] (ConvTranspose1d: [in, 1, 1])
    # An all-zero slice has no direction: v of ones with g = 0 folds back to zeros (0 / 0 would not).
    v = np.where(g > 0, weight, np.float32(1.0))
    return [g, v]


def _codebook_statistics(rule: WeightRule, codebooks: np.ndarray, statistics: dict | None) -> dict:
    """``inited``, ``cluster_size`` and ``embed_avg`` beside each codebook's ``embed`` (``rule.keys``)."""
    count, size, dim = codebooks.shape
    if statistics is None:
        cluster_size, embed_avg = np.ones((count, size), np.float32), codebooks
    else:
        if not hasattr(statistics, "keys") or set(statistics.keys()) != set(STATISTICS):
            found = sorted(statistics.keys()) if hasattr(statistics, "keys") else type(statistics).__name__
            raise ValueError(f"codebook_statistics must hold exactly {list(STATISTICS)}, got {found}")
        cluster_size = np.asarray(statistics["cluster_size"]).astype(np.float32)
        embed_avg = np.asarray(statistics["embed_avg"]).astype(np.float32)
        for name, array, shape in (
            ("cluster_size", cluster_size, (count, size)),
            ("embed_avg", embed_avg, (count, size, dim)),
        ):
            if array.shape != shape:
                raise ValueError(
                    f"codebook_statistics[{name!r}] has shape {array.shape}; the codec config implies {shape}"
                )
    inited = np.ones((count, 1), np.float32)  # transformers' ``inited`` buffer: [True] as a float
    values = {"inited": inited, "cluster_size": cluster_size, "embed_avg": embed_avg}
    tensors = {}
    for k, key in enumerate(rule.keys):  # quantizer.layers.{k}.codebook.embed
        prefix = key.removesuffix("embed")
        for name in CODEBOOK_STATISTICS:
            tensors[prefix + name] = np.ascontiguousarray(values[name][k])
    return tensors


# ---------------------------------------------------------------------------------- files


def _check_target(directory: Path, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} exists and is not a directory")
    if not directory.exists() or not any(directory.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{directory} is not empty; pass overwrite=True to replace an EnCodec export there"
        )
    try:
        model_type = json.loads((directory / CONFIG_FILE).read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if model_type != "encodec":
        raise FileExistsError(
            f"{directory} does not hold an EnCodec model (no {CONFIG_FILE} of model_type 'encodec'); "
            "refusing to replace it even with overwrite=True"
        )


def _move_into_place(staging: Path, directory: Path) -> None:
    """Rename ``staging`` to ``directory``; a non-empty old ``directory`` is moved aside, then deleted."""
    if not directory.exists() or not any(directory.iterdir()):
        os.replace(staging, directory)  # POSIX rename replaces an empty directory
        return
    old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
    os.replace(directory, old)
    try:
        os.replace(staging, directory)
    except OSError:
        os.replace(old, directory)  # put the old export back
        raise
    shutil.rmtree(old)
