"""One sampling step against transformers' logits processors on the same random logits.

transformers' MusicGen chain, in ``generate``'s order: ``RepetitionPenaltyLogitsProcessor``,
``ClassifierFreeGuidanceLogitsProcessor``, then (sampling only) ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``. Ours: ``sampling.apply_guidance`` (optionally with the
penalty), ``sampling.filter_candidates`` (temperature, top-k, top-p over the best candidates), then
Gumbel-max in ``sampling.sample_tokens``. Knob spellings differ at "off": our ``top_p=0`` is
transformers' ``top_p=1.0`` (its ``top_p=0`` would keep one token), ``top_k=0`` is off in both.

Tolerances: the surviving token sets must be equal; logits within 1e-5 absolute (float32 of
magnitude ~10, the same arithmetic in another kernel), the penalty within 2 ulps (XLA on CPU
divides by multiplying with the reciprocal); renormalised probabilities within 2e-6 absolute.
Sampled frequencies: a chi-square statistic under its p = 1e-6 quantile, checked to reject a
slightly wrong distribution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import stats
from transformers import (
    ClassifierFreeGuidanceLogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from musicgen_jax.generation.sampling import (
    SamplingControls,
    apply_guidance,
    apply_repetition_penalty,
    filter_candidates,
    sample_tokens,
)

BATCH, CODEBOOKS, VOCAB, PAD = 2, 4, 2048, 2048
LOGIT_ATOL, PROB_ATOL = 1e-5, 2e-6


def controls(batch: int, **knobs) -> SamplingControls:
    values = dict(
        temperature=np.ones(batch),
        top_k=np.zeros(batch, np.int32),
        top_p=np.zeros(batch),
        guidance_scale=np.ones(batch),
        repetition_penalty=np.ones(batch),
        greedy=np.zeros(batch, bool),
    )
    values.update(knobs)
    keys = jax.vmap(jax.random.key)(jnp.arange(batch, dtype=jnp.uint32))
    return SamplingControls(**{k: jnp.asarray(v) for k, v in values.items()}, keys=keys)


def warpers(temperature: float, top_k: int, top_p: float) -> LogitsProcessorList:
    """What ``generate(do_sample=True, ...)`` appends for our knobs (off ones left out, as it does)."""
    chain = LogitsProcessorList()
    if temperature != 1.0:
        chain.append(TemperatureLogitsWarper(temperature))
    if top_k != 0:
        chain.append(TopKLogitsWarper(top_k))
    if top_p not in (0.0, 1.0):
        chain.append(TopPLogitsWarper(top_p))
    return chain


def random_logits(seed: int, rows: int) -> np.ndarray:
    """``[rows, K, vocab]`` logits shaped like a model's: a few strong tokens over a noisy floor."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, CODEBOOKS, VOCAB)) * 2.0
    logits += (rng.random((rows, CODEBOOKS, VOCAB)) < 0.01) * rng.exponential(4.0, (rows, CODEBOOKS, VOCAB))
    return logits.astype(np.float32)


def dummy_ids(rows: int) -> torch.Tensor:
    return torch.full((rows * CODEBOOKS, 1), PAD)  # the warpers and guidance read only the shape


def ours_over_vocab(logits: np.ndarray, knobs: SamplingControls, num_candidates: int) -> np.ndarray:
    """``filter_candidates`` scattered back to ``[batch, K, vocab]`` (-inf where removed)."""
    filtered, indices = filter_candidates(jnp.asarray(logits), knobs, num_candidates)
    full = np.full(logits.shape, -np.inf, np.float32)
    np.put_along_axis(full, np.asarray(indices), np.asarray(filtered), axis=-1)
    return full


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def assert_same_filter(ours: np.ndarray, theirs: np.ndarray) -> None:
    survivors = np.isfinite(ours)
    np.testing.assert_array_equal(survivors, np.isfinite(theirs))
    assert survivors.any(-1).all()
    np.testing.assert_allclose(ours[survivors], theirs[survivors], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(softmax(ours), softmax(theirs), rtol=0, atol=PROB_ATOL)


# ----------------------------------------------------------------------------- guidance, penalty


def test_guidance_equals_transformers_processor():
    logits = random_logits(0, 2 * BATCH)  # conditional rows, then null rows
    theirs = ClassifierFreeGuidanceLogitsProcessor(3.0)(
        dummy_ids(BATCH), torch.tensor(logits.reshape(-1, VOCAB))
    ).numpy()
    ours = np.asarray(apply_guidance(jnp.asarray(logits), jnp.full((BATCH,), 3.0)))
    np.testing.assert_allclose(ours.reshape(-1, VOCAB), theirs, rtol=0, atol=LOGIT_ATOL)


def seen_stream(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """transformers-style ``input_ids`` ``[batch * K, seq]`` (start token, delay pads, repeats) and
    the ``seen`` mask ``[batch, K, vocab]`` of its real tokens."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 40, (BATCH * CODEBOOKS, 30))  # few distinct tokens: many repeats
    ids[:, 0] = PAD
    for k in range(CODEBOOKS):
        ids[k::CODEBOOKS, 1 : k + 1] = PAD
    seen = np.zeros((BATCH * CODEBOOKS, VOCAB), bool)
    for row, stream in enumerate(ids):
        seen[row, stream[stream < PAD]] = True
    return ids, seen.reshape(BATCH, CODEBOOKS, VOCAB)


@pytest.mark.parametrize("penalty", [1.5, 0.7])
def test_repetition_penalty_equals_transformers_processor(penalty):
    ids, seen = seen_stream(1)
    logits = random_logits(2, BATCH)
    logits[..., :40] = np.where(np.arange(40) % 2, -1.0, 1.0) * np.abs(logits[..., :40])  # both signs seen
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(
        torch.tensor(ids), torch.tensor(logits.reshape(-1, VOCAB))
    ).numpy()
    ours = np.asarray(
        apply_repetition_penalty(jnp.asarray(logits), jnp.asarray(seen), jnp.full((BATCH,), penalty))
    )
    assert (theirs != logits.reshape(-1, VOCAB)).any()
    np.testing.assert_allclose(ours.reshape(-1, VOCAB), theirs, rtol=2.5e-7, atol=0)  # 2 float32 ulps


def test_penalty_then_guidance_equals_transformers_chain():
    """With guidance, transformers penalises the conditional rows only, then guides: the order
    ``apply_guidance(..., seen, penalty)`` implements (and not what penalising afterwards gives)."""
    ids, seen = seen_stream(3)
    logits = random_logits(4, 2 * BATCH)
    chain = LogitsProcessorList(
        [RepetitionPenaltyLogitsProcessor(1.5), ClassifierFreeGuidanceLogitsProcessor(3.0)]
    )
    theirs = chain(torch.tensor(ids), torch.tensor(logits.reshape(-1, VOCAB))).numpy()
    scale, penalty, mask = jnp.full((BATCH,), 3.0), jnp.full((BATCH,), 1.5), jnp.asarray(seen)
    ours = np.asarray(apply_guidance(jnp.asarray(logits), scale, mask, penalty))
    np.testing.assert_allclose(ours.reshape(-1, VOCAB), theirs, rtol=0, atol=LOGIT_ATOL)
    after = np.asarray(apply_repetition_penalty(apply_guidance(jnp.asarray(logits), scale), mask, penalty))
    assert np.abs(after.reshape(-1, VOCAB) - theirs).max() > 1.0


# ----------------------------------------------------------------------------- temperature, top-k, top-p

SETTINGS = [  # (temperature, top_k, top_p) for the two rows of one batch
    ((1.0, 250, 0.0), (0.7, 50, 0.0)),  # audiocraft's default; a colder, narrower one
    ((1.3, 0, 0.9), (0.5, 0, 0.3)),  # top-p alone
    ((0.8, 100, 0.5), (1.0, 1, 0.0)),  # top-k then top-p; top-k 1 (greedy by filtering)
    ((2.0, 2048, 0.95), (1.0, 0, 0.0)),  # top-k over the whole vocabulary; nothing filtered
]


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
@pytest.mark.parametrize("rows", SETTINGS)
def test_filtered_distribution_equals_transformers_warpers(rows, guidance_scale):
    raw = random_logits(5, 2 * BATCH)
    logits = np.asarray(apply_guidance(jnp.asarray(raw), jnp.full((BATCH,), guidance_scale)))
    if guidance_scale != 1.0:  # guidance as transformers runs it, before the warpers
        theirs_in = ClassifierFreeGuidanceLogitsProcessor(guidance_scale)(
            dummy_ids(BATCH), torch.tensor(raw.reshape(-1, VOCAB))
        )
    else:
        theirs_in = torch.tensor(logits.reshape(-1, VOCAB))
    theirs_in = theirs_in.reshape(BATCH, CODEBOOKS, VOCAB)
    temperature, top_k, top_p = (np.asarray(column) for column in zip(*rows))
    knobs = controls(BATCH, temperature=temperature, top_k=top_k.astype(np.int32), top_p=top_p)
    # The candidate count the generator would use: the whole vocabulary when a row has top-k off,
    # else the largest top-k rounded up to a power of two.
    num_candidates = VOCAB if (top_k == 0).any() else min(VOCAB, 1 << int(np.ceil(np.log2(top_k.max()))))
    ours = ours_over_vocab(logits, knobs, num_candidates)
    theirs = np.stack(
        [
            warpers(float(t), int(k), float(p))(dummy_ids(1), theirs_in[row]).numpy()
            for row, (t, k, p) in enumerate(rows)
        ]
    )
    assert_same_filter(ours, theirs)
    kept = np.isfinite(ours).sum(-1)  # [batch, K]
    for row, (_, k, p) in enumerate(rows):
        if k:
            assert (kept[row] <= k).all()
        if k == 0 and p == 0:
            assert (kept[row] == VOCAB).all()


def test_sampled_frequencies_follow_transformers_distribution():
    """Gumbel-max over the candidates draws from the renormalised filtered distribution: a
    chi-square test per codebook over many steps' keys, which rejects a slightly wrong target."""
    vocab = 64
    logits = np.random.default_rng(6).standard_normal((1, CODEBOOKS, vocab)).astype(np.float32) * 1.5
    temperature, top_k, top_p = 0.8, 20, 0.9
    knobs = controls(1, temperature=[temperature], top_k=[top_k], top_p=[top_p])
    theirs = warpers(temperature, top_k, top_p)(
        torch.full((CODEBOOKS, 1), vocab), torch.tensor(logits.reshape(CODEBOOKS, vocab))
    ).numpy()
    target = softmax(theirs)  # [K, vocab]
    draws_count = 40000
    draw = jax.jit(jax.vmap(lambda position: sample_tokens(jnp.asarray(logits), knobs, position, 32)))
    draws = np.asarray(draw(jnp.arange(draws_count)))[:, 0]  # [draws, K]
    for book in range(CODEBOOKS):
        support = target[book] > 0
        counts = np.bincount(draws[:, book], minlength=vocab)
        assert counts[~support].sum() == 0  # nothing outside the surviving set
        expected = target[book, support] * draws_count
        statistic = ((counts[support] - expected) ** 2 / expected).sum()
        bound = stats.chi2.ppf(1 - 1e-6, df=int(support.sum()) - 1)
        assert statistic < bound, (book, statistic, bound)
        # The same test against temperature 1 on the same surviving set must reject.
        wrong = softmax(logits[0, book, support]) * draws_count
        assert ((counts[support] - wrong) ** 2 / wrong).sum() > bound
