"""Replicas as replicas: two ``serve.py`` processes (uvicorn on 127.0.0.1) sharing one PostgreSQL
database (a real server, ``musicgen_jax.testing.postgres``) and one audio directory. Any replica
answers for any task; a replica killed with SIGKILL mid-task loses nothing (the other reclaims
the task when its lease lapses and finishes it, once); SIGTERM hands back claimed work at once;
restarting every replica loses no task; identical seeded requests are answered from the stored
audio; downloads carry an ETag and answer 304."""

from __future__ import annotations

import json
import time

import pytest
from test_serving_live import AUTH, LiveServer, finished, request

LEASE_SECONDS = 3
TASK_TIMEOUT = 180.0  # seconds: a reclaimed task waits out a lease and a fresh compile
# Tasks that must still be running when a replica is stopped use a length bucket that no replica
# of this module has compiled (the replicas share a compile cache of the module's own, so the
# suite's other servers cannot have compiled it either): the holder is busy compiling for seconds.
KILL_SECONDS = 10  # the 10 s bucket
SIGTERM_SECONDS = 15  # the 15 s bucket


def _post(server: LiveServer, body: dict, headers: dict | None = None) -> tuple[str, dict]:
    status, response_headers, content = request(
        f"{server.url}/generate", "POST", body, AUTH | (headers or {})
    )
    assert status in (200, 202), content
    return json.loads(content)["task_id"], response_headers


class Cluster:
    """Two replicas and the database they share (read directly to see who holds a task)."""

    def __init__(self, replicas: list[LiveServer], database_url: str, storage):
        self.replicas, self.database_url, self.storage = replicas, database_url, storage

    def row(self, task_id: str) -> dict:
        import psycopg

        with psycopg.connect(self.database_url) as connection:
            cursor = connection.execute(
                "SELECT status, claimed_by, attempts, file_name FROM tasks WHERE task_id=%s", (task_id,)
            )
            status, claimed_by, attempts, file_name = cursor.fetchone()
        return {"status": status, "claimed_by": claimed_by, "attempts": attempts, "file_name": file_name}

    def holder(self, task_id: str) -> LiveServer | None:
        """The replica whose worker holds the task (worker ids are host:pid:random)."""
        claimed_by = self.row(task_id)["claimed_by"]
        for replica in self.replicas:
            if claimed_by and claimed_by.split(":")[-2] == str(replica.process.pid):
                return replica
        return None

    def wait_running(self, task_id: str, timeout: float = 60.0) -> LiveServer:
        deadline = time.monotonic() + timeout
        while True:
            row = self.row(task_id)
            holder = self.holder(task_id)
            if row["status"] == "running" and holder is not None:
                return holder
            assert row["status"] in ("queued", "running") and time.monotonic() < deadline, row
            time.sleep(0.05)

    def files_of(self, task_id: str) -> list[str]:
        return sorted(path.name for path in self.storage.iterdir() if path.name.startswith(task_id))

    def ensure_running(self) -> None:
        """Start any replica a failed test left stopped, so one failure does not cascade."""
        for replica in self.replicas:
            if replica.process is None or replica.process.poll() is not None:
                replica.start()


@pytest.fixture(scope="module")
def cluster(tiny_jax_dir, postgres_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    database_url = postgres_server.new_database()
    storage = root / "shared-audio"
    flags = (
        "--database-url", database_url,
        "--storage-url", str(storage),
        "--lease-seconds", str(LEASE_SECONDS),
        "--queue-poll-ms", "100",
        "--max-duration", str(SIGTERM_SECONDS),
        "--compilation-cache-dir", str(root / "xla-cache"),
    )  # fmt: skip
    replicas = [
        LiveServer(tiny_jax_dir, root / f"data-{name}", root / f"{name}.log", flags) for name in ("a", "b")
    ]
    try:
        for replica in replicas:
            replica.start()
        yield Cluster(replicas, database_url, storage)
    finally:
        for replica in replicas:
            replica.stop()


def test_a_task_posted_to_one_replica_is_polled_and_downloaded_from_the_other(cluster):
    a, b = cluster.replicas
    task_id, _ = _post(a, {"prompt": "shared jazz", "duration": 1.5, "seed": 4})
    task = finished(b, task_id, TASK_TIMEOUT)
    assert task["status"] == "completed", task["error"]
    status, headers, from_b = request(f"{b.url}/download/{task_id}", headers=AUTH)
    assert status == 200 and headers["content-type"] == "audio/wav" and len(from_b) > 1000
    status, _, from_a = request(f"{a.url}/download/{task_id}", headers=AUTH)
    assert status == 200 and from_a == from_b
    listed = json.loads(request(f"{b.url}/tasks", headers=AUTH)[2])["tasks"]
    assert task_id in [t["task_id"] for t in listed]
    metrics = request(f"{a.url}/metrics")[2].decode()
    assert "musicgen_queue_depth 0.0" in metrics  # the shared queue is empty


def test_downloads_carry_an_etag_and_answer_304_on_every_replica(cluster):
    a, b = cluster.replicas
    task_id, _ = _post(a, {"prompt": "etag", "duration": 1.0, "seed": 8})
    assert finished(a, task_id, TASK_TIMEOUT)["status"] == "completed"
    status, headers, content = request(f"{a.url}/download/{task_id}", headers=AUTH)
    etag = headers["etag"]
    assert status == 200 and etag.startswith('"') and len(etag) == 66  # a quoted SHA-256
    assert request(f"{b.url}/download/{task_id}", headers=AUTH)[1]["etag"] == etag
    for replica in (a, b):
        status, headers, body = request(
            f"{replica.url}/download/{task_id}", headers=AUTH | {"If-None-Match": etag}
        )
        assert (status, body, headers["etag"]) == (304, b"", etag)
    status, _, again = request(f"{b.url}/download/{task_id}", headers=AUTH | {"If-None-Match": '"other"'})
    assert status == 200 and again == content


def test_an_identical_seeded_request_is_answered_from_the_stored_audio(cluster):
    a, b = cluster.replicas
    body = {"prompt": "cached piano", "duration": 1.0, "seed": 11, "format": "flac"}
    first, headers = _post(a, body)
    assert "x-musicgen-cache" not in {k.lower() for k in headers}
    assert finished(a, first, TASK_TIMEOUT)["status"] == "completed"
    again, headers = _post(b, body)  # the other replica finds it in the shared store
    assert again == first and headers.get("x-musicgen-cache") == "hit"
    status, _, content = request(f"{b.url}/generate?wait=true", "POST", body, AUTH)
    assert status == 200 and json.loads(content)["task_id"] == first
    # Not identical (another seed, another format, or asked not to): generated anew.
    assert _post(a, body | {"seed": 12})[0] != first
    assert _post(a, body | {"format": "wav"})[0] != first
    assert _post(a, body, {"Cache-Control": "no-cache"})[0] != first
    assert "musicgen_cache_hits_total 2.0" in request(f"{b.url}/metrics")[2].decode()


def test_a_replica_killed_mid_task_loses_nothing_and_the_task_completes_once(cluster):
    cluster.ensure_running()
    task_id, _ = _post(cluster.replicas[0], {"prompt": "survive", "duration": KILL_SECONDS, "seed": 5})
    victim = cluster.wait_running(task_id)
    survivor = next(replica for replica in cluster.replicas if replica is not victim)
    victim.kill()
    killed_at = time.monotonic()
    task = finished(survivor, task_id, TASK_TIMEOUT)
    assert task["status"] == "completed", task["error"]
    assert time.monotonic() - killed_at >= LEASE_SECONDS - 1  # it waited for the lease to lapse
    row = cluster.row(task_id)
    assert row["attempts"] == 2 and cluster.holder(task_id) is survivor
    # Exactly one finished file for the task, the one its row names.
    assert [name for name in cluster.files_of(task_id) if not name.endswith(".tmp")] == [row["file_name"]]
    status, _, content = request(f"{survivor.url}/download/{task_id}", headers=AUTH)
    assert status == 200 and len(content) > KILL_SECONDS * 32000  # 16-bit mono
    victim.start()  # back for the next tests, on the same data


def test_sigterm_hands_claimed_work_back_at_once(cluster):
    cluster.ensure_running()
    body = {"prompt": "hand back", "duration": SIGTERM_SECONDS, "seed": 6}
    task_id, _ = _post(cluster.replicas[0], body)
    holder = cluster.wait_running(task_id)
    other = next(replica for replica in cluster.replicas if replica is not holder)
    leaver = str(holder.process.pid)
    try:
        holder.stop()  # SIGTERM while it compiles the new bucket
        row = cluster.row(task_id)
        # Not the leaver's any more: neither still held by it nor finished by it before SIGTERM.
        assert not row["claimed_by"] or row["claimed_by"].split(":")[-2] != leaver, row
        assert finished(other, task_id, TASK_TIMEOUT)["status"] == "completed"
        # Handed back, the claim did not count: one attempt (a lapsed lease would make it two).
        assert cluster.row(task_id)["attempts"] == 1
    finally:
        holder.start()


def test_restarting_every_replica_loses_no_task(cluster):
    cluster.ensure_running()
    a, b = cluster.replicas
    finished_id, _ = _post(a, {"prompt": "kept", "duration": 1.0, "seed": 21})
    assert finished(a, finished_id, TASK_TIMEOUT)["status"] == "completed"
    before = request(f"{a.url}/download/{finished_id}", headers=AUTH)[2]
    pending = [_post(b, {"prompt": f"pending {i}", "duration": 1.0, "seed": 30 + i})[0] for i in range(3)]
    for replica in (a, b):
        replica.stop()  # whatever was queued or running is handed back, not failed
    for replica in (a, b):
        replica.start()
    assert request(f"{b.url}/download/{finished_id}", headers=AUTH)[2] == before
    for task_id in pending:
        task = finished(a, task_id, TASK_TIMEOUT)
        assert task["status"] == "completed", task["error"]
