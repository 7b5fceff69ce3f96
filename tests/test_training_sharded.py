"""Data-parallel, fully-sharded and tensor-parallel training on 8 emulated CPU devices.

The device count is fixed when JAX starts, so the runs happen in a subprocess (this file run as a
script with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``); the test compares what it
reports: the same tiny run's losses under every layout, and the shapes of parameter shards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

LAYOUTS = {
    "one_device": None,
    "data": ("mesh.data=8", "mesh.fsdp=1", "mesh.tensor=1"),
    "fsdp": ("mesh.data=1", "mesh.fsdp=8", "mesh.tensor=1"),
    "tensor": ("mesh.data=2", "mesh.fsdp=1", "mesh.tensor=4"),  # with data parallelism over 2
}
WATCHED = {  # parameter path -> full shape in the tiny model
    "decoder/layers/fc1/kernel": (2, 64, 128),
    "decoder/layers/self_attention/query/kernel": (2, 64, 4, 16),
    "decoder/lm_heads": (4, 2048, 64),  # [codebooks, vocab, embed]
    "decoder/embed_tokens": (4, 2049, 64),
    "text_encoder/blocks/wi/kernel": (2, 32, 64),
}


def _run_layouts(output_root: Path) -> dict:
    import jax

    from musicgen_jax.testing import save_tokenizer
    from musicgen_jax.training.config import load_train_config
    from musicgen_jax.training.logging import read_metrics
    from musicgen_jax.training.trainer import train

    assert jax.device_count() == 8, jax.devices()
    tokenizer_dir = save_tokenizer(output_root / "tokenizer")  # not the config's t5-small (online)
    report = {}
    for name, mesh in LAYOUTS.items():
        overrides = [
            f"output_dir={output_root / name}",
            f"model.tokenizer={tokenizer_dir}",
            "logging.progress=false",
            "logging.tensorboard=false",
            "logging.every_steps=1",
            "training.steps=2",
            "training.ema_decay=null",
            "training.batch_size=8",
            "training.dropout=true",
            "model.decoder.dropout=0.1",
            "data.memory.frames=12",
            "data.memory.max_text_len=8",
        ]
        if mesh is None:
            # One device: the same config on a mesh of the first device only.
            import musicgen_jax.training.mesh as mesh_lib

            original = mesh_lib.create_mesh
            mesh_lib.create_mesh = lambda config, devices=None, create=original: create(
                config, jax.devices()[:1]
            )
            try:
                result = train(load_train_config("tiny", overrides))
            finally:
                mesh_lib.create_mesh = original
        else:
            result = train(load_train_config("tiny", overrides + list(mesh)))
        params = result.state.all_params()
        mu = result.state.opt_state[1][0].mu
        shards = {}
        for path in WATCHED:
            keys = path.split("/")
            leaf, moment = params, mu
            for key in keys:
                leaf = leaf[key]
                moment = moment.get(key) if isinstance(moment, dict) else None
            shards[path] = {
                "shape": list(leaf.shape),
                "shard": list(leaf.addressable_shards[0].data.shape),
                "spec": str(leaf.sharding.spec),
                "devices": len(leaf.sharding.device_set),
                "moment_shard": list(moment.addressable_shards[0].data.shape) if moment is not None else None,
            }
        report[name] = {
            "losses": [r["loss"] for r in read_metrics(output_root / name)],
            "grad_norms": [r["grad_norm"] for r in read_metrics(output_root / name)],
            "shards": shards,
        }
    return report


def test_layouts_train_alike_and_shard_as_configured(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, __file__, str(tmp_path)], env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    reference = report["one_device"]
    assert len(reference["losses"]) == 2 and reference["losses"][0] > 7.0
    for name in LAYOUTS:
        np.testing.assert_allclose(report[name]["losses"], reference["losses"], rtol=2e-5, err_msg=name)
        np.testing.assert_allclose(
            report[name]["grad_norms"], reference["grad_norms"], rtol=1e-4, err_msg=name
        )

    def shard(layout, path):
        return tuple(report[layout]["shards"][path]["shard"])

    def moment(layout, path):
        return tuple(report[layout]["shards"][path]["moment_shard"])

    fc1, query, heads, embed, t5 = WATCHED
    for path, shape in WATCHED.items():  # the trees hold the full shapes everywhere
        assert tuple(report["data"]["shards"][path]["shape"]) == shape
        assert shard("one_device", path) == shape and shard("data", path) == shape  # replicated
    assert report["data"]["shards"][fc1]["devices"] == 8
    # FSDP: every parameter's embed dimension split 8 ways, Adam moments alike.
    assert shard("fsdp", fc1) == (2, 8, 128) and moment("fsdp", fc1) == (2, 8, 128)
    assert shard("fsdp", query) == (2, 8, 4, 16)
    assert shard("fsdp", heads) == (4, 2048, 8) and shard("fsdp", embed) == (4, 2049, 8)
    assert shard("fsdp", t5) == (2, 4, 64)  # the frozen T5 is sharded too (no optimizer state)
    assert report["fsdp"]["shards"][t5]["moment_shard"] is None
    # Tensor parallel: heads, MLP and vocabulary split 4 ways; 2049 embedding rows cannot be.
    assert shard("tensor", fc1) == (2, 64, 32) and moment("tensor", fc1) == (2, 64, 32)
    assert shard("tensor", query) == (2, 64, 1, 16)
    assert shard("tensor", heads) == (4, 512, 64) and shard("tensor", embed) == (4, 2049, 64)
    assert shard("tensor", t5) == (2, 32, 16)


if __name__ == "__main__":
    print(json.dumps(_run_layouts(Path(sys.argv[1]))))
