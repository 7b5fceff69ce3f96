"""The held-out split of the synthetic set: which pieces a demo model never trains on, so its
prompt adherence can be measured on prompts it has not seen.

The rule (:func:`held_out_reasons`), the one place it is stated:

- **tempo**: every tempo ``≡ 3 (mod 8)`` bpm (67, 75, ..., 179), at least one inside every
  genre's range, so each genre is asked for at a tempo it was never heard at;
- **combination**: a genre played with one of its *optional* timbres, for the pairs in
  :data:`HELD_OUT_PAIRS` (jazz with organ, pop with strings, ...). The timbre is still taught by the
  genres where it is always or optionally present, and the genre by its pieces without it, so the
  pair is new while both of its words are known.

A dataset written with ``exclude_held_out`` (:func:`~musicgen_jax.data.synthetic.write_dataset`)
holds no piece the rule picks; :func:`held_out_prompts` draws only pieces it picks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from musicgen_jax.conditioning import Attributes
from musicgen_jax.data.synthetic.captions import caption
from musicgen_jax.data.synthetic.spec import PieceSpec, sample_spec

HELD_OUT_TEMPO_MODULUS = 8
HELD_OUT_TEMPO_RESIDUE = 3
# (genre, timbre) pairs never heard together in training; each timbre is optional for its genre.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("jazz", "organ"),
    ("pop", "strings"),
    ("rock", "organ"),
    ("electronic", "lead"),
    ("ambient", "strings"),
    ("folk", "piano"),
    ("house", "organ"),
    ("hip hop", "strings"),
)
# Draws before held_out_prompts gives up on one prompt: a pair is drawn with probability about
# 1/40 per sample_spec call, so this bound is never reached unless the tables above change.
_MAX_DRAWS = 100_000


def is_held_out_tempo(tempo: int) -> bool:
    return tempo % HELD_OUT_TEMPO_MODULUS == HELD_OUT_TEMPO_RESIDUE


def held_out_reasons(spec: PieceSpec) -> tuple[str, ...]:
    """Why ``spec`` is held out: ``"tempo"``, ``"genre+timbre"`` entries naming the pair, or ``()``."""
    reasons = ["tempo"] if is_held_out_tempo(spec.tempo) else []
    reasons += [
        f"{genre}+{timbre}"
        for genre, timbre in HELD_OUT_PAIRS
        if spec.genre == genre and timbre in spec.timbres
    ]
    return tuple(reasons)


def is_held_out(spec: PieceSpec) -> bool:
    """True for the pieces a training set written with ``exclude_held_out`` never contains."""
    return bool(held_out_reasons(spec))


@dataclasses.dataclass(frozen=True)
class HeldOutPrompt:
    """A prompt outside the training set: its piece, caption, the attributes a request would carry,
    and why it is held out."""

    spec: PieceSpec
    caption: str
    attributes: Attributes
    reasons: tuple[str, ...]


def _draw(rng: np.random.Generator, accept) -> PieceSpec:
    for _ in range(_MAX_DRAWS):
        spec = sample_spec(rng)
        if accept(spec):
            return spec
    raise RuntimeError("no held-out piece found: do HELD_OUT_PAIRS still name optional timbres?")


def held_out_prompts(n: int, seed: int = 0) -> list[HeldOutPrompt]:
    """``n`` prompts (deterministic in ``seed``), alternating between held-out combinations (each pair
    of :data:`HELD_OUT_PAIRS` in turn, so all are covered once ``n >= 16``) and held-out tempi."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rng = np.random.default_rng(seed)
    prompts = []
    for index in range(n):
        if index % 2 == 0:
            genre, timbre = HELD_OUT_PAIRS[(index // 2) % len(HELD_OUT_PAIRS)]
            spec = _draw(rng, lambda s, g=genre, t=timbre: s.genre == g and t in s.timbres)
        else:
            spec = _draw(rng, lambda s: is_held_out_tempo(s.tempo))
        text = caption(spec, rng)
        attributes = Attributes.create(
            genre=spec.genre, mood=spec.moods, tempo=spec.tempo, instruments=spec.instruments, key=spec.key
        )
        prompts.append(HeldOutPrompt(spec, text, attributes, held_out_reasons(spec)))
    return prompts
