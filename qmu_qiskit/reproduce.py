"""Re-execute a finished run from its recorded configuration and compare every metric.

A single seed's numbers are one draw of a chaotic training trajectory, and floating-point
reductions differ between CPUs and thread counts. So a reproduction is judged against the
seed-to-seed spread: the run is re-executed with its recorded seed into a scratch folder, and
(optionally) with ``spread_seeds`` further seeds, whose standard deviation per metric says how
large a difference is ordinary. A metric is

* ``identical`` when the reproduced value equals the recorded one to ``1e-9``,
* ``within noise`` when the difference is at most ``z`` (default 2) seed standard deviations,
* ``differs`` otherwise (also when no spread was measured and the values are not identical).

Teacher runs are reproduced with every finished unlearning run below them; an unlearning run
is reproduced together with its teacher (the methods need the teacher's weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .config import BackendConfig, RunConfig
from .exceptions import BadInputError, RunError
from .io import read_json
from .runs import METRICS_FILE, RunDir

#: Metrics compared (where present); bookkeeping fields are not results.
SKIP_KEYS = frozenset(
    {
        "seed",
        "config_fingerprint",
        "data_fingerprint",
        "resumed_from_epoch",
        "execution",
        "history",
        "sizes",
        "method",
        "forget",
        "forget_size",
        "method_info",
        "excluded",
        "parameters",
    }
)
IDENTICAL = 1e-9


@dataclass
class Comparison:
    """One metric of one run: recorded vs reproduced, against the seed-to-seed spread."""

    run: str
    metric: str
    recorded: float
    reproduced: float
    seed_std: float | None
    z: float

    @property
    def diff(self) -> float:
        return abs(self.reproduced - self.recorded)

    @property
    def tolerance(self) -> float:
        return IDENTICAL if self.seed_std is None else max(IDENTICAL, self.z * self.seed_std)

    @property
    def verdict(self) -> str:
        if self.diff <= IDENTICAL:
            return "identical"
        return "within noise" if self.diff <= self.tolerance else "differs"

    def row(self) -> dict:
        return {
            "run": self.run,
            "metric": self.metric,
            "recorded": self.recorded,
            "reproduced": self.reproduced,
            "abs_diff": self.diff,
            "seed_std": self.seed_std,
            "tolerance": self.tolerance,
            "verdict": self.verdict,
        }


@dataclass
class Reproduction:
    """All comparisons of one ``reproduce`` call."""

    comparisons: list[Comparison] = field(default_factory=list)
    scratch: Path | None = None
    seeds: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.verdict != "differs" for c in self.comparisons)

    def rows(self) -> list[dict]:
        return [c.row() for c in self.comparisons]


def _numeric_metrics(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if key in SKIP_KEYS or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _unlearn_requests(teacher: RunDir, only: Path | None) -> list[dict]:
    """The finished unlearning runs under a teacher: forget spec, method, options, backend, seed."""
    requests: list[dict] = []
    root = teacher.path / "unlearn"
    if not root.is_dir() or root.is_symlink():
        return requests
    for slug in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        for run_path in sorted(p for p in slug.iterdir() if p.is_dir() and not p.is_symlink()):
            if only is not None and run_path.resolve() != only.resolve():
                continue
            run = RunDir(run_path)
            if not run.is_complete():
                continue
            cfg = run.config()
            if cfg.get("kind") != "unlearn":
                continue
            requests.append(
                {
                    "path": run_path,
                    "label": f"{slug.name}/{run_path.name}",
                    "forget": cfg["forget"]["spec"],
                    "method": cfg["method"],
                    "dirname": run_path.name,
                    "options": cfg.get("options") or {},
                    "backend": cfg.get("backend"),
                    "seed": int(cfg.get("seed", 0)),
                }
            )
    return requests


def _run_tree(
    cfg: RunConfig, requests: list[dict], out: Path, *, seed: int, base_seed: int
) -> dict[str, dict]:
    """Train the teacher and answer every unlearning request into ``out``; metrics per label."""
    from . import pipeline

    run_cfg = cfg.model_copy(update={"seed": seed})
    summary = pipeline.train(run_cfg, out, progress=False)
    results = {"teacher": summary.metrics}
    for req in requests:
        labels = {}
        if req["dirname"] != req["method"] and req["method"] != "retrain":
            labels = {req["method"]: req["dirname"]}
        # the unlearning seed keeps its recorded offset from the teacher's seed
        unlearn_seed = req["seed"] - base_seed + seed
        backend = BackendConfig(**req["backend"]) if req["backend"] else None
        methods = [] if req["method"] == "retrain" else [req["method"]]
        options = {req["method"]: req["options"]} if methods and req["options"] else None
        summaries = pipeline.unlearn(
            out,
            req["forget"],
            methods,
            backend=backend,
            options=options,
            seed=unlearn_seed,
            progress=False,
            labels=labels or None,
        )
        by_dir = {s.path.name: s for s in summaries}
        results[req["label"]] = by_dir[req["dirname"]].metrics
    return results


def reproduce(
    path: str | Path, out: str | Path, *, spread_seeds: int = 0, z: float = 2.0
) -> Reproduction:
    """Re-execute the run at ``path`` into ``out`` and compare its metrics.

    Args:
        path: a finished teacher run (with its unlearning runs) or one finished unlearning run.
        out: scratch folder for the re-executions (must not exist or be empty).
        spread_seeds: further seeds (recorded seed + 1, + 2, ...) run to measure the
            seed-to-seed standard deviation of every metric.
        z: tolerance in seed standard deviations.

    Raises:
        BadInputError: ``out`` is not empty, ``spread_seeds`` or ``z`` out of range.
        RunError: ``path`` is not a finished qmu-qiskit run.
    """
    if not 0 <= spread_seeds <= 20:
        raise BadInputError(f"--spread-seeds must be between 0 and 20, not {spread_seeds}")
    if not 0 < z <= 10:
        raise BadInputError(f"--z must be in (0, 10], not {z}")
    run = RunDir(path)
    run.require_complete(what="run")
    raw = run.config()
    only = None
    if raw.get("kind") == "unlearn":
        only = run.path
        teacher = RunDir(run.path.parent.parent.parent)
    elif raw.get("kind") == "train":
        teacher = run
    else:
        raise RunError(f"{run.path} is not a qmu-qiskit train or unlearn run")
    teacher.require_complete(what="teacher run")
    try:
        cfg = RunConfig(**teacher.config())
    except BadInputError as exc:
        raise RunError(f"{teacher.path}/config.yaml cannot be reproduced ({exc})") from exc
    requests = _unlearn_requests(teacher, only)
    out = Path(out)
    if out.exists() and (not out.is_dir() or out.is_symlink() or any(out.iterdir())):
        raise BadInputError(f"--out {out} exists and is not an empty folder; choose a new one")

    recorded = {"teacher": read_json(teacher.path / METRICS_FILE)}
    for req in requests:
        recorded[req["label"]] = read_json(req["path"] / METRICS_FILE)
    if only is not None:
        recorded.pop("teacher")

    seeds = [cfg.seed + k for k in range(spread_seeds + 1)]
    trees = {
        s: _run_tree(cfg, requests, out / f"seed-{s}", seed=s, base_seed=cfg.seed) for s in seeds
    }
    result = Reproduction(scratch=out, seeds=seeds)
    for label, rec in recorded.items():
        rec_vals = _numeric_metrics(rec)
        rep_vals = _numeric_metrics(trees[cfg.seed][label])
        for metric in sorted(rec_vals):
            if metric not in rep_vals:
                continue
            std = None
            if spread_seeds:
                samples = [rec_vals[metric]] + [
                    _numeric_metrics(trees[s][label]).get(metric) for s in seeds[1:]
                ]
                present: list[float] = [v for v in samples if v is not None]
                if len(present) >= 2:
                    mean = sum(present) / len(present)
                    std = math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1))
            result.comparisons.append(
                Comparison(label, metric, rec_vals[metric], rep_vals[metric], std, z)
            )
    return result
