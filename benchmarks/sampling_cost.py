"""What sampling costs a decode step, apart from the model: guidance, top-k/top-p filtering and the
Gumbel-max draw over ``[2 x batch, codebooks, 2048]`` logits, compiled in one loop of steps.

    python benchmarks/sampling_cost.py --batch 1 8 [--steps 200]

Sampling runs once a step whatever the model's size, so it is the fixed cost under every step.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from musicgen_jax.generation.sampling import SamplingControls, apply_guidance, sample_tokens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--codebooks", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{args.steps} steps in one compiled loop on {jax.devices()[0].device_kind}, "
        "top-k 250 (256 candidates), guidance 3"
    )
    print("| batch | full sampling | greedy argmax | lax.top_k alone | Gumbel noise + argmax |")
    print("|---|---|---|---|---|")
    for batch in args.batch:
        controls = SamplingControls(
            temperature=jnp.ones(batch),
            top_k=jnp.full(batch, 250, jnp.int32),
            top_p=jnp.zeros(batch),
            guidance_scale=jnp.full(batch, 3.0),
            repetition_penalty=jnp.ones(batch),
            greedy=jnp.zeros(batch, bool),
            keys=jax.vmap(jax.random.key)(jnp.arange(batch, dtype=jnp.uint32)),
        )
        logits = jax.random.normal(jax.random.key(0), (2 * batch, args.codebooks, args.vocab))

        def noise_argmax(guided, step, controls=controls):
            keys = jax.vmap(lambda key: jax.random.fold_in(key, step))(controls.keys)
            noise = jax.vmap(lambda key: jax.random.gumbel(key, guided.shape[1:]))(keys)
            return jnp.argmax(guided + noise, axis=-1)

        variants = {
            "full": lambda guided, step, controls=controls: sample_tokens(guided, controls, step, 256),
            "greedy": lambda guided, step: jnp.argmax(guided, axis=-1),
            "top_k": lambda guided, step: jax.lax.top_k(guided, 256)[1][..., 0],
            "noise": noise_argmax,
        }
        cells = []
        for choose in variants.values():

            @jax.jit
            def run(logits, choose=choose, controls=controls, batch=batch):
                def body(step, total):
                    # The running total feeds back into the logits, so no step can be hoisted.
                    guided = apply_guidance(
                        logits + 1e-9 * total[0, 0].astype(jnp.float32), controls.guidance_scale
                    )
                    return total + choose(guided, step).astype(jnp.int32)

                return jax.lax.fori_loop(0, args.steps, body, jnp.zeros((batch, args.codebooks), jnp.int32))

            run(logits).block_until_ready()
            best = float("inf")
            for _ in range(args.repeat):
                began = time.perf_counter()
                run(logits).block_until_ready()
                best = min(best, (time.perf_counter() - began) / args.steps)
            cells.append(f"{best * 1e6:.0f} µs")
        print(f"| {batch} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
