"""The prompt-adherence report (:func:`musicgen_jax.eval.adherence.adherence_report`) as one HTML page:
the conditions side by side, the probes' own accuracy on real renders, and per condition its clips,
with spectrograms of the first few when their audio is given. Built from report.py's blocks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from musicgen_jax.eval.adherence import ADHERENCE_KIND, GeneratedClip
from musicgen_jax.eval.report import (
    Block,
    Heading,
    Image,
    Paragraph,
    ReportError,
    Table,
    format_value,
    plot_waveform_spectrogram,
    render_html,
)

# (label, path into a condition's entry) of the side-by-side table's rows.
_SUMMARY_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("clips", ("summary", "clips")),
    ("tempo hit rate (±5%)", ("summary", "tempo", "hit_rate")),
    ("tempo octave errors (rate)", ("summary", "tempo", "octave_rate")),
    ("instruments detected", ("summary", "instruments", "detection_rate")),
    ("... by the probe on real renders", ("summary", "instruments", "real_detection_rate")),
    ("... ratio", ("summary", "instruments", "ratio")),
    ("... meets the target", ("summary", "instruments", "meets_target")),
    ("instrument false positives", ("summary", "instruments", "false_positive_rate")),
    ("... by the probe on real renders", ("summary", "instruments", "real_false_positive_rate")),
    ("genre accuracy", ("summary", "genre", "accuracy")),
    ("... by the probe on real renders", ("summary", "genre", "real_accuracy")),
    ("... ratio", ("summary", "genre", "ratio")),
    ("... meets the target", ("summary", "genre", "meets_target")),
    ("mood-class accuracy", ("summary", "mood", "accuracy")),
    ("... by the probe on real renders", ("summary", "mood", "real_accuracy")),
    ("... ratio", ("summary", "mood", "ratio")),
    ("Fréchet distance to real renders", ("frechet_distance_to_real",)),
    ("... paired: (clip, its prompt's render)", ("paired_frechet_distance",)),
)


def _get(entry: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        entry = entry.get(key) if isinstance(entry, Mapping) else None  # older reports lack some
    return entry


def _words(values: Sequence[str] | None) -> str:
    return ", ".join(values) if values else "-"


def _tempo_cell(row: Mapping[str, Any]) -> str:
    return f"{format_value(row['requested_tempo'])} / {format_value(row['measured_tempo'])} ({row['tempo']})"


def _probe_blocks(accuracy: Mapping[str, Any]) -> list[Block]:
    instruments, genre, mood = accuracy["instruments"], accuracy["genre"], accuracy["mood"]
    rows = tuple(
        (word, format_value(f["accuracy"]), format_value(f["f1"]), format_value(f["detection_rate"]))
        + (format_value(f["false_positive_rate"]), str(f["present"]))
        for word, f in instruments["per_instrument"].items()
    )
    return [
        Heading("The probes on held-out real renders"),
        Paragraph(
            f"{accuracy['clips']} held-out renders. Instruments: accuracy "
            f"{format_value(instruments['accuracy'])}, detection rate "
            f"{format_value(instruments['detection_rate'])}, false-positive rate "
            f"{format_value(instruments['false_positive_rate'])}. Genre accuracy "
            f"{format_value(genre['accuracy'])}; mood-class accuracy {format_value(mood['accuracy'])} "
            f"(mode {format_value(mood['mode_accuracy'])})."
        ),
        Table(("instrument", "accuracy", "F1", "detection rate", "false positives", "present in"), rows),
    ]


def _condition_blocks(
    name: str, entry: Mapping[str, Any], clips: Sequence[GeneratedClip] | None, spectrograms: int
) -> list[Block]:
    rows = tuple(
        (
            row["name"],
            _tempo_cell(row),
            f"{_words(row['requested_instruments'])} / {_words(row['detected_instruments'])}",
            f"{row['requested_genre'] or '-'} / {row['predicted_genre']}",
            f"{row['requested_mood'] or '-'} / {row['predicted_mood']}",
        )
        for row in entry["clips"]
    )
    blocks: list[Block] = [
        Heading(f"Condition: {name}"),
        Table(("clip", "bpm asked / measured", "instruments asked / heard", "genre", "mood class"), rows),
    ]
    for index, clip in enumerate((clips or [])[:spectrograms]):
        title = f"{name}: {clip.name}" + (f" ({clip.text})" if clip.text else "")
        png = plot_waveform_spectrogram(clip.audio, clip.sample_rate, title)
        blocks.append(Image(f"{name}_{index}.png", png, title))
    return blocks


def adherence_blocks(
    report: Mapping[str, Any],
    conditions: Mapping[str, Sequence[GeneratedClip]] | None = None,
    spectrograms: int = 2,
) -> list[Block]:
    """The report's blocks; ``conditions`` (the clips the report was made from) adds spectrograms
    of the first ``spectrograms`` clips of each condition."""
    if report.get("kind") != ADHERENCE_KIND:
        raise ReportError(f"not a prompt-adherence report (kind {report.get('kind')!r})")
    names = list(report["conditions"])
    table = tuple(
        (label,) + tuple(format_value(_get(report["conditions"][name], path)) for name in names)
        for label, path in _SUMMARY_ROWS
    )
    blocks: list[Block] = [
        Heading("Prompt adherence", 1),
        Paragraph(
            f"Tempo: a hit within ±{report['tempo_tolerance']:.0%} of the requested bpm; half or double "
            "time is an octave error, not a hit. Instruments, genre and mood class are what the attribute "
            "probes hear, beside what they hear in real renders for the same requests; the ratio must "
            f"reach {report['target_ratio']:.0%}. Fréchet distances are in the probes' embedding, to "
            f"{report['real_clips']} real renders; between the two halves of those renders it is "
            f"{format_value(report['real_halves_frechet_distance'])} (the floor at that size)."
        ),
        Table(("figure",) + tuple(names), table),
    ]
    blocks += _probe_blocks(report["probe_accuracy"])
    for name in names:
        clips = conditions.get(name) if conditions else None
        blocks += _condition_blocks(name, report["conditions"][name], clips, spectrograms)
    return blocks


def write_adherence_html(
    report: Mapping[str, Any],
    path: str | Path,
    conditions: Mapping[str, Sequence[GeneratedClip]] | None = None,
    spectrograms: int = 2,
) -> Path:
    """Write the report as one self-contained HTML page (see :func:`adherence_blocks`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(adherence_blocks(report, conditions, spectrograms), "Prompt adherence"))
    return path
