"""``reproduce``: a finished run re-executed from its recorded config, judged per metric against
the seed-to-seed spread."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from qmu_qiskit import pipeline
from qmu_qiskit.config import resolve_run_config
from qmu_qiskit.exceptions import BadInputError
from qmu_qiskit.reproduce import reproduce


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A 3-epoch Iris teacher with a GA unlearning run and its oracle (~5 s)."""
    out = tmp_path_factory.mktemp("repro") / "iris"
    cfg = resolve_run_config(dataset="iris", seed=3, training={"epochs": 3})
    pipeline.train(cfg, out, progress=False)
    pipeline.unlearn(out, "class:0", ["ga"], options={"ga": {"epochs": 2}}, progress=False)
    return out


def test_a_reproduction_on_the_same_machine_is_identical(small_run, tmp_path):
    result = reproduce(small_run, tmp_path / "scratch", spread_seeds=1)
    runs = {c.run for c in result.comparisons}
    assert runs == {"teacher", "class-0/retrain", "class-0/ga"}
    metrics = {(c.run, c.metric) for c in result.comparisons}
    assert ("teacher", "acc_test") in metrics and ("class-0/ga", "UQI") in metrics
    assert result.seeds == [3, 4]
    assert result.ok
    assert all(c.verdict == "identical" for c in result.comparisons)
    # the spread was measured from two seeds: some metric moved between them
    assert any(c.seed_std and c.seed_std > 0 for c in result.comparisons)


def test_a_changed_value_beyond_the_spread_is_reported_and_fails_the_command(small_run, tmp_path):
    import shutil

    run = tmp_path / "iris"
    shutil.copytree(small_run, run, ignore=shutil.ignore_patterns(".lock"))
    metrics_path = run / "unlearn" / "class-0" / "ga" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["acc_test_unlearn"] = metrics["acc_test_unlearn"] + 0.5  # not what this config gives
    metrics_path.write_text(json.dumps(metrics))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qmu_qiskit.cli",
            "reproduce",
            str(run / "unlearn" / "class-0" / "ga"),
            "--out",
            str(tmp_path / "scratch"),
            "--spread-seeds",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "class-0/ga:acc_test_unlearn" in proc.stdout and "differs" in proc.stdout
    with open(tmp_path / "scratch" / "reproduce.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    verdicts = {r["metric"]: r["verdict"] for r in rows if r["run"] == "class-0/ga"}
    assert verdicts["acc_test_unlearn"] == "differs"
    assert verdicts["acc_retain_unlearn"] == "identical"
    # only the requested unlearning run (and its teacher) was re-executed
    assert {r["run"] for r in rows} == {"class-0/ga"}


def test_bad_reproduce_requests_are_refused_before_any_work(small_run, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    with pytest.raises(BadInputError, match="not an empty folder"):
        reproduce(small_run, tmp_path / "busy")
    assert (tmp_path / "busy" / "x").read_text() == "keep me"
    with pytest.raises(BadInputError, match="spread-seeds"):
        reproduce(small_run, tmp_path / "new", spread_seeds=99)
