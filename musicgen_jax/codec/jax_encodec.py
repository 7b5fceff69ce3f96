"""EnCodec in JAX: audio to codes and back, equal to transformers' ``EncodecModel``, without PyTorch.

:class:`JaxEncodec` loads from the same sources as the PyTorch bridge (see
:mod:`musicgen_jax.codec.files`) and runs the Flax SEANet encoder/decoder and residual quantiser
jitted (``jax.jit`` keeps one compiled program per input shape). It is the plain codec: audio has
the codec's own channel count and sample rate; MusicGen's stereo interleaving and resampling stay
with the caller.

Two interfaces, as transformers has:

* :meth:`JaxEncodec.encode` / :meth:`JaxEncodec.decode`: ``[batch, channels, samples]`` <->
  ``[batch, codebooks, frames]``, for codecs that encode the whole signal at once without
  rescaling it (MusicGen's 32 kHz codec, the 24 kHz one);
* :meth:`JaxEncodec.encode_chunks` / :meth:`JaxEncodec.decode_chunks`: any config, including
  ``chunk_length_s``/``overlap`` chunking and ``normalize`` scales (the 48 kHz codec), as
  :class:`EncodedChunks` shaped like transformers' ``encode`` output; chunks are overlap-added with
  transformers' linear fade when decoded.

Results are JAX arrays on the default device (``np.asarray`` one for NumPy); codes may come as
JAX arrays too and are then checked and decoded without leaving their device. Everything runs in
float32 at ``Precision.HIGHEST``; loading needs no PyTorch either, except to read a ``.bin`` file.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.codec.channels import check_code_range
from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.files import CodecFiles, open_codec
from musicgen_jax.codec.flax_export import save_pretrained
from musicgen_jax.codec.flax_params import load_params, quantizer_module
from musicgen_jax.codec.flax_seanet import Decoder, Encoder

NORMALIZE_EPS = 1e-8  # added to each chunk's RMS, as transformers does


@dataclasses.dataclass(frozen=True)
class EncodedChunks:
    """Codes of a chunked (or whole) encode, laid out as transformers' ``EncodecEncoderOutput``."""

    codes: jax.Array  # [chunks, batch, codebooks, frames_per_chunk] int32; the last chunk zero-padded
    scales: jax.Array | None  # [chunks, batch] float32 RMS of each chunk (normalize), else None
    last_frame_pad_length: int  # frames of padding at the end of the last chunk


# Jitted at module level with the (hashable, compared by config) Flax modules static: every codec
# of one config shares the compiled programs, one per input shape.
@functools.partial(jax.jit, static_argnames=("modules", "num_quantizers", "normalize"))
def _encode_chunk(params, audio: jax.Array, *, modules, num_quantizers: int, normalize: bool):
    """``[batch, channels, samples]`` -> (codes ``[batch, K, frames]``, scale ``[batch]`` or None)."""
    encoder, _, quantizer = modules
    scale = None
    if normalize:
        mono = jnp.sum(audio, axis=1, keepdims=True) / audio.shape[1]  # [batch, 1, samples]
        scale = jnp.sqrt(jnp.mean(jnp.square(mono), axis=-1, keepdims=True)) + NORMALIZE_EPS
        audio = audio / scale
        scale = scale[:, 0, 0]
    embeddings = encoder.apply(
        {"params": params["encoder"]}, jnp.swapaxes(audio, 1, 2)
    )  # [batch, frames, dim]
    codes = quantizer.apply(
        {"params": params["quantizer"]}, embeddings, num_quantizers, method=type(quantizer).encode
    )
    return codes, scale


@functools.partial(jax.jit, static_argnames=("modules",))
def _decode_chunk(params, codes: jax.Array, scale: jax.Array | None, *, modules) -> jax.Array:
    """Codes ``[batch, K, frames]`` -> audio ``[batch, channels, frames * hop]``."""
    _, decoder, quantizer = modules
    embeddings = quantizer.apply({"params": params["quantizer"]}, codes)  # [batch, frames, dim]
    audio = jnp.swapaxes(decoder.apply({"params": params["decoder"]}, embeddings), 1, 2)
    return audio if scale is None else audio * scale[:, None, None]


def linear_overlap_add(frames: list[jax.Array], stride: int) -> jax.Array:
    """transformers' ``_linear_overlap_add``: chunks ``[..., length]`` started ``stride`` apart,
    each weighted by a triangle peaking mid-chunk, summed and divided by the summed weights."""
    length = frames[0].shape[-1]
    total = stride * (len(frames) - 1) + frames[-1].shape[-1]
    times = np.linspace(0.0, 1.0, length + 2)[1:-1]
    weight = jnp.asarray(0.5 - np.abs(times - 0.5), frames[0].dtype)  # [length]
    out = jnp.zeros(frames[0].shape[:-1] + (total,), frames[0].dtype)
    weights = jnp.zeros((total,), frames[0].dtype)
    for index, frame in enumerate(frames):
        start, size = index * stride, frame.shape[-1]
        out = out.at[..., start : start + size].add(weight[:size] * frame)
        weights = weights.at[start : start + size].add(weight[:size])
    return out / weights


class JaxEncodec:
    """A loaded EnCodec model: :meth:`encode` audio to codes, :meth:`decode` codes to audio.

    ``bandwidth`` (kbps, one of the config's ``target_bandwidths``; default the smallest, as
    transformers does) fixes how many codebooks :meth:`encode` uses.
    """

    def __init__(self, config: CodecConfig, params: dict, bandwidth: float | None = None):
        bandwidths = [float(b) for b in config.target_bandwidths]
        bandwidth = bandwidths[0] if bandwidth is None else float(bandwidth)
        if bandwidth not in bandwidths:
            raise ValueError(f"bandwidth {bandwidth} kbps is not one of this codec's {bandwidths}")
        self._config = config
        self.params = params
        self.bandwidth = bandwidth
        self.modules = (Encoder(config), Decoder(config), quantizer_module(config))
        self._encode_chunk = functools.partial(_encode_chunk, modules=self.modules)
        self._decode_chunk = functools.partial(_decode_chunk, modules=self.modules)

    @classmethod
    def from_pretrained(cls, source: str | Path, bandwidth: float | None = None) -> JaxEncodec:
        """Load from a transformers ``EncodecModel`` directory (safetensors or ``.bin``), a
        transformers MusicGen directory (its ``audio_encoder``), a musicgen-jax checkpoint (its
        ``codec/``), or a hub id of any of these (``facebook/encodec_32khz``)."""
        return cls.from_files(open_codec(source), bandwidth=bandwidth)

    @classmethod
    def from_files(cls, files: CodecFiles, bandwidth: float | None = None) -> JaxEncodec:
        """Load from a located source (:func:`~musicgen_jax.codec.files.open_codec`)."""
        config = CodecConfig.from_dict(files.config, where=files.where)
        return cls(config, load_params(files.tensors(), config, files.where), bandwidth=bandwidth)

    def save_pretrained(
        self, directory: str | Path, codebook_statistics: dict | None = None, overwrite: bool = False
    ) -> Path:
        """Write this codec as a transformers ``EncodecModel`` directory (``config.json``,
        ``model.safetensors``) that transformers, the PyTorch bridge and :meth:`from_pretrained` load;
        see :func:`musicgen_jax.codec.flax_export.save_pretrained` for the arguments."""
        return save_pretrained(self._config, self.params, directory, codebook_statistics, overwrite)

    # ------------------------------------------------------------------------------ facts

    @property
    def config(self) -> CodecConfig:
        return self._config

    @property
    def sample_rate(self) -> int:
        return self._config.sampling_rate

    @property
    def audio_channels(self) -> int:
        return self._config.audio_channels

    @property
    def hop_length(self) -> int:
        """Audio samples per codec frame (the product of the upsampling ratios)."""
        return self._config.hop_length

    @property
    def frame_rate(self) -> float:
        """Codec frames per second (50.0 for the 32 kHz codec, 75.0 for the 24 kHz one)."""
        return self.sample_rate / self.hop_length

    @property
    def codebook_size(self) -> int:
        return self._config.codebook_size

    @property
    def num_codebooks(self) -> int:
        """Codebooks :meth:`encode` uses at :attr:`bandwidth` (4 for MusicGen's 32 kHz codec)."""
        return self._config.quantizers_for_bandwidth(self.bandwidth)

    def __repr__(self) -> str:
        return (
            f"JaxEncodec({self.sample_rate} Hz, {self.audio_channels} channel(s), "
            f"{self.frame_rate:g} frames/s, {self.num_codebooks} codebooks of {self.codebook_size})"
        )

    # ------------------------------------------------------------------------------ whole signal

    def encode(self, audio: Any) -> jax.Array:
        """Float audio ``[batch, channels, samples]`` at :attr:`sample_rate` -> int32 codes
        ``[batch, num_codebooks, ceil(samples / hop_length)]``."""
        self._require_whole("encode")
        codes, _ = self._encode_chunk(
            self.params, self._check_audio(audio), num_quantizers=self.num_codebooks, normalize=False
        )
        return codes

    def decode(self, codes: Any) -> jax.Array:
        """Codes ``[batch, K, frames]`` (K from 1 to the codec's codebooks) -> float32 audio
        ``[batch, channels, frames * hop_length]``."""
        self._require_whole("decode")
        codes = self.check_codes(codes)
        if codes.shape[-1] == 0:
            return jnp.zeros((codes.shape[0], self.audio_channels, 0), jnp.float32)
        return self._decode_chunk(self.params, codes, None)

    def _require_whole(self, what: str) -> None:
        config = self._config
        if config.chunk_length_s is not None or config.normalize:
            raise ValueError(
                f"this codec encodes in chunks or rescales them (chunk_length_s={config.chunk_length_s}, "
                f"normalize={config.normalize}): its codes alone do not make the audio; "
                f"use {what}_chunks()"
            )

    # ------------------------------------------------------------------------------ chunks

    def encode_chunks(self, audio: Any) -> EncodedChunks:
        """Audio ``[batch, channels, samples]`` -> :class:`EncodedChunks`, as transformers' ``encode``:
        chunks of ``chunk_length`` samples every ``chunk_stride`` (one chunk when the config has
        none), each scaled to unit RMS first when the config asks (``normalize``)."""
        audio = self._check_audio(audio)
        samples = audio.shape[-1]
        length = self._config.chunk_length or samples
        stride = self._config.chunk_stride or samples
        pieces = [
            self._encode_chunk(
                self.params,
                audio[..., start : start + length],
                num_quantizers=self.num_codebooks,
                normalize=self._config.normalize,
            )
            for start in range(0, samples, stride)
        ]
        frames = pieces[0][0].shape[-1]
        pad = frames - pieces[-1][0].shape[-1]
        codes = jnp.stack(
            [c for c, _ in pieces[:-1]] + [jnp.pad(pieces[-1][0], ((0, 0), (0, 0), (0, pad)))]
        )  # [chunks, batch, K, frames]
        scales = jnp.stack([s for _, s in pieces]) if self._config.normalize else None  # [chunks, batch]
        return EncodedChunks(codes, scales, pad)

    def decode_chunks(self, encoded: EncodedChunks) -> jax.Array:
        """:class:`EncodedChunks` -> float32 audio ``[batch, channels, samples]``, as transformers'
        ``decode``: each chunk decoded (and rescaled), the chunks overlap-added."""
        chunks = encoded.codes.shape[0]
        decoded = []
        for index in range(chunks):
            codes = self.check_codes(encoded.codes[index])
            if index == chunks - 1 and encoded.last_frame_pad_length > 0:
                codes = codes[..., : -encoded.last_frame_pad_length]
            scale = None if encoded.scales is None else jnp.asarray(encoded.scales[index], jnp.float32)
            decoded.append(self._decode_chunk(self.params, codes, scale))
        if self._config.chunk_length is None:
            if chunks != 1:
                raise ValueError(f"this codec encodes the whole signal as one chunk; got {chunks}")
            return decoded[0]
        return linear_overlap_add(decoded, self._config.chunk_stride or 1)

    # ------------------------------------------------------------------------------ checks

    def _check_audio(self, audio: Any) -> jax.Array:
        on_device = isinstance(audio, jax.Array)
        array = audio if on_device else np.asarray(audio)
        if array.ndim != 3:
            raise ValueError(f"audio must be [batch, channels, samples], got shape {array.shape}")
        if array.shape[1] != self.audio_channels:
            raise ValueError(
                f"audio has {array.shape[1]} channel(s); this codec takes {self.audio_channels} "
                "(audio is [batch, channels, samples])"
            )
        if array.shape[-1] == 0:
            raise ValueError("cannot encode empty audio")
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"audio must be floating point, got {array.dtype}")
        finite = jnp.isfinite(array).all() if on_device else np.isfinite(array).all()
        if not bool(finite):
            raise ValueError("audio contains NaN or infinite values")
        return jnp.asarray(array, jnp.float32)

    def check_codes(self, codes: Any) -> np.ndarray | jax.Array:
        """Validate codes ``[batch, K, frames]`` and return them as int32 where they are: a JAX array
        stays on its device (its value range is checked there: two scalars come back, not the
        codes), anything else becomes NumPy."""
        array = codes if isinstance(codes, jax.Array) else np.asarray(codes)
        if array.ndim != 3:
            raise ValueError(f"codes must be [batch, codebooks, frames], got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"codes must be integers, got {array.dtype}")
        available = self._config.num_quantizers
        if not 1 <= array.shape[1] <= available:
            raise ValueError(f"codes have {array.shape[1]} codebooks; this codec takes 1 to {available}")
        check_code_range(array, self.codebook_size)
        return array.astype(jnp.int32) if isinstance(array, jax.Array) else array.astype(np.int32, copy=False)
