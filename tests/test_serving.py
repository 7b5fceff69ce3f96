"""The server in-process (FastAPI's TestClient) with a tiny random checkpoint: task life cycle, every
format read back, batching, continuation, streaming against the non-streamed audio, evaluation,
errors, API keys, rate limits, metrics. (The store, queue and settings alone: test_serving_parts.py.)

Longer than most modules on purpose: every test here talks to one warmed server (the module-scoped
``client``), and splitting the file would warm one per file.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from musicgen_jax import MusicGen
from musicgen_jax.serving import create_app
from musicgen_jax.serving.settings import make_settings
from musicgen_jax.serving.store import SqliteTaskStore
from musicgen_jax.serving.streaming import decode_chunk

SAMPLE_RATE = 32000
PCM16_STEP = 1.0 / 32768


def wait_ready(client: TestClient, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.1)


def wait_finished(client: TestClient, task_id: str, timeout: float = 120.0, headers=None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/generate/{task_id}", headers=headers).json()
        if status["status"] in ("completed", "failed"):
            return status
        assert time.monotonic() < deadline, f"task {task_id} did not finish: {status}"
        time.sleep(0.05)


def read_back(content: bytes) -> tuple[np.ndarray, int]:
    audio, rate = soundfile.read(io.BytesIO(content), dtype="float32", always_2d=True)
    return audio.T, rate  # [channels, samples]


def tone_wav(seconds: float, rate: int = 44100, channels: int = 2) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    audio = np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model(tiny_jax_dir):
    return MusicGen.from_pretrained(tiny_jax_dir)


@pytest.fixture(scope="module")
def client(model, tiny_jax_dir, tmp_path_factory):
    settings = make_settings(
        model=str(tiny_jax_dir),
        data_dir=tmp_path_factory.mktemp("serving-data"),
        warmup_batch_sizes="1,4",
        warmup_durations="5",
        warmup_text_tokens="16",
        max_batch_size=4,
        batch_window_ms=50,
        max_duration=12,
        default_duration=2,
        max_prompt_chars=200,
        max_request_bytes=2_000_000,
        max_input_audio_seconds=20,
    )
    with TestClient(create_app(settings, model)) as test_client:
        wait_ready(test_client)
        yield test_client


# ---------------------------------------------------------------------------------- tasks


def test_health_ready_info(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json() == {
        "status": "ok",
        "model_loaded": True,
        "ready": True,
        "detail": "ready",
    }
    info = client.get("/info").json()
    assert info["sample_rate"] == SAMPLE_RATE and info["channels"] == 1 and info["max_duration"] == 12
    assert "jazz" in info["vocabulary"]["genres"] and "piano" in info["vocabulary"]["instruments"]
    assert info["defaults"]["top_k"] == 250 and info["defaults"]["duration"] == 2
    assert info["takes_melody"] is False  # a text-to-music model
    page = client.get("/")
    assert page.status_code == 200 and "<audio" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize(
    "format, duration, normalization",
    [("wav", 1.5, "peak"), ("flac", 2.0, "loudness"), ("mp3", 2.5, "none")],
)
def test_task_life_cycle_in_every_format(client, format, duration, normalization):
    accepted = client.post(
        "/generate",
        json={
            "prompt": "calm piano",
            "duration": duration,
            "seed": 7,
            "format": format,
            "normalization_strategy": normalization,
            "genre": "Jazz",
            "mood": "calm, happy",
        },
    )
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    task_id = body["task_id"]
    assert body["seed"] == 7 and accepted.headers["location"] == f"/generate/{task_id}"
    first = client.get(f"/generate/{task_id}").json()
    assert first["status"] in ("queued", "running", "completed") and 0.0 <= first["progress"] <= 1.0

    status = wait_finished(client, task_id)
    assert status["status"] == "completed", status["error"]
    assert status["progress"] == 1.0 and status["seed"] == 7 and status["error"] is None
    assert status["request"]["genre"] == "jazz" and status["request"]["mood"] == ["calm", "happy"]
    assert status["audio_seconds"] == pytest.approx(duration)
    assert status["generate_seconds"] > 0 and status["decode_seconds"] > 0 and status["real_time_factor"] > 0
    assert status["queued_seconds"] >= 0 and status["total_seconds"] >= status["queued_seconds"]
    assert status["started_at"] >= status["created_at"] and status["batch_size"] >= 1

    download = client.get(f"/download/{task_id}")
    assert download.status_code == 200
    assert (
        download.headers["content-type"]
        == {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}[format]
    )
    assert f"musicgen-{task_id}.{format}" in download.headers["content-disposition"]
    audio, rate = read_back(download.content)
    assert rate == SAMPLE_RATE and audio.shape[0] == 1
    expected = duration * SAMPLE_RATE
    tolerance = 1152 * 2 if format == "mp3" else 0  # MP3 frames are 1152 samples; its decoder may pad
    assert abs(audio.shape[1] - expected) <= tolerance
    if normalization == "peak":  # -1 dBFS
        assert np.abs(audio).max() == pytest.approx(10 ** (-1 / 20), abs=2e-3)


def test_wait_returns_the_finished_task(client):
    response = client.post("/generate?wait=true", json={"prompt": "drums", "duration": 1.0, "seed": 1})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed" and body["download_url"] == f"/download/{body['task_id']}"
    assert client.get(body["download_url"]).status_code == 200


def test_queued_requests_are_batched_and_batching_does_not_change_the_music(client):
    # A long task keeps the device busy while four short ones queue: they must run as one batch.
    long_task = client.post("/generate", json={"prompt": "long", "duration": 5, "seed": 1}).json()["task_id"]
    deadline = time.monotonic() + 30
    while client.get(f"/generate/{long_task}").json()["status"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    began = time.monotonic()  # the event loop answers while the device works
    assert client.get("/health").status_code == 200 and time.monotonic() - began < 1.0
    ids = {}
    for seed in (11, 12, 13, 14):
        ids[seed] = client.post(
            "/generate",
            json={
                "prompt": f"song {seed}",
                "duration": 1.0 + seed / 10,
                "seed": seed,
                "normalization_strategy": "none",
            },
        ).json()["task_id"]
    statuses = {seed: wait_finished(client, task_id) for seed, task_id in ids.items()}
    assert {s["batch_size"] for s in statuses.values()} == {4}
    assert len({s["started_at"] for s in statuses.values()}) == 1
    assert wait_finished(client, long_task)["status"] == "completed"
    # The same request alone gives the same samples (no-cache: generated again, not the stored answer).
    alone = client.post(
        "/generate?wait=true",
        json={"prompt": "song 12", "duration": 2.2, "seed": 12, "normalization_strategy": "none"},
        headers={"Cache-Control": "no-cache"},
    ).json()
    assert alone["batch_size"] == 1
    batched_audio, _ = read_back(client.get(f"/download/{ids[12]}").content)
    alone_audio, _ = read_back(client.get(f"/download/{alone['task_id']}").content)
    np.testing.assert_array_equal(batched_audio, alone_audio)


def test_continuation_from_an_uploaded_prompt(client):
    response = client.post(
        "/generate?wait=true",
        data={
            "prompt": "continue this",
            "duration": "3",
            "seed": "5",
            "continuation_start": "0.5",
            "continuation_end": "1.5",
            "format": "flac",
            "mood": ["happy", "calm"],
        },
        files={"input_audio": ("prompt.wav", tone_wav(3.0), "audio/wav")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed", body["error"]
    assert body["request"]["audio_prompt_seconds"] == pytest.approx(1.0)
    assert body["request"]["mood"] == ["happy", "calm"]
    audio, rate = read_back(client.get(body["download_url"]).content)
    assert rate == SAMPLE_RATE and audio.shape == (1, 3 * SAMPLE_RATE)

    too_long = client.post(
        "/generate", data={"duration": "2"}, files={"input_audio": ("prompt.wav", tone_wav(3.0), "audio/wav")}
    )
    assert too_long.status_code == 422
    assert "must be shorter than duration" in too_long.json()["detail"][0]["msg"]
    past_the_end = client.post(
        "/generate",
        data={"duration": "5", "continuation_start": "4"},
        files={"input_audio": ("prompt.wav", tone_wav(3.0), "audio/wav")},
    )
    assert past_the_end.status_code == 422
    assert past_the_end.json()["detail"] == [
        {
            "loc": ["body", "continuation_start"],
            "msg": "continuation_start (4 s) is past the end of input_audio (3.00 s)",
            "type": "value_error",
        }
    ]


@pytest.mark.parametrize(
    "payload, field, words",
    [
        ({"duration": 60}, "duration", "less than or equal to 12"),
        ({"temperature": 0}, "temperature", "greater than 0"),
        ({"top_p": 1.5}, "top_p", "less than or equal to 1"),
        ({"num_beams": 9}, "num_beams", "less than or equal to 8"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"format": "ogg"}, "format", "'wav', 'flac' or 'mp3'"),
        ({"normalization_strategy": "loud"}, "normalization_strategy", "'loudness'"),
        ({"genre": "jaz"}, "genre", "did you mean 'jazz'"),
        ({"mood": ["happy", "grumpy"]}, "mood", "unknown mood 'grumpy'"),
        ({"instruments": "kazoo"}, "instruments", "unknown instrument"),
        ({"tempo": 500}, "tempo", "less than or equal to 300"),
        ({"prompt": "x" * 201}, "prompt", "at most 200 characters"),
        ({"prompt": "a\u0000b"}, "prompt", "NUL"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
        ({"continuation_end": 2.0}, None, "need an input_audio upload"),
        ({"duration": "NaN"}, "duration", "finite number"),
    ],
)
def test_bad_fields_get_422_with_the_field_and_the_reason(client, payload, field, words):
    response = client.post("/generate", json={"prompt": "jazz", **payload})
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(words in e["msg"] for e in errors), errors
    if field is not None:
        assert any(e["loc"][:2] == ["body", field] for e in errors), errors


def test_a_request_must_say_what_to_make(client):
    """A prompt, an input_audio upload or unconditional: true; ``{}`` is not a full-length generation."""
    for body, words in [
        ({}, "the prompt is empty"),
        ({"prompt": ""}, "the prompt is empty"),
        ({"prompt": " \n\t"}, "the prompt is empty"),
        ({"genre": "jazz", "duration": 1}, "unconditional: true"),
        ({"unconditional": False}, "the prompt is empty"),
        ({"prompt": "jazz", "unconditional": True}, "not both"),
    ]:
        response = client.post("/generate", json=body)
        assert response.status_code == 422, (body, response.text)
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body"] and words in error["msg"], (body, error)
    form = client.post("/generate", files={"duration": (None, "1")})  # multipart without the upload
    assert form.status_code == 422 and "the prompt is empty" in form.json()["detail"][0]["msg"]
    unconditional = client.post(
        "/generate?wait=true", json={"unconditional": True, "duration": 1, "seed": 4, "prompt": ""}
    )
    assert unconditional.status_code == 200, unconditional.text
    task = unconditional.json()
    assert (
        task["status"] == "completed" and not task["prompt"] and task["audio_seconds"] == pytest.approx(1.0)
    )
    # The published schema says the same: one of the three is required.
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    required = [branch["required"] for branch in schema["GenerateRequest"]["anyOf"]]
    assert required == [["prompt"], ["input_audio"], ["unconditional"]]
    assert "input_audio" in schema["GenerateForm"]["properties"]


def test_malformed_requests_get_clear_4xx(client):
    bad_json = client.post("/generate", content=b'{"prompt": ', headers={"content-type": "application/json"})
    assert bad_json.status_code == 422 and "JSON" in bad_json.json()["detail"][0]["msg"]
    empty = client.post("/generate", content=b"", headers={"content-type": "application/json"})
    assert empty.status_code == 422 and "empty" in empty.json()["detail"][0]["msg"]
    not_object = client.post("/generate", json=[1, 2])
    assert not_object.status_code == 422
    wrong_type = client.post("/generate", content=b"prompt=x", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415 and "application/json" in wrong_type.json()["detail"]
    not_audio = client.post(
        "/generate", data={"duration": "3"}, files={"input_audio": ("x.wav", b"RIFFjunk", "audio/wav")}
    )
    assert not_audio.status_code == 422
    assert not_audio.json()["detail"][0]["loc"] == ["body", "input_audio"]
    assert "not an audio file" in not_audio.json()["detail"][0]["msg"]
    long_audio = client.post(
        "/generate",
        data={"duration": "3"},
        files={"input_audio": ("x.wav", tone_wav(21, 8000, 1), "audio/wav")},
    )
    assert long_audio.status_code == 422 and "at most 20 s" in long_audio.json()["detail"][0]["msg"]
    huge = client.post("/generate", content=b"x" * 2_000_001, headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "larger than" in huge.json()["detail"]
    # Without a Content-Length (chunked), the body is counted as it arrives.
    chunked = client.post(
        "/generate", content=iter([b" " * 1_000_000] * 3), headers={"content-type": "application/json"}
    )
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413
    assert chunked.json() == {"detail": "request body larger than 2000000 bytes"}
    assert client.get("/generate/0123").status_code == 404
    assert client.get("/download/0123").json() == {"detail": "no task '0123'"}
    assert client.get("/tasks?limit=0").status_code == 422


def test_download_of_an_unfinished_task_is_409(client):
    task_id = client.post("/generate", json={"prompt": "slow", "duration": 10, "seed": 2}).json()["task_id"]
    response = client.get(f"/download/{task_id}")
    detail = response.json()["detail"]
    assert response.status_code == 409 and ("is queued" in detail or "is running" in detail), detail
    status = client.get(f"/generate/{task_id}").json()
    assert status["queue_position"] == (0 if status["status"] == "queued" else None)
    assert wait_finished(client, task_id)["status"] == "completed"
    assert client.get(f"/download/{task_id}").status_code == 200
    listed = client.get("/tasks?limit=50").json()["tasks"]
    assert task_id in [t["task_id"] for t in listed]
    assert [t["created_at"] for t in listed] == sorted((t["created_at"] for t in listed), reverse=True)


def test_an_internal_error_is_a_500_json_without_internals(client, monkeypatch):
    service = client.app.state.service

    def broken(task_id):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service.store, "get", broken)
    response = client.get("/generate/whatever")
    assert response.status_code == 500
    body = response.json()
    assert body["detail"] == "internal server error" and len(body["error_id"]) == 12
    assert "secret" not in response.text and "Traceback" not in response.text


def test_refusals_name_their_field_by_attribute(client):
    """The 422 ``loc`` comes from the ``field`` the errors carry, never from their wording."""
    from musicgen_jax.conditioning import Attributes, InvalidAttributeError
    from musicgen_jax.generation.params import GenerationParams, GenerationParamsError
    from musicgen_jax.serving.errors import FieldError
    from musicgen_jax.serving.schemas import GenerateRequest

    for make, error_type, field in [
        (lambda: GenerationParams(top_k=-1), GenerationParamsError, "top_k"),
        (lambda: GenerationParams(guidance_scale=float("nan")), GenerationParamsError, "guidance_scale"),
        (lambda: Attributes.create(instruments="piano, kazoo"), InvalidAttributeError, "instruments"),
        (lambda: Attributes.create(tempo="fast"), InvalidAttributeError, "tempo"),
    ]:
        with pytest.raises(error_type) as raised:
            make()
        assert raised.value.field == field
    service = client.app.state.service
    for body, field in [
        ({"prompt": "x", "mood": ["happy", "grumpy"]}, "mood"),  # the library's message starts "unknown mood"
        ({"prompt": "x", "key": "H major"}, "key"),
        ({"prompt": "x" * 201}, "prompt"),
        ({"prompt": "x", "continuation_end": 3.0}, "continuation_start"),
    ]:
        with pytest.raises(FieldError) as raised:
            service.build_request(GenerateRequest(**body))
        assert raised.value.field == field, body


def test_tasks_left_when_the_server_stops_fail_as_interrupted(model, tiny_jax_dir, tmp_path):
    from musicgen_jax.serving.service import SHUT_DOWN

    settings = make_settings(model=str(tiny_jax_dir), data_dir=tmp_path, warmup_batch_sizes="")
    with TestClient(create_app(settings, model, start_worker=False)) as idle:  # tasks stay queued
        wait_ready(idle)
        task_id = idle.post("/generate", json={"prompt": "never run"}).json()["task_id"]
    store = SqliteTaskStore(tmp_path)  # after the shutdown
    record = store.get(task_id)
    store.close()
    assert (record.status, record.error) == ("failed", SHUT_DOWN)


# ---------------------------------------------------------------------------------- streaming


def receive_stream(ws) -> tuple[dict, list, dict, list[float]]:
    started = json.loads(ws.receive_text())
    chunks, arrivals = [], []
    while True:
        message = ws.receive()
        if message.get("bytes") is not None:
            chunks.append(decode_chunk(message["bytes"]))
            arrivals.append(time.time())
            continue
        final = json.loads(message["text"])
        if final["type"] in ("done", "error"):
            return started, chunks, final, arrivals


def test_stream_chunks_arrive_early_and_equal_the_downloaded_audio(client):
    request = {"prompt": "happy jazz", "duration": 8, "seed": 21, "chunk_duration": 0.5}
    with client.websocket_connect("/ws/stream/test-session-1") as ws:
        ws.send_json({"type": "start_streaming", "request": request})
        started, chunks, final, arrivals = receive_stream(ws)
    assert started["type"] == "started" and started["seed"] == 21
    assert (started["sample_rate"], started["channels"], started["dtype"], started["header_bytes"]) == (
        SAMPLE_RATE,
        1,
        "float32",
        24,
    )
    # How many chunks the rest of the clip comes in depends on how far generation runs ahead of the
    # codec on a loaded machine (a late decode sends what has piled up); at least the first arrives alone.
    assert final["type"] == "done" and final["stopped"] is False and final["chunks"] == len(chunks) >= 2
    # Sequence numbers count up and offsets tile the stream without gaps.
    assert [c[0] for c in chunks] == list(range(len(chunks)))
    assert [c[1] for c in chunks] == list(np.cumsum([0] + [c[3].shape[1] for c in chunks[:-1]]))
    streamed = np.concatenate([c[3] for c in chunks], axis=1)
    assert streamed.shape == (1, 8 * SAMPLE_RATE) and final["samples"] == streamed.shape[1]
    # Audio arrived while the music was still being generated.
    timings = final["timings"]
    assert timings["chunks_before_generation_end"] >= 1
    assert arrivals[0] < timings["generation_finished_at"]

    # The same request, not streamed, un-normalised, as a 16-bit WAV: equal up to 16-bit rounding.
    task = client.post(
        "/generate?wait=true",
        json={
            **{k: v for k, v in request.items() if k != "chunk_duration"},
            "normalization_strategy": "none",
        },
    ).json()
    downloaded, _ = read_back(client.get(task["download_url"]).content)
    difference = np.abs(streamed - downloaded).max()
    signal = np.sqrt(np.mean(downloaded**2))
    snr = 20 * np.log10(signal / max(np.sqrt(np.mean((streamed - downloaded) ** 2)), 1e-12))
    print(
        f"stream vs download: max |diff| {difference:.2e} "
        f"({difference / PCM16_STEP:.2f} LSB of 16 bit), SNR {snr:.1f} dB"
    )
    assert difference <= 1.01 * PCM16_STEP and snr > 60


def test_stream_in_base64_and_stop_early(client):
    with client.websocket_connect("/ws/stream/b64") as ws:
        ws.send_json(
            {
                "type": "start_streaming",
                "request": {"prompt": "x", "duration": 1.0, "seed": 3, "encoding": "base64"},
            }
        )
        started = ws.receive_json()
        audio = ws.receive_json()
        assert started["encoding"] == "base64" and audio["type"] == "audio" and audio["seq"] == 0
        samples = np.frombuffer(__import__("base64").b64decode(audio["data"]), "<f4")
        assert samples.size == audio["samples"] > 0
        while (final := ws.receive_json())["type"] == "audio":
            pass
        assert final["type"] == "done" and final["samples"] == SAMPLE_RATE

    with client.websocket_connect("/ws/stream/stopper") as ws:
        ws.send_json(
            {
                "type": "start_streaming",
                "request": {"prompt": "x", "duration": 10, "seed": 4, "chunk_duration": 0.5},
            }
        )
        assert ws.receive_json()["type"] == "started"
        listed = client.get("/stream/sessions").json()["sessions"]
        assert [s["session_id"] for s in listed] == ["stopper"] and listed[0]["duration"] == 10
        first = ws.receive()
        assert first.get("bytes")
        ws.send_json({"type": "stop"})
        while True:
            message = ws.receive()
            if message.get("text"):
                final = json.loads(message["text"])
                break
    assert final == {**final, "type": "done", "stopped": True}
    assert final["samples"] < 10 * SAMPLE_RATE
    assert client.get("/stream/sessions").json()["sessions"] == []


@pytest.mark.parametrize(
    "session, first, code, words",
    [
        ("bad.id", None, 4400, "session_id"),
        ("ok", "not json", 4400, "not valid JSON"),
        ("ok", {"type": "hello"}, 4400, "start_streaming"),
        (
            "ok",
            {"type": "start_streaming", "request": {"prompt": "x", "duration": 99}},
            4400,
            "at most 12 seconds",
        ),
        (
            "ok",
            {"type": "start_streaming", "request": {"prompt": "x", "genre": "polka"}},
            4400,
            "unknown genre",
        ),
        (
            "ok",
            {"type": "start_streaming", "request": {"prompt": "x", "chunk_duration": 0}},
            4400,
            "chunk_duration",
        ),
        ("ok", {"type": "start_streaming", "request": {}}, 4400, "the prompt is empty"),
        (
            "ok",
            {"type": "start_streaming", "request": {"prompt": " ", "genre": "jazz"}},
            4400,
            "prompt is empty",
        ),
        (
            "ok",
            {"type": "start_streaming", "request": {"prompt": "x", "unconditional": True}},
            4400,
            "not both",
        ),
    ],
)
def test_stream_errors_are_messages_then_a_close_code(client, session, first, code, words):
    with client.websocket_connect(f"/ws/stream/{session}") as ws:
        if first is not None:
            ws.send_text(first if isinstance(first, str) else json.dumps(first))
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == code and words in error["message"], error
        assert ws.receive()["code"] == code


# ---------------------------------------------------------------------------------- evaluation, metrics


def test_evaluate_a_task_and_an_upload(client):
    task = client.post("/generate?wait=true", json={"prompt": "x", "duration": 2, "seed": 9}).json()
    by_task = client.post("/evaluate", data={"task_id": task["task_id"]})
    assert by_task.status_code == 200, by_task.text
    metrics = by_task.json()["metrics"]
    assert by_task.json()["source"] == "task" and metrics["duration_s"] == pytest.approx(2.0)
    assert metrics["sample_rate"] == SAMPLE_RATE and metrics["loudness_lufs"] == pytest.approx(-14, abs=1.0)
    upload = client.post("/evaluate", files={"file": ("t.wav", tone_wav(2.0), "audio/wav")})
    assert upload.status_code == 200 and upload.json()["metrics"]["channels"] == 2
    assert upload.json()["metrics"]["peak_dbfs"] == pytest.approx(20 * np.log10(0.3), abs=0.01)
    assert client.post("/evaluate", data={}).status_code == 422
    assert client.post("/evaluate", data={"task_id": "nope"}).status_code == 404
    garbage = client.post("/evaluate", files={"file": ("t.wav", b"\x00" * 100, "audio/wav")})
    assert garbage.status_code == 422 and "not an audio file" in garbage.json()["detail"][0]["msg"]


def test_metrics_count_requests_batches_and_latency(client):
    client.post("/generate?wait=true", json={"prompt": "m", "duration": 1, "seed": 1})
    text = client.get("/metrics").text
    assert 'musicgen_http_requests_total{method="POST",route="/generate",status="200"}' in text
    assert 'route="/generate/{task_id}"' in text  # templates, not ids
    for name in (
        "musicgen_queue_depth",
        "musicgen_task_latency_seconds_bucket",
        "musicgen_batch_size_bucket",
        "musicgen_real_time_factor_bucket",
        "musicgen_generation_seconds_count",
        "musicgen_ready 1.0",
    ):
        assert name in text, name
    completed = [
        line for line in text.splitlines() if line.startswith('musicgen_tasks_total{status="completed"}')
    ]
    assert completed and float(completed[0].split()[-1]) >= 1


# ---------------------------------------------------------------------------------- keys and limits


def test_api_keys_and_rate_limits(model, tiny_jax_dir, tmp_path):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# one per line\nkey-two\n")
    settings = make_settings(
        model=str(tiny_jax_dir),
        data_dir=tmp_path / "data",
        api_keys="key-one",
        api_keys_file=keys_file,
        rate_limit_per_minute=6,
        rate_limit_burst=2,
        warmup_batch_sizes="",
        max_duration=5,
        default_duration=1,
        cors_origins="https://example.org",
    )
    # start_worker=False: tasks stay queued, so this app never touches the device the module's app owns.
    with TestClient(create_app(settings, model, start_worker=False)) as anonymous:
        wait_ready(anonymous)
        assert anonymous.get("/health").status_code == 200  # public
        missing = anonymous.post("/generate", json={"prompt": "x"})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "API key" in missing.json()["detail"]
        wrong = anonymous.post("/generate", json={"prompt": "x"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"
        assert anonymous.get("/tasks").status_code == 401

        one = {"Authorization": "Bearer key-one"}
        two = {"X-API-Key": "key-two"}
        first = anonymous.post("/generate", json={"prompt": "a"}, headers=one)
        second = anonymous.post("/generate", json={"prompt": "b"}, headers=one)
        third = anonymous.post("/generate", json={"prompt": "c"}, headers=one)
        assert (first.status_code, second.status_code, third.status_code) == (202, 202, 429)
        assert 1 <= int(third.headers["retry-after"]) <= 10 and "rate limit" in third.json()["detail"]
        assert (
            anonymous.get(f"/generate/{first.json()['task_id']}", headers=one).status_code == 200
        )  # polling is free
        assert (
            anonymous.post("/generate", json={"prompt": "d"}, headers=two).status_code == 202
        )  # its own bucket
        # Keys do not see each other's tasks.
        assert anonymous.get(f"/generate/{first.json()['task_id']}", headers=two).status_code == 404
        assert len(anonymous.get("/tasks", headers=one).json()["tasks"]) == 2
        assert len(anonymous.get("/tasks", headers=two).json()["tasks"]) == 1
        # CORS for the configured origin only.
        preflight = anonymous.options(
            "/generate", headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
        )
        assert preflight.headers["access-control-allow-origin"] == "https://example.org"
        other = anonymous.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        # WebSockets take the key as a query parameter.
        with anonymous.websocket_connect("/ws/stream/nokey") as ws:
            assert ws.receive_json()["code"] == 4401
        with anonymous.websocket_connect("/ws/stream/withkey?api_key=key-two") as ws:
            ws.send_json({"type": "start_streaming", "request": {"prompt": "x"}})
            assert ws.receive_json()["type"] == "started"  # key-two still has a token
