"""Train-step throughput of a MusicGen shape (default: musicgen-small) on whatever devices JAX sees.

    python benchmarks/train_throughput.py                       # small, 30 s segments, batch 8/device
    python benchmarks/train_throughput.py --frames 50 --batch-size 1 --steps 3   # a CPU-sized run

Random weights, synthetic tokens, the real train step (bf16 compute, fp32 master weights, AdamW,
frozen T5 run in the step, condition dropout). Prints tokens/s (decoder positions: one position
holds every codebook's token of one frame), steps/s and MFU against the device's bf16 peak where
known (throughput.PEAK_FLOPS). The first step (compilation) is timed separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="model preset (configs/model/*.yaml)")
    parser.add_argument("--frames", type=int, default=1500, help="codec frames per example (1500 = 30 s)")
    parser.add_argument("--batch-size", type=int, help="global batch (default: 8 per device)")
    parser.add_argument("--microbatches", type=int, default=1)
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps after the compiling one")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--remat", default="dots_no_batch", choices=("none", "full", "dots", "dots_no_batch"))
    parser.add_argument(
        "--tokenizer", help="tokenizer directory or hub id (default: the testing tokenizer, built here)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="more train-config overrides, e.g. mesh.fsdp=-1 mesh.data=1"
    )
    args = parser.parse_args()

    from musicgen_jax.training import mesh as mesh_lib
    from musicgen_jax.training import step as step_lib
    from musicgen_jax.training import throughput
    from musicgen_jax.training.config import load_train_config
    from musicgen_jax.training.memory_source import MemoryBatchSource
    from musicgen_jax.training.model_source import load_model_source
    from musicgen_jax.training.optimizer import make_optimizer
    from musicgen_jax.training.state import StateLayout, build_model, frozen_keys

    batch_size = args.batch_size or 8 * jax.device_count()
    tokenizer = args.tokenizer
    if tokenizer is None:  # synthetic captions need no real vocabulary, and this needs no network
        from musicgen_jax.testing import save_tokenizer

        tokenizer = str(save_tokenizer(tempfile.mkdtemp(prefix="musicgen-tokenizer-")))
    config = load_train_config(
        "small",  # the from-scratch recipe, on random weights and synthetic tokens
        [
            f"model.preset={args.preset}",
            "model.text_encoder_from=null",
            f"model.tokenizer={tokenizer}",
            f"model.dtype={args.dtype}",
            f"model.remat={args.remat}",
            "data.source=memory",
            f"training.batch_size={batch_size}",
            f"training.microbatches={args.microbatches}",
            "training.dropout=true",
            f"training.steps={args.steps + 1}",
            "training.ema_decay=null",
            f"data.memory.frames={args.frames}",
            f"data.memory.max_text_len={args.text_len}",
            f"data.memory.num_examples={batch_size}",
            *args.overrides,
        ],
    )
    source = load_model_source(config.model)
    mesh = mesh_lib.create_mesh(config.mesh)
    rules = mesh_lib.rules_from_config(config.mesh)
    model = build_model(source.config, config.model)
    layout = StateLayout.create(
        model,
        make_optimizer(config.optimizer, config.training.steps),
        mesh,
        rules,
        frozen_keys(config.model),
        False,
    )
    state = layout.init(jax.random.key(0))
    batch = MemoryBatchSource(config.data.memory, source.config, source.tokenizer, batch_size).batch(0)
    shardings = mesh_lib.batch_shardings({k: v.shape for k, v in batch.items()}, mesh, rules)
    train_step = step_lib.make_train_step(layout, config, rules, shardings)
    device_batch = mesh_lib.global_batch(batch, shardings)
    rng = jax.random.key(1)

    start = time.perf_counter()
    state, metrics = train_step(state, device_batch, rng)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start
    first_loss = float(metrics["loss"])
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = train_step(state, device_batch, rng)
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - start

    positions = args.frames + source.config.decoder.codebooks_per_channel - 1
    steps_per_sec = args.steps / elapsed
    flops = throughput.train_step_flops(source.config, batch_size, positions, args.text_len)
    peak = throughput.peak_flops_per_device()
    mfu = throughput.mfu(flops, steps_per_sec, jax.device_count(), peak)
    params = sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))
    print(f"device: {jax.device_count()} x {jax.devices()[0].device_kind}; mesh {dict(mesh.shape)}")
    print(
        f"model: {args.preset} ({params / 1e6:.1f}M trainable parameters), "
        f"batch {batch_size} x {positions} positions ({args.frames} frames), text {args.text_len}, "
        f"{args.dtype}, remat {args.remat}, microbatches {args.microbatches}"
    )
    last_loss = float(metrics["loss"])
    print(f"first step (compile + run): {compile_seconds:.1f} s; loss {first_loss:.3f} -> {last_loss:.3f}")
    print(f"steps/s: {steps_per_sec:.3f}")
    codebooks = source.config.decoder.num_codebooks
    tokens_per_sec = steps_per_sec * batch_size * positions
    print(f"tokens/s: {tokens_per_sec:,.0f} (decoder positions; x{codebooks} codebook tokens)")
    print(f"model TFLOP/step: {flops / 1e12:.3f}; achieved TFLOP/s: {flops * steps_per_sec / 1e12:.3f}")
    print(
        f"MFU: {mfu:.1%}"
        if mfu is not None
        else f"MFU: n/a (no peak FLOP/s known for {jax.devices()[0].device_kind})"
    )


if __name__ == "__main__":
    main()
