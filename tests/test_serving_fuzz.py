"""Thousands of generated and malformed requests against the app: no 5xx, ever, and responses that
match the published OpenAPI schema.

Two sources: schemathesis (~800 positive and negative cases over every operation of the app's own
OpenAPI schema, checked for server errors, documented status codes, content types and response
schemas) and hypothesis (~1200 raw bodies: bytes, near-valid JSON, odd multipart forms; and 40
WebSocket openings). Everything runs twice: on the SQLite task store and on the PostgreSQL one that
replicas share. The app runs under uvicorn in a thread with its device worker off
(``start_worker=False``): accepted tasks stay queued, so the HTTP layer is exercised at full speed;
generation itself is covered by test_serving.py.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from musicgen_jax import MusicGen
from musicgen_jax.serving import create_app
from musicgen_jax.serving.schemas import StreamRequest
from musicgen_jax.serving.settings import make_settings

EXAMPLES_PER_MODE = 100  # per operation and mode (positive, negative); trivial operations run out sooner
RAW_EXAMPLES = 600  # per raw strategy below
FUZZ = settings(
    max_examples=EXAMPLES_PER_MODE,
    deadline=None,
    derandomize=True,  # the same cases every run: CI failures reproduce
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def app(request, tiny_jax_dir, tmp_path_factory):
    """The server on each task store: SQLite (one process) and PostgreSQL (replicas' shared store,
    a real server from the postgres_server fixture), with its audio in a shared-storage directory."""
    data_dir = tmp_path_factory.mktemp(f"fuzz-data-{request.param}")
    store = {}
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        store = {"database_url": server.new_database(), "storage_url": str(data_dir / "shared-audio")}
    settings_ = make_settings(
        model=str(tiny_jax_dir),
        data_dir=data_dir,
        **store,
        warmup_batch_sizes="",
        max_duration=10,
        default_duration=2,
        sync_timeout_seconds=0.01,
        max_queue_size=1_000_000,
        max_request_bytes=300_000,
        max_input_audio_seconds=5,
    )
    app = create_app(settings_, MusicGen.from_pretrained(tiny_jax_dir), start_worker=False)
    assert app.state.service.store.shared is (request.param == "postgres")  # the store asked for
    return app


@pytest.fixture(scope="module")
def base_url(app):
    """The app under uvicorn on 127.0.0.1 in a thread (uvicorn owns its lifespan, as in production)."""
    import socket
    import threading

    import uvicorn

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    client = TestClient(app, raise_server_exceptions=False)  # no `with`: uvicorn runs the lifespan
    deadline = time.monotonic() + 120
    while not server.started or client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "the fuzzed server did not become ready"
        time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(60)
    listener.close()


@pytest.fixture(scope="module")
def schema(base_url):
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


@pytest.fixture(scope="module")
def client(app, base_url):
    return TestClient(app, raise_server_exceptions=False)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(schema):
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {
        "POST /generate",
        "GET /generate/{task_id}",
        "GET /download/{task_id}",
        "POST /evaluate",
    } <= labels
    counts: dict[str, int] = {}
    statuses: Counter[int] = Counter()

    def fuzz(operation, mode, label: str):
        @FUZZ
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            counts[label] = counts.get(label, 0) + 1
            response = case.call_and_validate(checks=checks)
            statuses[response.status_code] += 1

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (an operation without inputs)
            assert mode == GenerationMode.NEGATIVE, label

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, f"{operation.method.upper()} {operation.path} ({mode.value})")
    total = sum(counts.values())
    print(
        f"schemathesis: {total} requests over {len(operations)} operations; "
        f"statuses {dict(sorted(statuses.items()))}"
    )
    assert total >= 700, counts
    assert (
        statuses[202] > 0 and statuses[422] > 0 and statuses[404] > 0
    )  # valid, invalid and unknown all reached


def _json_values():
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=40),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )


_SESSIONS: list[None] = []
RAW_STATUSES: Counter[int] = Counter()
FIELDS = list(StreamRequest.model_fields) + ["input_audio", "wait", "", "prompt\x00"]


@settings(
    max_examples=RAW_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    body=st.one_of(
        st.binary(max_size=600),
        st.dictionaries(st.sampled_from(FIELDS), _json_values(), max_size=8).map(
            lambda d: json.dumps(d).encode()
        ),
        _json_values().map(lambda v: json.dumps(v).encode()),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    ),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/json; charset=latin-1",
            "multipart/form-data",
            "multipart/form-data; boundary=x",
            "text/plain",
            "",
            "application/x-www-form-urlencoded",
            "application/vnd.api+json",
        ]
    ),
    wait=st.sampled_from(["", "?wait=true", "?wait=maybe", "?wait=1&wait=0"]),
)
def _raw_generate(client, body, content_type, wait):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/generate" + wait, content=body, headers=headers)
    RAW_STATUSES[response.status_code] += 1
    assert response.status_code < 500, (response.status_code, response.text, body[:200])
    assert response.headers["content-type"].startswith("application/json")


@settings(
    max_examples=RAW_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    fields=st.lists(st.tuples(st.sampled_from(FIELDS), st.text(max_size=30)), max_size=8),
    upload=st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(["input_audio", "prompt", "file", "task_id", "reference"]),
            st.binary(max_size=400),
        ),
    ),
    path=st.sampled_from(["/generate", "/evaluate"]),
)
def _raw_multipart(client, fields, upload, path):
    files = None if upload is None else {upload[0]: ("x.wav", upload[1], "audio/wav")}
    data: dict[str, list[str]] = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    response = client.post(path, data=data, files=files) if (data or files) else client.post(path)
    RAW_STATUSES[response.status_code] += 1
    assert response.status_code < 500, (response.status_code, response.text, fields, upload and upload[0])


def test_raw_malformed_requests_never_get_a_server_error(client):
    _raw_generate(client)
    _raw_multipart(client)
    print(f"raw: {sum(RAW_STATUSES.values())} requests; statuses {dict(sorted(RAW_STATUSES.items()))}")
    assert sum(RAW_STATUSES.values()) >= 2 * RAW_EXAMPLES - 50 and RAW_STATUSES[422] > 0


@settings(
    max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
@given(
    first=st.one_of(
        st.text(max_size=80),
        st.binary(max_size=40),
        st.fixed_dictionaries(
            {
                "type": st.just("start_streaming"),
                "request": st.dictionaries(st.sampled_from(FIELDS), _json_values(), max_size=5),
            }
        ).map(json.dumps),
        _json_values().map(json.dumps),
    ),
)
def _websocket_openings(client, first):
    _SESSIONS.append(None)
    with client.websocket_connect(f"/ws/stream/fuzz-{len(_SESSIONS)}") as ws:
        if isinstance(first, bytes):
            ws.send_bytes(first)
        else:
            ws.send_text(first)
        reply = ws.receive_json()
        assert reply["type"] in ("started", "error"), reply
        if reply["type"] == "error":
            assert reply["code"] in (4400, 4429) and reply["message"], reply
            assert "Traceback" not in reply["message"]


def test_websocket_openings_get_a_message_not_a_crash(client):
    _websocket_openings(client)
