"""Checkpoints both ways: transformers -> musicgen-jax -> transformers, T5 formats (audiocraft:
test_conversion_audiocraft.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flax import traverse_util
from transformers import AutoTokenizer, MusicgenForConditionalGeneration

from musicgen_jax import MusicGen
from musicgen_jax.conversion import (
    CheckpointError,
    convert_from_transformers,
    export_to_transformers,
    load_checkpoint,
    load_t5_encoder,
    load_transformers_params,
    save_checkpoint,
)
from musicgen_jax.conversion.key_maps import musicgen_rules
from musicgen_jax.conversion.params import export_params
from musicgen_jax.models.config import MusicGenConfig

ROOT = Path(__file__).resolve().parents[1]


def _flat(params):
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def test_round_trip_is_bit_exact_and_transformers_runs_the_export(tiny_hf_dirs, tmp_path):
    source = tiny_hf_dirs("gated")
    jax_dir = convert_from_transformers(source, tmp_path / "jax")
    hf_dir = export_to_transformers(jax_dir, tmp_path / "hf")
    again = convert_from_transformers(hf_dir, tmp_path / "jax-again")
    _, first = load_checkpoint(jax_dir)
    _, second = load_checkpoint(again)
    a, b = _flat(first), _flat(second)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name

    # The exported directory loads in transformers with every tensor equal to the original's.
    original = MusicgenForConditionalGeneration.from_pretrained(source).eval()
    exported = MusicgenForConditionalGeneration.from_pretrained(hf_dir).eval()
    original_state, exported_state = original.state_dict(), exported.state_dict()
    assert original_state.keys() == exported_state.keys()
    for name, tensor in original_state.items():
        assert torch.equal(tensor, exported_state[name]), name

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    text = tokenizer(["calm piano", "loud rock guitar with drums"], padding=True, return_tensors="pt")
    decoder_ids = torch.tensor(np.random.default_rng(0).integers(0, 2049, size=(8, 5)))
    with torch.no_grad():
        want = original(**text, decoder_input_ids=decoder_ids).logits
        got = exported(**text, decoder_input_ids=decoder_ids).logits
    assert torch.equal(want, got)
    assert json.loads((hf_dir / "generation_config.json").read_text())["guidance_scale"] == 3.0


def test_from_pretrained_reads_both_formats_alike(tiny_hf_dir, tiny_jax_dir):
    on_the_fly = MusicGen.from_pretrained(tiny_hf_dir)
    converted = MusicGen.from_pretrained(tiny_jax_dir)
    tokens = np.random.default_rng(5).integers(0, 2049, size=(1, 4, 6))
    a = on_the_fly.logits(["warm jazz"], tokens)
    b = converted.logits(["warm jazz"], tokens)
    assert np.array_equal(a, b)


def test_bfloat16_load(tiny_hf_dir, tmp_path):
    model = MusicGen.from_pretrained(tiny_hf_dir, dtype="bfloat16")
    leaf = model.engine.params["decoder"]["lm_heads"]
    assert leaf.dtype == "bfloat16"
    reference = MusicGen.from_pretrained(tiny_hf_dir)
    tokens = np.random.default_rng(0).integers(0, 2049, size=(1, 4, 6))
    low, high = model.logits(["jazz"], tokens), reference.logits(["jazz"], tokens)
    # bf16 keeps ~3 significant digits: agreement to a few percent of the logit scale.
    assert np.abs(low - high).max() / np.abs(high).max() < 0.05
    saved = model.save_pretrained(tmp_path / "bf16")
    _, params = load_checkpoint(saved)
    assert params["decoder"]["lm_heads"].dtype.name == "bfloat16"


@pytest.mark.parametrize("weights", ["safetensors", "bin", "msgpack"])
def test_t5_loads_from_every_weight_format(tiny_hf_dirs, tmp_path, weights):
    from flax import serialization
    from transformers import T5EncoderModel

    hf = MusicgenForConditionalGeneration.from_pretrained(tiny_hf_dirs("gated"))
    t5_dir = tmp_path / "t5"
    hf.text_encoder.save_pretrained(t5_dir)
    t5 = T5EncoderModel.from_pretrained(t5_dir)
    state = {k: v.numpy() for k, v in t5.state_dict().items()}
    if weights == "bin":
        (t5_dir / "model.safetensors").unlink()
        torch.save(t5.state_dict(), t5_dir / "pytorch_model.bin")
    elif weights == "msgpack":
        (t5_dir / "model.safetensors").unlink()
        tree: dict = {}
        for name, value in state.items():  # transformers' Flax T5 layout: kernels transposed
            parts = name.split(".")
            leaf = parts.pop()
            if parts[-1] in ("shared", "embed_tokens", "relative_attention_bias"):
                leaf = "embedding"
            elif leaf == "weight" and value.ndim == 2:
                leaf, value = "kernel", value.T
            node = tree
            for part in parts:
                node = node.setdefault(part, {})
            node[leaf] = value
        (t5_dir / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    config, params = load_t5_encoder(t5_dir)
    _, full = load_transformers_params(tiny_hf_dirs("gated"))
    assert config.is_gated
    for name, value in _flat(params).items():
        assert np.array_equal(value, _flat(full)[name]), name


def test_missing_and_misshapen_tensors_are_named(tiny_hf_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_hf_dir / name).read_bytes())
    tensors = load_file(str(tiny_hf_dir / "model.safetensors"))
    del tensors["decoder.lm_heads.2.weight"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match="decoder.lm_heads.2.weight"):
        load_transformers_params(broken)

    tensors = load_file(str(tiny_hf_dir / "model.safetensors"))
    tensors["decoder.model.decoder.layers.1.fc1.weight"] = tensors[
        "decoder.model.decoder.layers.1.fc1.weight"
    ][:, :10]
    tensors["some.unknown.tensor"] = np.zeros(3, np.float32)
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match="layers.1.fc1.weight"):
        load_transformers_params(broken)


def test_export_tensors_cover_every_rule(tiny_hf_dir):
    config, params = load_transformers_params(tiny_hf_dir)
    exported = export_params(params, musicgen_rules(config))
    hf = MusicgenForConditionalGeneration.from_pretrained(tiny_hf_dir)
    expected = {k for k in hf.state_dict() if not k.startswith("audio_encoder.")}
    expected.discard("text_encoder.encoder.embed_tokens.weight")  # tied to shared.weight
    assert set(exported) == expected


def test_sharded_checkpoint_round_trip(tiny_jax_dir, tmp_path):
    config, params = load_checkpoint(tiny_jax_dir)
    from musicgen_jax.conversion import checkpoint as ckpt_module
    from musicgen_jax.conversion import tensors as tensor_module

    original = tensor_module.save_safetensors

    def small_shards(tensors, directory, stem="model", max_shard_bytes=0):
        return original(tensors, directory, stem, max_shard_bytes=200_000)

    ckpt_module.save_safetensors = small_shards
    try:
        out = save_checkpoint(tmp_path / "sharded", config, params)
    finally:
        ckpt_module.save_safetensors = original
    assert len(list(out.glob("params-*.safetensors"))) > 1
    _, again = load_checkpoint(out)
    for name, value in _flat(params).items():
        assert np.array_equal(_flat(again)[name], value)


def test_convert_scripts_end_to_end(tiny_hf_dir, tmp_path):
    jax_dir, hf_dir = tmp_path / "jax", tmp_path / "hf"
    run = lambda *args: subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)
    done = run(
        "convert/hf_to_jax.py", "--model", str(tiny_hf_dir), "--output", str(jax_dir), "--dtype", "bfloat16"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((jax_dir / "musicgen_jax.json").read_text())["dtype"] == "bfloat16"
    done = run("convert/jax_to_hf.py", "--checkpoint", str(jax_dir), "--output", str(hf_dir))
    assert done.returncode == 0, done.stderr
    assert MusicgenForConditionalGeneration.from_pretrained(hf_dir).decoder.num_codebooks == 4
    missing = run(
        "convert/hf_to_jax.py", "--model", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x")
    )
    assert missing.returncode == 1
    assert "no model directory" in missing.stderr and "Traceback" not in missing.stderr


def test_full_size_configs_have_published_parameter_counts():
    from musicgen_jax.conversion.checkpoint import expected_shapes

    for name, width, layers in (("small", 1024, 24), ("medium", 1536, 48), ("large", 2048, 48)):
        config = MusicGenConfig.preset(name)
        shapes = expected_shapes(config)
        decoder = sum(int(np.prod(s)) for p, s in shapes.items() if p[0] == "decoder")
        per_layer = 8 * width * width + 2 * width * 4 * width + 6 * width
        expected = layers * per_layer + 4 * 2049 * width + 4 * width * 2048 + 2 * width
        assert decoder == expected, name
        text = sum(int(np.prod(s)) for p, s in shapes.items() if p[0] == "text_encoder")
        assert text == 109_628_544  # t5-base's encoder with its shared embedding


def test_codec_shape_converts_to_the_codec_the_tokens_need():
    """``codec_to_transformers`` gives an EnCodec whose codebooks, codebook size and frame rate are
    the decoder's; by default ``to_transformers`` uses it; ``CodecShape``'s defaults are Meta's
    32 kHz codec (facebook/encodec_32khz's published config)."""
    import dataclasses

    from transformers import EncodecConfig, EncodecModel

    from musicgen_jax.models.config import AudioConfig, CodecShape

    for name in ("tiny", "tiny-stereo"):
        config = MusicGenConfig.preset(name)
        codec = config.codec_to_transformers()
        assert codec.audio_channels == 1  # stereo runs the mono codec once per channel
        assert codec.num_quantizers == config.decoder.codebooks_per_channel
        assert codec.codebook_size == config.decoder.vocab_size
        assert (codec.sampling_rate, codec.frame_rate) == (config.audio.sample_rate, config.audio.frame_rate)
        assert config.to_transformers().audio_encoder.to_dict() == codec.to_dict()
    torch.manual_seed(0)
    model = EncodecModel(MusicGenConfig.preset("tiny").codec_to_transformers()).eval()
    with torch.no_grad():
        codes = model.encode(torch.randn(1, 1, 32000)).audio_codes
    assert tuple(codes.shape) == (1, 1, 4, 50)  # one second: 50 frames of 4 codebooks

    small = MusicGenConfig.preset("small")
    meta = dataclasses.replace(small, audio=dataclasses.replace(small.audio, codec_shape=CodecShape()))
    published = EncodecConfig(
        sampling_rate=32000,
        audio_channels=1,
        num_filters=64,
        hidden_size=128,
        codebook_dim=128,
        codebook_size=2048,
        num_residual_layers=1,
        num_lstm_layers=2,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        chunk_length_s=None,
        overlap=None,
        normalize=False,
        use_causal_conv=False,
        use_conv_shortcut=False,
    )
    assert meta.codec_to_transformers().to_dict() == published.to_dict()

    with pytest.raises(ValueError, match="codec_shape is not set"):
        small.codec_to_transformers()
    with pytest.raises(ValueError, match="frame_rate is 25"):
        AudioConfig(frame_rate=25.0, codec_shape=CodecShape())
