"""Training on the grain pipeline (musicgen_jax.data) over real ArrayRecord shards: its iterator
state goes into the orbax checkpoint and a resumed run continues the exact data order."""

from __future__ import annotations

import numpy as np
import pytest
from test_training import compilation_cache  # noqa: F401  (autouse: runs of one config compile once)

from musicgen_jax.data import records
from musicgen_jax.data.pipeline import DataConfig
from musicgen_jax.training.config import load_train_config
from musicgen_jax.training.logging import read_metrics
from musicgen_jax.training.trainer import train

TEXTS = (
    "upbeat jazz piano",
    "dark techno with heavy bass",
    "calm ambient pads",
    "happy pop song with guitar",
)


def _write_shard(directory, count: int = 12, frames: int = 40) -> None:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    writer = records.ShardWriter(directory / records.shard_name("train", 0))
    for i in range(count):
        writer.write(
            records.TokenRecord(
                codes=rng.integers(0, 2048, size=(4, frames - 3 * (i % 3))).astype(records.CODES_DTYPE),
                text=TEXTS[i % len(TEXTS)],
                metadata={"genre": "jazz", "bpm": 120} if i % 2 else {},
                path=f"clip{i}.wav",
                offset_seconds=0.0,
                segment_index=0,
                duration_seconds=(frames - 3 * (i % 3)) / 50,
                frame_rate=50.0,
                sample_rate=32000,
            )
        )
    writer.commit()


def _config(output_dir, shards, tokenizer_dir, *extra):
    return load_train_config(
        "tiny",
        [
            f"output_dir={output_dir}",
            f"model.tokenizer={tokenizer_dir}",  # the testing tokenizer, not the config's (online) t5-small
            "logging.progress=false",
            "logging.tensorboard=false",
            "logging.every_steps=1",
            "training.batch_size=4",
            "training.steps=6",
            "checkpoint.every_steps=2",
            "data.source=pipeline",
            f"data.pipeline={{paths: ['{shards}'], segment_frames: 16, max_text_len: 16, read_threads: 1}}",
            *extra,
        ],
    )


def test_pipeline_run_resumes_with_the_same_data_order(tmp_path, tiny_tokenizer_dir):
    shards = tmp_path / "shards"
    _write_shard(shards)
    whole = train(_config(tmp_path / "whole", shards, tiny_tokenizer_dir))
    assert whole.step == 6 and whole.metrics["target_tokens"] > 0
    train(_config(tmp_path / "resumed", shards, tiny_tokenizer_dir, "training.stop_after=3"))
    resumed = train(_config(tmp_path / "resumed", shards, tiny_tokenizer_dir), resume=True)
    assert resumed.resumed_from == 3
    curve = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "whole")]
    assert [s for s, _ in curve] == list(range(1, 7))
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "resumed")] == curve


def test_segment_schedule_lengths_follow_the_steps_across_a_resume(tmp_path, tiny_tokenizer_dir):
    shards = tmp_path / "shards"
    _write_shard(shards)
    schedule = "data.pipeline.segment_schedule=[[0, 8], [2, 12], [4, 16]]"
    whole = _config(tmp_path / "whole", shards, tiny_tokenizer_dir, schedule)
    assert [whole.data.pipeline.segment_frames_at(step) for step in range(6)] == [8, 8, 12, 12, 16, 16]
    train(whole)
    records_whole = read_metrics(tmp_path / "whole")
    # Step n (logged after its update) trained on batch n - 1: the schedule's length at n - 1.
    assert [(r["step"], r["segment_frames"]) for r in records_whole] == list(
        zip(range(1, 7), [8, 8, 12, 12, 16, 16])
    )
    # Stopped mid-schedule (step 3 of the 12-frame stage): the resumed run picks up that length and
    # the same data order, and the next change of length still follows the schedule.
    train(_config(tmp_path / "resumed", shards, tiny_tokenizer_dir, schedule, "training.stop_after=3"))
    resumed = train(_config(tmp_path / "resumed", shards, tiny_tokenizer_dir, schedule), resume=True)
    assert resumed.resumed_from == 3
    assert [(r["step"], r["segment_frames"], r["loss"]) for r in read_metrics(tmp_path / "resumed")] == [
        (r["step"], r["segment_frames"], r["loss"]) for r in records_whole
    ]


def test_segment_schedule_is_checked():
    with pytest.raises(ValueError, match="start at batch 0"):
        DataConfig(segment_schedule=((10, 250),))
    with pytest.raises(ValueError, match="increase strictly"):
        DataConfig(segment_schedule=((0, 250), (100, 500), (100, 750)))
    with pytest.raises(ValueError, match="positive"):
        DataConfig(segment_schedule=((0, 0),))
