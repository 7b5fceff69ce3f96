"""Train or fine-tune MusicGen: ``python train.py --config configs/train/tiny.yaml output_dir=DIR``."""

import sys

if __name__ == "__main__":
    try:
        from musicgen_jax.training.cli import main
    except ImportError:
        print(
            "train.py: training is not built yet (see the training issue); nothing was run.", file=sys.stderr
        )
        sys.exit(2)
    sys.exit(main())
