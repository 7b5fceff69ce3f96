"""The tfds metadata of a tokenised directory (``dataset_info.json`` and ``features.json``).

Written by the tokeniser after each split so ``tfds.builder_from_directory`` reads its shards; kept
apart from :mod:`musicgen_jax.data.tfds_builder`, which itself runs the tokeniser.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds
from tensorflow_datasets.core import naming

from musicgen_jax.data import records

DATASET_NAME = "musicgen_tokens"
VERSION = "1.0.0"
DESCRIPTION = (
    "MusicGen training examples: EnCodec codes [codebooks, frames] of audio segments with the "
    "track's description and metadata (musicgen-jax tokenised format)."
)


def write_tfds_metadata(
    directory: str | os.PathLike, num_codebooks: int, shards_by_split: Mapping[str, Sequence[Any]]
) -> None:
    """Write ``dataset_info.json`` and ``features.json`` describing the shards of ``directory``.

    ``shards_by_split`` maps a split to its shards in index order, each with ``name``,
    ``num_records`` and ``num_bytes`` (the tokenisation index's entries). Shard indices of a split
    must run 0, 1, 2, ... as tfds derives the file names from them.
    """
    directory = Path(directory)
    split_infos = []
    for split, shards in sorted(shards_by_split.items()):
        names = [shard.name for shard in shards]
        expected = [records.shard_name(split, i) for i in range(len(shards))]
        if names != expected:
            raise ValueError(
                f"{directory}: the {split} shards are not numbered 0..{len(shards) - 1}: {names}"
            )
        template = _template(directory, split)
        split_infos.append(
            tfds.core.SplitInfo(
                name=split,
                shard_lengths=[int(s.num_records) for s in shards],
                num_bytes=sum(int(s.num_bytes) for s in shards),
                filename_template=template,
            )
        )
    if not split_infos:
        return
    tfds.folder_dataset.write_metadata(
        data_dir=directory,
        features=records.record_features(num_codebooks),
        split_infos=split_infos,
        filename_template=_template(directory, None),
        version=VERSION,
        check_data=False,  # the check reads through tf.data, i.e. TensorFlow
        description=DESCRIPTION,
    )


def _template(directory: Path, split: str | None) -> naming.ShardedFileTemplate:
    return naming.ShardedFileTemplate(
        data_dir=directory,
        template=records.SHARD_TEMPLATE,
        dataset_name=DATASET_NAME,
        split=split,
        filetype_suffix=records.FILE_FORMAT,
    )
