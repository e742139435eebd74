"""The noisy exact engine: density matrices of a device-noise model in the Pauli basis, in torch.

``aer_noisy`` without shots asks for the exact expectation values of the noisy state. Aer's
density-matrix simulator gives them one parameter set at a time, and training with them needs
2P + 1 circuits per sample (parameter shift): an 8-qubit HQML batch of 64 costs ~3 s forward
and minutes with its gradient. This engine computes the same numbers for a whole batch, and
their exact gradient by reverse-mode differentiation, in a fraction of a second:

* Every instruction of the compact ISA circuit is a channel: its gate followed by the device
  noise Aer attaches to it. Fixed instructions (``sx``, ``x``, ``cz``, ...) get their channel
  from Aer itself (``AerSimulator(method="superop")`` on that one instruction with the noise
  model restricted to its qubits), so the noise is qiskit-aer's own; parameterised ones
  (``rz``) must be noiseless in the model (they are in IBM device models: virtual gates) and
  are built in closed form, differentiably.
* Channels act on the Pauli-basis vector of the state (its Pauli transfer matrix, real):
  a k-qubit state is 4**k real numbers, a two-qubit channel a 16×16 real matrix.
* The instructions that depend on the row (the data encoding) and the ones that must precede
  them run in the Schrödinger picture on *product clusters*: qubits not yet entangled keep
  their own 4-vector per row (an HQML encoding is eight of them). The rest of the circuit is
  the same for every row (the weights); it runs once, in the Heisenberg picture, on the
  observables — fused into one matrix per pair of qubits — and each row's value is the
  contraction of the propagated observables with its product state.
* Gradients: torch autograd through both parts. Weight gradients come out summed over the
  rows (all a ``TorchConnector`` backward needs); per-row gradients of row-independent
  parameters are computed row by row (exact, slower).

Checked against Aer's density-matrix estimator on the same compact circuit and noise model
(tests/test_density.py): agreement to 1e-12.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..exceptions import BadInputError

__all__ = ["NoisyCircuit", "pauli_basis", "ptm_from_superop", "ptm_from_unitary"]

_SKIP = frozenset({"barrier"})
_DT = torch.float64


@functools.lru_cache(maxsize=4)
def pauli_basis(m: int) -> np.ndarray:
    """The 4**m Pauli matrices on m qubits, (4**m, 2**m, 2**m); index Σ p_j 4**j with
    p_j ∈ (I, X, Y, Z) the Pauli on qubit j (qubit 0 the least significant bit of the matrix
    index, Qiskit's convention)."""
    single = np.array(
        [[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]],
        dtype=np.complex128,
    )
    out = single
    for _ in range(m - 1):
        # new qubit is the most significant: matrix kron(new, old), index p_old + 4 * p_new
        out = np.einsum("pab,qcd->qpcadb", out, single).reshape(
            out.shape[0] * 4, out.shape[1] * 2, out.shape[2] * 2
        )
    return out


def ptm_from_superop(superop: np.ndarray, m: int) -> np.ndarray:
    """The Pauli transfer matrix R[Q, P] = Tr(Q E(P)) / 2**m of a channel given as a Qiskit
    ``SuperOp`` matrix (column-stacking: vec(E(ρ)) = S vec(ρ))."""
    d = 2**m
    paulis = pauli_basis(m)
    vec = paulis.transpose(0, 2, 1).reshape(len(paulis), d * d)  # column-stacked vec(P)
    out = (superop @ vec.T).T.reshape(len(paulis), d, d).transpose(0, 2, 1)  # E(P)
    r = np.einsum("qab,pba->qp", paulis, out) / d
    if np.max(np.abs(r.imag)) > 1e-9:
        raise BadInputError("a noise channel is not Hermiticity-preserving; cannot simulate it")
    return np.ascontiguousarray(r.real)


def ptm_from_unitary(u: torch.Tensor) -> torch.Tensor:
    """Batched PTMs (B, 4**m, 4**m) of unitaries (B, 2**m, 2**m), differentiable."""
    d = u.shape[-1]
    m = d.bit_length() - 1
    paulis = torch.as_tensor(pauli_basis(m), dtype=u.dtype)
    moved = torch.einsum("bij,pjk,blk->bpil", u, paulis, u.conj())  # U P U†
    return torch.einsum("qli,bpil->bqp", paulis, moved).real / d


class _Op:
    __slots__ = ("qubits", "ptm", "build", "angles", "deps", "rz")

    def __init__(self, qubits, ptm=None, build=None, angles=None, deps=frozenset(), rz=False):
        self.rz = rz  # an rz/p/u1 rotation: PTM in closed form
        self.qubits = list(qubits)
        self.ptm = ptm  # fixed: (4**m, 4**m) numpy
        self.build = build  # parameterised: builder(angles) -> (B, d, d) unitary
        self.angles = angles
        self.deps = deps  # circuit parameter columns the op depends on


def _axis_perm(order: Sequence[int], qubits: Sequence[int]) -> list[int]:
    """Axes (after the leading batch axis) of ``qubits`` in a tensor over ``order``
    (flat index Σ p_{order[j]} 4**j), listed most significant first as a view needs them."""
    n = len(order)
    pos = {q: j for j, q in enumerate(order)}
    return [1 + (n - 1 - pos[q]) for q in reversed(qubits)]


def _apply(t: torch.Tensor, a: torch.Tensor, order: Sequence[int], qubits: Sequence[int]):
    """new[.., Q, ..] = Σ_P a[Q, P] t[.., P, ..] on the axes of ``qubits``; ``t`` is (Bt, 4**n)
    over ``order``; ``a`` is (4**m, 4**m) or per row (Bt, 4**m, 4**m)."""
    n = len(order)
    m = len(qubits)
    bt = t.shape[0]
    pos = [order.index(q) for q in qubits]
    dm = 4**m
    if a.dim() == 2 and all(pos[j] == pos[0] + j for j in range(m)):  # contiguous, in order
        lo = pos[0]
        x = t.reshape(bt * 4 ** (n - lo - m), dm, 4**lo)
        if lo == 0:
            return (x.reshape(-1, dm) @ a.T).reshape(bt, 4**n)
        return torch.matmul(a, x).reshape(bt, 4**n)
    x = t.reshape([bt] + [4] * n)
    axes = _axis_perm(order, qubits)
    rest = [i for i in range(n + 1) if i not in axes]
    perm = rest + axes
    y = x.permute(perm).reshape(bt, -1, dm)
    if a.dim() == 2:
        y = y @ a.T
    else:
        y = torch.einsum("bqp,bmp->bmq", a, y)
    y = y.reshape([x.shape[i] for i in perm])
    inv = [0] * (n + 1)
    for i, p in enumerate(perm):
        inv[p] = i
    return y.permute(inv).reshape(bt, 4**n)


class _Plan:
    """Prefix (row-dependent, product clusters) and suffix (shared, fused blocks) of a circuit
    for one set of row-varying columns."""

    def __init__(self, ops: list[_Op], num_qubits: int, varying: frozenset):
        n = len(ops)
        in_prefix = [False] * n
        needed: set[int] = set()  # qubits with a later prefix op
        for i in range(n - 1, -1, -1):
            op = ops[i]
            if op.deps & varying or needed.intersection(op.qubits):
                in_prefix[i] = True
                needed.update(op.qubits)
        # pull leading single-cluster ops of the suffix into the product prefix
        cluster = list(range(num_qubits))  # union-find over prefix merges

        def find(q):
            while cluster[q] != q:
                cluster[q] = cluster[cluster[q]]
                q = cluster[q]
            return q

        started: set[int] = set()
        for i, op in enumerate(ops):
            if in_prefix[i]:
                roots = {find(q) for q in op.qubits}
                first = roots.pop()
                for r in roots:
                    cluster[r] = first
                continue
            same = len({find(q) for q in op.qubits}) == 1
            if not started.intersection(op.qubits) and same:
                in_prefix[i] = True
            else:
                started.update(op.qubits)
        self.prefix = _merge_fixed([op for i, op in enumerate(ops) if in_prefix[i]])
        suffix = [op for i, op in enumerate(ops) if not in_prefix[i]]
        # per block: its qubits and its factors, runs of fixed operations multiplied out once
        self.blocks: list[tuple[list[int], list]] = []
        for qubits, body in _fuse(suffix):
            items: list = []
            for op in body:
                if op.ptm is None:
                    items.append(op)
                    continue
                mat = _embed(torch.as_tensor(op.ptm), op.qubits, qubits)
                if items and torch.is_tensor(items[-1]):
                    items[-1] = mat @ items[-1]
                else:
                    items.append(mat)
            self.blocks.append((qubits, items))


def _merge_fixed(ops: list[_Op]) -> list[_Op]:
    """Multiply out consecutive fixed single-qubit operations on the same qubit."""
    out: list[_Op] = []
    last: dict[int, int] = {}  # qubit → index in ``out`` of the last operation on it
    for op in ops:
        if op.ptm is not None and len(op.qubits) == 1:
            i = last.get(op.qubits[0])
            if i is not None and out[i].ptm is not None and len(out[i].qubits) == 1:
                out[i] = _Op(op.qubits, ptm=op.ptm @ out[i].ptm)
                continue
        out.append(op)
        for q in op.qubits:
            last[q] = len(out) - 1
    return out


def _embed(r: torch.Tensor, op_qubits: list[int], qubits: list[int]) -> torch.Tensor:
    """A PTM on ``op_qubits`` as a PTM on ``qubits`` (a superset), identity elsewhere."""
    if list(op_qubits) == list(qubits):
        return r
    dim = 4 ** len(qubits)
    return _apply(torch.eye(dim, dtype=r.dtype), r, list(qubits), list(op_qubits)).T


def _fuse(ops: list[_Op]) -> list[tuple[list[int], list[_Op]]]:
    """Group consecutive operations into blocks on at most two qubits (order kept per qubit)."""
    blocks: list[tuple[list[int], list[_Op]]] = []
    open_block: dict[int, int] = {}
    pending: dict[int, list[_Op]] = {}

    def close(b: int) -> None:
        for q in blocks[b][0]:
            if open_block.get(q) == b:
                del open_block[q]

    for op in ops:
        qs = op.qubits
        if len(qs) == 1:
            b = open_block.get(qs[0])
            if b is not None:
                blocks[b][1].append(op)
            else:
                pending.setdefault(qs[0], []).append(op)
            continue
        bs = {open_block[q] for q in qs if q in open_block}
        if len(bs) == 1 and all(q in open_block for q in qs):
            (b,) = bs
            if set(blocks[b][0]) == set(qs):
                blocks[b][1].append(op)
                continue
        for b in bs:
            close(b)
        body: list[_Op] = []
        for q in qs:
            body.extend(pending.pop(q, []))
        body.append(op)
        blocks.append((sorted(qs) if len(qs) == 2 else list(qs), body))
        for q in qs:
            open_block[q] = len(blocks) - 1
    for q, body in pending.items():
        blocks.append(([q], body))
    return blocks


def _distinct(items: list) -> list:
    """``items`` without repeats (by identity), in first-seen order."""
    seen: set[int] = set()
    out = []
    for item in items:
        if id(item) not in seen:
            seen.add(id(item))
            out.append(item)
    return out


def _kron_clusters(parts) -> tuple[list[int], torch.Tensor]:
    """The product state of several clusters: (qubit order, (B, 4**total))."""
    order: list[int] = []
    t = torch.ones((1, 1), dtype=_DT)
    for o, v in parts:
        t = (t[:, None, :] * v[:, :, None]).reshape(max(t.shape[0], v.shape[0]), -1)
        order = order + list(o)
    return order, t


class NoisyCircuit:
    """A compact ISA circuit with its device noise, compiled for batched exact evaluation.

    Args:
        circuit: the compact circuit (no measurements; barriers allowed).
        channel: ``channel(operation, qubits)`` → the PTM (4**m, 4**m) of the fixed instruction
            with its noise, or ``None`` when the instruction is noiseless.
        noisy: instruction names the noise model attaches errors to (a parameterised one is
            refused: its channel would depend on the angle).
    """

    def __init__(self, circuit, channel: Callable, noisy: frozenset):
        from .lowering import Expressions, _leaf

        self.num_qubits = circuit.num_qubits
        self.parameters = list(circuit.parameters)
        self.expressions = Expressions(self.parameters)
        self._plans: dict[frozenset, _Plan] = {}
        self._lock = threading.Lock()
        self.ops: list[_Op] = []
        for inst in circuit.data:
            op = inst.operation
            name = op.name
            if name in _SKIP:
                continue
            qubits = [circuit.find_bit(q).index for q in inst.qubits]
            if inst.clbits or name in ("measure", "reset") or not hasattr(op, "params"):
                raise BadInputError(
                    f"the noisy exact engine evaluates gate circuits; '{name}' is not supported "
                    "(use --engine aer)"
                )
            parameterised = any(getattr(p, "parameters", None) for p in op.params)
            if not parameterised:
                ptm = channel(op, qubits)
                if ptm is None:
                    u = torch.as_tensor(np.array(op.to_matrix(), dtype=np.complex128))
                    ptm = ptm_from_unitary(u[None])[0].cpu().numpy()
                self.ops.append(_Op(qubits, ptm=np.asarray(ptm, dtype=np.float64)))
                continue
            if name in noisy:
                raise BadInputError(
                    f"the device model puts noise on the parameterised gate '{name}'; the noisy "
                    "exact engine cannot build that channel per angle (use --engine aer)"
                )
            leaf = _leaf(op, qubits, self.expressions)
            if leaf is None or leaf.kind not in ("rot1", "pdense", "pdiag"):
                raise BadInputError(
                    f"gate '{name}' with parameters is not supported by the noisy exact engine "
                    "(use --engine aer)"
                )
            self.ops.append(self._param_op(leaf))

    def _param_op(self, leaf) -> _Op:
        from .lowering import rot_matrix

        if leaf.kind == "rot1":
            name, angles = leaf.data

            def build(a, name=name):
                return rot_matrix(name, a)

        elif leaf.kind == "pdense":
            builder, angles = leaf.data

            def build(a, builder=builder):
                return builder(a)

        else:  # pdiag: exp(i·angle·g) on the diagonal
            angle, gen = leaf.data
            angles = [angle]
            g = torch.as_tensor(np.asarray(gen, dtype=np.float64))

            def build(a, g=g):
                return torch.diag_embed(torch.exp(1j * a[0][:, None] * g[None, :]))

        deps: set[int] = set()
        num = len(self.parameters)
        for ang in angles:
            for c in ang.index.tolist():
                if c < num:
                    deps.add(int(c))
                else:
                    deps.update(int(x) for x in self.expressions._funcs[c - num][0])
        rz = leaf.kind == "rot1" and leaf.data[0] in ("rz", "p", "u1")
        return _Op(leaf.qubits, build=build, angles=angles, deps=frozenset(deps), rz=rz)

    # ----------------------------------------------------------------------------- evaluation
    def _plan(self, varying: frozenset) -> _Plan:
        with self._lock:
            plan = self._plans.get(varying)
            if plan is None:
                plan = _Plan(self.ops, self.num_qubits, varying)
                self._plans[varying] = plan
            return plan

    def _ptm(self, op: _Op, ext: torch.Tensor) -> torch.Tensor:
        if op.ptm is not None:
            return torch.as_tensor(op.ptm)
        angles = [a.evaluate(ext) for a in op.angles]
        if op.rz:  # rotation of the X–Y Bloch plane by the angle
            c, s = torch.cos(angles[0]), torch.sin(angles[0])
            one, zero = torch.ones_like(c), torch.zeros_like(c)
            rows = [
                torch.stack([one, zero, zero, zero], -1),
                torch.stack([zero, c, -s, zero], -1),
                torch.stack([zero, s, c, zero], -1),
                torch.stack([zero, zero, zero, one], -1),
            ]
            return torch.stack(rows, -2)
        return ptm_from_unitary(op.build(angles).to(torch.complex128))

    def _block_matrix(self, qubits: list[int], items: list, ext: torch.Tensor) -> torch.Tensor:
        """The fused Schrödinger PTM of a block (shared: from the first row)."""
        mat = None
        for item in items:
            if torch.is_tensor(item):
                emb = item
            else:
                r = self._ptm(item, ext)
                emb = _embed(r[0] if r.dim() == 3 else r, item.qubits, qubits)
            mat = emb if mat is None else emb @ mat
        assert mat is not None
        return mat

    def _prefix_clusters(self, plan: _Plan, ext: torch.Tensor, rows: int):
        """Per-row product clusters after the prefix: list of (qubit order, (Bc, 4**len))."""
        zero = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=_DT)
        clusters: dict[int, tuple[list[int], torch.Tensor]] = {
            q: ([q], zero) for q in range(self.num_qubits)
        }
        for op in plan.prefix:
            parts = _distinct([clusters[q] for q in op.qubits])
            if len(parts) > 1:  # merge: the later clusters' qubits become more significant
                merged = _kron_clusters(parts)
                for q in merged[0]:
                    clusters[q] = merged
            order, t = clusters[op.qubits[0]]
            r = self._ptm(op, ext)
            if r.dim() == 3 and t.shape[0] != r.shape[0]:
                t = t.expand(r.shape[0], -1)
            updated = (order, _apply(t, r, order, op.qubits))
            for q in order:
                clusters[q] = updated
        return _distinct([clusters[q] for q in range(self.num_qubits)])

    def _observable_matrix(self, observables) -> torch.Tensor:
        k = self.num_qubits
        code = {"I": 0, "X": 1, "Y": 2, "Z": 3}
        out = np.zeros((len(observables), 4**k))
        for o, op in enumerate(observables):
            for label, indices, coeff in op.to_sparse_list():
                c = complex(coeff)
                if abs(c.imag) > 1e-12:
                    raise BadInputError(
                        "the noisy exact engine needs Hermitian observables (real Pauli "
                        "coefficients)"
                    )
                idx = sum(code[p] * 4**q for p, q in zip(label, indices))
                out[o, idx] += c.real
        return torch.as_tensor(out)

    def expectation(self, values, observables) -> torch.Tensor:
        """(N, O) exact noisy expectation values, differentiable w.r.t. ``values`` (N, P)."""
        values = torch.as_tensor(values, dtype=_DT)
        if values.dim() != 2 or values.shape[1] != len(self.parameters):
            raise BadInputError(
                f"expected values of shape (N, {len(self.parameters)}), got {tuple(values.shape)}"
            )
        rows = values.shape[0]
        if rows == 0:
            return values.new_zeros((0, len(observables)))
        with torch.no_grad():
            varying = frozenset(
                np.flatnonzero(
                    (values.max(0).values != values.min(0).values).cpu().numpy()
                ).tolist()
            )
        plan = self._plan(varying)
        ext = self.expressions.extend(values)
        obs = self._observable_matrix(observables)
        k = self.num_qubits
        order = list(range(k))
        for qubits, body in reversed(plan.blocks):  # Heisenberg: c ← c R
            obs = _apply(obs, self._block_matrix(qubits, body, ext[:1]).T, order, qubits)
        clusters = self._prefix_clusters(plan, ext, rows)
        # value[b, o] = Σ_{h,l} c[o, h, l] v_hi[b, h] v_lo[b, l]: the clusters' product states
        # split into two halves of the register, one GEMM with an inner dimension of 4**(k/2)
        lo_parts, hi_parts, size = [], [], 0
        for part in clusters:
            if size < (k + 1) // 2:
                lo_parts.append(part)
                size += len(part[0])
            else:
                hi_parts.append(part)
        lo_order, v_lo = _kron_clusters(lo_parts)
        hi_order, v_hi = _kron_clusters(hi_parts)
        x = obs.reshape([obs.shape[0]] + [4] * k)
        perm = [0] + [1 + (k - 1 - q) for q in reversed(lo_order + hi_order)]
        t = x.permute(perm).reshape(obs.shape[0] * 4 ** len(hi_order), 4 ** len(lo_order))
        t = (t @ v_lo.T).reshape(obs.shape[0], 4 ** len(hi_order), v_lo.shape[0])
        result = (t * v_hi.T[None]).sum(1)  # (O, B)
        if result.shape[1] != rows:
            result = result.expand(-1, rows)
        return result.T

    # ------------------------------------------------------------------------- gradients
    def forward_for_vjp(self, values: np.ndarray, observables):
        """Values (N, O) and ``pullback(cotangent (N, O), columns, sum_rows=())`` → (N, C).

        ``sum_rows``: positions in ``columns`` whose gradient the caller only sums over the
        rows; they come back as the row sum in row 0 (zeros elsewhere) without a pass per row.
        Other columns are exact per row."""
        vals = torch.as_tensor(np.asarray(values, dtype=np.float64)).clone().requires_grad_(True)
        with torch.enable_grad():
            out = self.expectation(vals, observables)
        forward = out.detach().cpu().numpy().copy()
        with torch.no_grad():
            varying = (vals.max(0).values != vals.min(0).values).cpu().numpy()

        def pullback(cotangent, columns=None, sum_rows=()):
            cot = torch.as_tensor(np.asarray(cotangent, dtype=np.float64))
            cols = list(range(vals.shape[1])) if columns is None else list(columns)
            (grad,) = torch.autograd.grad(out, vals, cot, retain_graph=True)
            res = grad[:, cols].cpu().numpy().copy()
            summed = set(sum_rows)
            per_row = []
            for j, c in enumerate(cols):
                if varying[c]:
                    continue  # used by the row's own prefix only: exact per row
                if j in summed:
                    total = res[:, j].sum()
                    res[:, j] = 0.0
                    res[0, j] = total
                else:
                    per_row.append(j)
            if per_row and vals.shape[0] > 1:  # exact per-row values: one pass per row
                for b in range(vals.shape[0]):
                    row = vals.detach()[b : b + 1].clone().requires_grad_(True)
                    with torch.enable_grad():
                        o = self.expectation(row, observables)
                    (g,) = torch.autograd.grad(o, row, cot[b : b + 1])
                    res[b, per_row] = g[0, [cols[j] for j in per_row]].cpu().numpy()
            return res

        return forward, pullback

    def value_and_jacobian(self, values: np.ndarray, observables, columns=None):
        """Values (N, O) and the exact Jacobian (N, O, C), row by row."""
        vals = np.asarray(values, dtype=np.float64)
        cols = list(range(vals.shape[1])) if columns is None else list(columns)
        outs, jacs = [], []
        for b in range(len(vals)):
            row = torch.as_tensor(vals[b : b + 1]).clone().requires_grad_(True)
            with torch.enable_grad():
                o = self.expectation(row, observables)[0]
                jac = torch.stack(
                    [
                        torch.autograd.grad(o[i], row, retain_graph=True)[0][0, cols]
                        for i in range(o.shape[0])
                    ]
                )
            outs.append(o.detach().cpu().numpy())
            jacs.append(jac.cpu().numpy())
        return np.array(outs), np.array(jacs)
