"""Cost of one training step against the number of qubits (issue 16's scaling table).

One training step = forward + backward + Adam on one mini-batch (default 64) of the HQML model:
the hqml circuit with L = 2 and ⟨Z⟩ on every qubit, head Linear(n→16) → ReLU → Linear(16→10).
Paths:

* ``ours-exact``          — our exact engine in its ``QuantumLayer`` (training: the lazy
  one-sweep adjoint vector–Jacobian product);
* ``ours-exact-jacobian`` — the same with ``lazy_vjp = False``: the eager full Jacobian (one
  adjoint sweep per output) contracted by ``TorchConnector`` — the previous training path, kept
  for before/after ratios measured in the same run;
* ``ours-aer``            — our executor on Aer (``--engine aer``): one broadcast
  parameter-shift PUB per mini-batch; sizes whose step would take more than ``--max-step-s``
  are skipped, with the reason recorded;
* ``torch``               — a batched statevector written directly in torch, as the issue
  describes it: the angle encoding as a Kronecker-product state, each weight layer as two
  half-size unitaries applied as ``U_high @ S @ U_lowᵀ`` on the state viewed as a
  2^(n−h) × 2^h matrix, the CZ ring as a phase vector, complex128, gradients from one reverse
  pass of the scalar loss;
* ``pl-lightning-adjoint`` / ``pl-default-backprop`` — PennyLane's ``lightning.qubit`` (adjoint)
  and ``default.qubit`` (backprop) through ``qml.qnn.TorchLayer``, measured only when PennyLane
  is importable (``--pl-path DIR`` adds a directory holding it to the workers' ``sys.path``).

Each (size, path) runs in its own worker process, so its peak resident memory
(``ru_maxrss``, which includes the interpreter and the imported libraries; ``base_mb`` is the
same figure before the first step) is that path's alone. Workers of one size are alive together
and timed in interleaved rounds (round r: one step of every path), medians reported; sizes of
``--sequential-from`` qubits and more run one worker at a time so that their memory does not add
up. Before timing, the bench checks at the smallest size that ``ours-exact``,
``ours-exact-jacobian`` and ``torch`` give the same loss gradients (max abs difference over the
circuit weights and the head, reported in the JSON).

Usage::

    python benchmarks/bench_scale.py --qubits 4,8,12,16 --json scale.json --plot scale.png
    python benchmarks/bench_scale.py --qubits 20 --paths ours-exact,torch --reps 1

JSON: ``results[str(n)][path] = {"step_s": median, "peak_mb": ..., "base_mb": ..., "steps_s":
[...]}`` or ``{"step_s": null, "skipped": "why"}``, plus ``config`` (seed, batch, threads,
versions) and ``gradient_check``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = (
    "ours-exact",
    "ours-exact-jacobian",
    "ours-aer",
    "torch",
    "pl-lightning-adjoint",
    "pl-default-backprop",
)
CLASSES = 10
LAYERS = 2


# ---------------------------------------------------------------------------------------------
# models (worker side)


def _torch_baseline(n: int, weights):
    """The issue's torch baseline for the hqml circuit (see the module docstring)."""
    import torch
    from torch import nn

    class HalvesStatevector(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor(weights, dtype=torch.float64))
            idx = torch.arange(2**n)
            bits = [(idx >> q) & 1 for q in range(n)]
            ring = torch.ones(2**n, dtype=torch.float64)
            pairs = [(q, q + 1) for q in range(n - 1)] + ([(n - 1, 0)] if n > 2 else [])
            for a, b in pairs:
                ring = ring * (1 - 2 * (bits[a] & bits[b])).to(torch.float64)
            self.register_buffer("ring", ring.to(torch.complex128))
            self.register_buffer(
                "z", torch.stack([(1 - 2 * bits[q]).to(torch.float64) for q in range(n)], 1)
            )
            self.low = n // 2  # h: the low half's qubits

        @staticmethod
        def _rxryrz(a, b, c):
            """RZ(c) RY(b) RX(a) as (..., 2, 2) complex128 matrices."""
            ca, sa = torch.cos(a / 2), torch.sin(a / 2)
            cb, sb = torch.cos(b / 2), torch.sin(b / 2)
            zero = torch.zeros_like(a)
            rx = torch.complex(
                torch.stack([torch.stack([ca, zero], -1), torch.stack([zero, ca], -1)], -2),
                torch.stack([torch.stack([zero, -sa], -1), torch.stack([-sa, zero], -1)], -2),
            )
            ry = torch.complex(
                torch.stack([torch.stack([cb, -sb], -1), torch.stack([sb, cb], -1)], -2),
                torch.zeros(a.shape + (2, 2), dtype=a.dtype),
            )
            e = torch.polar(torch.ones_like(c), -c / 2)
            rz = torch.diag_embed(torch.stack([e, e.conj()], -1))
            return rz @ ry @ rx

        @staticmethod
        def _kron(mats):
            """⊗ of (2, 2) matrices, mats[0] the least significant qubit."""
            u = mats[0]
            for m in mats[1:]:
                u = torch.kron(m, u)
            return u

        def forward(self, x):
            x = x.to(torch.float64)
            bsz = x.shape[0]
            h = self.low
            enc = self._rxryrz(x, x, x)[..., 0]  # (B, n, 2): each qubit's encoded state
            psi = torch.ones(bsz, 1, dtype=torch.complex128)
            for q in range(n):  # qubit q becomes the more significant factor
                psi = (enc[:, q, :, None] * psi[:, None, :]).reshape(bsz, -1)
            w = self.weight.reshape(LAYERS, n, 3)
            for layer in range(LAYERS):
                mats = self._rxryrz(w[layer, :, 0], w[layer, :, 1], w[layer, :, 2])
                u_low = self._kron(list(mats[:h]))
                u_high = self._kron(list(mats[h:]))
                s = psi.reshape(bsz, 2 ** (n - h), 2**h)
                psi = (u_high @ s @ u_low.T).reshape(bsz, 2**n) * self.ring
            probs = psi.real**2 + psi.imag**2
            return (probs @ self.z).to(torch.float32)

    return HalvesStatevector()


def _pl_layer(n: int, weights, device: str, diff: str):
    import pennylane as qml
    import torch

    dev = qml.device(device, wires=n)

    @qml.qnode(dev, interface="torch", diff_method=diff)
    def circuit(inputs, weights):
        for q in range(n):
            qml.RX(inputs[..., q], wires=q)
            qml.RY(inputs[..., q], wires=q)
            qml.RZ(inputs[..., q], wires=q)
        w = weights.reshape(LAYERS, n, 3)
        for layer in range(LAYERS):
            for q in range(n):
                qml.RX(w[layer, q, 0], wires=q)
                qml.RY(w[layer, q, 1], wires=q)
                qml.RZ(w[layer, q, 2], wires=q)
            if n == 2:
                qml.CZ(wires=[0, 1])
            elif n > 2:
                for q in range(n):
                    qml.CZ(wires=[q, (q + 1) % n])
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    layer = qml.qnn.TorchLayer(circuit, {"weights": (3 * n * LAYERS,)})
    with torch.no_grad():
        layer.weights.copy_(torch.tensor(weights, dtype=layer.weights.dtype))
    return layer


def build(path: str, n: int, seed: int, device: str = "cpu"):
    """(model, quantum weight parameter) for one path; head and weights drawn from ``seed``."""
    import numpy as np
    import torch
    from torch import nn

    sys.path.insert(0, HERE)
    import bench_training as bt

    weights = np.random.default_rng(seed).uniform(0, 2 * math.pi, 3 * n * LAYERS)
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Linear(n, 16), nn.ReLU(), nn.Linear(16, CLASSES))
    if path.startswith("ours-"):
        import tempfile

        from qmu_qiskit.execution.executor import Executor
        from qmu_qiskit.models.qnn import FusedEstimatorQNN, QuantumLayer

        qc, x, w, obs = bt.hqml_parts(n)
        kw = {"engine": "aer"} if path == "ours-aer" else {}
        ex = Executor("aer", cache_dir=tempfile.mkdtemp(prefix="qmu-scale-"), device=device, **kw)
        qnn = FusedEstimatorQNN(
            executor=ex, circuit=qc, observables=obs, input_params=x, weight_params=w
        )
        qnn.lazy_vjp = path != "ours-exact-jacobian"
        quantum = QuantumLayer(qnn, initial_weights=weights)
    elif device != "cpu":
        raise SystemExit(f"--device {device} is built for the ours-* paths only, not {path}")
    elif path == "torch":
        quantum = _torch_baseline(n, weights)
    elif path == "pl-lightning-adjoint":
        quantum = _pl_layer(n, weights, "lightning.qubit", "adjoint")
    elif path == "pl-default-backprop":
        quantum = _pl_layer(n, weights, "default.qubit", "backprop")
    else:
        raise SystemExit(f"unknown path {path!r}; use one of {', '.join(PATHS)}")
    model = bt.Wrapped(quantum, head)
    qweight = next(p for name, p in model.named_parameters() if name.startswith("quantum."))
    return model, qweight


def batch_data(n: int, batch: int, seed: int):
    import numpy as np
    import torch

    rng = np.random.default_rng(seed + 1)
    x = torch.tensor(rng.uniform(0, math.pi, (batch, n)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, CLASSES, batch), dtype=torch.int64)
    return x, y


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(args) -> None:
    """Build one path at one size, then answer ``step`` / ``grad`` / ``quit`` lines on stdin."""
    warnings.filterwarnings("ignore")
    if args.pl_path:
        sys.path.append(args.pl_path)
    import torch

    torch.set_num_threads(args.threads)
    out = sys.stdout
    try:
        model, qweight = build(args.worker, args.n, args.seed, args.device)
    except ImportError as exc:
        print(json.dumps({"skipped": f"not importable: {exc}"}), file=out, flush=True)
        return
    x, y = batch_data(args.n, args.batch, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    base = _maxrss_mb()

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        return time.perf_counter() - t0

    # warm-up (compile, transpile, first allocations): not timed, but a bound on the cost
    with torch.no_grad():
        model(x[:2])
    warm = step()
    print(json.dumps({"ready": True, "warmup_s": warm, "base_mb": base}), file=out, flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            print(json.dumps({"step_s": step()}), file=out, flush=True)
        elif cmd == "grad":
            # loss gradients at the initial weights (a fresh model: Adam has moved this one)
            fresh, fresh_q = build(args.worker, args.n, args.seed)
            loss = torch.nn.functional.cross_entropy(fresh(x), y)
            loss.backward()
            head = [
                p.grad.double().reshape(-1) for n_, p in fresh.named_parameters() if "head" in n_
            ]
            msg = {
                "loss": float(loss),
                "qgrad": fresh_q.grad.double().reshape(-1).tolist(),
                "hgrad": torch.cat(head).tolist(),
            }
            print(json.dumps(msg), file=out, flush=True)
        elif cmd == "quit":
            print(json.dumps({"peak_mb": _maxrss_mb()}), file=out, flush=True)
            return


# ---------------------------------------------------------------------------------------------
# driver


class Worker:
    def __init__(self, path: str, n: int, args):
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            path,
            "--n",
            str(n),
            "--batch",
            str(args.batch),
            "--threads",
            str(args.threads),
            "--seed",
            str(args.seed),
        ]
        if args.pl_path:
            cmd += ["--pl-path", args.pl_path]
        if args.device != "cpu":
            cmd += ["--device", args.device]
        self.path = path
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE
        )
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            return {"skipped": f"worker exited with status {code} (out of memory if -9)"}
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> dict:
        if self.proc.poll() is not None:
            return {}
        out = self.ask("quit")
        self.proc.wait()
        return out


def _predicted(path: str, n: int, results: dict, limit: float) -> str | None:
    """A reason to skip ``path`` at ``n`` when the smaller sizes predict a step over ``limit``."""
    done = [
        (int(k), v[path]["step_s"])
        for k, v in results.items()
        if path in v and v[path].get("step_s") and int(k) < n
    ]
    skipped_below = [
        int(k) for k, v in results.items() if path in v and "skipped" in v[path] and int(k) < n
    ]
    if skipped_below and any(
        "s per step" in results[str(k)][path]["skipped"] for k in skipped_below
    ):
        return f"skipped at n={max(skipped_below)} already (cost grows with n)"
    if not done:
        return None
    done.sort()
    (n1, t1) = done[-1]
    if len(done) >= 2:
        n0, t0 = done[-2]
        rate = (t1 / t0) ** (1 / (n1 - n0))
    else:
        rate = 2.0  # at least the state doubles per qubit
    rate = max(rate, 2.0)
    guess = t1 * rate ** (n - n1)
    if guess > limit:
        return (
            f"predicted {guess:.0f} s per step > {limit:.0f} s (n={n1}: {t1:.2f} s, growth "
            f"{rate:.2f}x per qubit)"
        )
    return None


def gradient_check(args, n: int) -> dict:
    """Loss gradients of ours-exact, ours-exact-jacobian and torch at the same initial weights."""
    grads = {}
    for path in ("ours-exact", "ours-exact-jacobian", "torch"):
        w = Worker(path, n, args)
        if "skipped" in w.info:
            return {"n": n, "error": f"{path}: {w.info['skipped']}"}
        grads[path] = w.ask("grad")
        w.close()
    ref = grads["torch"]
    out = {"n": n, "loss_torch": ref["loss"]}
    for path in ("ours-exact", "ours-exact-jacobian"):
        g = grads[path]
        out[f"{path}_vs_torch_max_abs_qgrad"] = max(
            abs(a - b) for a, b in zip(g["qgrad"], ref["qgrad"])
        )
        out[f"{path}_vs_torch_max_abs_headgrad"] = max(
            abs(a - b) for a, b in zip(g["hgrad"], ref["hgrad"])
        )
    out["max_abs_qgrad"] = max(abs(v) for v in ref["qgrad"])
    out["lazy_vs_jacobian_max_abs_qgrad"] = max(
        abs(a - b)
        for a, b in zip(grads["ours-exact"]["qgrad"], grads["ours-exact-jacobian"]["qgrad"])
    )
    return out


def measure_size(args, n: int, paths: list[str], results: dict) -> dict:
    row: dict = {}
    active: list[Worker] = []
    todo = []
    for path in paths:
        reason = _predicted(path, n, results, args.max_step_s)
        if reason:
            row[path] = {"step_s": None, "skipped": reason}
        else:
            todo.append(path)
    sequential = n >= args.sequential_from
    groups = [[p] for p in todo] if sequential else [todo]
    for group in groups:
        active = []
        for path in group:
            w = Worker(path, n, args)
            if "skipped" in w.info:
                row[path] = {"step_s": None, **w.info}
                w.close()
                continue
            if w.info["warmup_s"] > args.max_step_s:
                row[path] = {
                    "step_s": None,
                    "skipped": f"warm-up step took {w.info['warmup_s']:.0f} s per step "
                    f"(> {args.max_step_s:.0f} s)",
                    "warmup_s": w.info["warmup_s"],
                }
                row[path]["peak_mb"] = w.close().get("peak_mb")
                continue
            active.append(w)
        times: dict[str, list[float]] = {w.path: [] for w in active}
        for r in range(args.reps):
            for w in active:
                slow = w.info["warmup_s"] > args.slow_s
                if slow and r >= args.slow_reps:
                    continue
                reply = w.ask("step")
                if "step_s" not in reply:
                    row[w.path] = {"step_s": None, **reply}
                    continue
                times[w.path].append(reply["step_s"])
        for w in active:
            end = w.close()
            if w.path in row:
                continue
            ts = times[w.path]
            row[w.path] = {
                "step_s": statistics.median(ts),
                "peak_mb": end.get("peak_mb"),
                "base_mb": w.info["base_mb"],
                "steps_s": ts,
            }
    return row


def table(results: dict, paths: list[str]) -> str:
    head = f"{'n':>3s} " + " ".join(f"{p:>24s}" for p in paths)
    lines = [head]
    for n, row in sorted(results.items(), key=lambda kv: int(kv[0])):
        cells = []
        for p in paths:
            r = row.get(p)
            if not r:
                cells.append(f"{'':>24s}")
            elif r.get("step_s") is None:
                cells.append(f"{'skipped':>24s}")
            else:
                cells.append(f"{r['step_s']:11.4f}s {r.get('peak_mb') or 0:9.0f}MB")
        lines.append(f"{int(n):3d} " + " ".join(cells))
    for n, row in sorted(results.items(), key=lambda kv: int(kv[0])):
        ex, jac, tb = (
            row.get(k, {}).get("step_s") for k in ("ours-exact", "ours-exact-jacobian", "torch")
        )
        parts = []
        if ex and tb:
            parts.append(f"ours-exact/torch {ex / tb:.2f}x")
        if ex and jac:
            parts.append(f"jacobian/lazy {jac / ex:.2f}x")
        if parts:
            lines.append(f"n={n}: " + ", ".join(parts))
    return "\n".join(lines)


def plot(results: dict, paths: list[str], path: str, config: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for p in paths:
        pts = sorted(
            (int(n), row[p]["step_s"])
            for n, row in results.items()
            if p in row and row[p].get("step_s")
        )
        if pts:
            ax.plot(*zip(*pts), marker="o", label=p)
    ax.set_yscale("log")
    ax.set_xlabel("qubits n")
    ax.set_ylabel("seconds per training step (median)")
    ax.set_title(
        f"HQML L={LAYERS}, batch {config['batch']}, forward+backward+Adam, "
        f"{config['threads']} thread(s)",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def versions() -> dict:
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for mod in ("torch", "qiskit", "qiskit_aer", "qiskit_machine_learning", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # report what is there
            out[mod] = None
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--qubits", default="4,8,12,16,20", help="comma-separated sizes")
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated paths")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--plot", default=None, help="PNG of step cost vs qubits")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=5, help="interleaved rounds (median)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device",
        default="cpu",
        help="cuda: the quantum engine of the ours-* paths on a CUDA device (heads stay on cpu)",
    )
    p.add_argument("--max-step-s", type=float, default=60.0, help="skip slower steps")
    p.add_argument("--slow-s", type=float, default=5.0, help="steps slower than this ...")
    p.add_argument("--slow-reps", type=int, default=2, help="... get this many rounds")
    p.add_argument("--sequential-from", type=int, default=18, help="one worker at a time")
    p.add_argument("--check-n", type=int, default=4, help="gradient check size (0: none)")
    p.add_argument("--pl-path", default=None, help="directory holding PennyLane (optional)")
    p.add_argument(
        "--append",
        action="store_true",
        help="add these sizes to the results already in --json (earlier sizes also predict skips)",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return
    try:
        sizes = [int(s) for s in args.qubits.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(
            f"--qubits must be comma-separated integers, got {args.qubits!r}"
        ) from None
    paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    bad = [s for s in paths if s not in PATHS]
    if bad or not sizes or min(sizes) < 2 or args.batch < 1 or args.reps < 1:
        raise SystemExit(
            f"bad arguments (unknown paths {bad}; sizes ≥ 2, batch ≥ 1, reps ≥ 1); "
            f"paths: {', '.join(PATHS)}"
        )
    config = {
        "seed": args.seed,
        "batch": args.batch,
        "layers": LAYERS,
        "classes": CLASSES,
        "reps": args.reps,
        "threads": args.threads,
        "device": args.device,
        "max_step_s": args.max_step_s,
        "qubits": sizes,
        "paths": paths,
        "cpu_count": os.cpu_count(),
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out = {"config": config, "results": {}}
    if args.append and args.json and os.path.exists(args.json):
        with open(args.json) as fh:
            old = json.load(fh)
        out["results"] = old.get("results", {})
        out["earlier_runs"] = old.get("earlier_runs", []) + [old.get("config")]
        if "gradient_check" in old:
            out["gradient_check"] = old["gradient_check"]
    if args.check_n:
        out["gradient_check"] = check = gradient_check(args, args.check_n)
        print("gradient check:", json.dumps(check), flush=True)
        worst = max(
            (v for k, v in check.items() if "_vs_" in k),
            default=float("inf"),
        )
        if "error" in check or worst > 1e-5:
            raise SystemExit(f"gradient check failed: {check}")
    for n in sizes:
        t0 = time.perf_counter()
        row = measure_size(args, n, paths, out["results"])
        out["results"].setdefault(str(n), {}).update(row)  # --append keeps other paths
        print(f"n={n} ({time.perf_counter() - t0:.0f} s)", flush=True)
        print(table({str(n): row}, paths), flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=1)
    every = [p for p in PATHS if any(p in row for row in out["results"].values())]
    print("\n" + table(out["results"], every))
    if args.plot:
        plot(out["results"], every, args.plot, config)


if __name__ == "__main__":
    main()
