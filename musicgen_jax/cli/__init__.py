"""The ``musicgen-jax`` command line."""
