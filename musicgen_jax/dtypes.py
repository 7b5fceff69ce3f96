"""The dtypes a model may be stored and run in: one table for loading, training, conversion, the
CLI and the server."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

# name -> (JAX dtype, NumPy dtype); "fp32"-style aliases are accepted where files are written.
_TABLE = {
    "float32": (jnp.float32, np.dtype(np.float32)),
    "bfloat16": (jnp.bfloat16, np.dtype(ml_dtypes.bfloat16)),
    "float16": (jnp.float16, np.dtype(np.float16)),
}
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

DTYPE_NAMES = tuple(_TABLE)  # storage and compute dtypes
RUN_DTYPE_NAMES = ("auto",) + DTYPE_NAMES  # "auto" picks per device (resolve_dtype)
TRAIN_DTYPE_NAMES = ("float32", "bfloat16")  # float16 trains unstably without loss scaling


class DtypeError(ValueError):
    """A dtype name that is not in the table."""


def canonical(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in _TABLE:
        raise DtypeError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_NAMES)}")
    return name


def jax_dtype(name: str):
    return _TABLE[canonical(name)][0]


def numpy_dtype(dtype: str | np.dtype | type) -> np.dtype:
    if isinstance(dtype, str):
        return _TABLE[canonical(dtype)][1]
    return np.dtype(dtype)


def resolve_dtype(name: str) -> str:
    """``auto``: bfloat16 on GPUs and TPUs (half the bytes each decode step reads), float32 on CPUs
    (whose bfloat16 matmuls are slow or emulated); any other name is checked and returned."""
    if name == "auto":
        return "bfloat16" if jax.default_backend() in ("gpu", "cuda", "rocm", "tpu") else "float32"
    if name not in _TABLE:
        raise DtypeError(f"dtype must be one of {', '.join(RUN_DTYPE_NAMES)}, got {name!r}")
    return name
