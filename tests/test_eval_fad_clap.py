"""Fréchet Audio Distance and CLAP score: the arithmetic against closed forms, with embedders the
tests build (the shipped embedders and loaders: test_eval_embeddings.py)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import soundfile
from audio_signals import RATE, tone

from musicgen_jax.eval import (
    EmbeddingStatistics,
    LogMelStatsEmbedder,
    clap_score,
    embedding_statistics,
    fad_from_directories,
    frechet_audio_distance,
    frechet_distance,
)
from musicgen_jax.eval.cli import main as eval_main


def closed_form(mean1, cov1, mean2, cov2) -> float:
    """|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1^1/2 S2 S1^1/2)^1/2), with symmetric square roots from
    eigendecompositions: the same quantity by another route than the library's sqrtm(S1 S2)."""

    def sqrt_psd(matrix):
        values, vectors = np.linalg.eigh(matrix)
        return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T

    root1 = sqrt_psd(cov1)
    difference = np.asarray(mean1) - np.asarray(mean2)
    return float(
        difference @ difference
        + np.trace(cov1)
        + np.trace(cov2)
        - 2 * np.trace(sqrt_psd(root1 @ cov2 @ root1))
    )


def random_covariance(rng: np.random.Generator, dimension: int) -> np.ndarray:
    factor = rng.standard_normal((dimension, dimension))
    return factor @ factor.T / dimension + 0.1 * np.eye(dimension)


class ArrayEmbedder:
    """The 'clip' is already an ``[n, d]`` block of embeddings: FAD sees exactly the drawn samples."""

    name = "array"

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return np.asarray(audio, dtype=np.float64)


class BandEnergyEmbedder:
    """A joint embedder for tests: audio -> share of power below 500 Hz, 500-2000 Hz, above 2000 Hz;
    text -> one-hot of the words 'low', 'mid', 'high' (summed). A matching pair points the same way."""

    name = "bands"
    words = ("low", "mid", "high")

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        spectrum = np.abs(np.fft.rfft(np.asarray(audio, np.float64).reshape(-1))) ** 2
        frequencies = np.fft.rfftfreq(np.asarray(audio).size, 1.0 / sample_rate)
        edges = (0.0, 500.0, 2000.0, np.inf)
        bands = [
            spectrum[(frequencies >= lo) & (frequencies < hi)].sum() for lo, hi in itertools.pairwise(edges)
        ]
        return (np.array(bands) / np.sum(bands))[None, :]  # [1, 3]

    def embed_text(self, texts):
        return np.array([[float(word in text.lower().split()) for word in self.words] for text in texts])


# ----------------------------------------------------------------------------- Fréchet distance


def test_fad_through_the_logmel_embedder_separates_sets():
    """Identical sets: FAD ~0; a set of low tones against a set of high tones: clearly > 0, and
    symmetric; an embedder that maps everything alike cannot separate them (FAD ~0 again)."""
    low = [
        (tone(f) + 0.01 * np.random.default_rng(i).standard_normal(2 * RATE), RATE)
        for i, f in enumerate((200, 250, 300))
    ]
    high = [
        (tone(f) + 0.01 * np.random.default_rng(9 + i).standard_normal(2 * RATE), RATE)
        for i, f in enumerate((3000, 3500, 4000))
    ]
    embedder = LogMelStatsEmbedder()
    assert frechet_audio_distance(low, low, embedder) == pytest.approx(0.0, abs=1e-6)
    apart = frechet_audio_distance(low, high, embedder)
    assert apart > 100.0
    assert frechet_audio_distance(high, low, embedder) == pytest.approx(apart, rel=1e-6)

    class Constant:
        name = "constant"

        def embed(self, audio, sample_rate):
            return np.random.default_rng(0).standard_normal((4, 8))

    assert frechet_audio_distance(low, high, Constant()) == pytest.approx(0.0, abs=1e-6)


def test_an_audio_only_embedder_is_refused_for_clap_score():
    with pytest.raises(TypeError, match="does not embed text"):
        clap_score([(np.zeros((4, 3)), RATE)], ["low"], ArrayEmbedder())


def test_frechet_distance_diagonal_closed_form():
    # Commuting (diagonal) covariances: the trace term is sum((sqrt(a) - sqrt(b))^2).
    mean1, mean2 = np.zeros(3), np.array([1.0, 2.0, -1.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1 + 4 + 1 + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mean1, np.diag(var1), mean2, np.diag(var2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_general_closed_form():
    rng = np.random.default_rng(0)
    for dimension in (1, 4, 16):
        mean1, mean2 = rng.standard_normal(dimension), rng.standard_normal(dimension)
        cov1, cov2 = random_covariance(rng, dimension), random_covariance(rng, dimension)
        expected = closed_form(mean1, cov1, mean2, cov2)
        assert frechet_distance(mean1, cov1, mean2, cov2) == pytest.approx(expected, rel=1e-8)
        assert frechet_distance(mean1, cov1, mean1, cov1) == pytest.approx(0.0, abs=1e-8)


def test_fad_of_gaussian_sets_matches_the_closed_form():
    rng = np.random.default_rng(1)
    dimension, count = 4, 20000
    mean1, mean2 = np.zeros(dimension), np.array([0.5, -0.5, 1.0, 0.0])
    cov1, cov2 = random_covariance(rng, dimension), random_covariance(rng, dimension)
    first = rng.multivariate_normal(mean1, cov1, size=count)
    second = rng.multivariate_normal(mean2, cov2, size=count)
    # Split each set into "clips" to check that the rows of all clips are pooled.
    fad = frechet_audio_distance([(block, 0) for block in np.split(first, 4)], [(second, 0)], ArrayEmbedder())
    # Exactly the closed form of the sample statistics...
    expected_sample = closed_form(
        first.mean(0), np.cov(first, rowvar=False), second.mean(0), np.cov(second, rowvar=False)
    )
    assert fad == pytest.approx(expected_sample, rel=1e-8)
    # ...and, within sampling error, that of the true parameters.
    assert fad == pytest.approx(closed_form(mean1, cov1, mean2, cov2), rel=0.05)


def test_fad_of_a_set_with_itself_is_zero():
    clips = [
        (tone(f) + 0.01 * np.random.default_rng(i).standard_normal(2 * RATE), RATE)
        for i, f in enumerate((220, 330, 440, 550))
    ]
    embedder = LogMelStatsEmbedder()
    assert frechet_audio_distance(clips, clips, embedder) == pytest.approx(0.0, abs=1e-6)
    # And it grows with the difference between the sets: slightly detuned tones, then noise.
    detuned = [
        (tone(1.01 * f) + 0.01 * np.random.default_rng(i).standard_normal(2 * RATE), RATE)
        for i, f in enumerate((220, 330, 440, 550))
    ]
    noise = [(0.3 * np.random.default_rng(10 + i).standard_normal(2 * RATE), RATE) for i in range(4)]
    assert (
        0.0
        < frechet_audio_distance(clips, detuned, embedder)
        < frechet_audio_distance(clips, noise, embedder) / 10
    )


def test_singular_covariances_give_a_finite_distance():
    # Fewer rows than dimensions: rank-deficient covariances, the case the eps retry exists for.
    rng = np.random.default_rng(2)
    first, second = (
        embedding_statistics(rng.standard_normal((5, 12))),
        embedding_statistics(rng.standard_normal((6, 12))),
    )
    distance = frechet_distance(first.mean, first.covariance, second.mean, second.covariance)
    assert math.isfinite(distance) and distance > 0.0
    assert frechet_distance(first.mean, first.covariance, first.mean, first.covariance) == pytest.approx(
        0.0, abs=1e-6
    )


def test_non_covariance_input_is_refused():
    # A negative eigenvalue makes sqrt(S1 S2) genuinely complex: refused rather than silently truncated.
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="shapes differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="at least 2"):
        embedding_statistics(np.zeros((1, 4)))


def test_statistics_roundtrip_and_directories(tmp_path):
    generated, reference = tmp_path / "generated", tmp_path / "reference"
    generated.mkdir(), reference.mkdir()
    for index, frequency in enumerate((220.0, 330.0, 440.0)):
        soundfile.write(generated / f"g{index}.wav", tone(frequency), RATE)
        soundfile.write(reference / f"r{index}.flac", tone(frequency * 1.5), RATE)
    (reference / "notes.txt").write_text("not audio, skipped by suffix")
    embedder = LogMelStatsEmbedder()
    saved = tmp_path / "reference.npz"
    result = fad_from_directories(generated, reference, embedder, save_reference=saved)
    assert result.generated_files == 3 and result.reference_files == 3
    assert result.generated_embeddings == 3 * 3  # 2 s clips, 1 s windows, 0.5 s hop
    again = fad_from_directories(generated, saved, embedder)
    assert again.fad == pytest.approx(result.fad, rel=1e-12) and again.reference_files is None
    assert fad_from_directories(generated, generated, embedder).fad == pytest.approx(0.0, abs=1e-6)
    loaded = EmbeddingStatistics.load(saved)
    assert loaded.count == 9 and loaded.covariance.shape == (64, 64)

    assert (
        eval_main(
            [
                "fad",
                "--generated",
                str(generated),
                "--reference",
                str(saved),
                "--embedder",
                "logmel",
                "--output",
                str(tmp_path / "fad.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "fad.json").read_text())["result"]["fad"] == pytest.approx(
        result.fad, rel=1e-12
    )
    assert eval_main(["report", str(tmp_path / "fad.json"), "--output", str(tmp_path / "fad.md")]) == 0
    assert "| fad |" in (tmp_path / "fad.md").read_text()


def test_fad_command_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        eval_main(
            [
                "fad",
                "--generated",
                str(tmp_path / "missing"),
                "--reference",
                str(tmp_path),
                "--embedder",
                "logmel",
            ]
        )
        == 1
    )
    assert "not a directory" in capsys.readouterr().err
    assert (
        eval_main(
            [
                "fad",
                "--generated",
                str(tmp_path / "empty"),
                "--reference",
                str(tmp_path),
                "--embedder",
                "logmel",
            ]
        )
        == 1
    )
    assert "no audio files" in capsys.readouterr().err
    assert (
        eval_main(["fad", "--generated", str(tmp_path), "--reference", str(tmp_path), "--embedder", "vggish"])
        == 1
    )
    assert "VGGish weights" in capsys.readouterr().err


# ----------------------------------------------------------------------------- CLAP score


def test_clap_score_is_the_cosine_of_matching_embeddings():
    embedder = BandEnergyEmbedder()
    clips = [(tone(200.0), RATE), (tone(1000.0), RATE), (tone(5000.0), RATE)]
    matched = clap_score(clips, ["a low hum", "a mid whistle", "a high beep"], embedder)
    assert matched.per_item == pytest.approx((1.0, 1.0, 1.0), abs=1e-6)
    assert matched.mean == pytest.approx(1.0, abs=1e-6)
    mismatched = clap_score(clips, ["high", "low", "mid"], embedder)
    assert mismatched.mean == pytest.approx(0.0, abs=1e-6)
    # Two words: cos 45 degrees between [1, 0, 0] and [1, 0, 1].
    assert clap_score(clips[:1], ["low and high"], embedder).mean == pytest.approx(1 / math.sqrt(2), abs=1e-6)


def test_clap_score_averages_window_embeddings_before_the_cosine():
    class TwoWindows:
        name = "two"

        def embed(self, audio, sample_rate):
            return np.array([[3.0, 0.0], [0.0, 0.5]])  # unit-normalised then averaged: [0.5, 0.5]

        def embed_text(self, texts):
            return np.array([[1.0, 0.0]] * len(texts))

    assert clap_score([(np.zeros(10), RATE)], ["x"], TwoWindows()).mean == pytest.approx(1 / math.sqrt(2))


def test_clap_score_argument_errors():
    embedder = BandEnergyEmbedder()
    with pytest.raises(ValueError, match="pair up"):
        clap_score([(tone(200.0), RATE)], ["low", "high"], embedder)
    with pytest.raises(TypeError, match="single string"):
        clap_score([(tone(200.0), RATE)], "low", embedder)
    with pytest.raises(TypeError, match="does not embed text"):
        clap_score([(tone(200.0), RATE)], ["low"], LogMelStatsEmbedder())
    with pytest.raises(ValueError, match="zero vector"):
        clap_score([(tone(200.0), RATE)], ["no band word"], embedder)
