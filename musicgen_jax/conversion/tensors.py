"""Reading and writing named tensors, lazily and one at a time.

A :class:`TensorSource` opens whatever a checkpoint directory holds — ``model.safetensors`` (or its
sharded index), ``pytorch_model.bin`` (or its index), audiocraft's ``state_dict.bin``, or a Flax
``flax_model.msgpack`` — and hands out tensors by their PyTorch name as NumPy arrays in the dtype
asked for. Nothing loads the whole checkpoint at once, so converting a large model never holds
two full float32 copies in host memory.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np
from flax import traverse_util

from musicgen_jax.dtypes import numpy_dtype


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


def torch_to_numpy(tensor) -> np.ndarray:
    """A CPU torch tensor as NumPy, bfloat16 included (NumPy has no native bfloat16)."""
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


class TensorSource:
    """Named tensors of one checkpoint, read on demand."""

    def __init__(self, readers: dict[str, _Reader]):
        self._readers = readers  # tensor name -> reader holding it

    @classmethod
    def open(cls, path: str | Path, prefix: str = "") -> TensorSource:
        """Open a file or a directory; ``prefix`` keeps only names starting with it (stripped)."""
        path = Path(path)
        files = _weight_files(path)
        readers: dict[str, _Reader] = {}
        for file in files:
            reader = _open_reader(file)
            for name in reader.keys():  # noqa: SIM118 -- a _Reader is not a dict: keys() is all it offers
                if name.startswith(prefix):
                    readers[name[len(prefix) :]] = _Alias(reader, name) if prefix else reader
        if not readers:
            raise CheckpointError(f"{path}: no tensors{f' under {prefix!r}' if prefix else ''}")
        return cls(readers)

    @classmethod
    def from_torch_state(cls, state: dict, origin: str | Path) -> TensorSource:
        """The tensors of a state dict already loaded from ``origin`` (named in errors)."""
        reader = _TorchReader(Path(origin), state)
        if not reader.keys():
            raise CheckpointError(f"{origin}: no tensors")
        return cls(dict.fromkeys(reader.keys(), reader))

    def keys(self) -> list[str]:
        return sorted(self._readers)

    def use_tied_copy(self, name: str, copy: str) -> None:
        """Serve ``name`` from ``copy`` when only the tied copy was saved (T5's shared embedding)."""
        if name not in self._readers and copy in self._readers:
            self._readers[name] = _Alias(self._readers.pop(copy), copy)

    def __contains__(self, name: str) -> bool:
        return name in self._readers

    def get(self, name: str, dtype: str | np.dtype | None = None) -> np.ndarray:
        if name not in self._readers:
            raise CheckpointError(f"tensor {name!r} is missing from the checkpoint")
        array = self._readers[name].get(name)
        return array if dtype is None else array.astype(numpy_dtype(dtype), copy=False)

    def items(self, dtype=None) -> Iterator[tuple[str, np.ndarray]]:
        for name in self.keys():
            yield name, self.get(name, dtype)


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}")
    for index_name in (
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
        "params.safetensors.index.json",
    ):
        index = path / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [path / shard for shard in shards]
    for name in (
        "model.safetensors",
        "pytorch_model.bin",
        "flax_model.msgpack",
        "state_dict.bin",
        "params.safetensors",
    ):
        if (path / name).is_file():
            return [path / name]
    raise CheckpointError(
        f"{path} holds no weights: expected model.safetensors, pytorch_model.bin, flax_model.msgpack "
        "or state_dict.bin (or a sharded index of one)"
    )


class _Reader:
    def keys(self) -> list[str]:
        raise NotImplementedError

    def get(self, name: str) -> np.ndarray:
        raise NotImplementedError


class _Alias(_Reader):
    def __init__(self, reader: _Reader, name: str):
        self._reader, self._name = reader, name

    def keys(self) -> list[str]:
        return [self._name]

    def get(self, name: str) -> np.ndarray:
        return self._reader.get(self._name)


_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class _SafetensorsReader(_Reader):
    """Reads tensors with plain file reads rather than a memory map: a mapped checkpoint counts
    in the process's resident memory as it is touched, which would double the peak while a large
    model loads. The format is a little-endian u64 header length, a JSON header of
    ``{name: {dtype, shape, data_offsets}}``, then the bytes."""

    def __init__(self, file: Path):
        self._file = file
        try:
            with open(file, "rb") as handle:
                (length,) = np.frombuffer(handle.read(8), "<u8")
                header = json.loads(handle.read(int(length)))
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{file}: not a readable safetensors file ({error})") from None
        header.pop("__metadata__", None)
        self._data_start = 8 + int(length)
        self._header = header

    def keys(self) -> list[str]:
        return list(self._header)

    def get(self, name: str) -> np.ndarray:
        entry = self._header[name]
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointError(f"{self._file}: tensor {name} has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        array = np.empty(entry["shape"], dtype=dtype)
        if array.nbytes != end - begin:
            raise CheckpointError(
                f"{self._file}: tensor {name} has {end - begin} bytes for shape {entry['shape']}"
            )
        with open(self._file, "rb") as handle:
            handle.seek(self._data_start + begin)
            if handle.readinto(memoryview(array.reshape(-1).view(np.uint8))) != array.nbytes:
                raise CheckpointError(f"{self._file}: tensor {name} is truncated")
        return array


# What torch.load raises on a file it cannot read: OSError from the file; RuntimeError from the zip
# reader and from the mmap check on a file in the legacy (non-zip) format; pickle.UnpicklingError from
# the weights-only unpickler (a class outside its allow-list, such as audiocraft's OmegaConf config) and
# from pickle; EOFError, struct.error, ValueError, TypeError, LookupError and AssertionError on a
# truncated or malformed pickle; ImportError and AttributeError when a pickled class cannot be found.
_TORCH_LOAD_ERRORS = (
    OSError,
    RuntimeError,
    pickle.UnpicklingError,
    EOFError,
    struct.error,
    ValueError,
    TypeError,
    LookupError,
    AssertionError,
    ImportError,
    AttributeError,
)

# What flax's msgpack_restore raises on bytes it cannot read: msgpack's ValueErrors (incomplete input,
# ExtraData, FormatError, StackError, bad UTF-8); ValueError and TypeError from NumPy on an array
# record with a bad dtype, shape or layout; LookupError on a malformed chunked array.
_MSGPACK_RESTORE_ERRORS = (OSError, ValueError, TypeError, LookupError)


def load_torch_file(file: str | Path) -> object:
    """What ``torch.load`` returns for ``file`` on the CPU (memory-mapped where possible)."""
    import torch

    try:
        return torch.load(str(file), map_location="cpu", mmap=True, weights_only=True)
    except _TORCH_LOAD_ERRORS:
        try:  # older audiocraft packages pickle an OmegaConf config beside the weights
            return torch.load(str(file), map_location="cpu", weights_only=False)
        except _TORCH_LOAD_ERRORS as error:
            raise CheckpointError(f"{file}: not a readable PyTorch checkpoint ({error})") from None


class _TorchReader(_Reader):
    """``pytorch_model.bin`` or audiocraft's ``state_dict.bin`` (memory-mapped where possible), or
    a state dict already loaded (``data``)."""

    def __init__(self, file: Path, data: object = None):
        if data is None:
            data = load_torch_file(file)
        if isinstance(data, dict) and "best_state" in data:
            data = data["best_state"]
            if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
                data = data["model"]
        if not isinstance(data, dict):
            raise CheckpointError(f"{file}: expected a state dict, got {type(data).__name__}")
        self._tensors = {k: v for k, v in data.items() if hasattr(v, "detach")}

    def keys(self) -> list[str]:
        return list(self._tensors)

    def get(self, name: str) -> np.ndarray:
        return torch_to_numpy(self._tensors[name])


class _FlaxMsgpackReader(_Reader):
    """transformers' Flax layout, presented under PyTorch names (kernels transposed back)."""

    def __init__(self, file: Path):
        from flax import serialization

        try:
            tree = serialization.msgpack_restore(file.read_bytes())
        except _MSGPACK_RESTORE_ERRORS as error:
            raise CheckpointError(f"{file}: not a readable Flax msgpack file ({error})") from None
        self._tensors: dict[str, np.ndarray] = {}
        for path, value in traverse_util.flatten_dict(tree).items():
            leaf = path[-1]
            stem = ".".join(path[:-1])
            if leaf == "kernel":
                self._tensors[f"{stem}.weight"] = np.asarray(value).T
            elif leaf in ("embedding", "scale"):
                self._tensors[f"{stem}.weight"] = np.asarray(value)
            else:
                self._tensors[".".join(path)] = np.asarray(value)

    def keys(self) -> list[str]:
        return list(self._tensors)

    def get(self, name: str) -> np.ndarray:
        return self._tensors[name]


def _open_reader(file: Path) -> _Reader:
    if file.suffix == ".safetensors":
        return _SafetensorsReader(file)
    if file.suffix in (".bin", ".pt", ".pth", ".th"):
        return _TorchReader(file)
    if file.suffix == ".msgpack":
        return _FlaxMsgpackReader(file)
    raise CheckpointError(f"{file}: unknown weight file type")


def save_safetensors(
    tensors: dict[str, np.ndarray], directory: str | Path, stem: str = "model", max_shard_bytes: int = 5 << 30
) -> list[Path]:
    """Write ``tensors`` as ``<stem>.safetensors`` or, past ``max_shard_bytes``, as shards with the
    index file transformers reads (``<stem>.safetensors.index.json``)."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if shards[-1] and size + array.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = array
        size += array.nbytes
    if len(shards) == 1:
        path = directory / f"{stem}.safetensors"
        save_file(shards[0], str(path), metadata={"format": "pt"})
        return [path]
    paths, weight_map = [], {}
    for number, shard in enumerate(shards, start=1):
        path = directory / f"{stem}-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path), metadata={"format": "pt"})
        paths.append(path)
        weight_map.update(dict.fromkeys(shard, path.name))
    total = sum(a.nbytes for a in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return paths
