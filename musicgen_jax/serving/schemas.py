"""Request and response models: what the OpenAPI schema publishes and what requests are checked against.

Field names follow the popular hosted MusicGen APIs (Replicate's ``meta/musicgen``: ``prompt``,
``duration``, ``top_k``, ``top_p``, ``temperature``, ``seed``, ``normalization_strategy``,
``input_audio``, ``continuation`` (true: continue the upload; false: follow its melody),
``continuation_start``/``continuation_end``) plus ``melody_start``/``melody_end`` and this
project's conditioning attributes (``genre``, ``mood``, ``tempo``, ``instruments``, ``key``).
Ranges are checked here with pydantic; the library checks them again
(:class:`~musicgen_jax.generation.params.GenerationParams`) and its messages are passed through
unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from musicgen_jax.audio.formats import DEFAULT_NORMALIZATION, FORMATS, NORMALIZATIONS
from musicgen_jax.conditioning import vocabulary
from musicgen_jax.generation.params import MAX_BEAMS, MAX_DURATION, MIN_DURATION, GenerationParams

Format = Literal[FORMATS]  # Literal of a tuple is the Literal of its items
Normalization = Literal[NORMALIZATIONS]
TaskState = Literal["queued", "running", "completed", "failed"]
MAX_LIST_ITEMS = 16
MAX_STREAM_AUDIO_BASE64 = 16_000_000  # characters; the server's max_request_bytes is checked once decoded
VOCABULARY_SIZE = 2048  # codebook size of every MusicGen checkpoint: top_k above it means "all tokens"
# Validation context key: the multipart body carries an ``input_audio`` upload (an audio prompt).
HAS_INPUT_AUDIO = "has_input_audio"
NO_PROMPT = (
    "the prompt is empty; describe the music in prompt, upload input_audio to continue, "
    "or set unconditional: true for music without a prompt"
)
PROMPT_AND_UNCONDITIONAL = "give a prompt or unconditional: true, not both"
# What a request must say (GenerateRequest), as the published schema states it: a prompt with a
# non-space character, an input_audio upload (a property of the multipart form only) or
# unconditional: true. The validator checks it again (and refuses a prompt with unconditional: true).
_PROMPT_GIVEN = {"required": ["prompt"], "properties": {"prompt": {"type": "string", "pattern": "\\S"}}}
_AUDIO_GIVEN = {"required": ["input_audio"]}
_UNCONDITIONAL_GIVEN = {"required": ["unconditional"], "properties": {"unconditional": {"const": True}}}


def _unicode_text(value: str) -> str:
    # A lone surrogate (valid JSON "\ud800", not valid text) would break the tokenizer and any
    # response that echoes it; refuse it at the door.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogate code points)") from None
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Word = Annotated[str, Field(max_length=100), AfterValidator(_unicode_text)]
WordList = Annotated[list[Word], Field(max_length=MAX_LIST_ITEMS)]

_DEFAULTS = GenerationParams()


class GenerateRequest(BaseModel):
    """One piece of music to make. Send as JSON, or as multipart/form-data with ``input_audio``.

    A request says what to make: a ``prompt``, an ``input_audio`` upload to continue, or
    ``unconditional: true`` for music without a prompt; anything else (``{}``, a blank prompt) is
    refused, as the command line refuses an empty prompt, rather than quietly generating
    unconditional audio.
    """

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        title="GenerateRequest",
        json_schema_extra={"anyOf": [_PROMPT_GIVEN, _AUDIO_GIVEN, _UNCONDITIONAL_GIVEN]},
    )

    prompt: Annotated[str, Field(max_length=1000), AfterValidator(_unicode_text)] | None = Field(
        None,
        description="text description of the music; required unless input_audio or unconditional is given",
        examples=["upbeat jazz piano with smooth saxophone"],
    )
    unconditional: bool = Field(
        False, description="true: music without a text prompt (prompt must then be absent or empty)"
    )
    duration: float | None = Field(
        None,
        ge=MIN_DURATION,
        le=MAX_DURATION,
        description="seconds of audio, an audio prompt included; absent: the server's default",
    )
    temperature: float = Field(_DEFAULTS.temperature, gt=0, le=100, description="sampling temperature")
    top_k: int = Field(
        _DEFAULTS.top_k, ge=0, le=VOCABULARY_SIZE, description="sample among the k likeliest tokens; 0 = off"
    )
    top_p: float = Field(
        _DEFAULTS.top_p,
        ge=0,
        le=1,
        description="nucleus sampling mass; 0 = off (applied after top_k: set top_k 0 for top-p alone)",
    )
    num_beams: int = Field(
        _DEFAULTS.num_beams, ge=1, le=MAX_BEAMS, description="beam search width (slower, deterministic)"
    )
    guidance_scale: float = Field(
        _DEFAULTS.guidance_scale, ge=0, le=100, description="classifier-free guidance; 1 = off"
    )
    genre: Word | None = Field(None, description=f"one of: {', '.join(vocabulary.GENRES)}")
    mood: Word | WordList | None = Field(
        None, description=f"a mood, a comma-separated list or an array; known: {', '.join(vocabulary.MOODS)}"
    )
    tempo: float | None = Field(
        None, ge=vocabulary.TEMPO_RANGE[0], le=vocabulary.TEMPO_RANGE[1], description="beats per minute"
    )
    instruments: Word | WordList | None = Field(
        None, description=f"comma-separated or an array; known: {', '.join(vocabulary.INSTRUMENTS)}"
    )
    key: Word | None = Field(None, description="musical key such as 'A minor'", examples=["C major"])
    seed: int | None = Field(
        None, ge=0, lt=2**32, description="random seed; absent: drawn (and reported back)"
    )
    format: Format = Field("wav", description="audio file format")
    normalization_strategy: Normalization = Field(
        DEFAULT_NORMALIZATION,
        description="level normalisation of the file: loudness (-14 LUFS), peak, rms, clip, none",
    )
    continuation_start: float = Field(
        0.0, ge=0, le=3600, description="with input_audio: where the prompt starts in it, seconds"
    )
    continuation: bool = Field(
        True,
        description="with input_audio: true (the default): continue it, the output starts with it; "
        "false: a melody to follow (melody models only: see takes_melody in /info)",
    )
    continuation_end: float | None = Field(
        None,
        ge=-1,
        le=3600,
        description="with input_audio: where the prompt ends, seconds; null or -1: its end",
    )
    melody_start: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="with input_audio and continuation false: where the melody starts, seconds",
    )
    melody_end: float | None = Field(
        None,
        ge=-1,
        le=3600,
        description="with input_audio and continuation false: where the melody ends, seconds; "
        "null or -1: its end",
    )

    @model_validator(mode="after")
    def _says_what_to_make(self, info: ValidationInfo) -> GenerateRequest:
        has_prompt = bool(self.prompt and self.prompt.strip())
        if self.unconditional and has_prompt:
            raise PydanticCustomError("prompt_and_unconditional", PROMPT_AND_UNCONDITIONAL)
        has_audio = bool(info.context and info.context.get(HAS_INPUT_AUDIO)) or bool(
            getattr(self, "input_audio", None)  # a stream's melody, inline
        )
        if not (has_prompt or has_audio or self.unconditional):
            raise PydanticCustomError("missing_prompt", NO_PROMPT)
        return self


def request_model(
    max_prompt_chars: int, max_duration: float, default_duration: float
) -> type[GenerateRequest]:
    """:class:`GenerateRequest` with this server's limits, so the published schema tells the truth."""
    return create_model(
        "GenerateRequest",
        __base__=GenerateRequest,
        prompt=(
            Annotated[str, Field(max_length=max_prompt_chars), AfterValidator(_unicode_text)] | None,
            Field(
                None, description=GenerateRequest.model_fields["prompt"].description, examples=["calm piano"]
            ),
        ),
        duration=(
            float | None,
            Field(
                None,
                ge=MIN_DURATION,
                le=max_duration,
                description=f"seconds of audio, an audio prompt included; absent: {default_duration:g}",
            ),
        ),
    )


class StreamRequest(GenerateRequest):
    """A streaming request: the generation fields plus how much audio each chunk should carry."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        title="StreamRequest",
        json_schema_extra={"anyOf": [_PROMPT_GIVEN, _AUDIO_GIVEN, _UNCONDITIONAL_GIVEN]},
    )

    input_audio: str | None = Field(
        None,
        max_length=MAX_STREAM_AUDIO_BASE64,
        description="base64 of an audio file (WAV, FLAC, MP3, OGG): a melody to follow, with continuation "
        "false (melody models only); a stream does not continue audio",
    )

    chunk_duration: float = Field(1.0, ge=0.2, le=10.0, description="seconds of audio per chunk (at least)")
    encoding: Literal["binary", "base64"] = Field(
        "binary", description="audio chunks as binary frames, or base64 inside JSON messages"
    )


# ---------------------------------------------------------------------------------- responses


class ErrorMessage(BaseModel):
    detail: str = Field(description="what went wrong, in words")


class TaskAccepted(BaseModel):
    task_id: str
    status: TaskState
    seed: int | None = Field(description="the seed this task uses")
    status_url: str
    download_url: str


class TaskStatus(BaseModel):
    task_id: str
    status: TaskState
    progress: float = Field(ge=0, le=1, description="fraction of the audio generated")
    queue_position: int | None = Field(description="requests ahead of this one while queued (0 = next)")
    prompt: str | None
    request: dict[str, Any] = Field(description="the generation settings as applied")
    seed: int | None
    format: Format
    created_at: str = Field(description="ISO 8601 time the task was submitted")
    started_at: str | None = Field(description="when its batch started on the device")
    finished_at: str | None
    queued_seconds: float | None = Field(description="submission to start")
    total_seconds: float | None = Field(description="submission to finish")
    generate_seconds: float | None = Field(
        description="device time of the task's batch, compilation excluded"
    )
    compile_seconds: float | None
    decode_seconds: float | None = Field(description="codec decoding and file encoding of this task")
    real_time_factor: float | None = Field(
        description="seconds of audio per second of generate + decode time (> 1 is faster than real time)"
    )
    audio_seconds: float | None
    sample_rate: int | None
    channels: int | None
    batch_size: int | None = Field(description="requests generated together with this one")
    error: str | None
    download_url: str | None


class TaskList(BaseModel):
    tasks: list[TaskStatus]


class Health(BaseModel):
    status: Literal["ok", "loading", "failed"]
    model_loaded: bool
    ready: bool
    detail: str | None = None


class Vocabulary(BaseModel):
    genres: list[str]
    moods: list[str]
    instruments: list[str]
    keys: list[str]
    tempo_range: tuple[float, float]


class ServerInfo(BaseModel):
    model: str
    sample_rate: int | None
    channels: int | None
    frame_rate: float | None
    ready: bool
    max_duration: float
    default_duration: float
    max_prompt_chars: int
    max_batch_size: int
    formats: list[str]
    normalizations: list[str]
    auth_required: bool
    takes_melody: bool = Field(
        description="the model follows a melody: input_audio with continuation false (MusicGen-melody)"
    )
    vocabulary: Vocabulary
    defaults: dict[str, Any]


class Evaluation(BaseModel):
    source: Literal["upload", "task"]
    task_id: str | None
    metrics: dict[str, float | int | None] = Field(description="see musicgen_jax.eval.METRIC_DOCS")
    notes: dict[str, str] = Field(description="why a metric is null, and adjustments made")


class StreamSessionInfo(BaseModel):
    session_id: str
    state: Literal["waiting", "queued", "streaming", "finishing"]
    prompt: str | None
    duration: float | None
    created_at: str
    chunks_sent: int
    seconds_sent: float


class StreamSessionList(BaseModel):
    sessions: list[StreamSessionInfo]
