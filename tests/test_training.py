"""Training on one CPU device: config, loss, train step, overfitting, checkpoints and resume.

Sharded layouts are in test_training_sharded.py (8 emulated devices, in a subprocess); fine-tuning
from and exporting to transformers in test_training_finetune.py.

Longer than most modules on purpose: its tests share one quick config and one persistent compile
cache (``compilation_cache``), so runs of the same shapes compile once; the other training test
modules import both from here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax.config_io import ConfigError
from musicgen_jax.training import loss as loss_lib
from musicgen_jax.training import mesh as mesh_lib
from musicgen_jax.training import step as step_lib
from musicgen_jax.training.checkpointing import Checkpointer
from musicgen_jax.training.config import TRAIN_CONFIG_DIR, load_train_config
from musicgen_jax.training.logging import read_metrics
from musicgen_jax.training.memory_source import MemoryBatchSource
from musicgen_jax.training.optimizer import make_optimizer
from musicgen_jax.training.state import StateLayout, build_model, frozen_keys
from musicgen_jax.training.trainer import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """Runs of one config compile the same programs: a persistent cache compiles them once."""
    from jax.experimental.compilation_cache import compilation_cache as cache

    directory = tmp_path_factory.getbasetemp() / "jax-compilation-cache"
    saved = {
        name: getattr(jax.config, name)
        for name in (
            "jax_compilation_cache_dir",
            "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes",
        )
    }
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    cache.reset_cache()
    yield directory
    for name, value in saved.items():
        jax.config.update(name, value)
    cache.reset_cache()


# A small, quick variant of configs/train/tiny.yaml (with the testing tokenizer, see quick_config).
QUICK = (
    "logging.every_steps=1",
    "data.memory.frames=16",
    "data.memory.num_examples=16",
    "data.memory.max_text_len=8",
    "training.batch_size=4",
)


def quick_config(output_dir, tokenizer_dir, *overrides: str):
    """The quick variant; later overrides of the same key win. ``tokenizer_dir`` replaces the
    config's t5-small tokenizer, which would need the network."""
    items = [
        f"output_dir={output_dir}",
        f"model.tokenizer={tokenizer_dir}",
        "logging.progress=false",
        "logging.tensorboard=false",
        *QUICK,
        *overrides,
    ]
    merged = {item.split("=", 1)[0]: item for item in items}
    return load_train_config("tiny", list(merged.values()))


def losses(output_dir) -> list[tuple[int, float]]:
    return [(record["step"], record["loss"]) for record in read_metrics(output_dir)]


# ------------------------------------------------------------------------------------ config


def test_every_shipped_train_config_parses():
    names = sorted(p.stem for p in TRAIN_CONFIG_DIR.glob("*.yaml"))
    assert {"tiny", "finetune-small", "small", "medium", "large"} <= set(names)
    for name in names:
        config = load_train_config(name)
        assert config.training.batch_size % config.training.microbatches == 0
    small = load_train_config("small")
    assert (small.optimizer.b1, small.optimizer.b2, small.optimizer.weight_decay) == (0.9, 0.95, 0.1)
    assert small.training.condition_dropout == 0.3 and small.optimizer.grad_clip == 1.0


def test_dotted_overrides_reach_train_and_model_config(tmp_path):
    from musicgen_jax.training.config import resolve_model_config

    config = load_train_config(
        "tiny", ["training.batch_size=32", "model.decoder.hidden_size=128", "mesh.fsdp=-1", "mesh.data=1"]
    )
    assert config.training.batch_size == 32 and config.mesh.fsdp == -1
    assert resolve_model_config(config.model).decoder.hidden_size == 128
    with pytest.raises(ConfigError, match="unknown key"):
        load_train_config("tiny", ["training.bach_size=4"])
    with pytest.raises(ConfigError, match="hidden_sise"):
        load_train_config("tiny", ["model.decoder.hidden_sise=4"])
    with pytest.raises(ConfigError, match="divisible"):
        load_train_config("tiny", ["training.batch_size=6", "training.microbatches=4"])


def test_a_run_from_scratch_must_name_its_tokenizer(tiny_tokenizer_dir):
    from musicgen_jax.conversion import CheckpointError
    from musicgen_jax.training.model_source import load_model_source

    assert load_train_config("tiny").model.tokenizer == "t5-small"  # the shipped config names one
    with pytest.raises(CheckpointError, match="set model.tokenizer .* or model.text_encoder_from"):
        load_model_source(load_train_config("tiny", ["model.tokenizer=null"]).model)
    named = load_model_source(load_train_config("tiny", [f"model.tokenizer={tiny_tokenizer_dir}"]).model)
    assert named.tokenizer("calm piano").input_ids == [26, 47, 1]  # the testing tokenizer's ids, then </s>


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["data.pipeline.segment_frame=16"], "'segment_frame' in data.pipeline"),
        (["data.memory.framez=8"], "'framez' in data.memory"),
        (["data.memory.frames=0"], "data.memory: frames must be positive"),
        (["data.source=records"], "data.source: 'records'"),
        (["data.source=pipeline", "data.pipeline.batch_size=16"], "data.pipeline.batch_size (16)"),
        (["data.pipeline.paths=[a]", "data.pipeline.paths=[b]"], "'data.pipeline.paths' is given twice"),
    ],
)
def test_a_bad_data_section_fails_at_load_and_writes_nothing(tmp_path, capsys, overrides, named):
    from musicgen_jax.training import cli

    run = tmp_path / "run"
    code = cli.main(["--config", "tiny", f"output_dir={run}", "logging.progress=false", *overrides])
    assert code == 2
    assert named in capsys.readouterr().err
    assert not run.exists()


def test_pipeline_data_that_is_not_there_fails_before_the_run_directory_is_written(
    tmp_path, tiny_tokenizer_dir
):
    run = tmp_path / "run"
    config = quick_config(
        run, tiny_tokenizer_dir, "data.source=pipeline", f"data.pipeline.paths=[{tmp_path / 'no-shards'}]"
    )
    assert config.data.pipeline.batch_size == config.training.batch_size == 4  # filled in from training
    with pytest.raises(FileNotFoundError, match="no-shards"):
        train(config)
    assert not run.exists()


def test_mesh_shape_fills_the_minus_one_entry():
    from musicgen_jax.training.config import MeshSection

    assert mesh_lib.mesh_shape(MeshSection(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 2)
    assert mesh_lib.mesh_shape(MeshSection(data=1, fsdp=-1), 8) == (1, 8, 1)
    with pytest.raises(ValueError):
        mesh_lib.mesh_shape(MeshSection(data=3, fsdp=-1), 8)
    with pytest.raises(ValueError):
        MeshSection(data=-1, fsdp=-1)


# -------------------------------------------------------------------------------------- loss


def test_codebook_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    batch, codebooks, length, vocab = 3, 4, 7, 11
    logits = rng.normal(size=(batch, codebooks, length, vocab)).astype(np.float32) * 3
    targets = rng.integers(0, vocab + 1, size=(batch, codebooks, length))  # vocab = the special token
    mask = (rng.random((batch, codebooks, length)) < 0.7) & (targets < vocab)
    mask[:, 2] = False  # a codebook with no valid position contributes 0 to the mean
    sums = loss_lib.codebook_sums(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
    counts = loss_lib.codebook_counts(jnp.asarray(mask))
    metrics = loss_lib.metrics_from_sums(sums, counts)

    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(-1, keepdims=True))
    expected = []
    for k in range(codebooks):
        nll = [
            -log_probs[b, k, t, targets[b, k, t]]
            for b in range(batch)
            for t in range(length)
            if mask[b, k, t]
        ]
        expected.append(np.mean(nll) if nll else 0.0)
    np.testing.assert_allclose([metrics[f"ce_q{k}"] for k in range(codebooks)], expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], np.mean(expected), rtol=1e-5)
    np.testing.assert_allclose(metrics["ppl"], np.exp(np.mean(expected)), rtol=1e-5)
    hits = (logits.argmax(-1) == targets) & mask
    np.testing.assert_allclose(metrics["accuracy"], hits.sum() / mask.sum(), rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy_q0"], hits[:, 0].sum() / mask[:, 0].sum(), rtol=1e-6)


def test_loss_mask_follows_the_delay_pattern_and_padding():
    from musicgen_jax.models.config import MusicGenConfig
    from musicgen_jax.models.musicgen import MusicGenModel

    model = MusicGenModel(MusicGenConfig.preset("tiny"))
    codes = jnp.arange(2 * 4 * 5).reshape(2, 4, 5).astype(jnp.int32)
    frame_mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    inputs, targets, mask = step_lib.prepare_targets({"codes": codes, "frame_mask": frame_mask}, model)
    assert inputs.shape == targets.shape == mask.shape == (2, 4, 5 + 4 - 1)
    # Codebook k's target at delayed position j is frame j - k: valid for 0 <= j - k < frames.
    np.testing.assert_array_equal(mask[0].sum(-1), [5, 5, 5, 5])
    np.testing.assert_array_equal(mask[1].sum(-1), [3, 3, 3, 3])
    assert np.all(np.where(mask, targets < 2048, targets == 2048)[0])
    # Padded frames enter the inputs as the special token, never as their codes.
    assert int(inputs[1, 0, 4]) == 2048 and int(inputs[0, 0, 4]) == int(codes[0, 0, 3])


# -------------------------------------------------------------------------------- train step


def test_microbatches_accumulate_to_the_full_batch(tmp_path, tiny_tokenizer_dir):
    """Gradient accumulation normalises by the whole batch, so 2 microbatches == 1 batch."""
    from musicgen_jax.training.model_source import load_model_source

    results = []
    for microbatches in (1, 2):
        config = quick_config(
            tmp_path,
            tiny_tokenizer_dir,
            f"training.microbatches={microbatches}",
            "training.condition_dropout=0.0",
            "data.memory.padded_fraction=0.5",
        )
        source = load_model_source(config.model)
        mesh = mesh_lib.create_mesh(config.mesh, jax.devices()[:1])
        rules = mesh_lib.rules_from_config(config.mesh)
        layout = StateLayout.create(
            build_model(source.config, config.model),
            make_optimizer(config.optimizer, config.training.steps),
            mesh,
            rules,
            frozen_keys(config.model),
            use_ema=False,
        )
        batch = MemoryBatchSource(config.data.memory, source.config, source.tokenizer, 4).batch(0)
        assert not batch["frame_mask"].all()
        shardings = mesh_lib.batch_shardings({k: v.shape for k, v in batch.items()}, mesh, rules)
        train_step = step_lib.make_train_step(layout, config, rules, shardings)
        state, metrics = train_step(
            layout.init(jax.random.key(0)), mesh_lib.global_batch(batch, shardings), jax.random.key(1)
        )
        results.append((jax.device_get(metrics), jax.device_get(state.params)))
    (m1, p1), (m2, p2) = results
    assert m1["target_tokens"] == m2["target_tokens"]
    for name in ("loss", "ce_q3", "accuracy", "grad_norm"):
        np.testing.assert_allclose(m1[name], m2[name], rtol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p2)


def test_condition_dropout_trains_on_the_null_condition():
    from musicgen_jax.models.config import MusicGenConfig
    from musicgen_jax.models.musicgen import MusicGenModel, null_condition
    from musicgen_jax.testing import build_tokenizer
    from musicgen_jax.training.config import MemoryDataConfig

    config = MusicGenConfig.preset("tiny-learned")
    model = MusicGenModel(config)
    batch = MemoryBatchSource(MemoryDataConfig(frames=6, num_examples=4), config, build_tokenizer(), 2).batch(
        0
    )
    batch = jax.tree.map(jnp.asarray, batch)
    inputs, _, _ = jax.jit(lambda b: step_lib.prepare_targets(b, model))(batch)
    attrs = {k: batch[k] for k in step_lib.ATTRIBUTE_KEYS}
    params = jax.jit(
        lambda rng: model.init(rng, batch["text_ids"], batch["text_mask"], inputs, attrs)["params"]
    )(jax.random.key(0))
    drop = jnp.array([True, False])
    forward = jax.jit(
        lambda p, b, i, d: model.apply({"params": p}, b, i, d, True, True, method=step_lib._forward)
    )
    logits = forward(params, batch, inputs, drop)
    memory, memory_mask = jax.jit(
        lambda p: model.apply(
            {"params": p}, batch["text_ids"], batch["text_mask"], attrs, method=MusicGenModel.encode
        )
    )(params)
    decode = jax.jit(
        lambda p, m, mask: model.apply({"params": p}, inputs, m, mask, method=MusicGenModel.decode)
    )
    null_logits = decode(params, *null_condition(memory, memory_mask))
    full_logits = decode(params, memory, memory_mask)
    np.testing.assert_allclose(logits[0], null_logits[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[1], full_logits[1], rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(null_logits[0] - full_logits[0]).max()) > 1e-3  # the condition matters

    from musicgen_jax.training.step import _condition_dropout

    quick = load_train_config("tiny")
    draws = _condition_dropout(jax.random.key(3), quick, 20000)
    assert abs(float(draws.mean()) - 0.3) < 0.02
    per_batch = load_train_config("tiny", ["training.condition_dropout_per=batch"])
    rows = np.asarray(
        jax.vmap(lambda key: _condition_dropout(key, per_batch, 8))(jax.random.split(jax.random.key(0), 200))
    )
    assert np.all(rows.all(1) | ~rows.any(1)) and 0.2 < rows[:, 0].mean() < 0.4


def _loss_and_params(config):
    """The full-condition loss as a function of the parameters, and initial parameters, for the
    model ``config`` describes on one batch of its data."""
    from musicgen_jax.training.model_source import load_model_source

    source = load_model_source(config.model)
    model = build_model(source.config, config.model)
    batch = jax.tree.map(
        jnp.asarray, MemoryBatchSource(config.data.memory, source.config, source.tokenizer, 2).batch(0)
    )
    inputs, targets, mask = jax.jit(lambda b: step_lib.prepare_targets(b, model))(batch)
    params = jax.jit(lambda rng: model.init(rng, batch["text_ids"], batch["text_mask"], inputs)["params"])(
        jax.random.key(0)
    )

    def loss(params):
        logits = model.apply(
            {"params": params}, batch, inputs, jnp.zeros(2, bool), True, True, method=step_lib._forward
        )
        sums = loss_lib.codebook_sums(logits, targets, mask)
        return loss_lib.loss_from_sums(sums["nll"], loss_lib.codebook_counts(mask))

    return loss, params


def test_remat_policies_change_the_program_not_the_gradients(tmp_path, tiny_tokenizer_dir):
    """Every policy inserts rematerialisation under grad; under jit the gradients are unchanged
    (compiled and compared for "full"; every policy was checked by hand, see the report)."""
    grads, programs = {}, {}
    for remat in ("none", "full", "dots", "dots_no_batch"):
        loss, params = _loss_and_params(
            quick_config(tmp_path, tiny_tokenizer_dir, f"model.remat={remat}", "data.memory.frames=8")
        )
        programs[remat] = str(jax.make_jaxpr(jax.grad(loss))(params))
        if remat in ("none", "full"):
            grads[remat] = jax.jit(jax.grad(loss))(params)
    assert "remat" not in programs["none"] and "checkpoint" not in programs["none"]
    for policy in ("full", "dots", "dots_no_batch"):
        assert "remat" in programs[policy] or "checkpoint" in programs[policy], policy
    assert programs["dots"] != programs["full"]
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), grads["none"], grads["full"]
    )


# --------------------------------------------------------------------------------- training


def test_tiny_model_overfits_a_small_batch(tmp_path, tiny_tokenizer_dir):
    config = quick_config(
        tmp_path,
        tiny_tokenizer_dir,
        "training.steps=250",
        "data.memory.num_examples=4",  # the pool is one batch: memorise it
        "data.memory.pattern=random",
        "training.condition_dropout=0.0",
        "training.ema_decay=null",
        "optimizer.learning_rate=0.01",
        "optimizer.warmup_steps=10",
        "optimizer.weight_decay=0.0",
        "checkpoint.every_steps=1000",
    )
    result = train(config)
    curve = losses(tmp_path)
    first, final = curve[0][1], curve[-1][1]
    assert curve[-1][0] == 250
    assert first > 6.5  # near ln(2048) = 7.62 at the start
    assert final < first / 5, f"loss fell only from {first:.3f} to {final:.3f}"
    assert result.metrics["accuracy"] > 0.9


def test_killed_run_resumes_exactly(tmp_path, compilation_cache, tiny_tokenizer_dir):
    """``train.py`` killed with SIGKILL mid-run, then ``--resume``: step for step the losses of the
    same run never interrupted. Model dropout, condition dropout and the EMA are on, so every
    random draw and the data order must be reproduced from the checkpoint."""
    run = (
        "training.steps=60",
        "checkpoint.every_steps=10",
        "training.dropout=true",
        "model.decoder.dropout=0.1",
    )
    args = [f"output_dir={tmp_path / 'killed'}", f"model.tokenizer={tiny_tokenizer_dir}", *QUICK, *run]
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(compilation_cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    command = [sys.executable, str(REPO / "train.py"), "--config", "configs/train/tiny.yaml"]
    log = (tmp_path / "killed.log").open("w")  # a pipe nobody reads could fill and stall the run
    process = subprocess.Popen(command + args, cwd=REPO, env=env, stdout=log, stderr=log)
    deadline = time.time() + 180
    checkpoints = tmp_path / "killed" / "checkpoints"
    while time.time() < deadline and process.poll() is None:
        if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert killed_at < 60, "the run finished before it could be killed"

    again = subprocess.run(command + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode != 0 and "--resume" in again.stderr  # never silently restarts over a run
    done = subprocess.run(
        command + args + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 60" in done.stdout

    whole = train(quick_config(tmp_path / "whole", tiny_tokenizer_dir, *run))
    assert whole.step == 60 and whole.resumed_from is None
    assert [s for s, _ in losses(tmp_path / "whole")] == list(range(1, 61))
    assert losses(tmp_path / "killed") == losses(tmp_path / "whole")  # exactly
    # keep=2 newest, plus the best by train loss (it may be one of them).
    kept = Checkpointer(tmp_path / "killed").all_steps()
    assert kept[-2:] == [50, 60] and len(kept) <= 3
    resolved = (tmp_path / "killed" / "train_config.yaml").read_text()
    assert "steps: 60" in resolved and "frames: 16" in resolved and "dropout: 0.1" in resolved
    assert list((tmp_path / "killed" / "tensorboard").glob("events.out.tfevents.*"))


def test_a_run_with_an_ema_is_evaluated_on_the_average(tmp_path, tiny_tokenizer_dir):
    """The eval loss (logged, and ranking checkpoints) is the EMA weights' loss on the held-out
    batch, not the raw weights'; the eval record says so."""
    from musicgen_jax.training.model_source import load_model_source
    from musicgen_jax.training.trainer import DataSource

    config = quick_config(
        tmp_path,
        tiny_tokenizer_dir,
        "training.steps=6",
        "training.ema_decay=0.9",
        "training.ema_every=1",
        "optimizer.learning_rate=0.01",
        "optimizer.warmup_steps=1",
        "eval.every_steps=6",
        "eval.batches=1",
    )
    result = train(config)
    evals = [record for record in read_metrics(tmp_path) if "eval/loss" in record]
    assert [record["step"] for record in evals] == [6] and evals[0]["eval/ema_weights"] == 1.0

    source = load_model_source(config.model)
    model = build_model(source.config, config.model)
    held_out = jax.tree.map(jnp.asarray, next(DataSource(config, source, 0, 1).eval()))
    state = jax.device_get(result.state)
    ema_loss = float(step_lib.train_loss_reference(model, state.all_params(use_ema=True), held_out)["loss"])
    raw_loss = float(step_lib.train_loss_reference(model, state.all_params(), held_out)["loss"])
    np.testing.assert_allclose(evals[0]["eval/loss"], ema_loss, rtol=1e-5)
    assert abs(raw_loss - ema_loss) > 5e-3, (raw_loss, ema_loss)  # far outside that tolerance


def test_each_host_reads_its_own_rows_of_the_global_batch():
    from musicgen_jax.models.config import MusicGenConfig
    from musicgen_jax.testing import build_tokenizer
    from musicgen_jax.training.config import MemoryDataConfig

    config, tokenizer = MusicGenConfig.preset("tiny"), build_tokenizer()
    data = MemoryDataConfig(num_examples=10, frames=4)
    whole = MemoryBatchSource(data, config, tokenizer, 8)
    hosts = [
        MemoryBatchSource(data, config, tokenizer, 8, process_index=i, process_count=2) for i in range(2)
    ]
    for _ in range(3):  # crosses an epoch boundary (10 examples, 8 a batch)
        expected = next(whole)
        parts = [next(host) for host in hosts]
        for name in expected:
            np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]), expected[name])
    hosts[0].set_state({"next_batch": 1})
    np.testing.assert_array_equal(next(hosts[0])["codes"], whole.batch(1)["codes"][:4])


def test_full_size_state_layout_and_flops_from_shapes_only(tiny_tokenizer_dir):
    """musicgen-small's train state, by jax.eval_shape (nothing allocated): parameter counts, the
    frozen T5 outside the optimizer, and a FLOPs estimate close to 6 x parameters x tokens."""
    from musicgen_jax.training import throughput
    from musicgen_jax.training.model_source import load_model_source

    config = load_train_config(
        "small", ["model.text_encoder_from=null", f"model.tokenizer={tiny_tokenizer_dir}"]
    )
    source = load_model_source(config.model)
    mesh = mesh_lib.create_mesh(config.mesh, jax.devices()[:1])
    layout = StateLayout.create(
        build_model(source.config, config.model),
        make_optimizer(config.optimizer, config.training.steps),
        mesh,
        mesh_lib.rules_from_config(config.mesh),
        frozen_keys(config.model),
        use_ema=True,
    )
    count = lambda tree: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
    trainable, frozen = count(layout.abstract.params), count(layout.abstract.frozen_params)
    assert set(layout.abstract.frozen_params) == {"text_encoder"}
    assert 415e6 < trainable < 425e6  # decoder 24 x 16.8M + embeddings, heads, projection
    assert 105e6 < frozen < 115e6  # t5-base's encoder
    assert count(layout.abstract.opt_state) == 2 * trainable + 2  # Adam moments + Adam and schedule counts
    assert count(layout.abstract.ema_params) == trainable
    assert layout.abstract.params["decoder"]["layers"]["fc1"]["kernel"].dtype == jnp.float32
    positions, text = 1503, 64
    flops = throughput.train_step_flops(source.config, 1, positions, text)
    decoder_matmul_params = trainable - 2 * 4 * 2049 * 1024 // 2  # the embedding lookup is no matmul
    assert 1.0 < flops / (6 * decoder_matmul_params * positions) < 1.4  # + attention + frozen T5


def test_attribute_dropout_removes_each_learned_attribute_apart():
    from musicgen_jax.conditioning import Attributes, encode_attributes

    rows = 2000
    attributes = Attributes.create(genre="jazz", mood="happy", instruments=["piano"], tempo=120.0)
    batch = {k: jnp.asarray(v) for k, v in encode_attributes([attributes] * rows).as_dict().items()}
    batch["text_ids"] = jnp.zeros((rows, 4), jnp.int32)
    batch["duration"], batch["duration_present"] = jnp.full((rows,), 10.0), jnp.ones((rows,))
    config = load_train_config("tiny", ["output_dir=/tmp/unused", "training.attribute_dropout=0.3"])
    out = jax.device_get(step_lib._attribute_dropout(jax.random.key(0), config, batch))
    absent = {
        "genre": out["genre"] == 0,
        "moods": out["moods"].sum(-1) == 0,
        "instruments": out["instruments"].sum(-1) == 0,
        "tempo": out["tempo_present"] == 0,
        "duration": out["duration_present"] == 0,
    }
    for name, mask in absent.items():
        assert abs(mask.mean() - 0.3) < 0.04, name
    # Independent draws: genre and tempo are both absent in about 0.3 * 0.3 of the rows.
    assert abs((absent["genre"] & absent["tempo"]).mean() - 0.09) < 0.03
    # What is kept is untouched; an absent tempo is zero with its flag, as encode_attributes writes None.
    kept = ~absent["tempo"]
    assert np.all(out["tempo"][kept] == 120.0) and np.all(out["tempo"][~kept] == 0.0)
    assert np.all(out["genre"][~absent["genre"]] == batch["genre"][0])
    unchanged = load_train_config("tiny", ["output_dir=/tmp/unused"])
    assert step_lib._attribute_dropout(jax.random.key(0), unchanged, batch) is batch
