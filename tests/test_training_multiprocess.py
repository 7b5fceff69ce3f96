"""Training as two processes (``jax.distributed`` on 127.0.0.1, gloo CPU collectives), each with 2
emulated CPU devices, against one process with 4: the same global batches give the same loss curve
under data-parallel, FSDP x tensor and tensor-parallel meshes, and a run killed in both processes
(SIGKILL, or SIGTERM: a preemption notice, saved and stopped at a step both agree on) and resumed
with ``--resume`` continues the uninterrupted curve exactly.

Every run is ``train.py`` in subprocesses (the device count and the distributed runtime are fixed
when JAX starts); the data is the memory source, whose global batch does not depend on the number
of processes (each process takes the rows its devices hold).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from musicgen_jax.training.logging import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "train.py"
STEPS = 24
MESHES = {
    "data": ("mesh.data=4", "mesh.fsdp=1", "mesh.tensor=1"),
    "fsdp_tensor": ("mesh.data=1", "mesh.fsdp=2", "mesh.tensor=2"),
    # Tensor parallel across both processes: each holds every row, so both read the whole batch.
    "tensor": ("mesh.data=1", "mesh.fsdp=1", "mesh.tensor=4"),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _overrides(output_dir: Path, tokenizer_dir: Path, cache_dir: Path, mesh: tuple[str, ...]) -> list[str]:
    return [
        f"output_dir={output_dir}",
        f"model.tokenizer={tokenizer_dir}",
        f"compilation_cache_dir={cache_dir}",
        "logging.progress=false",
        "logging.tensorboard=false",
        "logging.every_steps=1",
        f"training.steps={STEPS}",
        "training.ema_decay=null",
        "training.batch_size=8",
        "optimizer.warmup_steps=1",  # full-size updates from step 2: the curve depends on them
        "checkpoint.every_steps=4",
        "checkpoint.async_save=false",
        "data.memory.frames=12",
        "data.memory.max_text_len=8",
        *mesh,
    ]


def _env(devices: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }


def _commands(overrides: list[str], processes: int, resume: bool) -> list[list[str]]:
    """The ``train.py`` command line of each process."""
    base = [sys.executable, str(TRAIN), "--config", "tiny", *(["--resume"] if resume else []), *overrides]
    if processes == 1:
        return [base]
    address = f"127.0.0.1:{_free_port()}"
    return [
        [
            *base,
            "distributed.initialize=always",
            f"distributed.coordinator_address={address}",
            f"distributed.num_processes={processes}",
            f"distributed.process_id={index}",
            "distributed.cpu_collectives=gloo",
        ]
        for index in range(processes)
    ]


def _start(overrides: list[str], processes: int, devices: int, log_dir: Path, resume: bool = False):
    """``train.py`` as ``processes`` processes of ``devices`` CPU devices each, logging to files
    (a pipe nobody reads could fill and stall a run)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    children = []
    for index, command in enumerate(_commands(overrides, processes, resume)):
        log = (log_dir / f"process{index}{'-resume' if resume else ''}.log").open("w")
        children.append((subprocess.Popen(command, env=_env(devices), cwd=ROOT, stdout=log, stderr=log), log))
    return children


def _wait(children, timeout: float = 600) -> None:
    """All processes must succeed; any left running at the deadline are killed."""
    deadline = time.time() + timeout
    try:
        for child, _ in children:
            child.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        for child, log in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            log.close()
    for index, (child, log) in enumerate(children):
        assert child.returncode == 0, f"process {index}:\n{Path(log.name).read_text()[-4000:]}"


def _run(overrides: list[str], processes: int, devices: int, log_dir: Path, resume: bool = False) -> None:
    _wait(_start(overrides, processes, devices, log_dir, resume))


def _saved_steps(output_dir: Path) -> list[int]:
    """Committed checkpoints (orbax writes into a temporary name and renames when done)."""
    checkpoints = output_dir / "checkpoints"
    if not checkpoints.is_dir():
        return []
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())


def _stop_after_first_checkpoint(children, output_dir: Path, signal_number: int) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and all(child.poll() is None for child, _ in children):
        if _saved_steps(output_dir):
            break
        time.sleep(0.02)
    for child, _ in children:
        child.send_signal(signal_number)


def _curve(output_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(output_dir)]


def _check(tmp_path: Path, tiny_tokenizer_dir, mesh_name: str, interrupt: int | None) -> None:
    mesh = MESHES[mesh_name]
    cache = tmp_path / "cache"
    logs = tmp_path / "logs"
    single = _overrides(tmp_path / "single", tiny_tokenizer_dir, cache, mesh)
    _run(single, processes=1, devices=4, log_dir=logs / "single")
    reference = _curve(tmp_path / "single")
    assert [s for s, _ in reference] == list(range(1, STEPS + 1)) and reference[0][1] > 7.0

    multi = _overrides(tmp_path / "multi", tiny_tokenizer_dir, cache, mesh)
    _run(multi, processes=2, devices=2, log_dir=logs / "multi")
    curve = _curve(tmp_path / "multi")
    assert [s for s, _ in curve] == [s for s, _ in reference]
    np.testing.assert_allclose([v for _, v in curve], [v for _, v in reference], rtol=1e-5)
    # Both processes saved into each checkpoint, each with its own data state.
    last = _saved_steps(tmp_path / "multi")[-1]
    assert last == STEPS
    data_state = json.loads(
        (tmp_path / "multi" / "checkpoints" / str(last) / "data" / "metadata").read_text()
    )
    assert data_state["kind"] == "per_process"
    assert [s["value"] for s in data_state["value"]] == [{"next_batch": STEPS}] * 2
    if interrupt is None:
        return

    # Both processes stopped once a checkpoint is written, then started again with --resume.
    stopped = _overrides(tmp_path / "resumed", tiny_tokenizer_dir, cache, mesh)
    children = _start(stopped, processes=2, devices=2, log_dir=logs / "resumed")
    _stop_after_first_checkpoint(children, tmp_path / "resumed", interrupt)
    if interrupt == signal.SIGKILL:
        for child, log in children:
            child.wait()
            log.close()
    else:  # a preemption notice: every process saves the step they agree on and exits cleanly
        _wait(children)
    saved = _saved_steps(tmp_path / "resumed")
    assert saved and saved[-1] < STEPS, f"the run finished before it was stopped: {saved}"
    _run(stopped, processes=2, devices=2, log_dir=logs / "resumed", resume=True)
    assert _curve(tmp_path / "resumed") == curve  # exactly the uninterrupted two-process run


def test_two_processes_data_parallel_match_one_and_resume_after_a_kill(tmp_path, tiny_tokenizer_dir):
    _check(tmp_path, tiny_tokenizer_dir, "data", interrupt=signal.SIGKILL)


@pytest.mark.slow
def test_two_processes_save_and_stop_on_a_preemption_notice(tmp_path, tiny_tokenizer_dir):
    """SIGTERM (what Slurm and TPU maintenance send first) to both processes: jax.distributed's
    preemption notice; they agree on a step, save it, exit 0, and resume exactly."""
    _check(tmp_path, tiny_tokenizer_dir, "fsdp_tensor", interrupt=signal.SIGTERM)


@pytest.mark.slow
def test_two_processes_tensor_parallel_match_one(tmp_path, tiny_tokenizer_dir):
    _check(tmp_path, tiny_tokenizer_dir, "tensor", interrupt=None)


@pytest.mark.slow
def test_two_processes_on_the_pipeline_with_a_segment_schedule_resume_exactly(tmp_path, tiny_tokenizer_dir):
    """The grain pipeline split over two processes (each its own records and iterator state) with a
    growing segment: killed after a checkpoint and resumed, the curve and the lengths per step are
    the uninterrupted run's."""
    from test_training_pipeline import _write_shard

    shards = tmp_path / "shards"
    _write_shard(shards, count=24)
    pipeline = (
        "data.source=pipeline",
        (
            f"data.pipeline={{paths: ['{shards}'], max_text_len: 8, read_threads: 1, "
            "segment_schedule: [[0, 8], [6, 12], [12, 16]]}"
        ),
    )
    cache, logs = tmp_path / "cache", tmp_path / "logs"
    whole = [*_overrides(tmp_path / "whole", tiny_tokenizer_dir, cache, MESHES["data"]), *pipeline]
    _run(whole, processes=2, devices=2, log_dir=logs / "whole")
    records = read_metrics(tmp_path / "whole")
    expected = [8] * 6 + [12] * 6 + [16] * 12
    assert [(r["step"], r["segment_frames"]) for r in records] == list(zip(range(1, STEPS + 1), expected))
    data_state = json.loads(
        (tmp_path / "whole" / "checkpoints" / str(STEPS) / "data" / "metadata").read_text()
    )
    assert data_state["kind"] == "per_process" and len(data_state["value"]) == 2

    stopped = [*_overrides(tmp_path / "resumed", tiny_tokenizer_dir, cache, MESHES["data"]), *pipeline]
    children = _start(stopped, processes=2, devices=2, log_dir=logs / "resumed")
    _stop_after_first_checkpoint(children, tmp_path / "resumed", signal.SIGKILL)
    for child, log in children:
        child.wait()
        log.close()
    saved = _saved_steps(tmp_path / "resumed")
    assert saved and saved[-1] < STEPS, f"the run finished before it was stopped: {saved}"
    _run(stopped, processes=2, devices=2, log_dir=logs / "resumed", resume=True)
    resumed = read_metrics(tmp_path / "resumed")
    assert [(r["step"], r["segment_frames"], r["loss"]) for r in resumed] == [
        (r["step"], r["segment_frames"], r["loss"]) for r in records
    ]
