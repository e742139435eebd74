"""The faithful `hqml` protocol and the `fixed` protocol's rules (issue 12).

* the per-method early-stopping wrapper: HQML's epoch-1 rule and strict improvement on TEST
  accuracy, patience, validation selection under `fixed`, the last epoch elsewhere, resume;
* HQML's patience per dataset and method;
* each data quirk against an independent re-enactment of HQML's code (scikit-learn / torch calls
  as HQML's scripts make them);
* CF-k1 freezing the whole CNN group, FGSM in train mode, Agree_retain aligned under the
  shuffled-KL quirk, paired methods cycling under `fixed`.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from torch import nn

from qmu_qiskit.unlearning.base import RecipeInfo, UnlearnContext, method_selection, resolve_options

# ---------------------------------------------------------------------------------------------
# the wrapper, on a model whose accuracy per epoch is set by the loop body

EYE = np.eye(3, dtype=np.float32)
PERMS = {  # weight matrices of a bias-free Linear(3, 3): accuracy on (EYE, [0, 1, 2])
    "right": np.eye(3),
    "shift": np.roll(np.eye(3), 1, axis=0),
    "swap": np.eye(3)[[1, 0, 2]],
}


def _linear() -> nn.Module:
    return nn.Linear(3, 3, bias=False)


def _ctx(tmp_path, selection: str, patience: int, *, val_labels=(1, 2, 0)) -> UnlearnContext:
    model = _linear()
    return UnlearnContext(
        teacher=model,
        make_model=lambda s: _linear(),
        retain=(EYE, np.arange(3)),
        forget=(EYE, np.arange(3)),
        val=(EYE, np.array(val_labels)),
        test=(EYE, np.arange(3)),
        recipe=None,
        options={"patience": patience},
        seed=0,
        num_classes=3,
        forget_classes=None,
        workdir=tmp_path,
        progress=False,
        fingerprint="wrapper-test",
        selection=selection,
    )


def _run(ctx, schedule: list[str], *, stop_after: int | None = None) -> nn.Module:
    """Run ctx.epochs with the weights of epoch e set to PERMS[schedule[e-1]]."""
    model = _linear()
    for epoch in ctx.epochs(model, None, len(schedule)):
        with torch.no_grad():
            model.weight.copy_(torch.tensor(PERMS[schedule[epoch - 1]], dtype=torch.float32))
        if stop_after is not None and epoch == stop_after:
            break  # a kill inside epoch `stop_after`: its checkpoint is never written
    return model


def _is(model, name: str) -> bool:
    return torch.equal(model.weight.detach(), torch.tensor(PERMS[name], dtype=torch.float32))


def test_hqml_returns_epoch_one_when_it_has_the_best_test_accuracy(tmp_path):
    ctx = _ctx(tmp_path, "test", patience=0)
    model = _run(ctx, ["right", "shift", "swap", "right", "shift"])
    rep = ctx.selection_report()
    # epoch 4 ties epoch 1 (accuracy 1.0): HQML's EarlyStopper keeps the first (strictly better)
    assert rep["selected_epoch"] == 1 and rep["epochs_run"] == 5 and _is(model, "right")
    assert rep["epoch_scores"] == pytest.approx([1.0, 0.0, 1 / 3, 1.0, 0.0])


def test_hqml_patience_stops_the_loop(tmp_path):
    ctx = _ctx(tmp_path, "test", patience=2)
    model = _run(ctx, ["swap", "right", "shift", "shift", "right", "right"])
    rep = ctx.selection_report()
    assert (rep["selected_epoch"], rep["epochs_run"], rep["stopped_early"]) == (2, 4, True)
    assert _is(model, "right")


def test_fixed_selects_on_validation_and_last_means_last(tmp_path):
    schedule = ["right", "shift", "swap", "swap"]
    ctx = _ctx(tmp_path / "val", "val", patience=0)  # validation labels favour "shift"
    assert _is(_run(ctx, schedule), "shift") and ctx.selection_report()["selected_epoch"] == 2
    ctx = _ctx(tmp_path / "last", "last", patience=1)
    model = _run(ctx, schedule)
    assert _is(model, "swap") and ctx.selection_report()["selected_epoch"] == 4
    assert ctx.selection_report()["epochs_run"] == 4  # no early stopping without a selection score
    # no validation data: the fixed rule falls back to the last epoch
    ctx = _ctx(tmp_path / "noval", "val", patience=1, val_labels=())
    ctx.val = (EYE[:0], np.array([], dtype=np.int64))
    assert _is(_run(ctx, schedule), "swap")


def test_the_wrapper_resumes_to_the_same_selection(tmp_path):
    schedule = ["shift", "right", "swap", "shift", "swap"]
    ctx = _ctx(tmp_path / "a", "test", patience=0)
    _run(ctx, schedule, stop_after=4)  # killed during epoch 4: epochs 1-3 are checkpointed
    resumed = _ctx(tmp_path / "a", "test", patience=0)
    model = _run(resumed, schedule)
    whole = _ctx(tmp_path / "b", "test", patience=0)
    _run(whole, schedule)
    assert resumed.selection_report() == whole.selection_report()
    assert resumed.selection_report()["selected_epoch"] == 2 and _is(model, "right")


def test_protocols_choose_the_selection_rule():
    assert method_selection("hqml", "test") == "test"
    # fixed: the method's budget, whatever the teacher's rule (validation accuracy of retained
    # data would pick the epoch that forgot least)
    assert method_selection("fixed", "val") == method_selection("fixed", "last") == "last"
    assert method_selection("qmu", "last") == method_selection("dgqmu", "val") == "last"


def test_hqml_patience_per_dataset_and_method():
    iris = RecipeInfo(dataset="iris", lr=1e-2, batch_size=32, epochs=100)
    mnist = RecipeInfo(dataset="mnist", lr=1e-3, batch_size=64, epochs=60)
    fashion = RecipeInfo(dataset="fashion_mnist", lr=1e-3, batch_size=64, epochs=60)
    for method in (
        "ga",
        "fisher",
        "neggrad_plus",
        "cf_k_hqml",
        "eu_k_hqml",
        "certified_hqml",
        "qmul_hqml",
        "lca",
        "adv_uniform",
    ):
        assert resolve_options(method, {}, iris)["patience"] == 15, method
        assert resolve_options(method, {}, mnist)["patience"] == 6, method
        assert resolve_options(method, {}, fashion)["patience"] == 6, method
    assert resolve_options("scrub_hqml", {}, iris)["patience"] == 15
    assert resolve_options("scrub_hqml", {}, mnist)["patience"] == 8
    assert resolve_options("scrub", {}, fashion)["patience"] == 8


# ---------------------------------------------------------------------------------------------
# the wrapper through the pipeline


def _teacher(tmp_path, protocol: str):
    from qmu_qiskit import pipeline
    from qmu_qiskit.config import resolve_run_config

    hqml = protocol == "hqml"
    cfg = resolve_run_config(
        dataset="iris",
        seed=0,
        protocol=protocol,
        data={"val_size": 0.0 if hqml else 0.2, "test_size": 0.2},
        training={"epochs": 12, "select": "test" if hqml else "val", "patience": 0},
    )
    out = tmp_path / protocol
    pipeline.train(cfg, out, progress=False)
    return out


@pytest.mark.parametrize("protocol, split", [("hqml", "test")])
def test_pipeline_returns_the_selected_epoch(tmp_path, protocol, split):
    """The returned model is the best epoch by the protocol's score: its saved accuracy on that
    split equals the best per-epoch score, and the first epoch reaching it is reported."""
    from qmu_qiskit import pipeline
    from qmu_qiskit.evaluation.outputs import Outputs

    run = _teacher(tmp_path, protocol)
    (_, s) = pipeline.unlearn(
        run, "subset:0.1", ["ga"], options={"ga": {"epochs": 6, "lr": 0.05}}, progress=False
    )
    rep = s.metrics["method_info"]["selection"]
    scores = rep["epoch_scores"]
    assert rep["selection"] == split and rep["epochs_run"] == 6 and len(scores) == 6
    assert rep["selected_epoch"] == 1 + int(np.argmax(scores))
    out = Outputs.load(s.path / "outputs.npz")
    m = out.mask(split)
    assert float((out.logits[m].argmax(1) == out.labels[m]).mean()) == pytest.approx(max(scores))


def test_fixed_methods_return_their_last_epoch(tmp_path):
    """Under the default protocol a method runs its budget: GA's last epoch, not the epoch-1
    weights that retained-data validation accuracy would prefer."""
    from qmu_qiskit import pipeline

    run = _teacher(tmp_path, "fixed")
    (_, s) = pipeline.unlearn(
        run, "subset:0.1", ["ga"], options={"ga": {"epochs": 6, "lr": 0.05}}, progress=False
    )
    rep = s.metrics["method_info"]["selection"]
    assert rep["selection"] == "last"
    assert rep["selected_epoch"] == rep["epochs_run"] == 6


# ---------------------------------------------------------------------------------------------
# data quirks: against HQML's calls


IRIS = {
    "dataset": "iris",
    "angle_range": (-math.pi, math.pi),
    "test_size": 0.2,
    "val_size": 0.0,
    "seed": 0,
}


def test_iris_subset_from_the_shuffled_split_is_hqmls():
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    from qmu_qiskit.data import load_data, resolve_forget

    _, y = load_iris(return_X_y=True)
    ids = np.arange(len(y))
    tr, _ = train_test_split(ids, test_size=0.2, random_state=0, stratify=y)  # split_scenarios
    _, df = train_test_split(tr, test_size=0.02, random_state=0, stratify=y[tr])
    quirky = resolve_forget(
        "subset:0.02", load_data({**IRIS, "quirks": ["shuffled_subset"]}), seed=0
    )
    plain = resolve_forget("subset:0.02", load_data(IRIS), seed=0)
    assert np.array_equal(quirky.record_ids, np.sort(df))
    assert not np.array_equal(plain.record_ids, np.sort(df))  # the sorted split forgets others


def test_iris_scaler_fitted_on_all_samples_is_hqmls():
    from sklearn.datasets import load_iris
    from sklearn.preprocessing import MinMaxScaler

    from qmu_qiskit.data import load_data

    X, _ = load_iris(return_X_y=True)
    hqml = MinMaxScaler(feature_range=(-np.pi, np.pi)).fit_transform(X)
    bundle = load_data({**IRIS, "quirks": ["scaler_on_all"]})
    for split in ("train", "test"):
        np.testing.assert_allclose(bundle.X[split], hqml[bundle.ids[split]], atol=1e-6)
    # fitted on all 150, every feature reaches both ends of the range somewhere in the data
    everything = np.concatenate([bundle.X["train"], bundle.X["test"]])
    np.testing.assert_allclose(everything.min(0), -np.pi, atol=1e-6)
    np.testing.assert_allclose(everything.max(0), np.pi, atol=1e-6)


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """IDX files in torchvision's layout: 40 train + 20 test 28×28 images of 10 classes."""
    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for part, n in (("train", 40), ("t10k", 20)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        _write_idx(raw / f"{part}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{part}-labels-idx1-ubyte", labels)
    return root


def test_torch_class_draws_are_hqmls_cnn_branch(tiny_mnist):
    from qmu_qiskit.data import load_data
    from qmu_qiskit.data.idx import read_idx

    raw = tiny_mnist / "MNIST" / "raw"
    y = torch.cat(
        [
            torch.from_numpy(read_idx(raw / f"{p}-labels-idx1-ubyte").astype(np.int64))
            for p in ("train", "t10k")
        ]
    )
    g = torch.Generator().manual_seed(0)  # load_data_cnn
    chosen = []
    for c in range(10):
        idx = (y == c).nonzero(as_tuple=True)[0]
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:4]])
    chosen = torch.cat(chosen).numpy()
    cfg = {
        "dataset": "mnist",
        "data_dir": str(tiny_mnist),
        "input_kind": "image",
        "samples_per_class": 4,
        "test_size": 0.25,
        "val_size": 0.0,
        "seed": 0,
    }
    bundle = load_data({**cfg, "quirks": ["torch_class_draws"]})
    got = np.concatenate([bundle.ids["train"], bundle.ids["test"]])
    assert sorted(got.tolist()) == sorted(chosen.tolist())
    assert bundle.n_records == 60 and (got >= 40).any()  # train ∪ test: t10k rows are drawn too
    plain = load_data(cfg)
    assert (np.concatenate([plain.ids["train"], plain.ids["test"]]) < 40).all()


def test_data_quirks_are_refused_where_hqml_has_none():
    from qmu_qiskit.data import load_data
    from qmu_qiskit.exceptions import BadInputError

    with pytest.raises(BadInputError, match="torch_class_draws applies to mnist"):
        load_data({**IRIS, "quirks": ["torch_class_draws"]})


# ---------------------------------------------------------------------------------------------
# methods as HQML ran them


@pytest.fixture(scope="module")
def executor():
    from qmu_qiskit.config import BackendConfig
    from qmu_qiskit.pipeline import make_executor

    ex = make_executor(BackendConfig(), seed=0)
    yield ex
    ex.close()


def test_cf_k1_freezes_the_whole_cnn_group(executor, tmp_path):
    from qmu_qiskit.models.hybrid import ModelSpec, build_model
    from qmu_qiskit.unlearning.base import get_method

    spec = ModelSpec(name="hqml-conv", qubits=2, layers=1)

    def make(s):
        return build_model(spec, num_classes=10, executor=executor, seed=s)

    teacher = make(1)
    rng = np.random.default_rng(0)
    X = rng.random((12, 1, 28, 28)).astype(np.float32)
    y = np.arange(12) % 10
    opts = resolve_options(
        "cf_k_hqml",
        {"epochs": 1, "batch_size": 6},
        RecipeInfo(dataset="mnist", lr=1e-2, batch_size=6, epochs=1),
    )
    ctx = UnlearnContext(
        teacher=teacher,
        make_model=make,
        retain=(X[:6], y[:6]),
        forget=(X[6:], y[6:]),
        val=(X[:0], y[:0]),
        test=(X[:6], y[:6]),
        recipe=None,
        options=opts,
        seed=0,
        num_classes=10,
        forget_classes=None,
        workdir=tmp_path,
        progress=False,
    )
    result = get_method("cf_k_hqml").fn(ctx)
    before, after = teacher.state_dict(), result.model.state_dict()
    convs = [k for k in before if k.startswith("encoder.") and before[k].dim() == 4]
    assert len(convs) == 2 and result.info["frozen_groups"] == ["encoder.0+encoder.3"]
    for k in before:
        same = torch.equal(before[k], after[k])
        assert same == (k.startswith(("encoder.0.", "encoder.3."))), k


def test_fgsm_runs_in_train_mode_as_hqml(executor):
    from qmu_qiskit.models.hybrid import ModelSpec, build_model
    from qmu_qiskit.unlearning.methods.adversarial import fgsm_towards_confidence

    model = build_model(
        ModelSpec(name="hqml-deep", qubits=4, layers=1), num_classes=3, executor=executor, seed=0
    )
    x = torch.rand(8, 4) * 2 - 1
    bn = model.head[1]
    start = bn.running_mean.clone()
    model.train()
    eval_adv = fgsm_towards_confidence(model, x, 0.1, -math.pi, math.pi, mode="eval")
    assert torch.equal(bn.running_mean, start) and model.training
    train_adv = fgsm_towards_confidence(model, x, 0.1, -math.pi, math.pi, mode="train")
    assert not torch.equal(bn.running_mean, start)  # HQML's attack pass moves BatchNorm statistics
    assert eval_adv.shape == train_adv.shape == x.shape
    assert float((train_adv - x).abs().max()) == pytest.approx(0.1, abs=1e-6)
    opts = resolve_options(
        "adv_uniform", {}, RecipeInfo(dataset="iris", lr=1e-2, batch_size=32, epochs=1)
    )
    assert opts["fgsm_mode"] == "train"


def test_agree_retain_stays_aligned_under_the_shuffled_kl_quirk():
    from qmu_qiskit.evaluation.metrics import MetricContext, alignment_metrics
    from qmu_qiskit.evaluation.outputs import Outputs

    rng = np.random.default_rng(0)
    n = 40
    logits = rng.normal(size=(n, 3)).astype(np.float32) * 3
    out = Outputs(
        logits=logits,
        labels=rng.integers(0, 3, n),
        ids=np.arange(n),
        split=np.array(["train"] * 30 + ["test"] * 10),
        forget=np.zeros(n, dtype=bool),
    )
    aligned = alignment_metrics(out, out, out, MetricContext(seed=0))
    shuffled = alignment_metrics(out, out, out, MetricContext(seed=0, kl_shuffled=True))
    assert aligned["KL_retain"] == pytest.approx(0.0, abs=1e-12) and shuffled["KL_retain"] > 0.1
    assert shuffled["Agree_retain"] == aligned["Agree_retain"] == 1.0


def test_fixed_protocol_cycles_the_paired_methods():
    from qmu_qiskit.studies.protocols import get_protocol
    from qmu_qiskit.studies.spec import load_spec
    from qmu_qiskit.unlearning.base import cycled, zipped

    for source in ("jobs/fixed_iris.yaml", {"name": "f", "datasets": ["iris"]}):
        spec = get_protocol("fixed").complete(load_spec(source))
        loaders = {m.method: m.options.get("loader") for m in spec.methods}
        assert loaders["neggrad_plus"] == loaders["qmul"] == loaders["adv_uniform"] == "cycle"
    retain = (torch.zeros(100, 2), torch.zeros(100, dtype=torch.long))
    forget = (torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    g = [torch.Generator().manual_seed(i) for i in range(4)]
    assert len(list(zipped(retain, forget, 32, g[0], g[1]))) == 1  # HQML: one step per epoch
    assert len(list(cycled(retain, forget, 32, g[2], g[3]))) == 4  # a full retain epoch
