"""Examples and files: example ``i`` as a function of ``(seed, i)`` alone, and a dataset written the
way audiocraft lays one out (audio, sidecar JSON, ``data.jsonl``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import numpy as np

from musicgen_jax.data import manifest
from musicgen_jax.data.synthetic.captions import caption, metadata
from musicgen_jax.data.synthetic.composition import Note, compose
from musicgen_jax.data.synthetic.holdout import is_held_out
from musicgen_jax.data.synthetic.spec import PieceSpec, sample_spec
from musicgen_jax.data.synthetic.synthesis import render


@dataclasses.dataclass(frozen=True)
class SyntheticExample:
    name: str
    audio: np.ndarray  # float32 [channels, samples]
    sample_rate: int
    spec: PieceSpec
    notes: tuple[Note, ...]
    metadata: dict


def generate_example(
    index: int,
    *,
    seed: int = 0,
    duration: float = 10.0,
    sample_rate: int = 32000,
    channels: int = 1,
    exclude_held_out: bool = False,
) -> SyntheticExample:
    """Example ``index`` of the dataset with ``seed``: a function of ``(seed, index)`` alone.

    With ``exclude_held_out`` a held-out spec (:func:`~musicgen_jax.data.synthetic.holdout.is_held_out`)
    is replaced by the next spec drawn from the same generator until one is not held out, so the
    example still depends on ``(seed, index)`` alone, and is the same as without the option
    whenever its first draw was not held out."""
    rng = np.random.default_rng((seed, index))
    spec = sample_spec(rng)
    while exclude_held_out and is_held_out(spec):
        spec = sample_spec(rng)
    notes = tuple(compose(spec, duration, rng))
    description = caption(spec, rng)
    audio = render(
        notes, duration, sample_rate, rng, channels=channels, loudness=spec.loudness, rising=spec.rising
    )
    name = f"synth_{index:06d}"
    return SyntheticExample(name, audio, sample_rate, spec, notes, metadata(spec, name, description))


def write_dataset(
    output: str | Path,
    num_examples: int,
    *,
    duration: float = 10.0,
    sample_rate: int = 32000,
    seed: int = 0,
    channels: int = 1,
    audio_format: Literal["wav", "flac"] = "wav",
    absolute_paths: bool = True,
    exclude_held_out: bool = False,
) -> Path:
    """Write ``num_examples`` pieces, their sidecar JSONs and ``data.jsonl`` under ``output``;
    return the manifest's path. Audio is 16-bit PCM, written without normalisation (the piece's
    loudness is part of its dynamics). ``exclude_held_out`` writes a training set without the
    held-out pieces (see :func:`generate_example`)."""
    import soundfile

    output = Path(output)
    audio_dir = output / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(num_examples):
        example = generate_example(
            index,
            seed=seed,
            duration=duration,
            sample_rate=sample_rate,
            channels=channels,
            exclude_held_out=exclude_held_out,
        )
        audio_path = audio_dir / f"{example.name}.{audio_format}"
        soundfile.write(str(audio_path), example.audio.T, sample_rate, subtype="PCM_16")
        info_path = manifest.sidecar_path(audio_path)
        info_path.write_text(json.dumps(example.metadata, indent=2) + "\n")
        entries.append(
            manifest.AudioMeta(
                path=str(audio_path.resolve() if absolute_paths else audio_path.relative_to(output)),
                duration=example.audio.shape[-1] / sample_rate,
                sample_rate=sample_rate,
                amplitude=float(np.max(np.abs(example.audio))),
                info_path=str(info_path.resolve() if absolute_paths else info_path.relative_to(output)),
            )
        )
    manifest_path = output / manifest.MANIFEST_NAME
    manifest.write_manifest(manifest_path, entries)
    return manifest_path
