"""One audio file to records: read at the codec's rate, cut into segments, encoded in batches, and
the same for each augmented copy of it."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from musicgen_jax.audio.io import load_audio, resample
from musicgen_jax.data import manifest as manifest_lib
from musicgen_jax.data import records
from musicgen_jax.data.augment import AppliedTransform, Augmenter
from musicgen_jax.data.metadata import MusicInfo
from musicgen_jax.data.tokenize.options import TokenizeOptions

# partner(rng): another clip [channels, samples] and its caption for polymix, or None.
Partner = Callable[[np.random.Generator], tuple[np.ndarray, str] | None]


class SourceError(RuntimeError):
    """One audio file that cannot be tokenised (unreadable audio or metadata)."""


def segment_starts(num_samples: int, segment_samples: int, min_samples: int) -> list[tuple[int, int]]:
    """``(start, length)`` of each segment: full segments, then the remainder if long enough."""
    spans = []
    for start in range(0, num_samples, segment_samples):
        length = min(segment_samples, num_samples - start)
        if length == segment_samples or (length >= min_samples and length > 0):
            spans.append((start, length))
    return spans


def read_source(source: manifest_lib.AudioSource, sample_rate: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Audio ``[channels, samples]`` at ``sample_rate`` and the metadata dict; SourceError if either
    cannot be read."""
    try:
        metadata = source.load_metadata()
    except manifest_lib.ManifestError as error:
        raise SourceError(str(error)) from None
    try:
        if source.read_audio is not None:
            audio, rate = source.read_audio()
            audio = resample(audio, int(rate), sample_rate)
        else:
            audio, _ = load_audio(source.audio_path, sample_rate=sample_rate)
    except (OSError, ValueError, RuntimeError, TypeError) as error:
        raise SourceError(f"{type(error).__name__}: {error}") from None
    if audio.shape[-1] == 0:
        raise SourceError("the file holds no samples")
    if not np.isfinite(audio).all():
        raise SourceError("the audio contains NaN or infinite values")
    return audio, metadata or {}


def polymix_partner(
    sources: Sequence[manifest_lib.AudioSource], sample_rate: int, rng: np.random.Generator
) -> tuple[np.ndarray, str] | None:
    """Another clip for polymix and its caption, drawn from ``sources`` (None if it cannot be read).

    Bind the first two arguments (``functools.partial``) to get a :data:`Partner`."""
    other = sources[int(rng.integers(len(sources)))]
    try:
        audio, metadata = read_source(other, sample_rate)
    except SourceError:
        return None
    return audio, MusicInfo.from_dict(metadata).description or ""


def encode_source(
    codec: Any,
    source: manifest_lib.AudioSource,
    options: TokenizeOptions,
    partner: Partner | None = None,
) -> list[records.TokenRecord]:
    """The records of one file (empty when it is shorter than ``min_segment_seconds``), then those
    of its augmented copies; ``partner(rng)`` gives another clip and its caption for polymix."""
    rate = codec.sample_rate
    audio, metadata = read_source(source, rate)  # [channels, samples]
    description = MusicInfo.from_dict(metadata).description or ""
    out = _encode_audio(codec, audio, metadata, description, str(source.audio_path), options)
    if not out:
        return out
    augmenter = Augmenter(options.augment)
    path_key = zlib.crc32(str(source.audio_path).encode())
    for copy in range(1, options.augment_copies + 1):
        rng = np.random.default_rng([options.augment_seed, path_key, copy])
        other = partner(rng) if partner is not None and options.augment.polymix.probability > 0 else None
        augmented, caption, applied = augmenter.apply_logged(audio, rate, description, rng, other)
        copy_metadata = augmented_metadata(metadata, caption, applied)
        out += _encode_audio(
            codec,
            augmented,
            copy_metadata,
            caption,
            f"{source.audio_path}#augment{copy}",
            options,
            first_index=len(out),
        )
    return out


def augmented_metadata(
    metadata: dict[str, Any], caption: str, applied: Sequence[AppliedTransform]
) -> dict[str, Any]:
    """The metadata of an augmented copy: the new caption, the tempo after a time stretch, no key
    after a pitch shift (a fractional shift has none), and what was done."""
    updated = dict(metadata, description=caption, augmentations=[a.name for a in applied])
    for transform in applied:
        if transform.name == "time_stretch" and updated.get("bpm") not in (None, ""):
            try:
                updated["bpm"] = round(float(updated["bpm"]) * transform.parameters["rate"], 1)
            except (TypeError, ValueError):
                updated.pop("bpm")
        if transform.name == "pitch_shift":
            updated.pop("key", None)
    return updated


def batch_spans(spans: Sequence[tuple[int, int]], batch_size: int) -> list[list[tuple[int, int, int]]]:
    """``(segment index, start, length)`` in groups for one codec call each: consecutive segments of
    one length, at most ``batch_size`` a group (the short last segment goes on its own)."""
    groups: list[list[tuple[int, int, int]]] = []
    for index, (start, length) in enumerate(spans):
        if groups and len(groups[-1]) < batch_size and groups[-1][0][2] == length:
            groups[-1].append((index, start, length))
        else:
            groups.append([(index, start, length)])
    return groups


def _encode_audio(
    codec: Any,
    audio: np.ndarray,
    metadata: dict[str, Any],
    description: str,
    path: str,
    options: TokenizeOptions,
    first_index: int = 0,
) -> list[records.TokenRecord]:
    rate = codec.sample_rate
    spans = segment_starts(
        audio.shape[-1], round(options.segment_seconds * rate), round(options.min_segment_seconds * rate)
    )
    out: list[records.TokenRecord] = []
    for group in batch_spans(spans, options.batch_size):
        batch = np.stack(
            [audio[:, start : start + length] for _, start, length in group]
        )  # [n, channels, samples]
        codes = codec.encode(batch, rate)  # [n, codebooks, frames]
        for (index, start, length), segment_codes in zip(group, codes):
            out.append(
                records.TokenRecord(
                    codes=segment_codes.astype(records.CODES_DTYPE),
                    text=description,
                    metadata=metadata,
                    path=path,
                    offset_seconds=start / rate,
                    segment_index=first_index + index,
                    duration_seconds=length / rate,
                    frame_rate=float(codec.frame_rate),
                    sample_rate=int(rate),
                )
            )
    return out
