"""CLAP score: how well each clip matches its text, as the cosine similarity of their embeddings in
a joint audio-text space (the text-consistency metric of the MusicGen paper, via audiocraft's
``CLAPTextConsistencyMetric``). Any ``JointEmbedder`` works; ``ClapEmbedder`` loads LAION CLAP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from musicgen_jax.eval.embeddings import AudioEmbedder, TextEmbedder


@dataclasses.dataclass(frozen=True)
class ClapScore:
    """``mean`` of ``per_item``: the cosine similarity of clip ``i`` and text ``i``, each in ``[-1, 1]``."""

    mean: float
    per_item: tuple[float, ...]

    def to_json(self) -> dict:
        return {"clap_score": self.mean, "per_item": list(self.per_item)}


def _unit_rows(matrix: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    if np.any(norms == 0.0):
        raise ValueError(f"a {what} embedding is the zero vector: its cosine similarity is undefined")
    return matrix / norms


def clip_embedding(embedder: AudioEmbedder, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """One unit vector per clip: the mean of its unit-normalised window embeddings, renormalised."""
    windows = _unit_rows(np.asarray(embedder.embed(audio, sample_rate), dtype=np.float64), "audio")  # [n, d]
    return _unit_rows(windows.mean(axis=0, keepdims=True), "audio")[0]


def pairwise_cosine(audio_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[n, d]`` matrices -> ``[n]``."""
    audio_embeddings = np.atleast_2d(np.asarray(audio_embeddings, np.float64))
    text_embeddings = np.atleast_2d(np.asarray(text_embeddings, np.float64))
    if audio_embeddings.shape != text_embeddings.shape:
        raise ValueError(
            f"audio {audio_embeddings.shape} and text {text_embeddings.shape} embeddings differ in shape"
        )
    return np.sum(_unit_rows(audio_embeddings, "audio") * _unit_rows(text_embeddings, "text"), axis=-1)


def clap_score(
    clips: Sequence[tuple[np.ndarray, int]],
    texts: Sequence[str],
    audio_embedder: AudioEmbedder,
    text_embedder: TextEmbedder | None = None,
) -> ClapScore:
    """Cosine similarity of each ``(audio, sample_rate)`` clip with its text, and their mean.

    ``text_embedder`` defaults to ``audio_embedder`` (a CLAP model embeds both); pass another to
    pair an audio tower with a separately loaded text tower.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, one per clip, not a single string")
    if len(clips) != len(texts):
        raise ValueError(f"{len(clips)} clips but {len(texts)} texts: they pair up one to one")
    if not clips:
        raise ValueError("no clips to score")
    text_embedder = text_embedder if text_embedder is not None else audio_embedder
    if not hasattr(text_embedder, "embed_text"):
        raise TypeError(f"{type(text_embedder).__name__} does not embed text: pass a text_embedder")
    audio_matrix = np.stack([clip_embedding(audio_embedder, audio, rate) for audio, rate in clips])  # [n, d]
    text_matrix = np.asarray(text_embedder.embed_text(list(texts)), dtype=np.float64)  # [n, d]
    scores = pairwise_cosine(audio_matrix, text_matrix)
    return ClapScore(float(np.mean(scores)), tuple(float(value) for value in scores))
