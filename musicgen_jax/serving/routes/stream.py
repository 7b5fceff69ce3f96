"""Live streaming: the WebSocket (:mod:`..stream_sessions`) and the list of live sessions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, WebSocket

from musicgen_jax.serving import schemas
from musicgen_jax.serving.dependencies import Caller, caller, get_service
from musicgen_jax.serving.responses import error_responses
from musicgen_jax.serving.service import MusicService
from musicgen_jax.serving.stream_sessions import serve_stream

router = APIRouter()


@router.websocket("/ws/stream/{session_id}")
async def stream(websocket: WebSocket, session_id: str, service: MusicService = Depends(get_service)):
    await serve_stream(websocket, service, session_id)


@router.get(
    "/stream/sessions",
    summary="Live streaming sessions",
    response_model=schemas.StreamSessionList,
    responses=error_responses(401),
)
async def stream_sessions(  # on the loop, where sessions change
    who: Caller = Depends(caller), service: MusicService = Depends(get_service)
):
    sessions = [
        session.info()
        for session in list(service.sessions.values())
        if not service.keys.enabled or session.owner == who.owner
    ]
    return schemas.StreamSessionList(sessions=sessions)
