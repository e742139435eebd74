"""Where a finished study's time went: per cell kind, the quantum engine, the rest of the
training / unlearning loops (front-end, head, optimiser, batching), evaluation, and each cell's
own overhead (process start-up, imports, data loading, model building, checkpoints and outputs).
An oracle whose fit ran ahead in a ``prefit`` cell is split the same way: the fit under
``prefit``, the evaluation under ``oracle``.

Reads what every study writes — ``cells.sqlite`` (each cell's wall time and start/end events)
and each cell's ``cost.json`` (per phase: ``wall_seconds`` and ``engine_seconds``, the time
spent evaluating circuits and their gradients) — so it profiles a study after the fact, at no
cost to the run.

Usage::

    python benchmarks/study_profile.py runs/hqml_mnist [runs/hqml_fashion ...] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections import defaultdict
from pathlib import Path

PHASES = {"train": "loop", "method": "loop", "evaluation": "evaluation", "history": "history"}


def profile(grid: Path) -> dict:
    db = sqlite3.connect(f"file:{grid / 'cells.sqlite'}?mode=ro", uri=True)
    cells = db.execute("select cell_id, kind, path, status, seconds from cells").fetchall()
    events = db.execute("select cell_id, event, at from events order by id").fetchall()
    db.close()
    starts = [at for _, ev, at in events if ev in ("submitted", "start", "started", "claimed")]
    ends = [at for _, ev, at in events if ev in ("done", "finished", "failed")]
    wall = (max(ends) - min(starts)) if starts and ends else None
    out: dict = {
        "grid": str(grid),
        "wall_seconds": wall,
        "at_most_one_running_seconds": _at_most_one_running(events),
        "kinds": {},
    }
    kinds: dict = defaultdict(lambda: defaultdict(float))
    for _, kind, path, _status, seconds in cells:
        k = kinds[kind]
        k["cells"] += 1
        k["cell_seconds"] += seconds or 0.0
        cost_file = Path(path) / "cost.json"
        if not cost_file.is_file():
            continue
        phases = json.loads(cost_file.read_text())
        # an oracle's "method" phase includes its pre-fit, which ran (and is counted) in the
        # prefit cell: only what ran in this cell counts here
        ahead = phases.get("prefit") if kind == "oracle" else None
        inside = 0.0
        for name, rec in phases.items():
            if not isinstance(rec, dict) or name not in PHASES:
                continue
            what = PHASES[name]
            engine = float(rec.get("engine_seconds", 0.0))
            phase_wall = float(rec.get("wall_seconds", 0.0))
            if name == "method" and isinstance(ahead, dict):
                engine -= float(ahead.get("engine_seconds", 0.0))
                phase_wall -= float(ahead.get("wall_seconds", 0.0))
            inside += phase_wall
            k["engine_seconds"] += engine
            k[f"{what}_other_seconds"] += max(phase_wall - engine, 0.0)
        k["overhead_seconds"] += max((seconds or 0.0) - inside, 0.0)
    out["kinds"] = {kind: dict(v) for kind, v in kinds.items()}
    total = defaultdict(float)
    for v in kinds.values():
        for key, val in v.items():
            total[key] += val
    out["total"] = dict(total)
    return out


def _at_most_one_running(events) -> float | None:
    """Seconds of the grid's wall time during which at most one cell was running (a core idle
    on a two-worker pool): each cell's attempts from submission to its end event, swept."""
    opened: dict = {}
    marks = []
    for cid, ev, at in events:
        if ev == "submitted":
            opened[cid] = at
        elif cid in opened and ev in ("done", "failed", "lost", "cancelled"):
            marks += [(opened.pop(cid), 1), (at, -1)]
    if not marks:
        return None
    marks.sort()
    idle, running, last = 0.0, 0, marks[0][0]
    for at, step in marks:
        if running <= 1:
            idle += at - last
        running, last = running + step, at
    return idle


def _fmt(x: float) -> str:
    return f"{x:7.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("grids", nargs="+", help="study grid directories (holding cells.sqlite)")
    p.add_argument("--json", default=None, help="write the profiles here")
    args = p.parse_args()
    results = []
    cols = ["cells", "cell_seconds", "engine_seconds", "loop_other_seconds"]
    cols += ["evaluation_other_seconds", "history_other_seconds", "overhead_seconds"]
    head = ["kind", "cells", "cell s", "engine s", "loop rest s", "eval rest s", "history rest s"]
    head += ["overhead s"]
    for g in args.grids:
        prof = profile(Path(g))
        results.append(prof)
        wall = prof["wall_seconds"]
        one = prof["at_most_one_running_seconds"]
        idle = f", at most one cell running {one:.1f} s" if one is not None else ""
        print(f"\n{g}: wall {wall:.1f} s{idle}" if wall else f"\n{g}")
        print(" | ".join(head))
        for kind, v in sorted(prof["kinds"].items()) + [("total", prof["total"])]:
            vals = [f"{int(v.get('cells', 0)):5d}"] + [_fmt(v.get(c, 0.0)) for c in cols[1:]]
            print(" | ".join([f"{kind:8s}"] + vals))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
