"""Turning next-position logits into tokens: repetition penalty, guidance, temperature, top-k, top-p.

transformers' MusicGen order (audiocraft has no repetition penalty): the repetition penalty, on
the conditional rows only, then classifier-free guidance, then temperature, top-k, top-p. (Its
``RepetitionPenaltyLogitsProcessor`` runs before ``ClassifierFreeGuidanceLogitsProcessor`` and is
handed the conditional batch's ``input_ids``, so it never touches the null rows.)
:func:`apply_guidance` given ``seen`` follows that order; :func:`sample_tokens` given ``seen``
penalises the logits it is handed, which is the same order only without guidance. Every knob is a
per-row array, so one compiled program serves requests with different settings side by side; only
the candidate count (how many of the best tokens top-k/top-p may choose among) is a static shape.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class SamplingControls:
    """Per-row sampling settings, each ``[batch]``."""

    temperature: jax.Array  # float32, > 0
    top_k: jax.Array  # int32, 0 = off
    top_p: jax.Array  # float32, 0 = off
    guidance_scale: jax.Array  # float32, 1 = no guidance
    repetition_penalty: jax.Array  # float32, 1 = off
    greedy: jax.Array  # bool
    keys: jax.Array  # [batch] PRNG keys (one seed per row)


def apply_guidance(
    logits: jax.Array,
    guidance_scale: jax.Array,
    seen: jax.Array | None = None,
    repetition_penalty: jax.Array | None = None,
) -> jax.Array:
    """``[2 * batch, K, vocab]`` (conditional rows, then null rows) to ``[batch, K, vocab]``:
    ``uncond + (cond - uncond) * scale``. With ``seen`` ``[batch, K, vocab]`` and
    ``repetition_penalty`` ``[batch]``, ``cond`` is penalised first, as transformers does."""
    cond, uncond = jnp.split(logits, 2, axis=0)
    if seen is not None:
        cond = apply_repetition_penalty(cond, seen, repetition_penalty)
    scale = guidance_scale.reshape((-1,) + (1,) * (cond.ndim - 1))
    return uncond + (cond - uncond) * scale


def apply_repetition_penalty(logits: jax.Array, seen: jax.Array, penalty: jax.Array) -> jax.Array:
    """transformers' repetition penalty per codebook stream: tokens already in the stream get
    their logit divided by ``penalty`` (multiplied when negative). ``seen`` ``[batch, K, vocab]``."""
    p = penalty[:, None, None]
    penalised = jnp.where(logits < 0, logits * p, logits / p)
    return jnp.where(seen, penalised, logits)


def filter_candidates(
    logits: jax.Array, controls: SamplingControls, num_candidates: int
) -> tuple[jax.Array, jax.Array]:
    """The ``num_candidates`` best tokens of each ``[batch, K]`` row after temperature, top-k and
    top-p: filtered logits ``[batch, K, n]`` (-inf where removed) and their token ids."""
    scaled = logits / controls.temperature[:, None, None]
    values, indices = jax.lax.top_k(scaled, num_candidates)  # sorted, best first
    n = num_candidates
    k = jnp.where(controls.top_k > 0, jnp.minimum(controls.top_k, n), n)
    # Like transformers' top-k, keep every token at least as good as the k-th (ties included).
    threshold = jnp.take_along_axis(values, (k - 1)[:, None, None].repeat(values.shape[1], 1), axis=-1)
    keep = values >= threshold
    probs = jax.nn.softmax(jnp.where(keep, values, -jnp.inf), axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # Top-p keeps the smallest set whose mass reaches p: a token stays while the mass before it < p.
    p = controls.top_p[:, None, None]
    keep &= jnp.where(p > 0, mass_before < p, True)
    return jnp.where(keep, values, -jnp.inf), indices


def sample_tokens(
    logits: jax.Array,  # [batch, K, vocab] float32, after guidance
    controls: SamplingControls,
    position: jax.Array,  # [] int32, folded into each row's key so every step draws afresh
    num_candidates: int,
    seen: jax.Array | None = None,  # [batch, K, vocab] bool, for the repetition penalty
) -> jax.Array:
    """Next tokens ``[batch, K]`` int32."""
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, controls.repetition_penalty)
    greedy_tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered, indices = filter_candidates(logits, controls, num_candidates)
    # Gumbel-max over the candidates, with the noise drawn for the whole vocabulary and looked up
    # by token id: a row's draw then depends only on its own key and logits, not on how many
    # candidates its batch needed, so batching requests together does not change their music.
    step_keys = jax.vmap(lambda key: jax.random.fold_in(key, position))(controls.keys)
    noise = jax.vmap(lambda key: jax.random.gumbel(key, logits.shape[1:], jnp.float32))(step_keys)
    choice = jnp.argmax(filtered + jnp.take_along_axis(noise, indices, axis=-1), axis=-1)
    sampled = jnp.take_along_axis(indices, choice[..., None], axis=-1)[..., 0].astype(jnp.int32)
    return jnp.where(controls.greedy[:, None], greedy_tokens, sampled)
