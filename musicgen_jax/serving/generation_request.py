"""A request body (and an uploaded audio prompt or melody) into the library's validated ``GenerationRequest``.

The server's own limits are checked first (prompt characters, duration, upload length), then the
model's (attributes, generation settings, prompt tokens) through the model's own code paths. Every
refusal is a :class:`~musicgen_jax.serving.errors.FieldError` (or a library error) that names its
field where there is one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np

from musicgen_jax.conditioning import Attributes, InvalidAttributeError, PromptError
from musicgen_jax.conditioning.melody import MelodyError, melody_excerpt, require_audible
from musicgen_jax.generation.params import GenerationParams, GenerationParamsError, GenerationRequest
from musicgen_jax.serving.errors import FieldError
from musicgen_jax.serving.schemas import GenerateRequest
from musicgen_jax.serving.settings import ServerSettings
from musicgen_jax.serving.uploads import continuation_slice, read_audio


def build_request(
    model, settings: ServerSettings, body: GenerateRequest, input_audio: bytes | None = None
) -> GenerationRequest:
    """A validated request with a concrete seed.

    Raises ValueError for anything the server or the model cannot take: a FieldError, naming its
    field where one is at fault, for every refusal of the request itself.
    """
    if body.prompt is not None and len(body.prompt) > settings.max_prompt_chars:
        raise FieldError(
            "prompt",
            f"prompt is {len(body.prompt)} characters long; "
            f"this server takes at most {settings.max_prompt_chars}",
        )
    duration = body.duration if body.duration is not None else settings.default_duration
    if duration > settings.max_duration:
        raise FieldError(
            "duration",
            f"duration must be at most {settings.max_duration:g} seconds on this server, got {duration:g}",
        )
    audio_prompt = melody = None  # (audio [channels, samples], rate)
    continuation_sliced = body.continuation_start > 0 or body.continuation_end not in (None, -1)
    melody_sliced = body.melody_start > 0 or body.melody_end not in (None, -1)
    if input_audio is not None and not body.continuation:
        if continuation_sliced:
            raise FieldError(
                "continuation_start",
                "continuation_start and continuation_end slice an audio prompt (continuation: true); "
                "slice a melody with melody_start and melody_end",
            )
        melody = read_melody(model, settings, body, input_audio)
    elif input_audio is not None:
        if melody_sliced:
            raise FieldError(
                "melody_start", "melody_start and melody_end slice a melody: they need continuation: false"
            )
        audio, rate = read_audio(input_audio, settings.max_input_audio_seconds, "input_audio")
        audio_prompt = (continuation_slice(audio, rate, body.continuation_start, body.continuation_end), rate)
        prompt_seconds = audio_prompt[0].shape[-1] / rate
        if prompt_seconds >= duration:
            raise FieldError(
                None,
                f"the audio prompt ({prompt_seconds:.2f} s) must be shorter than duration ({duration:g} s), "
                "which includes it; raise duration or shorten continuation_end",
            )
    elif continuation_sliced:
        raise FieldError(
            "continuation_start", "continuation_start and continuation_end need an input_audio upload"
        )
    elif melody_sliced:
        raise FieldError("melody_start", "melody_start and melody_end need an input_audio upload")
    try:
        requests = model.make_requests(
            body.prompt,
            duration=float(duration),
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            guidance_scale=body.guidance_scale,
            num_beams=body.num_beams,
            seed=body.seed,
            genre=body.genre,
            mood=body.mood,
            tempo=body.tempo,
            instruments=body.instruments,
            key=body.key,
            audio_prompt=None if audio_prompt is None else audio_prompt[0],
            audio_prompt_sample_rate=None if audio_prompt is None else audio_prompt[1],
            melody=None if melody is None else melody[0],
            melody_sample_rate=None if melody is None else melody[1],
        )
    except MelodyError as error:
        raise FieldError(_melody_field(error), str(error)) from None
    except (InvalidAttributeError, GenerationParamsError, PromptError) as error:
        raise FieldError(error.field, str(error)) from None
    request = dataclasses.replace(requests[0], params=requests[0].params.with_seed())
    _check_prompt_tokens(model, request)
    return request


def read_melody(
    model, settings: ServerSettings, body: GenerateRequest, data: bytes
) -> tuple[np.ndarray, int]:
    """An ``input_audio`` upload sent with ``continuation: false``: the melody's ``[melody_start,
    melody_end)`` as (audio ``[channels, samples]``, rate), refused for a model that takes no
    melody (before the upload is read) and for silent audio."""
    try:
        model.require_melody_model()
    except MelodyError as error:
        raise FieldError(
            "continuation",
            f"{error}; continuation: false asks for a melody "
            "(send continuation: true to continue input_audio)",
        ) from None
    audio, rate = read_audio(data, settings.max_input_audio_seconds, "input_audio")
    try:
        piece = melody_excerpt(audio, rate, body.melody_start, body.melody_end)
        require_audible(piece, rate)
    except MelodyError as error:
        raise FieldError(_melody_field(error), f"input_audio: {error}") from None
    return piece, rate


def _melody_field(error: MelodyError) -> str:
    """The request field a ``MelodyError`` is about (the library says "melody": the upload)."""
    return error.field if error.field in ("melody_start", "melody_end") else "input_audio"


def _check_prompt_tokens(model, request: GenerationRequest) -> None:
    """The token-count check generation would do, now, through the model's own text path."""
    text = model.engine.text
    try:
        text.check_length(text.render(request.prompt, request.attributes))
    except PromptError as error:
        raise FieldError(error.field, str(error)) from None


def applied_settings(body: GenerateRequest, request: GenerationRequest, frame_rate: float) -> dict[str, Any]:
    """The settings a task ran with, as its status reports them."""
    params, attributes = request.params, request.attributes
    prompt_frames = 0 if request.prompt_codes is None else int(np.asarray(request.prompt_codes).shape[1])
    return {
        "prompt": request.prompt,
        "duration": params.duration,
        "temperature": params.temperature,
        "top_k": params.top_k,
        "top_p": params.top_p,
        "num_beams": params.num_beams,
        "guidance_scale": params.guidance_scale,
        "seed": params.seed,
        "genre": attributes.genre if attributes else None,
        "mood": list(attributes.moods) if attributes else [],
        "tempo": attributes.tempo if attributes else None,
        "instruments": list(attributes.instruments) if attributes else [],
        "key": attributes.key if attributes else None,
        "format": body.format,
        "normalization_strategy": body.normalization_strategy,
        "audio_prompt_seconds": prompt_frames / frame_rate if prompt_frames else None,
        "melody": request.melody_chroma is not None,
    }


def encode_request(request: GenerationRequest) -> dict[str, Any]:
    """A request as JSON-ready data, for whichever replica claims its task (:func:`decode_request`)."""
    codes, chroma = request.prompt_codes, request.melody_chroma
    return {
        "prompt": request.prompt,
        "params": dataclasses.asdict(request.params),
        "attributes": None if request.attributes is None else dataclasses.asdict(request.attributes),
        "prompt_codes": None if codes is None else np.asarray(codes, np.int64).tolist(),  # [K, frames]
        "melody_chroma": _chroma_data(chroma),
    }


def _chroma_data(chroma) -> list | dict | None:
    """``[frames, 12]`` as nested lists, or (long form, one a window) ``{"windows": [...]}``."""
    if chroma is None:
        return None
    if isinstance(chroma, tuple):
        return {"windows": [np.asarray(c, np.float64).tolist() for c in chroma]}
    return np.asarray(chroma, np.float64).tolist()


def _chroma_of(data) -> np.ndarray | tuple[np.ndarray, ...] | None:
    if data is None:
        return None
    if isinstance(data, dict):
        return tuple(np.asarray(c, np.float32) for c in data["windows"])
    return np.asarray(data, np.float32)


def decode_request(data: dict[str, Any]) -> GenerationRequest:
    """The request :func:`encode_request` wrote (already validated when it was submitted)."""
    attributes = data.get("attributes")
    if attributes is not None:
        attributes = Attributes(
            **{name: tuple(value) if isinstance(value, list) else value for name, value in attributes.items()}
        )
    codes, chroma = data.get("prompt_codes"), data.get("melody_chroma")
    return GenerationRequest(
        prompt=data.get("prompt"),
        params=GenerationParams(**data["params"]),
        attributes=attributes,
        prompt_codes=None if codes is None else np.asarray(codes, np.int32),
        melody_chroma=_chroma_of(chroma),
    )


def cache_key(model_name: str, dtype: str, job: dict[str, Any]) -> str:
    """Equal for requests whose audio is equal: the same model, settings, seed, format and
    normalisation (``job`` holds them all, the audio prompt's codes included)."""
    text = json.dumps({"model": model_name, "dtype": dtype, "job": job}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
