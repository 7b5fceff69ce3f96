"""A word-level tokenizer for a closed vocabulary: the text encoder of a small model trained here.

A model trained from scratch on captions made of a known vocabulary (the synthetic set's, the
attribute words of :mod:`~musicgen_jax.conditioning.vocabulary`) does not need a sentencepiece
model of 32,000 pieces: one id per word keeps its embedding table small and every caption word
whole. The tokenizer behaves as T5's does for the rest of the text path (:class:`TextTokenizer`):
lowercased, ``<pad>`` = 0, ``</s>`` = 1 appended to every text, ``<unk>`` = 2 for words it has
not seen, punctuation split off; numbers are split into digits, so any tempo (``137 bpm``) is
spelled from ten tokens. It is a ``transformers`` fast tokenizer, saved and loaded as any other
(``save_pretrained``, ``AutoTokenizer.from_pretrained``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
_WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]")  # the pre-tokenizer's split, for building the vocabulary


def words_of(texts: Iterable[str]) -> list[str]:
    """The distinct tokens of ``texts`` as the tokenizer splits them, sorted."""
    return sorted({token for text in texts for token in _WORD.findall(text.lower())})


def build_word_tokenizer(texts: Iterable[str]):
    """A ``PreTrainedTokenizerFast`` whose vocabulary is the special tokens, the ten digits and
    every word of ``texts`` (captions, vocabulary lists: whatever the model will read)."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocabulary = [PAD, EOS, UNK]
    for token in [str(d) for d in range(10)] + words_of(texts):
        if token not in vocabulary:
            vocabulary.append(token)
    tokenizer = Tokenizer(WordLevel({token: i for i, token in enumerate(vocabulary)}, unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(_WORD.pattern), behavior="isolated")]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS, unk_token=UNK, model_max_length=512
    )
