"""Live streaming over a WebSocket: the protocol (messages, the binary chunk format, close codes).

The sessions that speak it are in :mod:`.stream_sessions`; this module is what a client needs.

Protocol (``WS /ws/stream/{session_id}``; ``session_id``: 1-64 of ``A-Za-z0-9_-``, chosen by the client):

1. Client: ``{"type": "start_streaming", "request": {"prompt": ..., "chunk_duration": 1.0, ...}}``; the
   request takes the fields of ``POST /generate`` plus ``chunk_duration`` (seconds per chunk, at
   least) and ``encoding`` (``"binary"``, default, or ``"base64"``); ``input_audio`` is the base64
   of an audio file, taken only as a melody (``"continuation": false``, melody models). With API
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
the codec's ``streaming_decoder()`` (either backend) with left context, so the concatenated chunks equal
a single decode of the whole clip up to float rounding: there are no joins to hear.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import re
import struct
import time
from typing import Any

import numpy as np
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from musicgen_jax.serving.queue import JobResult
from musicgen_jax.serving.schemas import StreamRequest

HEADER = struct.Struct("<4sIIHHQ")  # magic, seq, sample_rate, channels, dtype, offset
MAGIC = b"MGA1"
DTYPE_FLOAT32 = 1
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
START_TIMEOUT = 30.0  # seconds the server waits for start_streaming


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


def started_message(
    session_id: str, seed: int, sample_rate: int, channels: int, body: StreamRequest, duration: float
) -> dict[str, Any]:
    """The server's answer to ``start_streaming``: how the audio will arrive."""
    return {
        "type": "started",
        "session_id": session_id,
        "seed": seed,
        "sample_rate": sample_rate,
        "channels": channels,
        "dtype": "float32",
        "byte_order": "little",
        "layout": "interleaved",
        "encoding": body.encoding,
        "header_bytes": HEADER.size,
        "duration": duration,
        "chunk_duration": body.chunk_duration,
    }


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


def stopped_message(chunks: int, samples: int, sample_rate: int, seed: int, total_seconds: float) -> dict:
    """The last message of a stream the client stopped."""
    return {
        "type": "done",
        "stopped": True,
        "chunks": chunks,
        "samples": samples,
        "audio_seconds": samples / sample_rate,
        "seed": seed,
        "timings": {"total_seconds": total_seconds},
    }


def done_message(
    chunks: int, samples: int, sample_rate: int, result: JobResult, submitted: float, sent_times: list[float]
) -> dict[str, Any]:
    """The last message of a stream whose generation finished: what was sent, and when (Unix times)."""
    finished = time.time()
    audio_seconds = samples / sample_rate
    timings = {
        "queued_seconds": result.started_at - submitted,
        "generate_seconds": result.generate_seconds,
        "compile_seconds": result.compile_seconds,
        "first_chunk_seconds": (sent_times[0] - submitted) if sent_times else None,
        "total_seconds": finished - submitted,
        "submitted_at": submitted,
        "generation_finished_at": result.finished_at,
        "first_chunk_at": sent_times[0] if sent_times else None,
        "chunks_before_generation_end": sum(t < result.finished_at for t in sent_times),
        "real_time_factor": audio_seconds / (finished - result.started_at)
        if finished > result.started_at
        else None,
    }
    return {
        "type": "done",
        "stopped": False,
        "chunks": chunks,
        "samples": samples,
        "audio_seconds": audio_seconds,
        "seed": result.seed,
        "batch_size": result.batch_size,
        "timings": timings,
    }


async def read_start(websocket: WebSocket) -> StreamRequest:
    """The request of the client's first message, which must come within ``START_TIMEOUT``."""
    try:
        message = await asyncio.wait_for(websocket.receive(), START_TIMEOUT)
    except TimeoutError:
        raise StreamError(
            CloseCode.BAD_REQUEST, f"no start_streaming message within {START_TIMEOUT:g} s"
        ) from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", CloseCode.NORMAL))
    return parse_start(message.get("text"))


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
