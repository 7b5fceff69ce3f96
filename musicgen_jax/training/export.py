"""A training checkpoint to the inference checkpoint format (and from there to transformers).

Reads only the ``params`` item of the orbax checkpoint (no optimizer state), joins trainable and
frozen parameters (or the EMA of the trainable ones), and writes
:func:`~musicgen_jax.conversion.checkpoint.save_checkpoint`'s directory with the tokenizer, codec
and generation defaults the run carried from its source.
"""

from __future__ import annotations

import json
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from musicgen_jax import config_io
from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.training.checkpointing import Checkpointer
from musicgen_jax.training.config import TrainConfig
from musicgen_jax.training.state import build_model, frozen_keys, init_inputs, merge_params, split_params
from musicgen_jax.training.trainer import TRAIN_CONFIG_FILE


def export_run(
    run_dir: str | Path,
    output_dir: str | Path,
    *,
    step: int | None = None,
    use_ema: bool = False,
    dtype: str | None = None,
    transformers_dir: str | Path | None = None,
) -> Path:
    """Write the inference checkpoint of ``run_dir``'s checkpoint at ``step`` (default: newest)."""
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    train_config = config_io.load(TrainConfig, run_dir / TRAIN_CONFIG_FILE)
    model_config = config_io.load(MusicGenConfig, run_dir / ckpt.CONFIG)
    has_ema = train_config.training.ema_decay is not None
    if use_ema and not has_ema:
        raise ValueError(f"{run_dir} was trained without an EMA of the weights (training.ema_decay)")

    model = build_model(model_config, train_config.model)
    boxed = jax.eval_shape(
        lambda rng: model.init(rng, *init_inputs(model_config))["params"], jax.random.key(0)
    )
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), nn.unbox(dict(boxed))
    )
    trainable, frozen = split_params(shapes, frozen_keys(train_config.model))
    abstract = {"params": trainable, "frozen_params": frozen, "ema_params": trainable if has_ema else None}
    restored = Checkpointer(run_dir, train_config.checkpoint, read_only=True).restore_params(abstract, step)

    chosen = restored["ema_params"] if use_ema else restored["params"]
    params = jax.tree.map(np.asarray, merge_params(chosen, restored["frozen_params"]))
    generation = run_dir / ckpt.GENERATION
    ckpt.save_checkpoint(
        output_dir,
        model_config,
        params,
        tokenizer_dir=run_dir / ckpt.TOKENIZER,
        codec_dir=run_dir / ckpt.CODEC if (run_dir / ckpt.CODEC).is_dir() else None,
        generation_config=json.loads(generation.read_text()) if generation.is_file() else None,
        dtype=dtype,
    )
    if transformers_dir is not None:
        from musicgen_jax.conversion import export_to_transformers

        export_to_transformers(output_dir, transformers_dir)
    return output_dir
