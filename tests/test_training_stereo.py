"""Stereo training: the tiny-stereo preset (8 codebooks, left/right interleaved) trains, exports with
``train.py export`` and generates two-channel audio through ``MusicGen.from_pretrained``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from test_training import compilation_cache, losses, quick_config  # noqa: F401  (autouse fixture)

from musicgen_jax import MusicGen
from musicgen_jax.conversion import load_checkpoint
from musicgen_jax.models.delay_pattern import delays
from musicgen_jax.training import cli
from musicgen_jax.training import step as step_lib
from musicgen_jax.training.memory_source import MemoryBatchSource
from musicgen_jax.training.model_source import load_model_source
from musicgen_jax.training.state import build_model
from musicgen_jax.training.trainer import train

STEREO_DELAYS = [0, 0, 1, 1, 2, 2, 3, 3]  # audiocraft's stereo pattern: each left/right pair shares one


def test_tiny_stereo_model_trains_exports_and_generates_two_channels(
    tiny_hf_dirs, tiny_tokenizer_dir, tmp_path
):
    # The preset carries no codec; the tiny stereo transformers model's (mono EnCodec, decoded once
    # per channel) is named as the model's codec, so the exported checkpoint finds it.
    codec_dir = tiny_hf_dirs("stereo")
    run = tmp_path / "run"
    config = quick_config(
        run,
        tiny_tokenizer_dir,
        "model.preset=tiny-stereo",
        f"model.audio.codec={codec_dir}",
        "training.steps=20",
        "training.ema_decay=null",
        "training.condition_dropout=0.0",
        "data.memory.num_examples=4",  # one batch: memorised within a few steps
        "data.memory.pattern=random",
        "data.memory.padded_fraction=0.0",
        "optimizer.learning_rate=0.01",
        "optimizer.warmup_steps=2",
        "optimizer.weight_decay=0.0",
        "checkpoint.every_steps=20",
    )
    source = load_model_source(config.model)
    assert (source.config.decoder.num_codebooks, source.config.decoder.audio_channels) == (8, 2)

    # The training targets follow the stereo delay pattern.
    assert delays(8, 2).tolist() == STEREO_DELAYS
    model = build_model(source.config, config.model)
    batch = MemoryBatchSource(config.data.memory, source.config, source.tokenizer, 4).batch(0)
    frames = batch["codes"].shape[-1]
    assert batch["codes"].shape == (4, 8, frames)
    _, targets, mask = step_lib.prepare_targets(jax.tree.map(jnp.asarray, batch), model)
    targets, mask = np.asarray(targets), np.asarray(mask)
    assert mask.shape == (4, 8, frames + 4 - 1)  # 4 distinct delays, not 8
    first = mask[0].argmax(-1)  # the first target position of each codebook
    assert first.tolist() == STEREO_DELAYS and mask[0].sum(-1).tolist() == [frames] * 8
    for k, start in enumerate(STEREO_DELAYS):
        np.testing.assert_array_equal(targets[:, k, start : start + frames], batch["codes"][:, k])

    result = train(config)
    curve = losses(run)
    assert [step for step, _ in curve] == list(range(1, 21))
    first_loss, final_loss = curve[0][1], curve[-1][1]
    assert first_loss > 7.0  # ln(2048) = 7.62 for a random start
    assert final_loss < first_loss / 3, f"loss fell only from {first_loss:.3f} to {final_loss:.3f}"

    exported = tmp_path / "exported"
    assert cli.main(["export", str(run), str(exported)]) == 0  # what `python train.py export` runs
    exported_config, exported_params = load_checkpoint(exported)
    assert exported_config == source.config
    jax.tree.map(np.testing.assert_array_equal, exported_params, jax.device_get(result.state.all_params()))

    generator = MusicGen.from_pretrained(exported, dtype="float32")
    assert (generator.num_codebooks, generator.audio_channels) == (8, 2)
    generated = generator.generate(["calm piano"], duration=1.0, seed=0)
    assert generated.codes.shape == (1, 8, 50)
    assert generated.codes.min() >= 0 and generated.codes.max() < 2048  # no special token left over
    assert generated.audio.shape == (1, 2, 32000) and np.isfinite(generated.audio).all()
    # Left and right come from different codebooks (0, 2, 4, 6 and 1, 3, 5, 7): they differ.
    assert np.abs(generated.audio[0, 0] - generated.audio[0, 1]).max() > 1e-4
