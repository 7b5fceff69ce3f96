"""The codec's training loop: set up from a :class:`CodecTrainConfig`, resume, step, log, evaluate,
checkpoint; on the MusicGen trainer's machinery (mesh, orbax checkpoints with the data position,
metrics.jsonl/TensorBoard/progress).

Run directory: ``train_config.yaml`` (the resolved config), ``codec_config.json`` (the codec's
transformers ``EncodecConfig``), ``checkpoints/<step>/`` (``params``: codec, codebooks and their
statistics, discriminator; ``optimizer``: both optimizers' state and the step; ``data``: the
iterator's position), ``metrics.jsonl``. ``python train.py codec export`` turns a checkpoint into a
transformers ``EncodecModel`` directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from musicgen_jax import config_io
from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.jax_encodec import JaxEncodec
from musicgen_jax.training import mesh as mesh_lib
from musicgen_jax.training.checkpointing import Checkpointer, latest_saved_step
from musicgen_jax.training.codec import quantizer as quantizer_lib
from musicgen_jax.training.codec.balancer import BalancerState
from musicgen_jax.training.codec.config import CodecTrainConfig, resolve_codec_config
from musicgen_jax.training.codec.data import SegmentBatches, load_splits
from musicgen_jax.training.codec.params import init_generator, to_training
from musicgen_jax.training.codec.step import (
    CodecModules,
    CodecTrainState,
    batch_sharding,
    gather_embeddings,
    make_steps,
)
from musicgen_jax.training.logging import MetricsLogger
from musicgen_jax.training.optimizer import make_optimizer

logger = logging.getLogger(__name__)

TRAIN_CONFIG_FILE = "train_config.yaml"
CODEC_CONFIG_FILE = "codec_config.json"


@dataclasses.dataclass
class CodecTrainResult:
    output_dir: Path
    step: int
    metrics: dict[str, float]  # the last logged train metrics
    eval_metrics: dict[str, float]  # the last evaluation's, {} without one
    resumed_from: int | None
    state: CodecTrainState


def read_codec_config(run_dir: str | Path) -> CodecConfig:
    path = Path(run_dir) / CODEC_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a codec training run (no {CODEC_CONFIG_FILE})")
    return CodecConfig.from_dict(json.loads(path.read_text()), where=str(path))


def _codec_source(config: CodecTrainConfig) -> tuple[CodecConfig, dict | None]:
    """The codec's config and, when fine-tuning, its loaded inference parameters."""
    if config.init_from is None:
        return resolve_codec_config(config), None
    codec = JaxEncodec.from_pretrained(config.init_from)
    return codec.config, jax.device_get(codec.params)


def _optimizers(config: CodecTrainConfig, with_discriminator: bool):
    tx = make_optimizer(config.optimizer, config.training.steps)
    if not with_discriminator:
        return tx, None
    d = config.discriminator
    return tx, optax.adam(d.learning_rate, b1=d.b1, b2=d.b2)


def _items(state: CodecTrainState) -> dict[str, Any]:
    return {
        "params": {"params": state.params, "quantizer": state.quantizer, "disc_params": state.disc_params},
        "optimizer": {
            "opt_state": state.opt_state,
            "disc_opt_state": state.disc_opt_state,
            "balancer": state.balancer,
            "step": state.step,
        },
    }


def _state(items: dict[str, Any]) -> CodecTrainState:
    params, optimizer = items["params"], items["optimizer"]
    return CodecTrainState(
        step=optimizer["step"],
        params=params["params"],
        opt_state=optimizer["opt_state"],
        quantizer=params["quantizer"],
        disc_params=params["disc_params"],
        disc_opt_state=optimizer["disc_opt_state"],
        balancer=optimizer["balancer"],
    )


def _initial_state(
    modules: CodecModules, tx, disc_tx, config: CodecTrainConfig, pretrained: dict | None, iterator
) -> CodecTrainState:
    """Fresh parameters (or the fine-tuned codec's); codebooks by k-means on the first batches."""
    codec = modules.codec
    key = jax.random.key(config.training.seed)
    generator_key, kmeans_key, disc_key = jax.random.split(key, 3)
    if pretrained is None:
        params = init_generator(codec, generator_key)
        q = config.quantizer
        batches = [next(iterator) for _ in range(q.kmeans_batches)]
        embeddings = gather_embeddings(modules, params, batches)
        quantizer = quantizer_lib.kmeans_init(
            embeddings,
            codec.num_quantizers,
            codec.codebook_size,
            q.kmeans_iterations,
            q.kmeans_batches,
            kmeans_key,
        )
        logger.info("codebooks initialised by k-means on %d vectors", embeddings.shape[0])
    else:
        params = to_training(codec, {"encoder": pretrained["encoder"], "decoder": pretrained["decoder"]})
        quantizer = quantizer_lib.QuantizerState.create(jnp.asarray(pretrained["quantizer"]["codebooks"]))
    disc_params = disc_opt_state = None
    if modules.discriminator is not None:
        audio = jnp.zeros((1, codec.audio_channels, int(config.data.segment_seconds * codec.sampling_rate)))
        disc_params = modules.discriminator.init(disc_key, audio)["params"]
        disc_opt_state = disc_tx.init(disc_params)
    return CodecTrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        quantizer=quantizer,
        disc_params=disc_params,
        disc_opt_state=disc_opt_state,
        balancer=BalancerState.create(len(modules.balanced_losses)),
    )


def train_codec(config: CodecTrainConfig, resume: bool = False) -> CodecTrainResult:
    """Run (or continue, with ``resume``) the codec training described by ``config``."""
    mesh_lib.initialize_distributed(config.distributed)
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

    # What can still fail (the codec source, the audio files) comes before the run directory is written.
    codec, pretrained = _codec_source(config)
    segment = int(round(config.data.segment_seconds * codec.sampling_rate))
    if segment < config.loss.mel_largest_fft:
        raise ValueError(
            f"data.segment_seconds gives {segment} samples, fewer than loss.mel_largest_fft "
            f"({config.loss.mel_largest_fft})"
        )
    train_clips, eval_clips = load_splits(config.data, codec.sampling_rate, codec.audio_channels)
    logger.info(
        "%d clips (%.0f s) to train on, %d (%.0f s) held out",
        len(train_clips.audio),
        train_clips.seconds,
        len(eval_clips.audio),
        eval_clips.seconds,
    )
    iterator = SegmentBatches(
        train_clips,
        segment,
        config.training.batch_size,
        config.data.seed,
        jax.process_index(),
        jax.process_count(),
    )
    if primary:
        output_dir.mkdir(parents=True, exist_ok=True)
        config_io.save_yaml(config, output_dir / TRAIN_CONFIG_FILE)
        (output_dir / CODEC_CONFIG_FILE).write_text(json.dumps(codec.to_dict(), indent=2) + "\n")
    checkpointer = Checkpointer(output_dir, config.checkpoint)

    mesh = mesh_lib.create_mesh(config.mesh)
    if config.training.batch_size % mesh.size:
        raise ValueError(
            f"training.batch_size {config.training.batch_size} does not split over {mesh.size} devices"
        )
    modules = CodecModules.create(codec, config)
    tx, disc_tx = _optimizers(config, modules.discriminator is not None)
    replicated = NamedSharding(mesh, PartitionSpec())

    resumed_from = None
    if latest is not None:
        abstract = jax.eval_shape(
            lambda: _initial_state(modules, tx, disc_tx, _no_kmeans(config), pretrained, _zeros(iterator))
        )
        abstract = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), abstract
        )
        items, data_state = checkpointer.restore_items(_items(abstract), latest)
        state = _state(items)
        iterator.set_state(data_state)
        resumed_from = latest
        logger.info("resumed from step %d", latest)
    else:
        state = jax.device_put(_initial_state(modules, tx, disc_tx, config, pretrained, iterator), replicated)
    state_sharding = jax.tree.map(lambda _: replicated, state)
    train_step, eval_step = make_steps(modules, tx, disc_tx, mesh, state_sharding)
    audio_sharding = batch_sharding(mesh)

    start = int(jax.device_get(state.step))
    t = config.training
    last = t.steps if t.stop_after is None else min(t.steps, t.stop_after)
    metrics_logger = MetricsLogger(
        output_dir,
        total_steps=t.steps,
        start_step=start,
        tensorboard=config.logging.tensorboard,
        progress=config.logging.progress,
        enabled=primary,
    )
    rng = jax.random.key(t.seed + 1)
    step, last_metrics, eval_metrics = start, {}, {}
    window: list[jax.Array] = []
    timer_start, timer_steps = None, 0
    try:
        while step < last:
            batch = jax.make_array_from_process_local_data(audio_sharding, next(iterator))
            state, metrics = train_step(state, batch, rng)
            step += 1
            window.append(metrics["loss"])
            if timer_start is None:
                jax.block_until_ready(metrics)  # the first step compiles; time from its end
                timer_start, timer_steps = time.perf_counter(), 0
            else:
                timer_steps += 1
            metrics_logger.advance()
            if step % config.logging.every_steps == 0 or step == last:
                last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                elapsed = time.perf_counter() - timer_start
                if timer_steps and elapsed > 0:
                    last_metrics["steps_per_sec"] = timer_steps / elapsed
                    last_metrics["audio_seconds_per_sec"] = (
                        timer_steps * t.batch_size * segment / codec.sampling_rate / elapsed
                    )
                    timer_start, timer_steps = time.perf_counter(), 0
                metrics_logger.log(step, last_metrics)
            if config.eval.every_steps and (step % config.eval.every_steps == 0 or step == last):
                eval_metrics = _evaluate(eval_step, state, eval_clips, segment, config, audio_sharding)
                metrics_logger.log(step, eval_metrics, prefix="eval/")
            if step % config.checkpoint.every_steps == 0 or step == last:
                train_loss = float(np.mean(jax.device_get(window)))
                window = []
                loss = eval_metrics["loss"] if eval_metrics else train_loss
                checkpointer.save_items(step, _items(state), iterator.get_state(), {"loss": loss})
    finally:
        checkpointer.close()
        metrics_logger.close()
    return CodecTrainResult(output_dir, step, last_metrics, eval_metrics, resumed_from, state)


def _no_kmeans(config: CodecTrainConfig) -> CodecTrainConfig:
    """The config with a one-iteration k-means over one batch: for shapes only (resume)."""
    quantizer = dataclasses.replace(config.quantizer, kmeans_batches=1, kmeans_iterations=1)
    return dataclasses.replace(config, quantizer=quantizer)


def _zeros(iterator: SegmentBatches):
    """An iterator of zero batches shaped like ``iterator``'s (for abstract shapes)."""
    shape = (len(iterator.rows), iterator.clips.audio[0].shape[0], iterator.segment)
    while True:
        yield np.zeros(shape, np.float32)


def _evaluate(eval_step, state, clips, segment: int, config: CodecTrainConfig, sharding) -> dict[str, float]:
    """The eval metrics averaged over ``eval.batches`` fixed batches of held-out segments."""
    batches = SegmentBatches(
        clips,
        segment,
        config.training.batch_size,
        config.data.seed + 1,
        jax.process_index(),
        jax.process_count(),
    )
    sums: dict[str, float] = {}
    for _ in range(config.eval.batches):
        audio = jax.make_array_from_process_local_data(sharding, next(batches))
        for name, value in jax.device_get(eval_step(state, audio)).items():
            sums[name] = sums.get(name, 0.0) + float(value)
    return {name: value / config.eval.batches for name, value in sums.items()}
