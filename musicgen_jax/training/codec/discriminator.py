"""EnCodec's multi-scale STFT discriminator (audiocraft's ``MultiScaleSTFTDiscriminator``) in Flax,
and the adversarial and feature-matching losses it trains the codec with.

Each scale takes the complex STFT of the audio (Hann window, ``center=False``, normalised by the
window's energy as torchaudio's ``normalized=True``), real and imaginary parts as channels, and runs
a 2-D convolution stack over ``[time, frequency]``: a ``(3, 9)`` convolution, three ``(3, 9)``
convolutions striding 2 in frequency with time dilations 1, 2, 4, a ``(3, 3)`` one, each followed by
LeakyReLU(0.2), and a ``(3, 3)`` convolution to one logit channel. The feature maps (every
activation and the logits) feed the feature-matching loss. audiocraft wraps the convolutions in
weight norm; here they are plain (the codec's own weight norm lives in
:mod:`musicgen_jax.training.codec.params`), which changes the parametrisation, not the network.

Losses are EnCodec's hinge losses: the discriminator minimises ``relu(1 - D(x)) + relu(1 + D(x̂))``,
the codec ``relu(1 - D(x̂))``, and ``|F(x̂) - F(x)| / mean |F(x)|`` per feature map (audiocraft's
``FeatureMatchingLoss`` with normalisation), each averaged over maps and scales.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.training.codec.spectral import frame_signal, hann_window

DILATIONS = (1, 2, 4)
LEAKY_SLOPE = 0.2


def complex_spectrogram(audio: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """``[batch, channels, samples]`` -> ``[batch, frames, n_fft // 2 + 1, 2 * channels]``: real and
    imaginary parts of the normalised STFT, channels ``[re_0, ..., re_C, im_0, ..., im_C]``."""
    spectrum = jnp.fft.rfft(frame_signal(audio, n_fft, hop), axis=-1) / np.sqrt(
        np.sum(hann_window(n_fft) ** 2)
    )
    parts = jnp.concatenate([spectrum.real, spectrum.imag], axis=1)  # [batch, 2C, frames, bins]
    return jnp.moveaxis(parts, 1, -1)


class ScaleDiscriminator(nn.Module):
    """One STFT scale: audio -> (logits ``[batch, frames, bins', 1]``, feature maps)."""

    n_fft: int
    hop: int
    filters: int

    @nn.compact
    def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        x = complex_spectrogram(audio, self.n_fft, self.hop)
        features = []
        x = nn.Conv(self.filters, (3, 9), padding=((1, 1), (4, 4)), name="conv_in")(x)
        x = nn.leaky_relu(x, LEAKY_SLOPE)
        features.append(x)
        for index, dilation in enumerate(DILATIONS):
            x = nn.Conv(
                self.filters,
                (3, 9),
                strides=(1, 2),
                kernel_dilation=(dilation, 1),
                padding=((dilation, dilation), (4, 4)),
                name=f"conv_{index}",
            )(x)
            x = nn.leaky_relu(x, LEAKY_SLOPE)
            features.append(x)
        x = nn.Conv(self.filters, (3, 3), padding=((1, 1), (1, 1)), name="conv_out")(x)
        x = nn.leaky_relu(x, LEAKY_SLOPE)
        features.append(x)
        logits = nn.Conv(1, (3, 3), padding=((1, 1), (1, 1)), name="conv_post")(x)
        features.append(logits)
        return logits, features


class MultiScaleStftDiscriminator(nn.Module):
    """One :class:`ScaleDiscriminator` per ``(n_fft, hop)`` of ``scales``."""

    scales: tuple[tuple[int, int], ...]
    filters: int

    @nn.compact
    def __call__(self, audio: jax.Array) -> list[tuple[jax.Array, list[jax.Array]]]:
        return [
            ScaleDiscriminator(n_fft, hop, self.filters, name=f"scale_{index}")(audio)
            for index, (n_fft, hop) in enumerate(self.scales)
        ]


def discriminator_loss(real: list, fake: list) -> jax.Array:
    """Hinge loss of the discriminator's outputs on real and on decoded audio, averaged over scales."""
    losses = [
        jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f)) for (r, _), (f, _) in zip(real, fake)
    ]
    return sum(losses) / len(losses)


def adversarial_loss(fake: list) -> jax.Array:
    """The codec's hinge loss: decoded audio should score above 1."""
    return sum(jnp.mean(jax.nn.relu(1.0 - f)) for f, _ in fake) / len(fake)


def feature_matching_loss(real: list, fake: list) -> jax.Array:
    """Mean over scales and feature maps of ``mean |F(x̂) - F(x)| / mean |F(x)|`` (real maps fixed)."""
    terms = []
    for (_, real_maps), (_, fake_maps) in zip(real, fake):
        for r, f in zip(real_maps, fake_maps):
            r = jax.lax.stop_gradient(r)
            terms.append(jnp.mean(jnp.abs(f - r)) / (jnp.mean(jnp.abs(r)) + 1e-8))
    return sum(terms) / len(terms)
