"""The generation knobs a user sets, validated once at the boundary with messages a user can act on.

Defaults are audiocraft's (``set_generation_params``): sampling with top-k 250, top-p off,
temperature 1, classifier-free guidance 3, extend stride 18 s for audio past the model's window.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from musicgen_jax.conditioning import Attributes

MIN_DURATION, MAX_DURATION = 1.0, 120.0
MAX_BEAMS = 8


class GenerationParamsError(ValueError):
    """A generation setting out of its range. ``field`` names the setting at fault (``"top_k"``), so a
    caller can point at the input without reading the message; None when no single setting is."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class GenerationParams:
    duration: float = 15.0  # seconds of audio, the audio prompt included
    temperature: float = 1.0
    top_k: int = 250  # 0 = off
    top_p: float = 0.0  # 0 = off; otherwise in (0, 1]
    guidance_scale: float = 3.0  # 1 = no guidance
    repetition_penalty: float = 1.0  # 1 = off
    greedy: bool = False
    num_beams: int = 1  # > 1: beam search (deterministic, slower)
    length_penalty: float = 1.0
    seed: int | None = None  # None: a fresh random seed (reported back)
    extend_stride: float = 18.0  # seconds the window advances past the model's context

    def __post_init__(self) -> None:
        def check(ok: bool, field: str, message: str) -> None:
            if not ok:
                raise GenerationParamsError(message, field)

        for name in (
            "duration",
            "temperature",
            "top_p",
            "guidance_scale",
            "repetition_penalty",
            "length_penalty",
            "extend_stride",
        ):
            value = getattr(self, name)
            check(
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                name,
                f"{name} must be a finite number, got {value!r}",
            )
        check(
            MIN_DURATION <= self.duration <= MAX_DURATION,
            "duration",
            f"duration must be between {MIN_DURATION:g} and {MAX_DURATION:g} seconds, got {self.duration:g}",
        )
        check(
            self.temperature > 0,
            "temperature",
            f"temperature must be greater than 0, got {self.temperature:g} (use greedy for argmax)",
        )
        check(
            isinstance(self.top_k, int) and not isinstance(self.top_k, bool) and self.top_k >= 0,
            "top_k",
            f"top_k must be a whole number >= 0 (0 = off), got {self.top_k!r}",
        )
        check(0.0 <= self.top_p <= 1.0, "top_p", f"top_p must be in (0, 1] (or 0 = off), got {self.top_p:g}")
        check(
            self.guidance_scale >= 0,
            "guidance_scale",
            f"guidance_scale must be >= 0, got {self.guidance_scale:g}",
        )
        check(
            self.repetition_penalty > 0,
            "repetition_penalty",
            f"repetition_penalty must be greater than 0, got {self.repetition_penalty:g}",
        )
        check(
            isinstance(self.num_beams, int) and 1 <= self.num_beams <= MAX_BEAMS,
            "num_beams",
            f"num_beams must be between 1 and {MAX_BEAMS}, got {self.num_beams!r}",
        )
        check(
            self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < 2**32),
            "seed",
            f"seed must be an integer in [0, 2^32), got {self.seed!r}",
        )
        check(
            self.extend_stride > 0,
            "extend_stride",
            f"extend_stride must be greater than 0 seconds, got {self.extend_stride:g}",
        )

    def with_seed(self) -> GenerationParams:
        """A copy with a concrete seed (drawn now when none was given), so results can be repeated."""
        if self.seed is not None:
            return self
        return dataclasses.replace(self, seed=int(np.random.SeedSequence().generate_state(1)[0]))


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """One piece of music to make."""

    prompt: str | None = None  # None or "" = unconditional
    params: GenerationParams = GenerationParams()
    attributes: Attributes | None = None
    prompt_codes: np.ndarray | None = None  # [K, frames] codec frames to continue from
    # [frames, num_chroma] chroma of a reference melody (melody models only; None: no melody), or
    # a tuple of them, one per long-form window (the melody moving along with the windows, as
    # audiocraft does); windows past the tuple's end take its last chroma.
    melody_chroma: np.ndarray | tuple[np.ndarray, ...] | None = None

    def __post_init__(self) -> None:
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise GenerationParamsError(
                f"prompt must be a string, got {type(self.prompt).__name__}", "prompt"
            )
        if self.prompt_codes is not None and np.asarray(self.prompt_codes).ndim != 2:
            raise GenerationParamsError("prompt_codes must be [codebooks, frames]", "prompt_codes")
        chromas = self.melody_chroma if isinstance(self.melody_chroma, tuple) else (self.melody_chroma,)
        if self.melody_chroma is not None and (not chromas or any(np.asarray(c).ndim != 2 for c in chromas)):
            raise GenerationParamsError(
                "melody_chroma must be [frames, num_chroma], or a tuple of them (one per window)",
                "melody_chroma",
            )

    def window_chroma(self, window: int) -> np.ndarray | None:
        """The melody chroma of long-form window ``window`` (0 first), or None (no melody)."""
        if not isinstance(self.melody_chroma, tuple):
            return self.melody_chroma
        return self.melody_chroma[min(window, len(self.melody_chroma) - 1)]

    @property
    def melody_moves(self) -> bool:
        """Whether later windows have a melody chroma of their own."""
        return isinstance(self.melody_chroma, tuple) and len(self.melody_chroma) > 1
