"""Fault injection: SIGKILL `train`, `unlearn`, `jobs submit` and `study` mid-work, run the same
command again, and check that nothing was lost, redone, half-written or leaked.

Two kinds of kill point, both reproducible:

* **random** — the command runs in a subprocess; the test waits for observable progress (the
  checkpoint of epoch k appearing), sleeps a short delay, then SIGKILLs it. k and the delay come
  from a ``random.Random`` seeded per test (``QMU_RELIABILITY_SEED`` changes the seed);
* **injected** — the subprocess runs the real CLI through a wrapper that SIGKILLs the process at
  a chosen write: right after the Nth atomic write of a file, or in the middle of it (half the
  bytes in the temporary file, before the rename). These land in windows a timer almost never
  hits: between a run's status and its config, between metrics.json and the final status.

After every kill the run tree is scanned (every JSON/YAML/CSV parses, every .npz/.pt loads with
``weights_only=True``, every SQLite database passes its integrity check, temporary files are
hidden ``.name.*.tmp`` leftovers only, and no run.json says complete unless its metrics.json,
outputs.npz and model.pt load). After the final run: the numbers of metrics.json equal those of an
uninterrupted run with the same seed (timing fields aside), finished epochs and cells were not
redone, no job ledger holds a duplicate, and no file holds the (fake) IBM token that was in the
environment of every command.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from qmu_qiskit import cli, pipeline
from qmu_qiskit.execution.ledger import (
    JobLedger,
)  # process must fail in milliseconds, not after imports
from qmu_qiskit.runs import RunDir

pytestmark = pytest.mark.reliability

SEED = int(os.environ.get("QMU_RELIABILITY_SEED", "20251125"))

#: A fake account: every command below runs with it in its environment; no file may contain it.
FAKE_TOKEN = "qmu-fake-token-9c1e5b7a0d2f4e68b3a1c0d9e8f7a6b5"
FAKE_INSTANCE = "crn:v1:bluemix:public:quantum-computing:us-east:a/fakeacct9c1e5b7a::"

#: The real CLI, optionally killed by the process itself at a chosen atomic write
#: (QMU_TEST_KILL_AT=<file name>:<nth write of it>:<after|mid>).
INJECT = r"""
import os, signal, sys, tempfile
from pathlib import Path

point = os.environ.get("QMU_TEST_KILL_AT")
if point:
    import qmu_qiskit.io as qio

    name, nth, when = point.rsplit(":", 2)
    nth, seen, real = int(nth), [0], qio._atomic_bytes

    def atomic_bytes(path, data, mode=None):
        path = Path(path)
        if path.name == name:
            seen[0] += 1
            if seen[0] == nth:
                if when == "mid":  # half the bytes in the temporary file, then death
                    fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
                    os.write(fd, data[: len(data) // 2])
                    os.fsync(fd)
                    os.kill(os.getpid(), signal.SIGKILL)
                real(path, data, mode)
                os.kill(os.getpid(), signal.SIGKILL)
        return real(path, data, mode)

    qio._atomic_bytes = atomic_bytes
from qmu_qiskit.cli import main
main(sys.argv[1:])
"""

#: Keys whose values legitimately differ between an interrupted and an uninterrupted run.
VOLATILE = re.compile(
    r"^(seconds|wall_seconds|created|finished|updated|pid|resumed_from_epoch|path)$"
)


# ------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """The commands' environment: a fake IBM account, and a HOME of their own so no real saved
    account or config is read."""
    home = tmp_path_factory.mktemp("home")
    mpl = tmp_path_factory.mktemp("mpl")
    out = {k: v for k, v in os.environ.items() if not k.startswith("QISKIT_IBM_")}
    out.update(
        {
            "HOME": str(home),
            "MPLCONFIGDIR": str(mpl),
            "QISKIT_IBM_TOKEN": FAKE_TOKEN,
            "QISKIT_IBM_INSTANCE": FAKE_INSTANCE,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return out


def rng_for(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


def cli_run(args, env, *, timeout=240) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "qmu_qiskit.cli", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert FAKE_TOKEN not in res.stdout + res.stderr
    return res


def launch(args, env, kill_at: str | None = None) -> subprocess.Popen:
    run_env = dict(env)
    if kill_at:
        run_env["QMU_TEST_KILL_AT"] = kill_at
    return subprocess.Popen(
        [sys.executable, "-c", INJECT, *map(str, args)],
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_when(
    proc: subprocess.Popen,
    ready,
    *,
    delay: float,
    timeout: float = 120,
    what: str = "",
    while_stopped=None,
):
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` first holds.

    ``while_stopped()`` runs between a SIGSTOP and the SIGKILL: the process is frozen mid-work,
    still holding its locks, however long the call takes.
    """
    end = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(
                    f"the command ended (rc {proc.returncode}) before {what}:\n{proc.stdout.read()}"
                )
            if time.monotonic() > end:
                pytest.fail(f"no {what} within {timeout} s")
            time.sleep(0.05)
        time.sleep(delay)
        assert proc.poll() is None, f"the command finished before the kill at {what}"
        if while_stopped is not None:
            proc.send_signal(signal.SIGSTOP)
            while_stopped()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def injected(proc: subprocess.Popen, timeout: float = 180) -> None:
    """Wait for a process that kills itself at its injection point."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, f"the injection point was never reached:\n{out}"


def ckpt_epoch(path: Path) -> int:
    """Epoch of a checkpoint (0: none yet). Atomic writes make it safe to read at any moment."""
    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def progressed(path, k: int):
    """Ready once this process has written the checkpoint of epoch ``k`` (or of the epoch after
    the one it resumed from, whichever is later): the kill then lands in its own work."""
    start = ckpt_epoch(path())
    target = max(k, start + 1)
    return lambda: ckpt_epoch(path()) >= target


def scan(root: Path, *, final: bool = False) -> None:
    """Nothing under ``root`` is half-written; no run says complete without its files."""
    problems = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        if (".sqlite" in p.name or "ledger" in p.parts) and p.stat().st_mode & 0o077:
            # ledgers, their WAL files and stored results stay user-only, after any kill
            problems.append(f"{p}: readable by others ({oct(p.stat().st_mode)})")
        if p.name == ".lock" or p.name.endswith(("-wal", "-shm", "-journal")):
            continue
        if p.name.endswith(".tmp"):
            if not p.name.startswith("."):
                problems.append(f"{p}: a temporary file with a final-looking name")
            elif final and any((d / "run.json").exists() for d in (p.parent, *list(p.parents)[:3])):
                problems.append(f"{p}: a killed write's temporary file was not swept on resume")
            continue
        try:
            if p.suffix == ".json":
                json.loads(p.read_text(encoding="utf-8"))
            elif p.suffix == ".yaml":
                assert isinstance(yaml.safe_load(p.read_text(encoding="utf-8")), dict)
            elif p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    for k in z.files:
                        z[k]
            elif p.suffix == ".pt":
                assert isinstance(torch.load(p, map_location="cpu", weights_only=True), dict)
            elif p.suffix == ".sqlite":
                with sqlite3.connect(p) as conn:
                    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                conn.close()
            elif p.suffix == ".csv":
                with p.open(encoding="utf-8", newline="") as fh:
                    list(csv.DictReader(fh))
            elif p.suffix == ".md":
                p.read_text(encoding="utf-8")
        except Exception as exc:
            problems.append(f"{p}: unreadable after the kill ({type(exc).__name__}: {exc})")
    for status in root.rglob("run.json"):
        st = json.loads(status.read_text(encoding="utf-8"))
        if st.get("status") == "complete":
            for name in ("config.yaml", "metrics.json", "outputs.npz", "model.pt", "cost.json"):
                if not (status.parent / name).is_file():
                    problems.append(f"{status.parent}: complete without {name}")
    assert not problems, "\n".join(problems)


def flat(obj, prefix="") -> dict:
    """Leaves of a metrics dict (``a.b.0.c`` → value), without volatile keys."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not VOLATILE.search(str(k)):
                out.update(flat(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flat(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = "nan" if isinstance(obj, float) and math.isnan(obj) else obj
    return out


def assert_same_numbers(run: Path, ref: Path) -> None:
    a = flat(json.loads((run / "metrics.json").read_text()))
    b = flat(json.loads((ref / "metrics.json").read_text()))
    diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert not diff, f"{run} differs from the uninterrupted {ref}: {dict(sorted(diff.items())[:8])}"
    np.testing.assert_array_equal(
        np.load(run / "outputs.npz")["logits"], np.load(ref / "outputs.npz")["logits"]
    )


def ledger_counts(run: Path) -> int:
    """Jobs that ran to completion in a run's circuit ledger (asserting none ran twice)."""
    ledger = JobLedger(run / "ledger" / "jobs.sqlite")
    try:
        dups = ledger.duplicate_submissions()
        assert dups == [], f"{run}: a job was executed twice: " + "; ".join(
            f"{r.status} {r.tags} run={r.run_id} pid={r.pid} at={r.submitted_at:.2f}-{r.finished_at}"
            for fp, _ in dups
            for r in ledger.find(fp)
        )
        return sum(1 for r in ledger.jobs() if r.status in ("done", "pruned"))
    finally:
        ledger.close()


def assert_no_token(root: Path) -> None:
    needle = FAKE_TOKEN.encode()
    for p in root.rglob("*"):
        if p.is_file():
            assert needle not in p.read_bytes(), f"{p} contains the IBM token"


def second_process_refused(argv, capsys) -> str:
    """The same command in this process while the subprocess holds the run: refused, one line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert exc.value.code != 0, err
    assert err.count("\n") == 0 and "in use by process" in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------ train

TRAIN = [
    "train",
    "--dataset",
    "iris",
    "--engine",
    "aer",
    "--epochs",
    "5",
    "--batch-size",
    "32",
    "--patience",
    "0",
    "--seed",
    "3",
    "--no-progress",
]


@pytest.fixture(scope="module")
def train_ref(tmp_path_factory, env) -> Path:
    out = tmp_path_factory.mktemp("train-ref") / "run"
    res = cli_run([*TRAIN, "--out", out], env)
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.timeout(420)
def test_train_survives_sigkills(train_ref, tmp_path, env, capsys, record_kill):
    """Six kills of one training run — at random epochs and at injected writes — then the same
    command: the uninterrupted numbers, no epoch trained twice, no job executed twice."""
    rng = rng_for("train")
    out = tmp_path / "run"
    args = [*TRAIN, "--out", out]
    last = out / "checkpoints" / "last.pt"
    k1, k2 = rng.randint(1, 2), rng.randint(3, 4)  # of 5 epochs: work is left after each
    points = [
        ("inject run.json:1:after (status written, config not yet)", "run.json:1:after", None),
        (f"random: epoch {k1} checkpoint + delay", None, k1),
        ("inject last.pt:1:mid (checkpoint half-written)", "last.pt:1:mid", None),
        (f"random: epoch {k2} checkpoint + delay (+ a second process refused)", None, k2),
        (
            "inject metrics.json:1:after (metrics written, status still running)",
            "metrics.json:1:after",
            None,
        ),
        ("inject run.json:2:mid (final status half-written)", "run.json:2:mid", None),
    ]
    seen_epoch, done = 0, []
    for label, kill_at, epoch in points:
        ready = None if kill_at else progressed(lambda: last, epoch)
        proc = launch(args, env, kill_at)
        if kill_at:
            injected(proc)
        else:
            if "second process" in label:
                kill_when(
                    proc,
                    ready,
                    delay=rng.uniform(0, 0.3),
                    what=label,
                    while_stopped=lambda: second_process_refused(args, capsys),
                )
            else:
                kill_when(proc, ready, delay=rng.uniform(0, 0.5), what=label)
        assert not RunDir(out).is_complete(), f"{label}: killed, yet complete"
        scan(out)
        now = ckpt_epoch(last)
        assert now >= seen_epoch, f"{label}: a finished epoch was lost ({now} < {seen_epoch})"
        seen_epoch = now
        done.append(label)
    res = cli_run(args, env)
    assert res.returncode == 0, res.stderr
    scan(out, final=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert seen_epoch == 5 and metrics["resumed_from_epoch"] == 5  # no epoch trained again
    assert_same_numbers(out, train_ref)
    assert ledger_counts(out) == ledger_counts(train_ref), "jobs were executed again after a kill"
    assert_no_token(out)
    for label in done:
        record_kill("train", label)


@pytest.mark.timeout(180)
def test_two_processes_on_one_run_directory(tmp_path, env):
    """Two real `train` processes on the same --out: the second refuses in one line and writes
    nothing; the first finishes normally."""
    args = [
        "train",
        "--dataset",
        "iris",
        "--epochs",
        "12",
        "--patience",
        "0",
        "--no-progress",
        "--out",
        tmp_path / "run",
    ]
    first = launch(args, env)
    try:
        end = time.monotonic() + 60
        while not (tmp_path / "run" / "checkpoints" / "last.pt").exists():
            assert first.poll() is None and time.monotonic() < end, first.stdout.read()
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # frozen mid-training, holding its lock, however slow
        try:  # the second process is to start
            second = cli_run(args, env)
        finally:
            first.send_signal(signal.SIGCONT)
        out, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by process" in lines[0] and "Traceback" not in second.stderr
    assert f"process {first.pid}" in lines[0]
    assert first.returncode == 0, out
    assert RunDir(tmp_path / "run").is_complete()
    assert RunDir(tmp_path / "run").status()["pid"] == first.pid  # the second never started it
    scan(tmp_path / "run", final=True)


# ------------------------------------------------------------------------------ unlearn


@pytest.fixture(scope="module")
def aer_teacher(tmp_path_factory) -> Path:
    """A teacher on the Aer engine (its jobs go through the circuit ledger), 4 epochs."""
    from qmu_qiskit import pipeline
    from qmu_qiskit.config import resolve_run_config

    out = tmp_path_factory.mktemp("aer-teacher") / "teacher"
    cfg = resolve_run_config(
        dataset="iris",
        seed=1,
        backend={"engine": "aer"},
        training={"epochs": 4, "batch_size": 32, "patience": 0},
    )
    pipeline.train(cfg, out, progress=False)
    return out


def teacher_copy(teacher: Path, dst: Path) -> Path:
    shutil.copytree(teacher, dst, ignore=shutil.ignore_patterns("unlearn", ".lock"))
    return dst


def unlearn_args(teacher: Path):
    return [
        "unlearn",
        "--run",
        teacher,
        "--forget",
        "class:0",
        "--method",
        "finetune",
        "--option",
        "finetune.epochs=4",
        "--no-progress",
    ]


@pytest.mark.timeout(420)
def test_unlearn_survives_sigkills(aer_teacher, tmp_path, env, capsys, record_kill):
    """Kills in the retrain oracle, in the method and at injected writes, then the same command:
    the uninterrupted numbers for the oracle and the method, no job executed twice."""
    ref = teacher_copy(aer_teacher, tmp_path / "ref")
    res = cli_run(unlearn_args(ref), env)
    assert res.returncode == 0, res.stderr
    rng = rng_for("unlearn")
    t = teacher_copy(aer_teacher, tmp_path / "killed")
    args = unlearn_args(t)
    oracle = t / "unlearn" / "class-0" / "retrain"
    method = t / "unlearn" / "class-0" / "finetune"
    j1, j2 = rng.randint(1, 3), rng.randint(1, 2)  # of 4 epochs: work is left after each
    points = [
        (f"random: oracle epoch {j1} checkpoint + delay", None, oracle, j1),
        (
            f"random: method epoch {j2} checkpoint + delay (+ a second process refused)",
            None,
            method,
            j2,
        ),
        ("inject method.pt:1:mid (method checkpoint half-written)", "method.pt:1:mid", None, None),
        (
            "inject metrics.json:1:after (method metrics written, status still running)",
            "metrics.json:1:after",
            None,
            None,
        ),
    ]
    seen = {oracle: 0, method: 0}
    done = []
    for label, kill_at, where, epoch in points:
        ready = (
            None
            if kill_at
            else progressed(lambda where=where: where / "checkpoints" / "method.pt", epoch)
        )
        proc = launch(args, env, kill_at)
        if kill_at:
            injected(proc)
        else:
            if "second process" in label:
                kill_when(
                    proc,
                    ready,
                    delay=rng.uniform(0, 0.3),
                    what=label,
                    while_stopped=lambda: second_process_refused(args, capsys),
                )
            else:
                kill_when(proc, ready, delay=rng.uniform(0, 0.4), what=label)
        assert not RunDir(method).is_complete()
        scan(t / "unlearn")
        for d in seen:
            now = ckpt_epoch(d / "checkpoints" / "method.pt")
            assert now >= seen[d], f"{label}: a finished epoch of {d.name} was lost"
            seen[d] = now
        done.append(label)
    res = cli_run(args, env)
    assert res.returncode == 0, res.stderr
    scan(t / "unlearn", final=True)
    for name in ("retrain", "finetune"):
        run, ref_run = t / "unlearn" / "class-0" / name, ref / "unlearn" / "class-0" / name
        assert RunDir(run).is_complete()
        assert_same_numbers(run, ref_run)
        assert ledger_counts(run) == ledger_counts(ref_run), f"{name}: jobs were executed again"
    assert_no_token(t)
    for label in done:
        record_kill("unlearn", label)


# ------------------------------------------------------------------------------ grids

GRID = {
    "datasets": ["iris"],
    "models": ["hqml-shallow"],
    "methods": ["finetune"],
    "forget": ["class:0"],
    "seeds": [2],
    "backends": [{"name": "aer", "engine": "aer"}],
    "training": {"epochs": 4, "batch_size": 32, "patience": 0},
    "options": {"finetune": {"epochs": 3}},
    "executor": {"kind": "inline"},
}


def write_grid_spec(path: Path, name: str) -> Path:
    path.write_text(yaml.safe_dump({"name": name, **GRID}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def grid_ref(tmp_path_factory, env) -> dict:
    """An uninterrupted grid: cell id → run directory."""
    from qmu_qiskit import grids

    root = tmp_path_factory.mktemp("grid-ref")
    spec = write_grid_spec(root / "ref.yaml", "ref")
    res = cli_run(["grid", "submit", spec, "--out-dir", root], env)
    assert res.returncode == 0, res.stdout + res.stderr
    return {c.id: c.path for c in grids.Grid.load(root / "runs" / "ref").cells}


def grid_paths(grid_dir: Path) -> dict:
    teachers = list((grid_dir / "teachers").glob("*"))
    teacher = teachers[0] if teachers else grid_dir / "teachers" / "none"
    prefits = list((grid_dir / "prefit").glob("*"))  # the oracle's fit runs in its prefit cell
    prefit = prefits[0] if prefits else grid_dir / "prefit" / "none"
    return {
        "teacher": teacher / "checkpoints" / "last.pt",
        "oracle": prefit / "checkpoints" / "method.pt",
        "method": teacher / "unlearn" / "class-0" / "finetune" / "checkpoints" / "method.pt",
    }


def finished_cells(grid_dir: Path) -> dict:
    from qmu_qiskit import grids

    if not (grid_dir / "grid.json").exists():
        return {}
    out = {}
    for c in grids.Grid.load(grid_dir).cells:
        run = RunDir(c.path)
        if run.is_complete():
            out[c.id] = run.status()["finished"]
    return out


def check_grid_after(grid_dir: Path, ref: dict, finished_at_kills: dict) -> None:
    from qmu_qiskit import grids

    grid = grids.Grid.load(grid_dir)
    assert grids.open_grid(grid_dir).status().state == "complete"
    assert {c.id for c in grid.cells} == set(ref)
    for cid, when in finished_at_kills.items():
        assert RunDir(grid.cell(cid).path).status()["finished"] == when, (
            "a finished cell was redone"
        )
    with grids.CellLedger(grid_dir / "cells.sqlite") as ledger:
        assert ledger.duplicate_submissions() == []  # no cell submitted twice at once or after done
        assert ledger.duplicate_completions() == []  # no cell completed twice
    for c in grid.cells:
        if c.kind != "prefit":  # a prefit's numbers are its oracle's (compared there)
            assert_same_numbers(c.path, ref[c.id])
        assert ledger_counts(c.path) == ledger_counts(ref[c.id]), (
            f"{c.label}: jobs were executed again"
        )


def run_grid_kills(command, grid_dir, args, env, rng, capsys, points, *, lock_argv=None):
    paths = lambda: grid_paths(grid_dir)  # noqa: E731 - the teacher folder appears later
    finished, done, teacher_epoch = {}, [], 0
    for label, kill_at, which, epoch in points:
        ready = None if kill_at else progressed(lambda which=which: paths()[which], epoch)
        proc = launch(args, env, kill_at)
        if kill_at:
            injected(proc)
        else:
            if lock_argv is not None and "second process" in label:
                kill_when(
                    proc,
                    ready,
                    delay=rng.uniform(0, 0.3),
                    what=label,
                    while_stopped=lambda: second_process_refused(lock_argv, capsys),
                )
            else:
                kill_when(proc, ready, delay=rng.uniform(0, 0.4), what=label)
        scan(grid_dir)
        now = ckpt_epoch(paths()["teacher"])
        assert now >= teacher_epoch, f"{label}: a finished teacher epoch was lost"
        if not RunDir(paths()["teacher"].parent.parent).is_complete():
            teacher_epoch = now  # the epoch the next run must resume the teacher from
        for cid, when in finished_cells(grid_dir).items():
            finished.setdefault(cid, when)
        done.append(label)
    return finished, done, teacher_epoch


@pytest.mark.timeout(420)
def test_jobs_submit_survives_sigkills(grid_ref, tmp_path, env, capsys, record_kill):
    """`jobs submit` killed in the teacher, in the oracle and at an injected write of the method
    cell, then submitted again: every cell finishes with the uninterrupted numbers, finished
    cells are not redone, neither the cell ledger nor any job ledger holds a duplicate."""
    rng = rng_for("jobs submit")
    spec = write_grid_spec(tmp_path / "killed.yaml", "killed")
    args = ["grid", "submit", spec, "--out-dir", tmp_path]
    grid_dir = tmp_path / "runs" / "killed"
    k, j = rng.randint(1, 3), rng.randint(1, 3)
    points = [
        (
            f"random: teacher epoch {k} checkpoint + delay (+ a second scheduler refused)",
            None,
            "teacher",
            k,
        ),
        (f"random: oracle (its prefit cell) epoch {j} checkpoint + delay", None, "oracle", j),
        (
            "inject metrics.json:2:after (method cell's metrics written, its status running)",
            "metrics.json:2:after",
            None,
            None,
        ),
    ]
    finished, done, teacher_epoch = run_grid_kills(
        "jobs submit", grid_dir, args, env, rng, capsys, points, lock_argv=args
    )
    res = cli_run(args, env)
    assert res.returncode == 0, res.stdout + res.stderr
    scan(grid_dir, final=True)
    check_grid_after(grid_dir, grid_ref, finished)
    teacher = grid_paths(grid_dir)["teacher"].parent.parent
    assert (
        json.loads((teacher / "metrics.json").read_text())["resumed_from_epoch"]
        >= teacher_epoch
        > 0
    )
    assert_no_token(grid_dir)
    for label in done:
        record_kill("jobs submit", label)


@pytest.mark.timeout(420)
def test_study_survives_sigkills(grid_ref, tmp_path, env, capsys, record_kill):
    """`study` killed in the teacher, in the method cell and while writing its summary, then run
    again: a complete study whose every cell has the uninterrupted numbers."""
    rng = rng_for("study")
    spec = write_grid_spec(tmp_path / "study.yaml", "study")
    args = ["study", spec, "--out-dir", tmp_path, "--no-plots"]
    grid_dir = tmp_path / "runs" / "study"
    k, j = rng.randint(1, 3), rng.randint(1, 2)
    points = [
        (f"random: teacher epoch {k} checkpoint + delay", None, "teacher", k),
        (f"random: method epoch {j} checkpoint + delay", None, "method", j),
        (
            "inject results_summary.csv:1:mid (summary half-written)",
            "results_summary.csv:1:mid",
            None,
            None,
        ),
    ]
    finished, done, _ = run_grid_kills("study", grid_dir, args, env, rng, capsys, points)
    res = cli_run(args, env)
    assert res.returncode == 0, res.stdout + res.stderr
    scan(grid_dir, final=True)
    check_grid_after(grid_dir, grid_ref, finished)
    with open(grid_dir / "results_summary.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == {"retrain", "finetune"}
    assert (grid_dir / "report.md").read_text(encoding="utf-8").strip()
    assert_no_token(grid_dir)
    for label in done:
        record_kill("study", label)


# ------------------------------------------------------------------------------ security


def test_permissions_of_ledgers_and_run_files(train_ref, aer_teacher):
    """Ledgers (and their WAL files) and every file a run writes are user-only."""
    for root in (train_ref, aer_teacher):
        for p in root.rglob("*"):
            if p.is_file() and p.name != ".lock":
                assert p.stat().st_mode & 0o077 == 0, (
                    f"{p} is readable by others ({oct(p.stat().st_mode)})"
                )
        assert (root / "ledger" / "results").stat().st_mode & 0o077 == 0


def test_fake_token_never_reaches_runs_or_output(train_ref, grid_ref, env, fake_iam):
    """The runs above all had a (fake) IBM token in their environment; none of their files holds
    it. A command that does use the account fails on it without echoing it (against a local
    stand-in for IAM: no test contacts an external address)."""
    assert_no_token(train_ref)
    for path in grid_ref.values():
        assert_no_token(path)
    res = cli_run(
        ["train", "--backend", "ibm_torino", "--epochs", "1", "--out", "/nonexistent/x"],
        {**env, **fake_iam},
    )
    assert res.returncode == 3 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert FAKE_TOKEN not in res.stderr and "token" in res.stderr


def test_checkpoints_are_loaded_without_pickle_code(tmp_path, aer_teacher):
    """A model.pt carrying pickled code is refused by ``weights_only=True``; the code never runs."""
    from qmu_qiskit import pipeline
    from qmu_qiskit.exceptions import CheckpointError

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    t = teacher_copy(aer_teacher, tmp_path / "t")
    torch.save({"weights": Evil()}, t / "model.pt")
    with pytest.raises(CheckpointError, match="corrupt or not a qmu-qiskit checkpoint"):
        pipeline.unlearn(t, "class:0", ["ga"], progress=False)
    assert not marker.exists()


def test_yaml_is_loaded_safely(tmp_path):
    """A job spec or run config with a python tag is refused by the safe loader."""
    from qmu_qiskit import studies
    from qmu_qiskit.exceptions import BadInputError, RunError

    marker = tmp_path / "pwned"
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f"name: evil\ndatasets: [iris]\ndescription: {payload}\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="not valid YAML"):
        studies.load_spec(spec)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"kind: {payload}\n", encoding="utf-8")
    with pytest.raises(RunError, match="not a valid run config"):
        RunDir(run).config()
    assert not marker.exists()
    # and no module of the package can load YAML any other way
    package = Path(__file__).resolve().parent.parent / "qmu_qiskit"
    for py in package.rglob("*.py"):
        text = py.read_text(encoding="utf-8")
        assert not re.search(
            r"\byaml\.(load|unsafe_load|full_load)\(|\byaml\.(Unsafe|Full)?Loader\b", text
        ), py
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{py}: {call}"


# ------------------------------------------------------------------------------ issue 13
# Run directories as untrusted input, signals, full and read-only disks, dead cells, corrupt
# cell results. Each test is small (the Iris teacher of conftest, a few epochs).


def _one_line_error(res: subprocess.CompletedProcess, pattern: str) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode not in (0, None) and len(lines) == 1, res.stdout + res.stderr
    assert lines[0].startswith("error: ") and "unexpected" not in lines[0], lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@pytest.mark.timeout(300)
def test_teacher_is_locked_shared_while_unlearn_works(
    iris_teacher, tmp_path, env, capsys, record_kill
):
    """`train --overwrite` on a teacher while `unlearn` runs on it is refused (the unlearn holds
    the teacher's lock shared); a second unlearn may share it; the first unlearn then finishes
    with its config and fingerprint."""
    t = teacher_copy(iris_teacher, tmp_path / "t")
    args = [
        "unlearn",
        "--run",
        t,
        "--forget",
        "class:0",
        "--method",
        "ga",
        "--option",
        "ga.epochs=2",
        "--no-progress",
    ]
    proc = launch(args, env)
    oracle = t / "unlearn" / "class-0" / "retrain" / "checkpoints" / "method.pt"
    refused = []

    def while_stopped():
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            cli.main(
                [
                    "train",
                    "--dataset",
                    "iris",
                    "--seed",
                    "0",
                    "--epochs",
                    "30",
                    "--no-progress",
                    "--out",
                    str(t),
                    "--overwrite",
                ]
            )
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and err.count("\n") == 0, err
        assert "in use by another command that depends on it" in err, err
        refused.append(err)
        # the same (finished) train command without --overwrite is still answered
        assert (
            cli_run(
                [
                    "train",
                    "--dataset",
                    "iris",
                    "--seed",
                    "0",
                    "--epochs",
                    "30",
                    "--no-progress",
                    "--out",
                    t,
                ],
                env,
            ).returncode
            == 0
        )

    try:
        end = time.monotonic() + 120
        while ckpt_epoch(oracle) < 1:
            assert proc.poll() is None and time.monotonic() < end, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGSTOP)
        try:
            while_stopped()
        finally:
            proc.send_signal(signal.SIGCONT)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0, out
    assert refused and (t / "model.pt").is_file()
    for name in ("retrain", "ga"):
        run = RunDir(t / "unlearn" / "class-0" / name)
        assert (
            run.is_complete() and run.config()["kind"] == "unlearn" and run.status()["fingerprint"]
        )
    record_kill("unlearn", "train --overwrite on its teacher while it runs: refused")


@pytest.mark.timeout(300)
def test_sigterm_and_sighup_stop_like_ctrl_c(train_ref, tmp_path, env, record_kill):
    """SIGTERM and SIGHUP end a run like Ctrl-C: one line, exit 130, status `failed` with error
    `interrupted (...)`, no pid left running; the same command resumes to the uninterrupted
    numbers."""
    out = tmp_path / "run"
    args = [*TRAIN, "--out", out]
    last = out / "checkpoints" / "last.pt"
    for sig, epoch in ((signal.SIGTERM, 1), (signal.SIGHUP, 3)):
        proc = launch(args, env)
        try:
            ready = progressed(lambda: last, epoch)
            end = time.monotonic() + 120
            while not ready():
                assert proc.poll() is None and time.monotonic() < end, proc.stdout.read()
                time.sleep(0.05)
            proc.send_signal(sig)
            text, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        assert proc.returncode == 130, text
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert lines[-1].startswith("error: interrupted") and "Traceback" not in text, text
        st = RunDir(out).status()
        assert st["status"] == "failed" and st["error"] == f"interrupted ({sig.name})", st
        scan(out)
        record_kill("train", f"{sig.name} at epoch {epoch}: failed: interrupted, resumed")
    res = cli_run(args, env)
    assert res.returncode == 0, res.stderr
    assert_same_numbers(out, train_ref)


@pytest.fixture
def small_fs(tmp_path):
    """A real 2 MiB tmpfs (root only): full and read-only disks, no mocking."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"mounting a small tmpfs needs root ({res.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.timeout(300)
def test_full_and_read_only_disks_are_one_line_errors_and_resumable(
    train_ref, small_fs, env, record_kill
):
    """A training run on a disk that fills up, then on a read-only one: each stops with one line
    naming the cause (exit 2, no 'unexpected'), and the same command finishes the run once space
    is back, with the uninterrupted numbers."""
    out = small_fs / "run"
    args = [*TRAIN, "--out", out]
    filler = small_fs / "filler"
    with open(filler, "wb") as fh:  # leave ~48 kB: the ledger and a checkpoint do not fit
        try:
            fh.write(b"\0" * (2 * 2**20 - 48 * 1024))
        except OSError:
            pass
    _one_line_error(
        cli_run(args, env),
        r"cannot write .*: the disk (is full|failed the write)[^;]*; "
        r"free space .* run the same command again",
    )
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        _one_line_error(cli_run(args, env), r"the file system is read-only|read-only file system")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    res = cli_run(args, env)
    assert res.returncode == 0, res.stderr
    scan(out, final=True)
    assert_same_numbers(out, train_ref)
    record_kill("train", "ENOSPC then EROFS: one line, resumed")


def _tiny_grid(tmp: Path, name: str) -> tuple[Path, Path]:
    spec = write_grid_spec(tmp / f"{name}.yaml", name)
    return spec, tmp / "runs" / name


@pytest.mark.timeout(300)
def test_dead_cells_and_corrupt_cell_results(tmp_path, env, record_kill):
    """After a SIGKILL `jobs status` says the interrupted cell is dead (not running) and prints
    nothing on stderr; a corrupt cell metrics.json is named by `jobs results` and
    `study --report-only`, and `jobs submit` recomputes it to the same numbers."""
    spec, grid_dir = _tiny_grid(tmp_path, "dead")
    args = ["grid", "submit", spec, "--out-dir", tmp_path]
    proc = launch(args, env)
    kill_when(
        proc,
        progressed(lambda: grid_paths(grid_dir)["teacher"], 1),
        delay=0.1,
        what="teacher epoch 1",
    )
    res = cli_run(["grid", "status", spec, "--out-dir", tmp_path, "--all"], env)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr
    assert re.search(r"\bdead\b", res.stdout) and not re.search(r"\brunning\b", res.stdout), (
        res.stdout
    )
    res = cli_run(args, env)
    assert res.returncode == 0, res.stdout + res.stderr
    method = grid_paths(grid_dir)["method"].parent.parent
    good = json.loads((method / "metrics.json").read_text())
    (method / "metrics.json").write_text('{"acc_test": 0.5, "trunc')
    for cmd in (
        ["grid", "results", spec, "--out-dir", tmp_path],
        ["study", spec, "--out-dir", tmp_path, "--report-only", "--no-plots"],
    ):
        _one_line_error(
            cli_run(cmd, env),
            r"cell .*finetune.* is damaged \(.*metrics\.json is corrupt.*run `qmu-qiskit grid submit`",
        )
    res = cli_run(args, env)
    assert res.returncode == 0, res.stdout + res.stderr
    again = json.loads((method / "metrics.json").read_text())
    assert flat(again) == flat(good)
    assert cli_run(["grid", "results", spec, "--out-dir", tmp_path], env).returncode == 0
    record_kill("jobs submit", "SIGKILL: jobs status says dead; corrupt metrics.json recomputed")


def test_tampered_transpile_cache_entry_is_refused(tmp_path):
    """A QPY entry of the transpile cache changed after it was written is refused with one line
    naming it; an entry without the seal (an older format) is recomputed, not trusted."""
    from qiskit.circuit.library import real_amplitudes
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    from qmu_qiskit.exceptions import RunError
    from qmu_qiskit.execution.transpile import TranspileCache

    circuit = real_amplitudes(3, reps=1)
    target = FakeManilaV2().target
    first = TranspileCache(tmp_path).get_or_transpile(circuit, target)
    (entry,) = (tmp_path / "transpiled").glob("*.qpy")
    blob = entry.read_bytes()
    assert blob.startswith(b"QMU-SEALED-1\n")
    entry.write_bytes(blob[:-8] + bytes(b ^ 0xFF for b in blob[-8:]))
    with pytest.raises(RunError, match=r"cache entry .*\.qpy does not match its content hash"):
        TranspileCache(tmp_path).get_or_transpile(circuit, target)
    entry.write_bytes(blob.split(b"\n", 2)[2])  # unsealed: recomputed and sealed again
    again = TranspileCache(tmp_path).get_or_transpile(circuit, target)
    assert again == first and entry.read_bytes().startswith(b"QMU-SEALED-1\n")


def test_fingerprints_are_checked_before_use(iris_teacher, tmp_path):
    """An unlearn run is refused against a teacher that was replaced, and after its own config
    was edited; a new oracle seed gets its own folder, and --overwrite (oracle included) and
    --out are the advice that works."""
    from qmu_qiskit.exceptions import RunError

    t = teacher_copy(iris_teacher, tmp_path / "t")
    opts = {"ga": {"epochs": 1}}
    first = pipeline.unlearn(t, "class:0", ["ga"], options=opts, progress=False)
    ga = first[-1].path
    before = pipeline.evaluate(ga)
    # another oracle seed: its own folder, next to the first oracle; the method run refuses to be
    # replaced silently, and --overwrite replaces it (not the first oracle)
    with pytest.raises(RunError, match="holds a run made from a different config; use --overwrite"):
        pipeline.unlearn(t, "class:0", ["ga"], options=opts, progress=False, seed=1)
    again = pipeline.unlearn(
        t, "class:0", ["ga"], options=opts, progress=False, seed=1, overwrite=True
    )
    assert again[0].path.name == "retrain-s1" and (ga.parent / "retrain").is_dir()
    assert RunDir(ga).status()["oracle"] == "retrain-s1"
    other = pipeline.unlearn(
        t, "class:0", ["ga"], options=opts, progress=False, out=tmp_path / "elsewhere"
    )
    assert other[-1].path == tmp_path / "elsewhere" / "ga"
    assert pipeline.evaluate(tmp_path / "elsewhere" / "ga")["forget_size"] == before["forget_size"]
    # the unlearn run's own config edited: refused before its metrics are rewritten
    config = (ga / "config.yaml").read_text()
    (ga / "config.yaml").write_text(config.replace("epochs: 1", "epochs: 9"))
    with pytest.raises(RunError, match=r"config\.yaml does not match run\.json"):
        pipeline.evaluate(ga)
    (ga / "config.yaml").write_text(config)
    # the teacher replaced by another training: evaluate refuses, and the metrics are untouched
    metrics = (ga / "metrics.json").read_bytes()
    state = torch.load(t / "model.pt", weights_only=True)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, t / "model.pt")
    with pytest.raises(
        RunError, match=r"is not the one .* was unlearned from \(its weights/outputs changed"
    ):
        pipeline.evaluate(ga)
    assert (ga / "metrics.json").read_bytes() == metrics


@pytest.mark.timeout(300)
def test_killed_local_pool_prints_no_semaphore_warnings(tmp_path, env):
    """A `jobs submit` on the local process pool SIGKILLed mid-cell: what its worker and resource
    tracker print until they exit holds no multi-line leaked-semaphore warning, and `jobs status`
    calls the cell dead."""
    spec = tmp_path / "pool.yaml"
    spec.write_text(
        yaml.safe_dump({"name": "pool", **GRID, "executor": {"kind": "local", "workers": 1}}),
        encoding="utf-8",
    )
    grid_dir = tmp_path / "runs" / "pool"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qmu_qiskit.cli",
            "grid",
            "submit",
            str(spec),
            "--out-dir",
            str(tmp_path),
            "--quiet",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        end = time.monotonic() + 120
        while ckpt_epoch(grid_paths(grid_dir)["teacher"]) < 1:
            assert proc.poll() is None and time.monotonic() < end, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        out = proc.stdout.read()  # EOF once the orphaned worker and the tracker have exited
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()
    assert "leaked semaphore" not in out and "resource_tracker" not in out, out
    status = cli_run(["grid", "status", spec, "--out-dir", tmp_path, "--all"], env)
    assert status.returncode == 0 and status.stderr.strip() == "", status.stderr
    assert not re.search(r"\brunning\b", status.stdout), status.stdout
