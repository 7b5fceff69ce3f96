"""The EnCodec codec: MusicGen codes to audio and back, whole or streamed.

Two backends load from the same sources (:mod:`musicgen_jax.codec.files`): the PyTorch bridge
(:class:`EncodecBridge`, :class:`StreamingDecoder`) and the JAX codec (:class:`JaxEncodec`,
:class:`JaxStreamingDecoder`), equal to transformers' ``EncodecModel`` and free of PyTorch once loaded.
"""

from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.encodec import EncodecBridge
from musicgen_jax.codec.jax_encodec import EncodedChunks, JaxEncodec
from musicgen_jax.codec.jax_streaming import JaxStreamingDecoder
from musicgen_jax.codec.streaming import StreamingDecoder

__all__ = [
    "CodecConfig",
    "EncodecBridge",
    "EncodedChunks",
    "JaxEncodec",
    "JaxStreamingDecoder",
    "StreamingDecoder",
]
