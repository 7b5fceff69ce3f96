"""The generation engine: one loaded model's parameters, numerics, text path and compiled programs.

:class:`GenerationEngine` is what the ``MusicGen`` facade, beam search, the CLI and the server use
to turn :class:`~musicgen_jax.generation.params.GenerationRequest` batches into codec frames. It
holds no per-call state: each :meth:`GenerationEngine.generate` runs a
:class:`~musicgen_jax.generation.call.GenerationCall` of its own, so two calls can run at once
(the server still gives the device to one owner so they do not fight over it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax import dtypes
from musicgen_jax.conditioning import null_attributes
from musicgen_jax.conditioning.melody import MelodyError, chroma_batch
from musicgen_jax.conditioning.text import TEXT_LENGTH_BUCKET, TextBatch, TextTokenizer
from musicgen_jax.generation import loop
from musicgen_jax.generation.call import FramesFn, GenerationCall, GenerationOutput, ProgressFn
from musicgen_jax.generation.params import GenerationRequest
from musicgen_jax.generation.programs import ProgramCache
from musicgen_jax.generation.sampling import SamplingControls
from musicgen_jax.generation.shapes import ShapePlan, candidate_count
from musicgen_jax.models import layer_layout as layouts
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.models.int8 import INT8, check_quantize, quantize_int8
from musicgen_jax.models.musicgen import MusicGenModel


def _to_device(tree: dict, dtype) -> dict:
    """Move host parameters to the device leaf by leaf, replacing them in place so each host array
    is released as soon as its copy exists (a large model never sits twice in host memory)."""
    for key, value in tree.items():
        tree[key] = _to_device(value, dtype) if isinstance(value, dict) else jnp.asarray(value, dtype)
    return tree


def _encode(model: MusicGenModel, params, ids, mask, attributes, chroma=None):
    return model.apply({"params": params}, ids, mask, attributes, True, chroma, method=MusicGenModel.encode)


def _decode(model: MusicGenModel, params, tokens, memory, mask):
    return model.apply({"params": params}, tokens, memory, mask, method=MusicGenModel.decode)


_encode_jit = jax.jit(_encode, static_argnames=("model",))
_decode_jit = jax.jit(_decode, static_argnames=("model",))


class GenerationEngine:
    """Runs generation for one model.

    ``params`` are host or device arrays; they move to the device in ``dtype`` (``auto``: bfloat16
    on GPUs and TPUs, float32 on CPUs). ``layer_unroll``: decoder layers per iteration of the
    compiled layer loop (same results; 1 is fastest on CPUs). ``layer_layout``: the decoder's
    parameter layout on the device (``auto``: unrolled on CPUs for large decoders, scanned
    otherwise; same results,
    see :mod:`musicgen_jax.models.layer_layout`); ``params`` come in either. ``quantize``:
    ``"int8"`` for weight-only int8 decoder projections and heads (:mod:`musicgen_jax.models.int8`;
    unrolled layout), None for the dtype's own weights. ``kv_splits``: the most attention
    spans compiled per length bucket (``loop.kv_buckets``); 1 compiles the fewest programs.
    ``chunk_seconds``: audio per host round trip of the loop (progress and streaming granularity).
    """

    def __init__(
        self,
        config: MusicGenConfig,
        params: dict,
        tokenizer,
        *,
        dtype: str = "auto",
        layer_unroll: int = 1,
        kv_splits: int = 4,
        chunk_seconds: float = 1.0,
        layer_layout: str = layouts.AUTO,
        quantize: str | None = None,
    ):
        if kv_splits < 1:
            raise ValueError(f"kv_splits must be at least 1, got {kv_splits}")
        self.config = config
        self.dtype = dtypes.resolve_dtype(dtype)
        self.quantize = check_quantize(quantize)
        if self.quantize and layer_layout == layouts.AUTO:
            layer_layout = layouts.UNROLLED  # int8 weights are laid out unrolled
        self.layer_layout = layouts.resolve_layout(
            layer_layout, decoder_bytes=layouts.weight_bytes(params["decoder"])
        )
        if self.quantize and self.layer_layout != layouts.UNROLLED:
            raise ValueError(
                f"quantize={self.quantize!r} runs in the unrolled layer layout, not {layer_layout!r}"
            )
        compute = dtypes.jax_dtype(self.dtype)
        self.model = MusicGenModel(
            config,
            dtype=compute,
            param_dtype=compute,
            scan_unroll=layer_unroll,
            layer_layout=self.layer_layout,
            int8=self.quantize == INT8,
        )
        if self.layer_layout == layouts.UNROLLED:  # each stacked host array released once laid out
            params = layouts.to_unrolled(params, convert=lambda leaf: jnp.asarray(leaf, compute))
        else:
            params = layouts.to_scanned(params, config.decoder)
        self.params = _to_device(params, compute)
        if self.quantize == INT8:
            self.params = quantize_int8(self.params)
        self.text = TextTokenizer.for_model(tokenizer, config)
        self.shapes = ShapePlan(config)
        self.programs = ProgramCache(self.numerics)
        self.kv_splits = kv_splits
        self.chunk_frames = max(1, self.shapes.frames(chunk_seconds))

    @property
    def tokenizer(self):
        return self.text.tokenizer

    @property
    def compile_count(self) -> int:
        return len(self.programs)

    @property
    def compile_seconds_total(self) -> float:
        return self.programs.compile_seconds_total

    def numerics(self) -> contextlib.AbstractContextManager:
        """The context every program of this model is traced in: a float32 model gets float32
        matrix products (``jax.default_matmul_precision``), not the TF32 or bfloat16 passes GPUs
        and TPUs use by default, so ``dtype="float32"`` is the exact path on every device."""
        if self.dtype == "float32":
            return jax.default_matmul_precision("float32")
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------ conditioning

    def prepare_text(self, texts: Sequence[str | None], attributes=None) -> TextBatch:
        """Render, tokenise and pad prompts (to a multiple of ``TEXT_LENGTH_BUCKET`` tokens, or to the
        longest prompt for a model with ``text_padding`` "zeros_attended")."""
        return self.text.batch(texts, attributes)

    def _attributes(self, batch: TextBatch):
        if self.config.uses_learned_attributes and batch.attributes is None:
            return null_attributes(len(batch.ids)).as_dict()
        return batch.attributes

    def melody_chroma(
        self, chromas: Sequence[np.ndarray | None] | None, batch_size: int
    ) -> np.ndarray | None:
        """A melody model's chroma input ``[batch, chroma_length, num_chroma]`` for these rows
        (None entries, or ``chromas`` None: the null chroma); None for other models, which refuse
        a melody."""
        melody = self.config.melody
        if melody is None:
            if chromas is not None and any(c is not None for c in chromas):
                raise MelodyError(f"{self.config.name} is not a melody model: it takes no melody")
            return None
        chromas = [None] * batch_size if chromas is None else list(chromas)
        return chroma_batch(chromas, melody.num_chroma, melody.chroma_length)

    def encode(
        self,
        batch: TextBatch,
        seconds: list[float] | None = None,
        chromas: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Cross-attention memory ``[batch, cond_len, hidden]`` and mask for a :class:`TextBatch`
        (a melody model's prefix, with each row's melody chroma or none); compile seconds spent
        are appended to ``seconds``."""
        attributes = self._attributes(batch)
        chroma = self.melody_chroma(chromas, len(batch.ids))
        key = ("encode", batch.ids.shape, attributes is not None, None if chroma is None else chroma.shape)
        fn, spent = self.programs.compile(
            key, _encode_jit, self.model, self.params, batch.ids, batch.mask, attributes, chroma
        )
        if seconds is not None:
            seconds.append(spent)
        with self.numerics():
            return fn(self.params, batch.ids, batch.mask, attributes, chroma)

    def logits(
        self,
        batch: TextBatch,
        decoder_input_ids: np.ndarray,
        chromas: Sequence[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """Teacher-forced logits ``[batch, codebooks, length, vocab]`` (float32) for delayed tokens
        (``chromas``: each row's melody, for a melody model)."""
        memory, memory_mask = self.encode(batch, chromas=chromas)
        tokens = jnp.asarray(decoder_input_ids, jnp.int32)
        key = ("decode", tokens.shape, memory.shape)
        fn, _ = self.programs.compile(key, _decode_jit, self.model, self.params, tokens, memory, memory_mask)
        with self.numerics():
            return np.asarray(fn(self.params, tokens, memory, memory_mask))

    # ------------------------------------------------------------------------------ loop programs

    def loop_programs(
        self, memory, memory_mask, plan, controls, steps, *, num_positions, guided, track_seen, num_candidates
    ) -> tuple[object, dict[int, object], float]:
        """The compiled ``start``, one ``advance`` per attention span (``loop.kv_buckets``), and the
        seconds spent compiling them now. Arguments may be abstract (``jax.ShapeDtypeStruct``)."""
        key = (memory.shape[0], num_positions, memory.shape[1], guided, track_seen)
        static = dict(num_positions=num_positions, guided=guided, track_seen=track_seen)
        start, seconds = self.programs.compile(
            ("start",) + key, loop.start, self.model, self.params, memory, memory_mask, plan, **static
        )
        state = jax.eval_shape(
            lambda p, m, mm, pl: loop.start(self.model, p, m, mm, pl, **static),
            self.params,
            memory,
            memory_mask,
            plan,
        )
        advance = {}
        for span in loop.kv_buckets(num_positions, self.kv_splits):
            advance[span], spent = self.programs.compile(
                ("advance",) + key + (num_candidates, span),
                loop.advance,
                self.model,
                self.params,
                state,
                controls,
                plan,
                steps,
                guided=guided,
                num_candidates=num_candidates,
                kv_length=span,
            )
            seconds += spent
        return start, advance, seconds

    def warmup_text_encoder(self, batch_sizes: Sequence[int], text_tokens: int = TEXT_LENGTH_BUCKET) -> float:
        """Compile the text encoder for the batch buckets of these sizes; returns compile seconds."""
        seconds: list[float] = []
        for size in sorted({self.shapes.batch_bucket(b) for b in batch_sizes}):
            ids = np.ones((size, text_tokens), np.int32)
            self.encode(TextBatch(ids, np.ones_like(ids), ("",) * size), seconds)
        return sum(seconds)

    def warmup(
        self,
        batch_sizes: Sequence[int] = (1,),
        durations: Sequence[float] = (10.0,),
        text_tokens: int = TEXT_LENGTH_BUCKET,
        guided: bool = True,
        repetition_penalty: bool = False,
        top_k: int = 250,
    ) -> float:
        """Compile the text encoder and the loop for these batch and length buckets now (a server
        does this before it reports ready); returns the seconds spent compiling."""
        before = self.compile_seconds_total
        dec = self.config.decoder
        cond_len = (
            text_tokens + (5 if self.config.uses_learned_attributes else 0) + self.config.prefix_chroma_length
        )
        self.warmup_text_encoder(batch_sizes, text_tokens)
        for size in sorted({self.shapes.batch_bucket(b) for b in batch_sizes}):
            floats = jax.ShapeDtypeStruct((size,), jnp.float32)
            controls = SamplingControls(
                floats,
                jax.ShapeDtypeStruct((size,), jnp.int32),
                floats,
                floats,
                floats,
                jax.ShapeDtypeStruct((size,), jnp.bool_),
                jax.eval_shape(jax.vmap(jax.random.key), jax.ShapeDtypeStruct((size,), jnp.uint32)),
            )
            memory = jax.ShapeDtypeStruct((size, cond_len, dec.hidden_size), self.model.dtype)
            memory_mask = jax.ShapeDtypeStruct((size, cond_len), jnp.bool_)
            for seconds in durations:
                frames = self.shapes.length_bucket(self.shapes.frames(min(seconds, self.config.max_duration)))
                plan = loop.SequencePlan(
                    jax.ShapeDtypeStruct((size,), jnp.int32),
                    jax.ShapeDtypeStruct((size, dec.num_codebooks, frames), jnp.int32),
                    jax.ShapeDtypeStruct((size,), jnp.int32),
                )
                self.loop_programs(
                    memory,
                    memory_mask,
                    plan,
                    controls,
                    jax.ShapeDtypeStruct((), jnp.int32),
                    num_positions=self.shapes.positions(frames),
                    guided=guided,
                    track_seen=repetition_penalty,
                    num_candidates=candidate_count([top_k], dec.vocab_size),
                )
        return self.compile_seconds_total - before

    # ------------------------------------------------------------------------------ entry point

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        progress: ProgressFn | None = None,
        on_frames: FramesFn | None = None,
        chunk_frames: int | None = None,
        first_chunk_frames: int | None = None,
    ) -> GenerationOutput:
        """Frames for every request (in order), each trimmed to its own duration.

        The loop runs on the device in chunks of ``chunk_frames`` positions (default
        ``chunk_seconds`` of audio); after each, ``progress`` and ``on_frames`` hear of the frames
        completed. A streaming caller sets a small ``first_chunk_frames`` so the first audio comes
        out early.
        """
        chunk = max(1, chunk_frames or self.chunk_frames)
        call = GenerationCall(
            self,
            progress=progress,
            on_frames=on_frames,
            chunk_frames=chunk,
            first_chunk_frames=max(1, first_chunk_frames or chunk),
        )
        return call.run(requests)
