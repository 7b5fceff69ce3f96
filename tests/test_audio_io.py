"""Audio files: every format written, read back and measured; the normalisation targets; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from musicgen_jax.audio import (
    AUDIO_SUFFIXES,
    FORMATS,
    NORMALIZATIONS,
    as_channels_first,
    check_channels_first,
    integrated_loudness,
    load_audio,
    normalize_audio,
    resolve_format,
    save_audio,
    to_mono,
)
from musicgen_jax.audio.formats import DEFAULT_NORMALIZATION, MEDIA_TYPES
from musicgen_jax.audio.layout import MAX_CHANNELS, require_finite

SAMPLE_RATE = 32000
PCM16_STEP = 1.0 / 32768
# MP3 is lossy: its loudness and peaks move a little (measured: 0.1 dB); lossless formats only by
# 16-bit rounding.
LUFS_TOLERANCE = {"wav": 0.05, "flac": 0.05, "mp3": 0.5}


def music_like(channels: int, seconds: float = 3.0, level: float = 0.05, seed: int = 0) -> np.ndarray:
    """A quiet tone with tremolo plus noise: a loudness well below -14 LUFS, peaks well below 0 dBFS."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rows = [
        level * np.sin(2 * np.pi * (220 + 110 * c) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        + 0.2 * level * rng.standard_normal(t.size)
        for c in range(channels)
    ]
    return np.stack(rows).astype(np.float32)  # [channels, samples]


def rms_dbfs(audio: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(audio.mean(axis=0), dtype=np.float64))))


def peak_dbfs(audio: np.ndarray) -> float:
    return 20 * np.log10(np.abs(audio).max())


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("format", FORMATS)
def test_every_format_round_trips_at_the_loudness_target(tmp_path, format, channels):
    audio = music_like(channels)
    assert integrated_loudness(audio, SAMPLE_RATE) < -25  # far from the target, so the gain is real
    path = save_audio(tmp_path / f"song.{format}", audio, SAMPLE_RATE)
    assert path == tmp_path / f"song.{format}" and path.is_file()
    assert soundfile.info(str(path)).format == format.upper()

    back, rate = load_audio(path)
    assert rate == SAMPLE_RATE
    assert back.dtype == np.float32 and back.shape[0] == channels
    if format == "mp3":  # libsndfile's decoder drops the encoder delay; allow a frame either way
        assert abs(back.shape[1] - audio.shape[1]) <= 1152
    else:
        assert back.shape == audio.shape
    assert integrated_loudness(back, rate) == pytest.approx(-14.0, abs=LUFS_TOLERANCE[format])
    assert peak_dbfs(back) <= -1.0 + (0.5 if format == "mp3" else 0.01)

    expected = normalize_audio(audio, SAMPLE_RATE, "loudness")
    if format == "mp3":
        length = min(back.shape[1], expected.shape[1])
        correlation = np.corrcoef(back[:, :length].ravel(), expected[:, :length].ravel())[0, 1]
        assert correlation > 0.99
    else:  # lossless: equal to the normalised signal up to 16-bit rounding
        np.testing.assert_allclose(back, expected, atol=PCM16_STEP)


@pytest.mark.parametrize("format", FORMATS)
def test_each_strategy_meets_its_target_after_writing(tmp_path, format):
    audio = music_like(2, seed=1)
    tolerance = 0.3 if format == "mp3" else 0.01
    measured = {}
    for strategy in NORMALIZATIONS:
        back, _ = load_audio(
            save_audio(tmp_path / f"{strategy}.{format}", audio, SAMPLE_RATE, normalization=strategy)
        )
        measured[strategy] = back
    assert peak_dbfs(measured["peak"]) == pytest.approx(-1.0, abs=tolerance)
    assert rms_dbfs(measured["rms"]) == pytest.approx(-18.0, abs=tolerance)
    # The input is in range, so "clip" and "none" leave it as it was.
    for strategy in ("clip", "none"):
        length = min(measured[strategy].shape[1], audio.shape[1])
        assert rms_dbfs(measured[strategy][:, :length]) == pytest.approx(rms_dbfs(audio), abs=tolerance)
    assert integrated_loudness(measured["loudness"], SAMPLE_RATE) == pytest.approx(
        -14.0, abs=LUFS_TOLERANCE[format]
    )


def test_loudness_never_clips_a_peaky_signal():
    # Sparse clicks over near-silence: reaching -14 LUFS would need peaks far above full scale.
    audio = np.zeros((1, 4 * SAMPLE_RATE), np.float32)
    audio[0, :: SAMPLE_RATE // 4] = 0.5
    audio += 1e-3 * np.random.default_rng(0).standard_normal(audio.shape).astype(np.float32)
    out = normalize_audio(audio, SAMPLE_RATE, "loudness")
    assert peak_dbfs(out) == pytest.approx(-1.0, abs=1e-4)  # the ceiling decided the gain
    assert integrated_loudness(out, SAMPLE_RATE) < -14.5


def test_rms_is_limited_by_the_peak_ceiling_and_clip_clamps():
    loud = np.concatenate([np.full(1000, 0.001), [0.9], np.full(1000, 0.001)]).astype(np.float32)
    assert np.abs(normalize_audio(loud, SAMPLE_RATE, "rms")).max() == pytest.approx(10 ** (-1 / 20), rel=1e-5)
    hot = (2.0 * np.sin(np.linspace(0, 60, 5000))).astype(np.float32)
    clipped = normalize_audio(hot, SAMPLE_RATE, "clip")
    assert np.abs(clipped).max() == pytest.approx(10 ** (-1 / 20), rel=1e-6)
    np.testing.assert_array_equal(normalize_audio(hot, SAMPLE_RATE, "none"), hot)


def test_short_clips_and_silence():
    short = music_like(1, seconds=0.2)  # shorter than one BS.1770 gating block
    assert np.isnan(integrated_loudness(short, SAMPLE_RATE))
    assert rms_dbfs(normalize_audio(short, SAMPLE_RATE, "loudness")) == pytest.approx(-14.0, abs=0.01)
    silence = np.zeros((2, SAMPLE_RATE), np.float32)
    for strategy in NORMALIZATIONS:
        out = normalize_audio(silence, SAMPLE_RATE, strategy)
        assert np.isfinite(out).all() and not out.any(), strategy


def test_suffixes_and_formats(tmp_path):
    assert resolve_format("take") == (Path("take.wav"), "wav")
    assert resolve_format("take.FLAC") == (Path("take.FLAC"), "flac")
    assert resolve_format("take", "mp3") == (Path("take.mp3"), "mp3")
    mono = music_like(1)[0]  # [samples] is mono
    assert save_audio(tmp_path / "plain", mono, SAMPLE_RATE) == tmp_path / "plain.wav"
    assert save_audio(tmp_path / "named", mono, SAMPLE_RATE, format="flac") == tmp_path / "named.flac"
    assert soundfile.info(str(tmp_path / "named.flac")).format == "FLAC"
    assert save_audio(tmp_path / "UPPER.MP3", mono, SAMPLE_RATE).suffix == ".MP3"
    assert load_audio(tmp_path / "plain.wav")[0].shape == (1, mono.size)
    # 24-bit WAV keeps more precision than the default 16.
    path = save_audio(tmp_path / "deep.wav", mono, SAMPLE_RATE, normalization="none", subtype="PCM_24")
    assert soundfile.info(str(path)).subtype == "PCM_24"
    np.testing.assert_allclose(load_audio(path)[0][0], mono, atol=2.0 / 2**23)
    # Overwriting replaces the file and leaves no temporary files behind.
    save_audio(tmp_path / "plain.wav", mono[:1000], SAMPLE_RATE)
    assert load_audio(tmp_path / "plain.wav")[0].shape == (1, 1000)
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_resamples_and_mixes_down(tmp_path):
    stereo = music_like(2)
    path = save_audio(tmp_path / "s.flac", stereo, SAMPLE_RATE, normalization="none")
    mono, rate = load_audio(path, mono=True)
    assert rate == SAMPLE_RATE and mono.shape == (1, stereo.shape[1])
    np.testing.assert_allclose(mono[0], stereo.mean(axis=0), atol=PCM16_STEP)
    low, rate = load_audio(path, sample_rate=16000)
    assert rate == 16000 and low.shape == (2, stereo.shape[1] // 2)
    # The 220 Hz tone survives resampling: the spectra peak at the same frequency.
    spectrum = np.abs(np.fft.rfft(low[0]))
    assert np.fft.rfftfreq(low.shape[1], 1 / 16000)[spectrum.argmax()] == pytest.approx(220, abs=1)


def test_errors_name_the_choices(tmp_path):
    audio = music_like(1)
    with pytest.raises(ValueError, match="loudness, peak, rms, clip, none"):
        save_audio(tmp_path / "a.wav", audio, SAMPLE_RATE, normalization="lufs")
    with pytest.raises(ValueError, match="wav, flac, mp3"):
        save_audio(tmp_path / "a.ogg", audio, SAMPLE_RATE)
    with pytest.raises(ValueError, match="wav, flac, mp3"):
        save_audio(tmp_path / "a", audio, SAMPLE_RATE, format="aac")
    with pytest.raises(ValueError, match="suffix .wav but format 'mp3'"):
        save_audio(tmp_path / "a.wav", audio, SAMPLE_RATE, format="mp3")
    with pytest.raises(ValueError, match="MP3 cannot hold 96000 Hz"):
        save_audio(tmp_path / "a.mp3", audio, 96000)
    with pytest.raises(ValueError, match=r"looks like \[samples, channels\]"):
        save_audio(tmp_path / "a.wav", audio.T, SAMPLE_RATE)
    with pytest.raises(ValueError, match="NaN"):
        save_audio(tmp_path / "a.wav", np.full((1, 100), np.nan), SAMPLE_RATE)
    with pytest.raises(ValueError, match="cannot encode"):
        save_audio(tmp_path / "a.wav", audio, SAMPLE_RATE, subtype="PCM_99")
    assert not list(tmp_path.iterdir())  # nothing written, no temporary left behind


def test_unwritable_and_unreadable_paths(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot create the directory for .*file/out.wav"):
        save_audio(blocker / "out.wav", music_like(1), SAMPLE_RATE)
    with pytest.raises(FileNotFoundError, match="cannot write .*missing/out.wav"):
        save_audio(tmp_path / "missing" / "out.wav", music_like(1), SAMPLE_RATE, make_parent_dir=False)
    nested = save_audio(tmp_path / "made" / "deep" / "out.wav", music_like(1), SAMPLE_RATE)
    assert nested.is_file()
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "absent.wav")
    with pytest.raises(ValueError, match="cannot read"):
        load_audio(blocker)


def test_channels_first_layout_is_one_check():
    mono = np.arange(5, dtype=np.float64)
    promoted = as_channels_first(mono)
    assert promoted.shape == (1, 5) and promoted.dtype == np.float32
    np.testing.assert_array_equal(promoted[0], mono)
    stereo = np.array([[1.0, 3.0, 5.0], [3.0, 5.0, 7.0]])
    np.testing.assert_array_equal(as_channels_first(stereo), stereo)
    np.testing.assert_array_equal(to_mono(stereo), [2.0, 4.0, 6.0])
    # Up to MAX_CHANNELS rows is a channel layout, even over few columns; one more over few is not.
    check_channels_first(np.zeros((MAX_CHANNELS, MAX_CHANNELS)))
    check_channels_first(np.zeros((MAX_CHANNELS + 1, MAX_CHANNELS + 1)))
    with pytest.raises(ValueError, match=r"shape \(9, 8\) looks like \[samples, channels\]; pass \[channels"):
        as_channels_first(np.zeros((MAX_CHANNELS + 1, MAX_CHANNELS)))
    with pytest.raises(ValueError, match=r"looks like \[batch, samples, channels\]; pass \[batch, channels"):
        check_channels_first(np.zeros((2, 640, 1)))
    with pytest.raises(ValueError, match=r"\[channels, samples\] or \[samples\], got shape \(1, 2, 3\)"):
        as_channels_first(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="reference contains NaN"):
        require_finite(np.array([0.0, np.inf]), "reference")


def test_formats_and_normalizations_are_named_once_and_agree():
    for format in FORMATS:
        assert resolve_format(f"clip.{format}")[1] == format
        assert f".{format}" in AUDIO_SUFFIXES  # what is written can be found again by suffix
    assert set(MEDIA_TYPES) == set(FORMATS)
    assert DEFAULT_NORMALIZATION in NORMALIZATIONS
    for strategy in NORMALIZATIONS:
        normalize_audio(music_like(1), SAMPLE_RATE, strategy)  # every named strategy is implemented
