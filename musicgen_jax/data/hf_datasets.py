"""Hugging Face ``datasets`` datasets as tokenisation sources: an audio column and text or metadata
columns, as transformers users hold their data.

The dataset is a directory written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``, whose
split is taken), parquet files (a file, or a glob), or anything ``datasets.load_dataset`` opens (a
hub name, a local data directory such as an ``audiofolder``). Each row is one source: its audio is
read only when the row is tokenised, the caption is the text column and the other columns named like
audiocraft's metadata fields (``genre``, ``moods``, ``bpm``, ``key``, ``instrument``, ...) are its
metadata.

Audio columns are read without ``datasets``' own decoding (``Audio(decode=False)``, which would need
torchcodec): the stored bytes or file are decoded with soundfile, and a column of plain
``{"array", "sampling_rate"}`` values is taken as it is.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import io
from pathlib import Path
from typing import Any

import numpy as np

from musicgen_jax.audio.io import load_audio
from musicgen_jax.data.manifest import AudioSource, ManifestError
from musicgen_jax.data.metadata import MusicInfo

METADATA_COLUMNS = tuple(field.name for field in dataclasses.fields(MusicInfo))


def _datasets():
    try:
        import datasets
    except ImportError:  # pragma: no cover - an optional dependency
        raise ManifestError(
            "reading a Hugging Face dataset needs the datasets package: pip install 'musicgen-jax[hf]'"
        ) from None
    return datasets


def open_dataset(name_or_path: str, split: str = "train"):
    """The ``datasets.Dataset`` of ``split`` from a ``save_to_disk`` directory, parquet files, or a
    name or directory ``datasets.load_dataset`` opens."""
    datasets = _datasets()
    path = Path(name_or_path).expanduser()
    if path.is_dir() and any((path / name).is_file() for name in ("state.json", "dataset_dict.json")):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ManifestError(f"{path} has splits {', '.join(loaded)}, not {split!r}")
            loaded = loaded[split]
        return loaded
    if str(name_or_path).endswith(".parquet"):
        files = sorted(glob.glob(str(path))) if any(c in str(name_or_path) for c in "*?[") else [str(path)]
        if not files or not all(Path(f).is_file() for f in files):
            raise ManifestError(f"no parquet file at {name_or_path}")
        return datasets.load_dataset("parquet", data_files=files, split="train")
    try:
        return datasets.load_dataset(str(name_or_path), split=split)
    except (OSError, ValueError) as error:  # not found, offline, no such split
        raise ManifestError(f"cannot open the dataset {name_or_path!r} (split {split!r}): {error}") from None


def dataset_sources(
    dataset, *, audio_column: str = "audio", text_column: str | None = "text", name: str = "dataset"
) -> list[AudioSource]:
    """One :class:`AudioSource` a row, named ``<name>/<row>``; its audio read on demand."""
    datasets = _datasets()
    columns = list(dataset.column_names)
    if audio_column not in columns:
        raise ManifestError(f"{name}: no audio column {audio_column!r} (columns: {', '.join(columns)})")
    if text_column is not None and text_column not in columns:
        raise ManifestError(f"{name}: no text column {text_column!r} (columns: {', '.join(columns)})")
    if isinstance(dataset.features[audio_column], datasets.Audio):
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    described = [c for c in columns if c != audio_column and (c == text_column or c in METADATA_COLUMNS)]
    rows = dataset.select_columns(described).to_list() if described else [{}] * len(dataset)
    audio = dataset.select_columns([audio_column])
    sources = []
    for index, row in enumerate(rows):
        metadata = {k: v for k, v in row.items() if k != text_column and v is not None}
        if text_column is not None and row.get(text_column):
            metadata["description"] = str(row[text_column])
        sources.append(
            AudioSource(
                audio_path=Path(f"{name}/{index:08d}"),
                metadata=metadata,
                read_audio=functools.partial(_read_row, audio, audio_column, index),
            )
        )
    return sources


def find_dataset_sources(
    name_or_path: str, *, split: str = "train", audio_column: str = "audio", text_column: str | None = "text"
) -> list[AudioSource]:
    """The rows of ``split`` of a dataset (:func:`open_dataset`) as sources."""
    dataset = open_dataset(name_or_path, split)
    return dataset_sources(
        dataset, audio_column=audio_column, text_column=text_column, name=f"{name_or_path}#{split}"
    )


def _read_row(dataset, column: str, index: int) -> tuple[np.ndarray, int]:
    return decode_audio_value(dataset[index][column])


def decode_audio_value(value: Any) -> tuple[np.ndarray, int]:
    """An audio cell as float32 ``[channels, samples]`` and its sample rate: ``{"array",
    "sampling_rate"}``, ``{"bytes", "path"}`` (an undecoded ``Audio`` value) or a file path."""
    if isinstance(value, dict) and value.get("array") is not None:
        array = np.asarray(value["array"], dtype=np.float32)
        if array.ndim == 1:
            array = array[None]
        elif array.ndim != 2:
            raise ValueError(f"an audio array must be [samples] or [channels, samples], got {array.shape}")
        return np.ascontiguousarray(array), int(value["sampling_rate"])
    if isinstance(value, dict) and value.get("bytes"):
        import soundfile

        try:
            data, rate = soundfile.read(io.BytesIO(value["bytes"]), dtype="float32", always_2d=True)
        except (soundfile.SoundFileError, RuntimeError) as error:
            raise ValueError(f"cannot decode the audio bytes: {error}") from None
        return np.ascontiguousarray(data.T), int(rate)
    path = value.get("path") if isinstance(value, dict) else value
    if isinstance(path, str) and path:
        return load_audio(path)
    raise ValueError(f"no audio in this row (a {type(value).__name__})")
