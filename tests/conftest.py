"""Shared fixtures: tiny random transformers MusicGen checkpoints and the testing tokenizer, built once
per test session."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread: the EnCodec bridge's LSTM spins its OpenMP threads against JAX and the other
# test worker on a 2-core machine, and runs hundreds of times slower for it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# librosa's numba functions cache their compiled code; two test workers compiling the same
# function into one cache at once can leave a half-written file that crashes every later reader
# (a segfault in numba's gufunc). Each worker gets its own cache. The controller process imports
# this file first and its environment passes to the workers, so a worker must set its own value
# rather than keep an inherited one.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker or "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(), f"musicgen-jax-numba-{_worker or 'main'}"
    )

import pytest

from musicgen_jax.testing import save_tiny_transformers_musicgen, save_tokenizer


@pytest.fixture
def float32_matmuls():
    """Float32 matrix products for model code applied directly (``MusicGen`` objects set this
    themselves): parity is asked of the float32 path, and GPUs would run those dots in TF32."""
    import jax

    with jax.default_matmul_precision("float32"):
        yield


@pytest.fixture(scope="session")
def tiny_hf_dirs(tmp_path_factory):
    """A function variant -> directory of a saved random transformers MusicGen (cached)."""
    cache = {}

    def get(variant: str = "base"):
        if variant not in cache:
            cache[variant] = save_tiny_transformers_musicgen(
                tmp_path_factory.mktemp(f"hf-{variant}"), variant
            )
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def tiny_hf_dir(tiny_hf_dirs):
    return tiny_hf_dirs("base")


@pytest.fixture(scope="session")
def tiny_jax_dir(tiny_hf_dir, tmp_path_factory):
    from musicgen_jax.conversion import convert_from_transformers

    return convert_from_transformers(tiny_hf_dir, tmp_path_factory.mktemp("jax-base") / "ckpt")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """The testing tokenizer saved as a directory: ``model.tokenizer=<it>`` for from-scratch runs
    (configs/train/tiny.yaml names t5-small's, which needs the network)."""
    return save_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of the test session's own (``musicgen_jax.testing.postgres``); skips when
    there is none."""
    from musicgen_jax.testing.postgres import PostgresServer, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()
