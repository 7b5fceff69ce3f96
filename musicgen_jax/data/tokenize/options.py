"""What a tokenisation run is asked to do (:class:`TokenizeOptions`) and what it did
(:class:`TokenizeSummary`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from musicgen_jax.data import records
from musicgen_jax.data.augment import AugmentConfig
from musicgen_jax.data.tokenize.journal import INDEX_NAME

SUMMARY_NAME = "summary.json"
MAX_LISTED_FAILURES = 20


@dataclasses.dataclass(frozen=True)
class TokenizeOptions:
    segment_seconds: float = 30.0
    min_segment_seconds: float = 1.0  # a shorter last segment is dropped
    shard_size: int = 1024  # records per shard; a shard closes at the first file boundary past it
    split: str = "train"
    batch_size: int = 4  # segments per codec call
    # Augmented copies of every file, tokenised beside the original (musicgen_jax.data.augment):
    # each copy draws its transforms from (augment_seed, the file's path, the copy's number).
    augment: AugmentConfig | None = None
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
        lines += [f"  failed: {f['path']}: {f['error']}" for f in self.failures[:MAX_LISTED_FAILURES]]
        if len(self.failures) > MAX_LISTED_FAILURES:
            lines.append(f"  ... and {len(self.failures) - MAX_LISTED_FAILURES} more (see {INDEX_NAME})")
        return "\n".join(lines)
