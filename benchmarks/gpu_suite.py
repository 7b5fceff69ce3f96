"""The speed issue's GPU measurements in one timed run: the device lease is short (15 minutes of
device time a session, machine start included), so one call should bring back everything.

    PYTHONUNBUFFERED=1 python benchmarks/gpu_suite.py --out "$OUT" --budget 540
    python benchmarks/gpu_suite.py --out /tmp/suite --quick          # the same path on a CPU, tiny shapes

Stages, in this order (``--stages`` picks some); one that needs more than the time left is skipped,
and the summary says so:

* ``machine``: device, versions, device-to-device copy bandwidth (the floor's denominator);
* ``micro``: ``layer_weights.py`` (does the compiler copy a layer's weights out of the stacked
  arrays, as XLA:CPU does; does unrolling the layer loop pay) and ``sampling_cost.py`` (the fixed
  cost of sampling a step);
* ``small``: ``generate_speed.py``, musicgen-small, batch 1, 8, 32, 30 s a row, musicgen-jax in
  bfloat16 beside transformers in float16 (the issue's reference table);
* ``stream``: ``streaming_latency.py``, musicgen-small: time to first audio;
* ``large``: ``generate_speed.py``, musicgen-large, batch 1, 10 s a row;
* ``knobs``: musicgen-jax alone, musicgen-small, batch 1 and 32, 10 s: layer unroll, the
  unrolled layer layout (one array a layer, as on CPUs), int8 weights and attention-span counts
  (``layer_unroll``, ``layer_layout``, ``quantize``, ``kv_splits``), to pick the defaults;
* ``profile``: one traced musicgen-small batch-1 run: device time a step by kernel;
* ``parity``: the float32 parity tests with JAX on this device (greedy tokens, logits);
* ``bf16``: ``bf16_agreement.py``: bfloat16 against float32 greedy agreement, musicgen-small.

Three files go to ``OUT`` (the device tool brings back at most eight): ``suite.log`` with every
command's whole output, ``results.json`` with the benchmarks' numbers, and ``summary.md`` with the
tables, which is also printed last (the tool returns the end of the output). The
``generate_speed.py`` runs share a persistent compilation cache, so a shape compiled once (in
``small``) is loaded, not compiled, by the stages after it; ``small`` reports cold compile times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Rough seconds each stage needs on an H100/H200 (checkpoint building included); a stage starts
# only if this much time is left. Unmeasured guesses until a GPU session replaces them.
NEEDS = {
    "machine": 20,
    "micro": 45,
    "small": 300,
    "stream": 60,
    "large": 200,
    "knobs": 150,
    "profile": 60,
    "parity": 120,
    "bf16": 90,
}
ORDER = list(NEEDS)


class Suite:
    def __init__(self, out: Path, budget: float, quick: bool):
        self.out = out
        self.deadline = time.monotonic() + budget
        self.quick = quick
        self.summary: list[str] = []
        self.results: dict[str, object] = {}
        self.work = Path(tempfile.mkdtemp(prefix="musicgen-suite-"))
        self.env = dict(
            os.environ,
            PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            PYTHONUNBUFFERED="1",
            MUSICGEN_JAX_CACHE_DIR=str(self.work / "xla"),
            HF_HUB_OFFLINE="1",
        )
        self.checkpoints: dict[str, Path] = {}

    # ------------------------------------------------------------------------------ plumbing

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, stage: str, command: list[str], timeout: float | None = None) -> str:
        """Run ``command``, append its output to ``OUT/suite.log``, return the output."""
        timeout = max(10.0, min(timeout or self.left(), self.left()))
        began = time.monotonic()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=timeout
            )
            output, code = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as expired:
            output = (
                (expired.stdout or b"").decode()
                if isinstance(expired.stdout, bytes)
                else (expired.stdout or "")
            )
            output += f"\n(stopped after {timeout:.0f} s: the suite's budget)"
            code = -1
        with open(self.out / "suite.log", "a") as log:
            log.write(
                f"## {stage}\n$ {' '.join(command)}\n{output}\n"
                f"(exit {code}, {time.monotonic() - began:.0f} s)\n\n"
            )
        if code != 0:
            self.summary.append(
                f"**{stage}: `{' '.join(command[1:3])}` exited {code}**; see suite.log:\n"
                f"```\n{output[-1500:]}\n```"
            )
        return output

    def checkpoint(self, shape: str) -> Path:
        """A random transformers MusicGen of ``shape``, built once (float16 on disk)."""
        if shape not in self.checkpoints:
            path = self.work / f"musicgen-{shape}"
            self.run(
                "build",
                [
                    sys.executable,
                    str(HERE / "generate_speed.py"),
                    "--shape",
                    shape,
                    "--build",
                    str(path),
                    "--save-dtype",
                    "float16",
                ],
            )
            self.checkpoints[shape] = path
        return self.checkpoints[shape]

    def speed(self, stage: str, shape: str, batches: list[int], seconds: float, *extra: str) -> None:
        if self.quick:
            shape, batches, seconds = "tiny", batches[:2], min(seconds, 2.0)
        checkpoint = self.checkpoint(shape)
        name = f"{stage}-{shape}-{sum(key.startswith(f'{stage}-') for key in self.results)}"
        table = self.work / f"{name}.json"
        output = self.run(
            stage,
            [
                sys.executable,
                str(HERE / "generate_speed.py"),
                "--shape",
                shape,
                "--checkpoint",
                str(checkpoint),
                "--batch",
                *map(str, batches),
                "--seconds",
                str(seconds),
                "--dtype",
                "bfloat16",
                "--reference-dtype",
                "float16",
                "--json",
                str(table),
                *extra,
            ],
        )
        self.summary.append(_from_table(output))
        if table.exists():
            self.results[name] = json.loads(table.read_text())

    # ------------------------------------------------------------------------------ stages

    def stage_machine(self) -> None:
        code = (
            "import jax, jax.numpy as jnp, time, torch, transformers, flax\n"
            "d = jax.devices()[0]\n"
            "x = jnp.ones((1024, 1024, 512), jnp.float32)  # 2 GiB\n"
            "f = jax.jit(lambda a: a + 1)\n"
            "f(x).block_until_ready()\n"
            "t = time.perf_counter(); [f(x).block_until_ready() for _ in range(10)]; "
            "s = (time.perf_counter() - t) / 10\n"
            "print(f'device: {d.device_kind} ({jax.default_backend()}); "
            "jax {jax.__version__}, flax {flax.__version__}, '\n"
            "      f'torch {torch.__version__}, transformers {transformers.__version__}')\n"
            "print(f'read+write bandwidth: {2 * x.nbytes / s / 1e9:.0f} GB/s (x + 1 over 2 GiB)')\n"
        )
        output = self.run("machine", [sys.executable, "-c", code])
        self.summary.append(
            "## Machine\n"
            + "\n".join(line for line in output.splitlines() if line.startswith(("device", "read")))
        )

    def stage_micro(self) -> None:
        output = self.run(
            "micro",
            [
                sys.executable,
                str(HERE / "layer_weights.py"),
                "--dtype",
                "bfloat16",
                "--rows",
                "2",
                "16",
                "64",
                *(["--layers", "4"] if self.quick else []),
            ],
        )
        self.summary.append(
            "## Stacked layer weights\n"
            + "\n".join(line for line in output.splitlines() if line.startswith("|") or "layers of" in line)
        )
        output = self.run(
            "micro", [sys.executable, str(HERE / "sampling_cost.py"), "--batch", "1", "8", "32"]
        )
        self.summary.append(
            "## Sampling\n"
            + "\n".join(line for line in output.splitlines() if line.startswith("|") or "steps in" in line)
        )

    def stage_small(self) -> None:
        self.summary.append("## musicgen-small, 30 s a row")
        self.speed("small", "small", [1, 8, 32], 30.0)

    def stage_large(self) -> None:
        self.summary.append("## musicgen-large, 10 s a row")
        self.speed("large", "large", [1], 10.0)

    def stage_knobs(self) -> None:
        self.summary.append("## Knobs (musicgen-jax alone, musicgen-small, 10 s)")
        knobs = [(1, 4, "scanned", None), (1, 4, "unrolled", None), (1, 4, "unrolled", "int8")]
        knobs += [(4, 4, "scanned", None), (24, 4, "scanned", None), (1, 8, "scanned", None)]
        for unroll, splits, layout, quantize in knobs:
            label = f"layer unroll {unroll}, kv splits {splits}, {layout}{', int8' if quantize else ''}"
            if self.left() < 40:
                self.summary.append(f"({label}: skipped, out of time)")
                continue
            extra = [
                "--skip-transformers",
                "--layer-unroll",
                str(2 if self.quick and unroll > 2 else unroll),
                "--kv-splits",
                str(splits),
                "--layer-layout",
                layout,
            ]
            if quantize:
                extra += ["--quantize", quantize]
            self.speed("knobs", "small", [1, 32], 10.0, *extra)

    def stage_profile(self) -> None:
        self.summary.append("## Profile (musicgen-small, batch 1, 10 s, bfloat16)")
        self.speed(
            "profile", "small", [1], 10.0, "--skip-transformers", "--profile", str(self.work / "trace")
        )

    def on_small(self, stage: str, script: str, *args: str) -> str:
        """Run a benchmark script on the musicgen-small checkpoint (tiny with ``--quick``)."""
        checkpoint = self.checkpoint("tiny" if self.quick else "small")
        return self.run(stage, [sys.executable, str(HERE / script), "--model", str(checkpoint), *args])

    def stage_stream(self) -> None:
        seconds = "2" if self.quick else "10"
        output = self.on_small("stream", "streaming_latency.py", "--runs", "3", "--seconds", seconds)
        first = [line for line in output.splitlines() if "first audio" in line]
        self.summary.append("## Time to first audio\n" + "\n".join(first))

    def stage_parity(self) -> None:
        output = self.run(
            "parity",
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/test_model_parity.py",
                "tests/test_generation.py",
                "-k",
                "transformers or unroll or float32",
            ],
        )
        last = [
            line
            for line in output.splitlines()
            if " passed" in line or " failed" in line or "error" in line.lower()
        ][-1:]
        self.summary.append("## Parity on this device (float32)\n" + "\n".join(last))

    def stage_bf16(self) -> None:
        output = self.on_small("bf16", "bf16_agreement.py", "--frames", "60" if self.quick else "100")
        table = [line for line in output.splitlines() if line.startswith("|") or " prompts x " in line]
        self.summary.append("## bfloat16 against float32\n" + "\n".join(table))


def _from_table(output: str) -> str:
    """The Markdown table, ratios and kernel tables generate_speed.py printed."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("musicgen-")), None)
    if start is None:
        return "(no table: see suite.log)"
    return "\n".join(lines[start:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder for logs, JSON and summary.md")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds this run may take in all")
    parser.add_argument("--stages", default=",".join(ORDER), help=f"comma-separated, from {', '.join(ORDER)}")
    parser.add_argument(
        "--quick", action="store_true", help="tiny shapes and short clips (a dry run on a CPU)"
    )
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(ORDER))
    if unknown:
        parser.error(f"unknown stages {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suite = Suite(out, args.budget, args.quick)
    for stage in stages:
        need = 10 if args.quick else NEEDS[stage]
        if suite.left() < need:
            suite.summary.append(f"## {stage}: skipped ({suite.left():.0f} s left, it needs about {need} s)")
            continue
        began = time.monotonic()
        getattr(suite, f"stage_{stage}")()
        print(f"[suite] {stage} took {time.monotonic() - began:.0f} s; {suite.left():.0f} s left", flush=True)
    (out / "results.json").write_text(json.dumps(suite.results, indent=2))
    summary = "\n\n".join(suite.summary)
    (out / "summary.md").write_text(summary + "\n")
    print("\n" + summary)


if __name__ == "__main__":
    main()
