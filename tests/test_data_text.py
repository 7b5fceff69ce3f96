"""Text from metadata: audiocraft's parsing of sidecar fields, its description augmentation (exact
strings at the extreme probabilities, rates at the defaults), word dropout, and validated attributes
with unknown values dropped and counted."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from musicgen_jax.conditioning import Attributes, render_description
from musicgen_jax.data import metadata as metadata_lib
from musicgen_jax.data.metadata import MusicInfo, attributes_from_info
from musicgen_jax.data.text import augment_description, render_info, training_text, word_dropout

SIDECAR = {
    "title": "Night Drive",
    "artist": "someone",
    "key": "D Minor",
    "bpm": "120",
    "genre": "Synthwave ",
    "moods": "dark, Dreamy",
    "keywords": ["retro", "80s"],
    "description": "A moody synth track...",
    "name": "night_drive",
    "instrument": "Synth, Drums",
}


def info() -> MusicInfo:
    return MusicInfo.from_dict(SIDECAR)


def test_music_info_parses_like_audiocraft():
    parsed = info()
    assert parsed.key == "d minor" and parsed.bpm == 120.0 and parsed.genre == "synthwave"
    assert parsed.moods == ("dark", "dreamy")  # a string splits on commas and whitespace
    assert parsed.keywords == ("retro", "80s") and parsed.instrument == "synth, drums"
    assert parsed.description == "A moody synth track..."  # descriptions keep their case
    messy = MusicInfo.from_dict(
        {"key": "C major, A minor", "bpm": "fast", "genre": "None", "moods": [], "name": ""}
    )
    assert messy == MusicInfo()  # several keys, unparseable bpm, "None", empty lists: all missing
    assert MusicInfo.from_dict(None) == MusicInfo()


def test_no_merge_probability_returns_the_description_untouched():
    rng = np.random.default_rng(0)
    assert augment_description(info(), rng, merge_text_p=0.0) == "A moody synth track..."


def test_all_fields_kept_gives_description_then_shuffled_pairs():
    expected_pairs = {
        "key: d minor",
        "bpm: 120.0",  # str(float), as audiocraft's process_value prints it
        "genre: synthwave",
        "moods: dark, dreamy",
        "keywords: retro, 80s",
        "instrument: synth, drums",
    }
    orders = set()
    for seed in range(20):
        text = augment_description(info(), np.random.default_rng(seed), 1.0, 0.0, 1.0)
        assert text.startswith("A moody synth track. ")  # trailing dots stripped before the join
        pairs = text[len("A moody synth track. ") :].split(". ")
        assert set(pairs) == expected_pairs and len(pairs) == 6
        orders.add(tuple(pairs))
    assert len(orders) > 5  # shuffled


def test_extremes_of_the_drop_probabilities():
    meta_only = augment_description(info(), np.random.default_rng(1), 1.0, 1.0, 1.0)
    assert "moody" not in meta_only and meta_only.count(": ") == 6
    # No field kept: the description survives with audiocraft's trailing period.
    assert augment_description(info(), np.random.default_rng(1), 1.0, 0.0, 0.0) == "A moody synth track."
    # Neither: no text at all.
    assert augment_description(info(), np.random.default_rng(1), 1.0, 1.0, 0.0) is None
    bare = MusicInfo(description="calm piano")
    assert augment_description(bare, np.random.default_rng(1), 1.0, 0.0, 1.0) == "calm piano."


def test_default_probabilities_give_audiocraft_rates():
    rng = np.random.default_rng(0)
    draws = 4000
    texts = [augment_description(info(), rng, 0.25, 0.5, 0.5) for _ in range(draws)]
    merged = [t for t in texts if t != "A moody synth track." and t is not None and ": " in t]
    untouched = sum(t == "A moody synth track." for t in texts)
    # Not merged (75%) or merged with no field kept (25% * 1/64 with the description kept).
    assert untouched / draws == pytest.approx(0.75 + 0.25 * 0.5 / 64, abs=0.03)
    assert len(merged) / draws == pytest.approx(0.25 * (1 - 1 / 64), abs=0.03)
    kept_description = sum(t.startswith("A moody synth track. ") for t in merged) / len(merged)
    assert kept_description == pytest.approx(0.5, abs=0.06)
    per_field = np.mean([t.count(": ") for t in merged])
    assert per_field == pytest.approx(6 * 0.5 / (1 - 1 / 64), abs=0.25)  # each field kept half the time


def test_same_generator_state_same_text():
    first = [
        training_text(info(), np.random.default_rng(5), merge_text_p=0.5, word_dropout_p=0.3)
        for _ in range(3)
    ]
    assert len(set(first)) == 1


def test_word_dropout():
    rng = np.random.default_rng(0)
    text = " ".join(f"w{i}" for i in range(2000))
    kept = word_dropout(text, 0.3, rng).split(" ")
    assert len(kept) / 2000 == pytest.approx(0.7, abs=0.04)
    assert kept == sorted(kept, key=lambda w: int(w[1:]))  # order kept
    assert word_dropout(text, 0.0, rng) == text
    assert word_dropout(None, 0.3, rng) == ""


def test_render_info_is_the_inference_rendering():
    parsed = info()
    expected = render_description(
        "A moody synth track...",
        Attributes.create(
            genre="synthwave",
            mood=["dark", "dreamy"],
            tempo=120,
            instruments="synth, drums",
            key="D minor",
            keywords=["retro", "80s"],
        ),
    )
    assert render_info(parsed) == expected
    assert expected.startswith(
        "A moody synth track. genre: synthwave. moods: dark, dreamy. bpm: 120.0. key: D minor"
    )


def test_unknown_attribute_values_are_dropped_and_counted(caplog):
    metadata_lib.reset_dropped_attributes()
    messy = MusicInfo.from_dict(
        {
            "genre": "vaporwave",
            "moods": ["happy", "grumpy"],
            "instrument": "piano, theremin",
            "bpm": 900,
            "key": "H major",
        }
    )
    with caplog.at_level(logging.WARNING, logger="musicgen_jax.data.metadata"):
        attributes = attributes_from_info(messy, duration=0.5)
        attributes_from_info(messy, duration=10.0)
    assert attributes == Attributes(moods=("happy",), instruments=("piano",))
    assert attributes_from_info(messy, duration=10.0).duration == 10.0
    counts = metadata_lib.dropped_attributes()
    assert counts[("genre", "vaporwave")] == 3 and counts[("mood", "grumpy")] == 3
    assert counts[("instrument", "theremin")] == 3 and counts[("tempo", "900.0")] == 3
    assert counts[("key", "h major")] == 3 and counts[("duration", "out of range")] == 1
    assert sum("vaporwave" in r.getMessage() for r in caplog.records) == 1  # warned once, counted always
    valid = attributes_from_info(info(), duration=30.0)
    assert valid == Attributes.create(
        genre="synthwave",
        mood="dark, dreamy",
        tempo=120,
        instruments="synth, drums",
        key="D minor",
        keywords=["retro", "80s"],
        duration=30.0,
    )
