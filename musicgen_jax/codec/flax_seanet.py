"""EnCodec's SEANet encoder and decoder in Flax, equal to transformers' ``EncodecEncoder``/``EncodecDecoder``.

Activations are channels-last, ``[batch, time, channels]`` (what XLA's convolutions prefer); the
public codec (:mod:`musicgen_jax.codec.jax_encodec`) transposes at its edges. Weight norm is folded
into each kernel when the weights are loaded (:mod:`musicgen_jax.codec.flax_params`), so a
convolution here holds a plain ``kernel [width, in, out]`` and ``bias``.

The layers come from :mod:`musicgen_jax.codec.layout` in transformers' order; Flax names them
``layers_{i}`` after torch's ``layers.{i}`` (parameterless ELUs keep their index), residual
convolutions ``block_{j}`` after torch's ``block.{j}``. Every matmul and convolution runs at
``Precision.HIGHEST``: float32 on GPUs and TPUs too, as the parity tests assume.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.codec import layout
from musicgen_jax.codec.config import CodecConfig

HIGHEST = jax.lax.Precision.HIGHEST
GROUP_NORM_EPS = 1e-5  # torch nn.GroupNorm's default
# torch F.pad mode -> jnp.pad mode.
_PAD_MODES = {"reflect": "reflect", "constant": "constant", "replicate": "edge", "circular": "wrap"}

LstmState = tuple[tuple[jax.Array, jax.Array], ...]  # per layer (h, c), each [batch, dim]


def _pad(x: jax.Array, left: int, right: int, mode: str) -> jax.Array:
    """Pad the time axis of ``[batch, time, channels]`` as transformers' ``EncodecConv1d._pad1d``:
    reflect padding wider than the signal first zero-pads it on the right, then drops that again."""
    if mode != "reflect":
        return jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode=_PAD_MODES[mode])
    length = x.shape[1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    x = jnp.pad(x, ((0, 0), (0, extra), (0, 0)))
    padded = jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode="reflect")
    return padded[:, : padded.shape[1] - extra]


def _time_group_norm(module: nn.Module, x: jax.Array) -> jax.Array:
    """``nn.GroupNorm(1, channels)`` after a convolution: each item normalised over time and channels
    together, then scaled per channel (``module``'s ``norm_scale`` and ``norm_bias``)."""
    channels = x.shape[-1]
    scale = module.param("norm_scale", nn.initializers.ones, (channels,))
    bias = module.param("norm_bias", nn.initializers.zeros, (channels,))
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    variance = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + GROUP_NORM_EPS) * scale + bias


class Conv1d(nn.Module):
    """``EncodecConv1d``: ``[batch, length, in]`` -> ``[batch, ceil(length / stride), out]``."""

    spec: layout.Conv
    config: CodecConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        spec, config = self.spec, self.config
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (spec.kernel_size, spec.in_channels, spec.out_channels)
        )
        bias = self.param("bias", nn.initializers.zeros, (spec.out_channels,))
        length, stride, padding_total = x.shape[1], spec.stride, spec.padding_total
        # transformers' extra right padding: enough that the last frame is whole, so
        # frames = ceil(length / stride).
        frames = -(-(length - stride) // stride)
        extra = frames * stride + stride - length
        if config.use_causal_conv:
            left, right = padding_total, extra
        else:
            left, right = padding_total - padding_total // 2, padding_total // 2 + extra
        x = _pad(x, left, right, config.pad_mode)
        y = (
            jax.lax.conv_general_dilated(
                x,
                kernel,
                (stride,),
                "VALID",
                rhs_dilation=(spec.dilation,),
                dimension_numbers=("NWC", "WIO", "NWC"),
                precision=HIGHEST,
            )
            + bias
        )
        return _time_group_norm(self, y) if config.norm_type == "time_group_norm" else y


class ConvTranspose1d(nn.Module):
    """``EncodecConvTranspose1d``: ``[batch, frames, in]`` -> ``[batch, frames * stride, out]``."""

    spec: layout.ConvTranspose
    config: CodecConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        spec, config = self.spec, self.config
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (spec.kernel_size, spec.in_channels, spec.out_channels)
        )
        bias = self.param("bias", nn.initializers.zeros, (spec.out_channels,))
        k, stride = spec.kernel_size, spec.stride
        # A transposed convolution is a convolution of the stride-dilated input with the flipped kernel;
        # output length (frames - 1) * stride + k, as torch's ConvTranspose1d without padding.
        y = (
            jax.lax.conv_general_dilated(
                x,
                kernel[::-1],
                (1,),
                [(k - 1, k - 1)],
                lhs_dilation=(stride,),
                dimension_numbers=("NWC", "WIO", "NWC"),
                precision=HIGHEST,
            )
            + bias
        )
        if config.norm_type == "time_group_norm":  # before the trim, as transformers does
            y = _time_group_norm(self, y)
        padding_total = k - stride
        if config.use_causal_conv:
            right = math.ceil(padding_total * config.trim_right_ratio)
        else:
            right = padding_total // 2
        left = padding_total - right
        return y[:, left : y.shape[1] - right]


class ResidualBlock(nn.Module):
    """``EncodecResnetBlock``: ``shortcut(x) + conv(ELU(conv(ELU(x))))``, shape preserved."""

    spec: layout.ResidualBlock
    config: CodecConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = x
        for j, conv in enumerate(self.spec.convs):
            hidden = Conv1d(conv, self.config, name=f"block_{2 * j + 1}")(jax.nn.elu(hidden))
        residual = (
            x if self.spec.shortcut is None else Conv1d(self.spec.shortcut, self.config, name="shortcut")(x)
        )
        return residual + hidden


class LstmLayer(nn.Module):
    """One layer of torch's ``nn.LSTM`` (gates i, f, g, o), run over time with ``lax.scan``."""

    dim: int

    @nn.compact
    def __call__(
        self, x: jax.Array, state: tuple[jax.Array, jax.Array], length: jax.Array | None = None
    ) -> tuple[jax.Array, tuple]:
        """``x [batch, time, dim]`` and ``(h, c)`` -> ``[batch, time, dim]`` and the last ``(h, c)``.

        ``length`` (a traced int): only the first ``length`` steps are real; the state stops there
        (later steps leave it as it was, exactly) and their outputs are meaningless. A streaming
        decoder pads its windows to a few lengths this way without changing the carried state."""
        gates = 4 * self.dim  # input, forget, cell and output gates, in torch's order
        input_kernel = self.param("input_kernel", nn.initializers.lecun_normal(), (self.dim, gates))
        input_bias = self.param("input_bias", nn.initializers.zeros, (gates,))
        hidden_kernel = self.param("hidden_kernel", nn.initializers.lecun_normal(), (self.dim, gates))
        hidden_bias = self.param("hidden_bias", nn.initializers.zeros, (gates,))
        inputs = jnp.matmul(x, input_kernel, precision=HIGHEST) + input_bias  # [batch, time, 4 dim]
        real = None if length is None else jnp.arange(x.shape[1]) < length  # [time] bool

        def step(carry, xs):
            input_gates, is_real = xs
            h, c = carry
            i, f, g, o = jnp.split(
                input_gates + (jnp.matmul(h, hidden_kernel, precision=HIGHEST) + hidden_bias), 4, -1
            )
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            if is_real is not None:
                h, c = jnp.where(is_real, h, carry[0]), jnp.where(is_real, c, carry[1])
            return (h, c), h

        state, outputs = jax.lax.scan(step, state, (jnp.swapaxes(inputs, 0, 1), real))  # time-major
        return jnp.swapaxes(outputs, 0, 1), state


class Lstm(nn.Module):
    """``EncodecLSTM``: stacked LSTM layers plus the input (skip connection)."""

    spec: layout.Lstm

    @nn.compact
    def __call__(
        self, x: jax.Array, state: LstmState | None = None, length: jax.Array | None = None
    ) -> tuple[jax.Array, LstmState]:
        """``x [batch, time, dim]`` -> ``[batch, time, dim]`` and each layer's last ``(h, c)``
        (``state`` None: zeros, as torch starts; ``length``: see :class:`LstmLayer`)."""
        if state is None:
            zeros = jnp.zeros((x.shape[0], self.spec.dim), x.dtype)
            state = ((zeros, zeros),) * self.spec.num_layers
        hidden, states = x, []
        for n in range(self.spec.num_layers):
            hidden, layer_state = LstmLayer(self.spec.dim, name=f"layer_{n}")(hidden, state[n], length)
            states.append(layer_state)
        return hidden + x, tuple(states)


def _build(spec: layout.Layer, config: CodecConfig) -> nn.Module | None:
    """The Flax module of one layer (None for an ELU, applied inline)."""
    if isinstance(spec, layout.Conv):
        return Conv1d(spec, config)
    if isinstance(spec, layout.ConvTranspose):
        return ConvTranspose1d(spec, config)
    if isinstance(spec, layout.ResidualBlock):
        return ResidualBlock(spec, config)
    if isinstance(spec, layout.Lstm):
        return Lstm(spec)
    return None


def _run(modules, specs, x: jax.Array) -> jax.Array:
    for module, spec in zip(modules, specs):
        if isinstance(spec, layout.Elu):
            x = jax.nn.elu(x)
        elif isinstance(spec, layout.Lstm):
            x, _ = module(x)
        else:
            x = module(x)
    return x


class Encoder(nn.Module):
    """``EncodecEncoder``: audio ``[batch, samples, channels]`` -> ``[batch, frames, hidden_size]``."""

    config: CodecConfig

    def setup(self):
        self.specs = layout.encoder_layers(self.config)
        self.layers = [_build(spec, self.config) for spec in self.specs]

    def __call__(self, audio: jax.Array) -> jax.Array:
        return _run(self.layers, self.specs, audio)


class Decoder(nn.Module):
    """``EncodecDecoder``: ``[batch, frames, hidden_size]`` -> audio ``[batch, frames * hop, channels]``.

    Besides the whole decoder, its three stages run alone for streaming: :meth:`input_conv`,
    :meth:`lstm` (with a carried state) and :meth:`upsample`.
    """

    config: CodecConfig

    def setup(self):
        self.specs = layout.decoder_layers(self.config)
        self.layers = [_build(spec, self.config) for spec in self.specs]

    def __call__(self, embeddings: jax.Array) -> jax.Array:
        return _run(self.layers, self.specs, embeddings)

    def input_conv(self, embeddings: jax.Array) -> jax.Array:
        return self.layers[0](embeddings)

    def lstm(
        self, hidden: jax.Array, state: LstmState | None, length: jax.Array | None = None
    ) -> tuple[jax.Array, LstmState]:
        return self.layers[1](hidden, state, length)

    def upsample(self, hidden: jax.Array) -> jax.Array:
        return _run(self.layers[2:], self.specs[2:], hidden)
