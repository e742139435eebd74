"""Lowering of any unitary Qiskit circuit to the exact engine's primitive operations.

:class:`~qmu_qiskit.execution.statevector.CompiledCircuit` runs a short program of vectorised
steps. This module turns a user's circuit into the operations those steps are built from, once
per circuit structure:

* composite instructions (a library circuit appended as one gate, ``to_gate()`` /
  ``to_instruction()`` blocks, gates without a closed form here) are replaced by their Qiskit
  definitions, recursively, with the definitions' global phases kept;
* every gate parameter becomes an :class:`Angle` that is affine in a *column* of the extended
  value matrix. Affine expressions (``2*x + 1``) address the circuit's parameters directly;
  every distinct non-affine expression (``2*(pi - x0)*(pi - x1)``, ``sin(w)``) gets a virtual
  column computed per sample from its sympy form (:class:`Expressions`), and its gradient flows
  back to the parameters by the chain rule through the expression's exact derivative;
* parameterised gates with a closed form become batched torch matrix builders, with their
  exact derivatives in closed form (:class:`ClosedForm`);
* ``initialize`` on fresh qubits becomes a fixed unitary whose first column is the state
  (Qiskit's ``Statevector`` sets the same amplitudes), ``reset`` on a fresh qubit is dropped.

What cannot be computed exactly as a pure state is refused with a one-line
:class:`~qmu_qiskit.exceptions.BadInputError`: measurement, classical control, ``reset`` or
``initialize`` on a qubit already acted on, and parameterised gates without a closed form or a
parameter-safe definition (e.g. ``rv``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..exceptions import BadInputError

# Instructions that do nothing to a pure state.
SKIP = frozenset({"barrier", "delay", "id"})
# Single-qubit rotations built in closed form by the segment machinery (by Qiskit class name).
ROT1 = {
    "RXGate": "rx",
    "RYGate": "ry",
    "RZGate": "rz",
    "PhaseGate": "p",
    "U1Gate": "u1",
    "UGate": "u",
    "U3Gate": "u3",
    "U2Gate": "u2",
    "RGate": "r",
}
# exp(-i a/2 P) with a two-qubit Pauli P (P = i·U(π) in Qiskit's own convention).
_PAULI_ROT2 = frozenset({"RXXGate", "RYYGate", "RZZGate", "RZXGate"})
# Largest gate (in qubits) applied as one dense matrix; larger ones are decomposed.
MAX_DENSE_QUBITS = 6
_MAX_DEPTH = 64

_TORCH_FUNCS = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "asin": torch.asin,
    "acos": torch.acos,
    "atan": torch.atan,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "tanh": torch.tanh,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "Abs": torch.abs,
    "sign": torch.sign,
    "conjugate": lambda v: v,
    "re": lambda v: v,
    "pi": math.pi,
    "E": math.e,
}


@dataclass
class Angle:
    """An affine angle ``offset + coeffs · values[:, index]`` over the extended columns."""

    index: np.ndarray
    coeffs: np.ndarray
    offset: float

    def evaluate(self, values: torch.Tensor) -> torch.Tensor:
        if self.index.size == 0:
            return values.new_full((values.shape[0],), self.offset)
        coeffs = torch.as_tensor(self.coeffs, dtype=values.dtype)
        return values[:, self.index] @ coeffs + self.offset


def _constant(value: float) -> Angle:
    return Angle(np.zeros(0, dtype=np.int64), np.zeros(0), float(value))


class Expressions:
    """The circuit's parameters plus one virtual column per distinct non-affine expression.

    Args:
        parameters: the circuit's parameters in column order.

    ``extend(values)`` appends the virtual columns (B, P) → (B, P + K), differentiably;
    ``chain(values, grad)`` folds a gradient over the extended columns back onto the P
    parameters with the expressions' exact derivatives.
    """

    def __init__(self, parameters: list):
        self.parameters = list(parameters)
        self.index = {p: i for i, p in enumerate(self.parameters)}
        self._columns: dict[str, int] = {}
        # per virtual column: (argument columns, f, [df/d argument])
        self._funcs: list[tuple[np.ndarray, Callable, list[Callable]]] = []

    @property
    def num_virtual(self) -> int:
        return len(self._funcs)

    @property
    def num_columns(self) -> int:
        return len(self.parameters) + len(self._funcs)

    def angle(self, expr) -> Angle:
        """A gate parameter (number or ``ParameterExpression``) as an affine :class:`Angle`."""
        params = list(getattr(expr, "parameters", ()) or ())
        if not params:
            return _constant(_real(expr))
        coeffs = []
        for p in params:
            try:
                grad = expr.gradient(p)
            except Exception:
                return self._virtual(expr, params)
            if getattr(grad, "parameters", None):
                return self._virtual(expr, params)
            coeffs.append(_real(grad))
        try:
            offset = _real(expr.bind(dict.fromkeys(params, 0.0)))
        except Exception:
            return self._virtual(expr, params)
        index = np.array([self.index[p] for p in params], dtype=np.int64)
        return Angle(index, np.array(coeffs, dtype=np.float64), offset)

    def column(self, expr) -> int:
        """The column holding ``expr``: a parameter's own column or a virtual one."""
        if expr in self.index:
            return self.index[expr]
        params = list(getattr(expr, "parameters", ()) or ())
        if not params:
            raise BadInputError(f"amplitude {_short(expr)} is a constant; expected a parameter")
        return int(self._virtual(expr, params).index[0])

    def _virtual(self, expr, params) -> Angle:
        import sympy

        try:
            sym = expr.sympify()
        except Exception as exc:
            raise BadInputError(
                f"gate parameter {_short(expr)} cannot be converted to sympy ({exc})"
            ) from None
        if sym.has(sympy.I):
            raise BadInputError(f"gate parameter {_short(expr)} is complex; angles must be real")
        by_name = {p.name: p for p in params}
        args, subs = [], {}
        for k, s in enumerate(sorted(sym.free_symbols, key=lambda s: s.name)):
            if s.name not in by_name:
                raise BadInputError(f"gate parameter {_short(expr)} has an unknown symbol {s}")
            a = sympy.Symbol(f"_a{k}", real=True)
            subs[s] = a
            args.append((a, self.index[by_name[s.name]]))
        sym = sym.xreplace(subs)
        # 18 significant digits: the printed constants read back as the same doubles
        sym = sym.xreplace({f: sympy.Float(f, 18) for f in sym.atoms(sympy.Float)})
        key = sympy.srepr(sym) + repr([c for _, c in args])
        col = self._columns.get(key)
        if col is None:
            symbols = [a for a, _ in args]
            f = sympy.lambdify(symbols, sym, modules=[_TORCH_FUNCS])
            dfs = [
                sympy.lambdify(symbols, sympy.diff(sym, a), modules=[_TORCH_FUNCS]) for a in symbols
            ]
            cols = np.array([c for _, c in args], dtype=np.int64)
            col = len(self.parameters) + len(self._funcs)
            self._funcs.append((cols, f, dfs))
            self._columns[key] = col
        return Angle(np.array([col], dtype=np.int64), np.ones(1), 0.0)

    def extend(self, values: torch.Tensor) -> torch.Tensor:
        """(B, P) values → (B, P + K) with the virtual columns appended."""
        if not self._funcs:
            return values
        extra = []
        for cols, f, _ in self._funcs:
            extra.append(_broadcast(f(*[values[:, c] for c in cols]), values))
        return torch.cat([values, torch.stack(extra, 1)], 1)

    def chain(self, values: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Fold a (B, O, P + K) gradient over extended columns onto the P parameters."""
        if not self._funcs:
            return grad
        num = len(self.parameters)
        out = grad[:, :, :num].clone()
        for k, (cols, _, dfs) in enumerate(self._funcs):
            args = [values[:, c] for c in cols]
            g_virtual = grad[:, :, num + k]  # (B, O)
            for c, df in zip(cols, dfs):
                out[:, :, c] += g_virtual * _broadcast(df(*args), values)[:, None]
        return out


def _broadcast(value, values: torch.Tensor) -> torch.Tensor:
    """A lambdified result (tensor or constant) as a (B,) tensor of the values' dtype."""
    if torch.is_tensor(value) and value.dim() == 1:
        return value.to(values.dtype)
    return torch.as_tensor(float(value), dtype=values.dtype).expand(values.shape[0])


def _real(value) -> float:
    c = complex(value)
    if abs(c.imag) > 1e-12 * max(1.0, abs(c.real)):
        raise BadInputError(f"gate parameter {_short(value)} is complex; angles must be real")
    return c.real


def _short(value, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# closed-form parameterised gates


def rot_matrix(name: str, angles: list[torch.Tensor]) -> torch.Tensor:
    """Batched 2×2 matrices (B, 2, 2) of a parameterised single-qubit gate (Qiskit conventions)."""
    if name == "rx":
        h = angles[0] / 2
        c, s = torch.cos(h), torch.sin(h)
        return stack2(c + 0j, -1j * s, -1j * s, c + 0j)
    if name == "ry":
        h = angles[0] / 2
        c, s = torch.cos(h), torch.sin(h)
        return stack2(c + 0j, -s + 0j, s + 0j, c + 0j)
    if name == "rz":
        h = angles[0] / 2
        zero = torch.zeros_like(h) + 0j
        return stack2(torch.exp(-1j * h), zero, zero, torch.exp(1j * h))
    if name in ("p", "u1"):
        one = torch.ones_like(angles[0]) + 0j
        zero = one * 0
        return stack2(one, zero, zero, torch.exp(1j * angles[0]))
    if name in ("u", "u3", "u2"):
        theta, phi, lam = _u_angles(name, angles)
        c, s = torch.cos(theta / 2), torch.sin(theta / 2)
        return stack2(
            c + 0j,
            -torch.exp(1j * lam) * s,
            torch.exp(1j * phi) * s,
            torch.exp(1j * (phi + lam)) * c,
        )
    if name == "r":
        theta, phi = angles
        c, s = torch.cos(theta / 2), torch.sin(theta / 2)
        return stack2(
            c + 0j,
            -1j * torch.exp(-1j * phi) * s,
            -1j * torch.exp(1j * phi) * s,
            c + 0j,
        )
    raise AssertionError(name)


def _u_angles(name: str, angles: list[torch.Tensor]) -> tuple:
    """(θ, φ, λ) of a ``u``/``u3`` gate, or of ``u2`` (θ = π/2)."""
    if name == "u2":
        return (torch.full_like(angles[0], math.pi / 2), *angles)
    return tuple(angles)


def rot_derivatives(name: str, angles: list[torch.Tensor]) -> list[torch.Tensor]:
    """dG/d(angle_k) for every angle argument of a parameterised single-qubit gate, (B, G, 2, 2)."""
    if name in ("rx", "ry", "rz"):
        # G = exp(-i a/2 σ)  =>  dG = -i/2 σ G
        sigma = {
            "rx": [[0, 1], [1, 0]],
            "ry": [[0, -1j], [1j, 0]],
            "rz": [[1, 0], [0, -1]],
        }[name]
        g = rot_matrix(name, angles)
        return [(-0.5j * torch.as_tensor(sigma, dtype=g.dtype)) @ g]
    if name in ("p", "u1"):
        zero = torch.zeros_like(angles[0]) + 0j
        return [stack2(zero, zero, zero, 1j * torch.exp(1j * angles[0]))]
    if name in ("u", "u3", "u2"):
        theta, phi, lam = _u_angles(name, angles)
        c, s = torch.cos(theta / 2), torch.sin(theta / 2)
        ephi, elam, eboth = torch.exp(1j * phi), torch.exp(1j * lam), torch.exp(1j * (phi + lam))
        zero = torch.zeros_like(c) + 0j
        d_theta = stack2(-s / 2 + 0j, -elam * c / 2, ephi * c / 2, -eboth * s / 2)
        d_phi = stack2(zero, zero, 1j * ephi * s, 1j * eboth * c)
        d_lam = stack2(zero, -1j * elam * s, zero, 1j * eboth * c)
        return [d_phi, d_lam] if name == "u2" else [d_theta, d_phi, d_lam]
    if name == "r":
        theta, phi = angles
        c, s = torch.cos(theta / 2), torch.sin(theta / 2)
        em, ep = torch.exp(-1j * phi), torch.exp(1j * phi)
        d_theta = stack2(-s / 2 + 0j, -0.5j * em * c, -0.5j * ep * c, -s / 2 + 0j)
        zero = torch.zeros_like(c) + 0j
        d_phi = stack2(zero, -em * s, ep * s, zero)
        return [d_theta, d_phi]
    raise AssertionError(name)


def stack2(a, b, c, d) -> torch.Tensor:
    return torch.stack([torch.stack([a, b], -1), torch.stack([c, d], -1)], -2)


@dataclass
class ClosedForm:
    """A parameterised gate's batched matrix (B, 2**k, 2**k) and its exact derivatives
    (one per angle argument), both in closed form."""

    build: Callable[[list[torch.Tensor]], torch.Tensor]
    derive: Callable[[list[torch.Tensor]], list[torch.Tensor]]

    def __call__(self, angles: list[torch.Tensor]) -> torch.Tensor:
        return self.build(angles)


Builder = ClosedForm


def gate_builder(op) -> tuple[Builder, list] | None:
    """A batched closed-form matrix (B, 2**k, 2**k) of a parameterised gate and the gate
    parameters it takes as angles, or ``None``.

    The matrices follow Qiskit's little-endian convention (qubit 0 of the gate is the least
    significant bit) and equal the gate's ``to_matrix`` (checked against ``Operator`` in the
    tests). Time evolutions exp(-i t H) with a numeric H are exact here, where their Qiskit
    definitions may be Trotter approximations.
    """
    cls = op.base_class.__name__
    if cls == "PauliEvolutionGate":
        hamiltonian = _evolution_hamiltonian(op)
        return None if hamiltonian is None else (_evolution(hamiltonian), [op.params[0]])
    if cls == "HamiltonianGate":
        return _evolution(np.asarray(op.params[0], dtype=np.complex128)), [op.params[1]]
    build = _closed_form(op)
    return None if build is None else (build, list(op.params))


def _closed_form(op) -> Builder | None:
    from qiskit.circuit import ControlledGate

    cls = op.base_class.__name__
    if cls in ROT1:
        name = ROT1[cls]
        return ClosedForm(lambda a: rot_matrix(name, a), lambda a: rot_derivatives(name, a))
    if cls in _PAULI_ROT2:
        pauli = 1j * np.asarray(op.base_class(math.pi).to_matrix())  # U(π) = -i P
        return _pauli_rotation(pauli)
    if cls in ("XXPlusYYGate", "XXMinusYYGate"):
        return _two_level(*((1, 2) if cls == "XXPlusYYGate" else (0, 3)))
    if cls == "CUGate":  # controlled e^{iγ} U(θ, φ, λ)

        def base(a):
            return torch.exp(1j * a[3])[:, None, None] * rot_matrix("u", a[:3])

        def base_derivs(a):
            phase = torch.exp(1j * a[3])[:, None, None]
            d = [phase * m for m in rot_derivatives("u", a[:3])]
            return d + [1j * phase * rot_matrix("u", a[:3])]

        return controlled(ClosedForm(base, base_derivs), 1, 1, op.ctrl_state)
    if isinstance(op, ControlledGate):
        inner = _closed_form(op.base_gate)
        if inner is None:
            return None
        return controlled(inner, op.num_ctrl_qubits, op.base_gate.num_qubits, op.ctrl_state)
    return None


def _evolution_hamiltonian(op) -> np.ndarray | None:
    """The numeric Hermitian matrix of a ``PauliEvolutionGate`` (``None`` if symbolic)."""
    from qiskit.quantum_info import SparsePauliOp

    operator = op.operator
    if isinstance(operator, list):
        operator = sum(operator[1:], start=operator[0])
    try:
        matrix = SparsePauliOp(operator).to_matrix()
    except Exception:
        return None
    return np.asarray(matrix, dtype=np.complex128)


def _evolution(hamiltonian: np.ndarray) -> Builder:
    """exp(-i t H) = V diag(exp(-i t λ)) V^† for a fixed Hermitian H."""
    eigvals, vecs = np.linalg.eigh(hamiltonian)
    lam = torch.as_tensor(eigvals, dtype=torch.float64)
    v = torch.as_tensor(vecs, dtype=torch.complex128)

    def build(angles):
        phases = torch.exp(-1j * angles[0][:, None] * lam[None, :])  # (B, K)
        return torch.einsum("ij,bj,kj->bik", v, phases, v.conj())

    def derive(angles):
        phases = -1j * lam[None, :] * torch.exp(-1j * angles[0][:, None] * lam[None, :])
        return [torch.einsum("ij,bj,kj->bik", v, phases, v.conj())]

    return ClosedForm(build, derive)


def _pauli_rotation(pauli: np.ndarray) -> ClosedForm:
    """exp(-i a/2 P) = cos(a/2) I - i sin(a/2) P for a Pauli string P."""
    p = torch.as_tensor(pauli, dtype=torch.complex128)
    eye = torch.eye(p.shape[0], dtype=torch.complex128)

    def build(a):
        c, s = torch.cos(a[0] / 2)[:, None, None], torch.sin(a[0] / 2)[:, None, None]
        return c * eye - 1j * s * p

    def derive(a):
        c, s = torch.cos(a[0] / 2)[:, None, None], torch.sin(a[0] / 2)[:, None, None]
        return [-0.5 * s * eye - 0.5j * c * p]

    return ClosedForm(build, derive)


def _two_level(i: int, j: int) -> ClosedForm:
    """XX±YY(θ, β): a rotation between basis states i and j, identity elsewhere (Qiskit's
    matrix: c on the diagonal pair, -i s e^{∓iβ} off it)."""
    place = torch.zeros(3, 4, 4, dtype=torch.complex128)  # (entry, row, col)
    place[0, i, i] = place[0, j, j] = 1
    place[1, i, j] = 1
    place[2, j, i] = 1
    rest = torch.eye(4, dtype=torch.complex128)
    rest[i, i] = rest[j, j] = 0

    def parts(a):
        theta, beta = a
        c = torch.cos(theta / 2).to(torch.complex128)
        s = torch.sin(theta / 2).to(torch.complex128)
        return c, s, torch.exp(-1j * beta), torch.exp(1j * beta)

    def build(a):
        c, s, em, ep = parts(a)
        coef = torch.stack([c, -1j * s * em, -1j * s * ep], 1)  # (B, 3)
        return rest + torch.einsum("bk,kij->bij", coef, place)

    def derive(a):
        c, s, em, ep = parts(a)
        d_theta = torch.stack([-s / 2, -0.5j * c * em, -0.5j * c * ep], 1)
        d_beta = torch.stack([torch.zeros_like(c), -s * em, s * ep], 1)
        return [torch.einsum("bk,kij->bij", d, place) for d in (d_theta, d_beta)]

    return ClosedForm(build, derive)


def controlled(inner: Builder, num_ctrl: int, num_target: int, ctrl_state: int) -> Builder:
    """The builder of ``inner`` controlled on ``num_ctrl`` qubits in ``ctrl_state``.

    Qiskit's controlled gates take the controls first: they are the low bits of the matrix
    index, the target qubits the high bits.
    """
    size = 2 ** (num_ctrl + num_target)
    dim_t = 2**num_target
    active = [ctrl_state + (a << num_ctrl) for a in range(dim_t)]
    rest = torch.eye(size, dtype=torch.complex128)
    place = torch.zeros(dim_t * dim_t, size, size, dtype=torch.complex128)
    for a in range(dim_t):
        rest[active[a], active[a]] = 0
        for b in range(dim_t):
            place[a * dim_t + b, active[a], active[b]] = 1

    def embed(base):
        return torch.einsum("bx,xij->bij", base.reshape(base.shape[0], -1), place)

    def build(angles):
        return rest + embed(inner.build(angles))

    def derive(angles):
        return [embed(d) for d in inner.derive(angles)]

    return ClosedForm(build, derive)


def builder_derivatives(build: ClosedForm, angles: list[torch.Tensor]) -> list[torch.Tensor]:
    """dU/d(angle_k) for every angle argument, exactly (closed form)."""
    return build.derive(angles)


def diagonal_generator(op) -> np.ndarray | None:
    """``g`` with U(θ) = diag(exp(i θ g)) for single-angle diagonal gates (controls included)."""
    from qiskit.circuit import ControlledGate

    cls = op.base_class.__name__
    k = op.num_qubits
    idx = np.arange(2**k)
    if cls == "RZZGate":
        return -0.5 * (1 - 2 * ((idx & 1) ^ ((idx >> 1) & 1))).astype(np.float64)
    if isinstance(op, ControlledGate) and op.base_gate.num_qubits == 1:
        base = op.base_gate.base_class.__name__
        if base not in ("PhaseGate", "U1Gate", "RZGate"):
            return None
        c = op.num_ctrl_qubits
        on = ((idx & (2**c - 1)) == op.ctrl_state).astype(np.float64)
        target = (idx >> c) & 1
        if base == "RZGate":
            return on * -0.5 * (1 - 2 * target).astype(np.float64)
        return on * target.astype(np.float64)
    return None


# ---------------------------------------------------------------------------------------------
# flattening


@dataclass
class Leaf:
    """One primitive operation: ``kind`` is ``rot1`` (data: (name, angles)), ``fixed``
    (data: unitary), ``pdiag`` (data: (angle, generator)), ``pdense`` (data: (builder, angles))
    or ``amplitudes`` (data: column per amplitude)."""

    kind: str
    qubits: list[int]
    data: Any  # the kind's payload, as listed above


def flatten(circuit, expressions: Expressions) -> tuple[list[Leaf], float, list[Angle]]:
    """Lower ``circuit`` to primitive leaves.

    Returns:
        ``(leaves, phase, phase_angles)``: the numeric global phase and the parameterised ones
        (of the circuit, of decomposed definitions and of ``global_phase`` gates).
    """
    leaves: list[Leaf] = []
    touched: set[int] = set()
    phase = [0.0]
    phase_angles: list[Angle] = []

    def add_phase(value) -> None:
        a = expressions.angle(value)
        if a.index.size:
            phase_angles.append(a)
        else:
            phase[0] += a.offset

    def visit(circ, qmap: list[int], depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise BadInputError("instruction definitions nest too deeply to flatten")
        add_phase(circ.global_phase)
        for inst in circ.data:
            op = inst.operation
            name = op.name
            qubits = [qmap[circ.find_bit(q).index] for q in inst.qubits]
            if name in SKIP:
                continue
            _refuse_non_unitary(op, inst, name)
            if name == "reset":
                if qubits[0] in touched:
                    raise BadInputError(
                        "the exact engine evaluates pure states; 'reset' is only allowed on a "
                        "qubit no gate has acted on yet"
                    )
                continue
            if name == "ParameterizedInitialize":
                if touched or leaves or len(qubits) != circuit.num_qubits:
                    raise BadInputError(
                        "amplitude encoding (ParameterizedInitialize) must be the first "
                        "instruction and act on every qubit"
                    )
                cols = [expressions.column(p) for p in op.params]
                leaves.append(Leaf("amplitudes", qubits, np.array(cols, dtype=np.int64)))
                touched.update(qubits)
                continue
            if name == "initialize":
                if touched.intersection(qubits):
                    raise BadInputError(
                        "'initialize' resets its qubits; the exact engine allows it only on "
                        "qubits no gate has acted on yet"
                    )
                leaves.append(Leaf("fixed", qubits, _loader(_initial_state(op, len(qubits)))))
                touched.update(qubits)
                continue
            if name == "global_phase":
                add_phase(op.params[0])
                continue
            leaf = _leaf(op, qubits, expressions)
            if leaf is None:
                try:
                    definition = op.definition
                except Exception as exc:
                    raise BadInputError(
                        f"gate '{name}' is not supported by the exact engine: {_short(exc)}"
                    ) from None
                if definition is None:
                    raise BadInputError(
                        f"gate '{name}' has neither a matrix nor a definition; the exact engine "
                        "cannot evaluate it"
                    )
                if _is_parameterised(op):
                    _check_definition(op)
                visit(definition, qubits, depth + 1)
                continue
            leaves.append(leaf)
            touched.update(qubits)

    visit(circuit, list(range(circuit.num_qubits)), 0)
    return leaves, phase[0], phase_angles


def _check_definition(op) -> None:
    """Refuse a parameterised gate whose definition differs from its own matrix.

    ``Statevector`` uses a gate's ``to_matrix`` when it has one; a definition that only
    approximates it (a synthesis) would be a silently wrong value. Checked at random bound
    values once per gate at compile time.
    """
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import Operator

    if op.num_qubits > MAX_DENSE_QUBITS:
        return
    probe = QuantumCircuit(op.num_qubits)
    probe.append(op, range(op.num_qubits))
    rng = np.random.default_rng(1234)
    bound = probe.assign_parameters({p: float(rng.uniform(0.1, 1.0)) for p in probe.parameters})
    gate = bound.data[0].operation
    try:
        matrix = np.asarray(gate.to_matrix(), dtype=np.complex128)
    except Exception:
        return
    try:
        defined = Operator(gate.definition).data
    except Exception:
        return
    if not np.allclose(matrix, defined, atol=1e-10, rtol=0):
        raise BadInputError(
            f"gate '{op.name}' with parameters has no exact closed form here and its definition "
            "only approximates its matrix; bind its parameters or use a supported gate"
        )


def _refuse_non_unitary(op, inst, name: str) -> None:
    from qiskit.circuit import ControlFlowOp

    if isinstance(op, ControlFlowOp) or getattr(op, "condition", None) is not None:
        raise BadInputError(
            f"the exact engine evaluates unitary circuits; classical control ('{name}') is not "
            "supported"
        )
    if name == "measure" or inst.clbits:
        raise BadInputError(
            f"the exact engine evaluates unitary circuits; remove '{name}' from the circuit "
            "(only final measurements are allowed)"
        )


def _is_parameterised(op) -> bool:
    return any(getattr(p, "parameters", None) for p in op.params)


def _leaf(op, qubits: list[int], expressions: Expressions) -> Leaf | None:
    """The primitive leaf of a gate, or ``None`` when it must be decomposed."""
    from qiskit.circuit import Gate

    if not isinstance(op, Gate):
        return None
    cls = op.base_class.__name__
    if cls in ROT1 and len(qubits) == 1:
        return Leaf("rot1", qubits, (ROT1[cls], [expressions.angle(p) for p in op.params]))
    if not _is_parameterised(op):
        if cls in ("PauliEvolutionGate", "HamiltonianGate") and len(qubits) <= MAX_DENSE_QUBITS:
            found = gate_builder(op)  # exp(-i t H) by eigendecomposition, no sparse expm
            if found is not None:
                build, (time,) = found
                with torch.no_grad():
                    t = torch.tensor([_real(time)], dtype=torch.float64)
                    return Leaf("fixed", qubits, build([t])[0].numpy())
        matrix = _fixed_matrix(op)
        return None if matrix is None else Leaf("fixed", qubits, matrix)
    if len(qubits) > MAX_DENSE_QUBITS:
        return None
    gen = diagonal_generator(op) if len(op.params) == 1 else None
    if gen is not None:
        return Leaf("pdiag", qubits, (expressions.angle(op.params[0]), gen))
    found = gate_builder(op)
    if found is None:
        return None
    build, params = found
    return Leaf("pdense", qubits, (build, [expressions.angle(p) for p in params]))


def _fixed_matrix(op) -> np.ndarray | None:
    """A parameter-free gate's unitary: its own matrix, else Qiskit's ``Operator`` of its
    definition for small gates; ``None`` for large composite gates (decomposed instead)."""
    try:
        return np.asarray(op.to_matrix(), dtype=np.complex128)
    except Exception:
        pass
    if op.num_qubits > MAX_DENSE_QUBITS:
        return None
    from qiskit.quantum_info import Operator

    try:
        return np.asarray(Operator(op).data, dtype=np.complex128)
    except Exception:
        return None


def _initial_state(op, k: int) -> np.ndarray:
    """The state ``initialize`` writes, as ``Statevector`` computes it."""
    from qiskit.quantum_info import Statevector

    params = op.params
    if params and all(isinstance(p, str) for p in params):
        vec = Statevector.from_label("".join(params)).data
    elif len(params) == 1:
        vec = Statevector.from_int(int(np.real(params[0])), 2**k).data
    else:
        vec = np.asarray(params, dtype=np.complex128)
    if vec.shape != (2**k,):
        raise BadInputError(f"'initialize' on {k} qubits needs {2**k} amplitudes")
    return vec


def _loader(vec: np.ndarray) -> np.ndarray:
    """A unitary whose first column is ``vec`` (a phase times a Householder reflection)."""
    vec = np.asarray(vec, dtype=np.complex128)
    norm = np.linalg.norm(vec)
    if abs(norm - 1) > 1e-8:
        raise BadInputError(f"'initialize' amplitudes have norm {norm:.6g}, expected 1")
    phase = vec[0] / abs(vec[0]) if abs(vec[0]) > 0 else 1.0
    v = vec / phase  # v[0] real and >= 0
    u = -v
    u[0] += 1.0
    size = len(vec)
    nu = np.linalg.norm(u)
    if nu < 1e-15:
        return phase * np.eye(size, dtype=np.complex128)
    u /= nu
    return phase * (np.eye(size, dtype=np.complex128) - 2 * np.outer(u, u.conj()))
