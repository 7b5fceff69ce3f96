"""The EnCodec bridge against transformers: decode and encode parity (mono and stereo), every way
of loading a codec, chunked and streamed decoding against one full decode, and the errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import EncodecConfig, EncodecModel, MusicgenForConditionalGeneration

from musicgen_jax.codec import EncodecBridge, StreamingDecoder
from musicgen_jax.conversion import CheckpointError
from musicgen_jax.conversion.transformers_format import write_codec_directory
from musicgen_jax.hub import ModelNotFoundError
from musicgen_jax.testing import save_tiny_transformers_musicgen

# Streamed and chunked decoding equal one full decode to float rounding: measured 6e-8..1.1e-7
# against outputs of about 0.2 peak; a click or a restarted LSTM costs 1e-3 or more (checked below).
STREAM_ATOL = 1e-5


def _fit_codebooks(directory: Path, seed: int) -> None:
    """transformers initialises codebooks to zero, which makes every code decode alike, and a random
    encoder's outputs barely move over time; parity on such a codec proves nothing. Draw each
    codebook around the (residual) encoder outputs of random audio, as EnCodec's k-means
    initialisation does, so different audio gets different codes and codes decode differently."""
    model = EncodecBridge.from_pretrained(directory).model
    with torch.no_grad():
        residual = model.encoder(torch.from_numpy(random_audio(1, 1, 32000 * 8, seed)))[0].T  # [frames, dim]
    rng = torch.Generator().manual_seed(seed)
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    for index in range(model.quantizer.num_quantizers):
        spread = residual.std(dim=0)
        picks = residual[torch.randint(0, len(residual), (2048,), generator=rng)]
        embed = picks + 0.5 * spread * torch.randn(picks.shape, generator=rng)  # [codebook_size, dim]
        tensors[f"audio_encoder.quantizer.layers.{index}.codebook.embed"] = embed.numpy()
        residual = residual - embed[torch.cdist(residual, embed).argmin(dim=1)]
    save_file(tensors, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def musicgen_dirs(tmp_path_factory):
    """variant -> a tiny transformers MusicGen directory with a random (non-degenerate) codec."""
    cache = {}

    def get(variant: str) -> Path:
        if variant not in cache:
            directory = save_tiny_transformers_musicgen(tmp_path_factory.mktemp(f"codec-{variant}"), variant)
            _fit_codebooks(directory, seed=len(cache))
            cache[variant] = directory
        return cache[variant]

    return get


@pytest.fixture(scope="module")
def reference(musicgen_dirs):
    """variant -> transformers' audio_encoder of that directory (the parity target)."""
    cache = {}

    def get(variant: str):
        if variant not in cache:
            model = MusicgenForConditionalGeneration.from_pretrained(musicgen_dirs(variant)).eval()
            cache[variant] = model.audio_encoder
        return cache[variant]

    return get


@pytest.fixture(scope="module")
def mono(musicgen_dirs) -> EncodecBridge:
    return EncodecBridge.from_pretrained(musicgen_dirs("base"))


@pytest.fixture(scope="module")
def stereo(musicgen_dirs) -> EncodecBridge:
    return EncodecBridge.from_pretrained(musicgen_dirs("stereo"))


def random_codes(batch: int, codebooks: int, frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2048, (batch, codebooks, frames)).astype(np.int32)


def random_audio(batch: int, channels: int, samples: int, seed: int = 0) -> np.ndarray:
    """Band-limited noise with a slow envelope: varied enough to use many codes."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((batch, channels, samples + 64)).astype(np.float32)
    smooth = np.stack(
        [np.convolve(row, np.ones(8) / 8, mode="valid") for row in noise.reshape(-1, samples + 64)]
    )
    envelope = 0.5 + 0.5 * np.sin(np.linspace(0, 6 * np.pi, samples, dtype=np.float32))
    return (0.3 * smooth[:, :samples] * envelope).reshape(batch, channels, samples).astype(np.float32)


def torch_decode(codec, codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return codec.decode(torch.from_numpy(codes.astype(np.int64))[None], [None]).audio_values.numpy()


def torch_encode(codec, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return codec.encode(torch.from_numpy(audio), bandwidth=2.2).audio_codes[0].numpy()


# ---------------------------------------------------------------------------------- facts and parity


def test_facts_of_musicgen_codecs(mono, stereo):
    for bridge, channels in ((mono, 1), (stereo, 2)):
        assert bridge.sample_rate == 32000 and bridge.hop_length == 640 and bridge.frame_rate == 50.0
        assert bridge.num_codebooks == 4 and bridge.codebook_size == 2048
        assert bridge.audio_channels == channels and bridge.total_codebooks == 4 * channels


def test_decode_equals_transformers_exactly(mono, reference):
    codes = random_codes(2, 4, 37)
    audio = mono.decode(codes)
    assert audio.shape == (2, 1, 37 * 640) and audio.dtype == np.float32
    np.testing.assert_array_equal(audio, torch_decode(reference("base"), codes))
    assert np.abs(audio).max() > 1e-3 and not np.allclose(audio[0], audio[1])  # real signal, per row
    # JAX arrays go in as they are.
    np.testing.assert_array_equal(mono.decode(jnp.asarray(codes)), audio)


def test_stereo_decode_is_left_right_split_exactly(stereo, reference):
    codes = random_codes(2, 8, 29, seed=1)  # L0, R0, L1, R1, ...
    audio = stereo.decode(codes)
    assert audio.shape == (2, 2, 29 * 640)
    codec = reference("stereo")
    want = np.concatenate([torch_decode(codec, codes[:, ::2]), torch_decode(codec, codes[:, 1::2])], axis=1)
    np.testing.assert_array_equal(audio, want)
    assert not np.allclose(audio[:, 0], audio[:, 1])


def test_encode_equals_transformers(mono, reference):
    audio = random_audio(2, 1, 32000 + 123)  # not a whole number of frames
    codes = mono.encode(audio, 32000)
    want = torch_encode(reference("base"), audio)
    assert codes.dtype == np.int32 and codes.shape == (2, 4, 51) == want.shape
    np.testing.assert_array_equal(codes, want)
    assert len(np.unique(codes)) > 20  # many different codes: the comparison has teeth
    assert (codes[0] != codes[1]).mean() > 0.5  # different audio, different codes


def test_stereo_encode_interleaves_left_and_right(stereo, reference):
    audio = random_audio(2, 2, 16000, seed=3)
    codes = stereo.encode(audio, 32000)
    codec = reference("stereo")
    left, right = torch_encode(codec, audio[:, :1]), torch_encode(codec, audio[:, 1:])
    assert codes.shape == (2, 8, 25)
    np.testing.assert_array_equal(codes[:, ::2], left)
    np.testing.assert_array_equal(codes[:, 1::2], right)
    assert not np.array_equal(left, right)
    # Mono into a stereo model: both channels get the mono codes (transformers repeat_interleaves).
    duplicated = stereo.encode(audio[:, :1], 32000)
    np.testing.assert_array_equal(duplicated, np.repeat(left, 2, axis=1))


def test_encode_mixes_down_and_resamples(mono):
    stereo_audio = random_audio(1, 2, 32000, seed=4)
    np.testing.assert_array_equal(
        mono.encode(stereo_audio, 32000), mono.encode(stereo_audio.mean(axis=1, keepdims=True), 32000)
    )
    audio = random_audio(1, 1, 24000, seed=5)  # 1.5 s at 16 kHz
    codes = mono.encode(audio, 16000)
    assert codes.shape == (1, 4, 75)  # 48000 samples at 32 kHz
    from musicgen_jax.audio import resample

    np.testing.assert_array_equal(codes, mono.encode(resample(audio, 16000, 32000), 32000))
    # [samples] and [channels, samples] are one item.
    assert mono.encode(audio[0, 0], 16000).shape == (1, 4, 75)


# ---------------------------------------------------------------------------------- chunks and streams


def _stream(bridge: EncodecBridge, codes: np.ndarray, sizes) -> list[np.ndarray]:
    decoder = StreamingDecoder(bridge)
    chunks, start = [], 0
    for size in sizes:
        chunks.append(decoder.push(codes[..., start : start + size]))
        start += size
    assert start == codes.shape[-1]
    chunks.append(decoder.flush())
    return chunks


@pytest.mark.parametrize(
    "sizes",
    [[1] * 90, [7] * 12 + [6], [2, 0, 31, 1, 1, 40, 15], [90]],
    ids=["frame-by-frame", "sevens", "ragged-with-empty", "one-push"],
)
def test_streaming_matches_one_full_decode(mono, sizes):
    codes = random_codes(2, 4, 90, seed=6)
    full = mono.decode(codes)
    chunks = _stream(mono, codes, sizes)
    for chunk in chunks:
        assert chunk.dtype == np.float32 and chunk.shape[:2] == (2, 1) and chunk.shape[2] % 640 == 0
    streamed = np.concatenate(chunks, axis=-1)
    assert streamed.shape == full.shape
    np.testing.assert_allclose(streamed, full, rtol=0, atol=STREAM_ATOL)


def test_first_audio_comes_out_after_the_lookahead(mono):
    codes = random_codes(1, 4, 30, seed=7)
    decoder = StreamingDecoder(mono)
    assert decoder.lookahead_frames == 7  # 3 for the input conv + 4 for the upsampling stack (140 ms)
    lengths = [decoder.push(codes[..., i : i + 1]).shape[-1] for i in range(30)]
    first = next(i for i, n in enumerate(lengths) if n)
    assert first == decoder.lookahead_frames  # frame 0's audio as soon as frame 7 exists
    assert all(n == 640 for n in lengths[first:])  # then one frame of audio per frame pushed
    assert decoder.flush().shape[-1] == 7 * 640 and decoder.samples_emitted == 30 * 640


def test_naive_chunking_clicks_but_the_stream_does_not(mono):
    codes = random_codes(1, 4, 100, seed=8)
    full = mono.decode(codes)[0, 0]
    naive = np.concatenate([mono.decode(codes[..., i : i + 25])[0, 0] for i in range(0, 100, 25)])
    streamed = np.concatenate(_stream(mono, codes, [25] * 4), axis=-1)[0, 0]
    joins = [25 * 640 * k for k in (1, 2, 3)]
    around = np.concatenate([np.arange(j - 320, j + 320) for j in joins])
    # Independent chunks are wrong near the joins (the test below would catch them) ...
    assert np.abs(naive - full)[around].max() > 100 * STREAM_ATOL
    # ... the stream is not, and has no energy spike at the joins.
    assert np.abs(streamed - full).max() < STREAM_ATOL

    def energy(signal: np.ndarray) -> float:
        return float(np.sqrt(np.mean(signal[around] ** 2)))

    assert energy(streamed) == pytest.approx(energy(full), rel=1e-4)


def test_stereo_stream_and_chunked_decode(stereo):
    codes = random_codes(1, 8, 64, seed=9)
    full = stereo.decode(codes)
    streamed = np.concatenate(_stream(stereo, codes, [5] * 12 + [4]), axis=-1)
    assert streamed.shape == (1, 2, 64 * 640)
    np.testing.assert_allclose(streamed, full, rtol=0, atol=STREAM_ATOL)
    np.testing.assert_allclose(stereo.decode(codes, chunk_frames=20), full, rtol=0, atol=STREAM_ATOL)


def test_long_codes_are_decoded_in_chunks_that_match(mono):
    codes = random_codes(1, 4, 260, seed=10)
    full = mono.decode(codes)  # one call
    chunked = mono.decode(codes, chunk_frames=50)
    assert chunked.shape == full.shape
    np.testing.assert_allclose(chunked, full, rtol=0, atol=STREAM_ATOL)


def test_stream_misuse(mono):
    decoder = StreamingDecoder(mono)
    decoder.push(random_codes(1, 4, 3))
    with pytest.raises(ValueError, match="pushed to a stream"):
        decoder.push(random_codes(2, 4, 3))
    decoder.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        decoder.push(random_codes(1, 4, 3))
    decoder.reset()
    assert decoder.push(random_codes(2, 4, 10)).shape == (2, 1, 3 * 640)
    assert StreamingDecoder(mono).flush().shape[-1] == 0  # an empty stream decodes to nothing


# ---------------------------------------------------------------------------------- loading


def _rename_tensors(directory: Path, rename) -> None:
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    save_file({rename(k): v for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def test_every_source_loads_the_same_codec(musicgen_dirs, mono, tmp_path, monkeypatch):
    source = musicgen_dirs("base")
    codes = random_codes(1, 4, 12, seed=11)
    want = mono.decode(codes)

    codec_dir = write_codec_directory(source, tmp_path / "codec")  # (a) an EncodecModel directory
    assert json.loads((codec_dir / "config.json").read_text())["model_type"] == "encodec"
    np.testing.assert_array_equal(EncodecBridge.from_pretrained(codec_dir).decode(codes), want)

    checkpoint = tmp_path / "ckpt"  # (c) a musicgen-jax checkpoint: its codec/ directory
    from musicgen_jax.conversion import convert_from_transformers

    convert_from_transformers(musicgen_dirs("stereo"), checkpoint)
    from_checkpoint = EncodecBridge.from_pretrained(checkpoint)
    assert from_checkpoint.audio_channels == 2  # read from the checkpoint's config
    assert EncodecBridge.from_pretrained(checkpoint, audio_channels=1).audio_channels == 1

    # Old torch weight-norm names (weight_g / weight_v, as Meta's hub files have them) load too.
    old = tmp_path / "old-names"
    shutil.copytree(codec_dir, old)
    _rename_tensors(
        old,
        lambda k: k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ),
    )
    names = load_file(str(old / "model.safetensors")).keys()
    assert any(k.endswith(".weight_g") for k in names) and not any("parametrizations" in k for k in names)
    np.testing.assert_array_equal(EncodecBridge.from_pretrained(old).decode(codes), want)

    # (d) a hub id, from the local Hugging Face cache (no network in tests).
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--facebook--encodec_32khz"
    shutil.copytree(codec_dir, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    np.testing.assert_array_equal(EncodecBridge.from_pretrained("facebook/encodec_32khz").decode(codes), want)
    with pytest.raises(ModelNotFoundError):
        EncodecBridge.from_pretrained("facebook/encodec_24khz")


def test_loading_errors(musicgen_dirs, tmp_path):
    codec_dir = write_codec_directory(musicgen_dirs("base"), tmp_path / "codec")

    def broken(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(codec_dir, target)
        return target

    other = broken("t5")
    (other / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(CheckpointError, match="model_type is 't5'"):
        EncodecBridge.from_pretrained(other)

    missing = broken("missing")
    tensors = load_file(str(missing / "model.safetensors"))
    del tensors["decoder.layers.1.lstm.weight_hh_l0"]
    save_file(tensors, str(missing / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing decoder.layers.1.lstm.weight_hh_l0"):
        EncodecBridge.from_pretrained(missing)

    extra = broken("extra")
    _rename_tensors(extra, lambda k: k.replace("decoder.layers.0.conv.bias", "decoder.layers.0.conv.beta"))
    with pytest.raises(CheckpointError, match="unexpected decoder.layers.0.conv.beta"):
        EncodecBridge.from_pretrained(extra)

    resized = broken("resized")
    config = json.loads((resized / "config.json").read_text())
    (resized / "config.json").write_text(json.dumps({**config, "hidden_size": 32}))
    with pytest.raises(CheckpointError, match="has shape"):
        EncodecBridge.from_pretrained(resized)

    chunked = broken("chunked")
    (chunked / "config.json").write_text(json.dumps({**config, "chunk_length_s": 1.0, "overlap": 0.01}))
    with pytest.raises(CheckpointError, match="chunked EnCodec"):
        EncodecBridge.from_pretrained(chunked)

    with pytest.raises(CheckpointError, match="no config.json"):
        EncodecBridge.from_pretrained(tmp_path)
    with pytest.raises(ModelNotFoundError):
        EncodecBridge.from_pretrained(tmp_path / "nowhere")


def test_invalid_codes_and_audio(mono, stereo):
    with pytest.raises(ValueError, match=r"revert the delay pattern"):
        mono.decode(np.full((1, 4, 5), 2048))
    with pytest.raises(ValueError, match="codebooks"):
        stereo.decode(random_codes(1, 7, 5))
    with pytest.raises(ValueError, match=r"\[batch, codebooks, frames\]"):
        mono.decode(random_codes(1, 4, 5)[0])
    with pytest.raises(ValueError, match="integers"):
        mono.decode(np.zeros((1, 4, 5), np.float32))
    assert mono.decode(random_codes(3, 4, 0)).shape == (3, 1, 0)
    with pytest.raises(ValueError, match="NaN"):
        mono.encode(np.full((1, 1, 640), np.nan, np.float32), 32000)
    with pytest.raises(ValueError, match="empty"):
        mono.encode(np.zeros((1, 1, 0), np.float32), 32000)


# ---------------------------------------------------------------------------------- 24 kHz EnCodec


@pytest.fixture(scope="module")
def codec_24khz(tmp_path_factory) -> Path:
    config = EncodecConfig(
        sampling_rate=24000,
        upsampling_ratios=[8, 5, 4, 2],
        target_bandwidths=[1.5, 3.0, 6.0],
        codebook_size=1024,
        num_filters=4,
        hidden_size=16,
        num_lstm_layers=1,
        use_causal_conv=True,  # as Meta's 24 kHz model
    )
    torch.manual_seed(0)
    model = EncodecModel(config).eval()
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
    directory = tmp_path_factory.mktemp("encodec-24khz")
    model.save_pretrained(str(directory))
    return directory


def test_24khz_codec_loads_and_round_trips(codec_24khz):
    bridge = EncodecBridge.from_pretrained(codec_24khz)
    assert bridge.sample_rate == 24000 and bridge.hop_length == 320 and bridge.frame_rate == 75.0
    assert bridge.codebook_size == 1024 and bridge.bandwidth == 1.5 and bridge.num_codebooks == 2
    audio = random_audio(2, 1, 24000, seed=12)
    codes = bridge.encode(audio, 24000)
    assert codes.shape == (2, 2, 75)
    reference = EncodecModel.from_pretrained(str(codec_24khz)).eval()
    with torch.no_grad():
        want = reference.encode(torch.from_numpy(audio), bandwidth=1.5).audio_codes[0].numpy()
    np.testing.assert_array_equal(codes, want)
    decoded = bridge.decode(codes)
    assert decoded.shape == (2, 1, 75 * 320)
    np.testing.assert_array_equal(decoded, torch_decode(reference, codes))
    # Causal convolutions stream too.
    streamed = np.concatenate(_stream(bridge, codes, [4] * 18 + [3]), axis=-1)
    np.testing.assert_allclose(streamed, decoded, rtol=0, atol=STREAM_ATOL)

    wide = EncodecBridge.from_pretrained(codec_24khz, bandwidth=6.0)
    assert wide.num_codebooks == 8 and wide.encode(audio, 24000).shape == (2, 8, 75)
    with pytest.raises(ValueError, match="not one of this codec's"):
        EncodecBridge.from_pretrained(codec_24khz, bandwidth=2.2)
