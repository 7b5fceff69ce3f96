"""The codec reconstruction report's bookkeeping: tempo verdicts, stated bpm, the summary and the
table (the figures themselves are the metrics' own, checked against a trained codec run in
test_codec_export.py)."""

from __future__ import annotations

import json

import pytest

from musicgen_jax.eval.metrics.rhythm import tempo_verdict
from musicgen_jax.eval.reconstruction import (
    ClipReconstruction,
    render_markdown,
    stated_bpm,
    summarize,
)


@pytest.mark.parametrize(
    ("measured", "reference", "kind"),
    [
        (120.0, 120.0, "kept"),
        (126.0, 120.0, "kept"),  # +5% exactly
        (114.0, 120.0, "kept"),  # -5%
        (127.0, 120.0, "lost"),
        (240.0, 120.0, "octave"),
        (61.0, 120.0, "octave"),
        (180.0, 120.0, "lost"),  # 3/2 is not an octave
        (None, 120.0, "unmeasured"),
        (120.0, None, "unmeasured"),
    ],
)
def test_tempo_verdicts(measured, reference, kind):
    assert tempo_verdict(measured, reference) == kind


def test_stated_bpm_comes_from_the_sidecar(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"bpm": 97}))
    (tmp_path / "b.json").write_text(json.dumps({"bpm": "fast"}))
    (tmp_path / "c.json").write_text("not json")
    assert stated_bpm(tmp_path / "a.wav") == 97.0
    assert stated_bpm(tmp_path / "b.wav") is None
    assert stated_bpm(tmp_path / "c.wav") is None
    assert stated_bpm(tmp_path / "missing.wav") is None


def row(name, mel, si_snr, before, after, stated=None) -> ClipReconstruction:
    return ClipReconstruction(name, 10.0, mel, si_snr, before, after, stated)


def test_summary_and_table():
    rows = [
        row("x/one.wav", 2.0, 10.0, 120.0, 121.0, 120),
        row("x/two.wav", 4.0, None, 100.0, 200.0, 100),
        row("x/three.wav", 9.0, 4.0, None, 90.0, 90),
    ]
    summary = summarize(rows)
    assert summary["mel_distance_db_mean"] == pytest.approx(5.0)
    assert summary["mel_distance_db_median"] == pytest.approx(4.0)
    assert summary["si_snr_db_mean"] == pytest.approx(7.0)  # the undefined one left out
    assert summary["tempo_reconstructed_vs_original"] == {"kept": 1, "octave": 1, "lost": 0, "unmeasured": 1}
    assert summary["tempo_reconstructed_vs_stated"] == {"kept": 2, "octave": 1, "lost": 0, "unmeasured": 0}
    report = {
        "codec": {"bandwidth_kbps": 0.9, "num_codebooks": 4},
        "summary": summary,
        "clips": [r.__dict__ for r in rows],
    }
    table = render_markdown([report])
    assert "| 0.9 | 4 | 3 | 5.00 / 4.00 | 7.0 / 7.0 | 1 / 1 / 0 |" in table
    assert "| two | 4.00 | - | 100 | 100.0 | 200.0 |" in table
