"""Unlearning methods (methods.md §3): each one's defining effect, the registry contract, resume
after an interruption, and option validation before any circuit runs.

Everything runs on the exact noiseless engine with the small Iris teacher of ``conftest.py`` (or a
freshly built HQML-deep model where BatchNorm matters), with tiny epoch counts.
"""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from qmu_qiskit.exceptions import BadInputError
from qmu_qiskit.pipeline import method_data
from qmu_qiskit.unlearning.base import (
    METHODS,
    RecipeInfo,
    UnlearnContext,
    available_methods,
    get_method,
    resolve_options,
)

EXPECTED = {
    "retrain",
    "finetune",
    "ga",
    "neggrad_plus",
    "fisher",
    "cf_k",
    "eu_k",
    "scrub",
    "scrub_r",
    "certified",
    "qmul",
    "lca",
    "adv_uniform",
    "ssd",
    "rga",
    "dg",
    "cf_k_hqml",
    "eu_k_hqml",
    "scrub_hqml",
    "certified_hqml",
    "qmul_hqml",
}
SOURCES = (
    "HQML",
    "QMU",
    "DG-QMU",
    "Guo et al",
    "Kurmanji et al",
    "Goel et al",
    "Foster",
    "oracle",
    "Golatkar",
    "Thudi",
)


# ---------------------------------------------------------------------------------------------
# fixtures: a loaded teacher and contexts built the way pipeline._unlearn_one builds them


@pytest.fixture(scope="module")
def teacher(iris_teacher):
    from qmu_qiskit.pipeline import TeacherRun, make_executor

    run = TeacherRun.load(iris_teacher)
    executor = make_executor(run.cfg.backend, seed=0)
    model = run.model(executor)
    model.eval()
    yield SimpleNamespace(run=run, executor=executor, model=model)
    executor.close()


def make_ctx(
    teacher, workdir, method, *, forget="subset:0.1", options=None, model_name=None, seed=0
):
    """An :class:`UnlearnContext` as ``pipeline._unlearn_one`` builds it (``model_name``: use a fresh,
    untrained model of that registry name as the "teacher" instead of the trained one)."""
    from qmu_qiskit.data import resolve_forget
    from qmu_qiskit.models.hybrid import ModelSpec, build_model
    from qmu_qiskit.pipeline import model_spec

    run = teacher.run
    bundle, cfg = run.bundle, run.cfg
    fset = resolve_forget(forget, bundle, seed=cfg.data.seed)
    recipe = RecipeInfo(
        dataset=cfg.data.dataset,
        lr=cfg.training.lr,
        batch_size=cfg.training.batch_size,
        epochs=cfg.training.epochs,
    )
    opts = resolve_options(method, options, recipe)
    spec = (
        model_spec(cfg, bundle)
        if model_name is None
        else ModelSpec(model_name, cfg.model.qubits, 1)
    )

    def make_model(s):
        return build_model(spec, num_classes=bundle.num_classes, executor=teacher.executor, seed=s)

    if model_name is None:
        model_teacher = teacher.model
    else:
        model_teacher = make_model(123)
        model_teacher.eval()
    data = method_data(bundle, fset)  # the splits pipeline.unlearn gives a method
    return UnlearnContext(
        teacher=model_teacher,
        make_model=make_model,
        retain=data.retain,
        forget=data.forget,
        val=data.val,
        test=data.test,
        recipe=cfg.training,
        options=opts,
        seed=seed,
        num_classes=bundle.num_classes,
        forget_classes=data.forget_classes,
        workdir=workdir,
        progress=False,
        protocol=cfg.protocol,
        executor=teacher.executor,
        fingerprint="test",
    )


def run(teacher, tmp_path, method, **kw):
    ctx = make_ctx(teacher, tmp_path / method, method, **kw)
    result = get_method(method).fn(ctx)
    result.model.eval()
    return ctx, result


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def ce(model, X, y) -> float:
    from qmu_qiskit.unlearning.methods._common import logits_of

    return float(F.cross_entropy(logits_of(model, X), y))


def probs(model, X) -> torch.Tensor:
    from qmu_qiskit.unlearning.methods._common import logits_of

    return logits_of(model, X).double().softmax(1)


# ---------------------------------------------------------------------------------------------
# registry


def test_every_method_is_registered_with_documented_options():
    assert EXPECTED <= set(available_methods())
    recipe_small = RecipeInfo(dataset="iris", lr=1e-2, batch_size=16, epochs=40)
    recipe_large = RecipeInfo(dataset="mnist", lr=1e-3, batch_size=32, epochs=40)
    for name in EXPECTED - {"retrain"}:
        info = METHODS[name]
        assert info.fn.__doc__ and any(s in (info.fn.__doc__ + info.source) for s in SOURCES), name
        for opt_name, opt in info.options.items():
            assert opt.help and "\n" not in opt.help, (name, opt_name)
        small = resolve_options(name, {}, recipe_small)
        large = resolve_options(name, {}, recipe_large)
        if "lr" in small:
            assert small["lr"] == 1e-2 and large["lr"] == 1e-3
    budgets = {  # HQML's epoch budgets (methods.md §3): Iris, MNIST/Fashion
        "ga": (15, 25),
        "fisher": (15, 25),
        "neggrad_plus": (15, 25),
        "cf_k": (15, 25),
        "cf_k_hqml": (15, 25),
        "eu_k": (15, 25),
        "eu_k_hqml": (15, 25),
        "lca": (15, 25),
        "scrub": (50, 60),
        "scrub_r": (50, 60),
        "scrub_hqml": (50, 60),
        "certified_hqml": (5, 12),
        "qmul": (5, 12),
        "qmul_hqml": (5, 12),
        "adv_uniform": (10, 15),
    }
    for name, (iris, large) in budgets.items():
        assert resolve_options(name, {}, recipe_small)["epochs"] == iris, name
        assert resolve_options(name, {}, recipe_large)["epochs"] == large, name
    defaults = resolve_options("ssd", {}, recipe_small)
    assert (defaults["alpha"], defaults["lam"], defaults["quantum_importance"]) == (
        10.0,
        1.0,
        "fisher",
    )
    assert resolve_options("fisher", {}, recipe_small)["lam"] == 10.0
    assert resolve_options("scrub_hqml", {}, recipe_small)["lam_f"] == 1.5
    assert resolve_options("adv_uniform", {}, recipe_small)["eps"] == 0.1
    assert METHODS["dg"].requires_class_forget


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("scrub", {"nope": 1}, "has no option 'nope'"),
        ("ssd", {"alpha": "ten"}, "must be a float"),
        ("cf_k", {"k": 1.5}, "must be a int"),
        ("cf_k", {"k": 0}, "must be ≥ 1"),
        ("ssd", {"quantum_importance": "qfi"}, "must be one of fisher, fubini_study"),
        ("certified", {"delta": 2.0}, "must be ≤ 1.0"),
    ],
)
def test_bad_options_fail_before_any_circuit(iris_teacher_copy, method, options, message):
    from qmu_qiskit import pipeline

    with pytest.raises(BadInputError, match=message):
        pipeline.unlearn(
            iris_teacher_copy, "subset:0.1", [method], options={method: options}, progress=False
        )
    assert not (iris_teacher_copy / "unlearn").exists()


def test_class_method_refuses_subset_request_before_any_circuit(iris_teacher_copy):
    from qmu_qiskit import pipeline

    with pytest.raises(BadInputError, match="class:K"):
        pipeline.unlearn(iris_teacher_copy, "subset:0.1", ["dg"], progress=False)
    assert not (iris_teacher_copy / "unlearn").exists()


@pytest.fixture(scope="module")
def shared_teacher(iris_teacher, tmp_path_factory):
    dst = tmp_path_factory.mktemp("shared") / "iris"
    shutil.copytree(iris_teacher, dst, ignore=shutil.ignore_patterns("unlearn", ".lock"))
    return dst


@pytest.mark.parametrize("method", sorted(EXPECTED - {"retrain"}))
def test_every_method_runs_through_the_pipeline(shared_teacher, method):
    from qmu_qiskit import pipeline

    options = {"epochs": 1} if "epochs" in get_method(method).options else {}
    forget = "class:0" if method == "dg" else "subset:0.1"
    summaries = pipeline.unlearn(
        shared_teacher, forget, [method], options={method: options}, progress=False, overwrite=True
    )
    summary = summaries[-1]
    assert summary.method == method
    assert (summary.path / "model.pt").exists() and (summary.path / "metrics.json").exists()
    assert 0.0 <= summary.metrics["acc_retain_unlearn"] <= 1.0


# ---------------------------------------------------------------------------------------------
# resume after an interruption


class Killed(Exception):
    pass


def _kill_after_first_epoch(monkeypatch):
    original = UnlearnContext.epochs

    def epochs(self, *args, **kwargs):
        for epoch in original(self, *args, **kwargs):
            if epoch == 2:  # epoch 1's checkpoint is on disk
                raise Killed
            yield epoch

    monkeypatch.setattr(UnlearnContext, "epochs", epochs)


@pytest.mark.parametrize(
    "method, options, model_name",
    [
        ("scrub_r", {"epochs": 3, "msteps": 2}, None),
        ("certified_hqml", {"epochs": 3}, None),  # gradient noise from a checkpointed generator
        ("qmul", {"epochs": 3}, None),
        ("neggrad_plus", {"epochs": 3}, "hqml-deep"),  # dropout: the global RNG is checkpointed
    ],
)
def test_interrupted_method_resumes_to_identical_weights(
    teacher, tmp_path, monkeypatch, method, options, model_name
):
    def ctx(workdir):
        return make_ctx(teacher, workdir, method, options=options, model_name=model_name)

    reference = get_method(method).fn(ctx(tmp_path / "whole"))
    again = get_method(method).fn(ctx(tmp_path / "again"))
    workdir = tmp_path / "killed"
    with monkeypatch.context() as patch:
        _kill_after_first_epoch(patch)
        with pytest.raises(Killed):
            get_method(method).fn(ctx(workdir))
    assert (workdir / "checkpoints" / "method.pt").exists()
    resumed_ctx = ctx(workdir)
    resumed = get_method(method).fn(resumed_ctx)
    for key, value in state(reference.model).items():
        assert torch.equal(value, again.model.state_dict()[key]), key  # the seed alone decides
    for key, value in state(reference.model).items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.info == reference.info
    # the history of the epoch before the kill comes back from the checkpoint
    history = resumed_ctx.history()
    assert [r["epoch"] for r in history] == [1, 2, 3]
    whole_ctx = ctx(tmp_path / "whole2")
    get_method(method).fn(whole_ctx)
    assert history == whole_ctx.history()


# ---------------------------------------------------------------------------------------------
# per-epoch history


@pytest.mark.parametrize(
    "method, options, model_name, selection",
    [
        ("rga", {"epochs": 2}, None, "last"),
        ("scrub", {"epochs": 2, "msteps": 1}, None, "val"),
        ("neggrad_plus", {"epochs": 2}, "hqml-deep", "last"),  # dropout and BatchNorm
    ],
)
def test_recording_the_history_changes_no_weight_or_number(
    teacher, tmp_path, method, options, model_name, selection
):
    """The per-epoch forget / retain evaluations are inference only: the returned weights, the
    method's info and the selection's scores are bit-identical with and without them."""
    runs = {}
    for record in (False, True):
        ctx = make_ctx(
            teacher, tmp_path / str(record), method, options=options, model_name=model_name
        )
        ctx.selection = selection
        ctx.record_history = record
        result = get_method(method).fn(ctx)
        runs[record] = (ctx, state(result.model), result.info, ctx.selection_report())
    (ctx_off, w_off, info_off, sel_off), (ctx_on, w_on, info_on, sel_on) = runs[False], runs[True]
    assert w_off.keys() == w_on.keys()
    for key in w_off:
        assert torch.equal(w_off[key], w_on[key]), key
    assert info_off == info_on and sel_off == sel_on
    assert "forget_acc" in ctx_on.history()[0] and "forget_acc" not in ctx_off.history()[0]
    # what the method logs is the same either way
    assert [r["train_loss"] for r in ctx_off.history()] == [
        r["train_loss"] for r in ctx_on.history()
    ]


def test_recording_the_history_changes_nothing_on_a_shot_based_backend(teacher, tmp_path):
    """Shots on Aer: every job's simulator seed comes from its content, so the extra inference
    jobs shift no seed of a training job — and the cost of the method stays as it was."""
    from qmu_qiskit.config import BackendConfig
    from qmu_qiskit.pipeline import make_executor

    executor = make_executor(BackendConfig(name="aer", shots=256), seed=0)
    try:
        model = teacher.run.model(executor)
        model.eval()
        shot_teacher = SimpleNamespace(run=teacher.run, executor=executor, model=model)
        out = {}
        for record in (False, True):
            ctx = make_ctx(shot_teacher, tmp_path / str(record), "ga", options={"epochs": 2})
            ctx.record_history = record
            with executor.cost.measure() as phase:
                result = get_method("ga").fn(ctx)
            method_cost = phase.record
            if record:
                method_cost = method_cost - ctx.history_cost
            out[record] = (state(result.model), method_cost, ctx)
    finally:
        executor.close()
    for key, value in out[False][0].items():
        assert torch.equal(value, out[True][0][key]), key
    for field in ("jobs", "circuit_evaluations", "shots", "gradient_calls"):
        assert getattr(out[False][1], field) == getattr(out[True][1], field), field
    assert out[True][2].history_cost.jobs > 0  # the history did run its own jobs


def test_history_has_one_row_per_epoch_with_its_fields(teacher, tmp_path):
    from qmu_qiskit.training import accuracy, predict_logits

    ctx = make_ctx(teacher, tmp_path, "finetune", options={"epochs": 3})
    ctx.selection = "val"
    ctx.options = {**ctx.options, "patience": 0}
    result = get_method("finetune").fn(ctx)
    history = ctx.history()
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for row in history:
        assert {"epoch", "train_loss", "forget_acc", "retain_acc", "val_acc"} <= row.keys()
        assert row["train_loss"] > 0  # a cross-entropy
        for key in ("forget_acc", "retain_acc", "val_acc"):
            assert 0.0 <= row[key] <= 1.0
    assert [r["val_acc"] for r in history] == ctx.selection_report()["epoch_scores"]
    # Iris sets are small: measured in full; the returned epoch's row is the returned model's
    info = ctx.history_info()
    assert info["forget"]["evaluated"] == info["forget"]["size"] == len(ctx.forget[1])
    assert info["retain"]["subsample"] is None
    chosen = history[ctx.selection_report()["selected_epoch"] - 1]
    assert chosen["forget_acc"] == accuracy(
        predict_logits(result.model, ctx.forget[0]), ctx.forget[1]
    )
    assert chosen["retain_acc"] == accuracy(
        predict_logits(result.model, ctx.retain[0]), ctx.retain[1]
    )


def test_history_subsamples_a_large_retain_set_with_a_fixed_seed(teacher, tmp_path):
    from qmu_qiskit.training import accuracy, predict_logits

    rows = []
    for name in ("a", "b"):
        ctx = make_ctx(teacher, tmp_path / name, "ga", options={"epochs": 1})
        ctx.HISTORY_SAMPLES = 20  # the retain set (~100 samples) is "large" here
        result = get_method("ga").fn(ctx)
        rows.append(ctx.history()[0])
    info = ctx.history_info()
    assert info["retain"]["evaluated"] == 20 < info["retain"]["size"]
    assert "seed" in info["retain"]["subsample"]
    idx = ctx._history_indices()["retain"]
    assert len(set(idx.tolist())) == 20
    X, y = ctx.retain
    assert rows[1]["retain_acc"] == accuracy(predict_logits(result.model, X[idx]), y[idx])
    assert rows[0] == rows[1]  # the same subsample (and numbers) every time


def test_pipeline_run_resumes_after_interruption(shared_teacher, monkeypatch):
    from qmu_qiskit import pipeline

    opts = {"fisher": {"epochs": 3}}
    done = pipeline.unlearn(
        shared_teacher, "subset:0.2", ["fisher"], options=opts, progress=False, overwrite=True
    )[-1]
    whole = torch.load(done.path / "model.pt", weights_only=True)
    with monkeypatch.context() as patch:
        _kill_after_first_epoch(patch)
        with pytest.raises(Killed):
            pipeline.unlearn(
                shared_teacher,
                "subset:0.2",
                ["fisher"],
                options=opts,
                progress=False,
                overwrite=True,
            )
    resumed = pipeline.unlearn(
        shared_teacher, "subset:0.2", ["fisher"], options=opts, progress=False
    )[-1]
    again = torch.load(resumed.path / "model.pt", weights_only=True)
    for key, value in whole.items():
        assert torch.equal(value, again[key]), key
    # metrics.json keeps every epoch's row, the one before the kill included
    metrics = json.loads((resumed.path / "metrics.json").read_text())
    history = metrics["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history == done.metrics["history"]
    assert {"train_loss", "forget_acc", "retain_acc"} <= history[0].keys()
    assert metrics["history_info"]["recorded"] is True
    cost = json.loads((resumed.path / "cost.json").read_text())
    assert cost["history"]["circuit_evaluations"] > 0


# ---------------------------------------------------------------------------------------------
# defining effects


def test_ga_raises_the_forget_loss(teacher, tmp_path):
    ctx, result = run(teacher, tmp_path, "ga", options={"epochs": 2})
    Xf, yf = ctx.tensors("forget")
    # the forget CE rises by 0.062 … 0.278 over 9 trajectories (teacher seeds 0-2 × method seeds
    # 0-2); the threshold keeps a 3× margin below the smallest, so other FP kernels pass too
    assert ce(result.model, Xf, yf) > ce(teacher.model, Xf, yf) + 0.02


def test_fisher_penalty_pulls_towards_the_teacher(teacher, tmp_path):
    from qmu_qiskit.unlearning.methods._common import diag_fisher

    ctx0, free = run(teacher, tmp_path / "l0", "fisher", options={"epochs": 3, "lam": 0.0})
    _, pulled = run(teacher, tmp_path / "big", "fisher", options={"epochs": 3, "lam": 1e5})
    _, ga = run(teacher, tmp_path / "ga", "ga", options={"epochs": 3})
    Xf, yf = ctx0.tensors("forget")
    fisher = diag_fisher(
        ctx0.copy_teacher(), Xf, yf, ctx0.options["batch_size"], ctx0.generator(salt=1)
    )
    theta0 = list(teacher.model.parameters())

    def weighted(model):
        return sum(
            float((f * (p.detach().double() - q.detach().double()) ** 2).sum())
            for f, p, q in zip(fisher, model.parameters(), theta0)
        )

    assert weighted(pulled.model) < 0.5 * weighted(free.model)
    # λ = 0 is plain gradient ascent on the same batches
    for p, q in zip(free.model.parameters(), ga.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_rga_step_is_descent_minus_rescaled_ascent(teacher, tmp_path):
    from qmu_qiskit.unlearning.methods._common import grads, norm

    opts = {"epochs": 1, "batch_size": 1000, "optimizer": "sgd", "lr": 0.05, "alpha": 0.7}
    ctx, result = run(teacher, tmp_path, "rga", options=opts)
    model = ctx.copy_teacher()
    model.train()
    params = list(model.parameters())
    (Xr, yr), (Xf, yf) = ctx.tensors("retain"), ctx.tensors("forget")
    # one batch each: the loaders shuffle, the mean losses do not depend on the order
    g_r = grads(F.cross_entropy(model(Xr), yr), params)
    g_f = grads(F.cross_entropy(model(Xf), yf), params)
    scale = float(norm(g_r) / norm(g_f))
    assert result.info["last_scale"] == pytest.approx(scale, rel=1e-5)
    for p0, p1, a, b in zip(params, result.model.parameters(), g_r, g_f):
        expected = p0.detach() - 0.05 * (a - 0.7 * scale * b)
        assert torch.allclose(p1.detach(), expected, atol=1e-5)


def test_cf_k_leaves_frozen_groups_bit_identical(teacher, tmp_path):
    # the deep head has BatchNorm: frozen groups keep their running statistics too
    ctx, result = run(
        teacher, tmp_path, "cf_k", options={"epochs": 2, "k": 2}, model_name="hqml-deep"
    )
    groups = result.model.layer_groups()
    before = dict(ctx.teacher.layer_groups())
    for name, module in groups[:-2]:
        for key, value in module.state_dict().items():
            assert torch.equal(value, before[name].state_dict()[key]), (name, key)
    for name, module in groups[-2:]:
        assert not torch.equal(module.weight, before[name].weight), name
    assert result.info["trained_groups"] == [n for n, _ in groups[-2:]]
    assert all(p.requires_grad for p in result.model.parameters())


def test_cf_k_hqml_freezes_the_first_groups_and_ascends(teacher, tmp_path):
    ctx, result = run(teacher, tmp_path, "cf_k_hqml", options={"epochs": 2, "k": 1})
    assert torch.equal(result.model.quantum.weight, teacher.model.quantum.weight)
    assert not torch.equal(result.model.last_linear.weight, teacher.model.last_linear.weight)
    Xf, yf = ctx.tensors("forget")
    assert ce(result.model, Xf, yf) > ce(teacher.model, Xf, yf)


def test_eu_k_reinitialises_exactly_the_last_k_groups(teacher, tmp_path):
    ctx, result = run(teacher, tmp_path / "e0", "eu_k", options={"epochs": 0, "k": 2})
    fresh = dict(ctx.make_model(ctx.seed).layer_groups())
    old = dict(teacher.model.layer_groups())
    groups = result.model.layer_groups()
    for name, module in groups:
        ref = fresh[name] if name in {n for n, _ in groups[-2:]} else old[name]
        for key, value in module.state_dict().items():
            assert torch.equal(value, ref.state_dict()[key]), (name, key)
    # trained: the frozen groups stay the teacher's, the re-initialised ones move from the fresh init
    _, trained = run(teacher, tmp_path / "e2", "eu_k", options={"epochs": 2, "k": 2})
    groups = trained.model.layer_groups()
    for name, module in groups[:-2]:
        assert torch.equal(module.weight, old[name].weight)
    for name, module in groups[-2:]:
        assert not torch.equal(module.weight, fresh[name].weight)


def test_eu_k_hqml_reinitialises_linear_layers_then_trains_everything(teacher, tmp_path):
    ctx, result = run(teacher, tmp_path / "e0", "eu_k_hqml", options={"epochs": 0, "k": 1})
    fresh = ctx.make_model(ctx.seed)
    assert torch.equal(result.model.last_linear.weight, fresh.last_linear.weight)
    assert torch.equal(result.model.head[0].weight, teacher.model.head[0].weight)
    assert torch.equal(result.model.quantum.weight, teacher.model.quantum.weight)
    _, trained = run(teacher, tmp_path / "e2", "eu_k_hqml", options={"epochs": 2, "k": 1})
    assert not torch.equal(trained.model.quantum.weight, teacher.model.quantum.weight)
    assert not torch.equal(trained.model.head[0].weight, teacher.model.head[0].weight)


# Margins measured over 9 trajectories (conftest's teacher recipe with teacher seeds 0-2 × method
# seeds 0-2, OMP_NUM_THREADS=1 and 2; `python benchmarks/method_margins.py 0,1,2 0,1,2`):
#   KL_f(with max-steps) / KL_f(without):   scrub 58 … 3055,   scrub_hqml 169 … 6211
#   KL_f / KL_r of the same student:        scrub 5.0 … 14.5,  scrub_hqml 1.85 … 5.2
# scrub_hqml's second ratio is bimodal (≈5 or ≈2 depending on the trajectory; 2.8 on the machine
# of issue 13), so the thresholds sit well below the smallest measured value, not at a typical one.
@pytest.mark.parametrize(
    "method, with_max, without_max, vs_plain, vs_retain",
    [
        # γ = 0: the min-step only distils the teacher on D_r, so any divergence comes from the max-steps
        ("scrub", {"epochs": 2, "msteps": 2, "gamma": 0.0, "beta": 1.0}, {"msteps": 0}, 10.0, 2.0),
        ("scrub_hqml", {"epochs": 3}, {"lam_f": 0.0}, 10.0, 1.2),
    ],
)
def test_scrub_moves_the_student_away_from_the_teacher_on_the_forget_set(
    teacher, tmp_path, method, with_max, without_max, vs_plain, vs_retain
):
    from qmu_qiskit.unlearning.methods._common import clamped_kl

    ctx, result = run(teacher, tmp_path / "max", method, forget="class:0", options=with_max)
    _, plain = run(
        teacher, tmp_path / "plain", method, forget="class:0", options={**with_max, **without_max}
    )
    Xr, Xf = ctx.tensors("retain")[0], ctx.tensors("forget")[0]

    def kl(model, X):
        return float(clamped_kl(probs(teacher.model, X), probs(model, X)))

    assert kl(result.model, Xf) > vs_plain * kl(plain.model, Xf)
    assert kl(result.model, Xf) > vs_retain * kl(result.model, Xr)


def test_scrub_r_returns_the_rewind_checkpoint(teacher, tmp_path):
    from qmu_qiskit.training import load_checkpoint

    ctx, result = run(teacher, tmp_path, "scrub_r", options={"epochs": 4, "msteps": 3})
    info = result.info
    saved = load_checkpoint(ctx.checkpoint)["state"]
    errors = {int(k): v for k, v in saved["forget_errors"].items()}
    assert sorted(errors) == [1, 2, 3, 4]
    gaps = {e: abs(v - info["reference_val_error"]) for e, v in errors.items()}
    assert info["chosen_epoch"] == max(e for e in gaps if gaps[e] == min(gaps.values()))
    chosen = saved["candidates"][str(info["chosen_epoch"])]
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, chosen[key]), key
    Xv, yv = ctx.tensors("val")
    final = ctx.copy_teacher()
    final.load_state_dict(load_checkpoint(ctx.checkpoint)["model"])
    ref = float((probs(final, Xv).argmax(1) != yv).double().mean())
    assert info["reference_val_error"] == pytest.approx(ref)


def test_certified_newton_step_matches_retraining_the_head(teacher, tmp_path):
    from qmu_qiskit.unlearning.methods.certified import (
        _features,
        _loss_grad,
        fit_head,
        newton_removal,
    )

    ctx = make_ctx(teacher, tmp_path, "certified", forget="subset:0.02")
    (Xr, yr), (Xf, yf) = ctx.tensors("retain"), ctx.tensors("forget")
    feats = torch.cat([_features(teacher.model, Xr), _features(teacher.model, Xf)])
    feats = torch.cat([feats, torch.ones(len(feats), 1, dtype=feats.dtype)], 1)
    X = feats / feats.norm(dim=1).max()
    y = torch.cat([yr, yf])
    n_r, lam = len(yr), 1e-2
    b = torch.randn(3, X.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    whole, keep, gone = torch.arange(n_r + 2), torch.arange(n_r + 1), torch.tensor([n_r + 1])
    W = fit_head(X[whole], y[whole], 3, lam, b)
    assert float(_loss_grad(W, X[whole], y[whole], lam, b)[1].norm()) < 1e-8
    W_newton, bound = newton_removal(W, X[keep], y[keep], X[gone], y[gone], lam)
    W_retrain = fit_head(X[keep], y[keep], 3, lam, b)
    assert float((W_newton - W_retrain).norm() / W_retrain.norm()) < 1e-3
    assert float((W - W_retrain).norm()) > 20 * float((W_newton - W_retrain).norm())
    residual = float(_loss_grad(W_newton, X[keep], y[keep], lam, b)[1].norm())
    assert 0 < residual <= bound


def test_certified_reports_the_budget_and_retrains_when_it_is_exhausted(teacher, tmp_path):
    ctx, result = run(teacher, tmp_path / "ok", "certified", options={"retrain": "never"})
    info = result.info
    c = math.sqrt(2 * math.log(1.5 / 1e-4))
    assert info["budget"] == pytest.approx(1.0 * 1.0 / c)
    assert not info["retrained"] and info["newton_steps"] == 1
    assert 0 < info["residual_norm"] <= info["residual_bound"]
    assert "quantum layer" in info["not_certified"]
    # everything but the last layer is the teacher's
    for (name, p), q in zip(result.model.named_parameters(), teacher.model.parameters()):
        if not name.startswith("head.2"):
            assert torch.equal(p, q), name
    # a tiny σ leaves (almost) no budget: the head is retrained from scratch on D_r
    _, tiny = run(teacher, tmp_path / "tiny", "certified", options={"sigma": 1e-9})
    assert (
        tiny.info["retrained"] and tiny.info["retrains"] == 1 and tiny.info["residual_bound"] == 0.0
    )
    assert tiny.info["certified"] and "retrained from scratch" in tiny.info["certificate"]
    # Newton steps regardless of the budget: reported as not certified once it is exceeded
    _, never = run(
        teacher, tmp_path / "never", "certified", options={"sigma": 1e-9, "retrain": "never"}
    )
    assert not never.info["certified"] and never.info["residual_bound"] > never.info["budget"]


def test_certified_hqml_says_nothing_is_certified(teacher, tmp_path):
    _, result = run(teacher, tmp_path, "certified_hqml", options={"epochs": 1})
    assert (
        result.info["certified"] is False and "nothing is certified" in result.info["certificate"]
    )


def test_similar_label_map():
    from qmu_qiskit.unlearning.methods.relabel import similar_label_map

    logits = torch.tensor([[5.0, 4.0, 0.0], [4.0, 5.0, 0.0], [0.0, 1.0, 5.0]])
    assert similar_label_map(logits, torch.tensor([0, 1, 2]), 3) == [1, 0, 1]
    # a class without samples: HQML's zero mean (cosine 0 → first other class), or the fallback
    assert similar_label_map(logits[1:], torch.tensor([1, 2]), 3) == [1, 2, 1]
    fallback = (torch.tensor([[0.0, 0.5, 5.0]]), torch.tensor([0]))
    assert similar_label_map(logits[1:], torch.tensor([1, 2]), 3, fallback=fallback)[0] == 2


@pytest.mark.parametrize("method, sign", [("qmul", +1), ("qmul_hqml", -1)])
def test_qmul_steers_forget_samples_by_the_similar_label_map(teacher, tmp_path, method, sign):
    from qmu_qiskit.unlearning.methods._common import logits_of
    from qmu_qiskit.unlearning.methods.relabel import similar_label_map

    ctx, result = run(teacher, tmp_path, method, options={"epochs": 3})
    (Xr, yr), (Xf, yf) = ctx.tensors("retain"), ctx.tensors("forget")
    expected = similar_label_map(logits_of(teacher.model, Xr), yr, 3)
    assert result.info["similar_label_map"] == {str(c): d for c, d in enumerate(expected)}
    target = torch.tensor(expected)[yf]
    rows = torch.arange(len(yf))
    before = float(probs(teacher.model, Xf)[rows, target].mean())
    after = float(probs(result.model, Xf)[rows, target].mean())
    # measured over 9 trajectories (teacher seeds 0-2 × method seeds 0-2): qmul moves the target
    # probability by +0.030 … +0.098, qmul_hqml by −0.022 … −0.087; the sign is the property
    assert sign * (after - before) > 0.005


def test_lca_complement_set():
    from qmu_qiskit.unlearning.methods.relabel import complement_set

    X = torch.arange(8.0).reshape(4, 2)
    y = torch.tensor([0, 2, 1, 0])
    Xc, yc = complement_set(X, y, 3)
    assert len(yc) == len(Xc) == 4 * 2
    assert yc.tolist() == [1, 2, 0, 1, 0, 2, 1, 2]
    assert torch.equal(Xc, X.repeat_interleave(2, dim=0))
    assert not bool((yc == y.repeat_interleave(2)).any())


def test_lca_trains_towards_the_wrong_labels(teacher, tmp_path):
    ctx, result = run(teacher, tmp_path, "lca", options={"epochs": 3})
    Xf, yf = ctx.tensors("forget")
    assert result.info["complement_size"] == len(yf) * 2
    rows = torch.arange(len(yf))
    assert float(probs(result.model, Xf)[rows, yf].mean()) < float(
        probs(teacher.model, Xf)[rows, yf].mean()
    )


def test_adv_uniform_raises_forget_uncertainty(teacher, tmp_path):
    from qmu_qiskit.unlearning.methods.adversarial import fgsm_towards_confidence

    ctx, result = run(teacher, tmp_path, "adv_uniform")  # HQML's 10 Iris epochs
    Xf, _ = ctx.tensors("forget")

    def entropy(model):
        p = probs(model, Xf)
        return float(-(p * p.clamp_min(1e-30).log()).sum(1).mean())

    # the entropy rises by 0.076 … 0.181 over 9 trajectories (teacher seeds 0-2 × method seeds 0-2)
    assert entropy(result.model) > entropy(teacher.model) + 0.02
    # the perturbation flows through the circuit of a tabular model and is clipped to the data range
    model = ctx.copy_teacher()
    x_adv = fgsm_towards_confidence(model, Xf, 0.1, *result.info["input_range"])
    assert not model.quantum.qnn.input_gradients
    assert float((x_adv - Xf).abs().max()) == pytest.approx(0.1, abs=1e-6) or bool(
        ((x_adv == result.info["input_range"][0]) | (x_adv == result.info["input_range"][1])).any()
    )
    assert int((x_adv != Xf).sum()) > x_adv.numel() // 2


def test_ssd_dampens_exactly_the_selected_parameters(teacher, tmp_path):
    from qmu_qiskit.unlearning.methods._common import diag_fisher

    ctx, result = run(teacher, tmp_path, "ssd", options={"alpha": 3.0})
    (Xr, yr), (Xf, yf) = ctx.tensors("retain"), ctx.tensors("forget")
    model = ctx.copy_teacher()
    imp_d = diag_fisher(
        model,
        torch.cat([Xr, Xf]),
        torch.cat([yr, yf]),
        ctx.options["batch_size"],
        ctx.generator(salt=2),
    )
    imp_f = diag_fisher(model, Xf, yf, ctx.options["batch_size"], ctx.generator(salt=3))
    changed = 0
    for p0, p1, d, f in zip(teacher.model.parameters(), result.model.parameters(), imp_d, imp_f):
        mask = f > 3.0 * d
        factor = torch.clamp(d / f, max=1.0)
        assert torch.equal(p1[~mask], p0[~mask])
        expected = (p0.detach().double() * factor).to(p0.dtype)
        assert torch.allclose(p1[mask], expected[mask], rtol=1e-6, atol=0)
        changed += int(mask.sum())
    assert changed == result.info["dampened_total"] > 0


def test_fubini_study_diagonal_matches_the_library_qfi(teacher):
    from qiskit.primitives import StatevectorEstimator
    from qiskit_machine_learning.gradients import QFI, LinCombQGT

    from qmu_qiskit.unlearning.methods.dampening import fubini_study_diagonal

    X = torch.from_numpy(np.array(teacher.run.bundle.X["train"][:2], dtype=np.float32))
    g, engine = fubini_study_diagonal(teacher.model, X)
    assert engine.startswith("executor")
    qnn = teacher.model.quantum.qnn
    circuit = qnn.circuit
    weights = teacher.model.quantum.weight.detach().double().numpy()
    rows = []
    for x in X.double().numpy():
        bind = dict(zip(list(qnn.input_params) + list(qnn.weight_params), list(x) + list(weights)))
        rows.append([bind[p] for p in circuit.parameters])
    qfi = (
        QFI(LinCombQGT(StatevectorEstimator()))
        .run([circuit] * 2, np.array(rows), [list(qnn.weight_params)] * 2)
        .result()
        .qfis
    )
    reference = np.stack([np.real(np.diag(q)) / 4 for q in qfi])
    assert np.allclose(g, reference, atol=1e-6)


def test_ssd_with_fubini_study_importance(teacher, tmp_path):
    _, result = run(
        teacher, tmp_path, "ssd", options={"quantum_importance": "fubini_study", "alpha": 1.0}
    )
    assert result.info["fubini_study_engine"].startswith("executor")
    idx = set(result.info["dampened_quantum_indices"])
    w0, w1 = teacher.model.quantum.weight, result.model.quantum.weight
    assert {i for i in range(len(w0)) if w0[i] != w1[i]} <= idx


def test_dg_moves_forgotten_mass_to_its_target_and_keeps_anchors(teacher, tmp_path):
    from qmu_qiskit.unlearning.methods._common import kl_rows
    from qmu_qiskit.unlearning.methods.distribution import target_distribution

    ctx, result = run(teacher, tmp_path, "dg", forget="class:0", options={"epochs": 4})
    Xf, _ = ctx.tensors("forget")
    q = torch.tensor(result.info["target"], dtype=torch.float64)
    p0 = probs(teacher.model, Xf)
    assert torch.allclose(q, target_distribution(p0, [0], 3, eps=0.01, tau=1.0), atol=1e-6)
    assert q[0] == pytest.approx(0.01) and q.sum() == pytest.approx(1.0)
    before = float(kl_rows(q.expand(len(Xf), -1), p0.log()).mean())
    after = float(kl_rows(q.expand(len(Xf), -1), probs(result.model, Xf).log()).mean())
    assert after < 0.5 * before
    assert float(probs(result.model, Xf)[:, 0].mean()) < float(p0[:, 0].mean()) - 0.2
    assert result.info["anchors"] == 2 * 8
    # the constraint is enforced by penalty, not projection: anchor KL / δ measured 1.07 … 1.35
    # over 9 trajectories (teacher seeds 0-2 × method seeds 0-2); far below it without the anchor
    assert result.info["anchor_kl"] <= ctx.options["delta"] * 2.0
    # the uniform-target baseline spreads the retained mass evenly
    _, uniform = run(
        teacher, tmp_path / "u", "dg", forget="class:0", options={"epochs": 1, "target": "uniform"}
    )
    assert uniform.info["target"][1] == pytest.approx(0.495) and uniform.info["target"][
        2
    ] == pytest.approx(0.495)


def _fd_fubini_study(circuit, input_params, weight_params, x, w, h=1e-5) -> np.ndarray:
    """g_jj = ⟨∂ψ|∂ψ⟩ − |⟨ψ|∂ψ⟩|² by central differences of the exact statevector."""
    from qiskit.quantum_info import Statevector

    def psi(weights):
        bind = dict(zip(list(input_params) + list(weight_params), list(x) + list(weights)))
        return Statevector(circuit.assign_parameters(bind)).data

    base = psi(w)
    out = []
    for j in range(len(w)):
        up, down = w.copy(), w.copy()
        up[j] += h
        down[j] -= h
        d = (psi(up) - psi(down)) / (2 * h)
        out.append(np.real(np.vdot(d, d)) - abs(np.vdot(base, d)) ** 2)
    return np.array(out)


@pytest.mark.parametrize("shared_weight", [False, True])
def test_fubini_study_diagonal_of_u_gates_and_the_library_fallback(teacher, shared_weight):
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector
    from torch import nn

    from qmu_qiskit.models.hybrid import HybridModel, quantum_layer
    from qmu_qiskit.unlearning.methods.dampening import fubini_study_diagonal

    x, t = ParameterVector("x", 2), ParameterVector("t", 7)
    qc = QuantumCircuit(2)
    qc.ry(x[0], 0)
    qc.ry(x[1], 1)
    qc.u(t[0], t[1], t[2], 0)
    qc.u(t[3], t[4], t[5], 1)
    qc.cx(0, 1)
    qc.rx(2 * t[6] + 0.3, 0)
    qc.p(t[0] if shared_weight else 0.4, 1)  # a weight used twice: no single-rotation form
    quantum, width = quantum_layer(
        qc,
        list(x),
        list(t),
        executor=teacher.executor,
        readout="estimator",
        input_gradients=False,
        generator=torch.Generator().manual_seed(3),
    )
    model = HybridModel(quantum, nn.Sequential(nn.Linear(width, 2)))
    X = torch.tensor([[0.3, 1.1], [2.0, -0.4]])
    g, engine = fubini_study_diagonal(model, X)
    assert engine.startswith("exact statevector" if shared_weight else "executor")
    w = model.quantum.weight.detach().double().numpy()
    for row, xv in zip(g, X.double().numpy()):
        assert np.allclose(row, _fd_fubini_study(qc, x, t, xv, w), atol=1e-6)
