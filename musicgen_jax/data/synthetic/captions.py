"""Text for a piece: a one-sentence caption and the audiocraft sidecar metadata, every word of them
an entry of :mod:`musicgen_jax.conditioning.vocabulary`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from musicgen_jax.data.synthetic.spec import ENERGETIC_TEMPO, PieceSpec


def _join_words(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


_TEMPLATES = (
    "{article} {moods} {genre} piece in {key} at {bpm} bpm with {instruments}",
    "{moods_cap} {genre} track in {key}, {bpm} bpm, featuring {instruments}",
    "{instruments_cap} playing {article_lower} {moods} {genre} tune in {key} at {bpm} bpm",
)


def caption(spec: PieceSpec, rng: np.random.Generator) -> str:
    """A one-sentence description of ``spec`` from one of a few templates."""
    moods = " and ".join(spec.moods)
    article = "An" if moods[0] in "aeiou" else "A"
    instruments = _join_words(spec.instruments)
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    return template.format(
        article=article,
        article_lower=article.lower(),
        moods=moods,
        moods_cap=moods[0].upper() + moods[1:],
        genre=spec.genre,
        key=spec.key,
        bpm=spec.tempo,
        instruments=instruments,
        instruments_cap=instruments[0].upper() + instruments[1:],
    )


def metadata(spec: PieceSpec, name: str, description: str) -> dict:
    """The audiocraft sidecar JSON of a piece (``instrument`` is one comma-separated string, as
    audiocraft's ``MusicInfo.instrument`` is a single keyword field)."""
    speed = "fast" if spec.tempo >= ENERGETIC_TEMPO else "slow"
    return {
        "title": f"Synthetic {spec.genre} piece {name}",
        "artist": "musicgen-jax synthetic",
        "key": spec.key,
        "bpm": spec.tempo,
        "genre": spec.genre,
        "moods": list(spec.moods),
        "keywords": ["synthetic", "instrumental", speed],
        "description": description,
        "name": name,
        "instrument": ", ".join(spec.instruments),
    }
