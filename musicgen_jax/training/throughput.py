"""FLOPs of a train step and the devices' peak, for model-FLOPs utilisation (MFU).

Model FLOPs count matrix multiplies only (2 per multiply-add), attention at full length as PaLM's
MFU does (no discount for the causal mask), and never the recomputation of rematerialisation.
A train step costs three forward passes of what is trained (forward, and twice that backward) and
one forward of what is frozen.
"""

from __future__ import annotations

import jax

from musicgen_jax.models.config import MusicGenConfig

# Dense bf16 peak FLOP/s per device (vendor figures); matched as substrings of device_kind.
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "A10G": 125e12,
    "TPU v6": 918e12,
    "TPU v5p": 459e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v4": 275e12,
}


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    """The device's peak FLOP/s, or None where unknown (CPUs)."""
    kind = (device or jax.devices()[0]).device_kind
    for name, flops in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return flops
    return None


def decoder_forward_flops(config: MusicGenConfig, length: int, memory_length: int) -> float:
    """One example's decoder forward FLOPs: ``length`` positions attending to ``memory_length`` tokens."""
    d = config.decoder
    width, layers = d.hidden_size, d.num_layers
    per_position = (
        layers
        * (
            4 * width * width  # self-attention q, k, v, out
            + 2 * width * width  # cross-attention q, out
            + 2 * width * d.ffn_dim  # fc1, fc2
            + 2 * length * width  # self-attention scores and weighted sum
            + 2 * memory_length * width  # cross-attention scores and weighted sum
        )
        + d.num_codebooks * width * d.vocab_size
    )  # the LM heads
    cross_key_value = layers * memory_length * 2 * width * width
    projection = memory_length * config.text_encoder.d_model * width if config.has_text_projection else 0
    return 2.0 * (length * per_position + cross_key_value + projection)


def text_encoder_forward_flops(config: MusicGenConfig, text_length: int) -> float:
    t = config.text_encoder
    inner = t.num_heads * t.d_kv
    feed_forward = (3 if t.is_gated else 2) * t.d_model * t.d_ff
    per_position = t.num_layers * (4 * t.d_model * inner + feed_forward + 2 * text_length * inner)
    return 2.0 * text_length * per_position


def train_step_flops(
    config: MusicGenConfig, batch_size: int, length: int, text_length: int, train_text_encoder: bool = False
) -> float:
    """Model FLOPs of one optimizer step over ``batch_size`` examples of ``length`` decoder positions."""
    memory_length = text_length + (5 if config.uses_learned_attributes else 0)
    decoder = 3.0 * decoder_forward_flops(config, length, memory_length)
    text = (3.0 if train_text_encoder else 1.0) * text_encoder_forward_flops(config, text_length)
    return batch_size * (decoder + text)


def mfu(flops_per_step: float, steps_per_sec: float, num_devices: int, peak: float | None) -> float | None:
    if peak is None:
        return None
    return flops_per_step * steps_per_sec / (peak * num_devices)
