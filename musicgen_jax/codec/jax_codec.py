"""The JAX codec as MusicGen uses it: :class:`JaxEncodec` behind the PyTorch bridge's interface.

:class:`JaxEncodec` is the plain codec (audio at its own rate and channel count, JAX arrays out).
:class:`JaxCodec` adds what MusicGen needs around it, from the same shared functions the bridge uses
(:mod:`musicgen_jax.codec.channels`): resampling and channel mixing of audio going in, stereo as the
mono codec run per channel with codebooks interleaved ``L0, R0, L1, R1, ...``, NumPy float32 audio
out, long codes decoded in chunks through the streaming decoder. So a caller holding either backend
(see :func:`musicgen_jax.codec.backends.load_codec`) cannot tell which it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.codec.channels import (
    channels_as_rows,
    check_code_range,
    check_model_codes,
    check_model_layout,
    codec_input,
    decode_in_chunks,
    interleave_codebooks,
    rows_as_channels,
)
from musicgen_jax.codec.files import open_codec
from musicgen_jax.codec.jax_encodec import JaxEncodec
from musicgen_jax.codec.jax_streaming import JaxStreamingDecoder
from musicgen_jax.conversion.tensors import CheckpointError


class JaxCodec:
    """MusicGen's codec on JAX: ``encode(audio, sample_rate)`` and ``decode(codes)`` as
    :class:`~musicgen_jax.codec.encodec.EncodecBridge` has them. ``audio_channels`` is MusicGen's
    channel count (1 mono, 2 stereo); the codec itself must be mono, unchunked and unscaled (as
    MusicGen's codecs are; the bridge takes the same ones)."""

    def __init__(self, codec: JaxEncodec, audio_channels: int = 1):
        config = codec.config
        if config.chunk_length_s is not None or config.normalize:
            raise CheckpointError(
                f"chunked or normalised EnCodec models (chunk_length_s={config.chunk_length_s}, "
                f"normalize={config.normalize}) are not supported; MusicGen's codecs encode the whole "
                "signal at once"
            )
        if config.audio_channels != 1:
            raise CheckpointError(
                f"the codec has {config.audio_channels} channels; only mono codecs are supported "
                "(stereo MusicGen runs the mono codec once per channel)"
            )
        if audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 (mono) or 2 (stereo), got {audio_channels}")
        self.codec = codec
        self.audio_channels = audio_channels

    @classmethod
    def from_pretrained(
        cls, source: str | Path, audio_channels: int | None = None, bandwidth: float | None = None
    ) -> JaxCodec:
        """Load from any source :func:`~musicgen_jax.codec.files.open_codec` takes; ``audio_channels``
        defaults to the MusicGen model's channel count where the source records it, else 1."""
        files = open_codec(source)
        channels = audio_channels if audio_channels is not None else (files.audio_channels or 1)
        return cls(JaxEncodec.from_files(files, bandwidth=bandwidth), audio_channels=channels)

    # ------------------------------------------------------------------------------ facts

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def hop_length(self) -> int:
        return self.codec.hop_length

    @property
    def frame_rate(self) -> float:
        return self.codec.frame_rate

    @property
    def codebook_size(self) -> int:
        return self.codec.codebook_size

    @property
    def bandwidth(self) -> float:
        return self.codec.bandwidth

    @property
    def num_codebooks(self) -> int:
        """Codebooks per channel at :attr:`bandwidth` (4 for MusicGen's 32 kHz codec)."""
        return self.codec.num_codebooks

    @property
    def total_codebooks(self) -> int:
        """Codebooks per frame of the token stream: ``num_codebooks * audio_channels`` (8 for stereo)."""
        return self.num_codebooks * self.audio_channels

    def __repr__(self) -> str:
        return (
            f"JaxCodec({self.sample_rate} Hz, {self.frame_rate:g} frames/s, "
            f"{self.num_codebooks} codebooks of {self.codebook_size}, {self.audio_channels} channel(s))"
        )

    # ------------------------------------------------------------------------------ encode and decode

    def encode(self, audio: Any, sample_rate: int) -> np.ndarray:
        """Float audio ``[batch, channels, samples]`` (or ``[channels, samples]``, or ``[samples]``)
        at ``sample_rate`` to int32 codes ``[batch, total_codebooks, frames]`` (see the bridge's)."""
        audio = codec_input(audio, sample_rate, self.sample_rate, self.audio_channels)  # [batch, C, samples]
        per_channel = [
            np.asarray(self.codec.encode(audio[:, c : c + 1])) for c in range(audio.shape[1])
        ]  # [batch, K, frames] int32
        return interleave_codebooks(per_channel, self.audio_channels)

    def decode(self, codes: Any, chunk_frames: int | None = None) -> np.ndarray:
        """Codes ``[batch, total_codebooks, frames]`` (NumPy or JAX) to float32 NumPy audio
        ``[batch, audio_channels, frames * hop_length]``; codes longer than ``chunk_frames`` (default
        30 s) through the streaming decoder in chunks, which keeps memory bounded and matches a
        single decode to float rounding. Codes given as a JAX array are decoded where they are,
        without a trip to the host."""
        return decode_in_chunks(self, self.check_codes(codes), chunk_frames, self._decode_whole)

    def _decode_whole(self, codes: np.ndarray | jax.Array) -> np.ndarray:
        xp = jnp if isinstance(codes, jax.Array) else np
        rows = channels_as_rows(codes, self.audio_channels, xp)  # [channels*batch, K, frames]
        audio = np.asarray(self.codec.decode(rows), np.float32)  # [channels*batch, 1, samples]
        return rows_as_channels(audio, self.audio_channels)

    def check_codes(self, codes: Any) -> np.ndarray | jax.Array:
        """Validate codes ``[batch, codebooks, frames]``; return them as int64 NumPy, or, given a JAX
        array, as an int32 JAX array on its device (checked there: two scalars come back, not the
        codes)."""
        if not isinstance(codes, jax.Array):
            return check_model_codes(
                codes,
                audio_channels=self.audio_channels,
                available=self.codec.config.num_quantizers,
                codebook_size=self.codebook_size,
                expected=self.total_codebooks,
            )
        check_model_layout(
            codes.shape,
            codes.dtype,
            audio_channels=self.audio_channels,
            available=self.codec.config.num_quantizers,
            expected=self.total_codebooks,
        )
        check_code_range(codes, self.codebook_size)
        return codes.astype(jnp.int32)

    def streaming_decoder(self) -> JaxCodecStream:
        return JaxCodecStream(self)


class JaxCodecStream:
    """:class:`~musicgen_jax.codec.jax_streaming.JaxStreamingDecoder` over MusicGen's channels: push
    codes ``[batch, total_codebooks, n]``, get NumPy float32 ``[batch, audio_channels, samples]``,
    as the PyTorch :class:`~musicgen_jax.codec.streaming.StreamingDecoder` does."""

    def __init__(self, codec: JaxCodec):
        self.codec = codec
        self._stream = JaxStreamingDecoder(codec.codec)  # channels run as extra batch rows

    def reset(self) -> None:
        self._stream.reset()

    @property
    def lookahead_frames(self) -> int:
        return self._stream.lookahead_frames

    @property
    def frames_received(self) -> int:
        return self._stream.frames_received

    @property
    def samples_emitted(self) -> int:
        return self._stream.samples_emitted

    def push(self, codes: Any) -> np.ndarray:
        """Add frames ``[batch, total_codebooks, n_frames]``; return the audio that is now final."""
        # The stream decodes from the host (see JaxStreamingDecoder): a JAX array is copied there.
        codes = self.codec.check_codes(np.asarray(codes))
        return self._audio(self._stream.push(channels_as_rows(codes, self.codec.audio_channels)))

    def flush(self) -> np.ndarray:
        """The remaining audio, decoded with the true end of the stream."""
        return self._audio(self._stream.flush())

    def warm_up(self, push_frames: int, batch: int = 1) -> None:
        """Compile the programs a stream of ``push_frames``-frame pushes of ``batch`` rows runs (see
        :meth:`JaxStreamingDecoder.warm_up`); this stream is untouched."""
        self._stream.warm_up(push_frames, batch * self.codec.audio_channels)  # channels are rows

    def _audio(self, rows: np.ndarray) -> np.ndarray:
        """``[channels*batch, 1, samples]`` -> ``[batch, channels, samples]`` NumPy float32."""
        return rows_as_channels(rows, self.codec.audio_channels)
