"""transformers' PyTorch MusicGen run as the reference the tests compare against.

One place for the two ways the tests ask it for answers:

- :func:`generate`: ``MusicgenForConditionalGeneration.generate`` with the codes it hands the
  codec captured on the way (the delay pattern reverted, stereo's two decodes interleaved back
  into ``[batch, codebooks, frames]``), plus the audio it returns;
- :func:`teacher_forced_logits`: one forward pass over given delayed decoder tokens, reshaped
  from transformers' ``[batch * codebooks, length, vocab]`` to ``[batch, codebooks, length, vocab]``.

``MusicgenMelodyForConditionalGeneration`` is asked the same way (``melody=`` / ``melody_chroma=``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    MusicgenForConditionalGeneration,
    MusicgenMelodyForConditionalGeneration,
)


def load(directory, melody: bool = False) -> tuple[MusicgenForConditionalGeneration, object]:
    """The saved transformers model (in eval mode) and its tokenizer; ``melody``: a
    ``MusicgenMelodyForConditionalGeneration``."""
    model_class = MusicgenMelodyForConditionalGeneration if melody else MusicgenForConditionalGeneration
    model = model_class.from_pretrained(directory).eval()
    return model, AutoTokenizer.from_pretrained(directory)


@dataclasses.dataclass(frozen=True)
class Generated:
    codes: np.ndarray  # [batch, codebooks, frames] int64, what transformers decodes
    audio: np.ndarray  # [batch, channels, samples] float32


@contextlib.contextmanager
def captured_codec_input(model: MusicgenForConditionalGeneration) -> Iterator[list[np.ndarray]]:
    """Record every ``codes`` tensor ``[1, batch, codebooks, frames]`` passed to the codec's
    ``decode`` while the block runs (stereo decodes twice: left codebooks, then right)."""
    calls: list[np.ndarray] = []
    decode = model.audio_encoder.decode

    def record(codes, *args, **kwargs):
        calls.append(codes.detach().clone().numpy())
        return decode(codes, *args, **kwargs)

    model.audio_encoder.decode = record
    try:
        yield calls
    finally:
        model.audio_encoder.decode = decode


def _interleave(calls: list[np.ndarray]) -> np.ndarray:
    if len(calls) == 1:
        return calls[0][0]
    if len(calls) != 2:
        raise AssertionError(f"expected one codec decode (two for stereo), saw {len(calls)}")
    left, right = calls[0][0], calls[1][0]  # [batch, K / 2, frames] each
    return np.stack([left, right], axis=2).reshape(left.shape[0], -1, left.shape[-1])


def generate(
    directory,
    prompts: Sequence[str] | None,
    new_tokens: int,
    *,
    num_unconditional: int = 1,
    audio_prompt: np.ndarray | None = None,
    melody_chroma: np.ndarray | None = None,
    **generate_kwargs,
) -> Generated:
    """transformers' ``generate`` for ``prompts`` (``None``: ``num_unconditional`` rows of its own
    unconditional inputs), ``max_new_tokens=new_tokens`` decoder steps. ``audio_prompt``
    ``[batch, channels, samples]`` is passed as ``input_values`` (a continuation);
    ``melody_chroma`` ``[batch, frames, 12]`` as a melody model's ``input_features``."""
    model, tokenizer = load(directory, melody=melody_chroma is not None)
    if prompts is None:
        inputs = dict(model.get_unconditional_inputs(num_samples=num_unconditional))
    else:
        inputs = dict(tokenizer(list(prompts), padding=True, return_tensors="pt"))
    if audio_prompt is not None:
        inputs["input_values"] = torch.tensor(np.asarray(audio_prompt, np.float32))
    if melody_chroma is not None:
        inputs["input_features"] = torch.tensor(np.asarray(melody_chroma, np.float32))
    with captured_codec_input(model) as calls, torch.no_grad():
        audio = model.generate(**inputs, **generate_kwargs, max_new_tokens=new_tokens)
    return Generated(codes=_interleave(calls), audio=audio.numpy())


def teacher_forced_logits(
    model: MusicgenForConditionalGeneration,
    decoder_ids: np.ndarray,  # [batch, codebooks, length] delayed tokens (2048 = pad/BOS)
    **condition,  # input_ids= and attention_mask=, or encoder_outputs= and attention_mask=
) -> np.ndarray:
    """Logits ``[batch, codebooks, length, vocab]`` of one forward pass, float32 (a melody model's
    logits cover its conditioning prefix too: the last ``length`` positions are the tokens')."""
    batch, codebooks, length = decoder_ids.shape
    with torch.no_grad():
        out = model(**condition, decoder_input_ids=torch.tensor(np.asarray(decoder_ids).reshape(-1, length)))
    logits = out.logits.float().numpy()
    return logits.reshape(batch, codebooks, -1, logits.shape[-1])[:, :, -length:]


def text_inputs(tokenizer, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tokenised, padded prompts as transformers' forward takes them."""
    text = tokenizer(list(prompts), padding=True, return_tensors="pt")
    return dict(input_ids=text.input_ids, attention_mask=text.attention_mask)
