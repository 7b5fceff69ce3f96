"""Signal metrics on synthetic clips whose answers are known, ``evaluate_audio``'s contract, and the
``score``/``report`` command lines."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from musicgen_jax.audio import normalize_audio, resample
from musicgen_jax.eval import METRIC_DOCS, REFERENCE_KEYS, evaluate_audio, evaluate_audio_detailed, metrics
from musicgen_jax.eval.cli import main as eval_main
from musicgen_jax.eval.metrics import evaluate as evaluate_module

RATE = 22050
C_MAJOR = (261.63, 329.63, 392.00)


def seconds(duration: float, rate: int = RATE) -> np.ndarray:
    return np.arange(int(duration * rate)) / rate


def tone(frequency: float, duration: float = 2.0, amplitude: float = 0.5, rate: int = RATE) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * seconds(duration, rate))


def chord(frequencies=C_MAJOR, duration: float = 3.0) -> np.ndarray:
    return sum(tone(f, duration, 0.2) for f in frequencies)


def click_track(bpm: float, duration: float = 8.0, jitter_s: float = 0.0, seed: int = 0) -> np.ndarray:
    """Decaying noise bursts (10 ms) every beat: drum-like, no sustained pitch."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(duration * RATE))
    burst = rng.standard_normal(220) * np.exp(-np.arange(220) / 40.0)
    for beat in np.arange(0.0, duration - 0.05, 60.0 / bpm):
        start = max(0, int(round((beat + rng.uniform(-jitter_s, jitter_s)) * RATE)))
        y[start : start + len(burst)] += burst[: len(y) - start]
    return 0.5 * y


def with_noise(signal: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White noise at ``snr_db`` below the signal's mean power, scaled by its variance (not by the
    drawn samples' power), so the measured SNR differs from the target by sampling error only."""
    sigma = math.sqrt(np.mean(signal**2) / 10 ** (snr_db / 10))
    return signal + sigma * np.random.default_rng(seed).standard_normal(signal.shape)


# ----------------------------------------------------------------------------- rhythm


@pytest.mark.parametrize("bpm", [90, 120, 140])
def test_click_track_tempo_within_one_bpm(bpm):
    estimate = metrics.estimate_tempo(click_track(bpm), RATE)
    assert abs(estimate.bpm - bpm) < 1.0, estimate.bpm
    assert estimate.beat_interval_cv < 0.06
    assert estimate.pulse_clarity > 0.5


def test_jittered_clicks_are_less_stable_than_steady_ones():
    steady = metrics.estimate_tempo(click_track(120), RATE)
    jittered = metrics.estimate_tempo(click_track(120, jitter_s=0.04, seed=3), RATE)
    assert jittered.beat_interval_cv > 2 * steady.beat_interval_cv
    assert jittered.beat_interval_cv > 0.03


def test_tempo_needs_two_seconds():
    with pytest.raises(metrics.MetricUnavailable, match="at least 2 s"):
        metrics.estimate_tempo(click_track(120, duration=1.0), RATE)


# ----------------------------------------------------------------------------- pitch


def test_pure_tone_is_pitch_stable():
    stats = metrics.pitch_statistics(tone(440.0), RATE)
    assert stats.voiced_fraction > 0.9
    assert stats.median_hz == pytest.approx(440.0, rel=0.01)
    assert stats.std_cents < 5.0
    assert stats.jitter_cents < 5.0


def test_vibrato_and_noise_are_less_pitch_stable():
    t = seconds(2.0)
    cents = 50.0 * np.sin(2 * np.pi * 5.5 * t)  # +-50 cents at 5.5 Hz: std 35 cents
    vibrato = 0.5 * np.sin(2 * np.pi * np.cumsum(440.0 * 2 ** (cents / 1200)) / RATE)
    stats = metrics.pitch_statistics(vibrato, RATE)
    assert stats.voiced_fraction > 0.9
    assert 20.0 < stats.std_cents < 45.0
    assert stats.jitter_cents > 5.0
    noise = metrics.pitch_statistics(0.3 * np.random.default_rng(0).standard_normal(2 * RATE), RATE)
    # pYIN finds stray low "pitches" in white noise now and then, but they wander widely.
    assert noise.voiced_fraction < 0.5
    assert noise.std_cents is None or noise.std_cents > 50.0


# ----------------------------------------------------------------------------- noise and level


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_snr_against_reference(snr):
    clean = chord()
    assert metrics.snr_db(with_noise(clean, snr), clean) == pytest.approx(snr, abs=0.5)
    # A gain error is noise to plain SNR but not to the scale-invariant one.
    assert metrics.si_snr_db(0.5 * with_noise(clean, snr), clean) == pytest.approx(snr, abs=0.5)


@pytest.mark.parametrize("signal_name", ["tone", "chord", "bursts"])
@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_noise_floor_snr_without_reference(signal_name, snr):
    t = seconds(2.0)
    signals = {"tone": tone(440.0), "chord": chord(duration=2.0), "bursts": ((t % 0.5) < 0.15) * tone(440.0)}
    assert metrics.noise_floor_snr_db(with_noise(signals[signal_name], snr), RATE) == pytest.approx(
        snr, abs=1.0
    )


def test_noise_floor_snr_in_pink_noise_and_on_a_clean_mix():
    signal = chord(duration=2.0)
    white = np.fft.rfft(np.random.default_rng(4).standard_normal(len(signal)))
    pink = np.fft.irfft(white / np.sqrt(np.maximum(np.arange(len(white)), 1)), n=len(signal))  # 1/f power
    pink *= math.sqrt(np.mean(signal**2) / np.mean(pink**2) / 10.0)  # 10 dB SNR
    assert metrics.noise_floor_snr_db(signal + pink, RATE) == pytest.approx(10.0, abs=3.0)
    # A noiseless chord with clicks on the beat: partials beating in shared bins are not noise.
    clean_mix = 0.5 * chord((220.0, 277.18, 329.63), duration=3.0) + click_track(120, duration=3.0)
    assert metrics.noise_floor_snr_db(clean_mix, RATE) > 25.0


def test_noise_floor_snr_clamps_for_pure_noise_and_clean_bursts():
    noise = np.random.default_rng(0).standard_normal(2 * RATE)
    assert metrics.noise_floor_snr_db(noise, RATE) == metrics.NOISE_FLOOR_SNR_RANGE_DB[0]
    bursts = ((seconds(2.0) % 0.5) < 0.15) * tone(440.0)
    assert metrics.noise_floor_snr_db(bursts, RATE) == metrics.NOISE_FLOOR_SNR_RANGE_DB[1]


@pytest.mark.parametrize("k", [0.5, 0.1, 2.0])
def test_loudness_follows_gain(k):
    signal = chord()
    change = metrics.integrated_loudness_lufs(k * signal, RATE) - metrics.integrated_loudness_lufs(
        signal, RATE
    )
    assert change == pytest.approx(20 * math.log10(k), abs=0.01)
    assert metrics.peak_dbfs(k * signal) - metrics.peak_dbfs(signal) == pytest.approx(
        20 * math.log10(k), abs=1e-4
    )


def test_level_metrics_read_what_normalisation_targets():
    # One loudness and one peak measurement serve both: the metric reads the normaliser's target.
    loud = normalize_audio(chord(), RATE, "loudness", target_lufs=-14.0, peak_db=0.0)
    assert metrics.integrated_loudness_lufs(loud, RATE) == pytest.approx(-14.0, abs=0.01)
    peaked = normalize_audio(chord(), RATE, "peak", peak_db=-3.0)
    assert metrics.peak_dbfs(peaked) == pytest.approx(-3.0, abs=1e-4)


def test_loudness_of_full_scale_sine_is_minus_three_lufs():
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LUFS.
    assert metrics.integrated_loudness_lufs(tone(997.0, 3.0, 1.0, 48000), 48000) == pytest.approx(
        -3.01, abs=0.05
    )


def test_true_peak_finds_inter_sample_peak():
    # A sine at fs/4 sampled 45 degrees off its crest: every sample is at 0.707, the wave reaches 1.
    # (Faded in and out: an abrupt start is a real overshoot of its own, 0.1 dB here.)
    n = np.arange(4800)
    fade = np.minimum(1.0, np.minimum(n, n[::-1]) / 480.0)
    signal = fade * np.sin(2 * np.pi * n / 4 + np.pi / 4)
    assert metrics.peak_dbfs(signal) == pytest.approx(-3.01, abs=0.01)
    assert metrics.true_peak_dbtp(signal, 48000) == pytest.approx(0.0, abs=0.05)


# ----------------------------------------------------------------------------- timbre and chroma


def test_harmonic_percussive_ratio_separates_chord_from_clicks():
    harmonic, percussive = metrics.harmonic_percussive_energy(chord(), RATE)
    assert 10 * math.log10(harmonic / percussive) > 15.0
    harmonic, percussive = metrics.harmonic_percussive_energy(click_track(120, duration=3.0), RATE)
    assert harmonic / (harmonic + percussive) < 0.05
    result = evaluate_audio(click_track(120, duration=3.0), RATE)
    assert result["harmonic_percussive_ratio_db"] < -10.0
    assert result["harmonic_fraction"] < 0.05


def test_chroma_similarity_self_and_transposed():
    reference = chord()
    overall, framewise = metrics.chroma_similarity(reference, RATE, reference, RATE)
    assert overall == pytest.approx(1.0, abs=1e-6)
    assert framewise == pytest.approx(1.0, abs=1e-6)
    transposed = chord(tuple(f * 2 ** (1 / 12) for f in C_MAJOR))
    overall, framewise = metrics.chroma_similarity(transposed, RATE, reference, RATE)
    assert overall < 0.6 and framewise < 0.6


def test_spectral_centroid_tracks_frequency():
    low = metrics.spectral_statistics(tone(300.0), RATE)
    high = metrics.spectral_statistics(tone(3000.0), RATE)
    assert low["spectral_centroid_hz"] == pytest.approx(300.0, rel=0.1)
    assert high["spectral_centroid_hz"] == pytest.approx(3000.0, rel=0.1)
    noise = metrics.spectral_statistics(0.3 * np.random.default_rng(0).standard_normal(RATE), RATE)
    assert noise["spectral_flatness"] > 100 * low["spectral_flatness"]


# ----------------------------------------------------------------------------- evaluate_audio


def _assert_clean(result: dict) -> None:
    assert set(result) <= set(METRIC_DOCS)
    json.dumps(result, allow_nan=False)  # raises on NaN or infinity
    for value in result.values():
        assert value is None or (isinstance(value, (int, float)) and math.isfinite(value))


def test_evaluate_audio_stereo_with_resampled_reference():
    left, right = chord(), chord(tuple(f * 1.5 for f in C_MAJOR))
    audio = np.stack([left, right])  # [channels, samples]
    reference_rate = 16000
    reference = np.stack([resample(left, RATE, reference_rate), resample(right, RATE, reference_rate)])
    evaluation = evaluate_audio_detailed(audio, RATE, reference, reference_rate)
    result = evaluation.metrics
    _assert_clean(result)
    assert set(result) == set(METRIC_DOCS)
    assert result["channels"] == 2 and result["duration_s"] == pytest.approx(3.0)
    assert result["chroma_similarity"] == pytest.approx(1.0, abs=1e-3)
    assert result["log_mel_distance_db"] < 1.0
    assert result["snr_db"] > 20.0  # resampling down and back up loses only the top octave's sliver
    assert "resampled" in evaluation.notes["reference"]


def test_evaluate_audio_without_reference_has_no_reference_keys():
    result = evaluate_audio(tone(440.0, 1.0), RATE)
    _assert_clean(result)
    assert not set(REFERENCE_KEYS) & set(result)
    assert result["voiced_fraction"] > 0.9
    assert result["tempo_bpm"] is None  # a steady tone has no beat


@pytest.mark.parametrize(
    "audio",
    [np.zeros(3 * RATE), np.zeros((2, 100)), tone(440.0, 0.01), np.zeros(0), 1e-7 * tone(440.0, 1.0)],
    ids=["silence", "short-silence", "10ms-tone", "empty", "minus-143dB"],
)
def test_evaluate_audio_never_returns_nan(audio):
    evaluation = evaluate_audio_detailed(audio, RATE, reference=np.zeros(RATE))
    _assert_clean(evaluation.metrics)
    for key, value in evaluation.metrics.items():
        if value is None:
            assert evaluation.notes[key], key  # every missing value says why


def test_one_failing_metric_leaves_the_others(monkeypatch, caplog):
    def broken(audio, sample_rate):
        raise RuntimeError("library edge case")

    monkeypatch.setattr(evaluate_module, "spectral_statistics", broken)
    evaluation = evaluate_audio_detailed(tone(440.0, 1.0), RATE)
    assert evaluation.metrics["spectral_centroid_hz"] is None
    assert evaluation.notes["spectral_centroid_hz"] == "failed: RuntimeError: library edge case"
    assert evaluation.metrics["loudness_lufs"] is not None
    assert "metric spectral_centroid_hz" in caplog.text


def test_evaluate_audio_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        evaluate_audio(np.array([0.0, np.nan, 0.0]), RATE)
    with pytest.raises(ValueError, match="samples, channels"):
        evaluate_audio(np.zeros((RATE, 2)), RATE)
    with pytest.raises(ValueError, match="sample_rate"):
        evaluate_audio(np.zeros(RATE), 0)


# ----------------------------------------------------------------------------- command line


def test_score_and_report_command_lines(tmp_path):
    soundfile.write(tmp_path / "clip.wav", np.stack([chord(), chord()]).T, RATE)
    soundfile.write(tmp_path / "reference.wav", chord(), RATE)
    output = tmp_path / "eval.json"
    assert (
        eval_main(
            [
                "score",
                "--audio",
                str(tmp_path / "clip.wav"),
                "--reference",
                str(tmp_path / "reference.wav"),
                "--output",
                str(output),
            ]
        )
        == 0
    )
    evaluation = json.loads(output.read_text())
    item = evaluation["items"][0]
    assert evaluation["kind"] == "musicgen_jax.eval.score"
    assert item["metrics"]["channels"] == 2
    assert item["metrics"]["chroma_similarity"] == pytest.approx(1.0, abs=1e-3)

    assert eval_main(["report", str(output), "--output", str(tmp_path / "report.md")]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert (
        "| loudness_lufs |" in markdown
        and "![waveform and spectrogram](report_files/item0_signal.png)" in markdown
    )
    pngs = sorted(p.name for p in (tmp_path / "report_files").iterdir())
    assert pngs == ["item0_levels.png", "item0_scores.png", "item0_signal.png"]
    assert all((tmp_path / "report_files" / name).read_bytes()[:4] == b"\x89PNG" for name in pngs)

    assert eval_main(["report", str(output), "--output", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3 and "<td>loudness_lufs</td>" in page


def test_command_line_errors_exit_nonzero_without_traceback(tmp_path, capsys):
    (tmp_path / "not_audio.wav").write_text("hello")
    (tmp_path / "eval.json").write_text('{"kind": "something else"}')
    cases = [
        (["score", "--audio", str(tmp_path / "not_audio.wav")], "cannot read"),
        (["report", str(tmp_path / "missing.json"), "--output", str(tmp_path / "r.md")], "not found"),
        (
            ["report", str(tmp_path / "eval.json"), "--output", str(tmp_path / "r.md")],
            "unknown evaluation kind",
        ),
        (["report", str(tmp_path / "eval.json"), "--output", str(tmp_path / "r.pdf")], ".md or .html"),
    ]
    for argv, message in cases:
        assert eval_main(argv) == 1, argv
        assert message in capsys.readouterr().err
    # Once through the real entry point, to see the exit status and that no traceback escapes.
    run = subprocess.run(
        [sys.executable, "-m", "musicgen_jax.eval", "score", "--audio", str(tmp_path / "missing.wav")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "error: no audio file at" in run.stderr and "Traceback" not in run.stderr
