"""The FastAPI application: routes, error handling, limits and the OpenAPI schema.

``create_app(settings, model=None)`` builds one server. With ``model=None`` the model named by
``settings.model`` is loaded on the device thread after start; ``/health`` answers 200 once it is
loaded and ``/ready`` once the configured buckets are compiled (requests before that get 503).

Every error is JSON: ``{"detail": "<message>"}``, or for 422 a list ``{"detail": [{"loc", "msg",
"type"}]}`` as FastAPI writes validation errors. Unexpected exceptions are logged with an error id
and answered ``500 {"detail": "internal server error", "error_id": ...}``, never with internals.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.websockets import WebSocket

from musicgen_jax.audio.formats import FORMATS, MEDIA_TYPES, NORMALIZATIONS
from musicgen_jax.conditioning import vocabulary
from musicgen_jax.serving import schemas
from musicgen_jax.serving.metrics import CONTENT_TYPE, MetricsMiddleware
from musicgen_jax.serving.queue import QueueFull
from musicgen_jax.serving.security import retry_after_header
from musicgen_jax.serving.service import AudioInputError, FieldError, MusicService, NotReady
from musicgen_jax.serving.settings import ServerSettings
from musicgen_jax.serving.streaming import serve_stream

logger = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).parent / "page"
MAX_FORM_FIELDS = 64


# ---------------------------------------------------------------------------------- JSON out


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such floats become null rather than a crash."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


class SafeJSONResponse(JSONResponse):
    """JSON that cannot fail to render: non-finite floats become null, unencodable text is replaced."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(
            _finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str
        )
        return text.encode("utf-8", "replace")


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": detail}, status_code=status, headers=headers)


def _invalid(message: str, loc: tuple = ("body",)) -> RequestValidationError:
    """A 422 in FastAPI's shape, for the library's ValueErrors (whose messages are user-facing)."""
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


class RequestTooLarge(Exception):
    pass


class GuardMiddleware:
    """Innermost guard: request size limit, and a catch-all that logs and answers 500 without internals."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        limit = self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_large = int(value) > limit
                except ValueError:
                    too_large = False
                if too_large:
                    await _send_json(send, 413, {"detail": f"request body larger than {limit} bytes"})
                    return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge()
            return message

        async def tracking_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except RequestTooLarge:
            if not started:
                await _send_json(send, 413, {"detail": f"request body larger than {limit} bytes"})
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            logger.exception("unhandled error %s on %s %s", error_id, scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(send, 500, {"detail": "internal server error", "error_id": error_id})


async def _send_json(send, status: int, content: dict) -> None:
    body = SafeJSONResponse(content).body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------- callers

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token (when the server has keys)")
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key (when the server has keys)"
)


@dataclass(frozen=True)
class Caller:
    owner: str | None  # digest of the API key; None when keys are off
    identity: str  # what the rate limiter counts by


def _service(request: Request) -> MusicService:
    return request.app.state.service


async def caller(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header_key: str | None = Depends(_api_key_header),
) -> Caller:
    """Who is calling: checks the API key when the server has keys."""
    service = _service(request)
    if not service.keys.enabled:
        return Caller(None, f"ip:{request.client.host if request.client else 'unknown'}")
    key = credentials.credentials if credentials is not None else header_key
    owner = service.keys.owner_of(key)
    if owner is None:
        message = "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        raise HTTPException(
            401, message if key is None else "invalid API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return Caller(owner, f"key:{owner}")


async def limited_caller(request: Request, who: Caller = Depends(caller)) -> Caller:
    """:func:`caller` plus the rate limit (for routes that start work)."""
    service = _service(request)
    wait = service.limiter.acquire(who.identity)
    if wait > 0:
        service.metrics.rate_limited.inc()
        raise HTTPException(
            429, f"rate limit exceeded; retry in {math.ceil(wait)} s", headers=retry_after_header(wait)
        )
    return who


_ERRORS = {
    400: {"model": schemas.ErrorMessage, "description": "malformed multipart body"},
    401: {"model": schemas.ErrorMessage, "description": "missing or invalid API key"},
    404: {"model": schemas.ErrorMessage, "description": "no such task (or not yours)"},
    409: {"model": schemas.ErrorMessage, "description": "the task has not completed"},
    413: {"model": schemas.ErrorMessage, "description": "request body too large"},
    415: {"model": schemas.ErrorMessage, "description": "unsupported content type"},
    429: {"model": schemas.ErrorMessage, "description": "rate limit exceeded (see Retry-After)"},
    503: {
        "model": schemas.ErrorMessage,
        "description": "not ready yet, or the queue is full (see Retry-After)",
    },
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: _ERRORS[code] for code in codes}


# ---------------------------------------------------------------------------------- the app


def create_app(settings: ServerSettings | None = None, model=None, *, start_worker: bool = True) -> FastAPI:
    """Build the server. ``model``: an already loaded :class:`~musicgen_jax.MusicGen` (else
    ``settings.model`` is loaded at start). ``start_worker=False`` leaves tasks queued, for tests
    of the HTTP layer alone."""
    settings = settings or ServerSettings()
    from musicgen_jax.runtime import enable_compilation_cache

    enable_compilation_cache(settings.compilation_cache_dir)
    request_model = schemas.request_model(
        settings.max_prompt_chars, settings.max_duration, settings.default_duration
    )
    service = MusicService(settings, model, start_worker=start_worker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        cleanup = asyncio.create_task(_cleanup_loop(service))
        try:
            yield
        finally:
            cleanup.cancel()
            await run_in_threadpool(service.stop)

    from musicgen_jax import __version__

    app = FastAPI(
        title="musicgen-jax",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    app.add_middleware(GuardMiddleware, max_bytes=settings.max_request_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=PAGE_DIR), name="static")

    # ------------------------------------------------------------------ generation

    @app.post(
        "/generate",
        status_code=202,
        summary="Queue a generation (JSON, or multipart/form-data with input_audio to continue)",
        response_model=schemas.TaskAccepted,
        responses={
            200: {"model": schemas.TaskStatus, "description": "wait=true and the task finished in time"}
        }
        | _errors(400, 401, 413, 415, 429, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}},
                    "multipart/form-data": {"schema": {"$ref": "#/components/schemas/GenerateForm"}},
                },
            }
        },
    )
    async def generate(
        request: Request,
        wait: bool = Query(False, description="hold the connection until the task finishes (short clips)"),
        who: Caller = Depends(limited_caller),
    ):
        service.require_ready()
        body, audio = await _read_generate_body(request, request_model)
        loop = asyncio.get_running_loop()
        executor = service.audio_pool if audio is not None else None
        try:
            generation = await loop.run_in_executor(executor, service.build_request, body, audio)
        except FieldError as error:
            raise _invalid(str(error), ("body", error.field)) from None
        except AudioInputError as error:
            raise _invalid(str(error), ("body", "input_audio")) from None
        except ValueError as error:
            raise _invalid(str(error), ("body", *_field_of(str(error)))) from None
        handle = await run_in_threadpool(service.submit_task, body, generation, who.owner)
        task_id = handle.task_id
        if wait:
            try:
                # shield: a timeout must not cancel the shared future other waiters may hold
                await asyncio.wait_for(
                    asyncio.shield(asyncio.wrap_future(handle.finished)), settings.sync_timeout_seconds
                )
            except TimeoutError:
                pass
            record = await run_in_threadpool(service.store.get, task_id)
            if record is not None and service.is_finished(record):
                return SafeJSONResponse(service.task_status(record).model_dump(), status_code=200)
        accepted = schemas.TaskAccepted(
            task_id=task_id,
            status="queued",
            seed=generation.params.seed,
            status_url=f"/generate/{task_id}",
            download_url=f"/download/{task_id}",
        )
        return SafeJSONResponse(
            accepted.model_dump(), status_code=202, headers={"Location": f"/generate/{task_id}"}
        )

    @app.get(
        "/generate/{task_id}",
        summary="A task's status, progress and timings",
        response_model=schemas.TaskStatus,
        responses=_errors(401, 404),
    )
    def task_status(task_id: str, who: Caller = Depends(caller)):
        record = service.store.get(task_id)
        if not service.visible(record, who.owner):
            raise HTTPException(404, f"no task {task_id!r}")
        return service.task_status(record)

    @app.get(
        "/download/{task_id}",
        summary="The audio file of a completed task",
        response_class=FileResponse,
        responses={
            200: {
                "content": {media: {} for media in MEDIA_TYPES.values()},
                "description": "the audio file",
            }
        }
        | _errors(401, 404, 409),
    )
    def download(task_id: str, who: Caller = Depends(caller)):
        record = service.store.get(task_id)
        if not service.visible(record, who.owner):
            raise HTTPException(404, f"no task {task_id!r}")
        if record.status != "completed":
            detail = f"task {task_id} is {record.status}"
            if record.status == "failed":
                detail += f": {record.error}"
            raise HTTPException(409, detail)
        path = service.store.audio_path(record)
        if path is None or not path.is_file():
            raise HTTPException(404, f"the audio of task {task_id} was deleted")
        return FileResponse(
            path,
            media_type=MEDIA_TYPES[record.format],
            filename=f"musicgen-{task_id}.{record.format}",
        )

    @app.get(
        "/tasks",
        summary="Recent tasks, newest first",
        response_model=schemas.TaskList,
        responses=_errors(401),
    )
    def list_tasks(
        limit: int = Query(20, ge=1, le=200),
        status: schemas.TaskState | None = Query(None),
        who: Caller = Depends(caller),
    ):
        records = service.store.list(limit, status, owner=who.owner, any_owner=not service.keys.enabled)
        return schemas.TaskList(tasks=[service.task_status(record) for record in records])

    # ------------------------------------------------------------------ evaluation

    @app.post(
        "/evaluate",
        summary="Audio metrics of an uploaded file or of a completed task",
        response_model=schemas.Evaluation,
        responses=_errors(400, 401, 404, 409, 413, 429, 503),
    )
    async def evaluate(
        file: UploadFile | None = File(None, description="audio to evaluate (WAV, FLAC, MP3, OGG)"),
        task_id: str | None = Form(None, description="evaluate this completed task's audio instead"),
        reference: UploadFile | None = File(None, description="optional reference audio (SNR, chroma, ...)"),
        who: Caller = Depends(limited_caller),
    ):
        from musicgen_jax.serving.service import read_audio

        if (file is None) == (task_id is None):
            raise _invalid("give exactly one of file (an upload) or task_id", ("body",))
        loop = asyncio.get_running_loop()
        limit = settings.max_input_audio_seconds
        reference_audio = None
        try:
            if reference is not None:
                reference_audio = await loop.run_in_executor(
                    service.audio_pool, read_audio, await reference.read(), limit, "reference"
                )
            if file is not None:
                audio, rate = await loop.run_in_executor(
                    service.audio_pool, read_audio, await file.read(), limit, "file"
                )
            else:
                record = await run_in_threadpool(service.store.get, task_id)
                if not service.visible(record, who.owner):
                    raise HTTPException(404, f"no task {task_id!r}")
                if record.status != "completed":
                    raise HTTPException(409, f"task {task_id} is {record.status}")
                try:
                    audio, rate = await loop.run_in_executor(
                        service.audio_pool, service.load_task_audio, record
                    )
                except FileNotFoundError as error:
                    raise HTTPException(404, str(error)) from None
        except ValueError as error:
            raise _invalid(str(error)) from None
        result = await loop.run_in_executor(
            service.audio_pool, service.evaluate, audio, rate, reference_audio
        )
        return schemas.Evaluation(
            source="upload" if file is not None else "task",
            task_id=task_id,
            metrics=result.metrics,
            notes=result.notes,
        )

    # ------------------------------------------------------------------ streaming

    @app.websocket("/ws/stream/{session_id}")
    async def stream(websocket: WebSocket, session_id: str):
        await serve_stream(websocket, service, session_id)

    @app.get(
        "/stream/sessions",
        summary="Live streaming sessions",
        response_model=schemas.StreamSessionList,
        responses=_errors(401),
    )
    async def stream_sessions(who: Caller = Depends(caller)):  # on the loop, where sessions change
        sessions = [
            session.info()
            for session in list(service.sessions.values())
            if not service.keys.enabled or session.owner == who.owner
        ]
        return schemas.StreamSessionList(sessions=sessions)

    # ------------------------------------------------------------------ operations

    @app.get(
        "/health",
        summary="Liveness: 200 once the model is loaded",
        response_model=schemas.Health,
        responses={503: {"model": schemas.Health}},
    )
    def health():
        body = _health(service)
        loaded = service.state in ("warming", "ready")
        return SafeJSONResponse(body.model_dump(), status_code=200 if loaded else 503)

    @app.get(
        "/ready",
        summary="Readiness: 200 once warmed up (compiled)",
        response_model=schemas.Health,
        responses={503: {"model": schemas.Health}},
    )
    def ready():
        body = _health(service)
        return SafeJSONResponse(body.model_dump(), status_code=200 if service.state == "ready" else 503)

    @app.get(
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
    def metrics():
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get(
        "/info", summary="Model, limits and the conditioning vocabulary", response_model=schemas.ServerInfo
    )
    def info():
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
            vocabulary=schemas.Vocabulary(
                genres=list(vocabulary.GENRES),
                moods=list(vocabulary.MOODS),
                instruments=list(vocabulary.INSTRUMENTS),
                keys=list(vocabulary.KEYS),
                tempo_range=vocabulary.TEMPO_RANGE,
            ),
            defaults={k: v for k, v in defaults.items() if not k.startswith("continuation")},
        )

    @app.get("/", include_in_schema=False)
    def page():
        return HTMLResponse((PAGE_DIR / "index.html").read_text())

    _install_openapi(app, request_model, auth=service.keys.enabled)
    return app


# ---------------------------------------------------------------------------------- pieces


_DESCRIPTION = """Text-to-music with MusicGen in JAX.

Queue a generation with `POST /generate` (202 with a `task_id`), poll `GET /generate/{task_id}`,
fetch the file from `GET /download/{task_id}`. `POST /generate?wait=true` answers with the finished
task for short clips. Continue an existing piece by sending multipart/form-data with an `input_audio`
file (and `continuation_start` / `continuation_end` in seconds); `duration` includes the prompt and
the file starts with it.

Live audio: `WS /ws/stream/{session_id}` (protocol in `musicgen_jax/serving/streaming.py` and the
README). When the server has API keys, send `Authorization: Bearer <key>` or `X-API-Key: <key>`.
"""


def _health(service: MusicService) -> schemas.Health:
    status = {"ready": "ok", "warming": "ok", "loading": "loading", "failed": "failed"}[service.state]
    return schemas.Health(
        status=status,
        model_loaded=service.state in ("warming", "ready"),
        ready=service.state == "ready",
        detail=service.error if service.state == "failed" else service.state,
    )


async def _read_generate_body(
    request: Request, request_model
) -> tuple[schemas.GenerateRequest, bytes | None]:
    """The request fields (JSON or multipart) validated, and the uploaded audio prompt if any."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    audio = None
    if content_type == "application/json" or content_type.endswith("+json"):
        raw = await request.body()
        if not raw.strip():
            raise _invalid(
                'the body is empty; send a JSON object such as {"prompt": "calm piano", "duration": 10}'
            )
        try:
            return request_model.model_validate_json(raw), None
        except ValidationError as error:
            raise RequestValidationError(_located(error)) from None
    if content_type == "multipart/form-data":
        form = await request.form(max_files=2, max_fields=MAX_FORM_FIELDS, max_part_size=1024 * 1024)
        data: dict[str, Any] = {}
        for name in set(form.keys()):
            values = form.getlist(name)
            if name == "input_audio":
                if len(values) != 1 or not isinstance(values[0], StarletteUploadFile):
                    raise _invalid("input_audio must be exactly one file upload", ("body", "input_audio"))
                audio = await values[0].read()
                continue
            if any(isinstance(value, StarletteUploadFile) for value in values):
                raise _invalid(f"{name} must be a text field, not a file", ("body", name))
            values = [value for value in values if value != ""]  # empty form inputs mean "not given"
            if values:
                data[name] = values[0] if len(values) == 1 else values
        try:
            return request_model.model_validate(data), audio
        except ValidationError as error:
            raise RequestValidationError(_located(error)) from None
    raise HTTPException(
        415, "send the request as application/json, or as multipart/form-data to upload input_audio"
    )


def _field_of(message: str) -> tuple[str, ...]:
    """The request field a library message starts with ("top_k must be ..."), if any."""
    first = message.split(" ", 1)[0]
    return (first,) if first in schemas.StreamRequest.model_fields else ()


def _located(error: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in error.errors(include_url=False, include_input=False, include_context=False)
    ]


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return _error(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        detail = [
            {
                "loc": [str(part) if not isinstance(part, int) else part for part in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "value_error")),
            }
            for e in error.errors()
        ]
        return SafeJSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, error: NotReady):
        return _error(503, str(error), retry_after_header(5))

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, error: QueueFull):
        return _error(503, str(error), retry_after_header(5))


async def _cleanup_loop(service: MusicService) -> None:
    """Delete old finished tasks now and then (in a thread: it touches the disk)."""
    settings = service.settings
    while True:
        try:
            await run_in_threadpool(
                service.store.cleanup,
                settings.retention_hours * 3600.0,
                settings.max_storage_mb * 1024 * 1024,
            )
        except Exception:
            logger.exception("cleanup failed")
        await asyncio.sleep(settings.cleanup_interval_seconds)


def _install_openapi(app: FastAPI, request_model, auth: bool) -> None:
    """Publish GenerateRequest (JSON) and GenerateForm (multipart, with input_audio) for POST /generate,
    and the API-key schemes only when this server has keys."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        if not auth:
            schema.get("components", {}).pop("securitySchemes", None)
            for path in schema["paths"].values():
                for operation in path.values():
                    operation.pop("security", None)
                    operation.get("responses", {}).pop("401", None)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        body = request_model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components["GenerateRequest"] = body
        form = copy.deepcopy(body)
        form["title"] = "GenerateForm"
        form["description"] = (
            "The fields of GenerateRequest as form fields, plus the audio prompt to continue."
        )
        form["properties"]["input_audio"] = {
            "type": "string",
            "format": "binary",
            "description": "audio to continue (WAV, FLAC, MP3, OGG); the output starts with it",
        }
        components["GenerateForm"] = form
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
