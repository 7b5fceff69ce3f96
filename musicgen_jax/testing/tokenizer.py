"""A small word-level tokenizer for tests and offline demos, built locally (no download).

It has T5's special-token ids (pad 0, ``</s>`` 1, unk 2) and appends ``</s>`` as T5's tokenizer
does, so text encoders see the same layout; it has fewer ids than the tiny presets' text
vocabulary. Saved with ``save_pretrained``, it loads back through ``AutoTokenizer`` like any other.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")

# The words of the prompts tests and notebooks use; anything else is <unk>.
_WORD_LINES = (
    "a an the and with of in on for to at by from",
    "slow fast soft loud bright dark warm cold happy sad calm energetic upbeat relaxed epic dreamy",
    "jazz rock pop techno house ambient classical folk blues funk metal hip hop lofi reggae",
    "piano guitar bass drums synth strings violin cello saxophone trumpet flute organ pad pads bells",
    "choir vocals beat beats groove melody chords rhythm song track music tune loop solo",
    "smooth heavy light deep acoustic electric electronic orchestral retro 80s 90s",
    "night summer rain city dance chill genre moods mood bpm instrument key keywords major minor",
    ", . : - 0 1 2 3 4 5 6 7 8 9",
)
WORDS = [word for line in _WORD_LINES for word in line.split()]


def build_tokenizer(vocab_size: int | None = None):
    """The tokenizer: the specials, then ``WORDS``, cut to ``vocab_size`` ids if given."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tokens = list(dict.fromkeys([*SPECIAL_TOKENS, *WORDS]))[:vocab_size]
    tokenizer = Tokenizer(WordLevel({token: i for i, token in enumerate(tokens)}, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def save_tokenizer(directory: str | Path, vocab_size: int | None = None) -> Path:
    """``build_tokenizer`` saved into ``directory`` (what ``model.tokenizer=<directory>`` reads)."""
    directory = Path(directory)
    build_tokenizer(vocab_size).save_pretrained(str(directory))
    return directory
