"""Output conventions: flags a backend would not apply are refused (or warned about and not
recorded), ``evaluate`` never overwrites silently, ``--out`` everywhere, saved audit tables, and
the ``results`` summary."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from qmu_qiskit import cli
from qmu_qiskit.config import BackendConfig
from qmu_qiskit.exceptions import BadInputError


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        cli.main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ flags that do not apply

REFUSED = {
    "noise_scale_on_aer": (["--noise-scale", "2"], r"noise_scale 2 does not apply to backend aer"),
    "twirling_on_aer": (["--twirling"], r"twirling \(--twirling\) would not apply to backend aer"),
    "dd_on_aer_noisy": (
        ["--backend", "aer_noisy", "--dynamical-decoupling"],
        r"dynamical_decoupling .* would not apply to backend aer_noisy",
    ),
    "resilience_on_aer": (["--resilience-level", "1"], r"resilience_level .* would not apply"),
    "zne_on_aer": (["--zne"], r"zne \(--zne\) would not apply"),
    "max_time_on_aer": (["--max-time", "60"], r"max_time \(--max-time\) would not apply"),
    "engine_exact_on_aer_noisy_with_shots": (
        ["--backend", "aer_noisy", "--engine", "exact", "--shots", "128"],
        r"--engine exact computes exact values and takes no --shots",
    ),
    "engine_aer_on_fake": (
        ["--backend", "fake_brisbane", "--engine", "aer"],
        r"--engine aer does not apply to backend fake_brisbane",
    ),
    "engine_exact_with_shots": (["--engine", "exact", "--shots", "128"], r"takes no --shots"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_train_refuses_a_flag_the_backend_would_not_apply(case, tmp_path, capsys):
    flags, message = REFUSED[case]
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--epochs", "1", "--out", out, *flags], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


def test_unlearn_refuses_runtime_flags_on_the_teachers_aer_backend(iris_teacher_copy, capsys):
    code, _, err = run_cli(
        [
            "unlearn",
            "--run",
            iris_teacher_copy,
            "--forget",
            "class:0",
            "--method",
            "ga",
            "--twirling",
        ],
        capsys,
    )
    assert code == 2 and "would not apply to backend aer" in err
    assert not (iris_teacher_copy / "unlearn").exists()


def test_unlearn_refuses_noise_scale_on_aer(iris_teacher_copy, capsys):
    code, _, err = run_cli(
        [
            "unlearn",
            "--run",
            iris_teacher_copy,
            "--forget",
            "class:0",
            "--method",
            "ga",
            "--noise-scale",
            "3",
        ],
        capsys,
    )
    assert code == 2 and "noise_scale 3 does not apply to backend aer" in err


def test_mia_compare_refuses_runtime_flags_without_a_runtime_backend(tmp_path, capsys):
    code, _, err = run_cli(
        ["mia-compare", "--backends", "aer,aer_noisy", "--twirling", "--out", tmp_path / "mc"],
        capsys,
    )
    assert code == 2 and "--twirling: IBM Runtime options apply only to" in err
    code, _, err = run_cli(
        ["mia-compare", "--backends", "aer", "--noise-scale", "2", "--out", tmp_path / "mc"], capsys
    )
    assert code == 2 and "--noise-scale 2 applies only to aer_noisy" in err
    assert not (tmp_path / "mc").exists()


def test_a_job_spec_with_runtime_options_on_aer_is_refused():
    from qmu_qiskit.studies.spec import parse_spec

    with pytest.raises(BadInputError, match=r"backends\.0.*twirling.*would not apply"):
        parse_spec(
            {
                "name": "x",
                "datasets": ["iris"],
                "backends": [{"name": "aer", "runtime": {"twirling": True}}],
            }
        )


def test_backend_config_keeps_what_applies():
    assert BackendConfig(name="aer_noisy", noise_scale=2.0).noise_scale == 2.0
    twirled = BackendConfig(name="fake_brisbane", runtime={"twirling": True})
    assert twirled.runtime == {"twirling": True}
    assert BackendConfig(name="aer", engine="aer", shots=128).engine == "aer"
    # a stored config of an aer_noisy run carries the engine's default; it must load
    assert BackendConfig(name="aer_noisy", engine="exact").name == "aer_noisy"


def test_oracle_backend_inherits_only_the_teachers_settings_that_apply():
    from qmu_qiskit.pipeline import inherited_backend

    noisy = BackendConfig(name="aer_noisy", noise_scale=2.0, shots=256).model_dump(mode="json")
    got = BackendConfig(**inherited_backend(noisy, "aer"))
    assert (got.name, got.noise_scale, got.shots) == ("aer", 1.0, 256)
    fake = BackendConfig(name="fake_brisbane", runtime={"twirling": True, "layout": "path"})
    got = BackendConfig(**inherited_backend(fake.model_dump(mode="json"), "aer_noisy"))
    assert got.runtime == {"layout": "path"}
    assert (
        BackendConfig(**inherited_backend(fake.model_dump(mode="json"), "ibm_torino")).runtime[
            "twirling"
        ]
        is True
    )


def test_harmless_noise_scale_is_warned_about_and_not_applied(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        [
            "train",
            "--epochs",
            "1",
            "--no-progress",
            "--out",
            out,
            "--noise-scale",
            "1",
            "--qubits",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    assert "warning: --noise-scale 1 has no effect on backend aer" in err
    assert (
        "note: iris has 4 features; with --qubits 3 the model sees their first 3 principal"
    ) in err
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["n_features"] == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["execution"]["noise_scale"] is None  # nothing scaled on aer


# ------------------------------------------------------------------ versioned evaluations


@pytest.fixture
def ga_run(iris_teacher_copy):
    from qmu_qiskit import pipeline

    summaries = pipeline.unlearn(iris_teacher_copy, "class:0", ["ga"], progress=False)
    return summaries[1].path


def test_unlearn_records_the_settings_of_its_metrics(ga_run):
    ev = json.loads((ga_run / "metrics.json").read_text())["evaluation"]
    assert ev["mia_nonmembers"] == "heldout" and ev["source"] == "unlearn" and ev["seed"] == 0


def test_evaluate_writes_a_new_version_and_keeps_metrics_json(ga_run, capsys):
    original = (ga_run / "metrics.json").read_bytes()
    code, out, err = run_cli(["evaluate", "--run", ga_run, "--mia-nonmembers", "retain"], capsys)
    assert code == 0, err
    assert (ga_run / "metrics.json").read_bytes() == original
    first = ga_run / "evaluations" / "001-mia-retain-s0" / "metrics.json"
    assert f"metrics: {first}" in out and "MIA non-members retain" in out
    m1 = json.loads(first.read_text())
    assert m1["evaluation"]["mia_nonmembers"] == "retain"
    assert m1["evaluation"]["source"] == "evaluate"
    assert m1["method"] == "ga" and m1["forget"] == "class:0"
    code, out, err = run_cli(["evaluate", "--run", ga_run], capsys)
    assert code == 0, err
    second = ga_run / "evaluations" / "002-mia-heldout-s0" / "metrics.json"
    m2 = json.loads(second.read_text())
    # the held-out evaluation reproduces the run's own numbers; the retain one is another MIA
    base = json.loads(original)
    for key in ("acc_forget_unlearn", "UQI", "KL_test", "MIA_AUC"):
        assert m2[key] == pytest.approx(base[key])
    assert m1["acc_forget_unlearn"] == pytest.approx(base["acc_forget_unlearn"])
    assert (ga_run / "metrics.json").read_bytes() == original


def test_evaluate_overwrite_replaces_metrics_json_and_keeps_the_old_one(ga_run, capsys):
    original = json.loads((ga_run / "metrics.json").read_text())
    code, out, err = run_cli(
        ["evaluate", "--run", ga_run, "--mia-nonmembers", "retain", "--overwrite"], capsys
    )
    assert code == 0, err
    now = json.loads((ga_run / "metrics.json").read_text())
    assert now["evaluation"]["mia_nonmembers"] == "retain"
    kept = json.loads((ga_run / "evaluations" / "001-mia-heldout-s0" / "metrics.json").read_text())
    assert kept == original


def test_evaluation_versions_ignore_symlinks(ga_run, tmp_path):
    from qmu_qiskit.evaluation.versions import versions, write_version

    (tmp_path / "elsewhere").mkdir()
    (ga_run / "evaluations").mkdir()
    (ga_run / "evaluations" / "007-mia-x-s0").symlink_to(tmp_path / "elsewhere")
    assert versions(ga_run) == []
    path = write_version(ga_run, {"evaluation": {"mia_nonmembers": "heldout", "seed": 1}})
    assert path.parent.name == "001-mia-heldout-s1"
    assert list((tmp_path / "elsewhere").iterdir()) == []


# ------------------------------------------------------------------ one output convention


def tiny_spec(path, **fields):
    spec = {
        "name": "tiny",
        "datasets": [{"name": "iris", "training": {"epochs": 2}}],
        "methods": ["ga"],
        "forget": ["class:0"],
        "seeds": [0],
        "executor": {"kind": "inline"},
        **fields,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("flag", ["--out", "--out-dir"])
def test_jobs_submit_out_and_its_alias_out_dir(flag, tmp_path, capsys):
    spec = tiny_spec(tmp_path / "tiny.yaml")
    root = tmp_path / "root"
    code, out, err = run_cli(["grid", "submit", spec, flag, root, "--quiet"], capsys)
    assert code == 0, err
    grid = (root / "runs" / "tiny").resolve()
    assert f"grid directory: {grid}" in out
    assert (grid / "grid.json").is_file()
    code, out, err = run_cli(["grid", "status", spec, flag, root], capsys)
    assert code == 0 and "tiny: complete" in out


def test_study_takes_out_and_writes_its_report_there(tmp_path, capsys):
    spec = tiny_spec(tmp_path / "tiny.yaml")
    code, out, err = run_cli(
        ["study", spec, "--out", tmp_path / "root", "--quiet", "--no-plots"], capsys
    )
    assert code == 0, err
    grid = (tmp_path / "root" / "runs" / "tiny").resolve()
    assert f"grid directory: {grid}" in out and (grid / "report.md").is_file()
    header = (grid / "results_summary.csv").read_text().splitlines()[0].split(",")
    assert {"UA", "RA", "TA", "MIA_Efficacy", "mia_nonmembers"} <= set(header)


def test_grids_default_under_runs_of_the_current_directory(tmp_path, monkeypatch, capsys):
    spec = tiny_spec(tmp_path / "tiny.yaml", out=None)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["grid", "submit", spec, "--quiet"], capsys)
    assert code == 0, err
    assert f"grid directory: {(tmp_path / 'runs' / 'tiny').resolve()}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "tiny.yaml"]


def test_a_grid_is_never_the_output_directory_itself(tmp_path, capsys):
    spec = tiny_spec(tmp_path / "tiny.yaml", out=".")
    code, _, err = run_cli(["grid", "submit", spec, "--out", tmp_path / "root"], capsys)
    assert code == 2 and "is the output directory itself" in err
    assert not (tmp_path / "root" / "grid.json").exists()


def test_python_api_takes_out_and_refuses_two_different_outputs(tmp_path):
    from qmu_qiskit import studies

    spec = yaml.safe_load(tiny_spec(tmp_path / "tiny.yaml").read_text())
    with pytest.raises(BadInputError, match="one setting"):
        studies.submit(spec, out=tmp_path / "a", out_dir=tmp_path / "b")
    handle = studies.submit(spec, out=tmp_path / "a")
    assert handle.wait(timeout=300).state == "complete"
    assert handle.path == (tmp_path / "a" / "runs" / "tiny").resolve()
    assert studies.open_grid(tmp_path / "tiny.yaml", out=tmp_path / "a").path == handle.path


def test_jobs_results_out_writes_the_file(tmp_path, capsys):
    spec = tiny_spec(tmp_path / "tiny.yaml")
    assert run_cli(["grid", "submit", spec, "--out", tmp_path, "--quiet"], capsys)[0] == 0
    target = tmp_path / "res.csv"
    code, out, err = run_cli(
        ["grid", "results", tmp_path / "runs" / "tiny", "--format", "csv", "--out", target], capsys
    )
    assert code == 0, err
    lines = target.read_text().splitlines()
    assert lines[0].startswith("cell,kind,") and len(lines) == 4  # teacher, oracle, ga


# ------------------------------------------------------------------ logs, audit tables, results


def test_unlearn_logs_saves_its_audit_table_and_writes_no_progress_frames(
    iris_teacher_copy, capsys
):
    code, out, err = run_cli(
        [
            "unlearn",
            "--run",
            iris_teacher_copy,
            "--forget",
            "class:0",
            "--method",
            "ga",
            "--option",
            "ga.epochs=3",
        ],
        capsys,
    )
    assert code == 0, err
    assert "\r" not in err and "\r" not in out  # stderr is not a terminal here: no bars
    folder = iris_teacher_copy / "unlearn" / "class-0"
    log = (folder / "ga" / "log.txt").read_text()
    assert "unlearn class:0 with ga" in log and "ga epoch 3/3 done" in log and "complete:" in log
    assert "\r" not in log
    header = out.splitlines()[1].split()
    assert header[:4] == ["method", "acc_retain", "acc_forget", "acc_test"]
    assert {"UA", "RA", "TA", "MIA-Efficacy"} <= set(header)
    import csv

    rows = list(csv.DictReader((folder / "audit.csv").read_text().splitlines()))
    assert [r["method"] for r in rows] == ["teacher", "retrain (oracle)", "ga"]
    ga = rows[2]
    assert float(ga["UA"]) == pytest.approx(1 - float(ga["acc_forget_unlearn"]))
    assert float(ga["RA"]) == pytest.approx(float(ga["acc_retain_unlearn"]))
    assert ga["TA_classes"] == "remaining" and ga["mia_nonmembers"] == "heldout"
    assert 0.0 <= float(ga["MIA_Efficacy"]) <= 1.0
    md = (folder / "audit.md").read_text()
    assert "| method | acc_retain |" in md and "| ga |" in md and "MIA-Efficacy" in md
    from PIL import Image

    assert f"plots: {folder / 'plots'} (forget_vs_retain.png, mia_roc.png, curves.png)" in out
    for name in ("forget_vs_retain.png", "mia_roc.png", "curves.png"):
        with Image.open(folder / "plots" / name) as im:
            assert im.size[0] > 500


def test_train_writes_a_log_with_one_line_per_epoch(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", "--epochs", "3", "--out", out], capsys)[0] == 0
    log = (out / "log.txt").read_text().splitlines()
    assert [
        ln.split("qmu_qiskit.training: ")[1].split(":")[0]
        for ln in log
        if "qmu_qiskit.training" in ln
    ] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "complete: acc_train" in log[-1]
    assert (out / "log.txt").stat().st_mode & 0o077 == 0  # user-only, like every run file


def test_ta_counts_the_remaining_classes_when_a_class_is_forgotten(iris_teacher_copy):
    import numpy as np

    from qmu_qiskit import pipeline
    from qmu_qiskit.evaluation.outputs import Outputs

    s = pipeline.unlearn(
        iris_teacher_copy, "class:0", ["ga"], progress=False, options={"ga": {"epochs": 2}}
    )[1]
    U = Outputs.load(s.path / "outputs.npz")
    test = U.mask("test") & (U.labels != 0)
    expected = float((U.logits[test].argmax(1) == U.labels[test]).mean())
    assert s.metrics["TA"] == pytest.approx(expected)
    assert s.metrics["UA"] == pytest.approx(1 - s.metrics["acc_forget_unlearn"])
    sub = pipeline.unlearn(
        iris_teacher_copy, "subset:0.05", ["ga"], progress=False, options={"ga": {"epochs": 2}}
    )[1]
    assert sub.metrics["TA_classes"] == "all"
    assert sub.metrics["TA"] == pytest.approx(sub.metrics["acc_test_unlearn"])
    assert np.isfinite(sub.metrics["MIA_Efficacy"])


def test_results_summarises_plain_runs_and_grids_in_one_table(iris_teacher_copy, tmp_path, capsys):
    from qmu_qiskit import pipeline

    pipeline.unlearn(
        iris_teacher_copy, "class:0", ["ga"], progress=False, options={"ga": {"epochs": 2}}
    )
    spec = tiny_spec(tmp_path / "tiny.yaml")
    assert run_cli(["grid", "submit", spec, "--out", tmp_path / "g", "--quiet"], capsys)[0] == 0
    code, out, err = run_cli(["results", iris_teacher_copy, tmp_path / "g"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    body = [ln.split() for ln in lines[2:]]
    kinds = [b[0] for b in body]
    assert kinds == ["teacher", "oracle", "method", "teacher", "oracle", "method"]
    target = tmp_path / "all.csv"
    code, out, err = run_cli(
        [
            "results",
            iris_teacher_copy,
            tmp_path / "g",
            "--format",
            "csv",
            "--out",
            target,
            "--no-teachers",
        ],
        capsys,
    )
    assert code == 0 and "wrote 4 rows" in out
    import csv

    rows = list(csv.DictReader(target.read_text().splitlines()))
    assert [r["source"] for r in rows] == [iris_teacher_copy.name] * 2 + ["tiny"] * 2
    assert all(r["UA"] != "" and r["dataset"] == "iris" for r in rows)


def test_results_refuses_a_folder_without_runs(tmp_path, capsys):
    code, _, err = run_cli(["results", tmp_path], capsys)
    assert code == 2 and "no complete run or grid under" in err


# ------------------------------------------------------------------ optional tracking


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_track_tensorboard_writes_the_curves_and_final_metrics(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, tb = tmp_path / "run", tmp_path / "tb"
    code, stdout, err = run_cli(
        ["train", "--epochs", "3", "--out", out, "--track", "tensorboard", "--track-dir", tb],
        capsys,
    )
    assert code == 0, err
    (logdir,) = list(tb.iterdir())
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    loss = [e.value for e in acc.Scalars("epoch/train_loss")]
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert loss == pytest.approx([h["train_loss"] for h in history], rel=1e-6)
    final = acc.Scalars("final/acc_test")[0].value
    acc_test = json.loads((out / "metrics.json").read_text())["acc_test"]
    assert final == pytest.approx(acc_test, rel=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_track_mlflow_to_a_local_file_store(iris_teacher_copy, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from qmu_qiskit import pipeline
    from qmu_qiskit.tracking import track_run

    oracle = pipeline.unlearn(
        iris_teacher_copy, "class:0", ["ga"], progress=False, options={"ga": {"epochs": 2}}
    )[0]
    uri = track_run(oracle.path, "mlflow", where=tmp_path / "mlruns", name="oracle")
    assert uri.startswith("file://")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("qmu-qiskit").experiment_id])[0]
    steps = client.get_metric_history(run.info.run_id, "train_loss")
    history = oracle.metrics["history"]
    assert [m.step for m in steps] == [h["epoch"] for h in history]
    assert run.data.metrics["final.UA"] == pytest.approx(oracle.metrics["UA"])
    assert run.data.params["method"] == "retrain" and run.info.status == "FINISHED"


def test_track_refuses_a_missing_library_before_anything_runs(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--epochs", "1", "--out", out, "--track", "mlflow"], capsys)
    assert code == 2 and "--track mlflow needs mlflow; install it with" in err
    assert not out.exists()
