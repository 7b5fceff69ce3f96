"""The SEANet layer lists of EnCodec's encoder and decoder, and how far the decoder looks around a frame.

:func:`encoder_layers` and :func:`decoder_layers` list the layers in transformers' order: item ``i``
is ``encoder.layers.i`` (``decoder.layers.i``) of an ``EncodecModel``. The Flax modules
(:mod:`musicgen_jax.codec.flax_seanet`) are built from these lists and the weight name table
(:mod:`musicgen_jax.codec.flax_params`) is read off them, so the layout is written down once.

:func:`decoder_reach` gives both streaming decoders (PyTorch and JAX) the receptive field of each
decoder stage in frames.
"""

from __future__ import annotations

import dataclasses
import math

from musicgen_jax.codec.config import CodecConfig


@dataclasses.dataclass(frozen=True)
class Conv:
    """``EncodecConv1d``: padded (causally or centred) so that ``frames = ceil(length / stride)``."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1

    @property
    def padding_total(self) -> int:
        return (self.kernel_size - 1) * self.dilation + 1 - self.stride


@dataclasses.dataclass(frozen=True)
class ConvTranspose:
    """``EncodecConvTranspose1d``: upsamples by ``stride``, trimming ``kernel_size - stride`` steps."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int


@dataclasses.dataclass(frozen=True)
class ResidualBlock:
    """``EncodecResnetBlock``: ``shortcut(x) + (ELU, conv)*(x)``; conv ``j`` is torch's ``block.{2j+1}``."""

    convs: tuple[Conv, ...]
    shortcut: Conv | None  # None: the identity


@dataclasses.dataclass(frozen=True)
class Lstm:
    """``EncodecLSTM``: a ``num_layers`` LSTM over time plus its input (a skip connection)."""

    dim: int
    num_layers: int


@dataclasses.dataclass(frozen=True)
class Elu:
    """``nn.ELU()`` (alpha 1)."""


Layer = Conv | ConvTranspose | ResidualBlock | Lstm | Elu


def _residual_block(config: CodecConfig, dim: int, dilation: int) -> ResidualBlock:
    hidden = dim // config.compress
    convs = (
        Conv(dim, hidden, config.residual_kernel_size, dilation=dilation),
        Conv(hidden, dim, 1),
    )
    return ResidualBlock(convs, Conv(dim, dim, 1) if config.use_conv_shortcut else None)


def encoder_layers(config: CodecConfig) -> tuple[Layer, ...]:
    """Audio ``[channels]`` -> embeddings ``[hidden_size]``, downsampled by ``hop_length``."""
    layers: list[Layer] = [Conv(config.audio_channels, config.num_filters, config.kernel_size)]
    scale = 1
    for ratio in reversed(config.upsampling_ratios):
        width = scale * config.num_filters
        layers += [
            _residual_block(config, width, config.dilation_growth_rate**j)
            for j in range(config.num_residual_layers)
        ]
        layers += [Elu(), Conv(width, width * 2, kernel_size=ratio * 2, stride=ratio)]
        scale *= 2
    width = scale * config.num_filters
    layers += [
        Lstm(width, config.num_lstm_layers),
        Elu(),
        Conv(width, config.hidden_size, config.last_kernel_size),
    ]
    return tuple(layers)


def decoder_layers(config: CodecConfig) -> tuple[Layer, ...]:
    """Embeddings ``[hidden_size]`` -> audio ``[channels]``, upsampled by ``hop_length``."""
    scale = 2 ** len(config.upsampling_ratios)
    width = scale * config.num_filters
    layers: list[Layer] = [
        Conv(config.hidden_size, width, config.kernel_size),
        Lstm(width, config.num_lstm_layers),
    ]
    for ratio in config.upsampling_ratios:
        width = scale * config.num_filters
        layers += [Elu(), ConvTranspose(width, width // 2, kernel_size=ratio * 2, stride=ratio)]
        layers += [
            _residual_block(config, width // 2, config.dilation_growth_rate**j)
            for j in range(config.num_residual_layers)
        ]
        scale //= 2
    layers += [Elu(), Conv(config.num_filters, config.audio_channels, config.last_kernel_size)]
    return tuple(layers)


# ---------------------------------------------------------------------------------- receptive fields


@dataclasses.dataclass(frozen=True)
class DecoderReach:
    """Frames each decoder stage reads left and right of an output frame (upper bounds).

    ``conv_*``: the input convolution (before the LSTM). ``upsample_*``: everything after the
    LSTM, with one frame of margin each way.
    """

    conv_left: int
    conv_right: int
    upsample_left: int
    upsample_right: int

    @property
    def lookahead(self) -> int:
        """Frames that must follow a frame before its audio is final."""
        return self.conv_right + self.upsample_right


def conv_reach(conv: Conv, causal: bool) -> tuple[int, int]:
    """(left, right) input steps one output step of a stride-1 convolution may read.

    Symmetric on purpose: at the start of a stream the left padding reflects steps from the
    right, so even a causal convolution's first outputs read ``padding_total`` steps ahead.
    """
    if conv.stride != 1:
        raise NotImplementedError("streaming assumes stride-1 convolutions in the decoder")
    left = conv.padding_total if causal else conv.padding_total - conv.padding_total // 2
    return left, left  # left >= right either way


def stack_reach(layers: tuple[Layer, ...], causal: bool) -> tuple[float, float]:
    """(left, right) reach in input frames of a stack of decoder layers (an upper bound)."""
    left = right = 0.0
    scale = 1  # output steps per input frame at the current layer's input
    for layer in layers:
        if isinstance(layer, Conv):
            step_left, step_right = conv_reach(layer, causal)
            left, right = left + step_left / scale, right + step_right / scale
        elif isinstance(layer, ConvTranspose):
            # An output step reads the inputs whose kernel span covers it: at most ceil(k / s) either side.
            reach = math.ceil(layer.kernel_size / layer.stride)
            left, right = left + reach / scale, right + reach / scale
            scale *= layer.stride
        elif isinstance(layer, ResidualBlock):
            block = [conv_reach(conv, causal) for conv in layer.convs]
            shortcut = conv_reach(layer.shortcut, causal) if layer.shortcut is not None else (0, 0)
            left += max(sum(b[0] for b in block), shortcut[0]) / scale
            right += max(sum(b[1] for b in block), shortcut[1]) / scale
        elif not isinstance(layer, Elu):
            raise NotImplementedError(f"unexpected layer {layer} in the EnCodec decoder; cannot stream it")
    return left, right


def decoder_reach(config: CodecConfig) -> DecoderReach:
    """The :class:`DecoderReach` of this config's decoder (input conv, LSTM, upsampling stack)."""
    input_conv, lstm, *upsampler = decoder_layers(config)
    if not (isinstance(input_conv, Conv) and isinstance(lstm, Lstm)):
        raise NotImplementedError("unexpected EnCodec decoder layout; cannot stream it")
    conv_left, conv_right = conv_reach(input_conv, config.use_causal_conv)
    left, right = stack_reach(tuple(upsampler), config.use_causal_conv)
    return DecoderReach(conv_left, conv_right, math.ceil(left) + 1, math.ceil(right) + 1)  # +1: margin


class StreamCounters:
    """The bookkeeping both streaming decoders share: frames pushed, frames emitted as audio, the
    (batch, codebooks) the first push fixed, and whether the stream was flushed. Subclasses give
    ``hop_length`` (samples per frame) and call these from ``reset``, ``push`` and ``flush``."""

    hop_length: int

    def _reset_counters(self) -> None:
        self._shape: tuple[int, int] | None = None  # (batch, codebooks), fixed by the first push
        self._received = 0  # frames pushed so far
        self._emitted = 0  # frames returned as audio
        self._finished = False

    @property
    def frames_received(self) -> int:
        return self._received

    @property
    def samples_emitted(self) -> int:
        return self._emitted * self.hop_length

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("this stream was flushed; call reset() to start another")

    def _accept(self, codes) -> None:
        """Refuse checked codes of another (batch, codebooks) than the stream's first push."""
        batch, codebooks = codes.shape[:2]
        if self._shape is None:
            self._shape = (batch, codebooks)
        elif self._shape != (batch, codebooks):
            raise ValueError(f"codes of shape {codes.shape[:2]} pushed to a stream of {self._shape}")

    def _finish(self) -> None:
        if self._finished:
            raise RuntimeError("this stream was already flushed")
        self._finished = True
