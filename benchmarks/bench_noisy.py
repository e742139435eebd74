"""The noisy exact engine against Aer's density-matrix estimator (``aer_noisy`` without shots).

For the HQML circuit (L = 2, ⟨Z⟩ on every qubit) transpiled for a device profile (default
``ibm_torino``, layout ``auto``) and one mini-batch (default 64 rows: the inputs vary per row,
the weights are shared, as in training), measured side by side in one process:

* ``forward``  — the batch's expectation values: ours (``--engine exact``, the default) and
  Aer's ``EstimatorV2`` with the device's density matrix (``--engine aer``);
* ``gradient`` — the training step's quantum part: ours, values plus the vector–Jacobian
  product (one reverse pass; weight gradients summed over the rows as ``TorchConnector``
  needs them); the reference, Aer plus the batched parameter-shift Jacobian (2P + 1 circuits
  per row). The reference's cost is linear in the rows: it is timed on ``--ref-rows`` rows
  and scaled to the batch (reported as such).

Medians over ``--reps`` interleaved rounds; the values and the gradient are checked against
the reference (max abs difference in the JSON).

Usage::

    python benchmarks/bench_noisy.py --qubits 4,6,8 --json noisy.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings

import numpy as np


def _parts(n: int):
    from qiskit.quantum_info import SparsePauliOp

    from qmu_qiskit.circuits.hqml import hqml_circuit

    qc, x, w = hqml_circuit(n, 2)
    obs = [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], n) for i in range(n)]
    return qc, x, obs


def _values(qc, x, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vals = np.tile(rng.uniform(0, 2 * np.pi, qc.num_parameters), (rows, 1))
    inputs = {p.name for p in x}
    for j, p in enumerate(qc.parameters):
        if p.name in inputs:
            vals[:, j] = rng.uniform(0, np.pi, rows)
    return vals


def measure(n: int, args) -> dict:
    from qmu_qiskit.execution.executor import Executor
    from qmu_qiskit.execution.gradients import BatchedParamShiftEstimatorGradient

    backend = f"aer_noisy:{args.profile}"
    cache = tempfile.mkdtemp(prefix="qmu-noisy-")
    ours = Executor(backend, cache_dir=cache, seed=args.seed)
    ref = Executor(backend, cache_dir=cache, seed=args.seed, engine="aer")
    qc, x, obs = _parts(n)
    vals = _values(qc, x, args.batch, args.seed)
    cols = list(range(qc.num_parameters))
    inputs = {p.name for p in x}
    weights = [j for j, p in enumerate(qc.parameters) if p.name not in inputs]
    cot = np.random.default_rng(args.seed + 1).normal(size=(args.batch, n))
    shift = BatchedParamShiftEstimatorGradient(ref)
    sub = vals[: args.ref_rows]

    def ours_forward():
        return ours.expectation_values(qc, obs, vals)[0]

    def ours_step():
        _, pullback = ours.values_and_pullback(qc, obs, vals)
        return pullback(cot, cols, sum_rows=weights)

    def ref_forward():
        return ref.expectation_values(qc, obs, vals)[0]

    def ref_step():
        return shift.values_and_jacobian(qc, obs, sub, cols)[1]

    # warm-up: transpile, compile, channels
    a, b = ours_forward(), ref_forward()
    g = ours_step()
    jac = ref_step()
    expected = np.einsum("no,noc->nc", cot[: args.ref_rows], jac)
    got = g[: args.ref_rows].copy()
    got[:, weights] = 0.0
    exp_rows = expected.copy()
    exp_rows[:, weights] = 0.0
    check = {
        "values_max_abs_diff": float(np.abs(a - b).max()),
        "input_grad_max_abs_diff": float(np.abs(got - exp_rows).max()),
    }
    times: dict[str, list[float]] = {k: [] for k in ("ours_forward", "ours_step", "ref_forward")}
    ref_steps: list[float] = []
    for r in range(args.reps):
        for key, fn in (
            ("ours_forward", ours_forward),
            ("ours_step", ours_step),
            ("ref_forward", ref_forward),
        ):
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
        if r < args.ref_reps:
            t0 = time.perf_counter()
            ref_step()
            ref_steps.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref_step_s = statistics.median(ref_steps) * args.batch / len(sub)
    prepared = ours.prepare(qc)
    return {
        "compact_qubits": prepared.circuit.num_qubits,
        "isa_ops": dict(prepared.circuit.count_ops()),
        **{f"{k}_s": v for k, v in med.items()},
        "ref_step_s": ref_step_s,
        "ref_step_rows_timed": len(sub),
        "forward_speedup": med["ref_forward"] / med["ours_forward"],
        "step_speedup": ref_step_s / med["ours_step"],
        "check": check,
    }


def main() -> None:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--qubits", default="4,6,8", help="comma-separated sizes")
    p.add_argument("--profile", default="ibm_torino", help="device profile of aer_noisy")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=5, help="interleaved rounds (median)")
    p.add_argument(
        "--ref-rows", type=int, default=2, help="rows the reference gradient is timed on"
    )
    p.add_argument("--ref-reps", type=int, default=2, help="rounds of the reference gradient")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    sizes = [int(s) for s in args.qubits.split(",") if s]
    import os
    import sys

    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_scale import versions

    results = {}
    print(
        f"{'n':>3} {'k':>3} {'ours fwd':>9} {'Aer fwd':>9} {'×':>6} "
        f"{'ours step':>10} {'Aer+shift step':>15} {'×':>7}  max|Δ| values, input grads"
    )
    for n in sizes:
        r = measure(n, args)
        results[str(n)] = r
        c = r["check"]
        print(
            f"{n:>3} {r['compact_qubits']:>3} {r['ours_forward_s']:>9.4f} {r['ref_forward_s']:>9.3f} "
            f"{r['forward_speedup']:>6.0f} {r['ours_step_s']:>10.4f} {r['ref_step_s']:>15.1f} "
            f"{r['step_speedup']:>7.0f}  {c['values_max_abs_diff']:.1e}, "
            f"{c['input_grad_max_abs_diff']:.1e}",
            flush=True,
        )
    out = {
        "config": {**vars(args), "threads": torch.get_num_threads(), "versions": versions()},
        "results": results,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
