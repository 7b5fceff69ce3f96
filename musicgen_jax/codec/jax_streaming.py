"""Decoding codes to audio as they arrive with the JAX codec, matching one full :meth:`JaxEncodec.decode`.

The same scheme as the PyTorch :class:`~musicgen_jax.codec.streaming.StreamingDecoder` (read its
docstring for why): the decoder's stages run apart, the input convolution and the upsampling stack
on the new frames plus enough left context (their reach, from
:func:`musicgen_jax.codec.layout.decoder_reach`, shared by both streamers), the LSTM on the new
frames only with its ``(h, c)`` state carried from push to push. Frames whose right context has not
arrived are held back until a later push or :meth:`JaxStreamingDecoder.flush`.

``jax.jit`` compiles a program per input shape, and a stream's windows change length with the push
size and over its first pushes: each new length would compile (a second or more for the 32 kHz
codec on a CPU) in the middle of a stream. So every window but the flush's is right-padded to a
:func:`window_bucket` length, and the bookkeeping (the codes, the counters, cutting out the audio)
stays on the host in NumPy, where slicing compiles nothing. A stream of any length then runs on a
few programs per push size, shared by every stream of one codec config, which
:meth:`JaxStreamingDecoder.warm_up` compiles ahead.

Why the padding changes no audio:

* Convolutions: every output a non-final window keeps has its whole receptive field (the reaches
  are upper bounds, symmetric so that reflect padding's reach is inside them) among the real
  frames; that is what holding back ``lookahead_frames`` means. Padded frames lie beyond it, so no
  kept output reads them, whatever they hold (code 0's embedding; the LSTM's meaningless masked
  steps). Reflect padding at a padded window's right edge mirrors padded frames only into outputs
  within reach of that edge; at the left edge it mirrors the same real frames as before (a longer
  window skips transformers' short-input zero fill, which only fed outputs no one keeps either).
  The decoder's convolutions have stride 1 and its transposed convolutions trim fixed amounts
  (:mod:`musicgen_jax.codec.flax_seanet`), so outputs keep their positions when the input grows to
  the right. All of this holds for causal and non-causal codecs alike.
* The LSTM carries its state rightwards, through padding too, so its padded steps are masked
  (:class:`~musicgen_jax.codec.flax_seanet.LstmLayer`'s ``length``): the state stops at the last real
  frame. Its input is as long as the push, which is the caller's choice, so leaving it unpadded
  would compile a program per push size.
* The flush pads nothing: it sees the true end of the stream, as a full decode does.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.codec.flax_seanet import Decoder, LstmState
from musicgen_jax.codec.layout import Lstm, StreamCounters, decoder_layers, decoder_reach

if TYPE_CHECKING:
    from musicgen_jax.codec.jax_encodec import JaxEncodec


def window_bucket(frames: int) -> int:
    """The length a stream window of ``frames`` frames is padded to: itself up to 8, then the next
    multiple of a quarter of the power of two at or below it (8, 10, 12, 14, 16, 20, 24, 28, 32,
    40, ...): four lengths an octave, under 25% of padding."""
    granule = 1 << max(0, frames.bit_length() - 3)
    return -(-frames // granule) * granule


# The decoder's stages, jitted with the Flax modules static (shared by every stream of one config).
@functools.partial(jax.jit, static_argnames=("quantizer", "decoder", "steps"))
def _conv_lstm(
    params,
    codes: jax.Array,
    offset: jax.Array,
    frames: jax.Array,
    state: LstmState,
    *,
    quantizer,
    decoder,
    steps,
) -> tuple[jax.Array, LstmState]:
    """Codes ``[batch, K, window]`` -> the LSTM's outputs ``[batch, steps, dim]`` over ``frames`` frames
    of the input convolution's output from ``offset`` (the steps after them meaningless), and the
    LSTM state after those frames."""
    embeddings = quantizer.apply({"params": params["quantizer"]}, codes)  # [batch, window, dim]
    hidden = decoder.apply({"params": params["decoder"]}, embeddings, method=Decoder.input_conv)
    hidden = jnp.pad(hidden, ((0, 0), (0, steps), (0, 0)))  # a slice of ``steps`` from any offset fits
    hidden = jax.lax.dynamic_slice_in_dim(hidden, offset, steps, axis=1)
    return decoder.apply({"params": params["decoder"]}, hidden, state, frames, method=Decoder.lstm)


@functools.partial(jax.jit, static_argnames=("length",))
def _append(
    context: jax.Array, context_frames: jax.Array, hidden: jax.Array, keep_from: jax.Array, *, length: int
) -> tuple[jax.Array, jax.Array]:
    """The LSTM outputs so far, ``context[:, :context_frames]`` then ``hidden``, as the upsampler's
    window (the first ``length`` frames) and as the next context (as many frames as ``context``
    holds, from ``keep_from``). Offsets are traced, so the shapes are the buckets' alone."""
    capacity, steps = context.shape[1], hidden.shape[1]
    room = jnp.pad(context, ((0, 0), (0, steps + capacity + length), (0, 0)))  # every slice below fits
    frames = jax.lax.dynamic_update_slice_in_dim(room, hidden, context_frames, axis=1)
    return frames[:, :length], jax.lax.dynamic_slice_in_dim(frames, keep_from, capacity, axis=1)


@functools.partial(jax.jit, static_argnames=("decoder",))
def _upsample(params, hidden: jax.Array, *, decoder) -> jax.Array:
    """``[batch, frames, dim]`` -> audio ``[batch, channels, frames * hop]``."""
    return jnp.swapaxes(decoder.apply({"params": params["decoder"]}, hidden, method=Decoder.upsample), 1, 2)


def _pad_frames(codes: np.ndarray, frames: int) -> np.ndarray:
    """``[batch, K, n]`` -> ``[batch, K, frames]``, padded on the right with code 0 (a valid code)."""
    return np.pad(codes, ((0, 0), (0, 0), (0, frames - codes.shape[-1])))


class JaxStreamingDecoder(StreamCounters):
    """Push codes ``[batch, K, n_frames]`` as they are generated; get audio chunks back.

    ``push`` returns NumPy float32 ``[batch, channels, samples]`` (possibly 0 samples): the audio is
    cut out on the host, where a new length compiles nothing. ``flush`` returns the held-back tail.
    The batch size and codebook count are fixed by the first push. After ``flush`` the decoder is
    finished; :meth:`reset` starts a new stream.
    """

    def __init__(self, codec: JaxEncodec):
        config = codec.config
        if config.chunk_length_s is not None or config.normalize:
            raise NotImplementedError("streaming decodes codecs that encode the whole signal, unscaled")
        if config.norm_type == "time_group_norm":
            # A group norm's statistics span the whole signal: no window of context reproduces them.
            raise NotImplementedError("a codec with time group norm cannot be streamed exactly")
        self.codec = codec
        _, decoder, quantizer = codec.modules
        self._conv_lstm = functools.partial(_conv_lstm, quantizer=quantizer, decoder=decoder)
        self._upsample = functools.partial(_upsample, decoder=decoder)
        self.reach = decoder_reach(config)
        self._lstm_spec: Lstm = decoder_layers(config)[1]  # its width and depth: the state's shape
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next push starts a new one."""
        self._reset_counters()
        self._codes: np.ndarray | None = None  # [batch, K, frames] int32 from _codes_start, on the host
        self._codes_start = 0
        self._lstm_done = 0  # frames through the input conv and the LSTM
        self._lstm_state: LstmState | None = None
        # The LSTM outputs the upsampler still needs, frames [_context_start, _lstm_done), at the start
        # of a buffer as long as a non-final push ever keeps (upsample_left + upsample_right), so its
        # shape never changes.
        self._context: jax.Array | None = None  # [batch, capacity, dim]
        self._context_start = 0

    @property
    def lookahead_frames(self) -> int:
        """Frames that must follow a frame before its audio can be emitted."""
        return self.reach.lookahead

    @property
    def hop_length(self) -> int:
        return self.codec.hop_length

    def push(self, codes: Any) -> np.ndarray:
        """Add frames ``[batch, K, n_frames]``; return the audio that is now final."""
        self._check_open()
        # The stream keeps its codes on the host (a JAX array is copied there; codes are small).
        codes = np.asarray(self.codec.check_codes(codes))  # [batch, K, n] int32
        self._accept(codes)
        if self._codes is None:
            self._start(batch=codes.shape[0])
            self._codes = codes
        else:
            self._codes = np.concatenate([self._codes, codes], axis=-1)
        self._received += codes.shape[-1]
        return self._advance(final=False)

    def flush(self) -> np.ndarray:
        """The remaining audio, decoded with the true end of the stream (as a full decode sees it)."""
        self._finish()
        return self._advance(final=True)

    def warm_up(self, push_frames: int, batch: int = 1) -> None:
        """Compile now the programs a stream of ``push_frames``-frame pushes of ``batch`` rows (and
        this codec's codebooks) runs, from its first push through steady pushes to the flush, by
        decoding such a stream of silence on a scratch decoder (this one's stream is untouched)."""
        if push_frames < 1:
            raise ValueError(f"push_frames must be positive, got {push_frames}")
        reach = self.reach
        # After this many frames every window has its full left context: the pushes are steady.
        settled = reach.conv_left + reach.conv_right + reach.upsample_left + reach.upsample_right
        scratch = JaxStreamingDecoder(self.codec)
        silence = np.zeros((batch, self.codec.num_codebooks, push_frames), np.int32)
        for _ in range(math.ceil(settled / push_frames) + 2):
            scratch.push(silence)
        scratch.flush()

    # ------------------------------------------------------------------------------ stages

    def _start(self, batch: int) -> None:
        """The zero LSTM state torch starts from and an empty context, for ``batch`` rows."""
        dim, reach = self._lstm_spec.dim, self.reach
        zeros = jnp.zeros((batch, dim), jnp.float32)
        self._lstm_state = ((zeros, zeros),) * self._lstm_spec.num_layers
        capacity = reach.upsample_left + reach.upsample_right
        self._context = jnp.zeros((batch, capacity, dim), jnp.float32)

    def _advance(self, final: bool) -> np.ndarray:
        params, reach = self.codec.params, self.reach
        context_frames = self._lstm_done - self._context_start  # real frames in the context

        # 1. Input conv and LSTM for every frame whose right context exists (all of them at the end).
        ready = self._received if final else self._received - reach.conv_right
        new = max(0, ready - self._lstm_done)
        hidden = None
        if new:
            start = max(self._codes_start, self._lstm_done - reach.conv_left)
            window = self._codes[..., start - self._codes_start :]  # [batch, K, received - start]
            if not final:
                window = _pad_frames(window, window_bucket(window.shape[-1]))
            hidden, self._lstm_state = self._conv_lstm(
                params,
                window,
                self._lstm_done - start,
                new,
                self._lstm_state,
                steps=new if final else window_bucket(new),
            )  # [batch, steps, dim]: the first ``new`` real
            self._lstm_done = ready
            keep_from = max(self._codes_start, self._lstm_done - reach.conv_left)
            self._codes = self._codes[..., keep_from - self._codes_start :]
            self._codes_start = keep_from

        # 2. The upsampling stack for every frame whose right context exists.
        emit_to = max(self._emitted, self._lstm_done if final else self._lstm_done - reach.upsample_right)
        if hidden is None:
            if emit_to == self._emitted:
                return self._empty()
            # A flush with no frame left for the LSTM (an input conv without lookahead).
            hidden = jnp.zeros(self._context.shape[:1] + (0,) + self._context.shape[2:], jnp.float32)
        frames = self._lstm_done - self._context_start  # real frames in the upsampler's window
        keep_from = max(self._context_start, emit_to - reach.upsample_left)
        window, self._context = _append(
            self._context,
            context_frames,
            hidden,
            keep_from - self._context_start,
            length=frames if final else window_bucket(frames),
        )
        audio = self._empty()
        if emit_to > self._emitted:
            hop = self.hop_length
            decoded = np.asarray(self._upsample(params, window))  # [batch, channels, length * hop]
            audio = decoded[
                ..., (self._emitted - self._context_start) * hop : (emit_to - self._context_start) * hop
            ]
        self._emitted, self._context_start = emit_to, keep_from
        return audio

    def _empty(self) -> np.ndarray:
        batch = self._shape[0] if self._shape else 0
        return np.zeros((batch, self.codec.audio_channels, 0), np.float32)
