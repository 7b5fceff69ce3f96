"""Live streaming over a WebSocket: the protocol (messages, the binary chunk format, close codes).

The sessions that speak it are in :mod:`.stream_sessions`; this module is what a client needs.

Protocol (``WS /ws/stream/{session_id}``; ``session_id``: 1-64 of ``A-Za-z0-9_-``, chosen by the client):

1. Client: ``{"type": "start_streaming", "request": {"prompt": ..., "chunk_duration": 1.0, ...}}``; the
   request takes the fields of ``POST /generate`` (no ``input_audio``) plus ``chunk_duration``
   (seconds per chunk, at least) and ``encoding`` (``"binary"``, default, or ``"base64"``). With API
   keys on, pass the key as ``?api_key=...`` (browsers cannot set WebSocket headers) or a header.
2. Server: ``{"type": "started", "session_id", "seed", "sample_rate", "channels", "dtype": "float32",
   "byte_order": "little", "layout": "interleaved", "encoding", "header_bytes": 24, "duration",
   "chunk_duration"}``.
3. Server, per chunk: with ``encoding="binary"`` a binary frame: a 24-byte little-endian header
   ``magic "MGA1" (4 bytes), seq uint32, sample_rate uint32, channels uint16, dtype uint16 (1 =
   float32), offset uint64 (first sample's index in the stream)``, then float32 samples, channels
   interleaved. With ``"base64"`` a text frame ``{"type": "audio", "seq", "offset", "samples",
   "sample_rate", "channels", "dtype", "data": <base64 of the same samples>}``. ``seq`` counts from 0.
4. Server, at the end: ``{"type": "done", "stopped": false, "chunks", "samples", "audio_seconds",
   "seed", "timings": {...}}`` and the socket closes (code 1000).

The client may send ``{"type": "stop"}`` at any time: generation is cancelled (when no other request
shares its batch) and the server answers ``done`` with ``"stopped": true``. Errors arrive as
``{"type": "error", "code", "message"}`` followed by a close with that code (:class:`CloseCode`:
4400 bad request, 4401 unauthorised, 4409 session id in use, 4429 rate limited, 4503 not ready or
busy, 1011 internal, 1012 server shutting down).

Audio is the model's raw output, not normalised (normalisation needs the whole clip), decoded by
:class:`~musicgen_jax.codec.StreamingDecoder` with left context, so the concatenated chunks equal
a single decode of the whole clip up to float rounding: there are no joins to hear.
"""

from __future__ import annotations

import base64
import enum
import json
import re
import struct
from typing import Any

import numpy as np
from pydantic import ValidationError

from musicgen_jax.serving.schemas import StreamRequest

HEADER = struct.Struct("<4sIIHHQ")  # magic, seq, sample_rate, channels, dtype, offset
MAGIC = b"MGA1"
DTYPE_FLOAT32 = 1
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class CloseCode(enum.IntEnum):
    """WebSocket close codes (and the ``code`` of error messages)."""

    NORMAL = 1000
    INTERNAL = 1011
    SHUTTING_DOWN = 1012
    BAD_REQUEST = 4400
    UNAUTHORISED = 4401
    SESSION_IN_USE = 4409
    RATE_LIMITED = 4429
    UNAVAILABLE = 4503  # not ready, or too many streams / requests


class StreamError(Exception):
    """Ends a session: the client gets ``{"type": "error", "code", "message"}`` and a close with ``code``."""

    def __init__(self, code: CloseCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def encode_chunk(seq: int, offset: int, audio: np.ndarray, sample_rate: int) -> bytes:
    """A binary chunk: header + float32 samples ``[samples, channels]`` interleaved, little-endian."""
    channels = audio.shape[0]
    header = HEADER.pack(MAGIC, seq, sample_rate, channels, DTYPE_FLOAT32, offset)
    return header + np.ascontiguousarray(audio.T, dtype="<f4").tobytes()


def decode_chunk(frame: bytes) -> tuple[int, int, int, np.ndarray]:
    """(seq, offset, sample_rate, audio ``[channels, samples]``) of a binary chunk (clients, tests)."""
    magic, seq, rate, channels, dtype, offset = HEADER.unpack_from(frame)
    if magic != MAGIC or dtype != DTYPE_FLOAT32:
        raise ValueError("not a musicgen-jax audio chunk")
    samples = np.frombuffer(frame, dtype="<f4", offset=HEADER.size).reshape(-1, channels).T
    return seq, offset, rate, samples


def audio_message(seq: int, offset: int, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
    """A chunk as a JSON text message (``encoding="base64"``); ``audio`` is ``[channels, samples]``."""
    payload = np.ascontiguousarray(audio.T, dtype="<f4").tobytes()
    return {
        "type": "audio",
        "seq": seq,
        "offset": offset,
        "samples": int(audio.shape[-1]),
        "sample_rate": sample_rate,
        "channels": int(audio.shape[0]),
        "dtype": "float32",
        "data": base64.b64encode(payload).decode("ascii"),
    }


def parse_start(text: str | None) -> StreamRequest:
    """The request of the client's first message (``None``: it was not text); StreamError if unusable."""
    if text is None:
        raise StreamError(
            CloseCode.BAD_REQUEST,
            'the first message must be JSON text: {"type": "start_streaming", "request": {...}}',
        )
    try:
        data = json.loads(text)
    except ValueError:
        raise StreamError(CloseCode.BAD_REQUEST, "the first message is not valid JSON") from None
    if not isinstance(data, dict) or data.get("type") != "start_streaming":
        raise StreamError(
            CloseCode.BAD_REQUEST, 'the first message must be {"type": "start_streaming", "request": {...}}'
        )
    if not isinstance(data.get("request"), dict):
        raise StreamError(
            CloseCode.BAD_REQUEST,
            '"request" must be an object with the generation fields (prompt, duration, ...)',
        )
    try:
        return StreamRequest.model_validate(data["request"])
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
        raise StreamError(CloseCode.BAD_REQUEST, f"invalid request: {problems}") from None
