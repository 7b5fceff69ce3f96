"""Activation functions by their transformers config names (one table for T5 and the decoder)."""

from __future__ import annotations

import jax

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # transformers' "gelu" is the exact erf form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # the tanh form (T5 v1.1 / flan)
    "silu": jax.nn.silu,
}
