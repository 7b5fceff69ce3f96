"""Weight-only int8 inference (``quantize="int8"``): what is rounded, what it computes, what it saves
in memory, and the refusals at each boundary."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest

from musicgen_jax import MusicGen
from musicgen_jax.models import layer_layout
from musicgen_jax.models.decoder_layer import PROJECTION_KERNELS
from musicgen_jax.models.int8 import quantize_rows
from musicgen_jax.models.musicgen import MusicGenModel, init_inputs
from musicgen_jax.models.tree_paths import get_path, has_path, set_path
from musicgen_jax.serving.settings import ServerSettings as Settings


def test_rows_round_to_int8_within_half_a_step():
    weight = np.random.default_rng(0).normal(size=(6, 40)).astype(np.float32)
    weight[2] = 0.0
    codes, scale = quantize_rows(weight, axis=1)
    assert codes.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (6,)
    assert np.abs(codes).max() == 127 and scale[2] == 1.0 and not codes[2].any()
    error = np.abs(codes * scale[:, None] - weight)
    assert (error <= scale[:, None] / 2 + 1e-7).all()
    # The same on the device.
    device_codes, device_scale = quantize_rows(jnp.asarray(weight), axis=1)
    np.testing.assert_array_equal(np.asarray(device_codes), codes)
    np.testing.assert_allclose(np.asarray(device_scale), scale, rtol=1e-6)  # division rounding


@pytest.fixture(scope="module")
def models(tiny_hf_dir):
    return (
        MusicGen.from_pretrained(tiny_hf_dir, dtype="float32", layer_layout="unrolled"),
        MusicGen.from_pretrained(tiny_hf_dir, dtype="float32", quantize="int8"),
    )


def _logits(model: MusicGen, params: dict, tokens: np.ndarray) -> np.ndarray:
    engine = model.engine
    memory, mask = engine.encode(engine.prepare_text(["dark techno", "calm piano"]))
    with engine.numerics():
        return np.asarray(
            engine.model.apply(
                {"params": params}, jnp.asarray(tokens), memory, mask, method=MusicGenModel.decode
            )
        )


def test_int8_model_computes_with_its_dequantised_weights(models):
    """The int8 model's logits are those of float32 weights equal to ``codes * scale`` (nothing else
    is rounded), and within a few percent of the float32 model's."""
    full, int8 = models
    params = int8.engine.params
    decoder = params["decoder"]
    assert decoder["lm_heads"].dtype == jnp.int8 and decoder["lm_heads_scale"].dtype == jnp.float32
    dequantised = full.engine.params
    for index in range(full.config.decoder.num_layers):
        name = layer_layout.layer_name(index)
        layer = decoder[name]
        for path, _ in PROJECTION_KERNELS.values():
            if not has_path(layer, path):
                continue
            codes, scale = get_path(layer, path), get_path(layer, (*path[:-1], "scale"))
            assert codes.dtype == jnp.int8 and codes.shape[0] == scale.shape[0]
            weight = codes.astype(jnp.float32) * scale[:, None]
            dequantised = set_path(dequantised, ("decoder", name, *path), weight)
    heads = decoder["lm_heads"].astype(jnp.float32) * decoder["lm_heads_scale"][..., None]
    dequantised = set_path(dequantised, ("decoder", "lm_heads"), heads)
    dec = full.config.decoder
    tokens = np.random.default_rng(1).integers(0, dec.vocab_size, size=(2, dec.num_codebooks, 9))
    ours = _logits(int8, params, tokens)
    np.testing.assert_allclose(ours, _logits(full, dequantised, tokens), rtol=1e-5, atol=1e-5)
    reference = _logits(full, full.engine.params, tokens)
    relative = np.linalg.norm(ours - reference) / np.linalg.norm(reference)
    assert 0 < relative < 0.05, relative


def test_int8_weights_take_at_most_55_percent_of_bfloat16(tiny_hf_dir, models):
    _, int8 = models
    bf16 = MusicGen.from_pretrained(tiny_hf_dir, dtype="bfloat16", layer_layout="unrolled")
    int8_bf16 = MusicGen.from_pretrained(tiny_hf_dir, dtype="bfloat16", quantize="int8")

    def projections(model: MusicGen) -> int:  # the kernels quantised and their scales, and the heads
        decoder = model.engine.params["decoder"]
        kept = {k: v for k, v in decoder.items() if k.startswith("layers_") or k.startswith("lm_heads")}
        return layer_layout.weight_bytes({k: _without_norms(v) for k, v in kept.items()})

    assert projections(int8) / projections(bf16) <= 0.55
    assert projections(int8_bf16) == projections(int8)  # int8 codes whatever the compute dtype
    # (The tiny model's embedding tables are a large share of its decoder; musicgen-small's whole
    # decoder is measured by benchmarks/bf16_agreement.py, docs/performance.md.)


def _without_norms(tree):
    if not isinstance(tree, dict):
        return tree
    return {k: _without_norms(v) for k, v in tree.items() if not k.endswith("_norm")}


def test_int8_generation_is_seeded_and_stays_close(models):
    full, int8 = models
    kwargs = dict(duration=2.0, greedy=True, guidance_scale=3.0)
    first = int8.generate_tokens(["dark techno"], **kwargs)
    np.testing.assert_array_equal(first, int8.generate_tokens(["dark techno"], **kwargs))
    sampled = int8.generate_tokens(["dark techno"], duration=1.0, seed=3)
    np.testing.assert_array_equal(sampled, int8.generate_tokens(["dark techno"], duration=1.0, seed=3))
    assert first.shape == full.generate_tokens(["dark techno"], **kwargs).shape


def test_int8_refusals(tiny_hf_dir, models, tmp_path):
    with pytest.raises(ValueError, match="quantize must be one of int8 or None, got 'int4'"):
        MusicGen.from_pretrained(tiny_hf_dir, quantize="int4")
    with pytest.raises(ValueError, match="runs in the unrolled layer layout, not 'scanned'"):
        MusicGen.from_pretrained(tiny_hf_dir, quantize="int8", layer_layout="scanned")
    with pytest.raises(ValueError, match="an int8 model is not saved"):
        models[1].save_pretrained(tmp_path / "rounded")
    assert not (tmp_path / "rounded").exists()
    assert Settings(quantize="int8").quantize == "int8" and Settings().quantize is None
    with pytest.raises(pydantic.ValidationError, match="quantize"):
        Settings(quantize="fp8")


def test_int8_params_are_a_pytree_of_the_unrolled_model(models):
    """The int8 tree has exactly the leaves an ``int8=True`` model declares."""
    int8 = models[1]
    config = int8.config
    model = MusicGenModel(config, layer_layout="unrolled", int8=True)
    declared = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *init_inputs(config)))["params"]
    declared = nn.unbox(declared)
    ours = int8.engine.params
    assert jax.tree.structure(declared) == jax.tree.structure(ours)
    same = jax.tree.map(lambda d, o: (d.shape, d.dtype) == (o.shape, o.dtype), declared, ours)
    assert all(jax.tree.leaves(same))
