"""Offline tokenisation: audio files to ArrayRecord shards of EnCodec codes with text and metadata.

    python -m musicgen_jax.data.tokenize --manifest data/synth/data.jsonl \\
        --codec facebook/encodec_32khz --output data/tokens --segment-seconds 30
    python -m musicgen_jax.data.tokenize --audio-dir music/ --codec checkpoints/musicgen-small \\
        --output data/tokens --split valid

Each file is read, resampled to the codec's rate, cut into ``--segment-seconds`` segments (a
shorter last segment is kept when it lasts ``--min-segment-seconds``), encoded by the PyTorch codec
bridge (mono or stereo as the codec's MusicGen model needs) and written as one
:class:`~musicgen_jax.data.records.TokenRecord` per segment, with the track's description and
metadata (audiocraft's sidecar ``<audio>.json``, or ``--metadata``).

Resumable: a file's records are committed with the shard that holds them, and ``index.jsonl``
lists each committed shard with the files in it (and the files that failed or were too short).
Running the same command again skips what is listed and continues with a new shard; a shard that
was being written when a run died is discarded and its files are done again. Unreadable files are
skipped with a warning and counted, not fatal. At the end, tfds metadata is (re)written so the
output is also a tfds dataset (:mod:`musicgen_jax.data.tfds_builder`) and a summary printed.
"""

from musicgen_jax.data.tokenize.cli import build_parser, main
from musicgen_jax.data.tokenize.journal import INDEX_NAME, ShardEntry, TokenizeIndex
from musicgen_jax.data.tokenize.options import SUMMARY_NAME, TokenizeOptions, TokenizeSummary
from musicgen_jax.data.tokenize.run import iter_records, tokenize_dataset
from musicgen_jax.data.tokenize.segmenter import (
    SourceError,
    augmented_metadata,
    encode_source,
    read_source,
    segment_starts,
)
from musicgen_jax.data.tokenize.settings import FORMAT_VERSION, SETTINGS_NAME, codec_settings

__all__ = [
    "FORMAT_VERSION",
    "INDEX_NAME",
    "SETTINGS_NAME",
    "SUMMARY_NAME",
    "ShardEntry",
    "SourceError",
    "TokenizeIndex",
    "TokenizeOptions",
    "TokenizeSummary",
    "augmented_metadata",
    "build_parser",
    "codec_settings",
    "encode_source",
    "iter_records",
    "main",
    "read_source",
    "segment_starts",
    "tokenize_dataset",
]
