"""Cell pools — where cells run: a local process pool (default), inline, or a Dask cluster
(optional extra).

Every pool hands back :class:`concurrent.futures.Future` objects, so the scheduler does not care
which one runs its cells. (A study spec chooses its pool under the YAML key ``executor``.)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..exceptions import BadInputError, shorten


class PoolSpec(BaseModel):
    """Where cells run (a study spec's ``executor:`` entry).

    Attributes:
        kind: ``local`` (a process pool on this machine, default), ``inline`` (one cell at a
            time in the submitting process; debugging) or ``dask`` (a Dask cluster; needs
            ``pip install qmu-qiskit[dask]`` and a run directory every worker can reach).
        workers: parallel cells (default: the usable cores ÷ ``threads_per_worker``).
        threads_per_worker: Aer/torch threads per cell (default: cores ÷ workers).
        address: the Dask scheduler address (``kind: dask``; default: a local cluster).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "inline", "dask"] = "local"
    workers: int | None = Field(default=None, ge=1)
    threads_per_worker: int | None = Field(default=None, ge=1)
    address: str | None = None


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def plan_workers(spec: PoolSpec, cores: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker): the cores are divided between workers, so that Aer and
    torch in parallel cells do not oversubscribe the machine."""
    cores = cores or usable_cores()
    if spec.kind == "inline":
        return 1, spec.threads_per_worker or cores
    workers = spec.workers or max(1, cores // (spec.threads_per_worker or 1))
    threads = spec.threads_per_worker or max(1, cores // workers)
    return workers, threads


class LocalPool:
    """A ``spawn`` process pool; each worker limited to its share of the cores. Workers do not
    re-run the submitting script (:mod:`.spawn`), so a plain script may call ``jobs.submit``."""

    def __init__(self, workers: int, threads: int):
        from .spawn import WORKER_CONTEXT
        from .worker import init_worker

        self.workers, self.threads = workers, threads
        # After a SIGKILL of this process the resource tracker (started with this interpreter's
        # -W options) frees the pool's semaphores and says so in a two-line UserWarning per
        # kill, on the user's terminal: expected and harmless after a kill, so not shown.
        quiet = "ignore:resource_tracker:UserWarning"
        if quiet not in sys.warnoptions:
            sys.warnoptions.append(quiet)
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=WORKER_CONTEXT,
            initializer=init_worker,
            initargs=(threads,),
        )

    def submit(self, fn, *args) -> Future:
        return self._pool.submit(fn, *args)

    def terminate(self) -> None:
        """Stop the cells that are running now (their run directories stay resumable)."""
        for proc in list(getattr(self._pool, "_processes", {}).values()):
            if proc.is_alive():
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class InlinePool:
    """Runs cells one at a time in this process (debugging, notebooks, tests), on one thread
    that lives as long as the process: qiskit 2.6 can crash (SIGSEGV) when a circuit is built
    after another thread that transpiled has exited, so cells never run on short-lived threads.
    A running cell cannot be stopped; cancelling takes effect between cells."""

    workers = 1
    threads = None
    _thread_pool: ThreadPoolExecutor | None = None
    _guard = threading.Lock()

    def submit(self, fn, *args) -> Future:
        with InlinePool._guard:
            if InlinePool._thread_pool is None:
                InlinePool._thread_pool = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="qmu-inline"
                )
        return InlinePool._thread_pool.submit(fn, *args)

    def terminate(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


def _connect(client_cls, address: str):
    """A Dask client of the scheduler at ``address``, or a one-line error saying what happened
    (the connect timeout is Dask's ``distributed.comm.timeouts.connect``)."""
    from ..exceptions import BackendError

    shown = shorten(address, 100)
    try:
        return client_cls(address)
    except ValueError as exc:
        raise BadInputError(
            f"executor.address {shown!r} is not a Dask scheduler address ({shorten(exc, 80)}); "
            "write it as tcp://HOST:PORT (the scheduler's port is usually 8786)"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise BackendError(
            f"cannot reach the Dask scheduler at {shown} ({shorten(exc, 120)}); check that it runs "
            "and that executor.address names it, or use executor.kind local"
        ) from None
    except (MemoryError, EOFError, UnicodeDecodeError) as exc:
        # a service that is not a Dask scheduler answers with bytes Dask reads as a frame size
        raise BackendError(
            f"{shown} does not answer as a Dask scheduler ({type(exc).__name__} on its reply); "
            "check the host and port (usually 8786), or use executor.kind local"
        ) from None


class DaskPool:
    """Cells as Dask tasks (``pip install qmu-qiskit[dask]``). The grid directory must be on a
    file system every worker can reach; a cell that is running when the grid is cancelled
    finishes (Dask cannot stop a running task)."""

    def __init__(self, workers: int, threads: int, address: str | None):
        try:
            from distributed import Client
        except ImportError:
            raise BadInputError(
                "executor.kind dask needs Dask's distributed scheduler; install it with "
                "pip install 'qmu-qiskit[dask]', or use executor.kind local"
            ) from None
        self.workers, self.threads = workers, threads
        self._owns_cluster = not address
        if address:  # the user's cluster: its workers are sized by whoever started it
            self._client = _connect(Client, address)
        else:  # a local cluster of worker processes, each limited to its share of the cores
            self._client = Client(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self._client.run(_limit_threads, threads)
        self._futures: list = []

    def submit(self, fn, *args) -> Future:
        out: Future = Future()
        task = self._client.submit(fn, *args, pure=False)
        self._futures.append(task)

        def relay(t):
            try:
                out.set_result(t.result())
            except BaseException as exc:
                out.set_exception(exc)

        task.add_done_callback(relay)
        return out

    def terminate(self) -> None:
        self._client.cancel(self._futures)

    def shutdown(self) -> None:
        # Generous timeouts: on a loaded machine Dask's default (a few seconds) expires while the
        # workers are still stopping, and the client's finaliser then raises from a dead loop.
        cluster = getattr(self._client, "cluster", None)
        try:
            self._client.close(timeout=120)
        finally:
            if cluster is not None and self._owns_cluster:
                cluster.close(timeout=120)


def _limit_threads(threads: int) -> None:
    from .worker import _THREAD_VARS, set_threads

    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    set_threads(threads)


def make_pool(spec: PoolSpec, *, workers: int | None = None):
    """The pool a spec asks for (``workers`` overrides the spec's)."""
    if workers is not None:
        spec = spec.model_copy(update={"workers": workers})
    n, threads = plan_workers(spec)
    if spec.kind == "inline":
        return InlinePool()
    if spec.kind == "dask":
        return DaskPool(n, threads, spec.address)
    return LocalPool(n, threads)
