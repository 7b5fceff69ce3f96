"""A melody at every interface, on a tiny random MusicGen-melody: the command line (``--melody``),
``POST /generate`` (``input_audio`` with ``continuation: false``), the WebSocket stream (base64
``input_audio``) and the web page in headless Chromium, each against ``MusicGen.generate(melody=...)``
with the same seed; and the refusals (a text-only model, unreadable or silent audio, empty slices).

One server (uvicorn in a thread, as tests/test_serving_fuzz.py runs it) answers the REST, stream
and page tests, so the tiny model compiles once.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import time

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from musicgen_jax import MusicGen
from musicgen_jax.cli.main import main
from musicgen_jax.conditioning.melody import MelodyError
from musicgen_jax.serving import create_app
from musicgen_jax.serving.settings import make_settings
from musicgen_jax.serving.streaming import decode_chunk

RATE = 32000
PCM16_STEP = 1.0 / 32768
PROMPT = "calm piano"


def melody_wav(seconds: float, seed: int, rate: int = RATE, gain: float = 0.5) -> bytes:
    """A WAV of notes of random pitch, a quarter second each (``gain`` 0: digital silence)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 220 * 2 ** (rng.integers(0, 24, int(np.ceil(seconds * 4))) / 12)
    tone = gain * np.sin(2 * np.pi * np.cumsum(pitch[(t * 4).astype(int)]) / rate)
    buffer = io.BytesIO()
    soundfile.write(buffer, tone.astype(np.float32), rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio.T, rate  # [channels, samples]


@pytest.fixture(scope="module")
def melody_dir(tiny_hf_dirs):
    return tiny_hf_dirs("melody")


@pytest.fixture(scope="module")
def melody_model(melody_dir):
    return MusicGen.from_pretrained(melody_dir, dtype="float32")


@pytest.fixture(scope="module")
def tune(tmp_path_factory):
    """A 3 s melody file and its samples ``[1, samples]``."""
    path = tmp_path_factory.mktemp("melody") / "tune.wav"
    path.write_bytes(melody_wav(3.0, 11))
    return path, read_wav(path.read_bytes())[0]


# ---------------------------------------------------------------------------------- the library


def test_the_library_refuses_silence_and_text_models_early(melody_model, tiny_hf_dir):
    assert melody_model.takes_melody
    with pytest.raises(MelodyError, match="silent"):
        melody_model.make_requests(
            [PROMPT], duration=1.0, melody=np.zeros(RATE, np.float32), melody_sample_rate=RATE
        )
    text_model = MusicGen.from_pretrained(tiny_hf_dir, dtype="float32")
    assert not text_model.takes_melody
    with pytest.raises(MelodyError, match="is not a melody model"):  # at make_requests, not on the device
        text_model.make_requests(
            [PROMPT], duration=1.0, melody=read_wav(melody_wav(1.0, 1))[0], melody_sample_rate=RATE
        )


# ---------------------------------------------------------------------------------- the command line


def test_cli_melody_run_equals_the_python_api(melody_dir, melody_model, tune, tmp_path, capsys):
    path, samples = tune
    out, codes = tmp_path / "song.wav", tmp_path / "codes.npy"
    args = [
        "generate",
        PROMPT,
        "--model",
        str(melody_dir),
        "--duration",
        "1",
        "--seed",
        "4",
        "--cache-dir",
        "",
    ]
    args += ["--melody", str(path), "--melody-start", "0.5", "--melody-end", "2.5"]
    assert main(args + ["--output", str(out), "--codes-out", str(codes)]) == 0, capsys.readouterr().err
    audio, rate = soundfile.read(out, always_2d=True)
    assert rate == RATE and audio.shape == (RATE, 1) and np.abs(audio).max() > 0
    piece = samples[:, RATE // 2 : 5 * RATE // 2]
    want = melody_model.generate_tokens([PROMPT], duration=1.0, seed=4, melody=piece, melody_sample_rate=RATE)
    np.testing.assert_array_equal(np.load(codes), want)
    # The melody (and its slice) is heard: without one, or with another slice, the music differs.
    plain = melody_model.generate_tokens([PROMPT], duration=1.0, seed=4)
    other = melody_model.generate_tokens(
        [PROMPT], duration=1.0, seed=4, melody=samples, melody_sample_rate=RATE
    )
    assert not np.array_equal(want, plain) and not np.array_equal(want, other)


def test_cli_batch_follows_per_line_melodies(melody_dir, melody_model, tune, tmp_path, capsys):
    path, samples = tune
    lines = [
        {"prompt": PROMPT, "seed": 1, "output": "a.wav"},
        {"prompt": PROMPT, "seed": 1, "output": "b.wav", "melody_end": 1.5},
    ]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(line) for line in lines))
    args = ["generate-batch", "--prompts", str(prompts), "--output-dir", str(tmp_path / "out")]
    args += ["--model", str(melody_dir), "--duration", "1", "--melody", str(path), "--cache-dir", ""]
    assert main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    written = {
        name: soundfile.read(tmp_path / "out" / name, always_2d=True)[0] for name in ("a.wav", "b.wav")
    }
    assert written["a.wav"].shape == written["b.wav"].shape == (RATE, 1)
    assert not np.allclose(written["a.wav"], written["b.wav"])  # b follows only the first 1.5 s
    want = melody_model.generate(
        [PROMPT], duration=1.0, seed=1, melody=samples[:, : 3 * RATE // 2], melody_sample_rate=RATE
    ).audio[0, 0]
    # The file is loudness-normalised: the same music up to a gain and 16-bit rounding.
    assert np.corrcoef(want, written["b.wav"][:, 0])[0, 1] > 0.999


def test_cli_interactive_follows_the_melody(melody_dir, melody_model, tune, tmp_path, monkeypatch, capsys):
    path, samples = tune
    lines = iter(["calm piano", ":seed 5", "calm piano", ":q"])
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(lines))
    args = [
        "interactive",
        "--model",
        str(melody_dir),
        "--duration",
        "1",
        "--seed",
        "5",
        "--melody",
        str(path),
    ]
    assert main(args + ["--output-dir", str(tmp_path), "--normalization", "none", "--cache-dir", ""]) == 0
    capsys.readouterr()
    want = melody_model.generate([PROMPT], duration=1.0, seed=5, melody=samples, melody_sample_rate=RATE)
    for name in ("interactive-001.wav", "interactive-002.wav"):
        audio, _ = read_wav((tmp_path / name).read_bytes())
        assert np.abs(audio - np.clip(want.audio[0], -1, 1)).max() <= 1.01 * PCM16_STEP, name


def test_cli_melody_refusals_are_one_line_and_write_nothing(tiny_jax_dir, melody_dir, tune, tmp_path, capsys):
    path, _ = tune
    (tmp_path / "notes.wav").write_text("not audio")
    (tmp_path / "quiet.wav").write_bytes(melody_wav(2.0, 3, gain=0.0))
    out = tmp_path / "never.wav"
    base = ["generate", PROMPT, "--duration", "1", "--output", str(out), "--cache-dir", ""]
    cases = [
        (["--model", str(tiny_jax_dir), "--melody", str(path)], "is not a melody model"),
        (["--model", str(melody_dir), "--melody", str(tmp_path / "notes.wav")], "cannot read"),
        (["--model", str(melody_dir), "--melody", str(tmp_path / "missing.wav")], "no audio file at"),
        (["--model", str(melody_dir), "--melody", str(tmp_path / "quiet.wav")], "the melody is silent"),
        (
            ["--model", str(melody_dir), "--melody", str(path), "--melody-start", "2", "--melody-end", "1"],
            "after",
        ),
        (["--model", str(melody_dir), "--melody", str(path), "--melody-start", "5"], "past the end"),
        (["--model", str(melody_dir), "--melody-start", "1"], "need --melody FILE"),
    ]
    for extra, words in cases:
        assert main(base + extra) == 1, extra
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in err, (extra, err)
    batch = tmp_path / "prompts.txt"
    batch.write_text("jazz\n")
    args = ["generate-batch", "--prompts", str(batch), "--output-dir", str(tmp_path / "batch")]
    assert main(args + ["--model", str(tiny_jax_dir), "--melody", str(path), "--cache-dir", ""]) == 1
    assert "is not a melody model" in capsys.readouterr().err
    assert not out.exists() and not list((tmp_path / "batch").glob("*.wav"))


# ---------------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server(melody_dir, melody_model, tmp_path_factory):
    """The melody model under uvicorn on 127.0.0.1 in a thread; (base url, TestClient)."""
    import socket
    import threading

    import uvicorn

    settings = make_settings(
        model=str(melody_dir),
        data_dir=tmp_path_factory.mktemp("melody-serving"),
        warmup_batch_sizes="",  # compiled on first use: the tests use one shape
        max_batch_size=1,
        max_duration=5,
        default_duration=1,
        max_input_audio_seconds=10,
    )
    app = create_app(settings, melody_model)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    client = TestClient(app, raise_server_exceptions=False)  # no `with`: uvicorn runs the lifespan
    deadline = time.monotonic() + 180
    while not uv.started or client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "the melody server did not become ready"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", client
    uv.should_exit = True
    thread.join(60)
    listener.close()


def wait_finished(client: TestClient, task_id: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while (status := client.get(f"/generate/{task_id}").json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return status


def test_rest_melody_task_equals_the_python_api(server, melody_model, tune):
    _, client = server
    path, samples = tune
    info = client.get("/info").json()
    assert info["takes_melody"] is True and "melody_start" not in info["defaults"]
    response = client.post(
        "/generate",
        data={
            "prompt": PROMPT,
            "duration": "1",
            "seed": "6",
            "continuation": "false",
            "melody_start": "0.5",
            "melody_end": "2.5",
            "normalization_strategy": "none",
        },
        files={"input_audio": ("tune.wav", path.read_bytes(), "audio/wav")},
    )
    assert response.status_code == 202, response.text
    status = wait_finished(client, response.json()["task_id"])
    assert status["status"] == "completed", status["error"]
    assert status["request"]["melody"] is True and status["request"]["audio_prompt_seconds"] is None
    audio, rate = read_wav(client.get(status["download_url"]).content)
    want = melody_model.generate(
        [PROMPT], duration=1.0, seed=6, melody=samples[:, RATE // 2 : 5 * RATE // 2], melody_sample_rate=RATE
    ).audio[0]
    assert rate == RATE and audio.shape == want.shape == (1, RATE)
    assert np.abs(audio - np.clip(want, -1, 1)).max() <= 1.01 * PCM16_STEP
    plain = melody_model.generate([PROMPT], duration=1.0, seed=6).audio[0]
    assert np.abs(plain - want).max() > 100 * PCM16_STEP  # the melody changed the music


@pytest.mark.parametrize(
    "data, upload, field, words",
    [
        ({"continuation": "false"}, melody_wav(2.0, 3, gain=0.0), "input_audio", "the melody is silent"),
        ({"continuation": "false"}, b"not audio at all", "input_audio", "not an audio file"),
        ({"continuation": "false", "melody_start": "2.5"}, None, "melody_start", "past the end"),
        ({"continuation": "false", "melody_start": "1", "melody_end": "0.5"}, None, "melody_end", "after"),
        (
            {"continuation": "false", "continuation_start": "1"},
            None,
            "continuation_start",
            "melody_start and",
        ),
        ({"melody_end": "1"}, None, "melody_start", "need continuation: false"),
    ],
)
def test_rest_melody_refusals_are_422(server, data, upload, field, words):
    _, client = server
    files = {"input_audio": ("tune.wav", upload or melody_wav(2.0, 5), "audio/wav")}
    response = client.post("/generate", data={"prompt": PROMPT, **data}, files=files)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", field] and words in problem["msg"], problem
    no_upload = client.post("/generate", json={"prompt": PROMPT, "melody_start": 1})
    assert no_upload.status_code == 422 and "need an input_audio upload" in no_upload.text


def test_a_text_model_server_refuses_a_melody_with_422(tiny_jax_dir, tmp_path):
    settings = make_settings(model=str(tiny_jax_dir), data_dir=tmp_path, warmup_batch_sizes="")
    app = create_app(settings, MusicGen.from_pretrained(tiny_jax_dir), start_worker=False)
    with TestClient(app) as client:
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert client.get("/info").json()["takes_melody"] is False
        response = client.post(
            "/generate",
            data={"prompt": PROMPT, "continuation": "false"},
            files={"input_audio": ("tune.wav", melody_wav(2.0, 5), "audio/wav")},
        )
        assert response.status_code == 422, response.text
        [problem] = response.json()["detail"]
        assert problem["loc"] == ["body", "continuation"] and "is not a melody model" in problem["msg"]
        with client.websocket_connect("/ws/stream/text-melody") as ws:
            request = {"prompt": PROMPT, "input_audio": base64.b64encode(melody_wav(1.0, 5)).decode()}
            ws.send_text(
                json.dumps({"type": "start_streaming", "request": dict(request, continuation=False)})
            )
            error = ws.receive_json()
            assert (
                error["type"] == "error"
                and error["code"] == 4400
                and "not a melody model" in error["message"]
            )


def test_stream_with_a_melody_equals_the_python_api(server, melody_model, tune):
    _, client = server
    path, samples = tune
    melody = base64.b64encode(path.read_bytes()).decode()
    request = {"prompt": PROMPT, "duration": 1, "seed": 8, "input_audio": melody, "continuation": False}
    with client.websocket_connect("/ws/stream/melody-1") as ws:
        ws.send_text(json.dumps({"type": "start_streaming", "request": request}))
        assert ws.receive_json()["type"] == "started"
        chunks = []
        while True:
            message = ws.receive()
            if message.get("bytes") is not None:
                chunks.append(decode_chunk(message["bytes"])[3])
                continue
            final = json.loads(message["text"])
            break
    assert final["type"] == "done" and final["chunks"] == len(chunks) >= 1, final
    streamed = np.concatenate(chunks, axis=1)
    want = melody_model.generate(
        [PROMPT], duration=1.0, seed=8, melody=samples, melody_sample_rate=RATE
    ).audio[0]
    assert streamed.shape == want.shape
    np.testing.assert_allclose(streamed, want, atol=1e-4)
    for bad, words in (
        (dict(request, continuation=True), "only as a melody"),
        (dict(request, input_audio="%%% not base64"), "base64"),
    ):
        with client.websocket_connect("/ws/stream/melody-2") as ws:
            ws.send_text(json.dumps({"type": "start_streaming", "request": bad}))
            error = ws.receive_json()
            assert error["type"] == "error" and error["code"] == 4400 and words in error["message"], error


# ---------------------------------------------------------------------------------- the web page


def test_web_page_sends_a_melody_in_headless_chromium(server, melody_model, tune):
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (the Python client)"
    )
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no Chromium: apt-get install -y chromium")
    url, client = server
    path, samples = tune
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
    ]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args, headless=True)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url + "/", wait_until="domcontentloaded")
            page.wait_for_selector("#ready-text:text('ready')", timeout=60_000)
            assert page.is_visible("#melody-file") and page.is_enabled("#melody-file")
            page.fill("#prompt", PROMPT)
            page.eval_on_selector(
                "#duration", "el => { el.value = 1; el.dispatchEvent(new Event('input')); }"
            )
            page.locator("details.advanced summary").click()
            page.fill("#seed", "9")
            page.select_option("#normalization", "none")
            page.set_input_files("#melody-file", str(path))
            page.click("#generate")
            page.wait_for_function(
                "() => window.musicgen.lastTask && window.musicgen.lastTask.status === 'completed'",
                timeout=300_000,
            )
            task = page.evaluate("() => window.musicgen.lastTask")
            assert task["request"]["melody"] is True and task["seed"] == 9, task
            audio, _ = read_wav(client.get(task["download_url"]).content)
            want = melody_model.generate(
                [PROMPT], duration=1.0, seed=9, melody=samples, melody_sample_rate=RATE
            )
            assert np.abs(audio - np.clip(want.audio[0], -1, 1)).max() <= 1.01 * PCM16_STEP
            page.click("#stream")  # the melody goes inline (base64) in the stream request
            page.wait_for_function("() => window.musicgen.stream.done", timeout=120_000)
            stream = page.evaluate("() => window.musicgen.stream")
            assert stream["samples"] == RATE and not stream["error"], stream
            page.set_input_files("#continuation-file", str(path))  # two uploads: refused in the page
            page.click("#generate")
            page.wait_for_selector("#message.error:has-text('not both')", timeout=10_000)
            assert not errors, errors
        finally:
            browser.close()
