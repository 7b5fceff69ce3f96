"""``python -m musicgen_jax.eval {score,fad,clap,report,probes}``: evaluate audio files from the shell.

Each subcommand parses its arguments and calls the library; bad input (missing file, unreadable
audio, missing weights) prints one ``error:`` line and exits 1, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from musicgen_jax.eval.clips import AudioReadError, read_clip
from musicgen_jax.eval.embeddings import EMBEDDERS, EmbedderError, load_embedder
from musicgen_jax.eval.report import CLAP_KIND, FAD_KIND, SCORE_KIND, ReportError, write_report

FORMAT_VERSION = 1


def _write_json(data: dict, output: str | None) -> None:
    text = json.dumps(data, indent=2, allow_nan=False)  # allow_nan=False: a NaN would be a bug upstream
    if output is None:
        print(text)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(f"wrote {path}", file=sys.stderr)


def run_score(args: argparse.Namespace) -> None:
    from musicgen_jax.eval.metrics import evaluate_audio_detailed

    references = args.reference or []
    if len(references) not in (0, 1, len(args.audio)):
        raise ValueError(
            f"give one --reference for all clips or one per clip ({len(args.audio)}), not {len(references)}"
        )
    items = []
    for index, audio_path in enumerate(args.audio):
        audio, rate = read_clip(audio_path)
        reference_path = references[index if len(references) > 1 else 0] if references else None
        reference, reference_rate = read_clip(reference_path) if reference_path else (None, None)
        start = time.perf_counter()
        evaluation = evaluate_audio_detailed(audio, rate, reference, reference_rate)
        print(f"{audio_path}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        items.append(
            {
                "audio": str(Path(audio_path).resolve()),
                "reference": str(Path(reference_path).resolve()) if reference_path else None,
                **evaluation.to_json(),
            }
        )
    _write_json({"kind": SCORE_KIND, "version": FORMAT_VERSION, "items": items}, args.output)


def run_fad(args: argparse.Namespace) -> None:
    from musicgen_jax.eval.fad import fad_from_directories

    embedder = load_embedder(args.embedder, args.weights, args.device)
    result = fad_from_directories(args.generated, args.reference, embedder, args.save_reference_stats)
    print(f"FAD ({result.embedder}) = {result.fad:.4f}", file=sys.stderr)
    _write_json(
        {
            "kind": FAD_KIND,
            "version": FORMAT_VERSION,
            "generated": str(Path(args.generated).resolve()),
            "reference": str(Path(args.reference).resolve()),
            "result": result.to_json(),
        },
        args.output,
    )


def run_clap(args: argparse.Namespace) -> None:
    from musicgen_jax.eval.clap import clap_score

    if len(args.text) not in (1, len(args.audio)):
        raise ValueError(
            f"give one --text for all clips or one per clip ({len(args.audio)}), not {len(args.text)}"
        )
    texts = args.text * len(args.audio) if len(args.text) == 1 else args.text
    clips = [read_clip(path) for path in args.audio]
    embedder = load_embedder("clap", args.weights, args.device)
    score = clap_score(clips, texts, embedder)
    print(f"CLAP score = {score.mean:.4f}", file=sys.stderr)
    items = [
        {"audio": str(Path(path).resolve()), "text": text, "score": value}
        for path, text, value in zip(args.audio, texts, score.per_item, strict=True)
    ]
    _write_json(
        {"kind": CLAP_KIND, "version": FORMAT_VERSION, "clap_score": score.mean, "items": items}, args.output
    )


def run_report(args: argparse.Namespace) -> None:
    output = write_report(args.evaluation, args.output, plots=not args.no_plots)
    print(f"wrote {output}", file=sys.stderr)


def run_probes_train(args: argparse.Namespace) -> None:
    from musicgen_jax.eval.probes import AttributeProbes, render_examples

    if args.num_examples < 2 * args.held_out_every:
        raise ValueError(
            f"--num-examples {args.num_examples} is too few: give at least {2 * args.held_out_every}"
        )
    if args.duration <= 0 or args.sample_rate <= 0:
        raise ValueError("--duration and --sample-rate must be positive")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} exists and is not a directory")
    start = time.perf_counter()
    examples = render_examples(
        args.num_examples, seed=args.seed, duration=args.duration, sample_rate=args.sample_rate
    )
    probes = AttributeProbes.train(examples, held_out_every=args.held_out_every)
    rendered = {"seed": args.seed, "duration": args.duration, "sample_rate": args.sample_rate}
    probes = dataclasses.replace(probes, training={**probes.training, "renders": rendered})
    probes.save(output)
    accuracy = probes.accuracy
    print(
        f"on {accuracy['clips']} held-out renders: instruments {accuracy['instruments']['accuracy']:.3f} "
        f"(detection {accuracy['instruments']['detection_rate']:.3f}, false positives "
        f"{accuracy['instruments']['false_positive_rate']:.3f}), genre {accuracy['genre']['accuracy']:.3f}, "
        f"mood class {accuracy['mood']['accuracy']:.3f} ({time.perf_counter() - start:.0f} s)",
        file=sys.stderr,
    )
    print(f"wrote {output}", file=sys.stderr)


def add_eval_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``score``, ``fad``, ``clap``, ``report`` and ``probes`` to a subparsers object; each sets
    ``args.run`` (dispatch with ``run``), so another command line can mount them under a name of its own."""
    score = commands.add_parser(
        "score", help="signal metrics of one or more clips (optionally against references)"
    )
    score.add_argument("--audio", nargs="+", required=True, help="audio file(s) to evaluate")
    score.add_argument("--reference", nargs="+", help="reference file: one for all clips, or one per clip")
    score.add_argument("--output", help="JSON file to write (default: print to stdout)")
    score.set_defaults(run=run_score)

    fad = commands.add_parser("fad", help="Fréchet Audio Distance between two directories")
    fad.add_argument("--generated", required=True, help="directory of generated audio files")
    fad.add_argument("--reference", required=True, help="directory of reference audio files, or a saved .npz")
    fad.add_argument(
        "--embedder",
        default="vggish",
        choices=sorted(EMBEDDERS),
        help="; ".join(f"{k}: {v}" for k, v in EMBEDDERS.items()),
    )
    fad.add_argument("--weights", help="local weights file or directory for the embedder")
    fad.add_argument("--device", default="cpu", help="torch device for the embedder (cpu, cuda)")
    fad.add_argument("--save-reference-stats", help="also save the reference statistics to this .npz")
    fad.add_argument("--output", help="JSON file to write (default: print to stdout)")
    fad.set_defaults(run=run_fad)

    clap = commands.add_parser("clap", help="CLAP score of clips against their texts")
    clap.add_argument("--audio", nargs="+", required=True, help="audio file(s)")
    clap.add_argument("--text", nargs="+", required=True, help="one text for all clips, or one per clip")
    clap.add_argument("--weights", required=True, help="local transformers CLAP directory")
    clap.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    clap.add_argument("--output", help="JSON file to write (default: print to stdout)")
    clap.set_defaults(run=run_clap)

    report = commands.add_parser("report", help="turn an evaluation JSON into a Markdown or HTML report")
    report.add_argument("evaluation", help="JSON written by score, fad or clap")
    report.add_argument(
        "--output", required=True, help="report file: .md (plots saved beside) or .html (embedded)"
    )
    report.add_argument("--no-plots", action="store_true", help="tables only")
    report.set_defaults(run=run_report)

    probes = commands.add_parser(
        "probes", help="attribute probes (instruments, genre, mood) for prompt adherence"
    )
    probe_commands = probes.add_subparsers(dest="probes_command", required=True)
    train = probe_commands.add_parser(
        "train", help="train the probes on renders of the synthetic set and store them in a directory"
    )
    train.add_argument("--output", required=True, help="directory to write probes.npz and probes.json into")
    train.add_argument("--num-examples", type=int, default=600, help="pieces to render (default 600)")
    train.add_argument("--duration", type=float, default=6.0, help="seconds per piece (default 6)")
    train.add_argument(
        "--seed", type=int, default=1, help="synthetic-set seed (default 1: not the training set's 0)"
    )
    train.add_argument("--sample-rate", type=int, default=16000, help="render rate (default 16000)")
    train.add_argument(
        "--held-out-every", type=int, default=4, help="every n-th piece is kept out to measure the probes"
    )
    train.set_defaults(run=run_probes_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.eval", description="Evaluate generated audio."
    )
    add_eval_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; bad input becomes one ``error:`` line on stderr and status 1."""
    try:
        args.run(args)
    except (AudioReadError, EmbedderError, ReportError, ValueError, TypeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
