"""Random-weight tiny transformers MusicGen checkpoints, built locally.

These machines (and CI) cannot download weights, so tests, examples and notebooks build their own
models: a transformers ``MusicgenForConditionalGeneration`` from small configs, a small word-level
tokenizer, saved with ``save_pretrained`` exactly as a hub download would lay them out. The token
layout is real (codebooks of 2048 at 50 frames/s of 32 kHz audio) so durations mean seconds.
"""

from __future__ import annotations

from pathlib import Path

VARIANTS = ("base", "gated", "stereo", "wide")

_WORDS = [
    "a",
    "an",
    "the",
    "and",
    "with",
    "of",
    "in",
    "on",
    "for",
    "to",
    "at",
    "by",
    "from",
    "slow",
    "fast",
    "soft",
    "loud",
    "bright",
    "dark",
    "warm",
    "cold",
    "happy",
    "sad",
    "calm",
    "energetic",
    "upbeat",
    "relaxed",
    "epic",
    "dreamy",
    "jazz",
    "rock",
    "pop",
    "techno",
    "house",
    "ambient",
    "classical",
    "folk",
    "blues",
    "funk",
    "metal",
    "hip",
    "hop",
    "lofi",
    "reggae",
    "piano",
    "guitar",
    "bass",
    "drums",
    "synth",
    "strings",
    "violin",
    "cello",
    "saxophone",
    "trumpet",
    "flute",
    "organ",
    "pad",
    "pads",
    "bells",
    "choir",
    "vocals",
    "beat",
    "beats",
    "groove",
    "melody",
    "chords",
    "rhythm",
    "song",
    "track",
    "music",
    "tune",
    "loop",
    "solo",
    "smooth",
    "heavy",
    "light",
    "deep",
    "acoustic",
    "electric",
    "electronic",
    "orchestral",
    "retro",
    "80s",
    "90s",
    "night",
    "summer",
    "rain",
    "city",
    "dance",
    "chill",
    "genre",
    "moods",
    "mood",
    "bpm",
    "instrument",
    "key",
    "keywords",
    "major",
    "minor",
    ",",
    ".",
    ":",
    "-",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
]


def build_tokenizer(vocab_size: int = 128):
    """A word-level tokenizer with T5's special-token ids (pad 0, ``</s>`` 1, unk 2) that appends
    ``</s>``, as T5's does. Loaded back through ``AutoTokenizer`` like any other."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    words = list(dict.fromkeys(_WORDS))[: vocab_size - len(specials)]
    vocab = {token: i for i, token in enumerate(specials + words)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def tiny_configs(variant: str = "base", text_vocab: int = 128):
    """(T5Config, EncodecConfig, MusicgenDecoderConfig) of a tiny model.

    ``base``: ReLU T5, 2 layers, 4 heads. ``gated``: gated-GELU (flan) T5, 3 decoder layers of 8
    heads. ``stereo``: 8 interleaved codebooks. ``wide``: text and decoder of one width (no projection).
    """
    from transformers import EncodecConfig, MusicgenDecoderConfig, T5Config

    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny variant {variant!r}; choose from {', '.join(VARIANTS)}")
    gated = variant == "gated"
    t5 = T5Config(
        vocab_size=text_vocab,
        d_model=64 if variant == "wide" else 32,
        d_kv=8,
        d_ff=64,
        num_layers=3 if gated else 2,
        num_heads=8 if variant == "wide" else 4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu" if gated else "relu",
        decoder_start_token_id=0,
    )
    codec = EncodecConfig(
        sampling_rate=32000,
        audio_channels=1,
        num_filters=4,
        hidden_size=16,
        codebook_dim=16,
        codebook_size=2048,
        num_residual_layers=1,
        num_lstm_layers=1,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        chunk_length_s=None,
        overlap=None,
        normalize=False,
        use_causal_conv=False,
        norm_type="weight_norm",
        pad_mode="reflect",
    )
    stereo = variant == "stereo"
    decoder = MusicgenDecoderConfig(
        vocab_size=2048,
        hidden_size=64,
        num_hidden_layers=3 if gated else 2,
        num_attention_heads=8 if gated else 4,
        ffn_dim=128,
        num_codebooks=8 if stereo else 4,
        audio_channels=2 if stereo else 1,
        max_position_embeddings=2048,
        pad_token_id=2048,
        bos_token_id=2048,
    )
    return t5, codec, decoder


def save_tiny_transformers_musicgen(directory: str | Path, variant: str = "base", seed: int = 0) -> Path:
    """Build a random tiny transformers MusicGen and ``save_pretrained`` it (weights, tokenizer,
    feature extractor, Meta's generation defaults) into ``directory``."""
    import torch
    from transformers import (
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
    )

    directory = Path(directory)
    t5, codec, decoder = tiny_configs(variant)
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(
        MusicgenConfig(text_encoder=t5, audio_encoder=codec, decoder=decoder)
    )
    model.eval()
    _spread_weights(model, seed)
    _spread_codec_weights(model.audio_encoder, seed)
    _fill_codebooks(model.audio_encoder, seed)
    generation = model.generation_config
    generation.decoder_start_token_id = 2048
    generation.pad_token_id = 2048
    generation.bos_token_id = 2048
    generation.do_sample = True
    generation.guidance_scale = 3.0
    generation.top_k = 250
    generation.max_length = 1500
    model.save_pretrained(str(directory))
    extractor = EncodecFeatureExtractor(
        feature_size=codec.audio_channels, sampling_rate=codec.sampling_rate, padding_side="left"
    )
    MusicgenProcessor(feature_extractor=extractor, tokenizer=build_tokenizer(t5.vocab_size)).save_pretrained(
        str(directory)
    )
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
        for name, module in codec.named_modules():
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
    from musicgen_jax.conversion.transformers_format import convert_from_transformers

    directory = Path(directory)
    source = directory.parent / f"{directory.name}-transformers"
    save_tiny_transformers_musicgen(source, variant, seed)
    return convert_from_transformers(source, directory)
