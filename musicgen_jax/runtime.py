"""Process-level JAX settings the entry points share: the persistent compilation cache."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_VARIABLE = "MUSICGEN_JAX_CACHE_DIR"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "musicgen_jax" / "xla"


def enable_compilation_cache(directory: str | Path | None = None) -> Path | None:
    """Keep compiled programs on disk so a restarted CLI or server does not compile them again.

    ``directory=""`` (or ``MUSICGEN_JAX_CACHE_DIR=""``) turns it off.
    """
    import jax

    if directory is None:
        directory = os.environ.get(CACHE_DIR_VARIABLE, str(DEFAULT_CACHE_DIR))
    if str(directory).strip() == "":
        return None
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home must not stop generation; it only costs compile time
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Cache every program, quick ones included: a restart should compile nothing at all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
