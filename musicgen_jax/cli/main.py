"""The ``musicgen-jax`` command: generate, generate-batch, interactive, convert.

Every argument is checked before the model loads, and every error a user can cause ends in one line
on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

from musicgen_jax import hub
from musicgen_jax.cli.arguments import UsageError, add_generation_arguments, add_model_arguments
from musicgen_jax.cli.generate import run_generate, run_generate_batch
from musicgen_jax.cli.interactive import run_interactive
from musicgen_jax.config_io import ConfigError
from musicgen_jax.conversion.cli import (
    add_hf_to_jax_arguments,
    add_jax_to_hf_arguments,
    run_hf_to_jax,
    run_jax_to_hf,
)
from musicgen_jax.conversion.tensors import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicgen-jax", description="MusicGen text-to-music in JAX.")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="make music from a text prompt")
    generate.add_argument(
        "prompt", nargs="?", default=None, help='e.g. "Upbeat jazz piano with smooth saxophone"'
    )
    generate.add_argument("--unconditional", action="store_true", help="music without a prompt")
    generate.add_argument("--output", default="output.wav", help="audio file to write")
    generate.add_argument("--codes-out", help="also save the codes [batch, codebooks, frames] as .npy")
    add_model_arguments(generate)
    add_generation_arguments(generate)

    batch = commands.add_parser("generate-batch", help="make music for every prompt in a file")
    batch.add_argument(
        "--prompts", required=True, help="text file (one prompt a line) or JSONL (per-line settings)"
    )
    batch.add_argument("--output-dir", required=True)
    batch.add_argument("--batch-size", type=int, default=8, help="prompts per device batch")
    add_model_arguments(batch)
    add_generation_arguments(batch, batch=True)

    interactive = commands.add_parser("interactive", help="a prompt loop that keeps the model loaded")
    interactive.add_argument("--output-dir", default=".")
    add_model_arguments(interactive)
    add_generation_arguments(interactive, batch=True)

    convert = commands.add_parser("convert", help="convert checkpoints to and from PyTorch")
    direction = convert.add_subparsers(dest="direction", required=True)
    add_hf_to_jax_arguments(direction.add_parser("hf-to-jax", help="transformers/audiocraft -> musicgen-jax"))
    add_jax_to_hf_arguments(direction.add_parser("jax-to-hf", help="musicgen-jax -> transformers"))
    return parser


def run_convert(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    output = run_hf_to_jax(args) if args.direction == "hf-to-jax" else run_jax_to_hf(args)
    print(f"wrote {output} in {time.perf_counter() - began:.1f} s")
    return 0


COMMANDS = {
    "generate": run_generate,
    "generate-batch": run_generate_batch,
    "interactive": run_interactive,
    "convert": run_convert,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except hub.ModelNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (UsageError, ConfigError, CheckpointError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
