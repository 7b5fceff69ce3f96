"""The grain input pipeline: tokenised shards to training batches.

``source -> host shard -> shuffle -> repeat -> per-example transform -> batch -> prefetch``:

* each host (``jax.process_index()`` of ``jax.process_count()``, or given explicitly) reads a
  disjoint, equal-sized slice of the records;
* a seeded shuffle, reshuffled every epoch (grain reseeds random steps per repeat);
* per example (:class:`ExampleTransform`, seeded by grain from the seed and the element index):
  a random crop of ``segment_frames`` frames (shorter clips are padded and masked), the text built
  from the metadata with audiocraft's augmentation and word dropout (:mod:`musicgen_jax.data.text`),
  tokenised to ``max_text_len``, and the validated attributes encoded;
* batches of ``batch_size / process_count`` rows, prefetched by threads (and worker processes
  with ``num_workers``);
* progressive training (``segment_schedule``): the segment length grows with the batch index
  (:class:`SegmentScheduleIterator`).

The iterator is grain's ``DatasetIterator``: ``get_state()`` is a small JSON-able dict and
``set_state()`` continues the exact data order, which the trainer checkpoints with the model.

The batch contract (a dict of NumPy arrays; ``B`` rows per host, ``K`` codebooks, ``T`` frames,
``L`` = ``max_text_len``):

* ``codes`` int32 ``[B, K, T]``: plain codec frames (the train step applies the delay pattern);
* ``frame_mask`` bool ``[B, T]``: True on real frames, False on padding;
* ``text_ids`` / ``text_mask`` int32 ``[B, L]`` (an empty text has an all-zero mask: the null condition);
* ``genre`` int32 ``[B]``, ``moods`` float32 ``[B, len(MOODS)]``, ``instruments`` float32
  ``[B, len(INSTRUMENTS)]``, ``tempo``/``tempo_present``/``duration``/``duration_present`` float32
  ``[B]``: exactly :func:`musicgen_jax.conditioning.encode_attributes` of each example's metadata
  (``duration`` is the seconds of real frames).
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np

from musicgen_jax.conditioning import ATTRIBUTE_KEYS, encode_attributes
from musicgen_jax.conditioning.text import TextTokenizer
from musicgen_jax.data import records
from musicgen_jax.data.metadata import MusicInfo, attributes_from_info, dropped_attributes
from musicgen_jax.data.text import render_info, training_text

__all__ = [
    "BATCH_KEYS",
    "DataConfig",
    "ExampleTransform",
    "SegmentScheduleIterator",
    "build_dataset",
    "dropped_attributes",
    "iterator_from_records",
    "make_eval_iterator",
    "make_train_iterator",
    "resolve_shards",
]

BATCH_KEYS: tuple[str, ...] = ("codes", "frame_mask", "text_ids", "text_mask", *ATTRIBUTE_KEYS)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The pipeline's settings (``data.pipeline`` in a training config)."""

    # Tokenised directories (their ``{split}-*.array_record`` shards, or tfds-named ones), shard
    # files, or glob patterns.
    paths: tuple[str, ...] = ()
    split: str = "train"
    # Shards of this split in the same directories feed make_eval_iterator (None: no eval data).
    eval_split: str | None = None
    segment_frames: int = 1500  # 30 s at 50 frames/s, audiocraft's training segment
    # Progressive training: ``[[first_batch, frames], ...]``, e.g. ``[[0, 250], [1000, 750]]``: 250
    # frames from batch (step) 0, 750 from batch 1000. The first entry starts at 0; it replaces
    # segment_frames for training batches (and evaluation at that step). Empty: segment_frames.
    segment_schedule: tuple[tuple[int, int], ...] = ()
    batch_size: int = 32  # global: every host reads batch_size / process_count rows
    max_text_len: int = 128
    seed: int = 0
    shuffle: bool = True
    random_crop: bool = True  # False: every clip from its first frame
    # audiocraft's text augmentation (MusicDataset) and T5 word dropout (0.3 for small/medium).
    merge_text_p: float = 0.25
    drop_desc_p: float = 0.5
    drop_other_p: float = 0.5
    word_dropout: float = 0.3
    num_epochs: int | None = None  # None: repeat forever
    read_threads: int = 2  # threads running the transform in each process
    prefetch_buffer_size: int = 8  # batches read ahead per process
    num_workers: int = 0  # grain worker processes (0: all in this process)
    worker_buffer_size: int = 2  # batches each worker process reads ahead

    def __post_init__(self) -> None:
        for name in ("merge_text_p", "drop_desc_p", "drop_other_p", "word_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in (
            "segment_frames",
            "batch_size",
            "max_text_len",
            "prefetch_buffer_size",
            "worker_buffer_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.read_threads < 0 or self.num_workers < 0:
            raise ValueError("read_threads and num_workers cannot be negative")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"num_epochs must be positive or null, got {self.num_epochs}")
        schedule = self.segment_schedule
        if schedule:
            if any(len(entry) != 2 for entry in schedule):
                raise ValueError(f"segment_schedule entries are [first_batch, frames], got {schedule}")
            starts = [int(start) for start, _ in schedule]
            if starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)):
                raise ValueError(
                    f"segment_schedule must start at batch 0 and increase strictly, got {starts}"
                )
            if any(int(frames) < 1 for _, frames in schedule):
                raise ValueError(f"segment_schedule frames must be positive, got {schedule}")

    def segment_frames_at(self, batch_index: int) -> int:
        """The segment length of training batch ``batch_index`` (the optimizer step)."""
        frames = self.segment_frames
        for start, length in self.segment_schedule:
            if batch_index >= start:
                frames = int(length)
        return frames


# ----------------------------------------------------------------------------- shards


def resolve_shards(paths: Sequence[str | os.PathLike], split: str = "train") -> list[str]:
    """Shard files of ``split`` named by ``paths``: directories (this project's
    ``{split}-00000.array_record`` names or tfds' ``*-{split}.array_record-00000-of-00004``),
    files, or glob patterns. Sorted within each entry; an entry matching nothing is an error."""
    found: list[str] = []
    for entry in paths:
        entry = os.fspath(entry)
        path = Path(entry)
        if path.is_dir():
            matches = [str(p) for p in records.list_shards(path, split)]
            if not matches:
                matches = sorted(
                    glob.glob(os.path.join(glob.escape(entry), f"*-{split}.{records.FILE_FORMAT}-*"))
                )
        elif path.is_file():
            matches = [entry]
        else:
            matches = sorted(p for p in glob.glob(entry) if Path(p).is_file())
        if not matches:
            raise FileNotFoundError(f"no {split} shards at {entry}")
        found.extend(matches)
    return found


# ----------------------------------------------------------------------------- one example


class ExampleTransform(grain.transforms.RandomMap):
    """A serialised record to one row of the batch contract (see the module docstring).

    ``train``: random crop, augmented text with word dropout. Otherwise deterministic: the first
    ``segment_frames`` frames and the fixed inference rendering of the metadata.
    """

    def __init__(self, config: DataConfig, tokenizer: Any, *, train: bool = True):
        self.config = config
        # Metadata text is rendered above (augmented in training); tokenising is the shared path.
        self.text = TextTokenizer(tokenizer, max_tokens=config.max_text_len, render_attributes=True)
        self.train = train

    def random_map(
        self, element: bytes | records.TokenRecord, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        record = records.decode_record(element) if isinstance(element, bytes) else element
        config = self.config
        codes, frame_mask = self.crop(record.codes, rng)
        info = MusicInfo.from_dict(record.metadata)
        if info.description is None and record.text:
            info = dataclasses.replace(info, description=record.text)
        if self.train:
            text = training_text(
                info,
                rng,
                merge_text_p=config.merge_text_p,
                drop_desc_p=config.drop_desc_p,
                drop_other_p=config.drop_other_p,
                word_dropout_p=config.word_dropout,
            )
        else:
            text = render_info(info)
        text_ids, text_mask = self.tokenize(text)
        real_seconds = int(frame_mask.sum()) / record.frame_rate
        attributes = encode_attributes([attributes_from_info(info, duration=real_seconds)]).as_dict()
        example = {"codes": codes, "frame_mask": frame_mask, "text_ids": text_ids, "text_mask": text_mask}
        example.update({name: value[0] for name, value in attributes.items()})
        return example

    def crop(self, codes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """int32 ``[K, segment_frames]`` codes and the bool ``[segment_frames]`` mask of real frames."""
        segment = self.config.segment_frames
        frames = codes.shape[-1]
        if frames > segment:
            start = (
                int(rng.integers(0, frames - segment + 1)) if (self.train and self.config.random_crop) else 0
            )
            return codes[:, start : start + segment].astype(np.int32), np.ones((segment,), bool)
        out = np.zeros((codes.shape[0], segment), np.int32)  # the padding's value is never read
        out[:, :frames] = codes
        mask = np.zeros((segment,), bool)
        mask[:frames] = True
        return out, mask

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """int32 ``[max_text_len]`` ids (truncated, end token kept, padded) and mask; "" gives an
        all-zero mask, as audiocraft's T5 conditioner masks empty descriptions."""
        ids, mask = self.text.tokenize([text], length=self.config.max_text_len, truncate=True)
        return ids[0], mask[0]


# ----------------------------------------------------------------------------- datasets


def _host(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    return process_index, process_count


def build_dataset(
    source: Sequence[Any],
    config: DataConfig,
    tokenizer: Any,
    *,
    train: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    seed: int | None = None,
) -> grain.MapDataset:
    """The batched ``MapDataset`` of this host over ``source`` (serialised records or
    :class:`~musicgen_jax.data.records.TokenRecord`, any random-access sequence)."""
    process_index, process_count = _host(process_index, process_count)
    if config.batch_size % process_count:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {process_count} hosts")
    local_batch = config.batch_size // process_count
    seed = config.seed if seed is None else seed
    dataset = grain.MapDataset.source(source)
    # Equal shares (the remainder dropped) keep every host on the same epoch boundaries.
    per_host = len(dataset) // process_count
    if per_host < local_batch:
        raise ValueError(
            f"{len(dataset)} records give each of {process_count} hosts {per_host}, "
            f"fewer than one batch of {local_batch}"
        )
    dataset = dataset[: per_host * process_count][process_index::process_count]
    if train and config.shuffle:
        dataset = dataset.shuffle(seed=seed)
    num_epochs = config.num_epochs if train else None
    dataset = dataset.repeat(num_epochs)
    # grain seeds each element's generator from this seed and the host-local index: a seed per
    # host keeps the hosts' crops and text dropout independent.
    transform_seed = int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0])
    dataset = dataset.random_map(ExampleTransform(config, tokenizer, train=train), seed=transform_seed)
    return dataset.batch(local_batch, drop_remainder=True)


def _iterator(dataset: grain.MapDataset, config: DataConfig) -> grain.DatasetIterator:
    iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=config.prefetch_buffer_size)
    )
    if config.num_workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():
            # grain 0.2.x reads one of its absl flags when starting workers and fails in programs
            # that never parse absl flags (google/grain#1355); their defaults are what we want.
            flags.FLAGS.mark_as_parsed()
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=config.num_workers, per_worker_buffer_size=config.worker_buffer_size
            )
        )
    return iter(iter_dataset)


class SegmentScheduleIterator:
    """Training batches whose segment length follows ``config.segment_schedule`` by batch index.

    Each length is its own grain iterator over the same dataset (only the crop differs), started
    from the previous one's state where the length changes, so the data order runs on unbroken;
    read-ahead batches of the old length are dropped. The state is the batch index and the inner
    iterator's state: a resumed run picks the length of its step and continues the order.
    """

    def __init__(self, make: Any, config: DataConfig):
        self._make, self.config = make, config  # make: DataConfig -> grain.DatasetIterator
        self.batches = 0
        self._iterator: Any = None
        self._frames: int | None = None
        self._pending: Any = None  # a restored inner state, applied when the iterator is made

    def __iter__(self) -> SegmentScheduleIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        frames = self.config.segment_frames_at(self.batches)
        if frames != self._frames:
            state = self._iterator.get_state() if self._iterator is not None else self._pending
            self._iterator = self._make(dataclasses.replace(self.config, segment_frames=frames))
            if state is not None:
                self._iterator.set_state(state)
            self._frames, self._pending = frames, None
        batch = next(self._iterator)
        self.batches += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        inner = self._iterator.get_state() if self._iterator is not None else self._pending
        return {"batches": self.batches, "iterator": inner}

    def set_state(self, state: dict[str, Any]) -> None:
        self.batches = int(state["batches"])
        self._iterator, self._frames, self._pending = None, None, state["iterator"]


def _scheduled(make: Any, config: DataConfig) -> grain.DatasetIterator | SegmentScheduleIterator:
    """``make(config)``, or with a segment schedule the iterator that follows it."""
    if config.segment_schedule:
        return SegmentScheduleIterator(make, config)
    return make(config)


def make_train_iterator(
    config: DataConfig,
    tokenizer: Any,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    seed: int | None = None,
) -> grain.DatasetIterator:
    """This host's training batches over ``config.paths`` (``config.split``), with
    ``get_state()``/``set_state()``. ``seed`` overrides ``config.seed``."""
    if not config.paths:
        raise ValueError("DataConfig.paths is empty: name the tokenised directories or shard files")
    source = grain.sources.ArrayRecordDataSource(resolve_shards(config.paths, config.split))

    def make(config: DataConfig) -> grain.DatasetIterator:
        dataset = build_dataset(
            source,
            config,
            tokenizer,
            train=True,
            process_index=process_index,
            process_count=process_count,
            seed=seed,
        )
        return _iterator(dataset, config)

    return _scheduled(make, config)


def make_eval_iterator(
    config: DataConfig,
    tokenizer: Any,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DatasetIterator | None:
    """Deterministic held-out batches from the ``config.eval_split`` shards (None when unset):
    no shuffle, first frames, fixed text; a fresh iterator starts from the same batches."""
    if config.eval_split is None:
        return None
    source = grain.sources.ArrayRecordDataSource(resolve_shards(config.paths, config.eval_split))
    dataset = build_dataset(
        source, config, tokenizer, train=False, process_index=process_index, process_count=process_count
    )
    return _iterator(dataset, config)


def iterator_from_records(
    examples: Sequence[records.TokenRecord | bytes],
    config: DataConfig,
    tokenizer: Any,
    *,
    train: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    seed: int | None = None,
) -> grain.DatasetIterator:
    """The same pipeline over in-memory records (tests, notebooks)."""
    examples = list(examples)

    def make(config: DataConfig) -> grain.DatasetIterator:
        dataset = build_dataset(
            examples,
            config,
            tokenizer,
            train=train,
            process_index=process_index,
            process_count=process_count,
            seed=seed,
        )
        return _iterator(dataset, config)

    return _scheduled(make, config) if train else make(config)
