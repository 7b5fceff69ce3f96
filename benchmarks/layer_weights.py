"""What slicing stacked layer weights costs a decode step: the same chain of per-layer products with
the weights stacked and scanned (as the decoder holds them), scanned fully unrolled, and held as one
array a layer (as PyTorch holds them).

    python benchmarks/layer_weights.py --rows 2 16 [--dtype bfloat16] [--repeat 5]

XLA:CPU copies each layer's slice out of a stacked array before a dot reads it; if a compiler does,
the stacked chain moves more bytes than the separate one, and the table shows it as a lower rate.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--ffn", type=int, default=4096)
    parser.add_argument("--rows", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument(
        "--repeat", type=int, default=5, help="alternating timings per variant; the best is shown"
    )
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)
    key_up, key_down = jax.random.split(jax.random.key(0))
    up = jax.random.normal(key_up, (args.layers, args.hidden, args.ffn), dtype)
    down = jax.random.normal(key_down, (args.layers, args.ffn, args.hidden), dtype)
    separate = ([up[i] for i in range(args.layers)], [down[i] for i in range(args.layers)])
    weight_bytes = up.nbytes + down.nbytes

    def layer(x, u, d):
        return x + 1e-3 * jnp.dot(jnp.tanh(jnp.dot(x, u)), d).astype(x.dtype)

    def scanned(unroll: int):
        return jax.jit(
            lambda x, up, down: jax.lax.scan(lambda x, w: (layer(x, *w), None), x, (up, down), unroll=unroll)[
                0
            ]
        )

    def one_array_a_layer(x, ups, downs):
        for u, d in zip(ups, downs):
            x = layer(x, u, d)
        return x

    variants = {
        "stacked, scanned": (scanned(1), (up, down)),
        f"stacked, unroll={args.layers}": (scanned(args.layers), (up, down)),
        "one array a layer": (jax.jit(one_array_a_layer), separate),
    }
    print(
        f"{args.layers} layers of {args.hidden}x{args.ffn} and back, "
        f"{weight_bytes / 1e9:.2f} GB of {args.dtype} weights a pass, "
        f"on {jax.devices()[0].device_kind}; best of {args.repeat}"
    )
    print("| rows | " + " | ".join(variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for rows in args.rows:
        x = jnp.ones((rows, args.hidden), dtype)
        for fn, weights in variants.values():
            fn(x, *weights).block_until_ready()
        best = {name: float("inf") for name in variants}
        for _ in range(args.repeat):
            for name, (fn, weights) in variants.items():
                began = time.perf_counter()
                fn(x, *weights).block_until_ready()
                best[name] = min(best[name], time.perf_counter() - began)
        cells = [
            f"{seconds * 1e3:.2f} ms ({weight_bytes / seconds / 1e9:.0f} GB/s)" for seconds in best.values()
        ]
        print(f"| {rows} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
