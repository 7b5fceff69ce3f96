"""The training config: typed, frozen dataclasses loaded from ``configs/train/*.yaml`` with dotted
command-line overrides (``training.batch_size=32 model.decoder.hidden_size=1024``).

The model is a preset (``configs/model/<preset>.yaml``) or a checkpoint to fine-tune (``init_from``),
with overrides of any :class:`~musicgen_jax.models.config.MusicGenConfig` field under ``model.*``;
they are checked against that dataclass when the config is resolved, so a misspelt key fails at load.
The data section is typed the same way (one dataclass per source kind, :class:`DataSection`), so a
bad data key fails at load too, before a run writes anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from musicgen_jax import config_io
from musicgen_jax.data.pipeline import DataConfig as PipelineDataConfig
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.models.lora import ALL_TARGETS, LoraSpec

TRAIN_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"  # also ./configs/train

RematPolicy = Literal["none", "full", "dots", "dots_no_batch"]
Dtype = Literal["float32", "bfloat16"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Which network to train and how it computes."""

    preset: str | None = "tiny"  # configs/model/<preset>.yaml (or a YAML path); ignored with init_from
    init_from: str | None = None  # musicgen-jax checkpoint dir | transformers dir | hub id, to fine-tune
    # Pretrained T5 (directory or hub id, e.g. t5-base) for from-scratch runs: its weights replace the
    # random text encoder and its tokenizer is used. audiocraft trains on a frozen pretrained T5.
    text_encoder_from: str | None = None
    tokenizer: str | None = None  # overrides the tokenizer source; default: init_from / text_encoder_from
    # Overrides of MusicGenConfig fields, applied on top of the preset or the init_from config.
    name: str | None = None
    text_encoder: dict[str, Any] = dataclasses.field(default_factory=dict)
    decoder: dict[str, Any] = dataclasses.field(default_factory=dict)
    audio: dict[str, Any] = dataclasses.field(default_factory=dict)
    conditioning: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_duration: float | None = None
    dtype: Dtype = "bfloat16"  # compute dtype
    param_dtype: Dtype = "float32"  # master weights and optimizer state
    remat: RematPolicy = "none"  # rematerialise decoder layers in the backward pass
    train_text_encoder: bool = False  # audiocraft keeps T5 frozen


@dataclasses.dataclass(frozen=True)
class TrainingSection:
    steps: int = 1000  # optimizer steps in the whole run (the schedule's length)
    batch_size: int = 8  # global: summed over hosts and microbatches
    microbatches: int = 1  # gradient accumulation: the batch is split into this many sequential parts
    seed: int = 0
    dropout: bool = True  # the model's dropout rates (config.decoder.dropout, ...) are active in training
    condition_dropout: float = 0.3  # probability of training on the null condition (for guidance)
    # "sample": one draw per example; "batch": one draw nulls the whole batch, as audiocraft does.
    condition_dropout_per: Literal["sample", "batch"] = "sample"
    # Learned-attribute models: the probability that each attribute (genre, moods, instruments,
    # tempo, duration) is absent from an example, independently (audiocraft's attribute dropout),
    # so that a prompt naming only some of them, or only text, is one the model has trained on.
    attribute_dropout: float = 0.0
    ema_decay: float | None = None  # exponential moving average of the weights (audiocraft: 0.99)
    ema_every: int = 1  # update the average every this many steps (audiocraft: 10)
    stop_after: int | None = None  # stop once this step is done and saved (a planned preemption)


@dataclasses.dataclass(frozen=True)
class OptimizerSection:
    """AdamW with linear warm-up and cosine (or constant) decay, global-norm clipping."""

    learning_rate: float = 1e-4
    warmup_steps: int = 4000
    schedule: Literal["cosine", "constant"] = "cosine"
    end_learning_rate_ratio: float = 0.0  # cosine decays to learning_rate * this
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1  # applied to matrices and embedding tables, not to norms and biases
    grad_clip: float = 1.0  # 0 disables clipping


@dataclasses.dataclass(frozen=True)
class LoraSection:
    """Low-rank adapters on the decoder's projections (:mod:`musicgen_jax.models.lora`), off by
    default. On, every base weight is frozen (stored in ``base_dtype``) and only the adapters train:
    they alone are in the optimizer state and the checkpoints; the base is read again from
    ``model.init_from`` (or re-made from the seed) on resume and export."""

    enabled: bool = False
    targets: tuple[str, ...] = (
        ALL_TARGETS  # self_attention.{query,key,value,out}, cross_attention.*, fc1, fc2
    )
    rank: int = 8
    alpha: float = 16.0  # the update is scaled by alpha / rank (PEFT's lora_alpha / r)
    dropout: float = 0.0  # on the adapters' input features (one mask per layer and step)
    base_dtype: Dtype = "float32"  # the frozen base weights; bfloat16 halves their memory
    # QLoRA: the decoder's projection kernels of the base stored in 4-bit NormalFloat (nf4) or int8,
    # block-wise (musicgen_jax/models/quantization.py), dequantised to base_dtype inside the step.
    quantize: Literal["none", "int8", "nf4"] = "none"

    def spec(self) -> LoraSpec:
        return LoraSpec(tuple(self.targets), self.rank, float(self.alpha), self.dropout)


@dataclasses.dataclass(frozen=True)
class MeshSection:
    """Device mesh ``(data, fsdp, tensor)``; one entry may be -1 (all remaining devices).

    ``rules`` maps logical axis names (:mod:`musicgen_jax.sharding.axes`) to mesh axes; null uses
    ``DEFAULT_RULES``. The layout follows from the mesh shape alone: ``data=-1`` is data-parallel,
    ``fsdp=-1`` fully shards parameters and optimizer state, ``tensor=N`` splits heads/MLP/vocab.
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: tuple[tuple[str, Any], ...] | None = None
    # Apply the model's activation annotations (nn.with_logical_constraint) under the mesh. Off,
    # parameter and batch shardings (jit in/out shardings) still apply and GSPMD propagates
    # activations from them alone.
    activation_constraints: bool = True

    def __post_init__(self) -> None:
        shape = (self.data, self.fsdp, self.tensor)
        if sum(s == -1 for s in shape) > 1 or any(s == 0 or s < -1 for s in shape):
            raise ValueError(f"mesh sizes must be positive with at most one -1, got {shape}")


@dataclasses.dataclass(frozen=True)
class DistributedSection:
    """Multi-process start (:func:`musicgen_jax.training.mesh.initialize_distributed`), off for a
    single process. ``auto`` calls ``jax.distributed.initialize`` when a coordinator address is
    given here or a cluster launcher started this process (SLURM / Open MPI with several tasks,
    Cloud TPU pods, ``JAX_COORDINATOR_ADDRESS``); unset fields are left to jax's cluster detection.
    ``cpu_collectives`` picks the cross-process collectives of the CPU backend (``gloo``: CPU-only
    runs of several processes, e.g. the tests)."""

    initialize: Literal["auto", "always", "never"] = "auto"
    coordinator_address: str | None = None  # host:port of process 0
    num_processes: int | None = None
    process_id: int | None = None
    cpu_collectives: Literal["gloo", "mpi"] | None = None

    def __post_init__(self) -> None:
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError(f"distributed.num_processes must be positive, got {self.num_processes}")
        limit = self.num_processes
        if self.process_id is not None and not (
            self.process_id >= 0 and (limit is None or self.process_id < limit)
        ):
            raise ValueError(f"distributed.process_id {self.process_id} is not in [0, {self.num_processes})")


@dataclasses.dataclass(frozen=True)
class MemoryDataConfig:
    """The in-memory synthetic token source (:mod:`musicgen_jax.training.memory_source`)."""

    num_examples: int = 64  # the pool; batches cycle through it in a seeded order per epoch
    frames: int = 50  # codec frames per example (50 = one second)
    max_text_len: int = 16
    # "motifs": each codebook repeats a short random motif (learnable); "random": i.i.d. tokens
    # (learnable only by memorising a small pool).
    pattern: Literal["motifs", "random"] = "motifs"
    padded_fraction: float = 0.25  # share of examples whose last frames are padding (frame_mask False)
    seed: int = 1234

    def __post_init__(self) -> None:
        for name in ("num_examples", "frames", "max_text_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.padded_fraction <= 1.0:
            raise ValueError(f"padded_fraction must be in [0, 1], got {self.padded_fraction}")


@dataclasses.dataclass(frozen=True)
class DataSection:
    """Where the batches come from. ``source`` picks one kind and only that kind's section is read:

    * ``memory``: synthetic tokens the run generates itself (:class:`MemoryDataConfig`);
    * ``pipeline``: :mod:`musicgen_jax.data.pipeline`'s grain loader over tokenised ArrayRecord
      shards, this project's or tfds-built ones (:class:`~musicgen_jax.data.pipeline.DataConfig`).
      Its ``batch_size`` is the run's ``training.batch_size``; :func:`load_train_config` fills it in.
    """

    source: Literal["memory", "pipeline"] = "memory"
    memory: MemoryDataConfig = MemoryDataConfig()
    pipeline: PipelineDataConfig = dataclasses.field(default_factory=PipelineDataConfig)


@dataclasses.dataclass(frozen=True)
class EvalSection:
    every_steps: int = 0  # 0: no evaluation; checkpoints are then ranked by the train loss
    batches: int = 2


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
    every_steps: int = 1000
    keep: int = 3  # the newest N are kept, plus the best by eval (or train) loss
    keep_best: bool = True
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class LoggingSection:
    every_steps: int = 10
    tensorboard: bool = True
    progress: bool = True  # a progress bar on stderr (process 0 only)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    output_dir: str | None = None  # checkpoints, metrics.jsonl, TensorBoard events, resolved config
    compilation_cache_dir: str | None = None  # JAX's persistent compilation cache: resumes skip compiling
    model: ModelSpec = ModelSpec()
    training: TrainingSection = TrainingSection()
    optimizer: OptimizerSection = OptimizerSection()
    lora: LoraSection = LoraSection()
    mesh: MeshSection = MeshSection()
    distributed: DistributedSection = DistributedSection()
    data: DataSection = DataSection()
    eval: EvalSection = EvalSection()
    checkpoint: CheckpointSection = CheckpointSection()
    logging: LoggingSection = LoggingSection()

    def __post_init__(self) -> None:
        t = self.training
        if t.steps < 1 or t.batch_size < 1 or t.microbatches < 1:
            raise ValueError("training.steps, batch_size and microbatches must be positive")
        if t.batch_size % t.microbatches:
            raise ValueError(
                f"training.batch_size {t.batch_size} is not divisible by microbatches {t.microbatches}"
            )
        if not 0.0 <= t.condition_dropout < 1.0:
            raise ValueError("training.condition_dropout must be in [0, 1)")
        if not 0.0 <= t.attribute_dropout < 1.0:
            raise ValueError("training.attribute_dropout must be in [0, 1)")
        if t.ema_decay is not None and not 0.0 < t.ema_decay < 1.0:
            raise ValueError("training.ema_decay must be in (0, 1)")
        if self.lora.enabled:
            self.lora.spec()  # checks targets, rank and dropout
            if self.model.train_text_encoder:
                raise ValueError(
                    "lora.enabled freezes every base weight: model.train_text_encoder must be off"
                )
        if self.model.init_from is None and self.model.preset is None:
            raise ValueError("model: give a preset or init_from")
        for name in ("every_steps", "keep"):
            if getattr(self.checkpoint, name) < 1:
                raise ValueError(f"checkpoint.{name} must be positive")
        if self.logging.every_steps < 1:
            raise ValueError("logging.every_steps must be positive")
        pipeline_batch = self.data.pipeline.batch_size
        if self.data.source == "pipeline" and pipeline_batch != t.batch_size:
            raise ValueError(
                f"data.pipeline.batch_size ({pipeline_batch}) differs from training.batch_size "
                f"({t.batch_size}): the run has one global batch size, set only the latter"
            )


def load_train_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A shipped train config name (``tiny``) or YAML path, with dotted overrides; the model part is
    resolved once here so that bad model overrides fail before anything starts."""
    path = Path(path)
    if not path.suffix and not path.is_file():
        path = TRAIN_CONFIG_DIR / f"{path}.yaml"
    raw = config_io.deep_merge(config_io.read_yaml(path), config_io.parse_overrides(overrides))
    config = config_io.from_dict(TrainConfig, _with_pipeline_batch_size(raw))
    if config.model.init_from is None:
        resolve_model_config(config.model)
    return config


def _with_pipeline_batch_size(raw: dict) -> dict:
    """``raw`` with ``data.pipeline.batch_size`` defaulting to ``training.batch_size``: the data
    pipeline's config has a batch size of its own, and the run has one. Set both and they must agree
    (TrainConfig checks); anything that is not a mapping is left for from_dict to reject."""
    data, training = raw.get("data", {}), raw.get("training", {})
    if not isinstance(data, dict) or not isinstance(training, dict):
        return raw
    pipeline = data.get("pipeline", {})
    if not isinstance(pipeline, dict) or "batch_size" in pipeline:
        return raw
    batch_size = training.get("batch_size", TrainingSection.batch_size)
    return config_io.deep_merge(raw, {"data": {"pipeline": {"batch_size": batch_size}}})


def model_overrides(spec: ModelSpec) -> dict[str, Any]:
    """The ``model.*`` fields that override MusicGenConfig, as a nested dict."""
    update: dict[str, Any] = {}
    for section in ("text_encoder", "decoder", "audio", "conditioning"):
        if getattr(spec, section):
            update[section] = dict(getattr(spec, section))
    if spec.name is not None:
        update["name"] = spec.name
    if spec.max_duration is not None:
        update["max_duration"] = spec.max_duration
    return update


def resolve_model_config(spec: ModelSpec, base: MusicGenConfig | None = None) -> MusicGenConfig:
    """The preset (or ``base``, the fine-tuning source's config) with the ``model.*`` overrides."""
    if base is None:
        base = MusicGenConfig.preset(spec.preset)
    update = model_overrides(spec)
    if not update:
        return base
    try:
        return config_io.override(base, update)
    except config_io.ConfigError as error:
        raise config_io.ConfigError(f"model: {error}") from None
