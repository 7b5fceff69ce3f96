"""transformers' ``EncodecModel`` tensors -> the Flax parameter tree of the JAX codec, checked.

One name table (:func:`weight_rules`), read off the layer lists of :mod:`musicgen_jax.codec.layout`:
each rule names a Flax leaf, the torch tensor(s) it is made from and the layout change. Loading
asserts that every tensor of the checkpoint is consumed (the codebooks' training statistics
excepted), that every Flax leaf is filled, and that every shape fits the config. Weight norm
(``weight_g``/``weight_v``, or newer torch's ``parametrizations.weight.original0/1``: either
spelling is read, see :mod:`musicgen_jax.codec.files`) is folded into the kernel here, as
``g * v / |v|`` with the norm over every axis but the first, as torch computes it.

The tree: ``{"encoder": ..., "decoder": ..., "quantizer": {"codebooks": [Q, size, dim]}}``.
:mod:`musicgen_jax.codec.flax_export` reads the same table the other way, to save a tree as an
``EncodecModel`` directory.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from musicgen_jax.codec import files, layout
from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.flax_quantizer import ResidualVectorQuantizer
from musicgen_jax.codec.flax_seanet import Decoder, Encoder
from musicgen_jax.conversion.tensors import CheckpointError, TensorSource

# copy: same array. transpose: torch [out, in] -> Flax [in, out]. conv: torch Conv1d [out, in, k] ->
# [k, in, out]. conv_transpose: torch ConvTranspose1d [in, out, k] -> [k, in, out]. weight_norm_*: the
# same after folding (g, v). stack: one tensor per leading index (the codebooks).
Layout = Literal[
    "copy", "transpose", "conv", "conv_transpose", "weight_norm_conv", "weight_norm_conv_transpose", "stack"
]

# Axis order taking each layout's torch tensor to its Flax leaf (``np.transpose(torch, axes)``); the
# export (:mod:`musicgen_jax.codec.flax_export`) applies the inverse permutation.
TO_FLAX_AXES: dict[str, tuple[int, ...]] = {
    "transpose": (1, 0),  # [4 dim, dim] -> [dim, 4 dim]
    "conv": (2, 1, 0),  # [out, in, k] -> [k, in, out]
    "conv_transpose": (2, 0, 1),  # [in, out, k] -> [k, in, out]
}

_WEIGHT_G, _WEIGHT_V = ".parametrizations.weight.original0", ".parametrizations.weight.original1"
CODEBOOK_STATISTICS = ("inited", "cluster_size", "embed_avg")


@dataclasses.dataclass(frozen=True)
class WeightRule:
    path: tuple[str, ...]  # Flax leaf
    keys: tuple[str, ...]  # torch names it is made from, in the order the layout takes them
    layout: Layout = "copy"


def _conv_rules(
    config: CodecConfig, path: tuple[str, ...], module: str, transposed: bool
) -> list[WeightRule]:
    kind = "conv_transpose" if transposed else "conv"
    conv = f"{module}.conv"
    if config.norm_type == "weight_norm":
        kernel = WeightRule(path + ("kernel",), (conv + _WEIGHT_G, conv + _WEIGHT_V), f"weight_norm_{kind}")
    else:
        kernel = WeightRule(path + ("kernel",), (f"{conv}.weight",), kind)
    rules = [kernel, WeightRule(path + ("bias",), (f"{conv}.bias",))]
    if config.norm_type == "time_group_norm":
        rules += [
            WeightRule(path + ("norm_scale",), (f"{module}.norm.weight",)),
            WeightRule(path + ("norm_bias",), (f"{module}.norm.bias",)),
        ]
    return rules


def _layer_rules(
    config: CodecConfig, spec: layout.Layer, path: tuple[str, ...], module: str
) -> list[WeightRule]:
    if isinstance(spec, layout.Conv | layout.ConvTranspose):
        return _conv_rules(config, path, module, transposed=isinstance(spec, layout.ConvTranspose))
    if isinstance(spec, layout.ResidualBlock):
        rules = []
        for j in range(len(spec.convs)):  # torch's block.{2j} is an ELU
            rules += _conv_rules(config, path + (f"block_{2 * j + 1}",), f"{module}.block.{2 * j + 1}", False)
        if spec.shortcut is not None:
            rules += _conv_rules(config, path + ("shortcut",), f"{module}.shortcut", False)
        return rules
    if isinstance(spec, layout.Lstm):
        rules = []
        for n in range(spec.num_layers):
            layer, lstm = path + (f"layer_{n}",), f"{module}.lstm"
            rules += [
                WeightRule(layer + ("input_kernel",), (f"{lstm}.weight_ih_l{n}",), "transpose"),
                WeightRule(layer + ("input_bias",), (f"{lstm}.bias_ih_l{n}",)),
                WeightRule(layer + ("hidden_kernel",), (f"{lstm}.weight_hh_l{n}",), "transpose"),
                WeightRule(layer + ("hidden_bias",), (f"{lstm}.bias_hh_l{n}",)),
            ]
        return rules
    return []  # an ELU has no weights


def weight_rules(config: CodecConfig) -> list[WeightRule]:
    """Every Flax leaf of the codec with the transformers tensors it is made from."""
    rules = []
    for part, layers in (
        ("encoder", layout.encoder_layers(config)),
        ("decoder", layout.decoder_layers(config)),
    ):
        for i, spec in enumerate(layers):
            rules += _layer_rules(config, spec, (part, f"layers_{i}"), f"{part}.layers.{i}")
    codebooks = tuple(f"quantizer.layers.{k}.codebook.embed" for k in range(config.num_quantizers))
    rules.append(WeightRule(("quantizer", "codebooks"), codebooks, "stack"))
    return rules


def expected_shapes(config: CodecConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Every Flax leaf of the codec with the shape the config implies (``jax.eval_shape``, no compute)."""
    key = jax.random.key(0)
    audio = jnp.zeros((1, config.hop_length, config.audio_channels))
    embeddings = jnp.zeros((1, 1, config.hidden_size))
    quantizer = quantizer_module(config)
    trees = {
        "encoder": jax.eval_shape(Encoder(config).init, key, audio),
        "decoder": jax.eval_shape(Decoder(config).init, key, embeddings),
        "quantizer": jax.eval_shape(quantizer.init, key, jnp.zeros((1, config.num_quantizers, 1), jnp.int32)),
    }
    flat = traverse_util.flatten_dict({part: tree["params"] for part, tree in trees.items()})
    return {path: tuple(leaf.shape) for path, leaf in flat.items()}


def quantizer_module(config: CodecConfig) -> ResidualVectorQuantizer:
    return ResidualVectorQuantizer(config.num_quantizers, config.codebook_size, config.codebook_dim)


def weight_norm_magnitude(v: np.ndarray) -> np.ndarray:
    """``|v|`` as torch's ``weight_norm(dim=0)`` takes it: over every axis but the first, kept as size 1
    (``[out, 1, 1]`` for a conv), summed in float64 and returned as float32."""
    norm = np.sqrt(np.sum(np.square(v.astype(np.float64)), axis=tuple(range(1, v.ndim)), keepdims=True))
    return norm.astype(np.float32)


def _fold_weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """torch's ``_weight_norm(v, g, dim=0)``: ``v * (g / |v|)``."""
    return v * (g / weight_norm_magnitude(v))


def _to_flax(rule: WeightRule, arrays: list[np.ndarray]) -> np.ndarray:
    if rule.layout == "stack":
        return np.stack(arrays)
    if rule.layout.startswith("weight_norm_"):
        g, v = arrays
        if g.shape != (v.shape[0],) + (1,) * (v.ndim - 1):
            raise CheckpointError(
                f"{rule.keys[0]}: shape {g.shape} does not fit {rule.keys[1]} of shape {v.shape}"
            )
        weight = _fold_weight_norm(g, v)
    else:
        (weight,) = arrays
    if weight.ndim != {"copy": weight.ndim, "transpose": 2}.get(rule.layout, 3):
        raise CheckpointError(
            f"{rule.keys[-1]}: a {weight.ndim}-D tensor where {'/'.join(rule.path)} needs another"
        )
    axes = TO_FLAX_AXES.get(rule.layout.removeprefix("weight_norm_"))
    return weight if axes is None else weight.transpose(axes)


def load_params(source: TensorSource, config: CodecConfig, where: str) -> dict:
    """The Flax parameter tree of ``config``'s codec from ``source`` (an ``EncodecModel``'s tensors)."""
    rules = weight_rules(config)
    wanted = [key for rule in rules for key in rule.keys]
    statistics = [
        f"quantizer.layers.{k}.codebook.{name}"
        for k in range(config.num_quantizers)
        for name in CODEBOOK_STATISTICS
    ]
    matched, unexpected = files.match_names(source.keys(), set(wanted) | set(statistics))
    if error := files.fit_error(where, files.missing_names(wanted, matched), unexpected):
        raise error
    shapes = expected_shapes(config)
    paths = {rule.path for rule in rules}
    assert paths == set(shapes), f"name table and modules disagree: {sorted(paths ^ set(shapes))}"
    flat = {}
    for rule in rules:
        arrays = [source.get(matched[key], "float32") for key in rule.keys]
        if rule.layout == "stack":
            for key, array in zip(rule.keys, arrays):
                if array.shape != shapes[rule.path][1:]:
                    raise CheckpointError(
                        f"{where}: {key} has shape {array.shape}, the config implies {shapes[rule.path][1:]}"
                    )
        leaf = _to_flax(rule, arrays)
        if leaf.shape != shapes[rule.path]:
            raise CheckpointError(
                f"{where}: {rule.keys[-1]} has shape {leaf.shape} as {'/'.join(rule.path)}, "
                f"the config implies {shapes[rule.path]}"
            )
        flat[rule.path] = jnp.asarray(leaf, jnp.float32)
    return traverse_util.unflatten_dict(flat)
