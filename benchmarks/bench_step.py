"""One training step of the exact engine, for comparing two versions of the code side by side.

The HQML model (circuit L = 2, ⟨Z⟩ on every qubit, a Linear(n→10) head, Adam) takes one
forward + backward + step on a batch; the median over ``--steps`` steps is printed. ``--src DIR``
imports ``qmu_qiskit`` from DIR instead of the installed package, e.g. an older commit::

    git archive <commit> qmu_qiskit | tar -x -C /tmp/old
    for src in /tmp/old "" /tmp/old ""; do python benchmarks/bench_step.py --src "$src"; done

Run the versions interleaved, as above: this machine's load moves single figures by more than
the differences being looked for.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", default="", help="folder holding the qmu_qiskit to time")
    p.add_argument("--qubits", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.src:
        sys.path.insert(0, args.src)
    import numpy as np
    import torch
    from qiskit.quantum_info import SparsePauliOp
    from torch import nn

    import qmu_qiskit
    from qmu_qiskit.circuits.hqml import hqml_circuit
    from qmu_qiskit.execution.executor import Executor
    from qmu_qiskit.models.qnn import FusedEstimatorQNN, QuantumLayer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.qubits
    qc, x, w = hqml_circuit(n, 2)
    obs = [SparsePauliOp.from_sparse_list([("Z", [i], 1.0)], n) for i in range(n)]
    ex = Executor("aer", cache_dir=tempfile.mkdtemp(prefix="qmu-step-"))
    qnn = FusedEstimatorQNN(
        executor=ex, circuit=qc, observables=obs, input_params=x, weight_params=w
    )
    layer = QuantumLayer(qnn, initial_weights=np.random.default_rng(0).uniform(0, 6, len(w)))
    head = nn.Linear(n, 10)
    opt = torch.optim.Adam(list(layer.parameters()) + list(head.parameters()), 1e-3)
    xb, yb = torch.rand(args.batch, n), torch.randint(0, 10, (args.batch,))

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(head(layer(xb)), yb).backward()
        opt.step()
        return time.perf_counter() - t0

    step()  # warm-up: compile
    times = [step() for _ in range(args.steps)]
    print(f"{qmu_qiskit.__file__}: {np.median(times):.4f} s per step (median of {args.steps})")


if __name__ == "__main__":
    main()
