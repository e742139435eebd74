"""Cost accounting: what a training, unlearning or evaluation phase spent.

Every primitive call made through :mod:`qmu_qiskit.execution` is counted here, so a method's cost
and the retrain oracle's cost are always reported side by side (docs/reference.md §4, "Cost").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class CostRecord:
    """Counters of one phase. All fields add up across phases.

    Attributes:
        wall_seconds: wall-clock time of the phase.
        estimator_calls: ``run`` calls on the batching estimator (forward passes).
        sampler_calls: ``run`` calls on the batching sampler.
        gradient_calls: gradient evaluations (backward passes) requested by QNNs.
        jobs: primitive jobs actually executed (on a simulator, a local runtime or a QPU).
        jobs_reused: jobs whose results were read back from the job ledger instead of re-run.
        pubs: PUBs submitted.
        circuit_evaluations: circuits × parameter sets executed (bound-circuit executions).
        shots: total shots (0 for exact simulation).
        qpu_seconds: quantum seconds reported by the service, where it reports them.
        transpile_seconds: time spent in the pass manager.
        transpile_hits: ISA circuits served from the in-memory or on-disk cache.
        transpile_misses: ISA circuits that had to be transpiled.
        engine_seconds: time spent evaluating circuits and their gradients (in this process, or
            waiting for a job's result): what the phase's wall time owes to the quantum layer.
    """

    wall_seconds: float = 0.0
    estimator_calls: int = 0
    sampler_calls: int = 0
    gradient_calls: int = 0
    jobs: int = 0
    jobs_reused: int = 0
    pubs: int = 0
    circuit_evaluations: int = 0
    shots: int = 0
    qpu_seconds: float = 0.0
    transpile_seconds: float = 0.0
    transpile_hits: int = 0
    transpile_misses: int = 0
    engine_seconds: float = 0.0

    def __add__(self, other: CostRecord) -> CostRecord:
        return CostRecord(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def __sub__(self, other: CostRecord) -> CostRecord:
        return CostRecord(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["wall_seconds"] = round(out["wall_seconds"], 4)
        out["transpile_seconds"] = round(out["transpile_seconds"], 4)
        out["engine_seconds"] = round(out["engine_seconds"], 4)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> CostRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class CostTracker:
    """A running :class:`CostRecord` plus a way to measure one phase of it.

    Example:
        >>> tracker = CostTracker()
        >>> with tracker.measure() as phase:
        ...     train(...)
        >>> phase.record.jobs
    """

    def __init__(self) -> None:
        self.total = CostRecord()

    def add(self, **counts: float) -> None:
        for key, value in counts.items():
            setattr(self.total, key, getattr(self.total, key) + value)

    def snapshot(self) -> CostRecord:
        return CostRecord(**asdict(self.total))

    @contextmanager
    def measure(self) -> Iterator[Any]:
        """Yield a handle whose ``record`` holds what was spent inside the block (wall time
        included) once the block ends."""
        handle = _Phase()
        start = self.snapshot()
        t0 = time.perf_counter()
        try:
            yield handle
        finally:
            record = self.snapshot() - start
            record.wall_seconds = time.perf_counter() - t0
            handle.record = record


class _Phase:
    record: CostRecord = CostRecord()
