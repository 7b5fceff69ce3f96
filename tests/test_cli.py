"""The ``musicgen-jax`` command end to end on a tiny random checkpoint the test writes itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicgen_jax import MusicGen
from musicgen_jax.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run the installed ``musicgen-jax`` console script (the real entry point)."""
    executable = shutil.which("musicgen-jax") or shutil.which(
        "musicgen-jax", path=str(Path(sys.executable).parent)
    )
    command = [executable] if executable else [sys.executable, "-m", "musicgen_jax.cli"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", MUSICGEN_JAX_CACHE_DIR="")
    return subprocess.run(
        command + list(args), capture_output=True, text=True, input=stdin, cwd=cwd, env=env, timeout=600
    )


def test_generate_writes_every_format(tiny_jax_dir, tmp_path):
    done = cli(
        "generate",
        "Upbeat jazz piano with smooth saxophone",
        "--model",
        str(tiny_jax_dir),
        "--duration",
        "2",
        "--output",
        str(tmp_path / "jazz.wav"),
        "--seed",
        "3",
        "--genre",
        "jazz",
        "--mood",
        "happy",
        "--tempo",
        "120",
        "--codes-out",
        str(tmp_path / "codes.npy"),
    )
    assert done.returncode == 0, done.stderr
    assert "real-time factor" in done.stdout and "Traceback" not in done.stderr
    assert f"wrote {tmp_path / 'jazz.wav'} (2.00 s, seed 3)" in done.stdout
    audio, rate = sf.read(tmp_path / "jazz.wav", always_2d=True)
    assert rate == 32000 and audio.shape == (64000, 1)
    assert sf.info(tmp_path / "jazz.wav").subtype == "PCM_16"
    codes = np.load(tmp_path / "codes.npy")
    assert codes.shape == (1, 4, 100) and codes.max() < 2048 and codes.min() >= 0
    assert np.abs(audio).max() > 0
    # The file is the codec's decode of the codes written beside it, up to the loudness gain and
    # 16-bit rounding.
    decoded = MusicGen.from_pretrained(tiny_jax_dir, dtype="float32").decode(codes)[0, 0]  # [samples]
    assert decoded.shape == (64000,)
    assert np.corrcoef(decoded, audio[:, 0])[0, 1] > 0.999

    # FLAC and MP3 through the in-process entry point (the model loads once per call).
    for name, fmt, written in (("a.flac", None, "a.flac"), ("b", "mp3", "b.mp3")):
        args = [
            "generate",
            "calm ambient pads",
            "--model",
            str(tiny_jax_dir),
            "--duration",
            "1.5",
            "--output",
            str(tmp_path / name),
            "--cache-dir",
            "",
        ]
        if fmt:
            args += ["--format", fmt]
        assert main(args) == 0
        info = sf.info(tmp_path / written)
        assert info.samplerate == 32000 and info.format == (fmt or "flac").upper()
        assert abs(info.duration - 1.5) < 0.06  # mp3 frames pad the end slightly
        assert info.channels == 1
        if fmt is None:
            assert info.frames == 48000  # lossless: 75 codec frames of 640 samples exactly
        else:
            assert abs(info.duration - 1.5) <= 1 / 50  # within one codec frame


def test_same_seed_same_file_other_seed_other_music(tiny_jax_dir, tmp_path, capsys):
    def generate(name: str, seed: int) -> Path:
        args = ["generate", "dark techno", "--model", str(tiny_jax_dir), "--duration", "1"]
        args += ["--seed", str(seed), "--output", str(tmp_path / name), "--normalization", "none"]
        assert main(args + ["--cache-dir", ""]) == 0
        assert f"seed {seed})" in capsys.readouterr().out
        return tmp_path / name

    a, b, c = generate("a.wav", 9), generate("b.wav", 9), generate("c.wav", 10)
    assert a.read_bytes() == b.read_bytes()
    first, rate = sf.read(a)
    np.testing.assert_array_equal(first, sf.read(b)[0])
    other, _ = sf.read(c)
    assert rate == 32000 and first.shape == other.shape == (32000,)
    assert np.abs(first - other).max() > 0.1 * np.abs(first).max()


def test_no_network_fails_fast_with_one_sentence(tmp_path):
    done = cli("generate", "jazz", "--output", str(tmp_path / "x.wav"))  # default model: the hub
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "facebook/musicgen-small" in lines[0] and "local directory" in lines[0]
    assert "Traceback" not in done.stderr


def test_unconditional(tiny_jax_dir, tmp_path):
    assert (
        main(
            [
                "generate",
                "--unconditional",
                "--model",
                str(tiny_jax_dir),
                "--duration",
                "1",
                "--output",
                str(tmp_path / "u.wav"),
                "--cache-dir",
                "",
            ]
        )
        == 0
    )
    info = sf.info(tmp_path / "u.wav")
    assert (info.frames, info.samplerate, info.channels) == (32000, 32000, 1)
    audio, _ = sf.read(tmp_path / "u.wav")
    assert np.abs(audio).max() > 0


def test_generate_batch_text_and_jsonl(tiny_jax_dir, tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("calm piano\n\n# a comment\nheavy rock with drums\n")
    lines = [
        {"prompt": "dreamy synth pads", "duration": 1.5, "seed": 4, "format": "flac"},
        {"prompt": "funk bass groove", "genre": "funk", "output": "funk.mp3"},
    ]
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    out = tmp_path / "out"
    assert (
        main(
            [
                "generate-batch",
                "--prompts",
                str(tmp_path / "prompts.txt"),
                "--output-dir",
                str(out),
                "--model",
                str(tiny_jax_dir),
                "--duration",
                "1",
                "--cache-dir",
                "",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["0000.wav", "0001.wav"]
    assert sf.info(out / "0001.wav").frames == 32000
    for name in ("0000.wav", "0001.wav"):
        info = sf.info(out / name)
        assert (info.frames, info.samplerate, info.channels) == (32000, 32000, 1)
    reported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["prompt"], r["file"], r["seconds"]) for r in reported] == [
        ("calm piano", str(out / "0000.wav"), 1.0),
        ("heavy rock with drums", str(out / "0001.wav"), 1.0),
    ]
    out2 = tmp_path / "out2"
    assert (
        main(
            [
                "generate-batch",
                "--prompts",
                str(tmp_path / "prompts.jsonl"),
                "--output-dir",
                str(out2),
                "--model",
                str(tiny_jax_dir),
                "--duration",
                "1",
                "--cache-dir",
                "",
            ]
        )
        == 0
    )
    assert sf.info(out2 / "0000.flac").duration == pytest.approx(1.5)
    assert sf.info(out2 / "funk.mp3").format == "MP3"
    assert sf.info(out2 / "0000.flac").frames == 48000
    assert abs(sf.info(out2 / "funk.mp3").duration - 1.0) <= 1 / 50
    reported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["file"], r["seconds"]) for r in reported] == [
        (str(out2 / "0000.flac"), 1.5),
        (str(out2 / "funk.mp3"), 1.0),
    ]
    assert reported[0]["seed"] == 4
    # One bad line refuses the whole file before anything is written.
    (tmp_path / "bad.jsonl").write_text('{"prompt": "calm piano"}\n{"prompt": "x", "duration": 500}\n')
    out3 = tmp_path / "out3"
    assert (
        main(
            [
                "generate-batch",
                "--prompts",
                str(tmp_path / "bad.jsonl"),
                "--output-dir",
                str(out3),
                "--model",
                str(tiny_jax_dir),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "error: prompt 2 ('x'): duration must be between 1 and 120" in err and "Traceback" not in err
    assert not out3.exists()
    assert (
        main(
            [
                "generate-batch",
                "--prompts",
                str(tmp_path / "bad.jsonl"),
                "--output-dir",
                str(out2),
                "--model",
                str(tiny_jax_dir),
            ]
        )
        == 1
    )


def test_interactive_keeps_the_model_between_prompts(tiny_jax_dir, tmp_path):
    done = cli(
        "interactive",
        "--model",
        str(tiny_jax_dir),
        "--duration",
        "1",
        "--output-dir",
        str(tmp_path),
        stdin="calm piano\n:duration 1.5\n:genre jazz\n:temperature 0\nwarm jazz\n:q\n",
    )
    assert done.returncode == 0, done.stderr
    assert "temperature must be greater than 0" in done.stderr  # a bad setting is refused, the loop goes on
    assert done.stderr.count("loaded ") == 1
    assert sf.info(tmp_path / "interactive-001.wav").frames == 32000
    assert sf.info(tmp_path / "interactive-002.wav").frames == 48000


def test_convert_subcommand(tiny_hf_dir, tmp_path):
    assert main(["convert", "hf-to-jax", "--model", str(tiny_hf_dir), "--output", str(tmp_path / "jax")]) == 0
    assert (
        main(
            ["convert", "jax-to-hf", "--checkpoint", str(tmp_path / "jax"), "--output", str(tmp_path / "hf")]
        )
        == 0
    )
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    # The round trip gives back transformers' tensors exactly, every key.
    from safetensors.numpy import load_file

    original, returned = (load_file(d / "model.safetensors") for d in (Path(tiny_hf_dir), tmp_path / "hf"))
    assert sorted(returned) == sorted(original)
    for key, value in original.items():
        assert returned[key].dtype == value.dtype, key
        np.testing.assert_array_equal(returned[key], value, err_msg=key)


def test_persistent_compile_cache_spares_a_restarted_process(tiny_jax_dir, tmp_path):
    """A second process with the same cache directory loads the compiled programs from disk."""
    import re

    env = dict(os.environ, HF_HUB_OFFLINE="1", MUSICGEN_JAX_CACHE_DIR=str(tmp_path / "xla"))
    seconds = []
    for name in ("first.wav", "second.wav"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "musicgen_jax.cli",
                "generate",
                "jazz",
                "--model",
                str(tiny_jax_dir),
                "--duration",
                "1",
                "--output",
                str(tmp_path / name),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        seconds.append(float(re.search(r"compilation ([0-9.]+) s", done.stdout).group(1)))
    assert any((tmp_path / "xla").iterdir())
    assert seconds[1] < seconds[0] / 3, seconds
