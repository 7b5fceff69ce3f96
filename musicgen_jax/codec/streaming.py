"""Decoding codes to audio as they arrive, matching a single full decode.

EnCodec's decoder is ``conv -> LSTM -> (ELU, transposed conv, residual blocks)* -> ELU -> conv``, with
non-causal (centred, reflect-padded) convolutions. Cutting the codes into pieces and decoding each
alone clicks at the joins: the LSTM restarts from zero and every convolution sees reflect padding
where the neighbouring audio should be. :class:`StreamingDecoder` instead runs the three stages
separately:

* the first convolution on each new frame once the frames it looks ahead to exist (3 frames), with
  3 frames of left context re-read;
* the LSTM on those frames only, carrying its ``(h, c)`` state from push to push (exact);
* the upsampling stack, which has a finite receptive field (a few frames each way), on the new
  frames plus that many frames of left context; the frames whose right context has not arrived
  yet are held back and emitted by a later push or by :meth:`StreamingDecoder.flush`.

The start and end of the stream see the same reflect padding a full decode sees, so the
concatenated chunks equal the full decode up to float rounding (about 1e-7 absolute, see
tests/test_codec.py), whatever the push sizes. Reaches are taken symmetric: at the start of a
stream the left reflect padding reads frames to the right, so even a causal codec's (the 24 kHz
one's) first outputs look ahead. Each push costs its own frames plus a fixed
context; audio for a frame is out ``lookahead_frames`` (7 for MusicGen's codec: 140 ms) after it
arrives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from musicgen_jax.codec.channels import channels_as_rows, rows_as_channels
from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.layout import StreamCounters, decoder_reach

if TYPE_CHECKING:
    import torch

    from musicgen_jax.codec.encodec import EncodecBridge


class StreamingDecoder(StreamCounters):
    """Push codes ``[batch, codebooks, n_frames]`` as they are generated; get audio chunks back.

    ``push`` returns float32 ``[batch, audio_channels, samples]`` (possibly with 0 samples);
    ``flush`` returns the held-back tail. The batch size and codebook count are fixed by the first
    push. After ``flush`` the decoder is finished; :meth:`reset` starts a new stream.
    """

    def __init__(self, bridge: EncodecBridge):
        self.bridge = bridge
        layers = list(bridge.model.decoder.layers)
        kinds = [type(layer).__name__ for layer in layers[:2]]
        if kinds != ["EncodecConv1d", "EncodecLSTM"]:
            raise NotImplementedError(f"unexpected EnCodec decoder layout {kinds}; cannot stream it")
        self._input_conv = layers[0]
        self._lstm = layers[1].lstm
        self._upsampler = layers[2:]
        # Receptive fields in frames: how far each stage looks left and right of an output frame.
        reach = decoder_reach(CodecConfig.from_dict(bridge.model.config.to_dict()))
        self._conv_left, self._conv_right = reach.conv_left, reach.conv_right
        self._upsample_left, self._upsample_right = reach.upsample_left, reach.upsample_right
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next push starts a new one."""
        self._reset_counters()
        self._lstm_done = 0  # frames through the input conv and the LSTM
        self._embeddings: torch.Tensor | None = None  # [rows, dim, frames] from _embeddings_start
        self._embeddings_start = 0
        self._lstm_out: torch.Tensor | None = None  # [rows, dim, frames] from _lstm_out_start
        self._lstm_out_start = 0
        self._lstm_state: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def lookahead_frames(self) -> int:
        """Frames that must follow a frame before its audio can be emitted."""
        return self._conv_right + self._upsample_right

    @property
    def hop_length(self) -> int:
        return self.bridge.hop_length

    def push(self, codes: Any) -> np.ndarray:
        """Add frames ``[batch, codebooks, n_frames]``; return the audio that is now final."""
        import torch

        self._check_open()
        codes = self.bridge.check_codes(codes)  # [batch, codebooks, n] int64
        self._accept(codes)
        with torch.inference_mode():
            if codes.shape[-1]:
                self._append_embeddings(codes)
            return self._advance(final=False)

    def flush(self) -> np.ndarray:
        """The remaining audio, decoded with the true end of the stream (as a full decode sees it)."""
        import torch

        self._finish()
        with torch.inference_mode():
            return self._advance(final=True)

    def warm_up(self, push_frames: int, batch: int = 1) -> None:
        """Nothing to do: PyTorch compiles no program per shape. (The JAX stream's ``warm_up``
        compiles its windows; both streams take the call, so a server need not ask which it has.)"""

    # ------------------------------------------------------------------------------ stages

    def _append_embeddings(self, codes: np.ndarray) -> None:
        """Quantizer lookups of new frames; channels become extra batch rows (left rows first)."""
        import torch

        rows = channels_as_rows(codes, self.bridge.audio_channels)  # [channels*batch, K, n]
        values = torch.from_numpy(np.ascontiguousarray(rows)).to(self.bridge.device)
        embeddings = self.bridge.model.quantizer.decode(values.transpose(0, 1))  # [rows, dim, n]
        self._embeddings = (
            embeddings if self._embeddings is None else torch.cat([self._embeddings, embeddings], -1)
        )
        self._received += codes.shape[-1]

    def _advance(self, final: bool) -> np.ndarray:
        import torch

        # 1. Input conv and LSTM for every frame whose right context exists (all of them at the end).
        ready = self._received if final else self._received - self._conv_right
        if ready > self._lstm_done:
            start = max(self._embeddings_start, self._lstm_done - self._conv_left)
            window = self._embeddings[..., start - self._embeddings_start :]  # up to the newest frame
            hidden = self._input_conv(window)[..., self._lstm_done - start : ready - start]  # [rows, dim, n]
            sequence = hidden.permute(2, 0, 1)  # [n, rows, dim]: nn.LSTM is time-major
            output, self._lstm_state = self._lstm(sequence, self._lstm_state)
            output = (output + sequence).permute(1, 2, 0)  # EncodecLSTM's residual; [rows, dim, n]
            self._lstm_out = output if self._lstm_out is None else torch.cat([self._lstm_out, output], -1)
            self._lstm_done = ready
            self._trim_embeddings()

        # 2. The upsampling stack for every frame whose right context exists.
        emit_to = self._lstm_done if final else self._lstm_done - self._upsample_right
        if emit_to <= self._emitted:
            return self._empty()
        hop = self.bridge.hop_length
        start = max(self._lstm_out_start, self._emitted - self._upsample_left)
        hidden = self._lstm_out[..., start - self._lstm_out_start :]
        for layer in self._upsampler:
            hidden = layer(hidden)  # ends as [rows, 1, frames * hop]
        audio = hidden[..., (self._emitted - start) * hop : (emit_to - start) * hop]
        self._emitted = emit_to
        self._trim_lstm_out()
        return self._to_output(audio)

    def _trim_embeddings(self) -> None:
        keep_from = max(self._embeddings_start, self._lstm_done - self._conv_left)
        self._embeddings = self._embeddings[..., keep_from - self._embeddings_start :]
        self._embeddings_start = keep_from

    def _trim_lstm_out(self) -> None:
        keep_from = max(self._lstm_out_start, self._emitted - self._upsample_left)
        self._lstm_out = self._lstm_out[..., keep_from - self._lstm_out_start :]
        self._lstm_out_start = keep_from

    def _to_output(self, audio: torch.Tensor) -> np.ndarray:
        """``[channels*batch, 1, samples]`` -> ``[batch, channels, samples]`` float32 NumPy."""
        return rows_as_channels(audio.to("cpu").numpy(), self.bridge.audio_channels)

    def _empty(self) -> np.ndarray:
        batch = self._shape[0] if self._shape else 0
        return np.zeros((batch, self.bridge.audio_channels, 0), np.float32)
