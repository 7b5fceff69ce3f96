"""The built-in ``demo`` model: it is shipped, it loads by its reserved name, the README's main job
runs on it offline, seeds behave, and (not yet: see ``KNOWN_GAP``) it keeps the tempo it is asked
for (docs/demo.md has the full held-out adherence report).

The tempo prompts are fixed (none of them is in the training set: each tempo is ≡ 3 mod 8, the
held-out tempi of :mod:`musicgen_jax.data.synthetic.holdout`) and seeded, so the test is
deterministic on one machine; it asks for 3 of 4 kept within ±5% (the report's criterion is 80% of
40 held-out prompts) so that a float rounding difference on another CPU cannot flip it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from musicgen_jax import Attributes, MusicGen, hub, load_audio
from musicgen_jax.cli.main import main as cli_main
from musicgen_jax.codec import load_codec
from musicgen_jax.data.synthetic.holdout import is_held_out_tempo
from musicgen_jax.eval.metrics.rhythm import measured_bpm, tempo_verdict

TEMPO_PROMPTS = [
    (
        "energetic rock with plucked strings, bass and drums",
        "rock",
        131,
        ("plucked strings", "bass", "drums"),
    ),
    ("relaxed hip hop beat with piano, bass and drums", "hip hop", 91, ("piano", "bass", "drums")),
    ("upbeat house track with piano, bass and drums", "house", 123, ("piano", "bass", "drums")),
    ("happy pop song with piano, bass and drums", "pop", 107, ("piano", "bass", "drums")),
]
SECONDS = 6.0


@pytest.fixture(scope="module")
def demo():
    return MusicGen.from_pretrained("demo")


def test_demo_is_shipped_and_loads_by_its_name(demo):
    directory = hub.resolve("demo")
    assert directory == hub.BUILTIN_MODELS["demo"] and (directory / "config.yaml").is_file()
    size = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
    assert size < 60 * 2**20, f"the demo model is {size / 2**20:.0f} MiB"
    assert (demo.sample_rate, demo.frame_rate, demo.num_codebooks) == (16000, 25, 4)
    assert demo.codec.num_codebooks == 4


def test_a_codec_loaded_from_the_model_has_its_token_layout():
    """The demo codec alone defaults to its smallest bandwidth (2 codebooks, transformers' rule); read
    through the model (as tokenising for fine-tuning does) it gives the model's 4."""
    assert load_codec(hub.DEMO_CODEC, backend="jax").num_codebooks == 2
    assert load_codec("demo", backend="jax").num_codebooks == 4
    assert load_codec("demo", backend="jax", bandwidth=0.45).num_codebooks == 2  # asked for


def test_the_fixed_prompts_are_held_out_tempi():
    assert all(is_held_out_tempo(tempo) for *_, tempo, _ in TEMPO_PROMPTS)


# The shipped model does not hold tempo to ±5% yet (docs/demo.md: 35% of held-out prompts at
# guidance 3; the beat tracker reads 80% of real renders right): strict, so that a model which does
# turns these into failures that ask for the markers to go.
KNOWN_GAP = pytest.mark.xfail(
    strict=True, reason="the demo model misses the issue's adherence targets (docs/demo.md, issue 13)"
)


@KNOWN_GAP
def test_demo_keeps_the_requested_tempo(demo):
    result = demo.generate(
        [text for text, *_ in TEMPO_PROMPTS],
        attributes=[
            Attributes.create(genre=genre, tempo=tempo, instruments=list(instruments))
            for _, genre, tempo, instruments in TEMPO_PROMPTS
        ],
        duration=SECONDS,
        seed=0,
    )
    measured = [measured_bpm(audio, result.sample_rate) for audio in result.audio]
    verdicts = [
        tempo_verdict(bpm, tempo) for bpm, (*_, tempo, _) in zip(measured, TEMPO_PROMPTS, strict=True)
    ]
    report = [
        (tempo, bpm, verdict) for (*_, tempo, _), bpm, verdict in zip(TEMPO_PROMPTS, measured, verdicts)
    ]
    assert verdicts.count("kept") >= 3, report


def test_same_seed_same_music_other_seed_other_music(demo):
    prompt = "calm ambient piece with strings and piano"
    first = demo.generate(prompt, duration=2.0, seed=3)
    again = demo.generate(prompt, duration=2.0, seed=3)
    other = demo.generate(prompt, duration=2.0, seed=4)
    assert np.array_equal(first.codes, again.codes) and np.array_equal(first.audio, again.audio)
    assert not np.array_equal(first.codes, other.codes)
    assert np.abs(first.audio - other.audio).max() > 0.05


def test_the_readme_main_job_runs_on_demo(tmp_path, monkeypatch):
    """The README's third line, as written (its output file moved under tmp_path), with no network."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()[2]
    program, *argv = shlex.split(line)
    assert program == "musicgen-jax" and argv[argv.index("--model") + 1] == "demo", line
    output = tmp_path / argv[argv.index("--output") + 1]
    argv[argv.index("--output") + 1] = str(output)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli_main(argv) == 0
    audio, rate = load_audio(output)
    seconds = float(argv[argv.index("--duration") + 1])
    assert rate == 16000 and audio.shape[-1] == round(seconds * rate)
    assert 0.01 < np.sqrt(np.mean(audio**2)) < 1.0


# ------------------------------------------------------------------ the committed held-out report

REPORT = Path(__file__).resolve().parents[1] / "docs" / "demo-report.json"


@KNOWN_GAP
def test_the_committed_report_shows_what_the_demo_model_must():
    """docs/demo-report.json (python -m musicgen_jax.recipes.demo_eval) holds the issue's criteria:
    tempo, instruments and genre on held-out prompts at guidance 3; guidance matters; the Fréchet
    distance is well below that of shuffled prompts."""
    report = json.loads(REPORT.read_text())
    assert report["model"]["prompts"] >= 40 and report["model"]["duration"] >= 10
    conditions = report["conditions"]
    guided = conditions["guidance 3"]["summary"]
    assert guided["tempo"]["hit_rate"] >= 0.8, guided["tempo"]
    assert guided["instruments"]["ratio"] >= 0.8 and guided["genre"]["ratio"] >= 0.8

    def adherence(name: str) -> float:
        summary = conditions[name]["summary"]
        return np.mean(
            [summary["tempo"]["hit_rate"], summary["instruments"]["ratio"], summary["genre"]["ratio"]]
        )

    assert adherence("guidance 3") > adherence("guidance 1") > adherence("unconditional")
    # The paired distance (clip with its prompt's real render): a set distance cannot see shuffling.
    distance = conditions["guidance 3"]["paired_frechet_distance"]
    assert distance < 0.7 * conditions["shuffled prompts (guidance 3)"]["paired_frechet_distance"]
