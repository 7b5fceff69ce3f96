"""``python -m musicgen_jax.recipes.demo``: the built-in ``demo`` model, re-created from nothing.

Every stage is one of the project's own commands, run in order under ``--workdir`` (default
``build/demo``), each seeded; a stage whose output is complete is skipped, and the training stages
resume from their newest checkpoint, so a killed recipe continues where it stopped:

1. ``codec-data`` (with ``--retrain-codec``): 600 synthetic pieces of 10 s at 16 kHz (every
   attribute combination: a codec should reconstruct any music, and it never sees a prompt);
2. ``codec``: ``train.py codec --config demo`` on them, then exported as a transformers
   ``EncodecModel`` directory (``codec/``); without ``--retrain-codec``, the shipped codec these
   two stages made (docs/codec-demo.md) is copied instead;
3. ``lm-data``: :data:`LM_PIECES` pieces with the held-out prompts' attribute combinations and
   tempi left out (``--exclude-held-out``), split into train and valid manifests;
4. ``tokenizer``: the word-level tokenizer of the captions and the attribute vocabulary;
5. ``tokens``: both splits tokenised with the trained codec;
6. ``lm``: ``train.py --config demo``, text encoder trained with the decoder;
7. ``export``: the EMA weights as a musicgen-jax checkpoint (``model/``), codec and tokenizer inside,
   with ``training.json`` beside them: each stage's wall-clock seconds (summed over resumed runs,
   ``timings.json`` in the workdir) and the LM's training and validation loss curves;
8. ``install`` (with ``--install``): ``model/`` copied to where ``--model demo`` finds it.

On the 2-core CPU this project is developed on, the codec takes ~50 min (docs/codec-demo.md) and
the rest about an hour and a half (``training.json`` of the shipped model has the figures).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from musicgen_jax import hub
from musicgen_jax.codec.backends import bandwidth_for_codebooks
from musicgen_jax.conditioning import vocabulary
from musicgen_jax.conditioning.word_tokenizer import build_word_tokenizer
from musicgen_jax.data import synthetic
from musicgen_jax.data import tokenize as tokenize_lib
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.training import cli as train_cli
from musicgen_jax.training.logging import read_metrics

CODEC_PIECES = 600
LM_PIECES = 3000
PIECE_SECONDS = 10.0
SAMPLE_RATE = 16000
VALID_FRACTION = 0.04  # of the LM pieces, for the LM's validation loss
SEED = 0
TIMINGS = "timings.json"  # in the workdir: seconds per stage, summed over resumed runs
SUMMARY = "training.json"  # in the exported model: timings and loss curves, for its report


def _done(path: Path) -> bool:
    return path.exists()


def _timed(workdir: Path, stage: str, work: Callable[[], object]):
    """Run ``work`` and add its wall-clock seconds to ``stage`` in the workdir's timings."""
    began = time.perf_counter()
    result = work()
    path = workdir / TIMINGS
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - began, 1)
    path.write_text(json.dumps(timings, indent=1) + "\n")
    return result


def _run(what: str, code: int) -> None:
    if code != 0:
        raise SystemExit(f"demo recipe: {what} failed (exit code {code})")


def codec_data(workdir: Path) -> Path:
    directory = workdir / "codec-data"
    manifest = directory / "data.jsonl"
    if not _done(manifest):
        synthetic.write_dataset(
            directory, CODEC_PIECES, duration=PIECE_SECONDS, sample_rate=SAMPLE_RATE, seed=SEED
        )
    return manifest


def codec(workdir: Path, retrain: bool) -> Path:
    """The codec: the shipped one (``hub.DEMO_CODEC``, trained by exactly these stages), or with
    ``retrain`` trained again from its data."""
    run, exported = workdir / "codec-run", workdir / "codec"
    if _done(exported):
        return exported
    if not retrain and hub.DEMO_CODEC.is_dir():
        shutil.copytree(hub.DEMO_CODEC, exported)
        return exported
    manifest = codec_data(workdir)
    args = ["codec", "--config", "demo", f"data.manifest={manifest}", f"output_dir={run}"]
    resume = ["--resume"] if (run / "checkpoints").is_dir() else []
    _run("codec training", train_cli.main([*args, *resume]))
    _run("codec export", train_cli.main(["codec", "export", str(run), str(exported)]))
    return exported


def lm_data(workdir: Path) -> tuple[Path, Path]:
    """The LM's pieces and their train and valid manifests (the last pieces are valid)."""
    directory = workdir / "lm-data"
    train, valid = directory / "train.jsonl", directory / "valid.jsonl"
    if not _done(valid):
        manifest = synthetic.write_dataset(
            directory,
            LM_PIECES,
            duration=PIECE_SECONDS,
            sample_rate=SAMPLE_RATE,
            seed=SEED + 1,
            exclude_held_out=True,
        )
        lines = Path(manifest).read_text().splitlines()
        count = max(1, round(len(lines) * VALID_FRACTION))
        train.write_text("\n".join(lines[:-count]) + "\n")
        valid.write_text("\n".join(lines[-count:]) + "\n")
    return train, valid


def tokenizer(workdir: Path, manifests: Sequence[Path]) -> Path:
    directory = workdir / "tokenizer"
    if not _done(directory / "tokenizer.json"):
        captions = []
        for manifest in manifests:
            for line in manifest.read_text().splitlines():
                audio = Path(json.loads(line)["path"])
                captions.append(json.loads(audio.with_suffix(".json").read_text())["description"])
        words = [*vocabulary.GENRES, *vocabulary.MOODS, *vocabulary.INSTRUMENTS, *vocabulary.KEYS]
        # The words of audiocraft's metadata merge too ("bpm: 120.0. genre: jazz. keywords: ..."):
        # training text augmentation writes them (musicgen_jax/data/text.py).
        merged = "key: bpm: 0. genre: moods: keywords: instrument: synthetic, instrumental, fast, slow"
        build_word_tokenizer([*captions, *words, merged, "music song"]).save_pretrained(str(directory))
    return directory


def tokens(workdir: Path, codec_dir: Path, train: Path, valid: Path) -> Path:
    directory = workdir / "tokens"
    # The codec trained at two bandwidths; the LM's tokens are its codebooks at the one that gives
    # the model's codebook count (the codec's default is the smallest).
    codebooks = MusicGenConfig.preset("demo").decoder.num_codebooks
    bandwidth = bandwidth_for_codebooks(codec_dir, codebooks)
    for split, manifest in (("train", train), ("valid", valid)):
        args = ["--manifest", str(manifest), "--codec", str(codec_dir), "--output", str(directory)]
        args += ["--segment-seconds", str(PIECE_SECONDS), "--split", split, "--codec-backend", "jax"]
        args += ["--bandwidth", str(bandwidth)]
        _run(f"tokenising the {split} split", tokenize_lib.main([*args, "--no-progress"]))
    return directory


def lm(workdir: Path) -> Path:
    run = workdir / "lm-run"
    overrides = [
        f"output_dir={run}",
        f"model.tokenizer={workdir / 'tokenizer'}",
        f"model.audio.codec={workdir / 'codec'}",
        f"data.pipeline.paths=[{workdir / 'tokens'}]",
    ]
    resume = ["--resume"] if (run / "checkpoints").is_dir() else []
    _run("LM training", train_cli.main(["--config", "demo", *overrides, *resume]))
    return run


def training_summary(workdir: Path, run: Path) -> dict:
    """What the model's report shows of its making: stage timings and the LM's loss curves."""
    metrics = read_metrics(run)
    timings_path = workdir / TIMINGS
    return {
        "stages_seconds": json.loads(timings_path.read_text()) if timings_path.is_file() else {},
        "codec": "docs/codec-demo.md (its training and reconstruction)",
        "lm_pieces": LM_PIECES,
        "piece_seconds": PIECE_SECONDS,
        "valid_fraction": VALID_FRACTION,
        "train_loss": [[m["step"], m["loss"]] for m in metrics if m.get("loss") is not None],
        "validation_loss": [[m["step"], m["eval/loss"]] for m in metrics if m.get("eval/loss") is not None],
    }


def export(workdir: Path, run: Path) -> Path:
    model = workdir / "model"
    if not _done(model):
        _run("LM export", train_cli.main(["export", str(run), str(model), "--ema"]))
    if not _done(model / SUMMARY):
        (model / SUMMARY).write_text(json.dumps(training_summary(workdir, run), indent=1) + "\n")
    return model


def install(model: Path) -> Path:
    """Copy ``model`` to the built-in ``demo`` directory (replacing what is there)."""
    target = hub.BUILTIN_MODELS["demo"]
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model, staging)
    # The attribute probes judge audio, not the model (trained on synthetic renders alone, by
    # recipes.demo_eval when absent): an installed model's are kept.
    probes = target / "probes"
    if probes.is_dir() and not (staging / "probes").exists():
        shutil.copytree(probes, staging / "probes")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.recipes.demo",
        description="Re-create the built-in demo model from nothing (resumable; see the module docstring).",
    )
    parser.add_argument("--workdir", default="build/demo", help="where every stage writes")
    parser.add_argument(
        "--install", action="store_true", help="copy the result to where --model demo finds it"
    )
    parser.add_argument(
        "--retrain-codec",
        action="store_true",
        help="train the codec too (default: the shipped demo codec, which these stages trained)",
    )
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    codec_dir = _timed(workdir, "codec", lambda: codec(workdir, args.retrain_codec))
    train, valid = _timed(workdir, "lm-data", lambda: lm_data(workdir))
    _timed(workdir, "tokenizer", lambda: tokenizer(workdir, [train, valid]))
    _timed(workdir, "tokens", lambda: tokens(workdir, codec_dir, train, valid))
    run = _timed(workdir, "lm", lambda: lm(workdir))
    model = export(workdir, run)
    print(f"demo model in {model}")
    if args.install:
        print(f"installed as {install(model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
