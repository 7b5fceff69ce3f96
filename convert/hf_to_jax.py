"""Convert a transformers MusicGen checkpoint (directory or hub id) to a musicgen-jax checkpoint.

python convert/hf_to_jax.py --model facebook/musicgen-small --output musicgen-small-jax
"""

import sys

from musicgen_jax.conversion.cli import hf_to_jax_main

if __name__ == "__main__":
    sys.exit(hf_to_jax_main())
