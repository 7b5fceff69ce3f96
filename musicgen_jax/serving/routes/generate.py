"""Tasks: ``POST /generate`` (JSON, or multipart with an audio prompt), status, download and list."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
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
    handle = await run_in_threadpool(service.submit_task, body, generation, who.owner)
    task_id = handle.task_id
    if wait:
        # shield: a timeout must not cancel the shared future other waiters may hold
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(handle.finished)), service.settings.sync_timeout_seconds
            )
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
    | error_responses(401, 404, 409),
)
def download(task_id: str, who: Caller = Depends(caller), service: MusicService = Depends(get_service)):
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
        path, media_type=MEDIA_TYPES[record.format], filename=f"musicgen-{task_id}.{record.format}"
    )


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
