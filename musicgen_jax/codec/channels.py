"""MusicGen's channels over a mono EnCodec: the layout both codec backends share.

Stereo MusicGen runs the mono codec once per channel and interleaves the channels' codebooks
``L0, R0, L1, R1, ...`` in its token stream; decoding splits them the same way. This is what
transformers' ``MusicgenForConditionalGeneration`` does in ``_prepare_audio_encoder_kwargs_for_generation``
and ``generate``. Audio going in is resampled to the codec's rate and mixed to the model's channel
count first, as audiocraft's ``convert_audio`` does. Written once here so the PyTorch bridge and the
JAX codec cannot disagree on it.

Written on NumPy, without importing JAX; what the JAX codec also applies to codes still on a device
(:func:`channels_as_rows`, :func:`check_model_layout`, :func:`check_code_range`) takes the array
module as an argument or uses only what both kinds of array have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from musicgen_jax.audio.io import resample
from musicgen_jax.audio.layout import check_channels_first, require_finite


def as_batch(audio: Any) -> np.ndarray:
    """``[samples]``, ``[channels, samples]`` or ``[batch, channels, samples]`` -> float32 3-D."""
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, None]
    elif array.ndim == 2:
        array = array[None]
    elif array.ndim != 3:
        raise ValueError(f"audio must be [batch, channels, samples], got shape {array.shape}")
    check_channels_first(array)
    require_finite(array)
    return array


def codec_input(audio: Any, sample_rate: int, codec_rate: int, audio_channels: int) -> np.ndarray:
    """Audio as the codec takes it: float32 ``[batch, channels, samples]`` at ``codec_rate``, mixed
    down to mono for a mono model, cut to the first two channels for a stereo one (a mono input to a
    stereo model stays mono: :func:`interleave_codebooks` duplicates its codes)."""
    audio = as_batch(audio)  # [batch, channels, samples]
    if audio.shape[-1] == 0:
        raise ValueError("cannot encode empty audio")
    if int(sample_rate) != codec_rate:
        audio = resample(audio, int(sample_rate), codec_rate)
    if audio_channels == 1 and audio.shape[1] > 1:
        return audio.mean(axis=1, keepdims=True)
    if audio_channels == 2 and audio.shape[1] > 2:
        return audio[:, :2]  # audiocraft keeps the first two channels
    return audio


def interleave_codebooks(per_channel: list[np.ndarray], audio_channels: int) -> np.ndarray:
    """Each channel's codes ``[batch, K, frames]`` -> the model's ``[batch, audio_channels * K, frames]``."""
    if audio_channels == 1:
        return per_channel[0]
    if len(per_channel) == 1:
        # Mono into a stereo model: both channels get the same codes (transformers repeat_interleaves).
        return np.repeat(per_channel[0], audio_channels, axis=1)
    stacked = np.stack(per_channel, axis=2)  # [batch, K, channels, frames]
    return stacked.reshape(stacked.shape[0], -1, stacked.shape[-1])  # L0, R0, L1, R1, ...


def channel_codebooks(codes: np.ndarray, audio_channels: int) -> list[np.ndarray]:
    """The model's codes ``[batch, audio_channels * K, frames]`` -> each channel's ``[batch, K, frames]``."""
    return [codes[:, channel::audio_channels] for channel in range(audio_channels)]


def channels_as_rows(codes, audio_channels: int, xp=np):
    """``[batch, audio_channels * K, n]`` -> ``[audio_channels * batch, K, n]``, left rows first, so
    one mono codec call decodes every channel. ``xp``: the array module of ``codes`` (``jax.numpy``
    for codes on a device)."""
    if audio_channels == 1:
        return codes
    return xp.concatenate(channel_codebooks(codes, audio_channels), axis=0)


def rows_as_channels(audio: np.ndarray, audio_channels: int) -> np.ndarray:
    """The inverse for audio: ``[audio_channels * batch, 1, samples]`` ->
    ``[batch, audio_channels, samples]``."""
    rows, _, samples = audio.shape
    split = audio.reshape(audio_channels, rows // audio_channels, samples)
    return np.ascontiguousarray(split.transpose(1, 0, 2))


def check_model_layout(
    shape: tuple[int, ...], dtype, *, audio_channels: int, available: int, expected: int
) -> None:
    """Refuse model codes that are not integers ``[batch, audio_channels * K, frames]`` with K from 1 to
    ``available`` (normally ``expected`` codebooks in all). Static facts only: nothing is read."""
    if len(shape) != 3:
        raise ValueError(f"codes must be [batch, codebooks, frames], got shape {tuple(shape)}")
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(f"codes must be integers, got {dtype}")
    codebooks = shape[1]
    per_channel, remainder = divmod(codebooks, audio_channels)
    if remainder or not 1 <= per_channel <= available:
        raise ValueError(
            f"codes have {codebooks} codebooks; this {audio_channels}-channel codec takes "
            f"{audio_channels} x (1 to {available}) (normally {expected})"
        )


def check_code_range(codes, codebook_size: int) -> None:
    """Refuse codes outside ``[0, codebook_size)``. Only ``min()`` and ``max()`` are read: for a JAX
    array, two scalars come back from its device, not the codes."""
    if not codes.size:
        return
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= codebook_size:
        raise ValueError(
            f"codes must lie in [0, {codebook_size}), got values in [{low}, {high}] "
            "(revert the delay pattern first: its special token is not a codec code)"
        )


def check_model_codes(
    codes: Any, *, audio_channels: int, available: int, codebook_size: int, expected: int
) -> np.ndarray:
    """Validate the model's codes ``[batch, audio_channels * K, frames]`` (K from 1 to ``available``,
    normally ``expected`` in all) and return them as int64 NumPy."""
    array = np.asarray(codes)  # zero-copy for NumPy and CPU JAX arrays
    check_model_layout(
        array.shape, array.dtype, audio_channels=audio_channels, available=available, expected=expected
    )
    check_code_range(array, codebook_size)
    return array.astype(np.int64, copy=False)


# Codes longer than this many seconds are decoded chunk by chunk through the streaming decoder (with
# exact context) so memory stays bounded; shorter ones in one call, exactly as transformers does.
DEFAULT_CHUNK_SECONDS = 30.0


def decode_in_chunks(
    codec, codes: np.ndarray, chunk_frames: int | None, decode_whole: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Checked codes ``[batch, codebooks, frames]`` to float32 audio ``[batch, channels, samples]``:
    in one ``decode_whole`` call up to ``chunk_frames`` frames (default :data:`DEFAULT_CHUNK_SECONDS`),
    else pushed through ``codec.streaming_decoder()`` in chunks, equal to one decode to rounding."""
    batch, _, frames = codes.shape
    if chunk_frames is None:
        chunk_frames = max(1, round(DEFAULT_CHUNK_SECONDS * codec.frame_rate))
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be positive, got {chunk_frames}")
    if frames == 0:
        return np.zeros((batch, codec.audio_channels, 0), np.float32)
    if frames <= chunk_frames:
        return decode_whole(codes)
    stream = codec.streaming_decoder()
    pieces = [
        stream.push(codes[..., start : start + chunk_frames]) for start in range(0, frames, chunk_frames)
    ]
    pieces.append(stream.flush())
    return np.concatenate(pieces, axis=-1)
