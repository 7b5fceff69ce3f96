"""``python train.py``: train, resume, or export a run.

::

    python train.py --config configs/train/tiny.yaml output_dir=runs/tiny [key.path=value ...] [--resume]
    python train.py export RUN_DIR OUTPUT_DIR [--step N] [--ema] [--dtype bfloat16] [--transformers DIR]
                                              [--adapter-only]
    python train.py codec --config configs/codec/demo.yaml output_dir=runs/codec  (see training/codec/cli.py)
"""

from __future__ import annotations

import argparse
import logging
import sys

from musicgen_jax.config_io import ConfigError
from musicgen_jax.dtypes import DTYPE_NAMES
from musicgen_jax.training.config import load_train_config
from musicgen_jax.training.export import export_run
from musicgen_jax.training.trainer import train


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train or fine-tune MusicGen. Overrides are dotted keys: training.batch_size=32 "
        "model.decoder.hidden_size=1024 mesh.fsdp=-1. `train.py export --help` exports a run; "
        "`train.py codec --help` trains a codec.",
    )
    parser.add_argument(
        "--config", required=True, help="a train config YAML (configs/train/*.yaml) or its name"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in output_dir"
    )
    parser.add_argument("overrides", nargs="*", metavar="key.path=value")
    return parser


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py export", description="Export a run's checkpoint for inference."
    )
    parser.add_argument("run_dir", help="the training run's output_dir")
    parser.add_argument("output_dir", help="where to write the musicgen-jax inference checkpoint")
    parser.add_argument("--step", type=int, help="checkpoint step (default: newest)")
    parser.add_argument("--ema", action="store_true", help="export the moving average of the weights")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="parameter dtype to store")
    parser.add_argument(
        "--transformers", metavar="DIR", help="also write a transformers MusicGen directory here"
    )
    parser.add_argument(
        "--adapter-only",
        action="store_true",
        help="LoRA runs: write the adapters alone, in PEFT's format (adapter_config.json, "
        "adapter_model.safetensors), instead of the merged weights",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it writes at INFO
    if argv and argv[0] == "codec":
        from musicgen_jax.training.codec.cli import main as codec_main

        return codec_main(argv[1:])
    if argv and argv[0] == "export":
        args = _export_parser().parse_args(argv[1:])
        path = export_run(
            args.run_dir,
            args.output_dir,
            step=args.step,
            use_ema=args.ema,
            dtype=args.dtype,
            transformers_dir=args.transformers,
            adapter_only=args.adapter_only,
        )
        print(
            f"exported {args.run_dir} to {path}" + (f" and {args.transformers}" if args.transformers else "")
        )
        return 0
    args = _train_parser().parse_args(argv)
    try:
        config = load_train_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"train.py: {error}", file=sys.stderr)
        return 2
    try:
        result = train(config, resume=args.resume)
    except FileExistsError as error:
        print(f"train.py: {error}", file=sys.stderr)
        return 2
    summary = ", ".join(
        f"{k} {result.metrics[k]:.4g}" for k in ("loss", "accuracy", "steps_per_sec") if k in result.metrics
    )
    print(f"step {result.step}: {summary}; output in {result.output_dir}")
    return 0
