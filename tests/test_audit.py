"""The per-example audit (qmu-qiskit audit): the competition's ε arithmetic, and a small end-to-end
audit on a tiny Iris model whose sanity anchors hold with margins (retrain ≈ chance, the
unchanged teacher clearly above it), resumable through the job grid, with its files."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from qmu_qiskit.audit import epsilon_from_rates, forgetting_quality, threshold_rates


def test_epsilon_is_the_competitions():
    # one attack, FPR 0.1 and FNR 0.2: max(log(0.89/0.2), log(0.79/0.1)) with δ = 0.01
    assert epsilon_from_rates([0.1], [0.2]) == pytest.approx(math.log(0.79 / 0.1))
    assert epsilon_from_rates([0.5], [0.5]) == 0.0  # a coin flip bounds nothing
    assert epsilon_from_rates([0.0, 0.3], [0.4, 0.0]) == 0.0  # one-sided attacks are discarded
    assert epsilon_from_rates([0.0], [0.0]) == math.inf  # a perfect attack
    # the best attack of a family counts
    assert epsilon_from_rates([0.5, 0.1], [0.5, 0.2]) == pytest.approx(math.log(7.9))


def test_threshold_attacks_and_forgetting_quality():
    fpr, fnr = threshold_rates(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.5, 1.5]))
    # thresholds 0, 0.5, 1, 1.5, 2, 3: "score > t ⇒ unlearned"
    np.testing.assert_allclose(fpr, [2 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    np.testing.assert_allclose(fnr, [0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert forgetting_quality(np.array([0.0, 0.0])) == 1.0  # bin 1: 2 / 2
    assert forgetting_quality(np.array([0.6])) == 0.5  # bin 2
    assert forgetting_quality(np.array([math.inf])) == pytest.approx(2 / 2**13)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny Iris teacher (HQML shallow, 10 epochs, last epoch) — seconds to train."""
    from qmu_qiskit import pipeline
    from qmu_qiskit.config import resolve_run_config

    out = tmp_path_factory.mktemp("audit") / "iris"
    cfg = resolve_run_config(
        dataset="iris", seed=0, training={"epochs": 10, "patience": 0, "select": "last"}
    )
    pipeline.train(cfg, out, progress=False)
    return out


def test_audit_sanity_anchors_files_and_resume(tiny_run):
    """subset:0.5 with 6 shadow pairs puts every example in about half the shadow forget sets,
    so a few shadows already give each example several observations per side."""
    from qmu_qiskit.audit import audit

    common = {
        "shadows": 6,
        "seed": 0,
        "executor": "inline",
        "fixed_variance": True,
        "teachers": "independent",
    }
    noop = audit(tiny_run, "subset:0.5", "noop", **common)
    retrain = audit(tiny_run, "subset:0.5", "retrain", **common)
    s_noop, s_re = noop.summary, retrain.summary
    # retrain vs an independent retrain: chance; the unchanged teacher: clearly above it
    assert abs(s_re["success"] - 0.5) < 0.12, s_re["success"]
    assert s_noop["success"] > s_re["success"] + 0.1, (s_noop["success"], s_re["success"])
    assert s_noop["auc"] > 0.6
    assert s_noop["examples_scored"] > 50 and s_re["examples_scored"] > 50
    # files: per example rows, and a summary with the seed and the configuration
    rows = list(csv.DictReader((noop.out / "ulira.csv").read_text().splitlines()))
    assert len(rows) == s_noop["examples_scored"] and {"record_id", "success", "epsilon"} <= set(
        rows[0]
    )
    summary = json.loads((noop.out / "summary.json").read_text())
    assert (
        summary["seed"] == 0
        and summary["config"]["shadows"] == 6
        and summary["config"]["method"] == "noop"
    )
    assert len(set(summary["config"]["shadow_forgets"])) == 6
    assert set(summary["tpr_at_fpr"]) == {"0.01", "0.001"}
    # the shadow teachers were reused by the second audit; a rerun runs nothing and agrees
    teachers = list((tiny_run / "audit" / "shadows" / "teachers").iterdir())
    assert len(teachers) == 6
    again = audit(tiny_run, "subset:0.5", "noop", **common)
    assert again.summary["success"] == s_noop["success"] and again.summary["auc"] == s_noop["auc"]


def test_shared_teacher_audit_separates_noop_from_retrain(tiny_run):
    """The challenge's protocol: every pair starts from the run's teacher. The unchanged teacher
    is then one fixed model against retrains of fresh seeds — U-LiRA tells them apart almost
    always — while two retrains of different seeds stay at chance. No shadow teacher is trained,
    and the oracles are shared by both audits."""
    from qmu_qiskit.audit import audit

    common = {"shadows": 8, "seed": 1, "executor": "inline", "teachers": "shared"}
    shadow_teachers = tiny_run / "audit" / "shadows" / "teachers"

    def count_teachers():
        return len(list(shadow_teachers.iterdir())) if shadow_teachers.exists() else 0

    before = count_teachers()
    noop = audit(tiny_run, "subset:0.5", "noop", **common)
    retrain = audit(tiny_run, "subset:0.5", "retrain", **common)
    s_noop, s_re = noop.summary, retrain.summary
    assert s_noop["success"] > 0.9 and s_noop["auc"] > 0.9, s_noop["success"]
    assert abs(s_re["success"] - 0.5) < 0.12, s_re["success"]
    print("shared audit: noop", s_noop["success"], s_noop["auc"], "retrain", s_re["success"])
    assert s_noop["config"]["teachers"] == "shared" and len(s_noop["config"]["pair_seeds"]) == 8
    assert count_teachers() == before  # no shadow teacher trained
    # every pair's oracle lives in the run, under its own seed's folder
    oracles = list((tiny_run / "unlearn").glob("indices-*/retrain-s*"))
    assert len(oracles) >= 8


def test_audit_cli_refuses_bad_requests_in_one_line(tiny_run, capsys):
    from qmu_qiskit.cli import main

    for args, message in (
        (["--method", "nope", "--shadows", "4"], "unknown unlearning method 'nope'"),
        (["--method", "noop", "--shadows", "2"], "--shadows"),
        (["--method", "noop", "--shadows", "4", "--option", "epochs"], "must be KEY=VALUE"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["audit", "--run", str(tiny_run), "--forget", "subset:0.5", *args])
        err = capsys.readouterr().err
        assert exc.value.code != 0 and message in err and len(err.strip().splitlines()) == 1, err


def test_studies_request_the_audit_in_their_metrics():
    from qmu_qiskit import studies
    from qmu_qiskit.exceptions import BadInputError

    spec = studies.load_spec(
        {"name": "a", "datasets": ["iris"], "metrics": {"audit": {"shadows": 64}}}
    )
    assert spec.metrics.audit.shadows == 64 and spec.metrics.audit.seed == 0
    with pytest.raises(BadInputError, match="metrics.audit.shadows"):
        studies.load_spec({"name": "a", "datasets": ["iris"], "metrics": {"audit": {"shadows": 2}}})
