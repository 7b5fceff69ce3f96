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

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from musicgen_jax import config_io
from musicgen_jax.data import manifest as manifest_lib
from musicgen_jax.data import records
from musicgen_jax.data.metadata import MusicInfo

logger = logging.getLogger(__name__)

INDEX_NAME = "index.jsonl"
SETTINGS_NAME = "tokenize.json"
SUMMARY_NAME = "summary.json"
FORMAT_VERSION = 1


class SourceError(RuntimeError):
    """One audio file that cannot be tokenised (unreadable audio or metadata)."""


@dataclasses.dataclass(frozen=True)
class TokenizeOptions:
    segment_seconds: float = 30.0
    min_segment_seconds: float = 1.0  # a shorter last segment is dropped
    shard_size: int = 1024  # records per shard; a shard closes at the first file boundary past it
    split: str = "train"
    batch_size: int = 4  # segments per codec call
    # Augmented copies of every file, tokenised beside the original (musicgen_jax.data.augment):
    # each copy draws its transforms from (augment_seed, the file's path, the copy's number).
    augment: Any = None  # an AugmentConfig, or None
    augment_copies: int = 0
    augment_seed: int = 0

    def __post_init__(self) -> None:
        if self.augment_copies < 0 or (self.augment_copies and self.augment is None):
            raise ValueError("augment_copies must be >= 0, and needs an augment config")
        if (
            self.segment_seconds <= 0
            or self.min_segment_seconds < 0
            or self.shard_size < 1
            or self.batch_size < 1
        ):
            raise ValueError(
                "segment_seconds and shard_size/batch_size must be positive, min_segment_seconds >= 0"
            )
        if self.min_segment_seconds > self.segment_seconds:
            raise ValueError("min_segment_seconds cannot exceed segment_seconds")
        if records.parse_shard_name(records.shard_name(self.split, 0)) != (self.split, 0):
            raise ValueError(f"split {self.split!r} must be letters, digits, '_' or '-'")


@dataclasses.dataclass
class TokenizeSummary:
    sources: int = 0  # files given
    already_done: int = 0  # listed in the index by an earlier run (done, failed or too short)
    tokenised: int = 0
    failed: int = 0
    too_short: int = 0
    without_metadata: int = 0  # tokenised files with no metadata found (text and attributes empty)
    records: int = 0
    frames: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    shards_written: int = 0
    failures: list[dict[str, str]] = dataclasses.field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio tokenised per wall-clock second."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["realtime_factor"] = self.realtime_factor
        return data

    def describe(self) -> str:
        lines = [
            (
                f"files: {self.sources} given, {self.already_done} done by an earlier run, "
                f"{self.tokenised} tokenised ({self.without_metadata} without metadata), "
                f"{self.failed} failed, {self.too_short} too short"
            ),
            (
                f"records: {self.records} segments, {self.frames} frames, "
                f"{self.audio_seconds / 3600:.3f} h of audio in {self.shards_written} new shard(s)"
            ),
            f"time: {self.wall_seconds:.1f} s ({self.realtime_factor:.1f}x real time)",
        ]
        lines += [f"  failed: {f['path']}: {f['error']}" for f in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more (see {INDEX_NAME})")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- one file


def segment_starts(num_samples: int, segment_samples: int, min_samples: int) -> list[tuple[int, int]]:
    """``(start, length)`` of each segment: full segments, then the remainder if long enough."""
    spans = []
    for start in range(0, num_samples, segment_samples):
        length = min(segment_samples, num_samples - start)
        if length == segment_samples or (length >= min_samples and length > 0):
            spans.append((start, length))
    return spans


def read_source(source: manifest_lib.AudioSource, sample_rate: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Audio ``[channels, samples]`` at ``sample_rate`` and the metadata dict; SourceError if either
    cannot be read."""
    from musicgen_jax.audio.io import load_audio

    try:
        metadata = source.load_metadata()
    except manifest_lib.ManifestError as error:
        raise SourceError(str(error)) from None
    try:
        audio, _ = load_audio(source.audio_path, sample_rate=sample_rate)
    except (OSError, ValueError, RuntimeError) as error:
        raise SourceError(f"{type(error).__name__}: {error}") from None
    if audio.shape[-1] == 0:
        raise SourceError("the file holds no samples")
    if not np.isfinite(audio).all():
        raise SourceError("the audio contains NaN or infinite values")
    return audio, metadata or {}


def encode_source(
    codec: Any,
    source: manifest_lib.AudioSource,
    options: TokenizeOptions,
    partner: Callable[[np.random.Generator], tuple[np.ndarray, str]] | None = None,
) -> list[records.TokenRecord]:
    """The records of one file (empty when it is shorter than ``min_segment_seconds``), then those
    of its augmented copies; ``partner(rng)`` gives another clip and its caption for polymix."""
    rate = codec.sample_rate
    audio, metadata = read_source(source, rate)  # [channels, samples]
    description = MusicInfo.from_dict(metadata).description or ""
    out = _encode_audio(codec, audio, metadata, description, str(source.audio_path), options)
    if not out:
        return out
    from musicgen_jax.data.augment import Augmenter

    augmenter = Augmenter(options.augment)
    path_key = zlib.crc32(str(source.audio_path).encode())
    for copy in range(1, options.augment_copies + 1):
        rng = np.random.default_rng([options.augment_seed, path_key, copy])
        other = partner(rng) if partner is not None and options.augment.polymix.probability > 0 else None
        augmented, caption, applied = augmenter.apply_logged(audio, rate, description, rng, other)
        copy_metadata = augmented_metadata(metadata, caption, applied)
        out += _encode_audio(
            codec,
            augmented,
            copy_metadata,
            caption,
            f"{source.audio_path}#augment{copy}",
            options,
            first_index=len(out),
        )
    return out


def augmented_metadata(metadata: dict[str, Any], caption: str, applied: Sequence[Any]) -> dict[str, Any]:
    """The metadata of an augmented copy: the new caption, the tempo after a time stretch, no key
    after a pitch shift (a fractional shift has none), and what was done."""
    updated = dict(metadata, description=caption, augmentations=[a.name for a in applied])
    for transform in applied:
        if transform.name == "time_stretch" and updated.get("bpm") not in (None, ""):
            try:
                updated["bpm"] = round(float(updated["bpm"]) * transform.parameters["rate"], 1)
            except (TypeError, ValueError):
                updated.pop("bpm")
        if transform.name == "pitch_shift":
            updated.pop("key", None)
    return updated


def _encode_audio(
    codec: Any,
    audio: np.ndarray,
    metadata: dict[str, Any],
    description: str,
    path: str,
    options: TokenizeOptions,
    first_index: int = 0,
) -> list[records.TokenRecord]:
    rate = codec.sample_rate
    spans = segment_starts(
        audio.shape[-1], round(options.segment_seconds * rate), round(options.min_segment_seconds * rate)
    )
    out: list[records.TokenRecord] = []
    # Equal-length segments are encoded together; the short last one on its own.
    groups: list[list[tuple[int, int, int]]] = []
    for index, (start, length) in enumerate(spans):
        if groups and len(groups[-1]) < options.batch_size and groups[-1][0][2] == length:
            groups[-1].append((index, start, length))
        else:
            groups.append([(index, start, length)])
    for group in groups:
        batch = np.stack(
            [audio[:, start : start + length] for _, start, length in group]
        )  # [n, channels, samples]
        codes = codec.encode(batch, rate)  # [n, codebooks, frames]
        for (index, start, length), segment_codes in zip(group, codes):
            out.append(
                records.TokenRecord(
                    codes=segment_codes.astype(records.CODES_DTYPE),
                    text=description,
                    metadata=metadata,
                    path=path,
                    offset_seconds=start / rate,
                    segment_index=first_index + index,
                    duration_seconds=length / rate,
                    frame_rate=float(codec.frame_rate),
                    sample_rate=int(rate),
                )
            )
    return out


# ----------------------------------------------------------------------------- the index


@dataclasses.dataclass
class ShardEntry:
    name: str
    split: str
    num_records: int
    num_bytes: int
    sources: list[str]
    frames: int = 0
    audio_seconds: float = 0.0


@dataclasses.dataclass
class TokenizeIndex:
    """What earlier runs finished in an output directory (``index.jsonl``, append-only)."""

    directory: Path
    shards: list[ShardEntry] = dataclasses.field(default_factory=list)
    failed: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)  # (split, path) -> error
    too_short: set[tuple[str, str]] = dataclasses.field(default_factory=set)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TokenizeIndex:
        directory = Path(directory)
        index = cls(directory)
        path = directory / INDEX_NAME
        if not path.is_file():
            return index
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # a line cut off by a crash mid-write: the run died there
                    logger.warning("%s: ignoring a truncated last line", path)
                    continue
                raise ValueError(f"{path}:{number}: not JSON; the index is damaged") from None
            kind = entry.pop("kind")
            if kind == "shard":
                if not (directory / entry["name"]).is_file():
                    raise ValueError(
                        f"{path} lists shard {entry['name']}, which is missing: restore it, or tokenise into a new --output"
                    )
                index.shards.append(ShardEntry(**entry))
            elif kind == "failed":
                index.failed[(entry["split"], entry["path"])] = entry["error"]
            elif kind == "too_short":
                index.too_short.add((entry["split"], entry["path"]))
        return index

    def done(self, split: str) -> set[str]:
        """Paths of ``split`` that need no more work."""
        paths = {path for shard in self.shards if shard.split == split for path in shard.sources}
        paths |= {path for s, path in self.failed if s == split}
        paths |= {path for s, path in self.too_short if s == split}
        return paths

    def next_shard_index(self, split: str) -> int:
        return sum(1 for shard in self.shards if shard.split == split)

    def append(self, kind: str, **entry: Any) -> None:
        """Add one line and make it durable before anything depends on it."""
        with open(self.directory / INDEX_NAME, "a", encoding="utf-8") as out:
            out.write(json.dumps({"kind": kind, **entry}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        if kind == "shard":
            self.shards.append(ShardEntry(**entry))
        elif kind == "failed":
            self.failed[(entry["split"], entry["path"])] = entry["error"]
        elif kind == "too_short":
            self.too_short.add((entry["split"], entry["path"]))


def codec_settings(codec: Any, codec_source: str, options: TokenizeOptions) -> dict[str, Any]:
    """What must stay the same across the runs that fill one output directory."""
    return {
        "format_version": FORMAT_VERSION,
        "codec": codec_source,
        "sample_rate": int(codec.sample_rate),
        "frame_rate": float(codec.frame_rate),
        "num_codebooks": int(getattr(codec, "total_codebooks", codec.num_codebooks)),
        "audio_channels": int(getattr(codec, "audio_channels", 1)),
        "segment_seconds": options.segment_seconds,
        "min_segment_seconds": options.min_segment_seconds,
        **(
            {
                "augment": config_io.to_dict(options.augment),
                "augment_copies": options.augment_copies,
                "augment_seed": options.augment_seed,
            }
            if options.augment_copies
            else {}
        ),
    }


def _check_settings(output: Path, settings: dict[str, Any]) -> None:
    path = output / SETTINGS_NAME
    if path.is_file():
        previous = json.loads(path.read_text())
        # The codec may be named differently (a hub id, then its local copy); its facts may not change.
        differing = {k for k in settings if k != "codec" and previous.get(k) != settings[k]}
        if differing:
            details = ", ".join(f"{k}: {previous.get(k)!r} then {settings[k]!r}" for k in sorted(differing))
            raise ValueError(f"{output} was tokenised with other settings ({details}); use a new --output")
    else:
        path.write_text(json.dumps(settings, indent=2) + "\n")


# ----------------------------------------------------------------------------- the run


def tokenize_dataset(
    sources: Sequence[manifest_lib.AudioSource],
    codec: Any,
    output: str | os.PathLike,
    options: TokenizeOptions = TokenizeOptions(),
    *,
    codec_source: str = "",
    progress: bool = True,
) -> TokenizeSummary:
    """Tokenise ``sources`` into shards under ``output`` (resuming what an earlier run left).

    ``codec`` is an :class:`~musicgen_jax.codec.EncodecBridge` (or anything with its ``encode``,
    ``sample_rate``, ``frame_rate`` and ``num_codebooks``).
    """
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    settings = codec_settings(codec, codec_source, options)
    _check_settings(output, settings)
    for stale in output.glob(f"*.{records.FILE_FORMAT}.tmp"):
        stale.unlink()  # a shard a crashed run did not commit; its files are not in the index
    index = TokenizeIndex.load(output)
    done = index.done(options.split)
    summary = TokenizeSummary(sources=len(sources))
    pending = [s for s in sources if str(s.audio_path) not in done]
    summary.already_done = len(sources) - len(pending)
    started = time.perf_counter()

    writer: records.ShardWriter | None = None
    shard_sources: list[str] = []
    shard_frames, shard_seconds = 0, 0.0

    def commit() -> None:
        nonlocal writer, shard_sources, shard_frames, shard_seconds
        if writer is None:
            return
        path = writer.commit()
        index.append(
            "shard",
            name=path.name,
            split=options.split,
            num_records=writer.num_records,
            num_bytes=path.stat().st_size,
            sources=shard_sources,
            frames=shard_frames,
            audio_seconds=shard_seconds,
        )
        summary.shards_written += 1
        writer, shard_sources, shard_frames, shard_seconds = None, [], 0, 0.0

    def partner(rng: np.random.Generator) -> tuple[np.ndarray, str] | None:
        """Another clip for polymix, drawn from all sources (None if it cannot be read)."""
        other = sources[int(rng.integers(len(sources)))]
        try:
            audio, metadata = read_source(other, codec.sample_rate)
        except SourceError:
            return None
        return audio, MusicInfo.from_dict(metadata).description or ""

    bar = tqdm(
        pending, desc=f"tokenising ({options.split})", unit="file", disable=not progress, dynamic_ncols=True
    )
    try:
        with logging_redirect_tqdm():
            for source in bar:
                path = str(source.audio_path)
                try:
                    segments = encode_source(codec, source, options, partner)
                except SourceError as error:
                    logger.warning("skipping %s: %s", path, error)
                    index.append("failed", split=options.split, path=path, error=str(error))
                    summary.failed += 1
                    summary.failures.append({"path": path, "error": str(error)})
                    continue
                if not segments:
                    index.append("too_short", split=options.split, path=path)
                    summary.too_short += 1
                    continue
                if writer is None:
                    name = records.shard_name(options.split, index.next_shard_index(options.split))
                    writer = records.ShardWriter(output / name)
                for record in segments:
                    writer.write(record)
                    shard_frames += record.num_frames
                    shard_seconds += record.duration_seconds
                    summary.frames += record.num_frames
                    summary.audio_seconds += record.duration_seconds
                summary.records += len(segments)
                summary.tokenised += 1
                if not segments[0].metadata:
                    summary.without_metadata += 1
                    if summary.without_metadata == 1:
                        logger.warning("no metadata for %s (and maybe others: see the summary)", path)
                shard_sources.append(path)
                if writer.num_records >= options.shard_size:
                    commit()
                bar.set_postfix(records=summary.records, failed=summary.failed)
            commit()
    except BaseException:
        if writer is not None:
            writer.abort()  # its files are not in the index: the next run redoes them
        raise
    finally:
        bar.close()
        summary.wall_seconds = time.perf_counter() - started

    from musicgen_jax.data import tfds_builder

    tfds_builder.write_tfds_metadata(output, settings["num_codebooks"], _shards_by_split(index))
    (output / SUMMARY_NAME).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _shards_by_split(index: TokenizeIndex) -> dict[str, list[ShardEntry]]:
    by_split: dict[str, list[ShardEntry]] = {}
    for shard in index.shards:
        by_split.setdefault(shard.split, []).append(shard)
    for shards in by_split.values():
        shards.sort(key=lambda s: records.parse_shard_name(s.name)[1])
    return by_split


def iter_records(directory: str | os.PathLike, split: str = "train") -> Iterator[records.TokenRecord]:
    """Every record of one split of a tokenised directory, shard by shard."""
    for shard in records.list_shards(directory, split):
        yield from records.read_shard(shard)


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.data.tokenize",
        description="Tokenise audio with EnCodec into ArrayRecord shards (resumable).",
    )
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--audio-dir", help="a folder of audio files, each with a <name>.json beside it")
    inputs.add_argument("--manifest", help="audiocraft's data.jsonl(.gz), or a folder holding it")
    parser.add_argument(
        "--metadata",
        help="where metadata is instead of beside the audio: a folder of <name>.json (mirroring the audio "
        "folder) or a JSONL file of objects with a 'path' key",
    )
    parser.add_argument(
        "--codec",
        required=True,
        help="an EncodecModel or MusicGen directory, a musicgen-jax checkpoint, or a hub id (facebook/encodec_32khz)",
    )
    parser.add_argument("--output", required=True, help="directory for the shards (reused to resume)")
    parser.add_argument("--segment-seconds", type=float, default=30.0)
    parser.add_argument("--min-segment-seconds", type=float, default=1.0, help="drop a shorter last segment")
    parser.add_argument("--shard-size", type=int, default=1024, help="records per shard")
    parser.add_argument("--split", default="train", help="split name of the shards (train, valid, ...)")
    parser.add_argument("--batch-size", type=int, default=4, help="segments per codec call")
    parser.add_argument(
        "--audio-channels",
        type=int,
        choices=(1, 2),
        help="1 mono, 2 stereo (default: the codec source's model)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for the codec (cpu, cuda)")
    parser.add_argument(
        "--extensions", default=",".join(manifest_lib.AUDIO_EXTENSIONS), help="audio suffixes for --audio-dir"
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        augment = None
        if args.augment:
            from musicgen_jax.data.augment import AugmentConfig

            data = config_io.read_yaml(args.augment)
            augment = config_io.from_dict(AugmentConfig, data.get("augment", data))
        options = TokenizeOptions(
            segment_seconds=args.segment_seconds,
            min_segment_seconds=args.min_segment_seconds,
            shard_size=args.shard_size,
            split=args.split,
            batch_size=args.batch_size,
            augment=augment,
            augment_copies=args.augment_copies if augment is not None else 0,
            augment_seed=args.augment_seed,
        )
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
    from musicgen_jax.codec import EncodecBridge

    try:
        codec = EncodecBridge.from_pretrained(
            args.codec, audio_channels=args.audio_channels, device=args.device
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


if __name__ == "__main__":
    sys.exit(main())
