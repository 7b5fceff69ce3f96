"""The EnCodec codec: MusicGen codes to audio and back, whole or streamed.

Two backends load from the same sources (:mod:`musicgen_jax.codec.files`): the PyTorch bridge
(:class:`EncodecBridge`, :class:`StreamingDecoder`) and the JAX codec (:class:`JaxEncodec`,
:class:`JaxStreamingDecoder`), equal to transformers' ``EncodecModel`` and free of PyTorch once loaded.
Callers load either through :func:`load_codec` (``backend="auto" | "jax" | "torch"``)
and get the same interface from both.
"""

from musicgen_jax.codec.backends import CODEC_BACKENDS, check_backend, load_codec
from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.encodec import EncodecBridge
from musicgen_jax.codec.jax_codec import JaxCodec, JaxCodecStream
from musicgen_jax.codec.jax_encodec import EncodedChunks, JaxEncodec
from musicgen_jax.codec.jax_streaming import JaxStreamingDecoder
from musicgen_jax.codec.streaming import StreamingDecoder

__all__ = [
    "CODEC_BACKENDS",
    "CodecConfig",
    "EncodecBridge",
    "EncodedChunks",
    "JaxCodec",
    "JaxCodecStream",
    "JaxEncodec",
    "JaxStreamingDecoder",
    "StreamingDecoder",
    "check_backend",
    "load_codec",
]
