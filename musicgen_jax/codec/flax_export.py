"""The JAX codec's Flax parameters -> a transformers ``EncodecModel`` directory: the inverse of
:mod:`musicgen_jax.codec.flax_params`, read off the same name table (:func:`weight_rules`).

Weight norm is unfolded as torch would hold it after training: ``g = |kernel|`` per output channel
and ``v = kernel`` (folding again gives the kernel back to float32 rounding). Tensors are named with
newer torch's ``parametrizations.weight.original0/1`` spelling, which transformers saves and every
loader here reads. The codebooks' statistics (``inited``, ``cluster_size``, ``embed_avg``) are
written too: a trainer's EMA statistics when given, else neutral ones (``cluster_size`` 1,
``embed_avg`` the codeword), so that transformers loads the directory without a missing-key warning.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from flax import traverse_util

from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.flax_params import WeightRule, expected_shapes, weight_rules
from musicgen_jax.conversion.tensors import CheckpointError

WEIGHTS_FILE = "model.safetensors"


def _from_flax(rule: WeightRule, leaf: np.ndarray) -> list[np.ndarray]:
    """The torch tensors ``rule.keys`` of one Flax leaf (the inverse of ``flax_params._to_flax``)."""
    if rule.layout == "stack":
        return list(leaf)
    if rule.layout in ("conv", "weight_norm_conv"):
        weight = leaf.transpose(2, 1, 0)  # [k, in, out] -> [out, in, k]
    elif rule.layout in ("conv_transpose", "weight_norm_conv_transpose"):
        weight = leaf.transpose(1, 2, 0)  # [k, in, out] -> [in, out, k]
    elif rule.layout == "transpose":
        weight = leaf.T
    else:
        weight = leaf
    if rule.layout.startswith("weight_norm_"):
        axes = tuple(range(1, weight.ndim))
        g = np.sqrt(np.sum(np.square(weight.astype(np.float64)), axis=axes, keepdims=True)).astype(np.float32)
        return [g, weight]
    return [weight]


def to_torch_tensors(
    config: CodecConfig, params: dict, codebook_statistics: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Every tensor of transformers' ``EncodecModel`` state dict for ``config``, from ``params``
    (``{"encoder", "decoder", "quantizer": {"codebooks"}}``); ``codebook_statistics``:
    ``{"cluster_size": [Q, size], "embed_avg": [Q, size, dim]}``."""
    flat = {path: np.asarray(leaf, np.float32) for path, leaf in traverse_util.flatten_dict(params).items()}
    shapes = expected_shapes(config)
    if set(flat) != set(shapes):
        missing, extra = sorted(set(shapes) - set(flat)), sorted(set(flat) - set(shapes))
        raise CheckpointError(
            "the parameters do not fit the codec config: "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join('/'.join(p) for p in missing[:4])}" if missing else "",
                    f"unexpected {', '.join('/'.join(p) for p in extra[:4])}" if extra else "",
                )
                if part
            )
        )
    tensors: dict[str, np.ndarray] = {}
    for rule in weight_rules(config):
        leaf = flat[rule.path]
        if leaf.shape != shapes[rule.path]:
            raise CheckpointError(
                f"{'/'.join(rule.path)} has shape {leaf.shape}, the codec config implies {shapes[rule.path]}"
            )
        for key, tensor in zip(rule.keys, _from_flax(rule, leaf)):
            tensors[key] = np.ascontiguousarray(tensor, np.float32)
    codebooks = flat[("quantizer", "codebooks")]
    statistics = codebook_statistics or {
        "cluster_size": np.ones(codebooks.shape[:2], np.float32),
        "embed_avg": codebooks,
    }
    for name, shape in (("cluster_size", codebooks.shape[:2]), ("embed_avg", codebooks.shape)):
        if np.shape(statistics[name]) != shape:
            raise CheckpointError(f"codebook {name} has shape {np.shape(statistics[name])}, expected {shape}")
    for stage in range(codebooks.shape[0]):
        prefix = f"quantizer.layers.{stage}.codebook."
        tensors[prefix + "inited"] = np.ones((1,), np.float32)
        tensors[prefix + "cluster_size"] = np.asarray(statistics["cluster_size"][stage], np.float32)
        tensors[prefix + "embed_avg"] = np.asarray(statistics["embed_avg"][stage], np.float32)
    return tensors


def save_pretrained(
    config: CodecConfig,
    params: dict,
    directory: str | Path,
    codebook_statistics: dict[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of an ``EncodecModel`` to ``directory``. The
    files are written beside it first and moved in whole, so a failure leaves no half directory;
    an existing non-empty ``directory`` is refused unless ``overwrite``."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())) and not overwrite:
        raise FileExistsError(f"{directory} exists and is not empty (pass overwrite=True to replace it)")
    tensors = to_torch_tensors(config, params, codebook_statistics)  # checks before anything is written
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory) if directory.is_dir() else directory.unlink()
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory
