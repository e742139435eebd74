"""Cell grids: a generic scheduler of dependent cells, with its ledger, pools and handle.

A :class:`Grid` is a DAG of :class:`Cell` objects plus the name of its **cell work** (an
importable module that computes one cell, says whether a cell's run directory is finished, and
turns finished cells into rows; :class:`~qmu_qiskit.jobs.grid.CellWork`). The scheduler runs the
DAG on a local ``spawn`` process pool (Aer's and torch's threads divided between workers), inline,
or on Dask (optional extra), and records every submission and completion in the grid's cell
ledger (``cells.sqlite``). Re-running a grid skips finished cells, resumes interrupted ones from
their checkpoints, and never runs a cell in two processes at once.

This package knows nothing of training, unlearning or study protocols: studies build their grids
(:func:`qmu_qiskit.studies.submit`, :mod:`qmu_qiskit.studies.cells`) and hand them to
:func:`start`::

    from qmu_qiskit import studies

    handle = studies.submit("jobs/hqml_iris.yaml", data_dir="data")
    status = handle.wait()              # GridStatus: state, counts, cells
    rows = handle.results()             # one dict of metrics per finished cell
    handle.cancel()                     # stop; submitting again resumes

and from the shell: ``qmu-qiskit jobs submit|status|results|cancel|list``.
"""

from .grid import Cell, CellWork, Grid, stable_hash
from .handle import GridStatus, JobHandle, list_grids, open_grid, start
from .ledger import CellLedger
from .pools import PoolSpec, make_pool

__all__ = [
    "Cell",
    "CellLedger",
    "CellWork",
    "Grid",
    "GridStatus",
    "JobHandle",
    "PoolSpec",
    "list_grids",
    "make_pool",
    "open_grid",
    "stable_hash",
    "start",
]
