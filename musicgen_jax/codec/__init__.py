"""The EnCodec codec bridge (PyTorch): MusicGen codes to audio and back, whole or streamed."""

from musicgen_jax.codec.encodec import EncodecBridge
from musicgen_jax.codec.streaming import StreamingDecoder

__all__ = ["EncodecBridge", "StreamingDecoder"]
