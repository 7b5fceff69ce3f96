"""The codebook delay pattern, shared by training and generation.

Codebook ``k`` is shifted right by its delay ``d_k`` (``k`` for mono; ``k // 2`` for stereo, whose
left/right codebooks are interleaved and share a delay). With ``C`` distinct delays, ``T`` frames
become a delayed sequence of ``T + C`` positions in which position ``j`` of codebook ``k`` holds
frame ``j - d_k - 1``; every other position holds the special token (``vocab_size``, BOS/pad).
Position 0 is the all-special BOS column. This is exactly transformers' ``build_delay_pattern_mask``
with ``max_length = T + C`` (so 1500 positions give 1496 frames), and audiocraft's delayed pattern
with its leading special token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def delays(num_codebooks: int, audio_channels: int = 1) -> np.ndarray:
    """``[codebooks]`` int32 delay of each codebook."""
    return (np.arange(num_codebooks) // audio_channels).astype(np.int32)


def num_delays(num_codebooks: int, audio_channels: int = 1) -> int:
    """``C``: how many positions the pattern adds (transformers' ``channel_codebooks``)."""
    return num_codebooks // audio_channels


def frame_index(positions: jax.Array, num_codebooks: int, audio_channels: int = 1) -> jax.Array:
    """``[codebooks, len(positions)]``: which frame each delayed position holds (may be out of range)."""
    offsets = jnp.asarray(delays(num_codebooks, audio_channels))
    return positions[None, :] - offsets[:, None] - 1


def apply_delay(frames: jax.Array, special_token: int, audio_channels: int = 1) -> jax.Array:
    """``[batch, codebooks, T]`` frames to the delayed ``[batch, codebooks, T + C]`` sequence."""
    batch, num_codebooks, length = frames.shape
    total = length + num_delays(num_codebooks, audio_channels)
    index = frame_index(jnp.arange(total), num_codebooks, audio_channels)  # [codebooks, total]
    valid = (index >= 0) & (index < length)
    gathered = jnp.take_along_axis(frames, jnp.clip(index, 0, length - 1)[None].repeat(batch, 0), axis=2)
    return jnp.where(valid[None], gathered, special_token).astype(frames.dtype)


def revert_delay(delayed: jax.Array, audio_channels: int = 1) -> jax.Array:
    """The delayed ``[batch, codebooks, T + C]`` sequence back to ``[batch, codebooks, T]`` frames."""
    batch, num_codebooks, total = delayed.shape
    length = total - num_delays(num_codebooks, audio_channels)
    offsets = jnp.asarray(delays(num_codebooks, audio_channels))
    index = offsets[:, None] + 1 + jnp.arange(length)[None, :]  # [codebooks, T]
    return jnp.take_along_axis(delayed, index[None].repeat(batch, 0), axis=2)


def training_pair(
    frames: jax.Array, special_token: int, audio_channels: int = 1, frame_mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Inputs, targets and the loss mask for teacher forcing, each ``[batch, codebooks, T + C - 1]``.

    ``frame_mask`` ``[batch, T]`` marks real (unpadded) frames; targets at pattern positions with no
    valid frame, or on padding, are masked out of the loss.
    """
    delayed = apply_delay(frames, special_token, audio_channels)
    inputs, targets = delayed[:, :, :-1], delayed[:, :, 1:]
    batch, num_codebooks, length = frames.shape
    positions = jnp.arange(1, delayed.shape[-1])
    index = frame_index(positions, num_codebooks, audio_channels)  # [codebooks, T + C - 1]
    mask = ((index >= 0) & (index < length))[None].repeat(batch, 0)
    if frame_mask is not None:
        real = jnp.take_along_axis(
            frame_mask.astype(bool)[:, None, :].repeat(num_codebooks, 1),
            jnp.clip(index, 0, length - 1)[None].repeat(batch, 0),
            axis=2,
        )
        mask = mask & real
    return inputs, targets, mask
