"""Plots: log-log ROC with low-FPR marks and small-set warnings, forget-vs-retain labels that do
not overlap and colours that do not repeat, per-epoch curves, the MIA comparison's baseline."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from PIL import Image

from qmu_qiskit import plots


def _png_ok(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def _scores(rng, members: int, nonmembers: int, shift: float):
    y = np.r_[np.ones(members), np.zeros(nonmembers)]
    return y, np.r_[rng.normal(shift, 1, members), rng.normal(0, 1, nonmembers)]


def test_tpr_at_low_fpr_is_the_best_tpr_within_the_fpr():
    fpr = np.array([0.0, 0.0, 0.005, 0.02, 1.0])
    tpr = np.array([0.0, 0.3, 0.4, 0.8, 1.0])
    assert plots.tpr_at(fpr, tpr, 0.01) == 0.4
    assert plots.tpr_at(fpr, tpr, 0.001) == 0.3


def test_roc_marks_tpr_at_low_fprs_with_mean_and_std_over_seeds(tmp_path):
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    runs = [_scores(rng, 2000, 2000, 2.0) for _ in range(3)]
    summary = plots.plot_roc([plots.RocSeries("U", runs)], tmp_path / "roc.png", title="t")
    assert summary.warnings == []  # 2000 non-members resolve 0.1% FPR
    per_seed = []
    for y, s in runs:
        fpr, tpr, _ = roc_curve(y, s)
        per_seed.append(plots.tpr_at(fpr, tpr, 0.01))
    row = summary.rows[0]
    assert row["seeds"] == 3
    assert row["TPR@0.01"] == pytest.approx(np.mean(per_seed))
    assert row["TPR@0.01_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert 0.3 < row["TPR@0.01"] < 0.6 and 0.85 < row["AUC"] < 0.95  # shift 2σ: AUC ≈ 0.92
    assert _png_ok(summary.path)[0] > 500


def test_roc_warns_on_the_plot_and_in_the_summary_when_sets_are_too_small(tmp_path):
    rng = np.random.default_rng(1)
    summary = plots.plot_roc(
        [plots.RocSeries("U", [_scores(rng, 3, 3, 1.0)])], tmp_path / "roc.png", title="tiny"
    )
    text = " ".join(summary.warnings)
    assert "TPR at 1.0% FPR needs ≥ 100 non-members, this set has 3" in text
    assert "TPR at 0.1% FPR needs ≥ 1000 non-members" in text and "only 3 member(s)" in text
    assert summary.members == 3 and summary.nonmembers == 3
    assert _png_ok(summary.path)


def test_colours_never_repeat():
    for n in (3, 12, 20, 33):
        cs = [tuple(round(v, 6) for v in c) for c in plots.colors(n)]
        assert len(set(cs)) == n


def _overlaps(fig, annotations):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    boxes = [plots.label_box(a, r) for a in annotations]
    return [
        (i, j)
        for i, j in itertools.combinations(range(len(boxes)), 2)
        if boxes[i].overlaps(boxes[j])
    ]


def test_forget_vs_retain_labels_of_twelve_methods_do_not_overlap(tmp_path):
    rng = np.random.default_rng(2)
    # the hard case: many methods at (nearly) the same place, others close together
    pts = [
        plots.Point(f"method_{i}", x, y)
        for i, (x, y) in enumerate(
            [(1.0, 0.0)] * 4
            + [(0.95 + 0.01 * k, 0.02 * k) for k in range(4)]
            + list(zip(rng.uniform(0.3, 0.9, 4), rng.uniform(0.0, 0.5, 4)))
        )
    ]
    pts += [
        plots.Point("retrain (oracle)", 0.97, 0.0, kind="oracle"),
        plots.Point("teacher", 0.98, 0.97, kind="teacher"),
    ]
    fig, annotations = plots.forget_vs_retain_figure(pts, title="12 methods")
    assert annotations and _overlaps(fig, annotations) == []
    numbers = sorted(int(t) for a in annotations for t in a.get_text().split(",") if t.isdigit())
    assert numbers == list(range(1, 13))  # every method is labelled exactly once
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["1  method_0", "2  method_1"] and "T  teacher" in legend
    path = plots.plot_forget_vs_retain(pts, tmp_path / "fvr.png", title="12 methods")
    assert _png_ok(path)


def test_curves_from_stored_histories(tmp_path):
    hist = [
        [
            {"epoch": e, "train_loss": 1 / e, "train_acc": 1 - 1 / (e + 1), "val_acc": 0.5}
            for e in range(1, 6)
        ]
        for _ in range(2)
    ]
    path = plots.plot_curves(
        {"teacher": hist, "oracle": [hist[0][:3]]}, tmp_path / "c.png", title="t"
    )
    assert _png_ok(path)
    assert plots.plot_curves({"teacher": [[]]}, tmp_path / "none.png", title="t") is None


def test_curves_of_unlearning_methods_with_reference_lines(tmp_path):
    def method_history(rate, epochs=4):
        return [
            {"epoch": e, "train_loss": -rate * e, "forget_acc": 1 - rate * e, "retain_acc": 0.9}
            for e in range(1, epochs + 1)
        ]

    names = [f"method_{i}" for i in range(12)]
    methods = {
        n: [method_history(0.01 * (i + 1)), method_history(0.02)] for i, n in enumerate(names)
    }
    fit = [[{"epoch": e, "train_loss": 1 / e, "train_acc": 0.9, "val_acc": 0.8} for e in (1, 2)]]
    refs = {
        "teacher": {"forget_acc": [1.0, 0.9], "retain_acc": [0.95, 0.95]},
        "retrain (oracle)": {"forget_acc": [0.0, 0.1], "retain_acc": [0.9, 0.9]},
    }
    fig = plots.curves_figure({"teacher": fit}, title="t", methods=methods, references=refs)
    ax_f, ax_r, ax_obj, ax_loss, ax_acc, ax_leg = fig.axes[:6]
    # the reference lines sit at the mean over seeds of the final accuracies
    ref = {
        ln.get_label(): ln.get_ydata()[0] for ln in ax_f.get_lines() if "(final)" in ln.get_label()
    }
    assert ref == {
        "teacher (final)": pytest.approx(0.95),
        "retrain (oracle) (final)": pytest.approx(0.05),
    }
    # every method has its own colour and legend entry; the curve is the mean over seeds
    legend = [t.get_text() for t in ax_leg.get_legend().get_texts()]
    assert legend[:12] == names and legend[12:] == ["teacher (final)", "retrain (oracle) (final)"]
    method_lines = [ln for ln in ax_f.get_lines() if "(final)" not in ln.get_label()]
    assert len({tuple(ln.get_color()) for ln in method_lines}) == 12
    assert list(method_lines[0].get_ydata()) == pytest.approx([1 - 0.015 * e for e in range(1, 5)])
    assert ax_obj.get_yscale() == "linear" and len(ax_obj.get_lines()) >= 12
    assert ax_loss.get_lines() and ax_acc.get_lines()  # the teacher's fit
    path = plots.plot_curves(
        {"teacher": fit}, tmp_path / "c.png", title="t", methods=methods, references=refs
    )
    assert _png_ok(path)


def test_mia_compare_plot_draws_the_false_positive_baseline_and_zero_bars(tmp_path):
    from qmu_qiskit.studies import mia_compare

    cc = mia_compare.CompareConfig(methods=("ga", "ssd"))
    base = {"model": "qmu-hybrid", "layers": 1, "trained_on": "aer", "shots": None}
    rows = [
        {
            **base,
            "backend": b,
            "state": s,
            "mia_success": v,
            "nonmember_flagged": 0.86 if s == "teacher" else None,
        }
        for b in ("aer", "aer_noisy:ibm_brisbane")
        for s, v in (("teacher", 1.0), ("ga", 0.0), ("ssd", 0.0))
    ]
    path = mia_compare._plot(rows, tmp_path / "mc.png", cc)
    assert _png_ok(path)
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    crimson = (np.abs(rgb - np.array([220, 20, 60])).sum(-1) < 60).sum()
    assert crimson > 50  # the dashed baseline is drawn
    assert not math.isnan(rows[1]["mia_success"])
