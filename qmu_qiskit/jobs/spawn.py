"""A ``spawn`` start method whose workers do not run the parent's ``__main__`` again.

Python's ``spawn`` re-imports the parent's main script in every worker (as ``__mp_main__``), so a
plain script that calls :func:`qmu_qiskit.jobs.submit` at top level — without an
``if __name__ == "__main__":`` guard — would submit the grid again from each worker. Cells only
need :mod:`qmu_qiskit`, never the user's script, so these workers start without it: everything
else of the standard ``spawn`` start (``sys.path``, working directory, authkey, logging level)
is kept.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.spawn
import sys
import types
from typing import Any

_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")


class _SpawnWithoutMain:
    """Stands in for :mod:`multiprocessing.spawn` inside the launcher below: the same functions,
    except that the preparation data sent to the child leaves out the main module."""

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing.spawn, name)

    @staticmethod
    def get_preparation_data(name: str) -> dict:
        data = multiprocessing.spawn.get_preparation_data(name)
        for key in _MAIN_KEYS:
            data.pop(key, None)
        return data


if sys.platform != "win32":
    from multiprocessing import popen_spawn_posix

    # The standard launcher's own code, run with a module namespace whose ``spawn`` is the
    # stand-in above: no copy of the standard library's code, and no process-wide patch that
    # another thread starting processes could see.
    _namespace = dict(vars(popen_spawn_posix))
    _namespace["spawn"] = _SpawnWithoutMain()

    class _Popen(popen_spawn_posix.Popen):
        _launch = types.FunctionType(
            popen_spawn_posix.Popen._launch.__code__,  # type: ignore[attr-defined]  # private, reused
            _namespace,
            "_launch",
        )

    class WorkerProcess(multiprocessing.context.SpawnProcess):
        """A spawned process that starts without the parent's ``__main__``."""

        @staticmethod
        def _Popen(process_obj):
            return _Popen(process_obj)

    class _WorkerContext(multiprocessing.context.SpawnContext):
        Process = WorkerProcess

    #: The context of the local process pool (see the module docstring).
    WORKER_CONTEXT: multiprocessing.context.BaseContext = _WorkerContext()
else:  # pragma: no cover - the POSIX launcher does not exist there
    WORKER_CONTEXT = multiprocessing.get_context("spawn")
