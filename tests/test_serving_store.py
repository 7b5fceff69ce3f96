"""The task store's contract, run against both implementations: SQLite (one process) and PostgreSQL
(replicas sharing one database, a real server started for the test session)."""

from __future__ import annotations

import threading
import time

import pytest

from musicgen_jax.serving.audio_storage import AudioStorage
from musicgen_jax.serving.store import MAX_ATTEMPTS, SqliteTaskStore, TaskStore


def _open(kind: str, tmp_path, request) -> TaskStore:
    storage = AudioStorage(tmp_path / "audio")
    if kind == "sqlite":
        return SqliteTaskStore(tmp_path, storage)
    from musicgen_jax.serving.postgres_store import PostgresTaskStore

    return PostgresTaskStore(request.getfixturevalue("postgres_url"), storage)


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request, tmp_path):
    """Opens stores on one database (several: as replicas would); closes them afterwards."""
    opened = []

    def make() -> TaskStore:
        store = _open(request.param, tmp_path, request)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def _job(name: str) -> dict:
    return {"prompt": name}


def test_tasks_are_claimed_oldest_first_and_batched_by_shape(open_store):
    store = open_store()
    for name, key in [("a", "k1"), ("b", "k2"), ("c", "k1"), ("d", "k1")]:
        store.create(name, {"prompt": name}, "wav", 1, None, job=_job(name), shape_key=key)
        time.sleep(0.002)
    store.create("no-job", {}, "wav", 1, None)  # not runnable by a device owner: never claimed
    assert store.queue_depth() == 4
    assert store.queue_position(store.get("d")) == 3
    first = store.claim("w1", limit=2, lease_seconds=30)
    assert [r.task_id for r in first] == ["a", "c"]
    assert all(r.claimed_by == "w1" and r.attempts == 1 and r.lease_expires_at for r in first)
    assert store.queue_depth() == 2 and store.queue_position(store.get("d")) == 1
    # Another owner cannot take what w1 holds; it gets the rest, of the key it asks for.
    assert [r.task_id for r in store.claim("w2", limit=8, lease_seconds=30, shape_key="k1")] == ["d"]
    assert [r.task_id for r in store.claim("w2", limit=8, lease_seconds=30)] == ["b"]
    assert store.claim("w3", limit=8, lease_seconds=30) == []
    assert store.queue_depth() == 0


def test_only_the_holder_finishes_a_task(open_store):
    store = open_store()
    store.create("t", {}, "wav", 1, None, job=_job("t"), shape_key="k")
    store.claim("w1", 1, lease_seconds=30)
    store.mark_running(["t"], time.time(), 1, worker="w1")
    assert store.get("t").status == "running"
    assert store.complete("t", worker="w2", file_name="w2.wav") is False  # not its task
    assert store.complete("t", worker="w1", file_name="t.wav", etag="abc") is True
    record = store.get("t")
    assert (record.status, record.file_name, record.etag, record.progress) == (
        "completed",
        "t.wav",
        "abc",
        1.0,
    )
    assert store.complete("t", worker="w1", file_name="again.wav") is False  # finished once only
    assert store.fail("t", "late", worker="w1") is False and store.get("t").status == "completed"


def test_a_lapsed_lease_is_reclaimed_and_the_first_holder_loses_the_task(open_store):
    store = open_store()
    store.create("t", {}, "wav", 1, None, job=_job("t"), shape_key="k")
    store.claim("dead", 1, lease_seconds=0.2)
    store.mark_running(["t"], time.time(), 1, worker="dead")
    assert store.claim("w2", 1, lease_seconds=30) == []  # the lease is live
    time.sleep(0.4)
    (reclaimed,) = store.claim("w2", 1, lease_seconds=30)
    assert (reclaimed.task_id, reclaimed.status, reclaimed.attempts) == ("t", "running", 2)
    assert store.renew("dead", 30) == set()  # the first holder learns it lost the task
    assert store.complete("t", worker="dead", file_name="dead.wav") is False
    assert store.complete("t", worker="w2", file_name="w2.wav") is True
    assert store.get("t").file_name == "w2.wav"


def test_renewal_keeps_a_lease_alive_and_records_progress(open_store):
    store = open_store()
    store.create("t", {}, "wav", 1, None, job=_job("t"), shape_key="k")
    store.claim("w1", 1, lease_seconds=0.5)
    for _ in range(4):
        time.sleep(0.2)
        assert store.renew("w1", 0.5, {"t": 0.25}) == {"t"}
    assert store.claim("w2", 1, lease_seconds=30) == []
    assert store.get("t").progress == 0.25


def test_release_hands_unfinished_tasks_back_and_a_poison_task_fails(open_store):
    store = open_store()
    store.create("t", {}, "wav", 1, None, job=_job("t"), shape_key="k")
    store.claim("w1", 1, lease_seconds=30)
    store.mark_running(["t"], time.time(), 1, worker="w1")
    assert store.release("w1") == 1
    record = store.get("t")
    assert (record.status, record.claimed_by, record.started_at, record.attempts) == ("queued", None, None, 0)
    # A task whose claimant dies every time is failed after MAX_ATTEMPTS claims.
    for attempt in range(MAX_ATTEMPTS):
        assert len(store.claim(f"w{attempt}", 1, lease_seconds=0.05)) == 1
        time.sleep(0.1)
    assert store.claim("last", 1, lease_seconds=30) == []
    record = store.get("t")
    assert record.status == "failed" and str(MAX_ATTEMPTS) in record.error


def test_concurrent_claims_never_take_one_task_twice(open_store):
    stores = [open_store() for _ in range(4)]  # four "replicas", each with its own connection
    for i in range(40):
        stores[0].create(f"t{i:02d}", {}, "wav", i, None, job=_job(str(i)), shape_key=f"k{i % 3}")
    taken: dict[str, list[str]] = {}

    def claim_all(index: int) -> None:
        mine = taken.setdefault(f"w{index}", [])
        while True:
            claimed = stores[index].claim(f"w{index}", 3, lease_seconds=30)
            if not claimed:
                return
            mine += [r.task_id for r in claimed]

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [task_id for ids in taken.values() for task_id in ids]
    assert sorted(every) == [f"t{i:02d}" for i in range(40)]  # each exactly once


def test_reads_cache_lookup_counts_and_owners(open_store):
    store = open_store()
    store.create("mine", {"prompt": "a"}, "wav", 5, "alice", job=_job("a"), shape_key="k", cache_key="c1")
    store.create("theirs", {"prompt": "a"}, "wav", 5, "bob", job=_job("a"), shape_key="k", cache_key="c1")
    store.create("anon", {"prompt": "a"}, "wav", 5, None, job=_job("a"), shape_key="k", cache_key="c1")
    assert store.find_completed("c1", "alice") is None  # not finished yet
    for task_id in ("mine", "theirs", "anon"):
        store.claim("w", 1, 30)
        store.complete(task_id, worker="w", file_name=f"{task_id}.wav")
    assert store.find_completed("c1", "alice").task_id == "mine"
    assert store.find_completed("c1", None).task_id == "anon"
    assert store.find_completed("other", "alice") is None
    assert [r.task_id for r in store.list(10, owner="alice")] == ["mine"]
    assert [r.task_id for r in store.list(10, any_owner=True)] == ["anon", "theirs", "mine"]
    assert [r.task_id for r in store.list(10, owner=None)] == ["anon"]
    assert store.counts() == {"queued": 0, "running": 0, "completed": 3, "failed": 0}
    record = store.get("mine")
    assert record.request == {"prompt": "a"} and record.job == {"prompt": "a"} and record.seed == 5


def test_cleanup_by_age_and_size_deletes_rows_and_files(open_store):
    store = open_store()
    for name in ("old", "big", "new"):
        store.create(name, {"prompt": name}, "wav", 1, None)
        (store.audio_dir / f"{name}.wav").write_bytes(b"x" * 1000)
        store.complete(name, file_name=f"{name}.wav", file_bytes=1000)
    now = time.time()
    store._execute("UPDATE tasks SET finished_at=? WHERE task_id='old'", (now - 7200,))
    store._execute("UPDATE tasks SET finished_at=? WHERE task_id='big'", (now - 60,))
    assert sorted(store.cleanup(max_age_seconds=3600, max_bytes=1500, now=now)) == ["big", "old"]
    assert store.get("old") is None and not (store.audio_dir / "old.wav").exists()
    assert store.get("new").status == "completed" and (store.audio_dir / "new.wav").exists()


def test_schema_is_created_once_and_reopened(open_store):
    first = open_store()
    first.create("t", {"prompt": "kept"}, "wav", 1, None)
    second = open_store()  # a second start (or replica) migrates nothing and sees the task
    assert second.get("t").request == {"prompt": "kept"}


def test_sqlite_version_1_database_is_migrated(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "tasks.sqlite3")
    old.executescript(
        "CREATE TABLE tasks (task_id TEXT PRIMARY KEY, owner TEXT, status TEXT NOT NULL, request TEXT NOT "
        "NULL, format TEXT NOT NULL, seed INTEGER, created_at REAL NOT NULL, started_at REAL, finished_at "
        "REAL, error TEXT, file_name TEXT, file_bytes INTEGER, sample_rate INTEGER, channels INTEGER, "
        "audio_seconds REAL, generate_seconds REAL, compile_seconds REAL, decode_seconds REAL, "
        "batch_size INTEGER);"
        "INSERT INTO tasks (task_id, status, request, format, created_at, file_name) "
        "VALUES ('v1', 'completed', '{}', 'wav', 1.0, 'v1.wav');"
        "PRAGMA user_version=1;"
    )
    old.close()
    store = SqliteTaskStore(tmp_path)
    try:
        record = store.get("v1")
        assert (record.status, record.file_name, record.attempts, record.job) == (
            "completed",
            "v1.wav",
            0,
            None,
        )
    finally:
        store.close()


def test_a_worker_that_lost_its_task_cancels_the_job(open_store):
    from musicgen_jax.generation.params import GenerationParams, GenerationRequest
    from musicgen_jax.serving.queue import Job
    from musicgen_jax.serving.task_queue import TaskQueue

    store = open_store()
    store.create("t", {}, "wav", 1, None, job=_job("t"), shape_key="[1]")
    make_job = lambda record: Job(
        GenerationRequest(record.job["prompt"], GenerationParams(seed=1)), key=(1,), task_id=record.task_id
    )
    stalled = TaskQueue(store, make_job, lease_seconds=0.2, worker_id="stalled")
    (job,) = stalled.claim(4, None)
    assert stalled.held == {"t": job}
    stalled.renew()  # still its own
    assert not job.cancelled.is_set()
    time.sleep(0.4)  # it stalled past its lease; another worker takes the task
    assert [j.task_id for j in TaskQueue(store, make_job, worker_id="other").claim(4, (1,))] == ["t"]
    stalled.renew()
    assert job.cancelled.is_set() and stalled.held == {}
    assert stalled.hand_back() == 0  # nothing of its own left to give back
    assert store.get("t").claimed_by == "other"
