"""The tokenised format as a TensorFlow Datasets dataset, without TensorFlow.

Two ways in, both reading with tfds' ArrayRecord data source (which decodes ``tf.train.Example``
with NumPy, so ``tensorflow`` is never imported):

* a directory written by ``python -m musicgen_jax.data.tokenize`` carries ``dataset_info.json`` and
  ``features.json`` (:func:`~musicgen_jax.data.tfds_metadata.write_tfds_metadata`), so ::

      tfds.builder_from_directory("data/tokens").as_data_source("train")[0]["codes"]  # [codebooks, frames]

  and, when the directory is ``<data_dir>/musicgen_tokens/1.0.0``,
  ``tfds.data_source("musicgen_tokens", data_dir=<data_dir>)`` both work;
* :class:`MusicgenTokens` is a ``GeneratorBasedBuilder`` that tokenises audio itself
  (``download_and_prepare`` runs the codec through :mod:`musicgen_jax.data.tokenize`), for tfds
  users who want ``tfds.data_source``/``tfds.builder`` end to end. Its files use tfds' default
  names; the grain pipeline reads those too.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import tensorflow_datasets as tfds
from etils import epath

from musicgen_jax.data import records
from musicgen_jax.data.tfds_metadata import DESCRIPTION, VERSION


def data_source(directory: str | os.PathLike, split: str = "train"):
    """tfds' random-access source over one split of a tokenised directory (records as dicts of
    NumPy arrays and bytes, like ``tfds.data_source``)."""
    return tfds.builder_from_directory(os.fspath(directory)).as_data_source(split)


class MusicgenTokens(tfds.core.GeneratorBasedBuilder):
    """Audio tokenised with an EnCodec codec, one example per segment (see module docstring).

    ``tfds.data_source("musicgen_tokens", data_dir=...)`` reads prepared data (mono 32 kHz codecs
    have 4 codebooks; pass ``builder_kwargs={"num_codebooks": 8}`` for stereo). To prepare::

        builder = MusicgenTokens(data_dir="data/tfds", codec="facebook/encodec_32khz",
                                 manifest="data/synth/data.jsonl", file_format="array_record")
        builder.download_and_prepare()

    ``manifest`` (audiocraft's data.jsonl) or ``audio_dir`` gives the train split; ``valid_manifest``
    or ``valid_audio_dir`` adds a valid split. ``codec_backend`` is :func:`~musicgen_jax.codec.load_codec`'s
    (``auto``, ``jax``, ``torch``).
    """

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        str(VERSION): "EnCodec codes, description, metadata JSON, source path and offset per segment."
    }

    def __init__(
        self,
        *,
        codec: str | None = None,
        manifest: str | None = None,
        audio_dir: str | None = None,
        valid_manifest: str | None = None,
        valid_audio_dir: str | None = None,
        metadata: str | None = None,
        segment_seconds: float = 30.0,
        min_segment_seconds: float = 1.0,
        num_codebooks: int = 4,
        audio_channels: int | None = None,
        codec_backend: str = "auto",
        **kwargs: Any,
    ):
        self._codec_source = codec
        self._inputs = {"train": (manifest, audio_dir), "valid": (valid_manifest, valid_audio_dir)}
        self._metadata = metadata
        self._segment_seconds = segment_seconds
        self._min_segment_seconds = min_segment_seconds
        self._num_codebooks = num_codebooks
        self._audio_channels = audio_channels
        self._codec_backend = codec_backend
        kwargs.setdefault("file_format", records.FILE_FORMAT)
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds locates a builder's checksums file through importlib_resources (not a dependency
        # here); this builder downloads nothing, so point it at this module directly.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=DESCRIPTION, features=records.record_features(self._num_codebooks)
        )

    def _split_generators(self, dl_manager):
        if self._codec_source is None:
            raise ValueError(
                "MusicgenTokens needs codec= and manifest= or audio_dir= to prepare data (or tokenise "
                "with python -m musicgen_jax.data.tokenize and read with tfds.builder_from_directory)"
            )
        from musicgen_jax.codec import load_codec
        from musicgen_jax.data import manifest as manifest_lib

        codec = load_codec(
            self._codec_source, audio_channels=self._audio_channels, backend=self._codec_backend
        )
        if codec.total_codebooks != self._num_codebooks:
            raise ValueError(
                f"the codec gives {codec.total_codebooks} codebooks; "
                f"build with num_codebooks={codec.total_codebooks}"
            )
        splits = {}
        for split, (manifest, audio_dir) in self._inputs.items():
            if manifest is None and audio_dir is None:
                continue
            sources = manifest_lib.find_sources(
                audio_dir=audio_dir, manifest=manifest, metadata=self._metadata
            )
            splits[split] = self._generate_examples(codec, sources)
        if "train" not in splits:
            raise ValueError("MusicgenTokens needs manifest= or audio_dir= for the train split")
        return splits

    def _generate_examples(self, codec, sources):
        import logging

        from musicgen_jax.data import tokenize

        options = tokenize.TokenizeOptions(
            segment_seconds=self._segment_seconds, min_segment_seconds=self._min_segment_seconds
        )
        for source in sources:
            try:
                segments = tokenize.encode_source(codec, source, options)
            except tokenize.SourceError as error:
                logging.getLogger(__name__).warning("skipping %s: %s", source.audio_path, error)
                continue
            for record in segments:
                # tfds serialises the example itself: give it the feature values, not bytes.
                yield f"{record.path}#{record.segment_index}", records.feature_values(record)
