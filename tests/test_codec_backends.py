"""The codec backend choice (``load_codec``, ``codec_backend=``): JAX and PyTorch give the same
generations, codes and streams on the tiny models, and every entry point takes the setting and
refuses a bad one with a message.

Tolerances, float32 on CPU: audio 1e-4 absolute (the JAX codec matches transformers' decode to
~1e-7, see tests/test_codec_jax.py); codes at least 99.9% equal (near-ties may differ)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax import MusicGen
from musicgen_jax.codec import EncodecBridge, JaxCodec, JaxEncodec, StreamingDecoder, load_codec
from musicgen_jax.codec.backends import resolve_backend
from musicgen_jax.codec.jax_codec import JaxCodecStream

AUDIO_ATOL = 1e-4
MIN_EQUAL_CODES = 0.999


def signal(channels: int, seconds: float, rate: int) -> np.ndarray:
    """Tones and a little noise, different per channel: ``[1, channels, samples]``."""
    times = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(channels)
    rows = [
        0.3 * np.sin(2 * np.pi * (220 + 110 * c) * times) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * times))
        + 0.05 * rng.standard_normal(times.shape)
        for c in range(channels)
    ]
    return np.stack(rows)[None].astype(np.float32)


@pytest.fixture(scope="module")
def sources(tiny_jax_dir, tiny_hf_dirs):
    return {"mono": tiny_jax_dir, "stereo": tiny_hf_dirs("stereo")}


@pytest.fixture(scope="module")
def codecs(sources):
    """(variant, backend) -> the codec ``load_codec`` gives."""
    return {
        (variant, backend): load_codec(source, backend=backend)
        for variant, source in sources.items()
        for backend in ("torch", "jax")
    }


def test_backends_give_their_codec_with_the_same_facts(codecs):
    for variant, channels in (("mono", 1), ("stereo", 2)):
        torch_codec, jax_codec = codecs[variant, "torch"], codecs[variant, "jax"]
        assert isinstance(torch_codec, EncodecBridge) and isinstance(jax_codec, JaxCodec)
        facts = (
            "sample_rate",
            "frame_rate",
            "hop_length",
            "num_codebooks",
            "total_codebooks",
            "audio_channels",
        )
        assert [getattr(jax_codec, f) for f in facts] == [getattr(torch_codec, f) for f in facts]
        assert jax_codec.audio_channels == channels and jax_codec.total_codebooks == 4 * channels
        assert isinstance(torch_codec.streaming_decoder(), StreamingDecoder)
        assert isinstance(jax_codec.streaming_decoder(), JaxCodecStream)


def test_auto_is_jax_and_a_bad_backend_is_refused(sources):
    assert resolve_backend("auto") == "jax"
    assert isinstance(load_codec(sources["mono"]), JaxCodec)
    assert isinstance(load_codec(sources["mono"], backend="torch"), EncodecBridge)
    assert isinstance(load_codec(sources["mono"], backend="jax"), JaxCodec)
    with pytest.raises(ValueError, match="codec backend must be one of auto, jax, torch; got 'tpu'"):
        load_codec(sources["mono"], backend="tpu")
    with pytest.raises(ValueError, match="codec backend must be one of"):
        MusicGen.from_pretrained(sources["mono"], codec_backend="pytorch")


@pytest.fixture
def jax_decodes(monkeypatch):
    """The codes each ``JaxEncodec.decode`` call receives (observed; the call still runs)."""
    seen = []
    real = JaxEncodec.decode

    def spy(self, codes):
        seen.append(codes)
        return real(self, codes)

    monkeypatch.setattr(JaxEncodec, "decode", spy)
    return seen


@pytest.mark.parametrize("variant", ["mono", "stereo"])
def test_seeded_generation_is_the_same_on_both_backends(sources, variant, jax_decodes):
    results = {}
    for backend in ("torch", "jax"):
        model = MusicGen.from_pretrained(sources[variant], dtype="float32", codec_backend=backend)
        results[backend] = model.generate(["calm piano"], duration=1.0, seed=7)
        assert type(model.codec) is {"torch": EncodecBridge, "jax": JaxCodec}[backend]
    # The JAX codec decoded the codes where the generation left them, on the device.
    assert len(jax_decodes) == 1 and isinstance(jax_decodes[0], jax.Array)
    torch_result, jax_result = results["torch"], results["jax"]
    np.testing.assert_array_equal(jax_result.codes, torch_result.codes)  # the same generation
    assert jax_result.audio.dtype == np.float32
    assert jax_result.audio.shape == torch_result.audio.shape == (1, 1 + (variant == "stereo"), 32000)
    assert np.abs(torch_result.audio).max() > 1e-3  # audio, not silence: the comparison has teeth
    np.testing.assert_allclose(jax_result.audio, torch_result.audio, rtol=0, atol=AUDIO_ATOL)
    if variant == "stereo":
        assert np.abs(torch_result.audio[:, 0] - torch_result.audio[:, 1]).max() > 1e-3  # two channels


def test_generation_falls_back_to_host_codes_where_rows_are_made_apart(sources, jax_decodes):
    """Beam search builds its rows on the host: the codes reach the codec from there, and the
    audio is still the PyTorch codec's."""
    models = {
        backend: MusicGen.from_pretrained(sources["mono"], dtype="float32", codec_backend=backend)
        for backend in ("torch", "jax")
    }
    results = {
        backend: model.generate(["calm piano"], duration=1.0, seed=3, num_beams=2)
        for backend, model in models.items()
    }
    assert len(jax_decodes) == 1 and isinstance(jax_decodes[0], np.ndarray)
    np.testing.assert_array_equal(results["jax"].codes, results["torch"].codes)
    assert np.abs(results["torch"].audio).max() > 1e-3
    np.testing.assert_allclose(results["jax"].audio, results["torch"].audio, rtol=0, atol=AUDIO_ATOL)


def test_device_codes_are_checked_on_the_device(codecs):
    codec = codecs["stereo", "jax"]
    codes = jnp.asarray(np.random.default_rng(0).integers(0, 2048, (1, 8, 12)), jnp.int32)
    checked = codec.check_codes(codes)
    assert isinstance(checked, jax.Array) and checked.dtype == jnp.int32
    np.testing.assert_allclose(
        codec.decode(codes), codecs["stereo", "torch"].decode(np.asarray(codes)), atol=AUDIO_ATOL
    )
    with pytest.raises(ValueError, match="revert the delay pattern"):
        codec.decode(codes.at[0, 3, 5].set(2048))
    with pytest.raises(ValueError, match="2-channel codec takes 2 x"):
        codec.decode(codes[:, :7])


@pytest.mark.parametrize("variant", ["mono", "stereo"])
def test_encode_gives_the_same_codes_on_both_backends(codecs, variant):
    channels = 1 + (variant == "stereo")
    audio = signal(channels, 1.3, 44100)  # not the codec's rate: both resample
    torch_codes = codecs[variant, "torch"].encode(audio, 44100)
    jax_codes = codecs[variant, "jax"].encode(audio, 44100)
    assert jax_codes.dtype == torch_codes.dtype == np.int32
    assert jax_codes.shape == torch_codes.shape == (1, 4 * channels, 65)
    assert len(np.unique(torch_codes)) > 20  # many different codes: the comparison has teeth
    assert (jax_codes == torch_codes).mean() >= MIN_EQUAL_CODES
    if variant == "stereo":  # L0, R0, L1, R1, ...: the left channel's codes are the mono codec's
        left = codecs[variant, "torch"].encode(audio[:, :1], 44100)[:, ::2]
        np.testing.assert_array_equal(jax_codes[:, ::2], left)
        assert not np.array_equal(jax_codes[:, ::2], jax_codes[:, 1::2])


def test_stereo_stream_and_long_decode_are_the_same_on_both_backends(codecs):
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2048, (2, 8, 40), np.int32)  # [batch, L0 R0 L1 R1 ..., frames]
    whole = codecs["stereo", "torch"].decode(codes)
    for backend in ("torch", "jax"):
        codec = codecs["stereo", backend]
        stream = codec.streaming_decoder()
        stream.warm_up(7, batch=2)  # either backend takes it; the stream itself is untouched
        assert stream.frames_received == 0
        pieces = [stream.push(codes[..., start : start + 7]) for start in range(0, 40, 7)] + [stream.flush()]
        assert all(isinstance(p, np.ndarray) and p.dtype == np.float32 for p in pieces)
        np.testing.assert_allclose(np.concatenate(pieces, -1), whole, rtol=0, atol=AUDIO_ATOL)
        np.testing.assert_allclose(codec.decode(codes, chunk_frames=9), whole, rtol=0, atol=AUDIO_ATOL)
        np.testing.assert_allclose(codec.decode(codes), whole, rtol=0, atol=AUDIO_ATOL)
    with pytest.raises(ValueError, match="2-channel codec takes 2 x"):
        codecs["stereo", "jax"].decode(codes[:, :7])


# ---------------------------------------------------------------------------------- entry points


def test_cli_takes_the_backend_and_refuses_a_bad_one(tiny_jax_dir, tmp_path, monkeypatch, capsys):
    from musicgen_jax.cli.main import main

    loaded = []
    real = MusicGen.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        loaded.append(real(cls, *args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(MusicGen, "from_pretrained", classmethod(spy))
    output = tmp_path / "out.wav"
    common = ["generate", "jazz", "--model", str(tiny_jax_dir), "--duration", "1", "--output", str(output)]
    assert main(common + ["--codec-backend", "torch"]) == 0
    assert output.is_file() and isinstance(loaded[-1].codec, EncodecBridge)
    capsys.readouterr()

    assert main(common[:-1] + [str(tmp_path / "never.wav"), "--codec-backend", "tpu"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: codec backend must be one of auto, jax, torch; got 'tpu'"]
    assert not (tmp_path / "never.wav").exists() and len(loaded) == 1


def test_server_settings_take_the_backend_and_refuse_a_bad_one(monkeypatch):
    from musicgen_jax.serving.settings import SettingsError, make_settings, parse_args

    assert make_settings().codec_backend == "auto"
    monkeypatch.setenv("MUSICGEN_CODEC_BACKEND", "torch")
    assert parse_args([]).codec_backend == "torch"
    assert parse_args(["--codec-backend", "jax"]).codec_backend == "jax"  # the flag wins
    monkeypatch.setenv("MUSICGEN_CODEC_BACKEND", "tpu")
    with pytest.raises(SettingsError, match=r"codec_backend: Input should be 'auto', 'jax' or 'torch'"):
        parse_args([])


def test_server_loads_the_model_with_its_backend(tiny_jax_dir, tmp_path, monkeypatch):
    from musicgen_jax.serving.service import MusicService
    from musicgen_jax.serving.settings import make_settings

    seen = []
    monkeypatch.setattr(
        MusicGen, "from_pretrained", classmethod(lambda cls, *a, **k: seen.append((a, k)) or _Stop())
    )
    settings = make_settings(
        model=str(tiny_jax_dir), codec_backend="torch", data_dir=tmp_path, warmup_batch_sizes=""
    )
    service = MusicService(settings, start_worker=False)
    try:
        with pytest.raises(_Stopped):
            service._load_and_warm()
    finally:
        service.audio_pool.shutdown()
        service.store.close()
    assert seen == [((str(tiny_jax_dir),), {"dtype": "auto", "codec_backend": "torch", "quantize": None})]


class _Stopped(Exception):
    pass


class _Stop:
    """A stand-in model whose first use ends the load (the test only wants the load's arguments)."""

    @property
    def engine(self):
        raise _Stopped


def test_tokenizer_takes_the_backend_and_refuses_a_bad_one(tiny_hf_dir, tmp_path, capsys):
    from musicgen_jax.data.tokenize import build_parser
    from musicgen_jax.data.tokenize.cli import main

    args = ["--audio-dir", str(tmp_path), "--codec", str(tiny_hf_dir), "--output", str(tmp_path / "out")]
    assert build_parser().parse_args(args).codec_backend == "auto"
    assert build_parser().parse_args(args + ["--codec-backend", "jax"]).codec_backend == "jax"
    assert main(args + ["--codec-backend", "tpu"]) == 2
    assert (
        capsys.readouterr().err.strip() == "error: codec backend must be one of auto, jax, torch; got 'tpu'"
    )
