"""The synthetic dataset: deterministic under a seed, vocabulary-valid metadata, audiocraft's file
layout, and audio that really has the stated tempo and key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musicgen_jax.conditioning import Attributes, vocabulary
from musicgen_jax.data import manifest, synthetic

RATE = 16000


def test_same_seed_same_piece_and_other_seed_another():
    first = synthetic.generate_example(3, seed=7, duration=2.0, sample_rate=RATE)
    again = synthetic.generate_example(3, seed=7, duration=2.0, sample_rate=RATE)
    other = synthetic.generate_example(3, seed=8, duration=2.0, sample_rate=RATE)
    np.testing.assert_array_equal(first.audio, again.audio)
    assert first.metadata == again.metadata
    assert first.audio.shape == (1, 2 * RATE) and first.audio.dtype == np.float32
    assert not np.array_equal(first.audio, other.audio)
    assert 0.3 < np.abs(first.audio).max() <= 0.9  # the piece's loudness, never clipping


def test_every_metadata_word_is_in_the_vocabulary_and_validates():
    assert set(synthetic.STYLES) <= set(vocabulary.GENRES)
    assert {m for moods in synthetic.MOOD_CHOICES.values() for m in moods} <= set(vocabulary.MOODS)
    assert set(synthetic.INSTRUMENT_WORDS.values()) <= set(vocabulary.INSTRUMENTS)
    assert {f"{n} {m}" for n in synthetic.NOTE_NAMES for m in ("major", "minor")} <= set(vocabulary.KEYS)
    for index in range(30):
        rng = np.random.default_rng((0, index))
        spec = synthetic.sample_spec(rng)
        meta = synthetic.metadata(spec, f"piece{index}", synthetic.caption(spec, rng))
        attributes = Attributes.create(
            genre=meta["genre"],
            mood=meta["moods"],
            tempo=meta["bpm"],
            instruments=meta["instrument"],
            key=meta["key"],
            keywords=meta["keywords"],
        )
        assert attributes.genre == spec.genre and attributes.key == spec.key
        assert attributes.instruments == spec.instruments and attributes.tempo == spec.tempo
        assert spec.genre in meta["description"] and spec.key in meta["description"]
        assert str(spec.tempo) in meta["description"]
        low, high = synthetic.STYLES[spec.genre].tempo
        assert low <= spec.tempo <= high


def test_notes_follow_the_spec():
    spec = synthetic.PieceSpec(
        genre="pop",
        tempo=120,
        tonic=2,
        mode="major",
        moods=("happy",),
        timbres=("piano", "bass", "plucked", "drums"),
        progression=(0, 3, 0, 4),
        loudness=0.8,
        rising=False,
    )
    notes = synthetic.compose(spec, 4.0, np.random.default_rng(0))
    eighth = 0.25
    assert all(abs(n.start / eighth - round(n.start / eighth)) < 1e-9 for n in notes)  # on the grid
    scale = {(2 + step) % 12 for step in synthetic.SCALES["major"]}  # D major
    pitched = [n for n in notes if n.timbre != "drums"]
    assert {n.pitch % 12 for n in pitched} <= scale
    bass = [n for n in notes if n.timbre == "bass"]
    assert [round(n.start, 6) for n in bass] == [0.5 * i for i in range(8)]  # one per beat
    assert bass[0].pitch % 12 == 2  # the tonic chord's root first


def test_rendered_tempo_and_key_are_the_stated_ones():
    librosa = pytest.importorskip("librosa")
    hop = 256
    tonic_hits = 0
    examples = [synthetic.generate_example(i, seed=1, duration=6.0, sample_rate=RATE) for i in range(8)]
    for example in examples:
        y, spec = example.audio[0], example.spec
        envelope = librosa.onset.onset_strength(y=y, sr=RATE, hop_length=hop)
        onsets = librosa.onset.onset_detect(onset_envelope=envelope, sr=RATE, hop_length=hop, units="time")
        assert len(onsets) >= 6
        # Every detected onset sits on the eighth-note grid of the stated tempo (within ~2 hops):
        # a wrong tempo drifts off the grid within a few beats.
        grid = spec.beat_seconds / 2
        off_grid = np.abs(onsets / grid - np.round(onsets / grid)) * grid
        assert np.mean(off_grid < 0.035) >= 0.9, (spec.tempo, off_grid)
        estimate = float(librosa.feature.tempo(onset_envelope=envelope, sr=RATE, hop_length=hop)[0])
        # Tempo estimators may lock onto a metrical level (half, double, dotted); the beat grid must agree.
        assert min(abs(estimate * f / spec.tempo - 1) for f in (0.5, 2 / 3, 1.0, 1.5, 2.0)) < 0.05, (
            estimate,
            spec.tempo,
        )
        chroma = librosa.feature.chroma_cqt(y=y, sr=RATE, hop_length=1024).mean(axis=1)  # [12]
        tonic_hits += int(np.argmax(chroma)) == spec.tonic
        scale = [(spec.tonic + s) % 12 for s in synthetic.SCALES[spec.mode]]
        outside = [pc for pc in range(12) if pc not in scale]
        # The energy is in the key's scale: the two strongest pitch classes are scale notes, and the
        # five outside it (lit only by harmonics and drums) are weaker on average.
        assert set(np.argsort(chroma)[-2:]) <= set(scale)
        assert chroma[outside].mean() < 0.75 * chroma[scale].mean()
    assert tonic_hits >= 7, tonic_hits  # the chroma peak is the tonic (pieces return to it every other bar)


def test_stereo_pans_the_timbres():
    example = synthetic.generate_example(0, seed=0, duration=1.0, sample_rate=RATE, channels=2)
    assert example.audio.shape == (2, RATE)
    assert not np.allclose(example.audio[0], example.audio[1])


def test_cli_writes_audio_sidecars_and_manifest(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    assert (
        synthetic.main(
            [
                "--output",
                str(tmp_path),
                "--num-examples",
                "3",
                "--duration",
                "1.5",
                "--sample-rate",
                str(RATE),
                "--seed",
                "4",
            ]
        )
        == 0
    )
    entries = manifest.read_manifest(tmp_path / "data.jsonl")
    assert len(entries) == 3
    lines = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert set(lines[0]) == {"path", "duration", "sample_rate", "amplitude", "weight", "info_path"}
    for index, entry in enumerate(entries):
        audio, rate = soundfile.read(entry.path, dtype="float32")
        assert rate == RATE == entry.sample_rate and entry.duration == pytest.approx(1.5)
        expected = synthetic.generate_example(index, seed=4, duration=1.5, sample_rate=RATE)
        np.testing.assert_allclose(audio, expected.audio[0], atol=1 / 32767 + 1e-6)  # 16-bit PCM
        assert entry.amplitude == pytest.approx(np.abs(expected.audio).max())
        sidecar = json.loads(manifest.sidecar_path(entry.path).read_text())
        assert sidecar == expected.metadata
        assert set(sidecar) == {
            "title",
            "artist",
            "key",
            "bpm",
            "genre",
            "moods",
            "keywords",
            "description",
            "name",
            "instrument",
        }
        assert entry.info_path == str(manifest.sidecar_path(entry.path))
