"""The word-level tokenizer of small models trained here, and the reserved built-in model names."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from musicgen_jax import hub
from musicgen_jax.conditioning.text import TextTokenizer
from musicgen_jax.conditioning.word_tokenizer import build_word_tokenizer, words_of
from musicgen_jax.data import synthetic


@pytest.fixture(scope="module")
def captions():
    return [
        synthetic.generate_example(i, seed=0, duration=0.5, sample_rate=8000).metadata["description"]
        for i in range(40)
    ]


def test_every_caption_word_is_one_known_token(captions, tmp_path):
    tokenizer = build_word_tokenizer(captions)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    for caption in captions:
        ids = tokenizer(caption)["input_ids"]
        assert ids[-1] == 1 and 2 not in ids  # the end token; no unknown word
        words = tokenizer.convert_ids_to_tokens(ids[:-1])
        assert sorted(set(words)) == words_of([caption])
    # Digits are separate tokens: any tempo is spelled, and case and punctuation do not matter.
    ids = tokenizer("Jazz, 137 BPM")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["jazz", ",", "1", "3", "7", "bpm", "</s>"]
    assert tokenizer("zither")["input_ids"] == [2, 1]
    # Saved and loaded as any transformers tokenizer, with the same ids.
    tokenizer.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    for caption in captions[:5]:
        assert loaded(caption)["input_ids"] == tokenizer(caption)["input_ids"]
    text = TextTokenizer(loaded, max_tokens=64, render_attributes=False)
    ids, mask = text.tokenize([captions[0], ""])
    assert ids.shape[1] % 16 == 0 and mask[0].sum() == len(tokenizer(captions[0])["input_ids"])
    assert not mask[1].any() and ids[1, 0] == 1 and np.all(ids[1, 1:] == 0)  # "no condition"


def test_demo_is_a_reserved_name_and_dot_slash_a_directory(tmp_path, monkeypatch):
    builtin = tmp_path / "package" / "demo"
    monkeypatch.setitem(hub.BUILTIN_MODELS, "demo", builtin)
    with pytest.raises(hub.ModelNotFoundError, match="built-in 'demo' model is not in this installation"):
        hub.resolve("demo")
    builtin.mkdir(parents=True)
    local = tmp_path / "cwd" / "demo"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    assert hub.resolve("demo") == builtin  # even with ./demo present
    assert hub.resolve("./demo").resolve() == local.resolve()
