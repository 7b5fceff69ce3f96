"""Serve MusicGen over REST and WebSocket: ``python serve.py --model DIR --port 8000``."""

import sys

if __name__ == "__main__":
    try:
        from musicgen_jax.serving.cli import main
    except ImportError:
        print(
            "serve.py: the server is not built yet (see the serving issue); nothing was started.",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(main())
