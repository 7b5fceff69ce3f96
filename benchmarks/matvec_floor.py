"""The matrix-vector floor of a decode step on this machine: the chain of the decoder's weight
products alone (no attention, no norms, no sampling), compiled by XLA, next to the same chain in
PyTorch (``F.linear`` on ``[out, in]`` weights, what transformers runs) and NumPy's BLAS.

    python benchmarks/matvec_floor.py --shape small --rows 2 16 --repeat 3

A decode step cannot be faster than this on the same hardware: compare it with the step times of
benchmarks/generate_speed.py.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

SHAPES = {"small": (1024, 24, 4096), "medium": (1536, 48, 6144), "large": (2048, 48, 8192)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="small", choices=sorted(SHAPES))
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[2, 16], help="decoder rows (2 x batch with guidance)"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternating timings per row count; the best is shown"
    )
    args = parser.parse_args()
    hidden, layers, ffn = SHAPES[args.shape]
    dtype = jnp.dtype(args.dtype)
    key = jax.random.key(0)
    # Per layer: q, k, v, out of self- and cross-attention (8 square), fc1, fc2.
    square = jax.random.normal(key, (layers, 8, hidden, hidden), dtype)
    up = jax.random.normal(key, (layers, hidden, ffn), dtype)
    down = jax.random.normal(key, (layers, ffn, hidden), dtype)
    weight_bytes = square.nbytes + up.nbytes + down.nbytes

    @jax.jit
    def steps(x, square, up, down):
        def layer(x, weights):
            sq, u, d = weights
            y = x
            for i in range(8):
                y = jnp.dot(y.astype(dtype), sq[i], preferred_element_type=jnp.float32)
            y = jnp.dot(
                jnp.dot(y.astype(dtype), u, preferred_element_type=jnp.float32).astype(dtype),
                d,
                preferred_element_type=jnp.float32,
            )
            return x + 1e-3 * y, None

        return jax.lax.fori_loop(0, args.steps, lambda i, x: jax.lax.scan(layer, x, (square, up, down))[0], x)

    print(f"{args.shape}: {weight_bytes / 1e9:.2f} GB of {args.dtype} weights per step")
    torch_chain = _torch_chain(square, up, down, args.steps) if args.dtype == "float32" else None
    for rows in args.rows:
        x = jnp.ones((rows, hidden), jnp.float32)
        steps(x, square, up, down).block_until_ready()
        xla, reference = [], []
        for _ in range(args.repeat):  # alternating, so both see the machine in the same state
            began = time.perf_counter()
            steps(x, square, up, down).block_until_ready()
            xla.append((time.perf_counter() - began) / args.steps)
            if torch_chain is not None:
                reference.append(torch_chain(rows))
        line = f"rows {rows}: XLA {min(xla) * 1e3:.1f} ms a step ({weight_bytes / min(xla) / 1e9:.1f} GB/s)"
        if reference:
            line += (
                f", PyTorch {min(reference) * 1e3:.1f} ms ({weight_bytes / min(reference) / 1e9:.1f} GB/s)"
            )
        print(line + (f"; best of {args.repeat}" if args.repeat > 1 else ""))
    # Every layer's fc1 once, as a step reads them: distinct matrices, so none comes from the cache.
    w = np.asarray(up, np.float32)
    x = np.ones((args.rows[0], hidden), np.float32)
    began = time.perf_counter()
    for layer in range(w.shape[0]):
        x @ w[layer]
    seconds = time.perf_counter() - began
    print(f"NumPy BLAS, each layer's fc1 once at rows {args.rows[0]}: {w.nbytes / seconds / 1e9:.1f} GB/s")


def _torch_chain(square, up, down, steps: int):
    """A function timing the chain in PyTorch at ``rows`` rows (seconds a step), or None."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    to = lambda a: torch.from_numpy(np.array(np.swapaxes(np.asarray(a, np.float32), -1, -2)))
    sq, u, d = to(square), to(up), to(down)

    def run(rows: int) -> float:
        x = torch.ones((rows, sq.shape[-1]))
        with torch.inference_mode():
            began = time.perf_counter()
            for _ in range(steps):
                for layer in range(sq.shape[0]):
                    y = x
                    for i in range(sq.shape[1]):
                        y = F.linear(y, sq[layer, i])
                    x = x + 1e-3 * F.linear(F.linear(y, u[layer]), d[layer])
        return (time.perf_counter() - began) / steps

    return run


if __name__ == "__main__":
    main()
