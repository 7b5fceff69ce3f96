"""Live streaming over a WebSocket: audio chunks are sent while the music is still being generated.

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
``{"type": "error", "code", "message"}`` followed by a close with that code (4400 bad request, 4401
unauthorised, 4409 session id in use, 4429 rate limited, 4503 not ready or busy, 1011 internal, 1012 server shutting down).

Audio is the model's raw output, not normalised (normalisation needs the whole clip), decoded by
:class:`~musicgen_jax.codec.StreamingDecoder` with left context, so the concatenated chunks equal
a single decode of the whole clip up to float rounding: there are no joins to hear.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import re
import struct
import time
from typing import Any

import numpy as np
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from musicgen_jax.serving.queue import Cancelled, QueueFull
from musicgen_jax.serving.schemas import StreamRequest, StreamSessionInfo
from musicgen_jax.serving.security import key_from
from musicgen_jax.serving.service import MusicService, NotReady, _iso

logger = logging.getLogger(__name__)

HEADER = struct.Struct("<4sIIHHQ")  # magic, seq, sample_rate, channels, dtype, offset
MAGIC = b"MGA1"
DTYPE_FLOAT32 = 1
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
START_TIMEOUT = 30.0
_DONE = object()


class StreamError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(eq=False)
class StreamSession:
    session_id: str
    owner: str | None
    created_at: float = dataclasses.field(default_factory=time.time)
    state: str = "waiting"
    prompt: str | None = None
    duration: float | None = None
    chunks_sent: int = 0
    samples_sent: int = 0
    sample_rate: int = 1

    def info(self) -> StreamSessionInfo:
        return StreamSessionInfo(
            session_id=self.session_id,
            state=self.state,
            prompt=self.prompt,
            duration=self.duration,
            created_at=_iso(self.created_at),
            chunks_sent=self.chunks_sent,
            seconds_sent=self.samples_sent / self.sample_rate,
        )


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


class _Connection:
    """Serialises sends (the pump and the receiver both send) and remembers a lost client."""

    def __init__(self, websocket: WebSocket):
        self.websocket = websocket
        self.lock = asyncio.Lock()
        self.closed = False

    async def send_json(self, message: dict[str, Any]) -> None:
        await self._send(self.websocket.send_text, json.dumps(message))

    async def send_bytes(self, data: bytes) -> None:
        await self._send(self.websocket.send_bytes, data)

    async def _send(self, fn, payload) -> None:
        if self.closed:
            return
        async with self.lock:
            try:
                await fn(payload)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True

    async def close(self, code: int = 1000) -> None:
        if self.closed or self.websocket.application_state == WebSocketState.DISCONNECTED:
            return
        self.closed = True
        try:
            await self.websocket.close(code)
        except (RuntimeError, OSError):
            pass


async def serve_stream(websocket: WebSocket, service: MusicService, session_id: str) -> None:
    """Run one streaming session to its end (see the module docstring for the protocol)."""
    await websocket.accept()
    connection = _Connection(websocket)
    session: StreamSession | None = None
    try:
        session = _open_session(websocket, service, session_id)
        await _run(connection, service, session)
    except StreamError as error:
        await connection.send_json({"type": "error", "code": error.code, "message": error.message})
        await connection.close(error.code)
    except WebSocketDisconnect:
        pass
    except Exception:
        logger.exception("stream session %s failed", session_id)
        await connection.send_json(
            {"type": "error", "code": 1011, "message": "internal error (logged on the server)"}
        )
        await connection.close(1011)
    finally:
        if session is not None and service.sessions.get(session.session_id) is session:
            del service.sessions[session.session_id]
            service.metrics.stream_sessions.set(len(service.sessions))
        await connection.close(1000)


def _open_session(websocket: WebSocket, service: MusicService, session_id: str) -> StreamSession:
    if not SESSION_ID.fullmatch(session_id):
        raise StreamError(4400, "session_id must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'")
    owner = None
    if service.keys.enabled:
        owner = service.keys.owner_of(key_from(websocket.headers, websocket.query_params))
        if owner is None:
            raise StreamError(
                4401, "a valid API key is required (?api_key=..., 'Authorization: Bearer' or 'X-API-Key')"
            )
    try:
        service.require_ready()
    except NotReady as error:
        raise StreamError(4503, str(error)) from None
    if session_id in service.sessions:
        raise StreamError(4409, f"stream session {session_id!r} is already live; choose another id")
    if len(service.sessions) >= service.settings.max_stream_sessions:
        raise StreamError(
            4503, f"{len(service.sessions)} streams are live, the most this server runs; try again shortly"
        )
    session = StreamSession(session_id, owner, sample_rate=service.model.sample_rate)
    service.sessions[session_id] = session
    service.metrics.stream_sessions.set(len(service.sessions))
    return session


async def _read_start(websocket: WebSocket) -> StreamRequest:
    try:
        message = await asyncio.wait_for(websocket.receive(), START_TIMEOUT)
    except TimeoutError:
        raise StreamError(4400, f"no start_streaming message within {START_TIMEOUT:g} s") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise StreamError(
            4400, 'the first message must be JSON text: {"type": "start_streaming", "request": {...}}'
        )
    try:
        data = json.loads(text)
    except ValueError:
        raise StreamError(4400, "the first message is not valid JSON") from None
    if not isinstance(data, dict) or data.get("type") != "start_streaming":
        raise StreamError(4400, 'the first message must be {"type": "start_streaming", "request": {...}}')
    if not isinstance(data.get("request"), dict):
        raise StreamError(
            4400, '"request" must be an object with the generation fields (prompt, duration, ...)'
        )
    try:
        return StreamRequest.model_validate(data["request"])
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
        raise StreamError(4400, f"invalid request: {problems}") from None


async def _run(connection: _Connection, service: MusicService, session: StreamSession) -> None:
    websocket = connection.websocket
    body = await _read_start(websocket)
    wait = service.limiter.acquire(f"key:{session.owner}" if session.owner else f"ip:{_client(websocket)}")
    if wait > 0:
        service.metrics.rate_limited.inc()
        raise StreamError(4429, f"rate limit exceeded; retry in {wait:.1f} s")
    loop = asyncio.get_running_loop()
    try:
        request = await loop.run_in_executor(None, service.build_request, body, None)
    except ValueError as error:
        raise StreamError(4400, str(error)) from None

    model = service.model
    frames_queue: asyncio.Queue = asyncio.Queue()

    def on_frames(frames: np.ndarray) -> None:  # on the device thread
        loop.call_soon_threadsafe(frames_queue.put_nowait, frames)

    job = service.make_job(request, on_frames=on_frames)
    job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(frames_queue.put_nowait, _DONE))
    session.prompt, session.duration, session.state = request.prompt, request.params.duration, "queued"
    try:
        service.queue.submit(job)
    except QueueFull as error:
        raise StreamError(4503, str(error)) from None

    submitted = time.time()
    await connection.send_json(
        {
            "type": "started",
            "session_id": session.session_id,
            "seed": request.params.seed,
            "sample_rate": model.sample_rate,
            "channels": model.audio_channels,
            "dtype": "float32",
            "byte_order": "little",
            "layout": "interleaved",
            "encoding": body.encoding,
            "header_bytes": HEADER.size,
            "duration": request.params.duration,
            "chunk_duration": body.chunk_duration,
        }
    )
    stop = asyncio.Event()
    receiver = asyncio.create_task(_receive_until_stop(connection, stop))
    try:
        await _pump(connection, service, session, body, job, frames_queue, stop, submitted)
    finally:
        job.cancelled.set()  # no-op once finished; frees the device if the client left early
        receiver.cancel()


async def _receive_until_stop(connection: _Connection, stop: asyncio.Event) -> None:
    """Read client messages during the stream: ``stop`` ends it; a disconnect ends it silently."""
    while True:
        try:
            message = await connection.websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            connection.closed = True
            stop.set()
            return
        if message["type"] == "websocket.disconnect":
            connection.closed = True
            stop.set()
            return
        try:
            data = json.loads(message.get("text") or "null")
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("type") == "stop":
            stop.set()
            return
        await connection.send_json(
            {"type": "warning", "message": 'only {"type": "stop"} is understood during a stream'}
        )


async def _pump(connection, service, session, body, job, frames_queue, stop, submitted) -> None:
    """Decode frames as they come and send the audio; then the final message."""
    from musicgen_jax.codec import StreamingDecoder

    model = service.model
    loop = asyncio.get_running_loop()
    decoder = StreamingDecoder(model.codec)
    chunk_frames = max(1, round(body.chunk_duration * model.frame_rate))
    pending: list[np.ndarray] = []
    pending_frames = 0
    seq = offset = 0
    sent_times: list[float] = []
    done = False
    stop_task = asyncio.create_task(stop.wait())
    try:
        while not done:
            get_task = asyncio.create_task(frames_queue.get())
            await asyncio.wait({get_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                get_task.cancel()
                break
            items = [get_task.result()]
            while not frames_queue.empty():
                items.append(frames_queue.get_nowait())
            for item in items:
                if item is _DONE:
                    done = True
                else:
                    pending.append(item)
                    pending_frames += item.shape[1]
            if job.future.done() and job.future.exception() is not None:
                break
            if pending_frames < chunk_frames and not done and seq > 0:
                continue  # later chunks gather chunk_duration; the first goes out as soon as it decodes
            session.state = "streaming" if not done else "finishing"
            codes = np.concatenate(pending, axis=1)[None] if pending else None  # [1, K, n]
            pending, pending_frames = [], 0
            audio = await loop.run_in_executor(service.audio_pool, _decode_step, decoder, codes, done)
            if audio.shape[-1] == 0:
                continue
            if body.encoding == "binary":
                await connection.send_bytes(encode_chunk(seq, offset, audio, model.sample_rate))
            else:
                payload = np.ascontiguousarray(audio.T, dtype="<f4").tobytes()
                await connection.send_json(
                    {
                        "type": "audio",
                        "seq": seq,
                        "offset": offset,
                        "samples": int(audio.shape[-1]),
                        "sample_rate": model.sample_rate,
                        "channels": int(audio.shape[0]),
                        "dtype": "float32",
                        "data": base64.b64encode(payload).decode("ascii"),
                    }
                )
            sent_times.append(time.time())
            seq += 1
            offset += int(audio.shape[-1])
            session.chunks_sent, session.samples_sent = seq, offset
            if connection.closed:
                return
    finally:
        stop_task.cancel()

    if stop.is_set() and not done:
        job.cancelled.set()
        await connection.send_json(
            {
                "type": "done",
                "stopped": True,
                "chunks": seq,
                "samples": offset,
                "audio_seconds": offset / model.sample_rate,
                "seed": job.request.params.seed,
                "timings": {"total_seconds": time.time() - submitted},
            }
        )
        await connection.close(1000)
        return
    error = job.future.exception()
    if isinstance(error, Cancelled):
        raise StreamError(1012 if "shut down" in str(error) else 4400, f"generation cancelled: {error}")
    if isinstance(error, ValueError):
        raise StreamError(4400, str(error))
    if error is not None:
        logger.error("stream %s: generation failed", session.session_id, exc_info=error)
        raise StreamError(1011, "generation failed because of an internal error (logged on the server)")
    result = job.future.result()
    finished = time.time()
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
        "real_time_factor": (offset / model.sample_rate) / (finished - result.started_at)
        if finished > result.started_at
        else None,
    }
    await connection.send_json(
        {
            "type": "done",
            "stopped": False,
            "chunks": seq,
            "samples": offset,
            "audio_seconds": offset / model.sample_rate,
            "seed": result.seed,
            "batch_size": result.batch_size,
            "timings": timings,
        }
    )
    await connection.close(1000)


def _decode_step(decoder, codes: np.ndarray | None, final: bool) -> np.ndarray:
    """Push new codes (and flush at the end); audio ``[channels, samples]`` now final."""
    pieces = []
    if codes is None and decoder.frames_received == 0:
        return np.zeros((1, 0), np.float32)
    if codes is not None:
        pieces.append(decoder.push(codes)[0])
    if final:
        pieces.append(decoder.flush()[0])
    if not pieces:
        return np.zeros((1, 0), np.float32)
    return np.concatenate(pieces, axis=-1)


def _client(websocket: WebSocket) -> str:
    return websocket.client.host if websocket.client else "unknown"
