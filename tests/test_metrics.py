"""Privacy and DG-QMU metrics on synthetic outputs with known answers (methods.md §4)."""

from __future__ import annotations

import numpy as np
import pytest

from qmu_qiskit.evaluation import mia
from qmu_qiskit.evaluation.dgqmu import (
    dgqmu_metrics,
    forget_confidence,
    forget_mass,
    forgotten_classes,
    retained_f1,
)
from qmu_qiskit.evaluation.metrics import PRIVACY_METRICS, MetricContext, compute_metrics
from qmu_qiskit.evaluation.outputs import Outputs
from qmu_qiskit.exceptions import BadInputError


def make_outputs(logits, labels, split, forget=None, ids=None) -> Outputs:
    n = len(labels)
    return Outputs(
        logits=np.asarray(logits, dtype=np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        ids=np.arange(n) if ids is None else np.asarray(ids),
        split=np.asarray(split, dtype="<U5"),
        forget=np.zeros(n, bool) if forget is None else np.asarray(forget, bool),
    )


def logits_with_confidence(labels, conf, num_classes, rng=None, noise=0.0):
    """Logits whose softmax gives the true label probability ``conf`` (rest spread evenly)."""
    labels = np.asarray(labels)
    conf = np.broadcast_to(np.asarray(conf, dtype=np.float64), labels.shape)
    rest = (1 - conf) / (num_classes - 1)
    probs = np.repeat(rest[:, None], num_classes, 1)
    probs[np.arange(len(labels)), labels] = conf
    z = np.log(probs)
    if rng is not None and noise:
        z = z + noise * rng.normal(size=z.shape)
    return z


# ------------------------------------------------------------------------------- ROC / population


def test_separable_scores_give_perfect_attack():
    res = mia.roc_summary(np.linspace(2, 3, 200), np.linspace(0, 1, 300))
    assert res["auc"] == 1.0 and res["advantage"] == 1.0
    assert res["tpr_at_fpr"] == {0.01: 1.0, 0.001: 1.0}
    flipped = mia.roc_summary(np.linspace(0, 1, 50), np.linspace(2, 3, 50))
    assert flipped["auc"] == 0.0 and flipped["advantage"] == 1.0  # |TPR − FPR| counts it


def test_identical_distributions_give_chance():
    rng = np.random.default_rng(0)
    res = mia.roc_summary(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(res["auc"] - 0.5) < 0.03
    assert res["advantage"] < 0.05
    assert res["tpr_at_fpr"][0.01] < 0.03


def test_tpr_at_fpr_conventions():
    fpr = np.array([0.0, 0.005, 0.02, 1.0])
    tpr = np.array([0.0, 0.4, 0.6, 1.0])
    assert mia.tpr_at_fpr(fpr, tpr, 0.01) == 0.4  # best point inside the budget (LiRA)
    assert mia.tpr_at_fpr(fpr, tpr, 0.01, interpolate=True) == pytest.approx(0.4 + 0.2 / 3)
    assert mia.tpr_at_fpr(fpr, tpr, 0.02) == 0.6
    empty = mia.roc_summary([], [1.0])
    assert np.isnan(empty["auc"])


def _losses_to_outputs(losses, split):
    """Two-class outputs with label 0 and CE loss exactly ``losses``."""
    losses = np.asarray(losses, dtype=np.float64)
    z = np.column_stack([np.zeros_like(losses), np.log(np.expm1(losses))])
    return make_outputs(z, np.zeros(len(losses), int), split)


def test_population_mia_and_privleak_exact():
    split = ["train", "train", "test", "test"]
    members, nonmembers = np.array([0, 1]), np.array([2, 3])
    U = _losses_to_outputs([0.1, 0.3, 0.2, 0.4], split)  # AUC 3/4
    O = _losses_to_outputs([0.2, 0.3, 0.2, 0.3], split)  # AUC 2/4 (ties count ½)
    T = _losses_to_outputs([0.01, 0.02, 1.0, 2.0], split)  # AUC 1
    res = mia.population_mia(U, T, O, members, nonmembers)
    assert res["popMIA_AUC"] == pytest.approx(0.75)
    assert res["popMIA_AUC_oracle"] == pytest.approx(0.5)
    assert res["popMIA_AUC_teacher"] == pytest.approx(1.0)
    assert res["popMIA_TPR_at_1pctFPR_teacher"] == 1.0
    assert res["PrivLeak"] == pytest.approx((0.75 - 0.5) / 0.5 * 100)
    assert res["popMIA_advantage_teacher"] == 1.0
    assert "PrivLeak" not in mia.population_mia(U, T, None, members, nonmembers)


def test_cross_entropy_and_logit_confidence():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 4)) * 3
    y = rng.integers(0, 4, 6)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    py = p[np.arange(6), y]
    np.testing.assert_allclose(mia.cross_entropy(z, y), -np.log(py), rtol=1e-12)
    np.testing.assert_allclose(mia.logit_confidence(z, y), np.log(py / (1 - py)), rtol=1e-9)
    assert np.isfinite(mia.logit_confidence(np.array([[80.0, -80.0]]), np.array([0]))).all()


# ------------------------------------------------------------------------------- SalUn MIA-Efficacy


def _bundle_outputs(rng, *, forget_conf, n_train=120, n_test=60, num_classes=4):
    """Train samples with confident outputs (0.95), test samples unsure (0.4); the forget set
    (train class 0) at ``forget_conf``."""
    labels = np.r_[np.arange(n_train) % num_classes, np.arange(n_test) % num_classes]
    split = np.r_[np.full(n_train, "train"), np.full(n_test, "test")]
    forget = (split == "train") & (labels == 0)
    conf = np.where(split == "train", 0.95, 0.4)
    conf = np.where(forget, forget_conf, conf) + rng.uniform(-0.03, 0.03, size=len(labels))
    return make_outputs(logits_with_confidence(labels, conf, num_classes), labels, split, forget)


def test_mia_efficacy_on_constructed_data():
    rng = np.random.default_rng(0)
    unlearned = _bundle_outputs(rng, forget_conf=0.4)  # D_f looks like test data
    teacher = _bundle_outputs(rng, forget_conf=0.95)  # D_f looks like training data
    members, nonmembers, targets = mia.mia_efficacy_sets(unlearned, seed=0)
    assert len(members) == len(nonmembers) == 60 and not unlearned.forget[members].any()
    assert mia.svc_mia_efficacy(unlearned, members, nonmembers, targets) == 1.0
    assert mia.svc_mia_efficacy(teacher, members, nonmembers, targets) == 0.0
    assert np.isnan(mia.svc_mia_efficacy(teacher, members, nonmembers, targets[:0]))
    with pytest.raises(BadInputError):
        mia.svc_features(teacher, targets, "m_entropy")


# ------------------------------------------------------------------------------- QMU gray-box


def _qmu_like_outputs(rng, *, forget_like_test: bool, num_classes=10, n_train=300, n_test=200):
    """Overfit-style outputs: training samples confidently right, test samples flatter and
    often wrong; D_f = training samples of class 4 (QMU's forget class)."""
    labels = np.r_[rng.integers(0, num_classes, n_train), rng.integers(0, num_classes, n_test)]
    split = np.r_[np.full(n_train, "train"), np.full(n_test, "test")]
    forget = (split == "train") & (labels == 4)
    member_like = (split == "train") & ~(forget & forget_like_test)
    conf = np.where(
        member_like, rng.uniform(0.9, 0.99, len(labels)), rng.uniform(0.1, 0.5, len(labels))
    )
    z = logits_with_confidence(labels, conf, num_classes, rng, noise=0.2)
    return make_outputs(z, labels, split, forget)


def test_grey_box_attack_before_and_after(monkeypatch):
    monkeypatch.setattr(mia.GreyBoxAttack, "DEFAULT_EPOCHS", 150)
    T = _qmu_like_outputs(np.random.default_rng(5), forget_like_test=False)
    U = _qmu_like_outputs(np.random.default_rng(5), forget_like_test=True)
    assert np.array_equal(T.ids, U.ids) and np.array_equal(T.labels, U.labels)
    res = mia.grey_box_attack(T, {"aer": U, "teacher_again": T}, seed=0)
    assert res["attack_heldout_accuracy"] > 0.9
    assert res["success_before"] > 0.9
    assert res["success"]["aer"] < 0.1
    assert res["success"]["teacher_again"] == res["success_before"]
    assert res["num_targets"] == int(U.forget.sum()) and res["num_attack_heldout"] == 80
    # the attack object is reusable on other outputs, and training is deterministic per seed
    attack = res["attack"]
    rows = np.flatnonzero(U.forget)
    feats = mia.grey_box_features(U.logits[rows], U.labels[rows])
    assert attack.success_rate(feats) == res["success"]["aer"]
    reused = mia.grey_box_attack(U, {"teacher": T}, attack=attack)  # applied, not retrained
    assert reused["attack"] is attack and reused["success_before"] == res["success"]["aer"]
    assert reused["success"]["teacher"] == res["success_before"]
    again = mia.grey_box_attack(T, {"aer": U}, seed=0)
    assert again["success"]["aer"] == res["success"]["aer"]
    assert again["attack_heldout_accuracy"] == res["attack_heldout_accuracy"]
    # exclude_forget keeps the targets out of the attack's training members. (Whether such an
    # attack still finds a forgotten *class* depends on the data: its probability columns were
    # never seen high among members, so it need not transfer — QMU trains on them.)
    pos, membership = mia.attack_training_set(T, seed=0, exclude_ids=T.ids[T.forget])
    assert not T.forget[pos].any() and membership.sum() == (1 - membership).sum()
    pos, _ = mia.attack_training_set(T, seed=0)
    assert T.forget[pos].any()


def test_grey_box_features_and_errors():
    z = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    f = mia.grey_box_features(z, np.array([0, 1]))
    np.testing.assert_allclose(f[:, :3], np.exp(z), rtol=1e-6)
    np.testing.assert_allclose(f[:, 3], [0.7, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(f[:, 4], [1, 0])
    np.testing.assert_allclose(f[:, 5], [-np.log(0.7), -np.log(0.3)], rtol=1e-6)
    T = _qmu_like_outputs(np.random.default_rng(0), forget_like_test=False)
    T_unmarked = make_outputs(T.logits, T.labels, T.split)
    with pytest.raises(BadInputError):
        mia.grey_box_attack(T_unmarked, {}, epochs=5)
    subset = make_outputs(T.logits[:10], T.labels[:10], T.split[:10], T.forget[:10], T.ids[:10])
    with pytest.raises(BadInputError, match="not in these outputs"):
        mia.grey_box_attack(T, {"partial": subset}, epochs=5)
    with pytest.raises(BadInputError):
        mia.GreyBoxAttack.fit(np.zeros((3, 13)), np.array([1, 0, 0]), epochs=1)


# ------------------------------------------------------------------------------- U-LiRA


def _shadow_scores(rng, *, shift, S=16, N=40, sd=0.5):
    base = rng.normal(0, 2, size=N)  # per-example difficulty
    forgotten = rng.random((S, N)) < 0.5
    retrained = base + sd * rng.normal(size=(S, N))
    unlearned = base + shift + sd * rng.normal(size=(S, N))
    return unlearned, retrained, forgotten


def test_ulira_detects_incomplete_unlearning():
    u, r, m = _shadow_scores(np.random.default_rng(0), shift=2.0)
    res = mia.ulira(u, r, m)
    assert res["success"] > 0.9 and res["auc"] > 0.95
    assert res["tpr_at_fpr"][0.01] > 0.3
    assert res["per_example_success"].shape == (40,) and res["num_scored"] == 40
    # unscored entries are NaN: x ∉ F_t is never a target
    assert np.all(np.isnan(res["scores_unlearned"][~m]))
    fixed = mia.ulira(u, r, m, fixed_variance=True)
    assert fixed["success"] > 0.85


def test_ulira_is_at_chance_for_perfect_unlearning():
    u, r, m = _shadow_scores(np.random.default_rng(1), shift=0.0)
    res = mia.ulira(u, r, m)
    assert abs(res["success"] - 0.5) < 0.1
    assert abs(res["auc"] - 0.5) < 0.1


def test_ulira_inputs_from_outputs():
    rng = np.random.default_rng(2)
    labels = np.r_[np.arange(8) % 2, np.arange(4) % 2]
    split = np.r_[np.full(8, "train"), np.full(4, "test")]
    pairs = []
    for _ in range(3):
        forget = (split == "train") & (rng.random(12) < 0.5)
        pairs.append(
            (
                make_outputs(rng.normal(size=(12, 2)), labels, split),
                make_outputs(rng.normal(size=(12, 2)), labels, split, forget),
            )
        )
    u, r, m, ids = mia.ulira_inputs(pairs)
    assert u.shape == r.shape == m.shape == (3, 8) and list(ids) == list(range(8))
    np.testing.assert_allclose(u[1], mia.logit_confidence(pairs[1][1].logits[:8], labels[:8]))
    np.testing.assert_array_equal(m[2], pairs[2][1].forget[:8])
    with pytest.raises(BadInputError):
        mia.ulira_inputs([])
    with pytest.raises(BadInputError):
        mia.ulira(u, r, m[:, :3])


# ------------------------------------------------------------------------------- DG-QMU


def _class_forgetting_outputs(rng, *, num_classes=3):
    labels = np.r_[np.arange(30) % num_classes, np.arange(15) % num_classes]
    split = np.r_[np.full(30, "train"), np.full(15, "test")]
    forget = (split == "train") & (labels == 0)
    return make_outputs(rng.normal(size=(45, num_classes)) * 2, labels, split, forget)


def test_dgqmu_metrics():
    rng = np.random.default_rng(0)
    U = _class_forgetting_outputs(rng)
    T = _class_forgetting_outputs(rng)
    assert list(forgotten_classes(U)) == [0]
    rows, mass = forget_mass(U, U.forget)
    assert list(rows) == [0] and mass.shape == (1, 3)
    np.testing.assert_allclose(mass.sum(1), 1.0)
    _, hard = forget_mass(U, U.forget, hard=True)
    np.testing.assert_allclose(hard.sum(1), 1.0)
    # rows per true class for a mixed forget set (subset forgetting), each summing to 1
    mixed = make_outputs(
        U.logits, U.labels, U.split, (U.split == "train") & (np.arange(45) % 4 == 0)
    )
    rows, mass = forget_mass(mixed, mixed.forget)
    assert list(rows) == [0, 1, 2]
    np.testing.assert_allclose(mass.sum(1), 1.0)
    assert forgotten_classes(mixed).size == 0

    idx = np.flatnonzero(U.forget)
    assert forget_confidence(U, U.forget) == pytest.approx(U.probs[idx, 0].mean())
    from sklearn.metrics import f1_score

    test = np.flatnonzero(U.mask("test") & (U.labels != 0))
    expected = f1_score(
        U.labels[test], U.logits[test].argmax(1), labels=[1, 2], average="macro", zero_division=0
    )
    assert retained_f1(U, U.mask("test"), np.array([0])) == pytest.approx(expected)

    res = dgqmu_metrics(U, T, None)
    assert sum(res[f"DG_forget_mass_{k}"] for k in range(3)) == pytest.approx(1.0)
    assert sum(res[f"DG_forget_pred_{k}"] for k in range(3)) == pytest.approx(1.0)
    assert res["DG_forget_conf_teacher"] == pytest.approx(forget_confidence(T, U.forget))
    assert res["DG_forgotten_classes"] == 1 and "DG_F1_retained_test_oracle" not in res


# ------------------------------------------------------------------------------- registry


def test_registered_metrics_run_through_compute_metrics(monkeypatch):
    monkeypatch.setattr(mia.GreyBoxAttack, "DEFAULT_EPOCHS", 50)
    rng = np.random.default_rng(3)
    T = _qmu_like_outputs(rng, forget_like_test=False)
    U = _qmu_like_outputs(np.random.default_rng(3), forget_like_test=True)
    O = _qmu_like_outputs(np.random.default_rng(3), forget_like_test=True)
    res = compute_metrics(U, T, O, names=PRIVACY_METRICS + ("dgqmu",), ctx=MetricContext(seed=0))
    for key in (
        "popMIA_AUC",
        "popMIA_AUC_teacher",
        "popMIA_AUC_oracle",
        "PrivLeak",
        "popMIA_TPR_at_1pctFPR",
        "popMIA_TPR_at_0.1pctFPR",
        "popMIA_advantage",
        "MIA_Efficacy",
        "MIA_Efficacy_teacher",
        "MIA_Efficacy_oracle",
        "GreyBox_success",
        "GreyBox_success_teacher",
        "GreyBox_success_oracle",
        "GreyBox_attack_acc",
        "DG_forget_conf",
        "DG_F1_retained_test",
    ):
        assert key in res, key
    # no test-split samples of the forget class are held out: mia_sets draws val+test of class 4
    assert res["popMIA_members"] == res["popMIA_nonmembers"] > 0
    assert res["PrivLeak"] == pytest.approx(0.0, abs=1e-9)  # U and O are the same outputs
    assert res["MIA_Efficacy"] > 0.9 and res["MIA_Efficacy_teacher"] < 0.1
    with pytest.raises(BadInputError):
        other = make_outputs(O.logits[:-1], O.labels[:-1], O.split[:-1], O.forget[:-1])
        compute_metrics(U, T, other, names=("population_mia",))
