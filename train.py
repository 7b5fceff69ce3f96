"""Train or fine-tune MusicGen: ``python train.py --config configs/train/tiny.yaml output_dir=DIR``."""

import sys

from musicgen_jax.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
