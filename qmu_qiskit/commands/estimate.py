"""``qmu-qiskit estimate COMMAND ARGS`` (and ``--dry-run``): what a command would submit to IBM
Quantum — jobs, PUBs, circuits × parameter sets, shots, the job-size limits, QPU seconds — before
anything is submitted.

The command runs for real, in a scratch folder (deleted afterwards), inside a dry run
(:mod:`qmu_qiskit.execution.dry_run`): the executor transpiles, merges and chunks exactly as for
hardware, each job is recorded instead of submitted, and values come from the exact noiseless
engine so the control flow proceeds. The QPU-time model and its sources are in that module's
docstring and in ``qmu-qiskit estimate --help``.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sqlite3
import tempfile
from pathlib import Path

import click

from ..cli import CONTEXT, print_table
from ..exceptions import BadInputError, QmuError
from ..runs import LEDGER_DIR

#: Commands an estimate can run.
COMMANDS = ("train", "unlearn", "study", "mia-compare")

_MODEL_HELP = """\b
QPU seconds, per job:
  overhead + Σ PUBs  parameter sets × measurement bases × shots
                     × (circuit duration + readout + rep_delay)
  circuit duration: the ISA circuit's critical path with the device snapshot's gate durations
  readout: the snapshot's measure duration; rep_delay: its default_rep_delay (IBM runs a job's
    circuits column-wise over circuits × shots, rep_delay between circuits)
  overhead: 3 s per job, an ASSUMPTION (IBM publishes no figure; derived from the 4.1 s
    usage_estimation of IBM's one-circuit example job)
Not modelled: error-mitigation overheads (the runtime Estimator's default resilience level 1
adds readout calibration), reset time, and a Session's idle time — IBM bills a session's
wall-clock time, so in session mode the figure is a lower bound.
Sources: IBM Quantum docs — guides/repetition-rate-execution, guides/estimate-job-run-time,
guides/job-limits, guides/max-execution-time (quantum.cloud.ibm.com/docs).
"""


class EstimateError(QmuError):
    """The dry run's records disagree with the job ledger it wrote (a bug: report it)."""


@click.command(
    context_settings={**CONTEXT, "ignore_unknown_options": True, "allow_interspersed_args": False},
    epilog=_MODEL_HELP,
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the estimate as JSON to this file.",
)
@click.argument("command", type=click.Choice(COMMANDS))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def estimate(json_out, command, args):
    """Print what COMMAND would submit to IBM Quantum, before anything is submitted.

    \b
      qmu-qiskit estimate train --dataset iris --epochs 2 --shots 256 --backend ibm_brisbane
      qmu-qiskit estimate unlearn --run runs/iris --forget class:0 --method ga --backend ibm_fez
      qmu-qiskit estimate study studies/hqml_iris.yaml --backend ibm_torino --shots 512
      qmu-qiskit estimate mia-compare --backends aer,ibm_brisbane --shots 1024 --data-dir $DATA

    ARGS are COMMAND's own arguments (a study takes --backend and --shots here, replacing the
    spec's backends). ibm_<device> takes the device's target and durations from its hardware
    profile (`qmu-qiskit profiles list`); no account is needed. fake_<device> works too. Only
    jobs to fake_<device>/ibm_<device> backends are counted: the estimate lists the command's
    local backends apart (mia-compare trains on aer as usual and skips its aer_noisy evaluations).

    Counts (jobs, PUBs, circuits × parameter sets, shots) equal those a fake_<device> run records
    in its job ledger whenever the command's control flow does not depend on measured values;
    early stopping is off during the estimate, so they are the full epoch budget (an upper
    bound for a run that stops early). Nothing is submitted and no run directory is written
    (only the shared transpile cache is filled, which the real run then reuses).
    """
    from ..cli import cli

    ctx = click.get_current_context()
    args = list(args)
    backend = shots = None
    if command == "study":
        args, backend, shots = _take_backend(args)
    cmd = cli.get_command(ctx, command)
    sub = cmd.make_context(command, args, parent=ctx)
    callback = getattr(cmd.callback, "__wrapped__", cmd.callback)
    result = run_dry(command, callback, dict(sub.params), backend=backend, shots=shots)
    print_estimate(result)
    if json_out:
        from ..io import atomic_write_json

        atomic_write_json(Path(json_out), result)
        click.echo(f"estimate: {json_out}")


def _take_backend(args: list[str]) -> tuple[list[str], str | None, int | None]:
    """``--backend X`` / ``--shots N`` out of a study's arguments (the study command has neither)."""
    rest: list[str] = []
    backend: str | None = None
    shots: int | None = None
    it = iter(args)
    for a in it:
        name, eq, given = a.partition("=")
        if name in ("--backend", "--shots"):
            value = given if eq else next(it, None)
            if value is None:
                raise BadInputError(f"{name} needs a value; e.g. {name} ibm_brisbane")
            if name == "--backend":
                backend = value
            else:
                try:
                    shots = int(value)
                except ValueError:
                    raise BadInputError(
                        f"--shots must be a positive integer, got {value!r}"
                    ) from None
        else:
            rest.append(a)
    return rest, backend, shots


# ---------------------------------------------------------------------------------------------


def run_dry(
    command: str, callback, params: dict, *, backend: str | None = None, shots: int | None = None
) -> dict:
    """Run ``callback(**params)`` (a command's function) inside a dry run in a scratch folder.

    Returns:
        The estimate (see :func:`summarize`).

    Raises:
        BadInputError: the command would submit nothing to IBM Quantum (no fake_*/ibm_* backend),
            or an argument the command refuses.
    """
    from ..backends.dryrun import activate
    from ..execution.dry_run import DryRun

    params = {k: v for k, v in params.items() if k != "dry_run"}
    scratch = Path(tempfile.mkdtemp(prefix="qmu-estimate-"))
    try:
        params, local = _scratch_params(command, params, scratch, backend=backend, shots=shots)
        session = DryRun()
        captured = io.StringIO()  # the command's own report: numbers of a noiseless stand-in
        with activate(session), contextlib.redirect_stdout(captured):
            callback(**params)
        return summarize(session, scratch, command=command, not_counted=local)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _runtime(name: str | None) -> bool:
    from ..backends import backend_kind

    return backend_kind(name or "aer") in ("fake", "ibm")


def _no_jobs(
    what: str, fix: str = "give --backend ibm_<device> (or fake_<device>)"
) -> BadInputError:
    return BadInputError(
        f"{what} submits nothing to IBM Quantum (it runs on this machine), so there is nothing to "
        f"estimate; {fix}"
    )


def _copy_into(src: Path, target: Path) -> None:
    shutil.copytree(src, target, ignore=shutil.ignore_patterns(".lock", "*.lock"))


def _scratch_params(
    command: str, params: dict, scratch: Path, *, backend, shots
) -> tuple[dict, dict[str, str]]:
    """The command's parameters with every output inside ``scratch`` and nothing interactive,
    and the command's backends that submit nothing (name → what runs there), not counted."""
    params = dict(params)
    for key in ("no_progress", "no_plots", "quiet"):
        if key in params:
            params[key] = True
    if "track" in params:
        params["track"] = None
    if command == "train":
        if not _runtime(params.get("backend")):
            raise _no_jobs(f"backend {params.get('backend') or 'aer'}")
        params["out"] = str(scratch / "run")
        params["overwrite"] = False
        return params, {}
    if command == "unlearn":
        from ..runs import RunDir

        teacher = RunDir(params["run_path"])
        teacher.require_complete(what="trained run")
        base = (teacher.config().get("backend") or {}).get("name")
        names = [params.get("backend") or base, params.get("oracle_backend") or base]
        if not any(_runtime(n) for n in names):
            raise _no_jobs(f"backend {names[0] or 'aer'} (and the oracle's, {names[1] or 'aer'})")
        copy = scratch / "teacher"
        _copy_into(teacher.path, copy)
        params["run_path"] = str(copy)
        if params.get("out"):
            out = Path(params["out"])
            target = scratch / "out"
            if out.is_dir():
                _copy_into(out, target)
            params["out"] = str(target)
        local: dict[str, str] = {}
        for name, what in zip(names, ("the methods run here", "the retrain oracle runs here")):
            name = name or "aer"
            if not _runtime(name):
                local[name] = f"{local[name]}; {what}" if name in local else what
        return params, local
    if command == "study":
        from ..studies import load_spec

        if params.get("report_only"):
            raise BadInputError("--report-only runs nothing, so there is nothing to estimate")
        spec = load_spec(params["spec"])
        update: dict = {"executor": type(spec.executor)(kind="inline")}
        if backend is not None or shots is not None:
            from ..config import BackendConfig
            from ..pipeline import inherited_backend

            wanted: list[str] = [backend] if backend else [str(b.name) for b in spec.backends]
            new = []
            for name in dict.fromkeys(wanted):
                cfg = inherited_backend(spec.backends[0].model_dump(mode="json"), name)
                if shots is not None:
                    cfg["shots"] = shots
                new.append(BackendConfig(**cfg))
            update["backends"] = new
        spec = spec.model_copy(update=update)
        if not any(_runtime(b.name) for b in spec.backends):
            raise _no_jobs(f"the study's backend(s) {', '.join(b.name for b in spec.backends)}")
        params["spec"] = spec
        params["out_dir"] = str(scratch)
        params["workers"] = None
        return params, {
            b.name: "the study's cells run here" for b in spec.backends if not _runtime(b.name)
        }
    if command == "mia-compare":
        from ..backends import backend_kind
        from .mia import csv_items, default_out

        listed = csv_items(params.get("backends") or ())
        if not any(_runtime(n) for n in listed):
            raise _no_jobs(
                f"--backends {','.join(listed) or '(none)'}",
                fix="add ibm_<device> (or fake_<device>) to --backends",
            )
        # a rerun resumes the output folder: the estimate counts what that rerun would submit
        out = Path(params["out"] or default_out(params["seed"], params.get("num_seeds") or 1))
        target = scratch / "out"
        if out.is_dir():
            _copy_into(out, target)
        params["out"] = str(target)
        return params, {
            n: (
                "the models are trained and unlearned here"
                if backend_kind(n) == "aer"
                else "a local emulation; its evaluations are skipped in the estimate"
            )
            for n in listed
            if not _runtime(n)
        }
    raise BadInputError(f"cannot estimate {command!r}; use one of {', '.join(COMMANDS)}")


# ---------------------------------------------------------------------------------------------


_COUNTS = (
    "jobs",
    "pubs",
    "circuit_evaluations",
    "parameter_sets",
    "shots",
    "executed_circuits",
    "executions",
    "qpu_seconds",
)


def _ledger_rows(scratch: Path) -> tuple[dict[str, tuple[str, tuple]], dict[str, set]]:
    """job id → (run directory relative to the scratch folder, (pubs, evaluations, shots)) of
    every job ledger in the scratch folder, and run directory → the run ids its ledger holds."""
    out = {}
    run_ids: dict[str, set] = {}
    for path in sorted(scratch.rglob("jobs.sqlite")):
        if path.parent.name != LEDGER_DIR:
            continue
        run = path.parent.parent.relative_to(scratch).as_posix()
        con = sqlite3.connect(path)
        try:
            rows = con.execute(
                "SELECT job_id, run_id, num_pubs, circuit_evaluations, shots FROM jobs"
            ).fetchall()
        finally:
            con.close()
        for job_id, run_id, pubs, evals, shots in rows:
            out[job_id] = (run, (pubs, evals, shots))
            run_ids.setdefault(run, set()).add(run_id)
    return out, run_ids


def summarize(
    session, scratch: Path, *, command: str, not_counted: dict[str, str] | None = None
) -> dict:
    """The estimate of a finished dry run, checked against the job ledgers it wrote.

    One row per run directory (relative to ``scratch``); a job ledger shared by several run ids
    (``mia-compare``'s evaluations: one per backend and shot count) has a row per run id,
    ``"<folder> (<run id>)"``. ``not_counted``: the command's backends that submit nothing
    (name → what runs there), reported as such.

    Raises:
        EstimateError: a job the ledger recorded differs from what the runner counted.
    """
    from ..execution.dry_run import (
        MAX_JOB_SECONDS,
        SAMPLER_MAX_EXECUTIONS,
        SOURCES,
    )
    from ..execution.executor import DEFAULT_MAX_CIRCUITS, DEFAULT_MAX_PARAMETER_SETS

    ledger, run_ids = _ledger_rows(scratch)
    runs: dict[str, dict] = {}
    for rec in session.records:
        run, counts = ledger.get(rec.job_id, ("(not in a job ledger)", None))
        if counts is not None and counts != (rec.pubs, rec.circuit_evaluations, rec.shots):
            raise EstimateError(
                f"the dry run counted job {rec.job_id} as {rec.pubs} PUBs, "
                f"{rec.circuit_evaluations} evaluations, {rec.shots} shots but its ledger row says "
                f"{counts}; please report this"
            )
        if len(run_ids.get(run, ())) > 1:
            run = f"{run} ({rec.run_id})"
        row = runs.setdefault(run, {"run": run, **dict.fromkeys(_COUNTS, 0)})
        row["jobs"] += 1
        for key in _COUNTS[1:]:
            row[key] += getattr(rec, key)
    rows = list(runs.values())
    total = {"run": "total", **{k: sum(r[k] for r in rows) for k in _COUNTS}}
    for r in [*rows, total]:
        r["qpu_seconds"] = round(r["qpu_seconds"], 3)
    recs = session.records
    largest = max(recs, key=lambda r: r.qpu_seconds, default=None)
    samplers = [r for r in recs if r.kind == "sample"]
    sessions: dict[str, int] = {}
    for runner in session.runners:
        if runner.sessions_opened:
            sessions[runner.mode_kind] = sessions.get(runner.mode_kind, 0) + runner.sessions_opened
    devices = {
        name: {
            "device": t.name,
            "source": t.source,
            "rep_delay_s": t.rep_delay,
            "readout_median_s": sorted(t.measure.values())[len(t.measure) // 2],
        }
        for name, t in session.devices.items()
    }
    return {
        "command": command,
        "backends": devices,
        "not_counted": dict(not_counted or {}),
        "runs": rows,
        "total": total,
        "shot_seconds": round(sum(r.shot_seconds for r in recs), 3),
        "overhead_seconds": round(session.job_overhead_s * len(recs), 3),
        "sessions": sessions,
        "limits": {
            "max_circuits_per_job": DEFAULT_MAX_CIRCUITS["runtime"],
            "max_parameter_sets_per_job": DEFAULT_MAX_PARAMETER_SETS["runtime"],
            "sampler_max_executions": SAMPLER_MAX_EXECUTIONS,
            "max_job_seconds": MAX_JOB_SECONDS,
        },
        "largest_job": largest.to_dict() if largest else None,
        "largest_sampler_executions": max((r.executions for r in samplers), default=0),
        "over_limits": [
            r.job_id
            for r in recs
            if r.qpu_seconds > MAX_JOB_SECONDS
            or (r.kind == "sample" and r.executions > SAMPLER_MAX_EXECUTIONS)
        ],
        "model": {
            "job_overhead_s": session.job_overhead_s,
            "job_overhead_is_assumption": True,
            "per_job": "overhead + sum over PUBs of parameter sets x measurement bases x shots x "
            "(circuit duration + readout + rep_delay)",
            "sources": SOURCES,
        },
        "early_stopping": "off (counts are the full epoch budget)",
    }


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min ({s:.0f} s)"
    return f"{s / 3600:.2f} h ({s:.0f} s)"


def print_estimate(result: dict) -> None:
    """The estimate, readable in a terminal."""
    backends = ", ".join(
        f"{name} ({d['source']}; rep_delay {d['rep_delay_s'] * 1e6:.0f} µs, readout "
        f"{d['readout_median_s'] * 1e6:.2f} µs median)"
        for name, d in result["backends"].items()
    )
    click.echo(
        f"estimate of `{result['command']}` on {backends or '-'}: nothing was submitted "
        "(the command ran against a counting runner in a scratch folder, now deleted)"
    )
    if result.get("not_counted"):
        click.echo(
            f"counted: the jobs to {', '.join(result['backends']) or '-'}; not counted (nothing "
            "goes to IBM Quantum): "
            + ", ".join(f"{name} ({what})" for name, what in result["not_counted"].items())
        )
    print_table(
        [*result["runs"], result["total"]],
        [
            ("run", "run"),
            ("jobs", "jobs"),
            ("PUBs", "pubs"),
            ("circuits×param sets", "circuit_evaluations"),
            ("param sets", "parameter_sets"),
            ("shots", "shots"),
            ("executed circuits", "executed_circuits"),
            ("QPU s (est.)", "qpu_seconds"),
        ],
    )
    lim = result["limits"]
    click.echo(
        f"job-size limits chunked to: ≤ {lim['max_circuits_per_job']} circuits per job "
        f"(data-dependent circuits, one per sample), ≤ {lim['max_parameter_sets_per_job']} "
        "parameter sets per job (larger PUBs are split); IBM's: ≤ "
        f"{lim['sampler_max_executions']:,} executions per Sampler job, ≤ "
        f"{lim['max_job_seconds'] // 3600} h per job"
    )
    big = result["largest_job"]
    if big:
        click.echo(
            f"largest job: {big['pubs']} PUBs, {big['parameter_sets']} parameter sets, "
            f"{big['executions']:,} executions, ~{_seconds(big['qpu_seconds'])}"
            + (
                f"; OVER A LIMIT: {len(result['over_limits'])} job(s)"
                if result["over_limits"]
                else ""
            )
        )
    total = result["total"]["qpu_seconds"]
    click.echo(
        f"QPU time: ~{_seconds(total)} = {result['total']['jobs']} jobs × "
        f"{result['model']['job_overhead_s']:g} s overhead (an assumption) + "
        f"{_seconds(result['shot_seconds'])} of shots (device durations + rep_delay)"
    )
    if result["sessions"].get("session"):
        click.echo(
            f"sessions: {result['sessions']['session']} Session(s): IBM bills a session's "
            "wall-clock time (this client's time between jobs included), so the usage will be "
            "higher than the QPU time above; --max-time bounds it, a Batch bills QPU time only"
        )
    click.echo(
        "counts are exact (= a fake_<device> run's job ledger) when the control flow does not "
        "depend on measured values; early stopping was off, so they are the full epoch budget "
        "(an upper bound). QPU time: not checked against hardware here; the shot part follows "
        "the device snapshot (expect tens of percent, more with error mitigation), the per-job "
        "overhead is an assumption — compare one job's job.usage() before a large run"
    )
