"""Time to first audio on the streaming path: request in, first PCM chunk out, after warm-up.

    python benchmarks/streaming_latency.py --model DIR [--runs 3] [--seconds 5]

The path the server's WebSocket stream takes: prompt encoding, the decode loop in short chunks
(the first just past the delay pattern and the codec's lookahead), frames pushed into the
codec's streaming decoder as they complete. Prints the time to the first non-empty chunk, its length,
and the time to the whole clip, for each run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--codec-backend", default="auto", help="auto, jax or torch")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--chunk-seconds", type=float, default=0.2)
    args = parser.parse_args()

    from musicgen_jax import MusicGen

    model = MusicGen.from_pretrained(args.model, dtype=args.dtype, codec_backend=args.codec_backend)
    delays = model.num_codebooks // model.audio_channels
    chunk = max(1, round(args.chunk_seconds * model.frame_rate))
    first = chunk + delays
    model.engine.warmup(batch_sizes=(1,), durations=(args.seconds,))
    codec = model.codec
    codec.decode(np.zeros((1, model.num_codebooks, 16), np.int32))  # the codec's first-call costs

    firsts, totals = [], []
    for run in range(args.runs):
        decoder = codec.streaming_decoder()
        first_audio: list[float] = []
        began = time.perf_counter()

        # This run's decoder, list and start time, bound now: the callback belongs to this run only.
        def on_frames(
            row: int,
            frames: np.ndarray,
            *,
            decoder=decoder,
            first_audio: list[float] = first_audio,
            began: float = began,
        ) -> None:
            audio = decoder.push(frames[None])
            if audio.shape[-1] and not first_audio:
                first_audio.append(time.perf_counter() - began)

        requests = model.make_requests(
            ["Upbeat jazz piano with smooth saxophone"], duration=args.seconds, seed=run
        )
        model.engine.generate(requests, on_frames=on_frames, chunk_frames=chunk, first_chunk_frames=first)
        decoder.flush()
        totals.append(time.perf_counter() - began)
        firsts.append(first_audio[0] if first_audio else float("nan"))
        print(
            f"run {run}: first audio after {firsts[-1] * 1e3:.0f} ms, "
            f"the whole {args.seconds:g} s clip after {totals[-1]:.2f} s"
        )
    print(
        f"\n{model.config.name} ({model.dtype}): "
        f"time to first audio median {statistics.median(firsts) * 1e3:.0f} ms "
        f"(first chunk {first} positions, then {chunk}; codec lookahead included)"
    )


if __name__ == "__main__":
    main()
