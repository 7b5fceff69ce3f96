"""A synthetic captioned music dataset that needs no download.

Each piece is composed from a seeded :class:`PieceSpec` (genre, tempo, key and scale, moods, a
chord progression, timbres) into a list of :class:`Note` events on an eighth-note grid, rendered
in NumPy with five additive timbres (piano-like, bass, pad, plucked, drums), and written the way
audiocraft's datasets are laid out: one audio file per piece, a sidecar ``<stem>.json`` with
``title, artist, key, bpm, genre, moods, keywords, description, name, instrument`` and a
``data.jsonl`` manifest (see :mod:`musicgen_jax.data.manifest`).

Every word in the metadata is an entry of :mod:`musicgen_jax.conditioning.vocabulary`, so captions and
attributes validate with :meth:`~musicgen_jax.conditioning.Attributes.create`. Example ``i`` of a
run depends only on ``(seed, i)``: a larger dataset extends a smaller one with the same seed.

    python -m musicgen_jax.data.synthetic --output data/synth --num-examples 64 --duration 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from musicgen_jax.data import manifest

# ----------------------------------------------------------------------------- music theory

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

TIMBRES: tuple[str, ...] = ("piano", "bass", "pad", "plucked", "drums")
# The vocabulary word for each timbre (what the caption and the metadata call it).
INSTRUMENT_WORDS: dict[str, str] = {
    "piano": "piano",
    "bass": "bass",
    "pad": "pad",
    "plucked": "plucked strings",
    "drums": "drums",
}
# Pan position per timbre for stereo output (-1 left, +1 right).
_PAN: dict[str, float] = {"piano": -0.3, "bass": 0.0, "pad": 0.0, "plucked": 0.4, "drums": 0.1}
_GAIN: dict[str, float] = {"piano": 0.5, "bass": 0.6, "pad": 0.25, "plucked": 0.45, "drums": 0.5}


@dataclasses.dataclass(frozen=True)
class Style:
    """What a genre sounds like: tempo range, timbres always present, timbres sometimes added,
    and how the piano plays (``arpeggio`` eighths or ``chords`` on every beat)."""

    tempo: tuple[int, int]
    timbres: tuple[str, ...]
    optional: tuple[str, ...] = ()
    piano: Literal["arpeggio", "chords"] = "chords"
    four_on_the_floor: bool = False


STYLES: dict[str, Style] = {
    "ambient": Style((60, 84), ("pad", "piano"), ("plucked",), piano="arpeggio"),
    "classical": Style((66, 110), ("piano",), ("plucked", "pad"), piano="arpeggio"),
    "jazz": Style((90, 140), ("piano", "bass", "drums")),
    "pop": Style((96, 128), ("piano", "bass", "drums"), ("pad", "plucked")),
    "rock": Style((100, 150), ("plucked", "bass", "drums")),
    "folk": Style((80, 120), ("plucked", "bass"), ("piano",), piano="arpeggio"),
    "electronic": Style((110, 135), ("pad", "bass", "drums"), ("plucked",), four_on_the_floor=True),
    "techno": Style((124, 140), ("bass", "drums", "pad"), four_on_the_floor=True),
    "house": Style((118, 128), ("piano", "bass", "drums"), ("pad",), four_on_the_floor=True),
    "lofi": Style((70, 90), ("piano", "bass", "drums"), ("pad",), piano="arpeggio"),
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
class Note:
    """One note event: ``pitch`` is a MIDI number (drums: :data:`KICK`, :data:`SNARE`, :data:`HIHAT`)."""

    start: float  # seconds
    duration: float  # seconds
    pitch: int
    velocity: float  # 0..1
    timbre: str


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


# ----------------------------------------------------------------------------- composition


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
        if "drums" in spec.timbres:
            kick = style.four_on_the_floor or beat_in_bar in (0, 2)
            if kick:
                notes.append(Note(start, 0.3, KICK, 1.0 * accent, "drums"))
            if beat_in_bar in (1, 3):
                notes.append(Note(start, 0.2, SNARE, 0.8, "drums"))
            for half in range(2):
                notes.append(Note(start + half * eighth, 0.06, HIHAT, 0.35 if half else 0.5, "drums"))
    return [n for n in notes if n.start < duration]


# ----------------------------------------------------------------------------- synthesis


def midi_to_hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


def _envelope(
    length: int, sample_rate: int, attack: float, release: float, sustain_samples: int
) -> np.ndarray:
    """Linear attack, hold until ``sustain_samples``, then a linear release to zero."""
    t = np.arange(length)
    attack_n = max(1, int(attack * sample_rate))
    release_n = max(1, int(release * sample_rate))
    env = np.minimum(1.0, t / attack_n)
    fade = np.clip(1.0 - (t - sustain_samples) / release_n, 0.0, 1.0)
    return env * fade


def render_note(note: Note, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One note's waveform, float64 ``[samples]``, peak around ``velocity``."""
    if note.timbre == "drums":
        return _render_drum(note, sample_rate, rng)
    release = {"piano": 0.08, "bass": 0.05, "pad": 0.4, "plucked": 0.05}[note.timbre]
    sustain = int(note.duration * sample_rate)
    length = sustain + int(release * sample_rate)
    t = np.arange(length) / sample_rate
    f0 = midi_to_hz(note.pitch)
    wave = np.zeros(length)
    if note.timbre == "piano":
        # Decaying harmonics, the upper ones faster; slight stiffness (inharmonicity) like a string.
        for h in range(1, 9):
            f = f0 * h * math.sqrt(1.0 + 0.0004 * h * h)
            if f < sample_rate / 2:
                wave += h**-1.2 * np.sin(2 * np.pi * f * t) * np.exp(-t * (1.2 + 0.7 * h))
        env = _envelope(length, sample_rate, 0.003, release, sustain)
    elif note.timbre == "bass":
        wave = (
            np.sin(2 * np.pi * f0 * t) + 0.35 * np.sin(4 * np.pi * f0 * t) + 0.1 * np.sin(6 * np.pi * f0 * t)
        )
        wave *= np.exp(-t * 2.5)
        env = _envelope(length, sample_rate, 0.005, release, sustain)
    elif note.timbre == "pad":
        # Two slightly detuned saw-like stacks, slow attack: a sustained chord bed.
        for h in range(1, 7):
            for detune in (0.997, 1.003):
                f = f0 * h * detune
                if f < sample_rate / 2:
                    wave += 0.5 / h * np.sin(2 * np.pi * f * t)
        env = _envelope(length, sample_rate, min(0.3, 0.4 * note.duration), release, sustain)
    elif note.timbre == "plucked":
        for h in range(1, 11):
            f = f0 * h
            if f < sample_rate / 2:
                wave += (1.0 / h) * np.sin(2 * np.pi * f * t) * np.exp(-t * (3.0 + 1.5 * h))
        burst = int(0.004 * sample_rate)
        wave[:burst] += 0.3 * rng.standard_normal(burst) * np.linspace(1.0, 0.0, burst)
        env = _envelope(length, sample_rate, 0.002, release, sustain)
    else:
        raise ValueError(f"unknown timbre {note.timbre!r}; known: {', '.join(TIMBRES)}")
    wave *= env
    peak = np.max(np.abs(wave))
    return wave * (note.velocity / peak) if peak > 0 else wave


def _render_drum(note: Note, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    length = int(note.duration * sample_rate)
    t = np.arange(length) / sample_rate
    if note.pitch == KICK:
        frequency = 50.0 + 100.0 * np.exp(-t * 30.0)  # a falling sine sweep
        wave = np.sin(2 * np.pi * np.cumsum(frequency) / sample_rate) * np.exp(-t * 9.0)
    elif note.pitch == SNARE:
        noise = np.diff(rng.standard_normal(length + 1))  # differenced: tilted towards the highs
        wave = 0.6 * noise * np.exp(-t * 22.0) + 0.5 * np.sin(2 * np.pi * 185.0 * t) * np.exp(-t * 25.0)
    elif note.pitch == HIHAT:
        wave = np.diff(rng.standard_normal(length + 1), n=1) * np.exp(-t * 70.0)
        wave = np.diff(np.concatenate([[0.0], wave]))  # a second difference: only the top end
    else:
        raise ValueError(f"unknown drum {note.pitch}; known: {KICK} kick, {SNARE} snare, {HIHAT} hi-hat")
    fade = min(length, int(0.005 * sample_rate))
    if fade:
        wave[-fade:] *= np.linspace(1.0, 0.0, fade)  # no click at the cut
    peak = np.max(np.abs(wave))
    return wave * (note.velocity / peak) if peak > 0 else wave


def render(
    notes: Sequence[Note],
    duration: float,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    channels: int = 1,
    loudness: float = 0.8,
    rising: bool = False,
) -> np.ndarray:
    """Mix ``notes`` into float32 ``[channels, samples]`` (``duration * sample_rate`` samples),
    peak-normalised to ``loudness``; ``rising`` shapes a crescendo from 60% to full level."""
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    samples = round(duration * sample_rate)
    mix = np.zeros((channels, samples))
    for note in notes:
        start = round(note.start * sample_rate)  # sample-exact onsets keep the tempo exact
        if start >= samples:
            continue
        wave = render_note(note, sample_rate, rng)[: samples - start] * _GAIN[note.timbre]
        if channels == 1:
            mix[0, start : start + len(wave)] += wave
        else:
            angle = (_PAN[note.timbre] + 1.0) * math.pi / 4  # constant-power panning
            mix[0, start : start + len(wave)] += math.cos(angle) * wave
            mix[1, start : start + len(wave)] += math.sin(angle) * wave
    if rising:
        mix *= np.linspace(0.6, 1.0, samples)
    peak = np.max(np.abs(mix))
    if peak > 0:
        mix *= loudness / peak
    return mix.astype(np.float32)


# ----------------------------------------------------------------------------- text


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


# ----------------------------------------------------------------------------- dataset


@dataclasses.dataclass(frozen=True)
class SyntheticExample:
    name: str
    audio: np.ndarray  # float32 [channels, samples]
    sample_rate: int
    spec: PieceSpec
    notes: tuple[Note, ...]
    metadata: dict


def generate_example(
    index: int, *, seed: int = 0, duration: float = 10.0, sample_rate: int = 32000, channels: int = 1
) -> SyntheticExample:
    """Example ``index`` of the dataset with ``seed``: a function of ``(seed, index)`` alone."""
    rng = np.random.default_rng((seed, index))
    spec = sample_spec(rng)
    notes = tuple(compose(spec, duration, rng))
    description = caption(spec, rng)
    audio = render(
        notes, duration, sample_rate, rng, channels=channels, loudness=spec.loudness, rising=spec.rising
    )
    name = f"synth_{index:06d}"
    return SyntheticExample(name, audio, sample_rate, spec, notes, metadata(spec, name, description))


def write_dataset(
    output: str | Path,
    num_examples: int,
    *,
    duration: float = 10.0,
    sample_rate: int = 32000,
    seed: int = 0,
    channels: int = 1,
    audio_format: Literal["wav", "flac"] = "wav",
    absolute_paths: bool = True,
) -> Path:
    """Write ``num_examples`` pieces, their sidecar JSONs and ``data.jsonl`` under ``output``;
    return the manifest's path. Audio is 16-bit PCM, written without normalisation (the piece's
    loudness is part of its dynamics)."""
    import soundfile

    output = Path(output)
    audio_dir = output / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(num_examples):
        example = generate_example(
            index, seed=seed, duration=duration, sample_rate=sample_rate, channels=channels
        )
        audio_path = audio_dir / f"{example.name}.{audio_format}"
        soundfile.write(str(audio_path), example.audio.T, sample_rate, subtype="PCM_16")
        info_path = manifest.sidecar_path(audio_path)
        info_path.write_text(json.dumps(example.metadata, indent=2) + "\n")
        entries.append(
            manifest.AudioMeta(
                path=str(audio_path.resolve() if absolute_paths else audio_path.relative_to(output)),
                duration=example.audio.shape[-1] / sample_rate,
                sample_rate=sample_rate,
                amplitude=float(np.max(np.abs(example.audio))),
                info_path=str(info_path.resolve() if absolute_paths else info_path.relative_to(output)),
            )
        )
    manifest_path = output / manifest.MANIFEST_NAME
    manifest.write_manifest(manifest_path, entries)
    return manifest_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.data.synthetic",
        description="Write a synthetic captioned music dataset (audio, sidecar JSON, data.jsonl).",
    )
    parser.add_argument("--output", required=True, help="directory to write into")
    parser.add_argument("--num-examples", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per piece")
    parser.add_argument("--sample-rate", type=int, default=32000)
    parser.add_argument("--channels", type=int, choices=(1, 2), default=1)
    parser.add_argument("--format", choices=("wav", "flac"), default="wav")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--relative-paths",
        action="store_true",
        help="manifest paths relative to --output (default: absolute, as audiocraft)",
    )
    args = parser.parse_args(argv)
    if args.num_examples < 1 or args.duration <= 0:
        parser.error("--num-examples must be positive and --duration above 0")
    path = write_dataset(
        args.output,
        args.num_examples,
        duration=args.duration,
        sample_rate=args.sample_rate,
        seed=args.seed,
        channels=args.channels,
        audio_format=args.format,
        absolute_paths=not args.relative_paths,
    )
    print(f"wrote {args.num_examples} pieces of {args.duration:g} s and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
