"""DG-QMU's class-unlearning metrics, from saved per-sample outputs (Malik et al., "Distribution-
Guided and Constrained Quantum Machine Unlearning", arXiv 2601.04413; docs/reference.md §4).

* forgotten-class confidence: mean p(y|x) over D_f (for class forgetting, p(c|x) of the
  forgotten class c) — how much belief in the forgotten label is left;
* where the forgotten mass went: the mean predicted distribution over classes on D_f (rows sum
  to 1), per true class of D_f, and the argmax-prediction histogram;
* retained-class F1: macro F1 (``sklearn.metrics.f1_score``) over samples whose true class was
  not forgotten — the utility that the constraint of DG-QMU protects.
"""

from __future__ import annotations

import numpy as np

from .outputs import Outputs


def forgotten_classes(out: Outputs) -> np.ndarray:
    """Labels every training sample of which is in the forget set (empty for subset forgetting)."""
    train = out.mask("train")
    labels = np.unique(out.labels[out.forget])
    return np.array(
        [c for c in labels if not np.any(train & ~out.forget & (out.labels == c))], dtype=np.int64
    )


def forget_confidence(out: Outputs, mask: np.ndarray) -> float:
    """Mean probability of the true label over ``mask`` (NaN when empty)."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return float("nan")
    return float(out.probs[idx, out.labels[idx]].mean())


def forget_mass(
    out: Outputs, mask: np.ndarray, *, hard: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per true class r of the samples in ``mask``: the mean predicted distribution over classes
    (``hard``: the fraction predicted as each class).

    Returns:
        ``(rows, matrix)``: the true classes present, and a (len(rows), C) matrix whose rows sum
        to 1.
    """
    idx = np.flatnonzero(mask)
    probs = out.probs[idx]
    if hard:
        probs = np.eye(probs.shape[1])[probs.argmax(1)] if idx.size else probs
    labels = out.labels[idx]
    rows = np.unique(labels)
    matrix = (
        np.stack([probs[labels == r].mean(0) for r in rows])
        if rows.size
        else np.zeros((0, out.logits.shape[1]))
    )
    return rows, matrix


def retained_f1(out: Outputs, split_mask: np.ndarray, forgotten: np.ndarray) -> float:
    """Macro F1 over the retained classes, on the samples of ``split_mask`` whose true class is
    retained (predictions may still name a forgotten class, which counts as an error)."""
    from sklearn.metrics import f1_score

    idx = np.flatnonzero(split_mask & ~np.isin(out.labels, forgotten))
    if idx.size == 0:
        return float("nan")
    retained = [c for c in range(out.logits.shape[1]) if c not in set(forgotten.tolist())]
    pred = out.logits[idx].argmax(1)
    return float(f1_score(out.labels[idx], pred, labels=retained, average="macro", zero_division=0))


def dgqmu_metrics(U: Outputs, T: Outputs, O: Outputs | None) -> dict:
    """DG-QMU's numbers for U, with T and O on the same samples as anchors.

    Keys: ``DG_forget_conf`` (+ ``_teacher``, ``_oracle``); ``DG_forget_mass_<k>`` — U's mean
    predicted probability of class k over D_f (sums to 1 over k) — and ``DG_forget_pred_<k>``
    (fraction of D_f predicted as k); ``DG_F1_retained_test`` (+ ``_teacher``, ``_oracle``) and
    ``DG_F1_retained_retain`` for U; ``DG_forgotten_classes`` (how many classes were forgotten).
    """
    forget = U.mask("forget")
    forgotten = forgotten_classes(U)
    res: dict = {}
    models = [("", U), ("_teacher", T)] + ([("_oracle", O)] if O is not None else [])
    for suffix, out in models:
        res[f"DG_forget_conf{suffix}"] = forget_confidence(out, forget)
    num_classes = U.logits.shape[1]
    idx = np.flatnonzero(forget)
    if idx.size:
        soft = U.probs[idx].mean(0)
        hard = np.bincount(U.logits[idx].argmax(1), minlength=num_classes) / idx.size
        for k in range(num_classes):
            res[f"DG_forget_mass_{k}"] = float(soft[k])
            res[f"DG_forget_pred_{k}"] = float(hard[k])
    for suffix, out in models:
        res[f"DG_F1_retained_test{suffix}"] = retained_f1(out, out.mask("test"), forgotten)
    res["DG_F1_retained_retain"] = retained_f1(U, U.mask("retain"), forgotten)
    res["DG_forgotten_classes"] = int(forgotten.size)
    return res
