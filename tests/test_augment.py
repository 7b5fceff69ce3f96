"""Waveform augmentation: each transform does what it says on a known signal, probability 0 is the
identity, every transform is reproducible under a seed, and the config loads from YAML."""

from __future__ import annotations

import math

import numpy as np
import pytest

from musicgen_jax import config_io
from musicgen_jax.data import augment
from musicgen_jax.data.augment import ORDER, AugmentConfig, Augmenter

RATE = 16000


def tone(frequency: float, duration: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(int(duration * RATE)) / RATE)).astype(
        np.float32
    )


def dominant_frequency(y: np.ndarray, rate: int = RATE) -> float:
    """Peak of the Hann-windowed, 8x zero-padded spectrum, refined by a parabola through the top bin."""
    size = 8 * len(y)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)), n=size))
    k = int(np.argmax(spectrum))
    left, centre, right = np.log(spectrum[k - 1 : k + 2] + 1e-30)
    offset = 0.5 * (left - right) / (left - 2 * centre + right)
    return (k + offset) * rate / size


def band_power(y: np.ndarray, low: float, high: float, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    frequencies = np.fft.rfftfreq(len(y), 1.0 / rate)
    return float(spectrum[(frequencies >= low) & (frequencies < high)].sum())


def harmonic_distortion(y: np.ndarray, fundamental: float) -> float:
    """Power at harmonics 2..10 over power at the fundamental (+-5 Hz bands)."""
    fundamental_power = band_power(y, fundamental - 5, fundamental + 5)
    harmonics = sum(band_power(y, k * fundamental - 5, k * fundamental + 5) for k in range(2, 11))
    return harmonics / fundamental_power


def only(name: str, **parameters) -> AugmentConfig:
    """A config with just ``name`` on, always."""
    return config_io.from_dict(AugmentConfig, {name: {"probability": 1.0, **parameters}})


# ----------------------------------------------------------------------------- each transform


@pytest.mark.parametrize("semitones, expected", [(12.0, 440.0), (-12.0, 110.0), (7.0, 220.0 * 2 ** (7 / 12))])
def test_pitch_shift_scales_the_fundamental(semitones, expected):
    shifted = augment.pitch_shift(tone(220.0), RATE, semitones)
    assert len(shifted) == RATE
    assert dominant_frequency(shifted) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_time_stretch_changes_duration_not_pitch(rate):
    stretched = augment.time_stretch(tone(440.0), rate)
    assert len(stretched) == pytest.approx(RATE / rate, abs=1)
    assert dominant_frequency(stretched) == pytest.approx(440.0, rel=0.01)


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr", [0.0, 10.0, 30.0])
def test_noise_at_target_snr(color, snr):
    clean = np.stack([tone(440.0), tone(550.0)])
    noisy = augment.add_noise(clean, snr, np.random.default_rng(0), color)
    noise = noisy - clean
    assert 10 * math.log10(
        np.mean(clean.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2)
    ) == pytest.approx(snr, abs=0.01)
    # White noise has equal power per hertz (an octave up holds twice the power); pink per octave.
    ratio_db = 10 * math.log10(band_power(noise[0], 2000, 4000) / band_power(noise[0], 1000, 2000))
    assert ratio_db == pytest.approx(3.0 if color == "white" else 0.0, abs=1.0)


def test_time_mask_zeros_the_region_with_fades_outside():
    audio = np.ones((2, 1000), np.float32)
    masked = augment.time_mask(audio, 400, 600, fade=10)
    assert np.all(masked[:, 400:600] == 0.0)
    assert np.all(masked[:, :390] == 1.0) and np.all(masked[:, 610:] == 1.0)
    assert masked[0, 399] == pytest.approx(1 / 11) and masked[0, 600] == pytest.approx(1 / 11)
    assert np.all(np.diff(masked[0, 389:400]) < 0) and np.all(np.diff(masked[0, 600:611]) > 0)


def test_frequency_mask_removes_the_band_only():
    audio = tone(500.0, amplitude=0.3) + tone(3000.0, amplitude=0.3)
    masked = augment.frequency_mask(audio, RATE, 400.0, 700.0)
    assert masked.shape == audio.shape
    middle = slice(2000, -2000)  # away from the STFT edges
    removed = band_power(masked[middle], 480, 520) / band_power(audio[middle], 480, 520)
    kept = band_power(masked[middle], 2980, 3020) / band_power(audio[middle], 2980, 3020)
    assert 10 * math.log10(removed) < -40.0
    assert 10 * math.log10(kept) == pytest.approx(0.0, abs=0.1)


def test_reverb_lengthens_the_decay():
    burst = np.zeros(2 * RATE, np.float32)
    burst[: RATE // 10] = np.random.default_rng(0).standard_normal(RATE // 10)  # 100 ms burst, then silence
    tail = slice(int(0.3 * RATE), int(0.6 * RATE))

    def tail_db(y):
        return 10 * math.log10(
            np.sum(y[tail].astype(np.float64) ** 2) / np.sum(burst.astype(np.float64) ** 2) + 1e-30
        )

    assert tail_db(burst) < -290  # dry: nothing after the burst
    short = augment.reverb(burst, RATE, 0.3, 0.5, np.random.default_rng(1))
    long = augment.reverb(burst, RATE, 1.2, 0.5, np.random.default_rng(1))
    assert short.shape == burst.shape
    assert -60.0 < tail_db(short) < tail_db(long) < -10.0
    response = augment.synthetic_impulse_response(RATE, 0.5, np.random.default_rng(2), channels=2)
    assert response.shape == (2, RATE // 2)
    assert np.linalg.norm(response, axis=1) == pytest.approx([1.0, 1.0])
    # The envelope reaches -60 dB at rt60: compare the first and last 10% of the response.
    first, last = response[:, : RATE // 20], response[:, -RATE // 20 :]
    assert 10 * math.log10(np.mean(first**2) / np.mean(last**2)) == pytest.approx(54.0, abs=4.0)


def test_distortion_raises_harmonic_content_and_keeps_the_peak():
    clean = tone(200.0)
    light, heavy = augment.distortion(clean, 6.0), augment.distortion(clean, 20.0)
    assert harmonic_distortion(clean, 200.0) < 1e-6
    assert 1e-3 < harmonic_distortion(light, 200.0) < harmonic_distortion(heavy, 200.0)
    assert np.max(np.abs(heavy)) == pytest.approx(np.max(np.abs(clean)), rel=1e-5)


def test_polymix_mixes_at_the_gain_and_merges_captions():
    audio, other = tone(440.0), tone(660.0, duration=0.25, amplitude=0.1)  # other is shorter: looped
    mixed = augment.polymix(audio, other, -6.0)
    added = mixed - audio
    assert np.sqrt(np.mean(added**2)) == pytest.approx(np.sqrt(np.mean(audio**2)) * 10 ** (-6 / 20), rel=1e-3)
    np.testing.assert_allclose(added[:4000], added[4000:8000], atol=1e-6)
    loud = augment.polymix(np.full(100, 0.9, np.float32), np.full(100, 0.9, np.float32), 0.0)
    assert np.max(np.abs(loud)) == pytest.approx(1.0)  # scaled down instead of clipping
    assert augment.merge_captions("piano", "drums") == "piano and drums"
    assert augment.merge_captions("", "drums") == "drums"
    audio_out, caption = Augmenter(only("polymix")).apply(
        audio, RATE, "piano", np.random.default_rng(0), other=(other, "drums")
    )
    assert caption == "piano and drums" and audio_out.shape == audio.shape


# ----------------------------------------------------------------------------- the augmenter


def everything_on() -> AugmentConfig:
    return config_io.from_dict(AugmentConfig, {name: {"probability": 1.0} for name in ORDER})


def test_probability_zero_is_the_identity():
    audio = np.stack([tone(440.0), tone(330.0)])
    parameters = {name: {"probability": 0.0} for name in ORDER}
    parameters["noise"].update(min_snr_db=0.0, max_snr_db=1.0)
    for config in (AugmentConfig(), config_io.from_dict(AugmentConfig, parameters)):
        out, caption, applied = Augmenter(config).apply_logged(
            audio, RATE, "piano", np.random.default_rng(0), (audio, "x")
        )
        assert np.array_equal(out, audio) and caption == "piano" and applied == ()


@pytest.mark.parametrize("name", ORDER)
def test_every_transform_is_reproducible_under_a_seed(name):
    audio = np.stack([tone(440.0, 0.5), tone(330.0, 0.5)])
    other = (tone(550.0, 0.5), "bells")
    augmenter = Augmenter(only(name))
    first, caption, applied = augmenter.apply_logged(audio, RATE, "piano", np.random.default_rng(7), other)
    second, _, _ = augmenter.apply_logged(audio, RATE, "piano", np.random.default_rng(7), other)
    third, _, _ = augmenter.apply_logged(audio, RATE, "piano", np.random.default_rng(8), other)
    assert [a.name for a in applied] == [name]
    assert caption == ("piano and bells" if name == "polymix" else "piano")
    assert first.dtype == np.float32 and first.shape[0] == 2
    assert np.array_equal(first, second)
    assert first.shape != third.shape or not np.array_equal(first, third)


def test_all_transforms_together_mono_and_stereo():
    augmenter = Augmenter(everything_on())
    mono, caption, applied = augmenter.apply_logged(
        tone(440.0), RATE, "piano", np.random.default_rng(0), (tone(220.0), "bass")
    )
    assert mono.ndim == 1 and np.all(np.isfinite(mono))
    assert caption == "piano and bass" and [a.name for a in applied] == list(ORDER)
    assert len(mono) == pytest.approx(RATE / logged(applied, "time_stretch")["rate"], abs=1)
    stereo, _, applied = augmenter.apply_logged(
        np.stack([tone(440.0), tone(330.0)]), RATE, "piano", np.random.default_rng(0)
    )
    assert [a.name for a in applied] == [name for name in ORDER if name != "polymix"]  # no other clip
    assert stereo.shape == (2, pytest.approx(RATE / logged(applied, "time_stretch")["rate"], abs=1))


# ----------------------------------------------------------------------------- drawn parameters take effect


def logged(applied, name: str) -> dict:
    """The parameters ``name`` drew, from ``apply_logged``'s record of what fired."""
    (parameters,) = [a.parameters for a in applied if a.name == name]
    return parameters


def augment_with(name: str, audio, seed: int, other=None, **parameters):
    """``name`` alone, always on, with the ranges given: the output and the parameters it drew."""
    out, _, applied = Augmenter(only(name, **parameters)).apply_logged(
        audio, RATE, "piano", np.random.default_rng(seed), other
    )
    return out, logged(applied, name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drawn_pitch_shift_moves_the_tone_by_two_to_the_semitones_over_twelve(seed):
    shifted, drawn = augment_with("pitch_shift", tone(220.0), seed, min_semitones=-5, max_semitones=5)
    assert dominant_frequency(shifted) / 220.0 == pytest.approx(2 ** (drawn["semitones"] / 12), rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drawn_time_stretch_scales_the_duration_and_keeps_the_pitch(seed):
    stretched, drawn = augment_with("time_stretch", tone(440.0), seed, min_rate=0.8, max_rate=1.25)
    assert len(stretched) == pytest.approx(RATE / drawn["rate"], abs=1)
    assert dominant_frequency(stretched) == pytest.approx(440.0, rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drawn_noise_sits_at_the_drawn_snr(seed):
    clean = np.stack([tone(440.0), tone(550.0)])
    noisy, drawn = augment_with("noise", clean, seed, min_snr_db=0.0, max_snr_db=30.0)
    noise = (noisy - clean).astype(np.float64)
    measured = 10 * math.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))
    assert measured == pytest.approx(drawn["snr_db"], abs=0.01)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drawn_polymix_gain_sets_the_level_of_the_added_clip(seed):
    """A gain of g dB puts the added clip's RMS g dB from the clip's own (both quiet: no rescaling)."""
    audio, other = tone(440.0, amplitude=0.2), tone(660.0, amplitude=0.05)
    mixed, drawn = augment_with("polymix", audio, seed, (other, "bells"), min_gain_db=-12.0, max_gain_db=0.0)
    added = mixed - audio
    measured = 20 * math.log10(np.sqrt(np.mean(added**2)) / np.sqrt(np.mean(audio**2)))
    assert measured == pytest.approx(drawn["gain_db"], abs=0.01)
    np.testing.assert_allclose(added / np.max(np.abs(added)), other / np.max(np.abs(other)), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drawn_time_mask_silences_the_regions_it_logs_and_nothing_far_from_them(seed):
    audio = np.ones((2, RATE), np.float32)
    masked, drawn = augment_with("time_mask", audio, seed, max_fraction=0.3, count=2, fade_ms=1.0)
    fade = int(RATE / 1000)
    untouched = np.ones(RATE, bool)
    for start, end in drawn["regions"]:
        assert np.all(masked[:, start:end] == 0.0)
        untouched[max(0, start - fade) : end + fade] = False
    assert np.all(masked[:, untouched] == 1.0)


def test_layout_is_checked_like_everywhere_else():
    with pytest.raises(ValueError, match=r"looks like \[samples, channels\]"):
        augment.add_noise(np.zeros((RATE, 2), np.float32), 10.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="got shape"):
        augment.distortion(np.zeros((1, 2, 100), np.float32), 6.0)


def test_output_depends_only_on_the_generator_state():
    # grain hands random_map a pooled Philox generator whose state it resets per element.
    augmenter = Augmenter(everything_on())
    rng = np.random.Generator(np.random.Philox(key=5))
    state = rng.bit_generator.state
    first, _ = augmenter.apply(tone(440.0, 0.5), RATE, "piano", rng)
    rng.bit_generator.state = state
    second, _ = augmenter.apply(tone(440.0, 0.5), RATE, "piano", rng)
    assert np.array_equal(first, second)


def test_switching_one_transform_leaves_the_others_draws_alone():
    audio = tone(440.0)
    noise_only = Augmenter(only("noise")).apply_logged(audio, RATE, "", np.random.default_rng(3))[2]
    with_shift = Augmenter(
        config_io.from_dict(
            AugmentConfig, {"noise": {"probability": 1.0}, "pitch_shift": {"probability": 1.0}}
        )
    )
    both = with_shift.apply_logged(audio, RATE, "", np.random.default_rng(3))[2]
    assert [a.parameters for a in both if a.name == "noise"] == [a.parameters for a in noise_only]


def test_probabilities_are_respected():
    augmenter = Augmenter(config_io.from_dict(AugmentConfig, {"distortion": {"probability": 0.3}}))
    rng = np.random.default_rng(0)
    fired = sum(bool(augmenter.apply_logged(tone(440.0, 0.05), RATE, "", rng)[2]) for _ in range(400))
    assert 90 <= fired <= 150  # 120 expected; binomial sd 9


def test_config_from_yaml_and_its_errors(tmp_path):
    path = tmp_path / "augment.yaml"
    path.write_text(
        "pitch_shift: {probability: 0.3, min_semitones: -1, max_semitones: 1}\n"
        "noise: {probability: 0.2, color: pink}\n"
    )
    config = config_io.load(AugmentConfig, path)
    assert config.pitch_shift.probability == 0.3 and config.pitch_shift.max_semitones == 1.0
    assert config.noise.color == "pink" and config.reverb.probability == 0.0
    for bad, message in [
        ({"noise": {"probability": 1.5}}, "probability"),
        ({"time_stretch": {"min_rate": 1.2, "max_rate": 1.1}}, "min_rate"),
        ({"noise": {"color": "brown"}}, "brown"),
        ({"echo": {"probability": 1.0}}, "unknown key"),
    ]:
        with pytest.raises(config_io.ConfigError, match=message):
            config_io.from_dict(AugmentConfig, bad)
    with pytest.raises(ValueError, match="rng"):
        Augmenter(everything_on()).apply(tone(440.0), RATE, "", None)
