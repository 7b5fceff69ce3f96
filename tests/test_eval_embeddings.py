"""The shipped audio/text embedders: what the weight-free log-mel embedder returns on known
clips, and the loaders of real models (random weights, saved locally) and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from audio_signals import RATE, tone

from musicgen_jax.eval import EmbedderError, LogMelStatsEmbedder, clap_score, load_embedder
from musicgen_jax.eval.embeddings import ClapEmbedder, PannsEmbedder, VGGishEmbedder


def test_logmel_embedder_rows_follow_windows_level_and_pitch():
    """What the weight-free embedder returns on known clips: one row per 1 s window (0.5 s hop),
    band means that shift by log(gain^2) with the level, the energy in the band of the tone's
    pitch, the mixdown of a stereo clip, and the same rows at another sample rate."""
    embedder = LogMelStatsEmbedder()
    quiet = embedder.embed(tone(440.0, 2.0, amplitude=0.1), RATE)
    assert quiet.shape == (3, 64) and quiet.dtype == np.float64
    assert embedder.embed(tone(440.0, 0.3), RATE).shape == (1, 64)  # shorter than a window: padded to one
    np.testing.assert_array_equal(embedder.embed(tone(440.0, 2.0, amplitude=0.1), RATE), quiet)
    noise = 0.05 * np.random.default_rng(0).standard_normal(2 * RATE)
    soft, loud = embedder.embed(noise, RATE), embedder.embed(4.0 * noise, RATE)
    means, stds = slice(0, 32), slice(32, 64)
    assert (soft[:, means] > np.log(1e-6) + 5).all()  # every band well above the log floor
    np.testing.assert_allclose(loud[:, means] - soft[:, means], 2 * np.log(4.0), atol=1e-3)
    np.testing.assert_allclose(loud[:, stds], soft[:, stds], atol=1e-3)
    low, high = (embedder.embed(tone(f, 2.0), RATE)[:, means].argmax(axis=1) for f in (220.0, 3000.0))
    assert (low < high).all()
    stereo = np.stack([tone(440.0, 2.0), tone(660.0, 2.0)])
    np.testing.assert_allclose(
        embedder.embed(stereo, RATE), embedder.embed(stereo.mean(axis=0), RATE), atol=1e-5
    )
    np.testing.assert_allclose(
        embedder.embed(tone(440.0, 2.0, rate=32000), 32000), embedder.embed(tone(440.0), RATE), atol=0.05
    )


# ----------------------------------------------------------------------------- real-model loaders


@pytest.fixture(scope="module")
def tiny_clap_dir(tmp_path_factory):
    """A random transformers CLAP small enough for CPU, saved with a word-level tokenizer."""
    torch = pytest.importorskip("torch")
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from musicgen_jax.testing import build_tokenizer

    torch.manual_seed(0)
    config = ClapConfig(
        text_config=dict(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            projection_dim=16,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=1,
        ),
        audio_config=dict(
            depths=[1, 1],
            num_attention_heads=[1, 2],
            patch_embeds_hidden_size=16,
            hidden_size=32,
            projection_dim=16,
        ),
        projection_dim=16,
    )
    directory = tmp_path_factory.mktemp("tiny-clap")
    ClapModel(config).save_pretrained(str(directory))
    ClapFeatureExtractor().save_pretrained(str(directory))
    build_tokenizer(128).save_pretrained(str(directory))
    return directory


def test_clap_embedder_from_a_local_transformers_directory(tiny_clap_dir):
    embedder = load_embedder("clap", tiny_clap_dir)
    assert type(embedder) is ClapEmbedder and embedder.name == "clap"
    audio = np.stack([tone(440.0, 12.0, rate=RATE), tone(660.0, 12.0, rate=RATE)])  # stereo, 12 s
    rows = embedder.embed(audio, RATE)
    assert rows.shape == (2, 16)  # 10 s window + 2 s tail, 16-d projection
    assert np.linalg.norm(rows, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    np.testing.assert_allclose(embedder.embed(audio, RATE), rows, atol=1e-6)  # deterministic
    texts = embedder.embed_text(["a low hum", "a high beep"])
    assert texts.shape == (2, 16)
    assert np.linalg.norm(texts, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    # Words of the tiny tokenizer's vocabulary ("low", "hum", "high", "beep" are all <unk>).
    calm, dark = embedder.embed_text(["calm piano", "dark techno drums"])
    assert float(calm @ dark) < 1 - 1e-3  # different texts, different directions
    np.testing.assert_allclose(embedder.embed_text(["dark techno drums"])[0], dark, atol=1e-5)
    other = embedder.embed(tone(3000.0, 12.0, rate=RATE), RATE)
    assert np.abs(other - rows).max() > 1e-3  # the audio reaches the embedding
    score = clap_score([(audio, RATE), (tone(880.0, 3.0), RATE)], ["a low hum", "a high beep"], embedder)
    assert all(-1.0 <= value <= 1.0 for value in score.per_item)
    assert score.per_item[0] == pytest.approx(
        float(np.dot(rows.mean(0) / np.linalg.norm(rows.mean(0)), texts[0])), abs=1e-5
    )


def test_clap_embedder_errors(tmp_path, tiny_clap_dir):
    with pytest.raises(EmbedderError, match="does not exist"):
        ClapEmbedder(tmp_path / "missing")
    (tmp_path / "630k-audioset-best.pt").write_bytes(b"\0")
    with pytest.raises(EmbedderError, match="convert"):
        ClapEmbedder(tmp_path / "630k-audioset-best.pt")
    with pytest.raises(EmbedderError, match="not a transformers CLAP directory"):
        ClapEmbedder(tmp_path)
    with pytest.raises(EmbedderError, match="pass the path"):
        ClapEmbedder(None)


@pytest.mark.slow
def test_vggish_embedder_from_a_local_state_dict(tmp_path):
    """A random VGGish in torchvggish's layout, saved (290 MB) and loaded through the path loader."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvggish")
    from torchvggish.torchvggish import VGG, make_layers

    torch.manual_seed(0)
    weights = tmp_path / "vggish.pth"
    torch.save(VGG(make_layers(), postprocess=False).state_dict(), weights)
    embedder = VGGishEmbedder(weights)
    rows = embedder.embed(tone(440.0, 2.0, rate=22050), 22050)
    assert rows.shape == (2, 128)  # two whole 0.96 s examples in 2 s
    assert embedder.embed(tone(440.0, 0.3), RATE).shape == (1, 128)  # short clips are padded to one
    assert np.min(rows) < 0.0  # the final ReLU is gone, as FAD wants the raw embedding layer
    del weights


def test_vggish_and_panns_loader_errors(tmp_path, monkeypatch):
    with pytest.raises(EmbedderError, match="pass the path"):
        VGGishEmbedder(None)
    with pytest.raises(EmbedderError, match="expected a .pth file"):
        VGGishEmbedder(tmp_path)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    try:
        import torchvggish  # noqa: F401

        with pytest.raises(EmbedderError, match="not a torchvggish VGGish state dict"):
            VGGishEmbedder(bad)
    except ImportError:
        with pytest.raises(EmbedderError, match="pip install torchvggish"):
            VGGishEmbedder(bad)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(EmbedderError, match="does not exist"):
        PannsEmbedder(tmp_path / "Cnn14.pth")
    with pytest.raises(EmbedderError, match="class_labels_indices.csv"):
        PannsEmbedder(bad)
    with pytest.raises(EmbedderError, match="unknown embedder"):
        load_embedder("openl3")
