"""Codec decode speed, JAX against PyTorch, on this machine (a benchmark, not a test).

    python benchmarks/codec_speed.py [--codec DIR] [--seconds 10 30] [--repeat 5] [--batch 1]
                                     [--stream-seconds 10] [--push-frames 50]

Decodes random codes of 10 s and 30 s (``--seconds``) with both backends of
:func:`musicgen_jax.codec.load_codec` in one run, alternating torch and jax so both see the same
machine load, and prints a table: the first call (JAX compiles a program per code length then),
the median of ``--repeat`` further calls, and the torch/jax ratio of the medians. Then streams
``--stream-seconds`` of codes through each backend's ``streaming_decoder()`` in pushes of
``--push-frames`` (as the server's stream does, 1 s by default) and prints the first push of the
first stream (JAX compiles its windows then), the slowest push after it, and the median push of a
second stream (``0`` to skip). The codec is ``--codec DIR`` (any source ``load_codec`` takes), else a
random-weight codec with ``facebook/encodec_32khz``'s config built here (speed does not depend on
the weights).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def build_random_codec(directory: Path) -> Path:
    """A random-weight ``EncodecModel`` of the 32 kHz codec's config (musicgen-small's codec, from the
    preset through the config's own conversion) saved to ``directory``."""
    import dataclasses

    import torch
    from transformers import EncodecModel

    from musicgen_jax.models.config import CodecShape, MusicGenConfig

    small = MusicGenConfig.preset("small")
    small = dataclasses.replace(small, audio=dataclasses.replace(small.audio, codec_shape=CodecShape()))
    torch.manual_seed(0)
    EncodecModel(small.codec_to_transformers()).save_pretrained(directory)
    return directory


def timed(decode, codes: np.ndarray) -> float:
    began = time.perf_counter()
    audio = decode(codes)
    np.asarray(audio).sum()  # the result is on the host: nothing left running
    return time.perf_counter() - began


def stream_times(codec, codes: np.ndarray, push_frames: int) -> list[float]:
    """Seconds of each push of ``codes`` in ``push_frames`` pieces through a new stream, the flush last."""
    stream, times = codec.streaming_decoder(), []
    for start in range(0, codes.shape[-1], push_frames):
        began = time.perf_counter()
        stream.push(codes[..., start : start + push_frames])  # NumPy audio: nothing left running
        times.append(time.perf_counter() - began)
    began = time.perf_counter()
    stream.flush()
    return times + [time.perf_counter() - began]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--codec", help="codec source (default: a random 32 kHz codec built here)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per backend and length")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--stream-seconds", type=float, default=10.0, help="audio to stream (0: skip)")
    parser.add_argument("--push-frames", type=int, default=50, help="frames per stream push")
    args = parser.parse_args()

    from musicgen_jax.codec import load_codec

    with tempfile.TemporaryDirectory() as scratch:
        source = args.codec or build_random_codec(Path(scratch))
        codecs = {name: load_codec(source, backend=name, device="cpu") for name in ("torch", "jax")}
    first = codecs["torch"]
    print(f"codec: {args.codec or 'random facebook/encodec_32khz config'}; {first!r}")
    rng = np.random.default_rng(0)
    rows = []
    for seconds in args.seconds:
        frames = round(seconds * first.frame_rate)
        codes = rng.integers(0, first.codebook_size, (args.batch, first.total_codebooks, frames), np.int32)
        firsts = {name: timed(codec.decode, codes) for name, codec in codecs.items()}
        times: dict[str, list[float]] = {name: [] for name in codecs}
        for _ in range(args.repeat):
            for name, codec in codecs.items():  # alternating: both see the same load
                times[name].append(timed(codec.decode, codes))
        medians = {name: statistics.median(values) for name, values in times.items()}
        rows.append((seconds, firsts, medians))

    print(f"\nbatch {args.batch}, median of {args.repeat} (first call separately: JAX compiles then)")
    print(f"{'audio':>7} | {'torch first':>11} {'torch':>8} | {'jax first':>9} {'jax':>8} | torch/jax")
    for seconds, firsts, medians in rows:
        print(
            f"{seconds:>6g}s | {firsts['torch']:>10.3f}s {medians['torch']:>7.3f}s | "
            f"{firsts['jax']:>8.3f}s {medians['jax']:>7.3f}s | {medians['torch'] / medians['jax']:>8.2f}x"
        )

    if args.stream_seconds <= 0:
        return
    frames = round(args.stream_seconds * first.frame_rate)
    codes = rng.integers(0, first.codebook_size, (args.batch, first.total_codebooks, frames), np.int32)
    print(f"\nstreaming {args.stream_seconds:g}s in pushes of {args.push_frames} frames, then a flush")
    print(f"{'backend':>7} | {'first push':>10} {'slowest after':>13} | {'steady push':>11} {'stream':>8}")
    for name, codec in codecs.items():
        cold = stream_times(codec, codes, args.push_frames)
        warm = stream_times(codec, codes, args.push_frames)
        print(
            f"{name:>7} | {cold[0]:>9.3f}s {max(cold[1:]):>12.3f}s | "
            f"{statistics.median(warm[:-1]):>10.3f}s {sum(warm):>7.3f}s"
        )


if __name__ == "__main__":
    main()
