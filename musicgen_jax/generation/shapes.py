"""Which compiled program a request runs on: batch and length buckets, windows, positions.

One compiled program exists per (batch bucket, length bucket, text length, guidance on/off,
repetition penalty on/off, candidate count). Requests are padded into a batch bucket; the loop
length is a traced value, so any duration up to its length bucket runs without recompiling. Audio
past the model's window (30 s for Meta's checkpoints) is made window by window as audiocraft does.
Everything here is arithmetic on the model's config: the server groups requests by
:meth:`ShapePlan.shape_key` and warm-up compiles :meth:`ShapePlan.length_bucket` sizes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from musicgen_jax.generation.params import GenerationRequest
from musicgen_jax.models import delay_pattern
from musicgen_jax.models.config import MusicGenConfig

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LENGTH_BUCKETS_SECONDS = (5.0, 10.0, 15.0, 20.0, 30.0)


def bucket(value: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``value`` (powers of two past the last)."""
    for size in buckets:
        if value <= size:
            return size
    return int(2 ** math.ceil(math.log2(value)))


def candidate_count(top_ks: Sequence[int], vocab: int) -> int:
    """How many best tokens the sampler must keep: the largest top-k rounded up to a power of two,
    or the whole vocabulary when some row has top-k off."""
    largest = max((k if k > 0 else vocab) for k in top_ks)
    return min(vocab, int(2 ** math.ceil(math.log2(max(largest, 1)))))


@dataclasses.dataclass(frozen=True)
class ShapePlan:
    """The shape arithmetic of one model."""

    config: MusicGenConfig

    @property
    def frame_rate(self) -> float:
        return self.config.audio.frame_rate

    @property
    def window_frames(self) -> int:
        """Frames of one window (the longest sequence the model was trained on)."""
        return int(round(self.config.max_duration * self.frame_rate))

    @property
    def num_delays(self) -> int:
        """Positions the delay pattern adds to a window."""
        dec = self.config.decoder
        return delay_pattern.num_delays(dec.num_codebooks, dec.audio_channels)

    def frames(self, seconds: float) -> int:
        return int(round(seconds * self.frame_rate))

    def batch_bucket(self, size: int) -> int:
        return bucket(size, BATCH_BUCKETS)

    def batch_buckets_up_to(self, size: int) -> list[int]:
        """Every batch bucket a batch of at most ``size`` rows can fall in."""
        return sorted({self.batch_bucket(n) for n in range(1, size + 1)})

    def length_bucket(self, frames: int) -> int:
        """Frames of the length bucket holding ``frames`` (capped at the window)."""
        window = self.window_frames
        buckets = [self.frames(s) for s in LENGTH_BUCKETS_SECONDS if s * self.frame_rate < window]
        return min(bucket(frames, buckets + [window]), window)

    def positions(self, frames_bucket: int) -> int:
        """Cache positions of a length bucket: its frames plus the delay pattern's."""
        return frames_bucket + self.num_delays

    def window_count(self, duration: float, extend_stride: float) -> int:
        """Windows a clip of ``duration`` seconds takes (each new one advances ``extend_stride``)."""
        frames, window = self.frames(duration), self.window_frames
        if frames <= window:
            return 1
        return 1 + math.ceil((frames - window) / self.frames(extend_stride))

    def shape_key(self, request: GenerationRequest) -> tuple[int, int, bool]:
        """Requests with equal keys can run in one batch: (length bucket of the first window,
        number of windows, beam search)."""
        params = request.params
        first = min(self.frames(params.duration), self.window_frames)
        windows = self.window_count(params.duration, params.extend_stride)
        return (self.length_bucket(first), windows, params.num_beams > 1)
