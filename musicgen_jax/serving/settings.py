"""Server settings: ``MUSICGEN_*`` environment variables, overridden by command-line flags.

One typed, frozen object holds every knob; :func:`parse_args` builds the flags from the fields
(``--max-batch-size`` for ``max_batch_size``), so the two can never disagree. List settings are
comma-separated in both places (``MUSICGEN_CORS_ORIGINS=https://a.example,https://b.example``).
API keys are deliberately not a flag (flags show up in ``ps``): use ``MUSICGEN_API_KEYS`` or
``--api-keys-file``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from musicgen_jax.codec import CODEC_BACKENDS
from musicgen_jax.dtypes import RUN_DTYPE_NAMES
from musicgen_jax.models.int8 import QUANTIZE_CHOICES

# Settings a flag may not set (secrets); they come from the environment or a file.
_NOT_FLAGS = {"api_keys"}


def default_data_dir() -> Path:
    """The platform's state directory for this program (``$XDG_STATE_HOME/musicgen-jax``, else
    ``~/.local/state/musicgen-jax`` on Linux; the equivalent on macOS and Windows), not the folder
    the server happens to start in."""
    try:
        import platformdirs
    except ImportError:  # a dependency; the XDG rule without it
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "musicgen-jax"
    return Path(platformdirs.user_state_dir("musicgen-jax", appauthor=False))


class ServerSettings(BaseSettings):
    """Everything the server can be told. Environment: ``MUSICGEN_<FIELD>``; flags: ``--field-name``."""

    model_config = SettingsConfigDict(env_prefix="MUSICGEN_", frozen=True, extra="forbid")

    # ------------------------------------------------------------------ model and device
    model: str = Field(
        "facebook/musicgen-small",
        description="the built-in `demo`, a hub id or a local directory of the model",
    )
    dtype: Literal[RUN_DTYPE_NAMES] = Field(
        "auto", description="parameter/compute dtype (auto: bfloat16 on GPU/TPU, float32 on CPU)"
    )
    codec_backend: Literal[CODEC_BACKENDS] = Field(
        "auto", description="EnCodec backend: jax, torch or auto (jax)"
    )
    quantize: Literal[QUANTIZE_CHOICES] | None = Field(
        None, description="int8: weight-only int8 decoder projections and heads; unset: none"
    )
    compilation_cache_dir: str | None = Field(
        None,
        description=(
            "persistent JAX compilation cache directory (default ~/.cache/musicgen_jax/xla; '' turns it off)"
        ),
    )
    warmup_batch_sizes: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [1, 4], description="batch sizes compiled before the server reports ready"
    )
    warmup_durations: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [10.0, 30.0],
        description="durations (s) whose length buckets are compiled at start",
    )
    warmup_text_tokens: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [16, 32], description="prompt token buckets compiled at start"
    )

    # ------------------------------------------------------------------ network
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed by CORS ('*' for any); empty: no CORS headers"
    )
    shutdown_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="on SIGTERM, how long open requests and streams may finish before they are cut",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level"
    )

    # ------------------------------------------------------------------ storage
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="local directory of the SQLite task database and (without storage_url) the audio files",
    )
    database_url: str | None = Field(
        None,
        description=(
            "PostgreSQL task store and queue shared by replicas (postgresql://user@host:5432/db); "
            "none: SQLite in data_dir, one process"
        ),
    )
    storage_url: str | None = Field(
        None,
        description=(
            "where audio files go: a directory (shared by replicas) or an fsspec URL; none: data_dir/audio"
        ),
    )
    lease_seconds: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="how long a claimed task stays this replica's without a renewal (renewed every third)",
    )
    queue_poll_ms: float = Field(
        200.0, gt=0, le=60_000, description="how often an idle replica looks for queued tasks"
    )
    retention_hours: float = Field(168.0, gt=0, description="finished tasks older than this are deleted")
    max_storage_mb: float = Field(
        5000.0, gt=0, description="oldest finished tasks are deleted past this total"
    )
    cleanup_interval_seconds: float = Field(600.0, gt=0, description="how often the cleanup runs")

    # ------------------------------------------------------------------ queue and batching
    max_batch_size: int = Field(8, ge=1, le=64, description="most requests generated together")
    batch_window_ms: float = Field(
        30.0, ge=0, le=5000, description="how long the first request of a batch waits for company"
    )
    max_queue_size: int = Field(256, ge=1, description="queued requests beyond this get 503")
    audio_workers: int = Field(2, ge=1, le=32, description="threads decoding and encoding audio")
    torch_threads: int = Field(
        1, ge=1, le=256, description="PyTorch threads per codec call (parallelism comes from audio_workers)"
    )
    sync_timeout_seconds: float = Field(
        120.0, gt=0, description="longest a POST /generate?wait=true holds the connection"
    )

    # ------------------------------------------------------------------ request limits
    max_duration: float = Field(30.0, ge=1, le=120, description="longest audio a request may ask for (s)")
    default_duration: float = Field(10.0, ge=1, le=120, description="duration when a request gives none (s)")
    max_prompt_chars: int = Field(1000, ge=1, le=100_000, description="longest prompt in characters")
    max_request_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="largest request body (uploads included) in bytes"
    )
    max_input_audio_seconds: float = Field(
        60.0, gt=0, description="longest uploaded audio (prompt or evaluation) in seconds"
    )
    max_stream_sessions: int = Field(16, ge=1, description="live WebSocket streams at once")

    # ------------------------------------------------------------------ security
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accepted API keys (environment only); none: no authentication"
    )
    api_keys_file: Path | None = Field(None, description="file with one API key per line ('#' comments)")
    rate_limit_per_minute: float = Field(
        0.0, ge=0, description="requests per minute per API key (or client IP) on POST routes; 0 = off"
    )
    rate_limit_burst: int = Field(10, ge=1, description="requests allowed at once before the rate applies")

    @field_validator(
        "warmup_batch_sizes",
        "warmup_durations",
        "warmup_text_tokens",
        "cors_origins",
        "api_keys",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        # Environment variables and flags are strings: "1,4" means [1, 4]; "" means [].
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("warmup_batch_sizes")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError("batch sizes must be >= 1")
        return value

    @field_validator("database_url", "storage_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("database_url must be a PostgreSQL URL: postgresql://user@host:5432/database")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServerSettings:
        if self.default_duration > self.max_duration:
            raise ValueError(
                f"default_duration ({self.default_duration:g} s) exceeds "
                f"max_duration ({self.max_duration:g} s)"
            )
        return self

    def load_api_keys(self) -> list[str]:
        """The keys from ``api_keys`` and ``api_keys_file`` (read now, so a rotated file needs a restart)."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            try:
                text = Path(self.api_keys_file).expanduser().read_text()
            except OSError as error:
                raise ValueError(
                    f"cannot read api_keys_file {self.api_keys_file}: {error.strerror or error}"
                ) from None
            keys += [
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.strip().startswith("#")
            ]
        return keys


class SettingsError(ValueError):
    """Settings that do not validate; the message lists every problem."""


def build_parser() -> argparse.ArgumentParser:
    """Flags for every setting (except secrets); unset flags fall back to the environment."""
    parser = argparse.ArgumentParser(
        prog="musicgen-jax-api",
        allow_abbrev=False,  # "--api-keys" must not quietly mean "--api-keys-file"
        description="Serve MusicGen over HTTP and WebSocket. Every flag can also be set as MUSICGEN_<NAME> "
        "in the environment; API keys only through MUSICGEN_API_KEYS or --api-keys-file.",
    )
    for name, field in ServerSettings.model_fields.items():
        if name in _NOT_FLAGS:
            continue
        default = field.get_default(call_default_factory=True)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=argparse.SUPPRESS,  # absent flags do not override the environment
            metavar=name.upper(),
            help=f"{field.description} (default: {shown})",
        )
    return parser


def parse_args(argv: list[str] | None = None) -> ServerSettings:
    """Settings from the environment and ``argv`` (flags win); raises :class:`SettingsError`."""
    values = vars(build_parser().parse_args(argv))
    return make_settings(**values)


def make_settings(**values: Any) -> ServerSettings:
    """``ServerSettings(**values)`` with validation errors as one readable :class:`SettingsError`."""
    try:
        return ServerSettings(**values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
        raise SettingsError(f"invalid settings: {problems}") from None
