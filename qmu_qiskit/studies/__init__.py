"""Studies: protocols, study specs, grid expansion, the cell work, reports, audits and QMU's
MIA comparison — all built on :mod:`qmu_qiskit.pipeline`, run as grids of cells by
:mod:`qmu_qiskit.jobs`.

``qmu-qiskit study jobs/<name>.yaml`` expands a spec into its grid (:func:`submit`), runs it and
writes, in the grid directory, ``results_summary.csv`` (HQML's columns first, then ours),
``results_summary_mean_std.csv`` when the study has several seeds, ``report.md`` and
``plots/*.png``. From Python::

    from qmu_qiskit import studies

    handle = studies.submit("jobs/hqml_iris.yaml", data_dir="data")
    status = handle.wait()              # GridStatus: state, counts, cells
    rows = handle.results()             # one dict of metrics per finished cell
    handle.cancel()                     # stop; submitting again resumes
"""

from ..jobs.handle import GridStatus, JobHandle, list_grids
from .grid import MAX_CELLS, expand, make_grid, open_grid, output_root, submit
from .protocols import PROTOCOLS, Protocol, get_protocol
from .report import HQML_COLUMNS, StudyOutputs, write_outputs
from .run import run_study
from .spec import StudySpec, load_spec

__all__ = [
    "HQML_COLUMNS",
    "MAX_CELLS",
    "PROTOCOLS",
    "GridStatus",
    "JobHandle",
    "Protocol",
    "StudyOutputs",
    "StudySpec",
    "expand",
    "get_protocol",
    "list_grids",
    "load_spec",
    "make_grid",
    "open_grid",
    "output_root",
    "run_study",
    "submit",
    "write_outputs",
]
