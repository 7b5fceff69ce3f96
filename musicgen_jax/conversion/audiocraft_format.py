"""audiocraft's own LM checkpoint (``state_dict.bin`` as Meta publishes it) into musicgen-jax.

audiocraft stores only the language model: ``emb.*``, ``transformer.layers.*`` with fused
``in_proj_weight``, ``out_norm``, ``linears.*`` and the description conditioner's ``output_proj``.
The T5 encoder (t5-base) and the EnCodec codec come from their own checkpoints, named by the caller.
"""

from __future__ import annotations

import re
from pathlib import Path

from musicgen_jax.conversion import checkpoint as ckpt
from musicgen_jax.conversion.key_maps import audiocraft_to_transformers_names, decoder_rules, projection_rules
from musicgen_jax.conversion.params import load_params
from musicgen_jax.conversion.t5_format import load_t5_encoder
from musicgen_jax.conversion.tensors import CheckpointError, TensorSource
from musicgen_jax.models.config import MusicGenConfig

# Tensors audiocraft keeps beside the LM that have no counterpart here.
AUDIOCRAFT_IGNORED = [r"condition_provider\.conditioners\.self_wav\..*", r".*\.num_batches_tracked"]


def is_audiocraft_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return path.name == "state_dict.bin" or (path.is_dir() and (path / "state_dict.bin").is_file())


def infer_shape(state_keys: list[str], get) -> dict:
    """Width, layers, codebooks and ffn of an audiocraft LM from its tensors (heads are not stored)."""
    codebooks = len({m.group(1) for k in state_keys if (m := re.match(r"emb\.(\d+)\.weight$", k))})
    layers = len({m.group(1) for k in state_keys if (m := re.match(r"transformer\.layers\.(\d+)\.", k))})
    if not codebooks or not layers:
        raise CheckpointError("not an audiocraft MusicGen LM state dict (no emb.* or transformer.layers.*)")
    emb = get("emb.0.weight")
    ffn = get("transformer.layers.0.linear1.weight")
    return {
        "codebooks": codebooks,
        "layers": layers,
        "hidden": emb.shape[1],
        "vocab": emb.shape[0] - 1,
        "ffn": ffn.shape[0],
    }


def load_audiocraft_params(
    lm_path: str | Path, text_encoder_dir: str | Path, config: MusicGenConfig, dtype: str = "float32"
) -> dict:
    """Flax parameters from audiocraft's LM checkpoint plus a Hugging Face T5 directory.

    ``config`` gives the shapes (audiocraft's state dict does not record the number of heads);
    every tensor's shape is checked against it.
    """
    source = TensorSource.open(Path(lm_path))
    shape = infer_shape(source.keys(), source.get)
    dec = config.decoder
    found = (shape["hidden"], shape["layers"], shape["codebooks"], shape["vocab"], shape["ffn"])
    wanted = (dec.hidden_size, dec.num_layers, dec.num_codebooks, dec.vocab_size, dec.ffn_dim)
    if found != wanted:
        raise CheckpointError(
            f"{lm_path}: the LM is {shape}, but the config is hidden {dec.hidden_size}, "
            f"layers {dec.num_layers}, codebooks {dec.num_codebooks}, vocab {dec.vocab_size}, "
            f"ffn {dec.ffn_dim}; choose the matching preset"
        )
    state = {
        name: source.get(name)
        for name in source.keys()  # noqa: SIM118 -- a TensorSource is not a dict: keys() is its listing
        if not name.startswith("condition_provider.conditioners.self_wav")
    }
    renamed = audiocraft_to_transformers_names(state, dec.hidden_size)
    rules = projection_rules(config) + decoder_rules(config, "decoder.")
    shapes = ckpt.expected_shapes(config)
    text_config, text_params = load_t5_encoder(text_encoder_dir, dtype)
    if text_config != config.text_encoder:
        raise CheckpointError(
            f"{text_encoder_dir}: its T5 config {text_config} differs from the model config's"
        )
    lm_shapes = {p: s for p, s in shapes.items() if p[0] != "text_encoder"}
    params = load_params(renamed.__getitem__, renamed.keys(), rules, lm_shapes, dtype, AUDIOCRAFT_IGNORED)
    params.update(text_params)
    return params
