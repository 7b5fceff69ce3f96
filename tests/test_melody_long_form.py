"""Long-form generation with a melody: the melody moves along with the windows as audiocraft's
long-form loop moves it (each window reads the model's window length of the melody from the
window's start, the melody repeated periodically where it runs out), on a tiny random
MusicGen-melody whose window is cut to 2 s so that 5 s take four windows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_melody_interfaces import melody_wav, read_wav

from musicgen_jax import MusicGen
from musicgen_jax.conditioning.melody import chroma_from_audio, melody_window, null_chroma
from musicgen_jax.conversion.loader import load_model
from musicgen_jax.serving.generation_request import decode_request, encode_request

WINDOW = 2.0  # seconds: 100 frames at 50 Hz
STRIDE = 1.2  # 60 frames: windows start at 0, 1.2, 2.4 and 3.6 s
DURATION = 5.0
PROMPT = "calm piano"


@pytest.fixture(scope="module")
def model(tiny_hf_dirs):
    loaded = load_model(tiny_hf_dirs("melody"))
    loaded = dataclasses.replace(loaded, config=dataclasses.replace(loaded.config, max_duration=WINDOW))
    return MusicGen(loaded, dtype="float32")


@pytest.fixture(scope="module")
def tune():
    audio, rate = read_wav(melody_wav(3.0, 11))
    return audio, rate


def test_a_window_of_the_melody_repeats_it_periodically():
    audio = np.arange(10, dtype=np.float32)[None]  # 10 samples at 2 Hz: 5 s
    np.testing.assert_array_equal(melody_window(audio, 2, 4.0, 3.0), [[8, 9, 0, 1, 2, 3]])
    np.testing.assert_array_equal(melody_window(audio, 2, 0.0, 2.0), [[0, 1, 2, 3]])


def test_each_window_reads_the_melody_from_its_own_start(model, tune):
    audio, rate = tune
    chromas = model.melody_chroma(audio, rate, DURATION, STRIDE)
    assert isinstance(chromas, tuple) and len(chromas) == 4
    for window, chroma in enumerate(chromas):
        expected = chroma_from_audio(melody_window(audio, rate, window * STRIDE, WINDOW), rate)
        np.testing.assert_array_equal(chroma, expected)
    assert not np.array_equal(chromas[0], chromas[1])  # the tune changes: the windows differ
    # One window: the melody as a single-window generation reads it, unchanged.
    np.testing.assert_array_equal(
        model.melody_chroma(audio, rate, WINDOW, STRIDE), chroma_from_audio(audio, rate)
    )


def test_a_silent_stretch_gets_the_null_chroma(model, tune):
    audio, rate = tune
    padded = np.concatenate([audio, np.zeros((1, 3 * rate), np.float32)], axis=1)  # 3 s tune, 3 s silence
    chromas = model.melody_chroma(padded, rate, DURATION, STRIDE)
    np.testing.assert_array_equal(chromas[3], null_chroma(12))  # 3.6-5.6 s: silence, no melody
    assert not np.array_equal(chromas[2], null_chroma(12))  # 2.4-4.4 s: part of the tune


def test_long_form_with_a_melody_equals_the_windows_made_one_by_one(model, tune):
    audio, rate = tune
    out = model.generate_tokens(
        [PROMPT], duration=DURATION, greedy=True, extend_stride=STRIDE,
        melody=audio, melody_sample_rate=rate,
    )  # fmt: skip
    assert out.shape == (1, 4, 250)
    chromas = model.melody_chroma(audio, rate, DURATION, STRIDE)
    # Window w starts at frame 60 w, is prompted with the 40 frames before its new ones, and reads
    # chroma w; made one by one as single-window generations they give the same frames.
    for window in range(4):
        start = 60 * window
        seconds = min(WINDOW, DURATION - start / 50)  # the last window makes what is left
        request = model.make_requests([PROMPT], duration=seconds, greedy=True, melody_chroma=chromas[window])[
            0
        ]
        if window:
            request = dataclasses.replace(request, prompt_codes=out[0, :, start : start + 40])
        frames = model.engine.generate([request]).frames[0]
        new = slice(start + (40 if window else 0), min(start + 100, 250))
        np.testing.assert_array_equal(frames[:, new.start - start : new.stop - start], out[0, :, new])
    # The melody moving matters: holding window 0's chroma makes other music after the first window.
    held = model.generate_tokens(
        [PROMPT], duration=DURATION, greedy=True, extend_stride=STRIDE, melody_chroma=chromas[0]
    )
    np.testing.assert_array_equal(held[0, :, :100], out[0, :, :100])
    assert not np.array_equal(held[0, :, 100:], out[0, :, 100:])


def test_a_request_with_window_chromas_survives_the_task_store(model, tune):
    audio, rate = tune
    request = model.make_requests(
        ["x"], duration=DURATION, extend_stride=STRIDE, melody=audio, melody_sample_rate=rate
    )[0]
    again = decode_request(encode_request(request))
    assert isinstance(again.melody_chroma, tuple) and len(again.melody_chroma) == 4
    for mine, theirs in zip(request.melody_chroma, again.melody_chroma):
        np.testing.assert_array_equal(mine, theirs)
