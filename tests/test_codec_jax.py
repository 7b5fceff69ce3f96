"""The JAX EnCodec against transformers' ``EncodecModel``: random codecs the tests build themselves
(causal and not, one and two LSTM layers, mono and stereo, weight norm and time group norm, chunked
and normalised, and the real 32 kHz shape), every way of loading one, and streamed decoding.

Tolerances, float32 on CPU (measured maxima in brackets):
* codes: at least 99.9% of positions equal, and each frame's first difference a near-tie (two
  codewords whose distances to the residual differ by less than float32 resolves in transformers'
  ``|x|^2 - 2 x.e + |e|^2``) [all equal in every configuration here];
* decode of the same codes: 1e-5 absolute [weight norm 1.2e-7 at peaks near 0.4; real 32 kHz shape
  7.5e-8; time group norm 1.5e-6 at peaks near 6; chunked 9e-9];
* encode then decode against transformers' encode then decode: 1e-4 absolute [as decode: the codes
  are equal];
* stream against one full decode: one 16-bit step, 1/32768 [6e-8; 9e-8 with padded windows].
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import EncodecConfig, EncodecModel

from musicgen_jax.codec import CodecConfig, EncodedChunks, JaxEncodec, JaxStreamingDecoder, jax_streaming
from musicgen_jax.codec.flax_seanet import Lstm as FlaxLstm
from musicgen_jax.codec.jax_streaming import window_bucket
from musicgen_jax.codec.layout import Lstm as LstmSpec
from musicgen_jax.conversion import CheckpointError

DECODE_ATOL = 1e-5
ROUND_TRIP_ATOL = 1e-4
STREAM_ATOL = 1 / 32768  # one 16-bit LSB
TIE_RTOL = 1e-6  # distance gaps this small (relative to |x|^2 + |e|^2) are float32 ties

# name -> EncodecConfig keywords (small, so a test takes seconds).
CONFIGS = {
    "causal-mono-lstm2": dict(
        sampling_rate=16000,
        upsampling_ratios=[4, 4, 2],
        use_causal_conv=True,
        num_lstm_layers=2,
        codebook_size=256,
        target_bandwidths=[8.0, 16.0],
    ),
    "noncausal-stereo-lstm1": dict(
        sampling_rate=15000,
        audio_channels=2,
        upsampling_ratios=[5, 3, 2],
        use_causal_conv=False,
        num_lstm_layers=1,
        codebook_size=256,
        target_bandwidths=[4.0, 12.0],
    ),
    # Streaming tests only: the other two pairings of (causal or not) x (one or two LSTM layers).
    "causal-mono-lstm1": dict(
        sampling_rate=8000,
        upsampling_ratios=[2, 4],
        use_causal_conv=True,
        num_lstm_layers=1,
        codebook_size=64,
        target_bandwidths=[12.0],
    ),
    "noncausal-mono-lstm2": dict(
        sampling_rate=8000,
        upsampling_ratios=[4, 2],
        use_causal_conv=False,
        num_lstm_layers=2,
        codebook_size=64,
        target_bandwidths=[12.0],
    ),
    "group-norm": dict(
        sampling_rate=16000,
        upsampling_ratios=[2, 4],
        norm_type="time_group_norm",
        use_causal_conv=True,
        trim_right_ratio=0.5,
        pad_mode="constant",
        num_residual_layers=2,
        use_conv_shortcut=False,
        compress=4,
        codebook_size=128,
        target_bandwidths=[14.0, 28.0],
    ),
    "chunked-normalized-stereo": dict(  # as the 48 kHz codec: chunks with overlap, per-chunk scales
        sampling_rate=16000,
        audio_channels=2,
        upsampling_ratios=[4, 4, 2],
        use_causal_conv=False,
        num_lstm_layers=2,
        normalize=True,
        chunk_length_s=0.04,
        overlap=0.1,
        codebook_size=256,
        target_bandwidths=[8.0, 16.0],
    ),
}
# facebook/encodec_32khz's config (MusicGen's codec), random weights.
REAL_32KHZ = dict(
    sampling_rate=32000,
    upsampling_ratios=[8, 5, 4, 4],
    hidden_size=128,
    num_filters=64,
    codebook_size=2048,
    num_lstm_layers=2,
    target_bandwidths=[2.2],
    use_causal_conv=False,
    use_conv_shortcut=False,
    normalize=False,
)


def random_audio(batch: int, channels: int, samples: int, seed: int = 0) -> np.ndarray:
    """Smoothed noise under a slow envelope: varied enough to use many codes."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((batch * channels, samples + 7)).astype(np.float32)
    smooth = np.stack([np.convolve(row, np.ones(8) / 8, mode="valid") for row in noise])
    envelope = 0.5 + 0.5 * np.sin(np.linspace(0, 6 * np.pi, samples, dtype=np.float32))
    return (0.3 * smooth * envelope).reshape(batch, channels, samples).astype(np.float32)


def build_codec(directory: Path, seed: int = 0, fit_frames: int = 400, **keywords) -> EncodecModel:
    """A random ``EncodecModel`` saved to ``directory``, made non-degenerate.

    A randomly initialised encoder's outputs sit in a tight cloud far from zero, and transformers
    initialises codebooks to zero and group norms to the identity: every code would decode alike,
    and nearest-codeword choices would hinge on float32 cancellation in ``|x|^2 - 2 x.e + |e|^2``
    (ties everywhere). So the last encoder layer is rescaled to give unit-variance, zero-mean
    outputs on random audio, codewords are drawn around the (residual) outputs, as EnCodec's k-means
    initialisation does, and the group norms' affine weights are perturbed."""
    defaults = dict(num_filters=4, hidden_size=16)
    config = EncodecConfig(**{**defaults, **keywords})
    torch.manual_seed(seed)
    model = EncodecModel(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".norm." in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
        audio = torch.from_numpy(
            random_audio(1, config.audio_channels, config.hop_length * fit_frames, seed + 1)
        )
        outputs = model.encoder(audio)[0]  # [dim, frames]
        mean, std = outputs.mean(dim=1), outputs.std(dim=1)
        last = model.encoder.layers[-1]
        if config.norm_type == "time_group_norm":
            scale, bias = last.norm.weight, last.norm.bias
        else:
            scale, bias = last.conv.parametrizations.weight.original0[:, 0, 0], last.conv.bias
        scale.div_(std), bias.sub_(mean).div_(std)
        residual = model.encoder(audio)[0].T  # [frames, dim], now standardised
        for layer in model.quantizer.layers:
            picks = residual[torch.randint(0, len(residual), (config.codebook_size,))]
            embed = picks + 0.5 * residual.std(dim=0) * torch.randn(picks.shape)
            layer.codebook.embed.copy_(embed)
            residual = residual - embed[torch.cdist(residual, embed).argmin(dim=1)]
    model.save_pretrained(str(directory))
    return model


@pytest.fixture(scope="module")
def codecs(tmp_path_factory):
    """name -> (transformers model, its saved directory), built once."""
    cache = {}

    def get(name: str):
        if name not in cache:
            directory = tmp_path_factory.mktemp(name)
            cache[name] = build_codec(directory, seed=len(cache), **CONFIGS[name]), directory
        return cache[name]

    return get


def check_codes(
    model: EncodecModel, audio: np.ndarray, ours: np.ndarray, theirs: np.ndarray, bandwidth
) -> float:
    """Assert >= 99.9% of codes equal and each frame's first difference a near-tie; return the share equal.

    ``ours``/``theirs``: ``[batch, K, frames]`` codes of one whole-signal encode of ``audio``."""
    assert ours.shape == theirs.shape and ours.dtype == np.int32
    equal = float((ours == theirs).mean())
    with torch.no_grad():
        residual = model.encoder(torch.from_numpy(audio)).double()  # [batch, dim, frames]
    for b, k, t in zip(*np.nonzero(ours != theirs)):
        if (ours[b, :k, t] != theirs[b, :k, t]).any():
            continue  # a later stage of a frame that already differs: its residual differs too
        vector = residual[b, :, t] - sum(
            (model.quantizer.layers[s].codebook.embed[theirs[b, s, t]].double() for s in range(k)), 0.0
        )
        embed = model.quantizer.layers[k].codebook.embed.double()
        pair = embed[[int(ours[b, k, t]), int(theirs[b, k, t])]]
        distance = ((vector - pair) ** 2).sum(-1)
        # transformers' float32 distance cancels terms of size |x|^2 + |e|^2: its resolution.
        gap = abs(float(distance[0] - distance[1])) / float((vector**2).sum() + (pair**2).sum(-1).max())
        print(f"code ({b}, {k}, {t}) differs: {ours[b, k, t]} vs {theirs[b, k, t]}, distance gap {gap:.1e}")
        assert gap <= TIE_RTOL, f"code ({b}, {k}, {t}) differs by more than a tie ({gap:.1e})"
    assert equal >= 0.999, f"only {equal:.4%} of codes equal (bandwidth {bandwidth})"
    return equal


def torch_decode(model: EncodecModel, codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.decode(torch.from_numpy(codes.astype(np.int64))[None], [None]).audio_values.numpy()


# ---------------------------------------------------------------------------------- config


def test_config_defaults_and_derived_facts_match_transformers():
    ours, theirs = CodecConfig().to_dict(), EncodecConfig().to_dict()
    assert {k: theirs[k] for k in ours} == ours  # every field and default agrees
    for keywords in [
        *CONFIGS.values(),
        REAL_32KHZ,
        dict(chunk_length_s=1.0, overlap=0.01, sampling_rate=48000),
    ]:
        reference, config = (
            EncodecConfig(**keywords),
            CodecConfig.from_dict(EncodecConfig(**keywords).to_dict()),
        )
        for fact in ("hop_length", "frame_rate", "chunk_length", "chunk_stride", "num_quantizers"):
            assert getattr(config, fact) == getattr(reference, fact), fact
        quantizer = EncodecModel(reference).quantizer
        for bandwidth in (*reference.target_bandwidths, None):
            assert config.quantizers_for_bandwidth(bandwidth) == quantizer.get_num_quantizers_for_bandwidth(
                bandwidth
            )
    with pytest.raises(CheckpointError, match="norm_type"):
        CodecConfig.from_dict({"model_type": "encodec", "norm_type": "batch_norm"})
    with pytest.raises(CheckpointError, match="expected 'encodec'"):
        CodecConfig.from_dict({"model_type": "t5"})
    with pytest.raises(CheckpointError, match="needs overlap"):
        CodecConfig.from_dict({"model_type": "encodec", "chunk_length_s": 1.0})


# ---------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", ["causal-mono-lstm2", "noncausal-stereo-lstm1", "group-norm"])
def test_whole_signal_parity(codecs, name):
    model, directory = codecs(name)
    channels, hop = model.config.audio_channels, model.config.hop_length
    loaded = JaxEncodec.from_pretrained(directory)
    assert loaded.bandwidth == model.config.target_bandwidths[0]  # the smallest, as transformers
    # The largest bandwidth on audio with a partial last frame; the smallest on audio shorter than
    # the reflect padding (transformers zero-pads it first).
    cases = [(model.config.target_bandwidths[-1], hop * 150 + 7)]
    if model.config.pad_mode == "reflect":
        cases.append((loaded.bandwidth, 5))
    for bandwidth, samples in cases:
        codec = JaxEncodec(loaded.config, loaded.params, bandwidth=bandwidth)
        assert codec.num_codebooks == model.quantizer.get_num_quantizers_for_bandwidth(bandwidth)
        audio = random_audio(2, channels, samples, seed=samples)
        with torch.no_grad():
            encoded = model.encode(torch.from_numpy(audio), bandwidth=bandwidth)
            theirs_audio = model.decode(encoded.audio_codes, [None]).audio_values.numpy()
        theirs = encoded.audio_codes[0].numpy().astype(np.int32)
        ours = np.asarray(codec.encode(audio))
        print(name, bandwidth, samples, "codes equal:", check_codes(model, audio, ours, theirs, bandwidth))

        decoded = np.asarray(codec.decode(theirs))  # the same codes
        assert decoded.shape == theirs_audio.shape == (2, channels, theirs.shape[-1] * hop)
        error = np.abs(decoded - theirs_audio).max()
        print(f"  decode max error {error:.2e} (peak {np.abs(theirs_audio).max():.2f})")
        assert error <= DECODE_ATOL
        round_trip = np.abs(np.asarray(codec.decode(codec.encode(audio))) - theirs_audio).max()
        print(f"  encode-then-decode max error {round_trip:.2e}")
        assert round_trip <= ROUND_TRIP_ATOL


def test_chunked_and_normalized_parity(codecs):
    model, directory = codecs("chunked-normalized-stereo")
    codec = JaxEncodec.from_pretrained(directory, bandwidth=16.0)
    config = model.config
    assert (config.chunk_length, config.chunk_stride) == (640, 576)
    # 1196 samples: chunks of 640, 640 and 44 samples; 620: a short first chunk, then 44 samples.
    for samples in (1196, 620):
        audio = random_audio(2, 2, samples, seed=samples) * np.array([1.0, 0.1], np.float32)[:, None, None]
        with torch.no_grad():
            reference = model.encode(torch.from_numpy(audio), bandwidth=16.0)
            theirs_audio = model.decode(
                reference.audio_codes,
                reference.audio_scales,
                last_frame_pad_length=reference.last_frame_pad_length,
            ).audio_values.numpy()
        ours = codec.encode_chunks(audio)
        assert ours.last_frame_pad_length == reference.last_frame_pad_length
        np.testing.assert_array_equal(np.asarray(ours.codes), reference.audio_codes.numpy())
        scales = np.stack([s.numpy()[:, 0] for s in reference.audio_scales])  # [chunks, batch]
        np.testing.assert_allclose(np.asarray(ours.scales), scales, rtol=1e-6)
        theirs = EncodedChunks(reference.audio_codes.numpy(), scales, reference.last_frame_pad_length)
        decoded = np.asarray(codec.decode_chunks(theirs))
        assert decoded.shape == theirs_audio.shape
        error = np.abs(decoded - theirs_audio).max()
        round_trip = np.abs(np.asarray(codec.decode_chunks(ours)) - theirs_audio).max()
        print(f"chunked {samples}: decode max error {error:.2e}, encode-then-decode {round_trip:.2e}")
        assert error <= DECODE_ATOL and round_trip <= ROUND_TRIP_ATOL
    with pytest.raises(ValueError, match="encode_chunks"):
        codec.encode(audio)
    with pytest.raises(ValueError, match="decode_chunks"):
        codec.decode(np.zeros((1, 2, 3), np.int32))


def test_real_32khz_shape(tmp_path):
    model = build_codec(tmp_path, seed=3, fit_frames=100, **REAL_32KHZ)
    codec = JaxEncodec.from_pretrained(tmp_path)
    assert (codec.sample_rate, codec.hop_length, codec.frame_rate, codec.num_codebooks) == (
        32000,
        640,
        50.0,
        4,
    )
    audio = random_audio(2, 1, 16000, seed=4)  # 0.5 s: 25 frames of 4 codebooks, twice
    with torch.no_grad():
        theirs = model.encode(torch.from_numpy(audio)).audio_codes[0].numpy().astype(np.int32)
    ours = np.asarray(codec.encode(audio))
    print("32 kHz codes equal:", check_codes(model, audio, ours, theirs, 2.2))
    reference = torch_decode(model, theirs)
    error = np.abs(np.asarray(codec.decode(theirs)) - reference).max()
    print(f"32 kHz decode max error {error:.2e} (peak {np.abs(reference).max():.2f})")
    assert error <= DECODE_ATOL
    round_trip = np.abs(np.asarray(codec.decode(codec.encode(audio))) - reference).max()
    print(f"32 kHz encode-then-decode max error {round_trip:.2e}")
    assert round_trip <= ROUND_TRIP_ATOL


# ---------------------------------------------------------------------------------- loading


def _flat(params: dict) -> dict:
    from flax import traverse_util

    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def assert_same_params(a: JaxEncodec, b: JaxEncodec) -> None:
    first, second = _flat(a.params), _flat(b.params)
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg="/".join(key))


def _rewrite_tensors(directory: Path, change) -> None:
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_every_source_loads_the_same_codec(codecs, tiny_hf_dirs, tmp_path, monkeypatch):
    from musicgen_jax.conversion import convert_from_transformers
    from musicgen_jax.conversion.transformers_format import write_codec_directory

    model, directory = codecs("causal-mono-lstm2")
    reference = JaxEncodec.from_pretrained(directory)

    bin_dir = tmp_path / "bin"  # pytorch_model.bin instead of safetensors
    shutil.copytree(directory, bin_dir)
    (bin_dir / "model.safetensors").unlink()
    torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
    assert_same_params(JaxEncodec.from_pretrained(bin_dir), reference)

    old = tmp_path / "old-names"  # torch's old weight_g / weight_v names, as Meta's hub files have them
    shutil.copytree(directory, old)
    renamed = lambda k: k.replace(".parametrizations.weight.original0", ".weight_g").replace(
        ".parametrizations.weight.original1", ".weight_v"
    )
    _rewrite_tensors(old, lambda t: t.update({renamed(k): t.pop(k) for k in list(t)}))
    assert any(k.endswith(".weight_g") for k in load_file(str(old / "model.safetensors")))
    assert_same_params(JaxEncodec.from_pretrained(old), reference)

    import huggingface_hub.constants  # a hub id, from the local cache (no network in tests)

    repo = tmp_path / "hub" / "models--facebook--encodec_32khz"
    shutil.copytree(directory, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert_same_params(JaxEncodec.from_pretrained("facebook/encodec_32khz"), reference)

    # A transformers MusicGen directory (its audio_encoder) and a musicgen-jax checkpoint (its codec/).
    musicgen = tiny_hf_dirs("base")
    inside = JaxEncodec.from_pretrained(musicgen)
    assert_same_params(
        inside, JaxEncodec.from_pretrained(write_codec_directory(musicgen, tmp_path / "codec"))
    )
    convert_from_transformers(musicgen, tmp_path / "checkpoint")
    assert_same_params(JaxEncodec.from_pretrained(tmp_path / "checkpoint"), inside)
    assert inside.sample_rate == 32000 and inside.num_codebooks == 4 and inside.codebook_size == 2048


def test_loading_errors(codecs, tmp_path):
    _, directory = codecs("causal-mono-lstm2")

    def broken(name: str, change=None) -> Path:
        target = tmp_path / name
        shutil.copytree(directory, target)
        if change is not None:
            _rewrite_tensors(target, change)
        return target

    with pytest.raises(CheckpointError, match="missing decoder.layers.1.lstm.weight_hh_l1"):
        JaxEncodec.from_pretrained(broken("missing", lambda t: t.pop("decoder.layers.1.lstm.weight_hh_l1")))
    with pytest.raises(CheckpointError, match="unexpected decoder.layers.0.conv.beta"):  # every key consumed
        JaxEncodec.from_pretrained(
            broken(
                "extra", lambda t: t.update({"decoder.layers.0.conv.beta": t["decoder.layers.0.conv.bias"]})
            )
        )
    with pytest.raises(CheckpointError, match="quantizer.layers.0.codebook.embed has shape"):
        JaxEncodec.from_pretrained(
            broken(
                "codebook",
                lambda t: t.update({"quantizer.layers.0.codebook.embed": np.zeros((256, 8), np.float32)}),
            )
        )
    resized = broken("resized")
    config = json.loads((resized / "config.json").read_text())
    (resized / "config.json").write_text(json.dumps({**config, "num_filters": 8}))
    with pytest.raises(CheckpointError, match="has shape"):
        JaxEncodec.from_pretrained(resized)
    (resized / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    with pytest.raises(CheckpointError, match="model_type is 't5'"):
        JaxEncodec.from_pretrained(resized)
    with pytest.raises(CheckpointError, match="no config.json"):
        JaxEncodec.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not one of this codec's"):
        JaxEncodec.from_pretrained(directory, bandwidth=5.0)


def test_invalid_codes_and_audio(codecs):
    codec = JaxEncodec.from_pretrained(codecs("noncausal-stereo-lstm1")[1])
    with pytest.raises(ValueError, match="revert the delay pattern"):
        codec.decode(np.full((1, 1, 5), 256))
    with pytest.raises(ValueError, match="codebooks"):
        codec.decode(np.zeros((1, codec.config.num_quantizers + 1, 5), np.int32))
    with pytest.raises(ValueError, match="integers"):
        codec.decode(np.zeros((1, 1, 5), np.float32))
    with pytest.raises(ValueError, match="channel"):
        codec.encode(np.zeros((1, 1, 30), np.float32))  # a stereo codec
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(np.full((1, 2, 30), np.nan, np.float32))
    with pytest.raises(ValueError, match="empty"):
        codec.encode(np.zeros((1, 2, 0), np.float32))
    assert codec.decode(np.zeros((3, 1, 0), np.int32)).shape == (3, 2, 0)


_NO_TORCH = """
import sys
sys.modules["torch"] = None  # any import of torch now fails
import numpy as np
from musicgen_jax.codec import JaxEncodec
codec = JaxEncodec.from_pretrained(sys.argv[1])
audio = np.load(sys.argv[2])
codes = np.asarray(codec.encode(audio))
np.save(sys.argv[3], codes)
np.save(sys.argv[4], np.asarray(codec.decode(codes)))
"""


def test_runs_without_torch(codecs, tmp_path):
    """Loading safetensors, encoding and decoding never import torch."""
    model, directory = codecs("causal-mono-lstm2")
    audio = random_audio(1, 1, 5, seed=5)
    np.save(tmp_path / "audio.npy", audio)
    outputs = [str(tmp_path / "codes.npy"), str(tmp_path / "decoded.npy")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-c", _NO_TORCH, str(directory), str(tmp_path / "audio.npy"), *outputs]
    subprocess.run(command, check=True, env=env, timeout=120)
    with torch.no_grad():
        theirs = model.encode(torch.from_numpy(audio), bandwidth=8.0).audio_codes[0].numpy()
    np.testing.assert_array_equal(np.load(outputs[0]), theirs)
    assert np.abs(np.load(outputs[1]) - torch_decode(model, theirs)).max() <= DECODE_ATOL


# ---------------------------------------------------------------------------------- streaming


def _stream(codec: JaxEncodec, codes: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    stream = JaxStreamingDecoder(codec)
    starts = np.cumsum([0, *sizes])
    assert starts[-1] == codes.shape[-1]
    pieces = [np.asarray(stream.push(codes[..., a:b])) for a, b in itertools.pairwise(starts)]
    return pieces + [np.asarray(stream.flush())]


@pytest.mark.parametrize(
    ("name", "sizes"),
    [
        ("noncausal-stereo-lstm1", "lookahead, 1, 5, 11, rest"),
        ("causal-mono-lstm2", "3, rest"),
    ],
)
def test_stream_equals_one_full_decode(codecs, name, sizes):
    codec = JaxEncodec.from_pretrained(codecs(name)[1])
    lookahead = JaxStreamingDecoder(codec).lookahead_frames
    codes = np.random.default_rng(len(sizes)).integers(0, codec.codebook_size, (2, 2, 40)).astype(np.int32)
    full = np.asarray(codec.decode(codes))
    sizes = [
        lookahead if size == "lookahead" else 0 if size == "rest" else int(size) for size in sizes.split(", ")
    ]
    sizes[-1] = codes.shape[-1] - sum(sizes)
    pieces = _stream(codec, codes, sizes)
    streamed = np.concatenate(pieces, axis=-1)
    assert streamed.shape == full.shape
    error = np.abs(streamed - full).max()
    print(f"{name} {sizes}: stream max error {error:.2e} (one 16-bit step {STREAM_ATOL:.1e})")
    assert error <= STREAM_ATOL
    if sizes[0] == lookahead:  # a frame's audio comes out once its lookahead has arrived, not before
        assert pieces[0].shape[-1] == 0 and pieces[1].shape[-1] == codec.hop_length


STREAMED = ["causal-mono-lstm2", "noncausal-stereo-lstm1", "causal-mono-lstm1", "noncausal-mono-lstm2"]


def irregular_sizes(total: int, seed: int) -> list[int]:
    """Push sizes from 0 to 19 (empty pushes included) summing to ``total``."""
    rng, sizes = np.random.default_rng(seed), []
    while sum(sizes) < total:
        sizes.append(int(min(rng.integers(0, 20), total - sum(sizes))))
    return sizes


@pytest.mark.parametrize("name", STREAMED)
def test_padded_stream_equals_one_full_decode(codecs, name):
    """Windows padded to buckets (every push here but the flush) change no sample: causal and
    non-causal codecs, one and two LSTM layers, reflect padding, irregular pushes."""
    codec = JaxEncodec.from_pretrained(codecs(name)[1])
    assert codec.config.pad_mode == "reflect"
    codes = np.random.default_rng(7).integers(0, codec.codebook_size, (2, 2, 90)).astype(np.int32)
    full = np.asarray(codec.decode(codes))
    reach = JaxStreamingDecoder(codec).reach
    for seed in (0, 1):
        sizes = irregular_sizes(codes.shape[-1], seed)
        # Teeth: steady windows (a push plus the input conv's context) of these pushes are padded.
        context = reach.conv_left + reach.conv_right
        assert sum(window_bucket(n + context) != n + context for n in sizes if n) >= 3
        streamed = np.concatenate(_stream(codec, codes, sizes), axis=-1)
        error = np.abs(streamed - full).max()
        print(f"{name} {sizes}: stream max error {error:.2e}")
        assert streamed.shape == full.shape and error <= STREAM_ATOL


def test_window_buckets_are_few_and_waste_little():
    buckets = [window_bucket(n) for n in range(1, 5000)]
    assert buckets[:8] == list(range(1, 9))  # short windows are not padded
    assert buckets[8:16] == [10, 10, 12, 12, 14, 14, 16, 16]
    for n, size in enumerate(buckets, start=1):
        assert n <= size < 1.25 * n and window_bucket(size) == size
    for octave in range(3, 12):  # four lengths an octave
        assert len({window_bucket(n) for n in range(2**octave + 1, 2 ** (octave + 1) + 1)}) == 4


def test_lstm_length_stops_the_state_at_the_real_steps():
    """What the padded stream relies on: masked steps leave the carried state exactly as it was,
    and without the mask padding would change it (the check has teeth)."""
    lstm = FlaxLstm(LstmSpec(dim=8, num_layers=2))
    x = jax.random.normal(jax.random.key(0), (2, 11, 8))
    params = lstm.init(jax.random.key(1), x)
    real, state = lstm.apply(params, x[:, :7])
    padded, masked_state = lstm.apply(params, x, None, 7)  # 4 steps of padding
    np.testing.assert_allclose(np.asarray(padded[:, :7]), np.asarray(real), rtol=0, atol=1e-6)
    for ours, theirs in zip(jax.tree.leaves(masked_state), jax.tree.leaves(state)):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=0, atol=1e-6)
    _, unmasked = lstm.apply(params, x)
    assert (
        max(
            np.abs(np.asarray(a) - np.asarray(b)).max()
            for a, b in zip(jax.tree.leaves(unmasked), jax.tree.leaves(state))
        )
        > 1e-3
    )


def _compiled() -> int:
    """Programs the stream's jitted stages hold (all configs and shapes of this process)."""
    stages = (jax_streaming._conv_lstm, jax_streaming._append, jax_streaming._upsample)
    return sum(stage._cache_size() for stage in stages)


def _run_stream(codec: JaxEncodec, sizes: list[int], batch: int = 1) -> None:
    shape = (batch, codec.num_codebooks, max(sizes))
    codes = np.random.default_rng(0).integers(0, codec.codebook_size, shape, np.int32)
    stream = JaxStreamingDecoder(codec)
    for size in sizes:
        stream.push(codes[..., :size])
    stream.flush()


def test_compiled_shapes_stay_few_however_long_the_stream(codecs):
    """A stream compiles a small fixed set of programs per push pattern, not one per push or per
    new window length, and ``warm_up`` compiles them all ahead."""
    codec = JaxEncodec.from_pretrained(codecs("noncausal-stereo-lstm1")[1])
    before = _compiled()
    _run_stream(codec, [3] * 50)
    steady = _compiled() - before
    _run_stream(codec, [3] * 200)
    assert _compiled() - before == steady  # a longer stream compiles nothing new
    print(f"pushes of 3: {steady} programs")
    assert steady <= 12  # 11 measured: the windows grow over the first pushes, then stay

    sizes = [int(n) for n in np.random.default_rng(5).integers(1, 8, 250)]  # pushes of 1 to 7 frames
    before = _compiled()
    _run_stream(codec, sizes[:50])
    varied = _compiled() - before
    _run_stream(codec, sizes)
    assert _compiled() - before == varied
    print(f"pushes of 1 to 7: {varied} programs")
    assert varied <= 24  # 18 measured

    decoder = JaxStreamingDecoder(codec)
    for push, batch in ((11, 1), (50, 1), (4, 3)):
        decoder.warm_up(push, batch=batch)
        before = _compiled()
        _run_stream(codec, [push] * 20, batch=batch)
        assert _compiled() == before, f"warm_up({push}, batch={batch}) left programs to compile"
    assert decoder.frames_received == 0  # warm_up decoded on a scratch stream


def test_naive_chunks_click_but_the_stream_does_not(codecs):
    """The stream test can fail: decoding chunks alone (no context, LSTM restarted) is far off."""
    codec = JaxEncodec.from_pretrained(codecs("noncausal-stereo-lstm1")[1])
    codes = np.random.default_rng(1).integers(0, codec.codebook_size, (2, 2, 40)).astype(np.int32)
    full = np.asarray(codec.decode(codes))
    naive = np.concatenate([np.asarray(codec.decode(codes[..., i : i + 10])) for i in range(0, 40, 10)], -1)
    assert np.abs(naive - full).max() > 100 * STREAM_ATOL


def test_stream_misuse(codecs):
    _, directory = codecs("group-norm")
    with pytest.raises(NotImplementedError, match="group norm"):
        JaxStreamingDecoder(JaxEncodec.from_pretrained(directory))
    stream = JaxStreamingDecoder(JaxEncodec.from_pretrained(codecs("causal-mono-lstm2")[1]))
    stream.push(np.zeros((1, 2, 3), np.int32))
    with pytest.raises(ValueError, match="pushed to a stream"):
        stream.push(np.zeros((2, 2, 3), np.int32))
    assert stream.flush().shape[-1] == 3 * 32 and stream.frames_received == 3
    with pytest.raises(RuntimeError, match="flushed"):
        stream.push(np.zeros((1, 2, 1), np.int32))
    stream.reset()
    assert stream.push(np.zeros((1, 2, 1), np.int32)).shape == (1, 1, 0)
