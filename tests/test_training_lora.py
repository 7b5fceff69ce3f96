"""LoRA fine-tuning: only the adapters train (and sit in the optimizer state and the checkpoints),
the base stays bit-identical, export merges ``base + (alpha / rank) * a @ b`` or writes the adapters
in PEFT's format, which peft loads onto transformers' MusicGen with our logits; and a PEFT adapter
made with transformers + peft merges into musicgen-jax with transformers' logits."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from test_training import compilation_cache  # noqa: F401  (autouse: runs of one config compile once)
from test_training_finetune import _batch
from transformers import AutoTokenizer, MusicgenForConditionalGeneration

from musicgen_jax.conversion import load_checkpoint
from musicgen_jax.conversion.loader import load_model
from musicgen_jax.conversion.peft_format import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from musicgen_jax.models import lora as lora_lib
from musicgen_jax.models.musicgen import MusicGenModel
from musicgen_jax.training import cli as train_cli
from musicgen_jax.training import step as step_lib
from musicgen_jax.training.config import load_train_config
from musicgen_jax.training.export import export_run
from musicgen_jax.training.logging import read_metrics
from musicgen_jax.training.trainer import train

peft = pytest.importorskip("peft")

RANK, ALPHA = 4, 8.0
TARGETS = ("self_attention.query", "self_attention.value", "cross_attention.out", "fc1", "fc2")


def _lora_config(run_dir, init_from, *overrides):
    """A quick LoRA fine-tune of ``init_from``; later overrides of the same key win."""
    items = [
        f"output_dir={run_dir}",
        f"model.init_from={init_from}",
        "model.dtype=float32",
        "model.remat=none",
        "data.source=memory",
        "data.memory.frames=12",
        "data.memory.num_examples=4",
        "data.memory.max_text_len=16",
        "training.steps=12",
        "training.batch_size=4",
        "training.ema_decay=null",
        "training.condition_dropout=0.0",
        "optimizer.learning_rate=0.01",
        "optimizer.warmup_steps=1",
        "optimizer.schedule=constant",
        "checkpoint.every_steps=6",
        "logging.every_steps=1",
        "logging.progress=false",
        "logging.tensorboard=false",
        "lora.enabled=true",
        f"lora.rank={RANK}",
        f"lora.alpha={ALPHA}",
        f"lora.targets=[{', '.join(TARGETS)}]",
        *overrides,
    ]
    merged = {item.split("=", 1)[0]: item for item in items}
    return load_train_config("finetune-small", list(merged.values()))


@pytest.fixture(scope="module")
def lora_run(tiny_jax_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    config = _lora_config(run_dir, tiny_jax_dir)
    return run_dir, config, train(config)


def _logits(config, params, batch):
    model = MusicGenModel(config)
    inputs, _, _ = step_lib.prepare_targets(jax.tree.map(jnp.asarray, batch), model)
    with jax.default_matmul_precision("float32"):
        logits = model.apply({"params": params}, batch["text_ids"], batch["text_mask"], inputs)
    return np.asarray(logits), np.asarray(inputs)  # [batch, codebooks, length, vocab]


def _torch_logits(model, batch, inputs):
    """transformers' logits for our delayed ``inputs`` ``[batch, codebooks, length]``."""
    decoder_input_ids = torch.tensor(inputs.reshape(-1, inputs.shape[-1]), dtype=torch.long)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(batch["text_ids"], dtype=torch.long),
            attention_mask=torch.tensor(batch["text_mask"], dtype=torch.long),
            decoder_input_ids=decoder_input_ids,
        )
    return out.logits.numpy()


def _relative(ours, theirs):
    ours = ours.reshape(theirs.shape)
    return np.abs(ours - theirs).max() / np.abs(theirs).max()


def test_lora_learns_with_the_base_frozen_and_only_adapters_in_optimizer_and_checkpoints(
    lora_run, tiny_jax_dir
):
    run_dir, config, result = lora_run
    train_losses = [r["loss"] for r in read_metrics(run_dir) if "loss" in r]
    assert len(train_losses) == 12 and train_losses[-1] < 0.9 * train_losses[0]

    state = result.state
    _, base = load_checkpoint(tiny_jax_dir)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.frozen_params), base)

    spec = config.lora.spec()
    expected = lora_lib.adapter_shapes(base, spec)
    shapes = jax.tree.map(lambda s: s.shape, expected)
    assert jax.tree.map(lambda a: a.shape, state.params) == shapes
    adapter_shapes = {leaf.shape for leaf in jax.tree.leaves(expected)}
    opt_shapes = [leaf.shape for leaf in jax.tree.leaves(state.opt_state) if np.ndim(leaf)]
    assert opt_shapes and set(opt_shapes) <= adapter_shapes  # Adam's moments of the adapters only
    moved = max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(state.params[lora_lib.LAYERS[0]]))
    assert moved > 0  # b left zero

    metadata = (run_dir / "checkpoints" / "12" / "params" / "_METADATA").read_text()
    assert "lora_a" in metadata and "frozen_params" not in metadata and "embed_tokens" not in metadata


def test_resumed_lora_run_continues_on_the_same_base(lora_run, tiny_jax_dir, tmp_path):
    _, _, result = lora_run
    resumed_dir = tmp_path / "resumed"
    first = train(_lora_config(resumed_dir, tiny_jax_dir, "training.stop_after=6"))
    assert first.step == 6
    second = train(_lora_config(resumed_dir, tiny_jax_dir), resume=True)
    assert second.resumed_from == 6 and second.step == 12
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.device_get(second.state.params),
        jax.device_get(result.state.params),
    )


def test_export_merges_base_plus_scaled_product(lora_run, tiny_jax_dir, tmp_path):
    run_dir, _, result = lora_run
    exported = export_run(run_dir, tmp_path / "merged")
    _, merged = load_checkpoint(exported)
    _, base = load_checkpoint(tiny_jax_dir)
    adapters = jax.device_get(result.state.params)
    flat_base = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(base)[0]}
    flat_merged = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(merged)[0]}
    assert flat_base.keys() == flat_merged.keys()
    adapted = set()
    for target in TARGETS:
        path = lora_lib.kernel_path(target)
        adapter = adapters
        for part in path[:-1]:
            adapter = adapter[part]
        kernel = base
        for part in path:
            kernel = kernel[part]
        product = np.einsum("lir,lro->lio", adapter["lora_a"], adapter["lora_b"]).reshape(kernel.shape)
        want = kernel + (ALPHA / RANK) * product
        got = flat_merged[jax.tree_util.keystr(tuple(jax.tree_util.DictKey(p) for p in path))]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert np.abs(got - kernel).max() > 1e-5
        adapted.add(jax.tree_util.keystr(tuple(jax.tree_util.DictKey(p) for p in path)))
    for key in flat_base.keys() - adapted:  # everything else is the base, bit for bit
        np.testing.assert_array_equal(flat_merged[key], flat_base[key])


def test_exported_peft_adapter_loads_in_peft_with_our_logits(lora_run, tiny_hf_dir, tmp_path):
    from peft import PeftModel

    run_dir, _, _ = lora_run
    merged_dir = export_run(run_dir, tmp_path / "merged")
    adapter_dir = tmp_path / "adapter"
    assert train_cli.main(["export", str(run_dir), str(adapter_dir), "--adapter-only"]) == 0
    assert (adapter_dir / ADAPTER_CONFIG).is_file() and (adapter_dir / ADAPTER_WEIGHTS).is_file()
    assert json.loads((adapter_dir / ADAPTER_CONFIG).read_text())["r"] == RANK

    model_config, merged = load_checkpoint(merged_dir)
    batch = _batch(model_config, AutoTokenizer.from_pretrained(tiny_hf_dir), padded_fraction=0.0)
    ours, inputs = _logits(model_config, merged, batch)

    base = MusicgenForConditionalGeneration.from_pretrained(tiny_hf_dir).eval()
    before = _torch_logits(base, batch, inputs)
    adapted = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    theirs = _torch_logits(adapted, batch, inputs)
    assert _relative(ours, theirs) < 1e-5
    assert np.abs(before - theirs).max() > 1e-3  # the adapter changes transformers' model

    # And back: the PEFT directory merged on load gives the exported merged weights.
    loaded = load_model(tiny_hf_dir, adapter=adapter_dir)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), loaded.params, merged)


@pytest.fixture(scope="module")
def peft_adapter(tiny_hf_dir, tmp_path_factory):
    """A LoRA adapter made with transformers + peft (B drawn at random, so it changes the model):
    the adapted PEFT model and the directory it saved."""
    from peft import LoraConfig, get_peft_model

    base = MusicgenForConditionalGeneration.from_pretrained(tiny_hf_dir).eval()
    peft_config = LoraConfig(
        r=3,
        lora_alpha=5,
        # Decoder projections by their short names, plus the T5 query (text_encoder...SelfAttention.q).
        target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "q"],
        rank_pattern={"fc2": 2},
    )
    model = get_peft_model(base, peft_config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero: give the adapter an effect
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    model.eval()
    adapter_dir = tmp_path_factory.mktemp("peft") / "adapter"
    model.save_pretrained(str(adapter_dir))
    return model, adapter_dir


def test_peft_adapter_made_with_transformers_merges_with_equal_logits(tiny_hf_dir, peft_adapter):
    model, adapter_dir = peft_adapter
    loaded = load_model(tiny_hf_dir, adapter=adapter_dir)
    batch = _batch(loaded.config, loaded.tokenizer, padded_fraction=0.0)
    ours, inputs = _logits(loaded.config, loaded.params, batch)
    theirs = _torch_logits(model, batch, inputs)
    assert _relative(ours, theirs) < 1e-5
    plain, _ = _logits(loaded.config, load_model(tiny_hf_dir).params, batch)
    assert np.abs(plain.reshape(theirs.shape) - theirs).max() > 1e-3

    from musicgen_jax.pipeline import MusicGen

    facade = MusicGen.from_pretrained(tiny_hf_dir, dtype="float32", adapter=adapter_dir)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(facade.engine.params), loaded.params)


def test_cli_generates_with_an_adapter(tiny_hf_dir, peft_adapter, tmp_path, capsys):
    from musicgen_jax.cli.main import main

    _, adapter_dir = peft_adapter
    codes = {}
    for name, extra in (("plain", []), ("adapted", ["--adapter", str(adapter_dir)])):
        arguments = ["generate", "calm piano", "--model", str(tiny_hf_dir), "--duration", "1"]
        arguments += ["--seed", "1", "--greedy", "--cache-dir", "", "--dtype", "float32"]
        arguments += ["--output", str(tmp_path / f"{name}.wav"), "--codes-out", str(tmp_path / f"{name}.npy")]
        assert main(arguments + extra) == 0
        codes[name] = np.load(tmp_path / f"{name}.npy")
    assert f"with {adapter_dir}" in capsys.readouterr().err
    assert codes["plain"].shape == codes["adapted"].shape and (codes["plain"] != codes["adapted"]).any()


def test_lora_config_is_checked(tmp_path, tiny_jax_dir):
    with pytest.raises(ValueError, match="unknown"):
        _lora_config(tmp_path, tiny_jax_dir, "lora.targets=[self_attention.q]")
    with pytest.raises(ValueError, match="train_text_encoder"):
        _lora_config(tmp_path, tiny_jax_dir, "model.train_text_encoder=true")
    assert not load_train_config("tiny").lora.enabled  # off by default


@pytest.mark.parametrize("kind, bound", [("int8", 0.5 / 127), ("nf4", 0.5 * (1 - 0.7229568362236023))])
def test_block_quantisation_round_trips_within_half_a_level(kind, bound):
    from musicgen_jax.models import quantization

    rng = np.random.default_rng(0)
    for shape, inputs in (((2, 100, 3, 5), 1), ((2, 3, 8, 70), 2)):  # padded blocks, two input axes
        kernel = rng.standard_normal(shape).astype(np.float32)
        quantized = quantization.quantize_kernel(jnp.asarray(kernel), inputs, kind)
        restored = np.asarray(quantization.dequantize_kernel(quantized))
        assert restored.shape == shape and restored.dtype == np.float32
        fan_in = int(np.prod(shape[1 : 1 + inputs]))
        blocks = -(-fan_in // quantization.BLOCK)
        rows = quantization.BLOCK // 2 if kind == "nf4" else quantization.BLOCK
        assert quantized.codes.shape == (shape[0], blocks, rows, kernel.size // shape[0] // fan_in)
        # Each value is within half the widest gap between levels of its block's maximum.
        scale = np.abs(kernel).max()
        assert np.abs(restored - kernel).max() <= bound * scale + 1e-6
        assert np.abs(restored - kernel).max() > 0


def test_qlora_trains_on_a_4_bit_base_and_exports_its_dequantised_merge(tiny_jax_dir, tmp_path):
    from musicgen_jax.models import quantization

    run_dir = tmp_path / "qlora"
    result = train(_lora_config(run_dir, tiny_jax_dir, "lora.quantize=nf4"))
    train_losses = [r["loss"] for r in read_metrics(run_dir) if "loss" in r]
    assert train_losses[-1] < 0.9 * train_losses[0]

    _, base = load_checkpoint(tiny_jax_dir)
    layers = result.state.frozen_params["decoder"]["layers"]
    fc1 = layers["fc1"]["kernel"]
    assert isinstance(fc1, quantization.QuantizedKernel) and fc1.codes.dtype == jnp.uint8
    assert fc1.codes.size * 2 == base["decoder"]["layers"]["fc1"]["kernel"].size  # two codes a byte
    assert isinstance(
        layers["cross_attention"]["key"]["kernel"], quantization.QuantizedKernel
    )  # not a target
    np.testing.assert_array_equal(
        jax.device_get(result.state.frozen_params["decoder"]["lm_heads"]), base["decoder"]["lm_heads"]
    )

    _, merged = load_checkpoint(export_run(run_dir, tmp_path / "merged"))
    adapter = jax.device_get(result.state.params)["decoder"]["layers"]["fc1"]
    dequantised = np.asarray(quantization.dequantize_kernel(jax.device_get(fc1)))
    product = np.einsum("lir,lro->lio", adapter["lora_a"], adapter["lora_b"]).reshape(dequantised.shape)
    np.testing.assert_allclose(
        merged["decoder"]["layers"]["fc1"]["kernel"],
        dequantised + (ALPHA / RANK) * product,
        rtol=1e-6,
        atol=1e-7,
    )
    np.testing.assert_array_equal(
        merged["decoder"]["layers"]["cross_attention"]["key"]["kernel"],
        np.asarray(
            quantization.dequantize_kernel(jax.device_get(layers["cross_attention"]["key"]["kernel"]))
        ),
    )


def test_peft_adapters_the_merge_cannot_express_are_refused(tiny_hf_dir, peft_adapter, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    from musicgen_jax.conversion.tensors import CheckpointError

    _, source = peft_adapter
    dora = shutil.copytree(source, tmp_path / "dora")
    config = json.loads((dora / ADAPTER_CONFIG).read_text())
    (dora / ADAPTER_CONFIG).write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(CheckpointError, match="DoRA"):
        load_model(tiny_hf_dir, adapter=dora)

    stray = shutil.copytree(source, tmp_path / "stray")
    tensors = load_file(str(stray / ADAPTER_WEIGHTS))
    key = next(k for k in tensors if ".fc1." in k and "lora_A" in k)
    tensors[key.replace(".fc1.", ".fc3.")] = tensors[key]
    tensors[key.replace(".fc1.", ".fc3.").replace("lora_A", "lora_B")] = tensors[
        key.replace("lora_A", "lora_B")
    ]
    save_file(tensors, str(stray / ADAPTER_WEIGHTS))
    with pytest.raises(CheckpointError, match="fc3 is not a Linear layer"):
        load_model(tiny_hf_dir, adapter=stray)
