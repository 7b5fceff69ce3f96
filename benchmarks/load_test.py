"""Load test of the server: a fixed number of clients for a fixed time, on the loopback interface only.

    python benchmarks/load_test.py --clients 8 --seconds 30 --durations 1,2,3
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --api-key KEY   # a server already running

Without ``--url`` it starts ``serve.py`` itself on 127.0.0.1 (a free port) with ``--model`` (default:
a tiny random checkpoint built in a temporary directory) and stops it at the end. Each client
loops: ``POST /generate`` (a random duration from ``--durations``, its own seeds), polls
``GET /generate/{id}`` until the task finishes, downloads the file. After ``--seconds`` no new task
starts; tasks in flight are waited for (at most ``--drain-seconds``), then it prints throughput
(tasks/s, seconds of audio per second), latency percentiles (submit to file downloaded), queue
wait, batch sizes, and whether every task completed. Exit status 0 only if they all did.
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
        self, index: int, url: str, headers: dict, deadline: float, durations: list[float], poll: float
    ):
        super().__init__(name=f"client-{index}", daemon=True)
        self.index, self.url, self.headers = index, url, headers
        self.deadline, self.durations, self.poll = deadline, durations, poll
        self.random = random.Random(index)
        self.records: list[dict] = []

    def run(self) -> None:
        number = 0
        while time.monotonic() < self.deadline:
            number += 1
            duration = self.random.choice(self.durations)
            began = time.monotonic()
            status, body = call(
                f"{self.url}/generate",
                "POST",
                {
                    "prompt": f"load test {self.index} {number}",
                    "duration": duration,
                    "seed": self.index * 100_000 + number,
                },
                self.headers,
            )
            record = {"duration": duration, "submit_status": status, "status": "rejected"}
            self.records.append(record)
            if status != 202:
                record["error"] = body.decode(errors="replace")[:200]
                time.sleep(0.5)  # rate limited or full: back off a little
                continue
            task_id = json.loads(body)["task_id"]
            while True:
                status, body = call(f"{self.url}/generate/{task_id}", headers=self.headers)
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
                status, audio = call(f"{self.url}/download/{task_id}", headers=self.headers)
                record["downloaded"] = status == 200 and len(audio) > 44
            record["latency"] = time.monotonic() - began


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def start_server(model: str, port: int, data_dir: Path, max_batch: int, log_path: Path) -> subprocess.Popen:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help=f"a running server (http://{LOOPBACK}:PORT); default: start one")
    parser.add_argument(
        "--model", help="model for the server this script starts (default: a tiny random checkpoint)"
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long clients keep submitting")
    parser.add_argument("--durations", default="1,2,3", help="seconds of audio per request, chosen at random")
    parser.add_argument("--max-batch-size", type=int, default=8, help="for the server this script starts")
    parser.add_argument("--api-key", default=os.environ.get("MUSICGEN_LOAD_TEST_KEY"))
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between status polls")
    parser.add_argument("--drain-seconds", type=float, default=120.0, help="longest wait for tasks in flight")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 3600:
        parser.error("--clients must be 1-256 and --seconds in (0, 3600]")
    durations = [float(d) for d in args.durations.split(",") if d.strip()]

    process = None
    temporary = tempfile.TemporaryDirectory(prefix="musicgen-load-")
    try:
        if args.url:
            parts = urllib.parse.urlsplit(args.url)
            if parts.scheme != "http" or parts.hostname != LOOPBACK:
                parser.error(f"--url must be http://{LOOPBACK}:PORT: this load test never leaves the machine")
            url = args.url.rstrip("/")
        else:
            model = args.model
            if model is None:
                from musicgen_jax.testing import save_tiny_checkpoint

                print("building a tiny random checkpoint ...", flush=True)
                model = str(save_tiny_checkpoint(Path(temporary.name) / "tiny"))
            port = free_port()
            url = f"http://{LOOPBACK}:{port}"
            log_path = Path(temporary.name) / "server.log"
            print(f"starting serve.py on {url} ...", flush=True)
            process = start_server(model, port, Path(temporary.name) / "data", args.max_batch_size, log_path)
        began = time.monotonic()
        wait_ready(url, process, args.ready_timeout)
        print(
            f"ready after {time.monotonic() - began:.1f} s; {args.clients} clients for {args.seconds:g} s",
            flush=True,
        )

        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        start = time.monotonic()
        clients = [
            Client(i, url, headers, start + args.seconds, durations, args.poll) for i in range(args.clients)
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
            clients=args.clients, seconds=args.seconds, durations=durations, unfinished_clients=stuck
        )
        if stuck:
            summary["all_completed"] = False
        print(
            f"\n{summary['tasks_completed']}/{summary['tasks_submitted']} tasks completed in {wall:.1f} s "
            f"({args.clients} clients, durations {args.durations} s)\n"
            f"throughput: {summary['throughput_tasks_per_s']:.2f} tasks/s, "
            f"{summary['throughput_audio_s_per_s']:.2f} s of audio per s\n"
            f"latency (submit to file): p50 {summary['latency_p50_s'] or 0:.2f} s, "
            f"p90 {summary['latency_p90_s'] or 0:.2f} s, "
            f"p99 {summary['latency_p99_s'] or 0:.2f} s, max {summary['latency_max_s'] or 0:.2f} s\n"
            f"queue wait p50 {summary['queue_wait_p50_s'] or 0:.2f} s; "
            f"batch size mean {summary['mean_batch_size'] or 0:.2f}, "
            f"max {summary['max_batch_size']}\n"
            f"every task finished: {'yes' if summary['all_completed'] else 'NO'}"
        )
        print(json.dumps(summary))
        return 0 if summary["all_completed"] else 1
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        temporary.cleanup()


if __name__ == "__main__":
    sys.exit(main())
