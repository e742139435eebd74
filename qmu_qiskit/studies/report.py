"""Study outputs: ``results_summary.csv``, the mean ± std table, ``report.md`` and plots.

Everything here is computed from the grid's run directories (metrics.json, cost.json and the
per-sample ``outputs.npz``); no circuit runs, so a report can be rewritten at any time
(``qmu-qiskit study SPEC --report-only``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

import numpy as np

from ..evaluation.tables import csv_text
from ..grids.grid import Grid
from ..grids.handle import GridHandle
from ..io import atomic_write_text
from ..runs import METRICS_FILE, OUTPUTS_FILE
from .protocols import Protocol, get_protocol
from .spec import filled_in

#: HQML's ``results_summary.csv`` columns, in HQML's order (docs/reference.md §5).
HQML_COLUMNS = [
    "scenario",
    "method",
    "acc_retain_unlearn",
    "acc_forget_unlearn",
    "acc_test_unlearn",
    "acc_retain_orig",
    "acc_forget_orig",
    "acc_test_orig",
    "forget_drop",
    "retain_drop",
    "test_drop",
    "UQI",
    "KL_retain",
    "JS_retain",
    "KL_test",
    "JS_test",
    "Agree_retain",
    "Agree_test",
    "MIA_AUC",
]
#: Ours, after HQML's: the grid point first, then the anchors and the cost.
OUR_COLUMNS = [
    "dataset",
    "model",
    "backend",
    "seed",
    "method_registry",
    "method_source",
    "scenario_source",
    "acc_retain_oracle",
    "acc_forget_oracle",
    "acc_test_oracle",
    "MIA_AUC_teacher",
    "MIA_AUC_oracle",
    "mia_members",
    "mia_nonmembers",
    "UA",
    "RA",
    "TA",
    "TA_classes",
    "MIA_Efficacy",
    "MIA_Efficacy_teacher",
    "MIA_Efficacy_oracle",
    "forget_size",
    "seconds",
    "oracle_seconds",
    "speedup",
    "jobs",
    "circuit_evaluations",
]
_TAIL = ["cell", "path"]
_NOT_METRICS = {"kind", "forget", "finished", "config_fingerprint", "data_fingerprint"}
_GROUP = ("dataset", "model", "backend", "scenario", "method")


@dataclass
class StudyOutputs:
    """What a study wrote (paths) and its rows."""

    summary: Path
    report: Path
    mean_std: Path | None = None
    plots: list[Path] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    state: str = "complete"


def _num(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def summary_rows(grid: Grid, proto: Protocol) -> list[dict]:
    """One row per finished oracle or method cell, in grid order (scenario, method, seed)."""
    rows = [r for r in GridHandle(grid.dir).results() if r["kind"] in ("oracle", "method")]
    forget_order = {f: i for i, f in enumerate(filled_in(grid.spec.forget, "forget"))}
    method_order = {"retrain": -1} | {
        m.name: i for i, m in enumerate(filled_in(grid.spec.methods, "methods"))
    }
    for r in rows:
        r["scenario"] = r["forget"]
        r["method_source"] = proto.method_names.get(r["method"]) or proto.method_names.get(
            r["method_registry"], ""
        )
        r["scenario_source"] = proto.scenario_names.get(r["forget"], "")
        r["path"] = str(Path(r["path"]).relative_to(grid.dir))
    rows.sort(
        key=lambda r: (
            r["dataset"],
            r["model"],
            r["backend"],
            forget_order.get(r["scenario"], 99),
            method_order.get(r["method"], 99),
            r["seed"],
        )
    )
    return rows


def add_extra_metrics(grid: Grid, rows: list[dict]) -> tuple[list[str], list[str]]:
    """Compute the spec's ``metrics.extra`` for every row from the saved outputs (no circuits).

    Returns:
        (the metric keys added, one-line errors of cells where a metric could not be computed).
    """
    names = list(filled_in(grid.spec.metrics, "metrics").extra)
    if not names or not rows:
        return [], []
    from ..evaluation.metrics import MetricContext, compute_metrics
    from ..evaluation.outputs import Outputs
    from ..exceptions import QmuError

    cache: dict[Path, Outputs] = {}

    def load(path: Path) -> Outputs:
        if path not in cache:
            cache[path] = Outputs.load(path / OUTPUTS_FILE)
        return cache[path]

    added: dict[str, None] = {}
    errors = []
    for r in rows:
        cell = grid.cell(r["cell"])
        U = load(cell.path)
        T = load(Path(cell.payload["teacher"])).with_forget(U.ids[U.forget])
        O = load(cell.path.parent / "retrain")
        try:
            extra = compute_metrics(
                U, T, O, names=names, ctx=MetricContext(**cell.payload["metric_ctx"])
            )
        except QmuError as exc:
            errors.append(f"{cell.label}: {exc}")
            continue
        for k, v in extra.items():
            if k not in r:
                r[k] = v
                added[k] = None
    return list(added), errors


def columns_of(rows: list[dict]) -> list[str]:
    """HQML's columns, then ours, then any other metric a row has (sorted), then the cell."""
    fixed = HQML_COLUMNS + OUR_COLUMNS
    extra = sorted(
        {
            k
            for r in rows
            for k, v in r.items()
            if k not in fixed
            and k not in _TAIL
            and k not in _NOT_METRICS
            and (_num(v) or v is None)
        }
    )
    return fixed + extra + _TAIL


def mean_std_rows(rows: list[dict], columns: list[str]) -> tuple[list[dict], list[str]]:
    """Rows grouped over seeds: ``<metric>_mean``, ``<metric>_std`` (sample std, n − 1) and
    ``<metric>_ci_low`` / ``<metric>_ci_high``, the 95% Student-t interval of the mean clipped to
    the metric's range (:mod:`qmu_qiskit.evaluation.stats`; the ``ci_method`` column says so).
    The per-seed values are the rows of ``results_summary.csv``."""
    from ..evaluation.stats import INTERVAL_METHOD, metric_bounds, t_interval

    numeric = [
        c for c in columns if c not in _GROUP and c != "seed" and any(_num(r.get(c)) for r in rows)
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in _GROUP), []).append(r)
    out = []
    for key, members in groups.items():
        row = dict(zip(_GROUP, key))
        row["n_seeds"] = len(members)
        row["seeds"] = " ".join(str(m["seed"]) for m in members)
        row["ci_method"] = INTERVAL_METHOD
        for c in numeric:
            ci = t_interval(
                [float(m[c]) for m in members if _num(m.get(c))], bounds=metric_bounds(c)
            )
            for stat in _STATS:
                row[f"{c}_{stat}"] = ci[stat]
        out.append(row)
    cols = (
        list(_GROUP)
        + ["n_seeds", "seeds"]
        + [f"{c}_{stat}" for c in numeric for stat in _STATS]
        + ["ci_method"]
    )
    return out, cols


#: The columns of each metric in ``results_summary_mean_std.csv``.
_STATS = ("mean", "std", "ci_low", "ci_high")


# ------------------------------------------------------------------------------------ report


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _cell_value(members: list[dict], key: str, digits: int = 3) -> str:
    """One seed: the value; several: ``mean ± std [95% t-interval]`` (evaluation.stats)."""
    from ..evaluation.stats import format_interval, metric_bounds, t_interval

    vals = [float(m[key]) for m in members if _num(m.get(key))]
    return format_interval(t_interval(vals, bounds=metric_bounds(key)), digits)


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _slug(*parts) -> str:
    return "-".join(str(p).replace(":", "-").replace("/", "-") for p in parts)


def _roc_lines(roc) -> list[str]:
    """The report's lines under an ROC plot: TPR at low FPRs (± std over seeds), warnings."""
    from ..evaluation.stats import format_interval, interval_from
    from ..plots import LOW_FPRS

    def pm(r: dict, key: str) -> str:
        n = int(r["seeds"])
        low, high = interval_from(r[key], r[f"{key}_std"], n, (0.0, 1.0))
        ci = {"mean": r[key], "std": r[f"{key}_std"], "ci_low": low, "ci_high": high, "n": n}
        return format_interval(ci)

    head = ["model", "AUC"] + [f"TPR @ {f:.1%} FPR" for f in LOW_FPRS]
    body = [
        [r["name"]] + [pm(r, k) for k in ["AUC"] + [f"TPR@{f:g}" for f in LOW_FPRS]]
        for r in roc.rows
    ]
    several = any(int(r["seeds"]) > 1 for r in roc.rows)
    out = [
        f"Membership attack on {roc.members} members / {roc.nonmembers} non-members"
        + (" (mean ± std [95% t-interval] over seeds)" if several else "")
        + ":",
        "",
        _table(head, body),
        "",
    ]
    if roc.warnings:
        out += ["**Warning** — the sets are too small for the FPRs shown:", ""]
        out += [f"- {w}" for w in roc.warnings] + [""]
    return out


def write_report(
    grid: Grid,
    proto: Protocol,
    rows: list[dict],
    plots: list[Path],
    state: str,
    extra_keys: Sequence[str] = (),
    extra_errors: Sequence[str] = (),
    *,
    rocs: dict | None = None,
) -> str:
    spec = grid.spec
    seeds, metrics = filled_in(spec.seeds, "seeds"), filled_in(spec.metrics, "metrics")
    handle = GridHandle(grid.dir)
    status = handle.status()
    teachers = [c for c in grid.cells if c.kind == "teacher"]
    t_rows = {r["cell"]: r for r in handle.results() if r["kind"] == "teacher"}
    out = [f"# Study `{spec.name}` — {proto.title}", ""]
    if spec.description:
        out += [spec.description.strip(), ""]
    out += [
        f"- spec: `{grid.source}`; grid: `{grid.dir}`",
        f"- state: **{state}** ({', '.join(f'{n} {s}' for s, n in sorted(status.counts.items()))})",
        f"- source: {proto.source}",
        f"- seeds: {', '.join(map(str, seeds))}; backends: {', '.join(b.name for b in spec.backends)}",
        (
            f"- MIA non-members: `{metrics.mia_nonmembers}`; shuffled KL_retain: "
            f"`{str(metrics.kl_shuffled).lower()}`"
        ),
        f"- generated {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]
    if grid.overrides:
        out.append(
            f"- **restricted from the command line**: {grid.overrides} (the spec lists more)"
        )
    out.append("")

    quirks = proto.quirk_lines(spec)
    if quirks:
        out += [
            "## HQML quirks (explicit flags)",
            "",
            _table(
                ["flag", "state", "what it does"],
                [[f"`{f}`", "**on**" if on else "off", text] for f, on, text in quirks],
            ),
            "",
        ]
    if proto.notes:
        out += ["## Protocol notes", ""] + [f"- {n}" for n in proto.notes] + [""]

    out += ["## Teachers", ""]
    body = []
    for c in teachers:
        cfg = c.payload["config"]
        d, m, t = cfg["data"], cfg["model"], cfg["training"]
        r = t_rows.get(c.id, {})
        split = f"test {d['test_size']}, val {d['val_size']}" + (
            f", {d['samples_per_class']}/class" if d.get("samples_per_class") else ""
        )
        body.append(
            [
                d["dataset"],
                f"{m['name']} (n={m['qubits']}, L={m['layers']})",
                cfg["backend"]["name"],
                str(cfg["seed"]),
                split,
                f"{t['epochs']}/{t['batch_size']}/{t['lr']:g}/{t['patience']}/{t['select']}",
                f"without {cfg['exclude_forget']}" if cfg.get("exclude_forget") else "all of D_tr",
                _fmt(r.get("acc_train")),
                _fmt(r.get("acc_val")),
                _fmt(r.get("acc_test")),
                _fmt(r.get("best_epoch")),
                _fmt(r.get("seconds"), 1),
            ]
        )
    out += [
        _table(
            [
                "dataset",
                "model",
                "backend",
                "seed",
                "split",
                "epochs/batch/lr/patience/select",
                "trained on",
                "acc_train",
                "acc_val",
                "acc_test",
                "best epoch",
                "s",
            ],
            body,
        ),
        "",
    ]

    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"], r["backend"], r["scenario"]), {}).setdefault(
            r["method"], []
        ).append(r)
    if rows:
        n = len(seeds)
        out += [
            "## Results",
            "",
            "Accuracies of the unlearned model U; drops relative to the teacher; UQI = forget_drop "
            "− ½(retain_drop + test_drop); KL/Agree against the retrain oracle; MIA_AUC of U "
            "(teacher / oracle on the same sets in brackets); time of the method and its speed-up "
            "over retraining."
            + (
                f" Mean ± std [95% confidence interval] over {n} seeds: the interval is the "
                "two-sided Student-t interval of the mean (t(0.975, n−1)·s/√n), clipped to the "
                "metric's range; per-seed values in `results_summary.csv`."
                if n > 1
                else ""
            ),
            "",
        ]
    for (ds, model, backend, scenario), methods in groups.items():
        label = proto.scenario_names.get(scenario)
        out += [
            f"### {ds} · {model} · {backend} · `{scenario}`"
            + (f" (HQML: {label})" if label else ""),
            "",
        ]
        body = []
        for method, members in methods.items():
            src = members[0].get("method_source")
            name = (
                "retrain — oracle" if method == "retrain" else method + (f" ({src})" if src else "")
            )
            body.append(
                [
                    name,
                    _cell_value(members, "acc_retain_unlearn"),
                    _cell_value(members, "acc_forget_unlearn"),
                    _cell_value(members, "acc_test_unlearn"),
                    _cell_value(members, "UQI"),
                    _cell_value(members, "KL_test"),
                    _cell_value(members, "Agree_test"),
                    (
                        f"{_cell_value(members, 'MIA_AUC')} ({_cell_value(members, 'MIA_AUC_teacher')} / "
                        f"{_cell_value(members, 'MIA_AUC_oracle')})"
                    ),
                    _cell_value(members, "UA"),
                    _cell_value(members, "TA"),
                    _cell_value(members, "MIA_Efficacy"),
                    _cell_value(members, "seconds", 1)
                    + ("" if method == "retrain" else f" (×{_cell_value(members, 'speedup', 1)})"),
                ]
            )
        first = next(iter(methods.values()))[0]
        out += [
            f"Teacher: acc_retain {_fmt(first.get('acc_retain_orig'))}, acc_forget "
            f"{_fmt(first.get('acc_forget_orig'))}, acc_test {_fmt(first.get('acc_test_orig'))}"
            + (" (first seed)" if len(seeds) > 1 else "")
            + ".",
            "",
        ]
        out += [
            _table(
                [
                    "method",
                    "acc_retain",
                    "acc_forget",
                    "acc_test",
                    "UQI",
                    "KL_test",
                    "Agree_test",
                    "MIA_AUC (T / O)",
                    "UA",
                    "TA",
                    "MIA-Efficacy",
                    "s (× oracle)",
                ],
                body,
            ),
            "",
        ]
        main_keys = [k for k in extra_keys if not k.endswith(("_teacher", "_oracle"))]
        if main_keys:
            out += [
                f"Further metrics ({', '.join(metrics.extra)}; teacher / oracle in brackets):",
                "",
            ]
            body = []
            for method, members in methods.items():
                cells = []
                for k in main_keys:
                    anchors = [a for a in (f"{k}_teacher", f"{k}_oracle") if a in extra_keys]
                    text = _cell_value(members, k)
                    if anchors:
                        text += " (" + " / ".join(_cell_value(members, a) for a in anchors) + ")"
                    cells.append(text)
                body.append([method] + cells)
            out += [_table(["method"] + main_keys, body), ""]
        for p in plots:
            if p.stem.endswith(_slug(ds, model, backend, scenario)):
                kind = {
                    "forget_vs_retain": "forget vs retain accuracy",
                    "mia_roc": "MIA ROC (log-log)",
                    "curves": "training curves",
                }.get(p.stem.split("_" + _slug(ds))[0], p.stem)
                out += [f"![{kind}](plots/{p.name})", ""]
                roc = (rocs or {}).get(p)
                if roc is not None:
                    out += _roc_lines(roc)

    if extra_errors:
        out += (
            ["## Metrics that could not be computed", ""] + [f"- {e}" for e in extra_errors] + [""]
        )
    bad = [c for c in status.cells if c["status"] != "done"]
    if bad:
        out += [
            "## Cells not finished",
            "",
            _table(
                ["cell", "status", "error"],
                [[c["label"], c["status"], (c["error"] or "").replace("|", "\\|")] for c in bad],
            ),
            "",
            "Submit the same spec again to resume them.",
            "",
        ]
    out += [
        "## Files",
        "",
        (
            "- `results_summary.csv`: one row per (scenario, method, seed); HQML's columns first "
            "(scenario, method, acc_retain_unlearn, …, MIA_AUC), then ours."
        ),
        (
            "- `results_summary_mean_std.csv`: the same over seeds: `<metric>_mean`, `_std` "
            "(sample std), `_ci_low` / `_ci_high` (95% Student-t interval of the mean, clipped to "
            "the metric's range; `ci_method` states it)."
        )
        if len(seeds) > 1
        else "- one seed: no mean ± std table.",
        (
            "- `plots/`: forget vs retain accuracy per method (numbered markers, mean ± std over "
            "seeds); log-log MIA ROC curves (U, teacher, oracle; mean ± std over seeds; TPR at "
            "1% / 0.1% FPR marked) from the saved per-sample outputs; per-epoch curves: each "
            "method's forget / retain accuracy and objective (teacher and oracle as reference "
            "lines) and the teachers' and oracles' fits."
        ),
        (
            "- SalUn's names: UA = 1 − acc_forget, RA = acc_retain, TA = test accuracy (remaining "
            "classes when whole classes are forgotten), MIA-Efficacy (column MIA_Efficacy); "
            "docs/metrics.md defines every column."
        ),
        "",
    ]
    return "\n".join(out)


# ------------------------------------------------------------------------------------ plots


def _mean_std(vals: list[float]) -> tuple[float, float]:
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)


def plot_forget_vs_retain(rows: list[dict], title: str, path: Path) -> Path:
    """Mean accuracy of U on D_f against D_r per method (error bars: std over seeds); the
    teacher and the oracle as reference points (:func:`qmu_qiskit.plots.plot_forget_vs_retain`)."""
    from ..plots import Point
    from ..plots import plot_forget_vs_retain as draw

    by_method: dict[str, list[dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    points = []
    for method, members in by_method.items():
        xs = [m["acc_retain_unlearn"] for m in members if _num(m.get("acc_retain_unlearn"))]
        ys = [m["acc_forget_unlearn"] for m in members if _num(m.get("acc_forget_unlearn"))]
        if not xs or not ys:
            continue
        (x, xe), (y, ye) = _mean_std(xs), _mean_std(ys)
        oracle = method == "retrain"
        points.append(
            Point(
                name="retrain (oracle)" if oracle else method,
                x=x,
                y=y,
                xerr=xe,
                yerr=ye,
                kind="oracle" if oracle else "method",
            )
        )
    by_seed = {r["seed"]: (r.get("acc_retain_orig"), r.get("acc_forget_orig")) for r in rows}
    t = [(a, b) for a, b in by_seed.values() if _num(a) and _num(b)]
    if t:
        (x, xe), (y, ye) = _mean_std([a for a, _ in t]), _mean_std([b for _, b in t])
        points.append(Point(name="teacher", x=x, y=y, xerr=xe, yerr=ye, kind="teacher"))
    seeds = len({r["seed"] for r in rows})
    return draw(
        points, path, title=title + (f" — mean ± std over {seeds} seeds" if seeds > 1 else "")
    )


def plot_mia_roc(grid: Grid, rows: list[dict], title: str, path: Path):
    """Log-log ROC curves of the max-softmax membership attack (members D_f, the study's
    non-members) for U of every method, the teacher and the oracle, mean ± std over seeds, from
    the saved per-sample outputs (:func:`qmu_qiskit.plots.plot_roc`).

    Returns:
        The :class:`~qmu_qiskit.plots.RocSummary`, or ``None`` when no set could be drawn.
    """
    from ..evaluation.metrics import MetricContext, mia_sets
    from ..evaluation.outputs import Outputs
    from ..plots import RocSeries, plot_roc

    series: dict[str, RocSeries] = {}
    teacher_seeds: set = set()

    def add(name: str, out: Outputs, members, nonmembers, style=None) -> None:
        score = out.probs.max(1)
        y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
        s = series.setdefault(name, RocSeries(name=name, style=style or {}))
        s.runs.append((y, np.r_[score[members], score[nonmembers]]))

    for r in rows:
        cell = grid.cell(r["cell"])
        ctx = MetricContext(**cell.payload["metric_ctx"])
        U = Outputs.load(cell.path / OUTPUTS_FILE)
        members, nonmembers = mia_sets(U, ctx)
        if len(members) == 0 or len(nonmembers) == 0:
            continue
        oracle = r["method"] == "retrain"
        add(
            "oracle (retrain)" if oracle else r["method"],
            U,
            members,
            nonmembers,
            {"color": "black", "linestyle": ":"} if oracle else None,
        )
        if r["seed"] not in teacher_seeds:
            T = Outputs.load(Path(cell.payload["teacher"]) / OUTPUTS_FILE).with_forget(
                U.ids[U.forget]
            )
            add("teacher", T, members, nonmembers, {"color": "black", "linestyle": "--"})
            teacher_seeds.add(r["seed"])
    order = [k for k in series if k not in ("teacher", "oracle (retrain)")]
    ordered = [series[k] for k in order] + [
        series[k] for k in ("oracle (retrain)", "teacher") if k in series
    ]
    return plot_roc(ordered, path, title=title)


def plot_curves(grid: Grid, rows: list[dict], title: str, path: Path) -> Path | None:
    """Per-epoch curves of these rows (the stored ``history`` of each run), mean ± std over
    seeds: every method's forget / retain accuracy and objective next to the teacher's and the
    oracle's final accuracies, and the teachers' and retrain oracles' fits."""
    from ..io import read_json
    from ..plots import curve_inputs
    from ..plots import plot_curves as draw

    histories: dict[str, list] = {"teacher": [], "retrain (oracle)": []}
    seen = set()
    for r in rows:
        cell = grid.cell(r["cell"])
        teacher = Path(cell.payload["teacher"])
        if teacher not in seen and (teacher / METRICS_FILE).is_file():
            seen.add(teacher)
            histories["teacher"].append(read_json(teacher / METRICS_FILE).get("history") or [])
        if r["method"] == "retrain":
            histories["retrain (oracle)"].append(
                read_json(cell.path / METRICS_FILE).get("history") or []
            )
    methods, references = curve_inputs(
        [{**r, "path": str(grid.cell(r["cell"]).path), "teacher": None} for r in rows]
    )
    return draw(histories, path, title=title, methods=methods, references=references)


# ------------------------------------------------------------------------------------ all


def write_outputs(grid_dir: str | Path, *, plots: bool = True) -> StudyOutputs:
    """Write the study's CSVs, report and plots into the grid directory.

    Args:
        grid_dir: a grid made by ``qmu-qiskit study`` / ``grid submit``.
        plots: draw the PNG plots.
    """
    grid = Grid.load(grid_dir)
    proto = get_protocol(grid.spec.protocol)
    rows = summary_rows(grid, proto)
    extra_keys, extra_errors = add_extra_metrics(grid, rows)
    columns = columns_of(rows)
    summary = grid.dir / "results_summary.csv"
    atomic_write_text(summary, csv_text(rows, columns))
    mean_std = None
    if len(filled_in(grid.spec.seeds, "seeds")) > 1 and rows:
        agg, agg_cols = mean_std_rows(rows, columns)
        mean_std = grid.dir / "results_summary_mean_std.csv"
        atomic_write_text(mean_std, csv_text(agg, agg_cols))
    drawn: list[Path] = []
    rocs: dict = {}
    if plots and rows:
        plot_dir = grid.dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault((r["dataset"], r["model"], r["backend"], r["scenario"]), []).append(r)
        for key, members in groups.items():
            title = " · ".join(key)
            drawn.append(
                plot_forget_vs_retain(
                    members, title, plot_dir / f"forget_vs_retain_{_slug(*key)}.png"
                )
            )
            roc = plot_mia_roc(grid, members, title, plot_dir / f"mia_roc_{_slug(*key)}.png")
            if roc is not None:
                drawn.append(roc.path)
                rocs[roc.path] = roc
            curves = plot_curves(grid, members, title, plot_dir / f"curves_{_slug(*key)}.png")
            if curves is not None:
                drawn.append(curves)
    state = GridHandle(grid.dir).status().state
    report = grid.dir / "report.md"
    atomic_write_text(
        report, write_report(grid, proto, rows, drawn, state, extra_keys, extra_errors, rocs=rocs)
    )
    return StudyOutputs(
        summary=summary, report=report, mean_std=mean_std, plots=drawn, rows=rows, state=state
    )
