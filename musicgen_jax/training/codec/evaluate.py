"""A codec run's reconstruction of its held-out clips, at each of its bandwidths.

The held-out clips are the ones the run's own config holds out (``data.eval_*``), read whole (the
trainer evaluates fixed segments of them; a report wants the clips as a listener hears them), and
the codec is the run's checkpoint exported as the transformers directory a user would load, so the
figures are those of the shipped codec, through the JAX backend.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from musicgen_jax import config_io
from musicgen_jax.codec import load_codec
from musicgen_jax.eval.reconstruction import Clip, evaluate_reconstruction, stated_bpm
from musicgen_jax.training.codec.config import CodecTrainConfig
from musicgen_jax.training.codec.data import load_splits
from musicgen_jax.training.codec.export import export_codec_run
from musicgen_jax.training.codec.trainer import TRAIN_CONFIG_FILE, read_codec_config


def held_out_clips(run_dir: str | Path) -> list[Clip]:
    """The clips ``run_dir``'s config holds out, at the codec's rate, with their stated bpm."""
    run_dir = Path(run_dir)
    codec = read_codec_config(run_dir)
    train = config_io.from_dict(CodecTrainConfig, config_io.read_yaml(run_dir / TRAIN_CONFIG_FILE))
    _, held_out = load_splits(train.data, codec.sampling_rate, codec.audio_channels)
    return [
        Clip(name, audio, held_out.sample_rate, stated_bpm(name))
        for name, audio in zip(held_out.names, held_out.audio, strict=True)
    ]


def evaluate_codec_run(run_dir: str | Path, step: int | None = None) -> list[dict[str, Any]]:
    """One :func:`~musicgen_jax.eval.reconstruction.evaluate_reconstruction` report per bandwidth
    of the codec (smallest first), for checkpoint ``step`` (default: newest) of ``run_dir``."""
    clips = held_out_clips(run_dir)
    bandwidths = sorted(float(b) for b in read_codec_config(run_dir).target_bandwidths)
    with tempfile.TemporaryDirectory() as scratch:
        exported = export_codec_run(run_dir, Path(scratch) / "codec", step=step)
        return [
            evaluate_reconstruction(load_codec(exported, backend="jax", bandwidth=b), clips)
            for b in bandwidths
        ]
