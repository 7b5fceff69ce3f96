"""Load test of the server: a fixed number of clients for a fixed time, on the loopback interface only.

    python benchmarks/load_test.py --clients 8 --seconds 30 --durations 1,2,3
    python benchmarks/load_test.py --replicas 1 2 --clients 8 --seconds 30   # one replica beside two
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --api-key KEY   # a server already running

Without ``--url`` it starts ``serve.py`` itself on 127.0.0.1 (free ports) with ``--model`` (default:
a tiny random checkpoint built in a temporary directory) and stops it at the end. ``--replicas``
runs the test once per count: that many servers sharing one PostgreSQL database (a throwaway
server of its own, or ``--database-url``; a fresh database per run, so every count starts from an
empty queue) and one audio directory, as a deployment behind a load balancer. With a single count
of 1 and no ``--database-url`` the server keeps its default SQLite store.

Each client loops: ``POST /generate`` (a random duration from ``--durations``, its own seeds) to
one replica, polls ``GET /generate/{id}`` and downloads the file from the next one (round robin,
as a load balancer without sticky sessions would send them). After ``--seconds`` no new task
starts; tasks in flight are waited for (at most ``--drain-seconds``), then it prints throughput
(tasks/s, seconds of audio per second), latency percentiles (submit to file downloaded), queue
wait, batch sizes, and whether every task completed; with a shared database also how many tasks
ran more than once. Several counts end with one table and each count's throughput against the
first's. Exit status 0 only if every task of every run completed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


def call(
    url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None, timeout: float = 120
):
    data = None if body is None else json.dumps(body).encode()
    all_headers = dict(headers or {})
    if body is not None:
        all_headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Client(threading.Thread):
    """One user: submit, poll, download, repeat until the deadline."""

    def __init__(
        self, index: int, urls: list[str], headers: dict, deadline: float, durations: list[float], poll: float
    ):
        super().__init__(name=f"client-{index}", daemon=True)
        self.index, self.urls, self.headers = index, urls, headers
        self.deadline, self.durations, self.poll = deadline, durations, poll
        self.random = random.Random(index)
        self.records: list[dict] = []

    def run(self) -> None:
        number = 0
        while time.monotonic() < self.deadline:
            number += 1
            duration = self.random.choice(self.durations)
            turn = self.index + number
            submit_url = self.urls[turn % len(self.urls)]
            poll_url = self.urls[(turn + 1) % len(self.urls)]  # another replica, when there are several
            began = time.monotonic()
            status, body = call(
                f"{submit_url}/generate",
                "POST",
                {
                    "prompt": f"load test {self.index} {number}",
                    "duration": duration,
                    "seed": self.index * 100_000 + number,
                },
                self.headers,
            )
            record = {"duration": duration, "submit_status": status, "status": "rejected", "task_id": None}
            self.records.append(record)
            if status != 202:
                record["error"] = body.decode(errors="replace")[:200]
                time.sleep(0.5)  # rate limited or full: back off a little
                continue
            task_id = record["task_id"] = json.loads(body)["task_id"]
            while True:
                status, body = call(f"{poll_url}/generate/{task_id}", headers=self.headers)
                task = json.loads(body)
                if task["status"] in ("completed", "failed"):
                    break
                time.sleep(self.poll)
            record.update(
                status=task["status"],
                error=task["error"],
                batch_size=task["batch_size"],
                queued=task["queued_seconds"],
                rtf=task["real_time_factor"],
            )
            if task["status"] == "completed":
                status, audio = call(f"{poll_url}/download/{task_id}", headers=self.headers)
                record["downloaded"] = status == 200 and len(audio) > 44
            record["latency"] = time.monotonic() - began


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def start_server(
    model: str, port: int, data_dir: Path, max_batch: int, log_path: Path, extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    command = [
        sys.executable,
        str(ROOT / "serve.py"),
        "--model",
        model,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--max-batch-size",
        str(max_batch),
        "--warmup-batch-sizes",
        ",".join(str(2**i) for i in range(max_batch.bit_length()) if 2**i <= max_batch),
        "--warmup-durations",
        "5",
        "--warmup-text-tokens",
        "16",
        "--log-level",
        "warning",
        *extra,
    ]
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, HF_HUB_OFFLINE="1")
        )


def wait_ready(url: str, process: subprocess.Popen | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if call(f"{url}/ready", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server at {url} was not ready within {timeout:g} s")


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(records: list[dict], wall: float) -> dict:
    accepted = [r for r in records if r["submit_status"] == 202]
    completed = [r for r in accepted if r["status"] == "completed" and r.get("downloaded")]
    latencies = [r["latency"] for r in completed]
    return {
        "tasks_submitted": len(records),
        "tasks_accepted": len(accepted),
        "tasks_completed": len(completed),
        "tasks_failed": sum(r["status"] == "failed" for r in accepted),
        "tasks_rejected": len(records) - len(accepted),
        "all_completed": len(completed) == len(records) > 0,
        "wall_seconds": wall,
        "throughput_tasks_per_s": len(completed) / wall,
        "throughput_audio_s_per_s": sum(r["duration"] for r in completed) / wall,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p90_s": percentile(latencies, 90),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies) if latencies else None,
        "queue_wait_p50_s": percentile([r["queued"] for r in completed], 50),
        "mean_batch_size": float(np.mean([r["batch_size"] for r in completed])) if completed else None,
        "max_batch_size": max((r["batch_size"] for r in completed), default=None),
        "errors": sorted({r.get("error") for r in records if r.get("error")})[:5],
    }


def reran_tasks(database_url: str, task_ids: list[str]) -> int:
    """Tasks of this run that a replica started more than once (a lease lapsed under load)."""
    import psycopg

    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT count(*) FROM tasks WHERE task_id = ANY(%s) AND attempts > 1", (task_ids,)
        ).fetchone()
    return int(rows[0])


def run_clients(urls: list[str], headers: dict, args, durations: list[float]) -> dict:
    start = time.monotonic()
    clients = [
        Client(i, urls, headers, start + args.seconds, durations, args.poll) for i in range(args.clients)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(max(0.0, start + args.seconds + args.drain_seconds - time.monotonic()))
    wall = time.monotonic() - start
    stuck = [c.name for c in clients if c.is_alive()]
    records = [record for client in clients for record in client.records]
    summary = summarize(records, wall)
    summary.update(
        replicas=len(urls),
        clients=args.clients,
        seconds=args.seconds,
        durations=durations,
        unfinished_clients=stuck,
    )
    summary["task_ids"] = [r["task_id"] for r in records if r["task_id"]]
    if stuck:
        summary["all_completed"] = False
    return summary


def report(summary: dict, durations_text: str) -> None:
    print(
        f"\n{summary['tasks_completed']}/{summary['tasks_submitted']} tasks completed in "
        f"{summary['wall_seconds']:.1f} s ({summary['replicas']} replica(s), {summary['clients']} clients, "
        f"durations {durations_text} s)\n"
        f"throughput: {summary['throughput_tasks_per_s']:.2f} tasks/s, "
        f"{summary['throughput_audio_s_per_s']:.2f} s of audio per s\n"
        f"latency (submit to file): p50 {summary['latency_p50_s'] or 0:.2f} s, "
        f"p90 {summary['latency_p90_s'] or 0:.2f} s, "
        f"p99 {summary['latency_p99_s'] or 0:.2f} s, max {summary['latency_max_s'] or 0:.2f} s\n"
        f"queue wait p50 {summary['queue_wait_p50_s'] or 0:.2f} s; "
        f"batch size mean {summary['mean_batch_size'] or 0:.2f}, "
        f"max {summary['max_batch_size']}\n"
        f"every task finished: {'yes' if summary['all_completed'] else 'NO'}"
        + (f"; tasks run more than once: {summary['reran']}" if "reran" in summary else ""),
        flush=True,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "task_ids"}), flush=True)


def comparison(summaries: list[dict]) -> str:
    """One row per replica count, throughput against the first count's."""
    first = summaries[0]["throughput_audio_s_per_s"] or float("nan")
    lines = [
        "| replicas | tasks | tasks/s | audio s/s | vs first | p50 s | p90 s | all done | run twice |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summaries:
        lines.append(
            f"| {s['replicas']} | {s['tasks_completed']}/{s['tasks_submitted']} | "
            f"{s['throughput_tasks_per_s']:.2f} | {s['throughput_audio_s_per_s']:.2f} | "
            f"{s['throughput_audio_s_per_s'] / first:.2f}x | {s['latency_p50_s'] or 0:.2f} | "
            f"{s['latency_p90_s'] or 0:.2f} | {'yes' if s['all_completed'] else 'NO'} | "
            f"{s.get('reran', '-')} |"
        )
    return "\n".join(lines)


class Replicas:
    """``count`` servers started by this script; ``database_url`` shared when given."""

    def __init__(self, count: int, model: str, root: Path, args, database_url: str | None):
        self.processes: list[subprocess.Popen] = []
        self.urls: list[str] = []
        root.mkdir(parents=True, exist_ok=True)
        extra: tuple[str, ...] = ()
        if database_url is not None:
            extra = ("--database-url", database_url, "--storage-url", str(root / "shared-audio"))
        for index in range(count):
            port = free_port()
            self.urls.append(f"http://{LOOPBACK}:{port}")
            self.processes.append(
                start_server(
                    model,
                    port,
                    root / f"data-{index}",
                    args.max_batch_size,
                    root / f"server-{index}.log",
                    extra,
                )
            )
        print(f"started serve.py on {', '.join(self.urls)} ...", flush=True)

    def wait_ready(self, timeout: float) -> None:
        for url, process in zip(self.urls, self.processes):
            wait_ready(url, process, timeout)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", action="append", help=f"a running server (http://{LOOPBACK}:PORT; repeat for replicas)"
    )
    parser.add_argument(
        "--model", help="model for the servers this script starts (default: a tiny random checkpoint)"
    )
    parser.add_argument(
        "--replicas", type=int, nargs="+", default=[1], help="replica counts to run, one run each (e.g. 1 2)"
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL for the replicas (default: a throwaway server when replicas share one)",
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long clients keep submitting")
    parser.add_argument("--durations", default="1,2,3", help="seconds of audio per request, chosen at random")
    parser.add_argument("--max-batch-size", type=int, default=8, help="for the servers this script starts")
    parser.add_argument("--api-key", default=os.environ.get("MUSICGEN_LOAD_TEST_KEY"))
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between status polls")
    parser.add_argument("--drain-seconds", type=float, default=120.0, help="longest wait for tasks in flight")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 3600:
        parser.error("--clients must be 1-256 and --seconds in (0, 3600]")
    if not all(1 <= count <= 16 for count in args.replicas):
        parser.error("--replicas takes counts from 1 to 16")
    if args.url and (args.replicas != [1] or args.model or args.database_url):
        parser.error(
            "--url tests servers already running: --replicas, --model and --database-url are for ours"
        )
    for url in args.url or []:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname != LOOPBACK:
            parser.error(f"--url must be http://{LOOPBACK}:PORT: this load test never leaves the machine")
    durations = [float(d) for d in args.durations.split(",") if d.strip()]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    if args.url:
        urls = [url.rstrip("/") for url in args.url]
        began = time.monotonic()
        for url in urls:
            wait_ready(url, None, args.ready_timeout)
        print(f"ready after {time.monotonic() - began:.1f} s; {args.clients} clients for {args.seconds:g} s")
        summary = run_clients(urls, headers, args, durations)
        report(summary, args.durations)
        return 0 if summary["all_completed"] else 1

    shared = args.database_url is not None or args.replicas != [1]
    temporary = tempfile.TemporaryDirectory(prefix="musicgen-load-")
    postgres = None
    summaries = []
    try:
        model = args.model
        if model is None:
            from musicgen_jax.testing import save_tiny_checkpoint

            print("building a tiny random checkpoint ...", flush=True)
            model = str(save_tiny_checkpoint(Path(temporary.name) / "tiny"))
        if shared and args.database_url is None:
            from musicgen_jax.testing.postgres import PostgresServer, unavailable

            reason = unavailable()
            if reason:
                raise SystemExit(f"replicas need a PostgreSQL server: {reason}; or pass --database-url")
            postgres = PostgresServer()
            postgres.start()
        for run, count in enumerate(args.replicas):
            database_url = None
            if shared:
                database_url = postgres.new_database() if postgres else args.database_url
            root = Path(temporary.name) / f"run-{run}"
            replicas = Replicas(count, model, root, args, database_url)
            try:
                began = time.monotonic()
                replicas.wait_ready(args.ready_timeout)
                print(
                    f"{count} replica(s) ready after {time.monotonic() - began:.1f} s; "
                    f"{args.clients} clients for {args.seconds:g} s",
                    flush=True,
                )
                summary = run_clients(replicas.urls, headers, args, durations)
            finally:
                replicas.stop()
            if database_url is not None:
                summary["reran"] = reran_tasks(database_url, summary["task_ids"])
            report(summary, args.durations)
            summaries.append(summary)
        if len(summaries) > 1:
            print("\n" + comparison(summaries))
        return 0 if all(s["all_completed"] for s in summaries) else 1
    finally:
        if postgres is not None:
            postgres.stop()
        temporary.cleanup()


if __name__ == "__main__":
    sys.exit(main())
