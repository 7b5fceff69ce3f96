"""Convert a musicgen-jax checkpoint back to a directory transformers' MusicGen loads.

python convert/jax_to_hf.py --checkpoint musicgen-small-jax --output musicgen-small-hf
"""

import sys

from musicgen_jax.conversion.cli import jax_to_hf_main

if __name__ == "__main__":
    sys.exit(jax_to_hf_main())
