"""Generation speed: musicgen-jax next to transformers' PyTorch MusicGen, same weights, same machine.

    python benchmarks/generate_speed.py --shape small --batch 1 8 --seconds 5

Builds a random-weight transformers MusicGen with a published shape (small/medium/large: decoder,
t5-base text encoder, the 32 kHz EnCodec), saves it once, then runs each implementation in its own
process (so peak memory is each one's own) with sampling (top-k 250) and guidance 3.0, and prints
decoder steps per second, milliseconds per step, the real-time factor of token generation and of
generation plus codec decoding, compile time and peak memory, with the ratio ours / transformers.
A decoder step is one frame of all codebooks (1/50 s of audio); guidance doubles the rows it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = ("tiny", "small", "medium", "large")  # presets in musicgen_jax/configs/model/


def build_checkpoint(shape: str, directory: Path, dtype: str = "float32") -> None:
    """A random-weight transformers MusicGen of preset ``shape`` saved to ``directory`` in ``dtype``
    (float16 halves what large's 3.3B parameters cost to write and read), with Meta's 32 kHz codec
    layout where the preset names none. Built on the GPU when there is one: initialising billions
    of parameters on a CPU takes minutes."""
    import dataclasses

    import torch
    from transformers import MusicgenForConditionalGeneration

    from musicgen_jax.models.config import CodecShape, MusicGenConfig
    from musicgen_jax.testing import build_tokenizer

    config = MusicGenConfig.preset(shape)
    if config.audio.codec_shape is None:
        config = dataclasses.replace(
            config, audio=dataclasses.replace(config.audio, codec_shape=CodecShape())
        )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = MusicgenForConditionalGeneration(config.to_transformers())
    model = model.to({"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype])
    model.generation_config.decoder_start_token_id = config.decoder.pad_token_id
    model.generation_config.pad_token_id = config.decoder.pad_token_id
    model.save_pretrained(str(directory))
    build_tokenizer(config.text_encoder.vocab_size).save_pretrained(str(directory))


PROMPTS = [
    "Upbeat jazz piano with smooth saxophone",
    "80s pop track with bassy drums and synth",
    "calm ambient pads with soft bells",
    "heavy rock with loud guitars and drums",
]


def prompts_for(batch: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(batch)]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_transformers(args) -> dict:
    import torch
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        args.reference_dtype or args.dtype
    ]
    if device == "cpu" and not args.reference_dtype:
        dtype = torch.float32  # half precision is slow or missing on most CPUs: only when asked
    model = MusicgenForConditionalGeneration.from_pretrained(args.checkpoint, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    inputs = tokenizer(prompts_for(args.batch), padding=True, return_tensors="pt").to(device)
    frames = int(args.seconds * 50)
    decode = model.audio_encoder.decode
    captured = []

    class Skipped:  # token generation only: the codec is timed on its own below
        def __init__(self, codes):
            self.audio_values = torch.zeros((codes.shape[1], 1, 1), device=device)

    model.audio_encoder.decode = lambda codes, *a, **k: (captured.append(codes), Skipped(codes))[1]

    def generate(n):
        with torch.inference_mode():
            model.generate(**inputs, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=n + 3)
        if device == "cuda":
            torch.cuda.synchronize()

    generate(10)  # warm-up
    captured.clear()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    generate(frames)
    seconds = time.perf_counter() - began
    codes = captured[-1]
    began = time.perf_counter()
    with torch.inference_mode():
        decode(codes, [None] * codes.shape[1])
    if device == "cuda":
        torch.cuda.synchronize()
    decode_seconds = time.perf_counter() - began
    device_peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return dict(
        steps=frames + 3,
        seconds=seconds,
        decode_seconds=decode_seconds,
        compile_seconds=0.0,
        device_peak_gb=device_peak,
    )


def run_jax(args) -> dict:
    import jax

    from musicgen_jax import MusicGen
    from musicgen_jax.runtime import CACHE_DIR_VARIABLE, enable_compilation_cache

    if os.environ.get(CACHE_DIR_VARIABLE):  # a persistent cache only when asked for (the GPU suite)
        enable_compilation_cache()
    model = MusicGen.from_pretrained(
        args.checkpoint,
        dtype=args.dtype,
        layer_unroll=args.layer_unroll,
        kv_splits=args.kv_splits,
        layer_layout=args.layer_layout,
        quantize=args.quantize,
    )
    prompts = prompts_for(args.batch)
    frames = int(args.seconds * 50)
    began = time.perf_counter()
    model.engine.warmup(batch_sizes=(args.batch,), durations=(args.seconds,), text_tokens=16)
    compile_seconds = time.perf_counter() - began
    model.generate_tokens(prompts, duration=1.0, seed=0)  # the encoder's compile, outside the timing
    began = time.perf_counter()
    output = model.engine.generate(model.make_requests(prompts, duration=args.seconds, seed=1))
    seconds = time.perf_counter() - began
    kernels = None
    if args.profile:
        from profile_trace import kernel_table, programs_summary

        with jax.profiler.trace(args.profile, create_perfetto_trace=True):
            model.engine.generate(model.make_requests(prompts, duration=args.seconds, seed=2))
        kernels = dict(
            table=kernel_table(args.profile, steps=frames + 3),
            programs=programs_summary(model.engine.programs),
        )
    decode_seconds = None
    try:
        import numpy as np

        codes = np.stack(output.frames)
        model.decode(codes[:, :, :10])  # codec warm-up
        began = time.perf_counter()
        model.decode(codes)
        decode_seconds = time.perf_counter() - began
    except ImportError:
        pass
    stats = jax.devices()[0].memory_stats() or {}
    device_peak = stats.get("peak_bytes_in_use")
    return dict(
        steps=frames + 3,
        seconds=seconds,
        decode_seconds=decode_seconds,
        compile_seconds=compile_seconds,
        device_peak_gb=device_peak / 2**30 if device_peak else None,
        kernels=kernels,
    )


def worker(args) -> None:
    args.batch = args.batch[0]
    result = run_jax(args) if args.worker == "jax" else run_transformers(args)
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result), flush=True)


def machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="small", choices=SHAPES)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of audio per row")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument(
        "--reference-dtype",
        choices=("float32", "bfloat16", "float16"),
        help="transformers' dtype (default: --dtype on a GPU, float32 on a CPU; the issue's GPU "
        "reference table is float16; bfloat16 on a CPU with native bf16 dots)",
    )
    parser.add_argument(
        "--layer-unroll", type=int, default=1, help="musicgen-jax: layers per layer-loop iteration"
    )
    parser.add_argument(
        "--kv-splits", type=int, default=4, help="musicgen-jax: attention spans per length bucket"
    )
    parser.add_argument(
        "--layer-layout",
        default="auto",
        choices=("auto", "scanned", "unrolled"),
        help="musicgen-jax: the decoder's parameter layout (auto: unrolled for large models on CPUs)",
    )
    parser.add_argument("--quantize", choices=("int8",), help="musicgen-jax: weight-only int8")
    parser.add_argument(
        "--profile", help="musicgen-jax: trace one more run into this folder and print its top kernels"
    )
    parser.add_argument("--checkpoint", help="reuse a saved transformers checkpoint")
    parser.add_argument(
        "--build", help="only build the random checkpoint into this folder (see --save-dtype)"
    )
    parser.add_argument("--save-dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternating runs per batch; the table shows the median"
    )
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", choices=("jax", "transformers"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    if args.build:
        build_checkpoint(args.shape, Path(args.build), args.save_dtype)
        return
    temporary = None
    checkpoint = args.checkpoint
    if checkpoint is None:
        temporary = tempfile.TemporaryDirectory()
        checkpoint = str(Path(temporary.name) / f"musicgen-{args.shape}")
        print(f"building a random musicgen-{args.shape} ...", file=sys.stderr)
        build_checkpoint(args.shape, Path(checkpoint), args.save_dtype)
    runs: dict[tuple[int, str], list[dict]] = {}
    for batch in args.batch:
        # Repetitions alternate the implementations, so each pair shares the machine's state of the
        # moment; a shared machine's noise shows as the spread between them.
        for repetition in range(args.repeat):
            for impl in (["transformers"] if not args.skip_transformers else []) + ["jax"]:
                command = [
                    sys.executable,
                    __file__,
                    "--worker",
                    impl,
                    "--checkpoint",
                    checkpoint,
                    "--batch",
                    str(batch),
                    "--seconds",
                    str(args.seconds),
                    "--dtype",
                    args.dtype,
                    "--shape",
                    args.shape,
                    "--layer-unroll",
                    str(args.layer_unroll),
                    "--kv-splits",
                    str(args.kv_splits),
                    "--layer-layout",
                    args.layer_layout,
                ]
                if args.quantize:
                    command += ["--quantize", args.quantize]
                if args.reference_dtype:
                    command += ["--reference-dtype", args.reference_dtype]
                if args.profile and impl == "jax" and repetition == 0:
                    command += ["--profile", str(Path(args.profile) / f"batch{batch}")]
                done = subprocess.run(command, capture_output=True, text=True)
                line = [text for text in done.stdout.splitlines() if text.startswith("RESULT ")]
                if done.returncode or not line:
                    print(f"{impl} batch {batch} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                    continue
                result = json.loads(line[0][len("RESULT ") :])
                result.update(
                    impl=impl,
                    batch=batch,
                    repetition=repetition,
                    steps_per_s=result["steps"] / result["seconds"],
                )
                runs.setdefault((batch, impl), []).append(result)
                print(f"  {impl:12s} batch {batch}: {result['steps_per_s']:.1f} steps/s", file=sys.stderr)
    reference = args.reference_dtype or args.dtype
    print(
        f"\nmusicgen-{args.shape}, musicgen-jax {args.dtype} "
        f"(layer layout {args.layer_layout}, unroll {args.layer_unroll}, {args.kv_splits} kv splits"
        f"{', int8 weights' if args.quantize else ''}), "
        f"transformers {reference}, {args.seconds:g} s per row, sampling top-k 250, "
        f"guidance 3.0 on {machine()}"
        + (f"; median of {args.repeat} alternating runs" if args.repeat > 1 else "")
        + "\n"
    )
    header = (
        "| impl | batch | steps/s | ms/step | RTF tokens | RTF +decode | compile s | peak RSS GB "
        "| device peak GB |"
    )
    print(header + (" runs (steps/s) |" if args.repeat > 1 else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if args.repeat > 1 else ""))
    rows, medians = [], {}
    for (batch, impl), results in runs.items():
        r = sorted(results, key=lambda x: x["steps_per_s"])[(len(results) - 1) // 2]  # the median run
        medians[batch, impl] = r
        audio = args.seconds * batch
        rtf = audio / r["seconds"]
        rtf_decode = (
            audio / (r["seconds"] + r["decode_seconds"])
            if r.get("decode_seconds") is not None
            else float("nan")
        )
        peak = f"{r['device_peak_gb']:.2f}" if r.get("device_peak_gb") else "-"
        spread = " " + ", ".join(f"{x['steps_per_s']:.1f}" for x in results) + " |" if args.repeat > 1 else ""
        print(
            f"| {impl} | {batch} | {r['steps_per_s']:.1f} | {1e3 / r['steps_per_s']:.2f} | {rtf:.2f}x | "
            f"{rtf_decode:.2f}x | {r['compile_seconds']:.1f} | {r['peak_rss_gb']:.2f} | {peak} |{spread}"
        )
        rows.extend(results)
    for r in rows:
        if r.get("kernels"):
            print(
                f"\nmusicgen-jax batch {r['batch']}, one profiled run:\n"
                f"{r['kernels']['programs']}\n{r['kernels']['table']}"
            )
    print()
    for batch in args.batch:
        if (batch, "jax") in medians and (batch, "transformers") in medians:
            ratio = medians[batch, "jax"]["steps_per_s"] / medians[batch, "transformers"]["steps_per_s"]
            pairs = [
                j["steps_per_s"] / t["steps_per_s"]
                for j in runs[batch, "jax"]
                for t in runs[batch, "transformers"]
                if j["repetition"] == t["repetition"]
            ]
            detail = f" (per repetition {min(pairs):.2f}x to {max(pairs):.2f}x)" if len(pairs) > 1 else ""
            print(f"batch {batch}: musicgen-jax / transformers = {ratio:.2f}x steps/s{detail}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
