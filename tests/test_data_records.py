"""The record format and its shards: round trips, tfds' own decoding agreeing with ours, atomic
shard commits, and finding shards by directory, file, glob or tfds name."""

from __future__ import annotations

import numpy as np
import pytest

from musicgen_jax.data import records
from musicgen_jax.data.pipeline import resolve_shards


def make_record(seed: int, frames: int = 7, codebooks: int = 4) -> records.TokenRecord:
    rng = np.random.default_rng(seed)
    return records.TokenRecord(
        codes=rng.integers(0, 2048, size=(codebooks, frames)).astype(np.int16),
        text=f"piece {seed} — with ünïcode",
        metadata={"genre": "jazz", "moods": ["calm"], "bpm": 90 + seed},
        path=f"/music/{seed}.wav",
        offset_seconds=30.0 * seed,
        segment_index=seed,
        duration_seconds=frames / 50,
        frame_rate=50.0,
        sample_rate=32000,
    )


def assert_same(a: records.TokenRecord, b: records.TokenRecord) -> None:
    np.testing.assert_array_equal(a.codes, b.codes)
    assert (a.text, a.metadata, a.path, a.segment_index, a.sample_rate) == (
        b.text,
        b.metadata,
        b.path,
        b.segment_index,
        b.sample_rate,
    )
    assert a.offset_seconds == pytest.approx(b.offset_seconds) and a.frame_rate == b.frame_rate
    assert a.duration_seconds == pytest.approx(b.duration_seconds)


def test_round_trip_and_tfds_decodes_the_same_bytes():
    record = make_record(3, frames=11, codebooks=8)
    data = records.encode_record(record)
    decoded = records.decode_record(data)
    assert_same(decoded, record)
    assert decoded.codes.shape == (8, 11) and decoded.num_frames == 11
    by_tfds = records.record_features(8).deserialize_example_np(data)
    np.testing.assert_array_equal(by_tfds["codes"], record.codes)
    assert by_tfds["text"].decode() == record.text and by_tfds["segment_index"] == 3


def test_codes_outside_int16_are_refused():
    record = make_record(0)
    with pytest.raises(ValueError, match="int16"):
        records.encode_record(records.TokenRecord(**{**record.__dict__, "codes": np.full((4, 2), 40000)}))
    with pytest.raises(ValueError, match="codebooks, frames"):
        records.encode_record(records.TokenRecord(**{**record.__dict__, "codes": np.zeros(5, np.int16)}))


def test_shards_appear_only_when_committed(tmp_path):
    writer = records.ShardWriter(tmp_path / records.shard_name("train", 0))
    for seed in range(3):
        writer.write(make_record(seed))
    assert records.list_shards(tmp_path) == []  # still a .tmp file
    writer.commit()
    aborted = records.ShardWriter(tmp_path / records.shard_name("train", 1))
    aborted.write(make_record(9))
    aborted.abort()
    assert [p.name for p in records.list_shards(tmp_path)] == ["train-00000.array_record"]
    assert list(tmp_path.iterdir()) == [tmp_path / "train-00000.array_record"]
    read = list(records.read_shard(tmp_path / "train-00000.array_record"))
    assert len(read) == 3 == records.count_records(tmp_path / "train-00000.array_record")
    for seed, record in enumerate(read):
        assert_same(record, make_record(seed))


def test_resolve_shards_by_directory_file_glob_and_tfds_names(tmp_path):
    for split, index in (("train", 1), ("train", 0), ("valid", 0)):
        writer = records.ShardWriter(tmp_path / records.shard_name(split, index))
        writer.write(make_record(index))
        writer.commit()
    assert [p.split("/")[-1] for p in resolve_shards([tmp_path], "train")] == [
        "train-00000.array_record",
        "train-00001.array_record",
    ]
    assert len(resolve_shards([str(tmp_path / "train-*.array_record")], "train")) == 2
    assert resolve_shards([tmp_path / "valid-00000.array_record"], "train") == [
        str(tmp_path / "valid-00000.array_record")
    ]
    tfds_dir = tmp_path / "tfds"
    tfds_dir.mkdir()
    (tfds_dir / "musicgen_tokens-train.array_record-00000-of-00001").write_bytes(b"")
    assert [p.split("/")[-1] for p in resolve_shards([tfds_dir], "train")] == [
        "musicgen_tokens-train.array_record-00000-of-00001"
    ]
    with pytest.raises(FileNotFoundError, match="no test shards"):
        resolve_shards([tmp_path], "test")
