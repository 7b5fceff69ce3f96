"""Generation: token-for-token parity with transformers' greedy generate, sampling behaviour,
compilation per bucket, beams, continuation, long-form windows."""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers_reference as reference

from musicgen_jax import MusicGen
from musicgen_jax.conversion.loader import load_model
from musicgen_jax.generation import beam, loop
from musicgen_jax.generation.call import GenerationCall
from musicgen_jax.generation.params import GenerationParams, GenerationParamsError
from musicgen_jax.generation.sampling import SamplingControls, apply_guidance, sample_tokens

PROMPTS = ["upbeat jazz piano with smooth saxophone and soft drums", "dark techno"]


@pytest.fixture(scope="module")
def base_model(tiny_hf_dir):
    return MusicGen.from_pretrained(tiny_hf_dir, dtype="float32")


@pytest.mark.parametrize("variant", ["base", "stereo"])
def test_greedy_with_guidance_equals_transformers(tiny_hf_dirs, variant):
    directory = tiny_hf_dirs(variant)
    model = MusicGen.from_pretrained(directory, dtype="float32")
    delays = model.num_codebooks // model.audio_channels
    frames = 110  # 110 + 3 decoder steps (mono), all compared
    want = reference.generate(
        directory, PROMPTS, frames + delays - 1, do_sample=False, guidance_scale=3.0
    ).codes
    got = model.generate_tokens(PROMPTS, duration=frames / model.frame_rate, greedy=True, guidance_scale=3.0)
    assert want.shape == got.shape == (2, model.num_codebooks, frames)
    np.testing.assert_array_equal(got, want)


def test_unconditional_equals_transformers(tiny_hf_dir, base_model):
    want = reference.generate(tiny_hf_dir, None, 60 + 3, num_unconditional=2, do_sample=False).codes
    got = base_model.generate_tokens([None, ""], duration=60 / 50, greedy=True, guidance_scale=1.0)
    np.testing.assert_array_equal(got, want)


def test_continuation_equals_transformers(tiny_hf_dir, base_model):
    """An audio prompt's tokens are kept and continued exactly as transformers continues them."""
    sr = base_model.sample_rate
    t = np.arange(int(0.64 * sr)) / sr
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-t)).astype(np.float32)[None]  # [1, samples]
    prompt_codes = base_model.codec.encode(audio[None], sr)  # [1, K, 32]
    prompt_frames = prompt_codes.shape[-1]
    new = 40
    want = reference.generate(
        tiny_hf_dir, ["calm piano"], new, audio_prompt=audio[None], do_sample=False, guidance_scale=3.0
    ).codes  # prompt frames + continuation
    total = want.shape[-1]
    got = base_model.generate_tokens(
        ["calm piano"], duration=total / 50, greedy=True, audio_prompt=audio, audio_prompt_sample_rate=sr
    )
    assert total == prompt_frames + new - 3
    np.testing.assert_array_equal(got[0, :, :prompt_frames], prompt_codes[0])
    np.testing.assert_array_equal(got, want)


def test_decoded_audio_equals_transformers(tiny_hf_dir, base_model):
    want = reference.generate(tiny_hf_dir, PROMPTS, 50 + 3, do_sample=False, guidance_scale=3.0)
    codes, audio = want.codes, want.audio
    ours = base_model.generate(PROMPTS, duration=1.0, greedy=True)
    np.testing.assert_array_equal(ours.codes, codes)
    assert ours.audio.shape == audio.shape == (2, 1, 50 * 640)
    np.testing.assert_allclose(ours.audio, audio, atol=1e-5)


# ---------------------------------------------------------------------------------- sampling


def _controls(batch, **overrides):
    values = dict(
        temperature=jnp.ones(batch),
        top_k=jnp.zeros(batch, jnp.int32),
        top_p=jnp.zeros(batch),
        guidance_scale=jnp.ones(batch),
        repetition_penalty=jnp.ones(batch),
        greedy=jnp.zeros(batch, bool),
        keys=jax.vmap(jax.random.key)(jnp.arange(batch, dtype=jnp.uint32)),
    )
    values.update({k: jnp.asarray(v) for k, v in overrides.items()})
    return SamplingControls(**values)


def _draws(logits, controls, n, num_candidates=64, seen=None):
    fn = jax.jit(jax.vmap(lambda pos: sample_tokens(logits, controls, pos, num_candidates, seen)))
    return np.asarray(fn(jnp.arange(n)))  # [n, batch, K]


def test_top_k_never_leaves_the_k_best():
    logits = jax.random.normal(jax.random.key(0), (3, 4, 64)) * 3
    controls = _controls(3, top_k=[1, 5, 20])
    draws = _draws(logits, controls, 400)
    order = np.argsort(-np.asarray(logits), axis=-1)
    for row, k in enumerate([1, 5, 20]):
        for book in range(4):
            allowed = set(order[row, book, :k])
            seen = set(draws[:, row, book])
            assert seen <= allowed
            if k > 1:
                assert len(seen) > 1  # it does sample, not just take the argmax


def test_top_p_keeps_the_smallest_nucleus_with_renormalised_probabilities():
    probs = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.05])
    logits = jnp.log(jnp.asarray(probs))[None, None].repeat(1, 0).repeat(1, 1)
    logits = jnp.pad(logits, ((0, 0), (0, 0), (0, 58)), constant_values=-1e9)  # 64 entries
    controls = _controls(1, top_p=[0.7])
    draws = _draws(logits, controls, 4000)[:, 0, 0]
    # The nucleus is {0, 1, 2}: 0.4 + 0.25 < 0.7 <= 0.4 + 0.25 + 0.15.
    assert set(draws) == {0, 1, 2}
    freq = np.bincount(draws, minlength=3)[:3] / len(draws)
    np.testing.assert_allclose(freq, probs[:3] / probs[:3].sum(), atol=0.03)


def test_low_temperature_is_greedy_and_greedy_is_argmax():
    logits = jax.random.normal(jax.random.key(1), (2, 4, 64))
    cold = _draws(logits, _controls(2, temperature=[1e-4, 1e-4]), 50)
    greedy = _draws(logits, _controls(2, greedy=[True, True]), 5)
    argmax = np.argmax(np.asarray(logits), axis=-1)
    assert (cold == argmax).all() and (greedy == argmax).all()


def test_guidance_formula_and_repetition_penalty():
    logits = jnp.asarray([[[1.0, -2.0]], [[0.5, 1.0]]])  # cond row then null row, K=1, vocab 2
    np.testing.assert_allclose(apply_guidance(logits, jnp.asarray([3.0])), [[[0.5 + 0.5 * 3, 1.0 - 3.0 * 3]]])
    base = jnp.asarray([[[2.0, -2.0, 1.0]]])
    seen = jnp.asarray([[[True, True, False]]])
    controls = _controls(1, repetition_penalty=[2.0], greedy=[True])
    from musicgen_jax.generation.sampling import apply_repetition_penalty

    np.testing.assert_allclose(apply_repetition_penalty(base, seen, jnp.asarray([2.0])), [[[1.0, -4.0, 1.0]]])
    # The penalty turns the argmax from token 0 to token 2 (1.0 > 2.0 / 2.5).
    out = sample_tokens(
        base, controls.replace(repetition_penalty=jnp.asarray([2.5])), jnp.asarray(0), 3, seen
    )
    assert int(out[0, 0]) == 2


def test_same_seed_same_codes_different_seed_different(base_model):
    a = base_model.generate_tokens(["jazz"], duration=1.0, seed=7)
    b = base_model.generate_tokens(["jazz"], duration=1.0, seed=7)
    c = base_model.generate_tokens(["jazz"], duration=1.0, seed=8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.5


def test_a_row_does_not_depend_on_its_batch(base_model):
    """Per-row seeds and knobs: the server can batch requests without changing their results."""
    alone = base_model.generate_tokens(["dark techno"], duration=1.0, seed=11, top_k=50, temperature=0.8)
    reqs = base_model.make_requests(["calm piano", "dark techno"], duration=1.0, top_k=50, temperature=0.8)
    reqs[0] = type(reqs[0])(prompt="calm piano", params=GenerationParams(duration=1.0, seed=3, top_p=0.9))
    reqs[1] = type(reqs[1])(
        prompt="dark techno", params=GenerationParams(duration=1.0, seed=11, top_k=50, temperature=0.8)
    )
    together = base_model.engine.generate(reqs)
    np.testing.assert_array_equal(together.frames[1], alone[0])


def test_one_window_of_equal_rows_keeps_its_codes_on_the_device(base_model):
    """The common case leaves the codes on the device (for a JAX codec to decode there); rows of
    other lengths, or beams, are built on the host. Either way ``frames`` are the same codes."""
    requests = base_model.make_requests(["jazz", "rock"], duration=1.0, seed=5)
    output = base_model.engine.generate(requests)
    assert isinstance(output.device_codes, jax.Array) and output.device_codes.shape == (2, 4, 50)
    np.testing.assert_array_equal(np.stack(output.frames), np.asarray(output.device_codes))

    longer = dataclasses.replace(requests[1], params=dataclasses.replace(requests[1].params, duration=1.2))
    mixed = base_model.engine.generate([requests[0], longer])
    assert mixed.device_codes is None and mixed.frames[1].shape == (4, 60)
    np.testing.assert_array_equal(mixed.frames[0], output.frames[0])  # rows do not depend on the batch

    prompted = dataclasses.replace(requests[0], prompt_codes=output.frames[0][:, :20])
    continued = base_model.engine.generate([prompted])
    assert continued.device_codes is not None
    np.testing.assert_array_equal(continued.frames[0][:, :20], output.frames[0][:, :20])  # the prompt, kept

    beams = base_model.make_requests(["jazz"], duration=1.0, seed=5, num_beams=2)
    assert base_model.engine.generate(beams).device_codes is None


def test_other_duration_in_the_bucket_does_not_recompile(tiny_hf_dir):
    model = MusicGen.from_pretrained(tiny_hf_dir, dtype="float32")
    model.generate_tokens(["jazz"], duration=2.0)
    compiled = model.engine.compile_count
    out = model.generate_tokens(["rock"], duration=4.5)  # same 5 s bucket, same text bucket
    assert out.shape[-1] == 225
    assert model.engine.compile_count == compiled
    model.generate_tokens(["rock"], duration=7.0)  # the 10 s bucket: one more start, an advance per span
    assert model.engine.compile_count == compiled + 1 + len(loop.kv_buckets(500 + 4))


def test_warmup_compiles_what_requests_then_use(tiny_hf_dir):
    model = MusicGen.from_pretrained(tiny_hf_dir, dtype="float32")
    seconds = model.engine.warmup(batch_sizes=(1, 2), durations=(5.0,))
    # Per batch bucket (two): the text encoder, start, and the spans' advances.
    programs = 2 * (2 + len(loop.kv_buckets(250 + 4)))
    assert seconds > 0 and model.engine.compile_count == programs
    model.generate_tokens(["jazz", "rock"], duration=3.0)
    model.generate_tokens(["jazz"], duration=5.0)
    assert model.engine.compile_count == programs


def test_layer_unroll_and_attention_spans_do_not_change_the_music(tiny_hf_dir, base_model):
    """The speed knobs (layers per loop iteration, attention spans per length bucket) give the
    same tokens, sampled and greedy, over a bucket long enough to have several spans."""
    want = base_model.generate_tokens(["dark techno", "jazz"], duration=11.0, seed=5)
    positions = base_model.engine.shapes.positions(base_model.engine.shapes.length_bucket(550))  # 15 s
    assert len(loop.kv_buckets(positions)) > 1
    # One span: always the whole cache.
    unrolled = MusicGen.from_pretrained(
        tiny_hf_dir, dtype="float32", layer_unroll=2, kv_splits=1, layer_layout="scanned"
    )
    np.testing.assert_array_equal(
        unrolled.generate_tokens(["dark techno", "jazz"], duration=11.0, seed=5), want
    )
    greedy = dict(duration=11.0, greedy=True, guidance_scale=3.0)
    np.testing.assert_array_equal(
        unrolled.generate_tokens(["calm piano"], **greedy),
        base_model.generate_tokens(["calm piano"], **greedy),
    )


def test_float32_models_compile_float32_matrix_products(tiny_hf_dir, base_model):
    """GPUs default to TF32 for float32 dots (TPUs to bfloat16 passes): a float32 model asks for
    float32 in every program it compiles, so its results do not depend on the device."""
    base_model.engine.warmup(batch_sizes=(1,), durations=(1.0,))
    programs = [program.as_text() for program in base_model.engine.programs.compiled()]
    dots = [line for text in programs for line in text.splitlines() if " dot(" in line]
    assert dots and all("operand_precision={highest,highest}" in line for line in dots)
    bf16 = MusicGen.from_pretrained(tiny_hf_dir, dtype="bfloat16")
    assert isinstance(bf16.engine.numerics(), contextlib.nullcontext)


def test_bad_parameters_are_named():
    for kwargs, word in (
        (dict(duration=0.5), "duration"),
        (dict(duration=121), "duration"),
        (dict(temperature=0), "temperature"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=-0.1), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(num_beams=9), "num_beams"),
        (dict(guidance_scale=float("nan")), "guidance_scale"),
    ):
        with pytest.raises(GenerationParamsError, match=word):
            GenerationParams(**kwargs)


# ---------------------------------------------------------------------------------- beams, windows


def test_one_beam_is_greedy_and_more_beams_score_at_least_as_well(base_model):
    greedy = base_model.generate_tokens(["warm jazz"], duration=1.0, greedy=True)
    mg = base_model
    memory, mask = mg.engine.encode(mg.engine.prepare_text(["warm jazz"]))
    one_beam = mg.make_requests(["warm jazz"], duration=1.0, num_beams=1)
    # A one-beam request runs the beam search program (num_beams=1 there means "one beam").
    call = GenerationCall(mg.engine, progress=None, on_frames=None, chunk_frames=50, first_chunk_frames=50)
    plan = loop.SequencePlan(jnp.asarray([50]), jnp.zeros((1, 4, 250), jnp.int32), jnp.zeros((1,), jnp.int32))
    tokens, _ = beam.beam_search(call, one_beam[0].params, memory, mask, plan, 254, True)
    np.testing.assert_array_equal(tokens[:, :50], greedy[0])

    def score(codes):
        """Guided log-probability of the codes under the model, teacher-forced."""
        from musicgen_jax.models.delay_pattern import apply_delay

        delayed = np.asarray(apply_delay(jnp.asarray(codes[None]), 2048))
        logits = mg.logits(["warm jazz"], delayed[:, :, :-1])
        null = mg.engine.model.apply(
            {"params": mg.engine.params},
            jnp.asarray(delayed[:, :, :-1]),
            jnp.zeros_like(memory),
            jnp.zeros_like(mask),
            method=type(mg.engine.model).decode,
        )
        guided = np.asarray(null) + (logits - np.asarray(null)) * 3.0
        logp = np.asarray(jax.nn.log_softmax(guided, axis=-1))
        target = delayed[:, :, 1:]
        valid = target < 2048
        picked = np.take_along_axis(logp, np.minimum(target, 2047)[..., None], axis=-1)[..., 0]
        return float((picked * valid).sum())

    four = mg.generate(["warm jazz"], duration=1.0, num_beams=4)
    assert score(four.codes[0]) >= score(greedy[0]) - 1e-3
    # The reported score is the beam's summed log-probability over its length.
    length = four.codes.shape[-1] * 4
    assert four.beam_scores[0] == pytest.approx(score(four.codes[0]) / length, abs=1e-3)


def test_long_form_windows_follow_audiocraft(tiny_hf_dir):
    """Past the window, each window is prompted with the last (window - stride) of the previous one."""
    loaded = load_model(tiny_hf_dir)
    loaded = dataclasses.replace(loaded, config=dataclasses.replace(loaded.config, max_duration=2.0))
    model = MusicGen(loaded, dtype="float32")  # a 100-frame window, for speed
    out = model.generate_tokens(["epic orchestral"], duration=5.0, greedy=True, extend_stride=1.2)
    assert out.shape == (1, 4, 250)
    # Window 2 starts at frame 60 with frames 60..99 as its prompt and makes frames 100..159.
    again = model.generate_tokens(
        ["epic orchestral"],
        duration=2.0,
        greedy=True,
        audio_prompt=None,
    )
    np.testing.assert_array_equal(again[0], out[0, :, :100])
    reqs = model.make_requests(["epic orchestral"], duration=2.0, greedy=True)
    reqs = [dataclasses.replace(reqs[0], prompt_codes=out[0, :, 60:100])]
    window2 = model.engine.generate(reqs).frames[0]
    np.testing.assert_array_equal(window2[:, 40:], out[0, :, 100:160])


def test_streamed_frames_add_up_to_the_result(base_model):
    streamed: dict[int, list[np.ndarray]] = {}
    requests = base_model.make_requests(["jazz", "rock"], duration=2.0, seed=5)
    out = base_model.engine.generate(
        requests,
        on_frames=lambda row, new: streamed.setdefault(row, []).append(new),
        chunk_frames=13,
        first_chunk_frames=6,
    )
    for row in (0, 1):
        np.testing.assert_array_equal(np.concatenate(streamed[row], axis=1), out.frames[row])
    # Six positions in, frames 0-2 are complete in every codebook (the last codebook lags by 3).
    assert streamed[0][0].shape == (4, 3)
