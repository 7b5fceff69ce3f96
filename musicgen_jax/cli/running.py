"""What every generating command shares: loading the model, a progress bar, writing a file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from musicgen_jax.audio import save_audio
from musicgen_jax.pipeline import MusicGen
from musicgen_jax.runtime import enable_compilation_cache


def load_model(args: argparse.Namespace) -> MusicGen:
    enable_compilation_cache(args.cache_dir)
    began = time.perf_counter()
    adapter = getattr(args, "adapter", None)
    model = MusicGen.from_pretrained(
        args.model,
        dtype=args.dtype,
        codec_backend=args.codec_backend,
        adapter=adapter,
        quantize=getattr(args, "quantize", None),
    )
    print(
        f"loaded {args.model}{f' with {adapter}' if adapter else ''} in {time.perf_counter() - began:.1f} s",
        file=sys.stderr,
    )
    return model


class Progress:
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


def write_audio(model, audio, path: Path, fmt: str, normalization: str) -> None:
    save_audio(path, audio, model.sample_rate, format=fmt, normalization=normalization)
