"""Audio to music, end to end: generated WAV files -> tokenisation with the codec -> the grain
loader -> fine-tuning (and a stopped run resumed) -> export -> generation with the trained model."""

from __future__ import annotations

import jax
import numpy as np
import orbax.checkpoint as ocp
import soundfile as sf
from test_training import compilation_cache  # noqa: F401  (autouse: runs of one config compile once)

from musicgen_jax import MusicGen
from musicgen_jax.conversion import load_checkpoint
from musicgen_jax.conversion.checkpoint import load_config
from musicgen_jax.data import synthetic
from musicgen_jax.data import tokenize as tokenize_lib
from musicgen_jax.training.config import load_train_config
from musicgen_jax.training.export import export_run
from musicgen_jax.training.logging import read_metrics
from musicgen_jax.training.trainer import train

TIMING = {"steps_per_sec", "tokens_per_sec", "mfu"}  # wall-clock measurements, not the run's values


def _run_values(run_dir) -> list[dict]:
    """Every logged metric of a run but the timings."""
    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_metrics(run_dir)]


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

    def config(run, *extra):
        return load_train_config(
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
                "training.ema_every=1",  # tiny.yaml keeps an EMA (0.99); update it every step
                "optimizer.warmup_steps=2",
                "checkpoint.every_steps=6",
                "data.source=pipeline",
                f"data.pipeline={{paths: ['{tokens}'], segment_frames: 50, max_text_len: 32}}",
                "data.pipeline.read_threads=1",
                *extra,
            ],
        )

    run = tmp_path / "run"
    result = train(config(run))
    curve = [(row["step"], row["loss"]) for row in read_metrics(run)]
    assert [step for step, _ in curve] == list(range(1, 13))
    losses = np.array([loss for _, loss in curve])
    assert np.isfinite(losses).all()
    # It learns from the tokenised audio: the tiny checkpoint's random weights start above
    # ln(2048) = 7.62, and 12 steps take more than a nat off (about 1.9 when this was written).
    assert losses[0] > 7.0
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 1.0, losses

    # Stopped at step 6 and resumed: the grain iterator's state and the train state come back from
    # the checkpoint, so every logged metric equals the uninterrupted run's.
    stopped = tmp_path / "stopped"
    assert train(config(stopped, "training.stop_after=6")).step == 6
    resumed = train(config(stopped), resume=True)
    assert resumed.resumed_from == 6 and resumed.step == 12
    assert _run_values(stopped) == _run_values(run)

    # The exported parameters are the checkpoint's: raw weights, and with --ema their average.
    saved = jax.device_get(ocp.StandardCheckpointer().restore(run / "checkpoints" / "12" / "params"))
    trained = {**saved["frozen_params"], **saved["params"]}
    average = {**saved["frozen_params"], **saved["ema_params"]}
    exported, exported_ema = tmp_path / "exported", tmp_path / "exported-ema"
    export_run(run, exported)
    export_run(run, exported_ema, use_ema=True)
    _, exported_params = load_checkpoint(exported)
    _, exported_average = load_checkpoint(exported_ema)
    jax.tree.map(np.testing.assert_array_equal, exported_params, trained)
    jax.tree.map(np.testing.assert_array_equal, exported_average, average)
    jax.tree.map(np.testing.assert_array_equal, trained, jax.device_get(result.state.all_params()))
    moved = np.abs(average["decoder"]["lm_heads"] - trained["decoder"]["lm_heads"]).max()
    assert moved > 1e-4  # the average lags the weights

    model = MusicGen.from_pretrained(exported)
    generated = model.generate(["calm piano"], duration=1.0, seed=0)
    assert generated.codes.shape == (1, 4, 50) and generated.codes.max() < 2048
    assert generated.audio.shape == (1, 1, 32000) and np.isfinite(generated.audio).all()
