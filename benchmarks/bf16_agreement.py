"""How far bfloat16 and int8 inference stray from float32: greedy-token agreement on the same
weights, and what each variant's decoder weights take in memory.

    python benchmarks/bf16_agreement.py --model DIR [--frames 250] [--prompts 4]
    python benchmarks/bf16_agreement.py --shape small   # random weights with musicgen-small's shape

Variants: bfloat16; int8 (weight-only int8 projections and heads, float32 compute); int8 with
bfloat16 compute. Two numbers per codebook and variant:
* teacher-forced agreement: the float32 greedy sequence is fed to both; at each position, do the
  guided logits of both pick the same token? (the variant's rounding alone, no compounding);
* free-running agreement: each dtype generates greedily on its own; the fraction of equal tokens
  and the first frame where they part (after that, sequences legitimately differ).

Random weights have flatter distributions than trained ones, so they flip more argmaxes: the
numbers here are a lower bound for real checkpoints.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

PROMPTS = [
    "Upbeat jazz piano with smooth saxophone",
    "80s pop track with bassy drums and synth",
    "calm ambient pads with soft bells",
    "heavy rock with loud guitars and drums",
]


def guided_argmax(model, prompts, delayed: np.ndarray, scale: float) -> np.ndarray:
    """Argmax of the guided logits for every position of ``delayed`` [batch, K, T] (teacher forced)."""
    from musicgen_jax.models.musicgen import MusicGenModel

    engine = model.engine
    memory, mask = engine.encode(engine.prepare_text(prompts))
    apply = lambda m, mm: engine.model.apply(
        {"params": engine.params}, jnp.asarray(delayed), m, mm, method=MusicGenModel.decode
    )
    with engine.numerics():  # the float32 model's products in float32 on a GPU too (not TF32)
        cond = np.asarray(apply(memory, mask), np.float32)
        null = np.asarray(apply(jnp.zeros_like(memory), jnp.zeros_like(mask)), np.float32)
    return np.argmax(null + (cond - null) * scale, axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a checkpoint directory or hub id")
    parser.add_argument(
        "--shape", choices=("tiny", "small", "medium", "large"), help="random weights of this shape"
    )
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    args = parser.parse_args()

    from musicgen_jax import MusicGen
    from musicgen_jax.models.delay_pattern import apply_delay
    from musicgen_jax.models.layer_layout import weight_bytes

    temporary = None
    source = args.model
    if source is None:
        from generate_speed import build_checkpoint

        temporary = tempfile.TemporaryDirectory()
        source = str(Path(temporary.name) / "model")
        build_checkpoint(args.shape or "tiny", Path(source))
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    seconds = args.frames / 50
    full = MusicGen.from_pretrained(source, dtype="float32")
    variants = {
        "bfloat16": dict(dtype="bfloat16"),
        "int8": dict(dtype="float32", quantize="int8"),
        "int8 + bfloat16": dict(dtype="bfloat16", quantize="int8"),
    }
    kwargs = dict(duration=seconds, greedy=True, guidance_scale=args.guidance_scale)
    reference = full.generate_tokens(prompts, **kwargs)  # [batch, K, frames]
    delayed = np.asarray(
        apply_delay(jnp.asarray(reference), full.config.decoder.pad_token_id, full.audio_channels)
    )
    inputs, targets = delayed[:, :, :-1], delayed[:, :, 1:]
    valid = targets < full.config.decoder.vocab_size
    want = guided_argmax(full, prompts, inputs, args.guidance_scale)
    assert (want[valid] == targets[valid]).all(), (
        "float32 teacher forcing must reproduce its own greedy tokens"
    )
    print(
        f"{full.config.name}: {len(prompts)} prompts x {args.frames} frames, guidance {args.guidance_scale}"
    )
    print(f"decoder weights: float32 {weight_bytes(full.engine.params['decoder']) / 2**20:.1f} MiB")
    print(
        "| variant | codebook | teacher-forced agreement | free-running agreement "
        "| first differing frame (median) |"
    )
    print("|---|---|---|---|---|")
    memory = {}
    for name, options in variants.items():
        model = MusicGen.from_pretrained(source, **options)
        memory[name] = weight_bytes(model.engine.params["decoder"])
        forced = (guided_argmax(model, prompts, inputs, args.guidance_scale) == targets) | ~valid
        free = model.generate_tokens(prompts, **kwargs)
        for k in range(reference.shape[1]):
            teacher = forced[:, k][valid[:, k]].mean()
            same = (free[:, k] == reference[:, k]).mean()
            first = [
                np.argmax(row != ref) if (row != ref).any() else args.frames
                for row, ref in zip(free[:, k], reference[:, k])
            ]
            print(f"| {name} | {k} | {teacher:.4f} | {same:.4f} | {int(np.median(first))} |")
        print(f"| {name} | all | {forced[valid].mean():.4f} | {(free == reference).mean():.4f} | |")
        del model
    print("\n| variant | decoder weights MiB | of bfloat16's |")
    print("|---|---|---|")
    for name, size in memory.items():
        print(f"| {name} | {size / 2**20:.1f} | {size / memory['bfloat16']:.0%} |")
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
