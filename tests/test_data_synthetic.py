"""The synthetic dataset: deterministic under a seed, vocabulary-valid metadata, audiocraft's file
layout, and audio that really has the stated tempo and key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musicgen_jax.conditioning import Attributes, vocabulary
from musicgen_jax.data import manifest, synthetic
from musicgen_jax.data.synthetic import synthesis
from musicgen_jax.eval import metrics

RATE = 16000


def spec(**fields) -> synthetic.PieceSpec:
    """A D major pop piece at 120 bpm with piano, bass and drums, with ``fields`` changed."""
    defaults = dict(
        genre="pop",
        tempo=120,
        tonic=2,
        mode="major",
        moods=("happy",),
        timbres=("piano", "bass", "drums"),
        progression=(0, 3, 0, 4),
        loudness=0.8,
        rising=False,
    )
    return synthetic.PieceSpec(**{**defaults, **fields})


def piece(spec: synthetic.PieceSpec, duration: float = 4.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """``spec`` composed and rendered: float32 ``[channels, samples]``."""
    rng = np.random.default_rng(seed)
    notes = synthetic.compose(spec, duration, rng)
    return synthetic.render(notes, duration, RATE, rng, channels=channels, loudness=spec.loudness)


def band_fraction(y: np.ndarray, low: float, high: float) -> float:
    """The fraction of ``y``'s energy between ``low`` and ``high`` Hz."""
    power = np.abs(np.fft.rfft(y)) ** 2
    frequencies = np.fft.rfftfreq(len(y), 1.0 / RATE)
    return float(power[(frequencies >= low) & (frequencies < high)].sum() / power.sum())


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


@pytest.mark.parametrize("tempo", [96, 123, 140])
def test_the_project_beat_tracker_measures_the_requested_tempo(tempo):
    # At 80 bpm and below the tracker may lock onto double time; these tempos it reads at the beat.
    measured = metrics.estimate_tempo(piece(spec(tempo=tempo), duration=8.0), RATE).bpm
    assert measured == pytest.approx(tempo, rel=0.006)  # under one bpm


def test_generated_pieces_with_drums_have_their_stated_tempo():
    examples = [synthetic.generate_example(i, seed=1, duration=8.0, sample_rate=RATE) for i in range(8)]
    drummed = [example for example in examples if "drums" in example.spec.timbres]
    assert len(drummed) >= 5
    for example in drummed:
        measured = metrics.estimate_tempo(example.audio, RATE).bpm
        assert measured == pytest.approx(example.spec.tempo, rel=0.01), example.spec


def test_requested_instruments_show_in_the_spectrum():
    # The bass plays MIDI 36-47 (65-123 Hz), below every piano note (from MIDI 50, 147 Hz); only the
    # drums' hi-hat and snare noise reach above 5 kHz.
    piano = piece(spec(timbres=("piano",)))[0]
    with_bass = piece(spec(timbres=("piano", "bass")))[0]
    with_drums = piece(spec(timbres=("piano", "drums")))[0]
    assert band_fraction(piano, 0, 130) < 0.01 < 0.3 < band_fraction(with_bass, 0, 130)
    assert band_fraction(piano, 5000, 8000) < 1e-4 < 0.01 < band_fraction(with_drums, 5000, 8000)


@pytest.mark.parametrize("mode", ["major", "minor"])
def test_every_requested_key_peaks_at_its_tonic_in_the_chroma(mode):
    librosa = pytest.importorskip("librosa")
    chromas = []
    for tonic in range(12):
        y = piece(spec(tonic=tonic, mode=mode, timbres=("piano", "pad")))[0]
        chromas.append(librosa.feature.chroma_cqt(y=y, sr=RATE, hop_length=1024).mean(axis=1))  # [12]
    assert [int(np.argmax(chroma)) for chroma in chromas] == list(range(12))
    # A transposed piece has the chroma of the first rolled by the interval.
    for tonic, chroma in enumerate(chromas):
        rolled = np.roll(chromas[0], tonic)
        assert np.dot(rolled, chroma) / (np.linalg.norm(rolled) * np.linalg.norm(chroma)) > 0.98


@pytest.mark.parametrize("timbre", synthetic.TIMBRES)
def test_stereo_pans_each_timbre_by_constant_power(timbre):
    audio = piece(spec(timbres=(timbre,)), duration=2.0, channels=2)  # [2, samples]
    assert audio.shape == (2, 2 * RATE)
    angle = (synthesis.PAN[timbre] + 1.0) * np.pi / 4
    left_over_right = np.sqrt(np.mean(audio[0] ** 2) / np.mean(audio[1] ** 2))
    assert left_over_right == pytest.approx(np.cos(angle) / np.sin(angle), rel=1e-4)


def test_stereo_pans_the_timbres():
    example = synthetic.generate_example(0, seed=0, duration=1.0, sample_rate=RATE, channels=2)
    assert example.audio.shape == (2, RATE)
    assert not np.allclose(example.audio[0], example.audio[1])


def test_a_larger_dataset_extends_a_smaller_one(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    small = synthetic.write_dataset(tmp_path / "small", 2, duration=0.5, sample_rate=RATE, seed=5)
    large = synthetic.write_dataset(tmp_path / "large", 3, duration=0.5, sample_rate=RATE, seed=5)
    small_entries, large_entries = manifest.read_manifest(small), manifest.read_manifest(large)
    assert len(small_entries) == 2 and len(large_entries) == 3
    for ours, theirs in zip(small_entries, large_entries):
        np.testing.assert_array_equal(soundfile.read(ours.path)[0], soundfile.read(theirs.path)[0])
        assert manifest.sidecar_path(ours.path).read_text() == manifest.sidecar_path(theirs.path).read_text()


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


def test_the_styles_span_60_to_180_bpm_and_every_timbre_varies_within_a_genre():
    lows, highs = zip(*(style.tempo for style in synthetic.STYLES.values()), strict=True)
    assert min(lows) == 60 and max(highs) == 180
    covered = set(range(60, 181))
    for style in synthetic.STYLES.values():
        covered -= set(range(style.tempo[0], style.tempo[1] + 1))
    assert not covered, sorted(covered)
    for timbre in synthetic.TIMBRES:
        always = [g for g, s in synthetic.STYLES.items() if timbre in s.timbres]
        sometimes = [g for g, s in synthetic.STYLES.items() if timbre in s.optional]
        assert (always and sometimes) or timbre in ("bass", "drums"), timbre


@pytest.mark.parametrize("timbre", ["organ", "strings", "lead"])
def test_each_new_timbre_plays_the_pitches_it_is_given(timbre):
    # The strongest partial of a held A4 (440 Hz) is its fundamental, for every additive timbre.
    note = synthetic.Note(0.0, 1.0, 69, 0.8, timbre)
    wave = synthetic.render_note(note, RATE, np.random.default_rng(0))
    spectrum = np.abs(np.fft.rfft(wave[: RATE // 2] * np.hanning(RATE // 2)))
    peak_hz = np.argmax(spectrum) * RATE / (RATE // 2)
    assert peak_hz == pytest.approx(440.0, abs=4.0)
    assert np.max(np.abs(wave)) == pytest.approx(0.8)
