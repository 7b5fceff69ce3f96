"""Beam search over the delayed token sequence, on the same cache and loop machinery.

Each position chooses one token per codebook. Given the prefix, the codebook heads are
independent, so a beam's step score is a sum of per-codebook log-probabilities; expanding codebook
by codebook and keeping the best ``num_beams`` partial choices after each is exact (a choice in
the final top ``n`` must extend a partial choice in the top ``n``). Forced tokens (the delay
pattern's special token, the audio prompt) score zero. Scores use the guided logits with
temperature (no top-k/top-p: beam search is deterministic).

MusicGen generates a fixed number of frames, so every beam has the same length: the length
penalty divides the reported score by ``length ** length_penalty`` and cannot change the ranking.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.generation import loop
from musicgen_jax.generation.sampling import apply_guidance
from musicgen_jax.models.musicgen import MusicGenModel


def _reorder(state: loop.GenerationState, origin: jax.Array, guided: bool) -> loop.GenerationState:
    """Make beam ``i`` a copy of beam ``origin[i]`` (cache rows of the null condition too)."""
    cache_rows = jnp.concatenate([origin, origin + origin.shape[0]]) if guided else origin  # batch is axis 1
    return state.replace(tokens=state.tokens[origin], cache=state.cache.select_rows(cache_rows))


@functools.partial(jax.jit, static_argnames=("model", "num_beams", "guided"))
def run(
    model: MusicGenModel,
    params,
    state: loop.GenerationState,
    plan: loop.SequencePlan,
    guidance_scale: jax.Array,  # [] float32
    temperature: jax.Array,  # [] float32
    *,
    num_beams: int,
    guided: bool,
) -> tuple[jax.Array, jax.Array]:
    """All positions; returns the beams' delayed tokens ``[beams, K, positions]`` best first and
    their summed log-probabilities ``[beams]``."""
    dec = model.config.decoder
    codebooks = dec.num_codebooks

    def body(carry):
        state, scores = carry
        logits = state.logits
        if guided:
            logits = apply_guidance(logits, jnp.full((num_beams,), guidance_scale))
        logprobs = jax.nn.log_softmax(logits / temperature, axis=-1)  # [beams, K, vocab]
        forced, is_forced = loop.forced_tokens(
            state.position, plan, dec.pad_token_id, codebooks, dec.audio_channels
        )
        # At the first position every beam is identical: keep one copy alive.
        first = state.position == 1
        partial = jnp.where(first & (jnp.arange(num_beams) > 0), -jnp.inf, scores)  # [beams]
        origin = jnp.arange(num_beams)
        chosen = jnp.zeros((num_beams, codebooks), jnp.int32)
        for k in range(codebooks):
            lp = logprobs[origin, k]  # [beams, vocab], rows follow the partial choices' beams
            fixed = is_forced[origin, k]
            lp = jnp.where(fixed[:, None], jnp.where(jnp.arange(dec.vocab_size) == 0, 0.0, -jnp.inf), lp)
            total = (partial[:, None] + lp).reshape(-1)
            best_scores, best = jax.lax.top_k(total, num_beams)
            parent = best // dec.vocab_size
            token = (best % dec.vocab_size).astype(jnp.int32)
            token = jnp.where(fixed[parent], forced[origin[parent], k], token)
            chosen = chosen[parent].at[:, k].set(token)
            origin, partial = origin[parent], best_scores
        state = _reorder(state, origin, guided)
        tokens = jax.lax.dynamic_update_slice(state.tokens, chosen[:, :, None], (0, 0, state.position))
        step_tokens = chosen[:, :, None]
        if guided:
            step_tokens = jnp.concatenate([step_tokens, step_tokens], axis=0)
        logits, cache = model.apply(
            {"params": params}, step_tokens, state.cache, None, method=MusicGenModel.decode_step
        )
        state = state.replace(
            tokens=tokens, position=state.position + 1, logits=logits[:, :, -1], cache=cache
        )
        return state, partial

    scores = jnp.zeros((num_beams,), jnp.float32)
    state, scores = jax.lax.while_loop(lambda c: c[0].position < c[0].end, body, (state, scores))
    order = jnp.argsort(-scores)
    return state.tokens[order], scores[order]


def beam_search(call, params, memory, memory_mask, plan: loop.SequencePlan, num_positions: int, guided: bool):
    """Frames ``[K, frames]`` of the best beam for one request, and its length-penalised score.

    ``call`` is the :class:`~musicgen_jax.generation.call.GenerationCall` running it: its
    ``program`` compiles through the engine's cache and counts the seconds against the call.
    """
    engine = call.engine
    dec = engine.config.decoder
    n = params.num_beams
    repeat = lambda x: jnp.repeat(x[:1], n, axis=0)
    memory, memory_mask = repeat(memory), repeat(memory_mask)
    plan = loop.SequencePlan(repeat(plan.num_frames), repeat(plan.prompt), repeat(plan.prompt_frames))
    key = ("beam_start", n, num_positions, memory.shape[1], guided)
    start = call.program(
        key,
        loop.start,
        engine.model,
        engine.params,
        memory,
        memory_mask,
        plan,
        num_positions=num_positions,
        guided=guided,
        track_seen=False,
    )
    state = start(engine.params, memory, memory_mask, plan)
    scale = jnp.asarray(params.guidance_scale, jnp.float32)
    temperature = jnp.asarray(params.temperature, jnp.float32)
    search = call.program(
        ("beam_run",) + key[1:],
        run,
        engine.model,
        engine.params,
        state,
        plan,
        scale,
        temperature,
        num_beams=n,
        guided=guided,
    )
    tokens, scores = search(engine.params, state, plan, scale, temperature)
    frames = np.asarray(loop.frames_of(tokens[:1], dec.audio_channels))[0]
    length = int(plan.num_frames[0]) * dec.num_codebooks
    return frames, float(scores[0]) / max(length, 1) ** params.length_penalty
