"""A codec training run's checkpoint -> a transformers ``EncodecModel`` directory (``config.json`` and
``model.safetensors``), which transformers, the PyTorch bridge and :class:`~musicgen_jax.codec.JaxEncodec`
all load. The codebooks go with their EMA statistics (``cluster_size``, ``embed_avg``), as audiocraft
and transformers keep them, so a later fine-tuning run can continue them."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from musicgen_jax import config_io
from musicgen_jax.codec.flax_export import save_pretrained
from musicgen_jax.training.checkpointing import Checkpointer
from musicgen_jax.training.codec import quantizer as quantizer_lib
from musicgen_jax.training.codec.config import CodecTrainConfig
from musicgen_jax.training.codec.params import fold, init_generator
from musicgen_jax.training.codec.trainer import TRAIN_CONFIG_FILE, read_codec_config


def export_codec_run(run_dir: str | Path, output_dir: str | Path, step: int | None = None) -> Path:
    """Write the codec of ``run_dir``'s checkpoint ``step`` (default: newest) to ``output_dir``."""
    run_dir = Path(run_dir)
    codec = read_codec_config(run_dir)
    train = config_io.from_dict(CodecTrainConfig, config_io.read_yaml(run_dir / TRAIN_CONFIG_FILE))
    params = jax.eval_shape(lambda: init_generator(codec, jax.random.key(0)))
    codebooks = jax.ShapeDtypeStruct(
        (codec.num_quantizers, codec.codebook_size, codec.codebook_dim), np.float32
    )
    quantizer = jax.eval_shape(quantizer_lib.QuantizerState.create, codebooks)
    disc = None
    if train.discriminator.enabled:
        # Restored only because the item holds it; the export leaves it out.
        from musicgen_jax.training.codec.step import CodecModules

        modules = CodecModules.create(codec, train)
        audio = jax.ShapeDtypeStruct((1, codec.audio_channels, codec.sampling_rate), np.float32)
        disc = jax.eval_shape(lambda a: modules.discriminator.init(jax.random.key(0), a)["params"], audio)
    checkpointer = Checkpointer(run_dir, read_only=True)
    try:
        restored = checkpointer.restore_params(
            {"params": params, "quantizer": quantizer, "disc_params": disc}, step=step
        )
    finally:
        checkpointer.close()
    state = restored["quantizer"]
    inference = {**fold(restored["params"]), "quantizer": {"codebooks": state.codebooks}}
    statistics = {"cluster_size": np.asarray(state.cluster_size), "embed_avg": np.asarray(state.embed_sum)}
    return save_pretrained(codec, jax.device_get(inference), output_dir, codebook_statistics=statistics)
