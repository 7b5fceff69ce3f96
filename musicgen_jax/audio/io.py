"""Writing and reading audio files: WAV, FLAC and MP3 through soundfile (libsndfile >= 1.1).

Audio is float ``[channels, samples]`` (``[samples]`` is taken as mono). :func:`save_audio`
normalises (see :mod:`musicgen_jax.audio.normalize`), then writes atomically: to a temporary file
beside the target, renamed into place once complete, so a server never hands out half a file.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from musicgen_jax.audio.formats import DEFAULT_NORMALIZATION, FORMATS
from musicgen_jax.audio.layout import as_channels_first, require_finite
from musicgen_jax.audio.normalize import (
    DEFAULT_PEAK_DB,
    DEFAULT_RMS_DB,
    DEFAULT_TARGET_LUFS,
    check_strategy,
    normalize_audio,
)

logger = logging.getLogger(__name__)

_SOUNDFILE_FORMAT = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3"}
# 16-bit PCM for WAV and FLAC (audiocraft's default); MP3 at constant ~320 kbps (audiocraft's rate).
_DEFAULT_SUBTYPE = {"wav": "PCM_16", "flac": "PCM_16", "mp3": "MPEG_LAYER_III"}
MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def save_audio(
    path: str | os.PathLike,
    audio: Any,
    sample_rate: int,
    format: str | None = None,
    normalization: str = DEFAULT_NORMALIZATION,
    *,
    target_lufs: float = DEFAULT_TARGET_LUFS,
    peak_db: float = DEFAULT_PEAK_DB,
    rms_db: float = DEFAULT_RMS_DB,
    subtype: str | None = None,
    make_parent_dir: bool = True,
) -> Path:
    """Normalise ``audio`` ``[channels, samples]`` and write it to ``path``; return the path written.

    ``format`` is ``wav``, ``flac`` or ``mp3``; by default the suffix decides, and a path without
    one gets ``.wav``. ``normalization`` is one of ``loudness`` (default, ``target_lufs`` with a
    ``peak_db`` ceiling), ``peak``, ``rms``, ``clip``, ``none``. ``subtype`` overrides the sample
    encoding (``PCM_16`` default, ``PCM_24``; ``FLOAT``/``DOUBLE`` for WAV). Integer and MP3
    encodings clip at full scale, so ``none`` logs a warning when the audio exceeds it. Missing
    parent directories are created unless ``make_parent_dir`` is false (as audiocraft's ``audio_write``).
    """
    path, format = resolve_format(Path(path), format)
    check_strategy(normalization)
    audio = as_channels_first(audio)  # [channels, samples]
    require_finite(audio)
    if audio.shape[1] == 0:
        raise ValueError("cannot write audio with no samples")
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if format == "mp3":
        if sample_rate not in MP3_SAMPLE_RATES:
            raise ValueError(
                f"MP3 cannot hold {sample_rate} Hz audio; "
                f"resample to one of {', '.join(map(str, MP3_SAMPLE_RATES))}"
            )
        if audio.shape[0] > 2:
            raise ValueError(f"MP3 holds mono or stereo, not {audio.shape[0]} channels")
    if make_parent_dir:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(
                error.errno, f"cannot create the directory for {path}: {error.strerror or error}"
            ) from None
    audio = normalize_audio(
        audio, sample_rate, normalization, target_lufs=target_lufs, peak_db=peak_db, rms_db=rms_db
    )
    subtype = (subtype or _DEFAULT_SUBTYPE[format]).upper()
    if subtype not in ("FLOAT", "DOUBLE"):
        if np.max(np.abs(audio)) > 1.0:
            logger.warning(
                "%s: audio exceeds full scale and is clipped (normalization=%r)", path, normalization
            )
        audio = np.clip(audio, -1.0, 1.0)
    _write_atomically(path, audio, sample_rate, format, subtype)
    return path


def load_audio(
    path: str | os.PathLike, sample_rate: int | None = None, mono: bool = False
) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``[channels, samples]`` and its sample rate.

    ``sample_rate`` resamples (soxr) to that rate; ``mono`` averages the channels to ``[1, samples]``.
    """
    import soundfile

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no audio file at {path}")
    if not path.is_file():
        raise IsADirectoryError(f"{path} is not a file")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [samples, channels]
    except (soundfile.SoundFileError, RuntimeError) as error:  # libsndfile could not decode it
        raise ValueError(f"cannot read {path} as audio: {error}") from None
    audio = np.ascontiguousarray(data.T)  # [channels, samples]
    if mono and audio.shape[0] > 1:
        audio = audio.mean(axis=0, keepdims=True)
    if sample_rate is not None and int(sample_rate) != rate:
        audio, rate = resample(audio, rate, int(sample_rate)), int(sample_rate)
    return audio, int(rate)


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``[..., samples]`` float audio with soxr (high quality); a no-op at equal rates."""
    audio = np.asarray(audio, np.float32)
    if source_rate == target_rate:
        return audio
    if source_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {source_rate} -> {target_rate}")
    import soxr

    leading = audio.shape[:-1]
    flat = audio.reshape(-1, audio.shape[-1]).T  # [samples, rows]: soxr takes channels last
    out = soxr.resample(np.ascontiguousarray(flat), source_rate, target_rate, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32).reshape(*leading, -1)


def resolve_format(path: str | os.PathLike, format: str | None = None) -> tuple[Path, str]:
    """The path that will be written and its format: ``format`` (``wav``, ``flac``, ``mp3``) or the
    suffix decides; they must agree; a path without a suffix gets the format's (``.wav`` by default).
    ValueError names the valid formats."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if format is not None:
        format = format.lower().lstrip(".")
        if format not in FORMATS:
            raise ValueError(f"unknown audio format {format!r}; choose one of {', '.join(FORMATS)}")
        if not suffix:
            return path.with_name(f"{path.name}.{format}"), format
        if suffix != format:
            raise ValueError(f"{path} has suffix .{suffix} but format {format!r} was asked for")
        return path, format
    if not suffix:
        return path.with_name(f"{path.name}.wav"), "wav"
    if suffix not in FORMATS:
        raise ValueError(
            f"unknown audio format {suffix!r} (from {path.name}); choose one of {', '.join(FORMATS)}"
        )
    return path, suffix


def _write_atomically(path: Path, audio: np.ndarray, sample_rate: int, format: str, subtype: str) -> None:
    import soundfile

    options = {}
    if format == "mp3":  # constant bitrate at the highest quality: ~320 kbps
        options = {"compression_level": 0.0, "bitrate_mode": "CONSTANT"}
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "xb") as file:  # Python's open, so OS errors say what went wrong
            # soundfile takes [samples, channels]
            soundfile.write(
                file, audio.T, sample_rate, subtype=subtype, format=_SOUNDFILE_FORMAT[format], **options
            )
        os.replace(temporary, path)
    except (soundfile.LibsndfileError, ValueError, TypeError) as error:  # bad subtype or parameters
        temporary.unlink(missing_ok=True)
        raise ValueError(f"cannot encode {path} as {format} ({subtype}): {error}") from None
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OSError(error.errno, f"cannot write {path}: {error.strerror or error}") from None
