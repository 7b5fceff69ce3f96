"""Hugging Face ``datasets`` datasets as transformers users hold them, tokenised and trained on: a
``save_to_disk`` directory (an ``Audio`` column of WAV bytes, a text column, metadata columns),
parquet files, and plain ``{"array", "sampling_rate"}`` audio values."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
from test_training import compilation_cache  # noqa: F401  (autouse: runs of one config compile once)

from musicgen_jax.conversion.checkpoint import load_config
from musicgen_jax.data import synthetic
from musicgen_jax.data import tokenize as tokenize_lib
from musicgen_jax.data.hf_datasets import dataset_sources, find_dataset_sources
from musicgen_jax.data.manifest import ManifestError
from musicgen_jax.data.tokenize.segmenter import read_source
from musicgen_jax.training.config import load_train_config
from musicgen_jax.training.logging import read_metrics
from musicgen_jax.training.trainer import train

datasets = pytest.importorskip("datasets")

RATE = 24000  # not the codec's 32 kHz: the tokeniser resamples
CAPTIONS = ["calm piano", "fast drums", "warm strings", "dark synth"]


def _examples(count: int = 4, seconds: float = 1.6):
    return [
        synthetic.generate_example(i, seed=3, duration=seconds, sample_rate=RATE).audio[0]  # mono
        for i in range(count)
    ]


def _wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    """A DatasetDict saved with save_to_disk: train (4 rows) and validation (2 rows)."""
    clips = _examples()
    columns = {
        "audio": [{"bytes": _wav_bytes(a), "path": None} for a in clips],
        "text": CAPTIONS,
        "genre": ["classical", "rock", "classical", "electronic"],
        "bpm": [90.0, 140.0, 70.0, 120.0],
        "ignored": ["x"] * 4,
    }
    train_split = datasets.Dataset.from_dict(columns).cast_column("audio", datasets.Audio())
    valid = train_split.select([0, 1])
    directory = tmp_path_factory.mktemp("hf") / "saved"
    datasets.DatasetDict({"train": train_split, "validation": valid}).save_to_disk(str(directory))
    return directory, clips


def test_rows_become_sources_with_audio_text_and_metadata(saved_dataset):
    directory, clips = saved_dataset
    sources = find_dataset_sources(str(directory), split="train")
    assert len(sources) == 4
    audio, metadata = read_source(sources[1], RATE)
    np.testing.assert_allclose(audio[0], clips[1], atol=1e-6)  # float WAV bytes, decoded by soundfile
    assert metadata == {"description": "fast drums", "genre": "rock", "bpm": 140.0}
    resampled, _ = read_source(sources[1], 32000)
    assert resampled.shape == (1, round(len(clips[1]) * 32000 / RATE))
    assert len(find_dataset_sources(str(directory), split="validation")) == 2
    with pytest.raises(ManifestError, match="splits"):
        find_dataset_sources(str(directory), split="test")
    with pytest.raises(ManifestError, match="no text column"):
        find_dataset_sources(str(directory), text_column="caption")


def test_parquet_files_and_plain_array_columns(saved_dataset, tmp_path):
    directory, clips = saved_dataset
    parquet = tmp_path / "train.parquet"
    datasets.load_from_disk(str(directory))["train"].to_parquet(str(parquet))
    sources = find_dataset_sources(str(parquet))
    assert [s.metadata["description"] for s in sources] == CAPTIONS
    np.testing.assert_allclose(read_source(sources[2], RATE)[0][0], clips[2], atol=1e-6)

    arrays = datasets.Dataset.from_dict(
        {"audio": [{"array": clips[0], "sampling_rate": RATE}], "caption": ["calm piano"]}
    )
    (source,) = dataset_sources(arrays, text_column="caption")
    audio, metadata = read_source(source, RATE)
    np.testing.assert_allclose(audio[0], clips[0], atol=1e-6)
    assert metadata == {"description": "calm piano"}


def test_fine_tuning_from_a_saved_dataset_end_to_end(saved_dataset, tiny_jax_dir, tmp_path, capsys):
    directory, _ = saved_dataset
    tokens = tmp_path / "tokens"
    arguments = ["--codec", str(tiny_jax_dir), "--output", str(tokens), "--segment-seconds", "1"]
    code = tokenize_lib.main(
        [
            "--hf-dataset",
            str(directory),
            "--audio-column",
            "audio",
            "--text-column",
            "text",
            "--split",
            "train",
        ]
        + arguments
        + ["--no-progress"]
    )
    assert code == 0 and "4 tokenised" in capsys.readouterr().out
    # The validation split, read into shards named valid.
    code = tokenize_lib.main(
        ["--hf-dataset", str(directory), "--dataset-split", "validation", "--split", "valid"]
        + arguments
        + ["--no-progress"]
    )
    assert code == 0
    records = list(tokenize_lib.iter_records(tokens))
    assert len(records) == 4 and all(r.codes.shape == (4, 50) for r in records)  # the 0.6 s rests dropped
    assert sorted(r.text for r in records) == sorted(CAPTIONS)
    assert {r.metadata["genre"] for r in records} == {"classical", "rock", "electronic"}
    assert [r.text for r in tokenize_lib.iter_records(tokens, split="valid")] == CAPTIONS[:2]

    run = tmp_path / "run"
    config = load_train_config(
        "tiny",
        [
            f"output_dir={run}",
            f"model.init_from={tiny_jax_dir}",
            "model.tokenizer=null",
            f"model.text_encoder.vocab_size={load_config(tiny_jax_dir).text_encoder.vocab_size}",
            "logging.progress=false",
            "logging.tensorboard=false",
            "logging.every_steps=1",
            "training.steps=4",
            "training.batch_size=2",
            "training.ema_decay=null",
            "optimizer.warmup_steps=1",
            "checkpoint.every_steps=4",
            "eval.every_steps=4",
            "eval.batches=1",
            "data.source=pipeline",
            f"data.pipeline={{paths: ['{tokens}'], segment_frames: 50, max_text_len: 16, eval_split: valid}}",
            "data.pipeline.read_threads=1",
        ],
    )
    result = train(config)
    rows = read_metrics(run)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert result.step == 4 and len(losses) == 4 and np.isfinite(losses).all()
    assert [r["step"] for r in rows if "eval/loss" in r] == [4]
