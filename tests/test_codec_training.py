"""The codec trainer: its numerical pieces against torch, the EMA k-means codebooks, weight norm,
and whole runs (exact resume, the discriminator, bad configs). Tolerances are float32 roundings."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from musicgen_jax.config_io import ConfigError
from musicgen_jax.data.synthetic import write_dataset
from musicgen_jax.training.codec import balancer as balancer_lib
from musicgen_jax.training.codec import discriminator as disc_lib
from musicgen_jax.training.codec import quantizer as quantizer_lib
from musicgen_jax.training.codec import spectral
from musicgen_jax.training.codec.config import load_codec_train_config, resolve_codec_config
from musicgen_jax.training.codec.params import fold, init_generator, unfold
from musicgen_jax.training.codec.trainer import read_codec_config, train_codec
from musicgen_jax.training.logging import read_metrics

# ------------------------------------------------------------------------------ torch references


def _torch_fbanks(n_freqs: int, sample_rate: int, n_mels: int) -> torch.Tensor:
    """torchaudio.functional.melscale_fbanks(n_freqs, 0, sr / 2, n_mels, sr), HTK, no norm."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    hz_to_mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)
    m_pts = torch.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2, dtype=torch.float64)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.min(down, up), min=0.0).float()


def _torch_mel(x: torch.Tensor, sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """audiocraft's MelSpectrogramWrapper(log=False) with torchaudio's MelSpectrogram, via torch.stft."""
    hop = n_fft // 4
    p = (n_fft - hop) // 2
    x = torch.nn.functional.pad(x, (p, p), "reflect")
    length = x.shape[-1]
    frames = math.ceil((length - n_fft) / hop) + 1
    x = torch.nn.functional.pad(x, (0, (frames - 1) * hop + n_fft - length))
    spec = torch.stft(
        x.reshape(-1, x.shape[-1]),
        n_fft,
        hop,
        window=torch.hann_window(n_fft),
        center=False,
        return_complex=True,
    )
    power = spec.abs() ** 2  # [rows, freqs, frames]
    mel = torch.matmul(power.transpose(-1, -2), _torch_fbanks(n_fft // 2 + 1, sample_rate, n_mels))
    return mel.reshape(*x.shape[:-1], frames, n_mels)


def _torch_multiscale_loss(x, y, sample_rate, scales, n_mels):
    loss = 0.0
    for n_fft in scales:
        a, b = _torch_mel(x, sample_rate, n_fft, n_mels), _torch_mel(y, sample_rate, n_fft, n_mels)
        loss += torch.nn.functional.l1_loss(a, b) + math.sqrt(n_fft - 1) * torch.nn.functional.mse_loss(
            torch.log10(1e-5 + a), torch.log10(1e-5 + b)
        )
    return float(loss)


def test_mel_loss_matches_audiocraft_steps_in_torch():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((2, 1, 4000)).astype(np.float32) * 0.3
    other = audio + rng.standard_normal(audio.shape).astype(np.float32) * 0.05
    for n_fft in (64, 512):
        ours = np.asarray(spectral.mel_spectrogram(jnp.asarray(audio), 16000, n_fft, 64))
        reference = _torch_mel(torch.from_numpy(audio), 16000, n_fft, 64).numpy()
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, rtol=2e-4, atol=2e-4 * float(np.abs(reference).max()))
    scales = spectral.mel_scales(64, 1024)
    assert scales == (64, 128, 256, 512, 1024)
    ours = float(spectral.multi_scale_mel_loss(jnp.asarray(other), jnp.asarray(audio), 16000, scales, 64))
    reference = _torch_multiscale_loss(torch.from_numpy(other), torch.from_numpy(audio), 16000, scales, 64)
    assert ours == pytest.approx(reference, rel=1e-4)
    assert (
        float(spectral.multi_scale_mel_loss(jnp.asarray(audio), jnp.asarray(audio), 16000, scales, 64)) == 0.0
    )
    with pytest.raises(ValueError, match="powers of two"):
        spectral.mel_scales(64, 1000)


def test_discriminator_spectrogram_matches_torch_stft():
    """torchaudio's Spectrogram(normalized=True, power=None, center=False): the STFT divided by the
    window's root energy."""
    rng = np.random.default_rng(1)
    audio = rng.standard_normal((2, 2, 3000)).astype(np.float32)
    ours = np.asarray(disc_lib.complex_spectrogram(jnp.asarray(audio), 512, 128))  # [b, t, f, 2c]
    spec = (
        torch.stft(
            torch.from_numpy(audio).reshape(4, -1),
            512,
            128,
            window=torch.hann_window(512),
            center=False,
            return_complex=True,
        ).reshape(2, 2, 257, -1)
        / torch.hann_window(512).pow(2).sum().sqrt()
    )  # [b, c, f, t]
    reference = torch.cat([spec.real, spec.imag], dim=1).permute(0, 3, 2, 1).numpy()
    np.testing.assert_allclose(ours, reference, atol=2e-4)


def test_discriminator_losses_are_the_hinge_losses():
    real = [(jnp.array([2.0, 0.5]), [jnp.array([1.0, -1.0])])]
    fake = [(jnp.array([-2.0, 0.0]), [jnp.array([0.5, -1.0])])]
    # D: relu(1 - real) = [0, .5] -> .25; relu(1 + fake) = [0, 1] -> .5
    assert float(disc_lib.discriminator_loss(real, fake)) == pytest.approx(0.75)
    assert float(disc_lib.adversarial_loss(fake)) == pytest.approx(2.0)  # relu(1 - fake) = [3, 1]
    assert float(disc_lib.feature_matching_loss(real, fake)) == pytest.approx(0.25)  # .25 / 1


# ------------------------------------------------------------------------------ codebooks


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(2)
    centres = np.array([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]], np.float32)
    vectors = np.concatenate([c + 0.1 * rng.standard_normal((50, 2)) for c in centres]).astype(np.float32)
    state = quantizer_lib.kmeans_init(jnp.asarray(vectors), 1, 4, 20, 2, jax.random.key(3))
    found = np.asarray(state.codebooks[0])
    distances = np.linalg.norm(found[:, None] - centres[None], axis=-1).min(axis=0)
    assert distances.max() < 0.1, found
    assert float(state.cluster_size.sum()) == pytest.approx(200 / 2)  # counts per batch


def test_ema_update_moves_codewords_to_their_means_and_replaces_dead_ones():
    codebooks = jnp.asarray([[[0.0, 0.0], [10.0, 10.0], [100.0, 100.0]]])  # [1 stage, 3, 2]
    state = quantizer_lib.QuantizerState.create(codebooks)
    vectors = jnp.asarray([[[1.0, 1.0], [1.0, 3.0], [9.0, 9.0], [11.0, 11.0]]])  # [batch 1, 4 frames, 2]
    quantized = quantizer_lib.quantize(codebooks, vectors, jnp.asarray(1))
    np.testing.assert_array_equal(np.asarray(quantized.codes[0]), [0, 0, 1, 1])
    # commitment: mean squared distance to the codewords: (2 + 10 + 2 + 2) / 8
    assert float(quantized.commitment) == pytest.approx(16 / 8)
    updated, metrics = quantizer_lib.ema_update(state, quantized, jax.random.key(0), 0.5, 0.75)
    size = np.asarray(updated.cluster_size[0])
    # cluster sizes: 0.5 * 1 + 0.5 * [2, 2, 0] = [1.5, 1.5, 0.5]; the last is dead (< 0.75) -> reset
    np.testing.assert_allclose(size, [1.5, 1.5, 0.75])
    book = np.asarray(updated.codebooks[0])
    # codeword 0: (0.5 * [0, 0] + 0.5 * [2, 4]) / smoothed 1.5 ~ [0.667, 1.333]
    np.testing.assert_allclose(book[0], [2 / 3, 4 / 3], rtol=1e-4)
    np.testing.assert_allclose(book[1], [(5 + 10) / 1.5, (5 + 10) / 1.5], rtol=1e-4)
    assert any(np.allclose(book[2], v) for v in np.asarray(vectors[0]))  # a batch vector
    assert float(metrics["dead_codes"]) == pytest.approx(1 / 3)
    # The gradient passes straight through to the encoder's output.
    grad = jax.grad(lambda v: jnp.sum(quantizer_lib.quantize(codebooks, v, jnp.asarray(1)).embeddings))(
        vectors
    )
    np.testing.assert_allclose(np.asarray(grad), 1.0)


def test_inactive_stages_neither_decode_nor_learn():
    rng = np.random.default_rng(4)
    codebooks = jnp.asarray(rng.standard_normal((3, 8, 4)).astype(np.float32))
    vectors = jnp.asarray(rng.standard_normal((2, 5, 4)).astype(np.float32))
    one = quantizer_lib.quantize(codebooks, vectors, jnp.asarray(1))
    np.testing.assert_allclose(
        np.asarray(one.embeddings).reshape(-1, 4),
        np.asarray(codebooks[0])[np.asarray(one.codes[0])],
        atol=1e-6,
    )
    state = quantizer_lib.QuantizerState.create(codebooks)
    updated, _ = quantizer_lib.ema_update(state, one, jax.random.key(0), 0.9, 0.0)
    np.testing.assert_array_equal(np.asarray(updated.codebooks[1:]), np.asarray(codebooks[1:]))
    assert not np.allclose(np.asarray(updated.codebooks[0]), np.asarray(codebooks[0]))


# ------------------------------------------------------------------------------ weight norm


def test_weight_norm_fold_and_unfold_keep_the_network():
    config = resolve_codec_config(load_codec_train_config("tiny", ["data.audio_dir=."]))
    params = init_generator(config, jax.random.key(0))
    flat = traverse_util.flatten_dict(params)
    assert any(path[-1] == "kernel_g" for path in flat) and not any(path[-1] == "kernel" for path in flat)
    assert any(path[-1] == "input_kernel" for path in flat)  # the LSTM has no weight norm
    folded = fold(params)
    again = fold(unfold(folded))
    for path, leaf in traverse_util.flatten_dict(folded).items():
        np.testing.assert_allclose(
            np.asarray(traverse_util.flatten_dict(again)[path]), np.asarray(leaf), rtol=1e-5, atol=1e-6
        )
    # Doubling v leaves the kernel: only the direction of v counts.
    doubled = {path: leaf * 2 if path[-1] == "kernel_v" else leaf for path, leaf in flat.items()}
    for path, leaf in traverse_util.flatten_dict(fold(traverse_util.unflatten_dict(doubled))).items():
        np.testing.assert_allclose(
            np.asarray(leaf), np.asarray(traverse_util.flatten_dict(folded)[path]), rtol=1e-5, atol=1e-6
        )


# ------------------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("codec-audio")
    write_dataset(directory, 6, duration=2.0, sample_rate=8000)
    return directory / "audio"


def _config(audio_dir, output_dir, *overrides):
    return load_codec_train_config(
        "tiny", [f"data.audio_dir={audio_dir}", f"output_dir={output_dir}", *overrides]
    )


def _leaves(state):
    return [
        np.asarray(x)
        for x in jax.tree.leaves(jax.device_get((state.params, state.quantizer, state.opt_state)))
    ]


def test_a_run_learns_and_resumes_exactly(audio_dir, tmp_path):
    steps = ("training.steps=30", "eval.every_steps=10", "checkpoint.every_steps=10")
    whole = train_codec(_config(audio_dir, tmp_path / "whole", *steps))
    assert whole.step == 30
    records = read_metrics(tmp_path / "whole")
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 31))
    assert all(np.isfinite(r["loss"]) and r["codebooks"] in (2.0, 4.0) for r in train)
    losses = [r["loss"] for r in train]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert evals[-1]["eval/loss"] < evals[0]["eval/loss"]
    assert evals[-1]["eval/si_snr_db"] > evals[0]["eval/si_snr_db"]
    assert read_codec_config(tmp_path / "whole").codebook_size == 256

    stopped = _config(audio_dir, tmp_path / "split", *steps, "training.stop_after=10")
    assert train_codec(stopped).step == 10
    with pytest.raises(FileExistsError, match="--resume"):
        train_codec(stopped)
    resumed = train_codec(_config(audio_dir, tmp_path / "split", *steps), resume=True)
    assert resumed.resumed_from == 10 and resumed.step == 30
    for a, b in zip(_leaves(whole.state), _leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)


def test_a_run_with_the_discriminator(audio_dir, tmp_path):
    result = train_codec(
        _config(
            audio_dir,
            tmp_path / "gan",
            "training.steps=2",
            "discriminator.enabled=true",
            "discriminator.start_step=1",
            "checkpoint.every_steps=2",
        )
    )
    records = [r for r in read_metrics(tmp_path / "gan") if "loss" in r]
    assert all(np.isfinite(r["discriminator"]) and np.isfinite(r["feature_matching"]) for r in records)
    assert result.state.disc_params is not None


def test_bad_configs_fail_before_anything_is_written(audio_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown EncodecConfig field"):
        _config(audio_dir, tmp_path / "a", "codec.num_filter=8")
    with pytest.raises(ConfigError, match="codebook_size must be a power of 2"):
        _config(audio_dir, tmp_path / "a", "codec.codebook_size=300")
    with pytest.raises(ConfigError, match="data.audio_dir"):
        load_codec_train_config("tiny", [f"output_dir={tmp_path / 'a'}"])
    with pytest.raises(ConfigError, match="unknown key"):
        _config(audio_dir, tmp_path / "a", "quantizer.decy=0.9")
    with pytest.raises(ValueError, match="mel_largest_fft"):
        train_codec(_config(audio_dir, tmp_path / "a", "data.segment_seconds=0.05"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no audio"):
        train_codec(_config(empty, tmp_path / "a"))
    assert not (tmp_path / "a").exists()


def test_the_balancer_gives_each_loss_its_share_of_the_gradient():
    # Two parallel gradients of per-item norms 2 and 6 (items of 4 samples of 1.0 and 3.0), weights
    # 0.1 and 1: after balancing each is a unit vector times its share, so the sum has norm 1.
    grads = jnp.stack([jnp.ones((2, 1, 4)), 3.0 * jnp.ones((2, 1, 4))])
    weights = jnp.asarray([0.1, 1.0])
    state = balancer_lib.BalancerState.create(2)
    combined, scales, state = balancer_lib.balance(state, grads, weights, jnp.asarray([True, True]), 0.9, 1.0)
    np.testing.assert_allclose(np.asarray(scales), [0.1 / 1.1 / 2.0, 1.0 / 1.1 / 6.0], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(combined)[0]), 1.0, rtol=1e-6)
    # The averages are bias-corrected EMAs: after norms 2 then 4, (0.9 * 2 + 4) / (0.9 + 1).
    _, scales, state = balancer_lib.balance(state, 2.0 * grads, weights, jnp.asarray([True, False]), 0.9, 1.0)
    np.testing.assert_allclose(float(scales[0]), 1.0 / ((0.9 * 2 + 4) / 1.9), rtol=1e-6)
    # An inactive loss gets no share and keeps its average.
    assert float(scales[1]) == 0.0
    np.testing.assert_allclose(np.asarray(state.totals), [0.9 * 2 + 4, 6.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.counts), [1.9, 1.0], rtol=1e-6)
