"""CLI commands that live in their own modules (registered lazily in qmu_qiskit.cli)."""
