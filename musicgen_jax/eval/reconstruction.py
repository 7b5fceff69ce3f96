"""How well a codec gives clips back: encode, decode, and compare with the original.

Per clip: the log-mel distance and SI-SNR of the reconstruction against the original, and the tempo
the project's beat tracker reads in both (a codec that smears onsets moves the beat before it moves
the mel distance much). Where a clip's audiocraft sidecar JSON states a ``bpm`` it is reported too,
so the tracker's own error on the original is visible beside the codec's. The summary counts a
tempo as *kept* when the reconstruction's is within :data:`TEMPO_TOLERANCE` of the original's, and
an *octave error* when it is within the tolerance of half or double (reported apart, not kept).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from musicgen_jax.audio.io import resample
from musicgen_jax.eval.metrics.analysis import MetricUnavailable
from musicgen_jax.eval.metrics.noise import si_snr_db
from musicgen_jax.eval.metrics.reference import log_mel_distance_db
from musicgen_jax.eval.metrics.rhythm import TEMPO_TOLERANCE, TEMPO_VERDICTS, measured_bpm, tempo_verdict


@dataclasses.dataclass(frozen=True)
class Clip:
    """An original clip: float32 ``[channels, samples]`` at ``sample_rate``, its stated bpm if any."""

    name: str
    audio: np.ndarray
    sample_rate: int
    stated_bpm: float | None = None


@dataclasses.dataclass(frozen=True)
class ClipReconstruction:
    name: str
    seconds: float
    mel_distance_db: float
    si_snr_db: float | None  # None where undefined (a silent clip)
    tempo_original: float | None  # None where the tracker finds no beat
    tempo_reconstructed: float | None
    stated_bpm: float | None


def stated_bpm(audio_path: str | Path) -> float | None:
    """The ``bpm`` of the audiocraft sidecar ``<stem>.json`` beside ``audio_path``, if it has one."""
    sidecar = Path(audio_path).with_suffix(".json")
    try:
        value = json.loads(sidecar.read_text()).get("bpm")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and value > 0 else None


def reconstruct(codec, clip: Clip) -> tuple[np.ndarray, ClipReconstruction]:
    """``codec`` (either backend of :func:`musicgen_jax.codec.load_codec`) round trip of ``clip``:
    the reconstruction ``[channels, samples]`` at the codec's rate and its figures."""
    codes = codec.encode(clip.audio[None], clip.sample_rate)  # [1, K, frames]
    decoded = np.asarray(codec.decode(codes))[0]  # [channels, samples] at codec.sample_rate
    original = clip.audio
    if clip.sample_rate != codec.sample_rate:
        original = resample(original[None], clip.sample_rate, codec.sample_rate)[0]
    decoded = decoded[..., : original.shape[-1]]  # the codec pads to whole frames
    try:
        si_snr = si_snr_db(decoded, original)
    except MetricUnavailable:
        si_snr = None
    rate = codec.sample_rate
    return decoded, ClipReconstruction(
        name=clip.name,
        seconds=original.shape[-1] / rate,
        mel_distance_db=log_mel_distance_db(decoded, rate, original, rate),
        si_snr_db=si_snr,
        tempo_original=measured_bpm(original, rate),
        tempo_reconstructed=measured_bpm(decoded, rate),
        stated_bpm=clip.stated_bpm,
    )


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(present)) if present else None


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(present)) if present else None


def _tempo_counts(rows: Sequence[ClipReconstruction], measured: str, reference: str) -> dict[str, int]:
    counts = dict.fromkeys(TEMPO_VERDICTS, 0)
    for row in rows:
        counts[tempo_verdict(getattr(row, measured), getattr(row, reference))] += 1
    return counts


def summarize(rows: Sequence[ClipReconstruction]) -> dict[str, Any]:
    """Means and medians of the figures, and the tempo counts (see the module docstring)."""
    summary: dict[str, Any] = {
        "clips": len(rows),
        "seconds": float(sum(r.seconds for r in rows)),
        "mel_distance_db_mean": _mean([r.mel_distance_db for r in rows]),
        "mel_distance_db_median": _median([r.mel_distance_db for r in rows]),
        "si_snr_db_mean": _mean([r.si_snr_db for r in rows]),
        "si_snr_db_median": _median([r.si_snr_db for r in rows]),
        "tempo_reconstructed_vs_original": _tempo_counts(rows, "tempo_reconstructed", "tempo_original"),
    }
    if any(r.stated_bpm is not None for r in rows):
        summary["tempo_original_vs_stated"] = _tempo_counts(rows, "tempo_original", "stated_bpm")
        summary["tempo_reconstructed_vs_stated"] = _tempo_counts(rows, "tempo_reconstructed", "stated_bpm")
    return summary


def evaluate_reconstruction(codec, clips: Sequence[Clip]) -> dict[str, Any]:
    """The JSON report of ``codec`` on ``clips``: the codec's facts, per-clip rows and the summary."""
    if not clips:
        raise ValueError("no clips to reconstruct")
    rows = [reconstruct(codec, clip)[1] for clip in clips]
    return {
        "kind": "codec_reconstruction",
        "codec": {
            "sample_rate": codec.sample_rate,
            "frame_rate": codec.frame_rate,
            "num_codebooks": codec.num_codebooks,
            "codebook_size": codec.codebook_size,
            "bandwidth_kbps": codec.bandwidth,
        },
        "tempo_tolerance": TEMPO_TOLERANCE,
        "summary": summarize(rows),
        "clips": [dataclasses.asdict(row) for row in rows],
    }


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_markdown(reports: Sequence[dict[str, Any]]) -> str:
    """One summary table for several reports (e.g. one per bandwidth), then each one's clips."""
    header = (
        "| kbps | codebooks | clips | mel distance dB (mean / median) | SI-SNR dB (mean / median) "
        "| tempo kept / octave / lost (vs original) |"
    )
    lines = [header, "|---|---|---|---|---|---|"]
    for report in reports:
        s, c = report["summary"], report["codec"]
        t = s["tempo_reconstructed_vs_original"]
        lines.append(
            f"| {c['bandwidth_kbps']:g} | {c['num_codebooks']} | {s['clips']} "
            f"| {_cell(s['mel_distance_db_mean'], 2)} / {_cell(s['mel_distance_db_median'], 2)} "
            f"| {_cell(s['si_snr_db_mean'])} / {_cell(s['si_snr_db_median'])} "
            f"| {t['kept']} / {t['octave']} / {t['lost']} |"
        )
    for report in reports:
        lines += [
            "",
            f"**{report['codec']['bandwidth_kbps']:g} kbps**, per clip:",
            "",
            "| clip | mel dB | SI-SNR dB | bpm stated | bpm original | bpm reconstructed |",
            "|---|---|---|---|---|---|",
        ]
        for row in report["clips"]:
            name = Path(row["name"]).stem
            lines.append(
                f"| {name} | {_cell(row['mel_distance_db'], 2)} | {_cell(row['si_snr_db'])} "
                f"| {_cell(row['stated_bpm'], 0)} | {_cell(row['tempo_original'])} "
                f"| {_cell(row['tempo_reconstructed'])} |"
            )
    return "\n".join(lines) + "\n"
