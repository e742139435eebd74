"""The job manager: spec validation, grid expansion, the cell ledger, scheduling, resumption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qmu_qiskit import grids, studies
from qmu_qiskit.exceptions import BadInputError, QmuError, RunError


def tiny(name: str = "tiny", **over) -> dict:
    """A grid small enough for tests: Iris, shallow model, a few epochs, the existing methods."""
    spec = {
        "name": name,
        "datasets": ["iris"],
        "models": ["hqml-shallow"],
        "methods": ["ga", "finetune"],
        "forget": ["class:0"],
        "seeds": [0],
        "training": {"epochs": 3},
        "executor": {"kind": "inline"},
    }
    spec.update(over)
    return spec


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ validation


@pytest.mark.reliability
@pytest.mark.parametrize(
    "change, field",
    [
        ({"datasets": None}, "datasets"),
        ({"methds": ["ga"]}, "methds"),
        ({"seeds": "zero"}, "seeds"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"forget": ["class:x"]}, "forget"),
        ({"backends": [{"name": "aer", "shots": -1}]}, "backends.0: invalid backend config: shots"),
        ({"models": [{"name": "hqml-shallow", "qubit": 4}]}, "models.0.qubit"),
        ({"methods": [{"method": "ga", "label": "a/b"}]}, "methods.0.label"),
        ({"executor": {"kind": "slurm"}}, "executor.kind"),
        ({"quirks": {"test_selection": False}}, "quirks"),
        ({"methods": ["ga", "nosuch"]}, "methods.1"),
        ({"options": {"ga": {"epochz": 3}}}, "epochz"),
        ({"options": {"scrub": {}}}, "options.scrub"),
        ({"training": {"epochs": 0}}, "epochs"),
        ({"backends": ["nosuch_backend"]}, "nosuch_backend"),
        ({"forget": ["class:7"]}, "class 7"),
    ],
)
def test_bad_spec_names_the_field(tmp_path, change, field):
    spec = tiny()
    for k, v in change.items():
        if v is None:
            spec.pop(k)
        else:
            spec[k] = v
    with pytest.raises(QmuError) as err:  # BadInputError; BackendError for the backend name
        studies.expand(spec, root=tmp_path)
    msg = str(err.value)
    assert field in msg and "\n" not in msg
    assert not any(tmp_path.iterdir()), "a bad spec must not leave anything behind"


@pytest.mark.reliability
@pytest.mark.parametrize("out", ["../elsewhere", "/tmp/qmu-outside-grid", "runs/../../x"])
def test_out_may_not_escape_the_output_directory(tmp_path, out):
    with pytest.raises(BadInputError, match="outside the output directory"):
        studies.expand(tiny(out=out), root=tmp_path / "root")


def test_yaml_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndatasets: [iris\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"not valid YAML at line \d+"):
        studies.load_spec(bad)
    with pytest.raises(BadInputError, match="does not exist"):
        studies.load_spec(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="expected a mapping"):
        studies.load_spec(tmp_path / "list.yaml")


# ------------------------------------------------------------------------------ expansion


def test_grid_is_a_dag_with_stable_ids(tmp_path):
    spec = tiny(forget=["class:0", "subset:0.1"], seeds=[0, 1])
    grid = studies.expand(spec, root=tmp_path)
    kinds = [c.kind for c in grid.cells]
    assert kinds.count("teacher") == 2 and kinds.count("oracle") == 4 and kinds.count("method") == 8
    assert kinds.count("prefit") == 4  # exact Aer: each oracle's fit runs beside its teacher
    by_id = {c.id: c for c in grid.cells}
    for c in grid.cells:
        if c.kind == "prefit":
            assert c.deps == () and c.path.parent == grid.dir / "prefit"
        if c.kind == "oracle":
            assert by_id[c.deps[0]].kind == "teacher" and by_id[c.deps[1]].kind == "prefit"
            assert c.payload["prefit"] == str(by_id[c.deps[1]].path)
            assert c.path.parent.parent.parent == by_id[c.deps[0]].path
        if c.kind == "method":
            assert (
                by_id[c.deps[0]].kind == "oracle" and c.path.parent == by_id[c.deps[0]].path.parent
            )
    assert [c.id for c in studies.expand(spec, root=tmp_path).cells] == [c.id for c in grid.cells]
    changed = studies.expand({**spec, "options": {"ga": {"epochs": 4}}}, root=tmp_path)
    new = {c.id for c in changed.cells} - set(by_id)
    assert len(new) == 4 and {c.path.name for c in changed.cells if c.id in new} == {"ga"}
    assert grid.dir == (tmp_path / "runs" / "tiny").resolve()


def test_method_labels_and_overrides(tmp_path):
    spec = tiny(methods=["ga", {"method": "ga", "label": "ga_long", "options": {"epochs": 30}}])
    grid = studies.expand(spec, root=tmp_path)
    methods = sorted(c.path.name for c in grid.cells if c.kind == "method")
    assert methods == ["ga", "ga_long"]
    only = studies.expand(spec, root=tmp_path, methods=["ga_long"], seeds=[3])
    assert sorted(c.path.name for c in only.cells if c.kind == "method") == ["ga_long"]
    assert {c.coords["seed"] for c in only.cells} == {3}
    with pytest.raises(BadInputError, match="appears twice"):
        studies.expand(tiny(methods=["ga", "ga"]), root=tmp_path)


# ------------------------------------------------------------------------------ ledger


def test_cell_ledger_checks_and_permissions(tmp_path):
    grid = studies.expand(tiny(), root=tmp_path)
    a, b = grid.cells[0].id, grid.cells[1].id
    with grids.CellLedger(tmp_path / "cells.sqlite") as ledger:
        assert (os.stat(tmp_path / "cells.sqlite").st_mode & 0o777) == 0o600
        ledger.add_cells(grid.cells)
        ledger.record(a, "submitted")
        ledger.record(a, "lost")
        ledger.record(a, "submitted")
        ledger.record(a, "done")
        assert ledger.duplicate_submissions() == [] and ledger.duplicate_completions() == []
        ledger.record(b, "submitted")
        ledger.record(b, "submitted")  # while the first attempt is open
        ledger.record(b, "done")
        ledger.record(a, "submitted")  # after it completed
        ledger.record(a, "done")
        assert dict(ledger.duplicate_submissions()) == {a: 1, b: 1}
        assert dict(ledger.duplicate_completions()) == {a: 2}
        assert ledger.cells()[a]["attempts"] == 3


# ------------------------------------------------------------------------------ running


def test_submit_wait_results_and_resubmit(tmp_path):
    handle = studies.submit(tiny(), out_dir=tmp_path)
    status = handle.wait(timeout=120)
    assert status.state == "complete", status.cells
    assert status.counts == {"done": 5}  # teacher, prefit, oracle, 2 methods
    rows = handle.results()
    assert [r["kind"] for r in rows] == ["teacher", "oracle", "method", "method"]
    method = rows[-1]
    for key in ("UQI", "acc_forget_unlearn", "MIA_AUC", "KL_test", "seconds", "speedup", "seed"):
        assert key in method
    assert method["forget"] == "class:0" and method["method"] in ("ga", "finetune")

    scratch = handle.path / ".grid.json.k1ll3d.tmp"  # what a kill during an atomic write leaves
    scratch.write_text('{"cells": [')
    with grids.CellLedger(handle.path / "cells.sqlite") as ledger:
        events_before = len(ledger.events())
        again = studies.submit(tiny(), out_dir=tmp_path).wait(timeout=60)
        assert not scratch.exists()
        assert again.state == "complete"
        assert len(ledger.events()) == events_before, "finished cells must not be submitted again"
    assert grids.open_grid(handle.path).status().state == "complete"
    assert [h.path for h in grids.list_grids(tmp_path)] == [handle.path]


def test_ready_cells_like_a_long_finished_one_start_first(tmp_path):
    """Longest-first packing: on the second forget request the method that took longest on the
    first starts before the quick one, although the spec lists it last."""
    started = []

    def on_event(event, cell, info):
        if event == "start" and cell.kind == "method":
            started.append((cell.coords["forget"], cell.coords["method"]))

    spec = tiny(
        forget=["class:0", "class:1"],
        options={"ga": {"epochs": 1}, "finetune": {"epochs": 12}},
    )
    status = studies.submit(spec, out_dir=tmp_path, on_event=on_event).wait(timeout=300)
    assert status.state == "complete", status.cells
    first = started[:2]
    assert [m for _, m in first] == ["ga", "finetune"]  # nothing learnt yet: the spec's order
    assert [m for _, m in started[2:]] == ["finetune", "ga"], started


def test_failed_cell_blocks_its_dependents(tmp_path, monkeypatch):
    from qmu_qiskit.studies import cells

    real = cells.run

    def flaky(payload):
        if payload["kind"] == "oracle":
            raise RunError("simulated oracle failure")
        return real(payload)

    monkeypatch.setattr(cells, "run", flaky)
    status = studies.submit(tiny(), out_dir=tmp_path).wait(timeout=120)
    assert status.state == "failed"
    by_kind = {c["kind"]: c for c in status.cells}
    assert by_kind["oracle"]["status"] == "failed" and "simulated" in by_kind["oracle"]["error"]
    assert {c["status"] for c in status.cells if c["kind"] == "method"} == {"blocked"}
    monkeypatch.setattr(cells, "run", real)
    assert studies.submit(tiny(), out_dir=tmp_path).wait(timeout=120).state == "complete"


def test_cancel_stops_and_resubmit_resumes(tmp_path):
    grid_dir = tmp_path / "runs" / "tiny"

    def on_event(event, cell, info):
        if event == "done" and cell.kind == "teacher":
            grids.open_grid(grid_dir).cancel()  # as `qmu-qiskit grid cancel` from another shell

    status = studies.submit(tiny(), out_dir=tmp_path, on_event=on_event).wait(timeout=120)
    assert status.state == "cancelled" and status.counts.get("done") in (1, 2)  # + the prefit?
    assert {c["status"] for c in status.cells if c["kind"] in ("oracle", "method")} == {"pending"}
    resumed = studies.submit(tiny(), out_dir=tmp_path).wait(timeout=120)
    assert resumed.state == "complete"
    with grids.CellLedger(resumed.path / "cells.sqlite") as ledger:
        assert ledger.duplicate_submissions() == [] and ledger.duplicate_completions() == []


def test_dask_executor_runs_the_grid(tmp_path):
    """The optional Dask executor (a local cluster of worker processes) runs the same cells, and
    a resubmission on the process pool finds them done."""
    pytest.importorskip("distributed")
    status = studies.submit(tiny(executor={"kind": "dask", "workers": 2}), out_dir=tmp_path).wait(
        timeout=300
    )
    assert status.state == "complete" and status.counts == {"done": 5}, status.cells
    with grids.CellLedger(status_path := tmp_path / "runs" / "tiny" / "cells.sqlite") as ledger:
        events = len(ledger.events())
    again = studies.submit(tiny(executor={"kind": "local", "workers": 1}), out_dir=tmp_path).wait(
        timeout=120
    )
    assert again.state == "complete"
    with grids.CellLedger(status_path) as ledger:
        assert len(ledger.events()) == events


def test_grid_lock_refuses_a_second_scheduler(tmp_path):
    from qmu_qiskit.io import directory_lock

    grid = studies.expand(tiny(), root=tmp_path)
    with directory_lock(grid.dir, what="job grid"):
        with pytest.raises(RunError, match="in use"):
            studies.submit(tiny(), out_dir=tmp_path)


# ------------------------------------------------------------------------------ CLI


def test_cli_bad_spec_is_one_line(tmp_path, capsys):
    from qmu_qiskit.cli import main

    spec = write_spec(tmp_path / "bad.yaml", {**tiny(), "datasetz": ["iris"]})
    with pytest.raises(SystemExit) as exc:
        main(["grid", "submit", str(spec), "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.count("\n") == 0 and "datasetz" in err


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.reliability
@pytest.mark.timeout(300)
def test_sigkill_during_submit_then_resubmit(tmp_path):
    """SIGKILL `qmu-qiskit grid submit` while cells run; the same command again finishes the
    grid without redoing finished cells and without duplicate submissions (cells or circuits)."""
    from qmu_qiskit.execution.ledger import JobLedger
    from qmu_qiskit.runs import RunDir

    spec = tiny(
        "killed",
        forget=["class:0", "subset:0.1"],
        seeds=[0, 1],
        training={"epochs": 12, "patience": 0},
        executor={"kind": "local", "workers": 2},
    )
    path = write_spec(tmp_path / "killed.yaml", spec)
    cmd = [
        sys.executable,
        "-m",
        "qmu_qiskit.cli",
        "grid",
        "submit",
        str(path),
        "--out-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    grid_dir = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers.update(_children(proc.pid))
            if (grid_dir / "cells.sqlite").exists():
                with grids.CellLedger(grid_dir / "cells.sqlite") as ledger:
                    cells = ledger.cells().values()
                done = sum(c["status"] == "done" for c in cells)
                if done >= 3 and any(c["status"] == "running" for c in cells):
                    break
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.2)
        else:
            pytest.fail("the grid did not get going within 60 s")
        workers.update(_children(proc.pid))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # the workers die with their scheduler (nothing left running a cell)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)], "workers outlived the killed scheduler"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        proc.stdout.close()

    grid = grids.Grid.load(grid_dir)
    finished = {}
    for c in grid.cells:
        run = RunDir(c.path)
        if run.is_complete():
            finished[c.id] = run.status()["finished"]
    assert finished and len(finished) < len(grid.cells)

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=90)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    status = grids.open_grid(grid_dir).status()
    assert status.state == "complete"
    for cid, when in finished.items():
        assert RunDir(grid.cell(cid).path).status()["finished"] == when, (
            "a finished cell was redone"
        )
    with grids.CellLedger(grid_dir / "cells.sqlite") as ledger:
        assert ledger.duplicate_submissions() == []
        assert ledger.duplicate_completions() == []
        for cid in finished:
            assert sum(e["event"] == "submitted" for e in ledger.events(cid)) == 1
    circuit_ledgers = list(grid_dir.rglob("ledger/jobs.sqlite"))
    assert len(circuit_ledgers) == len(grid.cells)
    for db in circuit_ledgers:
        assert JobLedger(db).duplicate_submissions() == [], db


def test_the_grid_command_and_its_old_name(capsys):
    """`qmu-qiskit grid` runs grids; `jobs`, its name before "job" came to mean only a circuit
    job, still works but is no longer listed."""
    from qmu_qiskit.cli import main

    main(["--help"])
    listing = capsys.readouterr().out
    assert "  grid " in listing and "  jobs " not in listing
    for name in ("grid", "jobs"):
        main([name, "--help"])
        out = capsys.readouterr().out
        assert "submit" in out and "status" in out and "Batch grids" in out


def test_a_prefit_is_not_run_when_its_oracle_needs_it_no_more(tmp_path):
    """A grid written before prefit cells existed, resubmitted: the prefit of an oracle that is
    finished, or already fitting from its own checkpoint, counts as done."""
    from qmu_qiskit.studies import cells

    oracle = tmp_path / "teacher" / "unlearn" / "class-0" / "retrain"
    cell = grids.Cell("p-x", "prefit", tmp_path / "prefit" / "x", (), {}, {"oracle": str(oracle)})
    assert not cells.finished(cell)
    (oracle / "checkpoints").mkdir(parents=True)
    (oracle / "checkpoints" / "method.pt").write_bytes(b"")
    assert cells.finished(cell)
