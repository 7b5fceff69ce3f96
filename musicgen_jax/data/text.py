"""The text a training example is conditioned on, built from its metadata.

Training follows audiocraft: :func:`augment_description` is ``augment_music_info_description``
(``audiocraft/data/music_dataset.py``) and :func:`word_dropout` is the T5 conditioner's word dropout
(``audiocraft/modules/conditioners.py``), with a NumPy generator in place of Python's ``random`` so
a grain pipeline can make them deterministic. Inference and evaluation use the fixed rendering of
:func:`musicgen_jax.conditioning.render_description` (through :func:`render_info`).

audiocraft's semantics, kept on purpose:

* with probability ``merge_text_p`` the fields key, bpm, genre, moods, keywords, instrument become
  ``"field: value"`` pairs, each **kept** with probability ``drop_other_p`` (audiocraft keeps a field
  when ``uniform < drop_other_p``, despite the name), shuffled and joined with ". "; lists are
  joined with ", " and numbers printed by ``str`` (so ``bpm: 120.0``, as ``render_description``
  prints it too); then the description is dropped with probability ``drop_desc_p``;
* the result is ``"<description without trailing dots>. <meta>"``, or the meta alone, stripped: a
  description that was kept with no pairs therefore gains a final ".";
* ``merge_text_p == 0`` returns the description untouched (audiocraft skips the function);
* no description and no pairs give None (the empty condition: T5 mask all zeros).
"""

from __future__ import annotations

import numpy as np

from musicgen_jax.conditioning import render_description
from musicgen_jax.data.metadata import TEXT_FIELDS, MusicInfo, attributes_from_info

__all__ = ["augment_description", "render_description", "render_info", "training_text", "word_dropout"]


def _value_text(value: object) -> str:
    """audiocraft's ``process_value``: ``str`` of a scalar, lists joined with ", "."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def augment_description(
    info: MusicInfo,
    rng: np.random.Generator,
    merge_text_p: float = 0.25,
    drop_desc_p: float = 0.5,
    drop_other_p: float = 0.5,
) -> str | None:
    """audiocraft's ``augment_music_info_description`` on ``info``; None means no text.

    Draws from ``rng``: one to decide the merge, then (when merging) one per field of
    :data:`TEXT_FIELDS`, a permutation, and one for the description, always in that order, so the
    same generator state gives the same text.
    """
    description = info.description
    if not merge_text_p:
        return description
    meta = ""
    if rng.random() < merge_text_p:
        keep = rng.random(len(TEXT_FIELDS)) < drop_other_p
        pairs = [
            f"{name}: {_value_text(getattr(info, name))}"
            for name, kept in zip(TEXT_FIELDS, keep)
            if kept and getattr(info, name) is not None
        ]
        pairs = [pairs[i] for i in rng.permutation(len(pairs))]
        meta = ". ".join(pairs)
        if rng.random() < drop_desc_p:
            description = None
    if description is None:
        text = meta if len(meta) > 1 else None
    else:
        text = ". ".join([description.rstrip("."), meta])
    return text.strip() if text else None


def word_dropout(text: str | None, probability: float, rng: np.random.Generator) -> str:
    """Drop each space-separated word with ``probability`` (audiocraft's T5 word dropout, applied
    in training only); None becomes ""."""
    text = text or ""
    if probability <= 0.0 or not text:
        return text
    words = text.split(" ")
    keep = rng.random(len(words)) >= probability
    return " ".join(word for word, kept in zip(words, keep) if kept)


def training_text(
    info: MusicInfo,
    rng: np.random.Generator,
    *,
    merge_text_p: float = 0.25,
    drop_desc_p: float = 0.5,
    drop_other_p: float = 0.5,
    word_dropout_p: float = 0.0,
) -> str:
    """The augmented description, then word dropout: what one training step's T5 encodes ("" = none)."""
    text = augment_description(info, rng, merge_text_p, drop_desc_p, drop_other_p)
    return word_dropout(text, word_dropout_p, rng)


def render_info(info: MusicInfo) -> str:
    """The fixed inference-time rendering of ``info`` (description, then the validated attributes
    in a fixed order) by :func:`~musicgen_jax.conditioning.render_description`."""
    return render_description(info.description, attributes_from_info(info))
