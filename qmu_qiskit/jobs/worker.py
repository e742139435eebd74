"""What runs inside a worker process: thread limits, dying with the scheduler, one cell.

Workers are started with the ``spawn`` context (torch's and Aer's thread pools do not survive a
``fork``). Each takes its share of the cores: ``QMU_THREADS`` (Aer's ``max_parallel_threads``,
read by :mod:`qmu_qiskit.execution.runners`), the BLAS/OpenMP variables and
``torch.set_num_threads``. A worker must not outlive its scheduler — a killed ``jobs submit``
would otherwise leave cells running that the next submission also wants to run — so it asks the
kernel for SIGKILL when its parent dies (Linux) and also watches its parent pid.
"""

from __future__ import annotations

import os
import signal
import threading
import time

_THREADS: int | None = None
_THREAD_VARS = ("QMU_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def set_threads(threads: int | None) -> None:
    """Limit this process to ``threads`` threads for Aer and torch (idempotent)."""
    global _THREADS
    if not threads or _THREADS == threads:
        return
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(int(threads))
    _THREADS = threads


def init_worker(threads: int | None) -> None:
    """Process-pool initializer: limits first (before torch is imported), then the guards."""
    if threads:
        for var in _THREAD_VARS:
            os.environ[var] = str(threads)
    # Ctrl-C reaches the whole process group; the scheduler decides what stops, and how.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ..registry import one_line_plugin_warnings

    one_line_plugin_warnings()  # a broken plugin: one line per worker, not a traceback
    _die_with_parent()
    set_threads(threads)


def _die_with_parent() -> None:
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="qmu-parent-watch", daemon=True).start()


def run_cell(work: str, payload: dict, threads: int | None = None) -> dict:
    """Run one cell to completion with the cell work ``work`` (a module name, see
    :class:`~qmu_qiskit.jobs.grid.CellWork`), resuming its run directory if it was interrupted.

    Returns:
        ``{"status": "done", "seconds": ...}`` or ``{"status": "failed", "error": one line}``;
        never raises for a failure of the cell itself, so results pickle across processes.
    """
    from ..exceptions import QmuError
    from .grid import load_work

    set_threads(threads)
    t0 = time.perf_counter()
    try:
        load_work(work).run(payload)
    except QmuError as exc:
        return {
            "status": "failed",
            "error": str(exc),
            "seconds": time.perf_counter() - t0,
            "pid": os.getpid(),
        }
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        return {
            "status": "failed",
            "error": f"unexpected {type(exc).__name__}: {text}",
            "seconds": time.perf_counter() - t0,
            "pid": os.getpid(),
        }
    return {"status": "done", "seconds": time.perf_counter() - t0, "pid": os.getpid()}
