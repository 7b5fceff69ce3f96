"""Apply a name table (:mod:`musicgen_jax.conversion.key_maps`) in either direction, checked.

Loading fills each Flax leaf in the target dtype straight from the tensors as they are read, and
asserts that every key of the source was consumed (or is on the ignore list) and that every shape
fits the config. Exporting is the exact inverse, so a round trip is bit-exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import numpy as np
from flax import traverse_util

from musicgen_jax.conversion.key_maps import Rule, to_flax, to_torch
from musicgen_jax.conversion.tensors import CheckpointError
from musicgen_jax.dtypes import numpy_dtype


def _get(tree: dict, path: tuple[str, ...]):
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            raise CheckpointError(f"parameter {'/'.join(path)} is missing")
        tree = tree[part]
    return tree


def load_params(
    get: Callable[[str], np.ndarray],
    keys: Iterable[str],
    rules: list[Rule],
    expected_shapes: dict[tuple[str, ...], tuple[int, ...]],
    dtype: str | np.dtype = "float32",
    ignored: Iterable[str] = (),
) -> dict:
    """Build the Flax parameter tree from PyTorch-named tensors.

    ``get(name)`` reads one tensor; ``keys`` are every name the source holds; ``expected_shapes``
    maps each Flax path to the shape the model config implies (from ``jax.eval_shape``).
    """
    target = numpy_dtype(dtype)
    available = set(keys)
    consumed: set[str] = set()
    flat: dict[tuple[str, ...], np.ndarray] = {}
    needed = dict.fromkeys(k for rule in rules for k in rule.torch_keys())  # fused keys once
    missing = [k for k in needed if k not in available]
    if missing:
        shown = ", ".join(missing[:8]) + (f" (and {len(missing) - 8} more)" if len(missing) > 8 else "")
        raise CheckpointError(f"the checkpoint lacks {len(missing)} tensor(s) the model needs: {shown}")
    for rule in rules:
        want = expected_shapes.get(rule.path)
        if want is None:
            raise CheckpointError(f"rule for {'/'.join(rule.path)} names no parameter of this model config")
        if rule.stack:
            leaf = np.empty(want, dtype=target)
            for i, key in enumerate(rule.torch_keys()):
                leaf[i] = _read(get, key, rule, want[1:])
                consumed.add(key)
        else:
            leaf = np.array(_read(get, rule.key, rule, want), dtype=target)
            consumed.add(rule.key)
        flat[rule.path] = leaf
    patterns = [re.compile(p) for p in ignored]
    left = sorted(k for k in available - consumed if not any(p.fullmatch(k) for p in patterns))
    if left:
        shown = ", ".join(left[:8]) + (f" (and {len(left) - 8} more)" if len(left) > 8 else "")
        raise CheckpointError(f"{len(left)} tensor(s) of the checkpoint fit no parameter: {shown}")
    unfilled = sorted("/".join(p) for p in expected_shapes if p not in {r.path for r in rules})
    if unfilled:
        raise CheckpointError(f"the checkpoint format has no tensors for: {', '.join(unfilled)}")
    return traverse_util.unflatten_dict(flat)


def _read(get: Callable[[str], np.ndarray], key: str, rule: Rule, want: tuple[int, ...]) -> np.ndarray:
    """One tensor in the Flax layout, its shape checked; errors name the source's own key."""
    tensor = get(key)
    try:
        array = to_flax(tensor, rule)
    except ValueError as error:  # a fused tensor whose rows do not split, a width heads do not divide
        raise CheckpointError(
            f"{key}: shape {tuple(tensor.shape)} does not fit the config ({error})"
        ) from None
    if array.shape != want:
        raise CheckpointError(
            f"{rule.describe(key)}: shape {array.shape} after layout {rule.layout!r} "
            f"(stored {tuple(tensor.shape)}), but the config implies {want}"
        )
    return array


def export_params(
    params: dict, rules: list[Rule], dtype: str | np.dtype | None = None
) -> dict[str, np.ndarray]:
    """The PyTorch-named tensors of ``params`` (the inverse of :func:`load_params`)."""
    target = numpy_dtype(dtype) if dtype is not None else None
    tensors: dict[str, np.ndarray] = {}
    fused: dict[str, dict[int, np.ndarray]] = {}  # key -> part -> rows, for fused tensors
    for rule in rules:
        leaf = np.asarray(_get(params, rule.path))
        if target is not None:
            leaf = leaf.astype(target)
        pieces = zip(rule.torch_keys(), leaf) if rule.stack else [(rule.key, leaf)]
        for key, value in pieces:
            array = to_torch(value, rule)
            if rule.parts > 1:
                fused.setdefault(key, {})[rule.part] = array
            else:
                tensors[key] = np.ascontiguousarray(array)
    for key, parts in fused.items():
        tensors[key] = np.ascontiguousarray(np.concatenate([parts[i] for i in sorted(parts)]))
    return tensors
