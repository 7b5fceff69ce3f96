"""The grain pipeline: the batch contract, crops and masks, attributes, per-host shards, seeded
order, and a checkpointed iterator state that resumes the exact data order."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musicgen_jax import config_io
from musicgen_jax.conditioning import Attributes, encode_attributes, vocabulary
from musicgen_jax.data import metadata as metadata_lib
from musicgen_jax.data import records
from musicgen_jax.data.pipeline import (
    BATCH_KEYS,
    DataConfig,
    iterator_from_records,
    make_eval_iterator,
    make_train_iterator,
)
from musicgen_jax.testing import build_tokenizer

CONFIG = DataConfig(segment_frames=100, batch_size=4, max_text_len=24, seed=1, read_threads=2)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def make_records(count: int, frames: int | None = None) -> list[records.TokenRecord]:
    """Records whose codes start at ``1000 * id``, counting up frame by frame (so a crop's offset and
    its record can be read off the codes)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        length = frames or int(rng.integers(60, 300))
        codes = (1000 * i + np.arange(length))[None, :] + np.zeros((4, 1), int)
        genre = vocabulary.GENRES[i % len(vocabulary.GENRES)]
        out.append(
            records.TokenRecord(
                codes=codes.astype(np.int16) % 30000,
                text=f"a {genre} song",
                metadata={
                    "description": f"a {genre} song",
                    "genre": genre,
                    "moods": ["happy", "calm"],
                    "bpm": 100 + i,
                    "instrument": "piano, drums",
                    "key": "C major",
                },
                path=f"/m/{i}.wav",
                offset_seconds=0.0,
                segment_index=0,
                duration_seconds=length / 50,
                frame_rate=50.0,
                sample_rate=32000,
            )
        )
    return out


def take(iterator, count: int) -> list[dict[str, np.ndarray]]:
    return [next(iterator) for _ in range(count)]


def assert_batches_equal(first, second) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_config_loads_strictly_from_yaml(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text(
        "paths: [data/tokens]\nsegment_frames: 500\nbatch_size: 8\nmerge_text_p: 0.5\nnum_epochs: null\n"
    )
    config = config_io.load(DataConfig, path)
    assert config.paths == ("data/tokens",) and config.segment_frames == 500 and config.merge_text_p == 0.5
    assert (DataConfig().merge_text_p, DataConfig().drop_desc_p, DataConfig().drop_other_p) == (
        0.25,
        0.5,
        0.5,
    )
    with pytest.raises(config_io.ConfigError, match="unknown key 'segment_seconds'"):
        config_io.from_dict(DataConfig, {"segment_seconds": 30})
    with pytest.raises(config_io.ConfigError, match="drop_desc_p must be in"):
        config_io.from_dict(DataConfig, {"drop_desc_p": 1.5})


def test_batches_follow_the_contract(tokenizer):
    batch = next(iterator_from_records(make_records(12), CONFIG, tokenizer))
    assert tuple(sorted(batch)) == tuple(sorted(BATCH_KEYS))
    expected = {
        "codes": (np.int32, (4, 4, 100)),
        "frame_mask": (np.bool_, (4, 100)),
        "text_ids": (np.int32, (4, 24)),
        "text_mask": (np.int32, (4, 24)),
        "genre": (np.int32, (4,)),
        "moods": (np.float32, (4, len(vocabulary.MOODS))),
        "instruments": (np.float32, (4, len(vocabulary.INSTRUMENTS))),
        "tempo": (np.float32, (4,)),
        "tempo_present": (np.float32, (4,)),
        "duration": (np.float32, (4,)),
        "duration_present": (np.float32, (4,)),
    }
    for key, (dtype, shape) in expected.items():
        assert batch[key].dtype == dtype and batch[key].shape == shape, key
    assert (batch["text_mask"].sum(axis=1) >= 2).all()  # words and the end token
    assert (batch["text_ids"][batch["text_mask"] == 0] == tokenizer.pad_token_id).all()


def test_crops_windows_and_pads_short_clips(tokenizer):
    long_batch = next(iterator_from_records(make_records(4, frames=300), CONFIG, tokenizer))
    starts = []
    for row in range(4):
        codes = long_batch["codes"][row, 0]
        record_id, start = divmod(int(codes[0]), 1000)
        np.testing.assert_array_equal(codes, 1000 * record_id + start + np.arange(100))  # a contiguous window
        starts.append(start)
        assert long_batch["frame_mask"][row].all() and long_batch["duration"][row] == 2.0
    assert len(set(starts)) > 1  # random crops
    short_batch = next(iterator_from_records(make_records(4, frames=60), CONFIG, tokenizer))
    mask = short_batch["frame_mask"]
    assert mask[:, :60].all() and not mask[:, 60:].any()
    record_ids = short_batch["codes"][:, 0, 0] // 1000
    np.testing.assert_array_equal(short_batch["codes"][:, 0, :60], 1000 * record_ids[:, None] + np.arange(60))
    np.testing.assert_allclose(short_batch["duration"], 1.2)  # seconds of real frames
    eval_batch = next(iterator_from_records(make_records(4, frames=300), CONFIG, tokenizer, train=False))
    assert (eval_batch["codes"][:, 0, 0] % 1000 == 0).all()  # evaluation crops from the start


def test_attributes_are_encode_attributes_of_the_metadata(tokenizer):
    examples = make_records(8)
    batch = next(iterator_from_records(examples, CONFIG, tokenizer))
    for row in range(4):
        record_id = int(batch["codes"][row, 0, 0]) // 1000
        meta = examples[record_id].metadata
        frames = int(batch["frame_mask"][row].sum())
        expected = encode_attributes(
            [
                Attributes.create(
                    genre=meta["genre"],
                    mood=meta["moods"],
                    tempo=meta["bpm"],
                    instruments=meta["instrument"],
                    key=meta["key"],
                    duration=frames / 50,
                )
            ]
        ).as_dict()
        for key, value in expected.items():
            np.testing.assert_array_equal(batch[key][row], value[0], err_msg=key)


def test_unknown_metadata_is_dropped_and_empty_text_is_the_null_condition(tokenizer):
    metadata_lib.reset_dropped_attributes()
    example = make_records(1, frames=100)[0]
    messy = records.TokenRecord(
        **{**example.__dict__, "text": "", "metadata": {"genre": "chiptune", "moods": ["happy"]}}
    )
    config = DataConfig(segment_frames=100, batch_size=2, max_text_len=8, merge_text_p=0.0, read_threads=0)
    batch = next(iterator_from_records([messy, messy], config, tokenizer))
    assert (batch["genre"] == 0).all() and batch["moods"][:, vocabulary.MOODS.index("happy")].all()
    assert metadata_lib.dropped_attributes()[("genre", "chiptune")] >= 2
    assert (batch["text_mask"] == 0).all()  # no text: fully masked, as audiocraft masks empty descriptions


def test_hosts_read_disjoint_equal_shares(tokenizer):
    examples = make_records(18, frames=100)
    config = DataConfig(segment_frames=100, batch_size=4, max_text_len=8, seed=3, read_threads=0)
    seen = []
    for host in range(2):
        iterator = iterator_from_records(examples, config, tokenizer, process_index=host, process_count=2)
        batches = take(iterator, 4)  # 9 records per host: 4 batches of 2 = 8 (one epoch, remainder dropped)
        assert all(b["codes"].shape[0] == 2 for b in batches)
        seen.append({int(b) // 1000 for batch in batches for b in batch["codes"][:, 0, 0]})
    assert len(seen[0]) == len(seen[1]) == 8 and not seen[0] & seen[1]
    with pytest.raises(ValueError, match="not divisible"):
        iterator_from_records(examples, config, tokenizer, process_index=0, process_count=3)


def test_the_seed_decides_the_order(tokenizer):
    examples = make_records(16)

    def order(seed: int) -> list[int]:
        batches = take(iterator_from_records(examples, CONFIG, tokenizer, seed=seed), 4)
        return [int(v) // 1000 for b in batches for v in b["codes"][:, 0, 0]]

    assert order(5) == order(5)
    assert order(5) != order(6)
    assert sorted(order(5)) == list(range(16))  # one epoch is a permutation


def test_a_restored_state_continues_the_same_batches(tokenizer, tmp_path):
    shard = tmp_path / records.shard_name("train", 0)
    writer = records.ShardWriter(shard)
    for record in make_records(10):
        writer.write(record)
    writer.commit()
    config = DataConfig(paths=(str(tmp_path),), segment_frames=100, batch_size=4, max_text_len=16, seed=7)
    iterator = make_train_iterator(config, tokenizer, process_index=0, process_count=1)
    first = take(iterator, 5)  # crosses an epoch boundary (10 records = 2.5 batches)
    state = json.loads(json.dumps(iterator.get_state()))  # the trainer stores it as JSON
    expected = take(iterator, 5)
    assert not np.array_equal(first[0]["codes"], expected[0]["codes"])  # so a reset iterator would fail
    fresh = make_train_iterator(config, tokenizer, process_index=0, process_count=1)
    fresh.set_state(state)
    assert_batches_equal(take(fresh, 5), expected)
    assert_batches_equal(
        take(make_train_iterator(config, tokenizer, process_index=0, process_count=1), 5), first
    )
    assert make_eval_iterator(config, tokenizer, process_index=0, process_count=1) is None


def test_eval_batches_are_fixed(tokenizer, tmp_path):
    for split in ("train", "valid"):
        writer = records.ShardWriter(tmp_path / records.shard_name(split, 0))
        for record in make_records(8):
            writer.write(record)
        writer.commit()
    config = DataConfig(
        paths=(str(tmp_path),), eval_split="valid", segment_frames=100, batch_size=4, max_text_len=24
    )
    first = take(make_eval_iterator(config, tokenizer, process_index=0, process_count=1), 3)
    assert_batches_equal(
        take(make_eval_iterator(config, tokenizer, process_index=0, process_count=1), 3), first
    )
    ids = first[0]["text_ids"][0][first[0]["text_mask"][0] == 1]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith("a ") and "genre" in text and "moods : happy , calm" in text  # render_description
