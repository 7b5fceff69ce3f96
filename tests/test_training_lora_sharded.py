"""LoRA and QLoRA on 8 emulated CPU devices (FSDP x tensor): the same losses as on one device, the
frozen base sharded as configured, the adapters and their optimizer state replicated. Run in a
subprocess (this file as a script), as tests/test_training_sharded.py does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

LAYOUTS = {"one_device": None, "fsdp_tensor": ("mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2")}
KINDS = ("none", "nf4")


def _run(output_root: Path) -> dict:
    import jax

    import musicgen_jax.training.mesh as mesh_lib
    from musicgen_jax.testing import save_tokenizer
    from musicgen_jax.training.config import load_train_config
    from musicgen_jax.training.logging import read_metrics
    from musicgen_jax.training.trainer import train

    assert jax.device_count() == 8, jax.devices()
    tokenizer_dir = save_tokenizer(output_root / "tokenizer")
    report = {}
    for kind in KINDS:
        for name, mesh in LAYOUTS.items():
            run = output_root / f"{kind}-{name}"
            overrides = [
                f"output_dir={run}",
                f"model.tokenizer={tokenizer_dir}",
                "logging.progress=false",
                "logging.tensorboard=false",
                "logging.every_steps=1",
                "training.steps=2",
                "training.ema_decay=null",
                "training.batch_size=8",
                "data.memory.frames=12",
                "data.memory.max_text_len=8",
                "lora.enabled=true",
                "lora.rank=4",
                "lora.dropout=0.1",
                f"lora.quantize={kind}",
                *(mesh or ()),
            ]
            original = mesh_lib.create_mesh
            if mesh is None:
                mesh_lib.create_mesh = lambda config, devices=None, create=original: create(
                    config, jax.devices()[:1]
                )
            try:
                result = train(load_train_config("tiny", overrides))
            finally:
                mesh_lib.create_mesh = original
            state = result.state
            embed = state.frozen_params["decoder"]["embed_tokens"]
            adapter = state.params["decoder"]["layers"]["fc1"]["lora_a"]
            report[f"{kind}-{name}"] = {
                "losses": [r["loss"] for r in read_metrics(run)],
                "embed_shard": list(embed.addressable_shards[0].data.shape),
                "adapter_shard": list(adapter.addressable_shards[0].data.shape),
                "adapter_shape": list(adapter.shape),
            }
    return report


def test_lora_trains_alike_under_fsdp_and_tensor_parallelism(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, __file__, str(tmp_path)], env=env, capture_output=True, text=True, timeout=500
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for kind in KINDS:
        reference, sharded = report[f"{kind}-one_device"], report[f"{kind}-fsdp_tensor"]
        assert len(reference["losses"]) == 2
        np.testing.assert_allclose(sharded["losses"], reference["losses"], rtol=2e-5, err_msg=kind)
        assert sharded["embed_shard"] == [4, 2049, 16]  # the frozen base: embed split 4 ways (FSDP)
        assert sharded["adapter_shard"] == sharded["adapter_shape"]  # adapters replicated
    # Quantised and plain bases train differently (the base differs by its rounding).
    assert report["nf4-one_device"]["losses"][0] != report["none-one_device"]["losses"][0]


if __name__ == "__main__":
    print(json.dumps(_run(Path(sys.argv[1]))))
