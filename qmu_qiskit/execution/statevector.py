"""Vectorised exact statevector evaluation of parameterised Qiskit circuits, in torch.

This is the engine behind the noiseless ``aer`` backend's exact path. It was chosen by
measurement (docs/execution.md, ``benchmarks/bench_training.py``): for the small, wide-batch
circuits of QML training, the fixed cost of one simulator call dominates, and a batched
statevector with autograd is the fastest exact evaluator available here — Aer with runtime
parameter binding needs about 0.6 s per Iris epoch and 14.5 s per 8-qubit epoch
(docs/measurements.md), a batched torch statevector about 200× less.

A :class:`CompiledCircuit` is built once per circuit structure. It turns the circuit into a short
program of vectorised steps:

* runs of single-qubit gates between multi-qubit gates become one *segment*: every gate's 2×2
  matrix is built for the whole batch at once (one tensor op per gate kind), the per-qubit products
  are formed with batched matmuls, and each active qubit gets one einsum on the state;
* diagonal gates (CZ, CP, RZZ, ...) are merged into one phase vector;
* gates that permute basis states (CX, SWAP, Toffoli, ...) collect in a pending permutation
  that diagonals are conjugated through, applied as one gather when an amplitude-mixing gate
  follows;
* other gates apply their (fixed or parameterised) unitary to their qubits.

The circuit is first lowered by :mod:`qmu_qiskit.execution.lowering`: composite instructions are
decomposed, every gate angle becomes affine in a column of an extended value matrix (non-affine
expressions are per-sample virtual columns, their gradients folded back by the chain rule). A
leading ``ParameterizedInitialize`` (qiskit-machine-learning's ``raw_feature_vector``) loads the
L2-normalised parameter vector as the initial state (amplitude encoding). Qubit order follows
Qiskit: qubit 0 is the least significant bit of the basis-state index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..exceptions import BadInputError
from .lowering import (
    Angle,
    Expressions,
    Leaf,
    builder_derivatives,
    flatten,
    rot_derivatives,
    rot_matrix,
    stack2,
)

# Rotations exp(-i a/2 σ): their derivative generator G^† dG = -i/2 σ is constant.
_PAULI_GENERATOR = {
    "rx": [[0, 1], [1, 0]],
    "ry": [[0, -1j], [1j, 0]],
    "rz": [[1, 0], [0, -1]],
}
_Angle = Angle
_rot_matrix = rot_matrix
_stack2 = stack2
_rot_derivatives = rot_derivatives
# rz / p / u1 as exp(i a g) with g over the qubit's bit (for the permuted-frame diagonals)
_ROT1_DIAGONAL = {"rz": [-0.5, 0.5], "p": [0.0, 1.0], "u1": [0.0, 1.0]}


class _Segment:
    """A run of single-qubit gates, vectorised over gates and qubits.

    At compile time the gates are grouped by kind; each kind keeps, per angle argument, a dense
    (P, G) coefficient matrix, so all its angles for the batch come from one matmul. The gates'
    matrices are then gathered into a (B, Q, S, 2, 2) slot tensor (padded with identities), whose
    per-qubit products take S-1 batched matmuls.
    """

    def __init__(self, qubits: list[int], slots: list[list[tuple]], num_parameters: int):
        self.qubits = qubits
        self.kinds: list[tuple[str, list[np.ndarray], list[np.ndarray]]] = []
        self.kind_slots: list[np.ndarray] = []  # per kind: (G, 2) array of (qubit slot, position)
        fixed: list[np.ndarray] = []
        flat_of: dict[tuple[int, int], int] = {}
        by_kind: dict[str, list[tuple[int, int, list[_Angle]]]] = {}
        for qi, gates in enumerate(slots):
            for si, (kind, payload) in enumerate(gates):
                if kind == "param":
                    by_kind.setdefault(payload[0], []).append((qi, si, payload[1]))
        offset = 0
        for name, entries in by_kind.items():
            nargs = len(entries[0][2])
            coeffs, offs = [], []
            for k in range(nargs):
                c = np.zeros((num_parameters, len(entries)))
                o = np.zeros(len(entries))
                for g, (_, _, angles) in enumerate(entries):
                    a = angles[k]
                    c[a.index, g] += a.coeffs
                    o[g] = a.offset
                coeffs.append(c)
                offs.append(o)
            self.kinds.append((name, coeffs, offs))
            self.kind_slots.append(np.array([(qi, si) for qi, si, _ in entries], dtype=np.int64))
            for g, (qi, si, _) in enumerate(entries):
                flat_of[(qi, si)] = offset + g
            offset += len(entries)
        for qi, gates in enumerate(slots):
            for si, (kind, payload) in enumerate(gates):
                if kind == "fixed":
                    flat_of[(qi, si)] = offset + len(fixed)
                    fixed.append(payload)
        # Every (gate, angle argument) pair in the order _segment_gradient visits them.
        deriv = [
            (qi, si)
            for (name, coeffs, _), where in zip(self.kinds, self.kind_slots)
            for _ in coeffs
            for qi, si in where
        ]
        self.deriv_slots = (
            torch.as_tensor(np.array([d[0] for d in deriv], dtype=np.int64)),
            torch.as_tensor(np.array([d[1] for d in deriv], dtype=np.int64)),
        )
        identity = offset + len(fixed)
        fixed.append(np.eye(2, dtype=np.complex128))
        self.fixed = np.stack(fixed)
        depth = max(len(g) for g in slots)
        gather = np.full((len(qubits), depth), identity, dtype=np.int64)
        for (qi, si), flat in flat_of.items():
            gather[qi, si] = flat
        self.gather = gather
        self._tensors: dict = {}
        # the value columns the segment's angles read: when they are equal in every row (a
        # weight layer), the batch shares one set of matrices
        used = set()
        for _, coeffs, _ in self.kinds:
            for c in coeffs:
                used.update(np.flatnonzero(np.any(c != 0, axis=1)).tolist())
        self.used_columns = torch.as_tensor(sorted(used), dtype=torch.int64)

    def deriv_coeffs(self, coeff_cols, rdtype) -> torch.Tensor:
        """The (P, D) chain-rule matrix from angle derivatives to parameter derivatives."""
        key = ("deriv", rdtype)
        if key not in self._tensors:
            self._tensors[key] = torch.cat(coeff_cols, 1)
        return self._tensors[key]

    def tensors(self, rdtype, cdtype):
        key = (rdtype, cdtype)
        if key not in self._tensors:
            self._tensors[key] = (
                [
                    (
                        name,
                        [torch.as_tensor(c, dtype=rdtype) for c in cs],
                        [torch.as_tensor(o, dtype=rdtype) for o in os],
                    )
                    for name, cs, os in self.kinds
                ],
                torch.as_tensor(self.fixed, dtype=cdtype),
                torch.as_tensor(self.gather.reshape(-1)),
            )
        return self._tensors[key]


@dataclass
class _Diagonal:
    """A product of diagonal gates: fixed phase vector times exp(i * values @ generator)."""

    fixed: np.ndarray  # (2**n,) complex
    angles: list[_Angle] = field(default_factory=list)
    generators: list[np.ndarray] = field(default_factory=list)  # each (2**n,) real


@dataclass
class _Dense:
    """A multi-qubit gate applied with its full unitary."""

    qubits: list[int]
    matrix: np.ndarray | None  # fixed unitary, or None when parameterised
    build: object = None  # parameterised: angles -> (B, 2**k, 2**k), see lowering.gate_builder
    angles: list[_Angle] = field(default_factory=list)


@dataclass
class _Permutation:
    """A fixed gate (or product of gates) that maps basis states to basis states with phases:
    (M ψ)[i] = phase[i] ψ[src[i]]."""

    src: np.ndarray
    phase: np.ndarray
    _tensors: dict = field(default_factory=dict)

    def tensors(self, cdtype):
        if cdtype not in self._tensors:
            inverse = np.empty_like(self.src)
            inverse[self.src] = np.arange(len(self.src))
            ones = bool(np.all(self.phase == 1))
            phase = None if ones else torch.as_tensor(self.phase, dtype=cdtype)
            self._tensors[cdtype] = (torch.as_tensor(self.src), torch.as_tensor(inverse), phase)
        return self._tensors[cdtype]

    def apply(self, state: torch.Tensor) -> torch.Tensor:
        src, _, phase = self.tensors(state.dtype)
        out = state[..., src]
        return out if phase is None else out * phase

    def apply_adjoint(self, state: torch.Tensor) -> torch.Tensor:
        _, inverse, phase = self.tensors(state.dtype)
        if phase is not None:
            state = state * phase.conj()
        return state[..., inverse]


class CompiledCircuit:
    """A parameterised circuit compiled to batched torch operations.

    Any unitary Qiskit circuit is accepted: composite instructions are decomposed once (see
    :mod:`qmu_qiskit.execution.lowering`), gate angles may be any real expression of the
    parameters (non-affine ones are evaluated per sample, with exact chain-rule gradients), and
    trailing measurements should be removed by the caller.

    Args:
        circuit: the circuit; its ``parameters`` order (Qiskit's sorted order) is the column order
            of the ``values`` given to :meth:`statevector` and :meth:`expectation`.

    Raises:
        BadInputError: the circuit contains measurements, classical control, a reset or
            ``initialize`` after a gate acted on the qubit, or a parameterised gate without a
            closed form or parameter-safe definition.

    Example:
        >>> cc = CompiledCircuit(circuit)
        >>> evs = cc.expectation(torch.rand(64, circuit.num_parameters), observables)
    """

    def __init__(self, circuit):
        self.num_qubits = circuit.num_qubits
        self.parameters = list(circuit.parameters)
        self.num_parameters = len(self.parameters)
        self._expressions = Expressions(self.parameters)
        leaves, phase, phase_angles = flatten(circuit, self._expressions)
        # A global phase changes statevectors, never expectation values or probabilities: it is
        # applied to :meth:`statevector` output and contributes nothing to gradients.
        self.global_phase = phase
        self._phase_angles = phase_angles
        self._num_columns = self._expressions.num_columns
        self._init_amplitudes: np.ndarray | None = None
        self._program: list = []
        self._compile(leaves)
        self._observable_cache: dict = {}

    # ------------------------------------------------------------------ compilation
    def _compile(self, leaves: list[Leaf]) -> None:
        """Turn the leaves into vectorised steps.

        Besides grouping single-qubit runs into segments and merging diagonals, gates that only
        permute basis states (CX, SWAP, Toffoli, X, with phases) are not applied one by one: they
        accumulate in a pending permutation ``frame`` (true state = frame · computed state), and
        diagonal gates met meanwhile are conjugated into the computed frame, where they stay
        diagonal. A ZZ feature map's CX · P(φ) · CX ladders thus become one phase vector; the
        frame is applied as one gather before the next gate that mixes amplitudes.
        """
        n = self.num_qubits
        dim = 2**n
        pending: dict[int, list[tuple]] = {}
        diag: _Diagonal | None = None
        frame: list = [None]  # (src, phase) with (M s)[i] = phase[i] s[src[i]], or None for I

        def flush_segment():
            keys = sorted(pending)
            if not keys:
                return
            flush_diag()
            seg = _Segment(keys, [pending.pop(q) for q in keys], self._num_columns)
            self._program.append(seg)

        def flush_diag():
            nonlocal diag
            if diag is not None:
                self._program.append(diag)
                diag = None

        def flush_frame():
            flush_segment()
            flush_diag()
            if frame[0] is not None:
                src, phase = frame[0]
                frame[0] = None
                if not np.array_equal(src, np.arange(dim)) or np.any(phase != 1):
                    self._program.append(_Permutation(src=src, phase=phase))

        def get_diag() -> _Diagonal:
            nonlocal diag
            if diag is None:
                diag = _Diagonal(fixed=np.ones(dim, dtype=np.complex128))
            return diag

        def to_frame(vec: np.ndarray) -> np.ndarray:
            """A diagonal D (full space) in the computed frame: M^-1 D M, d'[src[i]] = d[i]."""
            if frame[0] is None:
                return vec
            out = np.empty_like(vec)
            out[frame[0][0]] = vec
            return out

        def add_diagonal(qubits, *, fixed=None, angle=None, gen=None):
            # The pending single-qubit gates on its qubits happen first. Flushing every pending
            # gate (not just those) is equally correct — gates on other qubits commute with this
            # diagonal — and keeps whole layers in one vectorised segment.
            if any(q in pending for q in qubits):
                flush_segment()
            d = get_diag()
            if fixed is not None:
                d.fixed = d.fixed * to_frame(_embed_diagonal(fixed, qubits, n))
            else:
                d.angles.append(angle)
                d.generators.append(to_frame(_embed_diagonal(gen, qubits, n)))

        for leaf in leaves:
            qubits = leaf.qubits
            if leaf.kind == "amplitudes":
                # flatten() guarantees it is the first operation, on every qubit
                self._init_amplitudes = leaf.data
                continue
            matrix = leaf.data if leaf.kind == "fixed" else None
            if matrix is not None and _is_diagonal_matrix(matrix):
                if len(qubits) == 1 and frame[0] is None:
                    pending.setdefault(qubits[0], []).append(("fixed", matrix))
                else:
                    add_diagonal(qubits, fixed=np.diag(matrix))
                continue
            if leaf.kind == "pdiag":
                angle, gen = leaf.data
                add_diagonal(qubits, angle=angle, gen=gen)
                continue
            monomial = _monomial(matrix) if matrix is not None else None
            if monomial is not None and (len(qubits) > 1 or frame[0] is not None):
                # earlier single-qubit gates come first; the open diagonal (in the computed
                # frame) stays open: later diagonals are conjugated into the same frame
                flush_segment()
                gsrc, gphase = _embed_monomial(*monomial, qubits, n)
                if frame[0] is None:
                    frame[0] = (gsrc, gphase)
                else:
                    src, phase = frame[0]
                    frame[0] = (src[gsrc], gphase * phase[gsrc])
                continue
            if leaf.kind == "rot1" and frame[0] is not None:
                name, angles = leaf.data
                gen = _ROT1_DIAGONAL.get(name)
                if gen is not None:  # rz / p / u1 stay diagonal in the permuted frame
                    add_diagonal(qubits, angle=angles[0], gen=np.asarray(gen))
                    continue
            if frame[0] is not None:
                flush_frame()
            if leaf.kind == "rot1":
                pending.setdefault(qubits[0], []).append(("param", leaf.data))
                continue
            if matrix is not None and len(qubits) == 1:
                pending.setdefault(qubits[0], []).append(("fixed", matrix))
                continue
            # a dense gate must see all earlier pending gates that touch the state
            flush_segment()
            flush_diag()
            if matrix is not None:
                self._program.append(_Dense(qubits=qubits, matrix=matrix))
            else:
                build, angles = leaf.data
                self._program.append(_Dense(qubits=qubits, matrix=None, build=build, angles=angles))
        flush_frame()

    # ------------------------------------------------------------------ evaluation
    def _check(self, values: torch.Tensor) -> torch.Tensor:
        """Validate (B, P) values; a 1-D vector of length P (P may be 0) is one row."""
        if values.dim() == 1 and values.shape[0] == self.num_parameters:
            values = values[None, :]
        if values.dim() != 2 or values.shape[1] != self.num_parameters:
            raise BadInputError(
                f"expected parameter values of shape (batch, {self.num_parameters}), "
                f"got {tuple(values.shape)}"
            )
        if not values.is_floating_point():
            values = values.to(torch.float64)
        return values

    def _zero_state(self, batch: int, cdtype) -> torch.Tensor:
        state = torch.zeros(batch, 2**self.num_qubits, dtype=cdtype)
        state[:, 0] = 1
        return state

    def _run(self, values: torch.Tensor) -> torch.Tensor:
        """Evolve the batch, global phase included."""
        values = self._check(values)
        ext = self._expressions.extend(values)
        state = self._evolve(ext)
        if self.global_phase:
            state = state * complex(np.exp(1j * self.global_phase))
        if self._phase_angles:
            phase = torch.stack([a.evaluate(ext) for a in self._phase_angles], 1).sum(1)
            state = state * torch.exp(1j * phase).to(state.dtype)[:, None]
        return state

    def _evolve(self, values: torch.Tensor, tape: list | None = None) -> torch.Tensor:
        """Evolve the batch without the global phase (``values`` over the extended columns);
        when ``tape`` is a list, record what the adjoint sweep needs."""
        n = self.num_qubits
        cdtype = torch.complex128 if values.dtype == torch.float64 else torch.complex64
        batch = values.shape[0]
        state: Any = None  # None stands for |0...0>, so a first layer can build a product state
        if self._init_amplitudes is not None:
            amps = values[:, self._init_amplitudes]
            norm = torch.linalg.vector_norm(amps, dim=1, keepdim=True).clamp_min(1e-12)
            state = (amps / norm).to(cdtype)
            if tape is not None:
                tape.append(("init", None, state, norm))
        for step in self._program:
            if state is None and not (isinstance(step, _Segment) and _uses_kron(n, step)):
                state = self._zero_state(batch, cdtype)
            state_in = state
            if isinstance(step, _Segment):
                slots, prefix, prod = self._segment_matrices(step, values, cdtype)
                state = self._apply_segment(state, step, prod, batch)
                if tape is not None:
                    tape.append((step, state_in, state, (slots, prefix, prod)))
            elif isinstance(step, _Diagonal):
                phase = self._diagonal_phase(step, values, cdtype)
                state = state * phase
                if tape is not None:
                    tape.append((step, state_in, state, phase))
            elif isinstance(step, _Permutation):
                state = step.apply(state)
                if tape is not None:
                    tape.append((step, state_in, state, None))
            elif step.matrix is not None:
                state = _apply_dense(state, step.matrix, step.qubits, n, cdtype)
                if tape is not None:
                    tape.append((step, state_in, state, None))
            else:
                angles = [a.evaluate(values) for a in step.angles]
                mat = step.build(angles).to(cdtype)
                state = _apply_batched(state, mat, step.qubits, n)
                if tape is not None:
                    tape.append((step, state_in, state, (angles, mat)))
        if state is None:
            state = self._zero_state(batch, cdtype)
        return state

    def statevector(self, values: torch.Tensor) -> torch.Tensor:
        """Batched statevectors (differentiable with torch autograd).

        Args:
            values: real tensor (B, num_parameters), columns in ``self.parameters`` order.

        Returns:
            complex tensor (B, 2**num_qubits).
        """
        return self._run(values)

    def _diagonal_phase(self, step: _Diagonal, values, cdtype) -> torch.Tensor:
        phase = torch.as_tensor(step.fixed, dtype=cdtype)
        if step.angles:
            angles = torch.stack([a.evaluate(values) for a in step.angles], 1)
            gens = torch.as_tensor(np.stack(step.generators), dtype=values.dtype)
            phase = phase * torch.exp(1j * (angles @ gens)).to(cdtype)
        return phase

    def _segment_matrices(self, seg: _Segment, values, cdtype):
        """The gates' matrices in slot layout (B, Q, S, 2, 2), their prefix products
        (B, Q, S+1, 2, 2) with prefix[:, :, 0] = I, and the per-qubit products (B, Q, 2, 2).

        When every row gives the segment the same angles (the weight layers of a QML batch), the
        matrices are built once and expanded over the batch (stride 0), which
        :meth:`_apply_segment` applies as shared unitaries (one matmul for the whole batch).
        Not under autograd, which must see every row's angles."""
        batch = values.shape[0]
        # (never under autograd: building from row 0 would drop the other rows' gradients)
        if batch > 1 and not (values.requires_grad and torch.is_grad_enabled()):
            cols = seg.used_columns
            sub = values.index_select(1, cols) if len(cols) else None
            if sub is None or bool((sub == sub[:1]).all()):
                slots, row_prefix, prod = self._segment_matrices(seg, values[:1], cdtype)

                def expand(t):
                    return None if t is None else t.expand(batch, *t.shape[1:])

                return expand(slots), [expand(p) for p in row_prefix], expand(prod)
        kinds, fixed, gather = seg.tensors(values.dtype, cdtype)
        mats = []
        for name, coeffs, offs in kinds:
            angles = [values @ c + o for c, o in zip(coeffs, offs)]  # each (B, G)
            mats.append(_rot_matrix(name, angles).to(cdtype))  # (B, G, 2, 2)
        mats.append(fixed.expand(batch, *fixed.shape))
        allm = torch.cat(mats, 1) if len(mats) > 1 else mats[0]
        slots = allm.index_select(1, gather).reshape(batch, *seg.gather.shape, 2, 2)
        prefix: list[torch.Tensor | None] = [None] * (slots.shape[2] + 1)
        prod = slots[:, :, 0]
        prefix[1] = prod
        for s in range(1, slots.shape[2]):
            prod = slots[:, :, s] @ prod
            prefix[s + 1] = prod
        return slots, prefix, prod

    def _apply_segment(self, state, seg: _Segment, prod, batch, adjoint=False) -> torch.Tensor:
        """Apply the segment's per-qubit unitaries (or their adjoints) to a state of shape
        (B, 2**n) or (B, O, 2**n)."""
        n = self.num_qubits
        shared = batch > 1 and prod.stride(0) == 0  # one set of matrices for every row
        if shared:
            prod = prod[0]
        if adjoint:
            prod = prod.conj().transpose(-1, -2)
        if shared and state is not None:
            return _apply_shared_segment(state, prod, seg.qubits, n)
        if shared:
            prod = prod.expand(batch, *prod.shape)
        if not _uses_kron(n, seg):
            for qi, q in enumerate(seg.qubits):
                state = _apply_1q(state, prod[:, qi], q, n)
            return state
        # Many qubits at once: view the state as a (2**h, 2**l) matrix over the high and low
        # halves of the register, so the whole layer is U_high @ S @ U_low^T — two small batched
        # matmuls instead of one full pass over the state per qubit.
        low = n // 2
        factors = [None] * n
        for qi, q in enumerate(seg.qubits):
            factors[q] = prod[:, qi]
        if state is None:  # the register is still |0...0>: the result is a product state
            col = [f[:, :, 0] if f is not None else None for f in factors]
            vec_low = _kron_vectors(col[:low], batch, prod.dtype)
            vec_high = _kron_vectors(col[low:], batch, prod.dtype)
            return (vec_high[:, :, None] * vec_low[:, None, :]).reshape(batch, 2**n)
        if n >= _CHUNK_FROM:
            return _apply_chunked(state, factors, n, shared=False)
        u_low = _kron_matrices(factors[:low])
        u_high = _kron_matrices(factors[low:])
        dim_h, dim_l = 2 ** (n - low), 2**low
        if state.dim() == 2:
            mat = state.reshape(batch, dim_h, dim_l)
            if u_high is not None:
                mat = u_high @ mat
            if u_low is not None:
                mat = mat @ u_low.transpose(1, 2)
            return mat.reshape(batch, 2**n)
        # (B, O, 2**n): fold the O cotangents into the matrix dimensions so each product is one
        # plain batched matmul (broadcasting over O would copy the unitaries O times).
        num_out = state.shape[1]
        mat = state.reshape(batch, num_out * dim_h, dim_l)
        if u_low is not None:
            mat = mat @ u_low.transpose(1, 2)
        if u_high is not None:
            mat = mat.reshape(batch, num_out, dim_h, dim_l).transpose(1, 2)
            mat = u_high @ mat.reshape(batch, dim_h, num_out * dim_l)
            mat = mat.reshape(batch, dim_h, num_out, dim_l).transpose(1, 2)
        return mat.reshape(batch, num_out, 2**n)

    # ------------------------------------------------------------------ adjoint differentiation
    def value_and_jacobian(
        self,
        values,
        observables: Sequence | None = None,
        *,
        columns: Sequence[int] | None = None,
        probabilities: bool = False,
        dtype=np.float64,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact outputs and their Jacobian by adjoint differentiation (float64).

        The forward sweep records each step's input; one backward sweep carries a cotangent
        state per output (vectorised over outputs) and reads every gate-angle derivative off
        2×2 reduced transition matrices (Jones & Gacon, "Efficient calculation of gradients in
        classical simulations of variational quantum algorithms", arXiv 2009.02823).

        Args:
            values: (B, P) parameter values.
            observables: Hermitian observables (O of them); ignored if ``probabilities``.
            columns: parameter columns to differentiate (default: all).
            probabilities: differentiate the 2**n basis-state probabilities instead.

        Returns:
            ``(out, jac)``: out (B, O) and jac (B, O, len(columns)).
        """
        vals = self._check(torch.as_tensor(np.asarray(values, dtype=dtype)))
        tape: list = []
        with torch.no_grad():
            ext = self._expressions.extend(vals)
            state = self._evolve(ext, tape)
            if probabilities:
                out = state.real**2 + state.imag**2
                local = None
            else:
                if observables is None:
                    raise BadInputError(
                        "value_and_jacobian needs observables or probabilities=True"
                    )
                out = self.expectation_from_state(state, observables)
                local = self._local_z(observables)
            grad = self._adjoint(ext, tape, state, observables, local)  # (B, O, P + K)
            grad = self._expressions.chain(vals, grad)  # (B, O, P)
        if columns is not None:
            grad = grad[:, :, list(columns)]
        return out.cpu().numpy(), grad.cpu().numpy()

    def forward_for_vjp(
        self,
        values,
        observables: Sequence | None = None,
        *,
        probabilities: bool = False,
        dtype=np.float64,
    ):
        """Exact outputs now, and a *pullback* for their vector–Jacobian product later.

        The forward sweep is recorded as in :meth:`value_and_jacobian`, but no Jacobian is
        formed: ``pullback(cotangent)`` runs **one** adjoint sweep with the cotangent-weighted
        observable Σ_o g[b, o] O_o (probabilities: diag(g[b])), which by linearity of
        d<O>/dθ = 2 Re <λ|dU ψ> in O gives Σ_o g[b, o] ∂out[b, o]/∂θ exactly — the product a
        training step needs, at the cost of one sweep instead of one per output.

        Args:
            values: (B, P) parameter values.
            observables: Hermitian observables (O of them); ignored if ``probabilities``.
            probabilities: outputs are the 2**n basis-state probabilities.

        Returns:
            ``(out, pullback)``: out (B, O) and ``pullback(cotangent (B, O), columns=None)`` →
            (B, len(columns)) per-row products (sum over rows for shared weights). The pullback
            may be called more than once; it holds the recorded states until it is dropped.
        """
        vals = self._check(torch.as_tensor(np.asarray(values, dtype=dtype)))
        tape: list = []
        with torch.no_grad():
            ext = self._expressions.extend(vals)
            state = self._evolve(ext, tape)
            if probabilities:
                out = state.real**2 + state.imag**2
            else:
                assert observables is not None  # checked by the caller
                out = self.expectation_from_state(state, observables)
        obs = None if probabilities or observables is None else list(observables)
        shape = tuple(out.shape)

        def pullback(
            cotangent, columns: Sequence[int] | None = None, sum_rows: Sequence[int] = ()
        ) -> np.ndarray:
            # exact per row for every column (``sum_rows``, the columns the caller only sums
            # over the rows, needs no special treatment here)
            g = torch.as_tensor(np.asarray(cotangent, dtype=np.float64), dtype=vals.dtype)
            if tuple(g.shape) != shape:
                raise BadInputError(f"expected a cotangent of shape {shape}, got {tuple(g.shape)}")
            with torch.no_grad():
                grad = self._adjoint(ext, tape, state, obs, None, weights=g)  # (B, 1, P + K)
                grad = self._expressions.chain(vals, grad)[:, 0]  # (B, P)
            if columns is not None:
                grad = grad[:, list(columns)]
            return grad.cpu().numpy()

        return out.cpu().numpy(), pullback

    def _apply_weighted_observables(self, state, observables, weights) -> torch.Tensor:
        """λ = (Σ_o w[b, o] O_o) ψ[b] as (B, 1, 2**n): one cotangent state per row."""
        terms = self._observable_terms(observables, state.dtype)
        w = weights.to(state.real.dtype)
        lam = None
        diag_rows, diags = self._diagonal_stack(observables, terms, state.dtype)
        if diag_rows and diags is not None:
            lam = state * (w[:, diag_rows] @ diags.T)  # Σ_o w_o diag_o, (B, 2**n) real
        for o, (_, offdiag) in enumerate(terms):
            for perm, coeff in offdiag:
                term = (w[:, o : o + 1] * coeff) * state[:, perm]
                lam = term if lam is None else lam + term
        if lam is None:
            lam = torch.zeros_like(state)
        return lam[:, None, :]

    def _apply_observables(self, state, observables) -> torch.Tensor:
        terms = self._observable_terms(observables, state.dtype)
        rows = []
        for diag_vec, offdiag in terms:
            lam = state * diag_vec if diag_vec is not None else torch.zeros_like(state)
            for perm, coeff in offdiag:
                lam = lam + coeff * state[:, perm]
            rows.append(lam)
        return torch.stack(rows, 1)

    def _local_z(self, observables) -> list[tuple[int, float]] | None:
        """``[(qubit, coeff)]`` when every observable is ``coeff * Z_qubit`` (plus a constant),
        else ``None``. Such observables allow the cheap trailing-segment rule of :meth:`_adjoint`."""
        key = ("local-z", self._observable_keys(observables))
        if key in self._observable_cache:
            return self._observable_cache[key]
        out = self._observable_cache[key] = self._local_z_uncached(observables)
        return out

    def _local_z_uncached(self, observables):
        from qiskit.quantum_info import SparsePauliOp

        out = []
        for obs in observables:
            op = obs if isinstance(obs, SparsePauliOp) else SparsePauliOp(obs)
            found = None
            for pauli, coeff in zip(op.paulis, op.coeffs):
                if np.any(pauli.x):
                    return None
                support = np.flatnonzero(pauli.z)
                if support.size == 0:
                    continue  # identity: a constant, no gradient
                if support.size > 1 or found is not None or abs(coeff.imag) > 0:
                    return None
                found = (int(support[0]), float(coeff.real))
            out.append(found if found is not None else (-1, 0.0))
        return out

    def _adjoint(self, values, tape, final_state, observables, local, weights=None) -> torch.Tensor:
        """Backward sweep: d<O>/dθ = 2 Re <λ| dU ψ>, with λ = U_after^† O ψ_final.

        With ``weights`` (B, O) — (B, 2**n) for probabilities — one cotangent state per row is
        carried for the weighted observable Σ_o weights[b, o] O_o and the result is (B, 1, ·):
        the vector–Jacobian product, in one sweep.

        Two exact shortcuts keep the sweep cheap for layered QML circuits:

        * diagonal observables commute with trailing diagonal gates (CZ rings), so those gates
          are skipped; when every observable is a single-qubit ``c·Z_w`` and the last
          non-diagonal step is a single-qubit layer V = ⊗V_q, the cotangent before that layer
          is just ``(V_w^† c Z V_w)_w ψ`` and only gates on qubit w feel output w;
        * a first layer acting on |0...0> needs no backward propagation: its reduced transition
          matrices are overlaps of the cotangent with product states.
        """
        n = self.num_qubits
        rdtype = values.dtype
        batch = values.shape[0]
        steps = list(tape)
        diagonal_obs = (
            local is not None
            or observables is None
            or all(not np.any(_as_spo(o).paulis.x) for o in observables)
        )
        if weights is not None:
            num_out = 1
        else:
            num_out = 2**n if observables is None else len(observables)
        grad = torch.zeros(batch, num_out, self._num_columns, dtype=rdtype)
        if diagonal_obs:
            while steps and isinstance(steps[-1][0], _Diagonal):
                steps.pop()
        # The tape holds states without the global phase, which cancels in <λ|dψ>.
        psi_end = steps[-1][2] if steps else self._zero_state(batch, final_state.dtype)
        if weights is not None and observables is None:
            lam = (weights.to(rdtype) * psi_end)[:, None, :]  # Σ_k g_k |k><k|psi>
        elif weights is not None:
            # one cotangent per row: the weighted observable through the layers' (shared)
            # unitaries beats the per-qubit single-qubit-Z rule below, measured at n = 12 and 16
            lam = self._apply_weighted_observables(psi_end, observables, weights)
        elif local is not None and steps and isinstance(steps[-1][0], _Segment):
            step, state_in, _, (slots, prefix, prod) = steps.pop()
            lam = self._local_last_segment(step, values, state_in, local, slots, prefix, prod, grad)
        elif observables is None:
            lam = torch.diag_embed(psi_end)  # p_k = <psi|k><k|psi>: cotangent |k><k|psi>
        else:
            lam = self._apply_observables(psi_end, observables)
        for pos in range(len(steps) - 1, -1, -1):
            step, state_in, state_out, extra = steps[pos]
            if isinstance(step, _Diagonal):
                phase = extra
                if step.angles:
                    # d/dθ_a of phase*psi = i g_a (phase*psi): 2 Re <λ| i g_a ψ_out>
                    gens = torch.as_tensor(np.stack(step.generators), dtype=rdtype)
                    t = lam.conj() * state_out[:, None, :]
                    g_angle = -2 * (t.imag @ gens.T)  # (B, O, A)
                    for a, angle in enumerate(step.angles):
                        if angle.index.size:
                            coeffs = torch.as_tensor(angle.coeffs, dtype=rdtype)
                            grad[:, :, angle.index] += g_angle[:, :, a : a + 1] * coeffs
                lam = lam * (phase[:, None, :] if phase.dim() == 2 else phase).conj()
            elif isinstance(step, _Segment):
                slots, prefix, prod = extra
                if state_in is None:  # first layer on |0...0>; nothing before it needs λ
                    if step.kinds:
                        reduced = self._product_input_transitions(step, lam, state_out, prod)
                        self._segment_gradient(step, values, reduced, prefix, grad)
                    continue
                mu = self._apply_segment(lam, step, prod, batch, adjoint=True)
                if step.kinds:
                    reduced = self._reduced(step, mu, state_in)
                    self._segment_gradient(step, values, reduced, prefix, grad)
                lam = mu
            elif isinstance(step, _Permutation):
                lam = step.apply_adjoint(lam)
            elif isinstance(step, _Dense) and step.matrix is not None:
                lam = _apply_dense(lam, step.matrix.conj().T, step.qubits, n, lam.dtype)
            elif isinstance(step, _Dense):
                angles, mat = extra
                self._dense_gradient(step, values, angles, lam, state_in, grad)
                lam = _apply_batched(lam, mat.conj().transpose(-1, -2), step.qubits, n)
            elif step == "init":
                # psi0 = a/|a| with real a: dO/da = (g - psi0 (psi0·g)) / |a|, g = 2 Re(λ0)
                norm = extra
                g = 2 * lam.real
                psi = state_out.real[:, None, :]
                g_amp = (g - psi * (psi * g).sum(-1, keepdim=True)) / norm[:, None, :]
                grad[:, :, self._init_amplitudes] += g_amp
        return grad

    def _dense_gradient(self, step, values, angles, lam, state_in, grad) -> None:
        """A parameterised k-qubit gate U: d<O>/da = 2 Re Σ_ji dU[j, i] R[j, i] with the
        reduced transition R[j, i] = Σ_rest conj(λ[j, rest]) ψ_in[i, rest] on its qubits."""
        n = self.num_qubits
        red = _reduced_dense(lam, state_in, step.qubits, n)  # (B, O, K, K)
        derivs = builder_derivatives(step.build, angles)
        for angle, d in zip(step.angles, derivs):
            if d is None or not angle.index.size:
                continue
            g = 2 * (d.to(red.dtype)[:, None] * red).sum((-1, -2)).real  # (B, O)
            coeffs = torch.as_tensor(angle.coeffs, dtype=values.dtype)
            grad[:, :, angle.index] += g[:, :, None] * coeffs

    def _local_last_segment(self, seg, values, state_in, local, slots, prefix, prod, grad):
        """Trailing layer with single-qubit Z observables: returns the cotangent before it.

        With V = ⊗V_q and O = c·Z_w, V^† O V = (c V_w^† Z V_w)_w =: (M)_w, so μ = (M)_w ψ_in,
        and R_w[j, i] = Σ_rest conj(μ[j, rest]) ψ_in[i, rest] needs ψ_in alone.
        """
        n = self.num_qubits
        batch = values.shape[0]
        if state_in is None:
            state_in = self._zero_state(batch, prod.dtype)
        cdtype = state_in.dtype
        qubit_slot = {q: qi for qi, q in enumerate(seg.qubits)}
        zmat = torch.tensor([[1, 0], [0, -1]], dtype=cdtype)
        mus = []
        reduced = torch.zeros(batch, len(local), len(seg.qubits), 2, 2, dtype=cdtype)
        for o, (w, coeff) in enumerate(local):
            if w < 0:
                mus.append(torch.zeros_like(state_in))
                continue
            qi = qubit_slot.get(w)
            if qi is None:
                m = (coeff * zmat).expand(batch, 2, 2)
            else:
                v = prod[:, qi]
                m = coeff * (v.conj().transpose(-1, -2) @ zmat @ v)
            mu = _apply_1q(state_in, m, w, n)
            mus.append(mu)
            if qi is not None:
                reduced[:, o, qi] = _reduced_transition(mu[:, None, :], state_in, w, n)[:, 0]
        if seg.kinds:
            self._segment_gradient(seg, values, reduced, prefix, grad)
        return torch.stack(mus, 1)

    def _product_input_transitions(self, seg, lam, state_out, prod) -> torch.Tensor:
        """Reduced transition matrices of a first layer acting on |0...0>.

        R_q[j, 0] = <λ| V |j at q, 0 elsewhere>, R_q[j, 1] = 0. The j = 0 overlap is <λ|ψ_out>;
        for j = 1 it is the overlap with ψ_out whose qubit-q factor V_q|0> is replaced by V_q|1>.
        ψ_out = v_high ⊗ v_low is a product of the register's halves, so λ is contracted with
        one half first and every swapped factor costs only a half-sized vector.
        """
        n = self.num_qubits
        batch, num_out = lam.shape[0], lam.shape[1]
        cdtype = lam.dtype
        low = n // 2 if _uses_kron(n, seg) else 0
        cols0 = [None] * n  # V_q|0>, None for idle qubits
        cols1 = [None] * n  # V_q|1>
        for qi, q in enumerate(seg.qubits):
            cols0[q] = prod[:, qi, :, 0]
            cols1[q] = prod[:, qi, :, 1]
        dim_h, dim_l = 2 ** (n - low), 2**low
        v_low = _kron_vectors(cols0[:low], batch, cdtype)  # (B, L)
        v_high = _kron_vectors(cols0[low:], batch, cdtype)  # (B, H)
        lam_c = lam.conj().reshape(batch, num_out, dim_h, dim_l)
        # t_high[o, h] = Σ_l conj(λ)[o, h, l] v_low[l];  t_low[o, l] = Σ_h conj(λ)[o, h, l] v_high[h]
        t_high = (lam_c.reshape(batch, num_out * dim_h, dim_l) @ v_low[:, :, None]).reshape(
            batch, num_out, dim_h
        )
        t_low = torch.einsum("bohl,bh->bol", lam_c, v_high)
        c0 = (t_high * v_high[:, None, :]).sum(-1)  # (B, O)
        reduced = torch.zeros(batch, num_out, len(seg.qubits), 2, 2, dtype=cdtype)
        reduced[..., 0, 0] = c0[:, :, None]
        swapped = []
        for q in seg.qubits:
            if q < low:
                cols = list(cols0[:low])
                cols[q] = cols1[q]
                swapped.append((t_low, _kron_vectors(cols, batch, cdtype)))
            else:
                cols = list(cols0[low:])
                cols[q - low] = cols1[q]
                swapped.append((t_high, _kron_vectors(cols, batch, cdtype)))
        for qi, (t, vec) in enumerate(swapped):
            reduced[:, :, qi, 1, 0] = (t * vec[:, None, :]).sum(-1)
        return reduced

    def _reduced(self, seg, mu, state_in) -> torch.Tensor:
        n = self.num_qubits
        if _uses_kron(n, seg):
            return _reduced_transitions_kron(mu, state_in, seg.qubits, n)
        return torch.stack([_reduced_transition(mu, state_in, q, n) for q in seg.qubits], 2)

    def _segment_gradient(self, seg, values, reduced, prefix, grad) -> None:
        """Accumulate one segment's angle derivatives into ``grad`` (B, O, P).

        For the gate G at position s on qubit q, V_q^† dV_q = P^† (G^† dG) P with P the product
        of the gates before it, so d<O> = 2 Re Σ_ji (P^† G^† dG P)[j, i] R_q[j, i], where
        R_q[j, i] = Σ_rest conj(μ[j, rest]) ψ_in[i, rest] and μ is the cotangent before the layer.
        All (gate, angle) pairs of the segment are handled in one vectorised pass.
        """
        rdtype = values.dtype
        cdtype = reduced.dtype
        kinds, _, _ = seg.tensors(rdtype, cdtype)
        batch = values.shape[0]
        prefix_all = torch.stack(
            [torch.eye(2, dtype=cdtype).expand_as(prefix[1])] + prefix[1:-1], 2
        )  # (B, Q, S, 2, 2): product of the gates before each position
        gens, coeff_cols = [], []
        for (name, coeffs, offs), _ in zip(kinds, seg.kind_slots):
            if name in _PAULI_GENERATOR:
                # G = exp(-i a/2 σ): G^† dG = -i/2 σ for every gate of this kind
                sigma = torch.as_tensor(_PAULI_GENERATOR[name], dtype=cdtype)
                num = coeffs[0].shape[1]
                gens.append((-0.5j * sigma).expand(batch, num, 2, 2))
                coeff_cols.append(coeffs[0])
                continue
            angles = [values @ c + o for c, o in zip(coeffs, offs)]
            gate_h = _rot_matrix(name, angles).to(cdtype).conj().transpose(-1, -2)
            for d, c in zip(_rot_derivatives(name, angles), coeffs):
                gens.append(gate_h @ d.to(cdtype))
                coeff_cols.append(c)
        qi, si = seg.deriv_slots
        before = prefix_all[:, qi, si]  # (B, D, 2, 2)
        gen = torch.cat(gens, 1) if len(gens) > 1 else gens[0]
        a = before.conj().transpose(-1, -2) @ gen @ before  # (B, D, 2, 2)
        red = reduced[:, :, qi]  # (B, O, D, 2, 2)
        g_angle = 2 * (a[:, None] * red).sum((-1, -2)).real  # (B, O, D)
        grad += g_angle @ seg.deriv_coeffs(coeff_cols, rdtype).T

    def expectation(self, values: torch.Tensor, observables: Sequence) -> torch.Tensor:
        """Expectation values of observables for every row of ``values``.

        Args:
            values: real tensor (B, num_parameters).
            observables: ``SparsePauliOp`` (or anything ``SparsePauliOp`` accepts) on all qubits.

        Returns:
            real tensor (B, len(observables)).
        """
        state = self.statevector(values)
        return self.expectation_from_state(state, observables)

    def expectation_from_state(self, state: torch.Tensor, observables: Sequence) -> torch.Tensor:
        terms = self._observable_terms(observables, state.dtype)
        rows, diags = self._diagonal_stack(observables, terms, state.dtype)
        # every diagonal part in one matmul with the probabilities
        diag_vals = (state.real**2 + state.imag**2) @ diags if rows and diags is not None else None
        out = []
        for o, (diag_vec, offdiag) in enumerate(terms):
            val: Any = 0
            if diag_vec is not None and diag_vals is not None:
                val = diag_vals[:, rows.index(o)]
            for perm, coeff in offdiag:
                val = val + (state.conj() * coeff * state[:, perm]).sum(1).real
            out.append(val if torch.is_tensor(val) else state.real.new_zeros(state.shape[0]))
        return torch.stack(out, 1)

    def _diagonal_stack(self, observables, terms, cdtype) -> tuple[list[int], torch.Tensor | None]:
        """The observables with a diagonal part and those parts as one (2**n, K) matrix."""
        key = ("diagonal-stack", self._observable_keys(observables), cdtype)
        cached = self._observable_cache.get(key)
        if cached is None:
            rows = [o for o, (d, _) in enumerate(terms) if d is not None]
            diags = torch.stack([terms[o][0] for o in rows], 1) if rows else None
            cached = self._observable_cache[key] = (rows, diags)
        return cached

    def probabilities(self, values: torch.Tensor) -> torch.Tensor:
        """Computational-basis probabilities, (B, 2**num_qubits), Qiskit's bit order."""
        state = self.statevector(values)
        return state.real**2 + state.imag**2

    def _observable_keys(self, observables) -> tuple:
        """Content keys of the observables; the same objects as last time are not relabelled."""
        observables = list(observables)
        hit = self._observable_cache.get("last-keys")  # one slot: the same list every call
        if hit is not None and _same_observables(hit[0], observables):
            return hit[1]
        keys = tuple(_observable_key(o) for o in observables)
        self._observable_cache["last-keys"] = (_observable_snapshot(observables), keys)
        return keys

    def _observable_terms(self, observables, cdtype):
        key = (self._observable_keys(observables), cdtype)
        cached = self._observable_cache.get(key)
        if cached is not None:
            return cached
        from qiskit.quantum_info import SparsePauliOp

        rdtype = torch.float64 if cdtype == torch.complex128 else torch.float32
        terms = []
        for obs in observables:
            op = obs if isinstance(obs, SparsePauliOp) else SparsePauliOp(obs)
            if op.num_qubits != self.num_qubits:
                raise BadInputError(
                    f"observable acts on {op.num_qubits} qubits, circuit has {self.num_qubits}"
                )
            diag = np.zeros(2**self.num_qubits)
            has_diag = False
            grouped: dict[bytes, np.ndarray] = {}
            perms: dict[bytes, np.ndarray] = {}
            for pauli, coeff in zip(op.paulis, op.coeffs):
                if not np.any(pauli.x):
                    mat = pauli.to_matrix(sparse=True).diagonal()
                    diag = diag + np.real(coeff * mat)
                    has_diag = True
                    continue
                sp = pauli.to_matrix(sparse=True).tocsr()
                perm = sp.indices.astype(np.int64)
                vals = np.asarray(sp.data) * coeff
                k = perm.tobytes()
                perms[k] = perm
                grouped[k] = grouped.get(k, 0) + vals
            offdiag = [
                (torch.as_tensor(perms[k]), torch.as_tensor(v, dtype=cdtype))
                for k, v in grouped.items()
            ]
            terms.append((torch.as_tensor(diag, dtype=rdtype) if has_diag else None, offdiag))
        self._observable_cache[key] = terms
        return terms


def _as_spo(obs):
    from qiskit.quantum_info import SparsePauliOp

    return obs if isinstance(obs, SparsePauliOp) else SparsePauliOp(obs)


def _observable_snapshot(observables) -> tuple:
    """The objects and copies of their content, to recognise them again cheaply."""
    from qiskit.quantum_info import SparsePauliOp

    out = []
    for o in observables:
        if not isinstance(o, SparsePauliOp):
            return ()
        p = o.paulis
        out.append((o, p.z.copy(), p.x.copy(), p.phase.copy(), o.coeffs.copy()))
    return tuple(out)


def _same_observables(snapshot: tuple, observables) -> bool:
    """Whether ``observables`` are the snapshot's objects with unchanged content (a
    ``SparsePauliOp`` can be edited in place)."""
    if not snapshot or len(snapshot) != len(observables):
        return False
    for (o, z, x, phase, coeffs), new in zip(snapshot, observables):
        p = new.paulis if new is o else None
        if (
            p is None
            or not np.array_equal(p.z, z)
            or not np.array_equal(p.x, x)
            or not np.array_equal(p.phase, phase)
            or not np.array_equal(new.coeffs, coeffs)
        ):
            return False
    return True


def _observable_key(obs):
    from qiskit.quantum_info import SparsePauliOp

    op = obs if isinstance(obs, SparsePauliOp) else SparsePauliOp(obs)
    return (tuple(op.paulis.to_labels()), op.coeffs.tobytes())


def _uses_kron(n: int, seg: _Segment) -> bool:
    """Whether a segment is applied as two Kronecker factors rather than qubit by qubit."""
    return n >= 3 and len(seg.qubits) >= 3


# From this size on, a layer is applied as k small unitaries on contiguous chunks of at most
# _CHUNK qubits rather than two half-register unitaries: per amplitude Σ 2^k_c multiply-adds
# instead of 2^(n/2) + 2^(n/2) (n = 20: 4 × 32 against 2 × 1024).
_CHUNK_FROM = 14
_CHUNK = 5


def _chunk_bounds(n: int) -> list[tuple[int, int]]:
    """Contiguous qubit ranges [lo, hi) of near-equal size ≤ _CHUNK covering the register."""
    k = -(-n // _CHUNK)
    base, extra = divmod(n, k)
    out, lo = [], 0
    for c in range(k):
        hi = lo + base + (1 if c < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def _apply_chunk(state, u, lo: int, hi: int, n: int) -> torch.Tensor:
    """Apply a (m, m) unitary — or (B, m, m), one per row — to qubits [lo, hi) of a state of
    shape (B, 2**n) or (B, O, 2**n)."""
    lead = state.shape[:-1]
    m = 2 ** (hi - lo)
    if u.dim() == 3:  # per row: broadcast over the cotangents and the higher qubits
        u = u.reshape(u.shape[0], *([1] * (len(lead) - 1)), m, m)
    if lo == 0:  # the chunk is the fastest axis: rows of the state times Uᵀ
        view = state.reshape(*lead, 2 ** (n - hi), m)
        return (view @ u.transpose(-1, -2)).reshape(*lead, 2**n)
    view = state.reshape(*lead, 2 ** (n - hi), m, 2**lo)
    if u.dim() > 2:
        u = u.unsqueeze(-3)  # over the higher qubits' axis
    return (u @ view).reshape(*lead, 2**n)


def _apply_chunked(state, factors, n: int, shared: bool) -> torch.Tensor:
    """Apply per-qubit 2×2 factors (``None`` = identity; (2, 2) if ``shared`` else (B, 2, 2))
    chunk by chunk."""
    for lo, hi in _chunk_bounds(n):
        chunk = factors[lo:hi]
        if all(f is None for f in chunk):
            continue
        batched = [None if f is None else (f[None] if shared else f) for f in chunk]
        u = _kron_matrices(batched)
        assert u is not None  # the chunk has a factor
        state = _apply_chunk(state, u[0] if shared else u, lo, hi, n)
    return state


def _reduced_transitions_chunked(mu, psi, qubits, n) -> torch.Tensor:
    """:func:`_reduced_transitions_kron` with the register split into chunks of ≤ _CHUNK
    qubits: per chunk M[o, k', k] = Σ_rest conj(μ[o, k', rest]) ψ[k, rest], then each qubit's
    2×2 block is a partial trace of its chunk's matrix."""
    batch, num_out = mu.shape[0], mu.shape[1]
    found: dict[int, torch.Tensor] = {}
    mu_c = mu.conj()
    for lo, hi in _chunk_bounds(n):
        inside = [q for q in qubits if lo <= q < hi]
        if not inside:
            continue
        m, nq = 2 ** (hi - lo), hi - lo
        mv = mu_c.reshape(batch, num_out, 2 ** (n - hi), m, 2**lo)
        pv = psi.reshape(batch, 2 ** (n - hi), m, 2**lo)
        mat = torch.einsum("boakc,bajc->bokj", mv, pv)  # (B, O, m, m)
        for q in inside:
            k = q - lo
            t = mat.reshape(batch, num_out, 2 ** (nq - k - 1), 2, 2**k, 2 ** (nq - k - 1), 2, 2**k)
            found[q] = torch.einsum("bxajcaic->bxji", t)
    return torch.stack([found[q] for q in qubits], 2)


def _apply_shared_segment(state, prod, qubits, n) -> torch.Tensor:
    """Apply per-qubit 2×2 unitaries ``prod`` (Q, 2, 2), the same for every row, to a state of
    shape (..., 2**n): qubit by qubit for few qubits, else as U_high @ S @ U_lowᵀ on the state
    viewed as (..., 2**h, 2**l) matrices, each product one matmul over all rows."""
    if not (n >= 3 and len(qubits) >= 3):
        for qi, q in enumerate(qubits):
            state = _apply_1q(state, prod[qi], q, n)
        return state
    if n >= _CHUNK_FROM:
        factors = [None] * n
        for qi, q in enumerate(qubits):
            factors[q] = prod[qi]
        return _apply_chunked(state, factors, n, shared=True)
    low = n // 2
    factors = [None] * n
    for qi, q in enumerate(qubits):
        factors[q] = prod[qi][None]
    u_low = _kron_matrices(factors[:low])
    u_high = _kron_matrices(factors[low:])
    lead = state.shape[:-1]
    mat = state.reshape(*lead, 2 ** (n - low), 2**low)
    if u_low is not None:
        mat = mat @ u_low[0].transpose(0, 1)
    if u_high is not None:
        mat = (mat.transpose(-1, -2) @ u_high[0].transpose(0, 1)).transpose(-1, -2)
    return mat.reshape(*lead, 2**n)


def _kron_matrices(factors) -> torch.Tensor | None:
    """Batched Kronecker product for qubits in increasing order (qubit 0 = least significant).

    ``None`` factors are identities; returns ``None`` when every factor is.
    """
    present = [f for f in factors if f is not None]
    if not present:
        return None
    eye = torch.eye(2, dtype=present[0].dtype).expand(present[0].shape[0], 2, 2)
    out = None
    for f in factors:  # each factor acts on the next more significant qubit
        f = eye if f is None else f
        out = f if out is None else _kron2(f, out)
    return out


def _kron2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched kron(a, b) of (B, m, m) and (B, k, k)."""
    batch, m, k = a.shape[0], a.shape[1], b.shape[1]
    return (a[:, :, None, :, None] * b[:, None, :, None, :]).reshape(batch, m * k, m * k)


def _kron_vectors(cols, batch, cdtype) -> torch.Tensor:
    """Batched Kronecker product of single-qubit states (|0> where the column is ``None``)."""
    out = torch.ones(batch, 1, dtype=cdtype)
    zero = None
    for c in cols:
        if c is None:
            if zero is None:
                zero = torch.zeros(batch, 2, dtype=cdtype)
                zero[:, 0] = 1
            c = zero
        out = (c[:, :, None] * out[:, None, :]).reshape(batch, -1)
    return out


def _apply_1q(state, mat, q, n) -> torch.Tensor:
    """Apply a (B,2,2) or (2,2) matrix to qubit q of a (B, 2**n) or (B, O, 2**n) state."""
    lead = state.shape[:-1]
    view = state.reshape(*lead, 2 ** (n - q - 1), 2, 2**q)
    if mat.dim() == 2:
        out = torch.einsum("ij,...ajc->...aic", mat, view)
    elif len(lead) == 1:
        out = torch.einsum("bij,bajc->baic", mat, view)
    else:
        out = torch.einsum("bij,boajc->boaic", mat, view)
    return out.reshape(*lead, 2**n)


def _reduced_transition(mu, psi, q, n) -> torch.Tensor:
    """R[b, o, j, i] = Σ_rest conj(mu[b, o, j@q, rest]) psi[b, i@q, rest]."""
    batch, num_out = mu.shape[0], mu.shape[1]
    m = mu.reshape(batch, num_out, 2 ** (n - q - 1), 2, 2**q)
    p = psi.reshape(batch, 2 ** (n - q - 1), 2, 2**q)
    return torch.einsum("boajc,baic->boji", m.conj(), p)


def _reduced_transitions_kron(mu, psi, qubits, n) -> torch.Tensor:
    """All single-qubit reduced transition matrices at once, (B, O, Q, 2, 2) indexed [j, i].

    From _CHUNK_FROM qubits on, :func:`_reduced_transitions_chunked` (cheaper per amplitude).

    With the register split into high and low halves, one batched matmul per half gives the
    half's transition matrix (e.g. M_low[l', l] = Σ_h conj(mu[h, l']) psi[h, l]); each qubit's
    2×2 matrix is then a partial trace of a 2**(n/2)-sized matrix instead of a contraction over
    the whole state.
    """
    if n >= _CHUNK_FROM:
        return _reduced_transitions_chunked(mu, psi, qubits, n)
    low = n // 2
    high = n - low
    batch, num_out = mu.shape[0], mu.shape[1]
    dim_h, dim_l = 2**high, 2**low
    m = mu.conj().reshape(batch, num_out, dim_h, dim_l)
    p = psi.reshape(batch, dim_h, dim_l)
    # m_low[o, l', l] = Σ_h m[o, h, l'] p[h, l];  m_high[o, h', h] = Σ_l m[o, h', l] p[h, l]
    m_low = (m.transpose(2, 3).reshape(batch, num_out * dim_l, dim_h) @ p).reshape(
        batch, num_out, dim_l, dim_l
    )
    m_high = (m.reshape(batch, num_out * dim_h, dim_l) @ p.transpose(1, 2)).reshape(
        batch, num_out, dim_h, dim_h
    )
    out = []
    for q in qubits:
        if q < low:
            mat, k, nq = m_low, q, low
        else:
            mat, k, nq = m_high, q - low, high
        t = mat.reshape(batch, num_out, 2 ** (nq - k - 1), 2, 2**k, 2 ** (nq - k - 1), 2, 2**k)
        out.append(torch.einsum("bxajcaic->bxji", t))
    return torch.stack(out, 2)


def _apply_dense(state, matrix, qubits, n, cdtype) -> torch.Tensor:
    """Apply a fixed k-qubit unitary (Qiskit's little-endian matrix convention) to a state of
    shape (..., 2**n)."""
    lead = list(state.shape[:-1])
    k = len(qubits)
    mat = torch.as_tensor(np.array(matrix), dtype=cdtype).reshape([2] * (2 * k))
    nl = len(lead)
    psi = state.reshape(lead + [2] * n)
    # axis nl+i holds qubit n-1-i; the matrix's row/column axes run q_{k-1} ... q_0
    contract = [nl + (n - 1 - qubits[k - 1 - i]) for i in range(k)]
    out = torch.tensordot(psi, mat, dims=(contract, list(range(k, 2 * k))))
    remaining = [a for a in range(nl + n) if a not in contract]
    perm = [0] * (nl + n)
    for pos, a in enumerate(remaining):
        perm[a] = pos
    for i in range(k):
        perm[contract[i]] = len(remaining) + i
    return out.permute(perm).reshape(lead + [2**n])


def _qubit_axes(qubits, n, lead: int) -> tuple[list[int], list[int]]:
    """Axes of a (lead..., 2, ..., 2) state view: the gate's qubits in its matrix order (most
    significant first) and the remaining qubit axes."""
    k = len(qubits)
    axes = [lead + (n - 1 - qubits[k - 1 - i]) for i in range(k)]
    rest = [a for a in range(lead, lead + n) if a not in axes]
    return axes, rest


def _apply_batched(state, mat, qubits, n) -> torch.Tensor:
    """Apply per-sample k-qubit unitaries (B, K, K) to a (B, 2**n) or (B, O, 2**n) state."""
    lead = list(state.shape[:-1])
    nl = len(lead)
    k = len(qubits)
    axes, rest = _qubit_axes(qubits, n, nl)
    perm = list(range(nl)) + rest + axes
    psi = state.reshape(lead + [2] * n).permute(perm).reshape(lead + [2 ** (n - k), 2**k])
    m = mat.reshape([mat.shape[0]] + [1] * (nl - 1) + [2**k, 2**k])
    out = (psi @ m.transpose(-1, -2)).reshape(lead + [2] * n)
    inverse = [0] * len(perm)
    for pos, a in enumerate(perm):
        inverse[a] = pos
    return out.permute(inverse).reshape(lead + [2**n])


def _reduced_dense(lam, psi, qubits, n) -> torch.Tensor:
    """R[b, o, j, i] = Σ_rest conj(λ[b, o, j, rest]) ψ[b, i, rest] over the gate's qubits."""
    batch, num_out = lam.shape[0], lam.shape[1]
    k = len(qubits)
    axes, rest = _qubit_axes(qubits, n, 2)
    lam_v = lam.reshape([batch, num_out] + [2] * n).permute([0, 1] + rest + axes)
    lam_v = lam_v.reshape(batch, num_out, 2 ** (n - k), 2**k)
    axes1, rest1 = _qubit_axes(qubits, n, 1)
    psi_v = psi.reshape([batch] + [2] * n).permute([0] + rest1 + axes1)
    psi_v = psi_v.reshape(batch, 2 ** (n - k), 2**k)
    return torch.einsum("borj,bri->boji", lam_v.conj(), psi_v)


def _monomial(m: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(col, value) per row when the matrix has exactly one nonzero per row and column."""
    nz = m != 0
    if not (np.all(nz.sum(0) == 1) and np.all(nz.sum(1) == 1)):
        return None
    col = nz.argmax(1)
    return col, m[np.arange(m.shape[0]), col]


def _embed_monomial(col, value, qubits, n) -> tuple[np.ndarray, np.ndarray]:
    """A k-qubit monomial gate on the full space: (G s)[i] = phase[i] s[src[i]]."""
    idx = np.arange(2**n)
    local = np.zeros(2**n, dtype=np.int64)
    for j, q in enumerate(qubits):
        local |= ((idx >> q) & 1) << j
    src = idx.copy()
    target = col[local]
    for j, q in enumerate(qubits):
        src = (src & ~(1 << q)) | (((target >> j) & 1) << q)
    return src, np.asarray(value[local], dtype=np.complex128)


def _is_diagonal_matrix(m: np.ndarray) -> bool:
    # exact zeros only: a numerically tiny off-diagonal entry must not be dropped
    return not np.any(m[~np.eye(m.shape[0], dtype=bool)])


def _embed_diagonal(diag_k: np.ndarray, qubits: list[int], n: int) -> np.ndarray:
    """Lift a k-qubit diagonal (little-endian over ``qubits``) to the full 2**n space."""
    idx = np.arange(2**n)
    sub = np.zeros(2**n, dtype=np.int64)
    for j, q in enumerate(qubits):
        sub |= ((idx >> q) & 1) << j
    return diag_k[sub]


def jacobian_autograd(
    compiled: CompiledCircuit, values: np.ndarray, observables: Sequence
) -> tuple[np.ndarray, np.ndarray]:
    """Reference Jacobian by reverse-mode autodiff (slow; used to test the adjoint sweep)."""
    x = torch.as_tensor(np.asarray(values, dtype=np.float64)).clone().requires_grad_(True)
    evs = compiled.expectation(x, observables)  # (B, O)
    rows = []
    for o in range(evs.shape[1]):
        if not evs.requires_grad:  # the outputs do not depend on the parameters
            rows.append(torch.zeros_like(x))
            continue
        (g,) = torch.autograd.grad(evs[:, o].sum(), x, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(x) if g is None else g)
    return evs.detach().cpu().numpy(), torch.stack(rows, 1).cpu().numpy()
