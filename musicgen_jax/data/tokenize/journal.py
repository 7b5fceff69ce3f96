"""The resume journal of an output directory: ``index.jsonl``, append-only, one JSON object a line.

A line is a committed shard (``kind: shard``, with the files whose records it holds), a file that
failed (``kind: failed``, with the error) or one too short to give a segment (``kind: too_short``).
Every line is made durable before anything depends on it, so after a crash the journal lists
exactly the work that is done; a run skips those files and continues with a new shard.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from musicgen_jax.data import records

logger = logging.getLogger(__name__)

INDEX_NAME = "index.jsonl"


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
            if kind == "shard" and not (directory / entry["name"]).is_file():
                raise ValueError(
                    f"{path} lists shard {entry['name']}, which is missing: "
                    "restore it, or tokenise into a new --output"
                )
            index._remember(kind, entry)
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
        self._remember(kind, entry)

    def shards_by_split(self) -> dict[str, list[ShardEntry]]:
        """The committed shards of each split, in shard-index order."""
        by_split: dict[str, list[ShardEntry]] = {}
        for shard in self.shards:
            by_split.setdefault(shard.split, []).append(shard)
        for shards in by_split.values():
            shards.sort(key=lambda s: records.parse_shard_name(s.name)[1])
        return by_split

    def _remember(self, kind: str, entry: dict[str, Any]) -> None:
        if kind == "shard":
            self.shards.append(ShardEntry(**entry))
        elif kind == "failed":
            self.failed[(entry["split"], entry["path"])] = entry["error"]
        elif kind == "too_short":
            self.too_short.add((entry["split"], entry["path"]))
