"""The decoder's two parameter layouts, and the pure functions between them.

* **scanned** (training, every checkpoint format): ``decoder/layers/<path>`` holds all layers
  stacked, projection kernels ``[layers, *in, *out]``; the layer loop is one ``nn.scan``, one
  layer's program however deep the model.
* **unrolled** (inference where it is faster: CPUs): ``decoder/layers_<i>/<path>``, one array a
  layer, projection kernels 2-D ``[out_features, in_features]`` (PyTorch's ``Linear`` weight); the
  layer loop is a Python loop, so the compiled step holds every layer.

Why both: XLA:CPU copies each layer's slice out of a stacked array before a dot reads it (the
weights cross memory three times a step), its dots at 16 rows read ``[out, in]`` faster than
``[in, out]``, and it transposes a 3-D ``[heads, head_dim, hidden]`` kernel by a copy at every step;
the unrolled step reads each weight once, where it lies (docs/performance.md, the
"Versions of the decode step" table). The price is compile time: the step's program grows with the
depth, paid once per shape (and once per machine with the persistent compilation cache).
The computation is the same either way: the layouts give equal logits (tests/test_layer_layout.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from musicgen_jax.models.config import DecoderConfig
from musicgen_jax.models.decoder_layer import PROJECTION_DIMS, PROJECTION_KERNELS, dim_sizes
from musicgen_jax.models.tree_paths import get_path, has_path, set_path

SCANNED, UNROLLED, AUTO = "scanned", "unrolled", "auto"
LAYOUTS = (SCANNED, UNROLLED)


# ``auto`` unrolls a CPU model whose decoder weights are at least this large: the stacked slices'
# copies cost memory bandwidth only once the weights outgrow the caches; below it the scanned step
# is faster (fewer, larger kernels) and compiles sooner. musicgen-small's decoder is 1.6 GB (unrolled
# 2x faster a step), the built-in demo's 21 MB (scanned 2x faster); see docs/performance.md.
UNROLL_MIN_BYTES = 256 * 2**20


def resolve_layout(layout: str, platform: str | None = None, decoder_bytes: int | None = None) -> str:
    """``auto`` is unrolled on CPUs for a decoder of at least :data:`UNROLL_MIN_BYTES` of weights
    (``decoder_bytes``; unknown counts as large) and scanned otherwise and elsewhere (the GPU
    suite's ``knobs`` stage measures both there); the others are themselves."""
    if layout == AUTO:
        platform = platform or jax.default_backend()
        large = decoder_bytes is None or decoder_bytes >= UNROLL_MIN_BYTES
        return UNROLLED if platform == "cpu" and large else SCANNED
    if layout not in LAYOUTS:
        raise ValueError(f"layer_layout must be one of {', '.join(LAYOUTS + (AUTO,))}, got {layout!r}")
    return layout


def weight_bytes(tree) -> int:
    """Bytes of every array in ``tree``."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def layer_name(index: int) -> str:
    """An unrolled layer's parameter name (Flax names a list of submodules ``<attribute>_<i>``)."""
    return f"layers_{index}"


def _out_in(kernel, inputs: int):
    """A scanned layer's kernel ``[*in, *out]`` (``inputs`` input axes) as ``[prod(out), prod(in)]``."""
    fan_in = math.prod(kernel.shape[:inputs])
    return kernel.reshape(fan_in, -1).T


def _stack(leaves: list):
    return jnp.stack(leaves) if isinstance(leaves[0], jax.Array) else np.stack(leaves)


def is_unrolled(params: dict) -> bool:
    return layer_name(0) in params["decoder"]


def to_unrolled(params: dict, convert: Callable | None = None) -> dict:
    """A scanned model parameter tree (``{"text_encoder": ..., "decoder": ...}``) in the unrolled
    layout (an unrolled tree comes back as it is).

    Without ``convert``, a pure function: host arrays come back as views. With ``convert`` (e.g.
    ``jnp.asarray`` onto the device), each new per-layer array is passed through it, and the stacked
    arrays are taken out of ``params`` and released one by one as their layers are made, so a model
    never sits twice in memory (the loader's way; ``params`` is left without its decoder layers).
    """
    if is_unrolled(params):
        return params
    decoder = dict(params["decoder"]) if convert is None else params["decoder"]
    stacked = decoder.pop("layers")
    flat = traverse_util.flatten_dict(stacked)
    del stacked
    num_layers = next(iter(flat.values())).shape[0]
    kernel_inputs = dict(PROJECTION_KERNELS.values())
    layers: list[dict] = [{} for _ in range(num_layers)]
    for path in list(flat):
        leaf = flat.pop(path)
        for index, layer in enumerate(layers):
            piece = leaf[index]
            if path in kernel_inputs:
                piece = _out_in(piece, kernel_inputs[path])
            layer[path] = piece if convert is None else convert(piece)
        del leaf  # with convert, the last reference to this stacked array
    for index, layer in enumerate(layers):
        decoder[layer_name(index)] = traverse_util.unflatten_dict(layer)
    return {**params, "decoder": decoder}


def to_scanned(params: dict, config: DecoderConfig) -> dict:
    """The inverse of :func:`to_unrolled` (a scanned tree comes back as it is); ``config`` gives
    the kernels' dims, which the 2-D unrolled kernels do not keep."""
    if not is_unrolled(params):
        return params
    decoder = dict(params["decoder"])
    layers = []
    while layer_name(len(layers)) in decoder:
        layer = decoder.pop(layer_name(len(layers)))
        for name, (path, _) in PROJECTION_KERNELS.items():
            if has_path(layer, path):
                inputs, outputs = (dim_sizes(config, letters) for letters in PROJECTION_DIMS[name])
                layer = set_path(layer, path, get_path(layer, path).T.reshape(inputs + outputs))
        layers.append(layer)
    decoder["layers"] = jax.tree.map(lambda *leaves: _stack(list(leaves)), *layers)
    return {**params, "decoder": decoder}
