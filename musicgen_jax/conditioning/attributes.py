"""Structured musical attributes (genre, mood, tempo, instruments, key, duration).

Two renderings of one validated :class:`Attributes`:

* :func:`render_description` appends them to the text description the way audiocraft's training
  data did (``"<description>. genre: jazz. moods: happy, calm. bpm: 120.0. instrument: piano"``), which
  is what Meta's checkpoints understand;
* :func:`encode_attributes` turns them into arrays for the learned attribute embeddings of models
  trained by this project (:mod:`musicgen_jax.models.attribute_embedder`).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Sequence

import numpy as np

from musicgen_jax.conditioning import vocabulary


class InvalidAttributeError(ValueError):
    """An attribute value the product does not know, or out of range. ``field`` names the argument of
    :meth:`Attributes.create` at fault (``"mood"``, ``"instruments"``), so a caller can point at the
    input without reading the message."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _normalise(word: str) -> str:
    return " ".join(word.strip().lower().replace("_", " ").split())


def _lookup(kind: str, value: str, known: Sequence[str], field: str) -> str:
    word = _normalise(value)
    aliases = {_normalise(k): k for k in known}
    aliases.update({k.replace(" ", "-"): v for k, v in list(aliases.items())})
    aliases.update({k.replace(" ", ""): v for k, v in list(aliases.items())})
    if word in aliases:
        return aliases[word]
    close = difflib.get_close_matches(word, list(aliases), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(aliases[c]) for c in dict.fromkeys(close))}?" if close else ""
    raise InvalidAttributeError(f"unknown {kind} {value!r}{hint} Known {kind}s: {', '.join(known)}.", field)


def _as_list(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    return [str(v) for v in value]


@dataclasses.dataclass(frozen=True)
class Attributes:
    """Validated musical attributes of one request; every field is optional."""

    genre: str | None = None
    moods: tuple[str, ...] = ()
    tempo: float | None = None  # beats per minute
    instruments: tuple[str, ...] = ()
    key: str | None = None
    keywords: tuple[str, ...] = ()
    duration: float | None = None  # seconds of audio asked for

    @classmethod
    def create(
        cls,
        genre: str | None = None,
        mood: str | Iterable[str] | None = None,
        tempo: float | str | None = None,
        instruments: str | Iterable[str] | None = None,
        key: str | None = None,
        keywords: str | Iterable[str] | None = None,
        duration: float | None = None,
    ) -> Attributes:
        """Validate user input; raises :class:`InvalidAttributeError` with the known values."""
        genre_value = _lookup("genre", genre, vocabulary.GENRES, "genre") if genre not in (None, "") else None
        moods = tuple(dict.fromkeys(_lookup("mood", m, vocabulary.MOODS, "mood") for m in _as_list(mood)))
        instrument_values = tuple(
            dict.fromkeys(
                _lookup("instrument", i, vocabulary.INSTRUMENTS, "instruments") for i in _as_list(instruments)
            )
        )
        key_value = _lookup("key", key, vocabulary.KEYS, "key") if key not in (None, "") else None
        tempo_value = None
        if tempo not in (None, ""):
            try:
                tempo_value = float(tempo)
            except (TypeError, ValueError):
                raise InvalidAttributeError(
                    f"tempo must be a number of beats per minute, got {tempo!r}", "tempo"
                ) from None
            low, high = vocabulary.TEMPO_RANGE
            if not low <= tempo_value <= high:
                raise InvalidAttributeError(
                    f"tempo must be between {low:g} and {high:g} BPM, got {tempo_value:g}", "tempo"
                )
        duration_value = None
        if duration is not None:
            duration_value = float(duration)
            low, high = vocabulary.DURATION_RANGE
            if not low <= duration_value <= high:
                raise InvalidAttributeError(
                    f"duration must be between {low:g} and {high:g} seconds, got {duration_value:g}",
                    "duration",
                )
        return cls(
            genre=genre_value,
            moods=moods,
            tempo=tempo_value,
            instruments=instrument_values,
            key=key_value,
            keywords=tuple(k.strip() for k in _as_list(keywords)),
            duration=duration_value,
        )

    @property
    def is_empty(self) -> bool:
        return not (
            self.genre
            or self.moods
            or self.tempo is not None
            or self.instruments
            or self.key
            or self.keywords
        )


def _format_bpm(tempo: float) -> str:
    # audiocraft's metadata stores bpm as a float and its text augmentation prints str(value), so
    # Meta's checkpoints saw "bpm: 120.0".
    return str(float(tempo))


def render_description(description: str | None, attributes: Attributes | None) -> str:
    """The text the T5 encoder sees: the description, then ``field: value`` pairs joined by ". ".

    Field names and joins follow audiocraft's ``augment_music_info_description`` (``moods`` and
    ``keywords`` lists joined with ", ", ``bpm``, ``instrument``), in a fixed order.
    """
    pairs: list[str] = []
    if attributes is not None:
        if attributes.genre:
            pairs.append(f"genre: {attributes.genre}")
        if attributes.moods:
            pairs.append(f"moods: {', '.join(attributes.moods)}")
        if attributes.tempo is not None:
            pairs.append(f"bpm: {_format_bpm(attributes.tempo)}")
        if attributes.key:
            pairs.append(f"key: {attributes.key}")
        if attributes.instruments:
            pairs.append(f"instrument: {', '.join(attributes.instruments)}")
        if attributes.keywords:
            pairs.append(f"keywords: {', '.join(attributes.keywords)}")
    meta = ". ".join(pairs)
    description = (description or "").strip()
    if description and meta:
        return f"{description.rstrip('.')}. {meta}"
    return description or meta


@dataclasses.dataclass(frozen=True)
class EncodedAttributes:
    """Attributes as arrays for learned embeddings, batch-major.

    ``genre``: [batch] int32, 0 = none, else 1 + index into GENRES. ``moods`` / ``instruments``:
    [batch, n] float32 multi-hot. ``tempo`` / ``duration``: [batch] float32 with ``*_present`` masks.
    """

    genre: np.ndarray
    moods: np.ndarray
    instruments: np.ndarray
    tempo: np.ndarray
    tempo_present: np.ndarray
    duration: np.ndarray
    duration_present: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return dataclasses.asdict(self)


# The arrays a batch carries for learned attribute embeddings (training batches and generation).
ATTRIBUTE_KEYS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(EncodedAttributes))


def encode_attributes(batch: Sequence[Attributes | None]) -> EncodedAttributes:
    """Encode a batch of attributes (None = no attributes) as arrays."""
    size = len(batch)
    genre = np.zeros((size,), np.int32)
    moods = np.zeros((size, len(vocabulary.MOODS)), np.float32)
    instruments = np.zeros((size, len(vocabulary.INSTRUMENTS)), np.float32)
    tempo = np.zeros((size,), np.float32)
    tempo_present = np.zeros((size,), np.float32)
    duration = np.zeros((size,), np.float32)
    duration_present = np.zeros((size,), np.float32)
    for row, attributes in enumerate(batch):
        if attributes is None:
            continue
        if attributes.genre:
            genre[row] = 1 + vocabulary.GENRES.index(attributes.genre)
        for mood in attributes.moods:
            moods[row, vocabulary.MOODS.index(mood)] = 1.0
        for instrument in attributes.instruments:
            instruments[row, vocabulary.INSTRUMENTS.index(instrument)] = 1.0
        if attributes.tempo is not None:
            tempo[row], tempo_present[row] = attributes.tempo, 1.0
        if attributes.duration is not None:
            duration[row], duration_present[row] = attributes.duration, 1.0
    return EncodedAttributes(genre, moods, instruments, tempo, tempo_present, duration, duration_present)


# Each learned attribute and the arrays that carry it; an attribute is absent when its arrays are
# zero (genre row 0, no hot entry, the presence flag off): what encode_attributes writes for None.
ATTRIBUTE_FIELDS: dict[str, tuple[str, ...]] = {
    "genre": ("genre",),
    "moods": ("moods",),
    "instruments": ("instruments",),
    "tempo": ("tempo", "tempo_present"),
    "duration": ("duration", "duration_present"),
}


def keep_attributes(arrays: dict, keep: dict) -> dict:
    """``arrays`` (encoded attributes, NumPy or JAX, batch-major) with attribute ``name`` made absent
    in the rows where ``keep[name]`` (a ``[batch]`` bool array) is false; the others untouched."""
    out = dict(arrays)
    for name, rows in keep.items():
        for key in ATTRIBUTE_FIELDS[name]:
            value = arrays[key]
            mask = rows.reshape(rows.shape + (1,) * (value.ndim - 1))
            out[key] = value * mask.astype(value.dtype)
    return out


def null_attributes(size: int) -> EncodedAttributes:
    """The null condition for classifier-free guidance: nothing present."""
    return encode_attributes([None] * size)
