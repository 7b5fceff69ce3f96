"""The audiocraft side of tests/test_audiocraft_lmmodel.py, run in a subprocess of its own:
``python audiocraft_side.py SITE_DIR SPEC_JSON``.

SITE_DIR holds audiocraft 1.3.0, omegaconf 2.3.0 and antlr4 4.9.3 (pure Python, unpacked without
their dependencies). Modules audiocraft imports at package import but no ``LMModel`` run path uses
(audio I/O, datasets, solvers, metrics, text normalisers) are stand-ins here, and the run checks
that none of them was called after import. One is on the run path: xformers, which
``memory_efficient: true`` (MusicGen's setting) takes ``ops.unbind`` (the same as ``torch.unbind``)
and ``ops.LowerTriangularMask`` (a marker: with the torch backend only its presence asks for a
causal ``scaled_dot_product_attention``) from; both are given here as exactly that, and its memory-
efficient kernel, which the torch backend never calls, raises.

For each model in the spec: audiocraft's ``builders.get_lm_model`` builds a random ``LMModel`` from
the xp.cfg (its own init, then seeded random LayerNorm affines so that no norm is the identity),
``audiocraft.utils.export.export_lm`` writes ``state_dict.bin`` from a solver-style checkpoint,
``audiocraft.models.loaders.load_lm_model`` reads it back, and the reloaded model's logits are saved:
each prompt alone (unpadded text) and all prompts as one batch (padded as its T5 conditioner pads).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import sys
import types
from pathlib import Path
from unittest import mock

IMPORT_ONLY = {
    "av",
    "dora",
    "flashy",
    "julius",
    "laion_clap",
    "num2words",
    "soundfile",
    "spacy",
    "torchaudio",
    "torchmetrics",
}
_stand_ins: dict[str, mock.MagicMock] = {}


class _ImportOnly(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in IMPORT_ONLY:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = mock.MagicMock(name=spec.name)
        module.__path__, module.__spec__, module.__name__ = [], spec, spec.name
        _stand_ins[spec.name] = module
        return module

    def exec_module(self, module):
        if module.__name__ == "flashy":  # a real class: `class StandardSolver(ABC, flashy.BaseSolver)`
            module.BaseSolver = type("BaseSolver", (), {})


def _xformers():
    import torch

    def memory_efficient_attention(*args, **kwargs):
        raise AssertionError("xformers' kernel called: the torch attention backend never calls it")

    ops = types.ModuleType("xformers.ops")
    ops.unbind = torch.unbind
    ops.LowerTriangularMask = type("LowerTriangularMask", (), {})
    ops.memory_efficient_attention = memory_efficient_attention
    package = types.ModuleType("xformers")
    package.__path__ = []  # a package: `from xformers.profiler import ...` fails, as without a profiler
    package.ops = ops
    sys.modules["xformers"], sys.modules["xformers.ops"] = package, ops


def _calls() -> int:
    return sum(len(m.mock_calls) for m in _stand_ins.values())


def main(site: str, spec_file: str) -> None:
    sys.path.insert(0, site)
    sys.meta_path.insert(0, _ImportOnly())
    _xformers()

    import audiocraft
    import audiocraft.modules.conditioners as conditioners
    import numpy as np
    import torch
    from audiocraft.models import builders, loaders
    from audiocraft.utils.export import export_lm
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer, T5EncoderModel

    assert audiocraft.__version__ == "1.3.0", audiocraft.__version__
    assert Path(audiocraft.__file__).is_relative_to(site), audiocraft.__file__
    spec = json.loads(Path(spec_file).read_text())
    calls_at_import = _calls()
    report = {"stand_ins": sorted(_stand_ins), "models": {}}
    for name, model in spec["models"].items():
        t5_dir, out = model["t5_dir"], Path(model["out_dir"])
        # The tiny T5 under the name xp.cfg gives (the conditioner accepts only its known names).
        conditioners.T5Conditioner.MODELS_DIMS[model["t5_name"]] = model["t5_width"]
        conditioners.T5Tokenizer = types.SimpleNamespace(
            from_pretrained=lambda _, d=t5_dir: AutoTokenizer.from_pretrained(d)
        )
        conditioners.T5EncoderModel = types.SimpleNamespace(
            from_pretrained=lambda _, d=t5_dir: T5EncoderModel.from_pretrained(d)
        )

        torch.manual_seed(model["seed"])
        lm = builders.get_lm_model(OmegaConf.create(model["xp_cfg"]))
        with torch.no_grad():
            for key, tensor in lm.named_parameters():
                if "norm" in key:
                    tensor.copy_((1.0 if key.endswith("weight") else 0.0) + 0.3 * torch.randn_like(tensor))
        solver = out / "solver.th"
        out.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"best_state": {"model": lm.state_dict()}, "fsdp_best_state": {}, "xp.cfg": model["xp_cfg"]},
            solver,
        )
        export_lm(solver, out / "state_dict.bin")
        solver.unlink()
        lm = loaders.load_lm_model(out / "state_dict.bin")  # audiocraft reads its own export back

        tokens = torch.tensor(np.load(model["tokens"]))
        prompts = spec["prompts"]

        def logits(lm, tokens, rows, texts):
            attributes = [conditioners.ConditioningAttributes(text={"description": t}) for t in texts]
            with torch.no_grad():
                condition = lm.condition_provider(lm.condition_provider.tokenize(attributes))
                return lm(tokens[rows], [], condition_tensors=condition).numpy()

        alone = np.concatenate([logits(lm, tokens, slice(i, i + 1), [p]) for i, p in enumerate(prompts)])
        np.save(out / "logits_unpadded.npy", alone)
        np.save(out / "logits_batch.npy", logits(lm, tokens, slice(None), prompts))
        report["models"][name] = {
            "keys": sorted(lm.state_dict()),
            "projection": list(lm.condition_provider.conditioners["description"].output_proj.weight.shape),
        }
    report["stand_in_calls_after_import"] = _calls() - calls_at_import
    Path(spec["report"]).write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
