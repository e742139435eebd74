"""The ``qmu-qiskit`` command line (click). Thin: parse, validate, call :mod:`qmu_qiskit.pipeline`.

Every failure a user can cause ends in one line on stderr that says what to do, and a non-zero
exit code; never a traceback (set ``QMU_DEBUG=1`` to see one).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import click

from .commands.dry_run import dry_run_option
from .exceptions import BadInputError, QmuError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{digits}f}"
    return str(v)


def print_table(
    rows: list[dict], columns: list[tuple[str, str]], *, title: str | None = None
) -> None:
    """A plain fixed-width table on stdout (readable in terminals and CI logs alike)."""
    header = [h for h, _ in columns]
    body = [[_fmt(r.get(k)) for _, k in columns] for r in rows]
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)
    ]
    if title:
        click.echo(title)
    click.echo(
        "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))
    )
    click.echo("  ".join("-" * w for w in widths))
    for b in body:
        click.echo(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths)))
        )


# ---------------------------------------------------------------------------------------------


#: Commands that live in their own modules (qmu_qiskit/commands/), imported only when used.
LAZY_COMMANDS = {
    "grid": ("qmu_qiskit.commands.grid", "grid"),
    "study": ("qmu_qiskit.commands.study", "study"),
    "profiles": ("qmu_qiskit.commands.profiles", "profiles"),
    "mia-compare": ("qmu_qiskit.commands.mia", "mia_compare"),
    "results": ("qmu_qiskit.commands.results", "results"),
    "reproduce": ("qmu_qiskit.commands.reproduce", "reproduce"),
    "audit": ("qmu_qiskit.commands.audit", "audit"),
    "estimate": ("qmu_qiskit.commands.estimate", "estimate"),
}

#: Old command names that still work, unlisted: `jobs` was `grid` before "job" came to mean only
#: a circuit job submitted to a backend.
ALIASES = {"jobs": "grid"}


class LazyGroup(click.Group):
    """A click group whose heavier commands are imported on first use (fast ``--help``)."""

    def list_commands(self, ctx):
        import importlib.util

        lazy = [name for name, (mod, _) in LAZY_COMMANDS.items() if importlib.util.find_spec(mod)]
        return sorted(set(super().list_commands(ctx)) | set(lazy))

    def get_command(self, ctx, name):
        name = ALIASES.get(name, name)
        if name in LAZY_COMMANDS:
            import importlib

            module, attr = LAZY_COMMANDS[name]
            try:
                return getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise
                return None
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(package_name="qmu-qiskit")
def cli():
    """Train, unlearn and audit hybrid quantum-classical classifiers on Aer and IBM Quantum.

    \b
    Typical session:
      qmu-qiskit train --dataset iris --backend aer --out runs/iris
      qmu-qiskit unlearn --run runs/iris --forget class:0 --method ga --method finetune
      qmu-qiskit evaluate --run runs/iris/unlearn/class-0/ga
    """


def backend_options(f):
    f = click.option(
        "--backend",
        default=None,
        help="aer (default), aer_noisy[:PROFILE], fake_<device> or ibm_<device>.",
    )(f)
    f = click.option(
        "--shots",
        type=int,
        default=None,
        help="Shots per circuit evaluation (default: exact values where the backend allows).",
    )(f)
    f = click.option(
        "--noise-scale",
        type=float,
        default=None,
        help="Multiply the device noise of aer_noisy (1 = the snapshot's noise, 0 = none).",
    )(f)
    f = click.option(
        "--engine",
        type=click.Choice(["exact", "aer"]),
        default=None,
        help="Simulator engine for aer and aer_noisy without --shots: exact (torch statevector / noisy density matrices, exact reverse-mode gradients) or aer (Aer + batched parameter shift).",
    )(f)
    f = click.option(
        "--device",
        type=click.Choice(["cpu", "cuda"]),
        default=None,
        help="Where simulators compute: cpu (default) or cuda (the torch engines on a CUDA device; Aer with device=GPU, which needs qiskit-aer-gpu).",
    )(f)
    f = click.option(
        "--optimization-level",
        type=click.IntRange(0, 3),
        default=None,
        help="Transpiler optimisation level (default 1).",
    )(f)
    f = click.option(
        "--resilience-level",
        type=click.IntRange(0, 2),
        default=None,
        help="IBM Runtime error-mitigation resilience level.",
    )(f)
    f = click.option(
        "--dynamical-decoupling",
        "dynamical_decoupling",
        is_flag=True,
        help="IBM Runtime dynamical decoupling.",
    )(f)
    f = click.option("--twirling", is_flag=True, help="IBM Runtime gate and measurement twirling.")(
        f
    )
    f = click.option(
        "--zne", is_flag=True, help="IBM Runtime zero-noise extrapolation (estimator)."
    )(f)
    f = click.option(
        "--max-time",
        type=click.IntRange(min=1),
        default=None,
        metavar="SECONDS",
        help="IBM Runtime session length; an expired session is reopened and the run resumes.",
    )(f)
    return f


def runtime_items(
    resilience_level=None,
    dynamical_decoupling=False,
    twirling=False,
    zne=False,
    max_time=None,
    device=None,
) -> dict:
    """The runtime options given on the command line (flags that are off are left out), and the
    execution setting ``device``."""
    out = {
        "device": device,
        "resilience_level": resilience_level,
        "max_time": max_time,
        "dynamical_decoupling": dynamical_decoupling or None,
        "twirling": twirling or None,
        "zne": zne or None,
    }
    return {k: v for k, v in out.items() if v is not None}


def _applicable_flags(backend: str | None, *, engine, noise_scale, shots):
    """Refuse backend flags given on the command line that ``backend`` would not apply, or,
    where harmless, warn and drop them (so that they are not recorded as applied).

    Returns:
        The ``noise_scale`` to record (``None`` when dropped).
    """
    from .backends import backend_kind

    name = backend or "aer"
    kind = backend_kind(name)
    if engine is not None and kind not in (None, "aer", "aer_noisy"):
        raise BadInputError(
            f"--engine {engine} does not apply to backend {name}: the engine chooses how aer "
            "and aer_noisy run; drop --engine"
        )
    if engine == "exact" and shots is not None and kind in ("aer", "aer_noisy"):
        raise BadInputError(
            "--engine exact computes exact values and takes no --shots (with --shots, circuits are "
            "sampled on Aer); drop one of them"
        )
    if noise_scale == 1.0 and kind not in (None, "aer_noisy"):
        click.echo(
            f"warning: --noise-scale 1 has no effect on backend {name} (only aer_noisy "
            "scales noise); ignored",
            err=True,
        )
        return None
    return noise_scale


def backend_dict(
    backend, shots, noise_scale, engine, optimization_level, runtime: dict | None = None
) -> dict:
    out = {
        "name": backend,
        "shots": shots,
        "noise_scale": noise_scale,
        "engine": engine,
        "optimization_level": optimization_level,
    }
    if runtime:
        out["runtime"] = runtime
    return {k: v for k, v in out.items() if v is not None}


@cli.command(context_settings=CONTEXT)
@dry_run_option("train")
@click.option(
    "--dataset",
    default="iris",
    show_default=True,
    help="iris, digits, mnist, fashion_mnist, covertype, a plugin's dataset, or your own PATH.csv / PATH.npz (arrays X, y, optional ids).",
)
@click.option("--target", default=None, help="CSV only: the label column.")
@click.option(
    "--id-column",
    default=None,
    help="CSV only: a column of integer record ids (what --forget indices:FILE names; default: row numbers).",
)
@click.option(
    "--model",
    default=None,
    help="hqml-shallow, hqml-deep, hqml-pca, hqml-conv, ... (default: the dataset's preset; see `qmu-qiskit models`).",
)
@click.option(
    "--circuit",
    default=None,
    help="Your QuantumCircuit: PATH.qpy or module:function; ParameterVector 'x' = inputs, every other parameter a trainable weight.",
)
@click.option(
    "--head",
    default=None,
    help="Head after a --circuit: linear (default) or mlp:H (Linear→ReLU→Linear, H hidden units).",
)
@click.option(
    "--input-params", default=None, help="Name of a --circuit's input ParameterVector (default x)."
)
@click.option(
    "--qubits",
    type=int,
    default=None,
    help="Qubits n of the circuit (default: the model's/dataset's).",
)
@click.option(
    "--layers", type=int, default=None, help="Variational layers L (default: the model's)."
)
@click.option(
    "--readout",
    type=click.Choice(["estimator", "sampler"]),
    default="estimator",
    show_default=True,
    help="EstimatorQNN ⟨Z⟩ per qubit, or SamplerQNN outcome probabilities.",
)
@backend_options
@click.option(
    "--epochs", type=int, default=None, help="Maximum epochs (default: the dataset's preset)."
)
@click.option(
    "--batch-size", type=int, default=None, help="Mini-batch size: one circuit job per mini-batch."
)
@click.option(
    "--lr",
    type=float,
    default=None,
    help="Learning rate of the optimizer (HQML Adam: 1e-2 Iris, 1e-3 MNIST; QMU SGD: 0.1).",
)
@click.option(
    "--patience", type=int, default=None, help="Early-stopping patience in epochs (0: off)."
)
@click.option(
    "--select",
    type=click.Choice(["val", "test", "last"]),
    default=None,
    help="Model selection: best validation accuracy (default), best test accuracy (HQML quirk) or last epoch.",
)
@click.option(
    "--optimizer",
    type=click.Choice(["adam", "sgd"]),
    default=None,
    help="adam (default; HQML) or sgd (QMU).",
)
@click.option("--momentum", type=float, default=None, help="SGD momentum (QMU: 0.9).")
@click.option(
    "--samples-per-class",
    type=int,
    default=None,
    help="Per-class subsample before splitting (MNIST default 200, Fashion 800).",
)
@click.option(
    "--test-size", type=float, default=None, help="Stratified test fraction (default 0.2)."
)
@click.option(
    "--val-size",
    type=float,
    default=None,
    help="Validation fraction of the training part (default 0.1).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder with MNIST/raw and FashionMNIST/raw IDX files (or set QMU_DATA_DIR).",
)
@click.option(
    "--download",
    is_flag=True,
    help="Download missing MNIST/Fashion files with torchvision (needs internet).",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=0,
    show_default=True,
    help="Seed of the split, the initial weights and the batch order.",
)
@click.option(
    "--protocol",
    type=click.Choice(["fixed", "hqml"]),
    default="fixed",
    show_default=True,
    help="fixed (validation-based selection) or hqml (HQML's faithful recipe).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory (default: runs/<dataset>-<model>-<backend>-s<seed>).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace a complete run in --out instead of refusing."
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option(
    "--track",
    type=click.Choice(["tensorboard", "mlflow"]),
    default=None,
    help="Also send the curves and final metrics to TensorBoard or MLflow (pip install 'qmu-qiskit[tracking]').",
)
@click.option(
    "--track-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="TensorBoard log folder or MLflow file store (default runs/tensorboard, runs/mlruns).",
)
def train(
    dataset,
    target,
    id_column,
    model,
    circuit,
    head,
    input_params,
    qubits,
    layers,
    readout,
    backend,
    shots,
    noise_scale,
    engine,
    device,
    optimization_level,
    resilience_level,
    dynamical_decoupling,
    twirling,
    zne,
    max_time,
    epochs,
    batch_size,
    lr,
    patience,
    select,
    optimizer,
    momentum,
    samples_per_class,
    test_size,
    val_size,
    data_dir,
    download,
    seed,
    protocol,
    out,
    overwrite,
    no_progress,
    track,
    track_dir,
):
    """Train a hybrid QNN classifier (the teacher) into a run directory.

    An interrupted training resumes from its last checkpoint when the same command is run again.
    """
    from . import pipeline
    from .config import resolve_run_config
    from .tracking import check_tracker

    check_tracker(track)
    noise_scale = _applicable_flags(backend, engine=engine, noise_scale=noise_scale, shots=shots)
    cfg = resolve_run_config(
        dataset=dataset,
        model=model,
        qubits=qubits,
        layers=layers,
        readout=readout,
        seed=seed,
        protocol=protocol,
        circuit=circuit,
        head=head,
        input_params=input_params,
        data={
            "data_dir": data_dir,
            "samples_per_class": samples_per_class,
            "test_size": test_size,
            "val_size": val_size,
            "download": download or None,
            "target": target,
            "id_column": id_column,
        },
        training={
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "patience": patience,
            "select": select,
            "optimizer": optimizer,
            "momentum": momentum,
        },
        backend=backend_dict(
            backend,
            shots,
            noise_scale,
            engine,
            optimization_level,
            runtime_items(resilience_level, dynamical_decoupling, twirling, zne, max_time, device),
        ),
    )
    n = cfg.data.n_features
    if qubits is not None and cfg.data.dataset == "iris" and n is not None and n < 4:
        # applied and recorded (data.n_features), but not what "qubits" alone suggests: say so
        click.echo(
            f"note: iris has 4 features; with --qubits {qubits} the model sees their first "
            f"{n} principal components (PCA, recorded as data.n_features={n})",
            err=True,
        )
    if out is None:
        slug = cfg.backend.name.replace(":", "-")
        out = Path("runs") / f"{cfg.data.dataset}-{cfg.model.name}-{slug}-s{seed}"
    summary = pipeline.train(cfg, out, overwrite=overwrite, progress=not no_progress)
    m = summary.metrics
    if summary.reused:
        click.echo(
            f"{summary.path} already holds this run, complete (use --overwrite to train it again)"
        )
    click.echo(
        f"trained {cfg.model.name} on {cfg.data.dataset} ({cfg.backend.name}): "
        f"train {_fmt(m['acc_train'])}  val {_fmt(m['acc_val'])}  test {_fmt(m['acc_test'])}  "
        f"best epoch {m['best_epoch']}/{m['epochs_run']}"
    )
    prof = (m.get("execution") or {}).get("backend", {}).get("profile")
    if prof:
        click.echo(
            f"emulated device: {prof.get('device') or prof.get('name')} (snapshot {prof.get('snapshot_date')}, {prof.get('source')})"
        )
    click.echo(f"run directory: {summary.path}")
    if track:
        from .tracking import track_run

        click.echo(f"tracked ({track}): {track_run(summary.path, track, where=track_dir)}")


def parse_options(items: tuple[str, ...], methods: list[str]) -> dict[str, dict]:
    """``--option METHOD.KEY=VALUE`` (one method) or ``KEY=VALUE`` (every method given)."""
    out: dict[str, dict] = {}
    for item in items:
        if "=" not in item:
            raise BadInputError(f"--option {item!r} must look like KEY=VALUE or METHOD.KEY=VALUE")
        key, value = item.split("=", 1)
        key = key.strip()
        if "." in key:
            method, name = key.split(".", 1)
            out.setdefault(method, {})[name] = value
        else:
            for method in methods:
                out.setdefault(method, {})[key] = value
    return out


@cli.command(context_settings=CONTEXT)
@dry_run_option("unlearn")
@click.option(
    "--run",
    "run_path",
    required=True,
    type=click.Path(file_okay=False),
    help="The teacher's run directory (from `qmu-qiskit train`).",
)
@click.option(
    "--forget",
    required=True,
    help="class:K, subset:F (e.g. subset:0.02) or indices:FILE (record ids: row numbers, or the --id-column values of a CSV run).",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    required=True,
    help="Unlearning method (repeatable); see `qmu-qiskit methods`. The retrain oracle always runs too.",
)
@click.option(
    "--option",
    "option_items",
    multiple=True,
    help="Method option METHOD.KEY=VALUE, or KEY=VALUE for every --method (repeatable).",
)
@backend_options
@click.option(
    "--oracle-backend",
    default=None,
    help="Backend of the retrain oracle (default: the teacher's); another backend gets its own folder retrain-<backend>.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=None,
    help="Seed of the methods and the oracle (default: the teacher's).",
)
@click.option(
    "--oracle-seed",
    type=click.IntRange(0, 2**32 - 1),
    default=None,
    help="Seed of the retrain oracle (default: --seed); another seed gets its own folder retrain-s<seed>.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of the oracle and method runs (default: <run>/unlearn/<forget>).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Recompute the methods, and replace any run (the oracle included) made from another config.",
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option(
    "--no-plots", is_flag=True, help="Do not draw the forget folder's plots (plots/*.png)."
)
@click.option(
    "--track",
    type=click.Choice(["tensorboard", "mlflow"]),
    default=None,
    help="Also send the curves and final metrics to TensorBoard or MLflow (pip install 'qmu-qiskit[tracking]').",
)
@click.option(
    "--track-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="TensorBoard log folder or MLflow file store (default runs/tensorboard, runs/mlruns).",
)
def unlearn(
    run_path,
    forget,
    methods,
    option_items,
    backend,
    shots,
    noise_scale,
    engine,
    device,
    optimization_level,
    resilience_level,
    dynamical_decoupling,
    twirling,
    zne,
    max_time,
    oracle_backend,
    seed,
    oracle_seed,
    out,
    overwrite,
    no_progress,
    track,
    track_dir,
    no_plots,
):
    """Unlearn a class, a fraction or a list of records with one or more methods, always next to
    the retrain oracle, and print the audit table."""
    from . import pipeline
    from .tracking import check_tracker

    check_tracker(track)
    methods = list(dict.fromkeys(methods))
    options = parse_options(option_items, [m for m in methods if m != "retrain"])
    teacher_backend = pipeline.teacher_backend(run_path)
    noise_scale = _applicable_flags(
        backend or teacher_backend.get("name"), engine=engine, noise_scale=noise_scale, shots=shots
    )
    over = backend_dict(
        backend,
        shots,
        noise_scale,
        engine,
        optimization_level,
        runtime_items(resilience_level, dynamical_decoupling, twirling, zne, max_time, device),
    )
    backend_cfg, oracle_cfg = pipeline.unlearn_backends(teacher_backend, over, oracle_backend)
    summaries = pipeline.unlearn(
        run_path,
        forget,
        methods,
        backend=backend_cfg,
        oracle_backend=oracle_cfg,
        options=options,
        seed=seed,
        progress=not no_progress,
        overwrite=overwrite,
        oracle_seed=oracle_seed,
        out=out,
    )
    show_unlearn_table(summaries, forget, plots=not no_plots)
    if track:
        from .tracking import track_run

        where = [track_run(s.path, track, where=track_dir) for s in summaries]
        click.echo(f"tracked ({track}): {where[-1]}")


def show_unlearn_table(summaries, forget: str, *, plots: bool = False) -> None:
    """Print the audit table of this call and save the forget folder's (every complete method
    there) as audit.csv and audit.md."""
    from .evaluation.tables import AUDIT_COLUMNS, method_row, teacher_row, write_audit

    rows = [teacher_row(summaries[0].metrics)]
    for s in summaries:
        rows.append(
            method_row(s.method + (" (oracle)" if s.method == "retrain" else ""), s.metrics, s.cost)
        )
    print_table(
        rows,
        AUDIT_COLUMNS,
        title=f"forget {forget}: accuracies of each model; drops, UQI, KL/agreement vs the retrain "
        "oracle; MIA_AUC (0.5 = members look unseen); SalUn's UA = 1 − acc_forget, RA, TA, "
        "MIA-Efficacy",
    )
    folder = summaries[0].path.parent
    csv_path, md_path = write_audit(folder, title=f"forget {forget}")
    click.echo(f"results: {folder}")
    click.echo(f"audit table: {csv_path}, {md_path}")
    if plots:
        from .plots import forget_folder_plots

        drawn = forget_folder_plots(folder, title=f"forget {forget}")
        if drawn:
            click.echo(f"plots: {drawn[0].parent} ({', '.join(p.name for p in drawn)})")


@cli.command(context_settings=CONTEXT)
@click.option(
    "--run",
    "run_path",
    required=True,
    type=click.Path(file_okay=False),
    help="A train run, or an unlearning run (<run>/unlearn/<forget>/<method>).",
)
@click.option(
    "--mia-nonmembers",
    type=click.Choice(["heldout", "retain"]),
    default="heldout",
    show_default=True,
    help="MIA non-members: held-out data (default) or HQML's retain subset.",
)
@click.option(
    "--metric",
    "extra_metrics",
    multiple=True,
    help="Also compute this metric (repeatable; see `qmu-qiskit metrics`, plugins included).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the run's metrics.json (the old one is kept under evaluations/) instead of writing a new version.",
)
def evaluate(run_path, mia_nonmembers, extra_metrics, overwrite):
    """Recompute a run's metrics from its saved per-sample outputs (no circuits run).

    The numbers of an unlearning run go to a new version, <run>/evaluations/<NNN>-<settings>/
    metrics.json, with the settings that produced them; the run's metrics.json is kept unless
    --overwrite is given.
    """
    from . import pipeline
    from .evaluation.metrics import MetricContext

    seed = pipeline.run_seed(run_path)
    kwargs = {"metrics": list(extra_metrics)} if extra_metrics else {}
    metrics = pipeline.evaluate(
        run_path,
        overwrite=overwrite,
        metric_ctx=MetricContext(seed=seed, mia_nonmembers=mia_nonmembers),
        **kwargs,
    )
    keys = [
        k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    for k in keys:
        click.echo(f"{k:>22}  {_fmt(metrics[k], 4)}")
    where = pipeline.metrics_path(run_path, metrics)
    if "evaluation" in metrics:
        click.echo(
            f"settings: MIA non-members {metrics['evaluation']['mia_nonmembers']}, "
            f"seed {metrics['evaluation']['seed']}"
        )
    click.echo(f"metrics: {where}")


@cli.command(context_settings=CONTEXT)
def methods():
    """List the unlearning methods and their options."""
    from .unlearning.base import METHODS, available_methods

    for name in available_methods():
        info = METHODS[name]
        origin = METHODS.origin(name)
        plugin = f" (plugin: {origin})" if origin != "qmu-qiskit" else ""
        click.echo(f"{name}: {info.summary}  [{info.source}]{plugin}")
        for opt_name, opt in info.options.items():
            default = "dataset-dependent" if callable(opt.default) else repr(opt.default)
            click.echo(f"    {opt_name} ({opt.type.__name__}, default {default}): {opt.help}")


@cli.command(context_settings=CONTEXT)
def models():
    """List the hybrid models."""
    from .models.hybrid import MODELS

    for name, info in sorted(MODELS.items()):
        origin = MODELS.origin(name)
        plugin = f" (plugin: {origin})" if origin != "qmu-qiskit" else ""
        click.echo(f"{name}: input {info.input_kind}; {info.source}{plugin}")


@cli.command(context_settings=CONTEXT)
def metrics():
    """List the audit metrics (`evaluate --metric NAME`, job specs' metrics.extra)."""
    from .evaluation.metrics import DEFAULT_METRICS, METRICS

    for name in METRICS.names():
        origin = METRICS.origin(name)
        plugin = f" (plugin: {origin})" if origin != "qmu-qiskit" else ""
        default = " [default]" if name in DEFAULT_METRICS else ""
        doc = " ".join((METRICS[name].__doc__ or "").strip().split("\n\n")[0].split())
        click.echo(f"{name}{default}: {doc}{plugin}")


@cli.command(context_settings=CONTEXT)
def datasets():
    """List the datasets (built-in and plugins); your own files need no entry (--dataset PATH.csv)."""
    from .data.sources import DATASETS

    for name in DATASETS.names():
        info = DATASETS[name]
        origin = DATASETS.origin(name)
        plugin = f" (plugin: {origin})" if origin != "qmu-qiskit" else ""
        click.echo(f"{name}: {info.num_classes} classes; {info.source}{plugin}")


@cli.command(context_settings=CONTEXT)
def backends():
    """List the backend names this installation understands."""
    from .backends.profiles import list_profiles

    click.echo("aer                    noiseless, exact expectation values (engine exact or aer)")
    click.echo(
        "aer_noisy[:PROFILE]    a device snapshot's target and noise model (default ibm_brisbane): exact "
        "density matrices (engine exact or aer) or --shots"
    )
    for p in list_profiles():
        click.echo(f"    profile {p}")
    click.echo(
        "fake_<device>          qiskit-ibm-runtime local testing mode (offline), e.g. fake_brisbane"
    )
    click.echo(
        "ibm_<device>           IBM Quantum hardware (account from saved credentials or QISKIT_IBM_TOKEN)"
    )


# ---------------------------------------------------------------------------------------------


def _stop_on_signal(signum, frame) -> None:
    """SIGTERM/SIGHUP (a closed terminal, ``kill``, a batch system's stop) end the command like
    Ctrl-C: the run is marked ``failed: interrupted`` and resumes with the same command."""
    import signal

    # one signal is enough: a second one while the run is being marked must not cut that short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise KeyboardInterrupt(f"interrupted ({signal.Signals(signum).name})")


def main(argv=None) -> None:
    """Entry point: one-line errors, non-zero exits, no tracebacks (unless QMU_DEBUG=1)."""
    import signal
    import threading

    debug = os.environ.get("QMU_DEBUG") == "1"
    from .logs import console

    console()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _stop_on_signal)
    from .registry import one_line_plugin_warnings

    one_line_plugin_warnings()
    try:
        cli.main(args=argv, prog_name="qmu-qiskit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # click's form of Ctrl-C, SIGTERM and SIGHUP
        click.echo(
            "error: interrupted; run the same command again to resume from the last checkpoint",
            err=True,
        )
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        cmd = f" {ctx.command_path}" if ctx is not None else ""
        msg = " ".join(exc.format_message().split())
        click.echo(f"error: {msg}; see{cmd or ' qmu-qiskit'} --help", err=True)
        sys.exit(2)
    except QmuError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo(
            "error: interrupted; run the same command again to resume from the last checkpoint",
            err=True,
        )
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        from .io import as_storage_error

        storage = as_storage_error(exc)  # a full or read-only disk, wherever the write was
        if storage is not None:
            click.echo(f"error: {storage}", err=True)
            sys.exit(storage.exit_code)
        text = " ".join(str(exc).split())[:300]
        click.echo(
            f"error: unexpected {type(exc).__name__}: {text} (rerun with QMU_DEBUG=1 for details "
            "and report it)",
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
