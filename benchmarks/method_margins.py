"""Margins of the trained-model thresholds in tests/test_methods.py, over teacher seeds × method seeds.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/method_margins.py 0,1,2 0,1,2`` (teacher seeds, method
seeds; ~12 min on 2 cores). Prints one JSON line per trajectory, then the minimum and maximum of
each quantity; the tests assert thresholds well beyond the worst measured value.
"""

import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from types import SimpleNamespace

import test_methods as tm
import torch

from qmu_qiskit import pipeline
from qmu_qiskit.config import resolve_run_config
from qmu_qiskit.pipeline import TeacherRun, make_executor
from qmu_qiskit.unlearning.methods._common import clamped_kl, diag_fisher, kl_rows, logits_of
from qmu_qiskit.unlearning.methods.relabel import similar_label_map


def fisher_distance(model, fisher, th0):
    """Fisher-weighted squared distance of ``model``'s parameters from ``th0``."""
    return sum(
        float((f * (p.detach().double() - q.detach().double()) ** 2).sum())
        for f, p, q in zip(fisher, model.parameters(), th0)
    )


def mean_entropy(model, X):
    """Mean entropy of ``model``'s predicted distribution on ``X``."""
    return float(-(tm.probs(model, X) * tm.probs(model, X).clamp_min(1e-30).log()).sum(1).mean())


def kl_from_teacher(T, model, X):
    """Clamped KL between the teacher's and ``model``'s predictions on ``X``."""
    return float(clamped_kl(tm.probs(T.model, X), tm.probs(model, X)))


tseeds = [int(s) for s in sys.argv[1].split(",")]
mseeds = [int(s) for s in sys.argv[2].split(",")]
tmp = pathlib.Path(tempfile.mkdtemp())
rows = []
for ts in tseeds:
    out = tmp / f"iris{ts}"
    pipeline.train(
        resolve_run_config(dataset="iris", seed=ts, training={"epochs": 30}), out, progress=False
    )
    run = TeacherRun.load(out)
    ex = make_executor(run.cfg.backend, seed=0)
    m = run.model(ex)
    m.eval()
    T = SimpleNamespace(run=run, executor=ex, model=m)
    for s in mseeds:
        d = tmp / f"t{ts}s{s}"
        R = {}
        ctx, r = tm.run(T, d / "ga", "ga", options={"epochs": 2}, seed=s)
        Xf, yf = ctx.tensors("forget")
        R["ga_ce_gain(>0.05)"] = tm.ce(r.model, Xf, yf) - tm.ce(T.model, Xf, yf)
        ctx0, free = tm.run(T, d / "l0", "fisher", options={"epochs": 3, "lam": 0.0}, seed=s)
        _, pulled = tm.run(T, d / "big", "fisher", options={"epochs": 3, "lam": 1e5}, seed=s)
        Xf, yf = ctx0.tensors("forget")
        fisher = diag_fisher(
            ctx0.copy_teacher(), Xf, yf, ctx0.options["batch_size"], ctx0.generator(salt=1)
        )
        th0 = list(T.model.parameters())
        R["fisher_ratio(<0.5)"] = fisher_distance(pulled.model, fisher, th0) / fisher_distance(
            free.model, fisher, th0
        )
        ctx, r = tm.run(T, d / "cfk", "cf_k_hqml", options={"epochs": 2, "k": 1}, seed=s)
        Xf, yf = ctx.tensors("forget")
        R["cfkhqml_ce_gain(>0)"] = tm.ce(r.model, Xf, yf) - tm.ce(T.model, Xf, yf)
        for meth, sign in (("qmul", 1), ("qmul_hqml", -1)):
            ctx, r = tm.run(T, d / meth, meth, options={"epochs": 3}, seed=s)
            (Xr, yr), (Xf, yf) = ctx.tensors("retain"), ctx.tensors("forget")
            exp = similar_label_map(logits_of(T.model, Xr), yr, 3)
            tgt = torch.tensor(exp)[yf]
            rr = torch.arange(len(yf))
            R[f"{meth}_steer(>0.01)"] = sign * (
                float(tm.probs(r.model, Xf)[rr, tgt].mean())
                - float(tm.probs(T.model, Xf)[rr, tgt].mean())
            )
        ctx, r = tm.run(T, d / "lca", "lca", options={"epochs": 3}, seed=s)
        Xf, yf = ctx.tensors("forget")
        rr = torch.arange(len(yf))
        R["lca_drop(>0)"] = float(tm.probs(T.model, Xf)[rr, yf].mean()) - float(
            tm.probs(r.model, Xf)[rr, yf].mean()
        )
        ctx, r = tm.run(T, d / "adv", "adv_uniform", seed=s)
        Xf, _ = ctx.tensors("forget")
        R["adv_entropy_gain(>0.05)"] = mean_entropy(r.model, Xf) - mean_entropy(T.model, Xf)
        ctx, r = tm.run(T, d / "dg", "dg", forget="class:0", options={"epochs": 4}, seed=s)
        Xf, _ = ctx.tensors("forget")
        q = torch.tensor(r.info["target"], dtype=torch.float64)
        p0 = tm.probs(T.model, Xf)
        before = float(kl_rows(q.expand(len(Xf), -1), p0.log()).mean())
        after = float(kl_rows(q.expand(len(Xf), -1), tm.probs(r.model, Xf).log()).mean())
        R["dg_kl_ratio(<0.5)"] = after / before
        R["dg_p0_drop(>0.2)"] = float(p0[:, 0].mean()) - float(tm.probs(r.model, Xf)[:, 0].mean())
        R["dg_anchor_kl/delta(<=1.5)"] = r.info["anchor_kl"] / ctx.options["delta"]
        for method, wm, wo in (
            ("scrub", {"epochs": 2, "msteps": 2, "gamma": 0.0, "beta": 1.0}, {"msteps": 0}),
            ("scrub_hqml", {"epochs": 3}, {"lam_f": 0.0}),
        ):
            ctx, res = tm.run(T, d / f"{method}max", method, forget="class:0", options=wm, seed=s)
            _, plain = tm.run(
                T, d / f"{method}plain", method, forget="class:0", options={**wm, **wo}, seed=s
            )
            Xr, Xf = ctx.tensors("retain")[0], ctx.tensors("forget")[0]
            kl_f = kl_from_teacher(T, res.model, Xf)
            R[f"{method}_f_vs_plain(>10)"] = kl_f / max(kl_from_teacher(T, plain.model, Xf), 1e-12)
            R[f"{method}_f_vs_r(>3)"] = kl_f / kl_from_teacher(T, res.model, Xr)
        print(
            json.dumps({"teacher": ts, "seed": s, **{k: round(v, 4) for k, v in R.items()}}),
            flush=True,
        )
        rows.append(R)
print("MIN", json.dumps({k: round(min(r[k] for r in rows), 4) for k in rows[0]}))
print("MAX", json.dumps({k: round(max(r[k] for r in rows), 4) for k in rows[0]}))
