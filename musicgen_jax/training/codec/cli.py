"""``python train.py codec``: train, resume, or export a codec run.

::

    python train.py codec --config configs/codec/demo.yaml output_dir=runs/codec [key=value ...] [--resume]
    python train.py codec export RUN_DIR OUTPUT_DIR [--step N]
    python train.py codec evaluate RUN_DIR --output PREFIX [--step N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from musicgen_jax.config_io import ConfigError
from musicgen_jax.conversion.tensors import CheckpointError
from musicgen_jax.data.manifest import ManifestError


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py codec",
        description="Train an EnCodec codec on audio files. Overrides are dotted keys: "
        "training.steps=2000 codec.num_filters=16 data.audio_dir=DIR. "
        "`train.py codec export --help` exports a run as a transformers EncodecModel directory.",
    )
    parser.add_argument(
        "--config", required=True, help="a codec config YAML (configs/codec/*.yaml) or its name"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in output_dir"
    )
    parser.add_argument("overrides", nargs="*", metavar="key.path=value")
    return parser


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py codec export",
        description="Export a codec run as a transformers EncodecModel directory.",
    )
    parser.add_argument("run_dir", help="the codec training run's output_dir")
    parser.add_argument("output_dir", help="where to write the EncodecModel directory")
    parser.add_argument("--step", type=int, help="checkpoint step (default: newest)")
    return parser


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py codec evaluate",
        description="Reconstruct a codec run's held-out clips at each bandwidth: mel distance, SI-SNR "
        "and tempo before and after. Writes PREFIX.json and PREFIX.md.",
    )
    parser.add_argument("run_dir", help="the codec training run's output_dir")
    parser.add_argument("--output", required=True, help="path prefix of the .json and .md reports")
    parser.add_argument("--step", type=int, help="checkpoint step (default: newest)")
    return parser


def _evaluate(argv: list[str]) -> int:
    from musicgen_jax.eval.reconstruction import render_markdown
    from musicgen_jax.training.codec.evaluate import evaluate_codec_run

    args = _evaluate_parser().parse_args(argv)
    try:
        reports = evaluate_codec_run(args.run_dir, step=args.step)
    except (FileNotFoundError, ManifestError, CheckpointError, ValueError) as error:
        print(f"train.py codec evaluate: {error}", file=sys.stderr)
        return 2
    prefix = Path(args.output)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(reports, indent=2, allow_nan=False) + "\n")
    prefix.with_suffix(".md").write_text(render_markdown(reports))
    print(render_markdown(reports).split("\n\n")[0])
    print(f"wrote {prefix.with_suffix('.json')} and {prefix.with_suffix('.md')}")
    return 0


def main(argv: list[str]) -> int:
    from musicgen_jax.training.codec.config import load_codec_train_config

    if argv and argv[0] == "evaluate":
        return _evaluate(argv[1:])
    if argv and argv[0] == "export":
        from musicgen_jax.training.codec.export import export_codec_run

        args = _export_parser().parse_args(argv[1:])
        try:
            path = export_codec_run(args.run_dir, args.output_dir, step=args.step)
        except (FileNotFoundError, FileExistsError, CheckpointError, ValueError) as error:
            print(f"train.py codec export: {error}", file=sys.stderr)
            return 2
        print(f"exported {args.run_dir} to {path}")
        return 0
    args = _train_parser().parse_args(argv)
    try:
        config = load_codec_train_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"train.py codec: {error}", file=sys.stderr)
        return 2
    from musicgen_jax.training.codec.trainer import train_codec

    try:
        result = train_codec(config, resume=args.resume)
    except (FileExistsError, ManifestError, CheckpointError, ValueError) as error:
        print(f"train.py codec: {error}", file=sys.stderr)
        return 2
    shown = {**result.metrics, **{f"eval/{k}": v for k, v in result.eval_metrics.items()}}
    summary = ", ".join(
        f"{k} {shown[k]:.4g}"
        for k in ("loss", "mel", "eval/mel", "eval/si_snr_db", "steps_per_sec")
        if k in shown
    )
    print(f"step {result.step}: {summary}; output in {result.output_dir}")
    return 0
