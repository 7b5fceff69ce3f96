"""Where a model comes from: a built-in model, a local directory, or a Hugging Face hub id
(downloaded or cached).

Built-in models are reserved names (:data:`BUILTIN_MODELS`: ``demo``, trained here and shipped in
the package), given as a string; a local directory of the same name is reached as ``./demo``. The
hub path is real code (``huggingface_hub.snapshot_download``); with no network and no cached copy
it fails at once with one sentence that says how to point at a local directory instead.
"""

from __future__ import annotations

import re
from pathlib import Path

# The files any of our loaders may read; weights in other formats are not downloaded.
MODEL_FILES = [
    "*.json",
    "*.yaml",
    "*.safetensors",
    "spiece.model",
    "tokenizer/*",
    "codec/*",
]
FALLBACK_WEIGHTS = ["pytorch_model*.bin", "state_dict.bin", "flax_model.msgpack"]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
# Reserved model names and their directories inside the package.
BUILTIN_MODELS: dict[str, Path] = {"demo": ASSETS_DIR / "demo"}
# The demo model's codec (a transformers EncodecModel directory inside it, docs/codec-demo.md).
DEMO_CODEC = BUILTIN_MODELS["demo"] / "codec"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class ModelNotFoundError(FileNotFoundError):
    """Neither a local directory nor a reachable (or cached) hub repository."""


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def resolve(
    name_or_path: str | Path, allow_patterns: list[str] | None = None, revision: str | None = None
) -> Path:
    """A local directory for ``name_or_path``: a built-in model's, the directory itself, or the hub
    snapshot."""
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_MODELS:
        builtin = BUILTIN_MODELS[name_or_path]
        if not builtin.is_dir():
            raise ModelNotFoundError(
                f"the built-in {name_or_path!r} model is not in this installation ({builtin}); "
                "build it with python -m musicgen_jax.recipes.demo, or give a local directory as ./"
                f"{name_or_path}"
            )
        return builtin
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"{path} is a file; point at the model's directory")
        return path
    name = str(name_or_path)
    if not looks_like_hub_id(name):
        raise ModelNotFoundError(
            f"no model directory at {path} "
            f"(and {name!r} is not a Hugging Face hub id such as facebook/musicgen-small)"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = allow_patterns or MODEL_FILES
    try:
        local = Path(snapshot_download(name, revision=revision, allow_patterns=patterns))
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"the Hugging Face hub has no repository {name!r}") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise ModelNotFoundError(
            f"could not download {name!r} from the Hugging Face hub and no cached copy exists "
            f"({type(error).__name__}); point at a local directory instead (for --model: a transformers "
            f"MusicGen directory or a musicgen-jax checkpoint)"
        ) from None
    if (
        not any(local.glob("*.safetensors"))
        and not any(local.glob("*.safetensors.index.json"))
        and allow_patterns is None
    ):
        local = Path(snapshot_download(name, revision=revision, allow_patterns=patterns + FALLBACK_WEIGHTS))
    return local
