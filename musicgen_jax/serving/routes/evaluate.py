"""``POST /evaluate``: audio metrics of an uploaded file or of a completed task (multipart)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from musicgen_jax.serving import evaluation, schemas
from musicgen_jax.serving.dependencies import Caller, get_service, limited_caller
from musicgen_jax.serving.responses import error_responses, invalid
from musicgen_jax.serving.service import MusicService
from musicgen_jax.serving.uploads import read_audio

router = APIRouter()


@router.post(
    "/evaluate",
    summary="Audio metrics of an uploaded file or of a completed task",
    response_model=schemas.Evaluation,
    responses=error_responses(400, 401, 404, 409, 413, 429, 503),
)
async def evaluate(
    file: UploadFile | None = File(None, description="audio to evaluate (WAV, FLAC, MP3, OGG)"),
    task_id: str | None = Form(None, description="evaluate this completed task's audio instead"),
    reference: UploadFile | None = File(None, description="optional reference audio (SNR, chroma, ...)"),
    who: Caller = Depends(limited_caller),
    service: MusicService = Depends(get_service),
):
    if (file is None) == (task_id is None):
        raise invalid("give exactly one of file (an upload) or task_id", ("body",))
    loop = asyncio.get_running_loop()
    pool, limit = service.audio_pool, service.settings.max_input_audio_seconds
    reference_audio = None
    try:
        if reference is not None:
            reference_audio = await loop.run_in_executor(
                pool, read_audio, await reference.read(), limit, "reference"
            )
        if file is not None:
            audio, rate = await loop.run_in_executor(pool, read_audio, await file.read(), limit, "file")
        else:
            record = await run_in_threadpool(service.store.get, task_id)
            if not service.visible(record, who.owner):
                raise HTTPException(404, f"no task {task_id!r}")
            if record.status != "completed":
                raise HTTPException(409, f"task {task_id} is {record.status}")
            try:
                audio, rate = await loop.run_in_executor(
                    pool, evaluation.load_task_audio, service.store, record
                )
            except FileNotFoundError as error:
                raise HTTPException(404, str(error)) from None
    except ValueError as error:
        raise invalid(str(error)) from None
    result = await loop.run_in_executor(pool, evaluation.evaluate, audio, rate, reference_audio)
    return schemas.Evaluation(
        source="upload" if file is not None else "task",
        task_id=task_id,
        metrics=result.metrics,
        notes=result.notes,
    )
