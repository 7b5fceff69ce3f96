"""Logical axis names and the rules that map them onto a device mesh."""

from musicgen_jax.sharding import axes

__all__ = ["axes"]
