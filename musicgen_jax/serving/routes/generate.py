"""Tasks: ``POST /generate`` (JSON, or multipart with an audio prompt), status, download and list.

Any replica answers for any task: status and listing read the store, downloads read the audio
storage. A request identical to a finished one (same settings and explicit seed) is answered with
that task (header ``X-Musicgen-Cache: hit``) unless it says ``Cache-Control: no-cache``. Downloads
carry the file's digest as a strong ``ETag`` and answer ``If-None-Match`` with 304.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from musicgen_jax.audio.formats import MEDIA_TYPES
from musicgen_jax.serving import schemas
from musicgen_jax.serving.dependencies import Caller, caller, get_request_model, get_service, limited_caller
from musicgen_jax.serving.errors import FieldError
from musicgen_jax.serving.responses import SafeJSONResponse, error_responses, invalid
from musicgen_jax.serving.service import MusicService

router = APIRouter()

MAX_FORM_FIELDS = 64
UPLOAD_FIELD = "input_audio"
CACHE_HEADER = "X-Musicgen-Cache"


@router.post(
    "/generate",
    status_code=202,
    summary="Queue a generation (JSON, or multipart/form-data with input_audio to continue)",
    response_model=schemas.TaskAccepted,
    responses={200: {"model": schemas.TaskStatus, "description": "wait=true and the task finished in time"}}
    | error_responses(400, 401, 413, 415, 429, 503),
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
    service: MusicService = Depends(get_service),
    request_model: type[schemas.GenerateRequest] = Depends(get_request_model),
):
    service.require_ready()
    body, audio = await _read_body(request, request_model)
    loop = asyncio.get_running_loop()
    executor = service.audio_pool if audio is not None else None  # decoding an upload is audio work
    try:
        generation = await loop.run_in_executor(executor, service.build_request, body, audio)
    except ValueError as error:
        raise invalid(str(error), _location(error, request_model)) from None
    directives = {part.strip().lower() for part in request.headers.get("cache-control", "").split(",")}
    use_cache = not directives & {"no-cache", "no-store"}  # the client asks for new audio
    record, cached = await run_in_threadpool(service.submit_task, body, generation, who.owner, use_cache)
    task_id = record.task_id
    headers = {"Location": f"/generate/{task_id}"} | ({CACHE_HEADER: "hit"} if cached else {})
    if wait and not cached:
        record = await service.wait_finished(task_id, service.settings.sync_timeout_seconds)
    if wait and record is not None and service.is_finished(record):
        status = await run_in_threadpool(service.task_status, record)
        return SafeJSONResponse(status.model_dump(), status_code=200, headers=headers)
    accepted = schemas.TaskAccepted(
        task_id=task_id,
        status="completed" if cached else "queued",
        seed=generation.params.seed,
        status_url=f"/generate/{task_id}",
        download_url=f"/download/{task_id}",
    )
    return SafeJSONResponse(accepted.model_dump(), status_code=202, headers=headers)


@router.get(
    "/generate/{task_id}",
    summary="A task's status, progress and timings",
    response_model=schemas.TaskStatus,
    responses=error_responses(401, 404),
)
def task_status(task_id: str, who: Caller = Depends(caller), service: MusicService = Depends(get_service)):
    record = service.store.get(task_id)
    if not service.visible(record, who.owner):
        raise HTTPException(404, f"no task {task_id!r}")
    return service.task_status(record)


@router.get(
    "/download/{task_id}",
    summary="The audio file of a completed task",
    response_class=FileResponse,
    responses={
        200: {
            "content": {media: {} for media in MEDIA_TYPES.values()},
            "description": "the audio file",
        }
    }
    | {304: {"description": "If-None-Match names the file's ETag: the copy you have is current"}}
    | error_responses(401, 404, 409),
)
def download(
    task_id: str,
    request: Request,
    who: Caller = Depends(caller),
    service: MusicService = Depends(get_service),
):
    record = service.store.get(task_id)
    if not service.visible(record, who.owner):
        raise HTTPException(404, f"no task {task_id!r}")
    if record.status != "completed":
        detail = f"task {task_id} is {record.status}"
        if record.status == "failed":
            detail += f": {record.error}"
        raise HTTPException(409, detail)
    headers = {"Cache-Control": "private, no-cache"}  # may be kept, but asked about (ETag) before use
    if record.etag:
        headers["ETag"] = f'"{record.etag}"'
        if _matches(request.headers.get("if-none-match"), record.etag):
            return Response(status_code=304, headers=headers)
    storage = service.store.storage
    media_type, filename = MEDIA_TYPES[record.format], f"musicgen-{task_id}.{record.format}"
    path = service.store.audio_path(record)
    if path is not None:
        if not path.is_file():
            raise HTTPException(404, f"the audio of task {task_id} was deleted")
        return FileResponse(path, media_type=media_type, filename=filename, headers=headers)
    try:
        content = storage.read(record.file_name)
    except FileNotFoundError:
        raise HTTPException(404, f"the audio of task {task_id} was deleted") from None
    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return Response(content, media_type=media_type, headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return any(tag == "*" or tag.removeprefix("W/").strip('"') == etag for tag in tags)


@router.get(
    "/tasks",
    summary="Recent tasks, newest first",
    response_model=schemas.TaskList,
    responses=error_responses(401),
)
def list_tasks(
    limit: int = Query(20, ge=1, le=200),
    status: schemas.TaskState | None = Query(None),
    who: Caller = Depends(caller),
    service: MusicService = Depends(get_service),
):
    records = service.store.list(limit, status, owner=who.owner, any_owner=not service.keys.enabled)
    return schemas.TaskList(tasks=[service.task_status(record) for record in records])


# ---------------------------------------------------------------------------------- the body


async def _read_body(
    request: Request, request_model: type[schemas.GenerateRequest]
) -> tuple[schemas.GenerateRequest, bytes | None]:
    """The request fields (JSON or multipart) validated, and the uploaded audio prompt if any."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        raw = await request.body()
        if not raw.strip():
            raise invalid(
                'the body is empty; send a JSON object such as {"prompt": "calm piano", "duration": 10}'
            )
        try:
            return request_model.model_validate_json(raw), None
        except ValidationError as error:
            raise RequestValidationError(_located(error)) from None
    if content_type == "multipart/form-data":
        form = await request.form(max_files=2, max_fields=MAX_FORM_FIELDS, max_part_size=1024 * 1024)
        audio = None
        data: dict[str, Any] = {}
        for name in set(form.keys()):
            values = form.getlist(name)
            if name == UPLOAD_FIELD:
                if len(values) != 1 or not isinstance(values[0], UploadFile):
                    raise invalid(f"{UPLOAD_FIELD} must be exactly one file upload", ("body", UPLOAD_FIELD))
                audio = await values[0].read()
                continue
            if any(isinstance(value, UploadFile) for value in values):
                raise invalid(f"{name} must be a text field, not a file", ("body", name))
            values = [value for value in values if value != ""]  # empty form inputs mean "not given"
            if values:
                data[name] = values[0] if len(values) == 1 else values
        try:
            # The upload is not a field: tell the model it came, as it may stand in for a prompt.
            context = {schemas.HAS_INPUT_AUDIO: audio is not None}
            return request_model.model_validate(data, context=context), audio
        except ValidationError as error:
            raise RequestValidationError(_located(error)) from None
    raise HTTPException(
        415, "send the request as application/json, or as multipart/form-data to upload input_audio"
    )


def _located(error: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in error.errors(include_url=False, include_input=False, include_context=False)
    ]


def _location(error: ValueError, request_model: type[schemas.GenerateRequest]) -> tuple[str, ...]:
    """A refusal's 422 ``loc``: the field it names when that is one of this request's inputs."""
    field = error.field if isinstance(error, FieldError) else None
    if field is not None and (field in request_model.model_fields or field == UPLOAD_FIELD):
        return ("body", field)
    return ("body",)
