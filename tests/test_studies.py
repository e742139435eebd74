"""Study protocols: recipes, the specs in jobs/, results_summary.csv, report and plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from qmu_qiskit import studies
from qmu_qiskit.config import BackendConfig
from qmu_qiskit.exceptions import BadInputError
from qmu_qiskit.grids import Grid
from qmu_qiskit.studies import HQML_COLUMNS, get_protocol, run_study
from qmu_qiskit.studies.report import mean_std_rows

JOBS = Path(__file__).resolve().parent.parent / "studies"


def teacher_config(spec: dict, dataset: int = 0, model: int = 0, seed: int | None = None):
    js = studies.load_spec(spec)
    proto = get_protocol(js.protocol)
    js = proto.complete(js)
    entry = js.datasets[dataset]
    models = proto.models_for(js, entry)
    return proto.run_config(
        js, entry, models[model], js.backends[0], js.seeds[0] if seed is None else seed
    )


# ------------------------------------------------------------------------------ recipes


def test_hqml_recipe_and_quirks():
    cfg = teacher_config({"name": "h", "protocol": "hqml", "datasets": ["iris"]})
    assert (cfg.model.name, cfg.model.qubits, cfg.model.layers) == ("hqml-deep", 4, 6)
    assert cfg.data.val_size == 0.0 and cfg.data.test_size == 0.2 and cfg.data.seed == 0
    assert cfg.data.angle_range == (-math.pi, math.pi)
    assert (cfg.training.select, cfg.training.epochs, cfg.training.batch_size) == ("test", 100, 32)
    # a terse hqml spec gets every HQML quirk that applies to Iris
    assert cfg.protocol == "hqml" and cfg.exclude_forget == "subset:0.02"
    assert cfg.data.quirks == ("scaler_on_all", "shuffled_subset")
    assert (
        teacher_config({"name": "h", "protocol": "hqml", "datasets": ["iris"]}, seed=5).data.seed
        == 0
    )

    plain = teacher_config({"name": "h", "protocol": "hqml", "datasets": ["iris"], "quirks": {}})
    assert plain.exclude_forget is None and plain.data.quirks == ()
    quirky = teacher_config(
        {
            "name": "h",
            "protocol": "hqml",
            "datasets": ["iris"],
            "quirks": {"iris_teacher_without_subset": True},
        }
    )
    assert quirky.exclude_forget == "subset:0.02" and quirky.fingerprint() != plain.fingerprint()

    honest = teacher_config(
        {"name": "h", "protocol": "hqml", "datasets": ["iris"], "quirks": {"test_selection": False}}
    )
    assert (honest.training.select, honest.data.val_size, honest.protocol) == ("val", 0.1, "fixed")

    with pytest.raises(BadInputError, match="contradicts quirks.test_selection"):
        teacher_config(
            {"name": "h", "protocol": "hqml", "datasets": ["iris"], "training": {"select": "val"}}
        )
    with pytest.raises(BadInputError, match="needs a subset:F"):
        teacher_config(
            {
                "name": "h",
                "protocol": "hqml",
                "datasets": ["iris"],
                "forget": ["class:0"],
                "quirks": {"iris_teacher_without_subset": True},
            }
        )

    fashion = teacher_config({"name": "h", "protocol": "hqml", "datasets": ["fashion_mnist"]})
    assert (fashion.model.name, fashion.model.qubits, fashion.data.samples_per_class) == (
        "hqml-conv",
        10,
        800,
    )
    assert fashion.data.quirks == ("shuffled_subset", "torch_class_draws")  # no scaler on images
    fixed = teacher_config({"name": "f", "datasets": ["mnist"]})
    assert (fixed.training.select, fixed.data.val_size, fixed.protocol) == ("val", 0.1, "fixed")
    spec = get_protocol("hqml").complete(
        studies.load_spec({"name": "h", "protocol": "hqml", "datasets": ["iris"]})
    )
    assert spec.metrics.mia_nonmembers == "retain" and spec.forget == ["subset:0.02", "class:0"]


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.yaml")), ids=lambda p: p.name)
def test_job_specs_parse_and_agree_with_their_protocol(path):
    """Every spec in jobs/ is valid, and its explicit recipe is the protocol's (no drift)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec = studies.load_spec(path)
    assert spec.name == path.stem and spec.out == f"runs/{path.stem}"
    terse = {
        "name": spec.name,
        "protocol": spec.protocol,
        "datasets": [d.name for d in spec.datasets],
    }
    if "backends" in raw:  # where it runs is the spec's choice, not part of the recipe
        terse["backends"] = raw["backends"]
    for d in range(len(spec.datasets)):
        for m in range(len(spec.models or [None])):
            assert teacher_config(raw, d, m) == teacher_config(terse, d, m)
    proto = get_protocol(spec.protocol)
    complete = proto.complete(studies.load_spec(terse))
    spec = proto.complete(spec)  # a spec may leave methods, forget and seeds to its protocol
    assert [m.name for m in spec.methods] == [m.name for m in complete.methods]
    assert [m.options for m in spec.methods] == [m.options for m in complete.methods]
    assert spec.forget == complete.forget and spec.seeds == complete.seeds
    if spec.protocol == "hqml":
        assert spec.quirks.test_selection and spec.metrics.mia_nonmembers == "retain"


def test_hqml_iris_spec_expands_when_its_methods_exist(tmp_path):
    from qmu_qiskit.unlearning import available_methods

    spec = studies.load_spec(JOBS / "hqml_iris.yaml")
    missing = [m.method for m in spec.methods if m.method not in available_methods()]
    if missing:
        pytest.skip(f"methods not registered yet: {', '.join(missing)}")
    grid = studies.expand(spec, root=tmp_path)
    assert [c.kind for c in grid.cells].count("method") == 2 * len(spec.methods)


# ------------------------------------------------------------------------------ a study end to end


@pytest.fixture(scope="module")
def faithful_study(tmp_path_factory):
    """A miniature faithful study: HQML's Iris recipe cut to 3 epochs, two existing methods,
    two quirks on, run inline."""
    root = tmp_path_factory.mktemp("study")
    spec = {
        "name": "mini_hqml",
        "protocol": "hqml",
        "datasets": [{"name": "iris", "training": {"epochs": 3}}],
        "methods": ["ga", "neggrad_plus"],
        "quirks": {"iris_teacher_without_subset": True, "kl_retain_shuffled": True},
        "executor": {"kind": "inline"},
    }
    path = root / "mini_hqml.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    outputs = run_study(path, out_dir=root)
    return path, root, outputs


def test_faithful_summary_columns_and_uqi(faithful_study):
    _, _, out = faithful_study
    assert out.state == "complete"
    with open(out.summary, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        rows = list(reader)
    assert header[: len(HQML_COLUMNS)] == HQML_COLUMNS
    assert header[len(HQML_COLUMNS)] == "dataset" and header[-2:] == ["cell", "path"]
    assert {(r["scenario"], r["method"]) for r in rows} == {
        (s, m) for s in ("subset:0.02", "class:0") for m in ("retrain", "ga", "neggrad_plus")
    }
    for r in rows:
        uqi = float(r["forget_drop"]) - 0.5 * (float(r["retain_drop"]) + float(r["test_drop"]))
        assert math.isclose(float(r["UQI"]), uqi, rel_tol=0, abs_tol=1e-12), r
    by = {(r["scenario"], r["method"]): r for r in rows}
    assert by[("subset:0.02", "ga")]["method_source"] == "GA"
    assert by[("class:0", "retrain")]["scenario_source"] == "fullclass"
    assert out.mean_std is None  # one seed


def test_faithful_quirks_applied_and_reported(faithful_study):
    _, root, out = faithful_study
    grid = Grid.load(out.summary.parent)
    teacher = next(c for c in grid.cells if c.kind == "teacher")
    metrics = json.loads((teacher.path / "metrics.json").read_text())
    assert metrics["excluded"] == {"forget": "subset:0.02", "size": 3}
    assert all(
        c.payload["metric_ctx"]["kl_shuffled"]
        and c.payload["metric_ctx"]["mia_nonmembers"] == "retain"
        for c in grid.cells
        if c.kind in ("oracle", "method")
    )
    # each oracle's fit ran beside the teacher in its prefit cell, and the oracle used it
    prefits = [c for c in grid.cells if c.kind == "prefit"]
    oracles = [c for c in grid.cells if c.kind == "oracle"]
    assert len(prefits) == len(oracles) == 2 and all(not p.deps for p in prefits)
    assert {o.deps for o in oracles} == {(teacher.id, p.id) for p in prefits}
    for o in oracles:
        cost = json.loads((o.path / "cost.json").read_text())
        assert cost["method"]["wall_seconds"] >= cost["prefit"]["wall_seconds"] > 0
    report = out.report.read_text(encoding="utf-8")
    for flag in ("test_selection", "iris_teacher_without_subset", "kl_retain_shuffled"):
        assert f"`{flag}` | **on**" in report
    assert "without subset:0.02" in report and "## Results" in report
    names = sorted(p.name for p in out.plots)
    assert len(names) == 6 and all(
        sum(n.startswith(k) for n in names) == 2
        for k in ("mia_roc_", "forget_vs_retain_", "curves_")
    )
    for p in out.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{p.name}" in report


def test_study_cli_report_only(faithful_study, capsys):
    from qmu_qiskit.cli import main

    path, root, out = faithful_study
    before = out.summary.read_text(encoding="utf-8")
    main(["study", str(path), "--out-dir", str(root), "--report-only", "--no-plots"])
    printed = capsys.readouterr().out
    assert "summary:" in printed and "report:" in printed
    assert out.summary.read_text(encoding="utf-8") == before


def test_mean_std_over_seeds():
    rows = [
        {
            "dataset": "iris",
            "model": "m",
            "backend": "aer",
            "scenario": "class:0",
            "method": "ga",
            "seed": s,
            "UQI": u,
            "MIA_AUC": float("nan") if s == 2 else 0.5,
        }
        for s, u in ((0, 0.1), (1, 0.3), (2, 0.5))
    ]
    agg, cols = mean_std_rows(rows, ["scenario", "method", "UQI", "MIA_AUC", "seed"])
    (row,) = agg
    assert row["n_seeds"] == 3 and row["seeds"] == "0 1 2"
    assert math.isclose(row["UQI_mean"], 0.3) and math.isclose(row["UQI_std"], 0.2)
    assert row["MIA_AUC_mean"] == 0.5 and row["MIA_AUC_std"] == 0.0  # nan ignored
    assert "UQI_mean" in cols and "seed_mean" not in cols
    # the 95% Student-t interval of the mean per metric, and the method stated in its column
    from scipy import stats

    low, high = stats.t.interval(0.95, 2, loc=0.3, scale=0.2 / math.sqrt(3))
    assert math.isclose(row["UQI_ci_low"], low) and math.isclose(row["UQI_ci_high"], high)
    assert row["MIA_AUC_ci_low"] == row["MIA_AUC_ci_high"] == 0.5  # two equal values
    assert cols[-1] == "ci_method" and "Student-t" in row["ci_method"]
    assert cols.index("UQI_ci_high") == cols.index("UQI_mean") + 3


def test_report_cells_show_mean_std_and_the_interval_clipped_to_the_range():
    from scipy import stats

    from qmu_qiskit.studies.report import _cell_value

    members = [{"acc_forget_unlearn": v} for v in (0.0, 0.0, 0.1, 0.0, 0.0)]
    low, high = stats.t.interval(
        0.95, 4, loc=0.02, scale=np.std([0, 0, 0.1, 0, 0], ddof=1) / math.sqrt(5)
    )
    assert low < 0  # an accuracy: clipped to 0
    assert _cell_value(members, "acc_forget_unlearn") == f"0.020 ± 0.045 [0.000, {high:.3f}]"
    assert _cell_value(members[:1], "acc_forget_unlearn") == "0.000"  # one seed: the value
    assert _cell_value([{"x": None}], "x") == "–"


def test_backends_accept_names_and_mappings():
    spec = studies.load_spec(
        {
            "name": "b",
            "datasets": ["iris"],
            "backends": ["aer", {"name": "aer", "engine": "aer", "shots": 128}],
        }
    )
    assert spec.backends == [BackendConfig(), BackendConfig(engine="aer", shots=128)]
