"""The compiled-program cache of one loaded model.

Programs are compiled ahead of time (``jax.jit(...).lower(...).compile()``) under the model's
numerics and kept by a shape key, so compilation is timed and counted apart from generation, and a
server can compile every bucket before it reports ready. Thread-safe: two generation calls may ask
for the same program at once and compile it once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


class ProgramCache:
    def __init__(self, numerics: Callable[[], contextlib.AbstractContextManager]):
        """``numerics``: the context every program is traced in (the model's matmul precision)."""
        self._numerics = numerics
        self._programs: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        self.compile_seconds_total = 0.0

    def __len__(self) -> int:
        return len(self._programs)

    def __contains__(self, key: tuple) -> bool:
        return key in self._programs

    def shape_keys(self) -> list[tuple]:
        """The shape keys compiled so far (``key[0]`` names the program)."""
        return list(self._programs)

    def compiled(self) -> list[Any]:
        """The compiled programs (``jax.stages.Compiled``: ``as_text()``, ``cost_analysis()``, ...)."""
        return list(self._programs.values())

    def compile(self, key: tuple, fn, *args, **static) -> tuple[Any, float]:
        """The compiled ``fn`` for these arguments (abstract or concrete) and the seconds this call
        spent compiling it (0.0 when it was already compiled)."""
        compiled = self._programs.get(key)
        if compiled is not None:
            return compiled, 0.0
        with self._lock:
            compiled = self._programs.get(key)
            if compiled is not None:
                return compiled, 0.0
            began = time.perf_counter()
            with self._numerics():
                compiled = fn.lower(*args, **static).compile()
            seconds = time.perf_counter() - began
            self.compile_seconds_total += seconds
            self._programs[key] = compiled
        logger.info("compiled %s in %.2f s", key[0], seconds)
        return compiled, seconds
