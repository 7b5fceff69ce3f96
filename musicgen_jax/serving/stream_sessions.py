"""Streaming sessions: one WebSocket from its first message to its last (the protocol: :mod:`.streaming`).

A session checks the caller (key, readiness, a free session id), reads the start message, queues
one device job whose ``on_frames`` hands each batch of new frames to the event loop, and pumps:
frames are decoded on the audio pool by the codec's ``streaming_decoder()`` and sent as
they are ready. A receiver task listens for ``stop`` (or the client leaving) meanwhile; either
cancels the job, which frees the device when no other request shares its batch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import enum
import json
import logging
import time
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from musicgen_jax.codec import JaxCodecStream, StreamingDecoder
from musicgen_jax.serving.errors import NotReady
from musicgen_jax.serving.queue import Cancelled, CancelReason, Job, QueueFull
from musicgen_jax.serving.schemas import StreamRequest, StreamSessionInfo
from musicgen_jax.serving.security import key_from
from musicgen_jax.serving.service import MusicService
from musicgen_jax.serving.streaming import (
    SESSION_ID,
    CloseCode,
    StreamError,
    audio_message,
    done_message,
    encode_chunk,
    read_start,
    started_message,
    stopped_message,
)
from musicgen_jax.serving.views import iso_time

logger = logging.getLogger(__name__)

_DONE = object()  # put on a session's frame queue when its job has finished


@dataclasses.dataclass(eq=False)
class StreamSession:
    """A live session as ``GET /stream/sessions`` lists it (registered in ``service.sessions``)."""

    session_id: str
    owner: str | None  # the API key's digest (None: keys off)
    created_at: float = dataclasses.field(default_factory=time.time)
    state: str = "waiting"  # waiting -> queued -> streaming -> finishing
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
            created_at=iso_time(self.created_at),
            chunks_sent=self.chunks_sent,
            seconds_sent=self.samples_sent / self.sample_rate,
        )


class _Connection:
    """Serialises sends (the pump and the receiver both send) and remembers a lost client."""

    def __init__(self, websocket: WebSocket):
        self.websocket = websocket
        self.lock = asyncio.Lock()
        self.closed = False  # the client is gone (or the socket closed): later sends do nothing

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

    async def close(self, code: int = CloseCode.NORMAL) -> None:
        if self.closed or self.websocket.application_state == WebSocketState.DISCONNECTED:
            return
        self.closed = True
        with contextlib.suppress(RuntimeError, OSError):
            await self.websocket.close(code)


class _Outcome(enum.Enum):
    LEFT = "left"  # the client went away mid-stream: nobody to tell
    STOPPED = "stopped"  # the client sent stop before the end
    ENDED = "ended"  # the generation finished (or failed)


async def serve_stream(websocket: WebSocket, service: MusicService, session_id: str) -> None:
    """Run one streaming session to its end."""
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
            {"type": "error", "code": CloseCode.INTERNAL, "message": "internal error (logged on the server)"}
        )
        await connection.close(CloseCode.INTERNAL)
    finally:
        if session is not None and service.sessions.get(session.session_id) is session:
            del service.sessions[session.session_id]
            service.metrics.stream_sessions.set(len(service.sessions))
        await connection.close(CloseCode.NORMAL)


def _open_session(websocket: WebSocket, service: MusicService, session_id: str) -> StreamSession:
    if not SESSION_ID.fullmatch(session_id):
        raise StreamError(
            CloseCode.BAD_REQUEST, "session_id must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"
        )
    owner = None
    if service.keys.enabled:
        owner = service.keys.owner_of(key_from(websocket.headers, websocket.query_params))
        if owner is None:
            raise StreamError(
                CloseCode.UNAUTHORISED,
                "a valid API key is required (?api_key=..., 'Authorization: Bearer' or 'X-API-Key')",
            )
    try:
        service.require_ready()
    except NotReady as error:
        raise StreamError(CloseCode.UNAVAILABLE, str(error)) from None
    if session_id in service.sessions:
        raise StreamError(
            CloseCode.SESSION_IN_USE, f"stream session {session_id!r} is already live; choose another id"
        )
    if len(service.sessions) >= service.settings.max_stream_sessions:
        raise StreamError(
            CloseCode.UNAVAILABLE,
            f"{len(service.sessions)} streams are live, the most this server runs; try again shortly",
        )
    session = StreamSession(session_id, owner, sample_rate=service.model.sample_rate)
    service.sessions[session_id] = session
    service.metrics.stream_sessions.set(len(service.sessions))
    return session


@dataclasses.dataclass(eq=False)
class _Stream:
    """A running stream: its job, where the job's frames arrive, and when its chunks went out."""

    connection: _Connection
    session: StreamSession
    body: StreamRequest
    job: Job
    frames: asyncio.Queue  # [K, n] arrays from the device thread, then _DONE
    submitted: float = dataclasses.field(default_factory=time.time)
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    sent_times: list[float] = dataclasses.field(default_factory=list)


async def _run(connection: _Connection, service: MusicService, session: StreamSession) -> None:
    websocket = connection.websocket
    body = await read_start(websocket)
    client = websocket.client.host if websocket.client else "unknown"
    wait = service.limiter.acquire(f"key:{session.owner}" if session.owner else f"ip:{client}")
    if wait > 0:
        service.metrics.rate_limited.inc()
        raise StreamError(CloseCode.RATE_LIMITED, f"rate limit exceeded; retry in {wait:.1f} s")
    loop = asyncio.get_running_loop()
    melody = _inline_melody(body, service.settings.max_request_bytes)
    executor = service.audio_pool if melody is not None else None  # reading a melody is audio work
    try:
        request = await loop.run_in_executor(executor, service.build_request, body, melody)
    except ValueError as error:
        raise StreamError(CloseCode.BAD_REQUEST, str(error)) from None

    frames: asyncio.Queue = asyncio.Queue()

    def on_frames(new_frames: np.ndarray) -> None:  # on the device thread
        loop.call_soon_threadsafe(frames.put_nowait, new_frames)

    job = service.make_job(request, on_frames=on_frames)
    job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(frames.put_nowait, _DONE))
    session.prompt, session.duration, session.state = request.prompt, request.params.duration, "queued"
    try:
        service.queue.submit(job)
    except QueueFull as error:
        raise StreamError(CloseCode.UNAVAILABLE, str(error)) from None

    stream = _Stream(connection, session, body, job, frames)
    model, seed = service.model, request.params.seed
    await connection.send_json(
        started_message(
            session.session_id, seed, model.sample_rate, model.audio_channels, body, session.duration
        )
    )
    receiver = asyncio.create_task(_receive_until_stop(connection, stream.stop))
    try:
        outcome = await _stream_audio(stream, service)
        if outcome is _Outcome.STOPPED:
            job.cancelled.set()
            total = time.time() - stream.submitted
            await connection.send_json(
                stopped_message(session.chunks_sent, session.samples_sent, session.sample_rate, seed, total)
            )
            await connection.close(CloseCode.NORMAL)
        elif outcome is _Outcome.ENDED:
            await _send_result(stream)
    finally:
        job.cancelled.set()  # no-op once finished; frees the device if the client left early
        receiver.cancel()


def _inline_melody(body: StreamRequest, max_bytes: int) -> bytes | None:
    """The audio file a stream request carries in ``input_audio`` (base64), which must be a melody."""
    if body.input_audio is None:
        return None
    if body.continuation:
        raise StreamError(
            CloseCode.BAD_REQUEST,
            "a stream takes input_audio only as a melody: send continuation: false (streams do not "
            "continue audio; POST /generate does)",
        )
    try:
        data = base64.b64decode(body.input_audio, validate=True)
    except (binascii.Error, ValueError):
        raise StreamError(CloseCode.BAD_REQUEST, "input_audio must be a base64-encoded audio file") from None
    if len(data) > max_bytes:
        raise StreamError(
            CloseCode.BAD_REQUEST, f"input_audio is {len(data)} bytes; this server takes at most {max_bytes}"
        )
    return data


async def _receive_until_stop(connection: _Connection, stop: asyncio.Event) -> None:
    """Read client messages during the stream: ``stop`` ends it; a disconnect ends it silently."""
    while True:
        try:
            message = await connection.websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            message = {"type": "websocket.disconnect"}
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


async def _stream_audio(stream: _Stream, service: MusicService) -> _Outcome:
    """Decode frames as they come and send the audio until the generation ends or fails, the client
    stops, or the client leaves."""
    connection, session, body, job, stop = (
        stream.connection,
        stream.session,
        stream.body,
        stream.job,
        stream.stop,
    )
    model = service.model
    loop = asyncio.get_running_loop()
    decoder = model.codec.streaming_decoder()
    chunk_frames = max(1, round(body.chunk_duration * model.frame_rate))
    pending: list[np.ndarray] = []  # each [K, n]
    pending_frames = 0
    done = False
    stop_task = asyncio.create_task(stop.wait())
    try:
        while not done:
            get_task = asyncio.create_task(stream.frames.get())
            await asyncio.wait({get_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                get_task.cancel()
                break
            items = [get_task.result()]
            while not stream.frames.empty():
                items.append(stream.frames.get_nowait())
            for item in items:
                if item is _DONE:
                    done = True
                else:
                    pending.append(item)
                    pending_frames += item.shape[1]
            if job.future.done() and job.future.exception() is not None:
                break
            if pending_frames < chunk_frames and not done and session.chunks_sent > 0:
                continue  # later chunks gather chunk_duration; the first goes out as soon as it decodes
            session.state = "streaming" if not done else "finishing"
            codes = np.concatenate(pending, axis=1)[None] if pending else None  # [1, K, n]
            pending, pending_frames = [], 0
            audio = await loop.run_in_executor(service.audio_pool, _decode_step, decoder, codes, done)
            if audio.shape[-1] == 0:
                continue
            seq, offset = session.chunks_sent, session.samples_sent
            if body.encoding == "binary":
                await connection.send_bytes(encode_chunk(seq, offset, audio, model.sample_rate))
            else:
                await connection.send_json(audio_message(seq, offset, audio, model.sample_rate))
            stream.sent_times.append(time.time())
            session.chunks_sent, session.samples_sent = seq + 1, offset + int(audio.shape[-1])
            if connection.closed:
                return _Outcome.LEFT
    finally:
        stop_task.cancel()
    return _Outcome.STOPPED if stop.is_set() and not done else _Outcome.ENDED


async def _send_result(stream: _Stream) -> None:
    """The final message of a generation that ended: ``done`` with timings, or the error it ended with."""
    session, job = stream.session, stream.job
    error = job.future.exception()
    if isinstance(error, Cancelled):
        code = CloseCode.SHUTTING_DOWN if error.reason is CancelReason.SHUTDOWN else CloseCode.BAD_REQUEST
        raise StreamError(code, f"generation cancelled: {error}")
    if isinstance(error, ValueError):
        raise StreamError(CloseCode.BAD_REQUEST, str(error))
    if error is not None:
        logger.error("stream %s: generation failed", session.session_id, exc_info=error)
        raise StreamError(
            CloseCode.INTERNAL, "generation failed because of an internal error (logged on the server)"
        )
    message = done_message(
        session.chunks_sent,
        session.samples_sent,
        session.sample_rate,
        job.future.result(),
        stream.submitted,
        stream.sent_times,
    )
    await stream.connection.send_json(message)
    await stream.connection.close(CloseCode.NORMAL)


def _decode_step(
    decoder: StreamingDecoder | JaxCodecStream, codes: np.ndarray | None, final: bool
) -> np.ndarray:
    """Push new codes ``[1, K, n]`` (and flush at the end); the audio ``[channels, samples]`` now final."""
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
