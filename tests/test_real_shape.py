"""Parity at musicgen-small's real shape (decoder 1024 x 24 layers x 16 heads, t5-base encoder,
the 32 kHz EnCodec), random weights: loaded through the same transformers-directory path a hub
download takes. Slow (a 2.4 GB checkpoint is written and read), still run in CI.

Tolerance: relative error <= 1e-5 in float32, as for the tiny models (observed: 1.3e-6).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("float32_matmuls")]


def test_small_shape_logits_match_transformers(tmp_path):
    import transformers_reference as reference
    from transformers import (
        AutoTokenizer,
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    from musicgen_jax.conversion import load_transformers_params
    from musicgen_jax.models.config import MusicGenConfig
    from musicgen_jax.models.musicgen import MusicGenModel
    from musicgen_jax.testing import build_tokenizer

    published = MusicGenConfig.preset("small")
    t5 = T5Config(
        vocab_size=32128,
        d_model=768,
        d_kv=64,
        d_ff=3072,
        num_layers=12,
        num_heads=12,
        feed_forward_proj="relu",
    )
    codec = EncodecConfig(
        sampling_rate=32000,
        audio_channels=1,
        num_filters=64,
        hidden_size=128,
        codebook_dim=128,
        codebook_size=2048,
        num_lstm_layers=2,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        chunk_length_s=None,
        overlap=None,
        normalize=False,
        use_causal_conv=False,
        use_conv_shortcut=False,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=2048,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        ffn_dim=4096,
        num_codebooks=4,
        max_position_embeddings=2048,
        pad_token_id=2048,
        bos_token_id=2048,
    )
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(
        MusicgenConfig(text_encoder=t5, audio_encoder=codec, decoder=decoder)
    ).eval()
    model.save_pretrained(tmp_path)
    build_tokenizer(128).save_pretrained(tmp_path)

    config, params = load_transformers_params(tmp_path)
    assert (config.decoder, config.text_encoder) == (published.decoder, published.text_encoder)
    del published

    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    text = reference.text_inputs(tokenizer, ["upbeat jazz piano with smooth saxophone", "dark techno"])
    decoder_ids = np.random.default_rng(0).integers(0, 2049, size=(2, 4, 6))
    theirs = reference.teacher_forced_logits(model, decoder_ids, **text)
    del model
    ours = np.asarray(
        MusicGenModel(config).apply(
            {"params": params},
            jnp.asarray(text["input_ids"].numpy()),
            jnp.asarray(text["attention_mask"].numpy()),
            jnp.asarray(decoder_ids),
        )
    )
    error = np.abs(ours - theirs).max() / np.abs(theirs).max()
    print(f"relative error at the real shape: {error:.2e}")
    assert error <= 1e-5, error
