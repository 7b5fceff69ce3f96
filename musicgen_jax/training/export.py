"""A training checkpoint to the inference checkpoint format (and from there to transformers).

Reads only the ``params`` item of the orbax checkpoint (no optimizer state), joins trainable and
frozen parameters (or the EMA of the trainable ones), and writes
:func:`~musicgen_jax.conversion.checkpoint.save_checkpoint`'s directory with the tokenizer, codec
and generation defaults the run carried from its source.

A LoRA run's checkpoints hold the adapters alone: export makes the base again from the run's
source (``model.init_from``, or the preset's seeded init) and writes either the merged weights
(``base + (alpha / rank) * a @ b``, as training ran them) or, with ``adapter_only``, the adapters in
PEFT's format (:mod:`musicgen_jax.conversion.peft_format`).
"""

from __future__ import annotations

import json
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from musicgen_jax import config_io
from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion import peft_format
from musicgen_jax.dtypes import numpy_dtype
from musicgen_jax.models import lora as lora_lib
from musicgen_jax.models import quantization
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.training.checkpointing import Checkpointer
from musicgen_jax.training.config import TrainConfig
from musicgen_jax.training.model_source import load_model_source
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
    adapter_only: bool = False,
) -> Path:
    """Write the inference checkpoint of ``run_dir``'s checkpoint at ``step`` (default: newest), or
    with ``adapter_only`` (LoRA runs) the adapters as a PEFT directory."""
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
    lora = train_config.lora
    if adapter_only and transformers_dir is not None:
        raise ValueError("adapter_only writes the adapters alone: it makes no transformers directory")
    if adapter_only and not lora.enabled:
        raise ValueError(f"{run_dir} was not trained with LoRA (lora.enabled): it has no adapters")
    checkpointer = Checkpointer(run_dir, train_config.checkpoint, read_only=True)
    if lora.enabled:
        spec = lora.spec()
        adapters = lora_lib.adapter_shapes(shapes, spec)
        adapters = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), adapters)
        abstract = {"params": adapters, "ema_params": adapters if has_ema else None}
        restored = checkpointer.restore_params(abstract, step)
        chosen = jax.tree.map(np.asarray, restored["ema_params"] if use_ema else restored["params"])
        if adapter_only:
            return peft_format.save_peft_adapter(
                output_dir, model_config, chosen, spec, base_model=train_config.model.init_from, dtype=dtype
            )
        base = lora_base_params(train_config, model_config)
        params = lora_lib.apply_adapters(base, chosen, spec)
    else:
        trainable, frozen = split_params(shapes, frozen_keys(train_config.model))
        abstract = {
            "params": trainable,
            "frozen_params": frozen,
            "ema_params": trainable if has_ema else None,
        }
        restored = checkpointer.restore_params(abstract, step)
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


def lora_base_params(train_config: TrainConfig, model_config: MusicGenConfig) -> dict:
    """The frozen base of a LoRA run as host arrays in ``lora.base_dtype``: its source's weights, or
    the preset's random init from the run's seed (with a pretrained text encoder's weights), as the
    trainer made them; with ``lora.quantize``, quantised and dequantised as the train step saw it."""
    source = load_model_source(train_config.model)
    if source.params is not None:
        params = source.params
    else:
        model = build_model(model_config, train_config.model)
        init = jax.jit(lambda rng: nn.unbox(model.init(rng, *init_inputs(model_config))["params"]))
        params = jax.tree.map(np.asarray, init(jax.random.key(train_config.training.seed)))
        params.update(source.overrides)
    target = numpy_dtype(train_config.lora.base_dtype)

    def cast(leaf):
        leaf = np.asarray(leaf)
        return leaf.astype(target) if np.issubdtype(leaf.dtype, np.floating) else leaf

    params = jax.tree.map(cast, params)
    kind = train_config.lora.quantize
    if kind != "none":  # QLoRA trained on the dequantised base: merge into the same weights
        params = jax.device_get(
            jax.jit(lambda p: quantization.dequantize_base(quantization.quantize_base(p, kind)))(params)
        )
        params = jax.tree.map(np.asarray, params)
    return params
