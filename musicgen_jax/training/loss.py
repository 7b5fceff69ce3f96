"""Per-codebook cross-entropy under the delay pattern, as audiocraft and transformers compute it.

The loss is ``mean_k CE_k`` where ``CE_k`` is the mean negative log-likelihood of codebook ``k``
over its valid target positions (the delay pattern holds a real frame there and that frame is not
padding). transformers' ``MusicgenForConditionalGeneration(labels=...)`` computes the same thing
when its labels are our delayed targets with the special token (2048) at masked positions: it
ignores every label equal to the pad token, which is exactly where the pattern has no frame. It
differs on padded frames unless their labels are set to the pad token (or -100) too, and it feeds
the shifted labels as inputs, so padded frames enter the inputs as the pad token; this module's
caller does the same by replacing padded frames with the special token before delaying.

Sums rather than means leave the functions here, so that gradient accumulation over microbatches
normalises by the whole batch's counts and equals one large batch exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def codebook_sums(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Per-codebook sums over batch and time: ``nll`` and ``correct``, each ``[codebooks]`` float32.

    ``logits`` ``[batch, codebooks, length, vocab]``; ``targets`` and ``mask`` ``[batch, codebooks, length]``.
    """
    vocab = logits.shape[-1]
    weights = mask.astype(jnp.float32)
    # Masked targets may be the special token (== vocab): point them anywhere valid, they weigh 0.
    safe_targets = jnp.where(mask, targets, 0).clip(0, vocab - 1)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe_targets)
    correct = (jnp.argmax(logits, axis=-1) == safe_targets).astype(jnp.float32)
    return {"nll": (nll * weights).sum(axis=(0, 2)), "correct": (correct * weights).sum(axis=(0, 2))}


def codebook_counts(mask: jax.Array) -> jax.Array:
    """``[codebooks]`` float32: valid target positions of each codebook."""
    return mask.astype(jnp.float32).sum(axis=(0, 2))


def loss_from_sums(nll: jax.Array, counts: jax.Array) -> jax.Array:
    """``mean_k nll_k / count_k``; a codebook with no valid position contributes 0."""
    return jnp.mean(nll / jnp.maximum(counts, 1.0))


def metrics_from_sums(sums: dict[str, jax.Array], counts: jax.Array) -> dict[str, jax.Array]:
    """``loss`` (= ``ce``), ``ppl``, ``accuracy``, ``ce_q{k}``, ``accuracy_q{k}``, ``target_tokens``."""
    per_codebook = sums["nll"] / jnp.maximum(counts, 1.0)
    accuracy = sums["correct"] / jnp.maximum(counts, 1.0)
    ce = jnp.mean(per_codebook)
    metrics = {
        "loss": ce,
        "ce": ce,
        "ppl": jnp.exp(ce),
        "accuracy": sums["correct"].sum() / jnp.maximum(counts.sum(), 1.0),
        "target_tokens": counts.sum(),
    }
    for k in range(per_codebook.shape[0]):
        metrics[f"ce_q{k}"] = per_codebook[k]
        metrics[f"accuracy_q{k}"] = accuracy[k]
    return metrics
