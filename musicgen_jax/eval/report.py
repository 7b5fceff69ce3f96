"""Evaluation JSON (from ``python -m musicgen_jax.eval score|fad|clap``) -> a Markdown or HTML report.

The report is built as a list of blocks (headings, paragraphs, tables, images) and then rendered:
Markdown saves the plots as PNG files in a folder beside the report, HTML embeds them as data URIs
so the page is one self-contained file. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from musicgen_jax.audio.layout import to_mono
from musicgen_jax.eval.clips import AudioReadError, read_clip
from musicgen_jax.eval.metrics import METRIC_DOCS

SCORE_KIND = "musicgen_jax.eval.score"
FAD_KIND = "musicgen_jax.eval.fad"
CLAP_KIND = "musicgen_jax.eval.clap"
LEVEL_KEYS = ("peak_dbfs", "true_peak_dbtp", "rms_dbfs", "loudness_lufs")
UNIT_KEYS = (
    "voiced_fraction",
    "harmonic_fraction",
    "pulse_clarity",
    "spectral_flatness",
    "silence_fraction",
    "clipped_fraction",
    "chroma_similarity",
    "chroma_similarity_framewise",
)
SUMMARY_KEYS = (
    "duration_s",
    "loudness_lufs",
    "true_peak_dbtp",
    "tempo_bpm",
    "harmonic_percussive_ratio_db",
    "snr_db",
)


class ReportError(ValueError):
    """An evaluation file that is missing, not JSON, or not one this module knows."""


@dataclasses.dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclasses.dataclass(frozen=True)
class Paragraph:
    text: str


@dataclasses.dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class Image:
    name: str  # file name when saved beside a Markdown report
    png: bytes
    alt: str


Block = Heading | Paragraph | Table | Image


def format_value(value: Any) -> str:
    """A table cell: 4 significant digits, "n/a" for a missing value."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


# ----------------------------------------------------------------------------- plots


def _figure_png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: reports are built on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def plot_waveform_spectrogram(audio: np.ndarray, sample_rate: int, title: str) -> bytes:
    """Waveform (top) and log-frequency power spectrogram in dB (bottom), as PNG bytes."""
    import librosa
    import librosa.display

    plt = _pyplot()
    mono = to_mono(audio)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    times = np.arange(len(mono)) / sample_rate
    top.plot(times, mono, linewidth=0.5)
    top.set_ylabel("amplitude")
    top.set_ylim(-1.05, 1.05)
    top.set_title(title)
    n_fft = 2048 if len(mono) >= 2048 else max(64, 1 << (len(mono).bit_length() - 1))
    power = np.abs(librosa.stft(mono, n_fft=n_fft, hop_length=n_fft // 4)) ** 2
    spectrogram_db = librosa.power_to_db(power, ref=np.max(power) if np.any(power > 0) else 1.0, top_db=90)
    image = librosa.display.specshow(
        spectrogram_db, sr=sample_rate, hop_length=n_fft // 4, x_axis="time", y_axis="log", ax=bottom
    )
    figure.colorbar(image, ax=[top, bottom], format="%+2.0f dB", shrink=0.6)
    return _figure_png(figure)


def plot_metric_bars(metrics: dict[str, Any], keys: tuple[str, ...], title: str, unit: str) -> bytes | None:
    """Horizontal bars of the ``keys`` that have values; ``None`` when none has."""
    present = [(key, float(metrics[key])) for key in keys if isinstance(metrics.get(key), (int, float))]
    if not present:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(present) + 1.0))
    labels, values = zip(*present, strict=True)
    bars = axis.barh(labels, values, color="#4c72b0")
    axis.bar_label(bars, labels=[f"{value:.3g}" for value in values], padding=3, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel(unit)
    axis.set_title(title)
    if unit == "0..1":
        axis.set_xlim(min(0.0, *values), 1.1)
    axis.axvline(0.0, color="black", linewidth=0.5)
    return _figure_png(figure)


def plot_curves(curves: dict[str, Sequence[Sequence[float]]], title: str, xlabel: str, ylabel: str) -> bytes:
    """Lines through each curve's ``(x, y)`` points (a training run's losses by step), as PNG bytes."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for label, points in curves.items():
        if points:
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=label)
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    return _figure_png(figure)


# ----------------------------------------------------------------------------- blocks


def _resolve(path_text: str | None, base_dir: Path) -> Path | None:
    if not path_text:
        return None
    path = Path(path_text)
    return path if path.is_absolute() else base_dir / path


def _score_blocks(evaluation: dict, base_dir: Path, plots: bool) -> list[Block]:
    items = evaluation.get("items")
    if not isinstance(items, list) or not items:
        raise ReportError("a score evaluation needs a non-empty 'items' list")
    blocks: list[Block] = [Heading("Audio evaluation", 1)]
    if len(items) > 1:
        rows = tuple(
            (str(item.get("audio", f"item {index}")),)
            + tuple(format_value(item.get("metrics", {}).get(k)) for k in SUMMARY_KEYS)
            for index, item in enumerate(items)
        )
        blocks += [Heading("Summary"), Table(("audio",) + SUMMARY_KEYS, rows)]
    for index, item in enumerate(items):
        metrics, notes = item.get("metrics"), item.get("notes", {})
        if not isinstance(metrics, dict):
            raise ReportError(f"item {index} has no 'metrics' mapping")
        name = str(item.get("audio", f"item {index}"))
        blocks.append(Heading(name))
        if item.get("reference"):
            blocks.append(Paragraph(f"Reference: {item['reference']}"))
        if plots:
            audio_path = _resolve(item.get("audio"), base_dir)
            try:
                if audio_path is None:
                    raise AudioReadError("no audio path recorded")
                audio, rate = read_clip(audio_path)
                blocks.append(
                    Image(
                        f"item{index}_signal.png",
                        plot_waveform_spectrogram(audio, rate, name),
                        "waveform and spectrogram",
                    )
                )
            except AudioReadError as error:
                blocks.append(Paragraph(f"No waveform plot: {error}"))
            for suffix, keys, title, unit in (
                ("levels", LEVEL_KEYS, "Level and loudness", "dBFS / dBTP / LUFS"),
                ("scores", UNIT_KEYS, "Bounded scores", "0..1"),
            ):
                png = plot_metric_bars(metrics, keys, title, unit)
                if png is not None:
                    blocks.append(Image(f"item{index}_{suffix}.png", png, title))
        rows = tuple((key, format_value(value), METRIC_DOCS.get(key, "")) for key, value in metrics.items())
        blocks.append(Table(("metric", "value", "meaning"), rows))
        if notes:
            blocks.append(Table(("metric", "note"), tuple((key, str(text)) for key, text in notes.items())))
    return blocks


def _fad_blocks(evaluation: dict) -> list[Block]:
    result = evaluation.get("result")
    if not isinstance(result, dict) or "fad" not in result:
        raise ReportError("a FAD evaluation needs a 'result' mapping with 'fad'")
    rows = tuple((key, format_value(value)) for key, value in result.items())
    return [
        Heading("Fréchet Audio Distance", 1),
        Paragraph(
            f"Generated: {evaluation.get('generated', '?')}; "
            f"reference: {evaluation.get('reference', '?')}. Lower is closer."
        ),
        Table(("field", "value"), rows),
    ]


def _clap_blocks(evaluation: dict) -> list[Block]:
    items = evaluation.get("items")
    if not isinstance(items, list) or "clap_score" not in evaluation:
        raise ReportError("a CLAP evaluation needs 'items' and 'clap_score'")
    rows = tuple(
        (str(item.get("audio")), str(item.get("text")), format_value(item.get("score"))) for item in items
    )
    return [
        Heading("CLAP score", 1),
        Paragraph(
            "Mean cosine similarity of audio and text embeddings: "
            f"{format_value(evaluation['clap_score'])} (range -1..1)."
        ),
        Table(("audio", "text", "score"), rows),
    ]


def report_blocks(evaluation: dict, base_dir: Path, plots: bool = True) -> list[Block]:
    """The blocks of the report for one evaluation mapping (any of the three kinds)."""
    kind = evaluation.get("kind")
    if kind == SCORE_KIND:
        return _score_blocks(evaluation, base_dir, plots)
    if kind == FAD_KIND:
        return _fad_blocks(evaluation)
    if kind == CLAP_KIND:
        return _clap_blocks(evaluation)
    raise ReportError(
        f"unknown evaluation kind {kind!r}; expected one of {SCORE_KIND}, {FAD_KIND}, {CLAP_KIND}"
    )


# ----------------------------------------------------------------------------- rendering


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block], image_dir: Path, image_prefix: str) -> str:
    """Markdown text; images are written into ``image_dir`` and linked as ``image_prefix/name``."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(map(_markdown_cell, block.header)) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Image):
            image_dir.mkdir(parents=True, exist_ok=True)
            (image_dir / block.name).write_bytes(block.png)
            lines += [f"![{block.alt}]({image_prefix}/{block.name})", ""]
    return "\n".join(lines)


def render_html(blocks: list[Block], title: str = "musicgen-jax evaluation") -> str:
    """One self-contained HTML page (images as base64 data URIs)."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.png).decode("ascii")
            body.append(f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}">')
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%;display:block;margin:1em 0}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def read_evaluation(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"evaluation file not found: {path}")
    try:
        evaluation = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ReportError(f"{path} is not JSON: {error}") from None
    if not isinstance(evaluation, dict):
        raise ReportError(f"{path}: the top level must be a JSON object")
    return evaluation


def write_report(evaluation_path: str | Path, output: str | Path, plots: bool = True) -> Path:
    """Write the report for ``evaluation_path`` to ``output`` (``.md`` or ``.html`` by suffix)."""
    evaluation_path, output = Path(evaluation_path), Path(output)
    suffix = output.suffix.lower()
    if suffix not in (".md", ".markdown", ".html", ".htm"):
        raise ReportError(f"report output must end in .md or .html, got {output.name!r}")
    evaluation = read_evaluation(evaluation_path)
    blocks = report_blocks(evaluation, evaluation_path.parent, plots)
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".html", ".htm"):
        output.write_text(render_html(blocks))
    else:
        image_dir = output.parent / f"{output.stem}_files"
        output.write_text(render_markdown(blocks, image_dir, image_dir.name))
    return output
