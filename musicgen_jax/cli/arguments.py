"""The command line's arguments and their checks: everything is validated before a model loads, so
a typo costs milliseconds."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from musicgen_jax.audio.formats import DEFAULT_NORMALIZATION, FORMATS, NORMALIZATIONS
from musicgen_jax.audio.io import load_audio, resolve_format
from musicgen_jax.codec import CODEC_BACKENDS
from musicgen_jax.conditioning import Attributes
from musicgen_jax.conditioning.melody import melody_excerpt, require_audible
from musicgen_jax.dtypes import RUN_DTYPE_NAMES
from musicgen_jax.generation.params import GenerationParams
from musicgen_jax.models.int8 import QUANTIZE_CHOICES

DEFAULT_MODEL = "facebook/musicgen-small"


MELODY_KEYS = ("melody", "melody_start", "melody_end")  # per-line settings of generate-batch


class UsageError(ValueError):
    """Bad input from the command line."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"demo (the built-in model, offline), a hub id or a local directory (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--adapter",
        metavar="DIR",
        help="a PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors) to merge in",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=RUN_DTYPE_NAMES,
        help="auto: bfloat16 on GPU/TPU, float32 on CPU",
    )
    parser.add_argument(
        "--quantize",
        default=None,
        choices=QUANTIZE_CHOICES,
        help="int8: weight-only int8 decoder projections and heads (a quarter of float32's weight bytes)",
    )
    parser.add_argument("--cache-dir", default=None, help="persistent compilation cache ('' to disable)")
    # Checked by load_model (check_backend), not by choices=: a bad value is one "error:" line, exit 1.
    parser.add_argument(
        "--codec-backend",
        default="auto",
        metavar="|".join(CODEC_BACKENDS),
        help="EnCodec backend: jax (Flax), torch (transformers) or auto (jax)",
    )


def add_generation_arguments(parser: argparse.ArgumentParser, batch: bool = False) -> None:
    defaults = GenerationParams()
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds (1-120)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="0 = off")
    parser.add_argument("--top-p", type=float, default=defaults.top_p, help="in (0, 1]; 0 = off")
    parser.add_argument("--guidance-scale", type=float, default=defaults.guidance_scale)
    parser.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty)
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token")
    parser.add_argument(
        "--num-beams", type=int, default=defaults.num_beams, help="beam search width (slower)"
    )
    parser.add_argument("--extend-stride", type=float, default=defaults.extend_stride)
    parser.add_argument("--genre")
    parser.add_argument("--mood", help="one mood or a comma-separated list")
    parser.add_argument("--tempo", type=float, help="beats per minute")
    parser.add_argument("--instruments", help="comma-separated instruments")
    parser.add_argument(
        "--format", choices=FORMATS, help="audio format (default: from the output name, else wav)"
    )
    parser.add_argument("--normalization", default=DEFAULT_NORMALIZATION, choices=NORMALIZATIONS)
    parser.add_argument(
        "--melody", help="an audio file whose melody to follow (melody models: facebook/musicgen-melody, ...)"
    )
    parser.add_argument("--melody-start", type=float, default=0.0, help="seconds into --melody to start at")
    parser.add_argument(
        "--melody-end", type=float, default=None, help="seconds into --melody to end at (default: its end)"
    )
    if not batch:
        parser.add_argument("--audio-prompt", help="an audio file to continue from")


def generation_kwargs(args: argparse.Namespace, overrides: dict | None = None) -> dict:
    """Validated keyword arguments for ``MusicGen.make_requests`` (raises ValueError subclasses)."""

    values = dict(
        duration=args.duration,
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        guidance_scale=args.guidance_scale,
        repetition_penalty=args.repetition_penalty,
        greedy=args.greedy,
        num_beams=args.num_beams,
        extend_stride=args.extend_stride,
    )
    attributes = dict(genre=args.genre, mood=args.mood, tempo=args.tempo, instruments=args.instruments)
    for key, value in (overrides or {}).items():
        key = key.replace("-", "_")
        if key in values:
            values[key] = value
        elif key in attributes:
            attributes[key] = value
        elif key not in ("prompt", "output", "format", "normalization", *MELODY_KEYS):
            raise UsageError(f"unknown setting {key!r}")
    GenerationParams(**values)  # raises with the offending field named
    return dict(values, attributes=Attributes.create(**attributes))


def output_path(path: Path, requested: str | None) -> tuple[Path, str]:
    """The file that will be written and its format (a missing suffix is the format's)."""

    try:
        return resolve_format(path, requested)
    except ValueError as error:
        raise UsageError(str(error)) from None


def check_writable(path: Path) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name")
    if not directory.is_dir():
        raise UsageError(f"cannot write {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {path}: permission denied")


def read_melody(path: str | None, start: float = 0.0, end: float | None = None) -> tuple | None:
    """The ``--melody`` file's ``[start, end)`` seconds as ``(audio [channels, samples], rate)``, or
    None without one; a UsageError for a missing, unreadable or silent file or an empty range."""
    if path is None:
        if start or end is not None:
            raise UsageError("--melody-start and --melody-end need --melody FILE")
        return None
    if not Path(path).is_file():
        raise UsageError(f"no audio file at {path}")
    try:
        audio, rate = load_audio(path)
        piece = melody_excerpt(audio, rate, start, end)
        require_audible(piece, rate)
    except ValueError as error:
        raise UsageError(f"--melody {path}: {error}") from None
    return piece, rate
