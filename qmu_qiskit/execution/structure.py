"""Circuit structure: a collision-free structural key, and circuits made safe for Aer.

* :func:`structure_key` — like qiskit-machine-learning's ``circuit_cache_key`` (gate names,
  qubits, parameters), but a composite instruction (a library circuit appended as one gate) is
  keyed by its definition, recursively, not by its name alone: two different blocks named
  ``ZZFeatureMap`` must never share a cached compiled or transpiled circuit.
* :func:`aer_circuit` — qiskit-aer 0.18 binds the parameters of ``crx``/``cry``/``crz``/``cp``/
  ``cu1``/``cu3`` wrongly or fails with runtime parameter binding (``h(0); h(1); crz(a, 0, 1)``,
  observable XX, a = 0.3: Aer 1.0, ``Statevector`` 0.9888), rejects a parameterised global phase
  and does not know composite instructions. The circuit handed to Aer has every instruction Aer
  does not know decomposed, every parameterised gate outside :data:`AER_BINDABLE` translated into
  gates of that set, and a parameterised global phase dropped (it changes no expectation value
  or outcome probability). Built once per structure (:func:`structure_key`), cached.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict

import numpy as np

from ..exceptions import BackendError

#: Parameterised gates whose runtime parameter binding qiskit-aer 0.18 gets right: measured on
#: every parameterised standard gate with one and several parameter sets against ``Statevector``
#: (``tests/test_primitives_conformance.py::test_aer_bindable_gates_are_bound_correctly``).
AER_BINDABLE = frozenset(
    {"p", "r", "rx", "ry", "rz", "rxx", "ryy", "rzx", "rzz", "u", "u1", "u2", "u3"}
)

#: Non-gate instructions Aer executes as they are.
_AER_DIRECTIVES = frozenset(
    {
        "measure",
        "barrier",
        "reset",
        "delay",
        "initialize",
        "unitary",
        "diagonal",
        "kraus",
        "set_statevector",
        "save_expval",
        "save_expval_var",
        "save_probabilities",
        "save_probabilities_dict",
        "save_statevector",
        "save_density_matrix",
        "save_state",
        "save_amplitudes",
        "save_amplitudes_sq",
        "pauli",
        "superop",
        "quantum_channel",
    }
)

_aer_names: frozenset | None = None
_cache: OrderedDict[str, object] = OrderedDict()
_lock = threading.Lock()
_MAX_CACHED = 256


def _param_json(p):
    from qiskit.circuit import Parameter, ParameterExpression

    if isinstance(p, Parameter):
        return ["P", p.name]
    if isinstance(p, ParameterExpression):
        return ["E", str(p), sorted(q.name for q in p.parameters)]
    if isinstance(p, (int, float, np.number)):
        return float(p)
    if isinstance(p, complex):
        return [float(p.real), float(p.imag)]
    if isinstance(p, np.ndarray):
        return ["A", hashlib.sha256(np.ascontiguousarray(p).tobytes()).hexdigest(), list(p.shape)]
    return [type(p).__name__, repr(p)[:200]]


@functools.lru_cache(maxsize=1)
def _standard_names() -> frozenset:
    """Names of qiskit's standard gates (built once: the mapping constructs every gate)."""
    from qiskit.circuit.library import get_standard_gate_name_mapping

    return frozenset(get_standard_gate_name_mapping())


def _ops(circuit, std: frozenset, depth: int = 0) -> list:
    q_index = {q: i for i, q in enumerate(circuit.qubits)}
    c_index = {c: i for i, c in enumerate(circuit.clbits)}
    out = []
    for inst in circuit.data:
        op = inst.operation
        entry = [
            op.name,
            [q_index[q] for q in inst.qubits],
            [c_index[c] for c in inst.clbits],
            [_param_json(p) for p in getattr(op, "params", ())],
        ]
        if op.name not in std and depth < 16:
            try:
                definition = op.definition
            except Exception:
                definition = None  # its name and parameters are its structure
            if definition is not None:
                entry.append(_ops(definition, std, depth + 1))
        out.append(entry)
    return out


def structure_key(circuit) -> str:
    """A structural hash of ``circuit``: instructions, qubits, parameters, and the definition of
    every non-standard instruction, recursively (``circuit_cache_key`` keys those by name)."""
    payload = {
        "n": circuit.num_qubits,
        "c": circuit.num_clbits,
        "ops": _ops(circuit, _standard_names()),
    }
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()


def _aer_supported() -> frozenset:
    global _aer_names
    if _aer_names is None:
        from qiskit_aer import AerSimulator

        names = set(AerSimulator(method="statevector").configuration().basis_gates)
        _aer_names = frozenset(names | _AER_DIRECTIVES)
    return _aer_names


def _parametric(op) -> bool:
    from qiskit.circuit import ParameterExpression

    return any(isinstance(p, ParameterExpression) and p.parameters for p in op.params)


def aer_circuit(circuit):
    """``circuit`` rewritten so that Aer runs it and binds its parameters correctly.

    The result has the same parameters (same objects, same order) and the same expectation
    values and outcome distributions for every parameter binding. Circuits that need no rewrite
    are returned as they are.

    Raises:
        BackendError: an instruction Aer does not know has no definition to decompose.
    """
    supported = _aer_supported()
    phase = circuit.global_phase
    from qiskit.circuit import ParameterExpression

    phase_param = isinstance(phase, ParameterExpression) and bool(phase.parameters)
    if not phase_param and all(
        inst.operation.name in supported
        and (inst.operation.name in AER_BINDABLE or not _parametric(inst.operation))
        for inst in circuit.data
    ):
        return circuit
    key = structure_key(circuit)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    if hit is not None:
        return _rebind(hit, circuit)
    out = _rewrite(circuit)
    with _lock:
        _cache[key] = out
        while len(_cache) > _MAX_CACHED:
            _cache.popitem(last=False)
    return out


def _rebind(cached, circuit):
    """The cached rewrite of a circuit with the same structure, on ``circuit``'s parameters."""
    if list(cached.parameters) == list(circuit.parameters):
        return cached
    mapping = dict(zip(cached.parameters, circuit.parameters))
    return cached.assign_parameters(mapping, inplace=False)


def _evolution_terms(op):
    """The Pauli terms of a ``PauliEvolutionGate`` (its operator, or the sum of its list)."""
    from qiskit.quantum_info import SparsePauliOp

    ops = op.operator if isinstance(op.operator, list) else [op.operator]
    paulis = []
    for o in ops:
        spo = o if isinstance(o, SparsePauliOp) else SparsePauliOp(o)
        paulis.extend(spo.paulis)
    return paulis


def _commuting(paulis) -> bool:
    return all(
        paulis[i].commutes(paulis[j]) for i in range(len(paulis)) for j in range(i + 1, len(paulis))
    )


def check_evolutions(circuit, depth: int = 0) -> None:
    """Refuse a ``PauliEvolutionGate`` with a parameterised time whose terms do not commute,
    anywhere in ``circuit``: its definition is a product formula (Trotter), not exp(-itH), and
    a bound time cannot be turned into the exact matrix while the parameter is free.

    Raises:
        BackendError: such an evolution is found (one line, with what to do).
    """
    for inst in circuit.data:
        op = inst.operation
        if op.name == "PauliEvolution" and _parametric(op):
            if not _commuting(_evolution_terms(op)):
                raise BackendError(
                    "a PauliEvolutionGate with a parameterised time and non-commuting terms has "
                    "no exact decomposition for Aer or the parameter-shift rule (its definition "
                    "is a Trotter product); use engine 'exact' on 'aer', bind the time, or write "
                    "the product formula you mean explicitly"
                )
            continue
        if op.name in _standard_names() or depth >= 16:
            continue
        try:
            definition = op.definition
        except Exception:
            definition = None
        if definition is not None:
            check_evolutions(definition, depth + 1)


def _exact_evolutions(circuit):
    """Top-level ``PauliEvolutionGate`` s with a numeric time as their exact unitary (their
    definition is a Trotter product, which ``Statevector`` does not use)."""
    from qiskit.circuit.library import UnitaryGate
    from scipy.linalg import expm

    if not any(i.operation.name == "PauliEvolution" for i in circuit.data):
        return circuit
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        op = inst.operation
        if op.name == "PauliEvolution" and not _parametric(op):
            paulis = _evolution_terms(op)
            if not _commuting(paulis):
                ops = op.operator if isinstance(op.operator, list) else [op.operator]
                h = sum(o.to_matrix() for o in ops)  # dense: Aer-sized circuits only
                u = expm(-1j * float(op.params[0]) * h)
                inst = inst.replace(operation=UnitaryGate(u, check_input=False))
        out.append(inst)
    return out


def _has_evolution(circuit, depth: int = 0) -> bool:
    for inst in circuit.data:
        op = inst.operation
        if op.name == "PauliEvolution":
            return True
        if op.name in _standard_names() or depth >= 16:
            continue
        try:
            definition = op.definition
        except Exception:
            definition = None
        if definition is not None and _has_evolution(definition, depth + 1):
            return True
    return False


def exact_evolutions(circuit):
    """``circuit`` with every ``PauliEvolutionGate`` that a transpiler would Trotterise made
    exact: numeric times become the exact unitary (composites holding one are decomposed to
    reach it), parameterised times are kept only where the terms commute (the product formula is
    then exact). A circuit without evolutions is returned as it is.

    Raises:
        BackendError: a parameterised evolution with non-commuting terms.
    """
    if not _has_evolution(circuit):
        return circuit
    check_evolutions(circuit)
    out = circuit
    for _ in range(32):
        out = _exact_evolutions(out)
        nested = set()
        for inst in out.data:
            op = inst.operation
            if op.name in _standard_names() or op.name == "PauliEvolution":
                continue
            try:
                definition = op.definition
            except Exception:
                definition = None
            if definition is not None and _has_evolution(definition):
                nested.add(op.name)
        if not nested:
            return out
        out = out.decompose(gates_to_decompose=sorted(nested))
    raise BackendError("a composite instruction is nested more than 32 levels deep")


def _rewrite(circuit):
    from qiskit.circuit import ParameterExpression
    from qiskit.transpiler.passes import TranslateParameterizedGates

    supported = _aer_supported()
    check_evolutions(circuit)
    out = circuit
    for _ in range(32):  # unroll composite instructions level by level
        out = _exact_evolutions(out)
        unknown = {inst.operation.name for inst in out.data if inst.operation.name not in supported}
        if not unknown:
            break
        for inst in out.data:
            try:
                definition = inst.operation.definition if inst.operation.name in unknown else 1
            except Exception:
                definition = None
            if definition is None:
                raise BackendError(
                    f"Aer cannot run instruction {inst.operation.name!r} and it has no definition "
                    "to decompose; rewrite the circuit with standard gates"
                )
        out = out.decompose(gates_to_decompose=sorted(unknown))
    else:
        raise BackendError("a composite instruction is nested more than 32 levels deep")
    try:
        out = TranslateParameterizedGates(sorted(AER_BINDABLE))(out)
    except Exception as exc:
        raise BackendError(
            f"cannot write the circuit's parameterised gates in gates Aer binds correctly "
            f"({type(exc).__name__}); use engine 'exact' or standard rotation gates"
        ) from None
    if isinstance(out.global_phase, ParameterExpression) and out.global_phase.parameters:
        out = out.copy()
        out.global_phase = 0.0
    lost = [p for p in circuit.parameters if p not in set(out.parameters)]
    if lost:
        # a parameter that only set the (unobservable) global phase: keep it in the circuit so
        # that parameter binding by position stays aligned; rz(p)·rz(-p) is the identity
        out = out.copy()
        if not out.num_qubits:
            raise BackendError("a circuit without qubits cannot carry parameters on Aer")
        for p in lost:
            out.rz(p, 0)
            out.rz(-p, 0)
    if [p.name for p in out.parameters] != [p.name for p in circuit.parameters]:
        raise BackendError("rewriting the circuit for Aer changed its parameters")
    return out
