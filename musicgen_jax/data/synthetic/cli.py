"""``python -m musicgen_jax.data.synthetic``: write a synthetic dataset from the command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from musicgen_jax.data.synthetic.dataset import write_dataset


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.data.synthetic",
        description="Write a synthetic captioned music dataset (audio, sidecar JSON, data.jsonl).",
    )
    parser.add_argument("--output", required=True, help="directory to write into")
    parser.add_argument("--num-examples", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per piece")
    parser.add_argument("--sample-rate", type=int, default=32000)
    parser.add_argument("--channels", type=int, choices=(1, 2), default=1)
    parser.add_argument("--format", choices=("wav", "flac"), default="wav")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--relative-paths",
        action="store_true",
        help="manifest paths relative to --output (default: absolute, as audiocraft)",
    )
    parser.add_argument(
        "--exclude-held-out",
        action="store_true",
        help="leave out the held-out tempi and genre+timbre pairs (musicgen_jax.data.synthetic.holdout)",
    )
    args = parser.parse_args(argv)
    if args.num_examples < 1 or args.duration <= 0:
        parser.error("--num-examples must be positive and --duration above 0")
    path = write_dataset(
        args.output,
        args.num_examples,
        duration=args.duration,
        sample_rate=args.sample_rate,
        seed=args.seed,
        channels=args.channels,
        audio_format=args.format,
        absolute_paths=not args.relative_paths,
        exclude_held_out=args.exclude_held_out,
    )
    print(f"wrote {args.num_examples} pieces of {args.duration:g} s and {path}")
    return 0
