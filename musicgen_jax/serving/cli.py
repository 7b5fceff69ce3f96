"""``python serve.py`` / ``musicgen-jax-api``: load the model, then serve it with uvicorn.

The model is loaded before the server starts listening, so a wrong ``--model`` fails at once with
one line instead of a server that never becomes ready; warm-up (compilation) happens after the
socket is open, and ``/ready`` answers 200 when it is done.
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from musicgen_jax.serving.settings import SettingsError, parse_args

    try:
        settings = parse_args(argv)
        keys = settings.load_api_keys()
    except SettingsError as error:
        print(f"musicgen-jax-api: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"musicgen-jax-api: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger("musicgen_jax.serving")

    import uvicorn

    from musicgen_jax import MusicGen
    from musicgen_jax.runtime import enable_compilation_cache
    from musicgen_jax.serving.app import create_app
    from musicgen_jax.serving.postgres_store import StoreUnavailable, describe

    cache = enable_compilation_cache(settings.compilation_cache_dir)
    log.info("compilation cache: %s", cache or "off")
    try:
        model = MusicGen.from_pretrained(
            settings.model,
            dtype=settings.dtype,
            codec_backend=settings.codec_backend,
            quantize=settings.quantize,
        )
    except (OSError, ValueError) as error:  # missing directory, unreachable hub, bad checkpoint
        print(f"musicgen-jax-api: cannot load model {settings.model!r}: {error}", file=sys.stderr)
        return 1
    log.info(
        "loaded %s: %d Hz, %d channel(s), API keys %s, tasks in %s, audio in %s",
        settings.model,
        model.sample_rate,
        model.audio_channels,
        "on" if keys else "off",
        f"PostgreSQL {describe(settings.database_url)}"
        if settings.database_url
        else settings.data_dir.expanduser().resolve() / "tasks.sqlite3",
        settings.storage_url or settings.data_dir.expanduser().resolve() / "audio",
    )
    try:
        app = create_app(settings, model)
    except StoreUnavailable as error:  # the shared database is down or misnamed
        print(f"musicgen-jax-api: {error}", file=sys.stderr)
        return 1
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
