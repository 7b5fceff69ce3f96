"""The published OpenAPI schema: the description, both bodies of ``POST /generate``, the key schemes.

``POST /generate`` reads its body itself (JSON, or multipart with an upload), so FastAPI cannot
see its schema: ``GenerateRequest`` (JSON) and ``GenerateForm`` (multipart, with ``input_audio``)
are added here from this server's request model. The API-key schemes (and 401s) are published only
when the server has keys.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

DESCRIPTION = """Text-to-music with MusicGen in JAX.

Queue a generation with `POST /generate` (202 with a `task_id`), poll `GET /generate/{task_id}`,
fetch the file from `GET /download/{task_id}`. `POST /generate?wait=true` answers with the finished
task for short clips. Continue an existing piece by sending multipart/form-data with an `input_audio`
file (and `continuation_start` / `continuation_end` in seconds); `duration` includes the prompt and
the file starts with it. A melody model (`takes_melody` in `GET /info`) follows the melody of an
`input_audio` sent with `continuation=false` (and `melody_start` / `melody_end` in seconds).

Live audio: `WS /ws/stream/{session_id}` (protocol in `musicgen_jax/serving/streaming.py` and the
README). When the server has API keys, send `Authorization: Bearer <key>` or `X-API-Key: <key>`.
"""


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi`` build (once) the schema described above, from ``app.state``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        app.openapi_schema = build_schema(app)
        return app.openapi_schema

    app.openapi = openapi


def build_schema(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    if not app.state.service.keys.enabled:
        schema.get("components", {}).pop("securitySchemes", None)
        for path in schema["paths"].values():
            for operation in path.values():
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = app.state.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["GenerateRequest"] = body
    form = copy.deepcopy(body)
    form["title"] = "GenerateForm"
    form["description"] = (
        "The fields of GenerateRequest as form fields, plus input_audio: an audio prompt to continue "
        "or (continuation false) a melody"
    )
    form["properties"]["input_audio"] = {
        "type": "string",
        "format": "binary",
        "description": "audio (WAV, FLAC, MP3, OGG) to continue (continuation true, the default: the "
        "output starts with it) or whose melody to follow (continuation false; melody models)",
    }
    components["GenerateForm"] = form
    return schema
