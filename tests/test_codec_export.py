"""The JAX codec exported as a transformers ``EncodecModel`` directory, loaded back three ways.

Random transformers codecs (built by tests/test_codec_jax.py's ``build_codec``) are loaded into
:class:`JaxEncodec`, saved with ``save_pretrained`` and reloaded by transformers, by the PyTorch
bridge and by :class:`JaxEncodec`; a perturbed copy (as a trainer changes the weights) shows the
export writes the parameters it is given, not the files it came from.

Tolerances, float32 on CPU (measured maxima in brackets):
* reloaded JAX parameters against the saved ones: 1e-6 absolute [0: the refold is exact];
* transformers' effective weights (weight norm refolded by torch, its norm in float32) against the
  original model's: 1e-6 relative to each tensor's largest entry [3.0e-7];
* codes of the exported model against the original's: equal (the effective weights agree to
  float32 rounding); perturbed codecs against JAX: tests/test_codec_jax.py's near-tie rule [all equal];
* decoded audio: 1e-5 absolute, as tests/test_codec_jax.py [1.2e-7; perturbed time group norm 1.7e-6].
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import torch
from flax import traverse_util
from safetensors.numpy import load_file
from test_codec_jax import CONFIGS, build_codec, check_codes, random_audio, torch_decode
from transformers import EncodecConfig, EncodecModel

from musicgen_jax.audio import load_audio
from musicgen_jax.codec import EncodecBridge, JaxEncodec, flax_export, load_codec
from musicgen_jax.codec.flax_export import save_pretrained, to_torch_tensors
from musicgen_jax.data.synthetic import generate_example, write_dataset
from musicgen_jax.eval.metrics.noise import si_snr_db
from musicgen_jax.eval.metrics.reference import log_mel_distance_db
from musicgen_jax.training.cli import main as train_main

PARAMS_ATOL = 1e-6
WEIGHT_RTOL = 1e-6
DECODE_ATOL = 1e-5
EXPORTED = ["causal-mono-lstm2", "noncausal-stereo-lstm1", "group-norm"]


@pytest.fixture(scope="module")
def codecs(tmp_path_factory):
    """name -> (transformers model, its saved directory, the JaxEncodec loaded from it), built once."""
    cache = {}

    def get(name: str):
        if name not in cache:
            directory = tmp_path_factory.mktemp(name)
            model = build_codec(directory, seed=len(cache), **CONFIGS[name])
            cache[name] = model, directory, JaxEncodec.from_pretrained(directory)
        return cache[name]

    return get


def flat_numpy(params: dict) -> dict:
    return {path: np.asarray(leaf) for path, leaf in traverse_util.flatten_dict(params).items()}


def max_param_error(ours: dict, theirs: dict) -> float:
    ours, theirs = flat_numpy(ours), flat_numpy(theirs)
    assert ours.keys() == theirs.keys()
    return max(float(np.abs(ours[path] - theirs[path]).max()) for path in ours)


def effective_weights(model: EncodecModel) -> dict[str, np.ndarray]:
    """Every weight the model computes with (weight norm folded, as torch's parametrization does)."""
    weights = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            for attribute in ("weight", "bias", "embed"):
                value = getattr(module, attribute, None)
                if isinstance(value, torch.Tensor):
                    weights[f"{name}.{attribute}"] = value.numpy().copy()
        for name, value in model.named_parameters():
            if "lstm" in name:
                weights[name] = value.numpy().copy()
    return weights


def perturbed(codec: JaxEncodec, seed: int = 0) -> JaxEncodec:
    """The codec with noise added to every leaf, as training would move it."""
    rng = np.random.default_rng(seed)
    noisy = {
        path: leaf + 0.1 * (leaf.std() + 1e-3) * rng.standard_normal(leaf.shape).astype(np.float32)
        for path, leaf in flat_numpy(codec.params).items()
    }
    return JaxEncodec(codec.config, traverse_util.unflatten_dict(noisy), bandwidth=codec.bandwidth)


# ---------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", EXPORTED)
def test_export_loads_everywhere_as_the_original(codecs, name, tmp_path):
    model, _, codec = codecs(name)
    export = codec.save_pretrained(tmp_path / "export")
    assert sorted(os.listdir(export)) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging left behind

    # Every tensor of transformers' state dict, named and shaped as transformers names them.
    tensors = load_file(str(export / "model.safetensors"))
    reference = model.state_dict()
    assert tensors.keys() == reference.keys()
    for key, array in tensors.items():
        assert array.shape == tuple(reference[key].shape), key
        assert array.dtype == np.float32, key
    if model.config.norm_type == "weight_norm":
        assert any(key.endswith("parametrizations.weight.original0") for key in tensors)
    else:  # time group norm: plain weights, no weight norm
        assert not any("parametrizations" in key for key in tensors)
    written = json.loads((export / "config.json").read_text())
    read, original = EncodecConfig.from_pretrained(export).to_dict(), model.config.to_dict()
    assert {key: read[key] for key in written} == {key: original.get(key, read[key]) for key in written}

    # (b) JAX: the same config and parameters.
    reloaded = JaxEncodec.from_pretrained(export)
    assert reloaded.config == codec.config
    error = max_param_error(reloaded.params, codec.params)
    print(f"{name}: reloaded JAX params max error {error:.1e}")
    assert error <= PARAMS_ATOL

    # (a) transformers: the same effective weights, codes and decoded audio as the original model.
    theirs = EncodecModel.from_pretrained(export).eval()
    expected = effective_weights(model)
    worst = 0.0
    for key, value in effective_weights(theirs).items():  # torch refolds with a float32 norm
        relative = np.abs(value - expected[key]).max() / max(np.abs(expected[key]).max(), 1e-30)
        assert relative <= WEIGHT_RTOL, key
        worst = max(worst, float(relative))
    print(f"  transformers' effective weights: max relative error {worst:.1e}")
    channels, hop = model.config.audio_channels, model.config.hop_length
    audio = torch.from_numpy(random_audio(2, channels, hop * 80 + 5, seed=3))
    for bandwidth in model.config.target_bandwidths:
        with torch.no_grad():
            original = model.encode(audio, bandwidth=bandwidth).audio_codes
            exported = theirs.encode(audio, bandwidth=bandwidth).audio_codes
            original_audio = model.decode(original, [None]).audio_values.numpy()
            exported_audio = theirs.decode(original, [None]).audio_values.numpy()
        assert torch.equal(original, exported), bandwidth
        error = np.abs(exported_audio - original_audio).max()
        print(f"  {bandwidth} kbps: codes equal, decode max error {error:.1e}")
        assert error <= DECODE_ATOL

    # (c) The PyTorch bridge (mono codecs only: it runs stereo MusicGen as a mono codec per channel).
    bandwidth = model.config.target_bandwidths[-1]
    if channels == 1:
        bridge = EncodecBridge.from_pretrained(export, device="cpu", bandwidth=bandwidth)
        codes = bridge.encode(audio.numpy(), model.config.sampling_rate)
        assert np.array_equal(codes, original[0].numpy())
        assert np.abs(bridge.decode(codes) - torch_decode(model, codes)).max() <= DECODE_ATOL
    else:
        with pytest.raises(ValueError, match="only mono codecs"):
            EncodecBridge.from_pretrained(export, device="cpu")


@pytest.mark.parametrize("name", ["causal-mono-lstm2", "group-norm"])
def test_perturbed_params_round_trip(codecs, name, tmp_path):
    """A trainer's changed weights: the export holds them, not the source files' weights."""
    _, _, original = codecs(name)
    codec = perturbed(original, seed=1)
    assert max_param_error(codec.params, original.params) > 1e-3
    export = save_pretrained(codec.config, codec.params, tmp_path / "trained")

    reloaded = JaxEncodec.from_pretrained(export)
    assert max_param_error(reloaded.params, codec.params) <= PARAMS_ATOL

    theirs = EncodecModel.from_pretrained(export).eval()
    bandwidth = theirs.config.target_bandwidths[-1]
    codec = JaxEncodec(codec.config, codec.params, bandwidth=bandwidth)
    audio = random_audio(2, 1, theirs.config.hop_length * 80 + 5, seed=4)
    with torch.no_grad():
        encoded = theirs.encode(torch.from_numpy(audio), bandwidth=bandwidth).audio_codes
    their_codes = encoded[0].numpy().astype(np.int32)
    share = check_codes(theirs, audio, np.asarray(codec.encode(audio)), their_codes, bandwidth)
    error = np.abs(np.asarray(codec.decode(their_codes)) - torch_decode(theirs, their_codes)).max()
    print(f"{name} perturbed: {share:.2%} codes equal, decode max error {error:.1e}")
    assert error <= DECODE_ATOL


def test_codebook_statistics(codecs, tmp_path):
    _, _, codec = codecs("causal-mono-lstm2")
    embed = np.asarray(codec.params["quantizer"]["codebooks"])  # [Q, size, dim]
    count, size, _ = embed.shape

    tensors = to_torch_tensors(codec.config, codec.params)  # defaults: the EMA state of these codewords
    for k in range(count):
        prefix = f"quantizer.layers.{k}.codebook."
        assert np.array_equal(tensors[prefix + "inited"], np.ones(1, np.float32))
        assert np.array_equal(tensors[prefix + "cluster_size"], np.ones(size, np.float32))
        assert np.array_equal(tensors[prefix + "embed_avg"], embed[k])
        assert np.array_equal(tensors[prefix + "embed"], embed[k])

    rng = np.random.default_rng(0)
    statistics = {
        "cluster_size": rng.uniform(0.5, 9.0, (count, size)).astype(np.float32),
        "embed_avg": rng.standard_normal(embed.shape).astype(np.float32),
    }
    export = codec.save_pretrained(tmp_path / "ema", codebook_statistics=statistics)
    theirs = EncodecModel.from_pretrained(export)
    for k, layer in enumerate(theirs.quantizer.layers):
        assert float(layer.codebook.inited) == 1.0
        assert np.array_equal(layer.codebook.cluster_size.numpy(), statistics["cluster_size"][k])
        assert np.array_equal(layer.codebook.embed_avg.numpy(), statistics["embed_avg"][k])
        assert np.array_equal(layer.codebook.embed.numpy(), embed[k])
    assert np.array_equal(
        np.asarray(JaxEncodec.from_pretrained(export).params["quantizer"]["codebooks"]), embed
    )

    with pytest.raises(ValueError, match=r"exactly \['cluster_size', 'embed_avg'\]"):
        to_torch_tensors(codec.config, codec.params, {"cluster_size": statistics["cluster_size"]})
    with pytest.raises(ValueError, match=r"codebook_statistics\['embed_avg'\] has shape"):
        to_torch_tensors(codec.config, codec.params, {**statistics, "embed_avg": embed[:, :-1]})


def test_zero_kernel_slice_stays_zero(codecs, tmp_path):
    """An all-zero output channel has no weight-norm direction: it must come back zero, not NaN."""
    _, _, codec = codecs("causal-mono-lstm2")
    flat = flat_numpy(codec.params)
    path = ("decoder", "layers_0", "kernel")  # [k, in, out]
    flat[path] = flat[path].copy()
    flat[path][..., 3] = 0.0
    params = traverse_util.unflatten_dict(flat)
    export = save_pretrained(codec.config, params, tmp_path / "zero")
    reloaded = flat_numpy(JaxEncodec.from_pretrained(export).params)
    assert np.array_equal(reloaded[path][..., 3], np.zeros_like(flat[path][..., 3]))
    theirs = EncodecModel.from_pretrained(export)
    weight = theirs.decoder.layers[0].conv.weight.detach().numpy()  # [out, in, k]
    assert np.isfinite(weight).all() and not weight[3].any()


# ---------------------------------------------------------------------------------- errors


def test_directory_rules(codecs, tmp_path):
    _, _, codec = codecs("causal-mono-lstm2")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert JaxEncodec.from_pretrained(codec.save_pretrained(empty)).config == codec.config

    export = codec.save_pretrained(tmp_path / "nested" / "export")  # parents are made
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        codec.save_pretrained(export)

    changed = perturbed(codec, seed=2)
    changed.save_pretrained(export, overwrite=True)  # an EnCodec export is replaced whole
    assert max_param_error(JaxEncodec.from_pretrained(export).params, changed.params) <= PARAMS_ATOL
    assert sorted(p.name for p in export.parent.iterdir()) == ["export"]

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not empty|does not hold an EnCodec model"):
            codec.save_pretrained(other, overwrite=overwrite)
    assert sorted(os.listdir(other)) == ["notes.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="not a directory"):
        codec.save_pretrained(tmp_path / "file")


def test_a_failed_write_leaves_no_half_directory(codecs, tmp_path, monkeypatch):
    _, _, codec = codecs("causal-mono-lstm2")
    export = codec.save_pretrained(tmp_path / "export")
    before = {p.name: p.read_bytes() for p in export.iterdir()}

    def fail_after_writing(*args, **kwargs):
        real_save(*args, **kwargs)
        raise OSError("disk full")

    real_save = flax_export.save_safetensors
    monkeypatch.setattr(flax_export, "save_safetensors", fail_after_writing)
    with pytest.raises(OSError, match="disk full"):
        codec.save_pretrained(tmp_path / "new")
    with pytest.raises(OSError, match="disk full"):
        perturbed(codec).save_pretrained(export, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no "new", no staging
    assert {p.name: p.read_bytes() for p in export.iterdir()} == before  # the old export intact


def test_params_that_do_not_fit_are_refused(codecs, tmp_path):
    _, _, codec = codecs("group-norm")
    flat = flat_numpy(codec.params)

    def tree(changes: dict) -> dict:
        return traverse_util.unflatten_dict({**flat, **changes})

    kernel = ("encoder", "layers_0", "kernel")
    cases = [
        (tree({kernel: flat[kernel][:, :, :-1]}), r"encoder/layers_0/kernel has shape \(7, 1, 3\)"),
        (
            traverse_util.unflatten_dict({p: v for p, v in flat.items() if p != kernel}),
            "missing encoder/layers_0/kernel",
        ),
        (tree({("encoder", "layers_0", "scale"): flat[kernel]}), "unexpected encoder/layers_0/scale"),
        (tree({kernel: np.full_like(flat[kernel], np.nan)}), "encoder/layers_0/kernel holds NaN"),
        (tree({kernel: [1.0, 2.0]}), "encoder/layers_0/kernel is a list"),
        ([1, 2], "parameter tree"),
    ]
    for params, message in cases:
        with pytest.raises(ValueError, match=message):
            save_pretrained(codec.config, params, tmp_path / "bad")
        assert not (tmp_path / "bad").exists()
    # Another config's tree (a stereo codec's first kernel takes two channels).
    _, _, stereo = codecs("noncausal-stereo-lstm1")
    with pytest.raises(ValueError, match="does not fit the codec config|has shape"):
        to_torch_tensors(codec.config, stereo.params)
    # JAX arrays of any float dtype are accepted (bfloat16 is widened to float32).
    halves = jax.tree.map(lambda leaf: jax.numpy.asarray(leaf, jax.numpy.bfloat16), codec.params)
    tensors = to_torch_tensors(codec.config, halves)
    assert all(array.dtype == np.float32 for array in tensors.values())


def test_a_trained_codec_run_exports_and_loads(tmp_path, capsys):
    write_dataset(tmp_path / "data", 4, duration=1.0, sample_rate=8000)
    run = tmp_path / "run"
    args = ["codec", "--config", "tiny", f"data.audio_dir={tmp_path / 'data' / 'audio'}", f"output_dir={run}"]
    assert train_main([*args, "training.steps=2", "eval.every_steps=0", "checkpoint.every_steps=2"]) == 0
    assert "step 2" in capsys.readouterr().out
    assert train_main(["codec", "export", str(run), str(tmp_path / "codec")]) == 0
    codec = JaxEncodec.from_pretrained(tmp_path / "codec")
    assert (codec.sample_rate, codec.config.codebook_size, codec.num_codebooks) == (8000, 256, 2)
    model = EncodecModel.from_pretrained(str(tmp_path / "codec")).eval()
    statistics = model.quantizer.layers[0].codebook.cluster_size.numpy()
    assert not np.allclose(statistics, 1.0)  # the run's EMA statistics, not placeholders
    audio = random_audio(1, 1, 8000, seed=5)
    codes = np.array(codec.encode(audio))
    with torch.no_grad():
        reference = model.decode(torch.from_numpy(codes)[None], [None]).audio_values.numpy()
    np.testing.assert_allclose(np.asarray(codec.decode(codes)), reference, atol=1e-5)
    # The held-out reconstruction report: one per bandwidth, its figures those of the exported codec.
    assert train_main(["codec", "evaluate", str(run), "--output", str(tmp_path / "report")]) == 0
    reports = json.loads((tmp_path / "report.json").read_text())
    assert [r["codec"]["num_codebooks"] for r in reports] == [2, 4]
    bandwidth = reports[1]["codec"]["bandwidth_kbps"]
    assert f"| {bandwidth:g} | 4 | 1 |" in (tmp_path / "report.md").read_text()
    (row,) = reports[1]["clips"]  # 4 clips, 5% held out: the last one
    assert row["name"].endswith("synth_000003.wav") and row["stated_bpm"] is not None
    clip, rate = load_audio(row["name"])
    jax_codec = load_codec(tmp_path / "codec", backend="jax", bandwidth=bandwidth)
    decoded = jax_codec.decode(jax_codec.encode(clip[None], rate))[0, :, : clip.shape[-1]]
    assert row["mel_distance_db"] == pytest.approx(log_mel_distance_db(decoded, rate, clip, rate), rel=1e-4)
    assert row["si_snr_db"] == pytest.approx(si_snr_db(decoded, clip), abs=1e-3)
    # Bad input: a clear message and exit code 2.
    assert train_main(["codec", "evaluate", str(tmp_path / "nowhere"), "--output", str(tmp_path / "r")]) == 2
    assert "not a codec training run" in capsys.readouterr().err
    assert train_main(["codec", "export", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "not a codec training run" in capsys.readouterr().err
    assert train_main(["codec", "--config", "tiny", "codec.num_filter=3", f"output_dir={run}"]) == 2


def test_the_shipped_demo_codec_is_trained_and_loads_everywhere():
    # musicgen_jax/assets/codec-demo (docs/codec-demo.md: held-out means 3.5 dB SI-SNR and a mel
    # distance of 10.9 dB): pieces it never saw come back close, the same in transformers as in JAX.
    from musicgen_jax import hub

    directory = hub.DEMO_CODEC
    codec = load_codec(directory, backend="jax", codebooks=4)
    assert (codec.sample_rate, codec.frame_rate, codec.num_codebooks) == (16000, 25.0, 4)
    si_snr, mel = [], []
    for index in range(3):
        audio = generate_example(4321 + index, seed=11, duration=4.0, sample_rate=16000).audio
        codes = codec.encode(audio[None], 16000)
        decoded = codec.decode(codes)[0, :, : audio.shape[-1]]
        si_snr.append(si_snr_db(decoded, audio))
        mel.append(log_mel_distance_db(decoded, 16000, audio, 16000))
    assert np.mean(si_snr) > 1.5 and np.median(mel) < 13.0, (si_snr, mel)
    model = EncodecModel.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        reference = model.decode(torch.from_numpy(np.asarray(codes))[None], [None]).audio_values.numpy()
    np.testing.assert_allclose(codec.decode(codes), reference, atol=1e-5)
