"""Serve MusicGen over REST and WebSocket: ``python serve.py --model DIR --port 8000``."""

import sys

from musicgen_jax.serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
