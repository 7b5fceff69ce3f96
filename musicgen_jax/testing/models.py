"""Random-weight tiny MusicGen checkpoints (transformers and musicgen-jax), built locally.

Tests, examples and notebooks cannot download weights, so they build their own models: a
transformers ``MusicgenForConditionalGeneration`` of a tiny preset (``configs/model/tiny*.yaml``,
through the config's own :meth:`~musicgen_jax.models.config.MusicGenConfig.to_transformers`),
with the small word-level tokenizer, saved with ``save_pretrained`` exactly as a hub download is
laid out. The token layout is real (codebooks of 2048 at 50 frames/s of 32 kHz audio), so
durations mean seconds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from musicgen_jax.conversion.transformers_format import convert_from_transformers, default_generation_config
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.testing.tokenizer import build_tokenizer

# variant -> the preset it starts from.
VARIANTS = {
    "base": "tiny",  # ReLU T5 (v1.0, as t5-base)
    "gated": "tiny-learned",  # its gated-GELU T5 (v1.1 / flan); deeper, more decoder heads (below)
    "stereo": "tiny-stereo",  # 8 codebooks, left/right interleaved
    "wide": "tiny",  # the text encoder as wide as the decoder (below)
}


# MusicGen-melody variants (transformers' MusicgenMelodyForConditionalGeneration) -> their preset.
MELODY_VARIANTS = {
    "melody": "tiny-melody",  # mono; chroma_length 20
    "stereo-melody": "tiny-stereo-melody",  # 8 codebooks; chroma_length 13
}


def tiny_config(variant: str = "base") -> MusicGenConfig:
    """The model config of a tiny variant: its preset, changed only where the variant must differ."""
    if variant in MELODY_VARIANTS:
        return MusicGenConfig.preset(MELODY_VARIANTS[variant])
    if variant not in VARIANTS:
        known = ", ".join([*VARIANTS, *MELODY_VARIANTS])
        raise ValueError(f"unknown tiny variant {variant!r}; choose from {known}")
    config = MusicGenConfig.preset(VARIANTS[variant])
    text, decoder = config.text_encoder, config.decoder
    if variant == "gated":
        # One layer more in both stacks and twice the decoder's heads: a depth and a head count no
        # other variant has, so a layer or head axis mixed up by conversion fails parity.
        text = dataclasses.replace(text, num_layers=text.num_layers + 1)
        decoder = dataclasses.replace(
            decoder, num_layers=decoder.num_layers + 1, num_heads=2 * decoder.num_heads
        )
        # transformers' MusicGen conditions on text alone; tiny-learned's attribute embeddings
        # have no counterpart there.
        config = dataclasses.replace(
            config, conditioning=dataclasses.replace(config.conditioning, attributes="text")
        )
    elif variant == "wide":
        # Equal widths: transformers then builds no enc_to_dec_proj, a path the others never take.
        text = dataclasses.replace(
            text, d_model=decoder.hidden_size, num_heads=decoder.hidden_size // text.d_kv
        )
    return dataclasses.replace(config, name=f"musicgen-tiny-{variant}", text_encoder=text, decoder=decoder)


def save_tiny_transformers_musicgen(directory: str | Path, variant: str = "base", seed: int = 0) -> Path:
    """Build a random tiny transformers MusicGen and ``save_pretrained`` it (weights, tokenizer,
    feature extractor, Meta's generation defaults) into ``directory``.

    A melody variant (:data:`MELODY_VARIANTS`) is a ``MusicgenMelodyForConditionalGeneration``,
    saved with its tokenizer only: its chroma feature extractor needs torchaudio."""
    import torch
    from transformers import (
        EncodecFeatureExtractor,
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
        MusicgenProcessor,
    )

    directory = Path(directory)
    config = tiny_config(variant)
    torch.manual_seed(seed)
    model_class = (
        MusicgenMelodyForConditionalGeneration if config.is_melody else MusicgenForConditionalGeneration
    )
    model = model_class(config.to_transformers()).eval()
    _spread_weights(model, seed)
    _spread_codec_weights(model.audio_encoder, seed)
    _fill_codebooks(model.audio_encoder, seed)
    model.generation_config.update(**default_generation_config(config))
    model.save_pretrained(str(directory))
    tokenizer = build_tokenizer(config.text_encoder.vocab_size)
    if config.is_melody:
        tokenizer.save_pretrained(str(directory))
        return directory
    codec = model.config.audio_encoder
    extractor = EncodecFeatureExtractor(
        feature_size=codec.audio_channels, sampling_rate=codec.sampling_rate, padding_side="left"
    )
    MusicgenProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(str(directory))
    return directory


def _spread_weights(model, seed: int) -> None:
    """transformers initialises with std 0.02, which makes tiny models' logits nearly flat and
    greedy ties likely; larger random weights give decisive, still finite, logits."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("audio_encoder"):
                continue
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * (1.0 / param.shape[-1] ** 0.5))
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
            else:
                param.copy_(1.0 + torch.randn(param.shape, generator=generator) * 0.1)


def _spread_codec_weights(codec, seed: int) -> None:
    """transformers' default EnCodec init leaves the tiny decoder's output set by its biases (codes
    barely change the audio). Re-draw every weight-normed convolution as v ~ N(0, 1/fan_in) with
    g = |v| (so the weight is v) and small biases, so that audio depends on the codes."""
    import torch

    generator = torch.Generator().manual_seed(seed + 5)
    with torch.no_grad():
        for module in codec.modules():
            parametrizations = getattr(module, "parametrizations", None)
            if parametrizations is None or "weight" not in parametrizations:
                continue
            v = parametrizations.weight.original1
            fan_in = (
                v.shape[1] * v.shape[2]
                if not isinstance(module, torch.nn.ConvTranspose1d)
                else v.shape[0] * v.shape[2] / 4
            )
            v.copy_(torch.randn(v.shape, generator=generator) * (1.5 / fan_in) ** 0.5)
            parametrizations.weight.original0.copy_(v.norm(dim=tuple(range(1, v.ndim)), keepdim=True))
            if getattr(module, "bias", None) is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.01)


def _fill_codebooks(codec, seed: int) -> None:
    """transformers leaves EnCodec's codebooks at zero (a trained codec learns them), so every
    code would decode alike and every encode give one code. Initialise them as audiocraft's
    k-means does: each level's entries are residuals the encoder actually produces (of random
    tones and noise), with a little jitter."""
    import torch

    generator = torch.Generator().manual_seed(seed + 7)
    rate = codec.config.sampling_rate
    t = torch.arange(4 * rate) / rate
    pitch = 110 * 2 ** (torch.randint(0, 36, (8,), generator=generator) / 12)
    audio = sum(torch.sin(2 * torch.pi * f * t * (1 + 0.2 * t)) for f in pitch) / 8
    audio = audio + 0.2 * torch.randn(t.shape, generator=generator)
    with torch.no_grad():
        residual = codec.encoder(audio[None, None]).transpose(1, 2).reshape(-1, codec.config.hidden_size)
        for layer in codec.quantizer.layers:
            codebook = layer.codebook
            rows = torch.randint(0, residual.shape[0], (codebook.embed.shape[0],), generator=generator)
            spread = residual.std(dim=0, keepdim=True)
            entries = residual[rows] + 0.1 * spread * torch.randn(codebook.embed.shape, generator=generator)
            codebook.embed.copy_(entries)
            codebook.embed_avg.copy_(entries)
            residual = residual - codebook.decode(codebook.encode(residual))  # [frames, dim]
        # Bring the output to a musical level (about 0.1 RMS) through the last convolution.
        last = [m for m in codec.decoder.modules() if getattr(m, "parametrizations", None) is not None][-1]
        codes = torch.randint(
            0, codec.config.codebook_size, (1, 1, codec.quantizer.num_quantizers, 50), generator=generator
        )
        level = codec.decode(codes, [None]).audio_values.std()
        last.parametrizations.weight.original0.mul_(0.1 / level)
        last.bias.zero_()


def save_tiny_checkpoint(directory: str | Path, variant: str = "base", seed: int = 0) -> Path:
    """A tiny random musicgen-jax checkpoint (via a transformers directory beside it)."""
    directory = Path(directory)
    source = directory.parent / f"{directory.name}-transformers"
    save_tiny_transformers_musicgen(source, variant, seed)
    return convert_from_transformers(source, directory)
