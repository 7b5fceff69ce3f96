"""A synthetic captioned music dataset that needs no download.

Each piece is composed from a seeded :class:`PieceSpec` (genre, tempo, key and scale, moods, a
chord progression, timbres) into a list of :class:`Note` events on an eighth-note grid, rendered
in NumPy with eight additive timbres (piano-like, organ, bass, pad, strings, plucked, synth lead,
drums), and written the way
audiocraft's datasets are laid out: one audio file per piece, a sidecar ``<stem>.json`` with
``title, artist, key, bpm, genre, moods, keywords, description, name, instrument`` and a
``data.jsonl`` manifest (see :mod:`musicgen_jax.data.manifest`).

Every word in the metadata is an entry of :mod:`musicgen_jax.conditioning.vocabulary`, so captions and
attributes validate with :meth:`~musicgen_jax.conditioning.Attributes.create`. Example ``i`` of a
run depends only on ``(seed, i)``: a larger dataset extends a smaller one with the same seed.
:mod:`~musicgen_jax.data.synthetic.holdout` states which pieces a training set leaves out
(``--exclude-held-out``) and draws prompts from them.

    python -m musicgen_jax.data.synthetic --output data/synth --num-examples 64 --duration 10
"""

from musicgen_jax.data.synthetic.captions import caption, metadata
from musicgen_jax.data.synthetic.cli import main
from musicgen_jax.data.synthetic.composition import Note, compose
from musicgen_jax.data.synthetic.dataset import SyntheticExample, generate_example, write_dataset
from musicgen_jax.data.synthetic.holdout import (
    HELD_OUT_PAIRS,
    HeldOutPrompt,
    held_out_prompts,
    held_out_reasons,
    is_held_out,
)
from musicgen_jax.data.synthetic.spec import (
    BEATS_PER_BAR,
    ENERGETIC_TEMPO,
    HIHAT,
    INSTRUMENT_WORDS,
    KICK,
    MOOD_CHOICES,
    NOTE_NAMES,
    PROGRESSIONS,
    SCALES,
    SNARE,
    STYLES,
    TIMBRES,
    PieceSpec,
    Style,
    sample_spec,
)
from musicgen_jax.data.synthetic.synthesis import midi_to_hz, render, render_note

__all__ = [
    "BEATS_PER_BAR",
    "ENERGETIC_TEMPO",
    "HELD_OUT_PAIRS",
    "HIHAT",
    "INSTRUMENT_WORDS",
    "KICK",
    "MOOD_CHOICES",
    "NOTE_NAMES",
    "PROGRESSIONS",
    "SCALES",
    "SNARE",
    "STYLES",
    "TIMBRES",
    "HeldOutPrompt",
    "Note",
    "PieceSpec",
    "Style",
    "SyntheticExample",
    "caption",
    "compose",
    "generate_example",
    "held_out_prompts",
    "held_out_reasons",
    "is_held_out",
    "main",
    "metadata",
    "midi_to_hz",
    "render",
    "render_note",
    "sample_spec",
    "write_dataset",
]
