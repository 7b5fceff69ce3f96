import sys

from musicgen_jax.cli.main import main

sys.exit(main())
