"""The server as a server: ``serve.py`` in a subprocess (uvicorn on 127.0.0.1, a free port) with a tiny
random checkpoint and API keys from the environment. Task life cycle over real HTTP, the WebSocket
stream over a real socket, the web page in headless Chromium, and a restart on the same data
directory (finished tasks survive, the interrupted one is failed)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "live-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SAMPLE_RATE = 32000
PCM16_STEP = 1.0 / 32768


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiveServer:
    """``python serve.py`` on 127.0.0.1; started, waited for, stopped with SIGTERM (or killed).
    ``extra_args``: more flags (a replica's ``--database-url`` and ``--storage-url``)."""

    def __init__(self, model_dir: Path, data_dir: Path, log_path: Path, extra_args: tuple[str, ...] = ()):
        self.model_dir, self.data_dir, self.log_path = model_dir, data_dir, log_path
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240.0) -> None:
        self.port = free_port()
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            MUSICGEN_API_KEYS=API_KEY,
            MUSICGEN_RATE_LIMIT_PER_MINUTE="600",
            MUSICGEN_RATE_LIMIT_BURST="50",
        )
        command = [
            sys.executable,
            str(ROOT / "serve.py"),
            "--model",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--warmup-batch-sizes",
            "1",
            "--warmup-durations",
            "5",
            "--warmup-text-tokens",
            "16",
            "--max-batch-size",
            "2",
            "--max-duration",
            "10",
            "--default-duration",
            "2",
            "--log-level",
            "warning",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if request(self.url + "/ready")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server was not ready within {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.25)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (uvicorn's graceful shutdown); returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"the server ignored SIGTERM for {timeout:g} s:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as a replica whose machine fails."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def request(
    url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None, timeout: float = 60
):
    """(status, headers, body bytes) over real HTTP; error statuses are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    all_headers = dict(headers or {})
    if body is not None:
        all_headers["Content-Type"] = "application/json"
    call = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def finished(server: LiveServer, task_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = request(f"{server.url}/generate/{task_id}", headers=AUTH)
        assert status == 200, body
        task = json.loads(body)
        if task["status"] in ("completed", "failed"):
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tiny_jax_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    live = LiveServer(tiny_jax_dir, root / "data", root / "server.log")
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def completed(server):
    """Tasks in every format, finished, with their downloaded bytes (for the restart test)."""
    tasks = {}
    for format, duration in (("wav", 1.5), ("flac", 2.0), ("mp3", 1.0)):
        status, headers, body = request(
            f"{server.url}/generate",
            "POST",
            {
                "prompt": "live jazz",
                "duration": duration,
                "seed": 3,
                "format": format,
                "normalization_strategy": "none",
            },
            AUTH,
        )
        assert status == 202, body
        tasks[format] = (json.loads(body)["task_id"], duration)
    result = {}
    for format, (task_id, duration) in tasks.items():
        task = finished(server, task_id)
        assert task["status"] == "completed", task["error"]
        status, headers, content = request(f"{server.url}/download/{task_id}", headers=AUTH)
        assert status == 200
        result[format] = (task_id, duration, headers["content-type"], content)
    return result


def test_life_cycle_over_http_in_every_format(server, completed):
    status, _, body = request(server.url + "/health")
    assert status == 200 and json.loads(body)["model_loaded"] is True
    assert request(server.url + "/generate", "POST", {"prompt": "x"})[0] == 401  # keys from the environment
    media = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}
    for format, (_task_id, duration, content_type, content) in completed.items():
        assert content_type == media[format]
        audio, rate = soundfile.read(io.BytesIO(content), dtype="float32", always_2d=True)
        assert rate == SAMPLE_RATE and audio.shape[1] == 1
        tolerance = 2304 if format == "mp3" else 0
        assert abs(audio.shape[0] - duration * SAMPLE_RATE) <= tolerance, (format, audio.shape)
    metrics = request(server.url + "/metrics")[2].decode()
    assert 'musicgen_http_requests_total{method="POST",route="/generate",status="202"} 3.0' in metrics
    assert 'musicgen_http_requests_total{method="POST",route="/generate",status="401"} 1.0' in metrics


def test_stream_over_a_real_websocket(server, completed):
    from websockets.sync.client import connect

    from musicgen_jax.serving.streaming import decode_chunk

    chunks, arrivals = [], []
    with connect(f"ws://127.0.0.1:{server.port}/ws/stream/live-1?api_key={API_KEY}", open_timeout=30) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "start_streaming",
                    "request": {"prompt": "live jazz", "duration": 1.5, "seed": 3, "chunk_duration": 0.5},
                }
            )
        )
        started = json.loads(ws.recv(timeout=60))
        assert started["type"] == "started" and started["sample_rate"] == SAMPLE_RATE
        while True:
            message = ws.recv(timeout=60)
            if isinstance(message, bytes):
                chunks.append(decode_chunk(message))
                arrivals.append(time.time())
                continue
            final = json.loads(message)
            if final["type"] != "audio":
                break
    assert final["type"] == "done" and final["chunks"] == len(chunks) >= 2
    streamed = np.concatenate([chunk[3] for chunk in chunks], axis=1)
    # The same seed and settings as the finished WAV task (not normalised): equal up to 16-bit rounding.
    downloaded, _ = soundfile.read(io.BytesIO(completed["wav"][3]), dtype="float32", always_2d=True)
    assert streamed.shape == downloaded.T.shape
    assert np.abs(streamed - downloaded.T).max() <= 1.01 * PCM16_STEP


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


# Pixels of a canvas unlike its background (#fafbff), and how many colours it has (every 10th pixel).
CANVAS_PIXELS = """(id) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  const colours = new Set();
  for (let i = 0; i < data.length; i += 4) {
    const off = Math.abs(data[i] - 250) + Math.abs(data[i + 1] - 251) + Math.abs(data[i + 2] - 255);
    if (off > 30) painted += 1;
    if (i % 40 === 0) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  }
  const total = data.length / 4;
  return { width: canvas.width, height: canvas.height, painted, total, colours: colours.size };
}"""


def assert_drawn(page) -> None:
    """The waveform and spectrogram canvases are visible, sized and drawn (not blank, not one colour)."""
    assert page.is_visible("#waveform") and page.is_visible("#spectrogram")
    wave = page.evaluate(CANVAS_PIXELS, "waveform")
    spectrum = page.evaluate(CANVAS_PIXELS, "spectrogram")
    assert wave["width"] >= 200 and wave["height"] >= 50, wave
    # A waveform paints its envelope around the middle line and leaves background above and below.
    assert 0.05 * wave["total"] < wave["painted"] < wave["total"], wave
    assert spectrum["painted"] > 0.5 * spectrum["total"] and spectrum["colours"] > 20, spectrum


def test_web_page_generates_and_plays_in_headless_chromium(server, tmp_path):
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (the Python client)"
    )
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium: apt-get install -y chromium")
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
    ]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url + "/", wait_until="domcontentloaded")
            page.locator("details.advanced summary").click()
            page.fill("#api-key", API_KEY)
            page.dispatch_event("#api-key", "change")
            page.wait_for_selector("#ready-text:text('ready')", timeout=30_000)
            assert page.locator("#genre option").count() > 10  # the vocabulary arrived
            # A text-to-music model: no melody upload (hidden and disabled), the continuation one shown.
            assert page.is_hidden("#melody-file") and page.is_disabled("#melody-file")
            assert page.is_visible("#continuation-file")
            page.click("#generate")  # no prompt: refused with the server's reason, nothing generated
            page.wait_for_selector("#message.error:has-text('prompt is empty')", timeout=10_000)
            page.fill("#prompt", "gentle piano in the rain")
            page.eval_on_selector(
                "#duration", "el => { el.value = 2; el.dispatchEvent(new Event('input')); }"
            )
            page.fill("#seed", "5")
            page.locator(".chip[data-value='calm']").click()
            page.click("#generate")
            page.wait_for_function(
                "() => { const a = document.querySelector('#player'); "
                "return a.src.startsWith('blob:') && a.duration > 0; }",
                timeout=90_000,
            )
            duration = page.eval_on_selector("#player", "el => el.duration")
            assert duration == pytest.approx(2.0, abs=0.05)
            assert "done" in page.inner_text("#message")
            page.wait_for_selector("#tasks .pill.completed", timeout=10_000)
            first_src = page.eval_on_selector("#player", "el => el.src")
            # The clip's waveform and spectrogram, drawn in the page from the decoded file.
            page.wait_for_function("() => window.musicgenVisuals.drawn >= 1", timeout=30_000)
            drawn = page.evaluate("() => window.musicgenVisuals")
            assert drawn["error"] is None and drawn["clip"].endswith(".wav"), drawn
            assert drawn["sampleRate"] == SAMPLE_RATE and drawn["seconds"] == pytest.approx(2.0, abs=0.05)
            assert_drawn(page)

            page.click("#stream")  # the live stream: Web Audio plays the chunks, the player gets the result
            page.wait_for_function("() => window.musicgen.stream.done", timeout=90_000)
            stream = page.evaluate("() => window.musicgen.stream")
            assert stream["chunks"] >= 1 and stream["samples"] == 2 * SAMPLE_RATE and not stream["error"]
            page.wait_for_function(
                "() => { const a = document.querySelector('#player'); "
                f"return a.src !== '{first_src}' && a.duration > 0; }}",
                timeout=30_000,
            )
            page.wait_for_function("() => window.musicgenVisuals.drawn >= 2", timeout=30_000)
            assert page.evaluate("() => window.musicgenVisuals.clip").startswith("musicgen-stream-")
            assert_drawn(page)
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            shot = os.environ.get("MUSICGEN_PAGE_SCREENSHOT")
            if shot:
                shutil.copy(tmp_path / "page.png", shot)
            assert not errors, errors
        finally:
            browser.close()


def test_restart_keeps_finished_tasks_and_fails_the_interrupted_one(server, completed):
    # A task that is still generating when the server stops (10 s of audio: a new bucket to compile).
    status, _, body = request(
        f"{server.url}/generate", "POST", {"prompt": "long", "duration": 10, "seed": 1}, AUTH
    )
    interrupted = json.loads(body)["task_id"]
    deadline = time.monotonic() + 60
    while json.loads(request(f"{server.url}/generate/{interrupted}", headers=AUTH)[2])["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    began = time.monotonic()
    # uvicorn shuts down gracefully, then re-raises the signal: -SIGTERM is its normal exit.
    assert server.stop() in (0, -signal.SIGTERM)
    assert time.monotonic() - began < 30  # the running generation is cancelled, not waited for

    server.start()
    for format, (task_id, _duration, _content_type, content) in completed.items():
        status, _, again = request(f"{server.url}/download/{task_id}", headers=AUTH)
        assert status == 200 and again == content, format
    task = json.loads(request(f"{server.url}/generate/{interrupted}", headers=AUTH)[2])
    # "shut down": the graceful shutdown recorded it (a crash would be caught by recovery at start).
    assert task["status"] == "failed" and "interrupted" in task["error"] and "shut down" in task["error"]
    assert request(f"{server.url}/download/{interrupted}", headers=AUTH)[0] == 409
