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
7. ``export``: the EMA weights as a musicgen-jax checkpoint (``model/``), codec and tokenizer inside;
8. ``install`` (with ``--install``): ``model/`` copied to where ``--model demo`` finds it.

On the 2-core CPU this project is developed on, the codec takes ~40 min and the LM about an hour.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from musicgen_jax import hub
from musicgen_jax.codec.backends import bandwidth_for_codebooks
from musicgen_jax.conditioning import vocabulary
from musicgen_jax.conditioning.word_tokenizer import build_word_tokenizer
from musicgen_jax.data import synthetic
from musicgen_jax.data import tokenize as tokenize_lib
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.training import cli as train_cli

CODEC_PIECES = 600
LM_PIECES = 3000
PIECE_SECONDS = 10.0
SAMPLE_RATE = 16000
VALID_FRACTION = 0.04  # of the LM pieces, for the LM's validation loss
SEED = 0


def _done(path: Path) -> bool:
    return path.exists()


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


def export(workdir: Path, run: Path) -> Path:
    model = workdir / "model"
    if not _done(model):
        _run("LM export", train_cli.main(["export", str(run), str(model), "--ema"]))
    return model


def install(model: Path) -> Path:
    """Copy ``model`` to the built-in ``demo`` directory (replacing what is there)."""
    target = hub.BUILTIN_MODELS["demo"]
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model, staging)
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
    codec_dir = codec(workdir, args.retrain_codec)
    train, valid = lm_data(workdir)
    tokenizer(workdir, [train, valid])
    tokens(workdir, codec_dir, train, valid)
    model = export(workdir, lm(workdir))
    print(f"demo model in {model}")
    if args.install:
        print(f"installed as {install(model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
