"""The training loop: set up from a :class:`TrainConfig`, resume, step, log, evaluate, checkpoint."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np

from musicgen_jax import config_io
from musicgen_jax.data import pipeline as data_pipeline
from musicgen_jax.training import mesh as mesh_lib
from musicgen_jax.training import step as step_lib
from musicgen_jax.training import throughput
from musicgen_jax.training.checkpointing import Checkpointer, latest_saved_step
from musicgen_jax.training.config import MemoryDataConfig, TrainConfig
from musicgen_jax.training.logging import MetricsLogger
from musicgen_jax.training.memory_source import MemoryBatchSource
from musicgen_jax.training.model_source import ModelSource, load_model_source, write_run_files
from musicgen_jax.training.optimizer import make_optimizer
from musicgen_jax.training.state import StateLayout, TrainState, build_model, frozen_keys

logger = logging.getLogger(__name__)

TRAIN_CONFIG_FILE = "train_config.yaml"  # beside the model config of the checkpoint layout


@dataclasses.dataclass
class TrainResult:
    output_dir: Path
    step: int
    metrics: dict[str, float]  # the last logged train metrics
    resumed_from: int | None
    state: TrainState  # the final state (sharded as trained)


class DataSource:
    """Makes the train iterator (and eval iterators) this host reads, for the configured source kind."""

    def __init__(self, config: TrainConfig, source: ModelSource, process_index: int, process_count: int):
        self.config, self.source = config, source
        self.process_index, self.process_count = process_index, process_count

    def train(self) -> Iterator[dict[str, np.ndarray]]:
        data = self.config.data
        if data.source == "memory":
            return self._memory(data.memory)
        return data_pipeline.make_train_iterator(
            data.pipeline,
            self.source.tokenizer,
            process_index=self.process_index,
            process_count=self.process_count,
        )

    def eval(self, step: int = 0) -> Iterator[dict[str, np.ndarray]] | None:
        """A fresh iterator over held-out batches, or None where the source has none; with a
        segment schedule, at the length training uses at ``step``."""
        data = self.config.data
        if data.source == "memory":
            return self._memory(dataclasses.replace(data.memory, seed=data.memory.seed + 1))
        pipeline = dataclasses.replace(data.pipeline, segment_frames=data.pipeline.segment_frames_at(step))
        return data_pipeline.make_eval_iterator(
            pipeline,
            self.source.tokenizer,
            process_index=self.process_index,
            process_count=self.process_count,
        )

    def _memory(self, memory: MemoryDataConfig) -> MemoryBatchSource:
        return MemoryBatchSource(
            memory,
            self.source.config,
            self.source.tokenizer,
            self.config.training.batch_size,
            self.process_index,
            self.process_count,
        )


def _check_batch(batch: dict[str, np.ndarray], config: TrainConfig, blocks: int) -> None:
    rows = batch["codes"].shape[0]
    if rows * blocks != config.training.batch_size:
        raise ValueError(
            f"the data source gives {rows} rows per host x {blocks} blocks of the batch, "
            f"but training.batch_size is {config.training.batch_size}"
        )


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Run (or continue, with ``resume``) the training described by ``config``."""
    mesh_lib.initialize_distributed(config.distributed)
    if config.compilation_cache_dir is not None:
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
    if config.output_dir is None:
        raise ValueError("output_dir is not set (add output_dir=DIR)")
    output_dir = Path(config.output_dir)
    primary = jax.process_index() == 0
    latest = latest_saved_step(output_dir)
    if latest is not None and not resume:
        raise FileExistsError(
            f"{output_dir} already holds checkpoints (newest: step {latest}); "
            "pass --resume, or a new output_dir"
        )

    # What can still fail on the config (the model source, the data paths) comes before the run
    # directory is written, so that a run that cannot start leaves nothing behind.
    source = load_model_source(config.model)
    mesh = mesh_lib.create_mesh(config.mesh)
    rules = mesh_lib.rules_from_config(config.mesh)
    # Each process reads the rows its devices hold: its own share where the batch is split across
    # processes, the same rows as its peers where they share them.
    block, blocks = mesh_lib.process_batch_block(mesh, rules, config.training.batch_size)
    data = DataSource(config, source, block, blocks)
    iterator = data.train()
    if primary:
        output_dir.mkdir(parents=True, exist_ok=True)
        config_io.save_yaml(config, output_dir / TRAIN_CONFIG_FILE)
        write_run_files(source, output_dir)
    checkpointer = Checkpointer(output_dir, config.checkpoint)

    model = build_model(source.config, config.model)
    tx = make_optimizer(config.optimizer, config.training.steps)
    layout = StateLayout.create(
        model,
        tx,
        mesh,
        rules,
        frozen_keys(config.model),
        use_ema=config.training.ema_decay is not None,
        lora=config.lora,
    )

    resumed_from = None
    if latest is not None:
        state, data_state = checkpointer.restore(layout.abstract, latest)
        if layout.lora is not None:  # LoRA checkpoints hold the adapters; the base is made again
            base = layout.init_model_params(
                jax.random.key(config.training.seed), source.params, source.overrides
            )
            state = state.replace(frozen_params=base)
        iterator.set_state(data_state)
        resumed_from = latest
        logger.info("resumed from step %d", latest)
    else:
        state = layout.init(jax.random.key(config.training.seed), source.params, source.overrides)
    start = int(jax.device_get(state.step))
    last = (
        config.training.steps
        if config.training.stop_after is None
        else min(config.training.steps, config.training.stop_after)
    )

    batch = next(iterator)
    _check_batch(batch, config, blocks)
    shardings = mesh_lib.batch_shardings({k: v.shape for k, v in batch.items()}, mesh, rules)
    train_step = step_lib.make_train_step(layout, config, rules, shardings)
    eval_step = None
    if config.eval.every_steps:
        # A run with an EMA is evaluated (and its best checkpoint chosen) on the average, the
        # weights it exports for inference; the eval records say which (eval/ema_weights).
        eval_step = step_lib.make_eval_step(layout, config, rules, shardings, use_ema=layout.use_ema)
        logger.info("evaluating the %s weights", "EMA of the" if layout.use_ema else "raw")

    def step_cost(batch: dict[str, np.ndarray]) -> tuple[int, float]:
        """Decoder positions and FLOPs of one step on batches shaped like ``batch``."""
        positions = batch["codes"].shape[-1] + source.config.decoder.codebooks_per_channel - 1
        flops = throughput.train_step_flops(
            source.config,
            config.training.batch_size,
            positions,
            batch["text_ids"].shape[-1],
            config.model.train_text_encoder,
        )
        return positions, flops

    positions, flops_per_step = step_cost(batch)
    peak = throughput.peak_flops_per_device()
    metrics_logger = MetricsLogger(
        output_dir,
        total_steps=config.training.steps,
        start_step=start,
        tensorboard=config.logging.tensorboard,
        progress=config.logging.progress,
        enabled=primary,
    )
    rng = jax.random.key(config.training.seed + 1)
    step = start
    window_losses: list[jax.Array] = []
    last_metrics: dict[str, float] = {}
    eval_loss = None
    timer_start, timer_steps = None, 0
    try:
        while step < last:
            if step > start:
                batch = next(iterator)
                if batch["codes"].shape[-1] + source.config.decoder.codebooks_per_channel - 1 != positions:
                    # Progressive training: a new segment length compiles its step once, and the
                    # throughput window restarts after that compile.
                    positions, flops_per_step = step_cost(batch)
                    timer_start = None
            frames = batch["codes"].shape[-1]
            state, metrics = train_step(
                state, mesh_lib.global_batch(batch, shardings, config.training.batch_size), rng
            )
            step += 1
            window_losses.append(metrics["loss"])
            if timer_start is None:
                # The first step compiles; time from its end.
                jax.block_until_ready(metrics)
                timer_start, timer_steps = time.perf_counter(), 0
            else:
                timer_steps += 1
            metrics_logger.advance()
            if step % config.logging.every_steps == 0 or step == last:
                last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                last_metrics["segment_frames"] = frames
                elapsed = time.perf_counter() - timer_start
                if timer_steps and elapsed > 0:
                    steps_per_sec = timer_steps / elapsed
                    last_metrics["steps_per_sec"] = steps_per_sec
                    last_metrics["tokens_per_sec"] = steps_per_sec * config.training.batch_size * positions
                    last_metrics["mfu"] = throughput.mfu(
                        flops_per_step, steps_per_sec, jax.device_count(), peak
                    )
                    timer_start, timer_steps = time.perf_counter(), 0
                metrics_logger.log(step, {k: v for k, v in last_metrics.items() if v is not None})
            if eval_step is not None and (step % config.eval.every_steps == 0 or step == last):
                eval_loss = _evaluate(
                    eval_step, state, data, config, shardings, metrics_logger, step, layout.use_ema
                )
            # A preemption notice (SIGTERM to any process of a jax.distributed run: Slurm's scancel,
            # a TPU maintenance event) is agreed on at one step by all processes: save it and stop.
            preempted = checkpointer.reached_preemption(step)
            if step % config.checkpoint.every_steps == 0 or step == last or preempted:
                train_loss = float(np.mean(jax.device_get(window_losses)))
                window_losses = []
                checkpointer.save(
                    state, iterator.get_state(), {"loss": eval_loss if eval_loss is not None else train_loss}
                )
            if preempted:
                logger.warning("preempted: saved step %d; continue with --resume", step)
                break
    finally:
        checkpointer.close()
        metrics_logger.close()
    return TrainResult(output_dir, step, last_metrics, resumed_from, state)


def _evaluate(
    eval_step,
    state,
    data: DataSource,
    config: TrainConfig,
    shardings,
    metrics_logger,
    step: int,
    use_ema: bool,
) -> float | None:
    """The eval metrics averaged over ``eval.batches`` batches, logged as ``eval/*``; the loss."""
    iterator = data.eval(step)
    if iterator is None:
        return None
    sums: dict[str, float] = {}
    for _ in range(config.eval.batches):
        metrics = jax.device_get(
            eval_step(state, mesh_lib.global_batch(next(iterator), shardings, config.training.batch_size))
        )
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + float(value)
    # Batches are equal-sized: averaging per-batch metrics is close to (not exactly) pooling them.
    averaged = {name: value / config.eval.batches for name, value in sums.items()}
    metrics_logger.log(step, {**averaged, "ema_weights": float(use_ema)}, prefix="eval/")
    return averaged["loss"]
