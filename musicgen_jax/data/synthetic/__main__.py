"""Runs :func:`musicgen_jax.data.synthetic.cli.main` for ``python -m musicgen_jax.data.synthetic``."""

import sys

from musicgen_jax.data.synthetic.cli import main

if __name__ == "__main__":
    sys.exit(main())
