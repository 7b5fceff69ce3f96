"""One generation call: requests scheduled onto the engine's compiled programs, window by window.

Rows with beam search run one at a time (beams multiply the batch); sampled rows run together,
padded to a batch bucket. Audio past the model's window is made as audiocraft does: each new window
is prompted with the last ``window - extend_stride`` seconds of what came before. Everything that
belongs to one call (callbacks, chunk sizes, the compile seconds it paid) lives here, not on the
shared engine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.generation import beam, loop
from musicgen_jax.generation.params import GenerationParamsError, GenerationRequest
from musicgen_jax.generation.sampling import SamplingControls
from musicgen_jax.generation.shapes import candidate_count
from musicgen_jax.models import delay_pattern

if TYPE_CHECKING:  # the engine creates calls; a call only reads it
    from musicgen_jax.generation.engine import GenerationEngine

# progress(frames_done, frames_total); frames(row_index, new_frames [K, n]) as frames complete.
ProgressFn = Callable[[int, int], None]
FramesFn = Callable[[int, np.ndarray], None]


@dataclasses.dataclass
class GenerationOutput:
    """What a generation call made, row by row in the order of its requests.

    ``device_codes`` is set when every row came from one sampling window and all rows are equally
    long (one duration up to the model's window, no beam search: the common case): the codes
    ``[batch, K, frames]`` int32, still on the device, so a JAX codec can decode them before they
    are copied anywhere. ``frames`` are then copied from it when first read; otherwise (beams,
    long-form windows, rows of different lengths) the call builds ``frames`` on the host and
    ``device_codes`` is None.
    """

    host_frames: list[np.ndarray] | None  # per request [K, frames] int32; None until ``frames`` copies them
    seeds: list[int]
    device_codes: jax.Array | None = None  # [batch, K, frames] int32 on the device, or None
    steps: int = 0  # decoder positions run (all windows)
    generate_seconds: float = 0.0  # device time of the loops, compilation excluded
    compile_seconds: float = 0.0
    beam_scores: list[float | None] = dataclasses.field(default_factory=list)  # length-penalised

    @property
    def frames(self) -> list[np.ndarray]:
        """Per request ``[K, frames]`` int32 codec codes on the host."""
        if self.host_frames is None:
            self.host_frames = [] if self.device_codes is None else list(np.asarray(self.device_codes))
        return self.host_frames


def sampling_controls(params_of: Sequence) -> SamplingControls:
    """Per-row sampling knobs as device arrays (one row per ``GenerationParams``)."""
    return SamplingControls(
        temperature=jnp.asarray([p.temperature for p in params_of], jnp.float32),
        top_k=jnp.asarray([p.top_k for p in params_of], jnp.int32),
        top_p=jnp.asarray([p.top_p for p in params_of], jnp.float32),
        guidance_scale=jnp.asarray([p.guidance_scale for p in params_of], jnp.float32),
        repetition_penalty=jnp.asarray([p.repetition_penalty for p in params_of], jnp.float32),
        greedy=jnp.asarray([p.greedy for p in params_of], bool),
        keys=jax.vmap(jax.random.key)(jnp.asarray([p.seed for p in params_of], jnp.uint32)),
    )


class GenerationCall:
    def __init__(
        self,
        engine: GenerationEngine,
        *,
        progress: ProgressFn | None,
        on_frames: FramesFn | None,
        chunk_frames: int,
        first_chunk_frames: int,
    ):
        self.engine = engine
        self.progress = progress
        self.on_frames = on_frames
        self.chunk_frames = chunk_frames
        self.first_chunk_frames = first_chunk_frames
        self.compile_seconds = 0.0
        self._text = None  # the call's prompts, prepared once (long-form melody windows encode again)
        self._done = 0
        self._total = 0

    def program(self, key: tuple, fn, *args, **static):
        """A compiled program from the engine's cache; the compile time counts against this call."""
        compiled, seconds = self.engine.programs.compile(key, fn, *args, **static)
        self.compile_seconds += seconds
        return compiled

    def _report(self, row: int, new: np.ndarray) -> None:
        self._done += new.shape[1]
        if self.on_frames is not None and new.shape[1]:
            self.on_frames(row, new)
        if self.progress is not None:
            self.progress(self._done, self._total)

    def _validate(self, requests: Sequence[GenerationRequest], totals: list[int]) -> None:
        engine = self.engine
        codebooks, window = engine.config.decoder.num_codebooks, engine.shapes.window_frames
        for request, total in zip(requests, totals):
            if request.prompt_codes is not None:
                codes = np.asarray(request.prompt_codes)
                if codes.shape[0] != codebooks:
                    raise GenerationParamsError(
                        f"prompt_codes have {codes.shape[0]} codebooks, the model {codebooks}"
                    )
                if codes.shape[1] >= total:
                    raise GenerationParamsError(
                        f"the audio prompt ({codes.shape[1] / engine.shapes.frame_rate:.2f} s) must be "
                        f"shorter than the duration ({request.params.duration:g} s), which includes it"
                    )
            if request.params.extend_stride >= engine.config.max_duration and total > window:
                window_seconds = engine.config.max_duration
                raise GenerationParamsError(
                    f"extend_stride must be shorter than the model's window ({window_seconds:g} s)"
                )

    def run(self, requests: Sequence[GenerationRequest]) -> GenerationOutput:
        if not requests:
            return GenerationOutput(host_frames=[], seeds=[])
        engine = self.engine
        requests = [dataclasses.replace(r, params=r.params.with_seed()) for r in requests]
        totals = [engine.shapes.frames(r.params.duration) for r in requests]
        self._validate(requests, totals)
        self._total = sum(totals)
        encode_seconds: list[float] = []
        self._text = engine.prepare_text([r.prompt for r in requests], [r.attributes for r in requests])
        memory, memory_mask = engine.encode(
            self._text, encode_seconds, [r.window_chroma(0) for r in requests]
        )
        self.compile_seconds += sum(encode_seconds)
        output = GenerationOutput(
            host_frames=[np.zeros((engine.config.decoder.num_codebooks, 0), np.int32) for _ in requests],
            seeds=[r.params.seed for r in requests],
            beam_scores=[None] * len(requests),
        )
        began = time.perf_counter()
        compiled_before = self.compile_seconds
        sample_rows = [i for i, r in enumerate(requests) if r.params.num_beams == 1]
        if sample_rows:
            on_device = len(sample_rows) == len(requests)  # every row: the codes may stay on the device
            self._windows(
                requests, sample_rows, totals, memory, memory_mask, output, beams=False, on_device=on_device
            )
        for row in (i for i, r in enumerate(requests) if r.params.num_beams > 1):
            self._windows(requests, [row], totals, memory, memory_mask, output, beams=True)
        if output.device_codes is not None:  # generate_seconds is the loops' time: wait, without copying
            output.device_codes.block_until_ready()
        output.generate_seconds = time.perf_counter() - began - (self.compile_seconds - compiled_before)
        output.compile_seconds = self.compile_seconds
        return output

    # ------------------------------------------------------------------------------ windows

    def _windows(
        self, requests, rows, totals, memory, memory_mask, output, beams: bool, on_device: bool = False
    ) -> None:
        """audiocraft's long-form schedule, for a group of rows. ``on_device``: the rows are the whole
        call; when one window makes all of them, equally long, their codes stay on the device
        (``output.device_codes``)."""
        shapes = self.engine.shapes
        offset = dict.fromkeys(rows, 0)  # absolute frame where the row's current window starts
        prompt = {
            row: None
            if requests[row].prompt_codes is None
            else np.asarray(requests[row].prompt_codes, np.int32)
            for row in rows
        }
        for row in rows:  # the prompt is part of the output, as audiocraft returns it
            if prompt[row] is not None:
                output.frames[row] = prompt[row]
                self._report(row, prompt[row])
        active = list(rows)
        window_of = dict.fromkeys(rows, 0)
        while active:
            if any(window_of[row] and requests[row].melody_moves for row in active):
                memory, memory_mask = self._window_memory(requests, window_of)
            wanted = {row: min(totals[row] - offset[row], shapes.window_frames) for row in active}
            if beams:
                results = self._beam_window(
                    requests[active[0]], active[0], wanted, prompt, memory, memory_mask, output
                )
            else:
                window = self._sample_window(requests, active, wanted, prompt, memory, memory_mask, output)
                lengths = {wanted[row] for row in active}
                if on_device and len(lengths) == 1 and all(wanted[row] == totals[row] for row in active):
                    # The window holds every frame, the prompt's included (forced): nothing to join.
                    output.device_codes = window[: len(active), :, : lengths.pop()]
                    output.host_frames = None
                    return
                host = np.asarray(window)
                results = {row: host[i, :, : wanted[row]] for i, row in enumerate(active)}
            next_active = []
            for row in active:
                frames = results[row]
                have = 0 if prompt[row] is None else prompt[row].shape[1]
                output.frames[row] = np.concatenate([output.frames[row], frames[:, have:]], axis=1)
                if offset[row] + wanted[row] < totals[row]:
                    stride = shapes.frames(requests[row].params.extend_stride)
                    prompt[row] = frames[:, stride:]
                    offset[row] += stride
                    window_of[row] += 1
                    next_active.append(row)
            active = next_active

    def _window_memory(self, requests, window_of: dict[int, int]) -> tuple[jax.Array, jax.Array]:
        """The conditioning of every row again, each row of this group with the melody of its
        current window (rows of other groups keep their first). Same shapes: no new program."""
        chromas = [r.window_chroma(window_of.get(i, 0)) for i, r in enumerate(requests)]
        seconds: list[float] = []
        memory, memory_mask = self.engine.encode(self._text, seconds, chromas)
        self.compile_seconds += sum(seconds)
        return memory, memory_mask

    def _plan(self, rows, batch_rows: int, wanted, prompts, frames_bucket: int) -> loop.SequencePlan:
        codebooks = self.engine.config.decoder.num_codebooks
        num_frames = np.zeros((batch_rows,), np.int32)
        prompt = np.zeros((batch_rows, codebooks, frames_bucket), np.int32)
        prompt_frames = np.zeros((batch_rows,), np.int32)
        for i, row in enumerate(rows):
            num_frames[i] = wanted[row]
            if prompts[row] is not None:
                n = min(prompts[row].shape[1], frames_bucket)
                prompt[i, :, :n] = prompts[row][:, :n]
                prompt_frames[i] = n
        return loop.SequencePlan(jnp.asarray(num_frames), jnp.asarray(prompt), jnp.asarray(prompt_frames))

    def _beam_window(self, request, row, wanted, prompts, memory, memory_mask, output):
        shapes = self.engine.shapes
        frames_bucket = shapes.length_bucket(wanted[row])
        plan = self._plan([row], 1, wanted, prompts, frames_bucket)
        index = jnp.asarray([row], jnp.int32)
        guided = request.params.guidance_scale != 1.0
        result, score = beam.beam_search(
            self,
            request.params,
            memory[index],
            memory_mask[index],
            plan,
            shapes.positions(frames_bucket),
            guided,
        )
        output.steps += wanted[row] + shapes.num_delays
        output.beam_scores[row] = score
        frames = result[:, : wanted[row]]
        self._report(row, frames[:, int(plan.prompt_frames[0]) :])
        return {row: frames}

    def _sample_window(self, requests, rows, wanted, prompts, memory, memory_mask, output):
        engine = self.engine
        shapes, dec = engine.shapes, engine.config.decoder
        frames_bucket = shapes.length_bucket(max(wanted.values()))
        num_positions = shapes.positions(frames_bucket)
        batch_rows = shapes.batch_bucket(len(rows))
        padded_rows = list(rows) + [rows[0]] * (batch_rows - len(rows))  # padding copies row 0
        index = jnp.asarray(padded_rows, jnp.int32)
        row_memory, row_mask = memory[index], memory_mask[index]
        plan = self._plan(rows, batch_rows, wanted, prompts, frames_bucket)
        params_of = [requests[r].params for r in padded_rows]
        controls = sampling_controls(params_of)
        steps = jnp.asarray(self.chunk_frames, jnp.int32)
        start, advance, seconds = engine.loop_programs(
            row_memory,
            row_mask,
            plan,
            controls,
            steps,
            num_positions=num_positions,
            guided=any(p.guidance_scale != 1.0 for p in params_of),
            track_seen=any(p.repetition_penalty != 1.0 for p in params_of),
            num_candidates=candidate_count([p.top_k for p in params_of], dec.vocab_size),
        )
        self.compile_seconds += seconds
        state = start(engine.params, row_memory, row_mask, plan)
        end = max(wanted.values()) + shapes.num_delays
        emitted = {row: int(plan.prompt_frames[i]) for i, row in enumerate(rows)}
        first_steps = jnp.asarray(self.first_chunk_frames, jnp.int32)
        position = 1
        while position < end:
            size = self.first_chunk_frames if position == 1 else self.chunk_frames
            span = loop.kv_bucket(position + size, num_positions, engine.kv_splits)
            state = advance[span](
                engine.params, state, controls, plan, first_steps if position == 1 else steps
            )
            position = min(position + size, end)
            self._emit(state, position, rows, wanted, emitted)
        output.steps += end
        return loop.frames_of(state.tokens, dec.audio_channels)  # [batch rows, K, bucket frames]

    def _emit(self, state, position: int, rows, wanted, emitted) -> None:
        """Report the frames the last chunk completed (copying tokens only when streaming)."""
        dec = self.engine.config.decoder
        complete = loop.completed_frames(position, dec.num_codebooks, dec.audio_channels)
        ready = [(i, row) for i, row in enumerate(rows) if min(complete, wanted[row]) > emitted[row]]
        if not ready or (self.on_frames is None and self.progress is None):
            return
        if self.on_frames is not None:
            tokens = np.asarray(state.tokens)  # waits for this chunk
            delays = delay_pattern.delays(dec.num_codebooks, dec.audio_channels)
        else:
            state.position.block_until_ready()  # progress only: wait without copying tokens
        for i, row in ready:
            upto = min(complete, wanted[row])
            if self.on_frames is not None:
                # Frame f of codebook k sits at position f + delay_k + 1.
                new = np.stack(
                    [tokens[i, k, emitted[row] + d + 1 : upto + d + 1] for k, d in enumerate(delays)]
                )
            else:
                new = np.zeros((dec.num_codebooks, upto - emitted[row]), np.int32)
            emitted[row] = upto
            self._report(row, new)
