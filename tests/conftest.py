"""Shared fixtures: an isolated cache, and small trained runs reused across tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep the transpile cache and profile lookups inside the test session."""
    cache = tmp_path_factory.mktemp("qmu-cache")
    old = os.environ.get("QMU_CACHE_DIR")
    os.environ["QMU_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("QMU_CACHE_DIR", None)
    else:
        os.environ["QMU_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def iris_teacher(tmp_path_factory) -> Path:
    """A trained HQML-shallow Iris teacher on the exact noiseless backend (seed 0, ~2 s)."""
    from qmu_qiskit import pipeline
    from qmu_qiskit.config import resolve_run_config

    out = tmp_path_factory.mktemp("runs") / "iris"
    cfg = resolve_run_config(dataset="iris", seed=0, training={"epochs": 30})
    pipeline.train(cfg, out, progress=False)
    return out


@pytest.fixture
def iris_teacher_copy(iris_teacher, tmp_path) -> Path:
    """A private copy of the Iris teacher run (for tests that add unlearning runs to it)."""
    import shutil

    dst = tmp_path / "iris"
    shutil.copytree(iris_teacher, dst, ignore=shutil.ignore_patterns("unlearn", ".lock"))
    return dst
