"""The settings an output directory is tokenised with (``tokenize.json``): every run that adds to
the directory must use the same codec facts and segmenting, or its records would not mix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from musicgen_jax import config_io
from musicgen_jax.data.tokenize.options import TokenizeOptions

SETTINGS_NAME = "tokenize.json"
FORMAT_VERSION = 1


def codec_settings(codec: Any, codec_source: str, options: TokenizeOptions) -> dict[str, Any]:
    """What must stay the same across the runs that fill one output directory."""
    return {
        "format_version": FORMAT_VERSION,
        "codec": codec_source,
        "sample_rate": int(codec.sample_rate),
        "frame_rate": float(codec.frame_rate),
        "num_codebooks": int(getattr(codec, "total_codebooks", codec.num_codebooks)),
        "audio_channels": int(getattr(codec, "audio_channels", 1)),
        "segment_seconds": options.segment_seconds,
        "min_segment_seconds": options.min_segment_seconds,
        **(
            {
                "augment": config_io.to_dict(options.augment),
                "augment_copies": options.augment_copies,
                "augment_seed": options.augment_seed,
            }
            if options.augment_copies
            else {}
        ),
    }


def check_settings(output: Path, settings: dict[str, Any]) -> None:
    """Write ``settings`` into a new ``output``; ValueError when an earlier run used other ones."""
    path = output / SETTINGS_NAME
    if path.is_file():
        previous = json.loads(path.read_text())
        # The codec may be named differently (a hub id, then its local copy); its facts may not change.
        differing = {k for k in settings if k != "codec" and previous.get(k) != settings[k]}
        if differing:
            details = ", ".join(f"{k}: {previous.get(k)!r} then {settings[k]!r}" for k in sorted(differing))
            raise ValueError(f"{output} was tokenised with other settings ({details}); use a new --output")
    else:
        path.write_text(json.dumps(settings, indent=2) + "\n")
