"""``python -m musicgen_jax.data.tokenize``."""

import sys

from musicgen_jax.data.tokenize.cli import main

sys.exit(main())
