"""The decoder's two parameter layouts (scanned: stacked layers; unrolled: one array a layer, kernels
``[out, in]``) compute the same thing, convert into each other exactly, and generation, beams and
saving give the same results whichever one a model runs in."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax import MusicGen
from musicgen_jax.models import layer_layout
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.models.musicgen import MusicGenModel, init_inputs

# Same products in another order of memory: float32 rounding at most (both layouts are exactly
# equal in practice on this CPU; the bound leaves room for a backend that orders sums differently).
ATOL = 1e-5


def _params(config: MusicGenConfig, layout: str = layer_layout.SCANNED) -> dict:
    model = MusicGenModel(config, layer_layout=layout)
    return nn.unbox(jax.jit(lambda: model.init(jax.random.PRNGKey(0), *init_inputs(config)))()["params"])


def _equal_trees(a: dict, b: dict) -> bool:
    same = jax.tree.map(lambda x, y: x.shape == y.shape and bool(np.array_equal(x, y)), a, b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(jax.tree.leaves(same))


@pytest.mark.parametrize("preset", ["tiny", "tiny-melody"])
def test_layouts_convert_exactly_and_match_the_unrolled_model(preset):
    config = MusicGenConfig.preset(preset)
    scanned = _params(config)
    unrolled = layer_layout.to_unrolled(scanned)
    assert layer_layout.is_unrolled(unrolled) and not layer_layout.is_unrolled(scanned)
    # The unrolled tree is what an unrolled model declares, kernels 2-D [out, in].
    declared = jax.eval_shape(lambda: _params(config, layer_layout.UNROLLED))
    assert jax.tree.structure(declared) == jax.tree.structure(unrolled)
    assert all(jax.tree.leaves(jax.tree.map(lambda d, u: d.shape == u.shape, declared, unrolled)))
    layer = unrolled["decoder"]["layers_1"]
    stacked = scanned["decoder"]["layers"]
    np.testing.assert_array_equal(layer["fc1"]["kernel"], stacked["fc1"]["kernel"][1].T)
    dec = config.decoder
    np.testing.assert_array_equal(  # [heads, head_dim, hidden] as PyTorch's [hidden, heads * head_dim]
        layer["self_attention"]["out"]["kernel"],
        stacked["self_attention"]["out"]["kernel"][1].reshape(dec.num_heads * dec.head_dim, -1).T,
    )
    assert _equal_trees(layer_layout.to_scanned(unrolled, config.decoder), scanned)
    # Converting a tree already in the layout is the identity.
    assert (
        layer_layout.to_unrolled(unrolled) is unrolled
        and layer_layout.to_scanned(scanned, config.decoder) is scanned
    )


def test_consuming_conversion_releases_the_stacked_layers():
    config = MusicGenConfig.preset("tiny")
    scanned = jax.tree.map(np.asarray, _params(config))
    want = layer_layout.to_unrolled(jax.tree.map(np.copy, scanned))
    converted = []
    unrolled = layer_layout.to_unrolled(scanned, convert=lambda x: converted.append(1) or jnp.asarray(x))
    assert "layers" not in scanned["decoder"]  # taken out of the input as the layers were made
    assert len(converted) == config.decoder.num_layers * len(jax.tree.leaves(want["decoder"]["layers_0"]))
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(unrolled["decoder"]["layers_0"]))
    assert _equal_trees(jax.tree.map(np.asarray, unrolled), want)


@pytest.mark.parametrize("preset", ["tiny", "tiny-melody"])
def test_both_layouts_give_the_same_logits_and_cache(preset):
    """Full pass, cached steps (with an attention span shorter than the cache) and the cache itself."""
    config = MusicGenConfig.preset(preset)
    scanned = _params(config)
    unrolled = layer_layout.to_unrolled(scanned)
    rng = np.random.default_rng(4)
    ids = jnp.asarray(rng.integers(3, 100, size=(2, 7)), jnp.int32)
    mask = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3], jnp.int32)
    dec = config.decoder
    tokens = jnp.asarray(rng.integers(0, dec.vocab_size, size=(2, dec.num_codebooks, 6)), jnp.int32)

    def run(layout: str, params: dict):
        model = MusicGenModel(config, layer_layout=layout)
        variables = {"params": params}
        memory, memory_mask = model.apply(variables, ids, mask, method=MusicGenModel.encode)
        full = model.apply(variables, tokens, memory, memory_mask, method=MusicGenModel.decode)
        cache = model.apply(variables, memory, memory_mask, 16, method=MusicGenModel.init_cache)
        steps = []
        for t in range(tokens.shape[-1]):
            step, cache = model.apply(
                variables, tokens[:, :, t : t + 1], cache, 8, method=MusicGenModel.decode_step
            )
            steps.append(np.asarray(step))
        keys = np.concatenate(cache.self_key) if layout == layer_layout.UNROLLED else cache.self_key
        keys = np.asarray(keys)[:, :, :, : cache.max_length]  # the unrolled cache keeps a spare position
        return np.asarray(full), np.concatenate(steps, axis=2), np.asarray(keys), cache.max_length

    ours, theirs = run(layer_layout.UNROLLED, unrolled), run(layer_layout.SCANNED, scanned)
    assert ours[3] == theirs[3]
    for a, b in zip(ours[:3], theirs[:3]):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
    np.testing.assert_allclose(ours[1], ours[0], rtol=0, atol=1e-4)  # steps equal the full pass


def test_layout_choices_and_their_errors():
    big, small = layer_layout.UNROLL_MIN_BYTES, layer_layout.UNROLL_MIN_BYTES - 1
    assert layer_layout.resolve_layout("auto", "cpu", big) == layer_layout.UNROLLED
    assert layer_layout.resolve_layout("auto", "cpu", small) == layer_layout.SCANNED  # in cache: scan
    assert layer_layout.resolve_layout("auto", "gpu", big) == layer_layout.SCANNED
    assert layer_layout.resolve_layout("scanned", "cpu") == layer_layout.SCANNED
    with pytest.raises(ValueError, match="layer_layout must be one of scanned, unrolled, auto, got 'flat'"):
        layer_layout.resolve_layout("flat")
    config = MusicGenConfig.preset("tiny")
    with pytest.raises(ValueError, match="unrolled layer layout is for inference"):
        MusicGenModel(config, layer_layout="unrolled", remat_policy="full").init(
            jax.random.PRNGKey(0), *init_inputs(config)
        )


@pytest.fixture(scope="module")
def layouts(tiny_hf_dir):
    return {
        layout: MusicGen.from_pretrained(tiny_hf_dir, dtype="float32", layer_layout=layout)
        for layout in layer_layout.LAYOUTS
    }


def test_generation_sampled_greedy_and_beams_agree_across_layouts(layouts):
    scanned, unrolled = layouts[layer_layout.SCANNED], layouts[layer_layout.UNROLLED]
    assert layer_layout.is_unrolled(unrolled.engine.params)
    assert not layer_layout.is_unrolled(scanned.engine.params)
    for kwargs in (
        dict(duration=3.0, seed=7),
        dict(duration=3.0, greedy=True, guidance_scale=3.0),
        dict(duration=1.0, num_beams=2, seed=1),
    ):
        np.testing.assert_array_equal(
            unrolled.generate_tokens(["dark techno", "jazz"], **kwargs),
            scanned.generate_tokens(["dark techno", "jazz"], **kwargs),
            err_msg=str(kwargs),
        )


def test_an_unrolled_model_saves_the_checkpoint_layout(layouts, tmp_path):
    unrolled = layouts[layer_layout.UNROLLED]
    unrolled.save_pretrained(tmp_path / "saved")
    again = MusicGen.from_pretrained(tmp_path / "saved", dtype="float32", layer_layout="scanned")
    assert _equal_trees(
        jax.tree.map(np.asarray, again.engine.params),
        jax.tree.map(np.asarray, layer_layout.to_scanned(unrolled.engine.params, unrolled.config.decoder)),
    )
