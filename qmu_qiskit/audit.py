"""Per-example unlearning audit with shadow models: U-LiRA and the challenge's ε.

``qmu-qiskit audit --run RUN --forget SPEC --method M --shadows S`` asks, for every training
example x, whether an attacker who knows the training recipe can tell a model that was *unlearned*
on x (method M applied to a teacher that saw x) from one *retrained* without x — the per-example
audit of Hayes et al. ("Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense
of Privacy", arXiv 2403.01218, U-LiRA), which population attacks cannot replace: a method can look
private on average while leaking particular examples.

How it runs:

1. **Shadow pairs.** For s = 1..S a forget set F_s of the same kind and size as the target's is
   drawn from D_tr (``subset``: stratified like ``subset:F``; ``indices``: uniform; ``class``: a
   random class), and the pair is (the retrain oracle without F_s, method M applied on F_s),
   both with pair s's seed. M starts from the run's own teacher (``teachers="shared"``, the
   NeurIPS 2023 challenge's protocol: one original model) or from a shadow teacher trained on
   D_tr with the pair's seed (``teachers="independent"``, Hayes et al.'s). Auditing ``retrain``
   itself pairs two independent retrains (the second with a seed no other model of the audit
   uses) — the sanity check whose success must be ≈ 0.5.
2. Everything is a cell of the job grid (:mod:`qmu_qiskit.grids`): resumable after a kill, run in
   parallel on a process pool or a Dask cluster; the grid lives in ``RUN/audit/shadows`` and the
   shadow teachers (and their oracles) are reused by every later audit of the same run, whatever
   the method.
3. **U-LiRA** (:func:`qmu_qiskit.evaluation.mia.ulira`): the target pair (the run's own method
   output and oracle on the requested forget set) joins the shadow pairs, and every pair serves
   once as the target with the others as shadows (leave-one-pair-out). Per example: balanced
   accuracy of "log Λ > 0 ⇒ unlearned" over its target observations; pooled: AUC and TPR at 1%
   and 0.1% FPR.
4. **ε** (Triantafillou et al., "Are we making progress in unlearning? Findings from the first
   NeurIPS unlearning competition", arXiv 2406.09073): per example, every threshold on the same
   log Λ is an attack with FPR (retrained called unlearned) and FNR; ε = max over attacks of
   max(log(1 − δ − FPR) − log FNR, log(1 − δ − FNR) − log FPR), attacks with one zero rate
   discarded, both zero ⇒ ∞, δ = 0.01; the forgetting quality is the mean of 2 / 2^bin(ε)
   (13 bins of width 0.5), as the competition scored it. With a few observations per example
   this is an empirical estimate of a lower bound, not a certificate.

Outputs (``--out``, default ``RUN/audit/<forget>/<method>``): ``ulira.csv`` (one row per example
with observations) and ``summary.json`` (the numbers, the seed and the full configuration).
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .exceptions import BadInputError, JobError

#: δ of the competition's ε (Triantafillou et al. 2024).
EPS_DELTA = 0.01
#: The competition's ε bins: 13 bins of width 0.5 (forgetting quality = mean of 2 / 2^bin).
EPS_BIN_WIDTH = 0.5
EPS_BINS = 13


@dataclass(frozen=True)
class AuditConfig:
    """What determines an audit's numbers (recorded in ``summary.json``).

    Attributes:
        forget: the target forget request.
        method: the audited method (registry name).
        options: the method's options as given.
        shadows: shadow pairs S.
        seed: seeds the shadow forget sets and the shadow teachers' seeds.
        fixed_variance: one pooled σ per side instead of per-example σ (LiRA's few-shadow mode).
        teachers: ``shared`` (every pair starts from the run's own teacher; the pairs differ in
            their forget set and in the seed of the oracle and of the method — the NeurIPS 2023
            unlearning challenge's protocol) or ``independent`` (every pair trains its own shadow
            teacher with its own seed — Hayes et al.'s U-LiRA, which also asks whether the
            *recipe* leaks, and is far costlier).
    """

    forget: str
    method: str
    shadows: int
    seed: int = 0
    options: dict = field(default_factory=dict)
    fixed_variance: bool = False
    teachers: str = "shared"


#: The audit's teacher modes (:attr:`AuditConfig.teachers`).
TEACHER_MODES = ("shared", "independent")


@dataclass
class AuditResult:
    """Paths and headline numbers of an audit."""

    out: Path
    summary: dict
    rows: list


# ---------------------------------------------------------------------------------------------
# the challenge's ε


def epsilon_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float = EPS_DELTA) -> float:
    """ε of one example from the (FPR, FNR) of a family of attacks (the competition's rule)."""
    best = 0.0
    for a, b in zip(np.asarray(fpr, float), np.asarray(fnr, float)):
        if a == 0 and b == 0:
            return math.inf
        if a == 0 or b == 0:
            continue  # discarded: one error rate alone bounds nothing
        with np.errstate(invalid="ignore", divide="ignore"):
            e1 = np.log(1 - delta - a) - np.log(b)
            e2 = np.log(1 - delta - b) - np.log(a)
        vals = [v for v in (e1, e2) if np.isfinite(v)]
        if vals:
            best = max(best, max(vals))
    return float(best)


def threshold_rates(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR / FNR of every threshold attack "score > t ⇒ unlearned" (t over the observed scores)."""
    u, r = np.asarray(unlearned, float), np.asarray(retrained, float)
    t = np.unique(np.concatenate([u, r]))
    fpr = (r[None, :] > t[:, None]).mean(1)
    fnr = (u[None, :] <= t[:, None]).mean(1)
    return fpr, fnr


def forgetting_quality(eps: np.ndarray) -> float:
    """The competition's aggregate: mean over examples of 2 / 2^bin(ε)."""
    eps = np.asarray(eps, float)
    if eps.size == 0:
        return float("nan")
    bins = np.digitize(eps, np.arange(EPS_BINS) * EPS_BIN_WIDTH)
    return float(np.mean(2.0 / 2.0**bins))


# ---------------------------------------------------------------------------------------------
# shadow forget sets and cells


def _shadow_forgets(fset, bundle, shadows: int, seed: int, folder: Path) -> list[str]:
    """Forget specs of the shadow pairs: the target's kind and size, drawn from D_tr."""
    from .data.forget import _stratified_draw

    y = bundle.y["train"]
    out = []
    for s in range(shadows):
        rng_seed = 1_000_003 * (seed + 1) + s
        if fset.kind == "class":
            out.append(f"class:{int(np.random.default_rng(rng_seed).integers(bundle.num_classes))}")
            continue
        if fset.kind == "subset":
            pos = _stratified_draw(y, fset.size, rng_seed)
        else:
            pos = np.sort(np.random.default_rng(rng_seed).choice(len(y), fset.size, replace=False))
        ids = bundle.ids["train"][pos]
        path = folder / f"{fset.slug}-seed{seed}-s{s:03d}.txt"
        text = "".join(f"{int(i)}\n" for i in ids)
        if not path.exists() or path.read_text() != text:
            from .io import atomic_write_text

            atomic_write_text(path, text)
        out.append(f"indices:{path.resolve()}")
    return out


def _pair_seed(base: int, seed: int, s: int) -> int:
    """Pair s's seed (its oracle's and method's; its shadow teacher's when independent)."""
    return base + 1 + s + 100_000 * seed


def _independent_seed(pair_seed: int) -> int:
    """The seed of the independent retrain that stands for the unlearned side when auditing
    ``retrain``: disjoint from every pair seed (those are < base + 1 + 4096 within a block)."""
    return pair_seed + 50_000


def build_cells(teacher, fset, cfg: AuditConfig, grid_dir: Path):
    """The audit's cells: shadow teachers, their oracles and method runs, and the target's
    oracle and method run (whose teacher is the run itself, already trained)."""
    from .grids.grid import Cell, stable_hash
    from .unlearning.base import RecipeInfo, get_method, resolve_options

    run_cfg = teacher.cfg
    recipe = RecipeInfo.from_config(run_cfg)
    resolved = resolve_options(cfg.method, cfg.options, recipe) if cfg.method != "retrain" else {}
    forgets = _shadow_forgets(fset, teacher.bundle, cfg.shadows, cfg.seed, grid_dir / "forget")
    cells: dict[str, Cell] = {}
    pairs = []  # (retrained cell, unlearned cell) per shadow

    def coords(seed, forget=None, method=None):
        return {
            "dataset": run_cfg.data.dataset,
            "model": run_cfg.model.name,
            "backend": run_cfg.backend.name,
            "seed": seed,
            "forget": forget,
            "method": method,
        }

    def metric_ctx(seed):
        return {"seed": seed, "mia_nonmembers": "heldout", "kl_shuffled": False}

    def unlearn_cell(tcell, tseed, forget, method, deps):
        """A cell unlearning ``forget`` from teacher ``tcell`` with ``method`` and seed ``tseed``
        (the oracle's seed too). Its folder is where ``pipeline.unlearn`` puts it."""
        from .data import resolve_forget
        from .pipeline import oracle_folder

        slug = resolve_forget(forget, teacher.bundle, seed=run_cfg.data.seed).slug
        given = {} if method == "retrain" else dict(cfg.options)
        kind = "oracle" if method == "retrain" else "method"
        base = {
            "teacher": tcell,
            "forget": forget,
            "seed": tseed,
            "metrics": metric_ctx(tseed),
            "method": method,
            "options": resolved if method != "retrain" else {},
        }
        cid = ("o-" if kind == "oracle" else "m-") + stable_hash(base)
        tdir = cells[tcell].path if tcell in cells else teacher.run.path
        own_seed = int(cells[tcell].payload["config"]["seed"]) if tcell in cells else run_cfg.seed
        folder = (
            oracle_folder(run_cfg.model_copy(update={"seed": own_seed}), run_cfg.backend, tseed)
            if method == "retrain"
            else method
        )
        cell = Cell(
            id=cid,
            kind=kind,
            path=tdir / "unlearn" / slug / folder,
            deps=tuple(deps),
            coords={**coords(tseed, forget, method), "method_registry": method},
            payload={
                "kind": kind,
                "teacher": str(tdir),
                "forget": forget,
                "method": method,
                "label": method,
                "options": {"retrain": {}, **({method: given} if kind == "method" else {})},
                "seed": tseed,
                "metric_ctx": metric_ctx(tseed),
            },
        )
        cells.setdefault(cid, cell)
        return cid

    target = f"run-{run_cfg.fingerprint()}"  # the run itself: trained already, not a cell
    pair_seeds = [_pair_seed(run_cfg.seed, cfg.seed, s) for s in range(cfg.shadows)]
    if cfg.teachers == "shared":
        # every pair starts from the run's teacher; the oracle and the method take the pair's seed
        teacher_ids = [(target, ps) for ps in pair_seeds]
    else:
        teacher_ids = []
        for tseed in pair_seeds:
            scfg = run_cfg.model_copy(update={"seed": tseed})
            fp = scfg.fingerprint()
            tdir = grid_dir / "teachers" / f"s{tseed}-{fp[:8]}"
            tid = f"t-{fp}"
            cells.setdefault(
                tid,
                Cell(
                    id=tid,
                    kind="teacher",
                    path=tdir,
                    deps=(),
                    coords=coords(tseed),
                    payload={
                        "kind": "teacher",
                        "path": str(tdir),
                        "config": scfg.model_dump(mode="json"),
                    },
                ),
            )
            teacher_ids.append((tid, tseed))

    def deps_of(tid):
        return [tid] if tid in cells else []

    # Auditing `retrain` pairs each oracle with an independent retrain on the same forget set:
    # an oracle of a seed no other model of the audit uses (reusing another pair's seed would
    # correlate one side's shadows with the other side's target and bias success below 0.5).
    for s, (tid, tseed) in enumerate(teacher_ids):
        r = unlearn_cell(tid, tseed, forgets[s], "retrain", deps_of(tid))
        if cfg.method == "retrain":
            u = unlearn_cell(tid, _independent_seed(tseed), forgets[s], "retrain", deps_of(tid))
        else:
            u = unlearn_cell(tid, tseed, forgets[s], cfg.method, [r])
        pairs.append((r, u))
    # the target pair: the run's oracle and method output on the requested forget set
    t_r = unlearn_cell(target, run_cfg.seed, fset.spec, "retrain", [])
    if cfg.method == "retrain":
        t_u = unlearn_cell(target, _independent_seed(run_cfg.seed), fset.spec, "retrain", [])
    else:
        t_u = unlearn_cell(target, run_cfg.seed, fset.spec, cfg.method, [t_r])
    get_method(cfg.method).check_request(fset.kind)
    return cells, pairs, (t_r, t_u)


# ---------------------------------------------------------------------------------------------
# running the grid


def _run_grid(grid, *, workers: int | None, on_event: Callable | None) -> str:
    from .grids.ledger import CellLedger
    from .grids.pools import make_pool
    from .grids.scheduler import Scheduler
    from .io import directory_lock
    from .runs import sweep_scratch

    grid.dir.mkdir(parents=True, exist_ok=True)
    with directory_lock(grid.dir, what="audit grid"):
        sweep_scratch(grid.dir)
        grid.save()
        with CellLedger(grid.ledger_path) as ledger:
            ledger.clear_cancel()
        scheduler = Scheduler(
            grid, lambda: make_pool(grid.pool, workers=workers), on_event=on_event
        )
        try:
            return scheduler.run()
        finally:
            scheduler.ledger.close()


def audit(
    run: str | os.PathLike,
    forget: str,
    method: str,
    *,
    shadows: int,
    seed: int = 0,
    options: dict | None = None,
    out: str | os.PathLike | None = None,
    workers: int | None = None,
    executor: Literal["local", "inline", "dask"] = "local",
    address: str | None = None,
    fixed_variance: bool = False,
    teachers: str = "shared",
    on_event: Callable | None = None,
) -> AuditResult:
    """Audit ``method`` on the run's forget request with ``shadows`` shadow pairs (module doc).

    Args:
        run: a finished teacher run (``qmu-qiskit train --out``).
        forget: the target forget request (``subset:F``, ``class:K``, ``indices:FILE``).
        method: the method to audit (``retrain`` and ``noop`` are the sanity anchors).
        shadows: shadow pairs S (≥ 4; Hayes et al. use hundreds for deep nets, 64 suffice for
            the small QNNs here).
        seed: seeds the shadow forget sets and shadow teachers (a result carries it).
        options: the method's options.
        out: where ``ulira.csv`` and ``summary.json`` go.
        workers, executor, address: the job grid's pool (``local``, ``inline`` or ``dask``).
        fixed_variance: pooled σ per side (LiRA's mode for few shadows).
        teachers: ``shared`` (the pairs start from the run's teacher: the challenge's protocol)
            or ``independent`` (a shadow teacher per pair: Hayes et al.'s).
        on_event: progress callback of the grid scheduler.

    Raises:
        BadInputError: a bad request (before anything runs).
        JobError: shadow cells failed (the grid is resumable: run the same command again).
    """
    from .data import resolve_forget
    from .evaluation.mia import ulira, ulira_inputs
    from .evaluation.outputs import Outputs
    from .grids.pools import PoolSpec
    from .io import atomic_write_json, atomic_write_text
    from .pipeline import TeacherRun, versions
    from .runs import OUTPUTS_FILE
    from .studies.grid import make_grid
    from .studies.spec import DatasetEntry, StudySpec
    from .unlearning.base import RecipeInfo, get_method, resolve_options

    if not isinstance(shadows, int) or shadows < 4:
        raise BadInputError(
            f"--shadows must be an integer ≥ 4 (U-LiRA fits a Gaussian per example "
            f"and side from the shadows), got {shadows!r}"
        )
    if shadows > 4096:
        raise BadInputError(f"--shadows {shadows} is more than 4096; audit with fewer shadow pairs")
    if teachers not in TEACHER_MODES:
        raise BadInputError(
            f"--teachers must be one of {', '.join(TEACHER_MODES)}, got {str(teachers)[:40]!r}"
        )
    teacher = TeacherRun.load(Path(run))
    if teacher.cfg.exclude_forget:
        raise BadInputError(
            f"run {teacher.run.path} was trained without {teacher.cfg.exclude_forget} (HQML's Iris "
            "quirk): its forget samples were never members, so there is nothing to audit; audit a "
            "teacher trained on all of D_tr"
        )
    info = get_method(method)
    recipe = RecipeInfo.from_config(teacher.cfg)
    if method != "retrain":
        resolve_options(method, options, recipe)
    elif options:
        raise BadInputError(
            "the retrain audit takes no options (it pairs two independent retrains)"
        )
    fset = resolve_forget(forget, teacher.bundle, seed=teacher.cfg.data.seed)
    info.check_request(fset.kind)
    cfg = AuditConfig(
        forget=fset.spec,
        method=method,
        shadows=shadows,
        seed=int(seed),
        options=dict(options or {}),
        fixed_variance=fixed_variance,
        teachers=teachers,
    )
    grid_dir = teacher.run.path / "audit" / "shadows"
    out_dir = Path(out) if out is not None else teacher.run.path / "audit" / fset.slug / method
    grid_dir.mkdir(parents=True, exist_ok=True)
    cells, pairs, target = build_cells(teacher, fset, cfg, grid_dir)
    spec = StudySpec(
        name=f"audit-{teacher.run.path.name}"[:100].replace(" ", "_"),
        datasets=[DatasetEntry(name=teacher.cfg.data.dataset)],
        executor=PoolSpec(kind=executor, workers=workers, address=address),
    )
    order = {"teacher": 0, "oracle": 1, "method": 2}
    grid = make_grid(
        spec,
        "audit",
        grid_dir,
        sorted(cells.values(), key=lambda c: order[c.kind]),
        {
            "audit": {
                "forget": fset.spec,
                "method": method,
                "shadows": shadows,
                "teachers": teachers,
            }
        },
    )

    t0, c0 = time.perf_counter(), _cpu()
    state = _run_grid(grid, workers=workers, on_event=on_event)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if state != "complete":
        raise JobError(
            f"the audit's shadow grid ended {state}; see `qmu-qiskit grid status "
            f"{grid_dir}` and run the same audit command again to resume"
        )

    def outputs(cid):
        return Outputs.load(cells[cid].path / OUTPUTS_FILE)

    shadow_pairs = [(outputs(r), outputs(u)) for r, u in pairs]
    target_pair = (outputs(target[0]), outputs(target[1]))
    u, r, m, ids = ulira_inputs(shadow_pairs + [target_pair])
    res = ulira(u, r, m, fixed_variance=fixed_variance)
    rows, summary = _tabulate(res, m, ids, teacher, fset, target_pair)
    summary.update(
        {
            "seed": cfg.seed,
            "config": {
                "run": str(teacher.run.path),
                "teacher_fingerprint": teacher.cfg.fingerprint(),
                "forget": fset.spec,
                "forget_size": fset.size,
                "method": method,
                "options": cfg.options,
                "shadows": shadows,
                "fixed_variance": fixed_variance,
                "teachers": teachers,
                # shared: the seed of each pair's oracle and method; independent: also of its
                # shadow teacher
                "pair_seeds": [_pair_seed(teacher.cfg.seed, cfg.seed, s) for s in range(shadows)],
                "shadow_forgets": [cells[u_].payload["forget"] for _, u_ in pairs],
                "eps_delta": EPS_DELTA,
                "eps_bins": {"width": EPS_BIN_WIDTH, "count": EPS_BINS},
                "teacher_config": teacher.cfg.model_dump(mode="json"),
            },
            "grid": str(grid_dir),
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "versions": versions(),
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "ulira.csv", _csv(rows))
    atomic_write_json(out_dir / "summary.json", summary)
    return AuditResult(out=out_dir, summary=summary, rows=rows)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the grid's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _tabulate(res: dict, m: np.ndarray, ids: np.ndarray, teacher, fset, target_pair):
    """Per-example rows and the summary (target = the last pair of the U-LiRA arrays)."""
    su, sr = res["scores_unlearned"], res["scores_retrained"]
    labels = dict(zip(teacher.bundle.ids["train"].tolist(), teacher.bundle.y["train"].tolist()))
    in_target = np.isin(ids, fset.record_ids)
    eps = np.full(len(ids), np.nan)
    rows = []
    for j, rid in enumerate(ids.tolist()):
        ok_u, ok_r = np.isfinite(su[:, j]), np.isfinite(sr[:, j])
        if not ok_u.any():
            continue
        eps[j] = epsilon_from_rates(*threshold_rates(su[ok_u, j], sr[ok_r, j]))
        rows.append(
            {
                "record_id": int(rid),
                "label": int(labels[rid]),
                "in_target_forget": bool(in_target[j]),
                "observations": int(ok_u.sum()),
                "shadow_forgotten": int(m[:-1, j].sum()),
                "success": float(res["per_example_success"][j]),
                "epsilon": float(eps[j]),
                "target_score_unlearned": _f(su[-1, j]),
                "target_score_retrained": _f(sr[-1, j]),
            }
        )
    scored = ~np.isnan(eps)  # ε may be +∞ (a perfect attack): still scored
    finite = eps[np.isfinite(eps)]
    t_u, t_r = su[-1][np.isfinite(su[-1])], sr[-1][np.isfinite(sr[-1])]
    target_success = (
        float(0.5 * ((t_u > 0).mean() + (t_r < 0).mean())) if len(t_u) else float("nan")
    )
    summary = {
        "success": res["success"],
        "auc": res["auc"],
        "tpr_at_fpr": {f"{k:g}": v for k, v in res["tpr_at_fpr"].items()},
        "advantage": res["advantage"],
        "examples_scored": int(scored.sum()),
        "observations": int(np.isfinite(su).sum()),
        "target_success": target_success,
        "target_examples_scored": int(len(t_u)),
        "epsilon": {
            "median": _stat(eps[scored], np.median),
            "mean_finite": float(finite.mean()) if len(finite) else float("nan"),
            "infinite_fraction": _stat(np.isinf(eps[scored]), np.mean),
            "target_median": _stat(eps[scored & in_target], np.median),
        },
        "forgetting_quality": forgetting_quality(eps[scored]),
    }
    return rows, summary


def _stat(values: np.ndarray, fn) -> float:
    return float(fn(values)) if len(values) else float("nan")


def _f(x) -> float | None:
    return float(x) if np.isfinite(x) else None


def _csv(rows: list[dict]) -> str:
    import io

    buf = io.StringIO()
    fields = [
        "record_id",
        "label",
        "in_target_forget",
        "observations",
        "shadow_forgotten",
        "success",
        "epsilon",
        "target_score_unlearned",
        "target_score_retrained",
    ]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row[k] is None else row[k]) for k in fields})
    return buf.getvalue()
