"""The EnCodec configuration as a typed, frozen dataclass, read from a transformers ``EncodecConfig`` dict.

The defaults are transformers' (those of ``facebook/encodec_24khz``), so a ``config.json`` written
with only the values that differ from them (as older transformers versions save it) reads the same;
tests/test_codec_jax.py checks the two sets of defaults agree. The derived facts (hop length, frame
rate, chunk length and stride, codebooks per bandwidth) are computed exactly as transformers does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from musicgen_jax.conversion.tensors import CheckpointError

NORM_TYPES = ("weight_norm", "time_group_norm")
# torch ``F.pad`` modes the convolutions may use.
PAD_MODES = ("reflect", "constant", "replicate", "circular")


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """transformers' ``EncodecConfig`` fields, with its defaults."""

    sampling_rate: int = 24_000
    audio_channels: int = 1
    target_bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)  # kbps
    normalize: bool = False  # scale each chunk to unit RMS before encoding, and back after decoding
    chunk_length_s: float | None = None  # encode in chunks of this many seconds (48 kHz model: 1.0)
    overlap: float | None = None  # fraction of a chunk shared with the next one
    hidden_size: int = 128
    num_filters: int = 32
    num_residual_layers: int = 1
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)
    norm_type: str = "weight_norm"
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "reflect"
    compress: int = 2
    num_lstm_layers: int = 2
    trim_right_ratio: float = 1.0
    codebook_size: int = 1024
    codebook_dim: int | None = None  # None: hidden_size
    use_conv_shortcut: bool = True

    def __post_init__(self):
        if self.codebook_dim is None:
            object.__setattr__(self, "codebook_dim", self.hidden_size)
        if self.norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {self.norm_type!r}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if 2 ** int(math.log2(self.codebook_size)) != self.codebook_size:
            raise ValueError(f"codebook_size must be a power of 2, got {self.codebook_size}")
        if not (self.use_causal_conv or self.trim_right_ratio == 1.0):
            raise ValueError("trim_right_ratio != 1.0 only makes sense for causal convolutions")
        if self.codebook_dim != self.hidden_size:
            raise ValueError(
                f"codebook_dim {self.codebook_dim} must equal hidden_size {self.hidden_size} "
                "(the quantizer reads the encoder's output directly)"
            )
        if self.chunk_length_s is not None and self.overlap is None:
            # transformers cannot encode such a config either (its chunk stride is None).
            raise ValueError("chunk_length_s needs overlap (the fraction of a chunk shared with the next)")
        if self.num_quantizers < 1:
            raise ValueError(
                f"the largest target bandwidth ({self.target_bandwidths[-1]} kbps) is below one codebook's "
                f"{self.frame_rate * math.log2(self.codebook_size) / 1000:g} kbps"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "EnCodec config") -> CodecConfig:
        """From a transformers ``EncodecConfig`` dict; keys that are not codec fields are ignored."""
        if data.get("model_type", "encodec") != "encodec":
            raise CheckpointError(
                f"{where}: codec model_type is {data.get('model_type')!r}, expected 'encodec'"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        for name in ("target_bandwidths", "upsampling_ratios"):
            if name in values:
                values[name] = tuple(values[name])
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{where}: invalid EnCodec config ({error})") from None

    def to_dict(self) -> dict[str, Any]:
        """The transformers ``EncodecConfig`` dict of this config."""
        data = dataclasses.asdict(self)
        data["target_bandwidths"] = list(self.target_bandwidths)
        data["upsampling_ratios"] = list(self.upsampling_ratios)
        return {"model_type": "encodec", **data}

    # ------------------------------------------------------------------------------ derived facts

    @property
    def hop_length(self) -> int:
        """Audio samples per codec frame."""
        return math.prod(self.upsampling_ratios)

    @property
    def frame_rate(self) -> int:
        """Frames per second, rounded up as transformers rounds it (it sets the bits per second)."""
        return math.ceil(self.sampling_rate / self.hop_length)

    @property
    def chunk_length(self) -> int | None:
        """Samples per encoded chunk, or None when the whole signal is encoded at once."""
        return None if self.chunk_length_s is None else int(self.chunk_length_s * self.sampling_rate)

    @property
    def chunk_stride(self) -> int | None:
        """Samples from one chunk's start to the next one's."""
        if self.chunk_length_s is None or self.overlap is None:
            return None
        return max(1, int((1.0 - self.overlap) * self.chunk_length))

    @property
    def num_quantizers(self) -> int:
        """Codebooks the model holds (enough for the largest target bandwidth)."""
        bits = math.ceil(math.log2(self.codebook_size))
        return int(1000 * self.target_bandwidths[-1] // (self.frame_rate * bits))

    def quantizers_for_bandwidth(self, bandwidth: float | None) -> int:
        """Codebooks used at ``bandwidth`` kbps (transformers' ``get_num_quantizers_for_bandwidth``)."""
        bits_per_codebook = math.log2(self.codebook_size) * self.frame_rate
        if bandwidth is None or bandwidth <= 0.0:
            return self.num_quantizers
        return int(max(1, math.floor(bandwidth * 1000 / bits_per_codebook)))
