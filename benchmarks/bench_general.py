"""Training speed on a general user circuit: ``zz_feature_map(n) ∘ real_amplitudes(n)``.

The circuit qiskit-machine-learning users bring first: a ZZ feature map (non-affine angles
2(π − x_i)(π − x_j), composite-free after Qiskit's construction) followed by a RealAmplitudes
ansatz (CX chains, reps = 3), Z on every qubit read out, head Linear(n→16) → ReLU →
Linear(16→C), batch 64, Adam — the HQML benchmark's setting (``bench_training.py``) with the
general circuit in place of the preset one. Paths:

* ``reference``  — ``EstimatorQNN`` + ``TorchConnector`` with qiskit-machine-learning's defaults
  (its default ``StatevectorEstimator`` and parameter-shift gradient);
* ``ours-exact`` — our executor on the exact engine (vectorised statevector, adjoint Jacobian,
  the non-affine angles as per-sample columns with chain-rule gradients);
* ``ours-aer``   — our executor on the Aer statevector engine (``--engine aer``).

Models: Iris (n = 4, 120 training samples) and an 8-qubit PCA model on 1000 samples (PCA-MNIST
from ``--data-dir`` in torchvision's layout when given, else scikit-learn digits → PCA(8)). The
reference is timed on ``--ref-batches`` mini-batches (or, with ``--ref-samples N``, one training
step on N samples) and scaled to a full epoch.

Usage::

    python benchmarks/bench_general.py --quick --threads 1
    python benchmarks/bench_general.py --quick --threads 1 --cases pca8 --ref-samples 8
    python benchmarks/bench_general.py --data-dir DATA --json benchmarks/results/general.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from functools import partial

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_training as bt

warnings.filterwarnings("ignore")


def zz_parts(n: int):
    """The circuit, its input and weight parameters, and the n single-qubit Z observables."""
    from qiskit.circuit.library import real_amplitudes, zz_feature_map
    from qiskit.quantum_info import SparsePauliOp

    fmap = zz_feature_map(n)
    ansatz = real_amplitudes(n)
    qc = fmap.compose(ansatz)
    obs = [SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], n) for q in range(n)]
    return qc, list(fmap.parameters), list(ansatz.parameters), obs


def reference_model(n: int, classes: int):
    from qiskit_machine_learning.connectors import TorchConnector
    from qiskit_machine_learning.neural_networks import EstimatorQNN

    qc, x, w, obs = zz_parts(n)
    qnn = EstimatorQNN(circuit=qc, observables=obs, input_params=x, weight_params=w)
    weights = bt.initial_weights(len(w))
    return bt.Wrapped(TorchConnector(qnn, initial_weights=weights), bt.head(n, classes))


def ours_model(n: int, classes: int, **executor_kw):
    from qmu_qiskit.execution.executor import Executor
    from qmu_qiskit.models.qnn import FusedEstimatorQNN, QuantumLayer

    qc, x, w, obs = zz_parts(n)
    ex = Executor("aer", cache_dir=tempfile.mkdtemp(prefix="qmu-bench-"), **executor_kw)
    qnn = FusedEstimatorQNN(
        executor=ex, circuit=qc, observables=obs, input_params=x, weight_params=w
    )
    weights = bt.initial_weights(len(w))
    return bt.Wrapped(QuantumLayer(qnn, initial_weights=weights), bt.head(n, classes))


def _measure(name, build, X, y, **kw) -> dict:
    try:
        return bt.measure(name, build, X, y, **kw)
    except Exception as exc:
        return {"path": name, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def measure_per_sample(name, build, X, y, samples: int) -> dict:
    """One training step and one forward pass on ``samples`` samples, scaled to the epoch.

    For the reference, whose cost is a fixed number of circuit evaluations per sample (the
    parameter-shift circuits of each sample and observable), this is a full epoch's time to
    within its per-call overheads; the table marks it extrapolated.
    """
    model = build()
    Xt, yt = torch.tensor(X[:samples]), torch.tensor(y[:samples])
    with torch.no_grad():
        model(Xt[:1])  # first call: build the QNN's internals
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    t0 = time.perf_counter()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(Xt), yt).backward()
    opt.step()
    step = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        model(Xt)
    forward = time.perf_counter() - t0
    scale = len(X) / samples
    return {
        "path": name,
        "epoch_s": step * scale,
        "inference_s": forward * scale,
        "extrapolated": True,
    }


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    cases = []
    if "iris" in args.cases:
        iris = bt.iris_data()
        cases.append(("Iris (n=4, 120 samples)", 4, iris[0], iris[1], iris[2]))
    if "pca8" in args.cases:
        pca = bt.pca8_data(args.data_dir)
        cases.append((f"8-qubit {pca[3]}", 8, pca[0], pca[1], pca[2]))
    reps = 1 if args.quick else args.repeats
    results = {}
    for label, n, X, y, C in cases:
        if args.ref_samples:
            reference = measure_per_sample(
                "reference (qiskit-ml defaults)",
                partial(reference_model, n, C),
                X,
                y,
                args.ref_samples,
            )
        else:
            reference = _measure(
                "reference (qiskit-ml defaults)",
                partial(reference_model, n, C),
                X,
                y,
                max_batches=args.ref_batches,
                repeats=1,
            )
        rows = [
            reference,
            _measure(
                "ours-exact (adjoint statevector)", partial(ours_model, n, C), X, y, repeats=reps
            ),
            _measure(
                "ours-aer (broadcast PUB, Aer)",
                partial(ours_model, n, C, engine="aer"),
                X,
                y,
                max_batches=None if n == 4 else args.ref_batches * 2,
                repeats=reps,
            ),
        ]
        key = f"{label} | zz_feature_map ∘ real_amplitudes"
        results[key] = rows
        print(report({key: rows}), flush=True)
    return results


def report(results: dict) -> str:
    lines = []
    for case, rows in results.items():
        ref = rows[0]
        lines.append(f"\n{case}")
        lines.append(f"{'path':50s} {'s/epoch':>10s} {'speed-up':>9s} {'s/inference':>12s}")
        for r in rows:
            if "error" in r:
                lines.append(f"{r['path']:50s} failed: {r['error']}")
                continue
            tag = " (extrapolated)" if r["extrapolated"] else ""
            speed = f"{ref['epoch_s'] / r['epoch_s']:8.1f}x" if "epoch_s" in ref else "       -"
            lines.append(
                f"{(r['path'] + tag):50s} {r['epoch_s']:10.4f} {speed} {r['inference_s']:12.4f}"
            )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data-dir", default=None, help="MNIST in torchvision's layout (default: digits)"
    )
    p.add_argument("--quick", action="store_true", help="one repetition per path")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ref-batches", type=int, default=1, help="mini-batches timed on the reference")
    p.add_argument(
        "--ref-samples",
        type=int,
        default=0,
        help="time the reference on this many samples and scale (0: mini-batches)",
    )
    p.add_argument("--cases", default="iris,pca8", help="comma-separated: iris, pca8")
    p.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    t0 = time.time()
    results = run(args)
    meta = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "torch_threads": args.threads,
        "total_seconds": round(time.time() - t0, 1),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
    }
    print(f"\n{meta}")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results, "table": report(results)}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
