"""Exporting the JAX codec (and a trained codec run) as a transformers ``EncodecModel`` directory:
transformers, the PyTorch bridge and our loader load it and give the original's codes and audio."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import traverse_util
from transformers import EncodecModel

from musicgen_jax.codec import EncodecBridge, JaxEncodec
from musicgen_jax.codec.flax_export import save_pretrained, to_torch_tensors
from musicgen_jax.conversion.tensors import CheckpointError
from musicgen_jax.data.synthetic import write_dataset
from musicgen_jax.training.cli import main as train_main
from tests.test_codec_jax import CONFIGS, build_codec, random_audio


def _perturbed(codec: JaxEncodec, seed: int) -> JaxEncodec:
    """The codec with every weight changed a little, as training would change it."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda x: np.asarray(x) * (1 + 0.05 * rng.standard_normal(np.shape(x)).astype(np.float32)),
        jax.device_get(codec.params),
    )
    return JaxEncodec(codec.config, params, codec.bandwidth)


@pytest.mark.parametrize("name", ["causal-mono-lstm2", "noncausal-stereo-lstm1", "group-norm"])
def test_export_loads_everywhere_with_the_same_numbers(tmp_path, name):
    build_codec(tmp_path / "source", **CONFIGS[name])
    codec = _perturbed(JaxEncodec.from_pretrained(tmp_path / "source"), seed=1)
    exported = codec.save_pretrained(tmp_path / "export")

    reloaded = JaxEncodec.from_pretrained(exported)
    for path, leaf in traverse_util.flatten_dict(jax.device_get(codec.params)).items():
        np.testing.assert_allclose(
            np.asarray(traverse_util.flatten_dict(jax.device_get(reloaded.params))[path]),
            leaf,
            rtol=1e-5,
            atol=1e-6,
        )

    model = EncodecModel.from_pretrained(str(exported)).eval()
    audio = random_audio(2, codec.audio_channels, codec.hop_length * 40, seed=3)
    with torch.no_grad():
        torch_codes = model.encode(torch.from_numpy(audio), bandwidth=codec.bandwidth).audio_codes[0].numpy()
        codes = np.array(codec.encode(audio))
        assert np.mean(torch_codes == codes) >= 0.999
        torch_audio = model.decode(torch.from_numpy(codes)[None], [None]).audio_values.numpy()
    np.testing.assert_allclose(np.asarray(codec.decode(codes)), torch_audio, atol=1e-5)
    if codec.audio_channels == 1:
        bridge = EncodecBridge.from_pretrained(exported)
        np.testing.assert_allclose(bridge.decode(codes), torch_audio, atol=1e-5)


def test_export_refuses_what_does_not_fit(tmp_path):
    build_codec(tmp_path / "source", **CONFIGS["causal-mono-lstm2"])
    codec = JaxEncodec.from_pretrained(tmp_path / "source")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        codec.save_pretrained(tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    params = jax.device_get(codec.params)
    params["decoder"]["layers_0"]["kernel"] = params["decoder"]["layers_0"]["kernel"][:, :3]
    with pytest.raises(CheckpointError, match="decoder/layers_0/kernel has shape"):
        save_pretrained(codec.config, params, tmp_path / "bad")
    del params["decoder"]["layers_0"]
    with pytest.raises(CheckpointError, match="missing decoder/layers_0"):
        to_torch_tensors(codec.config, params)
    assert not (tmp_path / "bad").exists()


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
    # Bad input: a clear message and exit code 2.
    assert train_main(["codec", "export", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "not a codec training run" in capsys.readouterr().err
    assert train_main(["codec", "--config", "tiny", "codec.num_filter=3", f"output_dir={run}"]) == 2
