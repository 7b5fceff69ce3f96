"""Low-rank adapters (LoRA) over the decoder's projections, as a pure function of the parameter tree.

The model code does not change: an adapter is a pair of matrices beside a kernel of the stacked
decoder layers, and :func:`apply_adapters` gives the parameter tree with each adapted kernel
replaced by ``kernel + (alpha / rank) * a @ b`` (reshaped to the kernel's layout). Training calls it
inside the loss, so gradients reach the adapters only; export calls it once to merge.

Shapes, for a kernel ``[layers, *in_dims, *out_dims]`` (``in_dims`` one axis, ``hidden``, for
q/k/v, fc1 and fc2; two, ``heads, head_dim``, for the attention output):

* ``lora_a``: ``[layers, in_features, rank]`` (PEFT's ``lora_A.weight`` transposed, per layer);
* ``lora_b``: ``[layers, rank, out_features]`` (PEFT's ``lora_B.weight`` transposed), zeros at init,
  so a fresh adapter leaves the model unchanged.

Flattening ``in_dims`` and ``out_dims`` row-major is the order of transformers' ``Linear`` features
(``heads * head_dim``), so these are PEFT's matrices up to a transpose
(:mod:`musicgen_jax.conversion.peft_format`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.models.decoder_layer import PROJECTION_KERNELS
from musicgen_jax.models.tree_paths import get_path, set_path

LAYERS = ("decoder", "layers")
TARGETS = PROJECTION_KERNELS  # an adapter's target is a projection's name
ALL_TARGETS = tuple(TARGETS)
A, B = "lora_a", "lora_b"


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """Which projections get adapters, their rank, ``alpha`` (the update is scaled by alpha / rank,
    PEFT's ``lora_alpha / r``) and the dropout rate on the adapters' input features."""

    targets: tuple[str, ...] = ALL_TARGETS
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ValueError(
                f"lora.targets: unknown {unknown or 'empty list'}; choose from {', '.join(TARGETS)}"
            )
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"lora.targets lists a target twice: {list(self.targets)}")
        if self.rank < 1:
            raise ValueError(f"lora.rank must be positive, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def kernel_path(target: str) -> tuple[str, ...]:
    return LAYERS + TARGETS[target][0]


def features(kernel_shape: tuple[int, ...], target: str) -> tuple[int, int, int]:
    """``(layers, in_features, out_features)`` of a target's stacked kernel."""
    inputs = TARGETS[target][1]
    layers, dims = kernel_shape[0], kernel_shape[1:]
    return layers, math.prod(dims[:inputs]), math.prod(dims[inputs:])


def adapter_shapes(param_shapes: dict, spec: LoraSpec, dtype=jnp.float32) -> dict:
    """The adapter tree's ``ShapeDtypeStruct`` leaves for a model's parameter shapes."""
    adapters: dict = {}
    for target in spec.targets:
        layers, fan_in, fan_out = features(tuple(get_path(param_shapes, kernel_path(target)).shape), target)
        leaf = {
            A: jax.ShapeDtypeStruct((layers, fan_in, spec.rank), dtype),
            B: jax.ShapeDtypeStruct((layers, spec.rank, fan_out), dtype),
        }
        adapters = set_path(adapters, LAYERS + TARGETS[target][0][:-1], leaf)
    return adapters


def init_adapters(rng: jax.Array, param_shapes: dict, spec: LoraSpec, dtype=jnp.float32) -> dict:
    """Fresh adapters, as PEFT initialises them: ``a`` uniform in ``±1 / sqrt(in_features)``
    (torch's kaiming-uniform with ``a = sqrt(5)``), ``b`` zeros."""
    shapes = adapter_shapes(param_shapes, spec, dtype)
    out: dict = {}
    for index, target in enumerate(spec.targets):
        path = LAYERS + TARGETS[target][0][:-1]
        leaf = get_path(shapes, path)
        bound = 1.0 / math.sqrt(leaf[A].shape[1])
        a = jax.random.uniform(jax.random.fold_in(rng, index), leaf[A].shape, dtype, -bound, bound)
        out = set_path(out, path, {A: a, B: jnp.zeros(leaf[B].shape, dtype)})
    return out


def delta(adapter: dict, kernel_shape: tuple[int, ...], scale: float, keep=None):
    """``scale * a @ b`` per layer, in the kernel's layout ``[layers, *in_dims, *out_dims]``.
    ``keep`` (``[layers, in_features, 1]``, already divided by the keep probability) drops input
    features of the adapter."""
    a, b = adapter[A], adapter[B]
    if keep is not None:
        a = a * keep
    xp = np if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) else jnp
    update = xp.einsum("lir,lro->lio", a, b) * scale
    return update.reshape(kernel_shape)


def apply_adapters(
    params: dict, adapters: dict, spec: LoraSpec, dropout_rng: jax.Array | None = None
) -> dict:
    """``params`` with every adapted kernel merged: ``kernel + scale * a @ b``, in the kernel's dtype
    (the sum is formed in float32). ``dropout_rng`` (training, with ``spec.dropout``) drops input
    features of each adapter, one mask per layer and step: the merged-weight form of PEFT's dropout
    on the adapter's input, which draws one mask per token instead."""
    merged = params
    for index, target in enumerate(spec.targets):
        path = kernel_path(target)
        kernel = get_path(params, path)
        adapter = get_path(adapters, path[:-1])
        keep = None
        if dropout_rng is not None and spec.dropout > 0.0:
            shape = (adapter[A].shape[0], adapter[A].shape[1], 1)
            mask = jax.random.bernoulli(jax.random.fold_in(dropout_rng, index), 1.0 - spec.dropout, shape)
            keep = mask.astype(adapter[A].dtype) / (1.0 - spec.dropout)
        update = delta(adapter, kernel.shape, spec.scale, keep)
        xp = np if isinstance(kernel, np.ndarray) and isinstance(update, np.ndarray) else jnp
        total = xp.asarray(kernel, dtype=np.float32) + update.astype(np.float32)
        merged = set_path(merged, path, total.astype(kernel.dtype))
    return merged
