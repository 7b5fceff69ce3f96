"""audiocraft's own LM checkpoint (``state_dict.bin``): shape from its ``xp.cfg``, the projection
kept at any widths, errors in its own key names, the file or its directory, and audiocraft's
treatment of padded text as an option.

The checkpoints are built here from tiny random transformers models, in audiocraft's layout and
package format (``torch.save({"best_state": ..., "xp.cfg": <OmegaConf YAML>})``, as
``audiocraft.utils.export.export_lm`` writes it). transformers' MusicGen is the reference: its
decoder run on the same weights, fed the conditioning audiocraft computes where the two differ.
Tolerance: relative error (max |ours - theirs| / max |theirs|) at most 1e-5 in float32.
"""

from __future__ import annotations

import copy
import dataclasses

import jax
import numpy as np
import pytest
import torch
import transformers_reference as reference
import yaml
from flax import traverse_util
from transformers import AutoTokenizer

from musicgen_jax import MusicGen, config_io
from musicgen_jax.conversion import CheckpointError, export_to_transformers, load_transformers_params
from musicgen_jax.conversion.audiocraft_format import load_audiocraft, read_package
from musicgen_jax.conversion.checkpoint import expected_shapes
from musicgen_jax.conversion.key_maps import audiocraft_rules
from musicgen_jax.conversion.params import export_params, load_params
from musicgen_jax.models.musicgen import MusicGenModel

RTOL = 1e-5
PROMPTS = ["upbeat jazz piano with smooth saxophone and soft drums", "dark techno", ""]
PROJECTION = "condition_provider.conditioners.description.output_proj"


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def _flat(params) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def xp_cfg(config) -> dict:
    """The part of audiocraft's hydra config (config/model/lm/musicgen_lm.yaml, default.yaml,
    config/conditioner/text2music.yaml, the solver's) that describes a MusicGen LM of ``config``."""
    dec = config.decoder
    stereo = dec.audio_channels == 2
    return {
        "device": "cpu",
        "dtype": "float32",
        "sample_rate": config.audio.sample_rate,
        "channels": dec.audio_channels,
        "compression_model_checkpoint": "//pretrained/facebook/encodec_32khz",
        "lm_model": "transformer_lm",
        "codebooks_pattern": {
            "modeling": "delay",
            "delay": {
                "delays": [k // dec.audio_channels for k in range(dec.num_codebooks)],
                "flatten_first": 0,
                "empty_initial": 0,
            },
        },
        "transformer_lm": {
            "dim": dec.hidden_size,
            "num_heads": dec.num_heads,
            "num_layers": dec.num_layers,
            "hidden_scale": dec.ffn_dim // dec.hidden_size,
            "n_q": dec.num_codebooks,
            "card": dec.vocab_size,
            "dropout": 0.0,
            "activation": "gelu",
            "norm_first": True,
            "bias_ff": False,
            "bias_attn": False,
            "bias_proj": False,
            "past_context": None,
            "causal": True,
            "custom": False,
            "memory_efficient": True,
            "layer_scale": None,
            "positional_embedding": "sin",
            "norm": "layer_norm",
            "cross_attention": False,
            "qk_layer_norm": False,
            "qk_layer_norm_cross": False,
            "attention_dropout": None,
            "kv_repeat": 1,
            "two_step_cfg": False,
        },
        "interleave_stereo_codebooks": {"use": stereo, "per_timestep": False},
        "classifier_free_guidance": {"training_dropout": 0.3, "inference_coef": 3.0},
        "fuser": {
            "cross_attention_pos_emb": False,
            "cross_attention_pos_emb_scale": 1,
            "sum": [],
            "prepend": [],
            "cross": ["description"],
            "input_interpolate": [],
        },
        "conditioners": {
            "description": {
                "model": "t5",
                "t5": {"name": "t5-base", "finetune": False, "word_dropout": 0.3, "normalize_text": False},
            }
        },
        "dataset": {"segment_duration": "${segment}"},  # an OmegaConf reference, as to_yaml keeps them
        "segment": 30,
    }


def audiocraft_state(hf) -> dict[str, torch.Tensor]:
    """A transformers MusicGen's decoder (and enc_to_dec_proj, when it has one) under audiocraft's
    ``LMModel`` names: fused ``in_proj_weight`` (q, k, v rows), ``emb``, ``linears``, ``out_norm``."""
    state = hf.state_dict()
    dec = "decoder.model.decoder."
    out: dict[str, torch.Tensor] = {}
    for k in range(hf.decoder.num_codebooks):
        out[f"emb.{k}.weight"] = state[f"{dec}embed_tokens.{k}.weight"].clone()
        out[f"linears.{k}.weight"] = state[f"decoder.lm_heads.{k}.weight"].clone()
    for i in range(hf.decoder.config.num_hidden_layers):
        layer, theirs = f"{dec}layers.{i}.", f"transformer.layers.{i}."
        for name, ours in (("self_attn", "self_attn"), ("cross_attention", "encoder_attn")):
            fused = [state[f"{layer}{ours}.{p}_proj.weight"] for p in "qkv"]
            out[f"{theirs}{name}.in_proj_weight"] = torch.cat(fused)
            out[f"{theirs}{name}.out_proj.weight"] = state[f"{layer}{ours}.out_proj.weight"].clone()
        for name, ours in (("linear1", "fc1"), ("linear2", "fc2")):
            out[f"{theirs}{name}.weight"] = state[f"{layer}{ours}.weight"].clone()
        for name, ours in (
            ("norm1", "self_attn_layer_norm"),
            ("norm_cross", "encoder_attn_layer_norm"),
            ("norm2", "final_layer_norm"),
        ):
            for p in ("weight", "bias"):
                out[f"{theirs}{name}.{p}"] = state[f"{layer}{ours}.{p}"].clone()
    for p in ("weight", "bias"):
        out[f"out_norm.{p}"] = state[f"{dec}layer_norm.{p}"].clone()
        if f"enc_to_dec_proj.{p}" in state:
            out[f"{PROJECTION}.{p}"] = state[f"enc_to_dec_proj.{p}"].clone()
    return out


def save_audiocraft(directory, state: dict, cfg: dict | None):
    """``state_dict.bin`` as audiocraft's export writes it (xp.cfg as OmegaConf's YAML text)."""
    directory.mkdir(parents=True, exist_ok=True)
    package = {"best_state": state, "version": "1.3.0", "exported": True}
    if cfg is not None:
        package["xp.cfg"] = yaml.safe_dump(cfg, sort_keys=False)
    torch.save(package, directory / "state_dict.bin")
    return directory


def save_t5(hf, tokenizer_source, directory):
    hf.text_encoder.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(directory)
    return directory


@dataclasses.dataclass(frozen=True)
class Saved:
    lm_dir: object  # the audiocraft checkpoint directory (state_dict.bin)
    t5_dir: object  # its text encoder, with the tokenizer
    source: object  # the transformers model it was built from (also the codec)
    preset: str  # a preset YAML of the same shape


@pytest.fixture(scope="module")
def gated_audiocraft(tiny_hf_dirs, tmp_path_factory) -> Saved:
    """The gated tiny variant (3 layers, 8 heads: not the tiny preset's shape) as an audiocraft
    checkpoint."""
    source = tiny_hf_dirs("gated")
    hf, _ = reference.load(source)
    config, _ = load_transformers_params(source)
    root = tmp_path_factory.mktemp("audiocraft-gated")
    lm_dir = save_audiocraft(root / "lm", audiocraft_state(hf), xp_cfg(config))
    config_io.save_yaml(config, root / "shape.yaml")
    return Saved(lm_dir, save_t5(hf, source, root / "t5"), source, str(root / "shape.yaml"))


def load(saved: Saved, lm=None, **kwargs) -> MusicGen:
    return MusicGen.from_pretrained(
        lm if lm is not None else saved.lm_dir, text_encoder=saved.t5_dir, codec=saved.source, **kwargs
    )


def _tokens(config, seed=1, length=9):
    rng = np.random.default_rng(seed)
    return rng.integers(
        0, config.decoder.vocab_size + 1, size=(len(PROMPTS), config.decoder.num_codebooks, length)
    )


def test_shape_is_read_from_xp_cfg_and_logits_match_transformers(gated_audiocraft):
    """No preset: dim, heads, layers, hidden_scale, n_q and card come from xp.cfg (the checkpoint's
    8 heads and 3 layers are not the tiny preset's 4 and 2)."""
    saved = gated_audiocraft
    want_config, want_params = load_transformers_params(saved.source)
    model = load(saved)
    dec, want = model.config.decoder, want_config.decoder
    shape = (
        "hidden_size",
        "num_layers",
        "num_heads",
        "ffn_dim",
        "num_codebooks",
        "vocab_size",
        "audio_channels",
    )
    assert {f: getattr(dec, f) for f in shape} == {f: getattr(want, f) for f in shape}
    assert model.config.max_duration == 30.0  # dataset.segment_duration, through an OmegaConf reference
    assert model.config.audio.codec == "facebook/encodec_32khz"
    assert model.config.conditioning.text_padding == "mask"  # transformers' behaviour unless asked
    got = _flat(model.engine.params)
    for name, value in _flat(want_params).items():
        assert np.array_equal(got[name], value), name

    hf, _ = reference.load(saved.source)
    # The name table read backwards gives audiocraft's state dict again, fused q/k/v included.
    state = audiocraft_state(hf)
    exported = export_params(jax.tree.map(np.asarray, model.engine.params), audiocraft_rules(model.config))
    assert exported.keys() == state.keys()
    for name, tensor in state.items():
        assert np.array_equal(exported[name], tensor.numpy()), name

    batch = model.engine.prepare_text(PROMPTS, None)
    assert batch.mask.min() == 0  # padded rows: masked alike in both
    tokens = _tokens(want_config)
    theirs = reference.teacher_forced_logits(
        hf, tokens, input_ids=torch.tensor(batch.ids), attention_mask=torch.tensor(batch.mask)
    )
    assert relative_error(model.logits(PROMPTS, tokens), theirs) <= RTOL


def test_the_file_itself_loads_as_its_directory(gated_audiocraft):
    saved = gated_audiocraft
    from_dir = load(saved, preset=saved.preset)
    from_file = load(saved, saved.lm_dir / "state_dict.bin", preset=saved.preset)
    assert from_file.config == from_dir.config
    a, b = _flat(from_dir.engine.params), _flat(from_file.engine.params)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    tokens = _tokens(from_dir.config)
    assert np.array_equal(from_file.logits(PROMPTS, tokens), from_dir.logits(PROMPTS, tokens))
    imported = load_audiocraft(saved.lm_dir / "state_dict.bin", text_encoder=saved.t5_dir)
    assert imported.config.decoder.num_heads == 8


def test_a_preset_must_agree_with_xp_cfg(gated_audiocraft, tmp_path):
    """A preset with the wrong head count changes no tensor shape and would give wrong logits; it is
    refused, naming the field and both values. An agreeing preset is accepted."""
    saved = gated_audiocraft
    config, _ = load_transformers_params(saved.source)
    wrong = tmp_path / "wrong.yaml"
    config_io.save_yaml(
        dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, num_heads=4)), wrong
    )
    with pytest.raises(
        CheckpointError, match=r"decoder\.num_heads is 4, but xp\.cfg \(transformer_lm\.num_heads\) gives 8"
    ):
        load(saved, preset=str(wrong))
    with pytest.raises(CheckpointError, match=r"decoder\.num_layers is 2.*gives 3"):
        load(saved, preset="tiny-learned")
    model = load(saved, preset=saved.preset)
    assert model.config.decoder.num_heads == 8 and model.config.name == config.name  # the preset's name

    # What the refusal prevents: every tensor also fits 4 heads (the head split is a reshape), and
    # the weights read that way give other logits.
    wrong_config = dataclasses.replace(
        model.config, decoder=dataclasses.replace(model.config.decoder, num_heads=4)
    )
    _, source_tensors = read_package(saved.lm_dir)
    shapes = {p: s for p, s in expected_shapes(wrong_config).items() if p[0] != "text_encoder"}
    misread = load_params(source_tensors.get, source_tensors.keys(), audiocraft_rules(wrong_config), shapes)
    misread["text_encoder"] = jax.tree.map(np.asarray, model.engine.params["text_encoder"])
    batch = model.engine.prepare_text(PROMPTS, None)
    tokens = _tokens(config)
    wrong_logits = MusicGenModel(wrong_config).apply({"params": misread}, batch.ids, batch.mask, tokens)
    assert relative_error(np.asarray(wrong_logits), model.logits(PROMPTS, tokens)) > 1e-2


def test_equal_widths_keep_audiocraft_projection(tiny_hf_dirs, tmp_path):
    """audiocraft's T5 conditioner has output_proj at any widths; transformers has none when the
    widths match. The import keeps it and runs it; export to transformers is refused clearly."""
    source = tiny_hf_dirs("wide")
    hf, _ = reference.load(source)
    config, _ = load_transformers_params(source)
    width = config.decoder.hidden_size
    assert config.text_encoder.d_model == width and not config.has_text_projection
    state = audiocraft_state(hf)
    generator = torch.Generator().manual_seed(3)
    projection = torch.nn.Linear(width, width)
    with torch.no_grad():
        projection.weight.copy_(torch.randn(width, width, generator=generator) / width**0.5)
        projection.bias.copy_(torch.randn(width, generator=generator) * 0.5)
    state[f"{PROJECTION}.weight"], state[f"{PROJECTION}.bias"] = projection.weight, projection.bias
    lm_dir = save_audiocraft(tmp_path / "lm", state, xp_cfg(config))
    t5_dir = save_t5(hf, source, tmp_path / "t5")
    config_io.save_yaml(config, tmp_path / "shape.yaml")  # agrees with xp.cfg; no projection in it

    model = MusicGen.from_pretrained(
        lm_dir, text_encoder=t5_dir, codec=source, preset=str(tmp_path / "shape.yaml")
    )
    assert model.config.has_text_projection and model.config.text_projection is True
    assert load_audiocraft(lm_dir, text_encoder=t5_dir).config.text_projection is True  # without a preset
    batch = model.engine.prepare_text(PROMPTS, None)
    ids, mask = torch.tensor(batch.ids), torch.tensor(batch.mask)
    tokens = _tokens(config)
    with torch.no_grad():  # audiocraft's conditioner: T5, output_proj, zero the padding
        states = hf.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        memory = projection(states) * mask[..., None]
        out = hf.decoder(
            input_ids=torch.tensor(tokens.reshape(-1, tokens.shape[-1])),
            encoder_hidden_states=memory,
            encoder_attention_mask=mask,
        )
    theirs = out.logits.numpy().reshape(tokens.shape + (-1,))
    ours = model.logits(PROMPTS, tokens)
    assert relative_error(ours, theirs) <= RTOL
    plain = reference.teacher_forced_logits(hf, tokens, input_ids=ids, attention_mask=mask)
    assert relative_error(plain, theirs) > 1e-2  # the projection matters: dropping it would show

    saved = model.save_pretrained(tmp_path / "jax")  # text_projection survives config.yaml
    again = MusicGen.from_pretrained(saved)
    assert again.config.text_projection is True
    assert np.array_equal(again.logits(PROMPTS, tokens), ours)
    with pytest.raises(CheckpointError, match="no transformers form"):
        export_to_transformers(saved, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    with pytest.raises(ValueError, match="builds enc_to_dec_proj only when the widths differ"):
        model.config.to_transformers()
    assert load_transformers_params(source)[0].text_projection is None  # transformers' own rule


def test_errors_name_the_checkpoints_own_keys(gated_audiocraft, tmp_path):
    saved = gated_audiocraft
    hf, _ = reference.load(saved.source)
    config, _ = load_transformers_params(saved.source)
    state = audiocraft_state(hf)

    def fails(name: str, broken: dict, cfg: dict | None = None) -> str:
        lm_dir = save_audiocraft(tmp_path / name, broken, cfg if cfg is not None else xp_cfg(config))
        with pytest.raises(CheckpointError) as error:
            load(saved, lm_dir, preset=saved.preset)
        return str(error.value)

    missing = dict(state)
    del missing["linears.1.weight"]
    message = fails("missing", missing)
    assert message.endswith("lacks 1 tensor(s) the model needs: linears.1.weight"), message
    misshapen = dict(state)
    key = "transformer.layers.1.cross_attention.in_proj_weight"
    misshapen[key] = misshapen[key][:, :-8]
    message = fails("misshapen", misshapen)
    assert key in message and "encoder_attn" not in message, message
    extra = dict(state, **{"transformer.layers.0.self_attn.in_proj_bias": torch.zeros(3)})
    message = fails("extra", extra)
    assert "fit no parameter: transformer.layers.0.self_attn.in_proj_bias" in message, message


def test_xp_cfg_settings_we_do_not_implement_are_refused(gated_audiocraft, tmp_path):
    saved = gated_audiocraft
    hf, _ = reference.load(saved.source)
    config, _ = load_transformers_params(saved.source)
    state = audiocraft_state(hf)
    for key, value, message in (
        ("transformer_lm.num_heads", None, r"xp\.cfg has no transformer_lm\.num_heads"),
        ("transformer_lm.bias_ff", True, r"transformer_lm\.bias_ff to True"),
        ("fuser.prepend", ["self_wav", "description"], r"fuser\.prepend"),  # melody's chroma
        ("transformer_lm.positional_embedding", "rope", r"positional_embedding to 'rope'"),
    ):
        cfg = copy.deepcopy(xp_cfg(config))
        section, name = key.split(".")
        if value is None:
            del cfg[section][name]
        else:
            cfg[section][name] = value
        save_audiocraft(tmp_path / name, state, cfg)
        with pytest.raises(CheckpointError, match=message):
            load_audiocraft(tmp_path / name, text_encoder=saved.t5_dir)
    save_audiocraft(tmp_path / "no-cfg", state, None)
    with pytest.raises(CheckpointError, match=r"no 'xp\.cfg'"):
        load_audiocraft(tmp_path / "no-cfg", text_encoder=saved.t5_dir)


def test_zeros_attended_text_padding_is_audiocrafts(tiny_hf_dir):
    """``text_padding="zeros_attended"``: padded positions take softmax mass as zeros, as
    audiocraft's cross-attention (no key padding mask) gives them, and prompts pad to the longest of
    the batch as its T5 conditioner pads. The default, "mask", is transformers' behaviour."""
    hf, _ = reference.load(tiny_hf_dir)
    masked = MusicGen.from_pretrained(tiny_hf_dir)
    attended = MusicGen.from_pretrained(tiny_hf_dir, text_padding="zeros_attended")
    assert masked.config.conditioning.text_padding == "mask"
    batch = attended.engine.prepare_text(PROMPTS, None)
    lengths = [len(masked.engine.text.tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert batch.ids.shape[1] == max(lengths)  # the longest prompt, not a bucket of 16
    ids, mask = torch.tensor(batch.ids), torch.tensor(batch.mask)
    assert mask[1].min() == 0 and mask[2].max() == 0  # a padded row and an empty prompt
    config, _ = load_transformers_params(tiny_hf_dir)
    tokens = _tokens(config)
    with torch.no_grad():  # audiocraft: zero the padding after the projection, attend everything
        states = hf.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        memory = hf.enc_to_dec_proj(states) * mask[..., None]
        out = hf.decoder(
            input_ids=torch.tensor(tokens.reshape(-1, tokens.shape[-1])),
            encoder_hidden_states=memory,
            encoder_attention_mask=torch.ones_like(mask),
        )
    audiocraft_like = out.logits.numpy().reshape(tokens.shape + (-1,))
    ours = attended.logits(PROMPTS, tokens)
    assert relative_error(ours, audiocraft_like) <= RTOL
    transformers_like = reference.teacher_forced_logits(hf, tokens, input_ids=ids, attention_mask=mask)
    assert relative_error(masked.logits(PROMPTS, tokens), transformers_like) <= RTOL
    # The rows differ where the text is padded, and only there (the longest prompt has no padding;
    # an empty prompt is zeros, attended or not).
    assert relative_error(ours[1], transformers_like[1]) > 1e-3
    assert relative_error(ours[0], transformers_like[0]) <= RTOL
    assert relative_error(ours[2], transformers_like[2]) <= RTOL


def test_converter_takes_the_file_without_a_preset(gated_audiocraft, tmp_path, capsys):
    from musicgen_jax.conversion.checkpoint import load_config
    from musicgen_jax.conversion.cli import hf_to_jax_main

    saved = gated_audiocraft
    args = ["--model", str(saved.lm_dir / "state_dict.bin"), "--text-encoder", str(saved.t5_dir)]
    args += [
        "--codec",
        str(saved.source),
        "--output",
        str(tmp_path / "out"),
        "--text-padding",
        "zeros_attended",
    ]
    assert hf_to_jax_main(args) == 0, capsys.readouterr().err
    config = load_config(tmp_path / "out")
    assert (config.decoder.num_heads, config.decoder.num_layers) == (8, 3)
    assert config.conditioning.text_padding == "zeros_attended" and config.text_projection is True
    wrong = ["--model", str(saved.lm_dir), "--text-encoder", str(saved.t5_dir), "--preset", "tiny-learned"]
    assert hf_to_jax_main([*wrong, "--output", str(tmp_path / "x")]) == 1
    assert (
        "decoder.num_layers is 2, but xp.cfg (transformer_lm.num_layers) gives 3" in capsys.readouterr().err
    )


def test_a_missing_projection_is_named(gated_audiocraft, tmp_path):
    saved = gated_audiocraft
    hf, _ = reference.load(saved.source)
    config, _ = load_transformers_params(saved.source)
    state = {k: v for k, v in audiocraft_state(hf).items() if not k.startswith(PROJECTION)}
    save_audiocraft(tmp_path / "lm", state, xp_cfg(config))
    with pytest.raises(CheckpointError, match=rf"lacks 2 tensor\(s\).*{PROJECTION}\.weight"):
        load_audiocraft(tmp_path / "lm", text_encoder=saved.t5_dir)
