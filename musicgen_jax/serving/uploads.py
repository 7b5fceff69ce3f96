"""Uploaded audio: bytes into samples (refusing what is not usable audio) and the continuation slice.

Runs on the audio pool (decoding is CPU work). Every refusal is an :class:`AudioInputError` or a
:class:`FieldError` naming the field at fault, in words a client can act on.
"""

from __future__ import annotations

import io

import numpy as np

from musicgen_jax.audio.layout import MAX_CHANNELS
from musicgen_jax.serving.errors import AudioInputError, FieldError


def read_audio(data: bytes, max_seconds: float, field: str) -> tuple[np.ndarray, int]:
    """Uploaded bytes as float32 ``[channels, samples]`` and their rate; ``field`` names the upload."""
    import soundfile

    if not data:
        raise AudioInputError(field, f"{field} is empty")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as file:
            rate = int(file.samplerate)
            if file.frames > max_seconds * rate:  # refuse before decoding a long file
                raise AudioInputError(
                    field,
                    f"{field} is {file.frames / rate:.1f} s long; "
                    f"this server takes at most {max_seconds:g} s",
                )
            audio = file.read(dtype="float32", always_2d=True).T  # [channels, samples]
    except AudioInputError:
        raise
    except Exception as error:  # noqa: BLE001 - libsndfile's many ways of saying "not audio"
        raise AudioInputError(
            field,
            f"{field} is not an audio file this server can read (WAV, FLAC, MP3, OGG): {_first_line(error)}",
        ) from None
    if audio.shape[-1] == 0:
        raise AudioInputError(field, f"{field} holds no samples")
    if audio.shape[0] > MAX_CHANNELS:
        raise AudioInputError(
            field, f"{field} has {audio.shape[0]} channels; at most {MAX_CHANNELS} are accepted"
        )
    if not np.isfinite(audio).all():
        raise AudioInputError(field, f"{field} holds NaN or infinite samples")
    return np.ascontiguousarray(audio), rate


def continuation_slice(audio: np.ndarray, rate: int, start: float, end: float | None) -> np.ndarray:
    """``audio[..., start:end]`` in seconds (``end`` None or -1: the end), with clear errors."""
    length = audio.shape[-1] / rate
    stop = length if end is None or end == -1 else end
    if start >= length:
        raise FieldError(
            "continuation_start",
            f"continuation_start ({start:g} s) is past the end of input_audio ({length:.2f} s)",
        )
    if stop <= start:
        raise FieldError(
            "continuation_end",
            f"continuation_end ({stop:g} s) must be after continuation_start ({start:g} s)",
        )
    piece = audio[:, round(start * rate) : round(min(stop, length) * rate)]  # [channels, samples]
    if piece.shape[-1] < rate // 50:
        raise FieldError(None, "the audio prompt is shorter than one codec frame (20 ms)")
    return piece


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
