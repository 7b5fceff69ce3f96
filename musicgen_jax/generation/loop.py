"""The decode loop: sampling positions of the delayed token sequence on the device.

State is an explicit pytree; :func:`start` encodes nothing (the memory comes in already encoded),
builds the cache and runs the BOS column; :func:`advance` runs up to ``steps`` positions inside one
``lax.while_loop``. The host calls ``advance`` in chunks (for progress and streaming) or once.

Per position ``j`` and codebook ``k`` (frame ``f = j - delay_k - 1``): outside ``[0, num_frames)``
the special token is forced, inside the audio prompt the prompt's token is forced, otherwise the
sampled token stands. The loop ends at ``max(num_frames) + C``, a traced value, so requests of
different durations inside one length bucket share the compiled program.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from musicgen_jax.generation.sampling import SamplingControls, apply_guidance, sample_tokens
from musicgen_jax.models import delay_pattern
from musicgen_jax.models.cache import DecoderCache
from musicgen_jax.models.musicgen import MusicGenModel


@flax.struct.dataclass
class SequencePlan:
    """What each row must produce."""

    num_frames: jax.Array  # [batch] int32 frames wanted (<= the bucket's frames)
    prompt: jax.Array  # [batch, K, bucket_frames] int32 audio-prompt frames (codec codes)
    prompt_frames: jax.Array  # [batch] int32 how many prompt frames are real (0 = none)


@flax.struct.dataclass
class GenerationState:
    tokens: jax.Array  # [batch, K, positions] int32, the delayed sequence (position 0 = BOS)
    position: jax.Array  # [] int32, the next position to fill
    end: jax.Array  # [] int32, one past the last position any row needs
    logits: jax.Array  # [rows, K, vocab] float32 predicting ``position`` (rows = 2 * batch when guided)
    cache: DecoderCache
    seen: jax.Array | None  # [batch, K, vocab] bool, tokens already in each stream (repetition penalty)


def forced_tokens(
    position: jax.Array, plan: SequencePlan, special: int, num_codebooks: int, audio_channels: int
) -> tuple[jax.Array, jax.Array]:
    """At ``position``: ``[batch, K]`` tokens that must stand there, and where they apply."""
    frame = position - jnp.asarray(delay_pattern.delays(num_codebooks, audio_channels)) - 1  # [K]
    frame = frame[None, :]
    outside = (frame < 0) | (frame >= plan.num_frames[:, None])
    in_prompt = ~outside & (frame < plan.prompt_frames[:, None])
    index = jnp.clip(frame, 0, plan.prompt.shape[-1] - 1)
    prompt_token = jnp.take_along_axis(
        plan.prompt, jnp.broadcast_to(index, plan.num_frames.shape + (num_codebooks,))[..., None], axis=-1
    )[..., 0]
    token = jnp.where(outside, special, prompt_token)
    return token.astype(jnp.int32), outside | in_prompt


KV_BLOCK = 64  # the shortest attention span worth its own compiled program


def kv_buckets(num_positions: int, max_splits: int = 4) -> list[int]:
    """The attention spans compiled for a cache of ``num_positions``: ``n`` equal steps up to it
    (``n <= max_splits``, each at least ``KV_BLOCK`` positions).

    Early positions need only the start of the cache, so a chunk of the loop attends to the
    smallest span covering it: ``n`` spans read ``(n + 1) / 2n`` of the cache on average over a
    clip that fills its bucket (62.5 % for 4), and less for shorter clips, at the price of ``n``
    compiled programs per length bucket. The cache read is what grows with the batch: at 16 rows
    (batch 8 with guidance) of musicgen-small, 254 positions cost 308 ms a step on a 2-core CPU
    with the whole cache read and 216 ms with 64 positions of it.
    """
    splits = max(1, min(max_splits, num_positions // KV_BLOCK))
    return [-(-num_positions * i // splits) for i in range(1, splits + 1)]


def kv_bucket(needed: int, num_positions: int, max_splits: int = 4) -> int:
    return next(b for b in kv_buckets(num_positions, max_splits) if b >= min(needed, num_positions))


def _decode(
    model: MusicGenModel, params, tokens: jax.Array, cache: DecoderCache, guided: bool, kv_length: int | None
):
    if guided:
        tokens = jnp.concatenate([tokens, tokens], axis=0)
    logits, cache = model.apply(
        {"params": params}, tokens, cache, kv_length, method=MusicGenModel.decode_step
    )
    return logits[:, :, -1], cache  # [rows, K, vocab]


@functools.partial(jax.jit, static_argnames=("model", "num_positions", "guided", "track_seen", "cache_dtype"))
def start(
    model: MusicGenModel,
    params,
    memory: jax.Array,  # [batch, cond_len, hidden]
    memory_mask: jax.Array,  # [batch, cond_len]
    plan: SequencePlan,
    *,
    num_positions: int,
    guided: bool,
    track_seen: bool,
    cache_dtype=None,
) -> GenerationState:
    """Build the cache (null-condition rows appended when guided) and run the BOS column."""
    dec = model.config.decoder
    if guided:  # the model builds it: a melody model's null chroma is projected, not zero
        memory, memory_mask = model.apply(
            {"params": params}, memory, memory_mask, method=MusicGenModel.with_null_condition
        )
    cache = model.apply(
        {"params": params}, memory, memory_mask, num_positions, cache_dtype, method=MusicGenModel.init_cache
    )
    batch = plan.num_frames.shape[0]
    tokens = jnp.full((batch, dec.num_codebooks, num_positions), dec.pad_token_id, jnp.int32)
    logits, cache = _decode(model, params, tokens[:, :, :1], cache, guided, kv_buckets(num_positions)[0])
    end = jnp.max(plan.num_frames) + delay_pattern.num_delays(dec.num_codebooks, dec.audio_channels)
    seen = jnp.zeros((batch, dec.num_codebooks, dec.vocab_size), bool) if track_seen else None
    return GenerationState(
        tokens, jnp.ones((), jnp.int32), jnp.minimum(end, num_positions), logits, cache, seen
    )


@functools.partial(
    jax.jit, static_argnames=("model", "guided", "num_candidates", "kv_length"), donate_argnames=("state",)
)
def advance(
    model: MusicGenModel,
    params,
    state: GenerationState,
    controls: SamplingControls,
    plan: SequencePlan,
    steps: jax.Array,
    *,
    guided: bool,
    num_candidates: int,
    kv_length: int | None = None,
) -> GenerationState:
    """Fill up to ``steps`` more positions (stopping at ``state.end``); with ``kv_length``, every
    position filled must be below it."""
    dec = model.config.decoder
    stop = jnp.minimum(state.position + steps, state.end)

    def body(state: GenerationState) -> GenerationState:
        if guided:  # transformers penalises repeats in the conditional logits, then guides
            logits = apply_guidance(
                state.logits, controls.guidance_scale, state.seen, controls.repetition_penalty
            )
            sampled = sample_tokens(logits, controls, state.position, num_candidates)
        else:
            sampled = sample_tokens(state.logits, controls, state.position, num_candidates, state.seen)
        forced, is_forced = forced_tokens(
            state.position, plan, dec.pad_token_id, dec.num_codebooks, dec.audio_channels
        )
        token = jnp.where(is_forced, forced, sampled)  # [batch, K]
        tokens = jax.lax.dynamic_update_slice(state.tokens, token[:, :, None], (0, 0, state.position))
        seen = state.seen
        if seen is not None:
            # As transformers counts them: every token sampled past the audio prompt, also where
            # the delay pattern then stands the special token in its place; inside the prompt,
            # the prompt's own tokens.
            counted = jnp.where(state.position > plan.prompt_frames[:, None], sampled, token)
            real = counted < dec.vocab_size
            seen = seen | (jax.nn.one_hot(counted, dec.vocab_size, dtype=bool) & real[..., None])
        logits, cache = _decode(model, params, token[:, :, None], state.cache, guided, kv_length)
        return state.replace(
            tokens=tokens, position=state.position + 1, logits=logits, cache=cache, seen=seen
        )

    return jax.lax.while_loop(lambda s: s.position < stop, body, state)


def completed_frames(position: int, num_codebooks: int, audio_channels: int) -> int:
    """Frames whose every codebook is written once ``position`` positions are filled."""
    return max(0, position - delay_pattern.num_delays(num_codebooks, audio_channels))


@functools.partial(jax.jit, static_argnames=("audio_channels",))
def frames_of(tokens: jax.Array, audio_channels: int) -> jax.Array:
    """The delayed buffer ``[batch, K, N + C]`` as frames ``[batch, K, N]``."""
    return delay_pattern.revert_delay(tokens, audio_channels)
