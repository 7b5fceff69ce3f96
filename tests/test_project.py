"""The project's own promises: README commands, CI, entry points, shipped configs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) >= 3, "the README opens with install, test and generate commands"
    install, test = block[0], block[1]
    assert install.startswith("pip install -e") and ".[dev]" in install
    assert "pytest" in test and "tests" in test
    printed = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "readme_commands.py")], capture_output=True, text=True
    )
    assert printed.stdout.splitlines() == [install, test]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_commands.py" in ci and "set -euo pipefail" in ci
    assert block[2].startswith("musicgen-jax generate ")


def test_entry_points_exist():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name, target in project["scripts"].items():
        module, _, function = target.partition(":")
        imported = __import__(module, fromlist=[function])
        assert callable(getattr(imported, function)), name


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml")))
def test_every_model_preset_parses(preset):
    from musicgen_jax.models.config import MusicGenConfig

    config = MusicGenConfig.preset(preset)
    assert config.decoder.num_codebooks in (4, 8)
    published = {"small": (1024, 24, 16), "medium": (1536, 48, 24), "large": (2048, 48, 32)}
    size = re.sub(r"^stereo-", "", preset)
    if size in published:
        dec = config.decoder
        assert (dec.hidden_size, dec.num_layers, dec.num_heads) == published[size]
        assert dec.ffn_dim == 4 * dec.hidden_size and config.text_encoder.d_model == 768
        assert dec.num_codebooks == (8 if preset.startswith("stereo") else 4)


def test_config_errors_name_the_key(tmp_path):
    from musicgen_jax import config_io
    from musicgen_jax.models.config import MusicGenConfig

    with pytest.raises(config_io.ConfigError, match="unknown key 'hidden_sise' in decoder"):
        MusicGenConfig.preset("tiny", ["decoder.hidden_sise=3"])
    with pytest.raises(config_io.ConfigError, match="expected an integer"):
        MusicGenConfig.preset("tiny", ["decoder.num_layers=two"])
    duplicate = tmp_path / "dup.yaml"
    duplicate.write_text("name: a\nname: b\n")
    with pytest.raises(config_io.ConfigError, match="set twice"):
        config_io.load(MusicGenConfig, duplicate)
    with pytest.raises(config_io.ConfigError, match="given twice"):
        config_io.parse_overrides(["a=1", "a=2"])
    with pytest.raises(config_io.ConfigError, match="no model preset 'huge'"):
        MusicGenConfig.preset("huge")
    assert MusicGenConfig.preset("tiny", ["max_duration=1e1"]).max_duration == 10.0


def test_the_library_never_imports_its_test_scaffolding():
    """musicgen_jax.testing builds random models for tests; real runs must never fall back on it."""
    import ast

    package = ROOT / "musicgen_jax"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.is_relative_to(package / "testing"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            if any(
                name == "musicgen_jax.testing" or name.startswith("musicgen_jax.testing.") for name in names
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
