"""QMU's membership-inference comparison: noiseless against noisy emulation and hardware.

Su et al., "From Membership-Privacy Leakage to Quantum Machine Unlearning" (arXiv 2509.06086,
code ``Sujun124/QMU``) report the gray-box MIA success rate on MNIST with class 4 forgotten: about
90% before and 0% after unlearning in noiseless simulation, about 75% before and 4% after on
hardware. This module runs that comparison (docs/reference.md §5, protocol ``qmu``):

1. per model (the basic QNN ``qmu-basic`` and the HQNN ``qmu-hybrid``) a teacher is trained on
   the noiseless backend with the ``qmu`` protocol's recipe (:func:`qmu_qiskit.pipeline.train`)
   and unlearned with GA, SSD and RGA (:func:`qmu_qiskit.pipeline.unlearn`) — as in the study,
   where the model was trained in simulation and evaluated on the device;
2. the teacher's noiseless outputs for known members (a seeded subset of D_tr plus the forget
   set) and non-members (D_te) train QMU's gray-box attack
   (:func:`qmu_qiskit.evaluation.mia.grey_box_attack`) — as QMU's code trains its attack once
   and saves it; on every backend its success rate on the teacher's outputs — the fraction of
   forget-class members flagged as member — is "before", and on each unlearned model's outputs
   on the forget set "after" (``attack_on="backend"`` retrains the attack on each backend's
   own teacher outputs instead);
3. on one noisy backend the same is repeated at several shot counts (128 … 8192).

Everything is resumable: teachers and unlearned models are run directories (reused when
complete), every evaluation is saved as per-sample outputs under ``eval/`` with a fingerprint of
what produced it, and jobs on remote backends are in a ledger (retrieved by id after a crash).
The attack is recomputed from the saved outputs each time (seconds).

In a dry run (``qmu-qiskit estimate mia-compare``, ``mia-compare --dry-run``) the models are still
trained and unlearned on the noiseless backend, and the evaluations on ``fake_*``/``ibm_*``
backends go to the counting runner; evaluations on local backends (``aer_noisy``, a shot sweep on
``aer``) submit nothing to IBM Quantum and are skipped.

Emulation choices are recorded with every row: on Aer the default ``amplitude_loading`` is
``ideal`` (each sample's state written exactly, device noise on the ansatz only — QMU's own noisy
simulation), ``device`` transpiles the state preparation per sample (~600 two-qubit gates for 256
amplitudes; hardware's only option). ``fake_*``/``ibm_*`` backends always load with the device's
gates, and evaluate inside a runtime ``Batch``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import BackendSpec, parse_backend
from ..config import BackendConfig, RunConfig
from ..evaluation.stats import INTERVAL_METHOD, t_interval
from ..exceptions import BadInputError
from ..io import atomic_savefig, atomic_write_json, atomic_write_text, directory_lock, read_json
from ..runs import LEDGER_DIR, OUTPUTS_FILE, STATUS_FILE

#: QMU's shot sweep (log-spaced, 128 … 8192).
DEFAULT_SHOTS = (128, 512, 2048, 8192)
#: QMU's models and methods.
DEFAULT_MODELS = ("qmu-basic", "qmu-hybrid")
DEFAULT_METHODS = ("ga", "ssd", "rga")
#: Models whose training needs gradients through the amplitude encoding (no shift rule).
NEEDS_INPUT_GRADIENTS = ("qmu-hybrid",)

CSV_COLUMNS = [
    "model",
    "layers",
    "backend",
    "shots",
    "trained_on",
    "amplitude_loading",
    "layout",
    "attack_trained_on",
    "state",
    "mia_success",
    "nonmember_flagged",
    "acc_forget",
    "acc_test",
    "attack_heldout_accuracy",
    "num_targets",
    "num_attack_train",
    "seed",
    "seconds",
]


@dataclass
class CompareConfig:
    """What ``mia-compare`` runs.

    Attributes:
        backends: the first noiseless one (``aer``) is the reference; the others are noisy
            emulations (``aer_noisy:PROFILE``) or runtime backends (``fake_*``, ``ibm_*``).
        models: ``qmu-basic`` and/or ``qmu-hybrid``.
        methods: unlearning methods (QMU: ``ga``, ``ssd``, ``rga``).
        forget: the forget request (QMU: ``class:4``).
        seed: seed of the runs, the attack's member subset and the attack itself.
        data_dir: folder with ``MNIST/raw``.
        samples_per_class, epochs: override the ``qmu`` protocol's recipe (150, 10).
        basic_layers, hybrid_layers: circuit depth L (QMU: 10 and 1).
        shots: the shot sweep (empty: none).
        sweep_backend: backend of the sweep (default: the first noisy backend).
        attack_members: known members drawn from D_r for the attack data (the forget set is
            always added; non-members are all of D_te).
        amplitude_loading: ``ideal`` or ``device`` on Aer backends.
        layout: ``auto``, ``path`` or ``device`` (see :mod:`qmu_qiskit.execution.layout`).
        noise_scale: multiplies the device noise of ``aer_noisy``.
        train_on_noisy: also train and unlearn on every ``aer_noisy`` backend.
        attack_epochs: epochs of the attack MLP (``None``: QMU's 1000).
        attack_on: ``reference`` (default; QMU's code): the attack is trained once, on the
            teacher's outputs on the backend it was trained on (noiseless), and applied unchanged
            to every backend's outputs — an attacker who simulates the published model and
            audits the device's answers. ``backend``: retrained on each backend's own teacher
            outputs (an attacker who can query the device with known members and non-members).
        runtime: IBM Runtime options for ``fake_*``/``ibm_*`` backends (resilience level,
            dynamical decoupling, twirling, ZNE).
        method_options: ``{method: {option: value}}`` for the unlearning methods (defaults:
            the methods' own, HQML's MNIST budgets).
    """

    backends: tuple[str, ...] = ("aer", "aer_noisy:ibm_brisbane")
    models: tuple[str, ...] = DEFAULT_MODELS
    methods: tuple[str, ...] = DEFAULT_METHODS
    forget: str = "class:4"
    seed: int = 0
    data_dir: str | None = None
    samples_per_class: int | None = None
    epochs: int | None = None
    basic_layers: int | None = None
    hybrid_layers: int | None = None
    shots: tuple[int, ...] = DEFAULT_SHOTS
    sweep_backend: str | None = None
    attack_members: int = 300
    amplitude_loading: str = "ideal"
    layout: str = "auto"
    noise_scale: float = 1.0
    train_on_noisy: bool = False
    attack_epochs: int | None = None
    attack_on: str = "reference"
    runtime: dict = field(default_factory=dict)
    method_options: dict = field(default_factory=dict)


@dataclass
class CompareResult:
    rows: list[dict]
    csv: Path
    plot: Path | None
    summary: Path
    timings: dict


# ------------------------------------------------------------------------------------------
# planning


@dataclass
class _Model:
    name: str
    layers: int
    cfg: RunConfig  # trained on the noiseless reference
    teacher: Path = None  # type: ignore[assignment]  # set before the model is trained
    unlearned: dict = field(default_factory=dict)  # method -> run dir
    bundle: Any = None
    fset: Any = None
    trained_on: str = "aer"


def _protocol_recipe():
    from .protocols import get_protocol

    return get_protocol("qmu").recipes["mnist"]


def _run_config(cc: CompareConfig, name: str, layers: int, backend: dict):
    from ..config import resolve_run_config

    recipe = _protocol_recipe()
    data = dict(recipe.data)
    if cc.samples_per_class:
        data["samples_per_class"] = int(cc.samples_per_class)
    data["data_dir"] = cc.data_dir
    training = dict(recipe.training)
    for entry in recipe.models:  # QMU trains its two models with different recipes
        if entry.name == name:
            training.update(entry.training)
    if cc.epochs:
        training["epochs"] = int(cc.epochs)
    return resolve_run_config(
        dataset="mnist",
        model=name,
        qubits=8,
        layers=layers,
        seed=cc.seed,
        protocol="qmu",
        data=data,
        training=training,
        backend=backend,
    )


def _method_options(cc: CompareConfig) -> dict:
    """The qmu protocol's options of each method (QMU's unlearning budget), under the user's."""
    from .protocols import get_protocol

    out = {
        e.method: dict(e.options)
        for e in get_protocol("qmu").methods
        if e.method in cc.methods and e.options
    }
    for method, opts in cc.method_options.items():
        out.setdefault(method, {}).update(opts)
    return out


def _default_layers(name: str) -> int:
    for m in _protocol_recipe().models:
        if m.name == name and m.layers:
            return int(m.layers)
    from ..models.hybrid import MODELS

    return int(MODELS[name].default_layers)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _validate(cc: CompareConfig):
    """Everything that can be checked before a run directory or a circuit exists."""
    from .. import pipeline
    from ..config import BackendConfig
    from ..models.hybrid import MODELS

    if not cc.backends:
        raise BadInputError("give at least one backend, e.g. --backends aer,aer_noisy:ibm_brisbane")
    specs = [parse_backend(b) for b in cc.backends]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BadInputError(f"--backends lists a backend twice: {', '.join(names)}")
    if not any(s.kind == "aer" for s in specs):
        raise BadInputError(
            "the comparison needs the noiseless reference: add aer to --backends (the models "
            "are trained there, as in the study)"
        )
    for m in cc.models:
        if m not in ("qmu-basic", "qmu-hybrid"):
            raise BadInputError(
                f"mia-compare runs QMU's models; unknown model {m!r} (use qmu-basic, qmu-hybrid)"
            )
        if m not in MODELS:
            raise BadInputError(f"model {m!r} is not registered")
    if not cc.methods:
        raise BadInputError("give at least one unlearning method (QMU: ga, ssd, rga)")
    from ..unlearning.base import get_method

    for m in cc.methods:
        get_method(m)
    if cc.attack_on not in ("reference", "backend"):
        raise BadInputError(f"--attack-on must be reference or backend, got {cc.attack_on!r}")
    if cc.amplitude_loading not in ("ideal", "device"):
        raise BadInputError(
            f"amplitude loading must be ideal or device, got {cc.amplitude_loading!r}"
        )
    if any(s <= 0 for s in cc.shots):
        raise BadInputError(f"shot counts must be positive, got {list(cc.shots)}")
    if cc.attack_members < 2:
        raise BadInputError("--attack-members must be at least 2")
    noisy = [s for s in specs if s.kind != "aer"]
    sweep = None
    if cc.shots:
        if cc.sweep_backend:
            sweep = parse_backend(cc.sweep_backend)
            if sweep.name not in names:
                raise BadInputError(f"the sweep backend {sweep.name} is not among --backends")
        elif noisy:
            sweep = noisy[0]
    if cc.train_on_noisy:
        bad = [s.name for s in noisy if s.kind != "aer_noisy"]
        if bad or not noisy:
            raise BadInputError(
                "--train-on-noisy trains on aer_noisy backends only (training on fake_*/ibm_* "
                f"devices is not offered here){': ' + ', '.join(bad) if bad else ''}"
            )
        hard = [m for m in cc.models if m in NEEDS_INPUT_GRADIENTS]
        if hard:
            raise BadInputError(
                f"--train-on-noisy cannot train {', '.join(hard)}: its encoder needs gradients "
                "through the amplitude encoding, which have no parameter-shift rule on a noisy "
                "backend; run it with --models qmu-basic"
            )
    # device sizes, IBM credentials and device availability: before any directory exists
    for s in specs:
        if s.kind != "aer":
            pipeline.check_backend(BackendConfig(name=s.name), 8)
    return specs, sweep


# ------------------------------------------------------------------------------------------
# evaluation


def _subset(bundle, fset, cc: CompareConfig):
    """Rows of the attack data: a seeded subset of D_r (known members), the forget set, and all
    of D_te (non-members). Returns ``(X, y, ids, split, forget_mask)`` in (train, test) order,
    each split sorted by record id."""
    rng = np.random.default_rng(cc.seed)
    train_ids = bundle.ids["train"]
    forget_pos = np.asarray(fset.train_idx)
    retain_pos = np.setdiff1d(np.arange(len(train_ids)), forget_pos)
    k = min(cc.attack_members, len(retain_pos))
    members = np.sort(np.r_[rng.choice(retain_pos, size=k, replace=False), forget_pos])
    test_pos = np.arange(len(bundle.ids["test"]))
    X = np.concatenate([bundle.X["train"][members], bundle.X["test"][test_pos]], 0)
    y = np.concatenate([bundle.y["train"][members], bundle.y["test"][test_pos]])
    ids = np.concatenate([train_ids[members], bundle.ids["test"][test_pos]])
    split = np.array(["train"] * len(members) + ["test"] * len(test_pos), dtype="<U5")
    forget = np.zeros(len(ids), dtype=bool)
    forget[: len(members)] = np.isin(train_ids[members], fset.record_ids)
    return X, y, ids, split, forget


def _select(outputs, ids, split):
    """Rows of saved full outputs for (split, id) pairs, in the given order."""
    from ..evaluation.outputs import Outputs

    where = {(s, int(i)): k for k, (s, i) in enumerate(zip(outputs.split, outputs.ids))}
    rows = np.array([where[(s, int(i))] for s, i in zip(split, ids)], dtype=np.int64)
    return Outputs(
        outputs.logits[rows],
        outputs.labels[rows],
        outputs.ids[rows],
        outputs.split[rows],
        outputs.forget[rows],
    )


class _Evaluator:
    """Per (backend, shots): one executor shared by every model and state, so transpiled
    circuits and simulated distributions are reused."""

    def __init__(self, cc: CompareConfig, out: Path, progress: bool):
        self.cc = cc
        self.out = out
        self.progress = progress
        self._executors: dict = {}

    def executor(self, spec: BackendSpec, shots: int | None):
        from .. import pipeline

        key = (spec.name, shots)
        ex = self._executors.get(key)
        if ex is None:
            runtime = dict(self.cc.runtime) if spec.is_runtime else {}
            if spec.is_runtime:
                runtime.setdefault("mode", "batch")  # evaluation sweeps run in a Batch
            runtime["layout"] = self.cc.layout
            if not spec.is_runtime:
                runtime["amplitude_loading"] = self.cc.amplitude_loading
            backend_cfg = BackendConfig(
                name=spec.name,
                shots=shots,
                # only aer_noisy has device noise to scale (the config refuses it elsewhere)
                noise_scale=self.cc.noise_scale if spec.kind == "aer_noisy" else 1.0,
                runtime=runtime,
            )
            ex = pipeline.make_executor(
                backend_cfg,
                seed=self.cc.seed,
                spec=spec,
                ledger=self.out / "eval" / LEDGER_DIR / "jobs.sqlite",
                run_id=f"mia-compare:{spec.name}:{shots or 'exact'}",
            )
            self._executors[key] = ex
        return ex

    def close(self):
        for ex in self._executors.values():
            ex.close()
        self._executors.clear()


def _run_fingerprint(run_dir: Path) -> str:
    st = read_json(run_dir / STATUS_FILE)
    return f"{st.get('fingerprint')}|{st.get('finished', '')}"


def _evaluate(
    ev: _Evaluator,
    m: _Model,
    state: str,
    run_dir: Path,
    backend: BackendSpec,
    shots: int | None,
    rows: tuple,
    where: Path,
) -> tuple:
    """Outputs of one model state on one backend (saved; reused when the same inputs made them).

    Returns ``(Outputs, seconds, execution)``: 0 seconds when reused; ``execution`` is the
    executor's record (:meth:`~qmu_qiskit.execution.executor.Executor.describe`)."""
    from .. import pipeline
    from ..evaluation.outputs import Outputs

    X, y, ids, split, forget = rows
    key = hashlib.sha256(
        json.dumps(
            {
                "backend": backend.name,
                "shots": shots,
                "noise_scale": ev.cc.noise_scale,
                "loading": ev.cc.amplitude_loading,
                "layout": ev.cc.layout,
                "seed": ev.cc.seed,
                "run": _run_fingerprint(run_dir),
                "ids": hashlib.sha256(ids.tobytes()).hexdigest(),
                "split": hashlib.sha256(split.tobytes()).hexdigest(),
                "runtime": ev.cc.runtime,
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:16]
    path = where / f"{state}.npz"
    meta = where / f"{state}.json"
    if path.exists() and meta.exists():
        saved = read_json(meta)
        if saved.get("key") == key:
            return Outputs.load(path), 0.0, saved.get("execution") or {}
    executor = ev.executor(backend, shots)
    t0 = time.perf_counter()
    logits = pipeline.evaluate_on(run_dir, executor, X, cfg=m.cfg, bundle=m.bundle)
    seconds = time.perf_counter() - t0
    out = Outputs(logits=logits, labels=y, ids=ids, split=split, forget=forget)
    where.mkdir(parents=True, exist_ok=True)
    out.save(path)
    execution = executor.describe()
    atomic_write_json(
        meta, {"key": key, "seconds": seconds, "samples": int(len(ids)), "execution": execution}
    )
    return out, seconds, execution


# ------------------------------------------------------------------------------------------
# the comparison


def run_compare(
    cc: CompareConfig, out: str | Path, *, progress: bool = True, echo=print
) -> CompareResult:
    """Run (or resume) the comparison into ``out`` and write ``results.csv``, ``mia_compare.png``
    and ``summary.json``.

    Raises:
        QmuError: bad backends, models, methods or options (before anything is written), missing
            data, missing IBM credentials, or a failed job.
    """
    from .. import pipeline
    from ..backends.dryrun import active as dry_run
    from ..data import load_data, resolve_forget
    from ..evaluation.mia import grey_box_attack, grey_box_features
    from ..evaluation.outputs import Outputs
    from ..runs import RunDir

    specs, sweep = _validate(cc)
    ref = next(s for s in specs if s.kind == "aer")
    # a dry run (`qmu-qiskit estimate mia-compare`, --dry-run) counts what goes to IBM Quantum:
    # evaluations on local backends (aer_noisy, aer with shots) submit nothing and are skipped
    local_skipped = dry_run() is not None
    models = []
    for name in cc.models:
        layers = (cc.basic_layers if name == "qmu-basic" else cc.hybrid_layers) or _default_layers(
            name
        )
        models.append(
            _Model(name=name, layers=layers, cfg=_run_config(cc, name, layers, {"name": ref.name}))
        )
    for m in models:  # data present and the forget request valid, before any directory exists
        m.bundle = load_data(m.cfg.data)
        m.fset = resolve_forget(cc.forget, m.bundle, seed=m.cfg.data.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict = {}
    t_all = time.perf_counter()
    with directory_lock(out, what="mia-compare directory"):
        atomic_write_json(out / "config.json", {**asdict(cc), "protocol": "qmu"})
        trained: list[_Model] = []
        for m in models:
            variants = [(m, ref.name)]
            if cc.train_on_noisy:
                for s in specs:
                    if s.kind == "aer_noisy":
                        backend_cfg = {
                            "name": s.name,
                            "noise_scale": cc.noise_scale,
                            "runtime": {
                                "amplitude_loading": cc.amplitude_loading,
                                "layout": cc.layout,
                            },
                        }
                        mm = _Model(
                            name=m.name,
                            layers=m.layers,
                            cfg=_run_config(cc, m.name, m.layers, backend_cfg),
                            bundle=m.bundle,
                            fset=m.fset,
                            trained_on=s.name,
                        )
                        variants.append((mm, s.name))
            for mm, on in variants:
                label = f"{mm.name}-L{mm.layers}" + ("" if on == ref.name else f"@{_slug(on)}")
                mm.teacher = out / "runs" / f"{label}-{mm.cfg.fingerprint()[:8]}"
                t0 = time.perf_counter()
                run = RunDir(mm.teacher)
                if not run.is_complete():
                    echo(f"[mia-compare] training {label} on {on} ...")
                    pipeline.train(mm.cfg, mm.teacher, progress=progress)
                timings[f"train {label}"] = round(time.perf_counter() - t0, 1)
                t0 = time.perf_counter()
                echo(
                    f"[mia-compare] unlearning {cc.forget} from {label}: {', '.join(cc.methods)} ..."
                )
                summaries = pipeline.unlearn(
                    mm.teacher,
                    cc.forget,
                    list(cc.methods),
                    oracle=False,
                    options=_method_options(cc),
                    seed=cc.seed,
                    progress=progress,
                )
                mm.unlearned = {s.method: s.path for s in summaries}
                timings[f"unlearn {label}"] = round(time.perf_counter() - t0, 1)
                trained.append(mm)

        ev = _Evaluator(cc, out, progress)
        rows: list[dict] = []
        try:
            for m in trained:
                label = f"{m.name}-L{m.layers}" + (
                    "" if m.trained_on == ref.name else f"@{_slug(m.trained_on)}"
                )
                data = _subset(m.bundle, m.fset, cc)
                X, y, ids, split, forget = data
                fmask = forget
                forget_ids = ids[fmask]
                evals: list[tuple[BackendSpec, int | None]] = []
                ref_attack = None  # trained on the teacher's outputs where the model was trained
                for s in specs:
                    if m.trained_on != ref.name and s.name != m.trained_on:
                        continue
                    evals.append((s, None))
                    if (
                        sweep is not None
                        and s.name == sweep.name
                        and (m.trained_on in (ref.name, s.name))
                    ):
                        evals.extend((s, n) for n in cc.shots)
                # the backend the model was trained on comes first: the reference attack learns there
                evals.sort(key=lambda e: not (e[0].name == m.trained_on and e[1] is None))
                for kind, shots in evals:
                    backend = kind.name
                    if (
                        local_skipped
                        and not kind.is_runtime
                        and (kind.name, shots) != (ref.name, None)
                    ):
                        continue  # the noiseless reference stays: the reference attack learns there
                    t0 = time.perf_counter()
                    where = (
                        out
                        / "eval"
                        / label
                        / _eval_folder(cc, kind)
                        / (f"shots-{shots}" if shots else "exact")
                    )
                    if backend == ref.name and shots is None and m.trained_on == ref.name:
                        # the training runs' own per-sample outputs are the noiseless evaluation
                        T = _select(Outputs.load(m.teacher / OUTPUTS_FILE), ids, split)
                        U = {
                            k: _select(Outputs.load(p / OUTPUTS_FILE), ids[fmask], split[fmask])
                            for k, p in m.unlearned.items()
                        }
                        T = Outputs(T.logits, T.labels, T.ids, T.split, fmask)
                        desc = {}
                    else:
                        echo(
                            f"[mia-compare] evaluating {label} on {backend}"
                            f"{f' at {shots} shots' if shots else ''} ..."
                        )
                        T, _, desc = _evaluate(
                            ev, m, "teacher", m.teacher, kind, shots, data, where
                        )
                        U = {}
                        sub = (
                            X[fmask],
                            y[fmask],
                            ids[fmask],
                            split[fmask],
                            np.ones(int(fmask.sum()), bool),
                        )
                        for k, p in m.unlearned.items():
                            U[k], _, _ = _evaluate(ev, m, k, p, kind, shots, sub, where)
                    trained_here = cc.attack_on == "backend" or ref_attack is None
                    res = grey_box_attack(
                        T,
                        U,
                        forget_ids=forget_ids,
                        seed=cc.seed,
                        epochs=cc.attack_epochs,
                        attack=None if trained_here else ref_attack,
                    )
                    if ref_attack is None:  # the first evaluation is where the model was trained
                        ref_attack = res["attack"]
                    attack_on = backend if trained_here else m.trained_on
                    spent = time.perf_counter() - t0
                    timings[f"evaluate {label} on {backend}{f' @{shots}' if shots else ''}"] = (
                        round(spent, 1)
                    )
                    loading = (
                        "exact"
                        if kind.kind == "aer"
                        else ("device" if kind.is_runtime else cc.amplitude_loading)
                    )
                    layout_used = (
                        "-"
                        if kind.kind == "aer"
                        else ";".join((desc.get("layout") or {}).get("used", {}))
                    )
                    base = {
                        "model": m.name,
                        "layers": m.layers,
                        "backend": backend,
                        "shots": shots,
                        "trained_on": m.trained_on,
                        "amplitude_loading": loading,
                        "layout": layout_used or cc.layout,
                        "attack_trained_on": attack_on,
                        "seed": cc.seed,
                        "attack_heldout_accuracy": res["attack_heldout_accuracy"],
                        "num_targets": res["num_targets"],
                        "num_attack_train": res["num_attack_train"],
                        "seconds": round(spent, 1),
                    }
                    tmask = T.split == "test"
                    # the same attack on non-members of the forget set's classes: how much of the
                    # success rate is membership, and how much is the class's confidence
                    nm = tmask & np.isin(T.labels, np.unique(T.labels[fmask]))
                    flagged = (
                        res["attack"].success_rate(grey_box_features(T.logits[nm], T.labels[nm]))
                        if nm.any()
                        else None
                    )
                    rows.append(
                        {
                            **base,
                            "state": "teacher",
                            "mia_success": res["success_before"],
                            "nonmember_flagged": flagged,
                            "acc_forget": _acc(T.logits[fmask], T.labels[fmask]),
                            "acc_test": _acc(T.logits[tmask], T.labels[tmask]),
                        }
                    )
                    for k in cc.methods:
                        Uk = U[k]
                        rows.append(
                            {
                                **base,
                                "state": k,
                                "mia_success": res["success"][k],
                                "nonmember_flagged": None,
                                "acc_forget": _acc(Uk.logits, Uk.labels),
                                "acc_test": None,
                            }
                        )
        finally:
            ev.close()
        timings["total"] = round(time.perf_counter() - t_all, 1)
        csv_path = out / "results.csv"
        _write_csv(csv_path, rows)
        plot = _plot(rows, out / "mia_compare.png", cc)
        summary = out / "summary.json"
        atomic_write_json(
            summary,
            {
                "rows": rows,
                "timings": timings,
                "config": asdict(cc),
                "reference": {
                    "noiseless": "≈90% before → 0% after",
                    "hardware": "≈75% before → ≈4% after",
                    "source": "QMU, arXiv 2509.06086",
                },
            },
        )
    return CompareResult(rows=rows, csv=csv_path, plot=plot, summary=summary, timings=timings)


def _eval_folder(cc: CompareConfig, spec: BackendSpec) -> str:
    """``<backend>[.<loading>][.noise<scale>][.<layout>]``: evaluations made with other
    emulation settings live side by side."""

    name = _slug(spec.name)
    if spec.kind == "aer_noisy":
        name += f".{cc.amplitude_loading}"
        if cc.noise_scale != 1.0:
            name += f".noise{cc.noise_scale:g}"
    if spec.kind != "aer" and cc.layout != "auto":
        name += f".{_slug(cc.layout)}"
    return name


def _acc(logits, labels) -> float | None:
    if len(labels) == 0:
        return None
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean())


def _write_csv(path: Path, rows: list[dict]) -> None:
    _write_rows(path, rows, CSV_COLUMNS)


def wide_rows(rows: list[dict], methods) -> list[dict]:
    """One row per (model, backend, shots, trained_on): success before and after each method."""
    out: dict = {}
    for r in rows:
        key = (r["model"], r["layers"], r["trained_on"], r["backend"], r["shots"] or 0)
        w = out.setdefault(
            key,
            {
                "model": f"{r['model']} L={r['layers']}",
                "backend": r["backend"],
                "shots": r["shots"] if r["shots"] else "exact",
                "trained_on": r["trained_on"],
                "loading": r["amplitude_loading"],
                "attack_on": r.get("attack_trained_on"),
                "attack_acc": r["attack_heldout_accuracy"],
            },
        )
        if r["state"] == "teacher":
            w["before"] = r["mia_success"]
            w["nonmember_flagged"] = r.get("nonmember_flagged")
            w["acc_test"] = r["acc_test"]
        else:
            w[f"after_{r['state']}"] = r["mia_success"]
    return list(out.values())


def _plot(rows: list[dict], path: Path, cc: CompareConfig) -> Path | None:
    """Bars of before/after per backend (exact evaluation) and the shot sweep, per model."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = []
    for r in rows:
        k = (r["model"], r["layers"], r["trained_on"])
        if k not in keys:
            keys.append(k)
    states = ["teacher", *cc.methods]
    fig, axes = plt.subplots(len(keys), 2, figsize=(12, 3.6 * len(keys)), squeeze=False)
    for i, (model, layers, trained_on) in enumerate(keys):
        mine = [
            r
            for r in rows
            if (r["model"], r["layers"], r["trained_on"]) == (model, layers, trained_on)
        ]
        exact = [r for r in mine if not r["shots"]]
        backends = list(dict.fromkeys(r["backend"] for r in exact))
        ax = axes[i][0]
        width = 0.8 / len(states)
        for j, st in enumerate(states):
            vals = [
                next(
                    (r["mia_success"] for r in exact if r["backend"] == b and r["state"] == st),
                    math.nan,
                )
                for b in backends
            ]
            # an outline keeps a zero-height bar visible (a line at 0), and every bar is labelled
            bars = ax.bar(
                np.arange(len(backends)) + (j - (len(states) - 1) / 2) * width,
                vals,
                width,
                edgecolor="black",
                linewidth=0.6,
                label="before (teacher)" if st == "teacher" else f"after {st}",
            )
            ax.bar_label(
                bars,
                labels=["" if math.isnan(v) else f"{v:.2f}" for v in vals],
                fontsize=6,
                padding=1,
            )
        # the attack's false-positive rate on non-members of the class: the level "before" and
        # "after" must be read against
        labelled = False
        for pos, b in enumerate(backends):
            fp = next(
                (
                    r.get("nonmember_flagged")
                    for r in exact
                    if r["backend"] == b and r["state"] == "teacher"
                ),
                None,
            )
            if fp is not None and not math.isnan(fp):
                ax.hlines(
                    fp,
                    pos - 0.45,
                    pos + 0.45,
                    colors="crimson",
                    linestyles="--",
                    linewidth=1.2,
                    label=None if labelled else "non-members flagged (false-positive baseline)",
                )
                labelled = True
        ax.set_xticks(
            np.arange(len(backends)),
            [b.replace("aer_noisy:", "noisy:") for b in backends],
            fontsize=8,
        )
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("MIA success (forget class)")
        ax.set_title(f"{model} L={layers}, trained on {trained_on}", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[i][1]
        sweep = [r for r in mine if r["shots"]]
        if sweep:
            for st in states:
                pts = sorted((r["shots"], r["mia_success"]) for r in sweep if r["state"] == st)
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker="o",
                    label="before (teacher)" if st == "teacher" else f"after {st}",
                )
            ax.set_xscale("log", base=2)
            ax.set_xlabel(f"shots ({sweep[0]['backend']})")
            ax.set_ylim(-0.02, 1.05)
            ax.set_title("shot sweep", fontsize=9)
            ax.legend(fontsize=7)
        else:
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------
# several seeds: the headline numbers as distributions

#: Row fields that identify one cell of the comparison (everything but the seed and results).
CELL_KEYS = (
    "model",
    "layers",
    "backend",
    "shots",
    "trained_on",
    "amplitude_loading",
    "attack_trained_on",
    "state",
)
#: Result fields aggregated over seeds.
VALUE_KEYS = ("mia_success", "nonmember_flagged", "acc_forget", "acc_test")
SEEDS_CSV_COLUMNS = (
    [*CELL_KEYS, "n_seeds"]
    + [f"{k}_{s}" for k in VALUE_KEYS for s in ("mean", "std", "ci_low", "ci_high")]
    + ["seeds"]
)


#: The mean, std and 95% t-interval over seeds, one helper for every table (evaluation.stats).
interval = t_interval


def aggregate_seeds(rows: list[dict]) -> list[dict]:
    """One row per cell: mean, std and 95% CI (clipped to [0, 1]) of every result over the seeds
    that produced it; the per-seed values stay in the per-seed ``results.csv`` files."""
    cells: dict = {}
    for r in rows:
        cells.setdefault(tuple(r.get(k) for k in CELL_KEYS), []).append(r)
    out = []
    for key, members in cells.items():
        row = dict(zip(CELL_KEYS, key))
        row["n_seeds"] = len(members)
        row["seeds"] = " ".join(str(m["seed"]) for m in members)
        for k in VALUE_KEYS:
            ci = interval([m.get(k) for m in members], bounds=(0.0, 1.0))  # rates, accuracies
            for s in ("mean", "std", "ci_low", "ci_high"):
                row[f"{k}_{s}"] = ci[s]
        out.append(row)
    return out


def shape_claims(agg: list[dict], methods) -> list[dict]:
    """QMU's claims judged on the intervals, per model and exact evaluation backend:
    ``forgets`` — after each method, the success rate's CI lies below the "before" CI;
    ``above_fpr`` — "before" lies above the attack's false-positive rate on non-members of the
    same class (otherwise the "before" success is class confidence, not membership)."""
    claims = []
    exact = [r for r in agg if not r["shots"]]
    for r in exact:
        if r["state"] != "teacher":
            continue
        same = [
            a
            for a in exact
            if all(a[k] == r[k] for k in ("model", "layers", "backend", "trained_on"))
        ]
        for m in methods:
            after = next((a for a in same if a["state"] == m), None)
            if after is None or after["mia_success_mean"] is None:
                continue
            claims.append(
                {
                    "model": r["model"],
                    "layers": r["layers"],
                    "backend": r["backend"],
                    "claim": f"after {m} < before",
                    "holds": bool(after["mia_success_ci_high"] < r["mia_success_ci_low"]),
                    "before": [r["mia_success_ci_low"], r["mia_success_ci_high"]],
                    "after": [after["mia_success_ci_low"], after["mia_success_ci_high"]],
                }
            )
        if r["nonmember_flagged_mean"] is not None:
            claims.append(
                {
                    "model": r["model"],
                    "layers": r["layers"],
                    "backend": r["backend"],
                    "claim": "before > non-members flagged",
                    "holds": bool(r["mia_success_ci_low"] > r["nonmember_flagged_ci_high"]),
                    "before": [r["mia_success_ci_low"], r["mia_success_ci_high"]],
                    "nonmember_flagged": [
                        r["nonmember_flagged_ci_low"],
                        r["nonmember_flagged_ci_high"],
                    ],
                }
            )
    return claims


@dataclass
class SeedsResult:
    per_seed: list[CompareResult]
    aggregate: list[dict]
    claims: list[dict]
    csv: Path
    summary: Path
    seconds: float


def run_compare_seeds(
    cc: CompareConfig, out: str | Path, *, seeds: int, progress: bool = True, echo=print
) -> SeedsResult:
    """:func:`run_compare` for seeds ``cc.seed … cc.seed + seeds − 1`` (each into
    ``out/seed-<s>``, each resumable), then ``results_seeds.csv`` (mean, std, 95% t-interval per
    cell), ``claims.json`` (QMU's statements judged on the intervals) and ``summary_seeds.json``.

    Raises:
        BadInputError: ``seeds`` outside 1 … 50.
    """
    if not 1 <= seeds <= 50:
        raise BadInputError(f"--seeds must be between 1 and 50, not {seeds}")
    _validate(cc)
    from dataclasses import replace

    out = Path(out)
    t0 = time.perf_counter()
    results = []
    for s in range(cc.seed, cc.seed + seeds):
        echo(f"[mia-compare] seed {s} ({s - cc.seed + 1} of {seeds})")
        results.append(
            run_compare(replace(cc, seed=s), out / f"seed-{s}", progress=progress, echo=echo)
        )
    rows = [r for res in results for r in res.rows]
    agg = aggregate_seeds(rows)
    claims = shape_claims(agg, cc.methods)
    csv_path = out / "results_seeds.csv"
    _write_rows(csv_path, agg, SEEDS_CSV_COLUMNS)
    seconds = round(time.perf_counter() - t0, 1)
    summary = out / "summary_seeds.json"
    atomic_write_json(out / "claims.json", claims)
    atomic_write_json(
        summary,
        {
            "config": asdict(cc),
            "seeds": list(range(cc.seed, cc.seed + seeds)),
            "interval": INTERVAL_METHOD,
            "aggregate": agg,
            "claims": claims,
            "seconds": seconds,
            "per_seed_seconds": {
                str(res.rows[0]["seed"]) if res.rows else "?": res.timings.get("total")
                for res in results
            },
        },
    )
    return SeedsResult(
        per_seed=results,
        aggregate=agg,
        claims=claims,
        csv=csv_path,
        summary=summary,
        seconds=seconds,
    )


def _write_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(
            {
                k: (
                    ""
                    if r.get(k) is None
                    else (f"{r[k]:.4f}" if isinstance(r.get(k), float) else r[k])
                )
                for k in columns
            }
        )
    atomic_write_text(path, buf.getvalue())
