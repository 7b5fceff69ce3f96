"""The one text path: a description (and its attributes) to token ids and a mask.

Inference, the data pipeline, the in-memory training source and the server's request validation all
call :class:`TextTokenizer`, so the same text always becomes the same ids and mask:

* attributes are rendered into the description for text-attribute models (audiocraft's training
  text, :func:`~musicgen_jax.conditioning.attributes.render_description`); learned-attribute models
  keep the description as it is and encode the attributes separately;
* the tokenizer's end token is kept; ids are padded with its pad id, to a fixed length (training) or
  to a multiple of ``bucket`` (inference, so prompt lengths share compiled programs; 1, the longest
  prompt, for a model that attends its padding as audiocraft does);
* an empty description gets an all-zero mask: "no condition", as the null condition of guidance and
  audiocraft's T5 conditioner for empty text;
* a description longer than the model takes is an error at inference (``PromptError``) and is
  truncated, end token kept, in training (``truncate=True``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from musicgen_jax.conditioning.attributes import Attributes, encode_attributes, render_description

TEXT_LENGTH_BUCKET = 16  # inference pads prompts to a multiple of this


class PromptError(ValueError):
    """A prompt the model cannot take (too long, wrong type). ``field`` names the input at fault."""

    def __init__(self, message: str, field: str = "prompt"):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class TextBatch:
    """Tokenised prompts: ``ids``/``mask`` int32 ``[batch, text_len]`` and the rendered texts;
    ``attributes`` holds the arrays of :func:`encode_attributes` for learned-attribute models."""

    ids: np.ndarray
    mask: np.ndarray
    texts: tuple[str, ...]
    attributes: dict[str, np.ndarray] | None = None


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


class TextTokenizer:
    """A model's tokenizer with the rules above. Thread-safe: fast tokenizers keep truncation settings
    as mutable state, so one call at a time goes through the wrapped tokenizer."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_tokens: int,
        render_attributes: bool,
        learned_attributes: bool = False,
        length_bucket: int = TEXT_LENGTH_BUCKET,
    ):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.render_attributes = render_attributes
        self.learned_attributes = learned_attributes
        self.length_bucket = length_bucket  # inference pads to a multiple of this
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # picklable for grain worker processes
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @classmethod
    def for_model(cls, tokenizer: Any, config) -> TextTokenizer:
        """The text path of a :class:`~musicgen_jax.models.config.MusicGenConfig`."""
        # A model that attends its padding (audiocraft's behaviour) depends on how much there is:
        # pad to the longest prompt of the batch, as audiocraft's T5 conditioner does.
        zeros_attended = config.conditioning.text_padding == "zeros_attended"
        return cls(
            tokenizer,
            max_tokens=config.conditioning.max_text_tokens,
            render_attributes=config.uses_text_attributes,
            learned_attributes=config.uses_learned_attributes,
            length_bucket=1 if zeros_attended else TEXT_LENGTH_BUCKET,
        )

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return 0 if pad is None else int(pad)

    def render(self, text: str | None, attributes: Attributes | None = None) -> str:
        """The description the text encoder reads."""
        if text is not None and not isinstance(text, str):
            raise PromptError(f"a prompt must be a string, got {type(text).__name__}")
        return render_description(text, attributes) if self.render_attributes else (text or "")

    def count_tokens(self, text: str) -> int:
        """Tokens of a rendered description, end token included."""
        with self._lock:
            return len(self.tokenizer(text)["input_ids"])

    def check_length(self, text: str) -> None:
        """``PromptError`` when a rendered description is longer than the model takes."""
        count = self.count_tokens(text)
        if count > self.max_tokens:
            raise PromptError(
                f"the prompt (with its attributes) is {count} tokens long; this model takes at most "
                f"{self.max_tokens}"
            )

    def tokenize(
        self,
        texts: Sequence[str],
        *,
        length: int | None = None,
        bucket: int | None = None,
        truncate: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """int32 ``ids`` and ``mask`` ``[len(texts), L]`` for rendered descriptions.

        ``L`` is ``length`` when given, else the longest text rounded up to ``bucket`` (default
        ``length_bucket``). Without
        ``truncate`` a text longer than the model takes (or than ``length``) is a ``PromptError``.
        """
        limit = self.max_tokens if length is None else min(length, self.max_tokens)
        with self._lock:
            rows = [
                self.tokenizer(text, truncation=truncate, max_length=limit if truncate else None)["input_ids"]
                for text in texts
            ]
        longest = max((len(row) for row in rows), default=0)
        if longest > limit:
            raise PromptError(f"a prompt is {longest} tokens long; this model takes at most {limit}")
        width = length if length is not None else _round_up(longest, bucket or self.length_bucket)
        ids = np.full((len(texts), width), self.pad_id, np.int32)
        mask = np.zeros((len(texts), width), np.int32)
        for row, (text, tokens) in enumerate(zip(texts, rows)):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1 if text.strip() else 0  # empty: no condition
        return ids, mask

    def batch(
        self,
        texts: Sequence[str | None],
        attributes: Sequence[Attributes | None] | None = None,
        *,
        length: int | None = None,
        truncate: bool = False,
    ) -> TextBatch:
        """Render, tokenise and pad a batch of prompts (and encode their attributes when learned)."""
        if isinstance(texts, str):
            raise PromptError("pass a list of prompts, not a single string")
        attributes = list(attributes) if attributes is not None else [None] * len(texts)
        if len(attributes) != len(texts):
            raise PromptError(f"{len(texts)} prompts but {len(attributes)} attribute sets")
        rendered = tuple(self.render(text, attrs) for text, attrs in zip(texts, attributes))
        ids, mask = self.tokenize(rendered, length=length, truncate=truncate)
        encoded = encode_attributes(attributes).as_dict() if self.learned_attributes else None
        return TextBatch(ids, mask, rendered, encoded)
