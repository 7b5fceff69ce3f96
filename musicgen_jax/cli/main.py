"""The ``musicgen-jax`` command: generate, generate-batch, interactive, convert.

Every argument is checked before the model loads, so a typo costs milliseconds, and every error a
user can cause ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from musicgen_jax import hub
from musicgen_jax.audio.formats import DEFAULT_NORMALIZATION, FORMATS, NORMALIZATIONS
from musicgen_jax.config_io import ConfigError
from musicgen_jax.dtypes import RUN_DTYPE_NAMES

DEFAULT_MODEL = "facebook/musicgen-small"


class UsageError(ValueError):
    """Bad input from the command line."""


# ------------------------------------------------------------------------------------ arguments


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"hub id or local directory (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=RUN_DTYPE_NAMES,
        help="auto: bfloat16 on GPU/TPU, float32 on CPU",
    )
    parser.add_argument("--cache-dir", default=None, help="persistent compilation cache ('' to disable)")


def _add_generation_arguments(parser: argparse.ArgumentParser, batch: bool = False) -> None:
    from musicgen_jax.generation.params import GenerationParams

    defaults = GenerationParams()
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds (1-120)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="0 = off")
    parser.add_argument("--top-p", type=float, default=defaults.top_p, help="in (0, 1]; 0 = off")
    parser.add_argument("--guidance-scale", type=float, default=defaults.guidance_scale)
    parser.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty)
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token")
    parser.add_argument(
        "--num-beams", type=int, default=defaults.num_beams, help="beam search width (slower)"
    )
    parser.add_argument("--extend-stride", type=float, default=defaults.extend_stride)
    parser.add_argument("--genre")
    parser.add_argument("--mood", help="one mood or a comma-separated list")
    parser.add_argument("--tempo", type=float, help="beats per minute")
    parser.add_argument("--instruments", help="comma-separated instruments")
    parser.add_argument(
        "--format", choices=FORMATS, help="audio format (default: from the output name, else wav)"
    )
    parser.add_argument("--normalization", default=DEFAULT_NORMALIZATION, choices=NORMALIZATIONS)
    if not batch:
        parser.add_argument("--audio-prompt", help="an audio file to continue from")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicgen-jax", description="MusicGen text-to-music in JAX.")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="make music from a text prompt")
    generate.add_argument(
        "prompt", nargs="?", default=None, help='e.g. "Upbeat jazz piano with smooth saxophone"'
    )
    generate.add_argument("--unconditional", action="store_true", help="music without a prompt")
    generate.add_argument("--output", default="output.wav", help="audio file to write")
    generate.add_argument("--codes-out", help="also save the codes [batch, codebooks, frames] as .npy")
    _add_model_arguments(generate)
    _add_generation_arguments(generate)

    batch = commands.add_parser("generate-batch", help="make music for every prompt in a file")
    batch.add_argument(
        "--prompts", required=True, help="text file (one prompt a line) or JSONL (per-line settings)"
    )
    batch.add_argument("--output-dir", required=True)
    batch.add_argument("--batch-size", type=int, default=8, help="prompts per device batch")
    _add_model_arguments(batch)
    _add_generation_arguments(batch, batch=True)

    interactive = commands.add_parser("interactive", help="a prompt loop that keeps the model loaded")
    interactive.add_argument("--output-dir", default=".")
    _add_model_arguments(interactive)
    _add_generation_arguments(interactive, batch=True)

    convert = commands.add_parser("convert", help="convert checkpoints to and from PyTorch")
    direction = convert.add_subparsers(dest="direction", required=True)
    from musicgen_jax.conversion.cli import add_hf_to_jax_arguments, add_jax_to_hf_arguments

    add_hf_to_jax_arguments(direction.add_parser("hf-to-jax", help="transformers/audiocraft -> musicgen-jax"))
    add_jax_to_hf_arguments(direction.add_parser("jax-to-hf", help="musicgen-jax -> transformers"))
    return parser


# ------------------------------------------------------------------------------------ checks


def generation_kwargs(args: argparse.Namespace, overrides: dict | None = None) -> dict:
    """Validated keyword arguments for ``MusicGen.make_requests`` (raises ValueError subclasses)."""
    from musicgen_jax.conditioning import Attributes
    from musicgen_jax.generation.params import GenerationParams

    values = dict(
        duration=args.duration,
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        guidance_scale=args.guidance_scale,
        repetition_penalty=args.repetition_penalty,
        greedy=args.greedy,
        num_beams=args.num_beams,
        extend_stride=args.extend_stride,
    )
    attributes = dict(genre=args.genre, mood=args.mood, tempo=args.tempo, instruments=args.instruments)
    for key, value in (overrides or {}).items():
        key = key.replace("-", "_")
        if key in values:
            values[key] = value
        elif key in attributes:
            attributes[key] = value
        elif key not in ("prompt", "output", "format", "normalization"):
            raise UsageError(f"unknown setting {key!r}")
    GenerationParams(**values)  # raises with the offending field named
    return dict(values, attributes=Attributes.create(**attributes))


def output_path(path: Path, requested: str | None) -> tuple[Path, str]:
    """The file that will be written and its format (a missing suffix is the format's)."""
    from musicgen_jax.audio.io import resolve_format

    try:
        return resolve_format(path, requested)
    except ValueError as error:
        raise UsageError(str(error)) from None


def check_writable(path: Path) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name")
    if not directory.is_dir():
        raise UsageError(f"cannot write {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {path}: permission denied")


# ------------------------------------------------------------------------------------ commands


def load_model(args: argparse.Namespace):
    from musicgen_jax import MusicGen
    from musicgen_jax.runtime import enable_compilation_cache

    enable_compilation_cache(args.cache_dir)
    began = time.perf_counter()
    model = MusicGen.from_pretrained(args.model, dtype=args.dtype)
    print(f"loaded {args.model} in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    return model


class _Progress:
    """A progress bar over generated seconds of audio."""

    def __init__(self, frame_rate: float, label: str = "generating"):
        from tqdm import tqdm

        self.frame_rate = frame_rate
        self.bar = tqdm(
            total=0,
            unit="s",
            desc=label,
            bar_format="{desc}: {n:.1f}/{total:.1f} s audio |{bar}| {elapsed}",
            file=sys.stderr,
        )

    def __call__(self, done: int, total: int) -> None:
        self.bar.total = round(total / self.frame_rate, 2)
        self.bar.n = round(done / self.frame_rate, 2)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _write(model, audio, path: Path, fmt: str, normalization: str) -> None:
    from musicgen_jax.audio import save_audio

    save_audio(path, audio, model.sample_rate, format=fmt, normalization=normalization)


def run_generate(args: argparse.Namespace) -> int:
    import numpy as np

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
        from musicgen_jax.audio import load_audio

        if not Path(args.audio_prompt).is_file():
            raise UsageError(f"no audio file at {args.audio_prompt}")
        audio_prompt = load_audio(args.audio_prompt)
    model = load_model(args)
    if audio_prompt is not None:
        kwargs.update(audio_prompt=audio_prompt[0], audio_prompt_sample_rate=audio_prompt[1])
    progress = _Progress(model.frame_rate)
    began = time.perf_counter()
    try:
        result = model.generate([None if args.unconditional else args.prompt], progress=progress, **kwargs)
    finally:
        progress.close()
    wall = time.perf_counter() - began
    _write(model, result.audio[0], output, fmt, args.normalization)
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
    from musicgen_jax.generation.params import GenerationParams, GenerationRequest

    entries = read_prompt_file(Path(args.prompts))
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    out_dir = Path(args.output_dir)
    jobs = []
    for number, entry in enumerate(entries):
        try:
            kwargs = generation_kwargs(args, entry)
        except ValueError as error:
            raise UsageError(f"prompt {number + 1} ({entry.get('prompt', '')[:40]!r}): {error}") from None
        name = entry.get("output") or f"{number:04d}"
        path, fmt = output_path(out_dir / name, entry.get("format") or args.format)
        jobs.append((entry.get("prompt", ""), kwargs, path, fmt, entry))
    out_dir.mkdir(parents=True, exist_ok=True)
    check_writable(out_dir / "probe.wav")
    model = load_model(args)
    seconds = sum(k["duration"] for _, k, _, _, _ in jobs)
    progress = _Progress(model.frame_rate)
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
                params = GenerationParams(**kwargs, seed=seed)
                requests.append(GenerationRequest(prompt=prompt, params=params, attributes=attributes))
            offset = done_frames
            output = model.engine.generate(requests, progress=lambda d, _t, o=offset: progress(o + d, total))
            done_frames += sum(f.shape[1] for f in output.frames)
            for (prompt, _kwargs, path, fmt, entry), frames, seed in zip(chunk, output.frames, output.seeds):
                audio = model.decode(frames[None])[0]
                _write(model, audio, path, fmt, entry.get("normalization", args.normalization))
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


def run_interactive(args: argparse.Namespace) -> int:
    kwargs = generation_kwargs(args)
    out_dir = Path(args.output_dir)
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir} is not a directory")
    model = load_model(args)
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
                    from musicgen_jax.conditioning import Attributes

                    current = {
                        "genre": attributes.genre,
                        "mood": list(attributes.moods),
                        "tempo": attributes.tempo,
                        "instruments": list(attributes.instruments),
                    }
                    current[name] = parsed
                    attributes = Attributes.create(**current)
                else:
                    from musicgen_jax.generation.params import GenerationParams

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
        progress = _Progress(model.frame_rate)
        try:
            result = model.generate([line], progress=progress, **kwargs)
        except ValueError as error:
            progress.close()
            print(f"error: {error}", file=sys.stderr)
            continue
        progress.close()
        _write(model, result.audio[0], path, args.format or "wav", args.normalization)
        print(
            f"wrote {path} ({result.duration:.1f} s, seed {result.seeds[0]}, "
            f"real-time factor {result.real_time_factor:.2f}x)"
        )


def run_convert(args: argparse.Namespace) -> int:
    from musicgen_jax.conversion.cli import run_hf_to_jax, run_jax_to_hf

    began = time.perf_counter()
    output = run_hf_to_jax(args) if args.direction == "hf-to-jax" else run_jax_to_hf(args)
    print(f"wrote {output} in {time.perf_counter() - began:.1f} s")
    return 0


COMMANDS = {
    "generate": run_generate,
    "generate-batch": run_generate_batch,
    "interactive": run_interactive,
    "convert": run_convert,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from musicgen_jax.conversion.tensors import CheckpointError

    try:
        return COMMANDS[args.command](args)
    except hub.ModelNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (UsageError, ConfigError, CheckpointError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
