"""The codec training config: typed, frozen dataclasses from ``configs/codec/*.yaml`` with dotted
overrides (``training.steps=2000 codec.num_filters=16``), as the MusicGen train config has them.

The codec is a transformers ``EncodecConfig`` written out under ``codec:`` (any
:class:`~musicgen_jax.codec.config.CodecConfig` field; the defaults are transformers'), or an
existing codec to fine-tune (``init_from``: a directory or hub id). The run's mesh, optimizer,
checkpoint and logging sections are the MusicGen trainer's own dataclasses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from musicgen_jax import config_io
from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.conversion.tensors import CheckpointError
from musicgen_jax.training.config import (
    CheckpointSection,
    DistributedSection,
    LoggingSection,
    MeshSection,
    OptimizerSection,
)

CODEC_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "codec"  # also ./configs/codec


@dataclasses.dataclass(frozen=True)
class CodecDataSection:
    """Audio to learn from: a folder of audio files or a ``data.jsonl`` manifest (exactly one), read
    once into memory at the codec's rate and channel count; random segments of it make the batches."""

    audio_dir: str | None = None
    manifest: str | None = None
    segment_seconds: float = 1.0
    # Held out for evaluation: the last share of the sorted file list (at least one file), unless
    # eval_audio_dir / eval_manifest name other files.
    eval_fraction: float = 0.05
    eval_audio_dir: str | None = None
    eval_manifest: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.audio_dir is not None and self.manifest is not None:
            raise ValueError("data: give exactly one of audio_dir and manifest, not both")
        if self.eval_audio_dir is not None and self.eval_manifest is not None:
            raise ValueError("data: give at most one of eval_audio_dir and eval_manifest")
        if self.segment_seconds <= 0:
            raise ValueError(f"data.segment_seconds must be positive, got {self.segment_seconds}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")


@dataclasses.dataclass(frozen=True)
class LossSection:
    """Loss weights and scales; the defaults are the EnCodec paper's (lambda_t 0.1, lambda_f 1,
    lambda_g 3, lambda_feat 3, lambda_w 1) and audiocraft's mel scales (FFT sizes 64 to 1024)."""

    time_l1: float = 0.1
    mel: float = 1.0
    commitment: float = 1.0
    adversarial: float = 3.0
    feature_matching: float = 3.0
    mel_smallest_fft: int = 64
    mel_largest_fft: int = 1024
    n_mels: int = 64
    # EnCodec's balancer (audiocraft's defaults): the weights above become shares of a gradient of
    # norm balancer_total_norm on the audio (see training/codec/balancer.py). Off: plain weights.
    balance: bool = True
    balancer_decay: float = 0.999
    balancer_total_norm: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.balancer_decay < 1.0 or self.balancer_total_norm <= 0:
            raise ValueError("loss: balancer_decay must be in (0, 1) and balancer_total_norm positive")
        if min(self.time_l1, self.mel, self.commitment, self.adversarial, self.feature_matching) < 0:
            raise ValueError("loss: the weights must not be negative")


@dataclasses.dataclass(frozen=True)
class QuantizerSection:
    """The EMA k-means codebooks (audiocraft's defaults)."""

    decay: float = 0.99
    dead_code_threshold: float = 2.0  # expected vectors per step below which a codeword is replaced
    kmeans_iterations: int = 50
    kmeans_batches: int = 4  # batches gathered for the k-means initialisation
    # Train at a bandwidth drawn per step from the config's target_bandwidths, so that every
    # prefix of the codebooks decodes (EnCodec's variable-bandwidth training); off: all codebooks.
    bandwidth_dropout: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"quantizer.decay must be in (0, 1), got {self.decay}")
        if self.dead_code_threshold < 0 or self.kmeans_iterations < 0 or self.kmeans_batches < 1:
            raise ValueError("quantizer: dead_code_threshold and kmeans_iterations >= 0, kmeans_batches >= 1")


@dataclasses.dataclass(frozen=True)
class DiscriminatorSection:
    """The optional multi-scale STFT discriminator (EnCodec's: 32 filters, FFT sizes 2048/1024/512)."""

    enabled: bool = False
    filters: int = 32
    n_ffts: tuple[int, ...] = (2048, 1024, 512)
    start_step: int = 0  # adversarial losses join once the codec has learned this long
    learning_rate: float = 3e-4
    b1: float = 0.5
    b2: float = 0.9


@dataclasses.dataclass(frozen=True)
class CodecTrainingSection:
    steps: int = 1000
    batch_size: int = 8  # global
    seed: int = 0
    stop_after: int | None = None  # stop once this step is done and saved (a planned preemption)


@dataclasses.dataclass(frozen=True)
class CodecEvalSection:
    every_steps: int = 0  # 0: no evaluation; checkpoints are then ranked by the train loss
    batches: int = 2


def _codec_optimizer() -> OptimizerSection:
    # EnCodec's Adam: lr 3e-4, betas (0.5, 0.9), no weight decay.
    return OptimizerSection(
        learning_rate=3e-4, warmup_steps=0, schedule="constant", b1=0.5, b2=0.9, weight_decay=0.0
    )


@dataclasses.dataclass(frozen=True)
class CodecTrainConfig:
    output_dir: str | None = None
    init_from: str | None = None  # an EnCodec directory or hub id to fine-tune; the codec section is ignored
    codec: dict[str, Any] = dataclasses.field(default_factory=dict)  # EncodecConfig fields
    data: CodecDataSection = CodecDataSection()
    training: CodecTrainingSection = CodecTrainingSection()
    loss: LossSection = LossSection()
    quantizer: QuantizerSection = QuantizerSection()
    discriminator: DiscriminatorSection = DiscriminatorSection()
    optimizer: OptimizerSection = dataclasses.field(default_factory=_codec_optimizer)
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)
    distributed: DistributedSection = dataclasses.field(default_factory=DistributedSection)
    eval: CodecEvalSection = CodecEvalSection()
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    logging: LoggingSection = dataclasses.field(default_factory=LoggingSection)

    def __post_init__(self) -> None:
        if self.data.audio_dir is None and self.data.manifest is None:
            raise ValueError("data: give data.audio_dir (a folder of audio files) or data.manifest")
        t = self.training
        if t.steps < 1 or t.batch_size < 1:
            raise ValueError("training.steps and training.batch_size must be positive")
        for name in ("every_steps", "keep"):
            if getattr(self.checkpoint, name) < 1:
                raise ValueError(f"checkpoint.{name} must be positive")
        if self.logging.every_steps < 1:
            raise ValueError("logging.every_steps must be positive")
        if self.mesh.fsdp != 1 or self.mesh.tensor != 1:
            raise ValueError("the codec trains data-parallel only: mesh.fsdp and mesh.tensor must be 1")


def resolve_codec_config(config: CodecTrainConfig) -> CodecConfig:
    """The codec's :class:`CodecConfig` from the ``codec`` section (not for ``init_from`` runs)."""
    try:
        return CodecConfig.from_dict({"model_type": "encodec", **config.codec}, where="codec")
    except CheckpointError as error:
        raise config_io.ConfigError(str(error)) from None


def load_codec_train_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> CodecTrainConfig:
    """A shipped codec config name (``demo``) or YAML path, with dotted overrides; the codec section
    is resolved here so that a bad codec field fails before anything starts."""
    path = Path(path)
    if not path.suffix and not path.is_file():
        path = CODEC_CONFIG_DIR / f"{path}.yaml"
    raw = config_io.deep_merge(config_io.read_yaml(path), config_io.parse_overrides(overrides))
    config = config_io.from_dict(CodecTrainConfig, raw)
    if config.init_from is None:
        unknown = set(config.codec) - {f.name for f in dataclasses.fields(CodecConfig)}
        if unknown:
            raise config_io.ConfigError(f"codec: unknown EncodecConfig field(s) {', '.join(sorted(unknown))}")
        resolve_codec_config(config)
    return config
