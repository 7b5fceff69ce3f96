"""A tokenisation run: the pending files of a split, encoded one by one into shards, each shard
committed (and journalled) once it holds ``shard_size`` records at a file boundary.

A run that dies leaves its open shard as ``*.tmp``: it is removed by the next run, whose journal
does not list that shard's files, so they are done again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from musicgen_jax.data import manifest as manifest_lib
from musicgen_jax.data import records
from musicgen_jax.data.tokenize.journal import TokenizeIndex
from musicgen_jax.data.tokenize.options import SUMMARY_NAME, TokenizeOptions, TokenizeSummary
from musicgen_jax.data.tokenize.segmenter import Partner, SourceError, encode_source, polymix_partner
from musicgen_jax.data.tokenize.settings import check_settings, codec_settings

logger = logging.getLogger(__name__)

DEFAULT_OPTIONS = TokenizeOptions()


@dataclasses.dataclass
class OpenShard:
    """The shard being written and what it holds so far (journalled when it is committed)."""

    writer: records.ShardWriter
    sources: list[str] = dataclasses.field(default_factory=list)
    frames: int = 0
    audio_seconds: float = 0.0


def tokenize_dataset(
    sources: Sequence[manifest_lib.AudioSource],
    codec: Any,
    output: str | os.PathLike,
    options: TokenizeOptions = DEFAULT_OPTIONS,
    *,
    codec_source: str = "",
    progress: bool = True,
) -> TokenizeSummary:
    """Tokenise ``sources`` into shards under ``output`` (resuming what an earlier run left).

    ``codec`` is one :func:`~musicgen_jax.codec.load_codec` returns (or anything with its ``encode``,
    ``sample_rate``, ``frame_rate`` and ``num_codebooks``).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    settings = codec_settings(codec, codec_source, options)
    check_settings(output, settings)
    for stale in output.glob(f"*.{records.FILE_FORMAT}.tmp"):
        stale.unlink()  # a shard a crashed run did not commit; its files are not in the index
    index = TokenizeIndex.load(output)
    done = index.done(options.split)
    pending = [s for s in sources if str(s.audio_path) not in done]
    summary = TokenizeSummary(sources=len(sources), already_done=len(sources) - len(pending))
    partner = functools.partial(polymix_partner, sources, codec.sample_rate)
    started = time.perf_counter()
    try:
        _tokenize_pending(pending, codec, output, options, partner, index, summary, progress)
    finally:
        summary.wall_seconds = time.perf_counter() - started

    from musicgen_jax.data import tfds_metadata  # tensorflow_datasets: imported only when needed

    tfds_metadata.write_tfds_metadata(output, settings["num_codebooks"], index.shards_by_split())
    (output / SUMMARY_NAME).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _tokenize_pending(
    pending: Sequence[manifest_lib.AudioSource],
    codec: Any,
    output: Path,
    options: TokenizeOptions,
    partner: Partner,
    index: TokenizeIndex,
    summary: TokenizeSummary,
    progress: bool,
) -> None:
    """Encode ``pending`` file by file into shards; an open shard is discarded if this is interrupted."""
    shard: OpenShard | None = None
    bar = tqdm(
        pending, desc=f"tokenising ({options.split})", unit="file", disable=not progress, dynamic_ncols=True
    )
    try:
        with logging_redirect_tqdm():
            for source in bar:
                segments = _encode_or_journal(codec, source, options, partner, index, summary)
                if not segments:
                    continue
                if shard is None:
                    name = records.shard_name(options.split, index.next_shard_index(options.split))
                    shard = OpenShard(records.ShardWriter(output / name))
                _add_file(shard, str(source.audio_path), segments, summary)
                if shard.writer.num_records >= options.shard_size:
                    _commit(shard, options.split, index, summary)
                    shard = None
                bar.set_postfix(records=summary.records, failed=summary.failed)
            if shard is not None:
                _commit(shard, options.split, index, summary)
                shard = None
    except BaseException:
        if shard is not None:
            shard.writer.abort()  # its files are not in the index: the next run redoes them
        raise
    finally:
        bar.close()


def _encode_or_journal(
    codec: Any,
    source: manifest_lib.AudioSource,
    options: TokenizeOptions,
    partner: Partner,
    index: TokenizeIndex,
    summary: TokenizeSummary,
) -> list[records.TokenRecord]:
    """The records of one file; none, journalled and counted, when it fails or is too short."""
    path = str(source.audio_path)
    try:
        segments = encode_source(codec, source, options, partner)
    except SourceError as error:
        logger.warning("skipping %s: %s", path, error)
        index.append("failed", split=options.split, path=path, error=str(error))
        summary.failed += 1
        summary.failures.append({"path": path, "error": str(error)})
        return []
    if not segments:
        index.append("too_short", split=options.split, path=path)
        summary.too_short += 1
    return segments


def _add_file(
    shard: OpenShard, path: str, segments: Sequence[records.TokenRecord], summary: TokenizeSummary
) -> None:
    """Write one file's records into the open shard and count them."""
    for record in segments:
        shard.writer.write(record)
        shard.frames += record.num_frames
        shard.audio_seconds += record.duration_seconds
        summary.frames += record.num_frames
        summary.audio_seconds += record.duration_seconds
    shard.sources.append(path)
    summary.records += len(segments)
    summary.tokenised += 1
    if not segments[0].metadata:
        summary.without_metadata += 1
        if summary.without_metadata == 1:
            logger.warning("no metadata for %s (and maybe others: see the summary)", path)


def _commit(shard: OpenShard, split: str, index: TokenizeIndex, summary: TokenizeSummary) -> None:
    """Rename the shard into place, then journal it with the files it holds."""
    path = shard.writer.commit()
    index.append(
        "shard",
        name=path.name,
        split=split,
        num_records=shard.writer.num_records,
        num_bytes=path.stat().st_size,
        sources=shard.sources,
        frames=shard.frames,
        audio_seconds=shard.audio_seconds,
    )
    summary.shards_written += 1


def iter_records(directory: str | os.PathLike, split: str = "train") -> Iterator[records.TokenRecord]:
    """Every record of one split of a tokenised directory, shard by shard."""
    for shard in records.list_shards(directory, split):
        yield from records.read_shard(shard)
