"""``python -m musicgen_jax.data.tokenize``: parse the arguments, find the files, load the codec, run."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from musicgen_jax import config_io
from musicgen_jax.audio.formats import AUDIO_SUFFIXES
from musicgen_jax.codec import CODEC_BACKENDS, check_backend, load_codec
from musicgen_jax.data import manifest as manifest_lib
from musicgen_jax.data.augment import AugmentConfig
from musicgen_jax.data.hf_datasets import find_dataset_sources
from musicgen_jax.data.tokenize.options import TokenizeOptions
from musicgen_jax.data.tokenize.run import tokenize_dataset

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.data.tokenize",
        description="Tokenise audio (files, a manifest or a Hugging Face dataset) with EnCodec into "
        "ArrayRecord shards (resumable).",
    )
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--audio-dir", help="a folder of audio files, each with a <name>.json beside it")
    inputs.add_argument("--manifest", help="audiocraft's data.jsonl(.gz), or a folder holding it")
    inputs.add_argument(
        "--hf-dataset",
        metavar="PATH_OR_NAME",
        help="a Hugging Face datasets dataset: a save_to_disk directory, parquet file(s) or a name for "
        "datasets.load_dataset, with an audio column and text or metadata columns",
    )
    parser.add_argument("--audio-column", default="audio", help="with --hf-dataset: the audio column")
    parser.add_argument(
        "--text-column",
        default="text",
        help="with --hf-dataset: the caption column ('' for none; columns named like audiocraft's "
        "metadata fields, genre, moods, bpm, key, instrument, ..., are read as metadata)",
    )
    parser.add_argument(
        "--dataset-split",
        help="with --hf-dataset: the dataset's split to read (default: --split, e.g. validation for valid)",
    )
    parser.add_argument(
        "--metadata",
        help="where metadata is instead of beside the audio: a folder of <name>.json (mirroring the audio "
        "folder) or a JSONL file of objects with a 'path' key",
    )
    parser.add_argument(
        "--codec",
        required=True,
        help="an EncodecModel or MusicGen directory, a musicgen-jax checkpoint, "
        "or a hub id (facebook/encodec_32khz)",
    )
    parser.add_argument("--output", required=True, help="directory for the shards (reused to resume)")
    parser.add_argument("--segment-seconds", type=float, default=30.0)
    parser.add_argument("--min-segment-seconds", type=float, default=1.0, help="drop a shorter last segment")
    parser.add_argument("--shard-size", type=int, default=1024, help="records per shard")
    parser.add_argument("--split", default="train", help="split name of the shards (train, valid, ...)")
    parser.add_argument("--batch-size", type=int, default=4, help="segments per codec call")
    parser.add_argument(
        "--bandwidth",
        type=float,
        help="codec bandwidth in kbps, one of its target_bandwidths (default: the codec's smallest)",
    )
    parser.add_argument(
        "--audio-channels",
        type=int,
        choices=(1, 2),
        help="1 mono, 2 stereo (default: the codec source's model)",
    )
    parser.add_argument(
        "--codec-backend",
        default="auto",
        metavar="|".join(CODEC_BACKENDS),
        help="EnCodec backend: jax (Flax), torch (transformers) or auto (jax)",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device for the codec with the torch backend (cpu, cuda)"
    )
    parser.add_argument(
        "--extensions", default=",".join(AUDIO_SUFFIXES), help="audio suffixes for --audio-dir"
    )
    parser.add_argument(
        "--augment",
        help="a YAML AugmentConfig (musicgen_jax.data.augment), optionally under an 'augment:' key",
    )
    parser.add_argument(
        "--augment-copies", type=int, default=1, help="augmented copies per file (with --augment)"
    )
    parser.add_argument("--augment-seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def options_from_args(args: argparse.Namespace) -> TokenizeOptions:
    """The run's options; ValueError (or ConfigError, one) for a bad value or augment file."""
    augment = None
    if args.augment:
        data = config_io.read_yaml(args.augment)
        augment = config_io.from_dict(AugmentConfig, data.get("augment", data))
    return TokenizeOptions(
        segment_seconds=args.segment_seconds,
        min_segment_seconds=args.min_segment_seconds,
        shard_size=args.shard_size,
        split=args.split,
        batch_size=args.batch_size,
        augment=augment,
        augment_copies=args.augment_copies if augment is not None else 0,
        augment_seed=args.augment_seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_backend(args.codec_backend)
        options = options_from_args(args)
        if args.hf_dataset is not None:
            if args.metadata:
                raise ValueError("--metadata is for audio files; a dataset's metadata is its columns")
            sources = find_dataset_sources(
                args.hf_dataset,
                split=args.dataset_split or args.split,
                audio_column=args.audio_column,
                text_column=args.text_column or None,
            )
        else:
            sources = manifest_lib.find_sources(
                audio_dir=args.audio_dir,
                manifest=args.manifest,
                metadata=args.metadata,
                extensions=[e.strip() for e in args.extensions.split(",") if e.strip()],
            )
    except (ValueError, manifest_lib.ManifestError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not sources:
        print("error: no audio files found", file=sys.stderr)
        return 2
    try:
        codec = load_codec(
            args.codec,
            audio_channels=args.audio_channels,
            backend=args.codec_backend,
            device=args.device,
            bandwidth=args.bandwidth,
        )
    except (OSError, ValueError) as error:  # CheckpointError and ModelNotFoundError among them
        print(f"error: cannot load the codec {args.codec!r}: {error}", file=sys.stderr)
        return 2
    logger.info("codec: %r", codec)
    try:
        summary = tokenize_dataset(
            sources, codec, args.output, options, codec_source=str(args.codec), progress=not args.no_progress
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 0
