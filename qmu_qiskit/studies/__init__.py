"""Study protocols (docs/reference.md §5): grid builders and report writers.

``qmu-qiskit study jobs/<name>.yaml`` runs a protocol's grid through the job manager
(:mod:`qmu_qiskit.jobs`) and writes, in the grid directory, ``results_summary.csv`` (HQML's
columns first, then ours), ``results_summary_mean_std.csv`` when the study has several seeds,
``report.md`` and ``plots/*.png``.
"""

from .protocols import PROTOCOLS, Protocol, get_protocol  # noqa: F401
from .report import HQML_COLUMNS, StudyOutputs, write_outputs  # noqa: F401
from .run import run_study  # noqa: F401
