"""One way to load MusicGen's codec, on either backend: :func:`load_codec`.

Both backends give the same object to their callers: ``encode(audio, sample_rate)`` (resampled,
channels-first checked, stereo as the mono codec per channel), ``decode(codes)`` -> NumPy float32
``[batch, channels, samples]``, ``check_codes``, ``streaming_decoder()`` and the facts
(``sample_rate``, ``frame_rate``, ``hop_length``, ``num_codebooks``, ``total_codebooks``):

* ``torch``: :class:`~musicgen_jax.codec.encodec.EncodecBridge`, transformers' ``EncodecModel``
  (the parity reference; on the GPU when PyTorch sees one);
* ``jax``: :class:`~musicgen_jax.codec.jax_codec.JaxCodec`, the Flax codec (no PyTorch once loaded),
  on JAX's default device;
* ``auto`` (the default): ``jax``. Both take the same configs (mono, unchunked, unscaled: MusicGen's
  codecs), so the choice is speed: on CPU the JAX decode of 10 s of codes of the 32 kHz codec is
  several times faster than PyTorch's once compiled (benchmarks/codec_speed.py measures it; a new
  code length compiles once, ~1 s). A config that only ``decode_chunks`` serves is refused by both
  with a clear error; ``auto`` then names the torch one, the reference.
"""

from __future__ import annotations

from pathlib import Path

from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.encodec import EncodecBridge
from musicgen_jax.codec.files import open_codec
from musicgen_jax.codec.jax_codec import JaxCodec

CODEC_BACKENDS = ("auto", "jax", "torch")


def check_backend(backend: str) -> str:
    """``backend`` when it is one of :data:`CODEC_BACKENDS`, else ValueError naming them."""
    if backend not in CODEC_BACKENDS:
        raise ValueError(f"codec backend must be one of {', '.join(CODEC_BACKENDS)}; got {backend!r}")
    return backend


def jax_serves(config: CodecConfig) -> bool:
    """Whether :class:`~musicgen_jax.codec.jax_codec.JaxCodec` (plain encode/decode) takes this codec."""
    return config.audio_channels == 1 and config.chunk_length_s is None and not config.normalize


def resolve_backend(backend: str, config: CodecConfig) -> str:
    """The backend ``auto`` means for this codec config (see the module docstring); others as given."""
    if check_backend(backend) != "auto":
        return backend
    return "jax" if jax_serves(config) else "torch"


def load_codec(
    source: str | Path,
    *,
    audio_channels: int | None = None,
    backend: str = "auto",
    device: str = "auto",
    bandwidth: float | None = None,
) -> EncodecBridge | JaxCodec:
    """MusicGen's codec from ``source`` (any source :func:`~musicgen_jax.codec.files.open_codec`
    takes) on ``backend``. ``audio_channels``: MusicGen's channel count (default: the source's model,
    else 1). ``device``: the torch device of the torch backend (``auto``: the GPU where PyTorch sees
    one); the JAX backend runs on JAX's default device."""
    files = open_codec(source)
    if resolve_backend(backend, CodecConfig.from_dict(files.config, where=files.where)) == "jax":
        return JaxCodec.from_pretrained(source, audio_channels=audio_channels, bandwidth=bandwidth)
    return EncodecBridge.from_pretrained(
        source, audio_channels=audio_channels, device=device, bandwidth=bandwidth
    )
