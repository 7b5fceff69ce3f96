"""Spectrograms in JAX for the codec's losses and its discriminator: STFT, mel filterbanks, and the
multi-scale mel reconstruction loss EnCodec trains with.

The mel loss is audiocraft's ``MultiScaleMelSpectrogramLoss`` (``audiocraft/losses/specloss.py``):
for each FFT size ``2**i``, the L1 distance of the mel power spectrograms plus ``sqrt(2**i - 1)``
times the mean squared distance of their ``log10(1e-5 + mel)``; the wide windows see tonal detail
and weigh more. Its spectrogram is torchaudio's ``MelSpectrogram(center=False)`` after reflect
padding by ``(n_fft - hop) // 2`` on each side and zeros on the right to a whole last frame: power
2, a periodic Hann window, the HTK mel scale without filter normalisation (torchaudio's defaults).
tests/test_codec_training.py checks every piece against torch.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST
LOG_FLOOR = 1e-5  # audiocraft's floor_level: log10(floor + mel), so silence does not explode


def hann_window(size: int) -> np.ndarray:
    """``torch.hann_window(size)`` (periodic)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(size) / size)).astype(np.float32)


def frame_signal(audio: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """``audio [..., samples]`` -> windowed frames ``[..., frames, n_fft]``, ``hop`` apart, unpadded."""
    frames = 1 + (audio.shape[-1] - n_fft) // hop
    if frames < 1:
        raise ValueError(f"a {n_fft}-point STFT needs at least {n_fft} samples, got {audio.shape[-1]}")
    index = hop * np.arange(frames)[:, None] + np.arange(n_fft)[None, :]  # [frames, n_fft]
    return audio[..., index] * hann_window(n_fft)


def power_spectrogram(audio: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """|STFT|^2 ``[..., frames, n_fft // 2 + 1]`` of ``audio [..., samples]``, framed as audiocraft's
    ``MelSpectrogramWrapper`` frames it (reflect padding, then zeros to a whole last frame)."""
    pad = (n_fft - hop) // 2
    if audio.shape[-1] <= pad:
        raise ValueError(f"a {n_fft}-point spectrogram needs more than {pad} samples, got {audio.shape[-1]}")
    widths = [(0, 0)] * (audio.ndim - 1)
    padded = jnp.pad(audio, widths + [(pad, pad)], mode="reflect")
    # audiocraft's pad_for_conv1d: zeros so that (length - n_fft) is a whole number of hops.
    frames = math.ceil((padded.shape[-1] - n_fft) / hop) + 1
    padded = jnp.pad(padded, widths + [(0, (frames - 1) * hop + n_fft - padded.shape[-1])])
    spectrum = jnp.fft.rfft(frame_signal(padded, n_fft, hop), axis=-1)
    return jnp.square(spectrum.real) + jnp.square(spectrum.imag)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)  # the HTK scale


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.cache
def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """torchaudio's ``melscale_fbanks(n_fft // 2 + 1, 0, sample_rate / 2, n_mels, sample_rate)``:
    triangles between ``n_mels + 2`` points equally spaced in HTK mels, ``[n_fft // 2 + 1, n_mels]``."""
    frequencies = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.float64(sample_rate / 2)), n_mels + 2))
    widths = np.diff(edges)  # [n_mels + 1]
    slopes = edges[None, :] - frequencies[:, None]  # [bins, n_mels + 2]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


def mel_spectrogram(audio: jax.Array, sample_rate: int, n_fft: int, n_mels: int) -> jax.Array:
    """Mel power spectrogram ``[..., frames, n_mels]`` (hop ``n_fft // 4``)."""
    power = power_spectrogram(audio, n_fft, n_fft // 4)
    return jnp.matmul(power, mel_filters(sample_rate, n_fft, n_mels), precision=HIGHEST)


def mel_scales(smallest: int, largest: int) -> tuple[int, ...]:
    """The FFT sizes ``2**i`` from ``smallest`` to ``largest`` (both powers of two, at least 16)."""
    for size in (smallest, largest):
        if size < 16 or 2 ** round(math.log2(size)) != size:
            raise ValueError(f"mel FFT sizes must be powers of two of at least 16, got {size}")
    if smallest > largest:
        raise ValueError(f"mel FFT sizes: smallest {smallest} is above largest {largest}")
    return tuple(2**i for i in range(round(math.log2(smallest)), round(math.log2(largest)) + 1))


def multi_scale_mel_loss(
    audio: jax.Array, reference: jax.Array, sample_rate: int, scales: tuple[int, ...], n_mels: int
) -> jax.Array:
    """audiocraft's multi-scale mel loss of ``audio`` against ``reference`` (both ``[..., samples]``),
    summed over ``scales``; see the module docstring."""
    total = jnp.zeros((), jnp.float32)
    for n_fft in scales:
        mel = mel_spectrogram(audio, sample_rate, n_fft, n_mels)
        mel_ref = mel_spectrogram(reference, sample_rate, n_fft, n_mels)
        log_difference = jnp.log10(LOG_FLOOR + mel) - jnp.log10(LOG_FLOOR + mel_ref)
        alpha = math.sqrt(n_fft - 1)
        total = total + jnp.mean(jnp.abs(mel - mel_ref)) + alpha * jnp.mean(jnp.square(log_difference))
    return total
