"""Audit metrics, computed from saved per-sample outputs (docs/reference.md §4).

Metrics are registered by name; each takes the unlearned model's outputs ``U``, the teacher's
``T``, the retrain oracle's ``O`` (all aligned on the same samples) and a :class:`MetricContext`,
and returns a flat dict of numbers. Nothing here runs a circuit.

Names follow HQML's ``results_summary.csv`` where HQML defines them (``acc_retain_unlearn``,
``forget_drop``, ``UQI``, ``KL_retain``, ``MIA_AUC``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import BadInputError
from ..registry import ENTRY_POINT_GROUPS, Registry
from .outputs import Outputs, aligned

EPS = 1e-8


@dataclass(frozen=True)
class MetricContext:
    """Options shared by metrics.

    Attributes:
        seed: seeds random draws (MIA non-member subsets).
        mia_nonmembers: ``heldout`` (default: data never trained on, class-matched to D_f) or
            ``retain`` (HQML: a random subset of D_r, so 0.5 means "no forgetting").
        kl_shuffled: reproduce HQML's KL_retain quirk (two independently shuffled passes).
    """

    seed: int = 0
    mia_nonmembers: str = "heldout"
    kl_shuffled: bool = False


#: Every metric by name: the built-ins of this module, then installed plugins (entry-point
#: group ``qmu_qiskit.metrics``), loaded on first use.
#: ``fn(U, T, O, ctx) -> {name: value}``
MetricFn = Callable[..., dict]

METRICS: Registry[Callable] = Registry("metric", group=ENTRY_POINT_GROUPS["metric"])


def register_metric(name: str) -> Callable[[MetricFn], MetricFn]:
    """Register ``fn(U, T, O, ctx) -> dict[str, float]`` as the metric ``name`` (a decorator).

    ``U``, ``T`` and ``O`` are the unlearned model's, the teacher's and the retrain oracle's
    :class:`~qmu_qiskit.evaluation.outputs.Outputs` (``O`` may be ``None``), aligned on the same
    samples; ``ctx`` is the :class:`MetricContext`. The returned keys become columns of
    ``metrics.json`` and of study tables, so prefix them with the metric's name.
    """

    def deco(fn: MetricFn) -> MetricFn:
        METRICS.register(name, fn)
        return fn

    return deco


def _acc(out: Outputs, mask: np.ndarray) -> float:
    if not mask.any():
        return float("nan")
    return float((out.logits[mask].argmax(1) == out.labels[mask]).mean())


@register_metric("accuracy")
def accuracy_metrics(U: Outputs, T: Outputs, O: Outputs | None, ctx: MetricContext) -> dict:
    """Accuracies of U and T on retain/forget/test, the drops and HQML's UQI.

    ``forget_drop = acc_forget(T) − acc_forget(U)`` (retain and test alike);
    ``UQI = forget_drop − ½(retain_drop + test_drop)`` (HQML §4).
    """
    res = {}
    for split in ("retain", "forget", "test"):
        res[f"acc_{split}_unlearn"] = _acc(U, U.mask(split))
        res[f"acc_{split}_orig"] = _acc(T, T.mask(split))
        if O is not None:
            res[f"acc_{split}_oracle"] = _acc(O, O.mask(split))
    for split in ("forget", "retain", "test"):
        res[f"{split}_drop"] = res[f"acc_{split}_orig"] - res[f"acc_{split}_unlearn"]
    res["UQI"] = res["forget_drop"] - 0.5 * (res["retain_drop"] + res["test_drop"])
    return res


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-sample KL(p‖q), natural log, probabilities clipped to [1e-8, 1]."""
    p = np.clip(p, EPS, 1.0)
    q = np.clip(q, EPS, 1.0)
    return (p * (np.log(p) - np.log(q))).sum(1)


def js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-sample Jensen–Shannon divergence with M = (p + q)/2 (natural log, ≤ ln 2)."""
    m = 0.5 * (p + q)
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


@register_metric("alignment")
def alignment_metrics(U: Outputs, T: Outputs, O: Outputs | None, ctx: MetricContext) -> dict:
    """Agreement and divergence of U with the retrain oracle on aligned retain and test samples.

    HQML computed KL_retain and JS_retain on two independently shuffled passes over D_r (so it
    compared different samples); here samples are aligned by split and record id unless
    ``ctx.kl_shuffled`` asks for HQML's behaviour. Agree_retain stays aligned even then: HQML's
    ``agreement_rate`` runs both models on the same batch, so its agreement was aligned.
    """
    if O is None:
        return {}
    if not aligned(U, O):
        raise BadInputError(
            "the unlearned model's and the oracle's outputs cover different samples; rerun "
            "`qmu-qiskit evaluate` after both were computed on the same data"
        )
    pu, po = U.probs, O.probs
    res = {}
    rng = np.random.default_rng(ctx.seed)
    for split in ("retain", "test"):
        m = U.mask(split)
        a, b = pu[m], po[m]
        res[f"Agree_{split}"] = (
            float((a.argmax(1) == b.argmax(1)).mean()) if len(a) else float("nan")
        )
        if split == "retain" and ctx.kl_shuffled:
            b = b[rng.permutation(len(b))]
        res[f"KL_{split}"] = float(kl(a, b).mean()) if len(a) else float("nan")
        res[f"JS_{split}"] = float(js(a, b).mean()) if len(a) else float("nan")
    return res


def mia_sets(U: Outputs, ctx: MetricContext) -> tuple[np.ndarray, np.ndarray]:
    """Indices of MIA members (D_f) and of an equal-size set of non-members.

    ``heldout``: non-members never trained on (val + test), drawn with the label distribution of
    D_f (for class forgetting: held-out samples of the forgotten class); if there are fewer of
    them than members, members are subsampled to match. ``retain``: HQML's random subset of D_r.
    """
    rng = np.random.default_rng(ctx.seed)
    members = np.flatnonzero(U.mask("forget"))
    if ctx.mia_nonmembers == "retain":
        pool = np.flatnonzero(U.mask("retain"))
        k = min(len(members), len(pool))
        return members, np.sort(rng.choice(pool, size=k, replace=False))
    pool = np.flatnonzero(U.mask("heldout"))
    chosen, kept = [], []
    for label in np.unique(U.labels[members]):
        mem_l = members[U.labels[members] == label]
        pool_l = pool[U.labels[pool] == label]
        k = min(len(mem_l), len(pool_l))
        if k == 0:
            continue
        kept.append(np.sort(rng.choice(mem_l, size=k, replace=False)))
        chosen.append(np.sort(rng.choice(pool_l, size=k, replace=False)))
    if not kept:
        return members[:0], pool[:0]
    return np.concatenate(kept), np.concatenate(chosen)


def _auc(out: Outputs, members: np.ndarray, nonmembers: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(members) == 0 or len(nonmembers) == 0:
        return float("nan")
    score = out.probs.max(1)
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return float(roc_auc_score(labels, np.r_[score[members], score[nonmembers]]))


@register_metric("mia_auc")
def mia_auc_metrics(U: Outputs, T: Outputs, O: Outputs | None, ctx: MetricContext) -> dict:
    """HQML's MIA_AUC: max-softmax score, members D_f vs equal-size non-members; with the
    teacher's and the oracle's AUC on the same sets as anchors."""
    members, nonmembers = mia_sets(U, ctx)
    res = {
        "MIA_AUC": _auc(U, members, nonmembers),
        "MIA_AUC_teacher": _auc(T, members, nonmembers),
        "mia_members": int(len(members)),
    }
    if O is not None:
        res["MIA_AUC_oracle"] = _auc(O, members, nonmembers)
    return res


def forgotten_classes(U: Outputs) -> np.ndarray:
    """The labels D_f holds every training sample of (class-wise forgetting), else empty."""
    train = U.mask("train")
    labels = np.unique(U.labels[U.mask("forget")])
    whole = [c for c in labels if not np.any(train & ~U.forget & (U.labels == c))]
    return np.array(whole, dtype=np.int64)


@register_metric("salun")
def salun_metrics(U: Outputs, T: Outputs, O: Outputs | None, ctx: MetricContext) -> dict:
    """SalUn's names (Fan et al. 2024, and Jia et al. 2023 before it): ``UA`` = 1 − accuracy on
    D_f, ``RA`` = accuracy on D_r, ``TA`` = test accuracy — on the test samples of the remaining
    classes when whole classes are forgotten (SalUn removes the forgotten class from its test
    set), else on the whole test split — and ``MIA_Efficacy`` (SalUn's "MIA-Efficacy", see
    :func:`mia_efficacy_metrics`), each for U with T's and O's values as anchors."""
    gone = forgotten_classes(U)
    ta_mask = U.mask("test") & ~np.isin(U.labels, gone)
    res: dict[str, Any] = {}
    for suffix, out in (("", U), ("_teacher", T), ("_oracle", O)):
        if out is None:
            continue
        res[f"UA{suffix}"] = 1.0 - _acc(out, U.mask("forget"))
        res[f"RA{suffix}"] = _acc(out, U.mask("retain"))
        res[f"TA{suffix}"] = _acc(out, ta_mask)
    res["TA_classes"] = "remaining" if len(gone) else "all"
    res.update(mia_efficacy_metrics(U, T, O, ctx))
    return res


DEFAULT_METRICS = ("accuracy", "alignment", "mia_auc", "salun")


def compute_metrics(
    U: Outputs,
    T: Outputs,
    O: Outputs | None,
    *,
    names: Sequence[str] = DEFAULT_METRICS,
    ctx: MetricContext | None = None,
) -> dict:
    """Run the named metrics and merge their results.

    Raises:
        BadInputError: an unknown metric name, or outputs that do not align.
    """
    ctx = ctx or MetricContext()
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise BadInputError(
            f"unknown metric {unknown[0]!r}; available: {', '.join(sorted(METRICS))}"
        )
    if not aligned(U, T):
        raise BadInputError(
            "the unlearned model's and the teacher's outputs cover different samples; they must "
            "come from the same data (same dataset, seed and splits)"
        )
    res: dict = {}
    for name in names:
        res.update(METRICS[name](U, T, O, ctx))
    return res


# ---------------------------------------------------------------------------------------------
# privacy audits and DG-QMU's class metrics (computations in .mia / .dgqmu; imported lazily so
# that scikit-learn and torch load only when these metrics run)


def _check_oracle(U: Outputs, O: Outputs | None) -> None:
    if O is not None and not aligned(U, O):
        raise BadInputError(
            "the unlearned model's and the oracle's outputs cover different samples; rerun "
            "`qmu-qiskit evaluate` after both were computed on the same data"
        )


@register_metric("population_mia")
def population_mia_metrics(U: Outputs, T: Outputs, O: Outputs | None, ctx: MetricContext) -> dict:
    """Population loss-threshold MIA (AUC, TPR at 1% / 0.1% FPR, advantage) on the sets of
    :func:`mia_sets`, for U with T's and O's values as anchors, and MUSE's ``PrivLeak`` =
    (AUC_U − AUC_O)/AUC_O·100. See :func:`qmu_qiskit.evaluation.mia.population_mia`."""
    from .mia import population_mia

    _check_oracle(U, O)
    members, nonmembers = mia_sets(U, ctx)
    return population_mia(U, T, O, members, nonmembers)


@register_metric("mia_efficacy")
def mia_efficacy_metrics(U: Outputs, T: Outputs, O: Outputs | None, ctx: MetricContext) -> dict:
    """SalUn's MIA-Efficacy (confidence SVC; members = a retain subset of |test| samples,
    non-members = test): fraction of D_f predicted non-member, for U, T and O."""
    from .mia import mia_efficacy_sets, svc_mia_efficacy

    _check_oracle(U, O)
    members, nonmembers, targets = mia_efficacy_sets(U, ctx.seed)
    res = {
        "MIA_Efficacy": svc_mia_efficacy(U, members, nonmembers, targets),
        "MIA_Efficacy_teacher": svc_mia_efficacy(T, members, nonmembers, targets),
    }
    if O is not None:
        res["MIA_Efficacy_oracle"] = svc_mia_efficacy(O, members, nonmembers, targets)
    return res


@register_metric("grey_box_mia")
def grey_box_mia_metrics(U: Outputs, T: Outputs, O: Outputs | None, ctx: MetricContext) -> dict:
    """QMU's gray-box MIA success rate: the MLP attack trained on T's outputs (train vs test
    samples, 80/20), applied to T ("before"), U ("after") and O on D_f. See
    :func:`qmu_qiskit.evaluation.mia.grey_box_attack`."""
    from .mia import grey_box_attack

    forget_ids = U.ids[U.mask("forget")]
    if forget_ids.size == 0:
        return {}
    others = {"unlearned": U} | ({"oracle": O} if O is not None else {})
    res = grey_box_attack(T, others, forget_ids=forget_ids, seed=ctx.seed)
    out = {
        "GreyBox_success": res["success"]["unlearned"],
        "GreyBox_success_teacher": res["success_before"],
        "GreyBox_attack_acc": res["attack_heldout_accuracy"],
        "GreyBox_targets": res["num_targets"],
    }
    if O is not None:
        out["GreyBox_success_oracle"] = res["success"]["oracle"]
    return out


@register_metric("dgqmu")
def dgqmu_class_metrics(U: Outputs, T: Outputs, O: Outputs | None, ctx: MetricContext) -> dict:
    """DG-QMU: forgotten-class confidence on D_f, where its probability mass went, and the
    retained-class macro F1. See :func:`qmu_qiskit.evaluation.dgqmu.dgqmu_metrics`."""
    from .dgqmu import dgqmu_metrics

    _check_oracle(U, O)
    return dgqmu_metrics(U, T, O)


#: The privacy audits of docs/reference.md §4 (not in DEFAULT_METRICS: the gray-box attack trains an MLP).
PRIVACY_METRICS = ("population_mia", "mia_efficacy", "grey_box_mia")
