"""Training and inference speed of the QNN paths, as ratios to qiskit-machine-learning's defaults.

One run measures, for the HQML model (hqml circuit, L = 2, head Linear(n→16) → ReLU →
Linear(16→C), batch 64, Adam; docs/measurements.md's setting):

* ``reference``  — ``EstimatorQNN`` + ``TorchConnector`` with qiskit-machine-learning's defaults
  (noiseless: default estimator and parameter-shift gradient; noisy: Aer's noisy simulator behind
  ``BackendEstimatorV2`` with a pass manager, 1024 shots, the default gradient given that pass
  manager);
* ``ours-aer``   — our executor on Aer: one broadcast PUB per mini-batch with every shifted
  parameter set (noiseless: ``--engine aer``; noisy: ``aer_noisy --shots 1024``);
* ``ours-exact`` — our exact engine (vectorised statevector, adjoint Jacobian; noiseless only);
  noisy: exact density-matrix values (``aer_noisy`` without shots);
* ``torch``      — a plain batched statevector written directly in torch with autograd, the
  practical limit (noiseless only).

Models: Iris (n = 4, 120 training samples) and an 8-qubit PCA model on 1000 samples (PCA-MNIST
from ``--data-dir`` in torchvision's layout when given, else scikit-learn digits → PCA(8)).
Reference epochs that take minutes are timed on ``--ref-batches`` mini-batches and scaled to a
full epoch (the cost per mini-batch is constant); the table marks them ``(extrapolated)``.

Usage::

    python benchmarks/bench_training.py                       # everything, ~10-20 minutes here
    python benchmarks/bench_training.py --quick               # fewer repetitions
    python benchmarks/bench_training.py --data-dir $DATA --json benchmarks/results/latest.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from functools import partial

import numpy as np
import torch
from torch import nn

warnings.filterwarnings("ignore")
BATCH = 64


# ---------------------------------------------------------------------------------------------
# data


def iris_data():
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import MinMaxScaler

    X, y = load_iris(return_X_y=True)
    X, _, y, _ = train_test_split(X, y, train_size=120, stratify=y, random_state=0)
    X = MinMaxScaler((0, math.pi)).fit_transform(X)
    return X.astype(np.float32), y.astype(np.int64), 3


def pca8_data(data_dir: str | None):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MinMaxScaler

    if data_dir:
        from qmu_qiskit.data import DataConfig, load_data

        b = load_data(
            DataConfig(
                dataset="mnist",
                data_dir=data_dir,
                samples_per_class=125,
                test_size=0.2,
                val_size=0.0,
                n_features=8,
            )
        )
        X, y = b.X["train"][:1000], b.y["train"][:1000]
        return X.astype(np.float32), y.astype(np.int64), 10, "PCA-MNIST (1000 samples)"
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = X[:1000], y[:1000]
    X = PCA(8, svd_solver="full").fit_transform(X)
    X = MinMaxScaler((0, math.pi)).fit_transform(X)
    return X.astype(np.float32), y.astype(np.int64), 10, "digits→PCA(8) (1000 samples)"


# ---------------------------------------------------------------------------------------------
# models


def head(n, classes, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n, 16), nn.ReLU(), nn.Linear(16, classes))


def hqml_parts(n):
    from qiskit.quantum_info import SparsePauliOp

    from qmu_qiskit.circuits import hqml_circuit

    qc, x, w = hqml_circuit(n, 2)
    obs = [SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], n) for q in range(n)]
    return qc, x, w, obs


def initial_weights(num, seed=0):
    return np.random.default_rng(seed).uniform(0, 2 * math.pi, num)


class Wrapped(nn.Module):
    def __init__(self, quantum, head_):
        super().__init__()
        self.quantum = quantum
        self.head = head_

    def forward(self, x):
        return self.head(self.quantum(x))


def reference_model(n, classes, noisy: bool):
    """qiskit-machine-learning's defaults (noisy: BackendEstimatorV2 on Aer's noisy simulator of
    FakeBrisbane, 1024 shots, with a pass manager given to the QNN)."""
    from qiskit_machine_learning.connectors import TorchConnector
    from qiskit_machine_learning.neural_networks import EstimatorQNN

    qc, x, w, obs = hqml_parts(n)
    if not noisy:
        qnn = EstimatorQNN(circuit=qc, observables=obs, input_params=x, weight_params=w)
    else:
        from qiskit.primitives import BackendEstimatorV2
        from qiskit.transpiler import generate_preset_pass_manager
        from qiskit_aer import AerSimulator
        from qiskit_ibm_runtime.fake_provider import FakeBrisbane

        device = FakeBrisbane()
        sim = AerSimulator.from_backend(device)
        est = BackendEstimatorV2(backend=sim, options={"default_precision": 1 / math.sqrt(1024)})
        pm = generate_preset_pass_manager(
            optimization_level=1, target=device.target, seed_transpiler=0
        )
        # qiskit-machine-learning's documented recipe: an ISA circuit, observables mapped through
        # its layout, and the pass manager handed to the QNN (its gradient transpiles again)
        isa = pm.run(qc)
        obs = [o.apply_layout(isa.layout) for o in obs]
        qnn = EstimatorQNN(
            circuit=isa,
            observables=obs,
            input_params=x,
            weight_params=w,
            estimator=est,
            pass_manager=pm,
        )
    return Wrapped(TorchConnector(qnn, initial_weights=initial_weights(len(w))), head(n, classes))


def ours_model(n, classes, backend: str, lazy_vjp: bool = True, **executor_kw):
    from qmu_qiskit.execution.executor import Executor
    from qmu_qiskit.models.qnn import FusedEstimatorQNN, QuantumLayer

    qc, x, w, obs = hqml_parts(n)
    ex = Executor(backend, cache_dir=tempfile.mkdtemp(prefix="qmu-bench-"), **executor_kw)
    qnn = FusedEstimatorQNN(
        executor=ex, circuit=qc, observables=obs, input_params=x, weight_params=w
    )
    qnn.lazy_vjp = lazy_vjp  # False: the eager full Jacobian contracted by TorchConnector
    return Wrapped(QuantumLayer(qnn, initial_weights=initial_weights(len(w))), head(n, classes))


class TorchStatevector(nn.Module):
    """A batched statevector of the hqml circuit written directly in torch (complex128), the way
    a competent engineer would for this one circuit: the angle encoding is a product state (a
    Kronecker product of per-qubit vectors), each weight layer is one 2**n × 2**n unitary (the
    Kronecker product of its single-qubit rotations, shared by the batch) applied with a matmul,
    the CZ ring is a phase vector, the readout a matmul with the Z signs. Gradients come from
    one reverse pass of the scalar loss — it does not compute the QNN's Jacobian."""

    def __init__(self, n, layers=2):
        super().__init__()
        self.n, self.layers = n, layers
        self.weight = nn.Parameter(
            torch.tensor(initial_weights(3 * n * layers), dtype=torch.float64)
        )
        idx = torch.arange(2**n)
        bits = [(idx >> q) & 1 for q in range(n)]
        ring = torch.ones(2**n, dtype=torch.complex128)
        pairs = [(q, q + 1) for q in range(n - 1)] + ([(n - 1, 0)] if n > 2 else [])
        for a, b in pairs:
            ring = ring * (1 - 2 * (bits[a] & bits[b])).to(torch.complex128)
        self.register_buffer("ring", ring)
        self.register_buffer(
            "z", torch.stack([(1 - 2 * bits[q]).to(torch.float64) for q in range(n)], 1)
        )

    @staticmethod
    def _rxryrz(a, b, c):
        """RZ(c) RY(b) RX(a) as (..., 2, 2) complex matrices."""

        def rx(t):
            co, si = torch.cos(t / 2) + 0j, torch.sin(t / 2) + 0j
            return torch.stack(
                [torch.stack([co, -1j * si], -1), torch.stack([-1j * si, co], -1)], -2
            )

        def ry(t):
            co, si = torch.cos(t / 2) + 0j, torch.sin(t / 2) + 0j
            return torch.stack([torch.stack([co, -si], -1), torch.stack([si, co], -1)], -2)

        def rz(t):
            e = torch.exp(-0.5j * (t + 0j))
            zero = torch.zeros_like(e)
            return torch.stack([torch.stack([e, zero], -1), torch.stack([zero, e.conj()], -1)], -2)

        return rz(c) @ ry(b) @ rx(a)

    def forward(self, x):
        x = x.to(torch.float64)
        bsz = x.shape[0]
        enc = self._rxryrz(x, x, x)[..., 0]  # (B, n, 2): each qubit's state after encoding
        psi = torch.ones(bsz, 1, dtype=torch.complex128)
        for q in range(self.n):  # qubit q becomes the more significant factor
            psi = (enc[:, q, :, None] * psi[:, None, :]).reshape(bsz, -1)
        w = self.weight.reshape(self.layers, self.n, 3)
        for layer in range(self.layers):
            mats = self._rxryrz(w[layer, :, 0], w[layer, :, 1], w[layer, :, 2])  # (n, 2, 2)
            u = mats[0]
            for q in range(1, self.n):
                u = torch.kron(mats[q], u)
            psi = (psi @ u.T) * self.ring
        probs = psi.real**2 + psi.imag**2
        return (probs @ self.z).to(torch.float32)


def torch_model(n, classes):
    return Wrapped(TorchStatevector(n), head(n, classes))


# ---------------------------------------------------------------------------------------------
# timing


def epoch_time(model, X, y, *, max_batches=None, repeats=1):
    """Seconds per training epoch (median over repeats; extrapolated when max_batches is set)."""
    Xt, yt = torch.tensor(X), torch.tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    nb = math.ceil(len(X) / BATCH)
    use = nb if max_batches is None else min(nb, max_batches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(use):
            xb, yb = Xt[i * BATCH : (i + 1) * BATCH], yt[i * BATCH : (i + 1) * BATCH]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        times.append((time.perf_counter() - t0) * nb / use)
    return statistics.median(times), use < nb


def inference_time(model, X, *, max_batches=None, repeats=1):
    Xt = torch.tensor(X)
    nb = math.ceil(len(X) / BATCH)
    use = nb if max_batches is None else min(nb, max_batches)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(use):
                model(Xt[i * BATCH : (i + 1) * BATCH])
            times.append((time.perf_counter() - t0) * nb / use)
    return statistics.median(times), use < nb


def measure(name, build, X, y, *, max_batches=None, repeats=3, warmup=True):
    model = build()
    if warmup:  # first call: transpile / compile / build noise models (not per-epoch costs)
        with torch.no_grad():
            model(torch.tensor(X[:BATCH]))
        epoch_time(model, X[:BATCH], y[:BATCH], max_batches=1)
    ep, ext = epoch_time(model, X, y, max_batches=max_batches, repeats=repeats)
    inf, ext2 = inference_time(model, X, max_batches=max_batches, repeats=repeats)
    return {"path": name, "epoch_s": ep, "inference_s": inf, "extrapolated": ext or ext2}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    results = {}
    iris = iris_data()
    pca = pca8_data(args.data_dir)
    cases = [
        ("Iris (n=4, 120 samples)", 4, iris[0], iris[1], iris[2]),
        (f"8-qubit {pca[3]}", 8, pca[0], pca[1], pca[2]),
    ]
    reps = 1 if args.quick else args.repeats
    for label, n, X, y, C in cases:
        rows = []
        big = n == 8
        rows.append(
            measure(
                "reference (qiskit-ml defaults)",
                partial(reference_model, n, C, False),
                X,
                y,
                max_batches=args.ref_batches if big else None,
                repeats=1,
            )
        )
        rows.append(
            measure(
                "ours-aer (broadcast PUB, Aer)",
                partial(ours_model, n, C, "aer", engine="aer"),
                X,
                y,
                max_batches=args.ref_batches * 2 if big else None,
                repeats=reps,
            )
        )
        rows.append(
            measure(
                "ours-exact (adjoint statevector)",
                partial(ours_model, n, C, "aer"),
                X,
                y,
                repeats=reps,
            )
        )
        rows.append(
            measure(
                "ours-exact, full Jacobian (before the lazy VJP)",
                partial(ours_model, n, C, "aer", lazy_vjp=False),
                X,
                y,
                repeats=reps,
            )
        )
        rows.append(
            measure("torch statevector baseline", partial(torch_model, n, C), X, y, repeats=reps)
        )
        results[f"{label} | noiseless"] = rows
        print(report({f"{label} | noiseless": rows}), flush=True)
        if n == 4 or args.noisy_8:
            rows = []
            rows.append(
                measure(
                    "reference (BackendEstimatorV2 + pass manager, 1024 shots)",
                    partial(reference_model, n, C, True),
                    X,
                    y,
                    max_batches=1,
                    repeats=1,
                )
            )
            rows.append(
                measure(
                    "ours-aer (aer_noisy, 1024 shots)",
                    partial(ours_model, n, C, "aer_noisy", shots=1024),
                    X,
                    y,
                    repeats=reps,
                )
            )
            rows.append(
                measure(
                    "ours (aer_noisy, exact density matrix)",
                    partial(ours_model, n, C, "aer_noisy"),
                    X,
                    y,
                    repeats=reps,
                )
            )
            results[f"{label} | FakeBrisbane noise"] = rows
            print(report({f"{label} | FakeBrisbane noise": rows}), flush=True)
    return results


def report(results: dict) -> str:
    lines = []
    for case, rows in results.items():
        ref = rows[0]
        lines.append(f"\n{case}")
        lines.append(
            f"{'path':58s} {'s/epoch':>10s} {'speed-up':>9s} {'s/inference':>12s} {'speed-up':>9s}"
        )
        for r in rows:
            tag = " (extrapolated)" if r["extrapolated"] else ""
            lines.append(
                f"{(r['path'] + tag):58s} {r['epoch_s']:10.4f} {ref['epoch_s'] / r['epoch_s']:8.1f}x "
                f"{r['inference_s']:12.4f} {ref['inference_s'] / r['inference_s']:8.1f}x"
            )
        names = [r["path"] for r in rows]
        if any(n.startswith("torch") for n in names):
            exact = next(r for r in rows if r["path"].startswith("ours-exact"))
            base = next(r for r in rows if r["path"].startswith("torch"))
            lines.append(
                f"ours-exact / torch baseline per epoch: {exact['epoch_s'] / base['epoch_s']:.2f}x"
            )
        jac = [r for r in rows if "full Jacobian" in r["path"]]
        if jac:
            exact = next(r for r in rows if r["path"].startswith("ours-exact ("))
            lines.append(
                f"ours-exact full Jacobian / lazy VJP per epoch: "
                f"{jac[0]['epoch_s'] / exact['epoch_s']:.2f}x"
            )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data-dir", default=None, help="MNIST in torchvision's layout (default: digits)"
    )
    p.add_argument("--quick", action="store_true", help="one repetition per path")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ref-batches", type=int, default=1, help="mini-batches timed on slow paths")
    p.add_argument(
        "--noisy-8", action="store_true", help="also the 8-qubit model with noise (slow)"
    )
    p.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    t0 = time.time()
    results = run(args)
    text = report(results)
    print("\n== all cases ==" + text)
    meta = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "torch_threads": args.threads,
        "total_seconds": round(time.time() - t0, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"\n{meta}")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results, "table": text}, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
