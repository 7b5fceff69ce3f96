"""The tokenised format through TensorFlow Datasets (without TensorFlow): a tokenised directory is a
tfds dataset, and the MusicgenTokens builder prepares one that the grain pipeline reads too."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from musicgen_jax.data import manifest, synthetic, tfds_builder, tfds_metadata, tokenize
from musicgen_jax.data.pipeline import DataConfig, make_train_iterator, resolve_shards
from musicgen_jax.testing import build_tokenizer


class FrameEnergyCodec:
    """A stand-in codec (no torch): 8 kHz, 50 frames/s, codes from each frame's energy, so codes
    differ between segments and are cheap to compute."""

    sample_rate, frame_rate, num_codebooks, total_codebooks, audio_channels = 8000, 50.0, 4, 4, 1

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        assert sample_rate == self.sample_rate
        batch, _, samples = audio.shape
        hop = 160
        frames = math.ceil(samples / hop)
        padded = np.zeros((batch, frames * hop), np.float32)
        padded[:, :samples] = audio.mean(axis=1)
        energy = np.sqrt((padded.reshape(batch, frames, hop) ** 2).mean(-1))  # [batch, frames]
        return ((energy[:, None, :] * 5000 + 37 * np.arange(4)[None, :, None]) % 2048).astype(np.int32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthetic.write_dataset(root, 4, duration=1.5, sample_rate=8000, seed=5)
    return root


def test_a_tokenised_directory_is_a_tfds_dataset(audio_dir, tmp_path):
    data_dir = tmp_path / "tfds"
    output = data_dir / tfds_metadata.DATASET_NAME / tfds_metadata.VERSION
    sources = manifest.find_sources(audio_dir=audio_dir / "audio")
    options = tokenize.TokenizeOptions(segment_seconds=1.0, min_segment_seconds=0.2, shard_size=3)
    tokenize.tokenize_dataset(sources, FrameEnergyCodec(), output, options, progress=False)
    ours = list(tokenize.iter_records(output))
    assert len(ours) == 8 and len({tuple(r.codes[0]) for r in ours}) == 8

    builder = tfds.builder_from_directory(str(output))
    assert builder.info.splits["train"].num_examples == 8 and builder.info.splits["train"].num_shards == 2
    source = builder.as_data_source("train")
    by_name = tfds.data_source(tfds_metadata.DATASET_NAME, data_dir=str(data_dir), split="train")
    assert len(source) == len(by_name) == 8
    for index, record in enumerate(ours):
        for example in (source[index], by_name[index]):
            np.testing.assert_array_equal(example["codes"], record.codes)
            assert example["codes"].dtype == np.int16
            assert example["text"].decode() == record.text and example["path"].decode() == record.path
            assert example["segment_index"] == record.segment_index
    assert "tensorflow" not in sys.modules


def test_the_builder_prepares_data_the_pipeline_reads(audio_dir, tiny_hf_dir, tmp_path):
    from musicgen_jax.codec import EncodecBridge

    builder = tfds_builder.MusicgenTokens(
        data_dir=str(tmp_path),
        codec=str(tiny_hf_dir),
        manifest=str(audio_dir / "data.jsonl"),
        segment_seconds=1.0,
        min_segment_seconds=0.2,
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
    )
    source = tfds.data_source("musicgen_tokens", data_dir=str(tmp_path), split="train")
    assert len(source) == 8
    codec = EncodecBridge.from_pretrained(tiny_hf_dir)
    options = tokenize.TokenizeOptions(segment_seconds=1.0, min_segment_seconds=0.2)
    expected = {
        (r.path, r.segment_index): r.codes
        for s in manifest.find_sources(manifest=audio_dir / "data.jsonl")
        for r in tokenize.encode_source(codec, s, options)
    }
    for index in range(len(source)):
        example = source[index]
        np.testing.assert_array_equal(
            example["codes"], expected[(example["path"].decode(), example["segment_index"])]
        )

    shards = resolve_shards([builder.data_dir], "train")
    assert shards and all("musicgen_tokens-train.array_record" in s for s in shards)
    config = DataConfig(
        paths=(builder.data_dir,), segment_frames=40, batch_size=4, max_text_len=16, read_threads=0
    )
    batch = next(make_train_iterator(config, build_tokenizer(), process_index=0, process_count=1))
    assert batch["codes"].shape == (4, 4, 40) and batch["frame_mask"][:, :10].all()
    assert "tensorflow" not in sys.modules
