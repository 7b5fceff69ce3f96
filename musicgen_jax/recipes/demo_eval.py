"""``python -m musicgen_jax.recipes.demo_eval``: the demo model's prompt-adherence report.

On the held-out prompts (:func:`~musicgen_jax.data.synthetic.holdout.held_out_prompts`: attribute
combinations and tempi the training set left out), the model generates each prompt (caption and
attributes) under four conditions: guidance 3 (the default), guidance 1, unconditional (no text,
no attributes) and the guidance-3 clips scored against shuffled prompts; a fifth, real renders of
the same prompts (another seed), shows what the judges give the real thing, and a sixth, those
renders through the model's codec, what they give the best the language model could make. The attribute probes
stored with the model (trained on real renders, ``probes/``; trained here when absent) and the beat
tracker judge them against real renders of the same prompts (:func:`~musicgen_jax.eval.adherence.
adherence_report`); the report is written as JSON and as an HTML page with spectrograms.

Beside adherence the report shows how the model was made: the codec's reconstruction of the same
held-out real renders, and the LM's loss curves and each recipe stage's time (``training.json``,
written by :mod:`musicgen_jax.recipes.demo` into the exported model).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from musicgen_jax import hub
from musicgen_jax.data.synthetic import compose, render
from musicgen_jax.data.synthetic.holdout import HeldOutPrompt, held_out_prompts
from musicgen_jax.eval.adherence import GeneratedClip, adherence_report, shuffled_requests
from musicgen_jax.eval.adherence_html import adherence_blocks
from musicgen_jax.eval.probes import AttributeProbes, render_examples
from musicgen_jax.eval.reconstruction import Clip, evaluate_reconstruction
from musicgen_jax.eval.report import (
    Block,
    Heading,
    Image,
    Paragraph,
    Table,
    format_value,
    plot_curves,
    render_html,
)
from musicgen_jax.pipeline import MusicGen
from musicgen_jax.recipes.demo import SUMMARY

PROBES_DIR = "probes"  # inside the model directory
BATCH = 8


def real_render(prompt: HeldOutPrompt, duration: float, sample_rate: int, seed: int) -> np.ndarray:
    """A real render of the prompt's piece: the synthetic set's composer and synthesiser (``seed``
    draws the notes and the sound; the prompt fixes the rest)."""
    rng = np.random.default_rng((seed, 7919))
    spec = prompt.spec
    notes = compose(spec, duration, rng)
    return render(notes, duration, sample_rate, rng, loudness=spec.loudness, rising=spec.rising)


def _round_trip(codec, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio`` ``[channels, samples]`` encoded and decoded by ``codec`` (at its rate, trimmed)."""
    decoded = np.asarray(codec.decode(codec.encode(audio[None], sample_rate)))[0]
    return decoded[..., : audio.shape[-1]]


def probes_for(model_dir: Path, sample_rate: int) -> AttributeProbes:
    """The probes stored with the model, trained on real renders and stored there when absent."""
    directory = model_dir / PROBES_DIR
    if (directory / "probes.json").is_file():
        return AttributeProbes.load(directory)
    probes = AttributeProbes.train(render_examples(600, seed=1, duration=6.0, sample_rate=sample_rate))
    probes.save(directory)
    return probes


def generate(
    model: MusicGen,
    prompts: Sequence[HeldOutPrompt],
    duration: float,
    seed: int,
    guidance: float,
    conditioned: bool = True,
) -> list[GeneratedClip]:
    clips = []
    for start in range(0, len(prompts), BATCH):
        part = prompts[start : start + BATCH]
        result = model.generate(
            [p.caption if conditioned else None for p in part],
            attributes=[p.attributes if conditioned else None for p in part],
            duration=duration,
            seed=seed + start,
            guidance_scale=guidance,
        )
        for offset, (prompt, audio) in enumerate(zip(part, result.audio, strict=True)):
            clips.append(
                GeneratedClip(
                    f"prompt_{start + offset:02d}",
                    audio,
                    result.sample_rate,
                    prompt.attributes,
                    prompt.caption,
                    reference=start + offset,  # the prompt's real render in adherence_report's list
                )
            )
    return clips


def evaluate(
    model_name: str, num_prompts: int = 40, duration: float = 10.0, seed: int = 0
) -> tuple[dict, dict[str, list[GeneratedClip]]]:
    model_dir = hub.resolve(model_name)
    model = MusicGen.from_pretrained(model_name)
    rate = model.sample_rate
    prompts = held_out_prompts(num_prompts, seed=seed)
    began = time.perf_counter()
    guided = generate(model, prompts, duration, seed, guidance=3.0)
    conditions = {
        "guidance 3": guided,
        "guidance 1": generate(model, prompts, duration, seed, guidance=1.0),
        "unconditional": generate(model, prompts, duration, seed, guidance=1.0, conditioned=False),
        "shuffled prompts (guidance 3)": shuffled_requests(guided, seed=seed),
    }
    generation_seconds = time.perf_counter() - began
    # Three renders of each prompt: the reference, the second half of the paired distance's
    # reference pairs, and a condition of its own (what real music scores, and the paired floor).
    real, second, third = (
        [(real_render(p, duration, rate, seed + render), rate) for p in prompts] for render in range(3)
    )
    conditions["real renders (another seed)"] = [
        GeneratedClip(f"real_{i:02d}", audio, rate, p.attributes, p.caption, reference=i)
        for i, ((audio, _), p) in enumerate(zip(third, prompts, strict=True))
    ]
    codec = model.codec
    conditions["real renders through the codec"] = [
        dataclasses.replace(clip, name=f"codec_{i:02d}", audio=_round_trip(codec, clip.audio, rate))
        for i, clip in enumerate(conditions["real renders (another seed)"])
    ]
    report = adherence_report(conditions, probes_for(Path(model_dir), rate), real, second_renders=second)
    report["model"] = {"name": model_name, "sample_rate": rate, "prompts": num_prompts, "duration": duration}
    report["generation_seconds"] = generation_seconds
    clips = [
        Clip(f"prompt_{i:02d}", audio, rate, stated_bpm=float(p.spec.tempo))
        for i, ((audio, _), p) in enumerate(zip(real, prompts, strict=True))
    ]
    report["codec_reconstruction"] = evaluate_reconstruction(codec, clips)
    summary = Path(model_dir) / SUMMARY
    report["training"] = json.loads(summary.read_text()) if summary.is_file() else None
    report["prompts"] = [
        {"caption": p.caption, "reasons": list(p.reasons), **dataclasses.asdict(p.attributes)}
        for p in prompts
    ]
    return report, conditions


def making_blocks(report: dict) -> list[Block]:
    """How the model was made: its codec on the held-out real renders, its stages' times, its losses."""
    codec = report["codec_reconstruction"]
    figures, facts = codec["summary"], codec["codec"]
    tempo = figures["tempo_reconstructed_vs_original"]
    blocks: list[Block] = [
        Heading("The demo model", 1),
        Paragraph(
            f"{report['model']['prompts']} held-out prompts of {report['model']['duration']:g} s; "
            f"{report['generation_seconds']:.0f} s to generate all conditions on this machine."
        ),
        Heading("Its codec on the held-out real renders"),
        Paragraph(
            f"{facts['num_codebooks']} codebooks at {facts['bandwidth_kbps']:g} kbps, "
            f"{facts['sample_rate']} Hz: log-mel distance {format_value(figures['mel_distance_db_mean'])} dB "
            f"(mean), SI-SNR {format_value(figures['si_snr_db_mean'])} dB (mean); the reconstruction's tempo "
            f"kept in {tempo['kept']}, an octave off in {tempo['octave']}, lost in {tempo['lost']} of "
            f"{figures['clips']} clips (against the beat tracker's reading of the original)."
        ),
    ]
    training = report.get("training")
    if not training:
        return [*blocks, Paragraph("No training.json in the model: its making is not recorded.")]
    stages = training["stages_seconds"]
    rows = tuple((stage, f"{seconds / 60:.1f}") for stage, seconds in stages.items())
    blocks += [
        Heading("Training"),
        Paragraph(
            f"The LM trained on {training['lm_pieces']} synthetic pieces of {training['piece_seconds']:g} s "
            f"({training['valid_fraction']:.0%} held for validation) on a 2-core CPU; the codec: "
            f"{training['codec']}. Minutes per recipe stage (python -m musicgen_jax.recipes.demo), "
            f"{sum(stages.values()) / 60:.0f} in all:"
        ),
        Table(("stage", "minutes"), rows),
    ]
    curves = {"train": training["train_loss"], "validation": training["validation_loss"]}
    png = plot_curves(curves, "LM cross-entropy", "step", "nats per token")
    return [*blocks, Image("loss.png", png, "the LM's training and validation loss")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m musicgen_jax.recipes.demo_eval", description=__doc__)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="docs/demo-report", help="path prefix of the .json and .html")
    args = parser.parse_args(argv)
    report, conditions = evaluate(args.model, args.prompts, args.duration, args.seed)
    prefix = Path(args.output)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    page = render_html([*making_blocks(report), *adherence_blocks(report, conditions)], "The demo model")
    prefix.with_suffix(".html").write_text(page)
    print(f"wrote {prefix.with_suffix('.json')} and {prefix.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
