"""Fine-tuning from a transformers checkpoint and back: the loss agrees with transformers' own
``labels=`` loss, training starts from the converted weights, and the trained checkpoint exports
to a directory that ``MusicgenForConditionalGeneration.from_pretrained`` loads with our logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers import AutoTokenizer, MusicgenForConditionalGeneration
from transformers.models.musicgen.modeling_musicgen import shift_tokens_right

from musicgen_jax.conversion import load_checkpoint, load_transformers_params
from musicgen_jax.models.musicgen import MusicGenModel
from musicgen_jax.training import step as step_lib
from musicgen_jax.training.config import MemoryDataConfig, load_train_config
from musicgen_jax.training.export import export_run
from musicgen_jax.training.logging import read_metrics
from musicgen_jax.training.memory_source import MemoryBatchSource
from musicgen_jax.training.trainer import train


def _batch(config, tokenizer, frames=10, size=3, padded_fraction=0.5):
    data = MemoryDataConfig(
        num_examples=size, frames=frames, max_text_len=48, padded_fraction=padded_fraction, seed=7
    )
    return MemoryBatchSource(data, config, tokenizer, size).batch(0)


def _transformers_loss(model, batch, labels):
    """transformers' loss for ``labels`` ``[batch, codebooks, length]``; the decoder inputs are its
    own ``shift_tokens_right`` of the labels (transformers 5 fails to derive them itself: its
    decoder config lacks ``decoder_start_token_id``)."""
    labels = torch.tensor(
        np.asarray(labels).transpose(0, 2, 1), dtype=torch.long
    )  # [batch, length, codebooks]
    pad = model.config.decoder.pad_token_id
    decoder_input_ids = shift_tokens_right(labels, pad, pad)  # [batch, codebooks, length]
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(batch["text_ids"], dtype=torch.long),
            attention_mask=torch.tensor(batch["text_mask"], dtype=torch.long),
            decoder_input_ids=decoder_input_ids.reshape(-1, labels.shape[1]),
            labels=labels,
        )
    return float(out.loss), out.logits.numpy()


def test_codebook_loss_equals_transformers_labels_loss(tiny_hf_dir):
    """Our delayed targets, with the special token where the pattern or padding masks them, are
    exactly the labels transformers' loss expects: it ignores labels equal to the pad token."""
    config, params = load_transformers_params(tiny_hf_dir)
    batch = _batch(config, AutoTokenizer.from_pretrained(tiny_hf_dir))
    assert not batch["frame_mask"].all() and batch["text_mask"].min() == 0  # padding on both sides
    model = MusicGenModel(config)
    jax_batch = jax.tree.map(jnp.asarray, batch)
    ours = step_lib.train_loss_reference(model, params, jax_batch)
    _, targets, mask = step_lib.prepare_targets(jax_batch, model)
    assert np.all(np.asarray(targets)[~np.asarray(mask)] == config.decoder.pad_token_id)

    hf = MusicgenForConditionalGeneration.from_pretrained(tiny_hf_dir).eval()
    theirs, _ = _transformers_loss(hf, batch, targets)
    np.testing.assert_allclose(float(ours["loss"]), theirs, rtol=1e-5)
    # Without the padding mask the two differ (padded frames would be targets): the mask matters.
    unmasked = dict(batch, frame_mask=np.ones_like(batch["frame_mask"]))
    changed = step_lib.train_loss_reference(model, params, jax.tree.map(jnp.asarray, unmasked))
    assert abs(float(changed["loss"]) - theirs) > 1e-3


def test_finetune_from_converted_checkpoint_exports_to_transformers(tiny_hf_dir, tiny_jax_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = load_train_config(
        "finetune-small",
        [
            f"output_dir={run_dir}",
            f"model.init_from={tiny_jax_dir}",  # converted from tiny_hf_dir by convert_from_transformers
            # finetune-small computes in bfloat16 over float32 master weights.
            "model.remat=none",
            "data.source=memory",
            "data.memory.frames=12",
            "data.memory.num_examples=4",
            "data.memory.max_text_len=16",
            "training.steps=16",
            "training.batch_size=4",
            "training.ema_decay=null",
            "optimizer.learning_rate=0.001",
            "optimizer.warmup_steps=2",
            "eval.every_steps=8",
            "eval.batches=1",
            "checkpoint.every_steps=8",
            "logging.every_steps=1",
            "logging.progress=false",
            "logging.tensorboard=false",
        ],
    )
    result = train(config)
    records = read_metrics(run_dir)
    train_losses = [r["loss"] for r in records if "loss" in r]
    assert len(train_losses) == 16 and train_losses[-1] < train_losses[0]
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [8, 16]
    assert all(r["eval/ema_weights"] == 0.0 for r in evals)  # no EMA: the raw weights were evaluated

    # Training started from the converted weights: the frozen T5 is still exactly them.
    _, source_params = load_checkpoint(tiny_jax_dir)
    assert config.model.dtype == "bfloat16" and config.model.param_dtype == "float32"
    assert {leaf.dtype for leaf in jax.tree.leaves(result.state.params)} == {jnp.dtype("float32")}
    assert {leaf.dtype for leaf in jax.tree.leaves(result.state.opt_state)} <= {
        jnp.dtype("float32"),
        jnp.dtype("int32"),
    }
    trained = jax.device_get(result.state.all_params())
    jax.tree.map(np.testing.assert_array_equal, trained["text_encoder"], source_params["text_encoder"])
    moved = np.abs(trained["decoder"]["lm_heads"] - source_params["decoder"]["lm_heads"]).max()
    assert moved > 1e-4

    exported, hf_dir = tmp_path / "exported", tmp_path / "exported-hf"
    export_run(run_dir, exported, transformers_dir=hf_dir)
    exported_config, exported_params = load_checkpoint(exported)
    jax.tree.map(np.testing.assert_array_equal, exported_params, trained)
    assert (exported / "tokenizer").is_dir() and (exported / "codec" / "config.json").is_file()

    hf_trained = MusicgenForConditionalGeneration.from_pretrained(hf_dir).eval()
    hf_source = MusicgenForConditionalGeneration.from_pretrained(tiny_hf_dir).eval()
    batch = _batch(exported_config, AutoTokenizer.from_pretrained(hf_dir), padded_fraction=0.0)
    model = MusicGenModel(exported_config)
    jax_batch = jax.tree.map(jnp.asarray, batch)
    _, targets, _ = step_lib.prepare_targets(jax_batch, model)
    _, theirs = _transformers_loss(hf_trained, batch, targets)
    _, before = _transformers_loss(hf_source, batch, targets)
    inputs, _, _ = step_lib.prepare_targets(jax_batch, model)
    ours = model.apply({"params": exported_params}, batch["text_ids"], batch["text_mask"], inputs)
    ours = np.asarray(ours).reshape(theirs.shape)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-5
    assert np.abs(before - theirs).max() > 1e-3  # transformers sees the fine-tuned weights
