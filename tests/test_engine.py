"""The generation engine: per-call state, a shared program cache, the shape arithmetic."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from musicgen_jax import MusicGen
from musicgen_jax.generation.params import GenerationParams, GenerationRequest
from musicgen_jax.generation.shapes import ShapePlan
from musicgen_jax.models.config import MusicGenConfig


@pytest.fixture(scope="module")
def model(tiny_hf_dir):
    return MusicGen.from_pretrained(tiny_hf_dir, dtype="float32")


def test_two_calls_at_once_keep_their_own_state(model):
    """Streaming with small chunks in one thread, progress reports in another: each call sees only
    its own frames and gets what it would get alone."""
    engine = model.engine
    first = model.make_requests(["calm piano", "dark techno"], duration=1.5, seed=3)
    second = model.make_requests(["epic strings"], duration=2.0, seed=9)
    alone = [engine.generate(first).frames, engine.generate(second).frames]

    streamed: dict[int, list[np.ndarray]] = {}
    reported: list[tuple[int, int]] = []
    results: dict[str, object] = {}

    def run_streaming():
        results["first"] = engine.generate(
            first,
            on_frames=lambda row, new: streamed.setdefault(row, []).append(new),
            chunk_frames=7,
            first_chunk_frames=5,
        )

    def run_reporting():
        results["second"] = engine.generate(
            second, progress=lambda done, total: reported.append((done, total))
        )

    threads = [threading.Thread(target=run_streaming), threading.Thread(target=run_reporting)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for got, want in zip(results["first"].frames, alone[0]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(results["second"].frames[0], alone[1][0])
    assert sorted(streamed) == [0, 1]  # the reporting call's row never reached this callback
    for row in (0, 1):
        np.testing.assert_array_equal(np.concatenate(streamed[row], axis=1), alone[0][row])
    assert reported and reported[-1] == (100, 100) and all(total == 100 for _, total in reported)


def test_compile_seconds_belong_to_the_call_that_compiled(model):
    engine = model.engine
    request = [GenerationRequest("jazz", GenerationParams(duration=12.0, seed=1))]  # a fresh bucket
    before = engine.compile_count
    compiled = engine.generate(request)
    assert compiled.compile_seconds > 0 and engine.compile_count > before
    after = engine.compile_count
    again = engine.generate(request)
    assert again.compile_seconds == 0.0 and engine.compile_count == after
    np.testing.assert_array_equal(again.frames[0], compiled.frames[0])
    names = {key[0] for key in engine.programs.shape_keys()}
    assert {"encode", "start", "advance"} <= names


def test_shape_arithmetic_of_a_thirty_second_model():
    shapes = ShapePlan(MusicGenConfig.preset("small"))
    assert shapes.window_frames == 1500 and shapes.num_delays == 4
    assert shapes.length_bucket(1) == 250 and shapes.length_bucket(251) == 500
    assert shapes.length_bucket(1500) == 1500 and shapes.length_bucket(4000) == 1500
    assert shapes.positions(250) == 254
    assert shapes.batch_bucket(3) == 4 and shapes.batch_buckets_up_to(5) == [1, 2, 4, 8]
    # Past the window, each new window advances by the stride (audiocraft: 18 s of a 30 s window).
    assert shapes.window_count(30.0, 18.0) == 1
    assert shapes.window_count(30.02, 18.0) == 2
    assert shapes.window_count(66.0, 18.0) == 3
    long = GenerationRequest("x", GenerationParams(duration=60.0, extend_stride=18.0))
    beams = GenerationRequest("x", GenerationParams(duration=7.0, num_beams=2))
    assert shapes.shape_key(long) == (1500, 3, False)
    assert shapes.shape_key(beams) == (500, 1, True)
    stereo = ShapePlan(MusicGenConfig.preset("stereo-small"))
    assert stereo.num_delays == 4 and stereo.config.decoder.num_codebooks == 8
