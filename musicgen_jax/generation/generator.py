"""Scheduling generation requests onto compiled programs: buckets, windows, chunks.

One compiled program exists per (batch bucket, length bucket, text length, guidance on/off,
repetition penalty on/off, candidate count); they are compiled ahead of time, cached here, timed,
and counted. Requests are padded into a batch bucket; the loop length is a traced value, so any
duration up to the bucket's runs without recompiling. Audio past the model's window (30 s for
Meta's checkpoints) is made window by window as audiocraft does: each new window is prompted with
the last ``window - extend_stride`` seconds of what came before.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.generation import beam, loop
from musicgen_jax.generation.params import GenerationParamsError, GenerationRequest
from musicgen_jax.generation.sampling import SamplingControls

logger = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LENGTH_BUCKETS_SECONDS = (5.0, 10.0, 15.0, 20.0, 30.0)

# progress(frames_done, frames_total); frames(row_index, new_frames [K, n]) as frames complete.
ProgressFn = Callable[[int, int], None]
FramesFn = Callable[[int, np.ndarray], None]


@dataclasses.dataclass
class GenerationOutput:
    frames: list[np.ndarray]  # per request: [K, frames] int32 codec codes
    seeds: list[int]
    steps: int = 0  # decoder positions run (all windows)
    generate_seconds: float = 0.0  # device time of the loops, compilation excluded
    compile_seconds: float = 0.0
    beam_scores: list[float | None] = dataclasses.field(default_factory=list)


def bucket(value: int, buckets: Sequence[int]) -> int:
    for size in buckets:
        if value <= size:
            return size
    return int(2 ** math.ceil(math.log2(value)))


def candidate_count(top_ks: Sequence[int], vocab: int) -> int:
    """How many best tokens the sampler must keep: the largest top-k rounded up to a power of two,
    or the whole vocabulary when some row has top-k off."""
    largest = max((k if k > 0 else vocab) for k in top_ks)
    return min(vocab, int(2 ** math.ceil(math.log2(max(largest, 1)))))


class Generator:
    """Runs :class:`GenerationRequest` batches for one loaded :class:`~musicgen_jax.MusicGen`."""

    def __init__(self, musicgen, chunk_seconds: float = 1.0, kv_splits: int = 4):
        """``kv_splits``: the most attention spans compiled per length bucket (``loop.kv_buckets``,
        each at least ``loop.KV_BLOCK`` positions). ``n`` spans read ``(n + 1) / 2n`` of the cache
        on average (62.5 % for 4), at one compiled program each; the cache read grows with the
        batch, so large batches gain the most. 1 compiles the fewest programs."""
        if kv_splits < 1:
            raise ValueError(f"kv_splits must be at least 1, got {kv_splits}")
        self.musicgen = musicgen
        self.kv_splits = kv_splits
        self.chunk_frames = max(1, int(round(chunk_seconds * musicgen.frame_rate)))
        self._compiled: dict[tuple, object] = {}
        self.compile_seconds_total = 0.0
        self._last_compile_seconds = 0.0
        self._streaming = self._reporting = False
        self._chunk = self._first_chunk = self.chunk_frames

    # ------------------------------------------------------------------------------ facts

    @property
    def window_frames(self) -> int:
        return int(round(self.musicgen.config.max_duration * self.musicgen.frame_rate))

    def length_bucket(self, frames: int) -> int:
        """Frames of the length bucket holding ``frames`` (capped at the model's window)."""
        fr = self.musicgen.frame_rate
        buckets = [int(round(s * fr)) for s in LENGTH_BUCKETS_SECONDS if s * fr < self.window_frames]
        return min(bucket(frames, buckets + [self.window_frames]), self.window_frames)

    @property
    def compile_count(self) -> int:
        return len(self._compiled)

    # ------------------------------------------------------------------------------ compile cache

    def _compiled_fn(self, key: tuple, fn, *args, **static):
        compiled = self._compiled.get(key)
        if compiled is None:
            began = time.perf_counter()
            with self.musicgen.numerics():
                compiled = fn.lower(*args, **static).compile()
            seconds = time.perf_counter() - began
            self.compile_seconds_total += seconds
            self._last_compile_seconds += seconds
            logger.info("compiled %s in %.2f s", key[0], seconds)
            self._compiled[key] = compiled
        return compiled

    def _programs(
        self, memory, memory_mask, plan, controls, steps, num_positions, guided, track_seen, num_candidates
    ):
        """The compiled ``start`` and one ``advance`` per attention span (``loop.kv_buckets``) for
        these shapes, compiled on first use."""
        mg = self.musicgen
        key = (memory.shape[0], num_positions, memory.shape[1], guided, track_seen)
        static = dict(num_positions=num_positions, guided=guided, track_seen=track_seen)
        start = self._compiled_fn(
            ("start",) + key, loop.start, mg.model, mg.params, memory, memory_mask, plan, **static
        )
        state = jax.eval_shape(
            lambda p, m, mm, pl: loop.start(mg.model, p, m, mm, pl, **static),
            mg.params,
            memory,
            memory_mask,
            plan,
        )
        advance = {
            kv: self._compiled_fn(
                ("advance",) + key + (num_candidates, kv),
                loop.advance,
                mg.model,
                mg.params,
                state,
                controls,
                plan,
                steps,
                guided=guided,
                num_candidates=num_candidates,
                kv_length=kv,
            )
            for kv in loop.kv_buckets(num_positions, self.kv_splits)
        }
        return start, advance

    def warmup(
        self,
        batch_sizes: Sequence[int] = (1,),
        durations: Sequence[float] = (10.0,),
        text_tokens: int = 16,
        guided: bool = True,
        repetition_penalty: bool = False,
        top_k: int = 250,
    ) -> float:
        """Compile the programs for these batch and length buckets now (a server does this before it
        reports ready); returns the seconds spent compiling."""
        mg = self.musicgen
        dec = mg.config.decoder
        before = self.compile_seconds_total
        self._last_compile_seconds = 0.0
        cond_len = text_tokens + (5 if mg.config.uses_learned_attributes else 0)
        for size in sorted({bucket(b, BATCH_BUCKETS) for b in batch_sizes}):
            from musicgen_jax.pipeline import TextBatch

            ids = np.ones((size, text_tokens), np.int32)
            mg.encode(TextBatch(ids, np.ones_like(ids), ("",) * size))  # the text encoder, per batch bucket
            for seconds in durations:
                frames = self.length_bucket(int(round(min(seconds, mg.config.max_duration) * mg.frame_rate)))
                num_positions = frames + loop.delay_pattern.num_delays(dec.num_codebooks, dec.audio_channels)
                memory = jax.ShapeDtypeStruct((size, cond_len, dec.hidden_size), mg.model.dtype)
                memory_mask = jax.ShapeDtypeStruct((size, cond_len), jnp.bool_)
                plan = loop.SequencePlan(
                    jax.ShapeDtypeStruct((size,), jnp.int32),
                    jax.ShapeDtypeStruct((size, dec.num_codebooks, frames), jnp.int32),
                    jax.ShapeDtypeStruct((size,), jnp.int32),
                )
                floats = jax.ShapeDtypeStruct((size,), jnp.float32)
                controls = SamplingControls(
                    floats,
                    jax.ShapeDtypeStruct((size,), jnp.int32),
                    floats,
                    floats,
                    floats,
                    jax.ShapeDtypeStruct((size,), jnp.bool_),
                    jax.eval_shape(lambda: jax.vmap(jax.random.key)(jnp.zeros((size,), jnp.uint32))),
                )
                steps = jax.ShapeDtypeStruct((), jnp.int32)
                self._programs(
                    memory,
                    memory_mask,
                    plan,
                    controls,
                    steps,
                    num_positions,
                    guided,
                    repetition_penalty,
                    candidate_count([top_k], dec.vocab_size),
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

        The loop runs on the device in chunks of ``chunk_frames`` positions (default 1 s of audio);
        after each, ``progress`` and ``on_frames`` hear of the frames completed. A streaming caller
        sets a small ``first_chunk_frames`` so the first audio comes out early.
        """
        if not requests:
            return GenerationOutput([], [])
        requests = [dataclasses.replace(r, params=r.params.with_seed()) for r in requests]
        self._last_compile_seconds = 0.0
        mg = self.musicgen
        fr = mg.frame_rate
        totals = [int(round(r.params.duration * fr)) for r in requests]
        for request, total in zip(requests, totals):
            if request.prompt_codes is not None:
                codes = np.asarray(request.prompt_codes)
                if codes.shape[0] != mg.num_codebooks:
                    raise GenerationParamsError(
                        f"prompt_codes have {codes.shape[0]} codebooks, the model {mg.num_codebooks}"
                    )
                if codes.shape[1] >= total:
                    raise GenerationParamsError(
                        f"the audio prompt ({codes.shape[1] / fr:.2f} s) must be shorter than the duration "
                        f"({request.params.duration:g} s), which includes it"
                    )
            if request.params.extend_stride >= mg.config.max_duration and total > self.window_frames:
                raise GenerationParamsError(
                    f"extend_stride must be shorter than the model's window ({mg.config.max_duration:g} s)"
                )
        batch = mg.prepare_text([r.prompt for r in requests], [r.attributes for r in requests])
        memory, memory_mask = mg.encode(batch)
        output = GenerationOutput(
            frames=[np.zeros((mg.num_codebooks, 0), np.int32) for _ in requests],
            seeds=[r.params.seed for r in requests],
            beam_scores=[None] * len(requests),
        )
        self._streaming = on_frames is not None
        self._reporting = progress is not None
        self._chunk = max(1, chunk_frames or self.chunk_frames)
        self._first_chunk = max(1, first_chunk_frames or self._chunk)
        began = time.perf_counter()
        beam_rows = [i for i, r in enumerate(requests) if r.params.num_beams > 1]
        sample_rows = [i for i, r in enumerate(requests) if r.params.num_beams == 1]
        done = [0]
        grand_total = sum(totals)

        def report(row: int, new: np.ndarray) -> None:
            done[0] += new.shape[1]
            if on_frames is not None and new.shape[1]:
                on_frames(row, new)
            if progress is not None:
                progress(done[0], grand_total)

        if sample_rows:
            self._windows(requests, sample_rows, totals, memory, memory_mask, output, report, beams=False)
        for row in beam_rows:  # beams multiply the batch: one request at a time
            self._windows(requests, [row], totals, memory, memory_mask, output, report, beams=True)
        output.generate_seconds = time.perf_counter() - began - self._last_compile_seconds
        output.compile_seconds = self._last_compile_seconds
        return output

    # ------------------------------------------------------------------------------ windows

    def _windows(self, requests, rows, totals, memory, memory_mask, output, report, beams: bool) -> None:
        """audiocraft's long-form schedule, for a group of rows."""
        window = self.window_frames
        fr = self.musicgen.frame_rate
        offset = {row: 0 for row in rows}  # absolute frame where the row's current window starts
        prompt = {
            row: (
                np.asarray(requests[row].prompt_codes, np.int32)
                if requests[row].prompt_codes is not None
                else None
            )
            for row in rows
        }
        if any(p is not None for p in prompt.values()):
            for row in rows:  # the prompt is part of the output, as audiocraft returns it
                if prompt[row] is not None:
                    output.frames[row] = prompt[row]
                    report(row, prompt[row])
        active = list(rows)
        while active:
            wanted = {row: min(totals[row] - offset[row], window) for row in active}
            results = self._run_window(
                requests, active, wanted, prompt, memory, memory_mask, output, report, beams
            )
            next_active = []
            for row in active:
                frames = results[row]
                have = 0 if prompt[row] is None else prompt[row].shape[1]
                output.frames[row] = np.concatenate([output.frames[row], frames[:, have:]], axis=1)
                stride = int(round(requests[row].params.extend_stride * fr))
                if offset[row] + wanted[row] < totals[row]:
                    prompt[row] = frames[:, stride:]
                    offset[row] += stride
                    next_active.append(row)
            active = next_active

    def _run_window(self, requests, rows, wanted, prompts, memory, memory_mask, output, report, beams: bool):
        mg = self.musicgen
        dec = mg.config.decoder
        size = len(rows)
        frames_bucket = self.length_bucket(max(wanted.values()))
        num_positions = frames_bucket + loop.delay_pattern.num_delays(dec.num_codebooks, dec.audio_channels)
        batch_bucket = bucket(size, BATCH_BUCKETS) if not beams else 1
        padded_rows = list(rows) + [rows[0]] * (batch_bucket - size)
        index = jnp.asarray(padded_rows, jnp.int32)
        row_memory, row_mask = memory[index], memory_mask[index]

        num_frames = np.array([wanted[r] for r in rows] + [0] * (batch_bucket - size), np.int32)
        prompt = np.zeros((batch_bucket, dec.num_codebooks, frames_bucket), np.int32)
        prompt_frames = np.zeros((batch_bucket,), np.int32)
        for i, row in enumerate(rows):
            if prompts[row] is not None:
                n = min(prompts[row].shape[1], frames_bucket)
                prompt[i, :, :n] = prompts[row][:, :n]
                prompt_frames[i] = n
        plan = loop.SequencePlan(jnp.asarray(num_frames), jnp.asarray(prompt), jnp.asarray(prompt_frames))
        params_of = [requests[r].params for r in padded_rows]
        guided = any(p.guidance_scale != 1.0 for p in params_of)
        if beams:
            result, score = beam.beam_search(
                self, requests[rows[0]].params, row_memory, row_mask, plan, num_positions, guided
            )
            output.steps += int(max(wanted.values())) + loop.delay_pattern.num_delays(
                dec.num_codebooks, dec.audio_channels
            )
            output.beam_scores[rows[0]] = score
            frames = {rows[0]: result[:, : wanted[rows[0]]]}
            report(rows[0], frames[rows[0]][:, prompt_frames[0] :])
            return frames
        track_seen = any(p.repetition_penalty != 1.0 for p in params_of)
        num_candidates = candidate_count([p.top_k for p in params_of], dec.vocab_size)
        controls = SamplingControls(
            temperature=jnp.asarray([p.temperature for p in params_of], jnp.float32),
            top_k=jnp.asarray([p.top_k for p in params_of], jnp.int32),
            top_p=jnp.asarray([p.top_p for p in params_of], jnp.float32),
            guidance_scale=jnp.asarray([p.guidance_scale for p in params_of], jnp.float32),
            repetition_penalty=jnp.asarray([p.repetition_penalty for p in params_of], jnp.float32),
            greedy=jnp.asarray([p.greedy for p in params_of], bool),
            keys=jax.vmap(jax.random.key)(jnp.asarray([p.seed for p in params_of], jnp.uint32)),
        )
        steps = jnp.asarray(self._chunk, jnp.int32)
        start, advance = self._programs(
            row_memory, row_mask, plan, controls, steps, num_positions, guided, track_seen, num_candidates
        )
        state = start(mg.params, row_memory, row_mask, plan)
        end = int(max(wanted.values())) + loop.delay_pattern.num_delays(dec.num_codebooks, dec.audio_channels)
        delays = loop.delay_pattern.delays(dec.num_codebooks, dec.audio_channels)
        position = 1
        emitted = {row: int(prompt_frames[i]) for i, row in enumerate(rows)}
        first_steps = jnp.asarray(self._first_chunk, jnp.int32)
        while position < end:
            size = self._first_chunk if position == 1 else self._chunk
            span = loop.kv_bucket(position + size, num_positions, self.kv_splits)
            state = advance[span](mg.params, state, controls, plan, first_steps if position == 1 else steps)
            position = min(position + size, end)
            complete = loop.completed_frames(position, dec.num_codebooks, dec.audio_channels)
            ready = [(i, row) for i, row in enumerate(rows) if min(complete, wanted[row]) > emitted[row]]
            if not ready or not (self._streaming or self._reporting):
                continue
            if self._streaming:
                tokens = np.asarray(state.tokens)  # waits for this chunk
            else:
                state.position.block_until_ready()  # progress only: wait without copying tokens
            for i, row in ready:
                upto = min(complete, wanted[row])
                new = np.zeros((0, 0), np.int32)
                if self._streaming:
                    # Frame f of codebook k sits at position f + delay_k + 1.
                    new = np.stack(
                        [tokens[i, k, emitted[row] + d + 1 : upto + d + 1] for k, d in enumerate(delays)]
                    )
                else:
                    new = np.zeros((dec.num_codebooks, upto - emitted[row]), np.int32)
                emitted[row] = upto
                report(row, new)
        output.steps += end
        frames = np.asarray(loop.frames_of(state.tokens, dec.audio_channels))
        return {row: frames[i, :, : wanted[row]] for i, row in enumerate(rows)}
