"""Every notebook in notebooks/ runs top to bottom on a CPU offline, and is committed with its
outputs cleared.

Each notebook runs in a fresh kernel (this interpreter's ``python3`` kernel) in its own temporary
working directory, with ``MUSICGEN_JAX_NOTEBOOK_OFFLINE=1`` and the hub offline, so that it uses
the built-in ``demo`` model instead of downloading Meta's (convert.ipynb, whose subject is a
transformers checkpoint, builds a tiny random one: the demo model's learned attribute embeddings
have no transformers counterpart). A cell that raises (the notebooks assert
what they show: equal logits, equal audio, a falling loss) fails the test with the cell's traceback.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_SECONDS = 300
OFFLINE_VARIABLE = "MUSICGEN_JAX_NOTEBOOK_OFFLINE"


def test_the_issue_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "finetune", "convert", "streaming"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name} cell {index} has outputs"
            )
    assert notebook.metadata.kernelspec.name == "python3"
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    # The Colab install cell comes first and is a no-op wherever the package is importable.
    assert "google.colab" in code[0] and 'find_spec("musicgen_jax")' in code[0], path.name
    assert OFFLINE_VARIABLE in "\n".join(code), f"{path.name} ignores {OFFLINE_VARIABLE}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    # The kernel inherits this environment: offline models, no network, temporary files under tmp_path,
    # and one OpenMP thread for torch: on a shared 2-core machine two threads wait for each other at
    # every step of the codec's LSTM (about 8 ms a frame instead of microseconds).
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' tempfile.mkdtemp() land under tmp_path
    monkeypatch.chdir(tmp_path)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    began = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - began
    print(f"{path.name}: {seconds:.0f} s")

    setup = next(cell for cell in notebook.cells if cell.cell_type == "code")
    printed = "".join(output.get("text", "") for output in setup.outputs)
    assert "nothing to install" in printed, f"the setup cell did something here: {printed!r}"
