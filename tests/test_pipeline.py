"""train → unlearn → evaluate end to end on Aer, as a user meets it (Python API and CLI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from qmu_qiskit import pipeline
from qmu_qiskit.config import resolve_run_config
from qmu_qiskit.evaluation.outputs import Outputs
from qmu_qiskit.exceptions import BadInputError, CheckpointError, RunError
from qmu_qiskit.runs import RunDir

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "qmu_qiskit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**ENV, **(env or {})},
        timeout=600,
    )


def test_teacher_run_directory_is_complete_and_accurate(iris_teacher):
    run = RunDir(iris_teacher)
    assert run.is_complete()
    metrics = json.loads((iris_teacher / "metrics.json").read_text())
    assert metrics["acc_test"] >= 0.9
    assert metrics["seed"] == 0
    config = yaml.safe_load((iris_teacher / "config.yaml").read_text())
    assert config["seed"] == 0 and config["data"]["dataset"] == "iris"
    assert config["model"] == {
        "name": "hqml-shallow",
        "qubits": 4,
        "layers": 2,
        "readout": "estimator",
    }
    out = Outputs.load(iris_teacher / "outputs.npz")
    assert len(out.labels) == 150 and set(np.unique(out.split)) == {"train", "val", "test"}
    assert out.logits.shape == (150, 3)
    cost = json.loads((iris_teacher / "cost.json").read_text())["train"]
    assert cost["jobs"] > 0 and cost["shots"] == 0  # exact engine: no shots


def test_same_seed_gives_the_same_numbers(iris_teacher, tmp_path):
    cfg = resolve_run_config(dataset="iris", seed=0, training={"epochs": 30})
    pipeline.train(cfg, tmp_path / "again", progress=False)
    a = json.loads((iris_teacher / "metrics.json").read_text())
    b = json.loads((tmp_path / "again" / "metrics.json").read_text())
    for key in ("acc_train", "acc_val", "acc_test", "best_epoch", "epochs_run"):
        assert a[key] == b[key]
    np.testing.assert_array_equal(
        Outputs.load(iris_teacher / "outputs.npz").logits,
        Outputs.load(tmp_path / "again" / "outputs.npz").logits,
    )


def test_complete_runs_are_never_overwritten_silently(iris_teacher_copy):
    cfg = resolve_run_config(dataset="iris", seed=0, training={"epochs": 30})
    before = (iris_teacher_copy / "metrics.json").read_bytes()
    again = pipeline.train(cfg, iris_teacher_copy, progress=False)  # the same command: reused
    assert again.reused and again.metrics["acc_test"] == json.loads(before)["acc_test"]
    other = resolve_run_config(dataset="iris", seed=1, training={"epochs": 30})
    with pytest.raises(RunError, match="different config"):
        pipeline.train(other, iris_teacher_copy, progress=False)
    assert (iris_teacher_copy / "metrics.json").read_bytes() == before


def test_unlearn_class_zero_next_to_the_oracle(iris_teacher_copy):
    summaries = pipeline.unlearn(
        iris_teacher_copy, "class:0", ["finetune", "ga", "neggrad_plus"], progress=False
    )
    assert [s.method for s in summaries] == ["retrain", "finetune", "ga", "neggrad_plus"]
    teacher_forget = summaries[0].metrics["acc_forget_orig"]
    for s in summaries:
        m = s.metrics
        assert m["acc_forget_unlearn"] < teacher_forget
        assert m["UQI"] == pytest.approx(
            m["forget_drop"] - 0.5 * (m["retain_drop"] + m["test_drop"])
        )
        assert RunDir(s.path).is_complete()
        assert s.cost["method"]["jobs"] > 0
    oracle = summaries[0].metrics
    assert oracle["acc_forget_unlearn"] == 0.0  # never saw class 0
    assert oracle["KL_test"] == pytest.approx(0.0) and oracle["Agree_test"] == 1.0
    # recomputing from the saved outputs gives the same numbers, without running circuits
    again = pipeline.evaluate(summaries[2].path)
    for key in ("acc_forget_unlearn", "UQI", "KL_test", "MIA_AUC"):
        assert again[key] == pytest.approx(summaries[2].metrics[key])
    # the same request again is answered from the finished runs
    rerun = pipeline.unlearn(iris_teacher_copy, "class:0", ["ga"], progress=False)
    assert rerun[1].info.get("reused") is True


def test_bad_requests_fail_before_anything_runs(iris_teacher_copy):
    unlearn_dir = iris_teacher_copy / "unlearn"
    with pytest.raises(BadInputError, match="class 99"):
        pipeline.unlearn(iris_teacher_copy, "class:99", ["ga"], progress=False)
    with pytest.raises(BadInputError, match="unknown unlearning method"):
        pipeline.unlearn(iris_teacher_copy, "class:0", ["nope"], progress=False)
    with pytest.raises(BadInputError, match="has no option"):
        pipeline.unlearn(
            iris_teacher_copy, "class:0", ["ga"], options={"ga": {"nope": 1}}, progress=False
        )
    with pytest.raises(BadInputError, match="must be a int"):
        pipeline.unlearn(
            iris_teacher_copy, "class:0", ["ga"], options={"ga": {"epochs": "many"}}, progress=False
        )
    with pytest.raises(RunError, match="no trained run"):
        pipeline.unlearn(iris_teacher_copy / "missing", "class:0", ["ga"], progress=False)
    assert not unlearn_dir.exists()


def test_corrupt_checkpoint_is_refused_with_a_fix(iris_teacher_copy):
    (iris_teacher_copy / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        pipeline.unlearn(iris_teacher_copy, "class:0", ["ga"], progress=False)


def _wait_for(path: Path, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def test_sigkill_during_training_then_resume_gives_the_uninterrupted_numbers(tmp_path):
    args = [
        "train",
        "--dataset",
        "iris",
        "--epochs",
        "120",
        "--patience",
        "0",
        "--select",
        "last",
        "--no-progress",
    ]
    ref = cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmu_qiskit.cli", *args, "--out", str(out)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert _wait_for(out / "checkpoints" / "last.pt", 120)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not RunDir(out).is_complete()
    assert not (out / "metrics.json").exists()
    again = cli(*args, "--out", str(out))
    assert again.returncode == 0, again.stderr
    a = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert b["resumed_from_epoch"] > 0
    for key in ("acc_train", "acc_val", "acc_test", "best_epoch"):
        assert a[key] == b[key]
    np.testing.assert_array_equal(
        Outputs.load(tmp_path / "ref" / "outputs.npz").logits,
        Outputs.load(out / "outputs.npz").logits,
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--backend", "nonsense"], "unknown backend"),
        (["train", "--dataset", "mnist", "--data-dir", "{tmp}/nodata"], "MNIST files not found"),
        (
            ["unlearn", "--run", "{tmp}/missing-dir", "--forget", "class:0", "--method", "ga"],
            "no trained run",
        ),
        (["train", "--epochs", "0"], "epochs"),
        (["train", "--bogus"], "No such option"),
    ],
)
def test_cli_errors_are_one_line_with_a_fix_and_leave_no_run(tmp_path, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = cli(*args, "--out", str(tmp_path / "run")) if args[0] == "train" else cli(*args)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert needle in lines[0] and lines[0].startswith("error: ")
    assert "Traceback" not in res.stderr
    assert not RunDir(tmp_path / "run").is_complete()
    assert not (tmp_path / "run").exists()


def test_cli_forget_class_99_is_refused(iris_teacher_copy):
    res = cli("unlearn", "--run", str(iris_teacher_copy), "--forget", "class:99", "--method", "ga")
    assert res.returncode != 0
    assert res.stderr.strip().startswith("error: class 99 is not a class of iris")
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (iris_teacher_copy / "unlearn").exists()


def test_noisy_training_records_the_emulated_device(tmp_path):
    res = cli(
        "train",
        "--dataset",
        "iris",
        "--backend",
        "aer_noisy",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--no-progress",
        "--out",
        str(tmp_path / "noisy"),
    )
    assert res.returncode == 0, res.stderr
    assert "emulated device: ibm_brisbane" in res.stdout
    metrics = json.loads((tmp_path / "noisy" / "metrics.json").read_text())
    profile = metrics["execution"]["backend"]["profile"]
    assert profile["device"] == "ibm_brisbane" and profile["snapshot_date"].startswith("2025-")
    assert metrics["execution"]["runner"]["runner"] == "noisy_exact"  # the default engine


# ------------------------------------------------------------------ the oracle's fit ahead of its teacher


def _unlearn_numbers(path: Path) -> tuple[dict, Outputs, dict]:
    metrics = json.loads((path / "metrics.json").read_text())
    cost = json.loads((path / "cost.json").read_text())
    return metrics, Outputs.load(path / "outputs.npz"), cost


def test_prefit_oracle_runs_before_its_teacher_and_gives_the_oracles_own_numbers(tmp_path):
    from qmu_qiskit.config import RunConfig

    cfg = resolve_run_config(dataset="iris", seed=0, training={"epochs": 12})
    teacher = tmp_path / "teacher"
    prefit = pipeline.prefit_oracle(cfg, teacher, "class:0", tmp_path / "prefit")  # no teacher yet
    assert not teacher.exists() and (prefit / "checkpoints" / "method.pt").is_file()
    pipeline.train(RunConfig(**cfg.model_dump(mode="json")), teacher, progress=False)

    warm = pipeline.unlearn(teacher, "class:0", [], progress=False, prefit=prefit)[0]
    cold = pipeline.unlearn(teacher, "class:0", [], progress=False, out=tmp_path / "cold")[0]
    m_warm, o_warm, c_warm = _unlearn_numbers(warm.path)
    m_cold, o_cold, c_cold = _unlearn_numbers(cold.path)
    assert np.array_equal(o_warm.logits, o_cold.logits)  # bit for bit
    for key in ("acc_retain_unlearn", "acc_forget_unlearn", "acc_test_unlearn", "MIA_AUC"):
        assert m_warm[key] == m_cold[key]

    def epochs(m):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in m["history"]]

    assert epochs(m_warm) == epochs(m_cold) and epochs(m_cold)
    # the fit's cost is the oracle's, whichever process ran it
    assert "prefit" in c_warm and "prefit" not in c_cold
    for key in ("circuit_evaluations", "gradient_calls", "estimator_calls"):
        assert c_warm["method"][key] == c_cold["method"][key] > 0
    assert c_warm["method"]["wall_seconds"] >= c_warm["prefit"]["wall_seconds"] > 0
    assert "comes from its pre-fit" in (warm.path / "log.txt").read_text()


def test_prefit_of_another_config_or_behind_a_link_is_not_used(iris_teacher_copy, tmp_path):
    from qmu_qiskit.config import RunConfig

    cfg = RunConfig(**yaml.safe_load((iris_teacher_copy / "config.yaml").read_text()))
    other = pipeline.prefit_oracle(cfg, iris_teacher_copy, "class:0", tmp_path / "p1", seed=1)
    done = pipeline.unlearn(iris_teacher_copy, "class:0", [], progress=False, prefit=other)[0]
    assert "prefit" not in json.loads((done.path / "cost.json").read_text())

    good = pipeline.prefit_oracle(cfg, iris_teacher_copy, "subset:0.1", tmp_path / "p2")
    ck = good / "checkpoints" / "method.pt"
    ck.rename(good / "real.pt")
    ck.symlink_to(good / "real.pt")
    done = pipeline.unlearn(iris_teacher_copy, "subset:0.1", [], progress=False, prefit=good)[0]
    assert "prefit" not in json.loads((done.path / "cost.json").read_text())
    assert "symbolic link" in (done.path / "log.txt").read_text()

    forged = pipeline.prefit_oracle(cfg, iris_teacher_copy, "class:1", tmp_path / "p3")
    (forged / "cost.json").write_text('{"method": {"wall_seconds": "1e9"}}')
    done = pipeline.unlearn(iris_teacher_copy, "class:1", [], progress=False, prefit=forged)[0]
    assert "prefit" not in json.loads((done.path / "cost.json").read_text())
    assert "holds no cost record" in (done.path / "log.txt").read_text()


def test_prefit_is_refused_where_it_would_change_the_numbers(tmp_path):
    cfg = resolve_run_config(dataset="iris", seed=0, backend={"name": "aer", "shots": 256})
    assert not pipeline.prefit_possible(cfg)
    with pytest.raises(BadInputError, match="cannot be fitted ahead"):
        pipeline.prefit_oracle(cfg, tmp_path / "t", "class:0", tmp_path / "p")
    assert not (tmp_path / "p").exists()
    assert pipeline.prefit_possible(
        resolve_run_config(dataset="iris", backend={"name": "aer_noisy"})
    )
