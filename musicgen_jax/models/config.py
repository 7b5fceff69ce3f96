"""Model configuration: typed, frozen dataclasses, the YAML presets, and the transformers mapping.

The published shapes live in ``configs/model/*.yaml`` (one file per checkpoint family); this module
owns the conversion to and from transformers' ``MusicgenConfig`` so that nothing else needs to know
transformers' field names.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

from musicgen_jax import config_io

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"  # also ./configs/model in a checkout


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """A T5 encoder (v1.0 ReLU feed-forward, or v1.1/flan gated GELU)."""

    vocab_size: int = 32128
    d_model: int = 768
    d_kv: int = 64
    d_ff: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    # transformers' spelling: "relu" (t5-base), "gated-gelu" (v1.1 / flan, tanh GELU), "gated-relu".
    feed_forward_proj: str = "relu"
    layer_norm_epsilon: float = 1e-6
    dropout_rate: float = 0.1

    def __post_init__(self) -> None:
        if self.activation not in ("relu", "gelu_new", "gelu", "silu"):
            raise ValueError(f"unsupported T5 feed_forward_proj {self.feed_forward_proj!r}")

    @classmethod
    def from_transformers(cls, data: dict) -> TextEncoderConfig:
        """From a transformers ``T5Config`` as a dict (``config.json`` of a T5 checkpoint)."""
        if data.get("model_type", "t5") not in ("t5", "mt5", "umt5"):
            raise ValueError(f"only T5 text encoders are supported, got {data.get('model_type')!r}")
        return cls(
            vocab_size=data["vocab_size"],
            d_model=data["d_model"],
            d_kv=data["d_kv"],
            d_ff=data["d_ff"],
            num_layers=data["num_layers"],
            num_heads=data["num_heads"],
            relative_attention_num_buckets=data.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=data.get("relative_attention_max_distance", 128),
            feed_forward_proj=data.get("feed_forward_proj", "relu"),
            layer_norm_epsilon=data.get("layer_norm_epsilon", 1e-6),
            dropout_rate=data.get("dropout_rate", 0.1),
        )

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        act = self.feed_forward_proj.split("-")[-1]
        # transformers maps "gated-gelu" to the tanh approximation ("gelu_new").
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else act


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """The MusicGen transformer decoder over codebook tokens."""

    vocab_size: int = 2048  # entries per codebook; the embedding tables hold one more (pad/BOS)
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    ffn_dim: int = 4096
    num_codebooks: int = 4
    audio_channels: int = 1  # 2 for stereo checkpoints (codebooks interleaved left/right)
    max_position_embeddings: int = 2048
    activation: str = "gelu"
    scale_embedding: bool = False
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    # False: no cross-attention; the conditioning comes in front of the audio tokens as a prefix
    # the self-attention reads (MusicGen-melody, see MelodyConfig).
    cross_attention: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 or 2, got {self.audio_channels}")
        if self.num_codebooks % self.audio_channels:
            raise ValueError("stereo checkpoints need an even number of codebooks")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def pad_token_id(self) -> int:
        """The special token: BOS at the start, pad in the delay pattern. Always ``vocab_size``."""
        return self.vocab_size

    @property
    def codebooks_per_channel(self) -> int:
        return self.num_codebooks // self.audio_channels


@dataclasses.dataclass(frozen=True)
class CodecShape:
    """The layout of an EnCodec built from scratch rather than loaded: the tiny presets' random
    codecs. A loaded codec brings its own ``config.json``. Defaults: Meta's 32 kHz codec."""

    num_filters: int = 64
    hidden_size: int = 128  # also the width of the codebook vectors
    num_residual_layers: int = 1
    num_lstm_layers: int = 2
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 4)  # their product is the hop: samples per frame


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """Facts of the codec the tokens belong to (the codec itself runs in PyTorch)."""

    sample_rate: int = 32000
    frame_rate: float = 50.0  # codec frames (decoder steps) per second
    channels: int = 1
    codec: str = "facebook/encodec_32khz"  # where to find the codec when a checkpoint has none
    codec_shape: CodecShape | None = None  # only for a codec built here (random weights, for tests)

    def __post_init__(self) -> None:
        if self.codec_shape is not None:
            hop = math.prod(self.codec_shape.upsampling_ratios)
            if self.sample_rate != hop * self.frame_rate:
                raise ValueError(
                    f"codec_shape.upsampling_ratios give {self.sample_rate / hop:g} frames/s at "
                    f"{self.sample_rate} Hz, but frame_rate is {self.frame_rate:g}"
                )


@dataclasses.dataclass(frozen=True)
class ConditioningConfig:
    """How attributes reach the model.

    ``text``: attributes are rendered into the description (Meta's checkpoints). ``learned``: they
    are embedded by :class:`~musicgen_jax.models.attribute_embedder.AttributeEmbedder` and joined to
    the cross-attention memory as extra tokens. ``text+learned``: both.
    """

    attributes: Literal["text", "learned", "text+learned"] = "text"
    max_text_tokens: int = 256  # prompts longer than this are rejected, not truncated silently
    # How cross-attention treats padded text positions. "mask": not attended (transformers, the
    # parity target). "zeros_attended": their (zeroed) memory is attended like any other position,
    # as audiocraft's cross-attention does (it has no key padding mask), and prompts are padded to
    # the longest of the batch only, as audiocraft's T5 conditioner pads: the padding then changes
    # the result (see docs/conversion.md).
    text_padding: Literal["mask", "zeros_attended"] = "mask"

    def __post_init__(self) -> None:
        if self.text_padding not in ("mask", "zeros_attended"):
            raise ValueError(f"text_padding must be 'mask' or 'zeros_attended', got {self.text_padding!r}")


@dataclasses.dataclass(frozen=True)
class MelodyConfig:
    """MusicGen-melody's conditioning (transformers' ``MusicgenMelodyConfig``).

    No cross-attention: the chroma of a reference melody (``num_chroma`` pitch classes a frame),
    projected to decoder width and repeated or cut to ``chroma_length`` frames, then the projected
    text states (zeroed at padded positions), are put in front of the audio tokens' embeddings; the
    decoder's causal self-attention reads that prefix. A row without a melody (and the null
    condition of guidance) takes a chroma of bin 0 only, one-hot, as transformers builds it.
    """

    num_chroma: int = 12
    chroma_length: int = 235  # chroma frames of the prefix (30 s at 32 kHz, hop 4096)

    def __post_init__(self) -> None:
        if self.num_chroma < 1 or self.chroma_length < 1:
            raise ValueError(
                f"num_chroma and chroma_length must be positive, got {self.num_chroma}, {self.chroma_length}"
            )


@dataclasses.dataclass(frozen=True)
class MusicGenConfig:
    """The whole model: text encoder, projection, decoder, and the codec facts."""

    name: str = "musicgen"
    text_encoder: TextEncoderConfig = TextEncoderConfig()
    decoder: DecoderConfig = DecoderConfig()
    audio: AudioConfig = AudioConfig()
    conditioning: ConditioningConfig = ConditioningConfig()
    # Seconds of audio the model was trained on; longer generation slides a window.
    max_duration: float = 30.0
    # The Linear (with bias) from T5 width to decoder width. None: only when the widths differ, as
    # transformers builds ``enc_to_dec_proj``. True: always, as audiocraft's T5 conditioner has its
    # ``output_proj`` whatever the widths (such a model at equal widths has no transformers form).
    text_projection: bool | None = None
    # MusicGen-melody (prefix conditioning, no cross-attention); None for text-to-music MusicGen.
    melody: MelodyConfig | None = None

    def __post_init__(self) -> None:
        if (self.melody is None) != self.decoder.cross_attention:
            raise ValueError(
                "a melody model has no cross-attention and a model with cross-attention has no melody "
                f"section: melody is {'set' if self.melody else 'not set'}, decoder.cross_attention is "
                f"{self.decoder.cross_attention}"
            )
        if self.melody is not None:
            if self.conditioning.text_padding != "zeros_attended":
                # The prefix's padded text positions are zero inputs the self-attention reads (in
                # transformers and audiocraft alike): results depend on the padding, so prompts
                # are padded to the longest of the batch, as both references pad.
                raise ValueError(
                    "a melody model attends its padded text positions: conditioning.text_padding must be "
                    f"'zeros_attended', got {self.conditioning.text_padding!r}"
                )
            if self.uses_learned_attributes:
                raise ValueError("learned attributes are not supported by melody models")
        if self.audio.channels != self.decoder.audio_channels:
            raise ValueError(
                f"audio.channels ({self.audio.channels}) and decoder.audio_channels "
                f"({self.decoder.audio_channels}) disagree"
            )
        if self.text_projection is False and self.text_encoder.d_model != self.decoder.hidden_size:
            raise ValueError(
                f"text_projection is false, but the text encoder is {self.text_encoder.d_model} wide and "
                f"the decoder {self.decoder.hidden_size}: the widths differ, so a projection is needed"
            )

    @property
    def has_text_projection(self) -> bool:
        """Whether the model has its text projection (``text_projection``, default: widths differ)."""
        if self.text_projection is not None:
            return self.text_projection
        return self.text_encoder.d_model != self.decoder.hidden_size

    @property
    def is_melody(self) -> bool:
        return self.melody is not None

    @property
    def has_chroma_projection(self) -> bool:
        """Whether a melody model projects its chroma (transformers: only when widths differ)."""
        return self.melody is not None and self.melody.num_chroma != self.decoder.hidden_size

    @property
    def prefix_chroma_length(self) -> int:
        """Chroma frames in front of a melody model's text states (0 without a melody section)."""
        return 0 if self.melody is None else self.melody.chroma_length

    def with_text_padding(self, text_padding: str) -> MusicGenConfig:
        """This config with ``conditioning.text_padding`` replaced ("mask" or "zeros_attended")."""
        return dataclasses.replace(
            self, conditioning=dataclasses.replace(self.conditioning, text_padding=text_padding)
        )

    @property
    def uses_learned_attributes(self) -> bool:
        return "learned" in self.conditioning.attributes

    @property
    def uses_text_attributes(self) -> bool:
        return "text" in self.conditioning.attributes

    # ----------------------------------------------------------------------------------- presets

    @classmethod
    def preset(cls, name: str, overrides: list[str] | tuple[str, ...] = ()) -> MusicGenConfig:
        """A shipped preset (``configs/model/<name>.yaml``) or a YAML path, with dotted overrides."""
        path = Path(name)
        if not path.suffix:
            path = PRESET_DIR / f"{name}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
            raise config_io.ConfigError(f"no model preset {name!r}; known presets: {known}")
        return config_io.load(cls, path, overrides)

    @staticmethod
    def preset_names() -> list[str]:
        return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))

    def to_dict(self) -> dict:
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MusicGenConfig:
        return config_io.from_dict(cls, data)

    # ------------------------------------------------------------------------- transformers

    @classmethod
    def from_transformers(cls, hf_config: Any, name: str = "musicgen") -> MusicGenConfig:
        """From a transformers ``MusicgenConfig`` or ``MusicgenMelodyConfig`` (object or its
        ``to_dict()``)."""
        data = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        melody = None
        if data.get("model_type") == "musicgen_melody":
            melody = MelodyConfig(
                num_chroma=data.get("num_chroma", 12), chroma_length=data.get("chroma_length", 235)
            )
        text, audio, dec = data["text_encoder"], data["audio_encoder"], data["decoder"]
        if dec.get("cross_attention_hidden_size") not in (None, dec["hidden_size"]):
            raise ValueError("decoders with cross_attention_hidden_size != hidden_size are not supported")
        if dec.get("pad_token_id", dec["vocab_size"]) != dec["vocab_size"]:
            raise ValueError(
                f"expected pad_token_id == vocab_size ({dec['vocab_size']}), got {dec.get('pad_token_id')}"
            )
        text_config = TextEncoderConfig.from_transformers(text)
        decoder_config = DecoderConfig(
            vocab_size=dec["vocab_size"],
            hidden_size=dec["hidden_size"],
            num_layers=dec["num_hidden_layers"],
            num_heads=dec["num_attention_heads"],
            ffn_dim=dec["ffn_dim"],
            num_codebooks=dec["num_codebooks"],
            audio_channels=dec.get("audio_channels", 1),
            max_position_embeddings=dec["max_position_embeddings"],
            activation=dec.get("activation_function", "gelu"),
            scale_embedding=dec.get("scale_embedding", False),
            dropout=dec.get("dropout", 0.1),
            attention_dropout=dec.get("attention_dropout", 0.0),
            activation_dropout=dec.get("activation_dropout", 0.0),
            cross_attention=melody is None,
        )
        hop = math.prod(audio.get("upsampling_ratios", [8, 5, 4, 4]))
        sample_rate = audio.get("sampling_rate", 32000)
        audio_config = AudioConfig(
            sample_rate=sample_rate,
            frame_rate=sample_rate / hop,
            channels=decoder_config.audio_channels,
        )
        conditioning = ConditioningConfig(text_padding="zeros_attended" if melody else "mask")
        return cls(
            name=name,
            text_encoder=text_config,
            decoder=decoder_config,
            audio=audio_config,
            conditioning=conditioning,
            melody=melody,
        )

    def to_transformers(self, audio_encoder: dict | None = None) -> Any:
        """A transformers ``MusicgenConfig`` (``MusicgenMelodyConfig`` for a melody model);
        ``audio_encoder`` is the codec's config dict (default: :meth:`codec_to_transformers`, for a
        config that describes its codec)."""
        from transformers import (
            EncodecConfig,
            MusicgenConfig,
            MusicgenDecoderConfig,
            MusicgenMelodyConfig,
            MusicgenMelodyDecoderConfig,
            T5Config,
        )

        text = self.text_encoder
        if self.has_text_projection and text.d_model == self.decoder.hidden_size:
            raise ValueError(
                f"{self.name} keeps a text projection although its text encoder and decoder are both "
                f"{text.d_model} wide (audiocraft's output_proj); transformers' MusicGen builds "
                "enc_to_dec_proj only when the widths differ, so it has no place for this projection"
            )
        t5 = T5Config(
            vocab_size=text.vocab_size,
            d_model=text.d_model,
            d_kv=text.d_kv,
            d_ff=text.d_ff,
            num_layers=text.num_layers,
            num_heads=text.num_heads,
            relative_attention_num_buckets=text.relative_attention_num_buckets,
            relative_attention_max_distance=text.relative_attention_max_distance,
            feed_forward_proj=text.feed_forward_proj,
            layer_norm_epsilon=text.layer_norm_epsilon,
            dropout_rate=text.dropout_rate,
        )
        dec = self.decoder
        decoder_class = MusicgenDecoderConfig if self.melody is None else MusicgenMelodyDecoderConfig
        decoder = decoder_class(
            vocab_size=dec.vocab_size,
            hidden_size=dec.hidden_size,
            num_hidden_layers=dec.num_layers,
            num_attention_heads=dec.num_heads,
            ffn_dim=dec.ffn_dim,
            num_codebooks=dec.num_codebooks,
            audio_channels=dec.audio_channels,
            max_position_embeddings=dec.max_position_embeddings,
            activation_function=dec.activation,
            scale_embedding=dec.scale_embedding,
            dropout=dec.dropout,
            attention_dropout=dec.attention_dropout,
            activation_dropout=dec.activation_dropout,
            pad_token_id=dec.pad_token_id,
            bos_token_id=dec.pad_token_id,
            tie_word_embeddings=False,
        )
        if audio_encoder is None:
            codec = self.codec_to_transformers()
        else:
            codec = EncodecConfig(
                **{
                    k: v
                    for k, v in audio_encoder.items()
                    if k not in ("model_type", "transformers_version", "architectures")
                }
            )
        if self.melody is not None:
            return MusicgenMelodyConfig(
                text_encoder=t5,
                audio_encoder=codec,
                decoder=decoder,
                num_chroma=self.melody.num_chroma,
                chroma_length=self.melody.chroma_length,
            )
        return MusicgenConfig(text_encoder=t5, audio_encoder=codec, decoder=decoder)

    # ---------------------------------------------------------------------------- audiocraft

    @classmethod
    def from_audiocraft(
        cls,
        xp_cfg: dict,
        text_encoder: TextEncoderConfig,
        *,
        text_projection: bool | None = True,
        name: str = "musicgen",
    ) -> MusicGenConfig:
        """From the ``xp.cfg`` audiocraft stores beside the weights of ``state_dict.bin`` (its
        training config, as a dict).

        The decoder's shape is ``transformer_lm``'s ``dim``, ``num_heads``, ``num_layers``,
        ``hidden_scale`` (ffn = dim * hidden_scale), ``n_q`` and ``card``; stereo is
        ``interleave_stereo_codebooks.use``. The text encoder's config comes from its own checkpoint
        (xp.cfg only names it: :meth:`audiocraft_text_encoder`). audiocraft's T5 conditioner always
        has its ``output_proj``, so ``text_projection`` defaults to true whatever the widths (None, for
        a state dict without one: only when the widths differ). A
        setting this model does not implement (post-norm, biases, rotary positions, a pattern other
        than the delay pattern, prepended conditions such as melody's chroma, ...) is refused by its
        xp.cfg name; a setting xp.cfg leaves out is taken to be MusicGen's.
        """
        read = _AudiocraftConfig(xp_cfg)
        for key, wanted in _AUDIOCRAFT_REQUIRED.items():
            found = read.get(key, wanted)
            if found != wanted:
                raise ValueError(
                    f"xp.cfg sets {key} to {found!r}; musicgen-jax implements only {wanted!r} "
                    "(audiocraft's MusicGen text-to-music LM)"
                )
        channels = 2 if read.get("interleave_stereo_codebooks.use", False) else 1
        codebooks = read.integer("transformer_lm.n_q")
        delays = read.get("codebooks_pattern.delay.delays", None)
        expected_delays = [k // channels for k in range(codebooks)]
        if delays is not None and list(delays) != expected_delays:
            raise ValueError(
                f"xp.cfg sets codebooks_pattern.delay.delays to {list(delays)}; for {codebooks} codebooks "
                f"({'stereo' if channels == 2 else 'mono'}) musicgen-jax's delay pattern is {expected_delays}"
            )
        dim = read.integer("transformer_lm.dim")
        dropout = float(read.get("transformer_lm.dropout", 0.0))
        attention_dropout = read.get("transformer_lm.attention_dropout", None)  # None: as dropout
        decoder = DecoderConfig(
            vocab_size=read.integer("transformer_lm.card"),
            hidden_size=dim,
            num_layers=read.integer("transformer_lm.num_layers"),
            num_heads=read.integer("transformer_lm.num_heads"),
            ffn_dim=int(float(read.get("transformer_lm.hidden_scale", 4)) * dim),
            num_codebooks=codebooks,
            audio_channels=channels,
            activation="gelu",
            dropout=dropout,
            attention_dropout=dropout if attention_dropout is None else float(attention_dropout),
            activation_dropout=dropout,
        )
        codec = str(read.get("compression_model_checkpoint", AudioConfig.codec))
        audio = AudioConfig(
            sample_rate=int(read.get("sample_rate", AudioConfig.sample_rate)),
            channels=channels,
            codec=codec.removeprefix("//pretrained/"),
        )
        return cls(
            name=name,
            text_encoder=text_encoder,
            decoder=decoder,
            audio=audio,
            max_duration=float(read.get("dataset.segment_duration", cls.max_duration)),
            text_projection=text_projection,
        )

    @staticmethod
    def audiocraft_text_encoder(xp_cfg: dict) -> str:
        """The text encoder an audiocraft ``xp.cfg`` names (``conditioners.description.t5.name``)."""
        return str(_AudiocraftConfig(xp_cfg).get("conditioners.description.t5.name", "t5-base"))

    def audiocraft_disagreements(self, imported: MusicGenConfig) -> list[str]:
        """The shape facts on which this config (a preset) and one read from xp.cfg differ, each as
        "field is <ours>, xp.cfg's <key> gives <theirs>"; the text encoder's fields are compared
        with the text encoder's own config."""
        found = []
        for field, key in _AUDIOCRAFT_SHAPE_FIELDS.items():
            mine, theirs = _dotted(self, field), _dotted(imported, field)
            if mine != theirs:
                found.append(f"{field} is {mine!r}, but xp.cfg ({key}) gives {theirs!r}")
        for field in dataclasses.fields(TextEncoderConfig):
            mine = getattr(self.text_encoder, field.name)
            theirs = getattr(imported.text_encoder, field.name)
            if mine != theirs:
                found.append(
                    f"text_encoder.{field.name} is {mine!r}, but the text encoder's config gives {theirs!r}"
                )
        return found

    def codec_to_transformers(self) -> Any:
        """A transformers ``EncodecConfig`` of ``audio.codec_shape``, the codec these tokens need:
        one codebook of ``decoder.vocab_size`` entries per codebook of a channel, at ``frame_rate``."""
        from transformers import EncodecConfig

        shape = self.audio.codec_shape
        if shape is None:
            raise ValueError(
                f"{self.name}: audio.codec_shape is not set; a loaded codec's config.json describes it"
            )
        # transformers keeps bandwidth * 1000 / (frame_rate * log2(codebook_size)) codebooks.
        kilobits_per_second = (
            self.decoder.codebooks_per_channel
            * math.log2(self.decoder.vocab_size)
            * self.audio.frame_rate
            / 1000
        )
        return EncodecConfig(
            sampling_rate=self.audio.sample_rate,
            audio_channels=1,  # stereo MusicGen runs the mono codec once per channel
            num_filters=shape.num_filters,
            hidden_size=shape.hidden_size,
            num_residual_layers=shape.num_residual_layers,
            num_lstm_layers=shape.num_lstm_layers,
            upsampling_ratios=list(shape.upsampling_ratios),
            codebook_size=self.decoder.vocab_size,
            target_bandwidths=[kilobits_per_second],
            # As Meta's 32 kHz codec: non-causal, unnormalised, the whole signal in one chunk.
            use_causal_conv=False,
            normalize=False,
            chunk_length_s=None,
            overlap=None,
            use_conv_shortcut=False,
        )


# xp.cfg settings musicgen-jax's decoder hard-codes (audiocraft's MusicGen LM configuration).
_AUDIOCRAFT_REQUIRED: dict[str, Any] = {
    "lm_model": "transformer_lm",
    "transformer_lm.norm_first": True,
    "transformer_lm.norm": "layer_norm",
    "transformer_lm.bias_ff": False,
    "transformer_lm.bias_attn": False,
    "transformer_lm.bias_proj": False,
    "transformer_lm.activation": "gelu",
    "transformer_lm.positional_embedding": "sin",
    "transformer_lm.causal": True,
    "transformer_lm.past_context": None,
    "transformer_lm.layer_scale": None,
    "transformer_lm.qk_layer_norm": False,
    "transformer_lm.qk_layer_norm_cross": False,
    "transformer_lm.kv_repeat": 1,
    "codebooks_pattern.modeling": "delay",
    "codebooks_pattern.delay.flatten_first": 0,
    "codebooks_pattern.delay.empty_initial": 0,
    "interleave_stereo_codebooks.per_timestep": False,
    "fuser.cross": ["description"],
    "fuser.prepend": [],
    "fuser.sum": [],
    "fuser.input_interpolate": [],
    "fuser.cross_attention_pos_emb": False,
    "conditioners.description.model": "t5",
    "conditioners.description.t5.finetune": False,  # true would put T5's weights in the LM checkpoint
    "conditioners.description.t5.normalize_text": False,
}

# Our shape facts and the xp.cfg keys they are read from.
_AUDIOCRAFT_SHAPE_FIELDS = {
    "decoder.hidden_size": "transformer_lm.dim",
    "decoder.num_layers": "transformer_lm.num_layers",
    "decoder.num_heads": "transformer_lm.num_heads",
    "decoder.ffn_dim": "transformer_lm.dim * transformer_lm.hidden_scale",
    "decoder.num_codebooks": "transformer_lm.n_q",
    "decoder.vocab_size": "transformer_lm.card",
    "decoder.audio_channels": "interleave_stereo_codebooks.use",
    "decoder.activation": "transformer_lm.activation",
    "audio.sample_rate": "sample_rate",
}


def _dotted(obj: Any, field: str) -> Any:
    for part in field.split("."):
        obj = getattr(obj, part)
    return obj


class _AudiocraftConfig:
    """Dotted reads of an audiocraft ``xp.cfg`` dict, resolving OmegaConf's ``${a.b}`` references
    (``OmegaConf.to_yaml`` writes them unresolved)."""

    _MISSING = object()

    def __init__(self, data: dict):
        self.data = data

    def get(self, key: str, default: Any = _MISSING) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is self._MISSING:
                    raise ValueError(f"xp.cfg has no {key}")
                return default
            node = node[part]
        if isinstance(node, str) and node.startswith("${") and node.endswith("}"):
            return self.get(node[2:-1], default)
        return node

    def integer(self, key: str) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"xp.cfg's {key} is {value!r}, expected an integer")
        return value
