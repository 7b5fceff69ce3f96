"""Synthetic dataset -> tokenised with the tiny codec -> grain batches in the training contract."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np

from musicgen_jax import config_io
from musicgen_jax.conditioning import EncodedAttributes, encode_attributes, vocabulary
from musicgen_jax.data import manifest, tokenize
from musicgen_jax.data.metadata import MusicInfo, attributes_from_info
from musicgen_jax.data.pipeline import BATCH_KEYS, DataConfig, make_train_iterator


def test_synthetic_audio_to_training_batches(tiny_hf_dir, tmp_path):
    from transformers import AutoTokenizer

    synth = tmp_path / "synth"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "musicgen_jax.data.synthetic",
            "--output",
            str(synth),
            "--num-examples",
            "4",
            "--duration",
            "2",
            "--sample-rate",
            "32000",
            "--seed",
            "0",
        ],
        check=True,
        capture_output=True,
    )
    tokens = tmp_path / "tokens"
    assert (
        tokenize.main(
            [
                "--manifest",
                str(synth / "data.jsonl"),
                "--codec",
                str(tiny_hf_dir),
                "--output",
                str(tokens),
                "--segment-seconds",
                "2",
                "--shard-size",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads((tokens / tokenize.SUMMARY_NAME).read_text())["records"] == 4

    config = config_io.from_dict(
        DataConfig,
        {"paths": [str(tokens)], "segment_frames": 60, "batch_size": 2, "max_text_len": 32, "seed": 0},
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    iterator = make_train_iterator(config, tokenizer, process_index=0, process_count=1)
    batches = [next(iterator) for _ in range(6)]  # three epochs of four clips

    sidecars = [
        json.loads(manifest.sidecar_path(entry.path).read_text())
        for entry in manifest.read_manifest(synth / "data.jsonl")
    ]
    # Each clip's attributes, without the duration (which depends on the crop).
    clip_attributes = [
        encode_attributes([attributes_from_info(MusicInfo.from_dict(s))]).as_dict() for s in sidecars
    ]
    contract_keys = {"codes", "frame_mask", "text_ids", "text_mask"} | {
        f.name for f in dataclasses.fields(EncodedAttributes)
    }
    assert set(BATCH_KEYS) == contract_keys
    for batch in batches:
        assert set(batch) == contract_keys
        assert batch["codes"].dtype == np.int32 and batch["codes"].shape == (2, 4, 60)
        assert batch["codes"].min() >= 0 and batch["codes"].max() < 2048
        assert (
            batch["frame_mask"].dtype == np.bool_ and batch["frame_mask"].all()
        )  # 100-frame clips, 60-frame crops
        assert batch["text_ids"].dtype == np.int32 and batch["text_ids"].shape == (2, 32)
        assert (
            batch["text_mask"].dtype == np.int32 and (batch["text_mask"].sum(axis=1) >= 3).all()
        )  # non-empty
        np.testing.assert_allclose(batch["duration"], 60 / 50)
        assert (batch["duration_present"] == 1).all() and (batch["tempo_present"] == 1).all()
        for row in range(2):
            assert 1 <= batch["genre"][row] <= len(vocabulary.GENRES)
            matches = [
                all(
                    np.array_equal(batch[k][row], a[k][0]) for k in ("genre", "moods", "instruments", "tempo")
                )
                for a in clip_attributes
            ]
            assert any(matches)  # exactly the attributes of one of the clips
            text = tokenizer.decode(
                batch["text_ids"][row][batch["text_mask"][row] == 1], skip_special_tokens=True
            )
            assert text.strip()
    # Three epochs, reshuffled: every clip is seen, and the crops move.
    codes = np.concatenate([b["codes"] for b in batches])  # [12, 4, 60]
    assert len({c.tobytes() for c in codes}) > 4
