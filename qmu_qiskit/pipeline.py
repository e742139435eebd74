"""The Python API behind the CLI: train a teacher, unlearn with methods next to the retrain
oracle, and evaluate — each run a directory (:mod:`qmu_qiskit.runs`).

Everything that can be checked before a circuit runs is checked first (backend name, data files,
model width, forget request, method names and options), so bad input fails fast and leaves no run
directory behind.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import BackendConfig, RunConfig, prefit_possible
from .data import DataBundle, load_data, resolve_forget
from .evaluation.metrics import MetricContext, compute_metrics
from .evaluation.outputs import Outputs, collect_outputs
from .evaluation.versions import settings_of, write_version
from .exceptions import BackendError, BadInputError, DataError, QmuError, RunError
from .io import atomic_torch_save, atomic_write_json
from .logs import run_log
from .models.hybrid import HybridModel, ModelSpec, build_model, count_parameters
from .runs import (
    CHECKPOINTS_DIR,
    COST_FILE,
    METHOD_CHECKPOINT,
    METRICS_FILE,
    MODEL_FILE,
    OUTPUTS_FILE,
    PREFIT_DONE,
    STATUS_FILE,
    RunDir,
    failure_reason,
    is_scratch,
)
from .training import Trainer, accuracy, load_state

logger = logging.getLogger(__name__)


def versions() -> dict:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in (
        "qmu-qiskit",
        "qiskit",
        "qiskit-aer",
        "qiskit-ibm-runtime",
        "qiskit-machine-learning",
        "torch",
    ):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def make_executor(
    backend: BackendConfig,
    *,
    seed: int,
    run: RunDir | None = None,
    spec=None,
    ledger: str | Path | None = None,
    run_id: str | None = None,
):
    """The executor for a run: its ledger lives in the run directory, its jobs carry the run id
    (``ledger`` / ``run_id`` instead, for work that is not a run: evaluations on other backends).
    ``spec``: the backend already parsed (:class:`~qmu_qiskit.backends.BackendSpec`)."""
    from .execution.executor import Executor

    runtime = dict(backend.runtime)
    return Executor(
        spec or backend.name,
        shots=backend.shots,
        noise_scale=backend.noise_scale,
        engine=backend.engine,
        seed=seed,
        optimization_level=backend.optimization_level,
        seed_transpiler=backend.seed_transpiler,
        ledger=run.ledger_path if run is not None else ledger,
        run_id=run.run_id() if run is not None else run_id,
        runtime_options=runtime,
    )


def evaluate_on(
    run: str | Path | RunDir,
    executor,
    X,
    *,
    cfg: RunConfig | None = None,
    bundle: DataBundle | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Logits of a saved run's model (``model.pt``) for the rows ``X``, evaluated with another
    backend's executor (:func:`make_executor`; share one across models so transpiled circuits
    are reused).

    Args:
        run: the run directory (a teacher, or an unlearning run of it).
        executor: where the circuits run.
        X: the input rows.
        cfg, bundle: the model's config and data (default: the run's own; an unlearning run
            passes its teacher's).
    """
    from .training import predict_logits

    run = run if isinstance(run, RunDir) else RunDir(run)
    if cfg is None or bundle is None:
        teacher = TeacherRun.load(run.path)
        cfg, bundle = cfg or teacher.cfg, bundle or teacher.bundle
    model = build_model(
        model_spec(cfg, bundle), num_classes=bundle.num_classes, executor=executor, seed=cfg.seed
    )
    weights = run.path / MODEL_FILE
    load_state(model, load_checkpoint_weights(weights), source=str(weights))
    model.eval()
    return predict_logits(model, X, batch_size=batch_size)


def check_backend(backend: BackendConfig, qubits: int):
    """Parse the backend name and check the circuit fits on the device (before any run dir)."""
    from .backends import parse_backend

    spec = parse_backend(backend.name)
    if spec.kind in ("aer_noisy", "fake"):
        device = spec.device_backend()
        if qubits > device.num_qubits:
            raise BackendError(
                f"the model needs {qubits} qubits but {spec.name} has {device.num_qubits}; "
                "choose a larger device or --qubits"
            )
    if spec.kind == "ibm":
        from .backends.runtime import check_ibm_backend

        check_ibm_backend(spec, qubits)
    return spec


def inherited_backend(base: dict, name: str) -> dict:
    """The teacher's backend settings (``base``) that backend ``name`` applies (inherited, not
    given: the others are left out instead of refused)."""
    from .backends import RUNTIME_OPTIONS, backend_kind

    kind = backend_kind(name)
    out = {**base, "name": name}
    if kind != "aer_noisy":
        out.pop("noise_scale", None)
    if kind != "aer":
        out.pop("engine", None)
    if kind in ("aer", "aer_noisy"):
        out["runtime"] = {
            k: v for k, v in (out.get("runtime") or {}).items() if k not in RUNTIME_OPTIONS
        }
    return out


def teacher_backend(run: str | Path) -> dict:
    """The backend settings a finished teacher run was trained with (its stored config).

    Raises:
        RunError: not a complete run.
    """
    teacher = RunDir(run)
    teacher.require_complete(what="trained run")
    return dict(teacher.config().get("backend", {}))


def unlearn_backends(
    base: dict, over: dict, oracle_backend: str | None = None
) -> tuple[BackendConfig | None, BackendConfig | None]:
    """The backends of an unlearning call: the teacher's settings ``base`` with the settings
    given (``over``: only what was given; on another backend the teacher's are not inherited;
    runtime options merge), and the oracle's backend ``oracle_backend`` with the teacher's
    settings that it applies. ``None``: the teacher's backend, unchanged."""
    backend_cfg = None
    if over:
        name = over.get("name")
        merged = dict(base) if (name is None or name == base.get("name")) else {}
        over = dict(over)
        if "runtime" in over:
            over["runtime"] = {**merged.get("runtime", {}), **over["runtime"]}
        merged.update(over)
        backend_cfg = BackendConfig(**merged)
    oracle_cfg = (
        BackendConfig(**inherited_backend(base, oracle_backend)) if oracle_backend else None
    )
    return backend_cfg, oracle_cfg


def run_seed(run: str | Path) -> int:
    """The seed a complete run recorded in its config.

    Raises:
        RunError: not a complete run.
    """
    run_dir = RunDir(run)
    run_dir.require_complete(what="run")
    return int(run_dir.config().get("seed", 0))


def metrics_path(run: str | Path, metrics: dict) -> Path:
    """Where :func:`evaluate` wrote ``metrics`` (a versioned evaluation, or the run's own)."""
    where = (metrics.get("evaluation") or {}).get("path")
    return Path(where) if where else Path(run) / METRICS_FILE


def model_spec(
    cfg: RunConfig, bundle: DataBundle | None = None, run: RunDir | None = None
) -> ModelSpec:
    """The model to build; ``run``: the directory holding a ``circuit`` model's QPY copy."""
    side = 28
    if bundle is not None and bundle.input_kind == "image":
        side = int(bundle.input_shape[-1])
    return ModelSpec(
        name=cfg.model.name,
        qubits=cfg.model.n_qubits,
        layers=cfg.model.n_layers,
        readout=cfg.model.readout,
        image_side=side,
        circuit=cfg.model.circuit,
        circuit_sha256=cfg.model.circuit_sha256,
        head=cfg.model.head,
        input_params=cfg.model.input_params,
        circuit_dir=str(run.path) if run is not None else None,
    )


@dataclass
class TrainSummary:
    path: Path
    metrics: dict
    resumed: bool = False
    reused: bool = False


def train(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainSummary:
    """Train a teacher into the run directory ``out`` (resuming it if interrupted).

    Raises:
        QmuError: bad backend, data, model or run directory (before anything is written), or a
            job failure during training (the run is then marked failed and can be resumed).
    """
    spec = check_backend(cfg.backend, cfg.model.n_qubits)
    bundle = load_data(cfg.data)
    excluded = (
        resolve_forget(cfg.exclude_forget, bundle, seed=cfg.data.seed)
        if cfg.exclude_forget
        else None
    )
    run = RunDir(out)
    config = cfg.model_dump(mode="json")
    fingerprint = cfg.fingerprint()
    if (
        run.path.exists()
        and not (run.path / STATUS_FILE).exists()
        and any(not is_scratch(p) for p in run.path.iterdir())
    ):
        run.prepare(config, fingerprint=fingerprint)  # refuses a folder that is not a run
    if not overwrite and run.path.is_dir() and (run.path / STATUS_FILE).exists():
        with run.lock(shared=True):  # while unlearn/evaluate use this teacher, it is reusable
            if run.is_complete() and (run.status() or {}).get("fingerprint") == fingerprint:
                # The same command after it finished (or after a kill that landed just after the
                # last write): the run is already there; nothing is recomputed or overwritten.
                return TrainSummary(path=run.path, metrics=run.read_metrics(), reused=True)
    with run.lock():
        status = run.status() or {}
        if not overwrite and run.is_complete() and status.get("fingerprint") == fingerprint:
            return TrainSummary(path=run.path, metrics=run.read_metrics(), reused=True)
        resumed = run.prepare(config, fingerprint=fingerprint, overwrite=overwrite)
        run.start(
            config,
            fingerprint=fingerprint,
            extra={"kind": "train", "data_fingerprint": bundle.fingerprint, "versions": versions()},
        )
        with run_log(run.path):
            logger.info(
                "train %s on %s, backend %s, seed %d%s (config %s)",
                cfg.model.name,
                cfg.data.dataset,
                cfg.backend.name,
                cfg.seed,
                ", resuming" if resumed else "",
                fingerprint,
            )
            try:
                metrics = _train_locked(
                    cfg, run, bundle, spec, progress=progress, excluded=excluded
                )
            except BaseException as exc:
                run.fail(failure_reason(exc))
                logger.error("failed: %s: %s", type(exc).__name__, exc)
                raise
            logger.info(
                "complete: acc_train %s, acc_val %s, acc_test %s, best epoch %s/%s",
                *(_num(metrics.get(k)) for k in ("acc_train", "acc_val", "acc_test")),
                metrics.get("best_epoch"),
                metrics.get("epochs_run"),
            )
    return TrainSummary(path=run.path, metrics=metrics, resumed=resumed)


def _num(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _train_locked(
    cfg: RunConfig, run: RunDir, bundle: DataBundle, spec, *, progress: bool, excluded=None
) -> dict:
    executor = make_executor(cfg.backend, seed=cfg.seed, run=run, spec=spec)
    try:
        model = build_model(
            model_spec(cfg, bundle),
            num_classes=bundle.num_classes,
            executor=executor,
            seed=cfg.seed,
        )
        if cfg.model.circuit is not None:  # the run keeps its circuit: unlearn/evaluate rebuild it
            from .models.circuit import CIRCUIT_FILE, load_circuit, save_circuit

            save_circuit(
                load_circuit(cfg.model.circuit, sha256=cfg.model.circuit_sha256),
                run.path / CIRCUIT_FILE,
            )
        train_xy = (bundle.X["train"], bundle.y["train"])
        if excluded is not None:  # HQML's Iris teacher never saw the subset forget samples
            train_xy = (train_xy[0][excluded.retain_idx], train_xy[1][excluded.retain_idx])
        val_xy = (bundle.X["val"], bundle.y["val"])
        test_xy = (bundle.X["test"], bundle.y["test"])
        with executor.cost.measure() as phase:
            fit = Trainer(
                model,
                cfg.training,
                seed=cfg.seed,
                checkpoint=run.checkpoints / "last.pt",
                fingerprint=cfg.fingerprint(),
                progress=progress,
                desc=f"train {cfg.data.dataset}",
                on_checkpoint=_pruner(executor, run),
            ).fit(train_xy, val_xy, test_xy)
            outputs = collect_outputs(model, bundle)
        outputs.save(run.path / OUTPUTS_FILE)
        atomic_torch_save(run.path / MODEL_FILE, model.state_dict())
        metrics = {
            "seed": cfg.seed,
            "config_fingerprint": cfg.fingerprint(),
            "data_fingerprint": bundle.fingerprint,
            "best_epoch": fit.best_epoch,
            "epochs_run": fit.epochs_run,
            "resumed_from_epoch": fit.resumed_from,
            "parameters": count_parameters(model),
            "sizes": bundle.sizes,
            "execution": executor.describe(),
        }
        if excluded is not None:
            metrics["excluded"] = {"forget": excluded.spec, "size": excluded.size}
        for split in ("train", "val", "test"):
            m = outputs.mask(split)
            metrics[f"acc_{split}"] = (
                accuracy(outputs.logits[m], outputs.labels[m]) if m.any() else None
            )
        metrics["history"] = fit.history
        atomic_write_json(run.path / METRICS_FILE, metrics)
        atomic_write_json(run.path / COST_FILE, {"train": phase.record.to_dict()})
        run.finish(extra={"acc_test": metrics["acc_test"]})
        return metrics
    finally:
        executor.close()


def _pruner(executor, run: RunDir):
    """After a checkpoint, stored results of the jobs before it are redundant: drop them."""
    if executor.ledger is None:
        return None
    run_id = executor.run_id

    def prune(before: float) -> None:
        executor.ledger.prune_results(run_id, before=before)

    return prune


# ---------------------------------------------------------------------------------------------
# unlearning


@dataclass
class TeacherRun:
    """A finished teacher run, loaded and checked."""

    run: RunDir
    cfg: RunConfig
    bundle: DataBundle
    outputs: Outputs

    @classmethod
    def load(cls, path: str | Path) -> TeacherRun:
        run = RunDir(path)
        run.require_complete(what="trained run")
        raw = run.config()
        if raw.get("kind") != "train":
            raise RunError(
                f"{run.path} is not a training run (it is a {raw.get('kind')!r} run); pass the "
                "teacher's run directory to --run"
            )
        try:
            cfg = RunConfig(**raw)
        except BadInputError as exc:
            raise RunError(
                f"{run.path}/config.yaml is from an incompatible version ({exc}); train that "
                "teacher again with this version (`qmu-qiskit train --out` a new directory)"
            ) from exc
        run.check_fingerprint(cfg.fingerprint())
        check_teacher_metrics(run)
        bundle = load_data(cfg.data)
        status = run.status() or {}
        if status.get("data_fingerprint") and status["data_fingerprint"] != bundle.fingerprint:
            raise DataError(
                f"the data loaded now differs from the data run {run.path} was trained on (other "
                "files or library versions); point --data-dir at the original files"
            )
        outputs = Outputs.load(run.path / OUTPUTS_FILE)
        return cls(run=run, cfg=cfg, bundle=bundle, outputs=outputs)

    def model(self, executor) -> HybridModel:
        model = build_model(
            model_spec(self.cfg, self.bundle, self.run),
            num_classes=self.bundle.num_classes,
            executor=executor,
            seed=self.cfg.seed,
        )
        path = self.run.path / MODEL_FILE
        state = load_checkpoint_weights(path)
        load_state(model, state, source=f"{path}")
        return model


def check_teacher_metrics(run: RunDir) -> dict:
    """The teacher's ``metrics.json``, checked before any unlearning work starts (the audit table
    and the metrics read it at the end)."""
    metrics = run.read_metrics()
    for key in ("acc_train", "acc_test"):
        v = metrics.get(key)
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if v is not None and not (number and 0 <= v <= 1):
            raise RunError(
                f"{run.path}/metrics.json is corrupt ({key} is not an accuracy); train that "
                "teacher again (`qmu-qiskit train --overwrite` with its options)"
            )
    return metrics


def teacher_digest(run: RunDir) -> str:
    """Content hash of a teacher's weights and outputs: unlearn runs record it, and are refused
    against a teacher that no longer has it (retrained or replaced)."""
    import hashlib

    h = hashlib.sha256()
    for name in (MODEL_FILE, OUTPUTS_FILE):
        with open(run.path / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def check_teacher_of(run: RunDir, teacher: RunDir, raw: dict) -> None:
    """Refuse an unlearn run whose recorded teacher is not ``teacher`` as it is now."""
    recorded = (run.status() or {}).get("teacher_digest")
    problem = None
    if recorded is not None and recorded != teacher_digest(teacher):
        problem = "its weights/outputs changed"
    if problem is None and raw.get("teacher_fingerprint") is not None:
        try:
            fp = RunConfig(**teacher.config()).fingerprint()
        except BadInputError:
            fp = None
        if fp != raw["teacher_fingerprint"]:
            problem = "its config differs"
    if problem is not None:
        raise RunError(
            f"the teacher at {teacher.path} is not the one {run.path} was unlearned from "
            f"({problem} since); evaluate that run next to its original teacher, or run "
            "`qmu-qiskit unlearn --overwrite` to recompute it from this teacher"
        )


def _teacher_shared(fn):
    """Run ``fn(run_path, ...)`` holding the teacher's shared lock: ``train --overwrite`` (or any
    writer) on the teacher is refused while the unlearning depends on it."""

    @functools.wraps(fn)
    def wrapper(run_path, *args, **kwargs):
        teacher = RunDir(run_path)
        teacher.require_complete(what="trained run")
        with teacher.lock(shared=True):
            return fn(run_path, *args, **kwargs)

    return wrapper


def load_checkpoint_weights(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from .exceptions import CheckpointError

        raise CheckpointError(
            f"model weights {path} are corrupt or not a qmu-qiskit checkpoint "
            f"({type(exc).__name__}); retrain that run (delete it and run `qmu-qiskit train` again)"
        ) from exc
    if not isinstance(state, dict):
        from .exceptions import CheckpointError

        raise CheckpointError(f"{path} does not hold model weights; retrain that run")
    return state


@dataclass
class UnlearnSummary:
    method: str
    path: Path
    metrics: dict
    cost: dict
    info: dict = field(default_factory=dict)


@_teacher_shared
def unlearn(
    run_path: str | Path,
    forget: str,
    methods: list[str],
    *,
    backend: BackendConfig | None = None,
    oracle_backend: BackendConfig | None = None,
    options: dict[str, dict] | None = None,
    seed: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    metric_ctx: MetricContext | None = None,
    labels: dict[str, str] | None = None,
    oracle: bool = True,
    oracle_seed: int | None = None,
    out: str | Path | None = None,
    prefit: str | Path | None = None,
) -> list[UnlearnSummary]:
    """Unlearn ``forget`` from the teacher at ``run_path`` with each method, next to the oracle.

    The retrain oracle (``retrain``) is always computed first (or reused when it exists) on the
    teacher's backend unless ``oracle_backend`` says otherwise; each method then runs on
    ``backend`` (default: the teacher's). Results go to ``<run>/unlearn/<forget-slug>/<method>``,
    or ``<run>/unlearn/<forget-slug>/<labels[method]>`` where ``labels`` names a method's
    directory (so one method can run under several option sets, e.g. DG-QMU's uniform target).
    ``oracle=False`` skips the retrain oracle (its metrics are then absent).

    The oracle's seed is ``oracle_seed`` (default: ``seed``). An oracle on the teacher's backend
    and seed lives in ``retrain/``; any other one in a folder named by what distinguishes it
    (``retrain-<backend>-s<seed>``), so several oracles of one forget request coexist. ``out``
    replaces ``<run>/unlearn/<forget-slug>`` as the folder of the oracle and the methods.
    ``prefit``: the run directory of :func:`prefit_oracle` for this oracle; its finished fit is
    used (checked by fingerprint) instead of fitting again.
    ``overwrite`` recomputes the methods and replaces whatever the command would write that holds
    another config (the oracle included); a complete oracle of the same config is reused, since
    the same seed gives the same numbers.

    Raises:
        QmuError: before any circuit runs for an unknown method or option, an impossible forget
            request, a missing or incomplete teacher run, or a bad backend.
    """
    from .unlearning.base import RecipeInfo, get_method, resolve_options

    teacher = TeacherRun.load(run_path)
    cfg = teacher.cfg
    seed = cfg.seed if seed is None else int(seed)
    oracle_seed = seed if oracle_seed is None else int(oracle_seed)
    from .config import check_seed

    check_seed(seed, "--seed")
    check_seed(oracle_seed, "--oracle-seed")
    backend = backend or cfg.backend
    oracle_backend = oracle_backend or cfg.backend
    options = dict(options or {})
    recipe = RecipeInfo.from_config(cfg)
    # oracle=False (mia-compare, which audits the methods only): no retrain run, no oracle metrics
    wanted = (["retrain"] if oracle else []) + [m for m in methods if m != "retrain"]
    labels = dict(labels or {})
    for m, label in labels.items():
        if m not in wanted or m == "retrain":
            raise BadInputError(
                f"a directory label is given for method {m!r}, which is not being run (or is the oracle)"
            )
        if (
            not label
            or label == "retrain"
            or not all(c.isalnum() or c in "-_." for c in label)
            or label.startswith(".")
        ):
            raise BadInputError(
                f"label {label!r} of method {m} must be a plain name (letters, digits, - _ .), not 'retrain'"
            )
    for m in options:
        if m not in wanted:
            raise BadInputError(
                f"options given for method {m!r}, which is not being run; add --method {m}"
            )
    resolved = {m: resolve_options(m, options.get(m), recipe) for m in wanted}
    infos = {m: get_method(m) for m in wanted}
    spec = check_backend(backend, cfg.model.n_qubits)
    oracle_spec = check_backend(oracle_backend, cfg.model.n_qubits)
    fset = resolve_forget(forget, teacher.bundle, seed=cfg.data.seed)
    for m in wanted:
        infos[m].check_request(fset.kind)
    root = Path(out) if out is not None else teacher.run.path / "unlearn" / fset.slug
    oracle_dir = oracle_folder(cfg, oracle_backend, oracle_seed)
    summaries = []
    oracle_outputs = None
    for method in wanted:
        use_backend, use_spec = (
            (oracle_backend, oracle_spec) if method == "retrain" else (backend, spec)
        )
        use_seed, path = seed, root / labels.get(method, method)
        replace = overwrite
        if method == "retrain":
            use_seed, path = oracle_seed, root / oracle_dir
            same = _fingerprint(
                unlearn_config(teacher, fset, method, resolved[method], use_backend, use_seed)
            )
            existing = RunDir(path)
            replace = overwrite and not (
                existing.is_complete() and (existing.status() or {}).get("fingerprint") == same
            )
        summary = _unlearn_one(
            teacher,
            fset,
            method,
            infos[method],
            resolved[method],
            path,
            backend=use_backend,
            spec=use_spec,
            seed=use_seed,
            progress=progress,
            overwrite=replace,
            oracle_outputs=oracle_outputs,
            metric_ctx=metric_ctx or MetricContext(seed=seed),
            oracle_dir=oracle_dir,
            prefit=Path(prefit) if prefit is not None and method == "retrain" else None,
        )
        if method == "retrain":
            oracle_outputs = Outputs.load(summary.path / OUTPUTS_FILE)
        summaries.append(summary)
    return summaries


def _on_runtime(executor) -> bool:
    """Whether ``executor`` runs on the IBM Runtime path (a device, fake_* local testing or a
    dry run), where every job is submitted, ledgered and estimated (the runner's ``kind``)."""
    return getattr(getattr(executor, "runner", None), "kind", None) == "runtime"


def oracle_folder(cfg: RunConfig, backend: BackendConfig, seed: int) -> str:
    """The oracle's folder name: ``retrain`` on the teacher's backend and seed, else named by
    what differs (``retrain-aer_noisy-ibm_fez-s3``; a hash when only backend settings differ)."""
    import hashlib
    import json
    import re

    parts = []
    mine, teachers = backend.model_dump(mode="json"), cfg.backend.model_dump(mode="json")
    if mine != teachers:
        parts.append(re.sub(r"[^A-Za-z0-9_.-]+", "-", backend.name))
        if {**mine, "name": None} != {**teachers, "name": None}:
            parts.append(hashlib.sha256(json.dumps(mine, sort_keys=True).encode()).hexdigest()[:6])
    if seed != cfg.seed:
        parts.append(f"s{seed}")
    return "-".join(["retrain", *parts])


def unlearn_config(
    teacher: TeacherRun, fset, method, options, backend: BackendConfig, seed: int
) -> dict:
    return _unlearn_config(teacher.cfg, teacher.run.path, fset, method, options, backend, seed)


def _unlearn_config(
    cfg: RunConfig, teacher_path, fset, method, options, backend: BackendConfig, seed: int
) -> dict:
    return {
        "kind": "unlearn",
        "teacher": str(teacher_path),
        "teacher_fingerprint": cfg.fingerprint(),
        "method": method,
        "options": options,
        "forget": {
            "spec": fset.spec,
            "slug": fset.slug,
            "size": int(fset.size),
            "fingerprint": fset.fingerprint,
        },
        "backend": backend.model_dump(mode="json"),
        "seed": seed,
        "protocol": cfg.protocol,
    }


@dataclass
class MethodData:
    """The splits a method (or the oracle) sees for one forget request: ``(X, y)`` pairs."""

    retain: tuple
    forget: tuple
    val: tuple
    test: tuple
    forget_classes: list | None


def method_data(bundle: DataBundle, fset) -> MethodData:
    """Retain and forget rows of the training split, the validation split (without the forgotten
    classes for a class request) and the test split."""
    train_X, train_y = bundle.X["train"], bundle.y["train"]
    val_X, val_y = bundle.X["val"], bundle.y["val"]
    forget_classes = None
    if fset.kind == "class":
        forget_classes = sorted({int(v) for v in train_y[fset.train_idx]})
        keep = ~np.isin(val_y, forget_classes)
        val_X, val_y = val_X[keep], val_y[keep]
    return MethodData(
        retain=(train_X[fset.retain_idx], train_y[fset.retain_idx]),
        forget=(train_X[fset.train_idx], train_y[fset.train_idx]),
        val=(val_X, val_y),
        test=(bundle.X["test"], bundle.y["test"]),
        forget_classes=forget_classes,
    )


# ---------------------------------------------------------------------------------------------
# the oracle's fit ahead of its teacher (grids)

#: Largest pre-fit checkpoint an oracle copies (a model, its optimiser and the best weights).
MAX_PREFIT_BYTES = 512 * 2**20


def prefit_oracle(
    cfg: RunConfig,
    teacher_path: str | Path,
    forget: str,
    out: str | Path,
    *,
    options: dict[str, dict] | None = None,
    seed: int | None = None,
) -> Path:
    """Fit the retrain oracle of the teacher that ``cfg`` will train (at ``teacher_path``) into
    the run directory ``out``, without waiting for that teacher: the oracle starts from scratch
    and needs only the teacher's config and data. ``unlearn(..., prefit=out)`` then finds the
    finished fit (checked by fingerprint) and only evaluates, so a grid runs oracles beside
    their teachers. The numbers are the oracle's own: the same fit, arguments and checkpoint
    (:func:`~qmu_qiskit.unlearning.methods.retrain.fit_retrain`), and the fit's cost is carried
    into the oracle's ``cost.json``.

    Raises:
        BadInputError: a backend or model whose oracle cannot be fitted ahead
            (:func:`prefit_possible`), or a bad forget request or option.
    """
    from .unlearning.base import RecipeInfo, resolve_options
    from .unlearning.methods.retrain import fit_retrain

    if not prefit_possible(cfg):
        raise BadInputError(
            f"the oracle of a {cfg.model.name} teacher on {cfg.backend.name} cannot be fitted "
            "ahead of its teacher (it needs a preset model on a local simulator without shots)"
        )
    seed = cfg.seed if seed is None else int(seed)
    resolved = resolve_options(
        "retrain", (options or {}).get("retrain"), RecipeInfo.from_config(cfg)
    )
    spec = check_backend(cfg.backend, cfg.model.n_qubits)
    bundle = load_data(cfg.data)
    fset = resolve_forget(forget, bundle, seed=cfg.data.seed)
    config = _unlearn_config(cfg, teacher_path, fset, "retrain", resolved, cfg.backend, seed)
    fingerprint = _fingerprint(config)
    run = RunDir(out)
    with run.lock(), run_log(run.path):
        status = run.status() if run.path.exists() else None
        if (
            status
            and status.get("status") == PREFIT_DONE
            and status.get("fingerprint") == fingerprint
        ):
            return run.path
        run.prepare(
            config,
            fingerprint=fingerprint,
            overwrite=status is not None and status.get("fingerprint") != fingerprint,
        )
        run.start(config, fingerprint=fingerprint, extra={"kind": "prefit", "versions": versions()})
        try:
            executor = make_executor(cfg.backend, seed=seed, run=run, spec=spec)
            data = method_data(bundle, fset)
            mspec = model_spec(cfg, bundle)
            with executor.cost.measure() as phase:
                fit_retrain(
                    lambda s: build_model(
                        mspec, num_classes=bundle.num_classes, executor=executor, seed=s
                    ),
                    recipe=cfg.training,
                    protocol=cfg.protocol,
                    options=resolved,
                    seed=seed,
                    data=(data.retain, data.val, data.test),
                    checkpoint=run.checkpoints / METHOD_CHECKPOINT,
                    fingerprint=fingerprint,
                )
            atomic_write_json(run.path / COST_FILE, {"method": phase.record.to_dict()})
        except BaseException as exc:
            run.fail(failure_reason(exc))
            raise
        # not "complete": a pre-fit holds a checkpoint, not a run's results
        run.finish(extra={"status": PREFIT_DONE})
    return run.path


def _take_prefit(prefit: Path, fingerprint: str, checkpoint: Path):
    """The finished pre-fit at ``prefit`` of the oracle run with ``fingerprint``: its checkpoint
    copied to ``checkpoint`` (where the oracle's fit resumes from, finished) and its cost
    returned; ``None`` (the oracle fits itself) when there is none, it is unfinished, or it was
    made from another config. Nothing is followed through a link; sizes are bounded."""
    import io

    from .execution.cost import CostRecord
    from .io import atomic_write_bytes, read_regular
    from .runs import read_run_json
    from .training import load_checkpoint

    run = RunDir(prefit)
    try:
        if run.path.is_symlink() or not run.path.is_dir():
            return None
        with run.lock(shared=True):  # refuses a tree holding a link; no writer meanwhile
            status = run.status() or {}
            if status.get("status") != PREFIT_DONE or status.get("fingerprint") != fingerprint:
                return None
            data = read_regular(
                run.checkpoints / METHOD_CHECKPOINT,
                max_bytes=MAX_PREFIT_BYTES,
                what="pre-fit checkpoint",
                follow=False,
            )
            ck = load_checkpoint(
                io.BytesIO(data), source=str(prefit / CHECKPOINTS_DIR / METHOD_CHECKPOINT)
            )
            if ck.get("fingerprint") != fingerprint:
                return None
            counts = read_run_json(run.path / COST_FILE).get("method")
        if not isinstance(counts, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for v in counts.values()
        ):
            raise RunError(f"{prefit / COST_FILE} holds no cost record")
        cost = CostRecord.from_dict(counts)
    except QmuError as exc:
        logger.warning(
            "the oracle's pre-fit at %s is not used (%s); the oracle fits itself", prefit, exc
        )
        return None
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(checkpoint, data)
    logger.info("the oracle's fit comes from its pre-fit at %s", prefit)
    return cost


def _fingerprint(config: dict) -> str:
    import hashlib
    import json

    payload = {k: v for k, v in config.items() if k != "teacher"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _unlearn_one(
    teacher: TeacherRun,
    fset,
    method: str,
    info,
    options: dict,
    path: Path,
    *,
    backend: BackendConfig,
    spec,
    seed: int,
    progress: bool,
    overwrite: bool,
    oracle_outputs: Outputs | None,
    metric_ctx: MetricContext,
    oracle_dir: str = "retrain",
    prefit: Path | None = None,
) -> UnlearnSummary:
    from .runs import read_run_json
    from .unlearning.base import UnlearnContext, method_selection

    run = RunDir(path)
    config = unlearn_config(teacher, fset, method, options, backend, seed)
    fingerprint = _fingerprint(config)
    if (
        not overwrite
        and run.is_complete()
        and (run.status() or {}).get("fingerprint") == fingerprint
    ):
        # the same request was answered before: show it instead of paying for it again
        check_teacher_of(run, teacher.run, config)
        metrics = read_run_json(run.path / METRICS_FILE)
        cost = read_run_json(run.path / COST_FILE)
        return UnlearnSummary(method, run.path, metrics, cost, {"reused": True})
    bundle = teacher.bundle
    with run.lock(), run_log(run.path):  # the log file opens at the first record, after prepare
        if not overwrite and run.status() is not None:
            check_teacher_of(run, teacher.run, config)  # never resume onto another teacher
        run.prepare(config, fingerprint=fingerprint, overwrite=overwrite)
        run.start(
            config,
            fingerprint=fingerprint,
            extra={
                "kind": "unlearn",
                "method": method,
                "versions": versions(),
                "teacher_digest": teacher_digest(teacher.run),
                "teacher_path": str(teacher.run.path.resolve()),
                "oracle": oracle_dir,
            },
        )
        logger.info(
            "unlearn %s with %s, backend %s, seed %d, options %s",
            fset.spec,
            method,
            backend.name,
            seed,
            options,
        )
        try:
            executor = make_executor(backend, seed=seed, run=run, spec=spec)
            try:
                model_teacher = teacher.model(executor)
                model_teacher.eval()
                data = method_data(bundle, fset)
                ctx = UnlearnContext(
                    teacher=model_teacher,
                    make_model=lambda s: build_model(
                        model_spec(teacher.cfg, bundle, teacher.run),
                        num_classes=bundle.num_classes,
                        executor=executor,
                        seed=s,
                    ),
                    retain=data.retain,
                    forget=data.forget,
                    val=data.val,
                    test=data.test,
                    recipe=teacher.cfg.training,
                    options=options,
                    seed=seed,
                    num_classes=bundle.num_classes,
                    forget_classes=data.forget_classes,
                    workdir=run.path,
                    progress=progress,
                    protocol=teacher.cfg.protocol,
                    executor=executor,
                    fingerprint=fingerprint,
                    selection=method_selection(teacher.cfg.protocol, teacher.cfg.training.select),
                    # per-epoch forget / retain accuracy on local simulators only: on the IBM
                    # Runtime path (devices, fake_* local testing, dry runs) every job is
                    # submitted, recorded in the job ledger and counted by `estimate`
                    record_history=not _on_runtime(executor),
                )
                prefit_cost = None
                if prefit is not None and method == "retrain" and not ctx.checkpoint.exists():
                    prefit_cost = _take_prefit(prefit, fingerprint, ctx.checkpoint)
                with executor.cost.measure() as phase:
                    result = info.fn(ctx)
                if ctx.selection_report():  # the epoch the protocol's wrapper returned
                    result.info.setdefault("selection", ctx.selection_report())
                result.model.eval()
                with executor.cost.measure() as eval_phase:
                    outputs = collect_outputs(result.model, bundle, forget_ids=fset.record_ids)
                outputs.save(run.path / OUTPUTS_FILE)
                atomic_torch_save(run.path / MODEL_FILE, result.model.state_dict())
                T = teacher.outputs.with_forget(fset.record_ids)
                O = outputs if method == "retrain" else oracle_outputs
                metrics = compute_metrics(outputs, T, O, ctx=metric_ctx)
                metrics.update(
                    {
                        "method": method,
                        "seed": seed,
                        "forget": fset.spec,
                        "forget_size": int(fset.size),
                    }
                )
                metrics["evaluation"] = settings_of(metric_ctx, source="unlearn")
                info_out = {k: v for k, v in result.info.items() if k != "history"}
                if info_out:
                    metrics["method_info"] = info_out
                if result.info.get("history"):  # per-epoch curves (the oracle's fit), for plots
                    metrics["history"] = result.info["history"]
                elif ctx.history():  # the method's epochs: loss, forget / retain accuracy
                    metrics["history"] = ctx.history()
                    metrics["history_info"] = ctx.history_info()
                method_cost = phase.record
                history_cost = getattr(ctx, "history_cost", None)
                if history_cost is not None:  # the history's evaluations are not the method's
                    method_cost = method_cost - history_cost
                if prefit_cost is not None:  # the fit ran ahead in the pre-fit: its cost is ours
                    method_cost = method_cost + prefit_cost
                cost = {"method": method_cost.to_dict(), "evaluation": eval_phase.record.to_dict()}
                if history_cost is not None:
                    cost["history"] = history_cost.to_dict()
                if prefit_cost is not None:  # the part of "method" spent in the pre-fit's process
                    cost["prefit"] = prefit_cost.to_dict()
                metrics["execution"] = executor.describe()
                atomic_write_json(run.path / METRICS_FILE, metrics)
                atomic_write_json(run.path / COST_FILE, cost)
                run.finish()
                logger.info(
                    "complete: acc_retain %s, acc_forget %s, acc_test %s, MIA_AUC %s",
                    *(
                        _num(metrics.get(k))
                        for k in (
                            "acc_retain_unlearn",
                            "acc_forget_unlearn",
                            "acc_test_unlearn",
                            "MIA_AUC",
                        )
                    ),
                )
                return UnlearnSummary(method, run.path, metrics, cost, result.info)
            finally:
                executor.close()
        except BaseException as exc:
            run.fail(failure_reason(exc))
            logger.error("failed: %s: %s", type(exc).__name__, exc)
            raise


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate(
    path: str | Path,
    *,
    metric_ctx: MetricContext | None = None,
    overwrite: bool = False,
    metrics: list[str] | None = None,
) -> dict:
    """Recompute an unlearning run's metrics from saved outputs (no circuit runs), or report a
    teacher run's accuracies.

    For an unlearning run the numbers go to a new version, ``evaluations/<NNN>-<settings>/
    metrics.json`` (:mod:`qmu_qiskit.evaluation.versions`), and ``metrics.json`` is left as it
    is; ``overwrite=True`` replaces ``metrics.json`` instead (the replaced file is kept as a
    version). ``metrics["evaluation"]`` records the settings and ``["path"]`` where they went.

    ``metrics``: metric names computed besides the defaults (plugins' included)."""
    from .evaluation.metrics import DEFAULT_METRICS, METRICS

    extra = [m for m in dict.fromkeys(metrics or []) if m not in DEFAULT_METRICS]
    for name in extra:
        if name not in METRICS:
            raise BadInputError(f"unknown metric {name!r}; available: {', '.join(METRICS.names())}")
    run = RunDir(path)
    run.require_complete(what="run")
    raw = run.config()
    if raw.get("kind") == "train":
        try:
            run.check_fingerprint(RunConfig(**raw).fingerprint())
        except BadInputError as exc:
            raise RunError(f"{run.path}/config.yaml is not a valid run config ({exc})") from None
        return run.read_metrics()
    if raw.get("kind") != "unlearn":
        raise RunError(f"{run.path} is not a qmu-qiskit train or unlearn run")
    run.check_fingerprint(_fingerprint(raw))
    status = run.status() or {}
    teacher_run = RunDir(status.get("teacher_path") or raw["teacher"])
    if not teacher_run.path.exists():
        # the teacher may have moved together with its unlearn/ folder
        teacher_run = RunDir(run.path.parent.parent.parent)
    teacher_run.require_complete(what="teacher run")
    with run.lock(), teacher_run.lock(shared=True):
        check_teacher_of(run, teacher_run, raw)
        U = Outputs.load(run.path / OUTPUTS_FILE)
        forget_ids = U.ids[U.forget]
        T = Outputs.load(teacher_run.path / OUTPUTS_FILE).with_forget(forget_ids)
        oracle_dir = run.path.parent / str(status.get("oracle") or "retrain")
        O = Outputs.load(oracle_dir / OUTPUTS_FILE) if RunDir(oracle_dir).is_complete() else None
        ctx = metric_ctx or MetricContext(seed=int(raw.get("seed", 0)))
        scores = compute_metrics(U, T, O, names=DEFAULT_METRICS + tuple(extra), ctx=ctx)
        old = run.read_metrics()
        for key in ("method", "seed", "forget", "forget_size", "method_info", "execution"):
            if key in old:
                scores[key] = old[key]
        scores["evaluation"] = settings_of(ctx, source="evaluate")
        if overwrite:
            if old:
                write_version(run.path, old)  # nothing is lost: the replaced numbers stay
            target = run.path / METRICS_FILE
            atomic_write_json(target, scores)
        else:
            target = write_version(run.path, scores)
    scores["evaluation"]["path"] = str(target)
    return scores
