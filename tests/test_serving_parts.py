"""The server's parts on their own: the task store, the generation queue, the settings, the CLI."""

from __future__ import annotations

import time

import numpy as np
import pytest

from musicgen_jax.serving.queue import GenerationQueue, Job
from musicgen_jax.serving.settings import SettingsError, make_settings, parse_args
from musicgen_jax.serving.store import SqliteTaskStore


def test_store_recovers_interrupted_tasks_and_cleans_up_by_age_and_size(tmp_path):
    store = SqliteTaskStore(tmp_path)
    for name in ("old", "big", "new"):
        store.create(name, {"prompt": name}, "wav", 1, None)
        (store.audio_dir / f"{name}.wav").write_bytes(b"x" * 1000)
        store.complete(name, file_name=f"{name}.wav", file_bytes=1000)
    store.create("queued", {}, "wav", 1, None)
    store.create("running", {}, "wav", 1, None)
    store.mark_running(["running"], time.time(), 1)
    store.close()

    store = SqliteTaskStore(tmp_path)  # a restart
    assert store.recover() == 2
    assert store.get("queued").status == store.get("running").status == "failed"
    assert "interrupted" in store.get("running").error
    assert store.get("old").status == "completed"
    now = time.time()
    store._db.execute("UPDATE tasks SET finished_at=? WHERE task_id='old'", (now - 7200,))
    store._db.execute("UPDATE tasks SET finished_at=? WHERE task_id='big'", (now - 60,))
    # Age: "old" goes. Size: 2000 bytes of completed audio left over a 1500-byte limit: "big" (older) goes.
    removed = store.cleanup(max_age_seconds=3600, max_bytes=1500, now=now)
    assert removed[:2] == ["old", "big"] and "new" not in removed
    assert store.get("old") is None and not (store.audio_dir / "old.wav").exists()
    assert store.get("new").status == "completed" and (store.audio_dir / "new.wav").exists()


class _FakeEngine:
    """Stands in for the model's generation engine: fails any batch that holds a 'bad' prompt."""

    def __init__(self):
        from musicgen_jax.generation.shapes import ShapePlan
        from musicgen_jax.models.config import MusicGenConfig

        self.shapes = ShapePlan(MusicGenConfig.preset("tiny"))
        self.batches = []

    def generate(self, requests, progress=None, on_frames=None, **chunking):
        from musicgen_jax.generation.call import GenerationOutput

        self.batches.append([r.prompt for r in requests])
        if any(r.prompt == "bad" for r in requests):
            raise ValueError("bad prompt")
        return GenerationOutput(
            [np.zeros((4, 5), np.int32)] * len(requests), [r.params.seed for r in requests]
        )


def test_queue_batches_by_shape_and_one_bad_request_fails_alone():
    from musicgen_jax.generation.params import GenerationParams, GenerationRequest

    engine = _FakeEngine()
    queue = GenerationQueue(engine, max_batch=4, window=0.2)
    jobs = [
        Job(GenerationRequest(prompt, GenerationParams(seed=i)), key=key)
        for i, (prompt, key) in enumerate([("a", 1), ("bad", 1), ("c", 1), ("d", 2)])
    ]
    for job in jobs:
        queue.submit(job)
    queue.start()
    try:
        results = [job.future.exception(timeout=10) or job.future.result() for job in jobs]
    finally:
        queue.stop()
    assert isinstance(results[1], ValueError)
    assert results[0].batch_size == 1 and results[0].seed == 0 and results[3].seed == 3
    # One batch of key 1 padded to the bucket (4), the retries one by one, then key 2 alone.
    assert engine.batches[0] == ["a", "bad", "c", "a"]
    assert engine.batches[1:4] == [["a"], ["bad"], ["c"]] and engine.batches[4] == ["d"]


def test_queue_cancellations_say_why():
    from musicgen_jax.generation.params import GenerationParams, GenerationRequest
    from musicgen_jax.serving.queue import Cancelled, CancelReason

    engine = _FakeEngine()
    queue = GenerationQueue(engine, max_batch=4, window=0.0)
    abandoned = Job(GenerationRequest("a", GenerationParams(seed=1)), key=1)
    abandoned.cancelled.set()  # its client left before it ran
    queue.submit(abandoned)
    queue.start()
    try:
        error = abandoned.future.exception(timeout=10)
    finally:
        queue.stop()
    assert isinstance(error, Cancelled) and error.reason is CancelReason.REQUESTED
    assert engine.batches == []  # it never reached the device

    stopped = GenerationQueue(engine)  # never started: its job is still waiting when it stops
    waiting = Job(GenerationRequest("b", GenerationParams(seed=2)), key=1)
    stopped.submit(waiting)
    assert stopped.stop() == [waiting]
    error = waiting.future.exception(timeout=0)
    assert isinstance(error, Cancelled) and error.reason is CancelReason.SHUTDOWN


def test_warm_up_streams_the_pushes_a_default_stream_makes(tiny_jax_dir):
    """The first push warm-up compiles the stream decoder for is what the loop's first chunk really
    completes, and the later ones a default chunk_duration's worth of the loop's chunks."""
    from musicgen_jax import MusicGen
    from musicgen_jax.serving.queue import stream_loop_chunks
    from musicgen_jax.serving.schemas import StreamRequest
    from musicgen_jax.serving.service import stream_pushes

    model = MusicGen.from_pretrained(tiny_jax_dir, dtype="float32")
    first, chunk = stream_loop_chunks(model.engine.shapes)
    sizes = []
    model.engine.generate(
        model.make_requests(["jazz"], duration=2.0, seed=1),
        on_frames=lambda row, frames: sizes.append(frames.shape[1]),
        chunk_frames=chunk,
        first_chunk_frames=first,
    )
    default_chunk = round(StreamRequest.model_fields["chunk_duration"].default * model.frame_rate)
    assert default_chunk % chunk == 0 and set(sizes[1:-1]) == {chunk}  # later pushes gather whole chunks
    assert stream_pushes(model) == sorted({sizes[0], default_chunk}) == [11, 50]


def test_settings_from_environment_and_flags(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSICGEN_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("MUSICGEN_WARMUP_BATCH_SIZES", "1, 8")
    monkeypatch.setenv("MUSICGEN_API_KEYS", "a,b")
    settings = parse_args(
        ["--model", "some/model", "--port", "9001", "--cors-origins", "https://x.org,https://y.org"]
    )
    assert (settings.model, settings.port, settings.max_batch_size) == ("some/model", 9001, 16)
    assert settings.warmup_batch_sizes == [1, 8] and settings.cors_origins == [
        "https://x.org",
        "https://y.org",
    ]
    assert settings.load_api_keys() == ["a", "b"]
    assert parse_args(["--max-batch-size", "2"]).max_batch_size == 2  # the flag wins
    with pytest.raises(SettingsError, match="max_batch_size"):
        make_settings(max_batch_size=0)
    with pytest.raises(SettingsError, match="default_duration"):
        make_settings(max_duration=5, default_duration=10)
    with pytest.raises(SystemExit):
        parse_args(["--api-keys", "secret"])  # never a flag


def test_cli_fails_fast_with_one_line(tmp_path, capsys):
    from musicgen_jax.serving.cli import main

    assert main(["--max-batch-size", "0"]) == 2
    assert "max_batch_size" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing"), "--data-dir", str(tmp_path / "data")]) == 1
    error = capsys.readouterr().err.strip()
    assert (
        error.startswith("musicgen-jax-api: cannot load model")
        and "\n" not in error
        and "Traceback" not in error
    )


def test_replica_settings_and_the_default_data_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSICGEN_DATABASE_URL", "postgresql://musicgen@db.internal:5432/musicgen")
    monkeypatch.setenv("MUSICGEN_STORAGE_URL", "s3://bucket/audio")
    settings = parse_args(["--lease-seconds", "12", "--queue-poll-ms", "50"])
    assert settings.database_url == "postgresql://musicgen@db.internal:5432/musicgen"
    assert (settings.storage_url, settings.lease_seconds, settings.queue_poll_ms) == (
        "s3://bucket/audio",
        12,
        50,
    )
    assert parse_args(["--database-url", ""]).database_url is None  # empty: SQLite
    with pytest.raises(SettingsError, match="database_url"):
        make_settings(database_url="mysql://x@y/z")
    # Not the folder the server starts in: the platform's state directory.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert make_settings().data_dir == tmp_path / "state" / "musicgen-jax"


def test_cli_names_an_unreachable_database_in_one_line_without_its_password(tiny_jax_dir, tmp_path, capsys):
    from musicgen_jax.serving.cli import main

    url = "postgresql://musicgen:hunter2@127.0.0.1:1/musicgen"  # nothing listens on port 1
    args = ["--model", str(tiny_jax_dir), "--database-url", url, "--data-dir", str(tmp_path / "data")]
    assert main([*args, "--warmup-batch-sizes", ""]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("musicgen-jax-api: cannot reach the task database musicgen@127.0.0.1:1/musicgen")
    assert "hunter2" not in error and "\n" not in error


@pytest.mark.parametrize("location", ["directory", "memory://musicgen-test-audio"])
def test_audio_storage_in_a_directory_or_an_fsspec_url(location, tmp_path):
    from musicgen_jax.serving.audio_storage import AudioStorage

    storage = AudioStorage(tmp_path / "audio" if location == "directory" else location)
    assert storage.is_local == (location == "directory")
    with storage.writing("a.wav") as path:
        path.write_bytes(b"RIFF-whole")
        assert not storage.exists("a.wav") or storage.is_local  # remote: published on leaving only
    assert storage.exists("a.wav") and storage.read("a.wav") == b"RIFF-whole"
    with pytest.raises(RuntimeError), storage.writing("b.wav") as path:  # a writer that fails
        path.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert not storage.exists("b.wav") or storage.is_local  # (locally save_audio renames only when whole)
    storage.delete("a.wav")
    storage.delete("a.wav")  # twice is fine
    assert not storage.exists("a.wav")
    with pytest.raises(FileNotFoundError):
        storage.read("a.wav")
