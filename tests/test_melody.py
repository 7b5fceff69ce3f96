"""MusicGen-melody: parity with transformers' ``MusicgenMelodyForConditionalGeneration`` on random
tiny checkpoints (mono and stereo), the prefilled cache, conversion both ways, greedy generation.

Tolerance as tests/test_model_parity.py: relative error (max |ours - theirs| / max |theirs|) at
most 1e-5 in float32.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers_reference as reference
from safetensors.numpy import load_file

from musicgen_jax import MusicGen
from musicgen_jax.conditioning.melody import MelodyError, chroma_batch, fit_chroma, null_chroma
from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion import (
    convert_from_transformers,
    export_to_transformers,
    load_transformers_params,
)
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.models.musicgen import MusicGenModel

pytestmark = pytest.mark.usefixtures("float32_matmuls")

RTOL = 1e-5
PROMPTS = ["upbeat jazz piano with smooth saxophone and soft drums", "dark techno"]  # padded batch
VARIANTS = ["melody", "stereo-melody"]


def relative_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def one_hot_chroma(rows: int, frames: int, seed: int) -> np.ndarray:
    """``[rows, frames, 12]`` float32, one pitch class a frame as the feature extractor gives, each
    row a different melody."""
    rng = np.random.default_rng(seed)
    chroma = np.zeros((rows, frames, 12), np.float32)
    bins = rng.integers(0, 12, (rows, frames))
    chroma[np.arange(rows)[:, None], np.arange(frames)[None], bins] = 1
    assert rows == 1 or not np.array_equal(chroma[0], chroma[1])
    return chroma


# ----------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "preset, shape, codebooks",
    [
        ("melody", (1536, 48, 24, 6144), 4),
        ("melody-large", (2048, 48, 32, 8192), 4),
        ("stereo-melody", (1536, 48, 24, 6144), 8),
        ("stereo-melody-large", (2048, 48, 32, 8192), 8),
    ],
)
def test_published_melody_presets(preset, shape, codebooks):
    config = MusicGenConfig.preset(preset)
    dec = config.decoder
    assert (dec.hidden_size, dec.num_layers, dec.num_heads, dec.ffn_dim) == shape
    assert dec.num_codebooks == codebooks and dec.audio_channels == codebooks // 4
    assert not dec.cross_attention and config.is_melody
    assert (config.melody.num_chroma, config.melody.chroma_length) == (12, 235)
    assert config.text_encoder.d_model == 768 and config.conditioning.text_padding == "zeros_attended"
    # transformers' defaults are the published melody numbers.
    from transformers import MusicgenMelodyConfig

    defaults = MusicgenMelodyConfig()
    assert (defaults.num_chroma, defaults.chroma_length) == (12, 235)
    # The full-size parameter tree, by jax.eval_shape only: no cross-attention, a chroma projection.
    shapes = ckpt.expected_shapes(config)
    assert shapes[("chroma_projection", "kernel")] == (12, shape[0])
    assert not any("cross_attention" in part for path in shapes for part in path)
    assert shapes[("decoder", "layers", "fc1", "kernel")] == (shape[1], shape[0], shape[3])


@pytest.mark.parametrize("preset", ["melody", "stereo-melody-large", "tiny-melody", "tiny-stereo-melody"])
def test_config_round_trips_through_transformers(preset):
    config = MusicGenConfig.preset(preset)
    hf = config.to_transformers(
        audio_encoder={"model_type": "encodec"} if config.audio.codec_shape is None else None
    )
    assert type(hf).__name__ == "MusicgenMelodyConfig"
    back = MusicGenConfig.from_transformers(hf, name=config.name)
    assert back.decoder == config.decoder
    assert back.text_encoder == config.text_encoder
    assert back.melody == config.melody and back.conditioning == config.conditioning


def test_melody_config_rules():
    config = MusicGenConfig.preset("tiny-melody")
    with pytest.raises(ValueError, match="text_padding must be 'zeros_attended'"):
        config.with_text_padding("mask")
    with pytest.raises(ValueError, match="no cross-attention"):
        MusicGenConfig.preset("tiny", ["decoder.cross_attention=false"])
    with pytest.raises(ValueError, match="no cross-attention"):
        MusicGenConfig.preset("tiny-melody", ["decoder.cross_attention=true"])


def test_chroma_fitting_repeats_whole_and_cuts():
    chroma = one_hot_chroma(1, 3, 0)[0]
    fitted = fit_chroma(chroma, 8)
    np.testing.assert_array_equal(fitted, np.concatenate([chroma, chroma, chroma[:2]]))
    np.testing.assert_array_equal(fit_chroma(one_hot_chroma(1, 10, 1)[0], 4), one_hot_chroma(1, 10, 1)[0, :4])
    batch = chroma_batch([chroma, None], 12, 5)
    np.testing.assert_array_equal(batch[1], null_chroma(12, 5))
    with pytest.raises(MelodyError, match=r"\[frames, 12\]"):
        chroma_batch([np.zeros((4, 11))], 12, 5)


# ----------------------------------------------------------------------------------- logits


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("frames", [7, 30])  # shorter than chroma_length (repeated), longer (cut)
def test_logits_match_transformers(tiny_hf_dirs, variant, frames):
    directory = tiny_hf_dirs(variant)
    config, params = load_transformers_params(directory)
    assert config.is_melody and not config.decoder.cross_attention
    hf, tokenizer = reference.load(directory, melody=True)
    text = reference.text_inputs(tokenizer, PROMPTS)
    assert text["attention_mask"].numpy().min() == 0, "the batch must be padded"
    chroma = one_hot_chroma(2, frames, frames)
    ids = np.random.default_rng(1).integers(
        0, config.decoder.vocab_size + 1, (2, config.decoder.num_codebooks, 11)
    )
    theirs = reference.teacher_forced_logits(hf, ids, **text, input_features=torch.tensor(chroma))
    ours = MusicGenModel(config).apply(
        {"params": params},
        jnp.asarray(text["input_ids"].numpy()),
        jnp.asarray(text["attention_mask"].numpy()),
        jnp.asarray(ids),
        chroma=jnp.asarray(chroma),
    )
    assert ours.shape == theirs.shape
    assert relative_error(ours, theirs) <= RTOL
    # The melody matters: another melody gives other logits.
    other = MusicGenModel(config).apply(
        {"params": params},
        jnp.asarray(text["input_ids"].numpy()),
        jnp.asarray(text["attention_mask"].numpy()),
        jnp.asarray(ids),
        chroma=jnp.asarray(chroma[::-1]),
    )
    assert relative_error(other, theirs) > 1e-3


def test_no_melody_is_transformers_default_chroma(tiny_hf_dirs):
    """Without ``input_features`` transformers conditions on bin 0, one-hot: so do we."""
    directory = tiny_hf_dirs("melody")
    config, params = load_transformers_params(directory)
    hf, tokenizer = reference.load(directory, melody=True)
    text = reference.text_inputs(tokenizer, PROMPTS)
    ids = np.random.default_rng(2).integers(0, 2049, (2, 4, 6))
    theirs = reference.teacher_forced_logits(hf, ids, **text)
    ours = MusicGenModel(config).apply(
        {"params": params},
        jnp.asarray(text["input_ids"].numpy()),
        jnp.asarray(text["attention_mask"].numpy()),
        jnp.asarray(ids),
    )
    assert relative_error(ours, theirs) <= RTOL


def test_null_condition_is_transformers_unconditional_half(tiny_hf_dirs):
    """transformers' guidance rows: zero text states (text mask 0) and the null chroma (bin 0),
    projected and repeated; given to its decoder as ``encoder_hidden_states``."""
    directory = tiny_hf_dirs("stereo-melody")
    config, params = load_transformers_params(directory)
    hf, _ = reference.load(directory, melody=True)
    text_len, length = 5, 6
    null = torch.zeros((1, 1, 12))
    null[:, :, 0] = 1
    with torch.no_grad():
        chroma = hf.audio_enc_to_dec_proj(null).repeat(1, config.melody.chroma_length, 1)
    prefix = torch.cat([chroma, torch.zeros((1, text_len, config.decoder.hidden_size))], dim=1)
    ids = np.random.default_rng(3).integers(0, 2049, (1, 8, length))
    theirs = reference.teacher_forced_logits(hf, ids, encoder_hidden_states=prefix)

    model = MusicGenModel(config)
    variables = {"params": params}
    memory, mask = model.apply(
        variables,
        jnp.ones((1, text_len), jnp.int32),
        jnp.ones((1, text_len), jnp.int32),
        None,
        True,
        jnp.asarray(one_hot_chroma(1, 4, 3)),
        method=MusicGenModel.encode,
    )
    assert memory.shape == (1, config.melody.chroma_length + text_len, config.decoder.hidden_size)
    null_memory, null_mask = model.apply(variables, memory, mask, method=MusicGenModel.null_condition)
    ours = model.apply(variables, jnp.asarray(ids), null_memory, null_mask, method=MusicGenModel.decode)
    assert bool(null_mask.all())
    assert relative_error(ours, theirs) <= RTOL


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_decoding_equals_full_forward(tiny_hf_dirs, variant):
    """The prefix is prefilled once; a prompt chunk and single steps then equal the full pass, and
    a ``kv_length`` bound counts positions past the prefix."""
    config, params = load_transformers_params(tiny_hf_dirs(variant))
    model = MusicGenModel(config)
    variables = {"params": params}
    rng = np.random.default_rng(4)
    ids = jnp.asarray(rng.integers(3, 100, (2, 7)), jnp.int32)
    mask = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3], jnp.int32)
    tokens = jnp.asarray(rng.integers(0, 2049, (2, config.decoder.num_codebooks, 12)), jnp.int32)
    chroma = jnp.asarray(one_hot_chroma(2, 5, 4))
    memory, memory_mask = model.apply(variables, ids, mask, None, True, chroma, method=MusicGenModel.encode)
    full = np.asarray(model.apply(variables, tokens, memory, memory_mask, method=MusicGenModel.decode))

    cache = model.apply(variables, memory, memory_mask, 16, method=MusicGenModel.init_cache)
    prefix = config.melody.chroma_length + 7
    assert cache.prefix_length == prefix and int(cache.index) == prefix
    assert cache.max_length == prefix + 16
    chunk, cache = model.apply(variables, tokens[:, :, :5], cache, 8, method=MusicGenModel.decode_step)
    steps = [np.asarray(chunk)]
    for t in range(5, 12):
        step, cache = model.apply(
            variables, tokens[:, :, t : t + 1], cache, 12, method=MusicGenModel.decode_step
        )
        steps.append(np.asarray(step))
    assert int(cache.index) == prefix + 12
    assert relative_error(np.concatenate(steps, axis=2), full) <= RTOL


# ------------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_to_jax_to_transformers_is_bit_exact(tiny_hf_dirs, variant, tmp_path):
    from transformers import MusicgenMelodyForConditionalGeneration

    source = tiny_hf_dirs(variant)
    jax_dir = convert_from_transformers(source, tmp_path / "jax")
    config = ckpt.load_config(jax_dir)
    assert config.is_melody and config.melody == MusicGenConfig.preset(f"tiny-{variant}").melody
    exported = export_to_transformers(jax_dir, tmp_path / "hf")
    original, back = load_file(source / "model.safetensors"), load_file(exported / "model.safetensors")
    # Every tensor of the original (transformers saves no sinusoidal table) comes back bit-exact.
    assert set(back) == set(original)
    assert "audio_enc_to_dec_proj.weight" in back and not any("encoder_attn" in k for k in back)
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype and np.array_equal(back[name], tensor), name
    assert json.loads((exported / "config.json").read_text())["model_type"] == "musicgen_melody"
    reloaded = MusicgenMelodyForConditionalGeneration.from_pretrained(exported)
    assert reloaded.config.chroma_length == config.melody.chroma_length
    # And the exported directory converts to the same parameters again.
    _, params = load_transformers_params(exported)
    _, first = ckpt.load_checkpoint(jax_dir)
    from flax import traverse_util

    flat_a, flat_b = traverse_util.flatten_dict(first), traverse_util.flatten_dict(params)
    assert flat_a.keys() == flat_b.keys()
    assert all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)


# ------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_with_guidance_equals_transformers(tiny_hf_dirs, variant):
    directory = tiny_hf_dirs(variant)
    model = MusicGen.from_pretrained(directory, dtype="float32")
    delays = model.num_codebooks // model.audio_channels
    frames = 100  # the issue asks for at least 100 steps
    chroma = one_hot_chroma(2, 9, 5)  # a different melody per row
    want = reference.generate(
        directory,
        PROMPTS,
        frames + delays - 1,
        melody_chroma=chroma,
        do_sample=False,
        guidance_scale=3.0,
    ).codes
    got = model.generate_tokens(
        PROMPTS, duration=frames / model.frame_rate, greedy=True, guidance_scale=3.0, melody_chroma=chroma
    )
    assert want.shape == got.shape == (2, model.num_codebooks, frames)
    np.testing.assert_array_equal(got, want)


def test_sampling_and_beams_run_on_a_melody_model(tiny_hf_dirs):
    model = MusicGen.from_pretrained(tiny_hf_dirs("melody"), dtype="float32")
    chroma = one_hot_chroma(1, 9, 6)[0]
    first = model.generate_tokens(["calm piano"], duration=1.0, seed=3, melody_chroma=chroma)
    again = model.generate_tokens(["calm piano"], duration=1.0, seed=3, melody_chroma=chroma)
    np.testing.assert_array_equal(first, again)
    beams = model.generate_tokens(["calm piano"], duration=1.0, num_beams=2, melody_chroma=chroma)
    assert first.shape == beams.shape == (1, 4, 50)


def test_a_text_model_refuses_a_melody(tiny_hf_dir):
    model = MusicGen.from_pretrained(tiny_hf_dir, dtype="float32")
    with pytest.raises(MelodyError, match="not a melody model"):
        model.generate_tokens(["calm piano"], duration=1.0, melody_chroma=null_chroma(12, 4))


# ------------------------------------------------------------------------- chroma from audio

N_FFT, HOP, RATE = 16384, 4096, 32000


def reference_chroma(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``MusicgenMelodyFeatureExtractor``'s steps (its own class needs torchaudio, not built here):
    torchaudio's ``Spectrogram(n_fft=16384, hop_length=4096, power=2, center=True,
    normalized=True)`` as ``torch.stft``, transformers' ``chroma_filter_bank``, the inf-norm and the
    one-hot. Mono 32 kHz ``[samples]`` in; (normalised chroma, one-hot) ``[frames, 12]`` out."""
    from transformers.audio_utils import chroma_filter_bank

    wav = torch.tensor(np.asarray(audio, np.float32))[None]
    if wav.shape[-1] < N_FFT:
        pad = N_FFT - wav.shape[-1]
        wav = torch.nn.functional.pad(wav, (pad // 2, pad // 2 + pad % 2))
    window = torch.hann_window(N_FFT)
    stft = torch.stft(wav, N_FFT, HOP, N_FFT, window, center=True, pad_mode="reflect", return_complex=True)
    spec = (stft / window.pow(2).sum().sqrt()).abs().pow(2)
    filters = torch.from_numpy(chroma_filter_bank(N_FFT, 12, RATE, tuning=0)).float()
    raw = torch.einsum("cf,...ft->...ct", filters, spec)
    norm = torch.nn.functional.normalize(raw, p=float("inf"), dim=-2, eps=1e-6).transpose(1, 2)
    one_hot = torch.zeros_like(norm).scatter_(-1, norm.argmax(-1, keepdim=True), 1)
    return norm[0].numpy(), one_hot[0].numpy()


def melody_audio(seconds: float, seed: int, channels: int = 1) -> np.ndarray:
    """Notes of random pitch, a quarter second each, with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 220 * 2 ** (rng.integers(0, 24, int(np.ceil(seconds * 4))) / 12)
    tone = np.sin(2 * np.pi * np.cumsum(pitch[(t * 4).astype(int)]) / RATE)
    audio = 0.5 * tone + 0.05 * rng.standard_normal((channels, t.size))
    return audio.astype(np.float32)


def test_chroma_filter_bank_equals_transformers():
    from transformers.audio_utils import chroma_filter_bank as theirs

    from musicgen_jax.conditioning.melody import chroma_filter_bank

    for n_fft, rate in ((N_FFT, RATE), (2048, 22050)):
        np.testing.assert_allclose(
            chroma_filter_bank(n_fft, 12, rate), theirs(n_fft, 12, rate, tuning=0), rtol=1e-12, atol=1e-15
        )


@pytest.mark.parametrize(
    "seconds, channels", [(5.0, 1), (0.3, 1), (3.0, 2), (31.0, 1)]
)  # typical, shorter than n_fft (padded), stereo (mean), past 30 s (cut)
def test_chroma_from_audio_equals_the_feature_extractor_steps(seconds, channels):
    from musicgen_jax.conditioning.melody import chroma_from_audio

    audio = melody_audio(seconds, int(seconds * 10) + channels, channels)
    mono = audio.mean(axis=0)[: 30 * RATE]
    theirs_norm, theirs = reference_chroma(mono)
    ours_norm = chroma_from_audio(audio if channels == 2 else audio[0], RATE, one_hot=False)
    ours = chroma_from_audio(audio if channels == 2 else audio[0], RATE)
    assert ours.shape == theirs.shape == (1 + max(mono.size, N_FFT) // HOP, 12)
    np.testing.assert_allclose(ours_norm, theirs_norm, atol=1e-4)
    np.testing.assert_array_equal(ours, theirs)
    assert len(np.unique(ours.argmax(-1))) > 1 or seconds < 1  # the melody moves between pitch classes
    if seconds > 30:
        assert ours.shape[0] == 235  # chroma_length of Meta's melody checkpoints


def test_generate_with_melody_audio_equals_transformers(tiny_hf_dirs):
    """``melody=`` audio through our chroma, against transformers fed the reference chroma."""
    directory = tiny_hf_dirs("melody")
    model = MusicGen.from_pretrained(directory, dtype="float32")
    audio = [melody_audio(2.0, 7)[0], melody_audio(2.0, 8)[0]]
    chroma = np.stack([reference_chroma(a)[1] for a in audio])
    frames = 50
    want = reference.generate(
        directory, PROMPTS, frames + 3, melody_chroma=chroma, do_sample=False, guidance_scale=3.0
    ).codes
    got = model.generate_tokens(
        PROMPTS, duration=1.0, greedy=True, guidance_scale=3.0, melody=audio, melody_sample_rate=RATE
    )
    np.testing.assert_array_equal(got, want)
    # Audio at another rate is resampled first.
    resampled = model.generate_tokens(
        PROMPTS[:1], duration=1.0, greedy=True, melody=audio[0][::2].copy(), melody_sample_rate=RATE // 2
    )
    assert resampled.shape == (1, 4, frames)
