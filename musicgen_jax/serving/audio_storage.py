"""Where task audio lives: a directory (shared between replicas on a shared volume) or an fsspec URL.

Every file appears whole or not at all: a local file is written by
:func:`musicgen_jax.audio.save_audio` (temporary name, then rename); a remote one is written to a
local temporary file, uploaded under a temporary name and moved into place. File names are chosen
by the caller and never reused, so a reader can never see one file's name with another's bytes.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


class AudioStorage:
    """A flat namespace of audio files: a local directory, or ``url`` on any fsspec filesystem."""

    def __init__(self, location: str | Path):
        location = str(location)
        self.url = location
        self._fs = None
        if "://" in location and not location.startswith("file://"):
            import fsspec

            self._fs, root = fsspec.core.url_to_fs(location)
            self._root = root.rstrip("/")
            self._fs.makedirs(self._root, exist_ok=True)
            self.directory: Path | None = None
        else:
            self.directory = Path(location.removeprefix("file://")).expanduser()
            self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def is_local(self) -> bool:
        return self.directory is not None

    def local_path(self, name: str) -> Path | None:
        """The file's path when storage is a local directory (else None: read it with :meth:`read`)."""
        return self.directory / name if self.directory is not None else None

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A local path to write ``name`` to; on leaving the block without an error it is published."""
        if self.directory is not None:  # the writer (save_audio) renames into place itself
            yield self.directory / name
            return
        with tempfile.TemporaryDirectory(prefix="musicgen-audio-") as scratch:
            local = Path(scratch) / name
            yield local
            partial = f"{self._root}/.partial-{uuid.uuid4().hex}-{name}"
            self._fs.put_file(str(local), partial)
            self._fs.mv(partial, f"{self._root}/{name}")

    def exists(self, name: str) -> bool:
        if self.directory is not None:
            return (self.directory / name).is_file()
        return self._fs.exists(f"{self._root}/{name}")

    def read(self, name: str) -> bytes:
        if self.directory is not None:
            return (self.directory / name).read_bytes()
        return self._fs.cat_file(f"{self._root}/{name}")

    def delete(self, name: str) -> None:
        if self.directory is not None:
            (self.directory / name).unlink(missing_ok=True)
            return
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(f"{self._root}/{name}")

    def scratch_directory(self) -> Path:
        """A local directory for throwaway files (warm-up writes one)."""
        return self.directory if self.directory is not None else Path(tempfile.gettempdir())
