"""Decoding codes to audio as they arrive with the JAX codec, matching one full :meth:`JaxEncodec.decode`.

The same scheme as the PyTorch :class:`~musicgen_jax.codec.streaming.StreamingDecoder` (read its
docstring for why): the decoder's three stages run apart, the input convolution and the
upsampling stack on the new frames plus enough left context (their reach, from
:func:`musicgen_jax.codec.layout.decoder_reach`, shared by both streamers), the LSTM on the new
frames only with its ``(h, c)`` state carried from push to push. Frames whose right context has not
arrived are held back until a later push or :meth:`JaxStreamingDecoder.flush`.

Each stage is jitted; windows are as long as the push plus a fixed context, so steady pushes reuse
a few compiled shapes (shared by every stream of one codec config).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from musicgen_jax.codec.flax_seanet import Decoder, LstmState
from musicgen_jax.codec.layout import StreamCounters, decoder_reach

if TYPE_CHECKING:
    from musicgen_jax.codec.jax_encodec import JaxEncodec


# The decoder's stages, jitted with the Flax modules static (shared by every stream of one config).
@functools.partial(jax.jit, static_argnames=("quantizer",))
def _embed(params, codes: jax.Array, *, quantizer) -> jax.Array:
    """Codes ``[batch, K, n]`` -> embeddings ``[batch, n, dim]``."""
    return quantizer.apply({"params": params["quantizer"]}, codes)


@functools.partial(jax.jit, static_argnames=("decoder",))
def _input_conv(params, embeddings: jax.Array, *, decoder) -> jax.Array:
    return decoder.apply({"params": params["decoder"]}, embeddings, method=Decoder.input_conv)


@functools.partial(jax.jit, static_argnames=("decoder",))
def _lstm(params, hidden: jax.Array, state: LstmState | None, *, decoder) -> tuple[jax.Array, LstmState]:
    return decoder.apply({"params": params["decoder"]}, hidden, state, method=Decoder.lstm)


@functools.partial(jax.jit, static_argnames=("decoder",))
def _upsample(params, hidden: jax.Array, *, decoder) -> jax.Array:
    """``[batch, frames, dim]`` -> audio ``[batch, channels, frames * hop]``."""
    return jnp.swapaxes(decoder.apply({"params": params["decoder"]}, hidden, method=Decoder.upsample), 1, 2)


class JaxStreamingDecoder(StreamCounters):
    """Push codes ``[batch, K, n_frames]`` as they are generated; get audio chunks back.

    ``push`` returns float32 ``[batch, channels, samples]`` (possibly 0 samples); ``flush``
    returns the held-back tail. The batch size and codebook count are fixed by the first push.
    After ``flush`` the decoder is finished; :meth:`reset` starts a new stream.
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
        self._embed = functools.partial(_embed, quantizer=quantizer)
        self._input_conv = functools.partial(_input_conv, decoder=decoder)
        self._lstm = functools.partial(_lstm, decoder=decoder)
        self._upsample = functools.partial(_upsample, decoder=decoder)
        self.reach = decoder_reach(config)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next push starts a new one."""
        self._reset_counters()
        self._lstm_done = 0  # frames through the input conv and the LSTM
        self._embeddings: jax.Array | None = None  # [batch, frames, dim] from _embeddings_start
        self._embeddings_start = 0
        self._lstm_out: jax.Array | None = None  # [batch, frames, dim] from _lstm_out_start
        self._lstm_out_start = 0
        self._lstm_state: LstmState | None = None

    @property
    def lookahead_frames(self) -> int:
        """Frames that must follow a frame before its audio can be emitted."""
        return self.reach.lookahead

    @property
    def hop_length(self) -> int:
        return self.codec.hop_length

    def push(self, codes: Any) -> jax.Array:
        """Add frames ``[batch, K, n_frames]``; return the audio that is now final."""
        self._check_open()
        codes = self.codec.check_codes(codes)  # [batch, K, n] int32
        self._accept(codes)
        frames = codes.shape[-1]
        if frames:
            embeddings = self._embed(self.codec.params, codes)  # [batch, n, dim]
            self._embeddings = (
                embeddings if self._embeddings is None else jnp.concatenate([self._embeddings, embeddings], 1)
            )
            self._received += frames
        return self._advance(final=False)

    def flush(self) -> jax.Array:
        """The remaining audio, decoded with the true end of the stream (as a full decode sees it)."""
        self._finish()
        return self._advance(final=True)

    def _advance(self, final: bool) -> jax.Array:
        params, reach = self.codec.params, self.reach
        # 1. Input conv and LSTM for every frame whose right context exists (all of them at the end).
        ready = self._received if final else self._received - reach.conv_right
        if ready > self._lstm_done:
            start = max(self._embeddings_start, self._lstm_done - reach.conv_left)
            window = self._embeddings[:, start - self._embeddings_start :]  # up to the newest frame
            hidden = self._input_conv(params, window)[:, self._lstm_done - start : ready - start]
            output, self._lstm_state = self._lstm(params, hidden, self._lstm_state)  # [batch, n, dim]
            self._lstm_out = (
                output if self._lstm_out is None else jnp.concatenate([self._lstm_out, output], 1)
            )
            self._lstm_done = ready
            keep_from = max(self._embeddings_start, self._lstm_done - reach.conv_left)
            self._embeddings = self._embeddings[:, keep_from - self._embeddings_start :]
            self._embeddings_start = keep_from

        # 2. The upsampling stack for every frame whose right context exists.
        emit_to = self._lstm_done if final else self._lstm_done - reach.upsample_right
        if emit_to <= self._emitted:
            batch = self._shape[0] if self._shape else 0
            return jnp.zeros((batch, self.codec.audio_channels, 0), jnp.float32)
        hop = self.codec.hop_length
        start = max(self._lstm_out_start, self._emitted - reach.upsample_left)
        audio = self._upsample(params, self._lstm_out[:, start - self._lstm_out_start :])
        audio = audio[..., (self._emitted - start) * hop : (emit_to - start) * hop]
        self._emitted = emit_to
        keep_from = max(self._lstm_out_start, self._emitted - reach.upsample_left)
        self._lstm_out = self._lstm_out[:, keep_from - self._lstm_out_start :]
        self._lstm_out_start = keep_from
        return audio
