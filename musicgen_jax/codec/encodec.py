"""The EnCodec bridge: MusicGen's codes to audio and back, through transformers' PyTorch ``EncodecModel``.

The codec stays in PyTorch (it is small, runs once per request, and transformers' implementation
is the parity target); this module loads it from whatever holds it and converts at the edges:
NumPy/JAX ``[batch, codebooks, frames]`` int codes in, float32 ``[batch, channels, samples]`` out.

Stereo MusicGen uses the mono codec twice: the left and right channels are encoded separately and
their codebooks interleaved ``L0, R0, L1, R1, ...``; decoding splits them the same way (the layout
lives in :mod:`musicgen_jax.codec.channels`, shared with the JAX codec).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicgen_jax.codec.channels import (
    channel_codebooks,
    check_model_codes,
    codec_input,
    decode_in_chunks,
    interleave_codebooks,
)
from musicgen_jax.codec.files import fit_error, match_names, missing_names, open_codec
from musicgen_jax.conversion.tensors import CheckpointError, TensorSource

if TYPE_CHECKING:
    import torch
    from transformers import EncodecModel

    from musicgen_jax.codec.streaming import StreamingDecoder


class EncodecBridge:
    """A loaded EnCodec model that encodes audio to MusicGen codes and decodes codes to audio.

    ``audio_channels`` is MusicGen's channel count (1 mono, 2 stereo); the codec itself is mono.
    ``bandwidth`` (kbps, one of the codec's ``target_bandwidths``; default the smallest, as
    transformers does) fixes how many codebooks each channel uses.
    """

    def __init__(
        self,
        model: EncodecModel,
        audio_channels: int = 1,
        bandwidth: float | None = None,
        device: str = "auto",
    ):
        config = model.config
        device = resolve_device(device)
        _check_supported(config, where="EncodecModel")
        if audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 (mono) or 2 (stereo), got {audio_channels}")
        bandwidths = [float(b) for b in config.target_bandwidths]
        if bandwidth is None:
            bandwidth = bandwidths[0]
        if float(bandwidth) not in bandwidths:
            raise ValueError(f"bandwidth {bandwidth} kbps is not one of this codec's {bandwidths}")
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = device
        self.audio_channels = audio_channels
        self.bandwidth = float(bandwidth)

    # ------------------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        audio_channels: int | None = None,
        device: str = "auto",
        bandwidth: float | None = None,
    ) -> EncodecBridge:
        """Load from a transformers ``EncodecModel`` directory, a transformers MusicGen directory
        (its ``audio_encoder``), a musicgen-jax checkpoint (its ``codec/``), or a hub id of any of
        these (``facebook/encodec_32khz``). ``audio_channels`` defaults to the MusicGen model's
        channel count where the source records it, else 1. ``device`` is a torch device;
        ``auto`` is the GPU where PyTorch sees one (a 30 s decode takes ~20 ms there against
        ~0.3 s on 16 CPU cores), else the CPU."""
        files = open_codec(source)
        model = _build_model(files.config, where=str(files.directory))
        _load_weights(model, files.tensors(), where=files.where)
        channels = audio_channels if audio_channels is not None else (files.audio_channels or 1)
        return cls(model, audio_channels=channels, bandwidth=bandwidth, device=device)

    # ------------------------------------------------------------------------------ facts

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def hop_length(self) -> int:
        """Audio samples per codec frame (the product of the upsampling ratios)."""
        return int(math.prod(self.model.config.upsampling_ratios))

    @property
    def frame_rate(self) -> float:
        """Codec frames per second (50.0 for the 32 kHz codec, 75.0 for the 24 kHz one)."""
        return self.sample_rate / self.hop_length

    @property
    def codebook_size(self) -> int:
        return int(self.model.config.codebook_size)

    @property
    def num_codebooks(self) -> int:
        """Codebooks per channel at :attr:`bandwidth` (4 for MusicGen's 32 kHz codec)."""
        return int(self.model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth))

    @property
    def total_codebooks(self) -> int:
        """Codebooks per frame of the token stream: ``num_codebooks * audio_channels`` (8 for stereo)."""
        return self.num_codebooks * self.audio_channels

    def __repr__(self) -> str:
        return (
            f"EncodecBridge({self.sample_rate} Hz, {self.frame_rate:g} frames/s, "
            f"{self.num_codebooks} codebooks of {self.codebook_size}, {self.audio_channels} channel(s), "
            f"device={self.device!r})"
        )

    # ------------------------------------------------------------------------------ encode

    def encode(self, audio: Any, sample_rate: int) -> np.ndarray:
        """Float audio ``[batch, channels, samples]`` (or ``[channels, samples]``, or ``[samples]``)
        at ``sample_rate`` to int32 codes ``[batch, total_codebooks, frames]``.

        Resampled to the codec's rate when it differs; channels are mixed down to mono, or (mono
        input to a stereo model) duplicated, as audiocraft's ``convert_audio_channels`` does.
        """
        import torch

        audio = codec_input(audio, sample_rate, self.sample_rate, self.audio_channels)  # [batch, C, samples]
        with torch.inference_mode():
            per_channel = [
                self._encode_mono(audio[:, c : c + 1]) for c in range(audio.shape[1])
            ]  # [batch, K, frames]
        return interleave_codebooks(per_channel, self.audio_channels)

    def _encode_mono(self, audio: np.ndarray) -> np.ndarray:
        """``[batch, 1, samples]`` float32 -> ``[batch, K, frames]`` int32."""
        values = _to_torch(audio).to(self.device)
        output = self.model.encode(values, bandwidth=self.bandwidth, return_dict=True)
        codes = output.audio_codes[0]  # [batch, K, frames] (one chunk: the codec is not chunked)
        return codes.to("cpu", dtype=_torch().int32).numpy()

    # ------------------------------------------------------------------------------ decode

    def decode(self, codes: Any, chunk_frames: int | None = None) -> np.ndarray:
        """Codes ``[batch, total_codebooks, frames]`` (NumPy or JAX) to float32 audio
        ``[batch, audio_channels, frames * hop_length]``.

        Up to ``chunk_frames`` frames (default ``channels.DEFAULT_CHUNK_SECONDS`` of audio) are decoded
        in one call, bit-identical to transformers' ``EncodecModel.decode``; longer codes go through
        :class:`~musicgen_jax.codec.streaming.StreamingDecoder` in chunks of ``chunk_frames``, which
        carries the LSTM state and decodes each chunk with enough context that the result matches a
        single decode to float rounding.
        """
        return decode_in_chunks(self, self.check_codes(codes), chunk_frames, self._decode_whole)

    def _decode_whole(self, codes: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            channels = [self._decode_mono(part) for part in channel_codebooks(codes, self.audio_channels)]
        return channels[0] if len(channels) == 1 else np.concatenate(channels, axis=1)

    def _decode_mono(self, codes: np.ndarray) -> np.ndarray:
        """``[batch, K, frames]`` int64 (one channel's codebooks) -> ``[batch, 1, samples]`` float32."""
        values = _to_torch(codes).to(self.device)
        audio = self.model.decode(values[None], [None], return_dict=True).audio_values  # [batch, 1, samples]
        return audio.to("cpu").numpy()

    def check_codes(self, codes: Any) -> np.ndarray:
        """Validate codes and return them as int64 NumPy ``[batch, codebooks, frames]``."""
        return check_model_codes(
            codes,
            audio_channels=self.audio_channels,
            available=int(self.model.quantizer.num_quantizers),
            codebook_size=self.codebook_size,
            expected=self.total_codebooks,
        )

    def streaming_decoder(self) -> StreamingDecoder:
        """A new :class:`~musicgen_jax.codec.streaming.StreamingDecoder` over this codec."""
        from musicgen_jax.codec.streaming import StreamingDecoder

        return StreamingDecoder(self)


# ---------------------------------------------------------------------------------- helpers


def _torch():
    import torch

    return torch


def resolve_device(device: str) -> str:
    """``auto``: ``cuda`` where PyTorch has a GPU, else ``cpu``; anything else as given."""
    if device == "auto":
        return "cuda" if _torch().cuda.is_available() else "cpu"
    return device


def _to_torch(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing ``array``'s memory (copied only if it is not contiguous)."""
    torch = _torch()
    array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        # Arrays from JAX are read-only; torch warns, but nothing here writes to them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _check_supported(config, where: str) -> None:
    """Reject codec variants the bridge does not implement (Meta's 48 kHz model is one)."""
    if getattr(config, "chunk_length_s", None) is not None:
        raise CheckpointError(
            f"{where}: chunked EnCodec models (chunk_length_s={config.chunk_length_s}, e.g. encodec_48khz) "
            "are not supported; MusicGen's codecs encode the whole signal at once"
        )
    if getattr(config, "normalize", False):
        raise CheckpointError(f"{where}: EnCodec with normalize=True (per-chunk scales) is not supported")
    if int(config.audio_channels) != 1:
        raise CheckpointError(
            f"{where}: the codec has {config.audio_channels} channels; only mono codecs are supported "
            "(stereo MusicGen runs the mono codec once per channel)"
        )


def _build_model(codec_config: dict, where: str) -> EncodecModel:
    """An ``EncodecModel`` of this config, its weights left uninitialised (they are loaded next)."""
    from transformers import EncodecConfig, EncodecModel

    if codec_config.get("model_type", "encodec") != "encodec":
        raise CheckpointError(
            f"{where}: codec model_type is {codec_config.get('model_type')!r}, expected 'encodec'"
        )
    try:
        config = EncodecConfig.from_dict(codec_config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: invalid EnCodec config ({error})") from None
    _check_supported(config, where)
    try:  # random initialisation of a real codec costs seconds; every tensor is overwritten anyway
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x keeps it in modeling_utils
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        return EncodecModel(config)


def _load_weights(model: EncodecModel, source: TensorSource, where: str) -> None:
    """Copy every tensor of ``source`` into ``model``, checking names and shapes both ways."""
    expected = model.state_dict()
    matched, unexpected = match_names(source.keys(), expected)
    state = {}
    for target, name in matched.items():
        array = source.get(name, "float32")
        shape = tuple(expected[target].shape)
        if tuple(array.shape) != shape:
            raise CheckpointError(
                f"{where}: {name} has shape {tuple(array.shape)}, the config implies {shape}"
            )
        state[target] = _to_torch(array)
    if error := fit_error(where, missing_names(expected, state), unexpected):
        raise error
    model.load_state_dict(state, strict=False)
