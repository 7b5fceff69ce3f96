"""What a synthetic piece is made of: music theory tables, genre styles, moods and the seeded
:class:`PieceSpec` that composition, rendering and captions all derive from."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),  # natural minor
}
# One spelling per pitch class, all of them entries of vocabulary.KEYS ("Eb major", "F# minor", ...).
NOTE_NAMES: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Chord progressions as 0-based scale degrees of each bar's chord root. All start on the tonic
# chord and return to it every other bar (or end on it), so the key is unambiguous in a few bars.
PROGRESSIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "major": ((0, 3, 0, 4), (0, 4, 0, 3), (0, 5, 0, 4), (0, 3, 4, 0)),
    "minor": ((0, 3, 0, 4), (0, 5, 0, 6), (0, 6, 0, 3), (0, 3, 4, 0)),
}
BEATS_PER_BAR = 4

# General MIDI drum numbers, used as the "pitch" of drum notes.
KICK, SNARE, HIHAT = 36, 38, 42

TIMBRES: tuple[str, ...] = ("piano", "organ", "bass", "pad", "strings", "plucked", "lead", "drums")
# The vocabulary word for each timbre (what the caption and the metadata call it).
INSTRUMENT_WORDS: dict[str, str] = {
    "piano": "piano",
    "bass": "bass",
    "pad": "pad",
    "organ": "organ",
    "strings": "strings",
    "plucked": "plucked strings",
    "lead": "synth",
    "drums": "drums",
}


@dataclasses.dataclass(frozen=True)
class Style:
    """What a genre sounds like: tempo range, timbres always present, timbres sometimes added,
    and how the piano plays (``arpeggio`` eighths or ``chords`` on every beat)."""

    tempo: tuple[int, int]
    timbres: tuple[str, ...]
    optional: tuple[str, ...] = ()
    piano: Literal["arpeggio", "chords"] = "chords"
    four_on_the_floor: bool = False


# Together the tempo ranges cover 60-180 bpm, and every timbre leads in some genre and is optional
# in others, so instrument words are not fixed by the genre word.
STYLES: dict[str, Style] = {
    "ambient": Style((60, 84), ("pad", "piano"), ("plucked", "strings"), piano="arpeggio"),
    "classical": Style((66, 110), ("piano",), ("plucked", "strings"), piano="arpeggio"),
    "orchestral": Style((60, 100), ("strings",), ("piano", "plucked"), piano="arpeggio"),
    "jazz": Style((90, 140), ("piano", "bass", "drums"), ("organ",)),
    "blues": Style((70, 110), ("organ", "bass", "drums"), ("piano", "plucked")),
    "gospel": Style((70, 120), ("organ", "piano", "bass"), ("drums", "strings")),
    "soul": Style((72, 104), ("organ", "bass", "drums"), ("strings", "piano")),
    "funk": Style((96, 122), ("organ", "bass", "drums"), ("plucked", "lead")),
    "pop": Style((96, 128), ("piano", "bass", "drums"), ("pad", "plucked", "strings")),
    "rock": Style((100, 160), ("plucked", "bass", "drums"), ("organ",)),
    "punk": Style((150, 180), ("plucked", "bass", "drums")),
    "folk": Style((80, 120), ("plucked", "bass"), ("piano", "strings"), piano="arpeggio"),
    "hip hop": Style((80, 100), ("piano", "bass", "drums"), ("strings", "pad")),
    "lofi": Style((70, 90), ("piano", "bass", "drums"), ("pad",), piano="arpeggio"),
    "synthwave": Style((84, 118), ("lead", "bass", "drums"), ("pad",), four_on_the_floor=True),
    "electronic": Style((110, 135), ("pad", "bass", "drums"), ("plucked", "lead"), four_on_the_floor=True),
    "house": Style((118, 128), ("piano", "bass", "drums"), ("pad", "organ"), four_on_the_floor=True),
    "techno": Style((124, 150), ("bass", "drums", "pad"), ("lead",), four_on_the_floor=True),
    "trance": Style((130, 145), ("lead", "pad", "bass", "drums"), four_on_the_floor=True),
    "drum and bass": Style((160, 180), ("bass", "drums", "pad"), ("lead", "piano")),
}

# Moods by (mode, energetic): minor pieces are never "happy", slow ones never "energetic".
MOOD_CHOICES: dict[tuple[str, bool], tuple[str, ...]] = {
    ("major", True): ("happy", "upbeat", "energetic", "cheerful", "playful", "uplifting"),
    ("major", False): ("calm", "peaceful", "relaxed", "warm", "dreamy", "romantic", "hopeful"),
    ("minor", True): ("dark", "intense", "tense", "aggressive", "dramatic", "epic"),
    ("minor", False): ("sad", "melancholic", "mysterious", "nostalgic", "sentimental"),
}
_LOUD_MOODS = frozenset({"energetic", "aggressive", "intense", "upbeat", "epic", "dramatic"})
_SOFT_MOODS = frozenset({"calm", "peaceful", "sad", "dreamy", "relaxed", "melancholic", "mysterious"})
_RISING_MOODS = frozenset({"epic", "dramatic", "uplifting", "hopeful"})
ENERGETIC_TEMPO = 110  # bpm from which a piece counts as energetic


@dataclasses.dataclass(frozen=True)
class PieceSpec:
    """Everything a piece is composed from; the caption and metadata are derived from it."""

    genre: str
    tempo: int  # beats per minute
    tonic: int  # pitch class, 0 = C
    mode: Literal["major", "minor"]
    moods: tuple[str, ...]
    timbres: tuple[str, ...]
    progression: tuple[int, ...]  # scale degree of each bar's chord root
    loudness: float  # peak level of the mix, 0..1
    rising: bool  # a crescendo over the piece

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.mode}"

    @property
    def instruments(self) -> tuple[str, ...]:
        return tuple(INSTRUMENT_WORDS[t] for t in self.timbres)

    @property
    def beat_seconds(self) -> float:
        return 60.0 / self.tempo


def sample_spec(rng: np.random.Generator) -> PieceSpec:
    """A random piece: genre first, then what that genre allows."""
    genre = str(rng.choice(list(STYLES)))
    style = STYLES[genre]
    tempo = int(rng.integers(style.tempo[0], style.tempo[1] + 1))
    mode: Literal["major", "minor"] = "major" if rng.random() < 0.5 else "minor"
    energetic = tempo >= ENERGETIC_TEMPO
    choices = MOOD_CHOICES[(mode, energetic)]
    moods = tuple(str(m) for m in rng.choice(choices, size=int(rng.integers(1, 3)), replace=False))
    extra = tuple(t for t in style.optional if rng.random() < 0.5)
    timbres = tuple(t for t in TIMBRES if t in style.timbres or t in extra)  # a fixed order
    progressions = PROGRESSIONS[mode]
    progression = progressions[int(rng.integers(len(progressions)))]
    if any(m in _LOUD_MOODS for m in moods):
        loudness = float(rng.uniform(0.75, 0.9))
    elif any(m in _SOFT_MOODS for m in moods):
        loudness = float(rng.uniform(0.35, 0.55))
    else:
        loudness = float(rng.uniform(0.5, 0.75))
    return PieceSpec(
        genre=genre,
        tempo=tempo,
        tonic=int(rng.integers(12)),
        mode=mode,
        moods=moods,
        timbres=timbres,
        progression=progression,
        loudness=loudness,
        rising=any(m in _RISING_MOODS for m in moods),
    )
