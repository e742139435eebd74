"""Transpile once: an in-memory and on-disk (QPY) cache of ISA circuits.

The key is the circuit's structure (:func:`~qmu_qiskit.execution.structure.structure_key`: gate
names, qubit indices, parameter *names* and the definitions of composite instructions, so it is
stable across processes), the backend target's
fingerprint (instructions, qubit pairs, errors and durations — a recalibrated device is a new
target), the optimisation level, the transpiler seed and Qiskit's version. A hit never runs the
pass manager (docs/measurements.md lesson 9: re-transpiling each bound circuit would turn a 3.8 s noisy
epoch into 12–22 s).

ISA circuits keep their parameters symbolic; values are bound positionally in
``circuit.parameters`` order, which is the sorted order of parameter names and therefore the same
for the abstract circuit, the freshly transpiled one and one loaded back from QPY.

Before the pass manager runs, parameterised ``u``/``u1``/``u2``/``u3``/``p`` gates are rewritten
as ``rz·ry·rz`` (:func:`without_parametric_phase`): the same unitaries up to a *parameter-dependent
global phase*, which no expectation value or count can see. Qiskit 2.x's target-aware
``BasisTranslator`` spends time exponential in the number of parameters carried by the global
phase once routing has inserted SWAPs (Qiskit issue #16520: QMU's 8-qubit ring with L = 5 layers
took 11 s, L = 6 over 40 s, L = 10 did not finish; after the rewrite L = 10 takes 0.02 s).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from pathlib import Path

from ..exceptions import BackendError, BadInputError
from ..io import _atomic_bytes, read_regular, seal, unseal


def default_cache_dir() -> Path:
    """``$QMU_CACHE_DIR`` or ``~/.cache/qmu-qiskit``."""
    env = os.environ.get("QMU_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "qmu-qiskit"


_target_fingerprints: dict[int, tuple[object, str]] = {}


def target_fingerprint(target) -> str:
    """A hash of everything in a target that can change a transpilation."""
    cached = _target_fingerprints.get(id(target))
    if cached is not None and cached[0] is target:
        return cached[1]
    items = []
    for name in sorted(target.operation_names):
        props = target[name]
        entries = []
        for qargs in sorted(props, key=lambda q: (q is None, q or ())):
            p = props[qargs]
            entries.append(
                [
                    list(qargs) if qargs is not None else None,
                    None if p is None else p.error,
                    None if p is None else p.duration,
                ]
            )
        items.append([name, entries])
    payload = {
        "num_qubits": target.num_qubits,
        "dt": target.dt,
        "ops": items,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    _target_fingerprints[id(target)] = (target, digest)
    return digest


class TranspileCache:
    """ISA circuits by (structure, target, optimisation level, seed).

    Args:
        directory: folder for the QPY files (``None``: memory only).
        cost: a :class:`~qmu_qiskit.execution.cost.CostTracker` to charge hits, misses and time.
        max_memory: ISA circuits kept in memory, least recently used dropped first (a dropped
            one is read back from disk). Data-dependent circuits make one ISA circuit per sample.
    """

    def __init__(
        self, directory: str | os.PathLike | None = None, *, cost=None, max_memory: int = 512
    ):
        from collections import OrderedDict

        self.directory = Path(directory) if directory is not None else None
        self._memory: OrderedDict[str, object] = OrderedDict()
        self.max_memory = max(1, int(max_memory))
        self._lock = threading.Lock()
        self.cost = cost

    #: Bumped when the preparation before the pass manager changes (old entries are not reused).
    VERSION = "phase-free-1"

    def key(
        self, circuit, target, *, optimization_level: int, seed: int | None, extra: str = ""
    ) -> str:
        import qiskit

        from .structure import structure_key

        parts = [
            structure_key(circuit),
            target_fingerprint(target),
            str(optimization_level),
            str(seed),
            qiskit.__version__,
            self.VERSION,
            extra,
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def get_or_transpile(
        self,
        circuit,
        target,
        *,
        optimization_level: int = 1,
        seed: int | None = 0,
        initial_layout=None,
        qubits_initially_zero: bool = True,
    ):
        """The ISA circuit for ``circuit`` on ``target``, from cache when possible.

        Args:
            circuit: the abstract circuit (parameters stay symbolic).
            target: the device target (or a restricted copy, :func:`.layout.restrict_target`).
            optimization_level, seed: the preset pass manager's settings.
            initial_layout: physical qubit of each virtual qubit (``None``: the transpiler's).
            qubits_initially_zero: ``False`` when the circuit is the tail of a circuit whose
                state is loaded by other means (ideal amplitude loading): the transpiler must
                then not simplify gates on the assumption that the qubits start in |0⟩.

        Raises:
            BackendError: the circuit needs more qubits than the device has.
        """
        if circuit.num_qubits > target.num_qubits:
            raise BackendError(
                f"the circuit needs {circuit.num_qubits} qubits but the device has "
                f"{target.num_qubits}; choose a larger backend or a smaller model (--qubits)"
            )
        extra = "" if initial_layout is None else json.dumps(list(initial_layout))
        if not qubits_initially_zero:
            extra += "|not-initially-zero"
        key = self.key(
            circuit, target, optimization_level=optimization_level, seed=seed, extra=extra
        )
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None:
                self._memory.move_to_end(key)
        if hit is not None:
            self._charge(hits=1)
            return hit
        isa = self._load(key, circuit)
        if isa is not None:
            self._charge(hits=1)
        else:
            from qiskit.transpiler import generate_preset_pass_manager

            t0 = time.perf_counter()
            pm = generate_preset_pass_manager(
                optimization_level=optimization_level,
                target=target,
                seed_transpiler=seed,
                initial_layout=initial_layout,
                qubits_initially_zero=qubits_initially_zero,
            )
            isa = pm.run(without_parametric_phase(circuit))
            self._charge(misses=1, seconds=time.perf_counter() - t0)
            _check_parameters(circuit, isa)
            self._store(key, isa)
        with self._lock:
            self._memory[key] = isa
            while len(self._memory) > self.max_memory:
                self._memory.popitem(last=False)
        return isa

    def _charge(self, *, hits: int = 0, misses: int = 0, seconds: float = 0.0) -> None:
        if self.cost is not None:
            self.cost.add(transpile_hits=hits, transpile_misses=misses, transpile_seconds=seconds)

    def _path(self, key: str) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / "transpiled" / f"{key}.qpy"

    def _load(self, key: str, circuit):
        path = self._path(key)
        if path is None or not path.exists():
            return None
        from qiskit import qpy

        # sealed with a keyed content hash when stored: a changed entry is refused (RunError),
        # an unsealed one (older format, or unreadable) is recomputed
        try:
            blob = read_regular(
                path, max_bytes=256 * 2**20, what="transpile cache entry", follow=False
            )
        except BadInputError:
            return None
        data = unseal(self.directory, blob, path=path)
        if data is None:
            return None
        try:
            isa = qpy.load(io.BytesIO(data))[0]
            _check_parameters(circuit, isa)
        except Exception:
            return None
        return isa

    def _store(self, key: str, isa) -> None:
        path = self._path(key)
        if path is None:
            return
        from qiskit import qpy

        buf = io.BytesIO()
        qpy.dump(isa, buf)
        _atomic_bytes(path, seal(self.directory, buf.getvalue()))


_PHASED_1Q = ("u", "u3", "u2", "u1", "p")


def without_parametric_phase(circuit):
    """The circuit with every parameterised top-level ``u``/``u3``/``u2``/``u1``/``p`` gate written
    as ``rz(λ)·ry(θ)·rz(φ)`` (``U(θ, φ, λ) = e^{i(φ+λ)/2} RZ(φ) RY(θ) RZ(λ)``) and a parameterised
    global phase set to 0 — equal up to a global phase, so every expectation value and outcome
    distribution is unchanged. Circuits without such gates are returned as they are.

    Only top-level one-qubit gates are rewritten: their phase is global to the whole circuit,
    whereas the phase of a gate inside a controlled operation is not.
    """
    from qiskit.circuit import ParameterExpression

    def parametric(op) -> bool:
        return any(isinstance(p, ParameterExpression) and p.parameters for p in op.params)

    phase = circuit.global_phase
    phase_param = isinstance(phase, ParameterExpression) and bool(phase.parameters)
    if not phase_param and not any(
        inst.operation.name in _PHASED_1Q and parametric(inst.operation) for inst in circuit.data
    ):
        return circuit
    import math

    out = circuit.copy_empty_like()
    out.global_phase = 0.0 if phase_param else phase
    for inst in circuit.data:
        op = inst.operation
        if op.name not in _PHASED_1Q or not parametric(op):
            out.append(inst)
            continue
        (q,) = inst.qubits
        if op.name in ("u", "u3"):
            theta, phi, lam = op.params
        elif op.name == "u2":
            theta, (phi, lam) = math.pi / 2, op.params
        else:  # u1 / p: a phase gate, RZ up to a global phase
            theta, phi, lam = 0.0, 0.0, op.params[0]
        out.rz(lam, q)
        if not (isinstance(theta, float) and theta == 0.0):
            out.ry(theta, q)
        if not (isinstance(phi, float) and phi == 0.0):
            out.rz(phi, q)
    return out


def _check_parameters(circuit, isa) -> None:
    names = [p.name for p in circuit.parameters]
    isa_names = [p.name for p in isa.parameters]
    if names != isa_names:
        raise BackendError(
            "transpilation changed the circuit's parameters "
            f"({len(names)} before, {len(isa_names)} after); use optimization level 0 or 1"
        )
