"""audiocraft's dataset layout: ``data.jsonl`` manifests and per-file JSON metadata.

A manifest (``data.jsonl`` or ``data.jsonl.gz``) holds one JSON object per audio file,
``{"path", "duration", "sample_rate", "amplitude", "weight", "info_path"}``, as audiocraft's
``AudioMeta`` writes it. A track's music metadata lives beside the audio in ``<audio stem>.json``
(audiocraft's ``MusicDataset`` reads ``Path(path).with_suffix(".json")``); its fields are parsed by
:mod:`musicgen_jax.data.metadata`.

This module also lists the sources of a tokenisation run: the entries of a manifest, or every audio
file of a folder, each paired with where its metadata is.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from musicgen_jax.audio.formats import AUDIO_SUFFIXES

MANIFEST_NAME = "data.jsonl"


class ManifestError(ValueError):
    """A manifest or metadata file that cannot be used, with the file and line it came from."""


@dataclasses.dataclass(frozen=True)
class AudioMeta:
    """One manifest line (audiocraft's ``AudioMeta``)."""

    path: str
    duration: float  # seconds
    sample_rate: int
    amplitude: float | None = None  # peak absolute sample value
    weight: float | None = None  # sampling weight (audiocraft's sample_on_weight)
    info_path: str | None = None  # where the metadata JSON is

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AudioMeta:
        """Fields audiocraft may add (``seek_time``, ...) are ignored; ``path`` is required."""
        if "path" not in data:
            raise ManifestError(f"manifest entry without a path: {data!r}")
        return cls(
            path=str(data["path"]),
            duration=float(data.get("duration") or 0.0),
            sample_rate=int(data.get("sample_rate") or 0),
            amplitude=None if data.get("amplitude") is None else float(data["amplitude"]),
            weight=None if data.get("weight") is None else float(data["weight"]),
            info_path=None if data.get("info_path") is None else str(data["info_path"]),
        )


def sidecar_path(audio_path: str | os.PathLike) -> Path:
    """Where audiocraft looks for a track's metadata: the audio path with a ``.json`` suffix."""
    return Path(audio_path).with_suffix(".json")


def _open_text(path: Path, mode: str):
    return (
        gzip.open(path, mode + "t", encoding="utf-8")
        if path.suffix == ".gz"
        else open(path, mode, encoding="utf-8")
    )


def resolve_manifest(path: str | os.PathLike) -> Path:
    """A manifest file, or the ``data.jsonl(.gz)`` inside a directory (audiocraft's ``egs/`` dirs)."""
    path = Path(path)
    if path.is_dir():
        for name in (MANIFEST_NAME, MANIFEST_NAME + ".gz"):
            if (path / name).is_file():
                return path / name
        raise ManifestError(f"{path} is a directory without {MANIFEST_NAME} or {MANIFEST_NAME}.gz")
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}")
    return path


def _json_lines(path: Path):
    """``(line number, object)`` for each non-blank line of a JSONL file (gzipped or not)."""
    with _open_text(path, "r") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                raise ManifestError(f"{path}:{number}: not JSON ({error})") from None
            if not isinstance(data, dict):
                raise ManifestError(f"{path}:{number}: expected an object, got {type(data).__name__}")
            yield number, data


def read_manifest(path: str | os.PathLike) -> list[AudioMeta]:
    """The entries of a manifest. Relative audio and info paths are resolved against the
    manifest's directory (audiocraft writes absolute ones; both work)."""
    path = resolve_manifest(path).resolve()
    entries = []
    for number, data in _json_lines(path):
        try:
            entry = AudioMeta.from_dict(data)
        except (ManifestError, TypeError, ValueError) as error:
            raise ManifestError(f"{path}:{number}: {error}") from None
        entries.append(
            dataclasses.replace(
                entry,
                path=str(_resolve(entry.path, path.parent)),
                info_path=None if entry.info_path is None else str(_resolve(entry.info_path, path.parent)),
            )
        )
    return entries


def _resolve(value: str, base: Path) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def write_manifest(path: str | os.PathLike, entries: Iterable[AudioMeta]) -> Path:
    """Write ``entries`` one JSON object a line (gzip when the name ends in ``.gz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open_text(path, "w") as out:
        for entry in entries:
            out.write(json.dumps(entry.to_dict()) + "\n")
    return path


def load_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """A metadata JSON object, or None when the file does not exist; ManifestError when it is not
    a JSON object."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: unreadable metadata ({error})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: metadata must be a JSON object, got {type(data).__name__}")
    return data


@dataclasses.dataclass(frozen=True)
class AudioSource:
    """One audio file to tokenise and where its metadata is (``metadata`` given inline wins).

    ``read_audio`` is for audio that is not a file of its own (a row of a Hugging Face dataset,
    :mod:`musicgen_jax.data.hf_datasets`): it returns ``(audio [channels, samples], sample_rate)``,
    and ``audio_path`` is then only the source's name (in the journal and the records)."""

    audio_path: Path
    metadata_path: Path | None = None
    metadata: dict[str, Any] | None = None
    read_audio: Callable[[], tuple[Any, int]] | None = dataclasses.field(default=None, compare=False)

    def load_metadata(self) -> dict[str, Any] | None:
        if self.metadata is not None:
            return self.metadata
        return None if self.metadata_path is None else load_sidecar(self.metadata_path)


def scan_audio_dir(directory: str | os.PathLike, extensions: Sequence[str] = AUDIO_SUFFIXES) -> list[Path]:
    """Every audio file under ``directory`` (recursively, absolute paths), sorted, so runs see the
    same order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ManifestError(f"no audio directory at {directory}")
    wanted = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    # Absolute paths: they key the tokeniser's resume index, whatever the working directory.
    directory = directory.resolve()
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in wanted)


def _metadata_lookup(metadata: str | os.PathLike | None, root: Path | None):
    """A function audio path -> AudioSource fields, for the ``--metadata`` option.

    ``None``: the sidecar beside the audio. A directory: ``<dir>/<path relative to root>.json``
    (or ``<dir>/<stem>.json`` when the audio is not under ``root``). A ``.jsonl`` file: one object
    per line with a ``path`` key naming the audio file (absolute, relative to the file, or a bare
    file name) and the metadata fields.
    """
    if metadata is None:
        return lambda audio: {"metadata_path": sidecar_path(audio)}
    metadata = Path(metadata)
    if metadata.is_dir():

        def in_dir(audio: Path) -> dict:
            try:
                relative = audio.relative_to(root) if root is not None else Path(audio.name)
            except ValueError:
                relative = Path(audio.name)
            return {"metadata_path": sidecar_path(metadata / relative)}

        return in_dir
    if not metadata.is_file():
        raise ManifestError(f"--metadata {metadata}: neither a directory nor a file")
    table: dict[str, dict] = {}
    for number, data in _json_lines(metadata):
        if "path" not in data:
            raise ManifestError(f"{metadata}:{number}: expected an object with a 'path' key")
        key = data.pop("path")
        table[str(_resolve(key, metadata.parent))] = data
        table.setdefault(Path(key).name, data)

    def in_table(audio: Path) -> dict:
        found = table.get(str(audio), table.get(audio.name))
        return {"metadata": found} if found is not None else {"metadata_path": None}

    return in_table


def find_sources(
    *,
    audio_dir: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    metadata: str | os.PathLike | None = None,
    extensions: Sequence[str] = AUDIO_SUFFIXES,
) -> list[AudioSource]:
    """The audio files of a folder or of a manifest (exactly one of them), each with its metadata.

    By default metadata is the sidecar ``<audio>.json`` (or a manifest entry's ``info_path`` when it
    names a JSON file); ``metadata`` points elsewhere (see :func:`_metadata_lookup`).
    """
    if (audio_dir is None) == (manifest is None):
        raise ManifestError("give exactly one of an audio directory and a manifest")
    if audio_dir is not None:
        root = Path(audio_dir)
        lookup = _metadata_lookup(metadata, root)
        return [AudioSource(audio_path=path, **lookup(path)) for path in scan_audio_dir(root, extensions)]
    root = resolve_manifest(manifest).parent
    lookup = _metadata_lookup(metadata, root)
    sources = []
    for entry in read_manifest(manifest):
        path = Path(entry.path)
        if metadata is None and entry.info_path is not None and entry.info_path.endswith(".json"):
            sources.append(AudioSource(audio_path=path, metadata_path=Path(entry.info_path)))
        else:
            sources.append(AudioSource(audio_path=path, **lookup(path)))
    return sources
