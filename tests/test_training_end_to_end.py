"""Audio to music, end to end: generated WAV files -> tokenisation with the codec -> the grain
loader -> fine-tuning -> export -> generation with the trained model."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from musicgen_jax import MusicGen
from musicgen_jax.conversion.checkpoint import load_config
from musicgen_jax.data import synthetic
from musicgen_jax.data import tokenize as tokenize_lib
from musicgen_jax.training.config import load_train_config
from musicgen_jax.training.export import export_run
from musicgen_jax.training.logging import read_metrics
from musicgen_jax.training.trainer import train


def test_wav_folder_to_trained_model(tiny_jax_dir, tmp_path):
    manifest = synthetic.write_dataset(tmp_path / "audio", 4, duration=3.0, seed=1)
    wavs = sorted((tmp_path / "audio").rglob("*.wav"))
    assert len(wavs) == 4 and sf.info(wavs[0]).samplerate == 32000

    tokens = tmp_path / "tokens"
    assert (
        tokenize_lib.main(
            [
                "--manifest",
                str(manifest),
                "--codec",
                str(tiny_jax_dir),
                "--output",
                str(tokens),
                "--segment-seconds",
                "1.5",
                "--no-progress",
            ]
        )
        == 0
    )
    records = list(tokenize_lib.iter_records(tokens))
    assert len(records) == 8 and all(r.codes.shape == (4, 75) for r in records)

    run = tmp_path / "run"
    config = load_train_config(
        "tiny",
        [
            f"output_dir={run}",
            f"model.init_from={tiny_jax_dir}",
            # configs/train/tiny.yaml trains from scratch with t5-small's tokenizer and vocabulary;
            # fine-tuning keeps the checkpoint's.
            "model.tokenizer=null",
            f"model.text_encoder.vocab_size={load_config(tiny_jax_dir).text_encoder.vocab_size}",
            "logging.progress=false",
            "logging.tensorboard=false",
            "logging.every_steps=1",
            "training.steps=12",
            "training.batch_size=4",
            "optimizer.warmup_steps=2",
            "checkpoint.every_steps=12",
            "data.source=pipeline",
            f"data.pipeline={{paths: ['{tokens}'], segment_frames: 50, max_text_len: 32, read_threads: 1}}",
        ],
    )
    train(config)
    losses = [row["loss"] for row in read_metrics(run)]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])  # it learns from the tokenised audio

    exported = export_run(run, tmp_path / "exported")
    model = MusicGen.from_pretrained(exported)
    result = model.generate(["calm piano"], duration=1.0, seed=0)
    assert result.audio.shape == (1, 1, 32000) and np.isfinite(result.audio).all()
