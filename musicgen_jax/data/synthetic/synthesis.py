"""Synthesis in NumPy: eight additive timbres (piano-like, organ, bass, pad, bowed strings, plucked,
a synth lead, drums) and the mix of a piece's notes into a mono or constant-power-panned stereo
waveform."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from musicgen_jax.data.synthetic.composition import Note
from musicgen_jax.data.synthetic.spec import HIHAT, KICK, SNARE, TIMBRES

# Pan position per timbre for stereo output (-1 left, +1 right).
PAN: dict[str, float] = {
    "piano": -0.3,
    "organ": -0.2,
    "bass": 0.0,
    "pad": 0.0,
    "strings": -0.5,
    "plucked": 0.4,
    "lead": 0.25,
    "drums": 0.1,
}
_GAIN: dict[str, float] = {
    "piano": 0.5,
    "organ": 0.3,
    "bass": 0.6,
    "pad": 0.25,
    "strings": 0.3,
    "plucked": 0.45,
    "lead": 0.35,
    "drums": 0.5,
}
_RELEASE: dict[str, float] = {
    "piano": 0.08,
    "organ": 0.03,
    "bass": 0.05,
    "pad": 0.4,
    "strings": 0.25,
    "plucked": 0.05,
    "lead": 0.06,
}


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


def _vibrato_phase(f0: float, t: np.ndarray, sample_rate: int, rate: float, depth: np.ndarray) -> np.ndarray:
    """The phase of a tone whose frequency swings by ``depth`` (relative, per sample) at ``rate`` Hz:
    the integral of the instantaneous frequency, so the pitch moves without phase jumps."""
    frequency = f0 * (1.0 + depth * np.sin(2 * np.pi * rate * t))
    return 2 * np.pi * np.cumsum(frequency) / sample_rate


def render_note(note: Note, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One note's waveform, float64 ``[samples]``, peak around ``velocity``."""
    if note.timbre == "drums":
        return _render_drum(note, sample_rate, rng)
    if note.timbre not in _RELEASE:
        raise ValueError(f"unknown timbre {note.timbre!r}; known: {', '.join(TIMBRES)}")
    release = _RELEASE[note.timbre]
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
    elif note.timbre == "organ":
        # Drawbar-like: fundamental, octave, twelfth and two octaves at fixed levels, no decay, and
        # a fast attack: the sound of a held organ chord.
        for h, level in ((1, 1.0), (2, 0.7), (3, 0.45), (4, 0.35), (6, 0.15)):
            if f0 * h < sample_rate / 2:
                wave += level * np.sin(2 * np.pi * f0 * h * t)
        env = _envelope(length, sample_rate, 0.008, release, sustain)
    elif note.timbre == "strings":
        # A bowed section: a sawtooth series with 5.5 Hz vibrato and a slow swell.
        phase = _vibrato_phase(f0, t, sample_rate, rate=5.5, depth=0.003 * np.ones_like(t))
        for h in range(1, 12):
            if f0 * h < sample_rate / 2:
                wave += (1.0 / h) * np.sin(h * phase)
        env = _envelope(length, sample_rate, min(0.15, 0.5 * note.duration), release, sustain)
    elif note.timbre == "lead":
        # A square-wave synth lead (odd harmonics only), with a little vibrato once the note holds.
        depth = 0.004 * np.clip((t - 0.1) / 0.2, 0.0, 1.0)
        phase = _vibrato_phase(f0, t, sample_rate, rate=6.0, depth=depth)
        for h in range(1, 16, 2):
            if f0 * h < sample_rate / 2:
                wave += (1.0 / h) * np.sin(h * phase)
        env = _envelope(length, sample_rate, 0.01, release, sustain)
    elif note.timbre == "plucked":
        for h in range(1, 11):
            f = f0 * h
            if f < sample_rate / 2:
                wave += (1.0 / h) * np.sin(2 * np.pi * f * t) * np.exp(-t * (3.0 + 1.5 * h))
        burst = int(0.004 * sample_rate)
        wave[:burst] += 0.3 * rng.standard_normal(burst) * np.linspace(1.0, 0.0, burst)
        env = _envelope(length, sample_rate, 0.002, release, sustain)
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
            angle = (PAN[note.timbre] + 1.0) * math.pi / 4  # constant-power panning
            mix[0, start : start + len(wave)] += math.cos(angle) * wave
            mix[1, start : start + len(wave)] += math.sin(angle) * wave
    if rising:
        mix *= np.linspace(0.6, 1.0, samples)
    peak = np.max(np.abs(mix))
    if peak > 0:
        mix *= loudness / peak
    return mix.astype(np.float32)
