"""The musicgen-jax inference checkpoint: a directory anyone can read without this library.

::

    <dir>/
      musicgen_jax.json        format marker: {"format": "musicgen-jax", "version": 1, "dtype": ...}
      config.yaml              MusicGenConfig
      params.safetensors       the Flax parameter tree, leaves named by their "/"-joined path
                               (params-0000N-of-0000M.safetensors + index past 5 GB)
      tokenizer/               the text tokenizer, as AutoTokenizer saves it
      codec/                   the EnCodec model as a transformers EncodecModel directory
      generation_config.json   the source checkpoint's generation defaults, when it had them

Training checkpoints (orbax, with optimizer state) export to this format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from musicgen_jax import config_io
from musicgen_jax.conversion.tensors import CheckpointError, TensorSource, save_safetensors
from musicgen_jax.dtypes import numpy_dtype
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.models.musicgen import MusicGenModel, init_inputs

FORMAT = "musicgen-jax"
VERSION = 1
MARKER = "musicgen_jax.json"
CONFIG = "config.yaml"
PARAMS = "params"
TOKENIZER = "tokenizer"
CODEC = "codec"
GENERATION = "generation_config.json"


def is_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / MARKER).is_file()


def expected_shapes(config: MusicGenConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Every parameter path of the model with its shape, from ``jax.eval_shape`` (no memory used)."""
    model = MusicGenModel(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *init_inputs(config)))
    params = nn.unbox(shapes["params"])
    return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(params).items()}


def save_checkpoint(
    directory: str | Path,
    config: MusicGenConfig,
    params: dict,
    *,
    tokenizer=None,
    tokenizer_dir: str | Path | None = None,
    codec_dir: str | Path | None = None,
    generation_config: dict | None = None,
    dtype: str | None = None,
) -> Path:
    """Write a checkpoint directory; ``dtype`` casts the parameters (default: as they are)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = numpy_dtype(dtype) if dtype else None
    flat = {}
    for path, leaf in traverse_util.flatten_dict(params).items():
        array = np.asarray(leaf)
        flat["/".join(path)] = array.astype(target) if target is not None else array
    stored_dtype = str(next(iter(flat.values())).dtype) if flat else "float32"
    for stale in directory.glob(f"{PARAMS}*.safetensors*"):
        stale.unlink()
    save_safetensors(flat, directory, stem=PARAMS)
    config_io.save_yaml(config, directory / CONFIG)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory / TOKENIZER))
    elif tokenizer_dir is not None and Path(tokenizer_dir).resolve() != (directory / TOKENIZER).resolve():
        shutil.copytree(tokenizer_dir, directory / TOKENIZER, dirs_exist_ok=True)
    if codec_dir is not None and Path(codec_dir).resolve() != (directory / CODEC).resolve():
        shutil.copytree(codec_dir, directory / CODEC, dirs_exist_ok=True)
    if generation_config is not None:
        (directory / GENERATION).write_text(json.dumps(generation_config, indent=2))
    (directory / MARKER).write_text(json.dumps({"format": FORMAT, "version": VERSION, "dtype": stored_dtype}))
    return directory


def load_config(directory: str | Path) -> MusicGenConfig:
    directory = Path(directory)
    if not is_checkpoint(directory):
        raise CheckpointError(f"{directory} is not a musicgen-jax checkpoint (no {MARKER})")
    marker = json.loads((directory / MARKER).read_text())
    if marker.get("format") != FORMAT or marker.get("version", 0) > VERSION:
        raise CheckpointError(f"{directory}: unsupported checkpoint format {marker}")
    return config_io.load(MusicGenConfig, directory / CONFIG)


def load_checkpoint(directory: str | Path, dtype: str | None = None) -> tuple[MusicGenConfig, dict]:
    """Config and parameters (NumPy, ``dtype`` or as stored), every shape checked against the config."""
    directory = Path(directory)
    config = load_config(directory)
    source = TensorSource.open(directory)
    shapes = expected_shapes(config)
    names = {"/".join(path): path for path in shapes}
    missing = sorted(set(names) - set(source.keys()))
    extra = sorted(set(source.keys()) - set(names))
    if missing or extra:
        raise CheckpointError(
            f"{directory}: parameters do not fit config.yaml"
            + (f"; missing {', '.join(missing[:6])}" if missing else "")
            + (f"; unexpected {', '.join(extra[:6])}" if extra else "")
        )
    flat: dict[tuple[str, ...], np.ndarray] = {}
    for name, path in names.items():
        array = source.get(name, dtype)
        if tuple(array.shape) != shapes[path]:
            raise CheckpointError(
                f"{directory}: {name} has shape {array.shape}, config implies {shapes[path]}"
            )
        flat[path] = array
    return config, traverse_util.unflatten_dict(flat)


def load_generation_config(directory: str | Path) -> dict:
    path = Path(directory) / GENERATION
    return json.loads(path.read_text()) if path.is_file() else {}
