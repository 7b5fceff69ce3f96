"""Reading a profile without TensorBoard: which device kernels a generation run spent its time in.

``jax.profiler.trace(folder, create_perfetto_trace=True)`` writes a Chrome-trace JSON beside its
XPlane file; :func:`kernel_table` sums the complete events of the device's streams by kernel name,
per decoder step, and :func:`programs_summary` counts what the compiled programs launch (fusions,
library calls, loops), which is what a step's launch overhead scales with.

    python benchmarks/profile_trace.py FOLDER --steps 503   # a trace already taken
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
from pathlib import Path


def load_trace(folder: str | Path) -> dict:
    """The newest ``*.trace.json.gz`` under ``folder``."""
    traces = sorted(Path(folder).rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"no *.trace.json.gz under {folder} (trace with create_perfetto_trace=True)")
    with gzip.open(traces[-1], "rt") as handle:
        return json.load(handle)


def device_kernels(trace: dict) -> dict[str, list[float]]:
    """Kernel name -> durations (µs) of the complete events on device (GPU/TPU) processes.

    A GPU's plane carries its streams' kernels and also summary lines ("XLA Modules", "XLA Ops")
    spanning the same time; where stream lines exist only they are counted, so nothing counts twice.
    """
    events = trace.get("traceEvents", [])
    processes = {
        e["pid"]: e.get("args", {}).get("name", "")
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    threads = {
        (e["pid"], e.get("tid")): e.get("args", {}).get("name", "")
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    device_pids = {pid for pid, name in processes.items() if "/device:" in name}
    streams = {key for key, name in threads.items() if key[0] in device_pids and "stream" in name.lower()}
    kernels: dict[str, list[float]] = collections.defaultdict(list)
    for event in events:
        if event.get("ph") != "X" or event.get("pid") not in device_pids:
            continue
        if streams and (event["pid"], event.get("tid")) not in streams:
            continue
        kernels[event["name"]].append(float(event.get("dur", 0.0)))
    return kernels


def kernel_table(folder: str | Path, steps: int, top: int = 15) -> str:
    """A Markdown table of the ``top`` kernels by device time, per decoder step."""
    kernels = device_kernels(load_trace(folder))
    if not kernels:
        return "(no device kernels in the trace: a CPU run records host events only)"
    total = sum(sum(d) for d in kernels.values())
    launches = sum(len(d) for d in kernels.values())
    lines = [
        (
            f"device busy {total / steps:.1f} µs a step in {launches / steps:.1f} kernels a step "
            f"(mean {total / max(launches, 1):.2f} µs a kernel); top {top}:"
        ),
        "| kernel | per step | µs a step | share |",
        "|---|---|---|---|",
    ]
    ranked = sorted(kernels.items(), key=lambda item: -sum(item[1]))
    for name, durations in ranked[:top]:
        spent = sum(durations)
        lines.append(
            f"| `{name[:70]}` | {len(durations) / steps:.1f} | {spent / steps:.1f} | {spent / total:.1%} |"
        )
    return "\n".join(lines)


def hlo_counts(text: str) -> dict[str, int]:
    """Launch-shaped instructions in an optimised HLO module's text."""
    counts = collections.Counter()
    for line in text.splitlines():
        for op in ("fusion", "custom-call", "while", "conditional", "copy"):
            if f" {op}(" in line and "=" in line:
                counts[op] += 1
    return dict(counts)


def programs_summary(programs) -> str:
    """One line per compiled generation program (a ``ProgramCache``): its kind and HLO counts."""
    lines = []
    for key, compiled in zip(programs.shape_keys(), programs.compiled()):
        counts = hlo_counts(compiled.as_text())
        detail = ", ".join(f"{count} {op}" for op, count in sorted(counts.items()))
        lines.append(f"- {key[0]} {key[1:]}: {detail}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder")
    parser.add_argument("--steps", type=int, required=True, help="decoder steps the traced run took")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(kernel_table(args.folder, args.steps, args.top))


if __name__ == "__main__":
    main()
