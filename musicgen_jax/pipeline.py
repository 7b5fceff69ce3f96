"""``MusicGen``: the user's facade: load from anywhere, then generate, score or decode.

Loading goes through :func:`~musicgen_jax.conversion.loader.load_model` (a musicgen-jax checkpoint,
a transformers MusicGen directory, an audiocraft LM checkpoint, or a hub id of any of those);
generation through the model's :class:`~musicgen_jax.generation.engine.GenerationEngine`
(``model.engine``: parameters, numerics, text path, compiled programs); audio through the codec,
loaded on first use.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from musicgen_jax.codec import EncodecBridge, JaxCodec, check_backend, load_codec
from musicgen_jax.conditioning import Attributes
from musicgen_jax.conditioning.melody import MelodyError, chroma_from_audio, window_chromas
from musicgen_jax.conditioning.text import PromptError
from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion.loader import LoadedModel, load_model
from musicgen_jax.conversion.tensors import CheckpointError
from musicgen_jax.conversion.transformers_format import is_transformers_checkpoint, write_codec_directory
from musicgen_jax.dtypes import resolve_dtype
from musicgen_jax.generation.engine import GenerationEngine
from musicgen_jax.generation.params import GenerationParams, GenerationRequest
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.models.int8 import check_quantize
from musicgen_jax.models.layer_layout import AUTO, to_scanned

__all__ = ["GeneratedAudio", "MusicGen", "PromptError"]


class MusicGen:
    """A loaded MusicGen model."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        dtype: str = "auto",
        layer_unroll: int = 1,
        kv_splits: int = 4,
        codec_backend: str = "auto",
        layer_layout: str = AUTO,
        quantize: str | None = None,
    ):
        self.codec_backend = check_backend(codec_backend)
        self.codec_source = loaded.codec_source
        self.generation_defaults = dict(loaded.generation_defaults)
        self.source = loaded.source
        self.engine = GenerationEngine(
            loaded.config,
            loaded.params,
            loaded.tokenizer,
            dtype=dtype,
            layer_unroll=layer_unroll,
            kv_splits=kv_splits,
            layer_layout=layer_layout,
            quantize=quantize,
        )
        self._codec = None

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
        kv_splits: int = 4,
        codec_backend: str = "auto",
        text_padding: str | None = None,
        adapter: str | Path | None = None,
        layer_layout: str = AUTO,
        quantize: str | None = None,
    ) -> MusicGen:
        """Load a model.

        ``adapter``: a PEFT LoRA directory (made with transformers + peft for this model, or by
        ``train.py export --adapter-only``), merged into the weights at load (in float32).

        ``dtype`` is the parameter, cache and compute dtype (``float32``, ``bfloat16``, ``float16``;
        ``auto``, the default: bfloat16 on GPUs and TPUs, float32 on CPUs). ``float32`` means
        float32 matrix products everywhere, also on GPUs (whose default would be TF32) and TPUs.
        ``layer_unroll``: decoder layers per iteration of the compiled layer loop (1 to the number
        of layers; results are the same, only compile time and step time change; 1 is fastest on
        CPUs). ``kv_splits``: attention spans compiled per length bucket (same results).
        ``layer_layout``: the decoder's parameter layout while it runs: ``scanned`` (stacked
        layers, one layer's program), ``unrolled`` (one array a layer: faster steps, longer compile)
        or ``auto``, the default: unrolled on CPUs for decoders of 256 MiB of weights or more
        (musicgen-small and up), scanned otherwise (same results; see
        :mod:`musicgen_jax.models.layer_layout`). ``quantize="int8"``: weight-only int8 decoder
        projections and LM heads, a per-output-feature scale each (a quarter of float32's weight
        bytes; agreement with float32 in docs/performance.md), None (the default) for none.
        ``text_encoder`` (a T5 directory or hub id; default: the one the checkpoint names),
        ``preset`` (optional, checked against the checkpoint's own shape) and ``codec`` (an EnCodec
        directory or hub id) are read only for audiocraft's own checkpoints (a directory with
        ``state_dict.bin``, or the file), which hold just the language model. ``text_padding``:
        "mask" (transformers' behaviour, the default of every shipped config) or "zeros_attended"
        (audiocraft's: padded text positions are attended as zeros; see docs/conversion.md).
        ``codec_backend``: ``jax`` (the Flax
        EnCodec), ``torch`` (transformers' ``EncodecModel``) or ``auto``, the default, which is
        ``jax`` (see :mod:`musicgen_jax.codec.backends` for why); both give the same audio to float
        rounding.
        """
        check_backend(codec_backend)  # before the seconds a model takes to load
        check_quantize(quantize)
        dtype = resolve_dtype(dtype)  # parameters are read straight into the dtype they will run in
        loaded = load_model(
            name_or_path,
            dtype=dtype,
            text_encoder=text_encoder,
            preset=preset,
            codec=codec,
            text_padding=text_padding,
            adapter=adapter,
        )
        return cls(
            loaded,
            dtype=dtype,
            layer_unroll=layer_unroll,
            kv_splits=kv_splits,
            codec_backend=codec_backend,
            layer_layout=layer_layout,
            quantize=quantize,
        )

    def save_pretrained(self, directory: str | Path, dtype: str | None = None) -> Path:
        """Write a musicgen-jax checkpoint (parameters in ``dtype``, default as loaded)."""
        if self.engine.quantize:
            raise ValueError(
                f"an {self.engine.quantize} model is not saved (its weights are rounded); "
                "save the float model it was loaded from"
            )
        directory = Path(directory)
        # In the checkpoints' (scanned) layout, whichever the model runs in.
        params = jax.tree.map(np.asarray, to_scanned(self.engine.params, self.config.decoder))
        ckpt.save_checkpoint(
            directory,
            self.config,
            params,
            tokenizer=self.engine.tokenizer,
            generation_config=self.generation_defaults or None,
            dtype=dtype,
        )
        codec_source = Path(self.codec_source) if self.codec_source is not None else None
        if codec_source is not None and codec_source.is_dir() and codec_source != directory / ckpt.CODEC:
            if is_transformers_checkpoint(codec_source):
                write_codec_directory(codec_source, directory / ckpt.CODEC)
            else:
                shutil.copytree(codec_source, directory / ckpt.CODEC, dirs_exist_ok=True)
        return directory

    # ------------------------------------------------------------------------------ facts

    @property
    def config(self) -> MusicGenConfig:
        return self.engine.config

    @property
    def dtype(self) -> str:
        return self.engine.dtype

    @property
    def tokenizer(self):
        return self.engine.tokenizer

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

    @property
    def takes_melody(self) -> bool:
        """Whether this is a melody model (``melody=`` / ``melody_chroma=`` are accepted)."""
        return self.config.is_melody

    def require_melody_model(self) -> None:
        """A ``MelodyError`` when this model takes no melody (said before any audio is read)."""
        if not self.takes_melody:
            name = self.source if self.source is not None else self.config.name
            raise MelodyError(
                f"{name} is not a melody model: it takes no melody (melody models: "
                "facebook/musicgen-melody, -melody-large, -stereo-melody, -stereo-melody-large)"
            )

    def melody_chroma(
        self, audio, sample_rate: int, duration: float | None = None, extend_stride: float | None = None
    ) -> np.ndarray | tuple[np.ndarray, ...]:
        """``[frames, num_chroma]`` chroma of a melody (``[samples]`` or ``[channels, samples]`` at
        ``sample_rate``) as this model reads it (:func:`~musicgen_jax.conditioning.melody.chroma_from_audio`);
        a ``MelodyError`` for a model without melody support or silent audio.

        For a ``duration`` past the model's window (long form, each window ``extend_stride`` seconds
        after the last), a tuple with one chroma per window: the melody moves along with the
        windows as audiocraft moves it, each window reading the model's window length of it from
        the window's start, the melody repeated periodically where it runs out
        (:func:`~musicgen_jax.conditioning.melody.window_chromas`)."""
        self.require_melody_model()
        num_chroma = self.config.melody.num_chroma
        shapes = self.engine.shapes
        if duration is None or shapes.window_count(duration, extend_stride) == 1:
            return chroma_from_audio(audio, sample_rate, num_chroma=num_chroma)
        stride_seconds = shapes.frames(extend_stride) / shapes.frame_rate  # the windows' own offsets
        starts = [w * stride_seconds for w in range(shapes.window_count(duration, extend_stride))]
        return window_chromas(audio, sample_rate, starts, self.config.max_duration, num_chroma)

    # ------------------------------------------------------------------------------ scoring

    def logits(
        self, texts: Sequence[str], decoder_input_ids: np.ndarray, attributes=None, melody_chroma=None
    ) -> np.ndarray:
        """Teacher-forced logits ``[batch, codebooks, length, vocab]`` (float32) for delayed tokens
        (``melody_chroma``: a melody model's chroma, as in :meth:`make_requests`)."""
        chromas = _per_row(melody_chroma, len(texts), "melody_chroma")
        return self.engine.logits(self.engine.prepare_text(texts, attributes), decoder_input_ids, chromas)

    # ------------------------------------------------------------------------------ generation

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
        melody=None,
        melody_sample_rate: int | None = None,
        melody_chroma=None,
        **params,
    ) -> list[GenerationRequest]:
        """Validated :class:`~musicgen_jax.generation.params.GenerationRequest` objects.

        ``params`` are :class:`~musicgen_jax.generation.params.GenerationParams` fields
        (``duration``, ``temperature``, ``top_k``, ``top_p``, ``guidance_scale``, ``greedy``,
        ``num_beams``, ``seed``, ...). A seed given for a batch seeds row ``i`` with ``seed + i``.
        ``melody`` (melody models): a reference melody's audio at ``melody_sample_rate``,
        ``[samples]`` or ``[channels, samples]`` for every row, or a list (None entries: no melody)
        of one a row; its chroma is computed as transformers' feature extractor does
        (:func:`~musicgen_jax.conditioning.melody.chroma_from_audio`). ``melody_chroma``: such chroma
        given directly, ``[frames, 12]`` for every row, ``[batch, frames, 12]`` or a list.
        """
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
        if melody is not None:
            if melody_chroma is not None:
                raise PromptError("give melody or melody_chroma, not both", "melody")
            if melody_sample_rate is None:
                raise PromptError("melody needs melody_sample_rate", "melody")
            shared = isinstance(melody, np.ndarray) and melody.ndim <= 2
            rows = [melody] if shared else list(melody)
            # Long-form windows follow the melody: the chroma depends on the duration and stride.
            span = GenerationParams(**{k: v for k, v in params.items() if k != "seed"})
            melody_chroma = [
                None
                if m is None
                else self.melody_chroma(m, melody_sample_rate, span.duration, span.extend_stride)
                for m in rows
            ]
            if shared:
                melody_chroma = melody_chroma * len(texts)
        chromas = _per_row(melody_chroma, len(texts), "melody_chroma")
        if any(c is not None for c in chromas):
            self.require_melody_model()  # now, not when the batch reaches the device
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
                    melody_chroma=chromas[i],
                )
            )
        return requests

    def generate_tokens(self, texts=None, *, progress=None, **kwargs) -> np.ndarray:
        """Codec codes ``[batch, codebooks, frames]`` (the delay pattern reverted)."""
        output = self.engine.generate(self.make_requests(texts, **kwargs), progress=progress)
        return _stack_frames(output.frames)

    def generate(self, texts=None, *, progress=None, **kwargs) -> GeneratedAudio:
        """Audio ``[batch, channels, samples]`` at :attr:`sample_rate` (see :meth:`make_requests`)."""
        requests = self.make_requests(texts, **kwargs)
        codec = self.codec  # loaded before the clock starts: its import is not decoding time
        output = self.engine.generate(requests, progress=progress)
        began = time.perf_counter()
        if output.device_codes is not None:
            # Codes still on the device: the JAX codec decodes them there, and they are copied to
            # the host only after (the PyTorch one copies them first itself).
            audio = codec.decode(output.device_codes)
            codes = np.asarray(output.device_codes)
        else:
            codes = _stack_frames(output.frames)
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
            beam_scores=output.beam_scores,
        )

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codec codes ``[batch, codebooks, frames]`` to audio ``[batch, channels, samples]``."""
        return self.codec.decode(codes)

    # ------------------------------------------------------------------------------ codec

    @property
    def codec(self) -> EncodecBridge | JaxCodec:
        """The codec on :attr:`codec_backend` (see :func:`~musicgen_jax.codec.load_codec`), loaded when
        first used."""
        if self._codec is None:
            if self.codec_source is None:
                raise CheckpointError("this model has no codec; pass codec= to from_pretrained")
            # The bandwidth whose codebooks are the model's tokens (a codec may offer several).
            self._codec = load_codec(
                self.codec_source,
                audio_channels=self.audio_channels,
                backend=self.codec_backend,
                codebooks=self.num_codebooks // self.audio_channels,
            )
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
    beam_scores: list[float | None] = dataclasses.field(default_factory=list)  # per row, beams only

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
        raise ValueError("rows have different lengths; use engine.generate for per-row durations")
    return np.stack(frames).astype(np.int32)


def _per_row(value, rows: int, name: str) -> list:
    """A per-row input as a list of ``rows`` entries: None, one array for every row (``[frames,
    bins]``), ``[rows, frames, bins]``, or a list of arrays or None."""
    if value is None:
        return [None] * rows
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return [value] * rows
    items = list(value)
    if len(items) != rows:
        raise PromptError(f"{rows} prompts but {len(items)} {name} rows", name)
    return items
