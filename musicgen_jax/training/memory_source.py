"""An in-memory, checkpointable source of synthetic training batches.

It generates a fixed pool of captioned examples (codec tokens, a caption with attributes) from a
seed and serves them in a seeded order per epoch, in the batch contract the data pipeline
(``musicgen_jax.data``) also follows: a dict of NumPy arrays ``codes`` int32 ``[batch, codebooks,
frames]`` (plain frames, not delayed), ``frame_mask`` bool ``[batch, frames]``, ``text_ids`` /
``text_mask`` int32 ``[batch, max_text_len]``, and the arrays of
:func:`~musicgen_jax.conditioning.encode_attributes`. Its state is the next global batch index, so
a resumed run sees exactly the batches the interrupted one would have seen. Each host takes its own
rows of every global batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from musicgen_jax.conditioning import Attributes, encode_attributes, vocabulary
from musicgen_jax.conditioning.text import TextTokenizer
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.training.config import MemoryDataConfig

_DESCRIPTIONS = (
    "upbeat jazz piano with smooth saxophone",
    "dark techno with heavy bass",
    "calm ambient pads",
    "happy pop song with guitar and drums",
    "epic orchestral strings",
    "lofi hip hop beat",
    "energetic rock with electric guitar",
    "dreamy synth melody",
)


class MemoryBatchSource:
    """Deterministic batches from a pool of synthetic examples; ``get_state``/``set_state`` resume it."""

    def __init__(
        self,
        config: MemoryDataConfig,
        model_config: MusicGenConfig,
        tokenizer: Any,
        global_batch_size: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if global_batch_size % process_count:
            raise ValueError(f"batch size {global_batch_size} is not divisible by {process_count} hosts")
        self.config = config
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.process_index = process_index
        self.next_batch = 0
        self.examples = make_examples(config, model_config, tokenizer)

    def __iter__(self) -> MemoryBatchSource:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.batch(self.next_batch)
        self.next_batch += 1
        return batch

    def batch(self, index: int) -> dict[str, np.ndarray]:
        """Global batch ``index``: this host's rows of it."""
        pool = len(self.examples["codes"])
        start = index * self.global_batch_size + self.process_index * self.local_batch_size
        positions = np.arange(start, start + self.local_batch_size)
        epochs, offsets = positions // pool, positions % pool
        orders = {
            int(e): np.random.default_rng((self.config.seed, int(e))).permutation(pool) for e in set(epochs)
        }
        rows = np.array([orders[int(e)][o] for e, o in zip(epochs, offsets)])
        return {name: values[rows] for name, values in self.examples.items()}

    def get_state(self) -> dict[str, int]:
        return {"next_batch": self.next_batch}

    def set_state(self, state: dict[str, int]) -> None:
        self.next_batch = int(state["next_batch"])


def make_examples(
    config: MemoryDataConfig, model_config: MusicGenConfig, tokenizer: Any
) -> dict[str, np.ndarray]:
    """The pool: every array of the batch contract with ``config.num_examples`` rows."""
    rng = np.random.default_rng(config.seed)
    size, frames = config.num_examples, config.frames
    codebooks, vocab = model_config.decoder.num_codebooks, model_config.decoder.vocab_size
    if config.pattern == "random":
        codes = rng.integers(0, vocab, size=(size, codebooks, frames))
    else:
        # Each codebook repeats a short motif: after one period the continuation is predictable.
        codes = np.empty((size, codebooks, frames), np.int64)
        for i in range(size):
            for k in range(codebooks):
                motif = rng.integers(0, vocab, size=int(rng.integers(2, 9)))
                codes[i, k] = np.resize(motif, frames)
    frame_mask = np.ones((size, frames), bool)
    for i in np.flatnonzero(rng.random(size) < config.padded_fraction):
        frame_mask[i, int(rng.integers(max(1, frames // 2), frames)) :] = False

    attributes, descriptions = [], []
    for _ in range(size):
        attrs = Attributes(
            genre=str(rng.choice(vocabulary.GENRES)),
            moods=tuple(
                str(m) for m in rng.choice(vocabulary.MOODS, size=int(rng.integers(0, 3)), replace=False)
            ),
            tempo=float(rng.integers(60, 180)),
            instruments=tuple(
                str(m)
                for m in rng.choice(vocabulary.INSTRUMENTS, size=int(rng.integers(1, 3)), replace=False)
            ),
            duration=frames / model_config.audio.frame_rate,
        )
        attributes.append(attrs)
        descriptions.append(str(rng.choice(_DESCRIPTIONS)))
    text = TextTokenizer.for_model(tokenizer, model_config)
    captions = [text.render(d, a) for d, a in zip(descriptions, attributes)]
    text_ids, text_mask = text.tokenize(captions, length=config.max_text_len, truncate=True)
    batch = {
        "codes": codes.astype(np.int32),
        "frame_mask": frame_mask,
        "text_ids": text_ids,
        "text_mask": text_mask,
    }
    batch.update(encode_attributes(attributes).as_dict())
    return batch
