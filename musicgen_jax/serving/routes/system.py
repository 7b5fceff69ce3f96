"""Operations: liveness, readiness, Prometheus metrics, what the server offers, and the web page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from musicgen_jax.audio.formats import FORMATS, NORMALIZATIONS
from musicgen_jax.conditioning import vocabulary
from musicgen_jax.serving import schemas
from musicgen_jax.serving.dependencies import get_request_model, get_service, get_settings
from musicgen_jax.serving.metrics import CONTENT_TYPE
from musicgen_jax.serving.responses import SafeJSONResponse
from musicgen_jax.serving.service import MusicService
from musicgen_jax.serving.settings import ServerSettings

router = APIRouter()

PAGE_DIR = Path(__file__).resolve().parents[1] / "page"
_HEALTH = {"ready": "ok", "warming": "ok", "loading": "loading", "failed": "failed"}  # state -> status


@router.get(
    "/health",
    summary="Liveness: 200 once the model is loaded",
    response_model=schemas.Health,
    responses={503: {"model": schemas.Health}},
)
def health(service: MusicService = Depends(get_service)):
    loaded = service.state in ("warming", "ready")
    return SafeJSONResponse(_health(service).model_dump(), status_code=200 if loaded else 503)


@router.get(
    "/ready",
    summary="Readiness: 200 once warmed up (compiled)",
    response_model=schemas.Health,
    responses={503: {"model": schemas.Health}},
)
def ready(service: MusicService = Depends(get_service)):
    return SafeJSONResponse(
        _health(service).model_dump(), status_code=200 if service.state == "ready" else 503
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text format",
        }
    },
)
def metrics(service: MusicService = Depends(get_service)):
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)


@router.get(
    "/info", summary="Model, limits and the conditioning vocabulary", response_model=schemas.ServerInfo
)
def info(
    service: MusicService = Depends(get_service),
    settings: ServerSettings = Depends(get_settings),
    request_model: type[schemas.GenerateRequest] = Depends(get_request_model),
):
    model = service.model
    defaults = request_model.model_construct().model_dump()
    defaults["duration"] = settings.default_duration
    return schemas.ServerInfo(
        model=settings.model if model is None or model.source is None else str(model.source),
        sample_rate=model.sample_rate if model else None,
        channels=model.audio_channels if model else None,
        frame_rate=model.frame_rate if model else None,
        ready=service.state == "ready",
        max_duration=settings.max_duration,
        default_duration=settings.default_duration,
        max_prompt_chars=settings.max_prompt_chars,
        max_batch_size=settings.max_batch_size,
        formats=list(FORMATS),
        normalizations=list(NORMALIZATIONS),
        auth_required=service.keys.enabled,
        takes_melody=bool(model is not None and model.takes_melody),
        vocabulary=schemas.Vocabulary(
            genres=list(vocabulary.GENRES),
            moods=list(vocabulary.MOODS),
            instruments=list(vocabulary.INSTRUMENTS),
            keys=list(vocabulary.KEYS),
            tempo_range=vocabulary.TEMPO_RANGE,
        ),
        defaults={k: v for k, v in defaults.items() if not k.startswith(("continuation", "melody_"))},
    )


@router.get("/", include_in_schema=False)
def page():
    return HTMLResponse((PAGE_DIR / "index.html").read_text())


def _health(service: MusicService) -> schemas.Health:
    return schemas.Health(
        status=_HEALTH[service.state],
        model_loaded=service.state in ("warming", "ready"),
        ready=service.state == "ready",
        detail=service.error if service.state == "failed" else service.state,
    )
