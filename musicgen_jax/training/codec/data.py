"""Audio for the codec: files read once into memory at the codec's rate and channel count, and
batches of random segments drawn as a function of ``(seed, position, row)`` alone.

So the iterator's whole state is its position (saved in each checkpoint: a resumed run draws the
same batches it would have drawn), any host can draw its own rows of the global batch without
talking to the others, and the held-out batches are the same at every evaluation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from musicgen_jax.audio.io import load_audio
from musicgen_jax.data import manifest
from musicgen_jax.training.codec.config import CodecDataSection


@dataclasses.dataclass(frozen=True)
class Clips:
    """Audio files as float32 ``[channels, samples]`` arrays at one rate."""

    audio: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return sum(a.shape[-1] for a in self.audio) / self.sample_rate


def _paths(audio_dir: str | None, manifest_path: str | None) -> list[Path]:
    sources = manifest.find_sources(audio_dir=audio_dir, manifest=manifest_path)
    if not sources:
        raise manifest.ManifestError(f"no audio files in {audio_dir or manifest_path}")
    return sorted({s.audio_path for s in sources})


def _read(paths: list[Path], sample_rate: int, channels: int) -> Clips:
    audio = []
    for path in paths:
        try:
            clip, _ = load_audio(path, sample_rate=sample_rate, mono=channels == 1)
        except (OSError, ValueError, RuntimeError) as error:
            raise manifest.ManifestError(f"{path}: {error}") from None
        if clip.shape[0] == 1 and channels == 2:
            clip = np.concatenate([clip, clip])  # a mono file for a stereo codec: both channels
        if clip.shape[0] != channels:
            raise manifest.ManifestError(f"{path}: {clip.shape[0]} channels, the codec takes {channels}")
        if clip.shape[-1] == 0 or not np.isfinite(clip).all():
            raise manifest.ManifestError(f"{path}: empty, or holds NaN or infinite samples")
        audio.append(clip.astype(np.float32))
    return Clips(tuple(audio), tuple(str(p) for p in paths), sample_rate)


def load_splits(config: CodecDataSection, sample_rate: int, channels: int) -> tuple[Clips, Clips]:
    """(train clips, held-out clips) as :class:`CodecDataSection` describes them."""
    paths = _paths(config.audio_dir, config.manifest)
    if config.eval_audio_dir is not None or config.eval_manifest is not None:
        held_out = _paths(config.eval_audio_dir, config.eval_manifest)
        train = [p for p in paths if p not in set(held_out)]
    else:
        if len(paths) < 2:
            raise manifest.ManifestError("need at least two audio files: one is held out for evaluation")
        count = max(1, round(len(paths) * config.eval_fraction))
        train, held_out = paths[:-count], paths[-count:]
    if not train:
        raise manifest.ManifestError("every audio file is held out: nothing is left to train on")
    return _read(train, sample_rate, channels), _read(held_out, sample_rate, channels)


class SegmentBatches:
    """An iterator of this host's rows of global batches of segments ``[rows, channels, samples]``.

    Row ``r`` of batch ``position`` is a segment of a clip drawn with probability proportional to its
    length, at a uniform offset (clips shorter than a segment are zero-padded), from
    ``default_rng((seed, position, r))``. ``get_state``/``set_state`` give and take the position.
    """

    def __init__(
        self,
        clips: Clips,
        segment_samples: int,
        global_batch: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if global_batch % process_count:
            raise ValueError(f"batch size {global_batch} does not split over {process_count} hosts")
        self.clips, self.segment, self.seed = clips, segment_samples, seed
        rows = global_batch // process_count
        self.rows = range(process_index * rows, (process_index + 1) * rows)
        lengths = np.array([a.shape[-1] for a in clips.audio], np.float64)
        self.weights = lengths / lengths.sum()
        self.position = 0

    def segment_at(self, position: int, row: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, position, row))
        clip = self.clips.audio[rng.choice(len(self.clips.audio), p=self.weights)]
        start = int(rng.integers(0, max(1, clip.shape[-1] - self.segment + 1)))
        piece = clip[:, start : start + self.segment]
        return np.pad(piece, ((0, 0), (0, self.segment - piece.shape[-1])))

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        batch = np.stack([self.segment_at(self.position, row) for row in self.rows])
        self.position += 1
        return batch

    def get_state(self) -> dict:
        return {"position": self.position}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])
