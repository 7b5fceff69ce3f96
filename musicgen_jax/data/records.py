"""The tokenised record format: one codec segment with its text and metadata per ArrayRecord record.

A record is a serialised ``tf.train.Example`` whose features are :func:`record_features` (a
``tfds.features.FeaturesDict``), so the same shard files are read by the grain pipeline
(:func:`decode_record`, protobuf only) and by ``tfds`` (``builder_from_directory(...).as_data_source``,
see :mod:`musicgen_jax.data.tfds_builder`). Neither path needs TensorFlow.

Features:

* ``codes``: int16 ``[codebooks, frames]``, plain codec frames (no delay pattern), stored as raw
  little-endian bytes (``tfds.features.Tensor(..., encoding="bytes")``);
* ``num_codebooks``, ``frame_rate``, ``sample_rate``: the codec's facts, so a record describes itself;
* ``text``: the track's description; ``metadata``: its sidecar JSON as read (``"{}"`` when none);
* ``path``: the source audio file; ``offset_seconds``: where the segment starts in it;
  ``segment_index``: its index within the file; ``duration_seconds``: the audio the codes cover.

Shards are ``{split}-{index:05d}.array_record`` (tfds' ``{SPLIT}-{SHARD_INDEX}.{FILEFORMAT}``
template), written under a temporary name and renamed when complete, so a shard that exists is whole.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CODES_DTYPE = np.int16  # EnCodec codebooks have 1024 or 2048 entries
FILE_FORMAT = "array_record"
SHARD_TEMPLATE = "{SPLIT}-{SHARD_INDEX}.{FILEFORMAT}"  # tfds' name for the file template
WRITER_OPTIONS = "group_size:1"  # one record per chunk: cheap random access for grain
_SHARD_PATTERN = re.compile(r"^(?P<split>[\w-]+?)-(?P<index>\d{5,})\.array_record$")


@dataclasses.dataclass(frozen=True)
class TokenRecord:
    """One tokenised segment."""

    codes: np.ndarray  # int16 [codebooks, frames]
    text: str
    metadata: dict[str, Any]
    path: str
    offset_seconds: float
    segment_index: int
    duration_seconds: float
    frame_rate: float
    sample_rate: int

    @property
    def num_codebooks(self) -> int:
        return int(self.codes.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[1])


@functools.lru_cache(maxsize=8)
def record_features(num_codebooks: int):
    """The ``tfds.features.FeaturesDict`` of a record with ``num_codebooks`` codebooks."""
    import tensorflow_datasets as tfds

    features = tfds.features
    return features.FeaturesDict(
        {
            "codes": features.Tensor(
                shape=(num_codebooks, None),
                dtype=CODES_DTYPE,
                encoding=features.Encoding.BYTES,
                doc="codec frames [codebooks, frames], no delay pattern",
            ),
            "num_codebooks": features.Scalar(dtype=np.int64),
            "text": features.Text(doc="the track's description"),
            "metadata": features.Text(doc="the track's metadata JSON (audiocraft sidecar fields)"),
            "path": features.Text(doc="source audio file"),
            "offset_seconds": features.Scalar(dtype=np.float32, doc="segment start in the source"),
            "segment_index": features.Scalar(dtype=np.int64),
            "duration_seconds": features.Scalar(dtype=np.float32, doc="audio seconds the codes cover"),
            "frame_rate": features.Scalar(dtype=np.float32, doc="codec frames per second"),
            "sample_rate": features.Scalar(dtype=np.int64, doc="codec sample rate"),
        }
    )


def feature_values(record: TokenRecord) -> dict[str, Any]:
    """``record`` as the values of :func:`record_features` (what a tfds builder yields)."""
    codes = np.asarray(record.codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [codebooks, frames], got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() > np.iinfo(CODES_DTYPE).max):
        raise ValueError(f"codes must lie in [0, {np.iinfo(CODES_DTYPE).max}] to be stored as int16")
    return {
        "codes": codes.astype(CODES_DTYPE),
        "num_codebooks": codes.shape[0],
        "text": record.text,
        "metadata": json.dumps(record.metadata, ensure_ascii=False),
        "path": record.path,
        "offset_seconds": record.offset_seconds,
        "segment_index": record.segment_index,
        "duration_seconds": record.duration_seconds,
        "frame_rate": record.frame_rate,
        "sample_rate": record.sample_rate,
    }


def encode_record(record: TokenRecord) -> bytes:
    """``record`` as serialised ``tf.train.Example`` bytes."""
    values = feature_values(record)
    return record_features(values["num_codebooks"]).serialize_example(values)


def decode_record(data: bytes) -> TokenRecord:
    """Parse what :func:`encode_record` wrote (protobuf only: fast enough for a data loader)."""
    from tensorflow_datasets.proto import tf_example_pb2

    feature = tf_example_pb2.Example.FromString(data).features.feature

    def text(name: str) -> str:
        return feature[name].bytes_list.value[0].decode("utf-8")

    num_codebooks = int(feature["num_codebooks"].int64_list.value[0])
    codes = np.frombuffer(feature["codes"].bytes_list.value[0], dtype="<i2").reshape(num_codebooks, -1)
    return TokenRecord(
        codes=codes,
        text=text("text"),
        metadata=json.loads(text("metadata")),
        path=text("path"),
        offset_seconds=float(feature["offset_seconds"].float_list.value[0]),
        segment_index=int(feature["segment_index"].int64_list.value[0]),
        duration_seconds=float(feature["duration_seconds"].float_list.value[0]),
        frame_rate=float(feature["frame_rate"].float_list.value[0]),
        sample_rate=int(feature["sample_rate"].int64_list.value[0]),
    )


# ----------------------------------------------------------------------------- shards


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.{FILE_FORMAT}"


def parse_shard_name(name: str) -> tuple[str, int] | None:
    """``(split, index)`` of a shard file name, or None for any other file."""
    match = _SHARD_PATTERN.match(name)
    return (match["split"], int(match["index"])) if match else None


def list_shards(directory: str | os.PathLike, split: str | None = None) -> list[Path]:
    """The complete shards of ``directory`` (of one split, or all), in index order."""
    found = []
    for path in Path(directory).iterdir():
        parsed = parse_shard_name(path.name)
        if parsed is not None and (split is None or parsed[0] == split):
            found.append((parsed, path))
    return [path for _, path in sorted(found)]


class ShardWriter:
    """Writes one shard: to ``<name>.tmp`` first, renamed to ``<name>`` by :meth:`commit`."""

    def __init__(self, path: str | os.PathLike):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.path = Path(path)
        self.temporary = self.path.with_name(self.path.name + ".tmp")
        self._writer = ArrayRecordWriter(str(self.temporary), WRITER_OPTIONS)
        self.num_records = 0

    def write(self, record: TokenRecord | bytes) -> None:
        self._writer.write(record if isinstance(record, bytes) else encode_record(record))
        self.num_records += 1

    def commit(self) -> Path:
        """Close the file and give it its final name (atomic on one file system)."""
        self._writer.close()
        os.replace(self.temporary, self.path)
        return self.path

    def abort(self) -> None:
        self._writer.close()
        self.temporary.unlink(missing_ok=True)


def read_shard(path: str | os.PathLike) -> Iterator[TokenRecord]:
    """Every record of one shard, in order."""
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(path))
    try:
        for index in range(reader.num_records()):
            yield decode_record(reader.read([index])[0])
    finally:
        reader.close()


def count_records(path: str | os.PathLike) -> int:
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(path))
    try:
        return int(reader.num_records())
    finally:
        reader.close()
