"""Batch jobs: a YAML spec describes a grid of runs; the job manager runs it, resumably.

From scripts::

    from qmu_qiskit import jobs

    handle = jobs.submit("jobs/hqml_iris.yaml", data_dir="data")
    status = handle.wait()              # GridStatus: state, counts, cells
    rows = handle.results()             # one dict of metrics per finished cell
    handle.cancel()                     # stop; submitting again resumes

and from the shell: ``qmu-qiskit jobs submit|status|results|cancel|list``.

A grid is a DAG — teacher cells → one oracle cell per (teacher, forget scenario) → method cells
— run on a local ``spawn`` process pool (Aer's and torch's threads divided between workers),
inline, or on Dask (optional extra). Every submission and completion is recorded in the grid's
cell ledger (``cells.sqlite``). Re-submitting a spec skips finished cells, resumes interrupted
ones from their checkpoints, and never runs a cell in two processes at once.
"""

from .grid import Cell, Grid, expand
from .handle import GridStatus, JobHandle, list_grids, open_grid, submit
from .ledger import CellLedger
from .spec import JobSpec, load_spec

__all__ = [
    "Cell",
    "CellLedger",
    "Grid",
    "GridStatus",
    "JobHandle",
    "JobSpec",
    "expand",
    "list_grids",
    "load_spec",
    "open_grid",
    "submit",
]
