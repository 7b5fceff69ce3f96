"""``MusicGen``: the user-facing model object: load from anywhere, condition, score, generate.

``MusicGen.from_pretrained`` accepts a musicgen-jax checkpoint directory, a transformers MusicGen
directory (converted on the fly), an audiocraft LM checkpoint (with a T5 directory), or a hub id
of any of those. The object holds the parameters on the device, the tokenizer and (lazily) the
PyTorch codec bridge; compiled programs are cached per shape bucket.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax import hub
from musicgen_jax.conditioning import Attributes, encode_attributes, null_attributes, render_description
from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion.tensors import CheckpointError
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.models.musicgen import MusicGenModel

logger = logging.getLogger(__name__)

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
DTYPE_CHOICES = ("auto",) + tuple(COMPUTE_DTYPES)


def resolve_dtype(dtype: str) -> str:
    """``auto``: bfloat16 on GPUs and TPUs (half the bytes each decode step reads), float32 on CPUs
    (whose bfloat16 matmuls are slow or emulated)."""
    if dtype == "auto":
        return "bfloat16" if jax.default_backend() in ("gpu", "cuda", "rocm", "tpu") else "float32"
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
    return dtype


def _to_device(tree: dict, dtype) -> dict:
    """Move host parameters to the device leaf by leaf, replacing them in place so each host array
    is released as soon as its copy exists (a large model never sits twice in host memory)."""
    for key, value in tree.items():
        tree[key] = _to_device(value, dtype) if isinstance(value, dict) else jnp.asarray(value, dtype)
    return tree


TEXT_LENGTH_BUCKET = 16  # prompts are padded to a multiple of this, so lengths share compiled programs


class PromptError(ValueError):
    """A prompt the model cannot take (too long, wrong type)."""


@dataclasses.dataclass(frozen=True)
class TextBatch:
    """Tokenised prompts: ``ids``/``mask`` ``[batch, text_len]`` (padded to a bucket) and the text."""

    ids: np.ndarray
    mask: np.ndarray
    texts: tuple[str, ...]
    attributes: dict[str, np.ndarray] | None = None


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


class MusicGen:
    """A loaded MusicGen model."""

    def __init__(
        self,
        config: MusicGenConfig,
        params: dict,
        tokenizer: Any,
        *,
        dtype: str = "auto",
        codec_source: str | Path | None = None,
        generation_defaults: dict | None = None,
        source: str | None = None,
        layer_unroll: int = 1,
    ):
        dtype = resolve_dtype(dtype)
        self.config = config
        self.dtype = dtype
        self.model = MusicGenModel(
            config, dtype=COMPUTE_DTYPES[dtype], param_dtype=COMPUTE_DTYPES[dtype], scan_unroll=layer_unroll
        )
        self.params = _to_device(params, COMPUTE_DTYPES[dtype])
        self.tokenizer = tokenizer
        self.codec_source = codec_source
        self.generation_defaults = dict(generation_defaults or {})
        self.source = source
        self._codec = None
        self._generator = None
        self._tokenizer_lock = threading.Lock()
        self._compiled: dict = {}

    # ------------------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        dtype: str = "auto",
        text_encoder: str | Path | None = None,
        preset: str | None = None,
        codec: str | Path | None = None,
        layer_unroll: int = 1,
    ) -> MusicGen:
        """Load a model.

        ``dtype`` is the parameter, cache and compute dtype (``float32``, ``bfloat16``, ``float16``;
        ``auto``, the default: bfloat16 on GPUs and TPUs, float32 on CPUs). ``float32`` means
        float32 matrix products everywhere, also on GPUs (whose default would be TF32) and TPUs.
        ``layer_unroll``: decoder layers per iteration of the compiled layer loop (1 to the number
        of layers; results are the same, only compile time and step time change; 1 is fastest on
        CPUs).
        ``text_encoder`` (a T5 directory or hub id, default ``t5-base``), ``preset`` (the model
        shape) and ``codec`` (an EnCodec directory or hub id) are needed only for audiocraft's own
        checkpoints, which hold just the language model.
        """
        directory = hub.resolve(name_or_path)
        dtype = resolve_dtype(dtype)
        storage_dtype = dtype  # parameters are read straight into the dtype they will run in
        from musicgen_jax.conversion import audiocraft_format, transformers_format

        if ckpt.is_checkpoint(directory):
            config, params = ckpt.load_checkpoint(directory, storage_dtype)
            tokenizer = _load_tokenizer(directory / ckpt.TOKENIZER)
            codec_source = directory / ckpt.CODEC if (directory / ckpt.CODEC).is_dir() else config.audio.codec
            generation = ckpt.load_generation_config(directory)
        elif transformers_format.is_transformers_checkpoint(directory):
            config, params = transformers_format.load_transformers_params(directory, storage_dtype)
            tokenizer = _load_tokenizer(directory)
            codec_source = directory
            path = directory / "generation_config.json"
            generation = json.loads(path.read_text()) if path.is_file() else {}
        elif audiocraft_format.is_audiocraft_checkpoint(directory):
            if preset is None:
                raise CheckpointError(
                    f"{directory} is an audiocraft LM checkpoint, which does not record its shape: pass preset= "
                    f"(one of {', '.join(MusicGenConfig.preset_names())})"
                )
            config = MusicGenConfig.preset(preset)
            t5_dir = hub.resolve(text_encoder or "t5-base")
            params = audiocraft_format.load_audiocraft_params(directory, t5_dir, config, storage_dtype)
            tokenizer = _load_tokenizer(t5_dir)
            codec_source = codec or config.audio.codec
            generation = {}
        else:
            raise CheckpointError(
                f"{directory} is neither a musicgen-jax checkpoint (musicgen_jax.json), a transformers MusicGen "
                "directory (config.json with model_type 'musicgen'), nor an audiocraft LM (state_dict.bin)"
            )
        return cls(
            config,
            params,
            tokenizer,
            dtype=dtype,
            codec_source=codec or codec_source,
            generation_defaults=generation,
            source=str(name_or_path),
            layer_unroll=layer_unroll,
        )

    def save_pretrained(self, directory: str | Path, dtype: str | None = None) -> Path:
        """Write a musicgen-jax checkpoint (parameters in ``dtype``, default as loaded)."""
        directory = Path(directory)
        params = jax.tree.map(np.asarray, self.params)
        ckpt.save_checkpoint(
            directory,
            self.config,
            params,
            tokenizer=self.tokenizer,
            generation_config=self.generation_defaults or None,
            dtype=dtype,
        )
        codec_source = Path(self.codec_source) if self.codec_source is not None else None
        if codec_source is not None and codec_source.is_dir() and codec_source != directory / ckpt.CODEC:
            from musicgen_jax.conversion.transformers_format import (
                is_transformers_checkpoint,
                write_codec_directory,
            )

            if is_transformers_checkpoint(codec_source):
                write_codec_directory(codec_source, directory / ckpt.CODEC)
            else:
                import shutil

                shutil.copytree(codec_source, directory / ckpt.CODEC, dirs_exist_ok=True)
        return directory

    # ------------------------------------------------------------------------------ facts

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.audio.frame_rate

    @property
    def num_codebooks(self) -> int:
        return self.config.decoder.num_codebooks

    @property
    def audio_channels(self) -> int:
        return self.config.decoder.audio_channels

    def numerics(self):
        """The context every program of this model is traced in: a float32 model gets float32
        matrix products (``jax.default_matmul_precision``), not the TF32 or bfloat16 passes GPUs
        and TPUs use by default, so ``dtype="float32"`` is the exact path on every device."""
        if self.dtype == "float32":
            return jax.default_matmul_precision("float32")
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------ conditioning

    def prepare_text(
        self,
        texts: Sequence[str | None],
        attributes: Sequence[Attributes | None] | None = None,
        length_bucket: int = TEXT_LENGTH_BUCKET,
    ) -> TextBatch:
        """Render attributes into the descriptions (for text-attribute models), tokenise, pad."""
        if isinstance(texts, str):
            raise PromptError("pass a list of prompts, not a single string")
        attributes = list(attributes) if attributes is not None else [None] * len(texts)
        if len(attributes) != len(texts):
            raise PromptError(f"{len(texts)} prompts but {len(attributes)} attribute sets")
        rendered = []
        for text, attrs in zip(texts, attributes):
            if text is not None and not isinstance(text, str):
                raise PromptError(f"a prompt must be a string, got {type(text).__name__}")
            rendered.append(
                render_description(text, attrs) if self.config.uses_text_attributes else (text or "")
            )
        with self._tokenizer_lock:  # fast tokenizers are not safe to share between threads
            encoded = self.tokenizer(rendered, padding=True, return_tensors="np")
        ids, mask = encoded["input_ids"].astype(np.int32), encoded["attention_mask"].astype(np.int32)
        limit = self.config.conditioning.max_text_tokens
        longest = int(mask.sum(axis=1).max()) if len(rendered) else 0
        if longest > limit:
            raise PromptError(f"a prompt is {longest} tokens long; this model takes at most {limit}")
        padded = _round_up(ids.shape[1], length_bucket)
        pad_id = self.tokenizer.pad_token_id or 0
        ids = np.pad(ids, ((0, 0), (0, padded - ids.shape[1])), constant_values=pad_id)
        mask = np.pad(mask, ((0, 0), (0, padded - mask.shape[1])))
        # An empty description means "no condition": mask it all, like the null condition.
        for row, text in enumerate(rendered):
            if not text.strip():
                mask[row] = 0
        encoded_attributes = None
        if self.config.uses_learned_attributes:
            encoded_attributes = encode_attributes(attributes).as_dict()
        return TextBatch(ids, mask, tuple(rendered), encoded_attributes)

    def encode(self, batch: TextBatch) -> tuple[jax.Array, jax.Array]:
        """Cross-attention memory and mask for a :class:`TextBatch` (compiled per shape)."""
        fn = self._compiled.get("encode")
        if fn is None:
            model = self.model

            def encode(params, ids, mask, attributes):
                return model.apply({"params": params}, ids, mask, attributes, method=MusicGenModel.encode)

            fn = self._compiled["encode"] = jax.jit(encode)
        attributes = batch.attributes
        if self.config.uses_learned_attributes and attributes is None:
            attributes = null_attributes(len(batch.ids)).as_dict()
        with self.numerics():
            return fn(self.params, batch.ids, batch.mask, attributes)

    def logits(self, texts: Sequence[str], decoder_input_ids: np.ndarray, attributes=None) -> np.ndarray:
        """Teacher-forced logits ``[batch, codebooks, length, vocab]`` (float32) for delayed tokens."""
        batch = self.prepare_text(texts, attributes)
        memory, memory_mask = self.encode(batch)
        fn = self._compiled.get("decode")
        if fn is None:
            model = self.model
            fn = self._compiled["decode"] = jax.jit(
                lambda params, tokens, memory, mask: model.apply(
                    {"params": params}, tokens, memory, mask, method=MusicGenModel.decode
                )
            )
        with self.numerics():
            logits = fn(self.params, jnp.asarray(decoder_input_ids, jnp.int32), memory, memory_mask)
        return np.asarray(logits)

    # ------------------------------------------------------------------------------ generation

    @property
    def generator(self):
        """The request scheduler holding this model's compiled generation programs."""
        if self._generator is None:
            from musicgen_jax.generation.generator import Generator

            self._generator = Generator(self)
        return self._generator

    def make_requests(
        self,
        texts: str | Sequence[str | None] | None,
        *,
        attributes: Attributes | Sequence[Attributes | None] | None = None,
        genre: str | None = None,
        mood: str | Sequence[str] | None = None,
        tempo: float | None = None,
        instruments: str | Sequence[str] | None = None,
        key: str | None = None,
        audio_prompt: np.ndarray | None = None,
        audio_prompt_sample_rate: int | None = None,
        **params,
    ) -> list:
        """Validated :class:`~musicgen_jax.generation.params.GenerationRequest` objects.

        ``params`` are :class:`~musicgen_jax.generation.params.GenerationParams` fields
        (``duration``, ``temperature``, ``top_k``, ``top_p``, ``guidance_scale``, ``greedy``,
        ``num_beams``, ``seed``, ...). A seed given for a batch seeds row ``i`` with ``seed + i``.
        """
        from musicgen_jax.generation.params import GenerationParams, GenerationRequest

        if texts is None or isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise PromptError("no prompts given")
        if attributes is None or isinstance(attributes, Attributes):
            shared = attributes
            if shared is None and any(v is not None for v in (genre, mood, tempo, instruments, key)):
                shared = Attributes.create(
                    genre=genre, mood=mood, tempo=tempo, instruments=instruments, key=key
                )
            attributes = [shared] * len(texts)
        elif len(attributes) != len(texts):
            raise PromptError(f"{len(texts)} prompts but {len(attributes)} attribute sets")
        if shared_duration := params.get("duration"):
            attributes = [
                dataclasses.replace(a, duration=float(shared_duration))
                if a is not None and self.config.uses_learned_attributes
                else a
                for a in attributes
            ]
        prompt_codes = None
        if audio_prompt is not None:
            if audio_prompt_sample_rate is None:
                raise PromptError("audio_prompt needs audio_prompt_sample_rate")
            audio = np.asarray(audio_prompt, np.float32)
            audio = audio[None, None] if audio.ndim == 1 else audio[None] if audio.ndim == 2 else audio
            codes = self.codec.encode(audio, audio_prompt_sample_rate)  # [1 or batch, K, frames]
            prompt_codes = [codes[min(i, codes.shape[0] - 1)] for i in range(len(texts))]
        seed = params.pop("seed", None)
        requests = []
        for i, (text, attrs) in enumerate(zip(texts, attributes)):
            row_params = GenerationParams(**params, seed=None if seed is None else (seed + i) % 2**32)
            requests.append(
                GenerationRequest(
                    prompt=text,
                    params=row_params,
                    attributes=attrs,
                    prompt_codes=None if prompt_codes is None else prompt_codes[i],
                )
            )
        return requests

    def generate_tokens(self, texts=None, *, progress=None, **kwargs) -> np.ndarray:
        """Codec codes ``[batch, codebooks, frames]`` (the delay pattern reverted)."""
        output = self.generator.generate(self.make_requests(texts, **kwargs), progress=progress)
        return _stack_frames(output.frames)

    def generate(self, texts=None, *, progress=None, **kwargs) -> GeneratedAudio:
        """Audio ``[batch, channels, samples]`` at :attr:`sample_rate` (see :meth:`make_requests`)."""
        import time

        requests = self.make_requests(texts, **kwargs)
        codec = self.codec  # loaded before the clock starts: its import is not decoding time
        output = self.generator.generate(requests, progress=progress)
        codes = _stack_frames(output.frames)
        began = time.perf_counter()
        audio = codec.decode(codes)
        return GeneratedAudio(
            audio=audio,
            sample_rate=self.sample_rate,
            codes=codes,
            seeds=output.seeds,
            generate_seconds=output.generate_seconds,
            compile_seconds=output.compile_seconds,
            decode_seconds=time.perf_counter() - began,
            steps=output.steps,
        )

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codec codes ``[batch, codebooks, frames]`` to audio ``[batch, channels, samples]``."""
        return self.codec.decode(codes)

    # ------------------------------------------------------------------------------ codec

    @property
    def codec(self):
        """The PyTorch EnCodec bridge, loaded on first use."""
        if self._codec is None:
            from musicgen_jax.codec import EncodecBridge

            if self.codec_source is None:
                raise CheckpointError("this model has no codec; pass codec= to from_pretrained")
            self._codec = EncodecBridge.from_pretrained(self.codec_source, audio_channels=self.audio_channels)
        return self._codec


@dataclasses.dataclass
class GeneratedAudio:
    audio: np.ndarray  # [batch, channels, samples] float32
    sample_rate: int
    codes: np.ndarray  # [batch, codebooks, frames] int32
    seeds: list[int]
    generate_seconds: float
    compile_seconds: float
    decode_seconds: float
    steps: int

    @property
    def duration(self) -> float:
        return self.audio.shape[-1] / self.sample_rate

    @property
    def real_time_factor(self) -> float:
        """Seconds of audio (all rows) per second of generation and decoding (compilation excluded)."""
        spent = self.generate_seconds + self.decode_seconds
        return self.duration * self.audio.shape[0] / spent if spent > 0 else float("inf")


def _stack_frames(frames: list[np.ndarray]) -> np.ndarray:
    lengths = {f.shape[1] for f in frames}
    if len(lengths) != 1:
        raise ValueError("rows have different lengths; use generator.generate for per-row durations")
    return np.stack(frames).astype(np.int32)


def _load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{directory}: could not load the tokenizer ({error})") from None
