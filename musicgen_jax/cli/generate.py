"""``musicgen-jax generate`` (one prompt) and ``generate-batch`` (a file of prompts)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from musicgen_jax.audio import load_audio
from musicgen_jax.cli.arguments import (
    UsageError,
    check_writable,
    generation_kwargs,
    output_path,
    read_melody,
)
from musicgen_jax.cli.running import Progress, load_model, write_audio
from musicgen_jax.generation.params import GenerationParams, GenerationRequest


def run_generate(args: argparse.Namespace) -> int:
    if args.unconditional and args.prompt:
        raise UsageError("give a prompt or --unconditional, not both")
    if not args.unconditional and not (args.prompt or "").strip():
        raise UsageError(
            "the prompt is empty; describe the music, or pass --unconditional for music without a prompt"
        )
    kwargs = generation_kwargs(args)
    output, fmt = output_path(Path(args.output), args.format)
    check_writable(output)
    if args.codes_out:
        check_writable(Path(args.codes_out))
    audio_prompt = None
    if args.audio_prompt:
        if not Path(args.audio_prompt).is_file():
            raise UsageError(f"no audio file at {args.audio_prompt}")
        audio_prompt = load_audio(args.audio_prompt)
    melody = read_melody(args.melody, args.melody_start, args.melody_end)
    model = load_model(args)
    if audio_prompt is not None:
        kwargs.update(audio_prompt=audio_prompt[0], audio_prompt_sample_rate=audio_prompt[1])
    if melody is not None:
        model.require_melody_model()
        kwargs.update(melody=melody[0], melody_sample_rate=melody[1])
    progress = Progress(model.frame_rate)
    began = time.perf_counter()
    try:
        result = model.generate([None if args.unconditional else args.prompt], progress=progress, **kwargs)
    finally:
        progress.close()
    wall = time.perf_counter() - began
    write_audio(model, result.audio[0], output, fmt, args.normalization)
    if args.codes_out:
        np.save(args.codes_out, result.codes)
    print(
        f"wrote {output} ({result.duration:.2f} s, seed {result.seeds[0]}) in {wall:.1f} s: "
        f"generation {result.generate_seconds:.2f} s, decoding {result.decode_seconds:.2f} s, "
        f"compilation {result.compile_seconds:.2f} s; real-time factor {result.real_time_factor:.2f}x"
    )
    return 0


def read_prompt_file(path: Path) -> list[dict]:
    """One prompt a line, or JSONL objects with a ``prompt`` and per-line settings."""
    if not path.is_file():
        raise UsageError(f"no prompts file at {path}")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise UsageError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("prompt", ""), str):
                raise UsageError(f"{path}:{number}: expected an object with a string 'prompt'")
            entries.append(entry)
        else:
            entries.append({"prompt": line})
    if not entries:
        raise UsageError(f"{path} holds no prompts")
    return entries


def run_generate_batch(args: argparse.Namespace) -> int:
    entries = read_prompt_file(Path(args.prompts))
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    out_dir = Path(args.output_dir)
    jobs = []
    melodies: dict[tuple, tuple | None] = {}  # (file, start, end) -> (audio, rate): each read once
    for number, entry in enumerate(entries):
        try:
            kwargs = generation_kwargs(args, entry)
        except ValueError as error:
            raise UsageError(f"prompt {number + 1} ({entry.get('prompt', '')[:40]!r}): {error}") from None
        name = entry.get("output") or f"{number:04d}"
        path, fmt = output_path(out_dir / name, entry.get("format") or args.format)
        melody_args = [entry.get(key, getattr(args, key)) for key in ("melody", "melody_start", "melody_end")]
        try:
            kwargs["melody"] = melodies.get(tuple(melody_args)) or read_melody(*melody_args)
        except UsageError as error:
            raise UsageError(f"prompt {number + 1}: {error}") from None
        melodies[tuple(melody_args)] = kwargs["melody"]
        jobs.append((entry.get("prompt", ""), kwargs, path, fmt, entry))
    out_dir.mkdir(parents=True, exist_ok=True)
    check_writable(out_dir / "probe.wav")
    model = load_model(args)
    # (melody, duration, stride) -> its chroma: one computation for a melody many lines share
    # (long-form windows follow the melody, so the duration and stride are part of the key).
    chromas = {}
    for _prompt, kwargs, _path, _fmt, _entry in jobs:
        melody = kwargs.pop("melody")
        span = GenerationParams(**{k: v for k, v in kwargs.items() if k not in ("attributes", "seed")})
        key = None if melody is None else (id(melody), span.duration, span.extend_stride)
        if key is not None and key not in chromas:  # refused here by a text-only model
            chromas[key] = model.melody_chroma(*melody, span.duration, span.extend_stride)
        kwargs["melody_chroma"] = None if key is None else chromas[key]
    seconds = sum(k["duration"] for _, k, _, _, _ in jobs)
    progress = Progress(model.frame_rate)
    began = time.perf_counter()
    done_frames = 0
    total = int(seconds * model.frame_rate)
    try:
        for start in range(0, len(jobs), args.batch_size):
            chunk = jobs[start : start + args.batch_size]
            requests = []
            for prompt, kwargs, _, _, _ in chunk:
                kwargs = dict(kwargs)
                attributes = kwargs.pop("attributes")
                seed = kwargs.pop("seed")
                chroma = kwargs.pop("melody_chroma")
                params = GenerationParams(**kwargs, seed=seed)
                requests.append(
                    GenerationRequest(
                        prompt=prompt, params=params, attributes=attributes, melody_chroma=chroma
                    )
                )
            offset = done_frames
            output = model.engine.generate(requests, progress=lambda d, _t, o=offset: progress(o + d, total))
            done_frames += sum(f.shape[1] for f in output.frames)
            for (prompt, _kwargs, path, fmt, entry), frames, seed in zip(chunk, output.frames, output.seeds):
                audio = model.decode(frames[None])[0]
                write_audio(model, audio, path, fmt, entry.get("normalization", args.normalization))
                print(
                    json.dumps(
                        {
                            "prompt": prompt,
                            "file": str(path),
                            "seed": seed,
                            "seconds": frames.shape[1] / model.frame_rate,
                        }
                    )
                )
    finally:
        progress.close()
    wall = time.perf_counter() - began
    print(
        f"wrote {len(jobs)} files ({seconds:.1f} s of audio) in {wall:.1f} s: "
        f"real-time factor {seconds / wall:.2f}x",
        file=sys.stderr,
    )
    return 0
