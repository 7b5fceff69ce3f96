"""Parity of the Flax model with transformers' PyTorch MusicGen on random-weight tiny checkpoints.

Tolerance: relative error (max |ours - theirs| / max |theirs|) at most 1e-5 in float32, as the
model issue asks; the observed error is about 1e-6 (float32 rounding of different kernels).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers_reference as reference
from transformers import T5EncoderModel

from musicgen_jax.conversion import load_transformers_params
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.models.musicgen import MusicGenModel

pytestmark = pytest.mark.usefixtures("float32_matmuls")

RTOL = 1e-5
PROMPTS = ["upbeat jazz piano with smooth saxophone and soft drums", "dark techno"]  # different lengths


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def test_tiny_variants_differ_where_the_parity_tests_need():
    """Each variant takes a path the others do not; the parity tests below rely on it."""
    from musicgen_jax.testing import VARIANTS, tiny_config

    base, gated, stereo, wide = (tiny_config(v) for v in ("base", "gated", "stereo", "wide"))
    assert set(VARIANTS) == {"base", "gated", "stereo", "wide"}
    assert base.has_text_projection and not wide.has_text_projection  # enc_to_dec_proj or none
    assert gated.text_encoder.is_gated and not base.text_encoder.is_gated
    assert gated.text_encoder.num_layers != base.text_encoder.num_layers
    assert (gated.decoder.num_layers, gated.decoder.num_heads) != (
        base.decoder.num_layers,
        base.decoder.num_heads,
    )
    assert stereo.decoder.audio_channels == 2 and base.decoder.audio_channels == 1
    assert base.decoder == MusicGenConfig.preset("tiny").decoder  # built from the preset, not restated


@pytest.mark.parametrize("variant", ["base", "gated", "stereo", "wide"])
def test_decoder_logits_match_transformers(tiny_hf_dirs, variant):
    directory = tiny_hf_dirs(variant)
    config, params = load_transformers_params(directory)
    rng = np.random.default_rng(1)
    decoder_ids = rng.integers(0, config.decoder.vocab_size + 1, size=(2, config.decoder.num_codebooks, 11))
    hf, tokenizer = reference.load(directory)
    text = reference.text_inputs(tokenizer, PROMPTS)
    theirs = reference.teacher_forced_logits(hf, decoder_ids, **text)
    assert text["attention_mask"].numpy().min() == 0, (
        "the batch must be padded for this test to mean anything"
    )
    ours = MusicGenModel(config).apply(
        {"params": params},
        jnp.asarray(text["input_ids"].numpy()),
        jnp.asarray(text["attention_mask"].numpy()),
        jnp.asarray(decoder_ids),
    )
    assert ours.shape == theirs.shape
    assert relative_error(np.asarray(ours), theirs) <= RTOL


@pytest.mark.parametrize("variant", ["base", "gated"])
def test_t5_hidden_states_match_transformers(tiny_hf_dirs, variant, tmp_path):
    directory = tiny_hf_dirs(variant)
    hf, tokenizer = reference.load(directory)
    t5_dir = tmp_path / "t5"
    hf.text_encoder.save_pretrained(t5_dir)
    t5 = T5EncoderModel.from_pretrained(t5_dir).eval()
    text = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = t5(input_ids=text.input_ids, attention_mask=text.attention_mask).last_hidden_state.numpy()
    config, params = load_transformers_params(directory)
    ours = MusicGenModel(config).apply(
        {"params": params},
        jnp.asarray(text.input_ids.numpy()),
        jnp.asarray(text.attention_mask.numpy()),
        method=MusicGenModel.encode_text,
    )
    mask = text.attention_mask.numpy().astype(bool)
    assert relative_error(np.asarray(ours)[mask], theirs[mask]) <= RTOL
    assert relative_error(np.asarray(ours), theirs) <= RTOL


def test_cached_decoding_equals_full_forward(tiny_hf_dirs):
    config, params = load_transformers_params(tiny_hf_dirs("gated"))
    model = MusicGenModel(config)
    rng = np.random.default_rng(2)
    ids = jnp.asarray(rng.integers(3, 100, size=(2, 7)), jnp.int32)
    mask = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3], jnp.int32)
    tokens = jnp.asarray(rng.integers(0, 2049, size=(2, config.decoder.num_codebooks, 12)), jnp.int32)
    variables = {"params": params}
    memory, memory_mask = model.apply(variables, ids, mask, method=MusicGenModel.encode)
    full = np.asarray(model.apply(variables, tokens, memory, memory_mask, method=MusicGenModel.decode))

    cache = model.apply(variables, memory, memory_mask, 16, method=MusicGenModel.init_cache)
    # A 5-position prompt chunk, then single positions, as generation does.
    chunk, cache = model.apply(variables, tokens[:, :, :5], cache, method=MusicGenModel.decode_step)
    steps = [np.asarray(chunk)]
    for t in range(5, 12):
        step, cache = model.apply(variables, tokens[:, :, t : t + 1], cache, method=MusicGenModel.decode_step)
        steps.append(np.asarray(step))
    incremental = np.concatenate(steps, axis=2)
    assert int(cache.index) == 12
    assert relative_error(incremental, full) <= RTOL


@pytest.mark.parametrize("unroll", [2, 3])  # 3 layers: a remainder iteration, then the whole stack
def test_unrolled_layer_loop_gives_the_same_logits(tiny_hf_dirs, unroll):
    """``scan_unroll`` only changes how the compiled layer loop is laid out, not what it computes."""
    config, params = load_transformers_params(tiny_hf_dirs("gated"))
    assert config.decoder.num_layers == 3
    rng = np.random.default_rng(4)
    ids = jnp.asarray(rng.integers(3, 100, size=(2, 7)), jnp.int32)
    mask = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3], jnp.int32)
    tokens = jnp.asarray(rng.integers(0, 2049, size=(2, config.decoder.num_codebooks, 6)), jnp.int32)
    variables = {"params": params}

    def run(model):
        memory, memory_mask = model.apply(variables, ids, mask, method=MusicGenModel.encode)
        full = model.apply(variables, tokens, memory, memory_mask, method=MusicGenModel.decode)
        cache = model.apply(variables, memory, memory_mask, 8, method=MusicGenModel.init_cache)
        steps = []
        for t in range(tokens.shape[-1]):
            step, cache = model.apply(
                variables, tokens[:, :, t : t + 1], cache, method=MusicGenModel.decode_step
            )
            steps.append(np.asarray(step))
        return np.asarray(full), np.concatenate(steps, axis=2), np.asarray(cache.self_key)

    for ours, scanned in zip(run(MusicGenModel(config, scan_unroll=unroll)), run(MusicGenModel(config))):
        assert relative_error(ours, scanned) <= 1e-6
    with pytest.raises(ValueError, match="scan_unroll must be between 1 and the 3 layers"):
        MusicGenModel(config, scan_unroll=4).apply(
            variables, tokens, jnp.zeros((2, 7, 32)), mask, method=MusicGenModel.decode
        )


def test_null_condition_equals_transformers_unconditional_rows(tiny_hf_dir):
    """Zero memory with mask 0 gives the logits transformers computes for guidance's null rows."""
    config, params = load_transformers_params(tiny_hf_dir)
    hf, _ = reference.load(tiny_hf_dir)
    decoder_ids = np.random.default_rng(3).integers(0, 2049, size=(1, 4, 6))
    states = torch.zeros((1, 5, config.text_encoder.d_model))
    theirs = reference.teacher_forced_logits(
        hf, decoder_ids, encoder_outputs=(states,), attention_mask=torch.zeros((1, 5), dtype=torch.long)
    )
    model = MusicGenModel(config)
    memory = jnp.zeros((1, 5, config.decoder.hidden_size))
    ours = model.apply(
        {"params": params},
        jnp.asarray(decoder_ids),
        memory,
        jnp.zeros((1, 5), bool),
        method=MusicGenModel.decode,
    )
    assert relative_error(np.asarray(ours), theirs) <= RTOL
