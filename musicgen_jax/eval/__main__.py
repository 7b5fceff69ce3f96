"""``python -m musicgen_jax.eval``: see ``musicgen_jax.eval.cli``."""

import sys

from musicgen_jax.eval.cli import main

sys.exit(main())
