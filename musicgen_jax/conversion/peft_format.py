"""LoRA adapters in PEFT's format (``adapter_config.json`` + ``adapter_model.safetensors``), both ways.

PEFT names an adapter of transformers' ``MusicgenForConditionalGeneration`` by the module it wraps:
``base_model.model.<module>.lora_A.weight`` (``[r, in_features]``) and ``...lora_B.weight``
(``[out_features, r]``), the update ``(lora_alpha / r) * B @ A`` added to the module's ``weight``.
The module names and layouts come from the one transformers name table
(:func:`~musicgen_jax.conversion.key_maps.musicgen_rules`), so:

* export (:func:`save_peft_adapter`) writes our decoder adapters (:mod:`musicgen_jax.models.lora`)
  under the names of the decoder projections, which ``peft.PeftModel.from_pretrained`` loads;
* import (:func:`merge_peft_adapter`) merges any PEFT LoRA of that model's ``Linear`` layers (decoder,
  T5 text encoder, projection, heads) into a Flax parameter tree, each update converted to the
  Flax layout of its weight exactly as the weight itself is.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from musicgen_jax.conversion.key_maps import Rule, decoder_rules, musicgen_rules, to_flax
from musicgen_jax.conversion.tensors import CheckpointError, save_safetensors
from musicgen_jax.dtypes import numpy_dtype
from musicgen_jax.models import lora as lora_lib
from musicgen_jax.models.config import MusicGenConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight$")


def is_peft_adapter(directory: str | Path) -> bool:
    return (Path(directory) / ADAPTER_CONFIG).is_file()


def _module(rule: Rule) -> str:
    """The transformers module (template) a weight rule names: its key without ``.weight``."""
    if not rule.key.endswith(".weight"):
        raise ValueError(f"{rule.key} is not a Linear weight")
    return rule.key[: -len(".weight")]


def _target_rules(config: MusicGenConfig, spec: lora_lib.LoraSpec) -> dict[str, Rule]:
    by_path = {rule.path: rule for rule in decoder_rules(config, "decoder.")}
    return {target: by_path[lora_lib.kernel_path(target)] for target in spec.targets}


def save_peft_adapter(
    directory: str | Path,
    config: MusicGenConfig,
    adapters: dict,
    spec: lora_lib.LoraSpec,
    *,
    base_model: str | None = None,
    dtype: str | None = None,
) -> Path:
    """Write ``adapters`` (host arrays, :func:`~musicgen_jax.models.lora.init_adapters`' tree) as a
    PEFT LoRA directory for transformers' ``MusicgenForConditionalGeneration``."""
    directory = Path(directory)
    tensors: dict[str, np.ndarray] = {}
    patterns = []
    for target, rule in _target_rules(config, spec).items():
        leaf = adapters
        for part in lora_lib.kernel_path(target)[:-1]:
            leaf = leaf[part]
        a, b = np.asarray(leaf[lora_lib.A], np.float32), np.asarray(leaf[lora_lib.B], np.float32)
        module = _module(rule)
        for layer in range(a.shape[0]):
            name = PREFIX + module.format(i=layer)
            tensors[f"{name}.lora_A.weight"] = a[layer].T  # [r, in]
            tensors[f"{name}.lora_B.weight"] = b[layer].T  # [out, r]
        patterns.append(re.escape(module).replace(re.escape("{i}"), r"\d+"))
    if dtype is not None:
        tensors = {k: v.astype(numpy_dtype(dtype)) for k, v in tensors.items()}
    adapter_config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        # A full-match regular expression (PEFT's str form): exactly the adapted decoder projections.
        "target_modules": "|".join(f"(?:{p})" for p in patterns),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "lora_bias": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
        "rank_pattern": {},
        "alpha_pattern": {},
        "auto_mapping": {
            "base_model_class": "MusicgenForConditionalGeneration",
            "parent_library": "transformers.models.musicgen.modeling_musicgen",
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors(tensors, directory, stem="adapter_model")
    (directory / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2) + "\n")
    return directory


def read_peft_config(directory: str | Path) -> dict:
    """The adapter config, checked for what a merge into the weights can express."""
    path = Path(directory) / ADAPTER_CONFIG
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable ({error})") from None
    if data.get("peft_type") != "LORA":
        raise CheckpointError(f"{path}: peft_type is {data.get('peft_type')!r}; only LORA adapters merge")
    unsupported = {
        "use_dora": "DoRA",
        "fan_in_fan_out": "fan_in_fan_out (Conv1D layers)",
        "lora_bias": "lora_bias",
        "modules_to_save": "modules_to_save (full copies of modules)",
        "alpha_pattern": "alpha_pattern",
        "trainable_token_indices": "trainable_token_indices",
        "layer_replication": "layer_replication",
    }
    for key, what in unsupported.items():
        if data.get(key):
            raise CheckpointError(f"{path}: {what} is not supported; merge it in PEFT and convert the model")
    if data.get("bias", "none") != "none":
        raise CheckpointError(f"{path}: bias={data['bias']!r} is not supported (only 'none')")
    return data


def read_peft_tensors(directory: str | Path) -> dict[str, np.ndarray]:
    directory = Path(directory)
    path = directory / ADAPTER_WEIGHTS
    if path.is_file():
        from safetensors.numpy import load_file

        return load_file(str(path))
    legacy = directory / "adapter_model.bin"
    if legacy.is_file():
        import torch

        state = torch.load(str(legacy), map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise CheckpointError(f"{directory} holds no {ADAPTER_WEIGHTS} (nor adapter_model.bin)")


def merge_peft_adapter(params: dict, config: MusicGenConfig, directory: str | Path) -> dict:
    """``params`` (a host NumPy tree) with a PEFT LoRA adapter of transformers' MusicGen merged in:
    each adapted weight ``W + scale * B @ A`` (scale ``lora_alpha / r``, or ``/ sqrt(r)`` with
    rsLoRA), formed in float32 and stored back in the leaf's dtype. Every adapter tensor must name
    a ``Linear`` weight of the model; anything else is an error, never skipped."""
    directory = Path(directory)
    adapter_config = read_peft_config(directory)
    tensors = read_peft_tensors(directory)
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise CheckpointError(f"{directory}: {key} is not a LoRA weight (lora_A / lora_B) of a module")
        modules.setdefault(match["module"], {})[match["part"]] = np.asarray(value, np.float32)
    weights: dict[str, tuple[Rule, int | None]] = {}
    for rule in musicgen_rules(config):
        if rule.stack:
            for index, key in enumerate(rule.torch_keys()):
                weights[key] = (rule, index)
        else:
            weights[rule.key] = (rule, None)
    alpha = float(adapter_config["lora_alpha"])
    merged = _copy_tree(params)
    for module, parts in sorted(modules.items()):
        if set(parts) != {"A", "B"}:
            raise CheckpointError(f"{directory}: {module} has lora_{''.join(parts)} but not both A and B")
        found = weights.get(f"{module}.weight")
        if found is None:
            raise CheckpointError(f"{directory}: {module} is not a Linear layer of this MusicGen model")
        rule, index = found
        a, b = parts["A"], parts["B"]  # [r, in], [out, r]
        rank = a.shape[0]
        if b.shape[1] != rank:
            raise CheckpointError(
                f"{directory}: {module}: lora_A {a.shape} and lora_B {b.shape} differ in rank"
            )
        scale = alpha / math.sqrt(rank) if adapter_config.get("use_rslora") else alpha / rank
        update = to_flax(scale * (b @ a), rule)  # [out, in] in torch's layout -> the leaf's
        leaf = _leaf(merged, rule.path)
        target = leaf if index is None else leaf[index]
        if update.shape != target.shape:
            raise CheckpointError(
                f"{directory}: {module}: the update is {update.shape} in our layout, "
                f"the weight {target.shape}"
            )
        total = (target.astype(np.float32) + update).astype(leaf.dtype)
        if index is None:
            _set_leaf(merged, rule.path, total)
        else:
            leaf[index] = total
    return merged


def adapter_from_peft(config: MusicGenConfig, spec: lora_lib.LoraSpec, directory: str | Path) -> dict:
    """Our decoder adapter tree from a PEFT directory of exactly ``spec``'s targets (the inverse of
    :func:`save_peft_adapter`)."""
    tensors = read_peft_tensors(directory)
    out: dict = {}
    for target, rule in _target_rules(config, spec).items():
        module = _module(rule)
        a = np.stack([tensors[f"{PREFIX}{module.format(i=i)}.lora_A.weight"].T for i in range(rule.stack)])
        b = np.stack([tensors[f"{PREFIX}{module.format(i=i)}.lora_B.weight"].T for i in range(rule.stack)])
        out = lora_lib.set_path(out, lora_lib.kernel_path(target)[:-1], {lora_lib.A: a, lora_lib.B: b})
    return out


def _copy_tree(tree):
    if isinstance(tree, dict):
        return {k: _copy_tree(v) for k, v in tree.items()}
    return np.array(tree, copy=True)


def _leaf(tree: dict, path: tuple[str, ...]) -> np.ndarray:
    for part in path:
        tree = tree[part]
    return tree


def _set_leaf(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for part in path[:-1]:
        tree = tree[part]
    tree[path[-1]] = value


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "adapter_from_peft",
    "is_peft_adapter",
    "merge_peft_adapter",
    "read_peft_config",
    "save_peft_adapter",
]
