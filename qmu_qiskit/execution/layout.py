"""Layouts that keep an n-qubit circuit on n device qubits.

The transpiler's own layout and routing may spread a circuit over more physical qubits than it
has: QMU's 8-qubit CNOT ring does not embed in heavy-hex, and at optimisation levels 1–3 it is
routed through 12 physical qubits. On hardware that is harmless, but a density-matrix emulation
pays 4**k per parameter set for k qubits (docs/measurements.md lesson 8: ~3 s instead of ~22 ms for an
8-qubit ring). Here the circuit is confined to a *path* of n coupled qubits: the transpiler gets
a copy of the device target in which only those qubits carry instructions, and the path as the
initial layout, so routing (SWAPs) can only use the path's own couplers.

* :func:`best_path` — the simple path of n coupled qubits with the least summed two-qubit error
  plus readout error (exhaustive branch-and-bound on sparse coupling maps such as heavy-hex, a
  greedy search beyond a node budget);
* :func:`check_path` — validate a path given by the user;
* :func:`restrict_target` — the device target with instructions only on chosen qubits (same
  width, same calibration data), so the ISA circuit still runs on the real device.
"""

from __future__ import annotations

import threading
from typing import Any

from ..exceptions import BackendError, BadInputError

#: Two-qubit error above which a coupler is treated as broken and never used for a path.
BROKEN_COUPLER_ERROR = 0.5
#: Two-qubit error assumed where the target gives none.
UNKNOWN_ERROR = 1e-2
#: Search nodes after which :func:`best_path` stops the exhaustive search and keeps its best.
NODE_BUDGET = 400_000

_lock = threading.Lock()
_paths: dict[tuple, tuple[object, tuple[int, ...]]] = {}
_restricted: dict[tuple, tuple[Any, Any]] = {}


def _two_qubit_errors(target) -> dict[frozenset, float]:
    """Undirected coupler → the smallest error of any two-qubit instruction on it."""
    out: dict[frozenset, float] = {}
    for name in target.operation_names:
        props = target[name]
        if props is None or None in props:
            continue
        for qargs, p in props.items():
            if qargs is None or len(qargs) != 2 or qargs[0] == qargs[1]:
                continue
            err = p.error if (p is not None and p.error is not None) else UNKNOWN_ERROR
            key = frozenset(qargs)
            out[key] = min(err, out.get(key, float("inf")))
    return out


def _readout_errors(target) -> dict[int, float]:
    out: dict[int, float] = {}
    if "measure" in target.operation_names:
        for qargs, p in (target["measure"] or {}).items():
            if qargs is not None and len(qargs) == 1:
                out[qargs[0]] = (
                    p.error if (p is not None and p.error is not None) else UNKNOWN_ERROR
                )
    return out


def best_path(target, n: int) -> tuple[int, ...]:
    """The n-qubit simple path of ``target``'s coupling graph with the least summed error.

    The cost of a path is the sum of its couplers' two-qubit errors and its qubits' readout
    errors (calibration of the target). Cached per target object and n.

    Raises:
        BackendError: the device has no path of n usable qubits.
    """
    key = (id(target), n)
    with _lock:
        hit = _paths.get(key)
    if hit is not None and hit[0] is target:
        return hit[1]
    if n < 1 or n > target.num_qubits:
        raise BackendError(
            f"the circuit needs {n} qubits but the device has {target.num_qubits}; choose a "
            "larger backend or a smaller model (--qubits)"
        )
    edges = {e: err for e, err in _two_qubit_errors(target).items() if err < BROKEN_COUPLER_ERROR}
    readout = _readout_errors(target)
    adj: dict[int, list[int]] = {}
    for e in edges:
        a, b = tuple(e)
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    for nbrs in adj.values():
        nbrs.sort()
    ro = [readout.get(q, UNKNOWN_ERROR) for q in range(target.num_qubits)]
    best_cost = float("inf")
    best: list[int] | None = None
    nodes = 0

    def dfs(path: list[int], used: set, cost: float) -> None:
        nonlocal best_cost, best, nodes
        nodes += 1
        if cost >= best_cost or nodes > NODE_BUDGET:
            return
        if len(path) == n:
            best_cost, best = cost, list(path)
            return
        last = path[-1]
        # cheapest extension first, so good paths are found early and prune the rest
        for nb in sorted(adj.get(last, ()), key=lambda q: edges[frozenset((last, q))] + ro[q]):
            if nb in used:
                continue
            path.append(nb)
            used.add(nb)
            dfs(path, used, cost + edges[frozenset((last, nb))] + ro[nb])
            path.pop()
            used.discard(nb)

    starts = (
        sorted(range(target.num_qubits), key=lambda q: ro[q]) if n > 1 else range(target.num_qubits)
    )
    for q in starts:
        if n > 1 and q not in adj:
            continue
        dfs([q], {q}, ro[q])
    if best is None:
        raise BackendError(
            f"the device has no path of {n} coupled working qubits; use layout 'device' or a "
            "smaller model (--qubits)"
        )
    result = tuple(best)
    with _lock:
        _paths[key] = (target, result)
    return result


def check_path(target, qubits) -> tuple[int, ...]:
    """Validate a user-given path: distinct device qubits, each coupled to the next.

    Raises:
        BadInputError: a qubit outside the device, a repeated qubit, or two neighbours in the
            list that share no two-qubit instruction.
    """
    try:
        path = tuple(int(q) for q in qubits)
    except (TypeError, ValueError):
        raise BadInputError(f"a layout path is a list of device qubits, got {qubits!r}") from None
    bad = [q for q in path if not 0 <= q < target.num_qubits]
    if bad:
        raise BadInputError(
            f"layout qubits {bad} are not on the {target.num_qubits}-qubit device; use 0..{target.num_qubits - 1}"
        )
    if len(set(path)) != len(path):
        raise BadInputError(f"layout path {list(path)} repeats a qubit")
    edges = _two_qubit_errors(target)
    for a, b in zip(path, path[1:]):
        if frozenset((a, b)) not in edges:
            raise BadInputError(
                f"layout path {list(path)}: qubits {a} and {b} are not coupled on this device; "
                "give neighbouring qubits, or use layout 'path' to pick the best path"
            )
    return path


def restrict_target(target, qubits) -> object:
    """A copy of ``target`` (same width and calibration) whose instructions act only on
    ``qubits``; global instructions (control flow) are kept. Cached per target and qubit set.

    A circuit transpiled for it is also valid for ``target``: every instruction it may use is an
    instruction of ``target`` on the same qubits.
    """
    from qiskit.transpiler import Target

    keep = frozenset(int(q) for q in qubits)
    key = (id(target), keep)
    with _lock:
        hit = _restricted.get(key)
    if hit is not None and hit[0] is target:
        return hit[1]
    new = Target(
        description=f"{target.description or 'target'} restricted to {sorted(keep)}",
        num_qubits=target.num_qubits,
        dt=target.dt,
        granularity=target.granularity,
        min_length=target.min_length,
        pulse_alignment=target.pulse_alignment,
        acquire_alignment=target.acquire_alignment,
        qubit_properties=target.qubit_properties,
        concurrent_measurements=getattr(target, "concurrent_measurements", None),
    )
    for name in target.operation_names:
        op = target.operation_from_name(name)
        props = target[name]
        if props is None or None in props:
            new.add_instruction(op, name=name)
            continue
        sub = {q: p for q, p in props.items() if all(x in keep for x in q)}
        if sub:
            new.add_instruction(op, sub, name=name)
    with _lock:
        _restricted[key] = (target, new)
    return new
