"""A track's music metadata, parsed the way audiocraft parses it, and its validated attributes.

:class:`MusicInfo` holds the sidecar JSON's fields after audiocraft's ``MusicInfo.attribute_getter``
preprocessing (``audiocraft/data/music_dataset.py``, ``info_audio_dataset.py``): keywords are
stripped and lower-cased, ``"None"`` and empty values become missing, ``moods``/``keywords`` strings
are split on commas and whitespace, ``bpm`` becomes a float, a ``key`` naming several keys ("C major,
A minor") is discarded.

:func:`attributes_from_info` turns it into :class:`~musicgen_jax.conditioning.Attributes` for the
learned attribute embeddings. Training data is messy: a value outside the vocabulary is dropped
(that value only) with a warning the first time and counted, never an error.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
import re
from typing import Any

from musicgen_jax.conditioning import Attributes, InvalidAttributeError, vocabulary

logger = logging.getLogger(__name__)

# Fields audiocraft's text augmentation may turn into "field: value" pairs, in MusicInfo's order.
TEXT_FIELDS: tuple[str, ...] = ("key", "bpm", "genre", "moods", "keywords", "instrument")


def _keyword(value: Any) -> str | None:
    """audiocraft's ``get_keyword``: a stripped lower-case string, or None."""
    if not isinstance(value, str) or not value or value == "None":
        return None
    return value.strip().lower()


def _string(value: Any) -> str | None:
    """audiocraft's ``get_string``: a stripped string (case kept), or None."""
    if not isinstance(value, str) or not value or value == "None":
        return None
    return value.strip()


def _keyword_list(value: Any) -> tuple[str, ...] | None:
    """audiocraft's ``get_keyword_list``: strings split on commas and whitespace, None when empty."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in re.split(r"[,\s]", value)]
    elif isinstance(value, float) and math.isnan(value):
        value = []
    if not isinstance(value, (list, tuple)):
        value = [str(value)]
    words = tuple(w for w in (_keyword(v) for v in value) if w is not None)
    return words or None


def _musical_key(value: Any) -> str | None:
    """audiocraft's ``get_musical_key``: lower-cased, discarded when several keys are listed."""
    if not isinstance(value, str) or not value or value == "None" or "," in value:
        return None
    return value.strip().lower()


def _bpm(value: Any) -> float | None:
    """audiocraft's ``get_bpm``: a float, or None when it does not parse."""
    if value is None or isinstance(value, bool):
        return None
    try:
        bpm = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(bpm) else bpm


@dataclasses.dataclass(frozen=True)
class MusicInfo:
    """The music fields of a sidecar JSON, preprocessed as audiocraft does (all optional)."""

    title: str | None = None
    artist: str | None = None
    key: str | None = None
    bpm: float | None = None
    genre: str | None = None
    moods: tuple[str, ...] | None = None
    keywords: tuple[str, ...] | None = None
    description: str | None = None
    name: str | None = None
    instrument: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MusicInfo:
        """Parse a sidecar JSON object; unknown fields are ignored, ``None`` gives an empty info."""
        data = data or {}
        return cls(
            title=_string(data.get("title")),
            artist=_string(data.get("artist")),
            key=_musical_key(data.get("key")),
            bpm=_bpm(data.get("bpm")),
            genre=_keyword(data.get("genre")),
            moods=_keyword_list(data.get("moods")),
            keywords=_keyword_list(data.get("keywords")),
            description=_string(data.get("description")),
            name=_keyword(data.get("name")),
            instrument=_keyword(data.get("instrument")),
        )


# ----------------------------------------------------------------------------- attributes

# (field, value) -> how many times it was dropped in this process; see dropped_attributes().
_DROPPED: collections.Counter[tuple[str, str]] = collections.Counter()


def dropped_attributes() -> dict[tuple[str, str], int]:
    """How often each unknown ``(field, value)`` was dropped in this process (grain workers
    count separately)."""
    return dict(_DROPPED)


def reset_dropped_attributes() -> None:
    _DROPPED.clear()


def _drop(field: str, value: Any, error: str) -> None:
    key = (field, str(value))
    if key not in _DROPPED:
        logger.warning("dropping %s %r from training metadata: %s", field, value, error)
    _DROPPED[key] += 1


@functools.lru_cache(maxsize=65536)
def _check(field: str, value: Any) -> str | None:
    """Why ``Attributes.create`` refuses ``value`` as ``field`` (None if it accepts it); cached, as
    the loader asks about the same few values for every example."""
    argument = {"genre": "genre", "mood": "mood", "instrument": "instruments", "key": "key", "tempo": "tempo"}
    try:
        Attributes.create(**{argument[field]: [value] if field in ("mood", "instrument") else value})
    except InvalidAttributeError as error:
        return str(error)
    return None


def _valid(field: str, value: Any) -> bool:
    error = _check(field, value)
    if error is not None:
        _drop(field, value, error)
    return error is None


@functools.lru_cache(maxsize=65536)
def _create(
    genre: str | None,
    moods: tuple[str, ...],
    tempo: float | None,
    instruments: tuple[str, ...],
    key: str | None,
    keywords: tuple[str, ...],
) -> Attributes:
    return Attributes.create(
        genre=genre,
        mood=list(moods),
        tempo=tempo,
        instruments=list(instruments),
        key=key,
        keywords=list(keywords),
    )


def attributes_from_info(info: MusicInfo, duration: float | None = None) -> Attributes:
    """Validated attributes of ``info`` (and a clip ``duration`` in seconds); each value the
    vocabulary does not know is dropped and counted rather than failing the example.

    ``instrument`` is audiocraft's single keyword field; a comma-separated list of instruments in
    it (as the synthetic dataset writes) gives several instruments.
    """
    parts = [part.strip() for part in (info.instrument or "").split(",") if part.strip()]
    attributes = _create(
        info.genre if info.genre is not None and _valid("genre", info.genre) else None,
        tuple(m for m in info.moods or () if _valid("mood", m)),
        info.bpm if info.bpm is not None and _valid("tempo", info.bpm) else None,
        tuple(part for part in parts if _valid("instrument", part)),
        info.key if info.key is not None and _valid("key", info.key) else None,
        tuple(info.keywords or ()),
    )
    if duration is None:
        return attributes
    low, high = vocabulary.DURATION_RANGE
    if not low <= duration <= high:
        # Counted as one kind of drop (each clip has its own value).
        _drop(
            "duration",
            "out of range",
            f"duration must be between {low:g} and {high:g} seconds, got {duration:g}",
        )
        return attributes
    return dataclasses.replace(attributes, duration=float(duration))
