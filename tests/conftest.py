"""Shared fixtures: an isolated cache, and small trained runs reused across tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep the transpile cache and profile lookups inside the test session."""
    cache = tmp_path_factory.mktemp("qmu-cache")
    old = os.environ.get("QMU_CACHE_DIR")
    os.environ["QMU_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("QMU_CACHE_DIR", None)
    else:
        os.environ["QMU_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def fake_iam():
    """A local stand-in for IBM Cloud IAM on 127.0.0.1 that answers every token request as IAM
    answers a wrong API key (HTTP 400, "Provided API key could not be found"). Point
    qiskit-ibm-runtime at it with ``IAM_URL`` (and ``QISKIT_IBM_URL``): the bad-token path runs
    for real, and no test ever contacts an external address.

    Yields:
        ``{"IAM_URL": ..., "QISKIT_IBM_URL": ...}`` for the environment of a command.
    """
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _refuse(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps(
                {
                    "errorCode": "BXNIM0415E",
                    "context": {},
                    "errorMessage": "Provided API key could not be found.",
                }
            ).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _refuse

        def log_message(self, *args):  # quiet: the test output is the commands'
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    yield {"IAM_URL": url, "QISKIT_IBM_URL": url}
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def iris_teacher(tmp_path_factory) -> Path:
    """A trained HQML-shallow Iris teacher on the exact noiseless backend (seed 0, ~2 s)."""
    from qmu_qiskit import pipeline
    from qmu_qiskit.config import resolve_run_config

    out = tmp_path_factory.mktemp("runs") / "iris"
    cfg = resolve_run_config(dataset="iris", seed=0, training={"epochs": 30})
    pipeline.train(cfg, out, progress=False)
    return out


@pytest.fixture
def iris_teacher_copy(iris_teacher, tmp_path) -> Path:
    """A private copy of the Iris teacher run (for tests that add unlearning runs to it)."""
    import shutil

    dst = tmp_path / "iris"
    shutil.copytree(iris_teacher, dst, ignore=shutil.ignore_patterns("unlearn", ".lock"))
    return dst


# ---------------------------------------------------------------------------------------------
# reliability suite: count what the fault-injection and bad-input tests exercised, and say so in
# the terminal summary (visible in CI logs with the default addopts)

_KILLS = pytest.StashKey[list]()
_BAD_INPUTS = pytest.StashKey[list]()


@pytest.fixture
def record_kill(request):
    """``record_kill(command, point)``: a fault (SIGKILL, SIGTERM/SIGHUP, a full or read-only disk,
    a refused writer) that was delivered and survived (resumed and checked); counted in the
    terminal summary."""
    log = request.config.stash.setdefault(_KILLS, [])
    return lambda command, point: log.append((command, point))


@pytest.fixture
def record_bad_input(request):
    """``record_bad_input(case_id, surface, subprocess)``: a bad-input case that was checked."""
    log = request.config.stash.setdefault(_BAD_INPUTS, [])
    return lambda case_id, surface, subprocess=False: log.append((case_id, surface, subprocess))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    kills = config.stash.get(_KILLS, [])
    bad = config.stash.get(_BAD_INPUTS, [])
    if not kills and not bad:
        return
    terminalreporter.write_sep("-", "reliability")
    if kills:
        per: dict[str, int] = {}
        for command, _ in kills:
            per[command] = per.get(command, 0) + 1
        parts = ", ".join(f"{c} {n}" for c, n in per.items())
        terminalreporter.write_line(
            f"fault injection: {len(kills)} cases survived (SIGKILL, SIGTERM/SIGHUP, full and "
            f"read-only disks, a locked teacher; {parts})"
        )
    if bad:
        per = {}
        for _, surface, _sub in bad:
            per[surface] = per.get(surface, 0) + 1
        subs = sum(1 for *_, sub in bad if sub)
        failed = sum(
            1
            for rep in terminalreporter.stats.get("failed", [])
            if "test_bad_input.py::" in getattr(rep, "nodeid", "")
        )
        parts = ", ".join(f"{s} {n}" for s, n in per.items())
        terminalreporter.write_line(
            f"bad-input matrix: {len(bad)} cases checked ({parts}; {subs} through real "
            f"subprocesses), {failed} failed"
        )
