"""Fréchet Audio Distance (Kilgour et al. 2019) between two sets of clips, with any ``AudioEmbedder``.

Each set is summarised by the mean and covariance of all its embedding rows (every window of every
clip, as the original VGGish FAD does); the distance between the two Gaussians is
``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))``. Reference statistics can be saved to ``.npz`` and
reused, since reference sets (e.g. MusicCaps) are embedded once and compared many times.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.linalg

from musicgen_jax.eval.clips import list_audio_files, read_clip
from musicgen_jax.eval.embeddings import AudioEmbedder

IMAGINARY_TOLERANCE = 1e-3  # the tolerance on sqrtm's imaginary diagonal that the reference FAD/FID code uses


@dataclasses.dataclass(frozen=True)
class EmbeddingStatistics:
    """Mean ``[d]`` and covariance ``[d, d]`` of ``count`` embedding rows."""

    mean: np.ndarray
    covariance: np.ndarray
    count: int

    def save(self, path: str | Path) -> None:
        np.savez(Path(path), mean=self.mean, covariance=self.covariance, count=self.count)

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingStatistics:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"statistics file not found: {path}")
        try:
            with np.load(path) as data:
                return cls(np.asarray(data["mean"]), np.asarray(data["covariance"]), int(data["count"]))
        except (KeyError, ValueError, OSError) as error:
            raise ValueError(
                f"{path} is not an embedding-statistics .npz (mean, covariance, count): {error}"
            ) from None


def embedding_statistics(embeddings: np.ndarray) -> EmbeddingStatistics:
    """Statistics of ``[n, d]`` embeddings (unbiased covariance, as ``np.cov``; needs ``n >= 2``)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [n, d], got shape {embeddings.shape}")
    if embeddings.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 embeddings, got {embeddings.shape[0]}")
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("embeddings hold NaN or infinity")
    dimension = embeddings.shape[1]
    covariance = np.cov(embeddings, rowvar=False).reshape(dimension, dimension)  # [d, d] even for d == 1
    return EmbeddingStatistics(embeddings.mean(axis=0), covariance, embeddings.shape[0])


def frechet_distance(
    mean1: np.ndarray, covariance1: np.ndarray, mean2: np.ndarray, covariance2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mean1, covariance1) and N(mean2, covariance2).

    As in the reference FAD/FID implementations: ``scipy.linalg.sqrtm`` of ``S1 S2``; if that is not
    finite (singular product), retry with ``eps`` added to both diagonals; drop an imaginary part
    that is numerical noise (diagonal below 1e-3) and refuse a larger one. Rounding can leave the
    result a hair below zero for identical inputs; it is clamped to 0.
    """
    mean1, mean2 = np.atleast_1d(np.asarray(mean1, np.float64)), np.atleast_1d(np.asarray(mean2, np.float64))
    covariance1 = np.atleast_2d(np.asarray(covariance1, np.float64))
    covariance2 = np.atleast_2d(np.asarray(covariance2, np.float64))
    if mean1.shape != mean2.shape or covariance1.shape != covariance2.shape:
        raise ValueError(
            f"shapes differ: means {mean1.shape} vs {mean2.shape}, "
            f"covariances {covariance1.shape} vs {covariance2.shape}"
        )
    if covariance1.shape != (mean1.shape[0], mean1.shape[0]):
        raise ValueError(f"covariance {covariance1.shape} does not match mean {mean1.shape}")
    difference = mean1 - mean2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # singular S1 S2 is handled below
        covmean = scipy.linalg.sqrtm(covariance1 @ covariance2)
        if not np.all(np.isfinite(covmean)):
            offset = np.eye(covariance1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((covariance1 + offset) @ (covariance2 + offset))
    if np.iscomplexobj(covmean):
        largest = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if largest > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"sqrt(S1 S2) has an imaginary component of {largest:.3g}: covariances too ill-conditioned"
            )
        covmean = covmean.real
    distance = float(
        difference @ difference + np.trace(covariance1) + np.trace(covariance2) - 2.0 * np.trace(covmean)
    )
    return max(distance, 0.0)


def statistics_distance(first: EmbeddingStatistics, second: EmbeddingStatistics) -> float:
    return frechet_distance(first.mean, first.covariance, second.mean, second.covariance)


def embed_clips(clips: Iterable[tuple[np.ndarray, int]], embedder: AudioEmbedder) -> np.ndarray:
    """All embedding rows of ``(audio, sample_rate)`` clips, stacked: ``[total windows, d]``."""
    rows = [np.asarray(embedder.embed(audio, sample_rate), dtype=np.float64) for audio, sample_rate in clips]
    if not rows:
        raise ValueError("no clips to embed")
    return np.concatenate(rows, axis=0)


def frechet_audio_distance(
    generated: Sequence[tuple[np.ndarray, int]],
    reference: Sequence[tuple[np.ndarray, int]] | EmbeddingStatistics,
    embedder: AudioEmbedder,
) -> float:
    """FAD between generated clips and reference clips (or precomputed reference statistics)."""
    generated_stats = embedding_statistics(embed_clips(generated, embedder))
    if not isinstance(reference, EmbeddingStatistics):
        reference = embedding_statistics(embed_clips(reference, embedder))
    return statistics_distance(generated_stats, reference)


@dataclasses.dataclass(frozen=True)
class FadResult:
    fad: float
    embedder: str
    generated_files: int
    generated_embeddings: int
    reference_files: int | None  # None when the reference came as saved statistics
    reference_embeddings: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def directory_statistics(directory: str | Path, embedder: AudioEmbedder) -> tuple[EmbeddingStatistics, int]:
    """Statistics of every audio file in ``directory``, and the number of files."""
    files = list_audio_files(directory)
    return embedding_statistics(embed_clips((read_clip(path) for path in files), embedder)), len(files)


def fad_from_directories(
    generated: str | Path,
    reference: str | Path,
    embedder: AudioEmbedder,
    save_reference: str | Path | None = None,
) -> FadResult:
    """FAD between two directories of audio files; ``reference`` may also be a saved ``.npz``."""
    generated_stats, generated_files = directory_statistics(generated, embedder)
    reference = Path(reference)
    reference_files: int | None = None
    if reference.is_file() and reference.suffix == ".npz":
        reference_stats = EmbeddingStatistics.load(reference)
    else:
        reference_stats, reference_files = directory_statistics(reference, embedder)
    if save_reference is not None:
        reference_stats.save(save_reference)
    if reference_stats.mean.shape != generated_stats.mean.shape:
        raise ValueError(
            f"reference statistics are {reference_stats.mean.shape[0]}-d but {embedder.name} gives "
            f"{generated_stats.mean.shape[0]}-d embeddings: saved with another embedder?"
        )
    return FadResult(
        fad=statistics_distance(generated_stats, reference_stats),
        embedder=embedder.name,
        generated_files=generated_files,
        generated_embeddings=generated_stats.count,
        reference_files=reference_files,
        reference_embeddings=reference_stats.count,
    )
