"""One way to load MusicGen's codec, on either backend: :func:`load_codec`.

Both backends give the same object to their callers: ``encode(audio, sample_rate)`` (resampled,
channels-first checked, stereo as the mono codec per channel), ``decode(codes)`` -> NumPy float32
``[batch, channels, samples]``, ``check_codes``, ``streaming_decoder()`` (``push``, ``flush``,
``reset``, ``warm_up``, ``lookahead_frames``) and the facts
(``sample_rate``, ``frame_rate``, ``hop_length``, ``num_codebooks``, ``total_codebooks``):

* ``torch``: :class:`~musicgen_jax.codec.encodec.EncodecBridge`, transformers' ``EncodecModel``
  (the parity reference; on the GPU when PyTorch sees one);
* ``jax``: :class:`~musicgen_jax.codec.jax_codec.JaxCodec`, the Flax codec (no PyTorch once loaded),
  on JAX's default device;
* ``auto`` (the default): ``jax``. Both take the same configs (mono, unchunked, unscaled:
  MusicGen's codecs) and give the same audio to float rounding; the JAX one-shot decode is 3-4x
  faster than PyTorch's on a CPU (docs/performance.md, benchmarks/codec_speed.py), and its
  streaming decoder pads its windows to a few bucketed lengths, so a stream reuses compiled
  programs (which ``warm_up`` compiles ahead) instead of compiling as chunk lengths change. Not yet
  measured on a GPU, where PyTorch runs its codec too.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.encodec import EncodecBridge
from musicgen_jax.codec.files import open_codec
from musicgen_jax.codec.jax_codec import JaxCodec
from musicgen_jax.conversion.tensors import CheckpointError

CODEC_BACKENDS = ("auto", "jax", "torch")


def check_backend(backend: str) -> str:
    """``backend`` when it is one of :data:`CODEC_BACKENDS`, else ValueError naming them."""
    if backend not in CODEC_BACKENDS:
        raise ValueError(f"codec backend must be one of {', '.join(CODEC_BACKENDS)}; got {backend!r}")
    return backend


def resolve_backend(backend: str) -> str:
    """The backend ``auto`` means (see the module docstring); the others as given."""
    return "jax" if check_backend(backend) == "auto" else backend


def bandwidth_for_codebooks(source: str | Path, codebooks: int) -> float:
    """The target bandwidth of ``source``'s codec at which it uses ``codebooks`` codebooks (a model's
    token layout); CheckpointError when it has none. A codec trained at several bandwidths defaults
    to the smallest (transformers' rule), which need not be the one a language model was trained on."""
    config = CodecConfig.from_dict(open_codec(source).config)
    for bandwidth in config.target_bandwidths:
        if config.quantizers_for_bandwidth(bandwidth) == codebooks:
            return float(bandwidth)
    offered = {float(b): config.quantizers_for_bandwidth(b) for b in config.target_bandwidths}
    raise CheckpointError(
        f"the codec has no bandwidth with {codebooks} codebooks (bandwidths and codebooks: {offered})"
    )


def load_codec(
    source: str | Path,
    *,
    audio_channels: int | None = None,
    backend: str = "auto",
    device: str = "auto",
    bandwidth: float | None = None,
    codebooks: int | None = None,
) -> EncodecBridge | JaxCodec:
    """MusicGen's codec from ``source`` (any source :func:`~musicgen_jax.codec.files.open_codec`
    takes) on ``backend``. ``audio_channels``: MusicGen's channel count (default: the source's model,
    else 1). ``device``: the torch device of the torch backend (``auto``: the GPU where PyTorch sees
    one); the JAX backend runs on JAX's default device. ``bandwidth`` (kbps) or ``codebooks`` (per
    channel, see :func:`bandwidth_for_codebooks`) chooses how many codebooks it uses; neither: a
    MusicGen model's own codebook count where the source is one and its codec offers it (tokens for
    fine-tuning it must have its layout), else the codec's default bandwidth."""
    if codebooks is not None:
        if bandwidth is not None:
            raise ValueError("give bandwidth or codebooks, not both")
        bandwidth = bandwidth_for_codebooks(source, codebooks)
    elif bandwidth is None and (model_codebooks := open_codec(source).codebooks) is not None:
        # A codec with no bandwidth of that many codebooks keeps its default, as before.
        with contextlib.suppress(CheckpointError):
            bandwidth = bandwidth_for_codebooks(source, model_codebooks)
    if resolve_backend(backend) == "jax":
        return JaxCodec.from_pretrained(source, audio_channels=audio_channels, bandwidth=bandwidth)
    return EncodecBridge.from_pretrained(
        source, audio_channels=audio_channels, device=device, bandwidth=bandwidth
    )
