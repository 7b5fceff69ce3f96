"""``musicgen-jax interactive``: a prompt loop that keeps the model loaded."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from musicgen_jax.cli.arguments import UsageError, generation_kwargs, read_melody
from musicgen_jax.cli.running import Progress, load_model, write_audio
from musicgen_jax.conditioning import Attributes
from musicgen_jax.generation.params import GenerationParams


def run_interactive(args: argparse.Namespace) -> int:
    kwargs = generation_kwargs(args)
    out_dir = Path(args.output_dir)
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir} is not a directory")
    melody = read_melody(args.melody, args.melody_start, args.melody_end)  # every prompt follows it
    model = load_model(args)
    melody_kwargs = {}
    if melody is not None:
        model.require_melody_model()
        melody_kwargs = dict(melody=melody[0], melody_sample_rate=melody[1])
    print(
        "Type a prompt and press Enter (':q' or Ctrl-D to quit). Settings: ':duration 10', ':seed 3', ...",
        file=sys.stderr,
    )
    number = 0
    while True:
        try:
            line = input("prompt> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if not line:
            continue
        if line in (":q", ":quit", ":exit"):
            return 0
        if line.startswith(":"):
            name, _, value = line[1:].partition(" ")
            try:
                parsed = json.loads(value) if value.strip() else None
            except json.JSONDecodeError:
                parsed = value.strip()
            try:
                updated = dict(kwargs)
                attributes = updated.pop("attributes")
                if name in ("genre", "mood", "tempo", "instruments"):
                    current = {
                        "genre": attributes.genre,
                        "mood": list(attributes.moods),
                        "tempo": attributes.tempo,
                        "instruments": list(attributes.instruments),
                    }
                    current[name] = parsed
                    attributes = Attributes.create(**current)
                else:
                    if name not in updated:
                        raise UsageError(f"unknown setting {name!r}")
                    updated[name] = parsed
                    GenerationParams(**updated)
                kwargs = dict(updated, attributes=attributes)
                print(f"{name} = {parsed!r}", file=sys.stderr)
            except ValueError as error:
                print(f"error: {error}", file=sys.stderr)
            continue
        number += 1
        path = out_dir / f"interactive-{number:03d}.{args.format or 'wav'}"
        progress = Progress(model.frame_rate)
        try:
            result = model.generate([line], progress=progress, **kwargs, **melody_kwargs)
        except ValueError as error:
            progress.close()
            print(f"error: {error}", file=sys.stderr)
            continue
        progress.close()
        write_audio(model, result.audio[0], path, args.format or "wav", args.normalization)
        print(
            f"wrote {path} ({result.duration:.1f} s, seed {result.seeds[0]}, "
            f"real-time factor {result.real_time_factor:.2f}x)"
        )
