"""Composition: a :class:`~musicgen_jax.data.synthetic.spec.PieceSpec` becomes :class:`Note` events
on an eighth-note grid (bass, pad and string chords, piano chords or arpeggios, organ chords on the
off-beats, a plucked melody in eighths, a held synth-lead melody, drums)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from musicgen_jax.data.synthetic.spec import BEATS_PER_BAR, HIHAT, KICK, SCALES, SNARE, STYLES, PieceSpec


@dataclasses.dataclass(frozen=True)
class Note:
    """One note event: ``pitch`` is a MIDI number (drums: :data:`KICK`, :data:`SNARE`, :data:`HIHAT`)."""

    start: float  # seconds
    duration: float  # seconds
    pitch: int
    velocity: float  # 0..1
    timbre: str


def _scale_pitch(spec: PieceSpec, degree: int, base: int) -> int:
    """MIDI pitch of scale ``degree`` (any integer, wraps into octaves) above ``base`` + tonic."""
    scale = SCALES[spec.mode]
    octave, step = divmod(degree, len(scale))
    return base + spec.tonic + 12 * octave + scale[step]


def compose(spec: PieceSpec, duration: float, rng: np.random.Generator) -> list[Note]:
    """The notes of ``duration`` seconds of ``spec``; every onset lies on the eighth-note grid."""
    beat = spec.beat_seconds
    eighth = beat / 2
    style = STYLES[spec.genre]
    notes: list[Note] = []
    total_beats = math.ceil(duration / beat)
    melody_degree = 7  # the tonic an octave up; melodies walk from and back to it
    lead_degree = 7
    for beat_index in range(total_beats):
        bar, beat_in_bar = divmod(beat_index, BEATS_PER_BAR)
        root = spec.progression[bar % len(spec.progression)]
        chord = (root, root + 2, root + 4)  # diatonic triad, in scale degrees
        start = beat_index * beat
        downbeat = beat_in_bar == 0
        accent = 1.0 if downbeat else 0.8
        if "bass" in spec.timbres:
            # Root on every beat; the fifth on beat 3 of jazz bars (a hint of a walking line).
            degree = root + 4 if (spec.genre == "jazz" and beat_in_bar == 2) else root
            notes.append(Note(start, 0.9 * beat, _scale_pitch(spec, degree, 36), 0.9 * accent, "bass"))
        if "pad" in spec.timbres and downbeat:
            for degree in chord:
                notes.append(Note(start, BEATS_PER_BAR * beat, _scale_pitch(spec, degree, 48), 0.6, "pad"))
        if "strings" in spec.timbres and downbeat:
            # The triad an octave above the pad, over the whole bar.
            for degree in chord:
                notes.append(
                    Note(start, BEATS_PER_BAR * beat, _scale_pitch(spec, degree + 7, 48), 0.55, "strings")
                )
        if "organ" in spec.timbres:
            # Short chords on the off-beat eighths (the "skank" of organ comping).
            for degree in chord:
                notes.append(
                    Note(start + eighth, 0.8 * eighth, _scale_pitch(spec, degree, 48), 0.6 * accent, "organ")
                )
        if "piano" in spec.timbres:
            if style.piano == "arpeggio":
                for half in range(2):
                    degree = chord[(2 * beat_in_bar + half) % 3] + (7 if half else 0)
                    notes.append(
                        Note(
                            start + half * eighth,
                            1.5 * eighth,
                            _scale_pitch(spec, degree, 48),
                            0.7 * accent,
                            "piano",
                        )
                    )
            else:
                for degree in chord:
                    notes.append(
                        Note(start, 0.8 * beat, _scale_pitch(spec, degree, 48), 0.55 * accent, "piano")
                    )
        if "plucked" in spec.timbres:
            for half in range(2):
                if rng.random() < 0.2 and not downbeat:
                    continue  # a rest
                if downbeat and half == 0:
                    # Land on a chord tone at each bar line (the tonic on the first bar).
                    melody_degree = 7 + (root if bar % len(spec.progression) else 0)
                else:
                    melody_degree = int(np.clip(melody_degree + rng.choice((-2, -1, 1, 2)), 3, 13))
                notes.append(
                    Note(
                        start + half * eighth,
                        eighth * 1.8,
                        _scale_pitch(spec, melody_degree, 60),
                        0.75 * accent,
                        "plucked",
                    )
                )
        if "lead" in spec.timbres and beat_in_bar % 2 == 0:
            # Half-note melody two octaves up, a chord tone at each bar line.
            if downbeat:
                lead_degree = 7 + (root if bar % len(spec.progression) else 0)
            else:
                lead_degree = int(np.clip(lead_degree + rng.choice((-2, -1, 1, 2)), 3, 13))
            notes.append(Note(start, 1.9 * beat, _scale_pitch(spec, lead_degree, 72), 0.7 * accent, "lead"))
        if "drums" in spec.timbres:
            kick = style.four_on_the_floor or beat_in_bar in (0, 2)
            if kick:
                notes.append(Note(start, 0.3, KICK, 1.0 * accent, "drums"))
            if beat_in_bar in (1, 3):
                notes.append(Note(start, 0.2, SNARE, 0.8, "drums"))
            for half in range(2):
                notes.append(Note(start + half * eighth, 0.06, HIHAT, 0.35 if half else 0.5, "drums"))
    return [n for n in notes if n.start < duration]
