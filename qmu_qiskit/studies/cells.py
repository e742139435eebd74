"""The cell work of studies and audits: what a teacher, oracle or method cell computes
(:class:`~qmu_qiskit.grids.grid.CellWork`, named ``"qmu_qiskit.studies.cells"`` in a grid).

* a **teacher** cell trains (``pipeline.train``);
* a **prefit** cell fits an oracle's retrain beside its teacher (``pipeline.prefit_oracle``);
* an **oracle** cell retrains without the forget set (``pipeline.unlearn(..., ["retrain"])``),
  or evaluates its finished pre-fit;
* a **method** cell unlearns with one method next to its finished oracle
  (``pipeline.unlearn(..., [method])``).

The job layer calls these functions by the module's name, in whatever process runs the cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..evaluation.tables import with_salun_names
from ..exceptions import RunError
from ..runs import (
    COST_FILE,
    METHOD_CHECKPOINT,
    METRICS_FILE,
    PREFIT_DONE,
    RunDir,
    read_run_json,
)
from .spec import StudySpec

if TYPE_CHECKING:
    from ..grids.grid import Cell, Grid

#: This module's name, as a grid records it.
WORK = __name__

#: The cell kinds in dependency order.
KIND_ORDER = {"teacher": 0, "prefit": 1, "oracle": 2, "method": 3}

#: Top-level metric keys that are not per-row numbers.
_SKIP_KEYS = {"execution", "history", "method_info", "sizes", "excluded"}


def run(payload: dict) -> None:
    """Compute one cell (resuming its run directory if it was interrupted)."""
    # imported here: the status/results side of this module must not load torch and Qiskit
    from .. import pipeline
    from ..config import RunConfig
    from ..evaluation.metrics import MetricContext

    kind = payload["kind"]
    if kind == "teacher":
        pipeline.train(RunConfig(**payload["config"]), payload["path"], progress=False)
        return
    if kind == "prefit":
        pipeline.prefit_oracle(
            RunConfig(**payload["config"]),
            payload["teacher"],
            payload["forget"],
            payload["path"],
            options=payload["options"],
            seed=payload["seed"],
        )
        return
    method = payload["method"]
    labels = (
        {method: payload["label"]} if method != "retrain" and payload["label"] != method else None
    )
    pipeline.unlearn(
        payload["teacher"],
        payload["forget"],
        [method],
        options=payload["options"],
        seed=payload["seed"],
        progress=False,
        metric_ctx=MetricContext(**payload["metric_ctx"]),
        labels=labels,
        prefit=payload.get("prefit"),
    )


def finished(cell: Cell) -> bool:
    """Whether the cell's run directory holds a complete run of exactly this cell."""
    if cell.kind == "prefit":
        # its fit is done, or no longer needed: its oracle is finished, or has a checkpoint of
        # its own (a grid of an older version, interrupted in the oracle's fit, resumes that)
        oracle = RunDir(cell.payload["oracle"])
        try:
            status = RunDir(cell.path).status() or {}
            return (
                status.get("status") == PREFIT_DONE
                or oracle.is_complete()
                or (oracle.checkpoints / METHOD_CHECKPOINT).is_file()
            )
        except RunError:
            return False
    run_dir = RunDir(cell.path)
    try:
        if not run_dir.is_complete():
            return False
        if cell.kind == "teacher":
            return (run_dir.status() or {}).get("fingerprint") == cell.id[2:]
        cfg = run_dir.config()
    except RunError:
        return False
    p = cell.payload
    options = cfg.get("options") or {}
    given = p["options"].get(p["method"], {})
    return (
        cfg.get("method") == p["method"]
        and (cfg.get("forget") or {}).get("spec") == p["forget"]
        and cfg.get("seed") == p["seed"]
        and all(options.get(k) == v for k, v in given.items())
    )


def load_spec(raw: dict) -> StudySpec:
    return StudySpec(**raw)


def label(cell: Cell) -> str:
    c = cell.coords
    head = f"{c['dataset']}/{c['model']}/{c['backend']}/s{c['seed']}"
    if cell.kind == "teacher":
        return f"teacher {head}"
    return f"{cell.kind} {head} {c['forget']} {c['method']}"


def priority(cell: Cell) -> int:
    """Ready oracles (long) before ready methods (mostly short)."""
    return int(cell.kind == "method")


def cost_key(cell: Cell) -> str | None:
    """Method cells of one method label (on one dataset and model) take alike on each forget
    request: the scheduler starts the ones whose sibling took longest first."""
    if cell.kind != "method":
        return None
    c = cell.coords
    return f"{c['dataset']}/{c['model']}/{c['backend']}/{c['method']}"


def rows(grid: Grid) -> list[dict]:
    """One dict per finished cell: grid coordinates, metrics and cost.

    Teacher rows carry ``acc_train/val/test``; oracle and method rows the unlearning metrics
    (``acc_*_unlearn``, ``UQI``, ``KL_*``, ``MIA_AUC``, ...), ``seconds`` (the method's wall
    time), ``jobs`` and, for methods, ``oracle_seconds`` and ``speedup`` over retraining.
    """
    out = []
    oracle_seconds = {}
    for c in grid.cells:
        if c.kind == "prefit":  # part of its oracle's row (cost included)
            continue
        row = _row(c)
        if row is None:
            continue
        if c.kind == "oracle":
            oracle_seconds[c.id] = row.get("seconds")
        out.append(row)
    for row, c in ((r, grid.cell(r["cell"])) for r in out):
        if c.kind == "method":
            o = oracle_seconds.get(c.deps[0])
            row["oracle_seconds"] = o
            s = row.get("seconds")
            row["speedup"] = (o / s) if (o and s) else None
    return out


def _row(cell: Cell) -> dict | None:
    run_dir = RunDir(cell.path)
    if not run_dir.is_complete():
        damage = run_dir.damaged() if (run_dir.status() or {}).get("status") == "complete" else None
        if damage is not None:
            raise RunError(
                f"cell {cell.label} is damaged ({damage}); run `qmu-qiskit grid submit` with the "
                "same spec to recompute it"
            )
        return None
    metrics = read_run_json(cell.path / METRICS_FILE)
    cost = read_run_json(cell.path / COST_FILE)
    c = cell.coords
    row = {
        "cell": cell.id,
        "kind": cell.kind,
        "dataset": c["dataset"],
        "model": c["model"],
        "backend": c["backend"],
        "seed": c["seed"],
        "forget": c["forget"],
        "method": c["method"],
        "method_registry": c.get("method_registry", c["method"]),
    }
    for k, v in metrics.items():
        if k in _SKIP_KEYS or k in row or isinstance(v, (dict, list)):
            continue
        row[k] = v
    if cell.kind != "teacher":
        with_salun_names(row)
        row["mia_nonmembers"] = (metrics.get("evaluation") or {}).get("mia_nonmembers")
    phase = cost.get("train" if cell.kind == "teacher" else "method", {})
    row["seconds"] = phase.get("wall_seconds")
    row["jobs"] = phase.get("jobs")
    row["circuit_evaluations"] = phase.get("circuit_evaluations")
    row["finished"] = (run_dir.status() or {}).get("finished")
    row["path"] = str(cell.path)
    return row
