"""Command lines of the two converters (``convert/*.py`` and ``musicgen-jax convert`` call these)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from musicgen_jax import config_io, hub
from musicgen_jax.config_io import ConfigError
from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion.tensors import CheckpointError
from musicgen_jax.dtypes import DTYPE_NAMES


def add_hf_to_jax_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="transformers MusicGen directory or hub id (or audiocraft LM)"
    )
    parser.add_argument("--output", required=True, help="directory to write the musicgen-jax checkpoint into")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="parameter dtype to store")
    parser.add_argument(
        "--preset",
        help="for audiocraft checkpoints, optional: a preset (small, medium, large, ...) whose shape "
        "must agree with the one the checkpoint's xp.cfg records",
    )
    parser.add_argument(
        "--text-encoder",
        help="T5 directory or hub id, for audiocraft checkpoints (default: the one xp.cfg names)",
    )
    parser.add_argument("--codec", help="EnCodec directory or hub id, for audiocraft checkpoints")
    parser.add_argument(
        "--text-padding",
        choices=("mask", "zeros_attended"),
        help="how cross-attention treats padded text: mask (transformers, the default) or "
        "zeros_attended (audiocraft); stored in the checkpoint's config",
    )


def add_jax_to_hf_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="musicgen-jax checkpoint directory (or hub id)")
    parser.add_argument("--output", required=True, help="directory to write the transformers checkpoint into")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="tensor dtype to write (default: as stored)")


def run_hf_to_jax(args: argparse.Namespace) -> Path:
    from musicgen_jax.conversion import audiocraft_format, transformers_format

    output = Path(args.output)
    if Path(args.model).is_file() and audiocraft_format.is_audiocraft_checkpoint(args.model):
        source = Path(args.model)  # state_dict.bin itself
    else:
        source = hub.resolve(args.model)
    if transformers_format.is_transformers_checkpoint(source):
        converted = transformers_format.convert_from_transformers(source, output, args.dtype)
        if args.text_padding is not None:
            config = ckpt.load_config(converted).with_text_padding(args.text_padding)
            config_io.save_yaml(config, converted / ckpt.CONFIG)
        return converted
    if audiocraft_format.is_audiocraft_checkpoint(source):
        imported = audiocraft_format.load_audiocraft(
            source, text_encoder=args.text_encoder, preset=args.preset, dtype=args.dtype
        )
        config = imported.config
        if args.text_padding is not None:
            config = config.with_text_padding(args.text_padding)
        codec_dir = hub.resolve(args.codec or config.audio.codec)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(imported.text_encoder_dir))
        return ckpt.save_checkpoint(output, config, imported.params, tokenizer=tokenizer, codec_dir=codec_dir)
    raise CheckpointError(
        f"{source} is neither a transformers MusicGen directory nor an audiocraft state_dict.bin"
    )


def run_jax_to_hf(args: argparse.Namespace) -> Path:
    from musicgen_jax.conversion.transformers_format import export_to_transformers

    return export_to_transformers(hub.resolve(args.checkpoint), Path(args.output), args.dtype)


def _main(description: str, add, run, argv) -> int:
    parser = argparse.ArgumentParser(description=description)
    add(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        output = run(args)
    except (CheckpointError, ConfigError, hub.ModelNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {output} in {time.perf_counter() - start:.1f} s")
    return 0


def hf_to_jax_main(argv: list[str] | None = None) -> int:
    return _main(
        "Convert a transformers (or audiocraft) MusicGen checkpoint to musicgen-jax.",
        add_hf_to_jax_arguments,
        run_hf_to_jax,
        argv,
    )


def jax_to_hf_main(argv: list[str] | None = None) -> int:
    return _main(
        "Convert a musicgen-jax checkpoint to a transformers MusicGen directory.",
        add_jax_to_hf_arguments,
        run_jax_to_hf,
        argv,
    )
