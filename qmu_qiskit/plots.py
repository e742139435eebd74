"""Plots for papers (matplotlib, Agg; no display needed): membership-inference ROC curves on
log-log axes, forget-vs-retain accuracy, training curves.

Every function takes plain numbers (computed elsewhere from saved outputs), writes one PNG
atomically and returns what a report should say about it (warnings included). Figures are built
with :class:`matplotlib.figure.Figure`, not pyplot, so nothing global changes and nothing stays
open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_savefig
from .runs import METRICS_FILE, OUTPUTS_FILE

#: False-positive rates at which ROC plots mark (and reports give) the true-positive rate.
LOW_FPRS = (0.01, 0.001)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


#: Resolution of every PNG; the figures are made at it too, so text measured while laying a
#: figure out is the text drawn (and matplotlib's text-layout cache is shared between the two).
DPI = 120


def _figure(width: float = 6.4, height: float = 4.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # a renderer for the layout, without a throw-away draw
    return fig


def _lay_out(fig) -> None:
    """Run the figure's constrained layout once and keep the positions it found.

    The layout engine is removed afterwards, so later draws (``savefig``, which otherwise lays
    a constrained figure out in a draw of its own before the real one) draw exactly once. Does
    nothing to a figure already laid out.
    """
    from matplotlib import rc_context

    engine = fig.get_layout_engine()
    if engine is None:
        return
    if fig.axes:  # as Figure.draw: no axes, nothing to lay out
        engine.execute(fig)
    with rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)  # None, not "none": savefig would still lay that out


def _save(fig, path: str | Path) -> Path:
    """Lay ``fig`` out once (:func:`_lay_out`) and write it as a PNG at :data:`DPI`."""
    _lay_out(fig)
    path = Path(path)
    atomic_savefig(fig, path, dpi=DPI)
    return path


def colors(n: int) -> list:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, then evenly spaced samples of a
    perceptual map (viridis), so no two series share a colour."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.95, n)]


# ------------------------------------------------------------------------------------ ROC


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, at: float) -> float:
    """The highest TPR reached at an FPR of at most ``at`` (LiRA's convention)."""
    ok = fpr <= at + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


@dataclass
class RocSeries:
    """One model's ROC inputs over seeds: per seed, member labels (1/0) and attack scores."""

    name: str
    runs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    style: dict = field(default_factory=dict)


@dataclass
class RocSummary:
    """What an ROC plot showed: per series mean AUC and TPR at :data:`LOW_FPRS` (± std over
    seeds), the set sizes, and warnings (sets too small for the FPRs shown)."""

    path: Path
    rows: list[dict]
    members: int
    nonmembers: int
    warnings: list[str]


def small_set_warnings(members: int, nonmembers: int, fprs=LOW_FPRS) -> list[str]:
    """Warnings when a set is too small to measure TPR at ``fprs``: an FPR of f needs at least
    1/f non-members (one false positive), and a TPR needs members to be more than 0 or 1."""
    out = []
    for f in fprs:
        need = math.ceil(1.0 / f)
        if nonmembers < need:
            out.append(
                f"TPR at {f:.1%} FPR needs ≥ {need} non-members, this set has "
                f"{nonmembers}: "
                f"the lowest FPR above 0 it can show is {1 / max(nonmembers, 1):.1%}"
            )
    if members < 10:
        out.append(f"only {members} member(s): each TPR step is {1 / max(members, 1):.0%}")
    return out


def plot_roc(
    series: list[RocSeries], path: str | Path, *, title: str, fprs=LOW_FPRS
) -> RocSummary | None:
    """Log-log ROC curves (mean over seeds, ± std band) with the TPR at ``fprs`` marked.

    The curves are drawn on a grid of FPRs from the smallest the sets allow to 1, each point
    the TPR at FPR ≤ x (a step function, never interpolated upwards); the chance line is TPR =
    FPR. A warning goes onto the plot (and into the summary) when the sets are too small for the
    FPRs shown.

    Returns:
        The summary, or ``None`` when no series has both members and non-members.
    """
    from sklearn.metrics import roc_curve

    series = [s for s in series if any(len(y) and 0 < y.sum() < len(y) for y, _ in s.runs)]
    if not series:
        return None
    sizes = [(int(y.sum()), int(len(y) - y.sum())) for s in series for y, _ in s.runs]
    members = min(m for m, _ in sizes)
    nonmembers = min(n for _, n in sizes)
    low = min(min(fprs), 1.0 / max(nonmembers, 1)) / 2
    grid = np.geomspace(low, 1.0, 200)
    floor = low
    warnings = small_set_warnings(members, nonmembers, fprs)
    fig = _figure(6.4, 5.0 + 0.16 * len(warnings))
    if warnings:  # the warning gets a strip of its own under the axes, never over a curve
        ax, note = fig.subplots(2, 1, height_ratios=[5.0, 0.2 + 0.16 * len(warnings)])
        note.axis("off")
        note.text(
            0.0,
            1.0,
            "warning: a set is too small for the FPRs shown\n"
            + "\n".join("· " + w for w in warnings),
            transform=note.transAxes,
            va="top",
            ha="left",
            fontsize=7,
            color="darkred",
        )
    else:
        ax = fig.add_subplot()
    palette = colors(len(series))
    bands = len(series) <= 4  # more overlapping bands hide the curves; the legend keeps the std
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(series):
        marks: dict[float, list[float]] = {f: [] for f in fprs}
        curves, aucs = [], []
        for y, score in s.runs:
            if not (len(y) and 0 < y.sum() < len(y)):
                continue
            fpr, tpr, _ = roc_curve(y, score)
            curves.append([tpr_at(fpr, tpr, x) for x in grid])
            aucs.append(
                float(np.trapezoid(tpr, fpr))
                if hasattr(np, "trapezoid")
                else float(np.trapz(tpr, fpr))  # type: ignore[attr-defined]  # numpy < 2
            )
            for f in fprs:
                marks[f].append(tpr_at(fpr, tpr, f))
        c = np.array(curves)
        mean, std = c.mean(0), (c.std(0, ddof=1) if len(c) > 1 else np.zeros(len(grid)))
        style = {"color": palette[i], **s.style}
        auc_text = f"AUC {np.mean(aucs):.2f}" + (
            f"±{np.std(aucs, ddof=1):.2f}" if len(aucs) > 1 else ""
        )
        ax.plot(grid, np.clip(mean, floor, 1), label=f"{s.name} ({auc_text})", **style)
        if len(c) > 1 and bands:
            ax.fill_between(
                grid,
                np.clip(mean - std, floor, 1),
                np.clip(mean + std, floor, 1),
                color=style["color"],
                alpha=0.15,
                linewidth=0,
            )
        row = {
            "name": s.name,
            "seeds": len(c),
            "AUC": float(np.mean(aucs)),
            "AUC_std": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0,
        }
        for f in fprs:
            m = float(np.mean(marks[f]))
            row[f"TPR@{f:g}"] = m
            row[f"TPR@{f:g}_std"] = float(np.std(marks[f], ddof=1)) if len(marks[f]) > 1 else 0.0
            ax.plot(
                [f],
                [max(m, floor)],
                marker="o",
                markersize=5,
                markeredgecolor="black",
                markeredgewidth=0.6,
                color=style["color"],
                linestyle="none",
            )
        rows.append(row)
    ax.plot(grid, grid, color="grey", linewidth=0.8, linestyle="--", label="chance (TPR = FPR)")
    for f in fprs:
        ax.axvline(f, color="grey", linewidth=0.6, linestyle=":")
        ax.annotate(
            f"{f:.1%} FPR",
            (f, floor),
            xytext=(2, 3),
            textcoords="offset points",
            fontsize=7,
            color="dimgrey",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, 1.0)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    seeds = max(r["seeds"] for r in rows)
    spread = " (bands: ± std)" if bands else " (AUC ± std in the legend)"
    ax.set_title(
        f"{title}\n{members} members / {nonmembers} non-members"
        + (f", mean over {seeds} seeds{spread}" if seeds > 1 else ", one seed"),
        fontsize=9,
    )
    ax.grid(True, which="major", alpha=0.3)
    if len(series) > 5:
        fig.set_figwidth(fig.get_figwidth() + 2.6)
        fig.legend(
            handles=ax.get_legend_handles_labels()[0],
            loc="outside right upper",
            fontsize=7,
            frameon=False,
        )
    else:
        ax.legend(fontsize=7, loc="lower right")
    path = _save(fig, path)
    return RocSummary(
        path=path, rows=rows, members=members, nonmembers=nonmembers, warnings=warnings
    )


# ------------------------------------------------------------------------------------ scatter


@dataclass
class Point:
    """A method's mean position (± std over seeds) on a forget-vs-retain plot.

    ``kind``: ``method``, ``oracle`` or ``teacher`` (the two references get fixed styles).
    """

    name: str
    x: float
    y: float
    xerr: float = 0.0
    yerr: float = 0.0
    kind: str = "method"


def _clusters(points: list[Point], radius: float) -> list[list[int]]:
    """Indices of points grouped when they lie within ``radius`` of a group's first point."""
    groups: list[list[int]] = []
    for i, p in enumerate(points):
        for g in groups:
            q = points[g[0]]
            if math.hypot(p.x - q.x, p.y - q.y) <= radius:
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def _declutter(fig, labels: list, step: float = 11.0, tries: int = 40) -> None:
    """Move annotation labels (in screen points, alternately down and up) until no two boxes
    overlap. The figure is laid out first (:func:`_lay_out`, positions fixed from then on) to
    know where they are; nothing is drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    _lay_out(fig)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    placed: list = []
    for ann in labels:
        x0, y0 = ann.xyann
        for k in range(tries):
            box = label_box(ann, renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(b) for b in placed):
                break
            shift = step * ((k // 2) + 1) * (1 if k % 2 else -1)
            ann.xyann = (x0, y0 + shift)
        placed.append(label_box(ann, renderer))


def label_box(ann, renderer):
    """The screen box of an annotation's text alone (its leader line left out)."""
    from matplotlib.text import Text

    ann.update_positions(renderer)
    return Text.get_window_extent(ann, renderer)


def forget_vs_retain_figure(
    points: list[Point],
    *,
    title: str,
    xlabel: str = "accuracy on D_r (retain)",
    ylabel: str = "accuracy on D_f (forget)",
):
    """The figure of :func:`plot_forget_vs_retain` (and its label annotations), already laid
    out: its axes positions are fixed (:func:`_lay_out`), so the labels stay apart."""
    methods = [p for p in points if p.kind == "method"]
    palette = colors(len(methods))
    fig = _figure(8.6, 5.2)
    ax = fig.add_subplot()
    labelled: list[tuple[Point, str]] = []
    handles: list = []
    for i, p in enumerate(methods):
        number = str(i + 1)
        handles.append(
            ax.errorbar(
                p.x,
                p.y,
                xerr=p.xerr,
                yerr=p.yerr,
                fmt=_MARKERS[i % len(_MARKERS)],
                color=palette[i],
                markersize=7,
                markeredgecolor="black",
                markeredgewidth=0.5,
                capsize=2,
                elinewidth=0.8,
                label=f"{number}  {p.name}",
            )
        )
        labelled.append((p, number))
    for p in points:
        if p.kind == "oracle":
            handles.append(
                ax.errorbar(
                    p.x,
                    p.y,
                    xerr=p.xerr,
                    yerr=p.yerr,
                    fmt="s",
                    color="black",
                    markersize=9,
                    markerfacecolor="none",
                    markeredgewidth=1.5,
                    capsize=2,
                    label=f"R  {p.name}",
                )
            )
            labelled.append((p, "R"))
        elif p.kind == "teacher":
            handles.extend(
                ax.plot(
                    p.x,
                    p.y,
                    "*",
                    markersize=15,
                    color="gold",
                    markeredgecolor="black",
                    label=f"T  {p.name}",
                )
            )
            labelled.append((p, "T"))
    only = [p for p, _ in labelled]
    annotations = []
    for group in _clusters(only, radius=0.035):
        gx = float(np.mean([only[i].x for i in group]))
        gy = float(np.mean([only[i].y for i in group]))
        text = ",".join(labelled[i][1] for i in group)
        # labels go up-right of their cluster, or down-left near the top/right edges
        dx = -12 if gx > 0.85 else 12
        dy = -14 if gy > 0.9 else 12
        annotations.append(
            ax.annotate(
                text,
                (gx, gy),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=7.5,
                ha="right" if dx < 0 else "left",
                va="top" if dy < 0 else "bottom",
                bbox={
                    "boxstyle": "round,pad=0.15",
                    "facecolor": "white",
                    "alpha": 0.8,
                    "edgecolor": "none",
                },
                arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5},
            )
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(-0.03, 1.05)
    ax.set_ylim(-0.03, 1.05)
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.legend(
        handles=handles,
        loc="outside right upper",
        fontsize=7.5,
        title="methods",
        title_fontsize=8,
        frameon=False,
    )
    _declutter(fig, annotations)
    return fig, annotations


def plot_forget_vs_retain(points: list[Point], path: str | Path, *, title: str, **labels) -> Path:
    """Accuracy on D_f against D_r, one numbered marker per method (± std bars over seeds).

    Labels never overlap: each method gets a number, a distinct colour (:func:`colors`) and a
    marker shape; points that (nearly) coincide share one label listing their numbers, labels
    that would still collide are moved apart, and the legend beside the axes maps numbers to
    names.
    """
    fig, _ = forget_vs_retain_figure(points, title=title, **labels)
    return _save(fig, path)


# ------------------------------------------------------------------------------------ curves


def _mean_std_curve(ax, runs: list[list[dict]], key: str, **style) -> bool:
    """Draw the mean of ``key`` over the runs (epochs up to the shortest run) with a ± std band
    when there are several; ``False`` when a run lacks the key."""
    length = min(len(h) for h in runs)
    vals = [[row.get(key) for row in h[:length]] for h in runs]
    if length == 0 or any(v is None for run in vals for v in run):
        return False
    arr = np.array(vals, dtype=float)
    epochs = np.arange(1, length + 1)
    mean = arr.mean(0)
    ax.plot(epochs, mean, **style)
    if len(arr) > 1:
        std = arr.std(0, ddof=1)
        ax.fill_between(
            epochs, mean - std, mean + std, color=style.get("color"), alpha=0.15, linewidth=0
        )
    return True


def _fit_panels(ax_loss, ax_acc, histories: dict[str, list[list[dict]]], palette) -> None:
    styles = {"train_acc": "-", "val_acc": "--", "test_acc": ":"}
    for color, (name, runs) in zip(palette, histories.items()):
        _mean_std_curve(ax_loss, runs, "train_loss", color=color, label=name)
        for key, ls in styles.items():
            _mean_std_curve(
                ax_acc,
                runs,
                key,
                color=color,
                linestyle=ls,
                label=f"{name} {key.replace('_', ' ')}",
            )
    ax_loss.set_ylabel("training loss (cross-entropy)")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(-0.02, 1.02)


def _finish_axes(axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)


#: How the reference models' final accuracies are drawn in the method panels.
_REFERENCE_STYLES = {
    "teacher": {"color": "black", "linestyle": "--", "linewidth": 1.2},
    "retrain (oracle)": {"color": "black", "linestyle": ":", "linewidth": 1.6},
}


def plot_curves(
    histories: dict[str, list[list[dict]]],
    path: str | Path,
    *,
    title: str,
    methods: dict[str, list[list[dict]]] | None = None,
    references: dict[str, dict[str, list[float]]] | None = None,
) -> Path | None:
    """Draw :func:`curves_figure` into ``path``; ``None`` (nothing written) when no history
    has an epoch."""
    fig = curves_figure(histories, title=title, methods=methods, references=references)
    if fig is None:
        return None
    return _save(fig, path)


def curves_figure(
    histories: dict[str, list[list[dict]]],
    *,
    title: str,
    methods: dict[str, list[list[dict]]] | None = None,
    references: dict[str, dict[str, list[float]]] | None = None,
):
    """Per-epoch curves, mean ± std over seeds where several seeds' histories are given.

    Without method histories: two panels, the training loss and the train / validation / test
    accuracy of each fit (teacher, retrain oracle). With them, a 2 × 3 grid: the unlearning
    methods' forget accuracy, retain accuracy and training objective per epoch (one colour per
    method; the teacher's and the oracle's final forget / retain accuracy as black dashed /
    dotted reference lines), then the fits' loss and accuracy, and the legend.

    Args:
        histories: name → one history per seed of each fit (the ``history`` a run stores: dicts
            with ``epoch``, ``train_loss``, ``train_acc``, ``val_acc``, ``test_acc``).
        methods: method → one history per seed (rows with ``forget_acc``, ``retain_acc`` and,
            where the method logs one, ``train_loss``: its own objective, so values of different
            methods are not comparable).
        references: ``teacher`` / ``retrain (oracle)`` → ``{"forget_acc": [per seed],
            "retain_acc": [per seed]}``: their mean is drawn as a horizontal line.

    Returns:
        The figure, or ``None`` when no history has an epoch.
    """
    histories = {k: [h for h in v if h] for k, v in histories.items()}
    histories = {k: v for k, v in histories.items() if v}
    methods = {k: [h for h in v if h] for k, v in (methods or {}).items()}
    methods = {k: v for k, v in methods.items() if v}
    if not histories and not methods:
        return None
    seeds = max(len(v) for v in [*histories.values(), *methods.values()])
    if not methods:
        fig = _figure(10.0, 4.0)
        ax_loss, ax_acc = fig.subplots(1, 2)
        _fit_panels(ax_loss, ax_acc, histories, colors(len(histories)))
        _finish_axes((ax_loss, ax_acc))
        for ax in (ax_loss, ax_acc):
            ax.legend(fontsize=7)
    else:
        fig = _figure(15.0, 8.0)
        grid = fig.subplots(2, 3)
        ax_f, ax_r, ax_obj = grid[0]
        ax_loss, ax_acc, ax_leg = grid[1]
        from matplotlib.lines import Line2D

        palette = colors(len(methods))
        method_handles = []
        for i, (color, (name, runs)) in enumerate(zip(palette, methods.items())):
            style = {"color": color, "marker": _MARKERS[i % len(_MARKERS)], "markersize": 3.5}
            _mean_std_curve(ax_f, runs, "forget_acc", **style)
            _mean_std_curve(ax_r, runs, "retain_acc", **style)
            _mean_std_curve(ax_obj, runs, "train_loss", **style)
            method_handles.append(Line2D([], [], label=name, **style))
        for name, values in (references or {}).items():
            st = _REFERENCE_STYLES.get(name, {"color": "grey", "linestyle": "-."})
            for ax, key in ((ax_f, "forget_acc"), (ax_r, "retain_acc")):
                vals = [v for v in values.get(key, []) if v is not None]
                if vals:
                    ax.axhline(float(np.mean(vals)), **st, label=f"{name} (final)")
        ax_f.set_ylabel("forget accuracy (lower: more forgotten)")
        ax_r.set_ylabel("retain accuracy")
        for ax in (ax_f, ax_r):
            ax.set_ylim(-0.02, 1.02)
        ax_obj.set_ylabel("training objective of each method")
        objective = [
            row["train_loss"]
            for runs in methods.values()
            for h in runs
            for row in h
            if row.get("train_loss") is not None
        ]
        if objective and (min(objective) < 0 and max(objective) - min(objective) > 10):
            ax_obj.set_yscale("symlog", linthresh=1.0)  # gradient ascent's objective dives
        ax_obj.axhline(0.0, color="grey", linewidth=0.6)
        ax_f.set_title("forget set", fontsize=9)
        ax_r.set_title("retain set", fontsize=9)
        ax_obj.set_title(
            "method objective (its own scale; not comparable across methods)", fontsize=9
        )
        if histories:
            # black and greys: the methods' colours stay theirs alone
            greys = ["black", "0.45", "0.7"] + list(colors(len(histories)))
            _fit_panels(ax_loss, ax_acc, histories, greys[: len(histories)])
            ax_loss.set_title("teacher and retrain-oracle training", fontsize=9)
            ax_acc.set_title("teacher and retrain-oracle accuracy", fontsize=9)
            for ax in (ax_loss, ax_acc):
                ax.legend(fontsize=7)
        else:
            ax_loss.set_axis_off()
            ax_acc.set_axis_off()
        _finish_axes([ax for ax in (ax_f, ax_r, ax_obj, ax_loss, ax_acc) if ax.axison])
        ax_leg.set_axis_off()
        ref_handles = [
            h
            for h in (*ax_f.get_lines(), *ax_r.get_lines())
            if str(h.get_label()).endswith("(final)")
        ]
        ref_handles = list({h.get_label(): h for h in ref_handles}.values())
        ax_leg.legend(
            handles=method_handles + ref_handles,
            loc="center",
            fontsize=8,
            ncol=2 if len(method_handles) > 10 else 1,
            title="methods (mean ± std over seeds)" if seeds > 1 else "methods",
            title_fontsize=8,
            frameon=False,
        )
    fig.suptitle(title + (f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""), fontsize=9)
    return fig


def curve_inputs(rows: list[dict]) -> tuple[dict[str, list[list[dict]]], dict[str, dict]]:
    """The ``methods`` and ``references`` of :func:`plot_curves` from result rows (one per
    method run and seed, with ``method``, ``path`` and the ``acc_*`` metrics): each method's
    stored ``history`` per seed, and the final forget / retain accuracy of the teacher
    (``acc_*_orig``) and of the retrain oracle per seed."""
    from .io import read_json

    methods: dict[str, list[list[dict]]] = {}
    references: dict[str, dict[str, list]] = {}

    def ref(name: str, forget, retain) -> None:
        entry = references.setdefault(name, {"forget_acc": [], "retain_acc": []})
        entry["forget_acc"].append(forget)
        entry["retain_acc"].append(retain)

    seen_teacher = set()
    for r in rows:
        key = (r.get("seed"), r.get("teacher") or r.get("run"))
        if r.get("acc_forget_orig") is not None and key not in seen_teacher:
            seen_teacher.add(key)
            ref("teacher", r.get("acc_forget_orig"), r.get("acc_retain_orig"))
        if str(r.get("method", "")).startswith("retrain"):
            ref("retrain (oracle)", r.get("acc_forget_unlearn"), r.get("acc_retain_unlearn"))
            continue
        path = r.get("path")
        if not path or not (Path(path) / METRICS_FILE).is_file():
            continue
        history = read_json(Path(path) / METRICS_FILE).get("history") or []
        methods.setdefault(str(r["method"]), []).append(history)
    return methods, references


# ------------------------------------------------------------------------- one forget folder


def forget_folder_plots(folder: str | Path, *, title: str = "") -> list[Path]:
    """The plots of one forget folder (``<run>/unlearn/<forget>/``, every complete method run in
    it): ``plots/forget_vs_retain.png``, ``plots/mia_roc.png`` and ``plots/curves.png``, from the
    saved outputs and histories (no circuit runs).

    Returns:
        The paths written.
    """
    from .evaluation.metrics import MetricContext, mia_sets
    from .evaluation.outputs import Outputs
    from .evaluation.tables import forget_folder_rows
    from .io import read_json

    folder = Path(folder)
    rows = [r for r in forget_folder_rows(folder) if r.get("path")]
    if not rows:
        return []
    out_dir = folder / "plots"
    out_dir.mkdir(exist_ok=True)
    teacher_dir = folder.parent.parent
    written = []
    points = [
        Point(
            name="retrain (oracle)" if r["method"].startswith("retrain") else r["method"],
            x=r["acc_retain_unlearn"],
            y=r["acc_forget_unlearn"],
            kind="oracle" if r["method"].startswith("retrain") else "method",
        )
        for r in rows
        if r.get("acc_retain_unlearn") is not None
    ]
    first = rows[0]
    if first.get("acc_retain_orig") is not None:
        points.append(
            Point(
                name="teacher",
                x=first["acc_retain_orig"],
                y=first["acc_forget_orig"],
                kind="teacher",
            )
        )
    written.append(
        plot_forget_vs_retain(points, out_dir / "forget_vs_retain.png", title=title or folder.name)
    )
    series, teacher = [], None
    for r in rows:
        path = Path(r["path"])
        U = Outputs.load(path / OUTPUTS_FILE)
        ev = read_json(path / METRICS_FILE).get("evaluation") or {}
        ctx = MetricContext(
            seed=int(r.get("seed") or 0), mia_nonmembers=ev.get("mia_nonmembers", "heldout")
        )
        members, nonmembers = mia_sets(U, ctx)
        if len(members) == 0 or len(nonmembers) == 0:
            continue
        y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]

        def scores(out, members=members, nonmembers=nonmembers):  # bound now, not at call
            p = out.probs.max(1)
            return np.r_[p[members], p[nonmembers]]

        oracle = r["method"].startswith("retrain")
        series.append(
            RocSeries(
                "oracle (retrain)" if oracle else r["method"],
                [(y, scores(U))],
                {"color": "black", "linestyle": ":"} if oracle else {},
            )
        )
        if teacher is None and (teacher_dir / OUTPUTS_FILE).is_file():
            T = Outputs.load(teacher_dir / OUTPUTS_FILE).with_forget(U.ids[U.forget])
            teacher = RocSeries("teacher", [(y, scores(T))], {"color": "black", "linestyle": "--"})
    if teacher is not None:
        series.append(teacher)
    roc = plot_roc(series, out_dir / "mia_roc.png", title=title or folder.name)
    if roc is not None:
        written.append(roc.path)
    histories = {}
    if (teacher_dir / METRICS_FILE).is_file():
        histories["teacher"] = [read_json(teacher_dir / METRICS_FILE).get("history") or []]
    oracle_dir = folder / "retrain"
    if (oracle_dir / METRICS_FILE).is_file():
        oracle_history = read_json(oracle_dir / METRICS_FILE).get("history") or []
        histories["retrain (oracle)"] = [oracle_history]
    methods, references = curve_inputs(rows)
    curves = plot_curves(
        histories,
        out_dir / "curves.png",
        title=title or folder.name,
        methods=methods,
        references=references,
    )
    if curves is not None:
        written.append(curves)
    return written
