"""The repetition penalty inside the decode loop, against transformers' ``generate(repetition_penalty=)``.

transformers is the parity target; its MusicGen penalty (read from ``generation/utils.py``,
``logits_process.py`` and ``modeling_musicgen.py`` of 5.x, and confirmed below by replaying its
greedy decode from its own teacher-forced logits), which ``loop.advance`` follows:

1. Order. ``RepetitionPenaltyLogitsProcessor`` runs before ``ClassifierFreeGuidanceLogitsProcessor``
   and is handed ``input_ids`` of the conditional batch only, so the conditional logits are
   penalised and the null ones are not, before guidance.
2. What counts as seen. transformers' ``input_ids`` are the raw sampled tokens: the delay pattern
   (and an audio prompt past its first ``prompt_frames + 1`` positions) is applied only to the
   copy the decoder reads. So the tokens sampled where the pattern then forces the pad (codebook
   ``k`` at positions ``1..k``) count as seen though they never appear in the output, as do the
   sampled tokens that an audio prompt's last ``k`` frames overwrite in codebook ``k``. The start
   token and the pad (2048 = vocab size) never count.

Both change greedy tokens from the first frames on; the replay tests tell the two readings apart.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers_reference as reference

from musicgen_jax import MusicGen
from musicgen_jax.models.delay_pattern import apply_delay

PROMPTS = ["upbeat jazz piano with smooth saxophone and soft drums", "dark techno"]
FRAMES = 100  # enough for the tiny model's greedy streams to repeat themselves many times over
PENALTY = 1.5
PAD = 2048


@pytest.fixture(scope="module")
def model(tiny_hf_dir):
    return MusicGen.from_pretrained(tiny_hf_dir, dtype="float32")


def penalise(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """transformers' rule, written out: seen logits divided by the penalty, multiplied when negative."""
    return np.where(seen, np.where(logits < 0, logits * penalty, logits / penalty), logits)


def replay_greedy(cond, null, delayed, penalty, scale, *, semantics: str) -> np.ndarray:
    """The greedy choice at every position of one row's delayed sequence ``[K, L]`` (position 0 the
    start token), from teacher-forced logits ``cond``/``null`` ``[K, L - 1, vocab]`` over it.

    ``semantics``: ``"transformers"`` (penalise the conditional logits, then guide; seen = every
    choice made, the ones the delay pattern overwrites with the pad included) or ``"output"`` (the
    naive reading: penalise the guided logits; seen = the output's tokens)."""
    codebooks, length = delayed.shape
    seen = np.zeros((codebooks, cond.shape[-1]), bool)
    choices = np.full((codebooks, length), PAD)
    rows = np.arange(codebooks)
    for position in range(1, length):
        c, u = cond[:, position - 1], null[:, position - 1]
        if semantics == "output":
            logits = penalise(u + (c - u) * scale, seen, penalty)
        else:
            logits = u + (penalise(c, seen, penalty) - u) * scale
        choices[:, position] = logits.argmax(-1)
        stands = delayed[:, position]
        if semantics == "output":
            real = stands < PAD
            seen[rows[real], stands[real]] = True
        else:
            seen[rows, np.where(stands < PAD, stands, choices[:, position])] = True
    return choices


def assert_replayed(choices: np.ndarray, delayed: np.ndarray) -> None:
    free = delayed < PAD  # where the loop's own choice stands
    free[:, 0] = False
    assert free.sum() >= 0.9 * delayed.size
    np.testing.assert_array_equal(choices[free], delayed[free])


def delayed_of(codes: np.ndarray) -> np.ndarray:
    return np.asarray(apply_delay(jnp.asarray(codes), PAD))  # [batch, K, frames + C]


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_greedy_with_repetition_penalty_equals_transformers(tiny_hf_dir, model, scale):
    want = reference.generate(
        tiny_hf_dir, PROMPTS, FRAMES + 3, do_sample=False, guidance_scale=scale, repetition_penalty=PENALTY
    ).codes
    unpenalised = reference.generate(tiny_hf_dir, PROMPTS, FRAMES + 3, do_sample=False, guidance_scale=scale)
    assert (want != unpenalised).mean() > 0.5  # the penalty matters at this length
    got = model.generate_tokens(
        PROMPTS, duration=FRAMES / 50, greedy=True, guidance_scale=scale, repetition_penalty=PENALTY
    )
    assert got.shape == want.shape == (2, 4, FRAMES)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("scale, penalty", [(1.0, 1.5), (3.0, 1.5), (3.0, 0.7)])
def test_our_loop_penalises_as_transformers_reads_it(model, scale, penalty):
    """Our greedy tokens, replayed from our teacher-forced logits under transformers' semantics
    (penalties below 1 too); the naive reading does not replay them."""
    codes = model.generate_tokens(
        PROMPTS, duration=FRAMES / 50, greedy=True, guidance_scale=scale, repetition_penalty=penalty
    )
    delayed = delayed_of(codes)
    cond = model.logits(PROMPTS, delayed[:, :, :-1])
    null = model.logits(["", ""], delayed[:, :, :-1])  # an empty prompt is the null condition
    mismatches = 0
    for row in range(len(PROMPTS)):
        args = (cond[row], null[row], delayed[row], penalty, scale)
        assert_replayed(replay_greedy(*args, semantics="transformers"), delayed[row])
        other = replay_greedy(*args, semantics="output")
        mismatches += int((other != delayed[row])[delayed[row] < PAD].sum())
    assert mismatches > 0


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_reading_of_transformers_penalty_replays_its_generate(tiny_hf_dir, scale):
    """transformers' greedy tokens, replayed from its own teacher-forced logits: the two
    rules in the module docstring are what it does (and the replay rejects the naive reading)."""
    codes = reference.generate(
        tiny_hf_dir, PROMPTS, FRAMES + 3, do_sample=False, guidance_scale=scale, repetition_penalty=PENALTY
    ).codes
    delayed = delayed_of(codes)
    hf, tokenizer = reference.load(tiny_hf_dir)
    text = reference.text_inputs(tokenizer, PROMPTS)
    cond = reference.teacher_forced_logits(hf, delayed[:, :, :-1], **text)
    with torch.no_grad():
        states = hf.text_encoder(**text).last_hidden_state
    null = reference.teacher_forced_logits(
        hf,
        delayed[:, :, :-1],
        encoder_outputs=(torch.zeros_like(states),),
        attention_mask=torch.zeros_like(text["attention_mask"]),
    )
    mismatches = 0
    for row in range(len(PROMPTS)):
        args = (cond[row], null[row], delayed[row], PENALTY, scale)
        assert_replayed(replay_greedy(*args, semantics="transformers"), delayed[row])
        naive = replay_greedy(*args, semantics="output")
        mismatches += int((naive != delayed[row])[delayed[row] < PAD].sum())
    assert mismatches > 0
