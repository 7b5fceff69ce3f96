"""One text path: inference, the data pipeline, the in-memory source and the server's validation
turn the same text into the same ids and mask."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from musicgen_jax import Attributes, MusicGen
from musicgen_jax.conditioning.text import PromptError, TextTokenizer
from musicgen_jax.data.metadata import MusicInfo
from musicgen_jax.data.pipeline import DataConfig, ExampleTransform
from musicgen_jax.data.text import render_info
from musicgen_jax.training.config import MemoryDataConfig
from musicgen_jax.training.memory_source import make_examples


@pytest.fixture(scope="module")
def model(tiny_hf_dir):
    return MusicGen.from_pretrained(tiny_hf_dir, dtype="float32")


def test_training_and_inference_give_the_same_ids_and_mask(model):
    engine = model.engine
    info = MusicInfo(description="calm piano", genre="jazz", bpm=90.0, moods=("happy",))
    attributes = Attributes.create(genre="jazz", mood="happy", tempo=90)
    inference = engine.prepare_text(["calm piano", ""], [attributes, None])
    # The data pipeline's fixed rendering of the same metadata, tokenised at the same length.
    width = inference.ids.shape[1]
    transform = ExampleTransform(DataConfig(max_text_len=width), engine.tokenizer, train=False)
    text = render_info(info)
    assert text == inference.texts[0] == "calm piano. genre: jazz. moods: happy. bpm: 90.0"
    ids, mask = transform.tokenize(text)
    np.testing.assert_array_equal(ids, inference.ids[0])
    np.testing.assert_array_equal(mask, inference.mask[0])
    assert mask.sum() > 3
    # No text means no condition on both paths: an all-zero mask.
    empty_ids, empty_mask = transform.tokenize("")
    assert inference.mask[1].sum() == 0 and empty_mask.sum() == 0
    np.testing.assert_array_equal(empty_ids, inference.ids[1])


def test_the_memory_source_tokenises_its_captions_as_inference_does(model):
    engine = model.engine
    config = MemoryDataConfig(num_examples=6, frames=8, max_text_len=32)
    examples = make_examples(config, model.config, engine.tokenizer)
    for ids, mask in zip(examples["text_ids"], examples["text_mask"]):
        real = ids[mask.astype(bool)]
        assert real[-1] == engine.tokenizer.eos_token_id
        caption = engine.tokenizer.decode(real[:-1])  # unknown words come back as the unknown token
        again = engine.text.tokenize([caption], length=32, truncate=True)
        np.testing.assert_array_equal(again[0][0], ids)
        np.testing.assert_array_equal(again[1][0], mask)


def test_long_prompts_are_refused_at_inference_and_truncated_in_training(model):
    text = model.engine.text
    long = " ".join(["jazz"] * (text.max_tokens + 5))
    with pytest.raises(PromptError, match=f"at most {text.max_tokens}") as caught:
        model.engine.prepare_text([long])
    assert caught.value.field == "prompt"
    with pytest.raises(PromptError, match="tokens long"):
        text.check_length(long)  # what the server checks before it queues a request
    ids, mask = text.tokenize([long], length=text.max_tokens, truncate=True)
    assert mask.sum() == text.max_tokens
    # Truncation keeps the end token, as transformers' tokenizers do.
    assert ids[0, -1] == model.engine.tokenizer.eos_token_id


def test_prompts_pad_to_a_bucket_and_the_text_path_survives_pickling(model):
    text = model.engine.text
    ids, mask = text.tokenize(["jazz", "a much longer prompt about calm piano and soft drums"])
    assert ids.shape[1] % 16 == 0 and ids.shape == mask.shape
    assert (ids[0, mask[0] == 0] == text.pad_id).all()
    copy = pickle.loads(pickle.dumps(text))  # grain worker processes receive it pickled
    np.testing.assert_array_equal(copy.tokenize(["jazz"])[0], text.tokenize(["jazz"])[0])
    assert isinstance(copy, TextTokenizer)


def test_learned_attribute_models_keep_the_description_as_written(model):
    learned = TextTokenizer(
        model.engine.tokenizer, max_tokens=64, render_attributes=False, learned_attributes=True
    )
    batch = learned.batch(["calm piano"], [Attributes.create(genre="jazz")])
    assert batch.texts == ("calm piano",)
    assert batch.attributes is not None and batch.attributes["genre"].shape == (1,)
