"""Example qmu-qiskit plugin (see docs/extending.md): importing a submodule registers its entry.

qmu-qiskit imports ``method``, ``metric`` and ``dataset`` through the entry points declared in
``pyproject.toml`` the first time it looks up a method, metric or dataset; nothing needs to
import this package by hand.
"""
