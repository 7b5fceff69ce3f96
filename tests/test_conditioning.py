"""Attributes: validation with clear errors, audiocraft's text rendering, learned embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax.conditioning import (
    Attributes,
    InvalidAttributeError,
    encode_attributes,
    null_attributes,
    render_description,
)
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.models.musicgen import MusicGenModel, null_condition


def test_render_follows_audiocraft_metadata_text():
    attributes = Attributes.create(
        genre="Jazz", mood="happy, calm", tempo=120, instruments=["piano", "Saxophone"]
    )
    assert render_description("Upbeat jazz piano.", attributes) == (
        "Upbeat jazz piano. genre: jazz. moods: happy, calm. bpm: 120.0. instrument: piano, saxophone"
    )
    assert render_description(None, attributes).startswith("genre: jazz. moods")
    assert render_description("just text", None) == "just text"
    assert render_description("", Attributes()) == ""


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(genre="jaz"), "unknown genre 'jaz'; did you mean 'jazz'"),
        (dict(mood="cheerfull"), "did you mean 'cheerful'"),
        (dict(instruments="piano, kazoo-ish"), "unknown instrument 'kazoo-ish'"),
        (dict(tempo=10), "tempo must be between 20 and 300 BPM"),
        (dict(tempo="fast"), "tempo must be a number"),
        (dict(key="H major"), "unknown key"),
        (dict(duration=500), "duration must be between 1 and 120"),
    ],
)
def test_unknown_values_are_errors_with_suggestions(kwargs, message):
    with pytest.raises(InvalidAttributeError, match=message):
        Attributes.create(**kwargs)


def test_spellings_normalise():
    a = Attributes.create(genre="hip-hop", mood=["Happy", "happy"], instruments="acoustic_guitar")
    assert a.genre == "hip hop" and a.moods == ("happy",) and a.instruments == ("acoustic guitar",)


def test_learned_attributes_join_the_memory_and_null_drops_them():
    config = MusicGenConfig.preset("tiny-learned")
    model = MusicGenModel(config)
    ids = jnp.ones((2, 5), jnp.int32)
    mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], jnp.int32)
    attrs = encode_attributes(
        [Attributes.create(genre="rock", mood="dark", tempo=90, duration=10), None]
    ).as_dict()
    params = model.init(jax.random.key(0), ids, mask, jnp.zeros((2, 4, 3), jnp.int32), attrs)
    memory, memory_mask = model.apply(params, ids, mask, attrs, method=MusicGenModel.encode)
    assert memory.shape == (2, 5 + 5, config.decoder.hidden_size)
    # Text mask, then genre, moods, instruments, tempo, duration presence.
    np.testing.assert_array_equal(np.asarray(memory_mask[0, 5:]), [True, True, False, True, True])
    np.testing.assert_array_equal(np.asarray(memory_mask[1, 5:]), [False] * 5)
    assert float(jnp.abs(memory[1, 5:]).max()) == 0.0  # absent attributes contribute nothing
    # Different attribute values move the logits; the null condition ignores them.
    other = encode_attributes(
        [Attributes.create(genre="jazz", mood="calm", tempo=150, duration=10), None]
    ).as_dict()
    tokens = jnp.zeros((2, 4, 3), jnp.int32)
    a = model.apply(params, ids, mask, tokens, attrs)
    b = model.apply(params, ids, mask, tokens, other)
    assert float(jnp.abs(a[0] - b[0]).max()) > 1e-4
    null_memory, null_mask = null_condition(memory, memory_mask)
    assert not bool(null_mask.any()) and float(jnp.abs(null_memory).max()) == 0.0
    null = null_attributes(2).as_dict()
    assert all(float(np.abs(v).sum()) == 0 for v in null.values())
